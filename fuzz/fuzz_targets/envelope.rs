//! Invocation and response envelopes as they arrive from NATS: decoding, MAC checks and a
//! re-encoding of whatever decodes must never panic.
#![no_main]

use ferry_proto::{
    auth::{MacKey, ReplayGuard, verify_invocation},
    envelope::{Invocation, InvocationResponse},
    subject::Channel,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MacKey::from_bytes([7; 32]);
    if let Ok(inv) = Invocation::decode(data) {
        let _ = inv.verify_mac(&key);
        let _ = inv.replay_key();
        let _ = verify_invocation(&inv, Channel::Rpc, &key, &ReplayGuard::default());
        let encoded = inv.encode().expect("a decoded invocation encodes again");
        assert!(Invocation::decode(&encoded).is_ok(), "an encoded invocation decodes");
    }
    if let Ok(resp) = InvocationResponse::decode(data) {
        let _ = resp.verify(&key, "id");
        let _ = resp.encode();
    }
});
