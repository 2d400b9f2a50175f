//! Replicated store tests: in-process Raft nodes on 127.0.0.1 ephemeral
//! ports with a small idempotent state machine ([`Ledger`]).
//!
//! Polling waits use [`eventually`], whose patience comes from
//! `ISTHMUS_TEST_PATIENCE_MS` (default 20 000 ms).

#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_controller::store::{StateMachine, Store, StoreConfig, WriteError};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The test state machine: an append-only list of values, each write
/// carrying a unique id; a repeated id is ignored (exactly-once retries).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    /// Ids applied so far.
    seen: BTreeSet<u64>,
    /// Ids in apply order (each at most once by construction of `apply`).
    order: Vec<u64>,
    /// How many commands were ignored as repeats.
    repeats: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Put {
    id: u64,
}

impl StateMachine for Ledger {
    type Command = Put;
    /// Whether the command was new.
    type Response = bool;

    fn apply(&mut self, command: &Put) -> bool {
        if self.seen.insert(command.id) {
            self.order.push(command.id);
            true
        } else {
            self.repeats += 1;
            false
        }
    }
}

type Node = Arc<Store<Ledger>>;

fn patience() -> Duration {
    let ms = std::env::var("ISTHMUS_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    Duration::from_millis(ms)
}

/// Polls `check` every 10 ms until it yields a value; panics naming `what`
/// after [`patience`].
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Binds `addr` (port 0: ephemeral), retrying while a previous owner of the
/// same port is still releasing it.
async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + patience();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => assert!(Instant::now() < deadline, "bind {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts node `id` with its data in `dir`, on `addr` (port 0 for a new
/// one); returns the store and the bound address.
async fn start(
    id: u64,
    dir: &Path,
    addr: SocketAddr,
    join: Option<SocketAddr>,
    snapshot_every: u64,
) -> (Node, SocketAddr) {
    let listener = bind(addr).await;
    let local = listener.local_addr().expect("local addr");
    let config = StoreConfig {
        node_id: id,
        data_dir: dir.to_path_buf(),
        raft_listen: local,
        advertise: local.to_string(),
        join: join.map(|a| a.to_string()),
        snapshot_every,
    };
    let store = Store::open_with_listener(config, listener)
        .await
        .unwrap_or_else(|e| panic!("open node {id}: {e}"));
    (store, local)
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A cluster of nodes 1..=n in one temp dir.
struct Cluster {
    tmp: tempfile::TempDir,
    dirs: BTreeMap<u64, PathBuf>,
    addrs: BTreeMap<u64, SocketAddr>,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    /// Node 1 initializes, node k joins through node k-1.
    async fn start(n: u64, snapshot_every: u64) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster {
            dirs: (1..=n)
                .map(|id| (id, tmp.path().join(format!("node-{id}"))))
                .collect(),
            tmp,
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            // Node 2 joins through the leader, node 3 through follower 2
            // (the join is forwarded to the leader).
            let join = (id > 1).then(|| cluster.addrs[&(id - 1)]);
            let (store, addr) =
                start(id, &cluster.dirs[&id], any_port(), join, snapshot_every).await;
            cluster.addrs.insert(id, addr);
            cluster.nodes.insert(id, store);
        }
        cluster
    }

    /// Restarts every stopped node from its data dir on its old address.
    async fn restart_all(&mut self, snapshot_every: u64) {
        for (&id, dir) in &self.dirs {
            if !self.nodes.contains_key(&id) {
                let (store, _) = start(id, dir, self.addrs[&id], None, snapshot_every).await;
                self.nodes.insert(id, store);
            }
        }
    }

    async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    /// Waits until every running node names the same running leader.
    async fn leader(&self) -> u64 {
        eventually("all running nodes to agree on a running leader", || {
            let leaders: BTreeSet<Option<u64>> =
                self.nodes.values().map(|n| n.status().leader).collect();
            match leaders.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(leader)] if self.nodes.get(leader).is_some_and(|n| n.is_leader()) => {
                    Some(*leader)
                }
                _ => None,
            }
        })
        .await
    }

    /// Waits until every running node has applied the same state and
    /// returns it.
    async fn converged(&self) -> Ledger {
        eventually("all running nodes to apply the same state", || {
            let states: Vec<Arc<Ledger>> = self
                .nodes
                .values()
                .map(|n| n.watch().borrow().clone())
                .collect();
            let applied: BTreeSet<u64> = self
                .nodes
                .values()
                .map(|n| n.status().last_applied)
                .collect();
            (applied.len() == 1 && states.windows(2).all(|w| w[0] == w[1]))
                .then(|| (*states[0]).clone())
        })
        .await
    }
}

/// Asserts every id in `acked` is in `ledger` exactly once and nothing else
/// is.
fn assert_exactly_once(ledger: &Ledger, acked: &BTreeSet<u64>) {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for id in &ledger.order {
        *counts.entry(*id).or_default() += 1;
    }
    for id in acked {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "acknowledged write {id} must be present exactly once"
        );
    }
    assert!(
        counts.values().all(|&c| c == 1),
        "no id may be applied twice"
    );
    assert_eq!(
        ledger.order.len(),
        ledger.seen.len(),
        "order and seen must agree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_and_replicate() {
    let mut cluster = Cluster::start(3, 0).await;
    let leader = cluster.leader().await;
    let status = cluster.nodes[&leader].status();
    assert_eq!(
        status.voters.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "all three nodes are voters"
    );
    for (id, addr) in &status.voters {
        assert_eq!(
            addr,
            &cluster.addrs[id].to_string(),
            "voter {id} advertises its address"
        );
    }

    // Writes through every node (followers forward to the leader), each
    // immediately visible to a linearizable read on every node.
    let mut acked = BTreeSet::new();
    for i in 0..30u64 {
        let via = 1 + i % 3;
        let fresh = cluster.nodes[&via]
            .write(Put { id: i })
            .await
            .expect("write");
        assert!(fresh, "write {i} is new");
        acked.insert(i);
        for (id, node) in &cluster.nodes {
            let state = node.read().await.expect("linearizable read");
            assert!(
                state.seen.contains(&i),
                "node {id} reads write {i} after its ack"
            );
        }
    }
    // A repeated id is acknowledged but not applied again.
    assert!(!cluster.nodes[&2]
        .write(Put { id: 5 })
        .await
        .expect("repeat write"));
    let state = cluster.converged().await;
    assert_exactly_once(&state, &acked);
    assert_eq!(state.order, (0..30).collect::<Vec<_>>());
    assert_eq!(state.repeats, 1);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_during_writes_then_full_restart() {
    const WRITES: u64 = 1_000;
    const KILL_AT: usize = 300;
    let snapshot_every = 200;
    let mut cluster = Cluster::start(3, snapshot_every).await;
    let old_leader = cluster.leader().await;

    // The client: writes one by one, on failure retries the same id against
    // the next live node.
    let live: Arc<Mutex<BTreeMap<u64, Node>>> = Arc::new(Mutex::new(cluster.nodes.clone()));
    let client_live = live.clone();
    let client = tokio::spawn(async move {
        let mut acked = BTreeSet::new();
        let mut retried_writes = 0u64;
        let mut failures = 0u64;
        let mut turn = 0usize;
        let deadline = Instant::now() + patience() * 3;
        for id in 0..WRITES {
            let mut retried = false;
            loop {
                let node = {
                    let live = client_live.lock().expect("live lock");
                    let nodes: Vec<Node> = live.values().cloned().collect();
                    nodes[turn % nodes.len()].clone()
                };
                match node.write(Put { id }).await {
                    Ok(_) => {
                        acked.insert(id);
                        break;
                    }
                    Err(e) => {
                        assert!(Instant::now() < deadline, "write {id} never succeeded: {e}");
                        failures += 1;
                        retried = true;
                        turn += 1;
                        if matches!(e, WriteError::Shutdown) {
                            continue;
                        }
                    }
                }
            }
            retried_writes += u64::from(retried);
        }
        (acked, retried_writes, failures)
    });

    // Kill the leader after KILL_AT writes are applied there.
    let leader_node = cluster.nodes[&old_leader].clone();
    eventually("the first writes to be applied", || {
        (leader_node.watch().borrow().order.len() >= KILL_AT).then_some(())
    })
    .await;
    live.lock().expect("live lock").remove(&old_leader);
    let killed_at = Instant::now();
    cluster.stop(old_leader).await;
    let shutdown_ms = killed_at.elapsed().as_millis();
    drop(leader_node);
    let new_leader = cluster.leader().await;
    let failover_ms = killed_at.elapsed().as_millis();
    assert_ne!(new_leader, old_leader, "a new leader is elected");

    let (acked, retried_writes, failures) = client.await.expect("client task");
    assert_eq!(
        acked.len() as u64,
        WRITES,
        "the client got every write acknowledged"
    );
    let before = cluster.converged().await;
    assert_exactly_once(&before, &acked);
    println!(
        "failover: old leader {old_leader} killed (shutdown took {shutdown_ms} ms), new leader \
         {new_leader} agreed on by both survivors {failover_ms} ms after the kill; \
         {retried_writes} of {WRITES} writes retried ({failures} failed attempts), \
         {} repeats ignored by the state machine",
        before.repeats
    );

    // Stop the two survivors, restart all three from their data dirs.
    cluster.stop_all().await;
    cluster.restart_all(snapshot_every).await;
    cluster.leader().await;
    for (id, node) in &cluster.nodes {
        let state = node.read().await.expect("read after restart");
        assert!(
            state.order.len() >= before.order.len(),
            "node {id} has at least the acknowledged state after restart"
        );
    }
    let after = cluster.converged().await;
    assert_eq!(
        after, before,
        "state after restarting all three is identical"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_node_restart_recovers() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster.leader().await;
    for id in 0..25 {
        assert!(cluster.nodes[&1].write(Put { id }).await.expect("write"));
    }
    let before = (*cluster.nodes[&1].read().await.expect("read")).clone();
    let status_before = cluster.nodes[&1].status();
    cluster.stop_all().await;

    cluster.restart_all(0).await;
    cluster.leader().await;
    let node = &cluster.nodes[&1];
    let after = node.read().await.expect("read after restart");
    assert_eq!(*after, before, "state recovered");
    let status = node.status();
    assert_eq!(status.voters, status_before.voters, "membership recovered");
    assert!(status.term >= status_before.term, "term does not go back");
    assert!(status.last_applied >= status_before.last_applied);
    assert!(node
        .write(Put { id: 100 })
        .await
        .expect("write after restart"));
    assert!(
        !node
            .write(Put { id: 3 })
            .await
            .expect("repeat after restart"),
        "dedup state recovered"
    );

    // The data dir belongs to node 1: opening it as node 2 is refused.
    cluster.stop_all().await;
    let listener = bind(any_port()).await;
    let local = listener.local_addr().expect("addr");
    let wrong = StoreConfig {
        node_id: 2,
        data_dir: cluster.dirs[&1].clone(),
        raft_listen: local,
        advertise: local.to_string(),
        join: None,
        snapshot_every: 0,
    };
    match Store::<Ledger>::open_with_listener(wrong, listener).await {
        Err(e) => assert!(e.to_string().contains("belongs to raft node 1"), "{e}"),
        Ok(_) => panic!("a data dir of node 1 must not open as node 2"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_compaction_and_restart_from_snapshot() {
    let snapshot_every = 50;
    let mut cluster = Cluster::start(1, snapshot_every).await;
    cluster.leader().await;
    for id in 0..130 {
        cluster.nodes[&1].write(Put { id }).await.expect("write");
    }
    let log = eventually("a snapshot and a purged log on node 1", || {
        let log = cluster.nodes[&1].log_status();
        (log.snapshot >= Some(50) && log.purged >= Some(50)).then_some(log)
    })
    .await;
    println!("node 1 after 130 writes: {log:?}");

    // A node joining now can only catch up from the snapshot: the log
    // before it is gone.
    let dir = cluster.tmp.path().join("node-2");
    cluster.dirs.insert(2, dir.clone());
    let (joined, addr) = start(2, &dir, any_port(), Some(cluster.addrs[&1]), snapshot_every).await;
    cluster.addrs.insert(2, addr);
    cluster.nodes.insert(2, joined);
    let state = cluster.converged().await;
    assert_eq!(state.order, (0..130).collect::<Vec<_>>());
    let joined_log = cluster.nodes[&2].log_status();
    assert!(
        joined_log.snapshot >= Some(50),
        "node 2 installed a snapshot: {joined_log:?}"
    );

    // More writes, then both restart from their data dirs (snapshot + the
    // log after it).
    for id in 130..160 {
        cluster.nodes[&2]
            .write(Put { id })
            .await
            .expect("write via follower");
    }
    let before = cluster.converged().await;
    cluster.stop_all().await;
    cluster.restart_all(snapshot_every).await;
    cluster.leader().await;
    for (id, node) in &cluster.nodes {
        let log = node.log_status();
        assert!(
            log.snapshot >= Some(50),
            "node {id} restarted from its snapshot: {log:?}"
        );
        assert!(
            log.purged >= Some(50),
            "node {id} log stays purged: {log:?}"
        );
    }
    let after = cluster.converged().await;
    assert_eq!(
        after, before,
        "state after restart from snapshot is identical"
    );
    assert_eq!(after.order, (0..160).collect::<Vec<_>>());
    cluster.stop_all().await;
}

/// Sends raw HTTP/1.1 to `addr` and returns the status code.
async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(patience(), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_endpoint_rejects_malformed_requests() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster.leader().await;
    let addr = cluster.addrs[&1];
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: raft\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(
        raw_status(addr, &post("/raft/append", "{not json")).await,
        400
    );
    assert_eq!(raw_status(addr, &post("/raft/vote", "[1,2,3]")).await, 400);
    assert_eq!(raw_status(addr, &post("/raft/join", "{}")).await, 400);
    assert_eq!(raw_status(addr, &post("/raft/nope", "{}")).await, 404);
    let get = "GET /raft/append HTTP/1.1\r\nHost: raft\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(addr, get).await, 405);
    // The node still works.
    assert!(cluster.nodes[&1].write(Put { id: 1 }).await.expect("write"));
    cluster.stop_all().await;
}
