//! `isthmus-bench`: the benchmark of issue 4, Isthmus against Envoy and
//! HAProxy (and a direct path and a TCP+TLS cross-cluster baseline), all on
//! loopback. Prints a Markdown report on stdout, progress on stderr, and
//! writes every number as JSON. See `docs/performance.md`.
//!
//! ```text
//! isthmus-bench [--quick] [--only direct,isthmus,...] [--secs N] [--out results.json]
//! ```

// The report on stdout and progress on stderr are this program's output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use multicluster_tests::bench::report::markdown;
use multicluster_tests::bench::run::{default_out, run, Options, TOPOLOGIES};
use multicluster_tests::bench::sysinfo::stamp_utc;

const USAGE: &str =
    "usage: isthmus-bench [--quick] [--only TOPOLOGY,...] [--secs N] [--out PATH.json]

  --quick        short runs (1-2 s per measure, about 2 minutes in all): a smoke test
  --only LIST    run only these topologies (comma-separated) of:
                 direct, isthmus, envoy, haproxy, isthmus-xc, baseline-xc
  --secs N       measuring time of every h2load, fixed-rate and iperf3 run, s
                 (defaults 10, 15 and 5; --quick: 1, 2 and 1)
  --out PATH     JSON results (default <target>/isthmus-bench/results-<UTC>.json)

Targets are printed as met or not, never asserted: the exit code is 0 unless
the harness itself failed.";

fn parse_args(args: impl Iterator<Item = String>) -> Result<(Options, Option<PathBuf>)> {
    let mut opts = Options::default();
    let mut out = None;
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--only" => {
                let list = value("--only")?;
                opts.only = Some(list.split(',').map(|s| s.trim().to_owned()).collect());
            }
            "--secs" => {
                let v = value("--secs")?;
                let secs: f64 = v.parse().with_context(|| format!("--secs {v:?}"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    bail!("--secs must be a positive number of seconds");
                }
                opts.secs = Some(secs);
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    opts.selected()
        .with_context(|| format!("topologies: {}", TOPOLOGIES.join(", ")))?;
    Ok((opts, out))
}

fn main() -> Result<()> {
    let (opts, out) = parse_args(std::env::args().skip(1))?;
    let stamp = stamp_utc();
    let results = run(&opts)?;
    println!("{}", markdown(&results));
    let path = out.unwrap_or_else(|| default_out(&stamp));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("results: {}", path.display());
    let errors: usize = results.topologies.iter().map(|t| t.errors.len()).sum();
    if errors > 0 {
        eprintln!(
            "{errors} measure(s) failed: see the Notes of the report and `errors` in the JSON"
        );
    }
    Ok(())
}
