//! `ferry call`: send one HTTP request to a component through the lattice and print the answer.

use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_lattice::LatticeClient;
use ferry_proto::http::{Header, HttpRequest};

#[derive(clap::Args)]
pub(crate) struct CallArgs {
    /// The component id.
    component: String,
    /// Path and query.
    #[arg(default_value = "/")]
    path: String,
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Request body.
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// A header, `name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// NATS server URL.
    #[arg(long, env = "FERRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Lattice.
    #[arg(long, env = "FERRY_LATTICE", default_value = "default")]
    lattice: String,
    /// Credential of the calling identity (written by `ferry up`).
    #[arg(long, env = "FERRY_CLI_CREDENTIAL_FILE", default_value = ".ferry/cli.credential")]
    credential_file: std::path::PathBuf,
    /// Timeout in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

pub(crate) async fn run(args: CallArgs) -> anyhow::Result<()> {
    let credential = std::fs::read_to_string(&args.credential_file)
        .with_context(|| format!("failed to read {} (run `ferry up` first)", args.credential_file.display()))?;
    let client = LatticeClient::connect(
        &args.nats_url,
        &args.lattice,
        &credential,
        Some(Duration::from_millis(args.timeout_ms)),
    )
    .await?;
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) =
            header.split_once(':').with_context(|| format!("expected `name: value`, got {header:?}"))?;
        headers.push(Header { name: name.trim().to_owned(), value: value.trim().as_bytes().to_vec() });
    }
    let request = HttpRequest {
        method: args.method,
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: args.path,
        headers,
        body: args.data.map(String::into_bytes).unwrap_or_default(),
        body_stream: None,
    };
    let response = client.handle_http(&args.component, &request).await?;
    eprintln!("HTTP {}", response.status);
    print!("{}", String::from_utf8_lossy(&response.body));
    let _ = ferry_lattice::nats::close(client.nats()).await;
    if response.status >= 400 {
        bail!("component answered {}", response.status);
    }
    Ok(())
}
