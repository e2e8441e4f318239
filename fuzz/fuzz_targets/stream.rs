//! Stream pulls and chunks (request and response bodies, blob data) as they arrive.
#![no_main]

use ferry_proto::{
    auth::MacKey,
    stream::{StreamChunk, StreamPull},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MacKey::from_bytes([3; 32]);
    if let Ok(pull) = StreamPull::decode(data) {
        let _ = pull.verify(&key, "s");
    }
    if let Ok(chunk) = StreamChunk::decode(data) {
        let _ = chunk.verify(&key, "s", 0);
    }
});
