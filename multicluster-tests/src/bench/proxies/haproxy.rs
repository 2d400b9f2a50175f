//! HAProxy pair configured as an idiomatic keep-alive reverse proxy
//! (`haproxy-{client,server}.cfg`), HAProxy's defaults unless said here:
//!
//! - **Process**: run in the foreground (`-db`, no master process),
//!   `nbthread 1`, no `log` line (so no access log), `maxconn 20000`
//!   globally and per frontend (less if the open-files hard limit cannot
//!   hold two descriptors per connection); timeouts `connect 5s`, `client 60s`,
//!   `server 60s`.
//! - **Client side**: `http` is a `mode http` frontend on a plain `bind`,
//!   which serves HTTP/1.1 and detects the HTTP/2 preface (h2c prior
//!   knowledge) by itself; its backend reaches the peer over `ssl` with
//!   HTTP/1.1 (HAProxy's default upstream protocol), keep-alive and
//!   `http-reuse always` (idle server connections are shared between client
//!   connections, as Envoy's connection pool does; with the default `safe`
//!   the first request of each client connection gets a connection of its
//!   own). Default `retries 3`.
//!   `grpc` binds with `proto h2` and its server line says `alpn h2`, so
//!   HTTP/2 is kept end to end; `tcp` is `mode tcp`.
//! - **mTLS**: `ssl-min-ver TLSv1.3` for binds and servers
//!   (`ssl-default-{bind,server}-options`); each side presents its SVID
//!   (`crt`, chain and key in one PEM) and verifies the peer with
//!   `verify required` and `ca-file` (the bench CA). HAProxy 2.6 has no
//!   matcher for URI SANs (`verifyhost` checks DNS names), so the peer's
//!   SPIFFE ID is not checked: the CA issues only the two proxies' SVIDs.
//!   No `x-forwarded-client-cert` header is added (Envoy's server side and
//!   Isthmus' sidecar add one; HAProxy has no built-in equivalent).
//! - **Server side**: TLS `bind`s with `verify required`; `http` to the
//!   HTTP/1.1 backend, `grpc` (`alpn h2` on the bind) to the h2c backend
//!   with `proto h2`, `tcp` in `mode tcp`.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::{line_with, Plan, Side};
use crate::process::Spec;
use crate::tools::run;

/// `haproxy` from `PATH`, then `/usr/sbin/haproxy`.
pub(super) fn binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for d in dirs {
        let p = d.join("haproxy");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "`haproxy` not found: install the Debian package `haproxy` \
         (`apt-get install haproxy`; bash scripts/test.sh installs it)"
    )
}

/// `"HAProxy 2.6.12"` from `haproxy -v`
/// (`HAProxy version 2.6.12-1+deb12u4 2026/10/17 - …`).
pub(super) fn version(binary: &Path) -> Result<String> {
    let out = run(
        Command::new(binary).arg("-v"),
        None,
        Duration::from_secs(30),
    )?;
    let text = out.stdout_text();
    let line = line_with(&text, "version", "version line from haproxy -v")?;
    let number = line
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(|v| v.split('-').next())
        .ok_or_else(|| anyhow!("unexpected haproxy -v output {line:?}"))?;
    Ok(format!("HAProxy {number}"))
}

/// How to run HAProxy with the config at `config`: foreground, no master.
pub(super) fn spec(binary: &Path, config: &Path) -> Spec {
    Spec::new(binary).arg("-db").arg("-f").arg(config)
}

/// The config of one side.
pub(super) fn config(side: Side, plan: &Plan) -> String {
    let c = &plan.certs;
    let tls = format!(
        "ssl crt {} ca-file {} verify required",
        c.combined(side).display(),
        c.ca.display()
    );
    let h2 = format!("{tls} alpn h2");
    let hops = match side {
        Side::Client => [
            Hop::http("http", plan.entry.http, "", plan.peer.http, &tls),
            Hop::http("grpc", plan.entry.grpc, "proto h2", plan.peer.grpc, &h2),
            Hop::tcp(plan.entry.tcp, "", plan.peer.tcp, &tls),
        ],
        Side::Server => [
            Hop::http("http", plan.peer.http, &tls, plan.backends.http, ""),
            Hop::http("grpc", plan.peer.grpc, &h2, plan.backends.grpc, "proto h2"),
            Hop::tcp(plan.peer.tcp, &tls, plan.backends.tcp, ""),
        ],
    };
    let maxconn = maxconn();
    let mut s = format!(
        "global
    nbthread 1
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    mode http
    maxconn {maxconn}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
"
    );
    for hop in hops {
        hop.write(&mut s);
    }
    s
}

/// [`MAXCONN`], or less if the open-files hard limit cannot hold two
/// descriptors per connection plus [`SPARE_FDS`] (HAProxy refuses to
/// start when it cannot raise its limit to what `maxconn` needs).
fn maxconn() -> u64 {
    let hard = fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .to_owned();
            let hard = line.split_whitespace().nth(4)?;
            Some(hard.parse::<u64>().unwrap_or(u64::MAX)) // "unlimited"
        })
        .unwrap_or(u64::MAX);
    MAXCONN.min(hard.saturating_sub(SPARE_FDS) / 2)
}

/// Connections per process and per frontend, when the fd limit allows.
const MAXCONN: u64 = 20_000;
/// Descriptors kept aside for listeners, files and HAProxy's own needs.
const SPARE_FDS: u64 = 200;

/// A frontend and its backend with one server.
struct Hop<'a> {
    name: &'a str,
    /// `http` or `tcp`.
    mode: &'a str,
    bind: SocketAddr,
    bind_options: &'a str,
    to: SocketAddr,
    server_options: &'a str,
}

impl<'a> Hop<'a> {
    fn http(
        name: &'a str,
        bind: SocketAddr,
        bind_options: &'a str,
        to: SocketAddr,
        server_options: &'a str,
    ) -> Self {
        Hop {
            name,
            mode: "http",
            bind,
            bind_options,
            to,
            server_options,
        }
    }

    fn tcp(
        bind: SocketAddr,
        bind_options: &'a str,
        to: SocketAddr,
        server_options: &'a str,
    ) -> Self {
        Hop {
            name: "tcp",
            mode: "tcp",
            bind,
            bind_options,
            to,
            server_options,
        }
    }

    fn write(&self, s: &mut String) {
        let Hop {
            name,
            mode,
            bind,
            bind_options,
            to,
            server_options,
        } = self;
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "
frontend {name}_in
    mode {mode}
    bind {bind} {bind_options}
    default_backend {name}_out

backend {name}_out
    mode {mode}
"
        );
        if *mode == "http" {
            s.push_str("    http-reuse always\n");
        }
        let _ = writeln!(s, "    server {name} {to} {server_options}");
    }
}
