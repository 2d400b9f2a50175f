//! The benchmark's backends, shared by every topology: one nginx
//! (`worker_processes 1`, no access log) with an HTTP/1.1 listener serving
//! `GET /1k` (exactly 1024 bytes) and an h2c listener (`listen … http2`,
//! prior knowledge) serving the same `/1k` and gRPC unary
//! `POST /bench.Bench/Unary`; and `iperf3 -s` as the opaque TCP backend.
//!
//! The gRPC answer is a static file: a gRPC length-prefixed message (flag
//! byte 0, 4-byte big-endian length; gRPC over HTTP/2 spec) holding a
//! 1024-byte protobuf message (field 1, bytes), sent with
//! `content-type: application/grpc` and the trailer `grpc-status: 0`
//! (`add_trailer … always`). nginx's static handler refuses POST with 405,
//! so `error_page 405 =200 /_grpc/unary` re-serves the file from an internal
//! location as a GET with status 200. The static handler never reads the
//! request body, and nginx then ends a stream whose body has not fully
//! arrived with `RST_STREAM(NO_ERROR)` after the response (which curl 7.88
//! reports as an error and which a real gRPC server never does), so
//! `mirror … ; mirror_request_body on;` makes nginx read the whole request
//! body first (the mirror subrequest itself is an internal `return 204`).
//! This module owns its nginx config; `servers::Nginx` is the tests'.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::iperf::Iperf3Server;
use super::proxies::Backends;
use crate::net::tcp_addr;
use crate::process::Process;
use crate::ready::wait_tcp;
use crate::servers::{nginx_conf_head, spawn_nginx};
use crate::tools::{curl, require, run, Tool};

/// The HTTP path of the 1 KiB response.
pub const PATH_1K: &str = "/1k";
/// The gRPC method path.
pub const GRPC_PATH: &str = "/bench.Bench/Unary";
/// Size of the `/1k` body, bytes.
pub const BODY_1K: usize = 1024;

/// nginx and iperf3 running as the backends.
pub struct Backend {
    /// Their addresses.
    pub addrs: Backends,
    /// The gRPC-framed request body for h2load/curl (`-d`).
    pub grpc_request: PathBuf,
    /// The exact gRPC response body nginx sends.
    pub grpc_response: Vec<u8>,
    nginx: Process,
    iperf3: Iperf3Server,
}

impl Backend {
    /// Writes the files and the nginx config under `dir/backend/`, starts
    /// nginx and iperf3 on `ip` (pinned to `cpus` when given), waits until
    /// they accept connections, then checks them with curl (see
    /// [`Backend::check_grpc`]).
    ///
    /// # Errors
    /// nginx, iperf3 or curl is missing (names the package), a server did
    /// not start, or a check failed.
    pub fn start(dir: &Path, ip: Ipv4Addr, cpus: Option<&str>) -> Result<Self> {
        let base = dir.join("backend");
        let root = base.join("www");
        fs::create_dir_all(root.join("bench.Bench"))?;
        fs::create_dir_all(base.join("tmp"))?;
        fs::write(root.join("1k"), vec![b'a'; BODY_1K])?;
        let grpc_response = grpc_frame(&protobuf_bytes_field(1, &[b'x'; 1021]));
        // The POST location needs the file to answer 405 (not 404); the
        // internal location serves it.
        fs::create_dir_all(root.join("_grpc"))?;
        fs::write(root.join("bench.Bench").join("Unary"), &grpc_response)?;
        fs::write(root.join("_grpc").join("unary"), &grpc_response)?;
        let grpc_request = base.join("grpc-request.bin");
        fs::write(
            &grpc_request,
            grpc_frame(&protobuf_bytes_field(1, &[b'y'; 16])),
        )?;
        let addrs = Backends {
            http: tcp_addr(ip, 8080)?,
            grpc: tcp_addr(ip, 8081)?,
            tcp: tcp_addr(ip, 5201)?,
        };
        let conf = nginx_conf(&base, &root, &addrs)?;
        let mut nginx = spawn_nginx("backend-nginx", &base, &conf, cpus)?;
        wait_tcp(&mut nginx, addrs.http)?;
        wait_tcp(&mut nginx, addrs.grpc)?;
        let iperf3 = Iperf3Server::start(&base, addrs.tcp, cpus)?;
        let backend = Backend {
            addrs,
            grpc_request,
            grpc_response,
            nginx,
            iperf3,
        };
        backend.check_http(addrs.http)?;
        backend.check_grpc(addrs.grpc)?;
        Ok(backend)
    }

    /// `GET /1k` at `addr` (HTTP/1.1) answers 200 with exactly 1024 bytes.
    ///
    /// # Errors
    /// It does not.
    pub fn check_http(&self, addr: SocketAddr) -> Result<()> {
        let url = format!("http://{addr}{PATH_1K}");
        let r = curl(&[url.as_str()], Duration::from_secs(10))?;
        if r.status != 200 || r.out.stdout.len() != BODY_1K {
            bail!(
                "GET {url}: status {}, {} bytes (want 200, {BODY_1K}); {}",
                r.status,
                r.out.stdout.len(),
                r.out.stderr
            );
        }
        Ok(())
    }

    /// A gRPC unary call over h2c prior knowledge at `addr` gets status
    /// 200 and exactly the gRPC frame (curl `--http2-prior-knowledge`), and
    /// `grpc-status: 0` as a trailer: a HEADERS frame with END_STREAM after
    /// the response head (`nghttp -v`, which shows every frame; curl 7.88's
    /// `-v` does not reliably print trailers).
    ///
    /// # Errors
    /// Any of the three is not so.
    pub fn check_grpc(&self, addr: SocketAddr) -> Result<()> {
        let url = format!("http://{addr}{GRPC_PATH}");
        let data = format!("@{}", self.grpc_request.display());
        let r = curl(
            &[
                "--http2-prior-knowledge",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--data-binary",
                data.as_str(),
                url.as_str(),
            ],
            Duration::from_secs(10),
        )?;
        if r.status != 200 || r.out.stdout != self.grpc_response {
            bail!(
                "gRPC POST {url}: status {}, {} body bytes (want 200 and the {}-byte frame); {}",
                r.status,
                r.out.stdout.len(),
                self.grpc_response.len(),
                r.out.stderr
            );
        }
        let nghttp = require(Tool::Nghttp)?;
        let out = run(
            Command::new(nghttp)
                .arg("-v")
                .arg("-d")
                .arg(&self.grpc_request)
                .arg("-H")
                .arg("content-type: application/grpc")
                .arg("-H")
                .arg("te: trailers")
                .arg(&url),
            None,
            Duration::from_secs(10),
        )?;
        let trace = out.stdout_text();
        if !out.success() || !grpc_status_trailer_ok(&trace) {
            bail!(
                "gRPC POST {url}: no `grpc-status: 0` trailer after the response head; nghttp -v ({:?}):\n{trace}\n{}",
                out.status,
                out.stderr
            );
        }
        Ok(())
    }

    /// `[nginx, iperf3]` pids.
    pub fn pids(&mut self) -> [u32; 2] {
        [
            self.nginx.pid().unwrap_or(0),
            self.iperf3.process().pid().unwrap_or(0),
        ]
    }

    /// Fails unless nginx and iperf3 are alive.
    ///
    /// # Errors
    /// One has exited (with its log tail).
    pub fn assert_running(&mut self) -> Result<()> {
        self.nginx.assert_running()?;
        self.iperf3.process().assert_running()
    }
}

/// Whether an `nghttp -v` trace shows `grpc-status: 0` as a trailer: the
/// response carries `:status: 200`, and after its first HEADERS frame comes
/// a `grpc-status: 0` field whose HEADERS frame ends the stream.
pub fn grpc_status_trailer_ok(trace: &str) -> bool {
    let lines: Vec<&str> = trace.lines().collect();
    if !lines.iter().any(|l| l.ends_with(":status: 200")) {
        return false;
    }
    let Some(head) = lines
        .iter()
        .position(|l| l.contains("; First response header"))
    else {
        return false;
    };
    let Some(field) = lines[head..]
        .iter()
        .position(|l| l.contains("recv (stream_id=") && l.ends_with(") grpc-status: 0"))
    else {
        return false;
    };
    let after = &lines[head + field..];
    let Some(frame) = after.iter().position(|l| l.contains("recv HEADERS frame")) else {
        return false;
    };
    after
        .get(frame + 1)
        .is_some_and(|l| l.contains("END_STREAM"))
}

/// A gRPC length-prefixed message: flag 0 (uncompressed), length (u32 BE),
/// payload.
pub fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(0);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A protobuf message with one length-delimited field (wire type 2).
pub fn protobuf_bytes_field(field: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 6);
    varint(&mut out, u64::from(field << 3 | 2));
    varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn nginx_conf(base: &Path, root: &Path, addrs: &Backends) -> Result<String> {
    let mut conf = nginx_conf_head(base, 8192);
    write!(
        conf,
        r#"    access_log off;
    default_type application/octet-stream;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    root {root};
    server {{
        listen {http} backlog=4096;
        location = {PATH_1K} {{ }}
    }}
    server {{
        listen {grpc} http2 backlog=4096;
        http2_max_concurrent_streams 1000;
        location = {PATH_1K} {{ }}
        location = {GRPC_PATH} {{
            mirror /_mirror;
            mirror_request_body on;
            error_page 405 =200 /_grpc/unary;
        }}
        location = /_grpc/unary {{
            internal;
            default_type application/grpc;
            add_trailer grpc-status 0 always;
        }}
        location = /_mirror {{
            internal;
            return 204;
        }}
    }}
}}
"#,
        root = root.display(),
        http = addrs.http,
        grpc = addrs.grpc,
    )
    .context("formatting the nginx config")?;
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_frame_of_a_1k_message() {
        let msg = protobuf_bytes_field(1, &[b'x'; 1021]);
        assert_eq!(msg.len(), 1024);
        assert_eq!(&msg[..3], &[0x0a, 0xfd, 0x07]);
        let f = grpc_frame(&msg);
        assert_eq!(&f[..5], &[0, 0, 0, 4, 0]);
        assert_eq!(f.len(), 1029);
    }

    /// Traces captured from `nghttp -v` against this nginx config
    /// (abridged: the SETTINGS frames and the body are cut).
    const TRAILER_TRACE: &str = "\
[  0.003] recv (stream_id=13) :status: 200
[  0.003] recv (stream_id=13) content-type: application/grpc
[  0.003] recv (stream_id=13) content-length: 1029
[  0.003] recv HEADERS frame <length=112, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0)
          ; First response header
\u{0}\u{0}\u{0}\u{4}\u{0}xxxx
[  0.003] recv (stream_id=13) grpc-status: 0
[  0.003] recv HEADERS frame <length=12, flags=0x05, stream_id=13>
          ; END_STREAM | END_HEADERS
";

    #[test]
    fn trailer_must_follow_the_head_and_end_the_stream() {
        assert!(grpc_status_trailer_ok(TRAILER_TRACE));
        // grpc-status in the response head (trailers-only) is not a trailer.
        let in_head = "\
[  0.003] recv (stream_id=13) :status: 200
[  0.003] recv (stream_id=13) grpc-status: 0
[  0.003] recv HEADERS frame <length=20, flags=0x05, stream_id=13>
          ; END_STREAM | END_HEADERS
          (padlen=0)
          ; First response header
";
        assert!(!grpc_status_trailer_ok(in_head));
        assert!(!grpc_status_trailer_ok(
            &TRAILER_TRACE.replace("status: 200", "status: 405")
        ));
        assert!(!grpc_status_trailer_ok(
            &TRAILER_TRACE.replace("grpc-status: 0", "grpc-status: 13")
        ));
        assert!(!grpc_status_trailer_ok(""));
    }
}
