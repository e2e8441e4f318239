use super::*;

/// Written the way wasmCloud's documentation writes them (wadm 0.13+ link form).
const KV_COUNTER: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: kv-counter
  annotations:
    version: v0.0.1
    description: 'Counts requests in Redis'
spec:
  components:
    - name: counter
      type: component
      properties:
        image: file://./build/counter_s.wasm
        config:
          - name: greeting
            properties:
              lang: en
              retries: 3
      traits:
        - type: spreadscaler
          properties:
            instances: 4
        - type: link
          properties:
            target:
              name: kvredis
              config:
                - name: redis-url
                  properties:
                    url: redis://127.0.0.1:6379
            namespace: wasi
            package: keyvalue
            interfaces: [atomics, store]
    - name: kvredis
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-redis:0.28.2
    - name: httpserver
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-server:0.23.2
      traits:
        - type: link
          properties:
            target: counter
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source_config:
              - name: default-http
                properties:
                  address: 0.0.0.0:8000
        - type: daemonscaler
          properties:
            replicas: 1
            spread:
              - name: edge
                requirements:
                  role: edge
"#;

#[test]
fn a_manifest_from_wasmclouds_docs_reads_as_parts_links_and_configs() {
    let app = parse(KV_COUNTER).unwrap();
    assert_eq!((app.name.as_str(), app.version.as_str()), ("kv-counter", "v0.0.1"));
    assert_eq!(app.parts.len(), 3);
    let counter = &app.parts[0];
    assert_eq!(counter.id, "kv_counter-counter");
    assert_eq!(counter.kind, PartKind::Component { image: "file://./build/counter_s.wasm".into() });
    assert_eq!(counter.config, vec!["greeting".to_owned()]);
    assert_eq!((counter.scaler.daemon, counter.scaler.instances), (false, 4));
    let kv = &app.parts[1];
    assert!(matches!(&kv.kind, PartKind::Provider { binary, .. } if binary.binary == "ferry-provider-keyvalue"));
    assert_eq!((kv.scaler.instances, kv.scaler.spreads.len()), (1, 1), "no scaler: one instance anywhere");
    let http = &app.parts[2];
    assert!(http.scaler.daemon);
    assert_eq!(http.scaler.spreads[0].requirements.get("role").map(String::as_str), Some("edge"));
    assert_eq!(app.links.len(), 2);
    let store = &app.links[0];
    assert_eq!((store.source_id.as_str(), store.target_id.as_str()), ("kv_counter-counter", "kv_counter-kvredis"));
    assert_eq!(store.interfaces, vec!["atomics".to_owned(), "store".to_owned()]);
    assert_eq!(store.target_config, vec!["redis-url".to_owned()]);
    let http_link = &app.links[1];
    assert_eq!(
        (http_link.source_id.as_str(), http_link.target_id.as_str()),
        ("kv_counter-httpserver", "kv_counter-counter")
    );
    assert_eq!(http_link.source_config, vec!["default-http".to_owned()]);
    assert_eq!(app.configs["greeting"].get("retries").map(String::as_str), Some("3"), "numbers read as text");
    assert_eq!(app.configs.len(), 3);
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[test]
fn errors_name_the_line_and_the_field() {
    let typo = KV_COUNTER
        .replace("        image: ghcr.io/wasmcloud/http-server", "        imag: ghcr.io/wasmcloud/http-server");
    let err = parse(&typo).unwrap_err();
    assert_eq!(err.path, "spec.components[2].properties");
    assert!(err.message.contains("unknown field `imag`"), "{err}");
    assert_eq!(err.line, line_of(&typo, "imag:"), "{err}");

    let bad_target = KV_COUNTER.replace("name: kvredis\n              config", "name: kv-redis\n              config");
    let err = parse(&bad_target).unwrap_err();
    assert_eq!(err.path, "spec.components[0].traits[1].properties.target");
    assert!(err.message.contains("no component or capability named \"kv-redis\""), "{err}");
    let line = line_of(&bad_target, "- name: counter").unwrap();
    assert_eq!(err.line, Some(line), "the line of the component the link is on: {err}");
    assert!(
        err.to_string().starts_with(&format!("line {line}: spec.components[0].traits[1].properties.target: ")),
        "{err}"
    );

    let unknown_image = KV_COUNTER.replace("keyvalue-redis:0.28.2", "sqldb-postgres:0.9.0");
    let err = parse(&unknown_image).unwrap_err();
    assert_eq!(err.path, "spec.components[1].properties.image");
    assert!(err.message.contains("no Ferry provider"), "{err}");

    let no_version = KV_COUNTER.replace("    version: v0.0.1\n", "");
    assert_eq!(parse(&no_version).unwrap_err().path, "metadata.annotations.version");
    let bad_instances = KV_COUNTER.replace("instances: 4", "instances: many");
    let err = parse(&bad_instances).unwrap_err();
    assert_eq!(err.path, "spec.components[0].traits[0].properties.instances", "{err}");
    assert_eq!(err.line, line_of(&bad_instances, "instances: many"), "{err}");
    let secrets = KV_COUNTER.replace(
        "        config:\n          - name: greeting",
        "        secrets:\n          - name: s\n        config:\n          - name: greeting",
    );
    assert!(parse(&secrets).unwrap_err().message.contains("secrets are not supported"));
    let clash = KV_COUNTER.replace("lang: en", "lang: en\n    - name: dup\n      type: component\n      properties:\n        image: x\n        id: kv_counter-counter").replace("              retries: 3\n", "");
    assert!(parse(&clash).is_err());
    assert!(parse("{").unwrap_err().line.is_some());
    assert!(
        parse("apiVersion: v1\nkind: Application\nmetadata: {name: a}\nspec: {components: []}").unwrap_err().path
            == "apiVersion"
    );
}

#[test]
fn json_manifests_and_old_link_fields_are_read_too() {
    let json = r#"{"apiVersion":"core.oam.dev/v1beta1","kind":"Application",
      "metadata":{"name":"echo","annotations":{"version":"1"}},
      "spec":{"components":[
        {"name":"echo","type":"actor","properties":{"image":"file:///tmp/echo.wasm","id":"echo"},
         "traits":[{"type":"link","properties":{"target":"nats","namespace":"wasmcloud","package":"messaging",
           "interfaces":["consumer"],"name":"alt","target_config":[{"name":"nats-cfg","properties":{"cluster_uris":"nats://127.0.0.1:4222"}}]}}]},
        {"name":"nats","type":"capability","properties":{"image":"ghcr.io/wasmcloud/messaging-nats:0.27.0"}}]}}"#;
    let app = parse(json).unwrap();
    assert_eq!(app.parts[0].id, "echo", "an explicit id is kept");
    assert_eq!(app.links[0].name, "alt");
    assert_eq!(app.links[0].target_id, "echo-nats");
    assert_eq!(app.links[0].target_config, vec!["nats-cfg".to_owned()]);
}
