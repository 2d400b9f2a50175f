//! The [`Wan`] harness: one network namespace per cluster, each with a TUN
//! device `wan` owned by a router thread of this process, which forwards
//! packets between them through a [`Router`] core.
//!
//! The router runs inside the test process (a thread with a current-thread
//! tokio runtime), not as a separate binary: the TUN descriptors then belong
//! to the test process, so the kernel removes the devices whenever it dies,
//! even by SIGKILL; link changes are plain method calls with no control
//! protocol; and there is no extra binary to locate or build.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tokio::sync::{oneshot, Notify};
use tun_rs::{AsyncDevice, DeviceBuilder};

use super::cleanup::{self, ip, Namespaces};
use super::link::{LinkConfig, LinkStats};
use super::router::{cluster_addr, Router, MAX_CLUSTERS};
use crate::process::Spec;

/// Name of the WAN interface inside each namespace.
pub const WAN_IF: &str = "wan";
/// MTU of the WAN interfaces.
pub const MTU: u16 = 1500;

/// Runs of [`Wan::start`] in this process, for unique names.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// Clusters in network namespaces joined by an emulated WAN. Dropping it
/// stops the router (which removes the TUN devices) and deletes the
/// namespaces.
pub struct Wan {
    clusters: Vec<Cluster>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Last: dropped after the router has stopped.
    namespaces: Namespaces,
}

/// One cluster of a [`Wan`].
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The name given to [`Wan::start`].
    pub name: String,
    /// Its network namespace (`isthmus-<pid>-<run>-<name>`).
    pub netns: String,
    /// Its address on the WAN (`198.18.<i+1>.1`; the cluster owns the /24).
    pub addr: Ipv4Addr,
}

/// State shared by the handle and the router thread.
struct Shared {
    router: Mutex<Router>,
    /// Wakes the scheduler: a packet was queued or a link changed.
    wake: Notify,
}

impl Wan {
    /// Creates one namespace per name in `clusters` (lowercase letters,
    /// digits, `-`), joined by links all set to `link`, jitter and loss
    /// seeded with a fixed seed.
    ///
    /// # Errors
    /// Any setup step failed (not root, no `ip`, no `/dev/net/tun`); what
    /// was made is torn down before returning.
    pub fn start(clusters: &[&str], link: LinkConfig) -> Result<Self> {
        Self::start_seeded(clusters, link, 0x1571_4a05)
    }

    /// [`Wan::start`] with an explicit RNG seed.
    ///
    /// # Errors
    /// As [`Wan::start`].
    pub fn start_seeded(names: &[&str], link: LinkConfig, seed: u64) -> Result<Self> {
        if names.is_empty() || names.len() > MAX_CLUSTERS {
            bail!(
                "a WAN needs 1..={MAX_CLUSTERS} clusters, got {}",
                names.len()
            );
        }
        for (i, n) in names.iter().enumerate() {
            let valid = !n.is_empty()
                && n.len() <= 32
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid || names[..i].contains(n) {
                bail!("cluster name {n:?} is invalid or repeated");
            }
        }
        cleanup::install_signal_hook()?;
        cleanup::sweep().context("sweeping namespaces of dead runs")?;

        let pid = std::process::id();
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let mut namespaces = Namespaces::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the router runtime")?;
        let mut devices = Vec::new();
        let mut clusters = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let netns = format!("{}{pid}-{run}-{name}", cleanup::PREFIX);
            let tun = format!("iw{pid:x}r{run:x}c{i}");
            if tun.len() > 15 {
                bail!("TUN name {tun} too long");
            }
            namespaces.add(&netns)?;
            let device = {
                let _guard = rt.enter();
                DeviceBuilder::new()
                    .name(&tun)
                    .build_async()
                    .with_context(|| format!("creating TUN {tun} (/dev/net/tun, root)"))?
            };
            let addr = cluster_addr(i);
            configure(&netns, &tun, addr)
                .with_context(|| format!("setting up cluster {name} in {netns}"))?;
            devices.push(Arc::new(device));
            clusters.push(Cluster {
                name: (*name).to_owned(),
                netns,
                addr,
            });
        }

        let shared = Arc::new(Shared {
            router: Mutex::new(Router::new(names.len(), link, seed)),
            wake: Notify::new(),
        });
        let (stop, stopped) = oneshot::channel();
        let driver = shared.clone();
        let thread = std::thread::Builder::new()
            .name("isthmus-wan-router".into())
            .spawn(move || rt.block_on(drive(driver, devices, stopped)))
            .context("spawning the router thread")?;
        Ok(Wan {
            clusters,
            shared,
            stop: Some(stop),
            thread: Some(thread),
            namespaces,
        })
    }

    /// The clusters, in the order given.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// The cluster called `name`.
    ///
    /// # Panics
    /// If there is none (a test bug).
    pub fn cluster(&self, name: &str) -> &Cluster {
        &self.clusters[self.index(name)]
    }

    /// `name`'s WAN address.
    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.cluster(name).addr
    }

    /// `name`'s namespace.
    pub fn netns(&self, name: &str) -> &str {
        &self.cluster(name).netns
    }

    /// A command running `program` inside `cluster`'s namespace (see
    /// [`netns_command`]).
    pub fn command(&self, cluster: &str, program: impl AsRef<OsStr>) -> Command {
        netns_command(self.netns(cluster), program)
    }

    /// A [`Spec`] (for [`crate::process::Process`]) running `program` inside
    /// `cluster`'s namespace; add its arguments with [`Spec::arg`].
    pub fn spec(&self, cluster: &str, program: impl AsRef<OsStr>) -> Spec {
        netns_spec(self.netns(cluster), program)
    }

    /// Adds address `198.18.<i+1>.<host>` to `cluster` (on its loopback; the
    /// cluster owns the /24, so the router delivers it there) and returns it:
    /// for a second gateway or server with its own address.
    ///
    /// # Errors
    /// `host` is 0, 1 (the WAN address) or 255, or `ip addr add` failed.
    pub fn add_addr(&self, cluster: &str, host: u8) -> Result<Ipv4Addr> {
        if host <= 1 || host == 255 {
            bail!("host part {host} is reserved");
        }
        let [a, b, c, _] = self.addr(cluster).octets();
        let addr = Ipv4Addr::new(a, b, c, host);
        ip(&[
            "-n",
            self.netns(cluster),
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ])?;
        Ok(addr)
    }

    /// Sets every link, both directions, to `link` (keeps partitions).
    pub fn set_all_links(&self, link: LinkConfig) {
        let mut router = self.router();
        let n = router.clusters();
        for from in 0..n {
            for to in 0..n {
                router.link_mut(from, to).set_config(link);
            }
        }
        drop(router);
        self.shared.wake.notify_one();
    }

    /// Sets both directions between `a` and `b` to `link` (keeps partitions).
    pub fn set_link(&self, a: &str, b: &str, link: LinkConfig) {
        self.set_path(a, b, link);
        self.set_path(b, a, link);
    }

    /// Sets the direction `from` → `to` to `link` (keeps partitions).
    pub fn set_path(&self, from: &str, to: &str, link: LinkConfig) {
        let (f, t) = (self.index(from), self.index(to));
        self.router().link_mut(f, t).set_config(link);
        self.shared.wake.notify_one();
    }

    /// Drops everything between `a` and `b`, both ways, including packets
    /// in flight.
    pub fn partition(&self, a: &str, b: &str) {
        self.set_partitioned(a, b, true);
    }

    /// Undoes [`Wan::partition`].
    pub fn heal(&self, a: &str, b: &str) {
        self.set_partitioned(a, b, false);
    }

    /// Counters of the direction `from` → `to`.
    pub fn stats(&self, from: &str, to: &str) -> LinkStats {
        let (f, t) = (self.index(from), self.index(to));
        self.router().stats(f, t)
    }

    /// Packets the router dropped because they were not IPv4 or were
    /// addressed outside every cluster's /24.
    pub fn unroutable(&self) -> u64 {
        self.router().unroutable()
    }

    fn set_partitioned(&self, a: &str, b: &str, partitioned: bool) {
        let (a, b) = (self.index(a), self.index(b));
        let mut router = self.router();
        router.link_mut(a, b).set_partitioned(partitioned);
        router.link_mut(b, a).set_partitioned(partitioned);
        drop(router);
        self.shared.wake.notify_one();
    }

    fn index(&self, name: &str) -> usize {
        self.clusters
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cluster {name:?} in this WAN"))
    }

    fn router(&self) -> MutexGuard<'_, Router> {
        self.shared.router()
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The router thread never panics by design; if it did, the
            // namespaces below are still deleted.
            let _ = thread.join();
        }
        // `namespaces` drops next and deletes them.
    }
}

impl std::fmt::Debug for Wan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wan")
            .field("clusters", &self.clusters)
            .field("namespaces", &self.namespaces.names())
            .finish()
    }
}

impl Shared {
    fn router(&self) -> MutexGuard<'_, Router> {
        // The router's state stays valid if a holder panicked.
        self.router.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `ip netns exec <netns> setpriv --pdeathsig KILL -- <program>`: the
/// program runs in the namespace and is killed if the thread that spawned it
/// dies (so a killed test leaves no servers behind; spawn from the thread
/// that owns the result).
pub fn netns_command(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        netns,
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
    ])
    .arg(program);
    cmd
}

/// [`netns_command`] as a [`Spec`].
pub fn netns_spec(netns: &str, program: impl AsRef<OsStr>) -> Spec {
    Spec::new("ip")
        .arg("netns")
        .arg("exec")
        .arg(netns)
        .arg("setpriv")
        .arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(program.as_ref())
}

/// Moves `tun` into `netns` as `wan` with `addr`/24 and a route to the
/// whole 198.18.0.0/15 through it; brings up loopback.
fn configure(netns: &str, tun: &str, addr: Ipv4Addr) -> Result<()> {
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&["link", "set", tun, "netns", netns])?;
    ip(&["-n", netns, "link", "set", tun, "name", WAN_IF])?;
    ip(&["-n", netns, "link", "set", WAN_IF, "mtu", &MTU.to_string()])?;
    ip(&[
        "-n",
        netns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        WAN_IF,
    ])?;
    ip(&["-n", netns, "link", "set", WAN_IF, "up"])?;
    ip(&[
        "-n",
        netns,
        "route",
        "add",
        "198.18.0.0/15",
        "dev",
        WAN_IF,
        "src",
        &addr.to_string(),
    ])
}

/// The router thread: one reader task per TUN feeding the core, and this
/// task writing out what the core says is due, sleeping until the next
/// deadline or a wake-up.
async fn drive(
    shared: Arc<Shared>,
    devices: Vec<Arc<AsyncDevice>>,
    stopped: oneshot::Receiver<()>,
) {
    for (i, dev) in devices.iter().enumerate() {
        tokio::spawn(read_loop(shared.clone(), dev.clone(), i));
    }
    let schedule = async {
        let mut due = Vec::new();
        loop {
            let next = {
                let mut router = shared.router();
                let now = Instant::now();
                while let Some(tx) = router.poll_transmit(now) {
                    due.push(tx);
                }
                router.poll_timeout()
            };
            for tx in due.drain(..) {
                // A full or vanished TUN queue is a lost packet, as on a
                // real link.
                let _ = devices[tx.to].try_send(&tx.packet);
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = shared.wake.notified() => {}
                    }
                }
                None => shared.wake.notified().await,
            }
        }
    };
    tokio::select! {
        _ = stopped => {}
        () = schedule => {}
    }
}

async fn read_loop(shared: Arc<Shared>, dev: Arc<AsyncDevice>, from: usize) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match dev.recv(&mut buf).await {
            Ok(n) => n,
            // The device is gone (teardown): stop reading.
            Err(_) => return,
        };
        let now = Instant::now();
        shared.router().handle_packet(from, buf[..n].to_vec(), now);
        shared.wake.notify_one();
    }
}
