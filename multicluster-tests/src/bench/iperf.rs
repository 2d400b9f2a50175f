//! Bulk TCP throughput with iperf3: the server (a backend, serving one test
//! after another) and the client run with `-J`, whose JSON report gives the
//! receiver's throughput.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::process::{Process, Spec};
use crate::ready::wait_tcp;
use crate::tools::{require, run, Tool};

/// A running `iperf3 -s` bound to one address.
pub struct Iperf3Server {
    /// The listening address.
    pub addr: SocketAddr,
    process: Process,
}

impl Iperf3Server {
    /// Starts `iperf3 -s -B <ip> -p <port>`, logging to
    /// `dir/iperf3-<port>.log`, and waits until it accepts connections.
    ///
    /// # Errors
    /// iperf3 is missing (names the Debian package) or did not start.
    pub fn start(dir: &Path, addr: SocketAddr, cpus: Option<&str>) -> Result<Self> {
        let iperf3 = require(Tool::Iperf3)?;
        let mut spec = Spec::new(iperf3)
            .arg("-s")
            .arg("-B")
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string());
        if let Some(c) = cpus {
            spec = spec.cpus(c);
        }
        let log = dir.join(format!("iperf3-{}.log", addr.port()));
        let mut process = Process::spawn("iperf3-server", spec, &log)?;
        wait_tcp(&mut process, addr)?;
        Ok(Iperf3Server { addr, process })
    }

    /// The process (pid, liveness).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Throughput of one iperf3 test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    /// What the sender pushed, Gbit/s.
    pub sent_gbps: f64,
    /// What the receiver got, Gbit/s (the number reported).
    pub received_gbps: f64,
}

/// Runs `iperf3 -c <addr> -t <secs> -P <streams> -J` (under `taskset -c
/// <cpus>` when given) and returns the totals over every stream.
///
/// # Errors
/// iperf3 is missing, timed out, or reported an error.
pub fn client(
    addr: SocketAddr,
    duration: Duration,
    streams: u32,
    cpus: Option<&str>,
) -> Result<Throughput> {
    let iperf3 = require(Tool::Iperf3)?;
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(iperf3);
            cmd
        }
        None => Command::new(iperf3),
    };
    cmd.arg("-c")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-t")
        .arg(duration.as_secs().max(1).to_string())
        .arg("-P")
        .arg(streams.to_string())
        .arg("-J");
    let deadline = duration + Duration::from_secs(30);
    let out = run(&mut cmd, None, deadline)?;
    if out.timed_out() {
        bail!("{cmd:?} did not finish within {deadline:?}");
    }
    let text = out.stdout_text();
    let result = parse_json(&text).with_context(|| format!("{cmd:?}"))?;
    if !out.success() {
        bail!("{cmd:?} exited with {:?}: {}", out.status, out.stderr);
    }
    Ok(result)
}

/// The `end.sum_sent` / `end.sum_received` throughput of an iperf3 `-J`
/// report (TCP), in Gbit/s (10⁹ bit/s).
///
/// # Errors
/// The report carries an `error`, or lacks the sums.
pub fn parse_json(text: &str) -> Result<Throughput> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("iperf3 printed no JSON ({e}): {text}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let bps = |key: &str| {
        v.pointer(&format!("/end/{key}/bits_per_second"))
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| anyhow!("no end.{key}.bits_per_second in the iperf3 report"))
    };
    Ok(Throughput {
        sent_gbps: bps("sum_sent")? / 1e9,
        received_gbps: bps("sum_received")? / 1e9,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_one_stream_report() {
        let t = parse_json(include_str!("testdata/iperf3-1stream.json")).unwrap();
        assert!((t.sent_gbps - 22.511_801_130).abs() < 1e-6, "{t:?}");
        assert!((t.received_gbps - 22.461_622_102).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn parses_the_total_of_a_multi_stream_report() {
        let t = parse_json(include_str!("testdata/iperf3-2streams.json")).unwrap();
        assert!((t.received_gbps - 19.917_120_157).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn an_error_report_is_an_error() {
        let e = parse_json(include_str!("testdata/iperf3-refused.json")).unwrap_err();
        assert!(e.to_string().contains("Connection refused"), "{e}");
        assert!(parse_json("iperf3: error - unable to connect").is_err());
    }
}
