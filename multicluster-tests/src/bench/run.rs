//! Runs the benchmark: starts the backends once, then for each topology
//! starts it, measures, and tears it down (by `Drop`, also on error),
//! printing progress lines on stderr.
//!
//! Measures per topology, in this order: a functional check (`GET /1k`
//! and a gRPC call with its trailer), idle RSS, the fixed-rate run (CPU and
//! peak RSS sampled around it), h2load HTTP/1.1, HTTP/2 and gRPC (peak RSS
//! sampled around them), iperf3 one stream (and 16 streams cross-cluster),
//! then sequential requests on new and on one reused connection. A failing
//! measure is recorded in the results and the others still run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::backend::{Backend, GRPC_PATH, PATH_1K};
use super::connlat::{new_connections, reused_connection};
use super::h2load::{H2load, H2loadResult, Mode};
use super::iperf;
use super::load::{run_fixed_rate, FixedRate};
use super::pinning::{pin_pid, PinPlan};
use super::procstat::{kib_to_mib, rss_kib, CpuMeter, RssSampler};
use super::proxies::{loopback_ips, ProxyKind, ProxyPair};
use super::report::{FixedRateResult, ProxyResult, Results, Settings, TopologyResult};
use super::sysinfo;
use super::topologies::{start_mesh, MeshShape, XcTransport};
use crate::mesh::Mesh;
use crate::net::Block;
use crate::ready::{eventually, patience};

/// The topologies, in run order.
pub const TOPOLOGIES: [&str; 6] = [
    "direct",
    "isthmus",
    "envoy",
    "haproxy",
    "isthmus-xc",
    "baseline-xc",
];

/// Command-line choices.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Short runs (about 1–2 s per measure), a smoke test of the harness.
    pub quick: bool,
    /// Only these topologies (names of [`TOPOLOGIES`]).
    pub only: Option<Vec<String>>,
    /// Measuring time of each h2load, fixed-rate and iperf3 run, s
    /// (overrides the defaults 10, 15 and 5, or `--quick`'s).
    pub secs: Option<f64>,
}

impl Options {
    /// The durations and sizes these options give.
    pub fn settings(&self) -> Settings {
        let (h2, h2_warm, fixed, fixed_warm, iperf, new, reused) = if self.quick {
            (1.0, 1.0, 2.0, 0.5, 1.0, 50, 200)
        } else {
            (10.0, 2.0, 15.0, 2.0, 5.0, 300, 1000)
        };
        let s = |d: f64| self.secs.unwrap_or(d);
        Settings {
            quick: self.quick,
            h2load_connections: 64,
            h2load_streams: 10,
            h2load_secs: s(h2),
            h2load_warm_up_secs: h2_warm,
            fixed_rate_rps: 1000.0,
            fixed_rate_secs: s(fixed),
            fixed_rate_warm_up_secs: fixed_warm,
            fixed_rate_connections: 32,
            iperf3_secs: s(iperf).max(1.0).round(),
            new_conn_requests: new,
            reused_conn_requests: reused,
            isthmus_log: std::env::var("ISTHMUS_TEST_LOG").unwrap_or_else(|_| "info".into()),
        }
    }

    /// The topologies to run, in run order.
    ///
    /// # Errors
    /// An unknown name in `only`.
    pub fn selected(&self) -> Result<Vec<&'static str>> {
        let Some(only) = &self.only else {
            return Ok(TOPOLOGIES.to_vec());
        };
        for o in only {
            if !TOPOLOGIES.contains(&o.as_str()) {
                bail!("unknown topology {o:?}; known: {}", TOPOLOGIES.join(", "));
            }
        }
        Ok(TOPOLOGIES
            .into_iter()
            .filter(|t| only.iter().any(|o| o == t))
            .collect())
    }
}

/// Runs the benchmark and returns every number (targets evaluated).
///
/// # Errors
/// The harness itself failed: a bad option, missing tools or binaries, the
/// backends did not start. Failures of one topology or one measure are in
/// the results instead.
pub fn run(opts: &Options) -> Result<Results> {
    let selected = opts.selected()?;
    let settings = opts.settings();
    let plan = PinPlan::detect();
    // Before pinning ourselves to one core: the machine's core count, and
    // the mesh binaries' build (if missing), which would inherit the pin.
    let mut results = Results {
        machine: sysinfo::machine(),
        versions: sysinfo::versions(),
        pinning: plan.describe(2),
        settings,
        ..Results::default()
    };
    crate::bins::binaries()?;
    if let Some(c) = plan.client {
        pin_pid(std::process::id(), c).context("pinning the harness to the client CPU")?;
    }
    let dir = tempfile::Builder::new()
        .prefix("isthmus-bench-")
        .tempdir()
        .context("creating the bench temp dir")?;
    let backend_ip = Block::allocate().subnet(0)?.next_host()?;
    let client_cpus = plan.client_list();
    let mut backend = Backend::start(dir.path(), backend_ip, client_cpus.as_deref())
        .context("starting the backends")?;
    progress(&format!(
        "backends: nginx http {} h2c {}, iperf3 {}; pinning: {}",
        backend.addrs.http, backend.addrs.grpc, backend.addrs.tcp, results.pinning
    ));
    let n = selected.len();
    for (i, name) in selected.iter().enumerate() {
        let tag = format!("[{}/{n}] {name}", i + 1);
        let mut ctx = Ctx {
            settings: &results.settings,
            plan: &plan,
            backend: &mut backend,
            dir: dir.path(),
            client_cpus: client_cpus.clone(),
            tag: tag.clone(),
        };
        let r = ctx.topology(name);
        progress(&format!("{tag}: done ({} errors)", r.errors.len()));
        results.topologies.push(r);
        backend.assert_running()?;
    }
    derive(&mut results.topologies);
    results.targets = super::report::evaluate(&results.topologies);
    Ok(results)
}

/// The added latencies: over `direct` per percentile, and for the
/// cross-cluster topologies, new/reused connection medians over `isthmus`.
fn derive(ts: &mut [TopologyResult]) {
    let direct = ts
        .iter()
        .find(|t| t.name == "direct")
        .and_then(|t| t.fixed_rate.map(|f| f.latency));
    let same = ts
        .iter()
        .find(|t| t.name == "isthmus")
        .map(|t| (t.new_conn, t.reused_conn));
    for t in ts.iter_mut() {
        if let (Some(d), Some(f)) = (direct, t.fixed_rate) {
            t.added_latency = Some(f.latency.minus(&d));
        }
        if t.name.ends_with("-xc") {
            if let Some((new, reused)) = same {
                t.new_conn_added_p50_ms = t.new_conn.zip(new).map(|(x, s)| x.p50_ms - s.p50_ms);
                t.reused_conn_added_p50_ms =
                    t.reused_conn.zip(reused).map(|(x, s)| x.p50_ms - s.p50_ms);
            }
        }
    }
}

/// Where clients connect for each kind of traffic.
#[derive(Debug, Clone, Copy)]
struct Entries {
    /// HTTP/1.1 `GET /1k`.
    http: SocketAddr,
    /// h2c prior knowledge `GET /1k`.
    h2: SocketAddr,
    /// gRPC unary over h2c.
    grpc: SocketAddr,
    /// Opaque TCP to iperf3.
    tcp: SocketAddr,
    /// Opaque TCP to the nginx HTTP/1.1 port (one mesh connection per
    /// client connection), where there is one.
    tcp_http: Option<SocketAddr>,
}

/// What keeps a topology alive; dropping it tears it down.
enum Guard {
    Direct,
    Mesh(Box<Mesh>),
    Pair(Box<ProxyPair>),
}

struct Running {
    guard: Guard,
    entries: Entries,
    /// `(name, pid, cpu)` of each proxy process.
    proxies: Vec<(String, u32, Option<usize>)>,
}

impl Running {
    fn assert_running(&mut self) -> Result<()> {
        match &mut self.guard {
            Guard::Direct => Ok(()),
            Guard::Mesh(m) => m.assert_all_running(),
            Guard::Pair(p) => p.assert_running(),
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.proxies.iter().map(|p| p.1).collect()
    }
}

struct Ctx<'a> {
    settings: &'a Settings,
    plan: &'a PinPlan,
    backend: &'a mut Backend,
    dir: &'a Path,
    client_cpus: Option<String>,
    tag: String,
}

impl Ctx<'_> {
    /// Starts, measures and tears down one topology.
    fn topology(&mut self, name: &str) -> TopologyResult {
        let mut r = TopologyResult {
            name: name.to_owned(),
            ..TopologyResult::default()
        };
        progress(&format!("{}: starting", self.tag));
        let running = match self.start(name) {
            Ok(running) => running,
            Err(e) => {
                r.errors.push(format!("start: {e:#}"));
                progress(&format!("{}: failed to start: {e:#}", self.tag));
                return r;
            }
        };
        r.pinning = self.plan.describe(running.proxies.len());
        let mut running = running;
        self.measure(&mut running, &mut r);
        if let Err(e) = running.assert_running() {
            r.errors.push(format!("a proxy died: {e:#}"));
        }
        r
    }

    fn start(&mut self, name: &str) -> Result<Running> {
        let b = self.backend.addrs;
        let running = match name {
            "direct" => Running {
                guard: Guard::Direct,
                entries: Entries {
                    http: b.http,
                    h2: b.grpc,
                    grpc: b.grpc,
                    tcp: b.tcp,
                    tcp_http: Some(b.http),
                },
                proxies: Vec::new(),
            },
            "envoy" => self.start_pair(ProxyKind::Envoy)?,
            "haproxy" => self.start_pair(ProxyKind::Haproxy)?,
            "isthmus" => self.start_mesh(MeshShape::SameCluster)?,
            "isthmus-xc" => self.start_mesh(MeshShape::CrossCluster(XcTransport::Quic))?,
            "baseline-xc" => self.start_mesh(MeshShape::CrossCluster(XcTransport::TcpTls))?,
            other => bail!("unknown topology {other}"),
        };
        // A path through proxies may need a moment (gateway links).
        let backend = &*self.backend;
        eventually(&format!("GET {PATH_1K} through {name}"), patience(), || {
            backend.check_http(running.entries.http)
        })?;
        Ok(running)
    }

    fn start_pair(&mut self, kind: ProxyKind) -> Result<Running> {
        let (client_ip, server_ip) = loopback_ips();
        let pair = ProxyPair::start(
            kind,
            &self.dir.join(kind.name()),
            client_ip,
            server_ip,
            &self.backend.addrs,
            self.plan.start_list(2).as_deref(),
        )?;
        let e = *pair.entry();
        let cpus = self.plan.proxies(2);
        let [c, s] = pair.pids();
        let proxies = vec![
            (format!("{}-client", kind.name()), c, cpus[0]),
            (format!("{}-server", kind.name()), s, cpus[1]),
        ];
        pin_each(&proxies)?;
        Ok(Running {
            guard: Guard::Pair(Box::new(pair)),
            entries: Entries {
                http: e.http,
                h2: e.http,
                grpc: e.grpc,
                tcp: e.tcp,
                tcp_http: None,
            },
            proxies,
        })
    }

    fn start_mesh(&mut self, shape: MeshShape) -> Result<Running> {
        let mut started = start_mesh(shape, &self.backend.addrs, self.plan)?;
        let cpus = self.plan.proxies(started.components.len());
        let mut proxies = Vec::new();
        for ((label, cluster, component), cpu) in started.components.iter().zip(cpus) {
            let pid = started
                .mesh
                .process(cluster, component)?
                .pid()
                .ok_or_else(|| anyhow!("{cluster}/{component} has no pid"))?;
            proxies.push((label.clone(), pid, cpu));
        }
        pin_each(&proxies)?;
        let e = started.entries;
        Ok(Running {
            guard: Guard::Mesh(Box::new(started.mesh)),
            entries: Entries {
                http: e.http,
                h2: e.http,
                grpc: e.grpc,
                tcp: e.tcp,
                tcp_http: Some(e.tcp_http),
            },
            proxies,
        })
    }

    fn measure(&mut self, run: &mut Running, r: &mut TopologyResult) {
        let s = self.settings.clone();
        let entries = run.entries;
        let pids = run.pids();
        r.proxies = run
            .proxies
            .iter()
            .map(|(name, pid, cpu)| ProxyResult {
                name: name.clone(),
                pid: *pid,
                cpu: *cpu,
                rss_idle_mib: rss_kib(*pid).ok().map(kib_to_mib),
                ..ProxyResult::default()
            })
            .collect();

        let backend = &*self.backend;
        match backend.check_grpc(entries.grpc) {
            Ok(()) => r.grpc_trailers_ok = Some(true),
            Err(e) => {
                r.grpc_trailers_ok = Some(false);
                r.errors.push(format!("gRPC check: {e:#}"));
            }
        }

        // Fixed rate, with CPU and RSS around the measured part.
        let fixed = |secs: f64| FixedRate {
            target: entries.http,
            path: PATH_1K.into(),
            rate: s.fixed_rate_rps,
            duration: Duration::from_secs_f64(secs),
            connections: s.fixed_rate_connections,
        };
        let tag = self.tag.clone();
        let outcome = step(&tag, "fixed 1,000 rps", r, || {
            run_fixed_rate(&fixed(s.fixed_rate_warm_up_secs)).context("warm-up")?;
            let sampler = RssSampler::start(&pids);
            let cpu = CpuMeter::start(&pids)?;
            let result = run_fixed_rate(&fixed(s.fixed_rate_secs))?;
            let used = cpu.finish()?;
            let peaks = sampler.finish();
            let p = result.percentiles();
            let line = format!(
                "p50 {:.3} p99 {:.3} p99.9 {:.3} ms, {:.0} rps, {} errors",
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                result.achieved_rps(),
                result.errors
            );
            Ok(((result, used, peaks), line))
        });
        if let Some((result, used, peaks)) = outcome {
            let ok_k = result.ok() as f64 / 1000.0;
            for ((p, cpu_s), peak) in r.proxies.iter_mut().zip(&used).zip(&peaks) {
                p.fixed_rate_cpu_s = Some(*cpu_s);
                p.per_1k_req_cpu_s = (ok_k > 0.0).then(|| cpu_s / ok_k);
                p.vcpu = (result.wall_s > 0.0).then(|| cpu_s / result.wall_s);
                p.rss_fixed_rate_mib = Some(kib_to_mib(*peak));
            }
            if !used.is_empty() {
                let total: f64 = used.iter().sum();
                r.cpu_per_1k_req_cpu_s = (ok_k > 0.0).then(|| total / ok_k);
                r.vcpu_at_fixed_rate = (result.wall_s > 0.0).then(|| total / result.wall_s);
            }
            r.fixed_rate = Some(FixedRateResult {
                target_rps: s.fixed_rate_rps,
                achieved_rps: result.achieved_rps(),
                scheduled: result.scheduled,
                errors: result.errors,
                latency: result.percentiles(),
            });
        }

        // Max rate, with peak RSS around the three runs.
        let sampler = RssSampler::start(&pids);
        let h2 = |addr, path: &str, mode| H2load {
            addr,
            path: path.to_owned(),
            mode,
            connections: s.h2load_connections,
            duration: Duration::from_secs_f64(s.h2load_secs),
            warm_up: Duration::from_secs_f64(s.h2load_warm_up_secs),
            cpus: self.client_cpus.clone(),
        };
        r.h1 = step(&tag, "max rps h1", r, || {
            h2load_step(&h2(entries.http, PATH_1K, Mode::H1))
        });
        let streams = s.h2load_streams;
        r.h2 = step(&tag, "max rps h2", r, || {
            h2load_step(&h2(entries.h2, PATH_1K, Mode::H2 { streams }))
        });
        let body = backend.grpc_request.clone();
        r.grpc = step(&tag, "max rps gRPC", r, || {
            h2load_step(&h2(entries.grpc, GRPC_PATH, Mode::Grpc { streams, body }))
        });
        for (p, peak) in r.proxies.iter_mut().zip(sampler.finish()) {
            p.rss_max_rate_mib = Some(kib_to_mib(peak));
        }

        // Bulk TCP.
        let iperf_time = Duration::from_secs_f64(s.iperf3_secs);
        let client_cpus = self.client_cpus.clone();
        r.bulk_1_stream_gbps = step(&tag, "iperf3 1 stream", r, || {
            let t = iperf::client(entries.tcp, iperf_time, 1, client_cpus.as_deref())?;
            Ok((t.received_gbps, format!("{:.2} Gbit/s", t.received_gbps)))
        });
        if r.name.ends_with("-xc") {
            r.bulk_16_streams_gbps = step(&tag, "iperf3 16 streams", r, || {
                let t = iperf::client(entries.tcp, iperf_time, 16, client_cpus.as_deref())?;
                Ok((t.received_gbps, format!("{:.2} Gbit/s", t.received_gbps)))
            });
        }

        // New vs reused connections.
        if let Some(tcp_http) = entries.tcp_http {
            r.new_conn = step(&tag, "new connections", r, || {
                let l = new_connections(tcp_http, PATH_1K, s.new_conn_requests)?;
                Ok((l, format!("p50 {:.3} p99 {:.3} ms", l.p50_ms, l.p99_ms)))
            });
        }
        r.reused_conn = step(&tag, "reused connection", r, || {
            let l = reused_connection(entries.http, PATH_1K, s.reused_conn_requests)?;
            Ok((l, format!("p50 {:.3} p99 {:.3} ms", l.p50_ms, l.p99_ms)))
        });
    }
}

/// Runs one measure, printing `"<tag>: <what> ... <line>"` on success and
/// recording the error in `r` on failure.
fn step<T>(
    tag: &str,
    what: &str,
    r: &mut TopologyResult,
    f: impl FnOnce() -> Result<(T, String)>,
) -> Option<T> {
    match f() {
        Ok((v, line)) => {
            progress(&format!("{tag}: {what} ... {line}"));
            Some(v)
        }
        Err(e) => {
            progress(&format!("{tag}: {what} ... FAILED: {e:#}"));
            r.errors.push(format!("{what}: {e:#}"));
            None
        }
    }
}

fn h2load_step(h: &H2load) -> Result<(H2loadResult, String)> {
    let res = h.run()?;
    if res.succeeded == 0 {
        bail!("no request succeeded ({} failed)", res.failed);
    }
    let line = format!(
        "{} rps (mean {:.2} ms, {} failed)",
        super::report::thousands(res.rps),
        res.mean_ms,
        res.failed
    );
    Ok((res, line))
}

fn pin_each(proxies: &[(String, u32, Option<usize>)]) -> Result<()> {
    for (name, pid, cpu) in proxies {
        if let Some(cpu) = cpu {
            pin_pid(*pid, *cpu).with_context(|| format!("pinning {name}"))?;
        }
    }
    Ok(())
}

/// Where the JSON goes by default: `<target dir>/isthmus-bench/
/// results-<UTC timestamp>.json`, the target dir being the one the running
/// executable was built into.
pub fn default_out(stamp: &str) -> PathBuf {
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(Path::parent).map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("target"));
    target
        .join("isthmus-bench")
        .join(format!("results-{stamp}.json"))
}

#[allow(clippy::print_stderr)] // progress lines are the harness's stderr
fn progress(line: &str) {
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_in_run_order_and_rejects_unknown_names() {
        let o = Options {
            only: Some(vec!["envoy".into(), "direct".into()]),
            ..Options::default()
        };
        assert_eq!(o.selected().unwrap(), vec!["direct", "envoy"]);
        let bad = Options {
            only: Some(vec!["linkerd".into()]),
            ..Options::default()
        };
        assert!(bad.selected().is_err());
        assert_eq!(Options::default().selected().unwrap().len(), 6);
    }

    #[test]
    fn secs_overrides_every_measuring_time() {
        let s = Options {
            quick: true,
            secs: Some(3.0),
            ..Options::default()
        }
        .settings();
        assert_eq!(
            (s.h2load_secs, s.fixed_rate_secs, s.iperf3_secs),
            (3.0, 3.0, 3.0)
        );
        let d = Options::default().settings();
        assert_eq!(
            (d.h2load_secs, d.fixed_rate_secs, d.iperf3_secs),
            (10.0, 15.0, 5.0)
        );
    }
}
