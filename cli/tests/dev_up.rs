//! End to end: the built `meshctl dev up` starts a controller per cluster,
//! links the clusters and exports `backend` from cluster-b through their
//! admin API, and starts gateways and sidecars that take their identity and
//! routes from the controllers. The curl commands it prints succeed with
//! real curl (the cluster-b one answered from cluster-b, through both
//! gateways), the printed meshctl commands work with the contexts file it
//! wrote, live traffic flows, and SIGINT tears everything down: exit 0,
//! state dir gone, ports free. `meshctl dev down --state-dir` stops a run
//! from outside the same way.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// Ports: 21080, 28000–28443, 31080–31081 (below the ephemeral range).
const PORT_BASE: u16 = 21000;
/// The `dev down` test's: 22080, 29000–29443, 32080–32081.
const DOWN_PORT_BASE: u16 = 22000;
/// Patience for startup and for each later expectation.
const PATIENCE: Duration = Duration::from_secs(120);

/// Kills meshctl if the test fails half-way, and shows its stderr.
struct Run {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["dev", "up", "--rate", "5"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshctl");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = channel();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = etx.send(text);
        });
        Self {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Reads stdout until a line satisfies `pred`, within [`PATIENCE`].
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => self.fail(&format!("waiting for {what}: {e}")),
            }
        }
    }

    /// Whether a line seen so far starts with `prefix`.
    fn saw(&self, prefix: &str) -> bool {
        self.seen.iter().any(|l| l.starts_with(prefix))
    }

    /// Waits for meshctl to exit on its own, within [`PATIENCE`].
    fn exit_status(&mut self, after: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.fail(&format!("meshctl did not exit after {after}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks meshctl to tear down (SIGINT), killing it if it does not exit
    /// within [`PATIENCE`].
    fn stop(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::INT);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn fail(&mut self, why: &str) -> ! {
        self.stop();
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        panic!(
            "{why}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            self.seen.join("\n")
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// (url, comment) of each printed `  curl URL   # comment` line.
fn parse_curls(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix("curl "))
        .map(|rest| {
            let (url, comment) = rest.split_once('#').unwrap_or((rest, ""));
            (url.trim().to_owned(), comment.trim().to_owned())
        })
        .collect()
}

/// Runs real curl; returns (status, body).
fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl (is it installed?)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// `(rps, success)` shown for `label` on a traffic line:
/// `... backend(cluster-b) 5.0 rps ✔100% ...`.
fn rate_of(line: &str, label: &str) -> Option<(f64, String)> {
    let mut words = line.split_whitespace().skip_while(|w| *w != label).skip(1);
    let rps = words.next()?.parse().ok()?;
    let _rps_unit = words.next()?;
    Some((rps, words.next()?.to_owned()))
}

/// Runs the built meshctl with `MESHCTL_CONFIG=config`; (success, stdout
/// and stderr).
fn meshctl(config: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env("MESHCTL_CONFIG", config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run meshctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every TCP and UDP address of a run with `base` is free again.
fn assert_ports_free(base: u16) {
    for net in [1, 2] {
        let mut tcp = vec![format!("127.0.{net}.2:{}", base + 7021)];
        // Controller: gRPC, Raft, admin API, bundle endpoint.
        for offset in [7012, 7013, 7014, 7015] {
            tcp.push(format!("127.0.{net}.3:{}", base + offset));
        }
        for addr in tcp {
            let addr: SocketAddr = addr.parse().unwrap();
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} still taken: {e}"));
        }
        let udp: SocketAddr = format!("127.0.{net}.2:{}", base + 7443).parse().unwrap();
        UdpSocket::bind(udp).unwrap_or_else(|e| panic!("udp {udp} still taken: {e}"));
    }
}

fn addr_of(url: &str) -> SocketAddr {
    let host = url.trim_start_matches("http://");
    host[..host.find('/').unwrap_or(host.len())]
        .parse()
        .unwrap()
}

#[test]
fn traffic_lines_parse() {
    let line = "traffic  backend(cluster-a first) 5.0 rps ✔100%  backend(cluster-b) 4.8 rps ✘97%";
    assert_eq!(
        rate_of(line, "backend(cluster-b)"),
        Some((4.8, "✘97%".to_owned()))
    );
    assert_eq!(rate_of(line, "nope"), None);
    assert_eq!(
        parse_curls(&["  curl http://127.0.1.10:8080/   # frontend → backend".to_owned()]),
        vec![(
            "http://127.0.1.10:8080/".to_owned(),
            "frontend → backend".to_owned()
        )]
    );
    assert_eq!(
        addr_of("http://127.0.1.2:15021/metrics"),
        "127.0.1.2:15021".parse().unwrap()
    );
}

#[test]
fn dev_up_serves_the_printed_commands_and_tears_down_on_sigint() {
    let mut run = Run::start(&["--port-base", &PORT_BASE.to_string()]);
    let state_line = run.until("the state dir", |l| l.starts_with("✔ state dir "));
    let state_dir = PathBuf::from(
        state_line
            .trim_start_matches("✔ state dir ")
            .trim_end_matches(" (removed on exit)"),
    );
    assert!(state_dir.is_dir(), "{}", state_dir.display());
    run.until("the end of the commands", |l| {
        l.contains("Ctrl-C tears everything down")
    });
    let curls = parse_curls(&run.seen);
    assert!(curls.len() >= 4, "{curls:?}");
    // Through the controllers: each one ready, the link and the export
    // made through their API, the import seen in cluster-a.
    for step in [
        "✔ controller cluster-a ready",
        "✔ controller cluster-b ready",
        "✔ linked cluster-a and cluster-b",
        "✔ join tokens from cluster-b",
        "✔ cluster-b: ServiceExport default/backend created",
        "✔ first answer across clusters",
        "✔ cluster-a: ServiceImport default/backend (from cluster-b)",
    ] {
        if !run.saw(step) {
            run.fail(&format!("no line {step:?}"));
        }
    }
    // The printed meshctl commands work with the contexts file written.
    let config = match run
        .seen
        .iter()
        .find_map(|l| l.trim().strip_prefix("export MESHCTL_CONFIG="))
    {
        Some(path) => path.to_owned(),
        None => run.fail("no `export MESHCTL_CONFIG=` line"),
    };
    let (ok, out) = meshctl(
        &config,
        &["--context", "cluster-a", "get", "serviceimports"],
    );
    if !(ok && out.contains("backend") && out.contains("cluster-b")) {
        run.fail(&format!("meshctl get serviceimports in cluster-a: {out}"));
    }
    let (ok, out) = meshctl(&config, &["--context", "cluster-b", "get", "workloads"]);
    if !(ok && out.contains("backend-1") && out.contains("127.0.2.11")) {
        run.fail(&format!("meshctl get workloads in cluster-b: {out}"));
    }

    for (url, comment) in &curls {
        let (status, body) = curl(url);
        if status != 200 {
            run.fail(&format!("curl {url} ({comment}): status {status}: {body}"));
        }
        let expect: &[&str] = if comment.contains("gateway A metrics") {
            &["isthmus_gateway_streams_total"]
        } else if comment.contains("sidecar metrics") {
            &["isthmus_sidecar_requests_total"]
        } else if comment.contains("cluster-b") {
            &["backend in cluster-b says hello"]
        } else if comment.starts_with("frontend") {
            &[
                "frontend in cluster-a says hello",
                "backend in cluster-a says hello",
            ]
        } else {
            &["backend in cluster-a says hello"]
        };
        for e in expect {
            if !body.contains(e) {
                run.fail(&format!("curl {url} ({comment}): no {e:?} in {body}"));
            }
        }
    }
    // The cross-cluster answer names the caller the cluster-b sidecar
    // authenticated: the frontend of cluster-a.
    let (_, body) = curl(
        &curls
            .iter()
            .find(|(_, c)| c.contains("cluster-b"))
            .unwrap()
            .0,
    );
    assert!(
        body.contains("to spiffe://cluster-a.mesh/ns/default/sa/frontend"),
        "{body}"
    );

    // Live traffic reaches cluster-b and succeeds.
    run.until("live traffic to cluster-b", |l| {
        l.starts_with("traffic")
            && rate_of(l, "backend(cluster-b)").is_some_and(|(rps, ok)| rps > 0.0 && ok == "✔100%")
    });

    let pid = Pid::from_raw(run.child.id() as i32).unwrap();
    kill_process(pid, Signal::INT).unwrap();
    run.until("the teardown", |l| l == "✔ torn down");
    let status = run.exit_status("SIGINT");
    assert!(status.success(), "{status}");
    assert!(!state_dir.exists(), "{} left behind", state_dir.display());
    for (url, _) in &curls {
        let addr = addr_of(url);
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} still taken: {e}"));
    }
    assert_ports_free(PORT_BASE);
}

#[test]
fn dev_down_stops_a_dev_up_started_with_a_state_dir() {
    let outer = tempfile::tempdir().unwrap();
    let state = outer.path().join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let mut run = Run::start(&[
        "--port-base",
        &DOWN_PORT_BASE.to_string(),
        "--state-dir",
        &state_arg,
    ]);
    run.until("the end of the commands", |l| {
        l.contains("Ctrl-C tears everything down")
    });
    assert!(state.join("dev-up.pid").is_file());

    let down = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["dev", "down", "--state-dir", &state_arg])
        .output()
        .expect("run meshctl dev down");
    let said = String::from_utf8_lossy(&down.stdout).into_owned();
    if !down.status.success() || !said.starts_with("✔ dev up (pid ") {
        run.fail(&format!(
            "dev down: {}: {said}{}",
            down.status,
            String::from_utf8_lossy(&down.stderr)
        ));
    }
    // dev down returns once dev up has exited: its teardown is complete.
    let status = run.exit_status("dev down");
    assert!(status.success(), "{status}");
    run.until("the teardown", |l| l == "✔ torn down");
    assert!(state.join("logs").is_dir(), "a given state dir is kept");
    assert!(!state.join("dev-up.pid").exists());
    assert_ports_free(DOWN_PORT_BASE);

    // Nothing runs there any more: a second dev down says so.
    let again = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["dev", "down", "--state-dir", &state_arg])
        .output()
        .expect("run meshctl dev down");
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("no dev up runs with"), "{err}");
}
