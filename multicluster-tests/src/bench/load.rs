//! The fixed-rate HTTP/1.1 load generator, correcting for coordinated
//! omission the way wrk2 does: request `i` is *due* at `t0 + i / rate`
//! whatever happened before it, and its latency is measured from that due
//! time to the end of its response body. A stalled response therefore shows
//! up in the latency of every request that had to wait behind it, instead of
//! silently lowering the request rate.
//!
//! Shape: a plain thread (precise `std::thread::sleep`, not tokio's 1 ms
//! timer wheel, which would add up to 1 ms of send lateness to every
//! measured latency) releases due times on schedule into a queue; a
//! `current_thread` tokio runtime on the calling thread runs a pool of
//! keep-alive connections, and whichever connection is idle takes the next
//! due request. A request is late only when every connection is busy.
//! The caller pins the process (see `pinning`); this module pins nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};

/// Deadline of one request (connect included); past it the request counts
/// as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What to send, how fast and for how long.
#[derive(Debug, Clone)]
pub struct FixedRate {
    /// Where to connect (plain TCP, HTTP/1.1).
    pub target: SocketAddr,
    /// Request path, e.g. `/1k`.
    pub path: String,
    /// Requests per second.
    pub rate: f64,
    /// How long to send for; `rate × duration` requests are scheduled.
    pub duration: Duration,
    /// Keep-alive connections in the pool.
    pub connections: usize,
}

/// The outcome of a fixed-rate run.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Latency of each successful request (due time → end of body), µs,
    /// sorted ascending.
    pub latencies_us: Vec<u64>,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Requests that failed (connect or I/O error, non-2xx, timeout).
    pub errors: u64,
    /// From the first due time until the last response, s.
    pub wall_s: f64,
}

impl LoadResult {
    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Achieved rate of successful requests, requests/s.
    pub fn achieved_rps(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.ok() as f64 / self.wall_s
        } else {
            0.0
        }
    }

    /// The percentiles of [`LoadResult::latencies_us`].
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of_sorted(&self.latencies_us)
    }
}

/// Latency percentiles, ms (0 when there was no sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `sorted` (µs, ascending), in ms.
    pub fn of_sorted(sorted: &[u64]) -> Self {
        let ms = |q: f64| percentile(sorted, q).map_or(0.0, |us| us as f64 / 1000.0);
        Percentiles {
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: ms(1.0),
        }
    }

    /// `self − base`, percentile by percentile (added latency over a
    /// baseline), ms.
    pub fn minus(&self, base: &Percentiles) -> Percentiles {
        Percentiles {
            p50_ms: self.p50_ms - base.p50_ms,
            p90_ms: self.p90_ms - base.p90_ms,
            p99_ms: self.p99_ms - base.p99_ms,
            p999_ms: self.p999_ms - base.p999_ms,
            max_ms: self.max_ms - base.max_ms,
        }
    }
}

/// The nearest-rank `q`-quantile (`0 < q ≤ 1`) of ascending `sorted`: the
/// smallest value with at least `q × n` values at or below it.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The open-loop schedule: request `i` is due `i / rate` seconds after the
/// start.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Requests per second.
    pub rate: f64,
    /// Number of requests.
    pub count: u64,
}

impl Schedule {
    /// The schedule of [`FixedRate`]: `rate × duration` requests.
    pub fn of(cfg: &FixedRate) -> Self {
        Schedule {
            rate: cfg.rate,
            count: (cfg.rate * cfg.duration.as_secs_f64()).round() as u64,
        }
    }

    /// When request `i` is due, relative to the start.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * 1e9 / self.rate).round() as u64)
    }
}

/// Latency of one request in µs: completion − due time (zero if it
/// completed "before" it was due, which cannot happen in a live run).
pub fn latency_us(due: Instant, done: Instant) -> u64 {
    done.saturating_duration_since(due).as_micros() as u64
}

/// Runs the fixed-rate load on a fresh `current_thread` runtime on this
/// thread and returns every latency.
///
/// # Errors
/// The runtime cannot be built, or no connection could be made at all.
pub fn run_fixed_rate(cfg: &FixedRate) -> Result<LoadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the load generator runtime")?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: &FixedRate) -> Result<LoadResult> {
    let schedule = Schedule::of(cfg);
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    // Open the pool before the clock starts, so connects are not measured.
    let mut conns = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections.max(1) {
        conns.push(Some(
            connect(cfg.target)
                .await
                .with_context(|| format!("connecting to {}", cfg.target))?,
        ));
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let dispatcher = std::thread::spawn(move || {
        for i in 0..schedule.count {
            let due = t0 + schedule.due(i);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                return;
            }
        }
    });
    let mut tasks = Vec::new();
    for conn in conns {
        let rx = rx.clone();
        let target = cfg.target;
        let path = cfg.path.clone();
        tasks.push(tokio::spawn(worker(conn, rx, target, path)));
    }
    let mut latencies = Vec::with_capacity(schedule.count as usize);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.context("a load worker panicked")?;
        latencies.extend(l);
        errors += e;
    }
    let end = Instant::now();
    let _ = dispatcher.join();
    latencies.sort_unstable();
    Ok(LoadResult {
        latencies_us: latencies,
        scheduled: schedule.count,
        errors,
        wall_s: end.saturating_duration_since(t0).as_secs_f64(),
    })
}

/// One connection of the pool: takes due times off the queue until it is
/// closed, sends one request for each, and records latency or error.
async fn worker(
    mut conn: Option<SendRequest<Empty<Bytes>>>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
    target: SocketAddr,
    path: String,
) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    loop {
        let due = {
            let mut q = rx.lock().await;
            q.recv().await
        };
        let Some(due) = due else {
            return (latencies, errors);
        };
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                conn = connect(target).await.ok();
            }
            let c = conn.as_mut()?;
            one_request(c, target, &path).await
        })
        .await;
        match outcome {
            Ok(Some(())) => latencies.push(latency_us(due, Instant::now())),
            _ => {
                errors += 1;
                conn = None;
            }
        }
    }
}

async fn connect(target: SocketAddr) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (send, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = driver.await;
    });
    Ok(send)
}

/// One GET; `Some(())` when it got a 2xx and its whole body.
async fn one_request(
    conn: &mut SendRequest<Empty<Bytes>>,
    target: SocketAddr,
    path: &str,
) -> Option<()> {
    conn.ready().await.ok()?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, target.to_string())
        .body(Empty::new())
        .ok()?;
    let resp = conn.send_request(req).await.ok()?;
    let ok = resp.status().is_success();
    resp.into_body().collect().await.ok()?;
    ok.then_some(())
}

#[cfg(test)]
mod tests;
