//! `meshctl check [--wait DUR] [-o table|json|yaml]`: ✔/✘ lines for the
//! controller, Raft, the CA, peers' bundles, gateway tunnels and exports;
//! exit 1 when any check fails.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::{parse_duration, Target};
use crate::api::Client;
use crate::output::{render, Console, Format};
use crate::status::{checks, Check, Limits, Status};

/// Pause between attempts of `--wait`.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Arguments of `check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Retry until every check passes or DUR has passed.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) wait: Option<Duration>,
    /// A CA with fewer days left fails the check.
    #[arg(long, value_name = "DAYS", default_value_t = 7.0)]
    pub(crate) ca_min_days: f64,
    /// A peer bundle not refreshed for longer fails the check.
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = parse_duration)]
    pub(crate) bundle_max_age: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// The `-o json|yaml` report.
#[derive(Debug, Serialize)]
struct Report<'a> {
    ok: bool,
    checks: &'a [Check],
}

/// Runs `check`.
pub(super) async fn run(args: CheckArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let client = args.target.client()?;
    let limits = Limits {
        ca_min_days: args.ca_min_days,
        bundle_max_age_seconds: args.bundle_max_age.as_secs_f64(),
    };
    let deadline = args.wait.map(|w| Instant::now() + w);
    let results = loop {
        let results = attempt(&client, &limits).await;
        let ok = results.iter().all(|c| c.ok);
        match deadline {
            Some(d) if !ok && Instant::now() + RETRY_EVERY < d => {
                tokio::time::sleep(RETRY_EVERY).await;
            }
            _ => break results,
        }
    };
    let ok = results.iter().all(|c| c.ok);
    match render(
        args.output,
        &Report {
            ok,
            checks: &results,
        },
    ) {
        Some(text) => console.print(&text),
        None => {
            for c in &results {
                if c.ok {
                    console.ok(&c.message);
                } else {
                    console.fail_out(&c.message);
                }
            }
            let failed = results.iter().filter(|c| !c.ok).count();
            console.line("");
            if failed == 0 {
                console.ok(&format!("all {} checks passed", results.len()));
            } else {
                console.fail_out(&format!("{failed} of {} checks failed", results.len()));
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One round: reachability, then every check of the status.
async fn attempt(client: &Client, limits: &Limits) -> Vec<Check> {
    let reach = |ok: bool, message: String| Check {
        name: "controller".to_owned(),
        ok,
        message,
    };
    let value = match client.status_value().await {
        Ok(v) => v,
        Err(e) => return vec![reach(false, e.to_string())],
    };
    let status = match Status::decode(value) {
        Ok(s) => s,
        Err(e) => return vec![reach(false, format!("{e:#}"))],
    };
    let mut out = vec![reach(
        true,
        format!(
            "controller of {} reachable at {} (context {})",
            status.cluster,
            client.server(),
            client.context()
        ),
    )];
    out.extend(checks(&status, limits));
    out
}
