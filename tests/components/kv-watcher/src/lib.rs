//! Test component: exports `wasi:keyvalue/watcher` and logs each change it is told of
//! (`watch on-set KEY=VALUE`, `watch on-delete KEY`) through `wasi:logging`, where the test
//! reads it in the host's log.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "ferry:host/keyvalue-watcher-component",
        generate_all,
    });
}

use bindings::exports::wasi::keyvalue::watcher::Guest;
use bindings::wasi::keyvalue::store::Bucket;
use bindings::wasi::logging::logging::{Level, log};

struct Component;

bindings::export!(Component with_types_in bindings);

impl Guest for Component {
    fn on_set(_bucket: Bucket, key: String, value: Vec<u8>) {
        log(Level::Info, "watch", &format!("watch on-set {key}={}", String::from_utf8_lossy(&value)));
    }

    fn on_delete(_bucket: Bucket, key: String) {
        log(Level::Info, "watch", &format!("watch on-delete {key}"));
    }
}
