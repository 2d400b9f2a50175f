//! The binary's entry point: flags, logging, runtime, signals.

use std::error::Error;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use prometheus_client::registry::Registry;
use tracing::{error, info};

use crate::config::Config;
use crate::gateway::Gateway;

/// `mesh-gateway --config <file>`.
#[derive(Debug, Parser)]
#[command(
    name = "mesh-gateway",
    about = "The Isthmus east-west gateway",
    version
)]
struct Cli {
    /// The YAML config file (docs/reference/data-path-config.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Parses `args` (the first item is the program name), runs the gateway
/// until SIGTERM/SIGINT and returns the exit status: 0 after a graceful
/// drain, 2 for bad flags or a bad config, 1 if a listener cannot be bound.
/// SIGHUP reloads the config file. Logs go to stderr (`RUST_LOG`, default
/// `info`).
pub fn run_cli<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            error!("bad config: {}", chain(&e));
            return ExitCode::from(2);
        }
    };
    // One worker per CPU the process may run on (taskset and cpusets
    // count); on a single CPU a current-thread runtime does the same work
    // without the work-stealing scheduler's cross-thread hand-offs.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, &cli.config))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A subscriber may already be set when run in-process (meshctl, tests).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(config: Config, path: &Path) -> ExitCode {
    info!(
        file = %path.display(),
        cluster = %config.cluster,
        listen = %config.listen,
        tcp_listen = ?config.tcp_listen,
        admin = %config.admin,
        identity = ?config.identity,
        peers = ?config.peers,
        exports = ?config.exports,
        quic = ?config.quic,
        timeouts = ?config.timeouts,
        reconnect = ?config.reconnect,
        "effective config"
    );
    // Installed before the gateway reports ready, so a SIGHUP/SIGTERM sent
    // as soon as `/readyz` answers 200 cannot hit the default action.
    let handlers = match Signals::install() {
        Ok(h) => h,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match Gateway::start(config, Registry::default()).await {
        Ok(g) => g,
        Err(e) => {
            error!("cannot start: {}: {}", path.display(), chain(&e));
            return if e.is_config_error() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    handlers.run(&gateway, path).await;
    let report = gateway.drain().await;
    info!(abandoned = report.abandoned, "mesh-gateway stopped");
    ExitCode::SUCCESS
}

/// The process's signal streams (SIGTERM, SIGINT, SIGHUP).
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Handles SIGHUP (reload) until SIGTERM or SIGINT arrives.
    async fn run(mut self, gateway: &Gateway, path: &Path) {
        loop {
            tokio::select! {
                _ = self.term.recv() => { info!("SIGTERM: draining"); return; }
                _ = self.int.recv() => { info!("SIGINT: draining"); return; }
                _ = self.hup.recv() => reload(gateway, path),
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn run(self, _gateway: &Gateway, _path: &Path) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn reload(gateway: &Gateway, path: &Path) {
    match Config::load(path) {
        Ok(config) => match gateway.reload(config) {
            Ok(()) => info!(file = %path.display(), "SIGHUP: config reloaded"),
            Err(e) => error!(
                "SIGHUP: reload refused, keeping the running config: {}: {}",
                path.display(),
                chain(&e)
            ),
        },
        Err(e) => error!("SIGHUP: bad config, keeping the running one: {}", chain(&e)),
    }
}

/// `e: cause: cause…` on one line.
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
