"""A Ferry key-value provider in Python, storing in SQLite, behind ferry-provider-bridge.

The bridge is the provider on the lattice; this process implements the gRPC contract in
proto/ferry/provider/v1 (Provider and KeyValue services) and listens where the bridge says
(FERRY_BRIDGE_LISTEN, or --listen). See README.md beside this file.
"""

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
import uuid
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("FERRY_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto"))
provider_pb2, provider_grpc = grpc.protos_and_services("ferry/provider/v1/provider.proto")
kv_pb2, kv_grpc = grpc.protos_and_services("ferry/provider/v1/keyvalue.proto")

log = logging.getLogger("python-keyvalue")

# Keys per list-keys page, as Ferry's own key-value provider pages.
PAGE_SIZE = 100
# Largest message either way: a value or a batch rides in one message (the bridge's limit).
MAX_MESSAGE = 64 << 20


class Store:
    """One SQLite database: a table of (bucket, key) -> value. Each thread has its own
    connection; writes are transactions, so an increment is atomic across threads."""

    def __init__(self, path):
        self.path = path
        self.local = threading.local()
        db = self.db()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS kv ("
            " bucket TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
            " PRIMARY KEY (bucket, key)) WITHOUT ROWID"
        )
        db.commit()

    def db(self):
        db = getattr(self.local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA busy_timeout=10000")
            self.local.db = db
        return db

    def get(self, bucket, key):
        row = self.db().execute("SELECT value FROM kv WHERE bucket=? AND key=?", (bucket, key)).fetchone()
        return None if row is None else bytes(row[0])

    def set_many(self, bucket, items):
        db = self.db()
        with Transaction(db):
            db.executemany(
                "INSERT INTO kv (bucket, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (bucket, key) DO UPDATE SET value=excluded.value",
                [(bucket, k, v) for k, v in items],
            )

    def delete_many(self, bucket, keys):
        db = self.db()
        with Transaction(db):
            db.executemany("DELETE FROM kv WHERE bucket=? AND key=?", [(bucket, k) for k in keys])

    def list_keys(self, bucket, cursor):
        rows = self.db().execute(
            "SELECT key FROM kv WHERE bucket=? ORDER BY key LIMIT ? OFFSET ?", (bucket, PAGE_SIZE + 1, cursor)
        ).fetchall()
        keys = [r[0] for r in rows[:PAGE_SIZE]]
        return keys, (cursor + PAGE_SIZE if len(rows) > PAGE_SIZE else None)

    def increment(self, bucket, key, delta):
        db = self.db()
        with Transaction(db, immediate=True):
            row = db.execute("SELECT value FROM kv WHERE bucket=? AND key=?", (bucket, key)).fetchone()
            try:
                value = 0 if row is None else int(bytes(row[0]).decode().strip())
                if value < 0:
                    raise ValueError
            except ValueError:
                raise BadValue(f"value of {key!r} is not a decimal unsigned integer")
            value += delta
            if value >= 1 << 64:
                raise BadValue(f"increment of {key!r} overflows")
            db.execute(
                "INSERT INTO kv (bucket, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (bucket, key) DO UPDATE SET value=excluded.value",
                (bucket, key, str(value).encode()),
            )
            return value


class BadValue(Exception):
    """A stored value the operation cannot use: the caller's error, not ours."""


class Transaction:
    def __init__(self, db, immediate=False):
        self.db, self.begin = db, "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self):
        self.db.execute(self.begin)

    def __exit__(self, kind, *_):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


class Links:
    """The links the bridge delivered: (source, link name) -> the Store its config names."""

    def __init__(self, default_path):
        self.default_path = default_path
        self.stores = {}
        self.by_link = {}
        self.lock = threading.Lock()

    def store_at(self, path):
        with self.lock:
            if path not in self.stores:
                self.stores[path] = Store(path)
            return self.stores[path]

    def put(self, link):
        store = self.store_at(link.target_config.get("database") or self.default_path)
        with self.lock:
            self.by_link[(link.source_id, link.name)] = store

    def delete(self, link):
        with self.lock:
            self.by_link.pop((link.source_id, link.name), None)

    def store_for(self, caller, context):
        with self.lock:
            store = self.by_link.get((caller.source_id, caller.link_name))
        if store is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no link from {caller.source_id!r} named {caller.link_name!r}",
            )
        return store


class Provider(provider_grpc.ProviderServicer):
    def __init__(self, links, stopping):
        self.links, self.stopping = links, stopping
        self.instance_id = uuid.uuid4().hex

    def PutLink(self, request, context):
        link = request.link
        try:
            self.links.put(link)
        except (sqlite3.Error, OSError) as err:
            log.warning("rejected link %s/%s: %s", link.source_id, link.name, err)
            return provider_pb2.PutLinkResponse(accepted=False, reason=f"cannot open the database: {err}")
        log.info("link from %s named %s ready", link.source_id, link.name)
        return provider_pb2.PutLinkResponse(accepted=True)

    def DeleteLink(self, request, context):
        self.links.delete(request.link)
        log.info("link from %s named %s deleted", request.link.source_id, request.link.name)
        return provider_pb2.DeleteLinkResponse()

    def Health(self, request, context):
        try:
            self.links.store_at(self.links.default_path).db().execute("SELECT 1").fetchone()
            return provider_pb2.HealthResponse(healthy=True, message="ok", instance_id=self.instance_id)
        except sqlite3.Error as err:
            return provider_pb2.HealthResponse(healthy=False, message=str(err), instance_id=self.instance_id)

    def Shutdown(self, request, context):
        log.info("shutdown requested by the bridge")
        self.stopping.set()
        return provider_pb2.ShutdownResponse()


def serving(method):
    """Turn a stored value the caller cannot use into INVALID_ARGUMENT (Ferry's bad_request)
    and a database failure into UNAVAILABLE, instead of an opaque UNKNOWN."""

    def wrapped(self, request, context):
        try:
            return method(self, request, self.links.store_for(request.caller, context), context)
        except BadValue as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except sqlite3.Error as err:
            log.error("database error: %s", err)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"database error: {err}")

    return wrapped


class KeyValue(kv_grpc.KeyValueServicer):
    def __init__(self, links):
        self.links = links

    @serving
    def Get(self, request, store, context):
        value = store.get(request.bucket, request.key)
        return kv_pb2.GetResponse() if value is None else kv_pb2.GetResponse(value=value)

    @serving
    def Set(self, request, store, context):
        store.set_many(request.bucket, [(request.key, request.value)])
        return provider_pb2.Empty()

    @serving
    def Delete(self, request, store, context):
        store.delete_many(request.bucket, [request.key])
        return provider_pb2.Empty()

    @serving
    def Exists(self, request, store, context):
        return provider_pb2.ExistsResponse(exists=store.get(request.bucket, request.key) is not None)

    @serving
    def ListKeys(self, request, store, context):
        keys, cursor = store.list_keys(request.bucket, request.cursor if request.HasField("cursor") else 0)
        return kv_pb2.ListKeysResponse(keys=keys, cursor=cursor)

    @serving
    def Increment(self, request, store, context):
        return kv_pb2.IncrementResponse(value=store.increment(request.bucket, request.key, request.delta))

    @serving
    def GetMany(self, request, store, context):
        items = []
        for key in request.keys:
            value = store.get(request.bucket, key)
            items.append(kv_pb2.MaybeValue(key=key) if value is None else kv_pb2.MaybeValue(key=key, value=value))
        return kv_pb2.GetManyResponse(items=items)

    @serving
    def SetMany(self, request, store, context):
        store.set_many(request.bucket, [(item.key, item.value) for item in request.items])
        return provider_pb2.Empty()

    @serving
    def DeleteMany(self, request, store, context):
        store.delete_many(request.bucket, list(request.keys))
        return provider_pb2.Empty()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=os.environ.get("FERRY_BRIDGE_LISTEN"),
                        help="unix:PATH or HOST:PORT (default: $FERRY_BRIDGE_LISTEN, set by the bridge's --exec)")
    parser.add_argument("--database", default=os.environ.get("KV_SQLITE_PATH", "kv.sqlite3"),
                        help="SQLite file of links without a `database` config (default: $KV_SQLITE_PATH or kv.sqlite3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.listen:
        parser.error("say where to listen: --listen or FERRY_BRIDGE_LISTEN")

    stopping = threading.Event()
    links = Links(args.database)
    links.store_at(args.database)  # fail now, not on the first call, if it cannot be opened
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    provider_grpc.add_ProviderServicer_to_server(Provider(links, stopping), server)
    kv_grpc.add_KeyValueServicer_to_server(KeyValue(links), server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    log.info("serving on %s, database %s", args.listen, args.database)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    if os.environ.get("FERRY_BRIDGE_EXEC") == "1":
        # Started by the bridge: its end closes our stdin, whatever way it ended.
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
