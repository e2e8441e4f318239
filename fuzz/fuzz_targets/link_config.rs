//! Link config as providers read it (wasmCloud's keys, in any case): `key=value` lines.
#![no_main]

use std::collections::BTreeMap;

use ferry_provider_sdk::{LINK_NATS_KEYS, LinkConfig, LinkNats};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let values: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let known: Vec<&str> = LINK_NATS_KEYS.iter().copied().chain(["root", "bucket", "enable_bucket_auto_create"]).collect();
    if let Ok(config) = LinkConfig::parse(&values, &known) {
        let _ = config.flag("enable_bucket_auto_create", false);
        let _ = config.first(&["cluster_uri", "cluster_uris"]);
        if let Ok(nats) = LinkNats::from_config(&config, &["cluster_uri", "cluster_uris"]) {
            let _ = nats.needs_own_connection();
            let _ = format!("{nats:?}");
        }
    }
});
