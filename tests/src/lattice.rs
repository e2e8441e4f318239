//! A lattice for one test: its own NATS server, one `ferry host` process, a cluster key, an
//! operator key its hosts obey, a control client signing with it and a signed lattice client
//! acting as the provider [`TEST_CLIENT_ID`].

use std::{process::Command, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use ferry_lattice::{CtlClient, LatticeClient};
use ferry_proto::RpcError;
use ferry_proto::{
    auth::ClusterKey,
    ctl::{
        ComponentStart, ConfigDelCommand, ConfigPutCommand, CtlResponse, LinkDelCommand, LinkPutCommand, LinkSet,
        operator::OperatorKey,
    },
    http::{Header, HttpRequest},
    link::{Link, LinkKey},
};

use crate::{NatsServer, Process, binary, build_component};

/// The provider id tests call components as (like an http-server provider would).
pub const TEST_CLIENT_ID: &str = "test-client";

/// The log filter of processes the harness starts: `FERRY_TEST_LOG` when set (benchmarks set
/// `warn`), else `default`.
fn log_filter(default: &str) -> String {
    std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| default.to_owned())
}

/// A `GET path` for [`LatticeClient::handle_http`], as an http-server provider would send it.
pub fn get(path: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        body_stream: None,
    }
}

/// A `POST /` of `command` as JSON, the form the test components take their commands in.
pub fn json_post(command: &serde_json::Value) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: "/".into(),
        headers: vec![Header { name: "content-type".into(), value: b"application/json".to_vec() }],
        body: serde_json::to_vec(command).unwrap_or_default(),
        body_stream: None,
    }
}

/// One lattice with one host.
pub struct Lattice {
    /// The NATS server (shared when several lattices run on one: [`Lattice::start_named`]; the
    /// first node of a cluster: [`Lattice::start_at`]).
    pub nats: Arc<NatsServer>,
    /// The NATS URL (or comma-separated URLs of a cluster's nodes) every process is given.
    pub url: String,
    /// The `ferry host` process.
    pub host: Process,
    /// Its host id.
    pub host_id: String,
    /// Lattice name.
    pub name: String,
    /// Cluster seed the host runs with.
    pub seed: String,
    /// The cluster key, to issue credentials and sign as a host.
    pub cluster: ClusterKey,
    /// The operator seed whose commands the hosts obey (`SO…`).
    pub operator_seed: String,
    /// Control interface client, signing as the operator.
    pub ctl: CtlClient,
    /// Signed client acting as [`TEST_CLIENT_ID`].
    pub client: LatticeClient,
    /// A plain NATS connection.
    pub raw: async_nats::Client,
    rpc_timeout: Duration,
    /// Scans the lattice's events and control replies for secrets ([`crate::leaks::Tap`]).
    _tap: crate::leaks::Tap,
}

/// How a test lattice's hosts are started.
struct HostSetup<'a> {
    url: &'a str,
    lattice: &'a str,
    seed: &'a str,
    /// Further cluster seeds it accepts, comma-separated (empty: none).
    accepted: &'a str,
    operator: &'a str,
    rpc_timeout: Duration,
}

/// Start `ferry host` (with `extra` arguments), obeying the operator `setup.operator`, and wait
/// until it is ready; returns it with its host id.
async fn spawn_host(setup: &HostSetup<'_>, extra: &[&str]) -> anyhow::Result<(Process, String)> {
    spawn_host_env(setup, extra, &[]).await
}

async fn spawn_host_env(
    setup: &HostSetup<'_>,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(Process, String)> {
    let HostSetup { url, lattice, seed, accepted, operator, rpc_timeout } = *setup;
    let ferry = binary("ferry")?;
    let mut command = Command::new(&ferry);
    // One compilation cache for every host of a test run, beside the binaries (a test's own
    // `env` may name another).
    command.env("FERRY_COMPILE_CACHE", ferry.with_file_name("ferry-test-compiled"));
    command.envs(env.iter().copied());
    command
        .args(["host", "--nats-url", url, "--lattice", lattice, "--operator-key", operator, "--rpc-timeout-ms"])
        .arg(rpc_timeout.as_millis().to_string())
        .args(extra)
        .env("FERRY_CLUSTER_SEED", seed)
        .env("FERRY_ACCEPT_CLUSTER_SEEDS", accepted)
        .env("FERRY_LOG", log_filter("info,ferry_host=debug"));
    let mut host = Process::spawn("ferry-host", command)?;
    host.wait_for_log("host ready", Duration::from_secs(30)).await?;
    let logs = host.logs();
    // `host_id=N…` in text logs, `"host_id":"N…"` in JSON ones.
    let id = ["host_id=", "\"host_id\":\""]
        .iter()
        .find_map(|marker| logs.split(marker).nth(1))
        .map(|rest| rest.chars().take_while(char::is_ascii_alphanumeric).collect::<String>())
        .filter(|id| !id.is_empty())
        .context("no host_id in the host's ready line")?;
    Ok((host, id))
}

impl Lattice {
    /// Start NATS and a host with a 2 s RPC timeout.
    ///
    /// # Errors
    /// When a process does not start.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_timeout(Duration::from_secs(2)).await
    }

    /// Start NATS and a host whose capability calls time out after `rpc_timeout`.
    ///
    /// # Errors
    /// When a process does not start.
    pub async fn start_with_timeout(rpc_timeout: Duration) -> anyhow::Result<Self> {
        Self::start_on(NatsServer::start().await?, rpc_timeout).await
    }

    /// Start a host on `nats` (a server started with a configuration of the test's own)
    /// whose capability calls time out after `rpc_timeout`.
    ///
    /// # Errors
    /// When a process does not start.
    pub async fn start_on(nats: NatsServer, rpc_timeout: Duration) -> anyhow::Result<Self> {
        Self::start_named(Arc::new(nats), "test", rpc_timeout).await
    }

    /// Start lattice `name`, with keys of its own, and a host of it on `nats`, which other
    /// lattices may share.
    ///
    /// # Errors
    /// When a process does not start.
    pub async fn start_named(nats: Arc<NatsServer>, name: &str, rpc_timeout: Duration) -> anyhow::Result<Self> {
        let url = nats.url.clone();
        Self::start_at(nats, &url, name, rpc_timeout, &[]).await
    }

    /// Start lattice `name` and its first host (with `host_args`) on the NATS server(s) at `url`
    /// (comma-separated for a cluster), of which `nats` is one.
    ///
    /// # Errors
    /// When a process does not start.
    pub async fn start_at(
        nats: Arc<NatsServer>,
        url: &str,
        name: &str,
        rpc_timeout: Duration,
        host_args: &[&str],
    ) -> anyhow::Result<Self> {
        let (cluster, seed) = ClusterKey::generate()?;
        let (operator, operator_seed) = OperatorKey::generate()?;
        let name = name.to_owned();
        let setup =
            HostSetup { url, lattice: &name, seed: &seed, accepted: "", operator: &operator.public_key(), rpc_timeout };
        let (host, host_id) = spawn_host(&setup, host_args).await?;
        let raw = async_nats::connect(url.split(',').collect::<Vec<_>>()).await?;
        let _tap = crate::leaks::Tap::start(&raw).await?;
        let ctl = CtlClient::new(raw.clone(), &name, Duration::from_secs(60)).with_operator(operator);
        let credential = cluster.issue_credential(&name, TEST_CLIENT_ID, ferry_proto::time::now_ms(), 2).encode();
        // The client waits at least as long as the host lets a capability call take: a call that
        // streams a large object legitimately runs long on a loaded machine.
        let call_timeout = rpc_timeout.max(Duration::from_secs(30));
        let client = LatticeClient::connect(url, &name, &credential, Some(call_timeout)).await?;
        let url = url.to_owned();
        Ok(Self { nats, url, host, host_id, name, seed, cluster, operator_seed, ctl, client, raw, rpc_timeout, _tap })
    }

    /// Start NATS and a host that starts providers from the workspace's binaries
    /// (`--allow-file-dir`), as deployed applications need.
    ///
    /// # Errors
    /// When a process does not start.
    pub async fn start_for_apps() -> anyhow::Result<Self> {
        Self::start_for_apps_with(&[]).await
    }

    /// [`Lattice::start_for_apps`] with extra `ferry host` arguments for its host.
    ///
    /// # Errors
    /// When a process does not start.
    pub async fn start_for_apps_with(extra: &[&str]) -> anyhow::Result<Self> {
        let nats = Arc::new(NatsServer::start().await?);
        let url = nats.url.clone();
        let bin_dir = crate::bin_dir()?;
        let mut args = vec!["--allow-file-dir", bin_dir.as_str()];
        args.extend_from_slice(extra);
        Self::start_at(nats, &url, "test", Duration::from_secs(5), &args).await
    }

    /// Run `ferry ctl ARGS` to the end: whether it succeeded, its stdout and stderr.
    ///
    /// # Errors
    /// When the binary cannot run.
    pub async fn ferry_ctl(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = tokio::process::Command::from(self.ctl_command(args)?).output().await?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Deploy the wadm manifest `text` with `ferry app deploy --wait`, as a user would.
    ///
    /// # Errors
    /// When the deploy fails or does not finish.
    pub async fn deploy(&self, text: &str) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("wadm.yaml");
        std::fs::write(&file, text)?;
        let (ok, out, err) = self.ferry_ctl(&["app", "deploy", &file.display().to_string(), "--wait"]).await?;
        if !ok {
            bail!("ferry app deploy failed: {out}{err}");
        }
        Ok(())
    }

    /// Start one more host on this lattice; returns the process and its host id.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_host(&self) -> anyhow::Result<(Process, String)> {
        self.start_host_with(&[]).await
    }

    /// [`Lattice::start_host`] with extra `ferry host` arguments.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_host_with(&self, extra: &[&str]) -> anyhow::Result<(Process, String)> {
        self.start_host_at(&self.url, extra).await
    }

    /// [`Lattice::start_host_with`] with variables added to the host's environment.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_host_env(&self, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(Process, String)> {
        let operator = OperatorKey::from_seed(&self.operator_seed)?.public_key();
        let setup = HostSetup {
            url: &self.url,
            lattice: &self.name,
            seed: &self.seed,
            accepted: "",
            operator: &operator,
            rpc_timeout: self.rpc_timeout,
        };
        spawn_host_env(&setup, extra, env).await
    }

    /// [`Lattice::start_host_with`], the host connecting to the NATS server(s) at `url` (a
    /// leaf node, say).
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_host_at(&self, url: &str, extra: &[&str]) -> anyhow::Result<(Process, String)> {
        self.start_host_keyed(url, &self.seed, &[], extra).await
    }

    /// [`Lattice::start_host_at`], the host signing with cluster seed `seed` and accepting the
    /// further seeds `accepted` (a rotation of the cluster key).
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_host_keyed(
        &self,
        url: &str,
        seed: &str,
        accepted: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<(Process, String)> {
        let operator = OperatorKey::from_seed(&self.operator_seed)?.public_key();
        let accepted = accepted.join(",");
        let setup = HostSetup {
            url,
            lattice: &self.name,
            seed,
            accepted: &accepted,
            operator: &operator,
            rpc_timeout: self.rpc_timeout,
        };
        spawn_host(&setup, extra).await
    }

    /// [`Lattice::start_component`] on the host `host_id` (any host when `None`), without the
    /// test client's link.
    ///
    /// # Errors
    /// When building or starting fails.
    pub async fn start_component_on(
        &self,
        name: &str,
        id: &str,
        config: &[&str],
        host_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let cmd = ComponentStart {
            request_id: format!("start-{id}"),
            component_id: id.to_owned(),
            image: self.image(name).await?,
            max_instances: Some(50),
            config: config.iter().map(|c| (*c).to_owned()).collect(),
        };
        let resp = self.ctl.send(&cmd, host_id).await?;
        if !resp.success {
            bail!("component start failed: {}", resp.message);
        }
        Ok(())
    }

    /// Build test component `name` and upload it into the lattice's component store, as
    /// `ferry ctl` does with a local file; returns its reference (`sha256:…`).
    ///
    /// # Errors
    /// When building or uploading fails.
    pub async fn image(&self, name: &str) -> anyhow::Result<String> {
        let bytes = std::fs::read(build_component(name)?)?;
        let store = ferry_lattice::ComponentStore::open(&self.raw, &self.name).await?;
        Ok(store.upload(&bytes).await?.to_string())
    }

    /// `ferry ctl ARGS` aimed at this lattice and signing as its operator, not yet run.
    ///
    /// # Errors
    /// When the `ferry` binary is missing.
    pub fn ctl_command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Command::new(binary("ferry")?);
        command
            .arg("ctl")
            .args(args)
            .env("FERRY_NATS_URL", &self.url)
            .env("FERRY_LATTICE", &self.name)
            .env("FERRY_OPERATOR_SEED", &self.operator_seed)
            .env_remove("FERRY_OPERATOR_SEED_FILE");
        Ok(command)
    }

    /// Have host `host_id` (started with `--allow-file-dir` of the workspace binaries, see
    /// [`crate::bin_dir`]) start and supervise the provider binary `bin` as `provider_id`,
    /// with request id `request_id`; returns the provider's pid.
    ///
    /// # Errors
    /// When the binary is missing or the host refuses.
    pub async fn supervise(
        &self,
        host_id: &str,
        request_id: &str,
        bin: &str,
        provider_id: &str,
        config: &[(&str, &str)],
    ) -> anyhow::Result<u32> {
        let start = ferry_proto::ctl::ProviderStart {
            request_id: request_id.to_owned(),
            provider_id: provider_id.to_owned(),
            binary: binary(bin)?.display().to_string(),
            config: config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        let reply = self.ctl.send(&start, Some(host_id)).await?;
        reply
            .data
            .filter(|_| reply.success)
            .and_then(|d| d.provider.pid)
            .with_context(|| format!("provider.start {provider_id} failed: {}", reply.message))
    }

    /// A credential for `provider_id`, valid for two hours.
    pub fn credential(&self, provider_id: &str) -> String {
        self.cluster.issue_credential(&self.name, provider_id, ferry_proto::time::now_ms(), 2).encode()
    }

    /// Start provider binary `bin` as a sidecar with id `provider_id`; returns once it is ready.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_provider(&self, bin: &str, provider_id: &str) -> anyhow::Result<Process> {
        self.start_provider_with(bin, provider_id, &[]).await
    }

    /// [`Lattice::start_provider`] with extra command-line arguments (`--config k=v`, …).
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_provider_with(&self, bin: &str, provider_id: &str, args: &[&str]) -> anyhow::Result<Process> {
        self.start_provider_env(bin, provider_id, args, &[]).await
    }

    /// [`Lattice::start_provider_with`], with variables added to the provider's environment
    /// (which a bridge hands on to the process it starts), or replacing the harness's own
    /// (`FERRY_PROVIDER_CREDENTIAL`).
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_provider_env(
        &self,
        bin: &str,
        provider_id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Process> {
        let mut command = Command::new(binary(bin)?);
        command
            .args(args)
            .env("FERRY_NATS_URL", &self.url)
            .env("FERRY_LATTICE", &self.name)
            .env("FERRY_PROVIDER_ID", provider_id)
            .env("FERRY_PROVIDER_CREDENTIAL", self.credential(provider_id))
            .env("FERRY_LOG", log_filter("info,ferry_provider_sdk=debug,ferry_lattice=debug"))
            .envs(env.iter().copied());
        let mut process = Process::spawn(provider_id, command)?;
        process.wait_for_log("provider ready", Duration::from_secs(30)).await?;
        Ok(process)
    }

    /// The key-value provider as `kv-redis` on `redis` (its URL in config `redis`), and the
    /// `kv-http` component as `kvc` linked to it for `wasi:keyvalue/store` under the default
    /// link name; returns the provider.
    ///
    /// # Errors
    /// When a process does not start or the link fails.
    pub async fn kv_on_redis(&self, redis: &crate::RedisServer) -> anyhow::Result<Process> {
        let provider = self.start_provider("ferry-provider-keyvalue", "kv-redis").await?;
        self.config("redis", &[("url", &redis.url)]).await?;
        self.start_component("kv-http", "kvc", &[]).await?;
        let mut link = ferry_proto::link::Link::new("kvc", "kv-redis", "wasi", "keyvalue", vec!["store".into()]);
        link.target_config = vec!["redis".into()];
        self.link(link).await?;
        Ok(provider)
    }

    /// Build test component `name`, start it as `id`, and link [`TEST_CLIENT_ID`] to it.
    ///
    /// # Errors
    /// When building, starting or linking fails.
    pub async fn start_component(&self, name: &str, id: &str, config: &[&str]) -> anyhow::Result<()> {
        self.start_component_on(name, id, config, None).await?;
        self.link(Link::new(TEST_CLIENT_ID, id, "wasi", "http", vec!["incoming-handler".into()])).await?;
        Ok(())
    }

    /// Put a link; fails when it does not take effect.
    ///
    /// # Errors
    /// When the host reports failure.
    pub async fn link(&self, link: Link) -> anyhow::Result<CtlResponse<LinkSet>> {
        let resp = self.ctl.send(&LinkPutCommand { request_id: "test".into(), link }, None).await?;
        if !resp.success {
            bail!("link put failed: {} {:?}", resp.message, resp.data);
        }
        Ok(resp)
    }

    /// Put a link and return the host's answer whether or not it succeeded.
    ///
    /// # Errors
    /// When the command cannot be sent.
    pub async fn try_link(&self, link: Link) -> anyhow::Result<CtlResponse<LinkSet>> {
        Ok(self.ctl.send(&LinkPutCommand { request_id: "test".into(), link }, None).await?)
    }

    /// Delete a named config.
    ///
    /// # Errors
    /// When the host reports failure.
    pub async fn delete_config(&self, name: &str) -> anyhow::Result<()> {
        let command = ConfigDelCommand { request_id: "test".into(), name: name.to_owned() };
        let resp = self.ctl.send(&command, None).await?;
        if !resp.success {
            bail!("config del failed: {}", resp.message);
        }
        Ok(())
    }

    /// Delete a link.
    ///
    /// # Errors
    /// When the host reports failure.
    pub async fn unlink(&self, key: LinkKey) -> anyhow::Result<CtlResponse<LinkSet>> {
        let resp = self.ctl.send(&LinkDelCommand { request_id: "test".into(), key }, None).await?;
        if !resp.success {
            bail!("link del failed: {}", resp.message);
        }
        Ok(resp)
    }

    /// Put a named config.
    ///
    /// # Errors
    /// When the host reports failure.
    pub async fn config(&self, name: &str, values: &[(&str, &str)]) -> anyhow::Result<()> {
        let values = values.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let command = ConfigPutCommand { request_id: "test".into(), name: name.to_owned(), values };
        let resp = self.ctl.send(&command, None).await?;
        if !resp.success {
            bail!("config put failed: {}", resp.message);
        }
        Ok(())
    }

    /// POST `command` as JSON to `component` through the SDK client; returns the HTTP status
    /// and the JSON answer.
    ///
    /// # Errors
    /// The invocation's typed error.
    pub async fn call(
        &self,
        component: &str,
        command: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), RpcError> {
        let request = json_post(&command);
        let response = self.client.handle_http(component, &request).await?;
        let json = serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&response.body).into_owned()));
        Ok((response.status, json))
    }

    /// [`Lattice::call`] that must succeed with status 200; returns the `ok` field.
    ///
    /// # Errors
    /// When the call fails or the component answers with an error.
    pub async fn ok(&self, component: &str, command: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let (status, json) =
            self.call(component, command.clone()).await.with_context(|| format!("invocation failed for {command}"))?;
        if status != 200 {
            bail!("component answered {status} {json} to {command}");
        }
        Ok(json["ok"].clone())
    }
}
