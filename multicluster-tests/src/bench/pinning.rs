//! Which CPU runs what during the benchmark.
//!
//! The first allowed CPU runs the harness itself (its fixed-rate load
//! generator), the external clients (h2load, iperf3, curl) and the backends
//! (nginx, the iperf3 server); the proxies of a topology get the remaining
//! CPUs, one each when there are enough, else shared round-robin. With a
//! single allowed CPU nothing is pinned.
//!
//! How it is applied: the harness pins itself (all its threads) to the client
//! CPU at start with `taskset -a -p`, so every child it spawns without an
//! explicit mask (nginx, iperf3, h2load) inherits it; the proxies are started
//! under `taskset -c <all proxy CPUs>` (`Spec::cpus`, `Topology.cpus`,
//! `ProxyPair::start`'s `cpus`) and then each is narrowed to its own CPU with
//! `taskset -a -p -c <cpu> <pid>` (all its threads).

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::tools::run;

/// The CPUs of the benchmark: one for clients and backends, the rest for
/// proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPlan {
    /// The CPU of the harness, the clients and the backends; `None` when
    /// nothing is pinned (a single allowed CPU).
    pub client: Option<usize>,
    /// The CPUs proxies are spread over (empty when nothing is pinned).
    pub proxy_cpus: Vec<usize>,
}

impl PinPlan {
    /// The plan for the CPUs this process may run on
    /// (`Cpus_allowed_list` of `/proc/self/status`, which is what
    /// `std::thread::available_parallelism` counts; when it cannot be read,
    /// `0..available_parallelism`).
    pub fn detect() -> Self {
        let allowed = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .and_then(|l| parse_cpu_list(l.trim()).ok())
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                let n = std::thread::available_parallelism().map_or(1, usize::from);
                (0..n).collect()
            });
        PinPlan::for_cpus(&allowed)
    }

    /// The plan for the allowed CPUs `cpus` (ascending ids): the first for
    /// clients and backends, the others for proxies; no pinning with fewer
    /// than two.
    pub fn for_cpus(cpus: &[usize]) -> Self {
        match cpus {
            [first, rest @ ..] if !rest.is_empty() => PinPlan {
                client: Some(*first),
                proxy_cpus: rest.to_vec(),
            },
            _ => PinPlan {
                client: None,
                proxy_cpus: Vec::new(),
            },
        }
    }

    /// The CPU of each of `n` proxies: round-robin over the proxy CPUs
    /// (`None` each when nothing is pinned).
    pub fn proxies(&self, n: usize) -> Vec<Option<usize>> {
        (0..n)
            .map(|i| {
                (!self.proxy_cpus.is_empty()).then(|| self.proxy_cpus[i % self.proxy_cpus.len()])
            })
            .collect()
    }

    /// The `taskset -c` list a topology of `n` proxies is started under
    /// (every CPU one of them gets), or `None` when nothing is pinned.
    pub fn start_list(&self, n: usize) -> Option<String> {
        let mut cpus: Vec<usize> = self.proxies(n).into_iter().flatten().collect();
        cpus.sort_unstable();
        cpus.dedup();
        (!cpus.is_empty()).then(|| join(&cpus))
    }

    /// The client CPU as a `taskset -c` list.
    pub fn client_list(&self) -> Option<String> {
        self.client.map(|c| c.to_string())
    }

    /// One line for the report, for a topology of `n` proxies, e.g.
    /// `client+backends cpu0; proxies cpu1 (shared: 2 proxies on 1 core)`.
    pub fn describe(&self, n: usize) -> String {
        let Some(client) = self.client else {
            return "none (1 CPU: everything shares it)".to_owned();
        };
        let mut s = format!("client+backends cpu{client}");
        if n == 0 {
            s.push_str("; no proxy");
            return s;
        }
        let per = self.proxies(n);
        let mut used: Vec<usize> = per.iter().flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        let cpus = used
            .iter()
            .map(|c| format!("cpu{c}"))
            .collect::<Vec<_>>()
            .join(",");
        if used.len() == n {
            s.push_str(&format!("; proxies {cpus} (one core each)"));
        } else {
            let cores = if used.len() == 1 { "core" } else { "cores" };
            s.push_str(&format!(
                "; proxies {cpus} (shared: {n} proxies on {} {cores})",
                used.len()
            ));
        }
        s
    }
}

/// Parses a kernel CPU list such as `0-3,5,7-8` into ascending ids.
///
/// # Errors
/// A malformed element.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>(), b.parse::<usize>()),
            None => (part.parse(), part.parse()),
        };
        let (lo, hi) = (
            lo.with_context(|| format!("bad CPU list element {part:?}"))?,
            hi.with_context(|| format!("bad CPU list element {part:?}"))?,
        );
        if hi < lo {
            bail!("bad CPU range {part:?}");
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Pins every thread of process `pid` to `cpu` (`taskset -a -p -c`).
///
/// # Errors
/// `taskset` is missing or failed.
pub fn pin_pid(pid: u32, cpu: usize) -> Result<()> {
    let out = run(
        Command::new("taskset")
            .arg("-a")
            .arg("-p")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(pid.to_string()),
        None,
        Duration::from_secs(10),
    )
    .context("running taskset (package util-linux)")?;
    if !out.success() {
        return Err(anyhow!(
            "taskset -a -p -c {cpu} {pid} failed: {}",
            out.stderr.trim()
        ));
    }
    Ok(())
}

fn join(cpus: &[usize]) -> String {
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> PinPlan {
        PinPlan::for_cpus(&(0..n).collect::<Vec<_>>())
    }

    #[test]
    fn one_core_pins_nothing() {
        let p = plan(1);
        assert_eq!(p.client, None);
        assert_eq!(p.proxies(2), vec![None, None]);
        assert_eq!(p.start_list(2), None);
        assert!(p.describe(2).starts_with("none"));
    }

    #[test]
    fn two_cores_share_the_second_between_all_proxies() {
        let p = plan(2);
        assert_eq!(p.client, Some(0));
        assert_eq!(p.proxies(2), vec![Some(1), Some(1)]);
        assert_eq!(p.proxies(4), vec![Some(1); 4]);
        assert_eq!(p.start_list(4).as_deref(), Some("1"));
        assert_eq!(
            p.describe(2),
            "client+backends cpu0; proxies cpu1 (shared: 2 proxies on 1 core)"
        );
        assert_eq!(p.describe(0), "client+backends cpu0; no proxy");
    }

    #[test]
    fn four_cores_give_each_of_two_proxies_its_own_and_share_for_four() {
        let p = plan(4);
        assert_eq!(p.proxies(2), vec![Some(1), Some(2)]);
        assert_eq!(
            p.describe(2),
            "client+backends cpu0; proxies cpu1,cpu2 (one core each)"
        );
        assert_eq!(p.proxies(4), vec![Some(1), Some(2), Some(3), Some(1)]);
        assert_eq!(p.start_list(4).as_deref(), Some("1,2,3"));
        assert_eq!(
            p.describe(4),
            "client+backends cpu0; proxies cpu1,cpu2,cpu3 (shared: 4 proxies on 3 cores)"
        );
    }

    #[test]
    fn eight_cores_give_every_proxy_its_own() {
        let p = plan(8);
        assert_eq!(p.proxies(4), vec![Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(p.start_list(4).as_deref(), Some("1,2,3,4"));
        assert_eq!(p.client_list().as_deref(), Some("0"));
    }

    #[test]
    fn an_affinity_mask_not_starting_at_zero_is_respected() {
        let p = PinPlan::for_cpus(&parse_cpu_list("2-3,6").unwrap());
        assert_eq!(p.client, Some(2));
        assert_eq!(p.proxies(2), vec![Some(3), Some(6)]);
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,5,7-8").unwrap(),
            vec![0, 1, 2, 3, 5, 7, 8]
        );
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}
