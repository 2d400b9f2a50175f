//! Real clients (curl, h2load, nghttp, psql, iperf3) run with a deadline and their output
//! captured; file helpers (random files, SHA-256).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// An external program a test needs, and the Debian package providing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `curl` (package `curl`).
    Curl,
    /// `h2load` (package `nghttp2-client`).
    H2load,
    /// `psql` (package `postgresql-client`).
    Psql,
    /// `nginx` (package `nginx`).
    Nginx,
    /// `python3` (package `python3`).
    Python3,
    /// `iperf3` (package `iperf3`).
    Iperf3,
    /// `nghttp`, the HTTP/2 client (package `nghttp2-client`).
    Nghttp,
}

impl Tool {
    /// The command name.
    pub fn command(self) -> &'static str {
        match self {
            Tool::Curl => "curl",
            Tool::H2load => "h2load",
            Tool::Psql => "psql",
            Tool::Nginx => "nginx",
            Tool::Python3 => "python3",
            Tool::Iperf3 => "iperf3",
            Tool::Nghttp => "nghttp",
        }
    }

    /// The Debian package that installs it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Curl => "curl",
            Tool::H2load => "nghttp2-client",
            Tool::Psql => "postgresql-client",
            Tool::Nginx => "nginx",
            Tool::Python3 => "python3",
            Tool::Iperf3 => "iperf3",
            Tool::Nghttp => "nghttp2-client",
        }
    }
}

/// The path of `tool`, searched in `PATH` then `/usr/sbin` and `/sbin`.
/// Never skips: a missing tool is an error naming the Debian package.
///
/// # Errors
/// The tool is not installed.
pub fn require(tool: Tool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for d in dirs {
        let p = d.join(tool.command());
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "`{}` not found: install the Debian package `{}` (bash scripts/test.sh installs everything)",
        tool.command(),
        tool.package()
    )
}

/// A finished (or timed-out) command.
#[derive(Debug)]
pub struct Output {
    /// Exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr (lossy text).
    pub stderr: String,
    /// Wall time until exit (or the deadline).
    pub elapsed: Duration,
}

impl Output {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Killed at the deadline.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// stdout as lossy text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` with optional `stdin` bytes, killing it at `timeout`
/// (then [`Output::timed_out`] is true).
///
/// # Errors
/// The program could not be started.
pub fn run(cmd: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Output> {
    let start = Instant::now();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })),
        _ => None,
    };
    let mut out_pipe = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut err_pipe = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Ok(Output {
        status,
        stdout,
        stderr,
        elapsed,
    })
}

/// What curl saw.
#[derive(Debug)]
pub struct CurlResult {
    /// The process output; the response body is `out.stdout` unless `-o`
    /// was given.
    pub out: Output,
    /// Status of the last response (0 when none arrived).
    pub status: u16,
    /// Headers of the last response, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl CurlResult {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as lossy text.
    pub fn body_text(&self) -> String {
        self.out.stdout_text()
    }
}

/// Runs `curl -sS --max-time <timeout> <args...>`, capturing the response
/// headers; the harness also kills it at `timeout` + 5 s.
///
/// # Errors
/// curl is missing or could not be started (a failed transfer is not an
/// error: look at `out`).
pub fn curl(args: &[&str], timeout: Duration) -> Result<CurlResult> {
    let curl = require(Tool::Curl)?;
    let headers = tempfile::NamedTempFile::new()?;
    let mut cmd = Command::new(curl);
    cmd.arg("-sS")
        .arg("--max-time")
        .arg(format!("{:.3}", timeout.as_secs_f64()))
        .arg("--dump-header")
        .arg(headers.path())
        .args(args);
    let out = run(&mut cmd, None, timeout + Duration::from_secs(5))?;
    let text = std::fs::read_to_string(headers.path()).unwrap_or_default();
    let (status, headers) = parse_last_response_head(&text);
    Ok(CurlResult {
        out,
        status,
        headers,
    })
}

/// The status and headers of the last response head in a curl
/// `--dump-header` file (which holds every head, 1xx included).
fn parse_last_response_head(text: &str) -> (u16, Vec<(String, String)>) {
    let mut status = 0;
    let mut headers = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            status = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            headers.clear();
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    (status, headers)
}

/// h2load's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2loadSummary {
    /// `requests: N total`.
    pub total: u64,
    /// `N succeeded`.
    pub succeeded: u64,
    /// `N failed`.
    pub failed: u64,
    /// `status codes: N 2xx`.
    pub status_2xx: u64,
}

/// Parses h2load's `requests:` and `status codes:` lines.
///
/// # Errors
/// A line is missing.
pub fn parse_h2load(text: &str) -> Result<H2loadSummary> {
    let number_before = |line: &str, word: &str| -> Option<u64> {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[1].trim_end_matches(',') == word)
            .and_then(|w| w[0].parse().ok())
    };
    let req = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .ok_or_else(|| anyhow!("no `requests:` line in h2load output:\n{text}"))?;
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .ok_or_else(|| anyhow!("no `status codes:` line in h2load output:\n{text}"))?;
    let get = |line: &str, word: &str| {
        number_before(line, word).ok_or_else(|| anyhow!("no `{word}` count in {line:?}"))
    };
    Ok(H2loadSummary {
        total: get(req, "total")?,
        succeeded: get(req, "succeeded")?,
        failed: get(req, "failed")?,
        status_2xx: get(codes, "2xx")?,
    })
}

/// Writes `len` random bytes to `path`.
///
/// # Errors
/// Write or RNG failure.
pub fn random_file(path: &Path, len: u64) -> Result<()> {
    let rng = SystemRandom::new();
    let mut f = std::io::BufWriter::new(File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n])
            .map_err(|_| anyhow!("rng failure"))?;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// SHA-256 of a file, hex.
///
/// # Errors
/// Read failure.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_h2load_summary() {
        let text = "finished in 1.2s, 8000 req/s, 1MB/s\n\
requests: 10000 total, 10000 started, 10000 done, 9998 succeeded, 2 failed, 0 errored, 0 timeout\n\
status codes: 9998 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let s = parse_h2load(text).unwrap();
        assert_eq!(
            s,
            H2loadSummary {
                total: 10000,
                succeeded: 9998,
                failed: 2,
                status_2xx: 9998
            }
        );
        assert!(parse_h2load("nothing").is_err());
    }

    #[test]
    fn last_response_head_wins() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nX-Isthmus-Error: unknown service\r\n\r\n";
        let (status, headers) = parse_last_response_head(text);
        assert_eq!(status, 503);
        assert_eq!(
            headers,
            vec![("x-isthmus-error".into(), "unknown service".into())]
        );
    }
}
