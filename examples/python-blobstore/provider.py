"""A Ferry blobstore provider in Python, on a directory, behind ferry-provider-bridge.

The bridge is the provider on the lattice; this process implements the gRPC contract in
proto/ferry/provider/v1 (Provider and Blobstore services) and listens where the bridge says
(FERRY_BRIDGE_LISTEN, or --listen). Object bodies stream both ways in 256 KiB pieces: no object
is ever held in memory whole. See README.md beside this file.
"""

import argparse
import errno
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from concurrent import futures
from urllib.parse import quote, unquote

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("FERRY_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto"))
provider_pb2, provider_grpc = grpc.protos_and_services("ferry/provider/v1/provider.proto")
blob_pb2, blob_grpc = grpc.protos_and_services("ferry/provider/v1/blobstore.proto")

log = logging.getLogger("python-blobstore")

PIECE = 256 << 10  # bytes per streamed message, as Ferry chunks streams
MAX_MESSAGE = 4 << 20
# Marks a directory as a container and remembers when it was made.
MARKER = ".ferry-container"
SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


class Refused(Exception):
    """A request the caller got wrong: its status code and message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def file_name(name):
    """Any object name as one safe file name: every byte outside [A-Za-z0-9-_] and every dot is
    %-escaped, so no name reaches outside its container or collides with a temporary file."""
    if not name:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "an object needs a name")
    return quote(name, safe=SAFE).replace(".", "%2E")


class Root:
    """Containers are directories under one root; objects are files in them."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)

    def container(self, name, must_exist=True):
        if not name or name in (".", "..") or "/" in name or "\0" in name or name.startswith("."):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"invalid container name {name!r}")
        path = os.path.join(self.path, name)
        if must_exist and not os.path.exists(os.path.join(path, MARKER)):
            raise Refused(grpc.StatusCode.NOT_FOUND, f"container {name} does not exist")
        return path

    def object(self, container, name):
        return os.path.join(self.container(container), file_name(name))

    def existing_object(self, container, name):
        path = self.object(container, name)
        if not os.path.isfile(path):
            raise Refused(grpc.StatusCode.NOT_FOUND, f"object {container}/{name} does not exist")
        return path

    def names(self, container):
        entries = os.listdir(self.container(container))
        return sorted(unquote(e) for e in entries if not e.startswith("."))


class Links:
    """The links the bridge delivered: (source, link name) -> the Root their config names."""

    def __init__(self, default_root):
        self.default_root = default_root
        self.by_link = {}
        self.lock = threading.Lock()

    def put(self, link):
        root = Root(link.target_config.get("root") or self.default_root)
        with self.lock:
            self.by_link[(link.source_id, link.name)] = root

    def delete(self, link):
        with self.lock:
            self.by_link.pop((link.source_id, link.name), None)

    def root_for(self, caller):
        with self.lock:
            root = self.by_link.get((caller.source_id, caller.link_name))
        if root is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"no link from {caller.source_id!r} named {caller.link_name!r}")
        return root


class Provider(provider_grpc.ProviderServicer):
    def __init__(self, links, stopping):
        self.links, self.stopping = links, stopping
        self.instance_id = uuid.uuid4().hex

    def PutLink(self, request, context):
        link = request.link
        try:
            self.links.put(link)
        except OSError as err:
            return provider_pb2.PutLinkResponse(accepted=False, reason=f"cannot use the root directory: {err}")
        log.info("link from %s named %s ready", link.source_id, link.name)
        return provider_pb2.PutLinkResponse(accepted=True)

    def DeleteLink(self, request, context):
        self.links.delete(request.link)
        return provider_pb2.DeleteLinkResponse()

    def Health(self, request, context):
        healthy = os.access(self.links.default_root, os.W_OK)
        message = "ok" if healthy else f"{self.links.default_root} is not writable"
        return provider_pb2.HealthResponse(healthy=healthy, message=message, instance_id=self.instance_id)

    def Shutdown(self, request, context):
        log.info("shutdown requested by the bridge")
        self.stopping.set()
        return provider_pb2.ShutdownResponse()


def serving(method):
    """Find the caller's root; turn refusals and file-system errors into typed statuses."""

    def wrapped(self, request, context):
        try:
            return method(self, request, self.links.root_for(request.caller), context)
        except Refused as err:
            context.abort(err.code, str(err))
        except OSError as err:
            abort_os(context, err)

    return wrapped


def abort_os(context, err):
    """A name too long for the file system is the caller's error; anything else is ours."""
    if err.errno == errno.ENAMETOOLONG:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name too long")
    log.error("file system error: %s", err)
    context.abort(grpc.StatusCode.UNAVAILABLE, f"file system error: {err.strerror}")


EMPTY = provider_pb2.Empty


class Blobstore(blob_grpc.BlobstoreServicer):
    def __init__(self, links):
        self.links = links

    @serving
    def CreateContainer(self, request, root, context):
        path = root.container(request.container, must_exist=False)
        os.makedirs(path, exist_ok=True)
        marker = os.path.join(path, MARKER)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(int(time.time())))
        return EMPTY()

    @serving
    def GetContainer(self, request, root, context):
        root.container(request.container)
        return EMPTY()

    @serving
    def DeleteContainer(self, request, root, context):
        shutil.rmtree(root.container(request.container))
        return EMPTY()

    @serving
    def ContainerExists(self, request, root, context):
        try:
            root.container(request.container)
            return provider_pb2.ExistsResponse(exists=True)
        except Refused as err:
            if err.code != grpc.StatusCode.NOT_FOUND:
                raise
            return provider_pb2.ExistsResponse(exists=False)

    @serving
    def ContainerInfo(self, request, root, context):
        with open(os.path.join(root.container(request.container), MARKER)) as f:
            created = int(f.read().strip() or 0)
        return blob_pb2.ContainerInfoResponse(name=request.container, created_at=created)

    def _copy(self, request, root, keep_source):
        src = root.existing_object(request.src.container, request.src.object)
        dest = root.object(request.dest.container, request.dest.object)
        if keep_source:
            temp = temp_path(os.path.dirname(dest))
            try:
                shutil.copyfile(src, temp)
                os.replace(temp, dest)
            finally:
                remove(temp)
        else:
            os.replace(src, dest)
        return EMPTY()

    @serving
    def CopyObject(self, request, root, context):
        return self._copy(request, root, keep_source=True)

    @serving
    def MoveObject(self, request, root, context):
        return self._copy(request, root, keep_source=False)

    def GetData(self, request, context):
        try:
            root = self.links.root_for(request.caller)
            f = open(root.existing_object(request.container, request.object), "rb")
        except Refused as err:
            context.abort(err.code, str(err))
        except OSError as err:
            abort_os(context, err)
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end = request.start, min(request.end, size - 1)
            f.seek(start)
            left = max(0, end - start + 1)
            first = True
            while first or left > 0:
                piece = f.read(min(PIECE, left)) if left > 0 else b""
                left -= len(piece)
                yield blob_pb2.DataChunk(size=size if first else 0, data=piece)
                first = False
                if not piece:
                    break

    def WriteData(self, request_iterator, context):
        temp = None
        try:
            head = next(request_iterator)
            root = self.links.root_for(head.caller)
            dest = root.object(head.container, head.object)
            temp = temp_path(os.path.dirname(dest))
            with open(temp, "wb") as f:
                f.write(head.data)
                for piece in request_iterator:  # raises if the bridge cancels the call
                    f.write(piece.data)
                f.flush()
                os.fsync(f.fileno())
            if not context.is_active():
                return EMPTY()  # cancelled after the last piece: keep the old object
            os.replace(temp, dest)
            temp = None
            return EMPTY()
        except StopIteration:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "WriteData without a first message")
        except Refused as err:
            context.abort(err.code, str(err))
        except OSError as err:
            abort_os(context, err)
        finally:
            if temp is not None:
                remove(temp)

    @serving
    def ListObjects(self, request, root, context):
        names = root.names(request.container)
        if request.HasField("after"):
            names = [n for n in names if n > request.after]
        limit = request.limit or 1000
        return blob_pb2.ListObjectsResponse(names=names[:limit], done=len(names) <= limit)

    @serving
    def DeleteObject(self, request, root, context):
        remove(root.object(request.container, request.object))
        return EMPTY()

    @serving
    def DeleteObjects(self, request, root, context):
        for name in request.objects:
            remove(root.object(request.container, name))
        return EMPTY()

    @serving
    def HasObject(self, request, root, context):
        return provider_pb2.ExistsResponse(exists=os.path.isfile(root.object(request.container, request.object)))

    @serving
    def ObjectInfo(self, request, root, context):
        st = os.stat(root.existing_object(request.container, request.object))
        return blob_pb2.ObjectInfoResponse(name=request.object, container=request.container,
                                           created_at=int(st.st_mtime), size=st.st_size)

    @serving
    def Clear(self, request, root, context):
        path = root.container(request.container)
        for entry in os.listdir(path):
            if entry != MARKER:
                remove(os.path.join(path, entry))
        return EMPTY()


def temp_path(directory):
    return os.path.join(directory, f".tmp-{uuid.uuid4().hex}")


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=os.environ.get("FERRY_BRIDGE_LISTEN"),
                        help="unix:PATH or HOST:PORT (default: $FERRY_BRIDGE_LISTEN, set by the bridge's --exec)")
    parser.add_argument("--root", default=os.environ.get("BLOB_ROOT", "blobs"),
                        help="directory of links without a `root` config (default: $BLOB_ROOT or ./blobs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.listen:
        parser.error("say where to listen: --listen or FERRY_BRIDGE_LISTEN")

    stopping = threading.Event()
    links = Links(Root(args.root).path)
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    provider_grpc.add_ProviderServicer_to_server(Provider(links, stopping), server)
    blob_grpc.add_BlobstoreServicer_to_server(Blobstore(links), server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    log.info("serving on %s, root %s", args.listen, links.default_root)

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
    server.stop(grace=5).wait()
    log.info("stopped")


if __name__ == "__main__":
    main()
