//! Text a host or provider is handed by others: component claims (JWTs), provider credentials
//! and component references.
#![no_main]

use ferry_proto::{auth::CredentialSet, claims::ComponentClaims, image::ImageRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(claims) = ComponentClaims::decode_verified(text) {
        let _ = claims.admit("00", 0, &[]);
        let _ = claims.capabilities().map(|caps| caps.allows("wasi", "keyvalue", "store"));
    }
    if let Ok(set) = CredentialSet::parse(text) {
        let _ = set.keys_at(0);
        let _ = set.encode();
    }
    let _ = ImageRef::parse(text);
});
