// A Ferry key-value provider in Node.js behind ferry-provider-bridge.
//
// The bridge is the provider on the lattice; this process implements the gRPC contract in
// proto/ferry/provider/v1 (Provider and KeyValue services) and listens where the bridge says
// (FERRY_BRIDGE_LISTEN, or --listen). Values live in memory and in an append-only journal file
// that is replayed (and compacted) at start, so they survive a restart. See README.md.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = process.env.FERRY_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');
const definition = protoLoader.loadSync(
  ['ferry/provider/v1/provider.proto', 'ferry/provider/v1/keyvalue.proto'],
  { includeDirs: [PROTO_DIR], keepCase: true, longs: String, defaults: false, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).ferry.provider.v1;

const PAGE_SIZE = 100; // keys per list-keys page, as Ferry's own key-value provider pages
const MAX_MESSAGE = 64 << 20; // a value or a batch rides in one message (the bridge's limit)
const U64_MAX = (1n << 64n) - 1n;

function flag(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

function log(level, message) {
  process.stderr.write(`${new Date().toISOString()} ${level} node-keyvalue: ${message}\n`);
}

/** One journal file: the data in memory, every change appended before it is answered. */
class Store {
  constructor(file) {
    this.file = file;
    this.buckets = new Map();
    if (fs.existsSync(file)) {
      for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
        if (!line) continue;
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          log('WARN', `skipping a torn journal line in ${file}`); // a crash mid-append
          continue;
        }
        this.apply(entry);
      }
    }
    // Compact: write what is live to a new file, then swap it in.
    const tmp = `${file}.${process.pid}.tmp`;
    const lines = [];
    for (const [bucket, keys] of this.buckets) {
      for (const [key, value] of keys) lines.push(JSON.stringify({ op: 'set', bucket, key, value }));
    }
    fs.writeFileSync(tmp, lines.length ? `${lines.join('\n')}\n` : '');
    fs.renameSync(tmp, file);
    this.fd = fs.openSync(file, 'a');
  }

  apply(entry) {
    const keys = this.buckets.get(entry.bucket) || new Map();
    this.buckets.set(entry.bucket, keys);
    if (entry.op === 'set') keys.set(entry.key, entry.value);
    else keys.delete(entry.key);
  }

  /** Record and apply changes, all in one write. */
  change(entries) {
    if (!entries.length) return;
    fs.writeSync(this.fd, entries.map((e) => JSON.stringify(e)).join('\n') + '\n');
    for (const entry of entries) this.apply(entry);
  }

  get(bucket, key) {
    const value = this.buckets.get(bucket)?.get(key);
    return value === undefined ? undefined : Buffer.from(value, 'base64');
  }

  set(bucket, pairs) {
    this.change(pairs.map(([key, value]) => ({ op: 'set', bucket, key, value: Buffer.from(value).toString('base64') })));
  }

  delete(bucket, keys) {
    this.change(keys.map((key) => ({ op: 'del', bucket, key })));
  }

  list(bucket, cursor) {
    const keys = [...(this.buckets.get(bucket)?.keys() || [])].sort();
    const page = keys.slice(cursor, cursor + PAGE_SIZE);
    return { keys: page, cursor: cursor + PAGE_SIZE < keys.length ? String(cursor + PAGE_SIZE) : undefined };
  }
}

class CallerError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const defaultJournal = flag('journal', process.env.KV_JOURNAL_PATH || 'kv.jsonl');
const stores = new Map();
const links = new Map(); // "source\0name" -> Store
const instanceId = crypto.randomUUID();

function storeAt(file) {
  if (!stores.has(file)) stores.set(file, new Store(file));
  return stores.get(file);
}

function storeFor(caller) {
  const store = caller && links.get(`${caller.source_id}\0${caller.link_name}`);
  if (!store) {
    throw new CallerError(grpc.status.FAILED_PRECONDITION,
      `no link from ${JSON.stringify(caller?.source_id)} named ${JSON.stringify(caller?.link_name)}`);
  }
  return store;
}

/** A unary handler: `work(request, store)` answers; its errors become typed statuses. */
function unary(work) {
  return (call, callback) => {
    try {
      callback(null, work(call.request, storeFor(call.request.caller)));
    } catch (err) {
      if (err instanceof CallerError) callback({ code: err.code, details: err.message });
      else {
        log('ERROR', `storage failed: ${err.message}`);
        callback({ code: grpc.status.UNAVAILABLE, details: `storage failed: ${err.message}` });
      }
    }
  };
}

const provider = {
  PutLink(call, callback) {
    const link = call.request.link;
    const file = link.target_config?.journal || defaultJournal;
    try {
      links.set(`${link.source_id}\0${link.name}`, storeAt(file));
    } catch (err) {
      log('WARN', `rejected link ${link.source_id}/${link.name}: ${err.message}`);
      return callback(null, { accepted: false, reason: `cannot open the journal: ${err.message}` });
    }
    log('INFO', `link from ${link.source_id} named ${link.name} ready`);
    callback(null, { accepted: true });
  },
  DeleteLink(call, callback) {
    links.delete(`${call.request.link.source_id}\0${call.request.link.name}`);
    callback(null, {});
  },
  Health(call, callback) {
    callback(null, { healthy: true, message: 'ok', instance_id: instanceId });
  },
  Shutdown(call, callback) {
    log('INFO', 'shutdown requested by the bridge');
    callback(null, {});
    setImmediate(stop);
  },
};

const keyValue = {
  Get: unary(({ bucket, key }, store) => {
    const value = store.get(bucket, key);
    return value === undefined ? {} : { value };
  }),
  Set: unary(({ bucket, key, value }, store) => (store.set(bucket, [[key, value || Buffer.alloc(0)]]), {})),
  Delete: unary(({ bucket, key }, store) => (store.delete(bucket, [key]), {})),
  Exists: unary(({ bucket, key }, store) => ({ exists: store.get(bucket, key) !== undefined })),
  ListKeys: unary(({ bucket, cursor }, store) => store.list(bucket, cursor == null ? 0 : Number(cursor))),
  Increment: unary(({ bucket, key, delta }, store) => {
    const stored = store.get(bucket, key);
    const text = stored === undefined ? '0' : stored.toString('utf8').trim();
    if (!/^[0-9]+$/.test(text)) {
      throw new CallerError(grpc.status.INVALID_ARGUMENT, `value of ${JSON.stringify(key)} is not a decimal unsigned integer`);
    }
    const value = BigInt(text) + BigInt(delta || 0);
    if (value > U64_MAX) throw new CallerError(grpc.status.INVALID_ARGUMENT, `increment of ${JSON.stringify(key)} overflows`);
    store.set(bucket, [[key, Buffer.from(value.toString())]]);
    return { value: value.toString() };
  }),
  GetMany: unary(({ bucket, keys }, store) => ({
    items: (keys || []).map((key) => {
      const value = store.get(bucket, key);
      return value === undefined ? { key } : { key, value };
    }),
  })),
  SetMany: unary(({ bucket, items }, store) => (store.set(bucket, (items || []).map((i) => [i.key, i.value || Buffer.alloc(0)])), {})),
  DeleteMany: unary(({ bucket, keys }, store) => (store.delete(bucket, keys || []), {})),
};

const listen = flag('listen', process.env.FERRY_BRIDGE_LISTEN);
if (!listen) {
  log('ERROR', 'say where to listen: --listen or FERRY_BRIDGE_LISTEN');
  process.exit(2);
}
storeAt(defaultJournal); // fail now, not on the first call, if the journal cannot be opened

const server = new grpc.Server({
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
});
server.addService(v1.Provider.service, provider);
server.addService(v1.KeyValue.service, keyValue);
if (listen.startsWith('unix:')) fs.rmSync(listen.slice('unix:'.length), { force: true });
server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    log('ERROR', `cannot listen on ${listen}: ${err.message}`);
    process.exit(1);
  }
  log('INFO', `serving on ${listen}, journal ${defaultJournal}`);
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => server.forceShutdown(), 5000);
  server.tryShutdown(() => {
    clearTimeout(force);
    log('INFO', 'stopped');
    process.exit(0);
  });
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
if (process.env.FERRY_BRIDGE_EXEC === '1') {
  // Started by the bridge: its end closes our stdin, whatever way it ended.
  process.stdin.on('end', () => {
    log('INFO', 'stdin closed: the bridge is gone');
    stop();
  });
  process.stdin.resume();
}
