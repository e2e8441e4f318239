//! Tests of signing and verifying messages, keys and credentials.

use super::*;
use crate::{
    envelope::{Invocation, InvocationResponse},
    subject::Channel,
    time,
};

fn setup() -> (ClusterKey, ProviderCredential) {
    let (cluster, _seed) = ClusterKey::generate().unwrap();
    let cred = cluster.issue_credential("lat", "kv", time::now_ms(), 2);
    (cluster, cred)
}

#[test]
fn host_and_provider_derive_the_same_key() {
    let (cluster, cred) = setup();
    let now = time::now_ms();
    let mut inv = Invocation::new("comp", "kv", "default", "op", b"payload".to_vec());
    inv.sign(&cluster.provider_key("lat", "kv", period_of(now)));
    assert!(inv.verify_mac(&cred.key_at(inv.issued_at_ms).unwrap()).is_ok());
}

#[test]
fn a_progress_message_never_passes_for_an_answer() {
    let (cluster, _) = setup();
    let key = cluster.provider_key("lat", "kv", period_of(time::now_ms()));
    let mut progress = InvocationResponse::progress("req");
    progress.sign(&key);
    assert!(progress.verify(&key, "req").is_ok());
    // The same fields as an (empty, successful) answer: the MAC no longer holds.
    let mut answer = progress.clone();
    answer.progress = false;
    assert!(matches!(answer.verify(&key, "req"), Err(AuthError::BadMac)));
    let mut signed_answer = InvocationResponse::ok("req", Vec::new());
    signed_answer.sign(&key);
    assert_ne!(signed_answer.mac, progress.mac);
}

#[test]
fn tampering_any_field_breaks_the_mac() {
    let (cluster, _) = setup();
    let key = cluster.provider_key("lat", "kv", period_of(time::now_ms()));
    let mut inv = Invocation::new("comp", "kv", "default", "op", b"payload".to_vec());
    inv.sign(&key);
    let mutations: [fn(&mut Invocation); 11] = [
        |i| i.payload.push(0),
        |i| i.origin = "other".into(),
        |i| i.target = "other".into(),
        |i| i.operation = "other".into(),
        |i| i.link_name = "other".into(),
        |i| i.id = "other".into(),
        |i| i.issued_at_ms += 1,
        |i| i.deadline_ms += 1,
        |i| i.cause = "parent.0".into(),
        |i| i.payload_stream = Some(crate::envelope::PayloadStream { id: "s".into(), size: 9 }),
        |i| i.payload_stream = Some(crate::envelope::PayloadStream { id: String::new(), size: 0 }),
    ];
    for mutate in mutations {
        let mut copy = inv.clone();
        mutate(&mut copy);
        assert_eq!(copy.verify_mac(&key), Err(AuthError::BadMac));
    }
    let mut unsigned = inv.clone();
    unsigned.mac.clear();
    assert_eq!(unsigned.verify_mac(&key), Err(AuthError::Unsigned));
}

#[test]
fn keys_differ_per_provider_lattice_period_and_cluster() {
    let (cluster, _) = setup();
    let (other, _) = ClusterKey::generate().unwrap();
    let base = cluster.provider_key("lat", "kv", 1);
    assert_ne!(base, cluster.provider_key("lat", "kv2", 1));
    assert_ne!(base, cluster.provider_key("lat2", "kv", 1));
    assert_ne!(base, cluster.provider_key("lat", "kv", 2));
    assert_ne!(base, other.provider_key("lat", "kv", 1));
}

#[test]
fn credential_round_trips_and_expires() {
    let (_, cred) = setup();
    let parsed = ProviderCredential::parse(&cred.encode()).unwrap();
    assert_eq!(parsed, cred);
    assert!(cred.key_at(cred.valid_until_ms()).is_err());
    assert!(cred.key_at(cred.valid_from_ms().saturating_sub(1)).is_err());
    assert!(cred.key_at(cred.valid_until_ms() - 1).is_ok());
    assert!(ProviderCredential::parse("ferrycred1.!!!").is_err());
    assert!(ProviderCredential::parse("nope").is_err());
    assert!(!format!("{cred:?}").contains("keys"));
}

#[test]
fn responses_are_bound_to_their_request() {
    let (cluster, _) = setup();
    let key = cluster.provider_key("lat", "kv", 5);
    let mut resp = InvocationResponse::ok("req1", vec![1]);
    resp.sign(&key);
    assert!(resp.verify(&key, "req1").is_ok());
    assert!(matches!(resp.verify(&key, "req2"), Err(AuthError::WrongResponseId { .. })));
    resp.payload.push(2);
    assert_eq!(resp.verify(&key, "req1"), Err(AuthError::BadMac));
    let mut err = InvocationResponse::err("req1", crate::RpcError::not_linked("x"));
    err.sign(&key);
    err.error = Some(crate::RpcError::not_linked("y"));
    assert_eq!(err.verify(&key, "req1"), Err(AuthError::BadMac));
    let mut streamed = InvocationResponse::ok("req1", vec![1]);
    streamed.payload_stream = Some(crate::envelope::PayloadStream { id: "s".into(), size: 10 });
    streamed.sign(&key);
    assert!(streamed.verify(&key, "req1").is_ok());
    streamed.payload_stream.as_mut().unwrap().size = 11;
    assert_eq!(streamed.verify(&key, "req1"), Err(AuthError::BadMac));
}

#[test]
fn operations_are_accepted_only_on_their_subject() {
    let (cluster, _) = setup();
    let guard = ReplayGuard::new(DEFAULT_REPLAY_WINDOW_MS);
    let key = cluster.provider_key("lat", "kv", period_of(time::now_ms()));
    let mut get = Invocation::new("comp", "kv", "default", "wasi:keyvalue/store.get", vec![]);
    get.sign(&key);
    for channel in [Channel::LinkPut, Channel::LinkDel, Channel::LinkSync, Channel::Health, Channel::Shutdown] {
        assert!(matches!(verify_invocation(&get, channel, &key, &guard), Err(AuthError::WrongChannel { .. })));
    }
    let mut sync = Invocation::new("kv", "kv", "default", crate::subject::OP_LINK_SYNC, vec![]);
    sync.sign(&key);
    assert!(matches!(verify_invocation(&sync, Channel::Rpc, &key, &guard), Err(AuthError::WrongChannel { .. })));
    assert!(matches!(verify_invocation(&sync, Channel::LinkPut, &key, &guard), Err(AuthError::WrongChannel { .. })));
    assert_eq!(verify_invocation(&sync, Channel::LinkSync, &key, &guard), Ok(()));
    let mut stop = Invocation::new("host", "kv", "default", crate::subject::OP_SHUTDOWN, vec![]);
    stop.sign(&key);
    assert!(matches!(verify_invocation(&stop, Channel::Rpc, &key, &guard), Err(AuthError::WrongChannel { .. })));
    assert!(matches!(verify_invocation(&stop, Channel::Health, &key, &guard), Err(AuthError::WrongChannel { .. })));
    assert_eq!(verify_invocation(&stop, Channel::Shutdown, &key, &guard), Ok(()));
    assert_eq!(verify_invocation(&get, Channel::Rpc, &key, &guard), Ok(()));
}

#[test]
fn bad_seeds_are_rejected() {
    assert!(ClusterKey::from_seed("not a seed").is_err());
    let account = nkeys::KeyPair::new_account().seed().unwrap();
    assert!(ClusterKey::from_seed(&account).is_err());
}

#[test]
fn a_credential_set_signs_with_its_first_and_verifies_under_any() {
    let (old, old_cred) = setup();
    let (new, _) = ClusterKey::generate().unwrap();
    let now = crate::time::now_ms();
    let new_cred = new.issue_credential("lat", "kv", now, 1);
    let set = CredentialSet::parse(&format!("{},{}", new_cred.encode(), old_cred.encode())).unwrap();
    assert_eq!(set.issuers(), vec![new.public_key(), old.public_key()]);
    assert_eq!(CredentialSet::parse(&set.encode()).unwrap(), set);
    assert_eq!(set.key_at(now).unwrap(), new.provider_key("lat", "kv", period_of(now)));
    let other = new.issue_credential("lat", "kv2", now, 1);
    assert!(CredentialSet::parse(&format!("{},{}", new_cred.encode(), other.encode())).is_err());

    // An invocation signed under the old key is taken up, and answered under it.
    let guard = ReplayGuard::default();
    let mut inv = Invocation::new("kv", "comp", "default", "wasi:keyvalue/store.get", vec![1]);
    inv.sign(&old.provider_key("lat", "kv", period_of(inv.issued_at_ms)));
    let keys = set.keys_at(inv.issued_at_ms);
    let key = verify_invocation_under(&inv, Channel::Rpc, &keys, &guard).unwrap();
    assert_eq!(key, old.provider_key("lat", "kv", period_of(inv.issued_at_ms)));
    let (stranger, _) = ClusterKey::generate().unwrap();
    let mut forged = Invocation::new("kv", "comp", "default", "wasi:keyvalue/store.get", vec![1]);
    forged.sign(&stranger.provider_key("lat", "kv", period_of(forged.issued_at_ms)));
    assert_eq!(verify_invocation_under(&forged, Channel::Rpc, &keys, &guard), Err(AuthError::BadMac));
}

#[test]
fn the_trace_context_is_under_the_mac_and_an_untraced_mac_is_unchanged() {
    let (cluster, _) = setup();
    let key = cluster.provider_key("lat", "kv", period_of(time::now_ms()));
    let mut plain = Invocation::new("comp", "kv", "default", "wasi:keyvalue/store.get", vec![1, 2]);
    plain.sign(&key);
    let untraced_mac = plain.mac.clone();
    let mut traced = plain.clone();
    traced
        .trace_context
        .insert(crate::trace::TRACEPARENT.into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    assert_eq!(traced.verify_mac(&key), Err(AuthError::BadMac), "a trace added on the way must not pass");
    traced.sign(&key);
    assert_ne!(traced.mac, untraced_mac);
    assert_eq!(traced.verify_mac(&key), Ok(()));
    traced
        .trace_context
        .insert(crate::trace::TRACEPARENT.into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01".into());
    assert_eq!(traced.verify_mac(&key), Err(AuthError::BadMac), "a changed trace must not pass");
    plain.sign(&key);
    assert_eq!(plain.mac, untraced_mac, "signing is deterministic");
}
