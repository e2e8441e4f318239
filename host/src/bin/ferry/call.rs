//! `ferry call`: send one HTTP request to a component through the lattice and print the answer,
//! or call a function of a custom interface it exports (`ferry call greeter
//! example:greeter/greet.hello '"Ada"'`): arguments as JSON, the answer printed as JSON.

use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_lattice::LatticeClient;
use ferry_proto::http::{Header, HttpRequest};

#[derive(clap::Args)]
pub(crate) struct CallArgs {
    /// The component id.
    component: String,
    /// Path and query; or a function of an interface the component exports,
    /// `namespace:package/interface.function`, followed by its arguments.
    #[arg(default_value = "/")]
    path: String,
    /// The function's arguments, one JSON value each (a word that is not JSON is a string), in
    /// the form docs/protocol.md gives for WIT values.
    args: Vec<String>,
    /// The link name to call a function over (the caller is `ferry-cli`).
    #[arg(long, default_value = "default")]
    link: String,
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
    if !args.path.starts_with('/') && args.path.contains(':') && args.path.contains('/') {
        return call_function(&client, &args).await;
    }
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

/// Call a function of a custom interface and print its results as JSON.
async fn call_function(client: &LatticeClient, args: &CallArgs) -> anyhow::Result<()> {
    let values: Vec<rmpv::Value> = args
        .args
        .iter()
        .map(|arg| serde_json::from_str(arg).unwrap_or_else(|_| serde_json::Value::String(arg.clone())))
        .map(|json| to_msg(&json))
        .collect();
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &rmpv::Value::Array(values))?;
    let answer = client.invoke(&args.component, &args.link, &args.path, payload).await;
    let _ = ferry_lattice::nats::close(client.nats()).await;
    let answer = answer.with_context(|| format!("{} failed", args.path))?;
    let results = rmpv::decode::read_value(&mut &answer[..]).context("the answer is not MessagePack")?;
    let results = match results {
        rmpv::Value::Array(mut items) if items.len() == 1 => items.remove(0),
        other => other,
    };
    println!("{}", to_json(&results));
    Ok(())
}

fn to_msg(json: &serde_json::Value) -> rmpv::Value {
    use serde_json::Value as J;
    match json {
        J::Null => rmpv::Value::Nil,
        J::Bool(b) => rmpv::Value::Boolean(*b),
        J::Number(n) => n
            .as_i64()
            .map(rmpv::Value::from)
            .or_else(|| n.as_u64().map(rmpv::Value::from))
            .unwrap_or_else(|| rmpv::Value::F64(n.as_f64().unwrap_or_default())),
        J::String(s) => rmpv::Value::from(s.as_str()),
        J::Array(items) => rmpv::Value::Array(items.iter().map(to_msg).collect()),
        J::Object(fields) => {
            rmpv::Value::Map(fields.iter().map(|(k, v)| (rmpv::Value::from(k.as_str()), to_msg(v))).collect())
        }
    }
}

fn to_json(msg: &rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    match msg {
        M::Nil => serde_json::Value::Null,
        M::Boolean(b) => serde_json::Value::Bool(*b),
        M::Integer(i) => i.as_i64().map_or_else(|| serde_json::json!(i.as_u64()), |v| serde_json::json!(v)),
        M::F32(f) => serde_json::json!(f),
        M::F64(f) => serde_json::json!(f),
        M::String(s) => serde_json::Value::String(s.as_str().unwrap_or_default().to_owned()),
        M::Binary(bytes) => serde_json::json!(bytes),
        M::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        M::Map(fields) => serde_json::Value::Object(
            fields.iter().map(|(k, v)| (k.as_str().map_or_else(|| k.to_string(), str::to_owned), to_json(v))).collect(),
        ),
        M::Ext(_, bytes) => serde_json::json!(bytes),
    }
}
