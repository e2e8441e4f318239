//! NATS over TLS and mutual TLS: hosts, providers, `ferry ctl` and clients take the CA, client
//! certificate and key from `FERRY_NATS_TLS_*` (`ferry_lattice::NatsSecurity`), the lattice serves
//! as usual, and a client without TLS (or, under mTLS, without a certificate) is turned away.

use std::{path::Path, process::Command, time::Duration};

use ferry_lattice::{CtlClient, LatticeClient};
use ferry_proto::{
    auth::ClusterKey,
    ctl::{ComponentStart, LinkPutCommand, operator::OperatorKey},
    link::Link,
};
use ferry_tests::{NatsServer, Process, bin_dir, binary, build_component, json_post};
use serde_json::json;

use crate::keyvalue::kv_link;

/// PEM files of a CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
pub(crate) struct Pki {
    pub(crate) ca: String,
    pub(crate) server: (String, String),
    pub(crate) client: (String, String),
}

pub(crate) fn pki(dir: &Path) -> anyhow::Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let write = |name: &str, pem: String| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?.signed_by(
        &server_key,
        &ca,
        &ca_key,
    )?;
    let client_key = KeyPair::generate()?;
    let client = CertificateParams::new(vec!["ferry-client".to_owned()])?.signed_by(&client_key, &ca, &ca_key)?;
    Ok(Pki {
        ca: write("ca.pem", ca.pem())?,
        server: (write("server.pem", server.pem())?, write("server-key.pem", server_key.serialize_pem())?),
        client: (write("client.pem", client.pem())?, write("client-key.pem", client_key.serialize_pem())?),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lattice_runs_over_tls_and_mutual_tls_and_turns_away_clients_without_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki(dir.path())?;
    for mutual in [false, true] {
        let verify = if mutual { "verify: true" } else { "" };
        let config = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  {verify}\n}}\n",
            pki.server.0, pki.server.1, pki.ca
        );
        let nats = NatsServer::start_with_config(&config).await?;
        let url = nats.url.replace("nats://", "tls://");
        let mut env = vec![("FERRY_NATS_TLS_CA", pki.ca.clone())];
        if mutual {
            env.push(("FERRY_NATS_TLS_CERT", pki.client.0.clone()));
            env.push(("FERRY_NATS_TLS_KEY", pki.client.1.clone()));
        }
        let (cluster, seed) = ClusterKey::generate()?;
        let (operator, operator_seed) = OperatorKey::generate()?;

        let mut command = Command::new(binary("ferry")?);
        command
            .args(["host", "--nats-url", &url, "--lattice", "tls", "--operator-key", &operator.public_key()])
            .args(["--allow-file-dir", &bin_dir()?])
            .env("FERRY_CLUSTER_SEED", &seed)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let mut host = Process::spawn("tls-host", command)?;
        host.wait_for_log("host ready", Duration::from_secs(30)).await?;

        let mut command = Command::new(binary("ferry-provider-keyvalue")?);
        command
            .env("FERRY_NATS_URL", &url)
            .env("FERRY_LATTICE", "tls")
            .env("FERRY_PROVIDER_ID", "kv")
            .env(
                "FERRY_PROVIDER_CREDENTIAL",
                cluster.issue_credential("tls", "kv", ferry_proto::time::now_ms(), 2).encode(),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let mut kv = Process::spawn("tls-kv", command)?;
        kv.wait_for_log("provider ready", Duration::from_secs(30)).await?;

        // `ferry ctl` over the same settings sees the host.
        let out = Command::new(binary("ferry")?)
            .args(["ctl", "--nats-url", &url, "--lattice", "tls", "--json", "get", "hosts"])
            .env("FERRY_OPERATOR_SEED", &operator_seed)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ferry ctl over TLS: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("host_id"), "{stdout}");

        // A component serves through the provider, called by a client on the same settings.
        let mut options =
            async_nats::ConnectOptions::new().add_root_certificates(pki.ca.clone().into()).require_tls(true);
        if mutual {
            options = options.add_client_certificate(pki.client.0.clone().into(), pki.client.1.clone().into());
        }
        let raw = options.connect(url.as_str()).await?;
        let ctl = CtlClient::new(raw.clone(), "tls", Duration::from_secs(60)).with_operator(operator);
        let store = ferry_lattice::ComponentStore::open(&raw, "tls").await?;
        let image = store.upload(&std::fs::read(build_component("kv-http")?)?).await?.to_string();
        let start = ComponentStart {
            request_id: "s".into(),
            component_id: "kvc".into(),
            image,
            max_instances: Some(4),
            config: vec![],
        };
        let started = ctl.send(&start, None).await?;
        assert!(started.success, "{}", started.message);
        for link in [
            Link::new("client", "kvc", "wasi", "http", vec!["incoming-handler".into()]),
            kv_link("kvc", "kv", "default", &[]),
        ] {
            let put = ctl.send(&LinkPutCommand { request_id: "l".into(), link }, None).await?;
            assert!(put.success, "{}", put.message);
        }
        let credential = cluster.issue_credential("tls", "client", ferry_proto::time::now_ms(), 2);
        let client = LatticeClient::new(raw.clone(), "tls", credential, Some(Duration::from_secs(10)))?;
        let set = client
            .handle_http("kvc", &json_post(&json!({"op": "set", "bucket": "b", "key": "k", "value": "tls"})))
            .await?;
        assert_eq!(set.status, 200, "{}", String::from_utf8_lossy(&set.body));
        let got = client.handle_http("kvc", &json_post(&json!({"op": "get", "bucket": "b", "key": "k"}))).await?;
        assert!(String::from_utf8_lossy(&got.body).contains("tls"), "{}", String::from_utf8_lossy(&got.body));

        // Turned away: a plain connection; under mTLS, one with the CA but no certificate.
        let plain = async_nats::ConnectOptions::new().connect(nats.url.as_str());
        let refused = tokio::time::timeout(Duration::from_secs(3), plain).await;
        assert!(!matches!(refused, Ok(Ok(_))), "a connection without TLS got in (mutual: {mutual})");
        if mutual {
            let anonymous =
                async_nats::ConnectOptions::new().add_root_certificates(pki.ca.clone().into()).require_tls(true);
            let refused = tokio::time::timeout(Duration::from_secs(3), anonymous.connect(url.as_str())).await;
            assert!(!matches!(refused, Ok(Ok(_))), "a TLS connection without a client certificate got in");
        }
        drop((kv, host, raw));
    }
    Ok(())
}
