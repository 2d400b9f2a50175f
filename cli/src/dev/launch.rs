//! Startup, in dependency order: the controllers (each awaited on its
//! `/readyz`), the control-plane steps through their admin API (bootstrap
//! trust, the link, join tokens), the gateways, backends and the frontend
//! (each awaited on its readiness endpoint), the ServiceExports with the
//! time to the first answer across clusters, then a check of every command
//! about to be printed before printing it.

use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::ready::{NotReady, Probe};
use super::supervisor::{tail, Exit, Supervisor};
use super::topology::{Role, Topology, Workload};
use super::{configs, contexts, control, meshctl, LOG_TAIL_LINES, READY_PATIENCE};
use crate::output::{curl_block, Console};

/// Why the run ends.
pub(super) enum Stop {
    /// SIGINT or SIGTERM.
    Requested,
    /// A child died.
    Died(Exit),
    /// Startup failed; already reported.
    Failed,
}

/// Starts every component in dependency order, waits for each, then checks
/// the commands it is about to print.
pub(super) async fn start(
    topology: &Topology,
    state: &Path,
    rate: f64,
    supervisor: &mut Supervisor,
    console: &mut Console,
) -> Result<(), Stop> {
    let parent = std::process::id().to_string();
    let controllers: Vec<_> = topology
        .clusters
        .iter()
        .map(|c| {
            let config = state.join(configs::controller_path(c));
            let mut args = component_args("__controller", &parent, &config);
            args.extend(["--log".into(), CONTROLLER_LOG.into()]);
            let probe = probe(
                format!("controller {}", c.name),
                c.controller.admin,
                "/readyz",
            );
            let detail = format!(
                "{}, gRPC {} admin {}",
                c.trust_domain, c.controller.grpc, c.controller.admin
            );
            (format!("{}-controller", c.name), args, probe, detail)
        })
        .collect();
    launch(controllers, supervisor, console).await?;
    let lines = step(
        supervisor,
        console,
        "bootstrap trust",
        control::bootstrap_trust(topology, state),
    )
    .await?;
    show(console, lines);
    let lines = step(supervisor, console, "link", control::link(topology)).await?;
    show(console, lines);
    let lines = step(
        supervisor,
        console,
        "join tokens",
        control::join_tokens(topology, state),
    )
    .await?;
    show(console, lines);

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
                let registered = match w.inbound {
                    Some(_) => format!(", registered as {}", configs::registered_as(w)),
                    None => String::new(),
                };
                batch.push((
                    format!("{log}-sidecar"),
                    component_args("__sidecar", &parent, &config),
                    probe(
                        format!("{} sidecar ({})", w.name, c.name),
                        w.admin,
                        "/readyz",
                    ),
                    format!("{} admin {}{registered}", w.spiffe_id, w.admin),
                ));
            }
        }
        launch(batch, supervisor, console).await?;
    }

    // Export, then time the first answer from the exporting cluster
    // through the frontend's pinned listener.
    let exported = Instant::now();
    let lines = step(supervisor, console, "export", control::export(topology)).await?;
    show(console, lines);
    let demos = topology.demos();
    if let Some(pinned) = demos.iter().find(|d| d.pinned) {
        let probe = demo_probe(pinned);
        match probe
            .wait_every(READY_PATIENCE, QUICK_POLL, supervisor)
            .await
        {
            Ok(_) => console.ok(&format!(
                "first answer across clusters {} ms after the export was stored ({})",
                exported.elapsed().as_millis(),
                pinned.hint.command
            )),
            Err(e) => return Err(not_ready(console, &probe.name, e)),
        }
    }
    let lines = step(
        supervisor,
        console,
        "imports",
        control::await_imports(topology, READY_PATIENCE),
    )
    .await?;
    show(console, lines);

    for demo in &demos {
        let probe = demo_probe(demo);
        match probe.wait(READY_PATIENCE, supervisor).await {
            Ok(body) => console.ok(&format!(
                "{}: {}",
                demo.hint.comment,
                first_line(&body, demo.path == "/metrics")
            )),
            Err(e) => return Err(not_ready(console, &probe.name, e)),
        }
    }
    let contexts = match contexts::write(state, topology) {
        Ok(path) => path,
        Err(e) => {
            console.fail(&format!("{e:#}"));
            return Err(Stop::Failed);
        }
    };
    let commands = meshctl::commands(topology);
    let lines = step(
        supervisor,
        console,
        "meshctl",
        meshctl::check(&commands, &contexts),
    )
    .await?;
    show(console, lines);

    console.line("");
    console.line("Try:");
    console.line(curl_block(&topology.hints()).trim_end());
    console.line("");
    console.line(&format!(
        "  export {}={}",
        meshctl::CONFIG_ENV,
        contexts.display()
    ));
    console.line(curl_block(&meshctl::hints(&commands)).trim_end());
    console.line("");
    console.line("Ctrl-C tears everything down.");
    Ok(())
}

/// Runs a control-plane step while watching the children: a failure or a
/// death is reported, and ends the startup.
async fn step<T>(
    supervisor: &mut Supervisor,
    console: &mut Console,
    what: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> Result<T, Stop> {
    tokio::select! {
        done = work => done.map_err(|e| {
            console.fail(&format!("{what}: {e:#}"));
            Stop::Failed
        }),
        exit = supervisor.next_exit() => {
            report_exit(console, &exit, &format!("exited during {what}"));
            Err(Stop::Failed)
        }
    }
}

fn show(console: &mut Console, lines: Vec<String>) {
    for line in lines {
        console.ok(&line);
    }
}

fn demo_probe(demo: &super::topology::Demo) -> Probe {
    Probe {
        name: demo.hint.command.clone(),
        addr: demo.addr,
        path: demo.path.clone(),
        expect: demo.expect.clone(),
    }
}

/// The controllers' log filter: Raft's per-election chatter stays out.
const CONTROLLER_LOG: &str = "info,openraft=warn";

/// How often the first cross-cluster answer is tried, so the measured
/// time is not mostly waiting.
const QUICK_POLL: Duration = Duration::from_millis(20);

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

pub(super) fn report_exit(console: &mut Console, exit: &Exit, what: &str) {
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

fn probe(name: String, addr: SocketAddr, path: &str) -> Probe {
    Probe {
        name,
        addr,
        path: path.into(),
        expect: Vec::new(),
    }
}

pub(super) fn component_args(subcommand: &str, parent: &str, config: &Path) -> Vec<OsString> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DEFAULT_PORT_BASE;

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
    fn metrics_bodies_are_summarized() {
        assert_eq!(first_line("# HELP x\nx 1\ny 2\n", true), "2 samples");
        assert_eq!(first_line("a\nb\n", false), "a | b");
    }
}
