//! HTTP requests and responses on their way between the http-server provider, hosts and
//! components (MessagePack), and the subjects they are addressed on.
#![no_main]

use ferry_proto::{
    codec,
    http::{HttpRequest, HttpResponse},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = codec::decode::<HttpRequest>(data) {
        let encoded = codec::encode(&request).expect("a decoded request encodes");
        assert_eq!(codec::decode::<HttpRequest>(&encoded).ok(), Some(request));
    }
    if let Ok(response) = codec::decode::<HttpResponse>(data) {
        let _ = codec::encode(&response);
    }
});
