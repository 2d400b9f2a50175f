//! `meshctl dev up`: two linked clusters on loopback, each with its own
//! controller (and so its own CA and trust domain), a gateway, and demo
//! workloads behind sidecars; `meshctl dev down` stops a run from another
//! terminal.
//!
//! The run is: topology ([`topology`]) → component configs ([`configs`]) →
//! child processes ([`supervisor`]), started in dependency order and each
//! awaited on its readiness endpoint ([`ready`]): the controllers first,
//! then the control-plane steps through their admin API ([`control`]:
//! bootstrap trust ([`trust`]), the link, join tokens), the proxies and
//! apps, the ServiceExports → the printed curl and meshctl commands
//! ([`meshctl`], with a contexts file, [`contexts`]), checked first → the
//! live traffic line ([`traffic`]) until SIGINT/SIGTERM or a child's death
//! → teardown.

pub(crate) mod configs;
mod contexts;
mod control;
mod launch;
mod meshctl;
mod pidfile;
mod ready;
mod supervisor;
pub(crate) mod topology;
mod traffic;
mod trust;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rustix::process::{set_parent_process_death_signal, Signal};
use tokio::signal::unix::{signal, SignalKind};

use crate::output::{traffic_line, Console};
use launch::{report_exit, start, Stop};
use pidfile::PidFile;
use supervisor::{Exit, Supervisor};
pub(crate) use topology::DEFAULT_PORT_BASE;
use topology::{Topology, Workload};

/// How long one component may take to become ready.
const READY_PATIENCE: Duration = Duration::from_secs(30);
/// Between SIGTERM and SIGKILL at teardown.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of a child's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;
/// Non-terminal output: one traffic line per this many seconds.
const PLAIN_TRAFFIC_EVERY: u32 = 5;

/// Options of `dev up`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Keep configs and logs here instead of a temp dir removed on exit.
    pub(crate) state_dir: Option<PathBuf>,
    /// See [`topology::Ports`].
    pub(crate) port_base: u16,
    /// Background requests per second from the frontend to each upstream.
    pub(crate) rate: f64,
}

/// Runs `dev up` until interrupted. Ok(SUCCESS) after a requested teardown,
/// Ok(FAILURE) after a component failed (already reported on `console`).
///
/// # Errors
/// Setup failed before any component ran (bad options, files, ports).
pub(crate) async fn up(options: Options, console: &mut Console) -> anyhow::Result<ExitCode> {
    if !(options.rate.is_finite() && options.rate >= 0.0 && options.rate <= 1000.0) {
        bail!("--rate {}: must be between 0 and 1000", options.rate);
    }
    // Handlers first, so an early Ctrl-C still removes the state dir.
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    // A closed terminal tears down too, rather than leaving the state dir.
    let mut sighup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    let topology = Topology::dev(options.port_base)?;
    ports_free(&topology)?;
    let (state, temp) = state_dir(options.state_dir.as_deref())?;
    console.ok(&format!(
        "state dir {}{}",
        state.display(),
        if temp.is_some() {
            " (removed on exit)"
        } else {
            " (kept on exit; logs in logs/)"
        }
    ));

    let pid_file = PidFile::create(&state)?;
    for c in &topology.clusters {
        let dir = state.join(&c.name);
        // A fresh mesh every run: a kept state dir keeps configs and logs,
        // not the previous run's catalog.
        let data = dir.join(configs::CONTROLLER_DATA);
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("remove the previous run's {}", data.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut files = configs::controllers(&topology)?;
    files.extend(configs::proxies(&topology)?);
    for file in &files {
        let path = state.join(&file.path);
        std::fs::write(&path, &file.yaml).with_context(|| format!("write {}", path.display()))?;
    }
    console.ok(&format!(
        "{} component configs written ({} controllers; gateways and sidecars get identity and routes from them)",
        files.len(),
        topology.clusters.len()
    ));

    let logs = state.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let exe = std::env::current_exe().context("locate the meshctl binary")?;
    let mut supervisor = Supervisor::new(exe, logs, STOP_GRACE);

    let outcome = tokio::select! {
        started = start(&topology, &state, options.rate, &mut supervisor, console) => started,
        _ = sigint.recv() => Err(Stop::Requested),
        _ = sigterm.recv() => Err(Stop::Requested),
        _ = sighup.recv() => Err(Stop::Requested),
    };
    let outcome = match outcome {
        Ok(()) => tokio::select! {
            died = watch(&topology, &mut supervisor, console) => Err(Stop::Died(died)),
            _ = sigint.recv() => Err(Stop::Requested),
            _ = sigterm.recv() => Err(Stop::Requested),
            _ = sighup.recv() => Err(Stop::Requested),
        },
        Err(stop) => Err(stop),
    };
    let code = match outcome {
        Ok(()) | Err(Stop::Requested) => ExitCode::SUCCESS,
        Err(Stop::Died(exit)) => {
            report_exit(console, &exit, "exited unexpectedly");
            ExitCode::FAILURE
        }
        Err(Stop::Failed) => ExitCode::FAILURE,
    };
    supervisor.shutdown().await;
    drop(pid_file);
    if let Some(temp) = temp {
        temp.close()
            .with_context(|| format!("remove {}", state.display()))?;
    }
    console.ok("torn down");
    Ok(code)
}

/// Stops the `dev up` running with `state_dir` (SIGTERM: its usual
/// teardown) and waits for it to exit.
///
/// # Errors
/// None runs there, or it did not exit in time.
pub(crate) async fn down(state_dir: &Path, console: &mut Console) -> anyhow::Result<()> {
    // Its own teardown gives every child STOP_GRACE; allow for that and more.
    let pid = pidfile::stop(state_dir, STOP_GRACE * 4).await?;
    console.ok(&format!(
        "dev up (pid {pid}) stopped; {} kept",
        state_dir.display()
    ));
    Ok(())
}

/// Refreshes the traffic line every second until a child dies.
async fn watch(topology: &Topology, supervisor: &mut Supervisor, console: &mut Console) -> Exit {
    let frontend = topology.frontend();
    let gateway_admin = topology.clusters[0].gateway_admin;
    let labels = traffic_labels(frontend);
    let sidecar_labels = vec![("default/backend".to_owned(), "sidecar".to_owned())];
    let (mut app_meter, mut sidecar_meter) = (traffic::Meter::default(), traffic::Meter::default());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            exit = supervisor.next_exit() => return exit,
            _ = tick.tick() => {}
        }
        let timeout = Duration::from_millis(900);
        let (app, sidecar, gateway) = tokio::join!(
            crate::http::get(frontend.app, "/stats", timeout),
            crate::http::get(frontend.admin, "/metrics", timeout),
            crate::http::get(gateway_admin, "/metrics", timeout),
        );
        let now = std::time::Instant::now();
        let line = match (app.map(|r| traffic::app_counts(&r.text())), sidecar) {
            (Ok(Some(app)), Ok(sidecar)) => {
                let app = app_meter.update(now, app, &labels);
                let counts = traffic::outbound_counts(&traffic::parse(&sidecar.text()));
                let sidecar = sidecar_meter.update(now, counts, &sidecar_labels);
                let streams = gateway
                    .ok()
                    .map(|g| traffic::total(&traffic::parse(&g.text()), traffic::GATEWAY_STREAMS));
                traffic_line(&traffic::line(app, sidecar, streams))
            }
            (Ok(None), _) => "traffic  (frontend /stats unreadable)".to_owned(),
            (Err(e), _) | (_, Err(e)) => format!("traffic  (scrape failed: {e:#})"),
        };
        if console.is_tty() || n.is_multiple_of(PLAIN_TRAFFIC_EVERY) {
            console.live(&line);
        }
        n = n.wrapping_add(1);
    }
}

/// Upstream names in the frontend app's `/stats` → shown names; the
/// local-first listener shows as `(local)` (it spills to cluster-b only when
/// local endpoints fail).
fn traffic_labels(frontend: &Workload) -> Vec<(String, String)> {
    frontend
        .outbound
        .iter()
        .map(|o| {
            let name = o.service.trim_start_matches("default/");
            let shown = match &o.cluster {
                Some(pin) => format!("{name}({pin})"),
                None => format!("{name}(local)"),
            };
            (o.name.clone(), shown)
        })
        .collect()
}

/// The state directory and, when we made it, the guard that removes it.
fn state_dir(given: Option<&Path>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match given {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let dir = dir
                .canonicalize()
                .with_context(|| format!("resolve {}", dir.display()))?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("isthmus-dev-")
                .tempdir()
                .context("create a temp state dir")?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// Fails early, naming the address, when a port we need is taken.
fn ports_free(topology: &Topology) -> anyhow::Result<()> {
    for c in &topology.clusters {
        UdpSocket::bind(c.gateway_listen)
            .map(drop)
            .with_context(|| {
                format!(
                    "udp {} (gateway {}) is not free; try another --port-base",
                    c.gateway_listen, c.name
                )
            })?;
        let ctl = &c.controller;
        let mut tcp = vec![c.gateway_admin, ctl.raft, ctl.grpc, ctl.admin, ctl.bundle];
        for w in &c.workloads {
            tcp.extend([w.app, w.admin]);
            tcp.extend(w.inbound.iter().map(|(a, _)| *a));
            tcp.extend(w.outbound.iter().map(|o| o.listen));
        }
        for addr in tcp {
            TcpListener::bind(addr).map(drop).with_context(|| {
                format!(
                    "tcp {addr} ({}) is not free; try another --port-base",
                    c.name
                )
            })?;
        }
    }
    Ok(())
}

/// Called first by a child (`__gateway`, `__sidecar`, `__demo-app`): asks
/// the kernel for SIGTERM when the parent dies, and exits at once if the
/// parent is already gone. `None` means carry on.
pub(crate) fn orphan_guard(parent: Option<u32>) -> Option<ExitCode> {
    let parent = parent?;
    if let Err(e) = set_parent_process_death_signal(Some(Signal::TERM)) {
        tracing::warn!(error = %e, "cannot ask for a parent-death signal");
    }
    (std::os::unix::process::parent_id() != parent).then_some(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_labels_name_the_pin() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        assert_eq!(
            traffic_labels(t.frontend()),
            vec![
                ("backend".to_owned(), "backend(local)".to_owned()),
                ("backend-b".to_owned(), "backend(cluster-b)".to_owned()),
            ]
        );
    }

    #[test]
    fn given_state_dir_is_kept_and_temp_dir_is_marked_for_removal() {
        let outer = tempfile::tempdir().unwrap();
        let given = outer.path().join("state");
        let (dir, temp) = state_dir(Some(&given)).unwrap();
        assert!(dir.is_dir() && temp.is_none());
        let (dir, temp) = state_dir(None).unwrap();
        assert!(dir.is_dir());
        temp.unwrap().close().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn a_taken_port_is_named() {
        let t = Topology::dev(DEFAULT_PORT_BASE + 3).unwrap();
        let busy = TcpListener::bind(t.frontend().app).unwrap();
        let err = ports_free(&t).unwrap_err().to_string();
        assert!(err.contains(&t.frontend().app.to_string()), "{err}");
        drop(busy);
    }
}
