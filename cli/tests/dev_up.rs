//! End to end: the built `meshctl dev up` starts both clusters, the curl
//! commands it prints succeed with real curl (the cluster-b one answered
//! from cluster-b, through both gateways), live traffic flows, and SIGINT
//! tears everything down: exit 0, state dir gone, ports free.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// Ports: 21080, 28000–28443, 31080–31081 (below the ephemeral range).
const PORT_BASE: u16 = 21000;
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
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args([
                "dev",
                "up",
                "--port-base",
                &PORT_BASE.to_string(),
                "--rate",
                "5",
            ])
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
    let mut run = Run::start();
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
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            run.fail("meshctl did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!state_dir.exists(), "{} left behind", state_dir.display());
    for (url, _) in &curls {
        let addr = addr_of(url);
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} still taken: {e}"));
    }
    for gateway in ["127.0.1.2", "127.0.2.2"] {
        let addr: SocketAddr = format!("{gateway}:{}", PORT_BASE + 7443).parse().unwrap();
        UdpSocket::bind(addr).unwrap_or_else(|e| panic!("udp {addr} still taken: {e}"));
    }
}
