//! Maximum request rate with h2load (nghttp2): HTTP/1.1 (`--h1`), HTTP/2
//! cleartext with prior knowledge, and gRPC unary (HTTP/2 POST with a
//! gRPC-framed body), for a fixed duration after a warm-up, and the parse of
//! its summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::tools::{parse_h2load, require, run, Tool};

/// How h2load talks.
#[derive(Debug, Clone)]
pub enum Mode {
    /// HTTP/1.1 (`--h1`): one request at a time per connection.
    H1,
    /// HTTP/2 prior knowledge with this many concurrent streams per
    /// connection (`-m`).
    H2 {
        /// Streams per connection.
        streams: u32,
    },
    /// gRPC unary: HTTP/2 POSTs of the body in this file with
    /// `content-type: application/grpc` and `te: trailers`.
    Grpc {
        /// Streams per connection.
        streams: u32,
        /// The gRPC-framed request body.
        body: PathBuf,
    },
}

/// One h2load run.
#[derive(Debug, Clone)]
pub struct H2load {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Request path.
    pub path: String,
    /// Protocol.
    pub mode: Mode,
    /// Connections (`-c`).
    pub connections: u32,
    /// Measuring time (`-D`).
    pub duration: Duration,
    /// Warm-up before measuring (`--warm-up-time`), not counted.
    pub warm_up: Duration,
    /// Run under `taskset -c` with this CPU list.
    pub cpus: Option<String>,
}

/// h2load's summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct H2loadResult {
    /// Requests per second over the measuring time (`finished in …, N req/s`).
    pub rps: f64,
    /// Requests that got a response.
    pub succeeded: u64,
    /// Requests that failed (`failed` in h2load: errored or timed out).
    pub failed: u64,
    /// Responses with a 2xx status.
    pub status_2xx: u64,
    /// Mean time for request, ms.
    pub mean_ms: f64,
    /// Maximum time for request, ms.
    pub max_ms: f64,
}

impl H2load {
    /// The command line, for the log.
    pub fn command(&self, h2load: &std::path::Path) -> Command {
        let mut cmd = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(h2load);
                c
            }
            None => Command::new(h2load),
        };
        cmd.arg("-c")
            .arg(self.connections.to_string())
            .arg("-t")
            .arg("1")
            .arg("-D")
            .arg(secs_arg(self.duration))
            .arg("--warm-up-time")
            .arg(secs_arg(self.warm_up));
        match &self.mode {
            Mode::H1 => {
                cmd.arg("--h1");
            }
            Mode::H2 { streams } => {
                cmd.arg("-m").arg(streams.to_string());
            }
            Mode::Grpc { streams, body } => {
                cmd.arg("-m")
                    .arg(streams.to_string())
                    .arg("-d")
                    .arg(body)
                    .arg("-H")
                    .arg("content-type: application/grpc")
                    .arg("-H")
                    .arg("te: trailers");
            }
        }
        cmd.arg(format!("http://{}{}", self.addr, self.path));
        cmd
    }

    /// Runs h2load and parses its summary.
    ///
    /// # Errors
    /// h2load is missing, did not finish in time, exited non-zero, or
    /// printed no summary.
    pub fn run(&self) -> Result<H2loadResult> {
        let h2load = require(Tool::H2load)?;
        let mut cmd = self.command(&h2load);
        let deadline = self.duration + self.warm_up + Duration::from_secs(30);
        let out = run(&mut cmd, None, deadline)?;
        let text = out.stdout_text();
        if out.timed_out() {
            bail!("{cmd:?} did not finish within {deadline:?}");
        }
        if !out.success() {
            bail!("{cmd:?} failed ({:?}): {}\n{text}", out.status, out.stderr);
        }
        parse(&text).with_context(|| format!("parsing the output of {cmd:?}"))
    }
}

/// Whole seconds when exact, else milliseconds (h2load takes `1500ms`).
fn secs_arg(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Parses h2load's summary: the `finished in` line (req/s), `requests:` and
/// `status codes:` counts, and the `time for request:` line (min, max,
/// mean, sd, ±sd).
///
/// # Errors
/// A line is missing or malformed.
pub fn parse(text: &str) -> Result<H2loadResult> {
    let counts = parse_h2load(text)?;
    let finished = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .ok_or_else(|| anyhow!("no `finished in` line"))?;
    let rps = finished
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" req/s"))
        .ok_or_else(|| anyhow!("no req/s in {finished:?}"))?
        .parse::<f64>()
        .with_context(|| format!("bad req/s in {finished:?}"))?;
    let times = text
        .lines()
        .find_map(|l| l.strip_prefix("time for request:"))
        .ok_or_else(|| anyhow!("no `time for request:` line"))?;
    let cols: Vec<&str> = times.split_whitespace().collect();
    if cols.len() < 3 {
        bail!("short `time for request:` line: {times:?}");
    }
    Ok(H2loadResult {
        rps,
        succeeded: counts.succeeded,
        failed: counts.failed,
        status_2xx: counts.status_2xx,
        max_ms: duration_ms(cols[1])?,
        mean_ms: duration_ms(cols[2])?,
    })
}

/// An h2load duration (`76us`, `5.55ms`, `1.02s`) in ms.
///
/// # Errors
/// No known unit or not a number.
pub fn duration_ms(text: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("no unit in duration {text:?}");
    };
    Ok(num
        .parse::<f64>()
        .with_context(|| format!("bad duration {text:?}"))?
        * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_http1_run() {
        let r = parse(include_str!("testdata/h2load-h1.txt")).unwrap();
        assert_eq!(r.rps, 40652.00);
        assert_eq!(r.succeeded, 40652);
        assert_eq!(r.failed, 0);
        assert_eq!(r.status_2xx, 40652);
        assert!((r.mean_ms - 0.196).abs() < 1e-9, "{r:?}");
        assert!((r.max_ms - 5.55).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn parses_a_real_http2_run() {
        let r = parse(include_str!("testdata/h2load-h2.txt")).unwrap();
        assert_eq!(r.rps, 34079.00);
        assert_eq!(r.succeeded, 34079);
        assert!((r.mean_ms - 2.25).abs() < 1e-9, "{r:?}");
        assert!((r.max_ms - 9.87).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn parses_a_run_where_every_connect_was_refused() {
        let r = parse(include_str!("testdata/h2load-refused.txt")).unwrap();
        assert_eq!(r.rps, 0.0);
        assert_eq!(r.succeeded, 0);
        assert_eq!(r.failed, 10);
    }

    #[test]
    fn rejects_output_without_a_summary() {
        assert!(parse("starting benchmark...\n").is_err());
    }

    #[test]
    fn durations_convert_to_ms() {
        assert_eq!(duration_ms("76us").unwrap(), 0.076);
        assert_eq!(duration_ms("5.55ms").unwrap(), 5.55);
        assert_eq!(duration_ms("1.5s").unwrap(), 1500.0);
        assert!(duration_ms("12").is_err());
    }

    #[test]
    fn command_line_has_the_mode_flags() {
        let h = H2load {
            addr: "127.0.0.1:80".parse().unwrap(),
            path: "/bench.Bench/Unary".into(),
            mode: Mode::Grpc {
                streams: 10,
                body: "/tmp/req.bin".into(),
            },
            connections: 64,
            duration: Duration::from_millis(1500),
            warm_up: Duration::from_secs(2),
            cpus: Some("0".into()),
        };
        let cmd = h.command(std::path::Path::new("/usr/bin/h2load"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "taskset");
        assert_eq!(
            args.join(" "),
            "-c 0 /usr/bin/h2load -c 64 -t 1 -D 1500ms --warm-up-time 2 -m 10 -d /tmp/req.bin \
             -H content-type: application/grpc -H te: trailers http://127.0.0.1:80/bench.Bench/Unary"
        );
    }
}
