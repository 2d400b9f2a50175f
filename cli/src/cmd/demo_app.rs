//! Hidden subcommand `__demo-app`: one demo workload of `dev up`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};

use crate::demo::{serve, App};

/// What the demo app does.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DemoRole {
    /// Calls its upstreams and keeps a background load on them.
    Frontend,
    /// Answers naming itself and its cluster.
    Backend,
}

/// Arguments of `__demo-app`.
#[derive(Debug, Args)]
pub(crate) struct DemoAppArgs {
    /// Exit (SIGTERM) when this process, our parent, goes away.
    #[arg(long)]
    parent_pid: Option<u32>,
    /// Behaviour.
    #[arg(long, value_enum)]
    role: DemoRole,
    /// HTTP listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// Workload name shown in answers.
    #[arg(long)]
    workload: String,
    /// Cluster name shown in answers.
    #[arg(long)]
    cluster: String,
    /// `NAME=HOST:PORT` of an upstream (frontend only; the first is the default).
    #[arg(long, value_parser = parse_upstream)]
    upstream: Vec<(String, SocketAddr)>,
    /// Background requests per second to each upstream (frontend only).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
}

fn parse_upstream(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: expected NAME=HOST:PORT"))?;
    let addr = addr.parse().map_err(|e| format!("{s}: {e}"))?;
    Ok((name.to_owned(), addr))
}

/// Runs the app until SIGTERM or SIGINT.
pub(super) fn run(args: DemoAppArgs) -> ExitCode {
    if let Some(code) = crate::dev::orphan_guard(args.parent_pid) {
        return code;
    }
    super::init_logs("info");
    let runtime = match super::current_thread_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let app = App {
        frontend: matches!(args.role, DemoRole::Frontend),
        workload: args.workload,
        cluster: args.cluster,
        upstreams: args.upstream,
    };
    let result = runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        serve(app, args.listen, args.rate, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "demo app failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_as_name_and_address() {
        assert_eq!(
            parse_upstream("backend-b=127.0.1.10:18081").unwrap(),
            ("backend-b".to_owned(), "127.0.1.10:18081".parse().unwrap())
        );
        assert!(parse_upstream("nope").is_err());
        assert!(parse_upstream("x=host").is_err());
    }
}
