//! Bounded waiting: readiness probes and polling with a patience taken from
//! the environment (`ISTHMUS_TEST_PATIENCE_MS`, default 20 000 ms).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::process::Process;

/// Default patience, ms.
const DEFAULT_PATIENCE_MS: u64 = 20_000;
/// Pause between polls.
const POLL: Duration = Duration::from_millis(50);

/// How long a readiness wait or an eventual assertion may take: env
/// `ISTHMUS_TEST_PATIENCE_MS` (ms), default 20 000.
pub fn patience() -> Duration {
    let ms = std::env::var("ISTHMUS_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PATIENCE_MS);
    Duration::from_millis(ms)
}

/// Calls `f` every 50 ms until it returns `Ok` or `patience` has passed.
///
/// # Errors
/// The last error of `f`, prefixed with `what` and the time waited.
pub fn eventually<T>(
    what: &str,
    patience: Duration,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= patience => {
                return Err(e.context(format!(
                    "{what}: still failing after {} ms",
                    start.elapsed().as_millis()
                )));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Waits until `GET <path>` on the admin address `addr` answers 200, failing
/// early (with the log tail) if `process` exits.
///
/// # Errors
/// The process exited, or it was not ready within [`patience`].
pub fn wait_http_ready(process: &mut Process, addr: SocketAddr, path: &str) -> Result<()> {
    wait_until(process, &format!("GET http://{addr}{path} -> 200"), || {
        let (status, _) = http_get(addr, path, Duration::from_secs(2))?;
        if status == 200 {
            Ok(())
        } else {
            bail!("status {status}")
        }
    })
}

/// Waits until `addr` accepts TCP connections, failing early if `process`
/// exits.
///
/// # Errors
/// The process exited, or nothing listened within [`patience`].
pub fn wait_tcp(process: &mut Process, addr: SocketAddr) -> Result<()> {
    wait_until(process, &format!("TCP connect {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map(drop)
            .map_err(|e| anyhow!(e))
    })
}

/// Polls `probe` until it succeeds; fails at once if `process` exits.
///
/// # Errors
/// As [`wait_http_ready`].
pub fn wait_until(
    process: &mut Process,
    what: &str,
    probe: impl FnMut() -> Result<()>,
) -> Result<()> {
    wait_until_all(&mut [process], what, probe)
}

/// [`wait_until`] for a group of processes that serve together (a proxy
/// pair): fails at once if any of them exits, and on timeout shows every
/// log tail.
///
/// # Errors
/// A process exited, or `probe` still fails after [`patience`].
pub fn wait_until_all(
    processes: &mut [&mut Process],
    what: &str,
    mut probe: impl FnMut() -> Result<()>,
) -> Result<()> {
    let patience = patience();
    let start = Instant::now();
    loop {
        for process in processes.iter_mut() {
            if let Some(status) = process.exited() {
                bail!(
                    "{} exited ({status}) while waiting for {what}; log tail:\n{}",
                    process.name(),
                    process.log_tail()
                );
            }
        }
        let last = match probe() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if start.elapsed() >= patience {
            let names: Vec<&str> = processes.iter().map(|p| p.name()).collect();
            let mut msg = format!(
                "{} not ready after {} ms ({what}): {last:#}",
                names.join(" + "),
                start.elapsed().as_millis()
            );
            for process in processes.iter() {
                msg.push_str(&format!(
                    "\nlog tail of {}:\n{}",
                    process.name(),
                    process.log_tail()
                ));
            }
            bail!(msg);
        }
        std::thread::sleep(POLL);
    }
}

/// A minimal HTTP/1.1 `GET` (Connection: close) returning the status and the
/// body as text; for admin endpoints.
///
/// # Errors
/// Connect, I/O or timeout, or an unparsable status line.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    http_get_over(
        TcpStream::connect_timeout(&addr, timeout)?,
        addr,
        path,
        timeout,
    )
}

/// [`http_get`] over a connection already open to `addr` (e.g. one opened
/// inside a network namespace).
///
/// # Errors
/// I/O or timeout, or an unparsable status line.
pub fn http_get_over(
    mut s: TcpStream,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).context("reading the response")?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status line in {:?}", text.lines().next()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
