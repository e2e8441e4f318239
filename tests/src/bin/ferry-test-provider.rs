//! A provider for end-to-end tests of what the SDK does around a capability: it accepts every
//! link, or rejects every link when started with `--config reject_links=REASON`, after
//! `--config link_delay_ms=N`; with `--config hang_on_shutdown=true` its shutdown hook never
//! returns (a wedged provider); it serves no operation. Two instances of one provider id with
//! different start-up config behave differently, which real providers only do when one
//! instance's backend fails.

use std::time::Duration;

use ferry_provider_sdk::{ErrorKind, InvocationContext, LinkPut, Provider, ProviderContext, RpcError, run_process};

struct TestProvider;

impl Provider for TestProvider {
    type Link = ();

    async fn on_link_put(&self, ctx: &ProviderContext, _link: &LinkPut) -> Result<(), String> {
        let delay = ctx.config().get("link_delay_ms").and_then(|ms| ms.parse().ok()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match ctx.config().get("reject_links") {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    async fn on_shutdown(&self, ctx: &ProviderContext) {
        if ctx.config().get("hang_on_shutdown").is_some_and(|v| v == "true") {
            std::future::pending::<()>().await;
        }
    }

    async fn handle(&self, _ctx: InvocationContext, operation: &str, _payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        Err(RpcError::new(ErrorKind::UnknownOperation, format!("the test provider serves no {operation:?}")))
    }
}

fn main() -> std::process::ExitCode {
    match run_process(TestProvider) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry-test-provider: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
