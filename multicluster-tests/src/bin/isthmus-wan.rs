//! `isthmus-wan`: brings up the network-namespace WAN of
//! `multicluster_tests::netns` by hand, for exploring a topology with a
//! shell (`ip netns exec <netns> bash`), and tears it down on Ctrl-C or
//! SIGTERM. The tests use the library directly; this binary is also what
//! `tests/netns_teardown.rs` kills to prove the signal teardown.
//!
//! ```text
//! isthmus-wan [--delay-ms N] [--jitter-ms N] [--loss P] [--rate BYTES_PER_S] CLUSTER...
//! ```

// The cluster table on stdout is this program's output.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use multicluster_tests::netns::{LinkConfig, Wan};

const USAGE: &str =
    "usage: isthmus-wan [--delay-ms N] [--jitter-ms N] [--loss P] [--rate BYTES_PER_S] CLUSTER...

Creates one network namespace per CLUSTER joined by an emulated WAN (every
link, both ways, with the given one-way delay, jitter, loss probability P in
[0, 1] and rate), prints `<cluster> <netns> <address>` per cluster, then waits;
Ctrl-C or SIGTERM deletes everything.";

fn main() -> Result<()> {
    let mut link = LinkConfig::default();
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<String> {
            args.next()
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--delay-ms" => link.delay = Duration::from_millis(value(&a)?.parse()?),
            "--jitter-ms" => link.jitter = Duration::from_millis(value(&a)?.parse()?),
            "--loss" => link = link.with_loss(value(&a)?.parse()?),
            "--rate" => link = link.with_rate(value(&a)?.parse()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n\n{USAGE}"),
            _ => names.push(a),
        }
    }
    if names.is_empty() {
        bail!("no clusters given\n\n{USAGE}");
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let wan = Wan::start(&names, link)?;
    let mut out = std::io::stdout().lock();
    for c in wan.clusters() {
        writeln!(out, "{} {} {}", c.name, c.netns, c.addr)?;
    }
    out.flush()?;
    drop(out);
    // The signal hook installed by `Wan::start` deletes the namespaces and
    // exits; until then, the router thread does the work.
    loop {
        std::thread::park();
    }
}
