use std::path::Path;

use super::*;

const VALID: &str = r#"
cluster: cluster-a
identity:
  spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/frontend
  ca: { cert: ca.pem, key: ca-key.pem }
  bundles: bundles.json
admin: 127.0.1.20:15000
locality: { region: eu-west, zone: eu-west-1a }
gateway:
  address: 127.0.1.1:15443
  spiffe_id: spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway
outbound:
  - { listen: "127.0.1.20:18080", service: default/backend, port: 8080, protocol: http }
  - { listen: "127.0.1.20:18081", service: default/db, port: 5432, protocol: tcp, cluster: cluster-b }
inbound:
  - listen: 127.0.1.20:15006
    protocol: http
    app: 127.0.0.1:8080
    app_protocol: h2c
    allow: [spiffe://cluster-a.mesh/ns/default/sa/web, "spiffe://cluster-b.mesh/*"]
services:
  - service: default/backend
    port: 8080
    endpoints:
      - address: 127.0.1.30:15006
        spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/backend
        locality: { region: eu-west, zone: eu-west-1a }
    remote:
      - { cluster: cluster-b, spiffe_id: spiffe://cluster-b.mesh/ns/default/sa/backend }
  - service: default/db
    port: 5432
    remote:
      - { cluster: cluster-b, spiffe_id: spiffe://cluster-b.mesh/ns/default/sa/db }
timeouts: { connect_ms: 1000, request_ms: 0 }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, Path::new("/etc/isthmus"))
}

/// `VALID` with the line containing `needle` replaced by `with`.
fn edit(needle: &str, with: &str) -> String {
    assert!(VALID.contains(needle), "{needle}");
    VALID.replacen(needle, with, 1)
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_reference_example_parses_with_defaults() {
    let c = parse(VALID).unwrap();
    assert_eq!(c.cluster, "cluster-a");
    assert_eq!(c.admin, "127.0.1.20:15000".parse().unwrap());
    assert_eq!(c.outbound[1].cluster.as_deref(), Some("cluster-b"));
    assert_eq!(c.outbound[1].protocol, Protocol::Tcp);
    assert_eq!(c.inbound[0].app_protocol, AppProtocol::H2c);
    assert_eq!(c.timeouts.connect, Duration::from_millis(1000));
    assert_eq!(c.timeouts.request, None);
    assert_eq!(
        c.timeouts.header_read,
        Duration::from_millis(DEFAULT_HEADER_READ_MS)
    );
    assert_eq!(c.timeouts.drain, Duration::from_millis(DEFAULT_DRAIN_MS));
    assert_eq!(c.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(
        c.worker_threads,
        WorkerThreads::Fixed(std::num::NonZeroUsize::MIN),
        "one worker thread by default"
    );
    let gw = c.gateway.as_ref().unwrap();
    assert_eq!(gw.keep_alive, Duration::from_millis(2000));
    assert_eq!(gw.idle_timeout, Duration::from_millis(10_000));
    assert_eq!(c.base_dir, Path::new("/etc/isthmus"));
    assert_eq!(c.listeners().len(), 4);
}

#[test]
fn allow_entries_match_ids_and_whole_trust_domains() {
    let c = parse(VALID).unwrap();
    let allow = &c.inbound[0].allow;
    let id = |s: &str| SpiffeId::parse(s).unwrap();
    assert!(allow.allows(&id("spiffe://cluster-a.mesh/ns/default/sa/web")));
    assert!(!allow.allows(&id("spiffe://cluster-a.mesh/ns/default/sa/other")));
    assert!(allow.allows(&id("spiffe://cluster-b.mesh/ns/x/sa/y")));
    assert!(!allow.allows(&id("spiffe://cluster-c.mesh/ns/x/sa/y")));
}

#[test]
fn each_invalid_value_names_its_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            edit("cluster: cluster-a", "cluster: Cluster_A"),
            "cluster: ",
        ),
        (
            edit(
                "spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/frontend",
                "spiffe_id: http://x",
            ),
            "identity.spiffe_id: ",
        ),
        (
            edit("admin: 127.0.1.20:15000", "admin: localhost"),
            "admin: \"localhost\" is not ip:port",
        ),
        (
            edit("address: 127.0.1.1:15443", "address: nope"),
            "gateway.address: ",
        ),
        (
            edit(
                "service: default/backend, port: 8080, protocol: http",
                "service: default/x, port: 8080, protocol: http",
            ),
            "outbound[0].service: default/x is not in services",
        ),
        (
            edit(
                "service: default/db, port: 5432, protocol: tcp",
                "service: default/db, port: 5433, protocol: tcp",
            ),
            "outbound[1].port: default/db has no port 5433 in services",
        ),
        (
            edit(
                "port: 8080, protocol: http }",
                "port: 8080, protocol: udp }",
            ),
            "outbound[0].protocol: \"udp\" is not http or tcp",
        ),
        (
            edit(
                "protocol: tcp, cluster: cluster-b",
                "protocol: tcp, cluster: cluster-z",
            ),
            "outbound[1].cluster: default/db:5432 has no remote entry for cluster cluster-z",
        ),
        (
            edit(
                "listen: \"127.0.1.20:18081\"",
                "listen: \"127.0.1.20:18080\"",
            ),
            "outbound[1].listen: 127.0.1.20:18080 is already used by outbound[0].listen",
        ),
        (
            edit("listen: 127.0.1.20:15006", "listen: 127.0.1.20:15000"),
            "inbound[0].listen: 127.0.1.20:15000 is already used by admin",
        ),
        (
            edit(
                "\"spiffe://cluster-b.mesh/*\"",
                "\"spiffe://cluster-b.mesh/**\"",
            ),
            "inbound[0].allow[1]: ",
        ),
        (
            edit("app_protocol: h2c", "app_protocol: h3"),
            "inbound[0].app_protocol: ",
        ),
        (
            edit(
                "    protocol: http\n    app:",
                "    protocol: tcp\n    app:",
            ),
            "inbound[0].app_protocol: only valid with protocol http",
        ),
        (
            edit(
                "spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/backend",
                "spiffe_id: https://cluster-a.mesh/x",
            ),
            "services[0].endpoints[0].spiffe_id: ",
        ),
        (
            edit("address: 127.0.1.30:15006", "address: 127.0.1.30"),
            "services[0].endpoints[0].address: ",
        ),
        (
            edit("    port: 5432\n", "    port: 0\n"),
            "services[1].port: 0 is not a port",
        ),
        (
            edit(
                "- service: default/db\n    port: 5432",
                "- service: default/backend\n    port: 8080",
            ),
            "services[1]: default/backend:8080 is listed twice",
        ),
        (
            edit(
                "{ cluster: cluster-b, spiffe_id: spiffe://cluster-b.mesh/ns/default/sa/backend }",
                "{ cluster: cluster-a, spiffe_id: spiffe://cluster-b.mesh/ns/default/sa/backend }",
            ),
            "services[0].remote[0].cluster: cluster-a is our own cluster",
        ),
        (
            edit("service: default/db\n", "service: default\n"),
            "services[1].service: ",
        ),
        (
            edit("connect_ms: 1000", "connect_ms: 0"),
            "timeouts.connect_ms: must be greater than 0",
        ),
        (
            format!("{VALID}max_header_bytes: 100\n"),
            "max_header_bytes: 100 is outside",
        ),
    ];
    for (text, want) in cases {
        let got = err(&text);
        assert!(got.starts_with(want), "want {want:?}, got {got:?}");
    }
}

#[test]
fn remote_entries_need_a_gateway() {
    let text = edit(
        "gateway:\n  address: 127.0.1.1:15443\n  spiffe_id: spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway\n",
        "",
    );
    let got = err(&text);
    assert!(got.starts_with("services[0].remote[0]: "), "{got}");
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let got = err(&edit("timeouts: {", "timeouts: { bogus_ms: 1,"));
    assert!(
        got.contains("timeouts") && got.contains("bogus_ms"),
        "{got}"
    );
    let got = err(&format!("{VALID}extra: 1\n"));
    assert!(got.contains("unknown field `extra`"), "{got}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(&path, edit("cluster: cluster-a", "cluster: -bad")).unwrap();
    let e = Config::load(&path).err().unwrap();
    let chain = crate::errors::error_chain(&e);
    assert!(
        chain.starts_with(&format!("{}: cluster: ", path.display())),
        "{chain}"
    );
    let e = Config::load(&dir.path().join("missing.yaml"))
        .err()
        .unwrap();
    assert!(matches!(e, ConfigError::Read { .. }));
    std::fs::write(&path, VALID).unwrap();
    assert_eq!(Config::load(&path).unwrap().base_dir, dir.path());
}

#[test]
fn config_dump_uses_ms_and_omits_the_identity_files() {
    let c = parse(VALID).unwrap();
    let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(v["timeouts"]["connect_ms"], 1000);
    assert_eq!(v["gateway"]["idle_timeout_ms"], 10_000);
    assert_eq!(v["outbound"][0]["service"], "default/backend");
    assert_eq!(v["inbound"][0]["allow"][1], "spiffe://cluster-b.mesh/*");
    assert!(v.get("identity").is_none());
    assert!(!c.to_json().contains("ca-key.pem"));
}

#[test]
fn worker_threads_zero_is_per_cpu_and_n_is_fixed() {
    let c = parse(&format!("{VALID}worker_threads: 0\n")).expect("0 is valid");
    assert_eq!(c.worker_threads, WorkerThreads::PerCpu);
    let c = parse(&format!("{VALID}worker_threads: 4\n")).expect("4 is valid");
    assert_eq!(
        c.worker_threads,
        WorkerThreads::Fixed(std::num::NonZeroUsize::new(4).expect("4 > 0"))
    );
    assert_eq!(u64::from(c.worker_threads), 4);
    let e = err(&format!("{VALID}worker_threads: 257\n"));
    assert!(e.contains("worker_threads"), "{e}");
}

const CONTROL_PLANE: &str = r#"
cluster: cluster-a
identity:
  spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/frontend
  bundles: bundles.json
admin: 127.0.1.20:15000
control_plane:
  address: controller.isthmus-system:15012
  join_token_file: token
  register:
    name: frontend-1
    service: frontend
    ports: [{ port: 80, target_port: 15006, protocol: http }]
    lease_seconds: 15
outbound:
  - { listen: "127.0.1.20:18080", service: default/backend, port: 8080, protocol: http, cluster: cluster-b }
  - { listen: "127.0.1.20:18081", service: default/backend, port: 8080, protocol: http }
"#;

#[test]
fn control_plane_section_parses_with_defaults_and_seeds_empty_services() {
    let c = parse(CONTROL_PLANE).unwrap();
    let cp = c.control_plane.as_ref().unwrap();
    assert_eq!(cp.address, "controller.isthmus-system:15012");
    assert_eq!(
        cp.spiffe_id.as_str(),
        "spiffe://cluster-a.mesh/ns/isthmus-system/sa/controller"
    );
    assert_eq!(cp.join_token_file, Path::new("token"));
    assert!(!cp.danger_plaintext);
    assert_eq!(
        cp.initial_backoff,
        Duration::from_millis(DEFAULT_CONTROL_PLANE_INITIAL_BACKOFF_MS)
    );
    let r = cp.register.as_ref().unwrap();
    assert_eq!(
        (r.name.as_str(), r.service.as_str(), r.lease_seconds),
        ("frontend-1", "frontend", 15)
    );
    assert_eq!(r.ports[0].target_port, 15006);
    // One empty entry per upstream; the pin is checked at request time.
    assert_eq!(c.services.len(), 1);
    assert!(c.services[0].endpoints.is_empty() && c.services[0].remote.is_empty());
}

#[test]
fn control_plane_errors_name_the_key() {
    let cases = [
        (
            "  join_token_file: token\n",
            "  join_token_file: token\n  spiffe_id: nope\n",
            "control_plane.spiffe_id",
        ),
        (
            "address: controller.isthmus-system:15012",
            "address: controller",
            "control_plane.address",
        ),
        (
            "  bundles: bundles.json\n",
            "  bundles: bundles.json\n  ca: { cert: ca.pem, key: ca-key.pem }\n",
            "identity.ca",
        ),
        (
            "protocol: http }]",
            "protocol: udp }]",
            "control_plane.register.ports[0].protocol",
        ),
        (
            "target_port: 15006",
            "target_port: 0",
            "control_plane.register.ports[0].target_port",
        ),
        (
            "name: frontend-1",
            "name: Frontend",
            "control_plane.register.name",
        ),
        (
            "    lease_seconds: 15\n",
            "    lease_seconds: 15\n  initial_backoff_ms: 500\n  max_backoff_ms: 100\n",
            "control_plane.max_backoff_ms",
        ),
        (
            "outbound:\n",
            "services: [{ service: default/backend, port: 8080 }]\noutbound:\n",
            "services",
        ),
    ];
    for (needle, with, key) in cases {
        assert!(CONTROL_PLANE.contains(needle), "{needle}");
        let text = CONTROL_PLANE.replacen(needle, with, 1);
        let e = match parse(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with(key), "{key}: {e}");
    }
    let e = match parse(&CONTROL_PLANE.replacen("  join_token_file: token\n", "", 1)) {
        Ok(_) => panic!("accepted without join_token_file"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("join_token_file"), "{e}");
}

// ---- failover (H2; issue 6) ----

const LOCALITIES: &str = r#"
cluster: cluster-a
identity:
  spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/frontend
  ca: { cert: ca.pem, key: ca-key.pem }
  bundles: bundles.json
admin: 127.0.1.20:15000
locality: { region: eu-west, zone: eu-west-1a }
gateway:
  address: 127.0.1.1:15443
  spiffe_id: spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway
services:
  - service: default/backend
    port: 8080
    endpoints:
      - { address: "127.0.1.31:15006", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/backend", locality: { region: eu-west, zone: eu-west-1b }, weight: 3 }
      - { address: "127.0.1.30:15006", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/backend", locality: { region: eu-west, zone: eu-west-1a } }
    remote:
      - { cluster: cluster-c, spiffe_id: "spiffe://cluster-c.mesh/ns/default/sa/backend", weight: 2 }
      - { cluster: cluster-b, spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/backend" }
    failover:
      overprovisioning_factor: 100
      panic_threshold_percent: 0
      outlier_detection:
        consecutive_5xx: 0
        consecutive_gateway_errors: 2
        interval_ms: 1000
        base_ejection_time_ms: 500
        max_ejection_time_ms: 4000
        max_ejection_percent: 100
"#;

#[test]
fn static_priorities_follow_our_locality_then_remote_order() {
    let c = parse(LOCALITIES).unwrap();
    let s = &c.services[0];
    let eps: Vec<_> = s
        .endpoints
        .iter()
        .map(|e| (e.priority, e.weight, e.healthy))
        .collect();
    // Same zone first, the other zone of our cluster next.
    assert_eq!(eps, [(1, 3, true), (0, 1, true)]);
    let remote: Vec<_> = s
        .remote
        .iter()
        .map(|r| (r.cluster.as_str(), r.priority, r.weight, r.health))
        .collect();
    let one = mesh_failover::Health {
        healthy: 1,
        total: 1,
    };
    assert_eq!(remote, [("cluster-c", 2, 2, one), ("cluster-b", 3, 1, one)]);
    // Without local endpoints the remotes start at 0.
    let p = parse(VALID).unwrap();
    assert_eq!(p.services[1].remote[0].priority, 0);
    assert_eq!(p.services[0].remote[0].priority, 1);
}

#[test]
fn failover_section_parses_and_defaults_are_envoys() {
    let c = parse(LOCALITIES).unwrap();
    let f = &c.services[0].failover;
    assert_eq!(f.overprovisioning_factor, 100);
    assert_eq!(f.panic_threshold_percent, 0);
    let o = &f.outlier;
    assert_eq!(o.consecutive_5xx, 0);
    assert_eq!(o.consecutive_gateway_failure, 2);
    assert_eq!(o.interval, Duration::from_secs(1));
    assert_eq!(o.base_ejection_time, Duration::from_millis(500));
    assert_eq!(o.max_ejection_time, Duration::from_secs(4));
    assert_eq!(o.max_ejection_percent, 100);

    let d = &parse(VALID).unwrap().services[0].failover;
    assert_eq!(d, &FailoverSettings::default());
    assert_eq!(d.overprovisioning_factor, 140);
    assert_eq!(d.panic_threshold_percent, 50);
    assert_eq!(d.outlier.consecutive_5xx, 5);
    assert_eq!(d.outlier.base_ejection_time, Duration::from_secs(30));

    let dump: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    let s = &dump["services"][0];
    assert_eq!(
        s["failover"]["outlier_detection"]["base_ejection_time_ms"],
        500
    );
    assert_eq!(s["failover"]["overprovisioning_factor"], 100);
    assert_eq!(s["remote"][0]["health"]["total"], 1);
    assert_eq!(s["endpoints"][0]["priority"], 1);
}

#[test]
fn failover_values_are_checked_with_their_key() {
    let with = |needle: &str, line: &str| err(&LOCALITIES.replacen(needle, line, 1));
    let e = with("overprovisioning_factor: 100", "overprovisioning_factor: 0");
    assert!(
        e.starts_with("services[0].failover.overprovisioning_factor:"),
        "{e}"
    );
    let e = with("panic_threshold_percent: 0", "panic_threshold_percent: 101");
    assert!(
        e.starts_with("services[0].failover.panic_threshold_percent:"),
        "{e}"
    );
    let e = with("interval_ms: 1000", "interval_ms: 0");
    assert!(
        e.starts_with("services[0].failover.outlier_detection.interval_ms:"),
        "{e}"
    );
    let e = with("max_ejection_time_ms: 4000", "max_ejection_time_ms: 400");
    assert!(
        e.starts_with("services[0].failover.outlier_detection.max_ejection_time_ms:"),
        "{e}"
    );
    let e = with("max_ejection_percent: 100", "max_ejection_percent: 101");
    assert!(e.contains("max_ejection_percent"), "{e}");
    let e = with("weight: 2", "weight: 0");
    assert!(e.starts_with("services[0].remote[0].weight:"), "{e}");
    let e = with("weight: 3", "weight: 0");
    assert!(e.starts_with("services[0].endpoints[0].weight:"), "{e}");
    let e = with("consecutive_5xx: 0", "consecutive_500s: 0");
    assert!(e.contains("consecutive_500s"), "{e}");
}

#[test]
fn gateway_replicas_come_from_address_or_addresses() {
    let one = parse(VALID).unwrap().gateway.unwrap();
    assert_eq!(one.replicas, vec![one.address]);
    let list = parse(&edit(
        "address: 127.0.1.1:15443",
        "addresses: ['127.0.1.1:15443', '127.0.1.2:15443']",
    ))
    .unwrap()
    .gateway
    .unwrap();
    assert_eq!(list.address, "127.0.1.1:15443".parse().unwrap());
    assert_eq!(list.replicas.len(), 2);
    // Both: `address` must be one of `addresses` (the harness writes both).
    let both = parse(&edit(
        "address: 127.0.1.1:15443",
        "address: 127.0.1.2:15443\n  addresses: ['127.0.1.1:15443', '127.0.1.2:15443']",
    ))
    .unwrap()
    .gateway
    .unwrap();
    assert_eq!(both.address, "127.0.1.2:15443".parse().unwrap());
    assert_eq!(both.replicas.len(), 2);
    for (with, key) in [
        (
            "address: 127.0.1.3:15443\n  addresses: ['127.0.1.1:15443']",
            "gateway.address: ",
        ),
        (
            "addresses: ['127.0.1.1:15443', '127.0.1.1:15443']",
            "gateway.addresses[1]: ",
        ),
        ("addresses: []", "gateway.address: "),
    ] {
        let e = err(&edit("address: 127.0.1.1:15443", with));
        assert!(e.contains(key), "{with}: {e}");
    }
}
