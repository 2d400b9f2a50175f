//! The benchmark's results (serialized as JSON, units in field names), the
//! evaluation of issue 4's targets, and the Markdown report.
//!
//! Targets are evaluated and printed, never asserted: a target with missing
//! numbers is "no data", not a failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::connlat::SeqLatency;
use super::h2load::H2loadResult;
use super::load::Percentiles;

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Results {
    /// The machine it ran on.
    pub machine: Machine,
    /// Program versions by name, e.g. `envoy` → `envoy 1.40.0`.
    pub versions: BTreeMap<String, String>,
    /// Durations and sizes used.
    pub settings: Settings,
    /// The pinning plan in words (per topology in [`TopologyResult`]).
    pub pinning: String,
    /// One entry per topology, in run order.
    pub topologies: Vec<TopologyResult>,
    /// Issue 4's targets, evaluated.
    pub targets: Vec<TargetCheck>,
}

/// The machine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// Start of the run, UTC, `YYYY-MM-DD HH:MM:SS`.
    pub date_utc: String,
}

/// Durations and sizes of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    /// `--quick` was given.
    pub quick: bool,
    /// h2load connections.
    pub h2load_connections: u32,
    /// h2load concurrent streams per HTTP/2 connection.
    pub h2load_streams: u32,
    /// h2load measuring time, s.
    pub h2load_secs: f64,
    /// h2load warm-up, s.
    pub h2load_warm_up_secs: f64,
    /// Fixed rate, requests/s.
    pub fixed_rate_rps: f64,
    /// Fixed-rate measuring time, s.
    pub fixed_rate_secs: f64,
    /// Fixed-rate warm-up (same rate, not recorded), s.
    pub fixed_rate_warm_up_secs: f64,
    /// Fixed-rate keep-alive connections.
    pub fixed_rate_connections: usize,
    /// iperf3 time, s.
    pub iperf3_secs: f64,
    /// Requests on new connections.
    pub new_conn_requests: usize,
    /// Requests on one reused connection.
    pub reused_conn_requests: usize,
    /// `RUST_LOG` of the Isthmus gateways and sidecars
    /// (`ISTHMUS_TEST_LOG`, default `info`).
    pub isthmus_log: String,
}

/// One topology's numbers; `None` where a measure does not apply, failed,
/// or the topology was skipped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopologyResult {
    /// `direct`, `isthmus`, `envoy`, `haproxy`, `isthmus-xc`,
    /// `baseline-xc`.
    pub name: String,
    /// The pinning used, in words.
    pub pinning: String,
    /// Errors: of the start (then nothing else ran) or of individual
    /// measures (the others still ran).
    pub errors: Vec<String>,
    /// Per proxy process.
    pub proxies: Vec<ProxyResult>,
    /// Max rate, HTTP/1.1.
    pub h1: Option<H2loadResult>,
    /// Max rate, HTTP/2 (h2c prior knowledge).
    pub h2: Option<H2loadResult>,
    /// Max rate, gRPC unary.
    pub grpc: Option<H2loadResult>,
    /// `grpc-status: 0` arrived as a trailer through this topology.
    pub grpc_trailers_ok: Option<bool>,
    /// The fixed-rate run.
    pub fixed_rate: Option<FixedRateResult>,
    /// Fixed-rate latency minus direct's, per percentile, ms.
    pub added_latency: Option<Percentiles>,
    /// CPU seconds per 1,000 requests of the fixed-rate run, all proxies.
    pub cpu_per_1k_req_cpu_s: Option<f64>,
    /// CPU seconds per wall second during the fixed-rate run, all proxies.
    pub vcpu_at_fixed_rate: Option<f64>,
    /// iperf3, one stream, Gbit/s.
    pub bulk_1_stream_gbps: Option<f64>,
    /// iperf3, 16 streams (total), Gbit/s.
    pub bulk_16_streams_gbps: Option<f64>,
    /// Sequential requests each on a new connection.
    pub new_conn: Option<SeqLatency>,
    /// Sequential requests on one keep-alive connection.
    pub reused_conn: Option<SeqLatency>,
    /// Cross-cluster only: new-connection median minus the same-cluster
    /// (`isthmus`) one, ms.
    pub new_conn_added_p50_ms: Option<f64>,
    /// Cross-cluster only: reused-connection median minus the same-cluster
    /// one, ms.
    pub reused_conn_added_p50_ms: Option<f64>,
}

/// The fixed-rate run's outcome.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FixedRateResult {
    /// Asked rate, requests/s.
    pub target_rps: f64,
    /// Successful requests per second achieved.
    pub achieved_rps: f64,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency percentiles (CO-corrected), ms.
    pub latency: Percentiles,
}

/// One proxy process's resources.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyResult {
    /// E.g. `sidecar-client`, `gateway-a`, `envoy-client`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// The CPU it was pinned to.
    pub cpu: Option<usize>,
    /// CPU seconds used during the fixed-rate run.
    pub fixed_rate_cpu_s: Option<f64>,
    /// CPU seconds per 1,000 successful requests of the fixed-rate run.
    pub per_1k_req_cpu_s: Option<f64>,
    /// CPU seconds per wall second during the fixed-rate run.
    pub vcpu: Option<f64>,
    /// RSS after start, before any load, MiB.
    pub rss_idle_mib: Option<f64>,
    /// Peak RSS during the fixed-rate run, MiB.
    pub rss_fixed_rate_mib: Option<f64>,
    /// Peak RSS during the max-rate runs, MiB.
    pub rss_max_rate_mib: Option<f64>,
}

/// One target of issue 4, evaluated.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TargetCheck {
    /// The target in words.
    pub target: String,
    /// Isthmus's number (unit in `unit`).
    pub isthmus: Option<f64>,
    /// The number compared with: the other system's, or the fixed limit.
    pub reference: Option<f64>,
    /// What `reference` is (`envoy`, `haproxy`, `limit`, `baseline-xc`).
    pub reference_name: String,
    /// Unit of both numbers.
    pub unit: String,
    /// `isthmus / reference`.
    pub ratio: Option<f64>,
    /// Met, not met, or `None` (no data).
    pub met: Option<bool>,
}

/// Target limits of issue 4.
const MAX_SIDECAR_RSS_MIB: f64 = 10.0;
const MAX_XC_REUSED_ADDED_MS: f64 = 0.13;
const MAX_XC_NEW_ADDED_MS: f64 = 1.0;

/// Evaluates issue 4's targets from the topologies' numbers.
pub fn evaluate(topologies: &[TopologyResult]) -> Vec<TargetCheck> {
    let t = |name: &str| topologies.iter().find(|t| t.name == name);
    let isthmus = t("isthmus");
    let envoy = t("envoy");
    let haproxy = t("haproxy");
    let xc = t("isthmus-xc");
    let base_xc = t("baseline-xc");
    let h1 = |t: Option<&TopologyResult>| t.and_then(|t| t.h1.map(|h| h.rps));
    let added_p99 = |t: Option<&TopologyResult>| t.and_then(|t| t.added_latency.map(|a| a.p99_ms));
    let cpu = |t: Option<&TopologyResult>| t.and_then(|t| t.cpu_per_1k_req_cpu_s);
    let bulk1 = |t: Option<&TopologyResult>| t.and_then(|t| t.bulk_1_stream_gbps);
    let bulk16 = |t: Option<&TopologyResult>| t.and_then(|t| t.bulk_16_streams_gbps);
    let max_sidecar_rss = isthmus.and_then(|t| {
        t.proxies
            .iter()
            .filter_map(|p| p.rss_fixed_rate_mib)
            .reduce(f64::max)
    });
    vec![
        at_least(
            "Isthmus max HTTP/1.1 rps ≥ 2× Envoy's",
            h1(isthmus),
            h1(envoy),
            "envoy",
            "rps",
            2.0,
        ),
        at_least(
            "Isthmus max HTTP/1.1 rps ≥ HAProxy's",
            h1(isthmus),
            h1(haproxy),
            "haproxy",
            "rps",
            1.0,
        ),
        at_most(
            "Isthmus added p99 at 1,000 rps ≤ ½ Envoy's",
            added_p99(isthmus),
            added_p99(envoy),
            "envoy",
            "ms",
            0.5,
        ),
        at_most(
            "Isthmus CPU per 1,000 requests ≤ ½ Envoy's (both proxies)",
            cpu(isthmus),
            cpu(envoy),
            "envoy",
            "cpu_s",
            0.5,
        ),
        at_most(
            "RSS per Isthmus sidecar ≤ 10 MiB at 1,000 rps (the larger one)",
            max_sidecar_rss,
            Some(MAX_SIDECAR_RSS_MIB),
            "limit",
            "MiB",
            1.0,
        ),
        at_least(
            "One-stream bulk through the two sidecars ≥ 1.2× Envoy's",
            bulk1(isthmus),
            bulk1(envoy),
            "envoy",
            "Gbit/s",
            1.2,
        ),
        at_most(
            "Cross-cluster reused connection adds ≤ 0.13 ms over same-cluster (median)",
            xc.and_then(|t| t.reused_conn_added_p50_ms),
            Some(MAX_XC_REUSED_ADDED_MS),
            "limit",
            "ms",
            1.0,
        ),
        at_most(
            "Cross-cluster new connection adds ≤ 1 ms over same-cluster (median)",
            xc.and_then(|t| t.new_conn_added_p50_ms),
            Some(MAX_XC_NEW_ADDED_MS),
            "limit",
            "ms",
            1.0,
        ),
        at_least(
            "Cross-cluster 16-stream bulk over QUIC ≥ 0.9× the TCP+TLS baseline",
            bulk16(xc),
            bulk16(base_xc),
            "baseline-xc",
            "Gbit/s",
            0.9,
        ),
    ]
}

/// Met when `value ≥ factor × reference`.
fn at_least(
    target: &str,
    value: Option<f64>,
    reference: Option<f64>,
    reference_name: &str,
    unit: &str,
    factor: f64,
) -> TargetCheck {
    check(target, value, reference, reference_name, unit, |v, r| {
        v >= factor * r
    })
}

/// Met when `value ≤ factor × reference`.
fn at_most(
    target: &str,
    value: Option<f64>,
    reference: Option<f64>,
    reference_name: &str,
    unit: &str,
    factor: f64,
) -> TargetCheck {
    check(target, value, reference, reference_name, unit, |v, r| {
        v <= factor * r
    })
}

fn check(
    target: &str,
    value: Option<f64>,
    reference: Option<f64>,
    reference_name: &str,
    unit: &str,
    ok: impl Fn(f64, f64) -> bool,
) -> TargetCheck {
    let both = value.zip(reference);
    TargetCheck {
        target: target.to_owned(),
        isthmus: value,
        reference,
        reference_name: reference_name.to_owned(),
        unit: unit.to_owned(),
        ratio: both.and_then(|(v, r)| (r != 0.0).then(|| v / r)),
        met: both.map(|(v, r)| ok(v, r)),
    }
}

/// The whole report as Markdown.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "## Isthmus benchmark, {} UTC\n", m.date_utc);
    let _ = writeln!(
        s,
        "- machine: {} ({} cores usable), kernel {}",
        m.cpu_model, m.cores, m.kernel
    );
    let versions: Vec<String> = r
        .versions
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(s, "- versions: {}", versions.join("; "));
    let _ = writeln!(s, "- pinning: {}", r.pinning);
    let st = &r.settings;
    let _ = writeln!(
        s,
        "- settings{}: h2load -c {} (-m {} for HTTP/2 and gRPC) {} s after {} s warm-up; \
         fixed rate {} rps over {} connections for {} s after {} s warm-up; iperf3 {} s; \
         {} requests on new connections, {} on a reused one; Isthmus log level {}\n",
        if st.quick { " (--quick)" } else { "" },
        st.h2load_connections,
        st.h2load_streams,
        st.h2load_secs,
        st.h2load_warm_up_secs,
        st.fixed_rate_rps,
        st.fixed_rate_connections,
        st.fixed_rate_secs,
        st.fixed_rate_warm_up_secs,
        st.iperf3_secs,
        st.new_conn_requests,
        st.reused_conn_requests,
        st.isthmus_log,
    );
    let ran: Vec<&TopologyResult> = r.topologies.iter().collect();
    s.push_str("### Max request rate (h2load, 64 connections)\n\n");
    s.push_str(&throughput_table(&ran));
    s.push_str("\n### Latency at a fixed 1,000 rps (coordinated omission corrected), ms\n\n");
    s.push_str(&latency_table(&ran));
    s.push_str("\n### CPU and memory per proxy (during the 1,000 rps run)\n\n");
    s.push_str(&resource_table(&ran));
    s.push_str("\n### Bulk TCP (iperf3) and new vs reused connections\n\n");
    s.push_str(&bulk_table(&ran));
    s.push_str("\n### Targets (issue 4)\n\n");
    s.push_str(&targets_table(&r.targets));
    let mut notes = String::new();
    for t in &r.topologies {
        let _ = writeln!(notes, "- {} pinning: {}", t.name, t.pinning);
        for e in &t.errors {
            let _ = writeln!(notes, "- {}: error: {e}", t.name);
        }
        if t.grpc_trailers_ok == Some(false) {
            let _ = writeln!(
                notes,
                "- {}: gRPC trailer `grpc-status: 0` did not arrive",
                t.name
            );
        }
    }
    if !notes.is_empty() {
        s.push_str("\n### Notes\n\n");
        s.push_str(&notes);
    }
    s
}

fn throughput_table(ts: &[&TopologyResult]) -> String {
    let mut t = Table::new(&[
        "topology",
        "HTTP/1.1 rps",
        "HTTP/2 rps",
        "gRPC rps",
        "h1 mean ms",
        "h2 mean ms",
        "gRPC mean ms",
        "failed h1/h2/gRPC",
    ]);
    for r in ts {
        let rps = |h: &Option<H2loadResult>| h.map_or(dash(), |h| thousands(h.rps));
        let mean = |h: &Option<H2loadResult>| h.map_or(dash(), |h| format!("{:.2}", h.mean_ms));
        let failed = |h: &Option<H2loadResult>| h.map_or(dash(), |h| h.failed.to_string());
        t.row(vec![
            r.name.clone(),
            rps(&r.h1),
            rps(&r.h2),
            rps(&r.grpc),
            mean(&r.h1),
            mean(&r.h2),
            mean(&r.grpc),
            format!("{}/{}/{}", failed(&r.h1), failed(&r.h2), failed(&r.grpc)),
        ]);
    }
    t.render()
}

fn latency_table(ts: &[&TopologyResult]) -> String {
    let mut t = Table::new(&[
        "topology", "p50", "p90", "p99", "p99.9", "max", "+p50", "+p90", "+p99", "+p99.9", "rps",
        "errors",
    ]);
    for r in ts {
        let mut row = vec![r.name.clone()];
        match &r.fixed_rate {
            Some(f) => {
                let l = f.latency;
                row.extend([l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms].map(ms));
            }
            None => row.extend((0..5).map(|_| dash())),
        }
        match &r.added_latency {
            Some(a) => row.extend([a.p50_ms, a.p90_ms, a.p99_ms, a.p999_ms].map(ms)),
            None => row.extend((0..4).map(|_| dash())),
        }
        row.push(r.fixed_rate.map_or(dash(), |f| thousands(f.achieved_rps)));
        row.push(r.fixed_rate.map_or(dash(), |f| f.errors.to_string()));
        t.row(row);
    }
    t.render() + "\n`+pNN` = added over `direct` at the same percentile.\n"
}

fn resource_table(ts: &[&TopologyResult]) -> String {
    let mut t = Table::new(&[
        "topology",
        "proxy",
        "cpu",
        "CPU s / 1k req",
        "vCPU",
        "RSS idle MiB",
        "RSS 1k rps MiB",
        "RSS max-rate MiB",
    ])
    .left_columns(2);
    let opt = |v: Option<f64>, prec: usize| v.map_or(dash(), |v| format!("{v:.prec$}"));
    for r in ts.iter().filter(|r| !r.proxies.is_empty()) {
        for p in &r.proxies {
            t.row(vec![
                r.name.clone(),
                p.name.clone(),
                p.cpu.map_or(dash(), |c| c.to_string()),
                opt(p.per_1k_req_cpu_s, 4),
                opt(p.vcpu, 3),
                opt(p.rss_idle_mib, 1),
                opt(p.rss_fixed_rate_mib, 1),
                opt(p.rss_max_rate_mib, 1),
            ]);
        }
        t.row(vec![
            r.name.clone(),
            "**all**".into(),
            String::new(),
            opt(r.cpu_per_1k_req_cpu_s, 4),
            opt(r.vcpu_at_fixed_rate, 3),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    t.render()
}

fn bulk_table(ts: &[&TopologyResult]) -> String {
    let mut t = Table::new(&[
        "topology",
        "1 stream Gbit/s",
        "16 streams Gbit/s",
        "new conn p50 ms",
        "new p99",
        "reused p50 ms",
        "reused p99",
        "new +p50 vs same-cluster",
        "reused +p50 vs same-cluster",
    ]);
    let gb = |v: Option<f64>| v.map_or(dash(), |v| format!("{v:.2}"));
    for r in ts {
        let seq =
            |s: &Option<SeqLatency>| s.map_or([dash(), dash()], |s| [ms(s.p50_ms), ms(s.p99_ms)]);
        let [np50, np99] = seq(&r.new_conn);
        let [rp50, rp99] = seq(&r.reused_conn);
        t.row(vec![
            r.name.clone(),
            gb(r.bulk_1_stream_gbps),
            gb(r.bulk_16_streams_gbps),
            np50,
            np99,
            rp50,
            rp99,
            r.new_conn_added_p50_ms.map_or(dash(), ms),
            r.reused_conn_added_p50_ms.map_or(dash(), ms),
        ]);
    }
    t.render()
}

fn targets_table(checks: &[TargetCheck]) -> String {
    let mut t = Table::new(&["target", "", "isthmus", "reference", "ratio"]).left_columns(2);
    for c in checks {
        let num = |v: Option<f64>| {
            v.map_or(dash(), |v| match c.unit.as_str() {
                "rps" => format!("{} rps", thousands(v)),
                "ms" => format!("{v:.3} ms"),
                "cpu_s" => format!("{v:.4} CPU s"),
                u => format!("{v:.2} {u}"),
            })
        };
        t.row(vec![
            c.target.clone(),
            match c.met {
                Some(true) => "✔ met".into(),
                Some(false) => "✘ not met".into(),
                None => "? no data".into(),
            },
            num(c.isthmus),
            format!("{} ({})", num(c.reference), c.reference_name),
            c.ratio.map_or(dash(), |r| format!("{r:.2}×")),
        ]);
    }
    t.render()
}

fn dash() -> String {
    "–".into()
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

/// `21402.3` → `21,402`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// A Markdown table padded to align in a terminal: the first `left`
/// columns (text) left-aligned, the others (numbers) right-aligned.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    left: usize,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            left: 1,
        }
    }

    fn left_columns(mut self, n: usize) -> Self {
        self.left = n;
        self
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let n = self.header.len();
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let line = |cells: &[String]| {
            let mut l = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let pad = w - c.chars().count();
                if i < self.left {
                    let _ = write!(l, " {c}{} |", " ".repeat(pad));
                } else {
                    let _ = write!(l, " {}{c} |", " ".repeat(pad));
                }
            }
            l.push('\n');
            l
        };
        let mut out = line(&self.header);
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            if i < self.left {
                let _ = write!(out, "{}|", "-".repeat(w + 2));
            } else {
                let _ = write!(out, "{}:|", "-".repeat(w + 1));
            }
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

#[cfg(test)]
mod tests;
