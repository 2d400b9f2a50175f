//! `mesh-sidecar --config <file>`: parse flags, set up logging, load the
//! config, run until SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prometheus_client::registry::Registry;

use crate::config::{Config, WorkerThreads};
use crate::control::ControlError;
use crate::errors::error_chain;
use crate::runtime::{Sidecar, StartError};

/// Exit status for a config that does not load or validate.
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit status for any other start failure (e.g. a port in use).
const EXIT_START_FAILED: u8 = 1;

/// The Isthmus sidecar.
#[derive(Debug, Parser)]
#[command(name = "mesh-sidecar", version, about)]
struct Cli {
    /// The YAML config file (docs/reference/data-path-config.md).
    #[arg(long, short = 'c')]
    config: PathBuf,
}

/// Runs the sidecar: `args` are the command line, the program name first.
/// Returns 0 after a graceful SIGTERM/SIGINT drain, 2 for a bad config, 1
/// when the sidecar could not start (e.g. a listener could not be bound).
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
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid config: {}", error_chain(&e));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let mut builder = match config.worker_threads {
        WorkerThreads::Fixed(n) if n.get() == 1 => tokio::runtime::Builder::new_current_thread(),
        WorkerThreads::Fixed(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.get());
            b
        }
        WorkerThreads::PerCpu => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().thread_name("mesh-sidecar").build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    runtime.block_on(run(config, cli.config))
}

async fn run(config: Config, path: PathBuf) -> ExitCode {
    tracing::info!(
        file = %path.display(),
        config = %serde_json::to_string(&config).unwrap_or_default(),
        "effective config"
    );
    let path_shown = path.display().to_string();
    // Installed before the listeners are up, so a SIGHUP/SIGTERM sent as
    // soon as the sidecar answers cannot hit the default action.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    let sidecar = match Sidecar::start(config, Some(path), Registry::default()).await {
        Ok(s) => s,
        Err(e) => {
            return match e {
                StartError::Identity(e) => {
                    tracing::error!("invalid config: {}: {}", path_shown, error_chain(&e));
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
                StartError::ControlPlane(
                    e @ (ControlError::Read { .. }
                    | ControlError::Bundles { .. }
                    | ControlError::OwnBundleMissing { .. }
                    | ControlError::EmptyToken(_)),
                ) => {
                    tracing::error!("invalid config: {}: {}", path_shown, error_chain(&e));
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
                e => {
                    tracing::error!("cannot start: {}", error_chain(&e));
                    ExitCode::from(EXIT_START_FAILED)
                }
            };
        }
    };
    signals.wait(&sidecar).await;
    tracing::info!("draining");
    if sidecar.drain().await {
        tracing::info!("drained");
    } else {
        tracing::warn!("drain bound reached with connections still open");
    }
    ExitCode::SUCCESS
}

/// SIGHUP, SIGTERM and SIGINT streams.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
    async fn wait(mut self, sidecar: &Sidecar) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    match sidecar.reload().await {
                        Ok(()) => tracing::info!("reloaded on SIGHUP"),
                        Err(e) => tracing::error!("reload refused, keeping the old config: {}", error_chain(&e)),
                    }
                }
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
            }
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
