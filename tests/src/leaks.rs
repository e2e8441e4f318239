//! Secrets where they must not be: every process the harness starts has its argument list and
//! its whole output scanned when it is dropped, every lattice the harness starts has its events
//! and control replies scanned as they pass ([`Tap`]), and a test where a seed, a provider
//! credential or a secret the test registered shows up fails (issue 15: no seed, credential or
//! config secret in any log line, event, ctl reply or argument list the suite produces).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use futures::StreamExt as _;

/// Secrets a test put into the lattice (config values, passwords), which no process may print.
static REGISTERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Make `value` one of the secrets no process may print from now on (every test of this run,
/// so register only values no test prints on purpose).
pub fn register_secret(value: &str) {
    let mut registered = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
    if !registered.iter().any(|v| v == value) {
        registered.push(value.to_owned());
    }
}

/// What in `text` is a secret: nkeys seeds (`S` + key type + 56 base32 characters), provider
/// credentials (`ferrycred1.…`) and registered secrets; each described without the secret.
pub fn find_secrets(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    for (at, pair) in bytes.windows(2).enumerate() {
        let starts_word = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        if starts_word && pair[0] == b'S' && b"ACNMOPUVX".contains(&pair[1]) && is_seed(&bytes[at..]) {
            found.push(format!("an nkeys seed (S{}…) at byte {at}", char::from(pair[1])));
        }
    }
    let prefix = ferry_proto::auth::CREDENTIAL_PREFIX;
    for (at, _) in text.match_indices(prefix) {
        // The prefix alone (an error message naming the format) is no credential; its keys are
        // hundreds of base64url characters.
        let body =
            text[at + prefix.len()..].bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if body.count() >= MIN_CREDENTIAL_BODY {
            found.push(format!("a provider credential at byte {at}"));
        }
    }
    let registered = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
    for secret in registered.iter() {
        if let Some(at) = text.find(secret.as_str()) {
            found.push(format!("a registered secret ({} characters) at byte {at}", secret.len()));
        }
    }
    found
}

/// Whether lattices get a [`Tap`]; benchmarks turn it off ([`no_taps`]) so that it costs their
/// figures nothing.
static TAPS: AtomicBool = AtomicBool::new(true);

/// Start no [`Tap`] from now on (for benchmarks).
pub fn no_taps() {
    TAPS.store(false, Ordering::Relaxed);
}

/// A listener on a lattice's NATS that scans every event (`ferry.evt.>`) and every control
/// reply (a JSON `CtlResponse` on a reply inbox) for secrets while the test runs; dropped at the
/// test's end, it fails the test on a find.
pub struct Tap {
    task: Option<tokio::task::JoinHandle<()>>,
    found: Arc<Mutex<Vec<String>>>,
}

impl Tap {
    /// Listen on `nats` (nothing, after [`no_taps`]).
    ///
    /// # Errors
    /// When the subscriptions cannot be made.
    pub async fn start(nats: &async_nats::Client) -> anyhow::Result<Self> {
        let found = Arc::new(Mutex::new(Vec::new()));
        if !TAPS.load(Ordering::Relaxed) {
            return Ok(Self { task: None, found });
        }
        let events = nats.subscribe("ferry.evt.>").await?;
        let replies = nats.subscribe("_INBOX.>").await?;
        let sink = found.clone();
        let task = tokio::spawn(async move {
            let mut both = futures::stream::select(events, replies);
            while let Some(msg) = both.next().await {
                let subject = msg.subject.as_str();
                let what = if subject.starts_with("ferry.evt.") {
                    "an event"
                } else if is_ctl_reply(&msg.payload) {
                    "a control reply"
                } else {
                    continue;
                };
                for find in find_secrets(&String::from_utf8_lossy(&msg.payload)) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{find} in {what} on {subject}"));
                }
            }
        });
        Ok(Self { task: Some(task), found })
    }
}

impl Tap {
    /// What it found so far, taken (so its drop no longer fails the test for them).
    pub fn take_found(&self) -> Vec<String> {
        std::mem::take(&mut *self.found.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Whether `payload` is a control reply: a JSON object with `request_id` and `success`.
fn is_ctl_reply(payload: &[u8]) -> bool {
    payload.first() == Some(&b'{')
        && serde_json::from_slice::<serde_json::Value>(payload)
            .is_ok_and(|v| v.get("request_id").is_some() && v.get("success").is_some())
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let found = std::mem::take(&mut *self.found.lock().unwrap_or_else(|p| p.into_inner()));
        if !found.is_empty() && !std::thread::panicking() {
            panic!("secrets went over the lattice in the clear: {found:#?}");
        }
    }
}

/// The fewest base64url characters after `ferrycred1.` taken for a credential (one key alone
/// is 43).
const MIN_CREDENTIAL_BODY: usize = 40;

/// Whether `bytes` starts with a whole 58-character nkeys seed.
fn is_seed(bytes: &[u8]) -> bool {
    const LEN: usize = 58;
    bytes.len() >= LEN
        && bytes[2..LEN].iter().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b))
        && bytes.get(LEN).is_none_or(|b| !b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_credentials_and_registered_secrets_are_found_and_nothing_else() {
        let (_, seed) = ferry_proto::auth::ClusterKey::generate().expect("a key");
        assert_eq!(find_secrets(&format!("seed={seed}\n")).len(), 1);
        assert_eq!(find_secrets(&format!("[{seed}]")).len(), 1);
        // A public key, a longer word, a shorter one: not seeds.
        let public = nkeys::KeyPair::new_cluster().public_key();
        assert!(find_secrets(&public).is_empty());
        assert!(find_secrets(&format!("{seed}A")).is_empty());
        assert!(find_secrets(&seed[..57]).is_empty());
        let (cluster, _) = ferry_proto::auth::ClusterKey::generate().expect("a key");
        let credential = cluster.issue_credential("l", "p", 0, 1).encode();
        assert_eq!(find_secrets(&format!("cred {credential}")).len(), 1);
        assert!(find_secrets("expected a string starting with ferrycred1.").is_empty());
        register_secret("correct-horse-battery");
        let found = find_secrets("password=correct-horse-battery");
        assert_eq!(found.len(), 1);
        assert!(!found[0].contains("correct-horse"), "the finding repeats the secret: {found:?}");
    }
}
