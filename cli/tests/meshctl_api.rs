//! End to end: the built meshctl binary against in-test fake admin servers
//! (tests/support/fake_admin.rs) implementing the REST contract: contexts,
//! apply → get → delete, export/unexport, tokens, link and unlink across two
//! fakes (the token travels from A to B), status, and check's exit codes.

mod support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use support::fake_admin::{FakeAdmin, World};

/// What one meshctl run did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A private HOME and contexts file for one test.
struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("meshctl.yaml");
        Self { dir, config }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(args)
            .env("MESHCTL_CONFIG", &self.config)
            .env("HOME", self.dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and expects exit 0.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "meshctl {args:?}: {run:?}");
        run
    }

    fn context(&self, name: &str, fake: &FakeAdmin) {
        self.ok(&["config", "set-context", name, "--server", &fake.url()]);
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

fn world() -> Arc<Mutex<World>> {
    Arc::new(Mutex::new(World::default()))
}

const EXPORT_WEB: &str = "\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: web
  namespace: shop
---
apiVersion: isthmus.dev/v1alpha1
kind: FailoverPolicy
metadata:
  name: web
  namespace: shop
spec:
  service: web
  targets:
    - cluster: cluster-b
";

#[test]
fn contexts_are_managed_in_the_file() {
    let env = Env::new();
    let run = env.run(&["config", "current-context"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("current-context is not set"), "{run:?}");

    let run = env.ok(&[
        "config",
        "set-context",
        "a",
        "--server",
        "http://127.0.1.2:15014",
    ]);
    assert!(
        run.stdout
            .contains("Context \"a\" created (now the current context)."),
        "{run:?}"
    );
    env.write("tok", "s3cret\n");
    let tok = env.dir.path().join("tok").display().to_string();
    env.ok(&[
        "config",
        "set-context",
        "b",
        "--server",
        "http://127.0.2.2:15014",
        "--token-file",
        &tok,
    ]);
    assert_eq!(env.ok(&["config", "current-context"]).stdout, "a\n");
    env.ok(&["config", "use-context", "b"]);
    assert_eq!(env.ok(&["config", "current-context"]).stdout, "b\n");

    let table = env.ok(&["config", "get-contexts"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("CURRENT   NAME   SERVER"), "{table}");
    assert!(
        lines[1].contains(" a ") && !lines[1].starts_with('*'),
        "{table}"
    );
    assert!(
        lines[2].starts_with('*') && lines[2].ends_with("token-file"),
        "{table}"
    );
    assert!(!table.contains("s3cret"));

    let json: Value =
        serde_json::from_str(&env.ok(&["config", "get-contexts", "-o", "json"]).stdout).unwrap();
    assert_eq!(json[1]["name"], "b");
    assert_eq!(json[1]["current"], true);

    let run = env.run(&["config", "use-context", "nope"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("known: a, b"), "{run:?}");
    let run = env.run(&["config", "set-context", "c"]);
    assert_eq!(run.code, 2, "a new context needs --server: {run:?}");
    let run = env.run(&["config", "set-context", "c", "--server", "https://x:1"]);
    assert_eq!(run.code, 2, "{run:?}");

    env.ok(&["config", "delete-context", "b"]);
    assert_eq!(env.run(&["config", "current-context"]).code, 1);
    let file = std::fs::read_to_string(&env.config).unwrap();
    assert!(
        file.contains("name: a") && !file.contains("name: b"),
        "{file}"
    );

    // --config overrides MESHCTL_CONFIG.
    let other = env.dir.path().join("other.yaml").display().to_string();
    env.ok(&[
        "config",
        "set-context",
        "z",
        "--server",
        "http://127.0.0.1:1",
        "--config",
        &other,
    ]);
    assert!(std::fs::read_to_string(&other).unwrap().contains("name: z"));
    assert!(!std::fs::read_to_string(&env.config)
        .unwrap()
        .contains("name: z"));
}

#[test]
fn apply_get_delete_round_trip() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    let env = Env::new();
    env.context("a", &a);
    let file = env.write("web.yaml", EXPORT_WEB);

    let run = env.ok(&["apply", "-f", &file]);
    assert_eq!(
        run.stdout,
        "serviceexport.multicluster.x-k8s.io/web created\nfailoverpolicy.isthmus.dev/web created\n"
    );
    let run = env.ok(&["apply", "-f", &file]);
    assert!(
        run.stdout
            .contains("serviceexport.multicluster.x-k8s.io/web unchanged"),
        "{run:?}"
    );

    let run = env.ok(&["get", "svcex", "-n", "shop"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "NAME   VALID   CONFLICT   AGE", "{run:?}");
    assert!(
        lines[1].starts_with("web    True    False      "),
        "{run:?}"
    );

    let run = env.ok(&["get", "serviceexports", "web", "-n", "shop", "-o", "json"]);
    let item: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(item["kind"], "ServiceExport");
    assert_eq!(item["metadata"]["namespace"], "shop");

    let run = env.ok(&["get", "fp", "-A", "-o", "yaml"]);
    assert!(
        run.stdout.starts_with("apiVersion: v1\nitems:\n"),
        "{run:?}"
    );
    assert!(run.stdout.contains("kind: FailoverPolicy"), "{run:?}");
    let run = env.ok(&["get", "fp", "-A"]);
    assert!(
        run.stdout
            .starts_with("NAMESPACE   NAME   SERVICE   TARGETS"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("shop        web    web       cluster:cluster-b"),
        "{run:?}"
    );

    // The default namespace has none: kubectl's message on stderr, exit 0.
    let run = env.ok(&["get", "svcex"]);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "No resources found in default namespace.\n");

    let run = env.ok(&["delete", "svcex", "web", "-n", "shop"]);
    assert_eq!(
        run.stdout,
        "serviceexport.multicluster.x-k8s.io \"web\" deleted\n"
    );
    let run = env.run(&["get", "svcex", "web", "-n", "shop"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("404 Not Found: serviceexports shop/web not found"),
        "{run:?}"
    );
    let run = env.run(&["delete", "svcex", "web", "-n", "shop"]);
    assert_eq!(run.code, 1, "{run:?}");
    env.ok(&["delete", "svcex", "web", "-n", "shop", "--ignore-not-found"]);

    // delete -f removes what the file names.
    let run = env.ok(&["delete", "-f", &file, "--ignore-not-found"]);
    assert_eq!(run.stdout, "failoverpolicy.isthmus.dev \"web\" deleted\n");
    assert!(a.state.lock().unwrap().resources.is_empty());
}

#[test]
fn invalid_input_is_refused_before_sending() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    let env = Env::new();
    env.context("a", &a);
    let bad = env.write(
        "bad.yaml",
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: Bad_Name\n  colour: blue\n",
    );
    let run = env.run(&["apply", "-f", &bad]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("bad.yaml: document 1 (ServiceExport default/Bad_Name): metadata.name"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("metadata.colour") || run.stderr.contains("colour"),
        "{run:?}"
    );
    assert!(run.stderr.contains("nothing applied"), "{run:?}");
    assert!(a.state.lock().unwrap().requests.is_empty(), "nothing sent");

    // Unknown kinds go to the server, whose 422 messages are printed one per line.
    let run = env.run_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: isthmus.dev/v1alpha1\nkind: Gadget\nmetadata:\n  name: g\n---\napiVersion: isthmus.dev/v1alpha1\nkind: Gizmo\nmetadata:\n  name: h\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "✘ POST /v1/apply: 422 Unprocessable Entity:\n  <stdin>: document 1: kind: Unsupported value: \"Gadget\"\n  <stdin>: document 2: kind: Unsupported value: \"Gizmo\"\n"
    );

    let run = env.run(&["get", "pods"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("unknown resource type \"pods\""),
        "{run:?}"
    );
    let run = env.run(&["delete", "svcim", "web"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unexport"), "{run:?}");
    assert_eq!(env.run(&["get"]).code, 2, "clap usage error");
}

#[test]
fn export_unexport_and_join_tokens() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    let env = Env::new();
    env.context("a", &a);
    let run = env.ok(&["export", "web", "-n", "shop"]);
    assert_eq!(
        run.stdout,
        "serviceexport.multicluster.x-k8s.io/web created\n"
    );
    let run = env.ok(&["get", "svcex", "-A"]);
    assert!(run.stdout.contains("shop        web "), "{run:?}");
    let run = env.ok(&["unexport", "web", "-n", "shop"]);
    assert_eq!(
        run.stdout,
        "serviceexport.multicluster.x-k8s.io \"web\" deleted\n"
    );
    assert_eq!(env.run(&["unexport", "web", "-n", "shop"]).code, 1);
    assert_eq!(env.run(&["export", "Not_Valid"]).code, 2);

    let run = env.ok(&[
        "token",
        "create",
        "--namespace",
        "shop",
        "--service-account",
        "web",
        "--ttl",
        "2h",
    ]);
    assert_eq!(run.stdout, "join.shop.web.7200\n");
    let run = env.ok(&[
        "token",
        "create",
        "-n",
        "shop",
        "--service-account",
        "web",
        "-o",
        "json",
    ]);
    let token: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(token["token"], "join.shop.web.3600");
    assert_eq!(token["expiresAt"], "2030-01-01T00:00:00Z");

    let run = env.ok(&["ca", "rotate"]);
    assert!(
        run.stdout
            .starts_with("✔ root rotation started on a: new root sequence 2"),
        "{run:?}"
    );
}

#[test]
fn bearer_tokens_and_unreachable_controllers() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    a.state.lock().unwrap().token = Some("s3cret".into());
    let env = Env::new();
    env.context("a", &a);
    let run = env.run(&["get", "svcex"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("401 Unauthorized: missing or invalid bearer token"),
        "{run:?}"
    );
    env.ok(&["config", "set-context", "a", "--token", "s3cret"]);
    env.ok(&["get", "svcex"]);

    // A port nothing listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    env.ok(&["config", "set-context", "gone", "--server", &url]);
    let run = env.run(&["status", "--context", "gone"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach controller at {url} (context gone)")),
        "{run:?}"
    );
    let run = env.run(&["check", "--context", "gone"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("✘ cannot reach controller"), "{run:?}");
    let run = env.run(&["get", "svcex", "--context", "nope"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("context \"nope\" not found"), "{run:?}");
}

#[test]
fn link_check_and_unlink_two_clusters() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    let b = FakeAdmin::start("cluster-b", &w);
    let env = Env::new();
    env.context("a", &a);
    env.context("b", &b);

    let run = env.ok(&["link", "a", "b"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[0].starts_with("✔ peering token created on a (expires "),
        "{run:?}"
    );
    assert_eq!(
        lines[1],
        "✔ b linked with cluster-a (trust domain cluster-a.mesh)"
    );
    assert_eq!(a.state.lock().unwrap().peers, vec!["cluster-b"]);
    assert_eq!(b.state.lock().unwrap().peers, vec!["cluster-a"]);

    // The peers as MeshLinks: cluster-wide, whatever their namespace.
    let run = env.ok(&["get", "links", "--context", "a"]);
    assert!(
        run.stdout
            .starts_with("NAME        PEER        TRUST DOMAIN     GATEWAYS"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("cluster-b   cluster-b   cluster-b.mesh   127.0.0.1:2"),
        "{run:?}"
    );
    let run = env.ok(&[
        "get",
        "meshlink",
        "cluster-b",
        "--context",
        "a",
        "-o",
        "json",
    ]);
    let link: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(link["spec"]["peerCluster"], "cluster-b");
    assert_eq!(
        env.run(&["get", "links", "cluster-z", "--context", "a"])
            .code,
        1
    );

    // B exports a service; A's status shows the import; all checks pass.
    env.ok(&["export", "api", "--context", "b"]);
    env.ok(&["export", "web", "--context", "a"]);
    let run = env.ok(&["check", "--context", "a"]);
    for expected in [
        "✔ controller of cluster-a reachable at http://",
        "✔ raft leader: node 1 (term 3)",
        "✔ CA valid for 3000 more days",
        "✔ peer cluster-b: trust bundle sequence 1, refreshed 12s ago",
        "✔ gateway 127.0.0.1:15443 → cluster-b: connected, rtt 0.3 ms",
        "✔ export default/web: imported by cluster-b",
        "✔ import default/api from cluster-b",
        "✔ all 8 checks passed",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?}: {run:?}"
        );
    }
    assert!(!run.stdout.contains('✘'), "{run:?}");

    // The tunnel to B goes down: check fails with exit 1.
    a.state
        .lock()
        .unwrap()
        .disconnected
        .push("cluster-b".into());
    let run = env.run(&["check", "--context", "a"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("✘ gateway 127.0.0.1:15443 → cluster-b: disconnected"),
        "{run:?}"
    );
    assert!(run.stdout.contains("✘ 1 of 8 checks failed"), "{run:?}");
    let run = env.run(&["check", "--context", "a", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .count(),
        1
    );
    a.state.lock().unwrap().disconnected.clear();
    env.ok(&["check", "--context", "a", "--wait", "5s"]);

    // status: the summary, and the server's JSON as it is.
    let run = env.ok(&["status", "--context", "a"]);
    assert!(
        run.stdout
            .starts_with("cluster:   cluster-a (trust domain cluster-a.mesh)\n"),
        "{run:?}"
    );
    assert!(run.stdout.contains("cluster-b   cluster-b.mesh"), "{run:?}");
    let run = env.ok(&["status", "--context", "a", "-o", "json"]);
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["peers"][0]["cluster"], "cluster-b");
    let run = env.ok(&["--context", "b", "status", "-o", "yaml"]);
    assert!(run.stdout.contains("cluster: cluster-b\n"), "{run:?}");

    let run = env.ok(&["unlink", "a", "b"]);
    assert_eq!(run.stdout, "✔ unlinked cluster-b from a (both sides)\n");
    assert!(a.state.lock().unwrap().peers.is_empty());
    assert!(b.state.lock().unwrap().peers.is_empty());
    let run = env.run(&["unlink", "cluster-b", "--context", "a"]);
    assert_eq!(run.code, 1, "already unlinked: {run:?}");
}

#[test]
fn two_step_link_with_a_token_file() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    let b = FakeAdmin::start("cluster-b", &w);
    let env = Env::new();
    env.context("a", &a);
    env.context("b", &b);
    let token_file = env.dir.path().join("peer.token").display().to_string();

    let run = env.ok(&[
        "link",
        "--create-token",
        "--context",
        "a",
        "--ttl",
        "5m",
        "-o",
        &token_file,
    ]);
    assert!(
        run.stdout
            .starts_with(&format!("✔ peering token of a written to {token_file}")),
        "{run:?}"
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let run = env.ok(&["link", "--token-file", &token_file, "--context", "b"]);
    assert_eq!(
        run.stdout,
        "✔ b linked with cluster-a (trust domain cluster-a.mesh)\n"
    );
    assert_eq!(a.state.lock().unwrap().peers, vec!["cluster-b"]);

    // Single use: a second redeem is refused by the issuer's rules (409).
    let run = env.run(&["link", "--token-file", &token_file, "--context", "b"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("409 Conflict: peering token already used"),
        "{run:?}"
    );

    // The token on stdout, redeemed from stdin.
    let token = env.ok(&["link", "--create-token", "--context", "b"]).stdout;
    assert!(token.starts_with("peer.cluster-b."), "{token}");
    let c = FakeAdmin::start("cluster-c", &w);
    env.context("c", &c);
    let run = env.run_with_stdin(&["link", "--token-file", "-", "--context", "c"], &token);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(c.state.lock().unwrap().peers, vec!["cluster-b"]);
}

#[test]
fn check_wait_retries_until_the_tunnel_is_up() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    let b = FakeAdmin::start("cluster-b", &w);
    let env = Env::new();
    env.context("a", &a);
    env.context("b", &b);
    env.ok(&["link", "a", "b"]);
    a.state
        .lock()
        .unwrap()
        .disconnected
        .push("cluster-b".into());

    // Still down when the wait is over: the last round's failure, exit 1.
    let run = env.run(&["check", "--context", "a", "--wait", "2s"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("✘ gateway 127.0.0.1:15443 → cluster-b: disconnected"),
        "{run:?}"
    );

    // Comes up once meshctl has seen it down: the retry finds it, exit 0.
    let state = a.state.clone();
    let before = state.lock().unwrap().requests.len();
    let fixer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let mut s = state.lock().unwrap();
            if s.requests[before..].iter().any(|r| r == "GET /v1/status") {
                s.disconnected.clear();
                return true;
            }
            drop(s);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    });
    let run = env.run(&["check", "--context", "a", "--wait", "30s"]);
    assert!(fixer.join().unwrap(), "meshctl never asked for the status");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("✔ gateway 127.0.0.1:15443 → cluster-b: connected"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains('✘'),
        "only the last round is printed: {run:?}"
    );
}

#[test]
fn link_failures_name_the_step_and_context() {
    let w = world();
    let a = FakeAdmin::start("cluster-a", &w);
    let env = Env::new();
    env.context("a", &a);
    env.context("a2", &a);
    // Both contexts are the same cluster: the fake refuses, the step is named.
    let run = env.run(&["link", "a", "a2"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with("✔ peering token created on a"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("redeeming a's token on context a2: POST /v1/peering/redeem: 400 Bad Request: cannot link a cluster with itself"),
        "{run:?}"
    );
    assert_eq!(env.run(&["link", "a", "a"]).code, 2);
    assert!(a.state.lock().unwrap().peers.is_empty());
}
