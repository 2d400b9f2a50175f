//! `meshctl dev up`: two linked clusters on loopback, each with its own CA
//! and trust domain, a gateway, and demo workloads behind sidecars.
//!
//! The run is: topology ([`topology`]) → CAs and bundle maps ([`pki`]) →
//! component configs ([`configs`]) → child processes ([`supervisor`]),
//! started in dependency order and each awaited on its readiness endpoint
//! ([`ready`]) → the printed commands, checked first → the live traffic line
//! ([`traffic`]) until SIGINT/SIGTERM or a child's death → teardown.

pub(crate) mod configs;
mod pki;
mod ready;
mod supervisor;
pub(crate) mod topology;
mod traffic;

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use rustix::process::{set_parent_process_death_signal, Signal};
use tokio::signal::unix::{signal, SignalKind};

use crate::output::{curl_block, traffic_line, Console};
use ready::{NotReady, Probe};
use supervisor::{tail, Exit, Supervisor};
pub(crate) use topology::DEFAULT_PORT_BASE;
use topology::{Role, Topology, Workload};

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
    let topology = Topology::dev(options.port_base)?;
    ports_free(&topology)?;
    let (state, _temp) = state_dir(options.state_dir.as_deref())?;
    console.ok(&format!(
        "state dir {}{}",
        state.display(),
        if _temp.is_some() {
            " (removed on exit)"
        } else {
            ""
        }
    ));

    let cas = pki::generate(&topology, SystemTime::now())?;
    pki::write(&state, &topology, &cas)?;
    for c in &topology.clusters {
        let linked: Vec<&str> = c
            .peers
            .iter()
            .filter_map(|p| topology.cluster(p))
            .map(|p| p.trust_domain.as_str())
            .collect();
        console.ok(&format!(
            "CA for {} (trust domain {}); it trusts {} and {}",
            c.name,
            c.trust_domain,
            c.trust_domain,
            linked.join(", ")
        ));
    }
    let files = configs::generate(&topology)?;
    for file in &files {
        let path = state.join(&file.path);
        std::fs::write(&path, &file.yaml).with_context(|| format!("write {}", path.display()))?;
    }
    console.ok(&format!("{} component configs written", files.len()));

    let logs = state.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let exe = std::env::current_exe().context("locate the meshctl binary")?;
    let mut supervisor = Supervisor::new(exe, logs, STOP_GRACE);
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;

    let outcome = tokio::select! {
        started = start(&topology, &state, options.rate, &mut supervisor, console) => started,
        _ = sigint.recv() => Err(Stop::Requested),
        _ = sigterm.recv() => Err(Stop::Requested),
    };
    let outcome = match outcome {
        Ok(()) => tokio::select! {
            died = watch(&topology, &mut supervisor, console) => Err(Stop::Died(died)),
            _ = sigint.recv() => Err(Stop::Requested),
            _ = sigterm.recv() => Err(Stop::Requested),
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
    if let Some(temp) = _temp {
        temp.close()
            .with_context(|| format!("remove {}", state.display()))?;
    }
    console.ok("torn down");
    Ok(code)
}

/// Why the run ends.
enum Stop {
    /// SIGINT or SIGTERM.
    Requested,
    /// A child died.
    Died(Exit),
    /// Startup failed; already reported.
    Failed,
}

/// Starts every component in dependency order, waits for each, then checks
/// the commands it is about to print.
async fn start(
    topology: &Topology,
    state: &Path,
    rate: f64,
    supervisor: &mut Supervisor,
    console: &mut Console,
) -> Result<(), Stop> {
    let parent = std::process::id().to_string();
    let gateways: Vec<_> = topology
        .clusters
        .iter()
        .map(|c| {
            let args = component_args("__gateway", &parent, &state.join(configs::gateway_path(c)));
            let probe = probe(format!("gateway {}", c.name), c.gateway_admin, "/readyz");
            let detail = format!("QUIC {} admin {}", c.gateway_listen, c.gateway_admin);
            (format!("{}-gateway", c.name), args, probe, detail)
        })
        .collect();
    launch(gateways, supervisor, console).await?;
    // Backends before the frontend, so its first requests find them.
    for role in [Role::Backend, Role::Frontend] {
        let mut batch = Vec::new();
        for c in &topology.clusters {
            for w in c.workloads.iter().filter(|w| w.role == role) {
                let log = format!("{}-{}", c.name, w.name);
                batch.push((
                    format!("{log}-app"),
                    app_args(w, &c.name, &parent, rate),
                    probe(format!("{} app ({})", w.name, c.name), w.app, "/healthz"),
                    format!("http://{}", w.app),
                ));
                let config = state.join(configs::sidecar_path(c, w));
                batch.push((
                    format!("{log}-sidecar"),
                    component_args("__sidecar", &parent, &config),
                    probe(
                        format!("{} sidecar ({})", w.name, c.name),
                        w.admin,
                        "/readyz",
                    ),
                    format!("{} admin {}", w.spiffe_id, w.admin),
                ));
            }
        }
        launch(batch, supervisor, console).await?;
    }

    let demos = topology.demos();
    for demo in &demos {
        let probe = Probe {
            name: demo.hint.command.clone(),
            addr: demo.addr,
            path: demo.path.clone(),
            expect: demo.expect.clone(),
        };
        match probe.wait(READY_PATIENCE, supervisor).await {
            Ok(body) => console.ok(&format!(
                "{}: {}",
                demo.hint.comment,
                first_line(&body, demo.path == "/metrics")
            )),
            Err(e) => return Err(not_ready(console, &probe.name, e)),
        }
    }
    console.line("");
    console.line("Try:");
    console.line(curl_block(&topology.hints()).trim_end());
    console.line("");
    console.line("Ctrl-C tears everything down.");
    Ok(())
}

type Launch = (String, Vec<OsString>, Probe, String);

/// Spawns a batch, then waits for each member's probe in turn.
async fn launch(
    batch: Vec<Launch>,
    supervisor: &mut Supervisor,
    console: &mut Console,
) -> Result<(), Stop> {
    for (log, args, probe, _) in &batch {
        if let Err(e) = supervisor.spawn(&probe.name, log, args.clone()) {
            console.fail(&format!("{}: {e:#}", probe.name));
            return Err(Stop::Failed);
        }
    }
    for (_, _, probe, detail) in &batch {
        match probe.wait(READY_PATIENCE, supervisor).await {
            Ok(_) => console.ok(&format!("{} ready ({detail})", probe.name)),
            Err(e) => return Err(not_ready(console, &probe.name, e)),
        }
    }
    Ok(())
}

fn not_ready(console: &mut Console, name: &str, e: NotReady) -> Stop {
    match e {
        NotReady::Died(exit) => {
            report_exit(console, &exit, &format!("exited while waiting for {name}"));
        }
        NotReady::Timeout(last) => console.fail(&format!(
            "{name}: not ready after {}s (last attempt: {last})",
            READY_PATIENCE.as_secs()
        )),
    }
    Stop::Failed
}

fn report_exit(console: &mut Console, exit: &Exit, what: &str) {
    let status = match &exit.status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status: {e}"),
    };
    console.fail(&format!(
        "{} {what} ({status}); last lines of its log:",
        exit.name
    ));
    console.detail(&tail(&exit.log, LOG_TAIL_LINES));
}

/// Refreshes the traffic line every second until a child dies.
async fn watch(topology: &Topology, supervisor: &mut Supervisor, console: &mut Console) -> Exit {
    let frontend = topology.frontend();
    let gateway_admin = topology.clusters[0].gateway_admin;
    let labels = traffic_labels(frontend, &topology.clusters[0].name);
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
        if console.is_tty() || n % PLAIN_TRAFFIC_EVERY == 0 {
            console.live(&line);
        }
        n = n.wrapping_add(1);
    }
}

/// Metric keys of the frontend's upstreams → shown names.
fn traffic_labels(frontend: &Workload, home: &str) -> Vec<(String, String)> {
    frontend
        .outbound
        .iter()
        .map(|o| {
            let name = o.service.trim_start_matches("default/");
            let shown = match &o.cluster {
                Some(pin) => format!("{name}({pin})"),
                None => format!("{name}({home} first)"),
            };
            (o.name.clone(), shown)
        })
        .collect()
}

fn probe(name: String, addr: SocketAddr, path: &str) -> Probe {
    Probe {
        name,
        addr,
        path: path.into(),
        expect: Vec::new(),
    }
}

fn component_args(subcommand: &str, parent: &str, config: &Path) -> Vec<OsString> {
    vec![
        subcommand.into(),
        "--parent-pid".into(),
        parent.into(),
        "--config".into(),
        config.into(),
    ]
}

fn app_args(w: &Workload, cluster: &str, parent: &str, rate: f64) -> Vec<OsString> {
    let role = match w.role {
        Role::Frontend => "frontend",
        Role::Backend => "backend",
    };
    let mut args: Vec<OsString> = vec![
        "__demo-app".into(),
        "--parent-pid".into(),
        parent.into(),
        "--role".into(),
        role.into(),
        "--listen".into(),
        w.app.to_string().into(),
        "--workload".into(),
        w.name.clone().into(),
        "--cluster".into(),
        cluster.into(),
        "--rate".into(),
        rate.to_string().into(),
    ];
    for o in &w.outbound {
        args.push("--upstream".into());
        args.push(format!("{}={}", o.name, o.listen).into());
    }
    args
}

fn first_line(body: &str, metrics: bool) -> String {
    if metrics {
        let samples = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        return format!("{samples} samples");
    }
    body.lines().collect::<Vec<_>>().join(" | ")
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
        let mut tcp = vec![c.gateway_admin];
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
    fn component_and_app_arguments() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let args = component_args("__gateway", "7", Path::new("/s/cluster-a/gateway.yaml"));
        assert_eq!(
            args,
            [
                "__gateway",
                "--parent-pid",
                "7",
                "--config",
                "/s/cluster-a/gateway.yaml"
            ]
            .map(OsString::from)
        );
        let args: Vec<String> = app_args(t.frontend(), "cluster-a", "7", 5.0)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined
            .starts_with("__demo-app --parent-pid 7 --role frontend --listen 127.0.1.10:8080"));
        assert!(joined
            .contains("--upstream backend=127.0.1.10:18080 --upstream backend-b=127.0.1.10:18081"));
        assert!(joined.contains("--rate 5"));
    }

    #[test]
    fn traffic_labels_name_the_pin() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        assert_eq!(
            traffic_labels(t.frontend(), "cluster-a"),
            vec![
                ("backend".to_owned(), "backend(cluster-a first)".to_owned()),
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

    #[test]
    fn metrics_bodies_are_summarized() {
        assert_eq!(first_line("# HELP x\nx 1\ny 2\n", true), "2 samples");
        assert_eq!(first_line("a\nb\n", false), "a | b");
    }
}
