//! Three `mesh-controller` processes form one cluster's Raft group. 1,000
//! ServiceExports are written one by one through the admin API; the leader
//! is killed with SIGKILL after the 300th. A failed write is retried
//! against another node (apply is idempotent by name, so a retried write is
//! exactly-once by name). After a new leader is elected every acknowledged
//! export is present exactly once on every node; after stopping and
//! restarting all three nodes the state is identical (names, uids,
//! resourceVersions, creationTimestamps, specs).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use multicluster_tests::controlplane::{
    raft_leader, service_export_yaml, AdminClient, ControlPlane, ControlPlaneOptions,
};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::ready::patience;
use multicluster_tests::Topology;
use serde_json::Value;

const CLUSTER: &str = "cluster-a";
const WRITES: usize = 1000;
const KILL_AFTER: usize = 300;

#[test]
fn three_node_raft_keeps_every_acknowledged_export_through_a_leader_kill_and_a_full_restart(
) -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("cp-raft")?;
        t.add_cluster(CLUSTER)?;
        let ips = (0..3)
            .map(|_| t.host(CLUSTER))
            .collect::<Result<Vec<_>>>()?;
        let options = ControlPlaneOptions {
            nodes: 3,
            ..ControlPlaneOptions::default()
        };
        let mut cp = ControlPlane::start(
            t.dir(),
            CLUSTER,
            "cluster-a.mesh",
            &ips,
            Vec::new(),
            &options,
        )?;
        let admins: Vec<AdminClient> = cp.nodes.iter().map(|n| n.admin()).collect();
        let first_leader = cp.leader()?;

        let started = Instant::now();
        let mut retries = 0usize;
        let mut acked: Vec<String> = Vec::with_capacity(WRITES);
        let mut target = index_of(first_leader)?;
        let mut failover: Option<std::thread::JoinHandle<Result<(u64, Duration)>>> = None;
        // The leader at the moment of the kill (it may have changed since
        // the start under load).
        let mut killed = first_leader;
        let mut write_latencies = Vec::with_capacity(WRITES);
        for i in 0..WRITES {
            if i == KILL_AFTER {
                let leader = cp.leader()?;
                let killed_at = Instant::now();
                cp.node(leader)?.kill9()?;
                killed = leader;
                failover = Some(watch_for_new_leader(admins.clone(), leader, killed_at));
                println!(
                    "killed the leader (node {leader}) after {KILL_AFTER} acknowledged writes"
                );
            }
            let name = format!("svc-{i:04}");
            let yaml = service_export_yaml("default", &name);
            let begin = Instant::now();
            loop {
                match admins[target].apply_yaml(&yaml) {
                    Ok(_) => break,
                    Err(e) => {
                        retries += 1;
                        ensure!(
                            begin.elapsed() < patience(),
                            "write {name} still failing after {:?}: {e:#}",
                            begin.elapsed()
                        );
                        // The next node; the killed one refuses connections at once.
                        target = (target + 1) % admins.len();
                    }
                }
            }
            write_latencies.push(begin.elapsed());
            acked.push(name);
        }
        let write_time = started.elapsed();
        let (new_leader, to_new_leader) = match failover {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("the leader watcher panicked"))??,
            None => bail!("the leader was never killed"),
        };
        ensure!(new_leader != killed, "the new leader is the killed node");

        // Every acknowledged write, exactly once, on every surviving node.
        let survivors: Vec<AdminClient> = cp.running_admins();
        let mut reference = None;
        for a in &survivors {
            let items = a.list("serviceexports", Some("default"))?;
            let snapshot = check_exactly_once(&items, &acked)
                .with_context(|| format!("node at {}", a.addr))?;
            match &reference {
                None => reference = Some(snapshot),
                Some(r) => ensure!(r == &snapshot, "node {} disagrees with the others", a.addr),
            }
        }
        let before = reference.ok_or_else(|| anyhow!("no survivor answered"))?;

        // The killed node comes back and catches up.
        cp.node(killed)?.restart()?;
        cp.node(killed)?.wait_ready()?;
        cp.wait_voters(3)?;
        let catch_up = Instant::now();
        let back = admins[index_of(killed)?].clone();
        multicluster_tests::ready::eventually(
            "the restarted node to catch up",
            patience(),
            || {
                let items = back.list("serviceexports", Some("default"))?;
                ensure!(check_exactly_once(&items, &acked)? == before, "differs");
                Ok(())
            },
        )?;
        let catch_up = catch_up.elapsed();

        // Stop all three, restart all three: identical state.
        for n in &mut cp.nodes {
            n.stop()?;
        }
        let restart = Instant::now();
        for n in &mut cp.nodes {
            n.restart()?;
        }
        for n in &mut cp.nodes {
            n.wait_ready()?;
        }
        cp.wait_voters(3)?;
        let restart = restart.elapsed();
        for a in &admins {
            let items = a.list("serviceexports", Some("default"))?;
            let after = check_exactly_once(&items, &acked)
                .with_context(|| format!("after the full restart, node at {}", a.addr))?;
            ensure!(
                after == before,
                "after the full restart node {} differs: {}",
                a.addr,
                first_difference(&before, &after)
            );
        }
        let leader_after = raft_leader(&admins[0].status()?)?;

        let mut lat = write_latencies.clone();
        lat.sort();
        let pct = |p: f64| lat[((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
        println!("raft failover figures (3 nodes, loopback, debug build unless --release):");
        println!(
            "  {WRITES} ServiceExports written one by one in {:.2} s ({:.0}/s); write latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            write_time.as_secs_f64(),
            WRITES as f64 / write_time.as_secs_f64(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            lat[lat.len() - 1].as_secs_f64() * 1e3
        );
        println!(
            "  leader node {killed} killed after write {KILL_AFTER} (node {first_leader} led at the start); node {new_leader} led after {:.0} ms; {retries} failed attempts retried on another node",
            to_new_leader.as_secs_f64() * 1e3
        );
        println!(
            "  every acknowledged export present exactly once on every node ({} items); the killed node caught up {:.0} ms after it was ready",
            before.len(),
            catch_up.as_secs_f64() * 1e3
        );
        println!(
            "  full stop + restart of all three: ready with 3 voters after {:.2} s, leader {leader_after:?}, state identical (uid, resourceVersion, creationTimestamp, spec)",
            restart.as_secs_f64()
        );
        Ok(())
    })
}

/// Node ids are 1..=3 in `ControlPlane::nodes` order.
fn index_of(node_id: u64) -> Result<usize> {
    match node_id {
        1..=3 => Ok((node_id - 1) as usize),
        other => bail!("unexpected node id {other}"),
    }
}

/// Polls the surviving nodes' `/v1/status` until one names a leader other
/// than `killed`; returns it and the time since `killed_at`.
fn watch_for_new_leader(
    admins: Vec<AdminClient>,
    killed: u64,
    killed_at: Instant,
) -> std::thread::JoinHandle<Result<(u64, Duration)>> {
    std::thread::spawn(move || loop {
        for (i, a) in admins.iter().enumerate() {
            if i as u64 + 1 == killed {
                continue;
            }
            if let Ok(Some(l)) = a.status().and_then(|s| raft_leader(&s)) {
                if l != killed {
                    return Ok((l, killed_at.elapsed()));
                }
            }
        }
        if killed_at.elapsed() > patience() {
            bail!("no new leader within {:?}", patience());
        }
        std::thread::sleep(Duration::from_millis(5));
    })
}

/// What identifies a stored export: uid, resourceVersion,
/// creationTimestamp and spec, by name.
type Snapshot = BTreeMap<String, Value>;

/// Checks that `items` holds each of `acked` exactly once and nothing
/// else; returns name → identifying fields.
fn check_exactly_once(items: &[Value], acked: &[String]) -> Result<Snapshot> {
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    for item in items {
        let name = item["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("an item without metadata.name: {item}"))?
            .to_owned();
        let ident = serde_json::json!({
            "uid": item["metadata"]["uid"],
            "resourceVersion": item["metadata"]["resourceVersion"],
            "creationTimestamp": item["metadata"]["creationTimestamp"],
            "spec": item["spec"],
        });
        ensure!(
            !item["metadata"]["uid"].is_null(),
            "{name} has no metadata.uid: {item}"
        );
        if seen.insert(name.clone(), ident).is_some() {
            bail!("{name} is listed twice");
        }
    }
    for name in acked {
        ensure!(
            seen.contains_key(name),
            "acknowledged export {name} is missing ({} items)",
            seen.len()
        );
    }
    ensure!(
        seen.len() == acked.len(),
        "{} items but {} acknowledged writes: extra {:?}",
        seen.len(),
        acked.len(),
        seen.keys()
            .filter(|k| !acked.contains(k))
            .take(5)
            .collect::<Vec<_>>()
    );
    Ok(seen)
}

fn first_difference(a: &Snapshot, b: &Snapshot) -> String {
    for (k, v) in a {
        match b.get(k) {
            None => return format!("{k} missing"),
            Some(w) if w != v => return format!("{k}: {v} vs {w}"),
            _ => {}
        }
    }
    "extra items".into()
}
