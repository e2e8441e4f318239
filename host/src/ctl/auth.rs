//! Who may command this host: the operators whose public keys it was given. A host given none
//! obeys anyone who can publish on its control subjects (and says so at start); a host given
//! some refuses, and logs, every command not signed by one of them, signed for another subject,
//! outside its time window, or seen before — on this host, or for commands any host may take,
//! anywhere on the lattice.

use ferry_lattice::replay::ReplayRecord;
use ferry_proto::{
    auth::ReplayGuard,
    ctl::{
        CommandKind, Scope,
        operator::{COMMAND_WINDOW_MS, CommandSignature},
    },
};

/// The operators a host obeys, and what it remembers of commands already carried out.
pub(crate) struct CommandAuth {
    trusted: Vec<String>,
    seen: ReplayGuard,
    record: ReplayRecord,
}

impl CommandAuth {
    pub(crate) fn new(trusted: Vec<String>, record: ReplayRecord) -> Self {
        Self { trusted, seen: ReplayGuard::new(COMMAND_WINDOW_MS), record }
    }

    /// Whether commands must be signed.
    pub(crate) fn required(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// Check the command on `subject` with `headers` and `body`; why it is refused, if it is.
    pub(crate) async fn check(
        &self,
        kind: CommandKind,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        body: &[u8],
    ) -> Result<(), String> {
        if !self.required() {
            return Ok(());
        }
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(async_nats::HeaderValue::as_str);
        let signature = CommandSignature::from_headers(header)
            .map_err(|_| "unauthorized: commands to this host must be signed by an operator key".to_owned())?;
        signature
            .verify(&self.trusted, subject, body, ferry_proto::time::now_ms())
            .map_err(|e| format!("unauthorized: {e} (operator {})", signature.operator))?;
        self.seen
            .record(&signature.nonce, signature.issued_at_ms)
            .map_err(|_| format!("unauthorized: command nonce {} was seen before", signature.nonce))?;
        // A command any host may take could be replayed to another one: claim it lattice-wide.
        if kind.scope() == Scope::AnyHost && !kind.is_read_only() {
            self.record
                .claim(&format!("ctl-{}", signature.nonce))
                .await
                .map_err(|e| format!("unauthorized: {}", e.message))?;
        }
        Ok(())
    }
}
