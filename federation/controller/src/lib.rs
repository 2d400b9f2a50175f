//! The Isthmus federation controller: one per cluster (docs/reference/controller.md).
//!
//! - [`store`]: the replicated log (openraft) and its on-disk storage (redb);
//!   generic over a [`store::StateMachine`].
//! - [`catalog`]: the state machine: resources, workloads with leases, CA
//!   material, join and peering tokens, linked peers and what they export.
//! - [`xds`]: the ADS server (state of the world and delta) over an
//!   [`xds::Model`] derived from the catalog.
//! - [`identity`]: the `Identity` gRPC service (SVID signing, bundle watch,
//!   workload registration).
//! - [`peering`]: link tokens, the `Peering` gRPC service and the loops that
//!   keep each peer's bundle and exports fresh.
//! - [`admin`]: the operator HTTP API `meshctl` talks to.
//! - [`config`]: the controller's YAML config and flags.
//! - [`grpc`]: the TLS gRPC listener and the caller identity it attaches.
//! - [`run`]: the wiring of all of the above ([`run::Controller`]).

pub mod admin;
pub mod catalog;
pub mod config;
pub mod grpc;
pub mod identity;
pub mod peering;
pub mod run;
pub mod store;
pub mod wiring;
pub mod xds;

/// Runs the controller as a command line program (`mesh-controller --config
/// <file>`), as `mesh-gateway` and `mesh-sidecar` do; `meshctl` re-executes
/// itself into this. Exit 0 after a graceful stop (SIGTERM or SIGINT), 2 on
/// a bad command line or config, 1 on a runtime failure.
pub fn run_cli<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser as _;
    use std::process::ExitCode;

    let args = match config::Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let config = match config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(config = %args.config.display(), error = %error_chain(&e), "bad config");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping");
            let _ = stop_tx.send(true);
        });
        let mut stop = stop_rx.clone();
        match run::Controller::start(config, wiring::production_hooks(), stop_rx).await {
            Ok(controller) => {
                let _ = stop.wait_for(|s| *s).await;
                controller.stop().await;
                ExitCode::SUCCESS
            }
            Err(run::RunError::Stopped) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "controller failed");
                ExitCode::from(1)
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `error: cause: cause` for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
