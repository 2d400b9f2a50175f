//! Steady load from a real generator: h2load at a fixed request rate
//! (`-c <clients> --rps <per client> -D <seconds>`) run on a background
//! thread inside a cluster's site, with its summary
//! ([`crate::tools::parse_h2load`]) and its per-request `--log-file`
//! ([`parse_request_log`]) returned when it ends.
//!
//! The failover scenarios run it against a sidecar's outbound listener
//! (h2c, or HTTP/1.1 with [`LoadSpec::h1`]) while they kill, partition and
//! restart things, then line its per-request log up with the backends'
//! `timed.log`s ([`crate::servers::Nginx::served`]).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, ensure, Context, Result};

use crate::site::Site;
use crate::tools::{parse_h2load, require, run, H2loadSummary, Tool};

/// What load to generate.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The URL (e.g. `http://<outbound>/ok.txt`).
    pub url: String,
    /// Connections (`-c`).
    pub clients: u32,
    /// Requests per second per connection (`--rps`).
    pub rps_per_client: u32,
    /// Concurrent streams per connection (`-m`; h2 only, 1 with
    /// [`LoadSpec::h1`]): room for slow (retried) requests without the
    /// rate falling behind.
    pub streams: u32,
    /// How long (`-D`).
    pub duration: Duration,
    /// HTTP/1.1 (`--h1`) instead of h2c prior knowledge.
    pub h1: bool,
}

impl LoadSpec {
    /// 200 requests/s in total (4 connections × 50/s), h2c, up to 100
    /// streams per connection (so 2 s of stalled requests do not hold the
    /// rate back), for `duration`.
    pub fn rps200(url: String, duration: Duration) -> Self {
        LoadSpec {
            url,
            clients: 4,
            rps_per_client: 50,
            streams: 100,
            duration,
            h1: false,
        }
    }
}

/// One request from h2load's `--log-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLog {
    /// When it started, µs since the Unix epoch.
    pub start_us: u64,
    /// Its HTTP status; -1 for a failed stream (reset, connection error).
    pub status: i32,
    /// Time until the end of the response, µs.
    pub duration_us: u64,
}

impl RequestLog {
    /// When it started.
    pub fn start(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.start_us)
    }

    /// When it ended.
    pub fn end(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.start_us + self.duration_us)
    }

    /// A 2xx answer.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// h2load's summary lines.
    pub summary: H2loadSummary,
    /// Every request of the log file, in file order.
    pub requests: Vec<RequestLog>,
    /// h2load's stdout (for failure messages).
    pub output: String,
    /// When h2load was started.
    pub started: SystemTime,
}

impl LoadReport {
    /// Requests that did not get a 2xx, from the per-request log.
    pub fn failed(&self) -> Vec<RequestLog> {
        self.requests.iter().filter(|r| !r.ok()).copied().collect()
    }

    /// Fails unless h2load and its log agree that every request got a 2xx
    /// (and there were some).
    ///
    /// # Errors
    /// A failed or non-2xx request, or no request at all.
    pub fn ensure_no_failures(&self, what: &str) -> Result<()> {
        let failed = self.failed();
        ensure!(
            !self.requests.is_empty() && self.summary.total > 0,
            "{what}: h2load made no request:\n{}",
            self.output
        );
        ensure!(
            self.summary.failed == 0
                && self.summary.status_2xx == self.summary.total
                && failed.is_empty(),
            "{what}: {} of {} requests failed (h2load: {} failed, {} 2xx of {}); first failures (start µs, status, duration µs): {:?}\n{}",
            failed.len(),
            self.requests.len(),
            self.summary.failed,
            self.summary.status_2xx,
            self.summary.total,
            failed.iter().take(10).map(|r| (r.start_us, r.status, r.duration_us)).collect::<Vec<_>>(),
            self.output
        );
        Ok(())
    }
}

/// h2load running on a background thread.
pub struct Load {
    started: SystemTime,
    handle: JoinHandle<Result<LoadReport>>,
}

impl Load {
    /// Starts h2load with `spec` inside `site`, its per-request log in
    /// `log_file`. The thread that spawns h2load waits for it, so h2load
    /// (started with `PDEATHSIG` in a namespace) lives exactly as long as
    /// the run.
    ///
    /// # Errors
    /// h2load is not installed.
    pub fn start(site: &Site, spec: LoadSpec, log_file: &Path) -> Result<Self> {
        let h2load = require(Tool::H2load)?;
        let site = site.clone();
        let log_file = log_file.to_owned();
        let started = SystemTime::now();
        let handle = std::thread::Builder::new()
            .name("isthmus-h2load".into())
            .spawn(move || run_h2load(&site, &h2load, &spec, &log_file, started))
            .context("spawning the h2load thread")?;
        Ok(Load { started, handle })
    }

    /// When h2load was started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Whether h2load has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the end of the run.
    ///
    /// # Errors
    /// h2load failed to run, timed out, or printed no summary.
    pub fn wait(self) -> Result<LoadReport> {
        self.handle
            .join()
            .map_err(|_| anyhow!("the h2load thread panicked"))?
    }
}

fn run_h2load(
    site: &Site,
    h2load: &Path,
    spec: &LoadSpec,
    log_file: &PathBuf,
    started: SystemTime,
) -> Result<LoadReport> {
    let mut cmd = site.command(h2load);
    cmd.arg("-c")
        .arg(spec.clients.to_string())
        .arg("--rps")
        .arg(spec.rps_per_client.to_string())
        .arg("-D")
        .arg(spec.duration.as_secs().max(1).to_string())
        .arg("--log-file")
        .arg(log_file);
    if spec.h1 {
        cmd.arg("--h1").arg("-m").arg("1");
    } else {
        cmd.arg("-m").arg(spec.streams.to_string());
    }
    cmd.arg(&spec.url);
    let out = run(&mut cmd, None, spec.duration + Duration::from_secs(60))?;
    let output = format!("{}\n{}", out.stdout_text(), out.stderr);
    ensure!(!out.timed_out(), "h2load did not end in time:\n{output}");
    let summary = parse_h2load(&output)?;
    let text = std::fs::read_to_string(log_file)
        .with_context(|| format!("reading {}", log_file.display()))?;
    Ok(LoadReport {
        summary,
        requests: parse_request_log(&text),
        output,
        started,
    })
}

/// Parses h2load's `--log-file`: tab-separated start time (µs since the
/// epoch), status (-1 for a failed stream) and duration (µs) per line;
/// malformed lines are skipped.
pub fn parse_request_log(text: &str) -> Vec<RequestLog> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split('\t').map(str::trim);
            Some(RequestLog {
                start_us: it.next()?.parse().ok()?,
                status: it.next()?.parse().ok()?,
                duration_us: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// `t` as ms since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_request_log() {
        let text = "1700000000000000\t200\t1500\n1700000000001000\t-1\t30000\nbad line\n";
        assert_eq!(
            parse_request_log(text),
            vec![
                RequestLog {
                    start_us: 1_700_000_000_000_000,
                    status: 200,
                    duration_us: 1500
                },
                RequestLog {
                    start_us: 1_700_000_000_001_000,
                    status: -1,
                    duration_us: 30000
                },
            ]
        );
        assert!(!parse_request_log(text)[1].ok());
    }
}
