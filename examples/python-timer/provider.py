"""A Ferry timer provider in Python: delivers a message to each linked component every N ms.

It calls into the lattice through the bridge's Lattice service (FERRY_BRIDGE_LATTICE): each link
from this provider to a component's wasmcloud:messaging/handler gets a timer, and every tick is
a HandleMessage to that component. A link delete stops its timer. See README.md beside this file.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("FERRY_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto"))
provider_pb2, provider_grpc = grpc.protos_and_services("ferry/provider/v1/provider.proto")
lattice_pb2, lattice_grpc = grpc.protos_and_services("ferry/provider/v1/lattice.proto")
messaging_pb2, _ = grpc.protos_and_services("ferry/provider/v1/messaging.proto")

log = logging.getLogger("python-timer")

MIN_INTERVAL_MS = 10


class Timer:
    """Ticks for one link until stopped."""

    def __init__(self, lattice, link, interval_ms, subject):
        self.lattice, self.interval, self.subject = lattice, interval_ms / 1000, subject
        self.component, self.link_name = link.target_id, link.name
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        tick, next_at = 0, time.monotonic() + self.interval
        while not self.stopped.wait(max(0, next_at - time.monotonic())):
            tick += 1
            next_at += self.interval
            body = json.dumps({"tick": tick, "at": time.time()}).encode()
            message = messaging_pb2.BrokerMessage(subject=self.subject, body=body)
            request = lattice_pb2.HandleMessageRequest(component_id=self.component, link_name=self.link_name,
                                                       message=message)
            try:
                self.lattice.HandleMessage(request, timeout=max(self.interval, 1.0))
            except grpc.RpcError as err:
                # The component failed, or is not there yet: log it, keep ticking.
                log.warning("tick %d to %s failed: %s %s", tick, self.component, err.code().name, err.details())

    def stop(self):
        self.stopped.set()


class Provider(provider_grpc.ProviderServicer):
    def __init__(self, lattice, stopping):
        self.lattice, self.stopping = lattice, stopping
        self.instance_id = uuid.uuid4().hex
        self.timers = {}
        self.lock = threading.Lock()

    @staticmethod
    def key(link):
        return (link.source_id, link.target_id, link.name)

    def PutLink(self, request, context):
        link = request.link
        if (link.wit_namespace, link.wit_package) != ("wasmcloud", "messaging") or "handler" not in link.interfaces:
            return provider_pb2.PutLinkResponse(
                accepted=False, reason="the timer only delivers: link it to a component's wasmcloud:messaging/handler")
        config = link.source_config
        try:
            interval_ms = int(config.get("interval_ms", "1000"))
            if interval_ms < MIN_INTERVAL_MS:
                raise ValueError
        except ValueError:
            return provider_pb2.PutLinkResponse(
                accepted=False, reason=f"interval_ms must be an integer >= {MIN_INTERVAL_MS}")
        unknown = set(config) - {"interval_ms", "subject"}
        if unknown:
            return provider_pb2.PutLinkResponse(accepted=False, reason=f"unknown config keys: {sorted(unknown)}")
        subject = config.get("subject", "timer.tick")
        with self.lock:
            old = self.timers.pop(self.key(link), None)
            if old:
                old.stop()
            self.timers[self.key(link)] = Timer(self.lattice, link, interval_ms, subject)
        log.info("ticking %s every %d ms on %s", link.target_id, interval_ms, subject)
        return provider_pb2.PutLinkResponse(accepted=True)

    def DeleteLink(self, request, context):
        with self.lock:
            timer = self.timers.pop(self.key(request.link), None)
        if timer:
            timer.stop()
            log.info("stopped ticking %s", request.link.target_id)
        return provider_pb2.DeleteLinkResponse()

    def Health(self, request, context):
        return provider_pb2.HealthResponse(healthy=True, message=f"{len(self.timers)} timers",
                                           instance_id=self.instance_id)

    def Shutdown(self, request, context):
        self.stopping.set()
        return provider_pb2.ShutdownResponse()

    def stop_all(self):
        with self.lock:
            for timer in self.timers.values():
                timer.stop()
            self.timers.clear()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=os.environ.get("FERRY_BRIDGE_LISTEN"),
                        help="unix:PATH or HOST:PORT (default: $FERRY_BRIDGE_LISTEN, set by the bridge's --exec)")
    parser.add_argument("--lattice", default=os.environ.get("FERRY_BRIDGE_LATTICE"),
                        help="the bridge's Lattice service (default: $FERRY_BRIDGE_LATTICE, set by --exec)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.listen or not args.lattice:
        parser.error("say where to listen (--listen) and where the bridge's Lattice service is (--lattice)")

    stopping = threading.Event()
    # gRPC's C core names a Unix socket's path as the HTTP/2 authority, which is not a valid
    # authority: say "localhost" instead.
    channel = grpc.insecure_channel(args.lattice, options=[("grpc.default_authority", "localhost")])
    lattice = lattice_grpc.LatticeStub(channel)
    provider = Provider(lattice, stopping)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    provider_grpc.add_ProviderServicer_to_server(provider, server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    log.info("serving on %s, calling the lattice at %s", args.listen, args.lattice)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    if os.environ.get("FERRY_BRIDGE_EXEC") == "1":
        def watch_stdin():
            while os.read(0, 65536):  # unbuffered: a buffered read blocks interpreter exit
                pass
            log.info("stdin closed: the bridge is gone")
            stopping.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    stopping.wait()
    provider.stop_all()
    server.stop(grace=5).wait()
    log.info("stopped")


if __name__ == "__main__":
    main()
