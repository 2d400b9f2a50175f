use super::*;

/// The example of docs/reference/data-path-config.md (gateway section).
const REFERENCE: &str = r#"
cluster: cluster-b
identity:
  spiffe_id: spiffe://cluster-b.mesh/ns/isthmus-system/sa/east-west-gateway
  ca: { cert: ca.pem, key: ca-key.pem }
  bundles: bundles.json
listen: 127.0.2.1:15443
admin: 127.0.2.1:15021
tcp_listen: 127.0.2.1:15444
peers:
  - cluster: cluster-a
    trust_domain: cluster-a.mesh
    address: 127.0.1.1:15443
    spiffe_id: spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway
    transport: quic
  - cluster: cluster-c
    trust_domain: cluster-c.mesh
    addresses: [gw-1.cluster-c.example:15443, gw-2.cluster-c.example:15443]
exports:
  - service: default/backend
    port: 8080
    exported_to: [cluster-a]
    endpoints:
      - address: 127.0.2.10:15006
        spiffe_id: spiffe://cluster-b.mesh/ns/default/sa/backend
        locality: { region: eu-west, zone: eu-west-1a }
quic:
  keep_alive_ms: 2000
  idle_timeout_ms: 10000
  stream_receive_window_bytes: 8388608
  receive_window_bytes: 67108864
  send_window_bytes: 67108864
  max_concurrent_streams: 4096
  congestion: bbr
timeouts:
  header_ms: 5000
  connect_ms: 3000
  drain_ms: 30000
  peer_open_ms: 1000
reconnect:
  initial_backoff_ms: 100
  max_backoff_ms: 10000
"#;

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, Path::new("/etc/isthmus"))
}

fn invalid_key(yaml: &str) -> String {
    match parse(yaml) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn the_reference_example_parses() {
    let c = parse(REFERENCE).unwrap();
    assert_eq!(c.cluster, "cluster-b");
    assert_eq!(c.trust_domain.as_str(), "cluster-b.mesh");
    assert_eq!(c.listen, "127.0.2.1:15443".parse().unwrap());
    assert_eq!(c.tcp_listen, Some("127.0.2.1:15444".parse().unwrap()));
    assert_eq!(c.peers["cluster-a"].transport, PeerTransport::Quic);
    assert_eq!(c.peers["cluster-c"].transport, PeerTransport::Quic);
    assert_eq!(c.base_dir, Path::new("/etc/isthmus"));
    let a = &c.peers["cluster-a"];
    assert_eq!(
        a.addresses,
        vec![PeerAddress::Ip("127.0.1.1:15443".parse().unwrap())]
    );
    assert!(a.spiffe_id.is_some());
    assert_eq!(
        c.peers["cluster-c"].addresses,
        ["gw-1", "gw-2"]
            .map(|h| PeerAddress::Dns {
                host: format!("{h}.cluster-c.example"),
                port: 15443
            })
            .to_vec()
    );
    assert_eq!(c.peers["cluster-c"].dial_addresses().len(), 2);
    let key = ServiceKey {
        namespace: "default".into(),
        service: "backend".into(),
        port: 8080,
    };
    let e = &c.exports[&key];
    assert!(e.exported_to.contains("cluster-a"));
    assert_eq!(
        e.endpoints[0].locality.as_ref().unwrap().zone.as_deref(),
        Some("eu-west-1a")
    );
    assert_eq!(c.quic.keep_alive, Some(Duration::from_secs(2)));
    assert_eq!(c.timeouts.drain, Duration::from_secs(30));
    assert_eq!(c.timeouts.peer_open, Duration::from_secs(1));
    assert_eq!(c.quic.congestion, RawCongestion::Bbr);
    assert_eq!(c.reconnect.max_backoff, Duration::from_secs(10));
}

#[test]
fn replica_addresses_take_one_form_and_no_duplicates() {
    let both = REFERENCE.replace(
        "    addresses: [gw-1",
        "    address: gw-0.cluster-c.example:1\n    addresses: [gw-1",
    );
    assert_eq!(invalid_key(&both), "peers[1].addresses");
    let neither = REFERENCE.replace(
        "    addresses: [gw-1.cluster-c.example:15443, gw-2.cluster-c.example:15443]\n",
        "",
    );
    assert_eq!(invalid_key(&neither), "peers[1].address");
    let dup = REFERENCE.replace("gw-2.cluster-c", "gw-1.cluster-c");
    assert_eq!(invalid_key(&dup), "peers[1].addresses[1]");
    let bad = REFERENCE.replace("gw-2.cluster-c.example:15443", "gw-2");
    assert_eq!(invalid_key(&bad), "peers[1].addresses[1]");
    let tcp = parse(&REFERENCE.replace(
        "transport: quic",
        "transport: tcp-tls\n    tcp_addresses: ['127.0.1.1:15444', '127.0.1.2:15444']",
    ))
    .unwrap();
    assert_eq!(tcp.peers["cluster-a"].dial_addresses().len(), 2);
    let tcp_both = REFERENCE.replace(
        "transport: quic",
        "transport: tcp-tls\n    tcp_address: 127.0.1.1:1\n    tcp_addresses: ['127.0.1.2:1']",
    );
    assert_eq!(invalid_key(&tcp_both), "peers[0].tcp_addresses");
    let quic_tcp = REFERENCE.replace("transport: quic", "tcp_addresses: ['127.0.1.2:1']");
    assert_eq!(invalid_key(&quic_tcp), "peers[0].tcp_addresses");
    assert_eq!(
        invalid_key(&REFERENCE.replace("peer_open_ms: 1000", "peer_open_ms: 0")),
        "timeouts.peer_open_ms"
    );
    for (name, want) in [
        ("cubic", RawCongestion::Cubic),
        ("new_reno", RawCongestion::NewReno),
    ] {
        let c =
            parse(&REFERENCE.replace("congestion: bbr", &format!("congestion: {name}"))).unwrap();
        assert_eq!(c.quic.congestion, want);
    }
}

#[test]
fn omitted_sections_take_the_documented_defaults() {
    let c = parse(
        "cluster: a\nidentity: { spiffe_id: 'spiffe://a.mesh/gw', svid: { cert: s.pem, key: k.pem }, bundles: b.json }\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\n",
    )
    .unwrap();
    let full = parse(REFERENCE).unwrap();
    assert_eq!(c.quic, full.quic);
    assert_eq!(c.timeouts, full.timeouts);
    assert_eq!(c.reconnect, full.reconnect);
    assert!(c.peers.is_empty() && c.exports.is_empty());
    assert_eq!(c.tcp_listen, None);
}

#[test]
fn a_raw_config_round_trips_through_yaml() {
    let raw: RawConfig = serde_yaml_ng::from_str(REFERENCE).unwrap();
    let text = serde_yaml_ng::to_string(&raw).unwrap();
    assert_eq!(parse(&text).unwrap(), parse(REFERENCE).unwrap());
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let err = parse(&REFERENCE.replace("  drain_ms:", "  drian_ms:")).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }));
    let msg = format!("{}", std::error::Error::source(&err).unwrap());
    assert!(msg.contains("drian_ms"), "{msg}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(
        &path,
        REFERENCE.replace("cluster: cluster-b", "cluster: Cluster_B"),
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains(": cluster: "), "{msg}");
    assert!(matches!(
        Config::load(&dir.path().join("missing.yaml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn validation_errors_name_the_key_path() {
    let r = REFERENCE;
    let cases: Vec<(String, &str)> = vec![
        (
            r.replace("listen: 127.0.2.1:15443", "listen: nowhere"),
            "listen",
        ),
        (
            r.replace("tcp_listen: 127.0.2.1:15444", "tcp_listen: 127.0.2.1"),
            "tcp_listen",
        ),
        (
            r.replace("transport: quic", "transport: tcp-tls"),
            "peers[0].tcp_address",
        ),
        (
            r.replace(
                "transport: quic",
                "transport: quic\n    tcp_address: 127.0.1.1:15444",
            ),
            "peers[0].tcp_address",
        ),
        (
            r.replace(
                "transport: quic",
                "transport: tcp-tls\n    tcp_address: 127.0.1.1",
            ),
            "peers[0].tcp_address",
        ),
        (
            r.replace("admin: 127.0.2.1:15021", "admin: 1.2.3.4"),
            "admin",
        ),
        (
            r.replace(
                "spiffe_id: spiffe://cluster-b.mesh/ns/isthmus-system",
                "spiffe_id: http://x/ns/isthmus-system",
            ),
            "identity.spiffe_id",
        ),
        (
            r.replace("  ca: { cert: ca.pem, key: ca-key.pem }\n", ""),
            "identity",
        ),
        (
            r.replace("  - cluster: cluster-a", "  - cluster: cluster-b"),
            "peers[0].cluster",
        ),
        (
            r.replace(
                "trust_domain: cluster-c.mesh",
                "trust_domain: cluster-b.mesh",
            ),
            "peers[1].trust_domain",
        ),
        (
            r.replace(
                "trust_domain: cluster-c.mesh",
                "trust_domain: cluster-a.mesh",
            ),
            "peers[1].trust_domain",
        ),
        (
            r.replace("address: 127.0.1.1:15443", "address: 127.0.1.1"),
            "peers[0].address",
        ),
        (
            r.replace(
                "addresses: [gw-1.cluster-c.example:15443,",
                "addresses: ['bad host:1',",
            ),
            "peers[1].addresses[0]",
        ),
        (
            r.replace(
                "spiffe_id: spiffe://cluster-a.mesh/ns/isthmus-system",
                "spiffe_id: spiffe://cluster-c.mesh/ns/isthmus-system",
            ),
            "peers[0].spiffe_id",
        ),
        (
            r.replace("service: default/backend", "service: backend"),
            "exports[0].service",
        ),
        (r.replace("port: 8080", "port: 0"), "exports[0].port"),
        (
            r.replace(
                "exported_to: [cluster-a]",
                "exported_to: [cluster-a, cluster-q]",
            ),
            "exports[0].exported_to[1]",
        ),
        (
            r.replace("address: 127.0.2.10:15006", "address: backend:15006"),
            "exports[0].endpoints[0].address",
        ),
        (
            r.replace(
                "spiffe://cluster-b.mesh/ns/default/sa/backend",
                "spiffe://cluster-a.mesh/ns/default/sa/backend",
            ),
            "exports[0].endpoints[0].spiffe_id",
        ),
        (
            r.replace("keep_alive_ms: 2000", "keep_alive_ms: 20000"),
            "quic.keep_alive_ms",
        ),
        (
            r.replace("idle_timeout_ms: 10000", "idle_timeout_ms: 0"),
            "quic.idle_timeout_ms",
        ),
        (
            r.replace("send_window_bytes: 67108864", "send_window_bytes: 0"),
            "quic.send_window_bytes",
        ),
        (
            r.replace("header_ms: 5000", "header_ms: 0"),
            "timeouts.header_ms",
        ),
        (
            r.replace("initial_backoff_ms: 100", "initial_backoff_ms: 20000"),
            "reconnect.max_backoff_ms",
        ),
    ];
    for (yaml, key) in cases {
        assert_eq!(invalid_key(&yaml), key);
    }
    let dup = r.replace(
        "quic:",
        "  - service: default/backend\n    port: 8080\nquic:",
    );
    assert_eq!(invalid_key(&dup), "exports[1].service");
}

#[test]
fn dns_labels_and_peer_addresses() {
    assert!(is_dns_label("cluster-a"));
    assert!(!is_dns_label("-a") && !is_dns_label("a-") && !is_dns_label("A") && !is_dns_label(""));
    assert!(!is_dns_label(&"a".repeat(64)));
    assert_eq!(
        parse_peer_address("[::1]:443"),
        Some(PeerAddress::Ip("[::1]:443".parse().unwrap()))
    );
    assert_eq!(
        parse_peer_address("gw.example.:443"),
        Some(PeerAddress::Dns {
            host: "gw.example".into(),
            port: 443
        })
    );
    for bad in ["gw", "gw:0", ":443", "gw..x:1", "gw:port", "-gw:1"] {
        assert_eq!(parse_peer_address(bad), None, "{bad}");
    }
}

#[test]
fn a_tcp_tls_peer_takes_its_tcp_address() {
    let c = parse(&REFERENCE.replace(
        "transport: quic",
        "transport: tcp-tls\n    tcp_address: 127.0.1.1:15444",
    ))
    .unwrap();
    assert_eq!(
        c.peers["cluster-a"].transport,
        PeerTransport::TcpTls(vec![PeerAddress::Ip("127.0.1.1:15444".parse().unwrap())])
    );
    // The QUIC address stays as written.
    assert_eq!(
        c.peers["cluster-a"].addresses,
        vec![PeerAddress::Ip("127.0.1.1:15443".parse().unwrap())]
    );
    let c = parse(&REFERENCE.replace(
        "transport: quic",
        "transport: tcp-tls\n    tcp_address: gw.cluster-a.example:15444",
    ))
    .unwrap();
    assert!(matches!(
        c.peers["cluster-a"].transport.clone(),
        PeerTransport::TcpTls(a) if matches!(a[..], [PeerAddress::Dns { port: 15444, .. }])
    ));
    // An unknown transport is a YAML error naming the value.
    let err = parse(&REFERENCE.replace("transport: quic", "transport: tcp")).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err:?}");
    let msg = format!("{}", std::error::Error::source(&err).unwrap());
    assert!(msg.contains("tcp"), "{msg}");
}

const CONTROL_PLANE: &str = r#"
cluster: cluster-a
identity:
  spiffe_id: spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway
  bundles: bundles.json
listen: 127.0.0.1:15443
admin: 127.0.0.1:15021
control_plane:
  address: controller:15012
  join_token_file: token
"#;

#[test]
fn control_plane_section_parses_with_defaults() {
    let c = parse(CONTROL_PLANE).unwrap();
    let cp = c.control_plane.unwrap();
    assert_eq!(cp.address, "controller:15012");
    assert_eq!(
        cp.spiffe_id.as_str(),
        "spiffe://cluster-a.mesh/ns/isthmus-system/sa/controller"
    );
    assert_eq!(cp.join_token_file, PathBuf::from("token"));
    assert!(!cp.danger_plaintext);
    assert_eq!(cp.initial_backoff, Duration::from_millis(200));
    assert_eq!(cp.max_backoff, Duration::from_millis(15_000));
    assert!(c.peers.is_empty() && c.exports.is_empty());
}

#[test]
fn control_plane_errors_name_the_key() {
    for (needle, with, key) in [
        ("controller:15012", "controller", "control_plane.address"),
        (
            "  join_token_file: token\n",
            "  join_token_file: token\n  spiffe_id: x\n",
            "control_plane.spiffe_id",
        ),
        (
            "  bundles: bundles.json\n",
            "  bundles: bundles.json\n  ca: { cert: ca.pem, key: ca-key.pem }\n",
            "identity.ca",
        ),
        (
            "  join_token_file: token\n",
            "  join_token_file: token\n  initial_backoff_ms: 100\n  max_backoff_ms: 10\n",
            "control_plane.max_backoff_ms",
        ),
        (
            "admin: 127.0.0.1:15021\n",
            "admin: 127.0.0.1:15021\npeers: [{ cluster: b, trust_domain: b.mesh, address: '127.0.0.1:1' }]\n",
            "peers",
        ),
    ] {
        assert!(CONTROL_PLANE.contains(needle), "{needle}");
        let e = invalid_key(&CONTROL_PLANE.replacen(needle, with, 1));
        assert_eq!(e, key);
    }
}

#[test]
fn dynamic_peers_and_exports_are_validated_like_the_file() {
    let c = parse(CONTROL_PLANE).unwrap();
    let peer = RawPeer {
        cluster: "cluster-b".into(),
        trust_domain: "cluster-b.mesh".into(),
        address: "127.0.0.2:15443".into(),
        addresses: vec![],
        spiffe_id: None,
        transport: None,
        tcp_address: None,
        tcp_addresses: vec![],
    };
    let export = RawExport {
        service: "default/web".into(),
        port: 8080,
        exported_to: vec!["cluster-b".into()],
        endpoints: vec![],
    };
    let next = c
        .with_dynamic(
            std::slice::from_ref(&peer),
            std::slice::from_ref(&export),
            "control plane",
        )
        .unwrap();
    assert!(next.peers.contains_key("cluster-b"));
    assert_eq!(next.exports.len(), 1);
    let mut own = peer;
    own.trust_domain = "cluster-a.mesh".into();
    let e = c.with_dynamic(&[own], &[], "control plane").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("control plane: peers[0].trust_domain"),
        "{e}"
    );
    let e = c.with_dynamic(&[], &[export], "control plane").unwrap_err();
    assert!(e.to_string().contains("exports[0].exported_to[0]"), "{e}");
}

#[test]
fn tcp_congestion_is_a_short_ascii_name_or_the_kernel_default() {
    assert_eq!(parse(REFERENCE).unwrap().tcp_congestion, None);
    let with =
        |v: &str| REFERENCE.replace("tcp_listen:", &format!("tcp_congestion: {v}\ntcp_listen:"));
    for name in ["cubic", "bbr", "reno", "tcp_lp", "h-tcp", "abcdefghijklmno"] {
        assert_eq!(
            parse(&with(name)).unwrap().tcp_congestion.as_deref(),
            Some(name)
        );
    }
    for bad in [
        "''",
        "'cu bic'",
        "abcdefghijklmnop",
        "'cubic\\0'",
        "cubič",
        "'a/b'",
    ] {
        assert_eq!(invalid_key(&with(bad)), "tcp_congestion", "{bad}");
    }
}
