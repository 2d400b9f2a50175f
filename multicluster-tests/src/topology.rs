//! A builder for loopback multi-cluster topologies: clusters with their
//! gateway, workloads with sidecars, links and exports; it writes the PKI and
//! the YAML configs (per `docs/reference/data-path-config.md`) into a
//! temporary directory and [`Topology::start`]s the binaries.
//!
//! Layout of the directory: `<cluster>/ca.pem`, `ca-key.pem`,
//! `bundles.json`, `gateway.yaml`, `<workload>.yaml` and a `.log` per
//! component; config files name their neighbours by relative path.
//!
//! Two config modes: static (the default: every file lists its `peers`,
//! `exports` and `services`, identities issued from the harness's CAs) and
//! dynamic ([`Topology::use_control_plane`]: a `mesh-controller` per cluster,
//! components get a `control_plane` section and a join token
//! (`<component>.token`), links and exports go through the admin API).
//!
//! Two placements: loopback (the default: cluster `i` on its own
//! `127.x.y.0/24` of the test's namespace) and network namespaces
//! ([`Topology::use_wan`]: cluster `i` in its own namespace of a
//! [`Wan`] on `198.18.<i+1>.0/24`, every process spawned there, the WAN's
//! delay, loss and partitions between clusters). Either works with both
//! config modes. A cluster may run several gateway replicas
//! ([`Topology::gateway_replicas`]).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::config::{
    AppProtocol, ControlPlaneRef, Endpoint, Export, GatewayConfig, GatewayRef, GatewayTimeouts,
    Identity, Inbound, Locality, Outbound, Peer, PeerTransport, PemFiles, Protocol, Quic,
    Reconnect, Register, RegisterPort, Remote, Service, SidecarConfig, SidecarTimeouts,
};
use crate::controlplane::ControlPlaneOptions;
use crate::net::{Block, Subnet};
use crate::netns::{LinkConfig, Wan};
use crate::site::Site;

/// First host number of workloads and apps in a WAN cluster's /24 (`.1` is
/// gateway replica 0, `.2`–`.9` the other replicas).
const WAN_FIRST_HOST: u8 = 10;
/// Gateway replicas per cluster.
pub const MAX_GATEWAY_REPLICAS: usize = 9;

/// Timeouts and transport knobs written into every config.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Gateway `quic`.
    pub gateway_quic: Option<Quic>,
    /// Gateway `timeouts`.
    pub gateway_timeouts: Option<GatewayTimeouts>,
    /// Gateway `reconnect`.
    pub reconnect: Option<Reconnect>,
    /// Sidecar `gateway.keep_alive_ms`, ms.
    pub sidecar_gateway_keep_alive_ms: Option<u64>,
    /// Sidecar `gateway.idle_timeout_ms`, ms.
    pub sidecar_gateway_idle_timeout_ms: Option<u64>,
    /// Sidecar `timeouts`.
    pub sidecar_timeouts: Option<SidecarTimeouts>,
    /// Sidecar `max_header_bytes`, bytes.
    pub max_header_bytes: Option<u64>,
    /// `transport` of every gateway's `peers[]` entries (`None`: the key is
    /// left out, i.e. QUIC). With [`PeerTransport::TcpTls`] every gateway
    /// also gets a `tcp_listen` ([`Topology::gateway_tcp_listen`]) and
    /// every peer entry its `tcp_address`.
    pub peer_transport: Option<PeerTransport>,
    /// Gateway `tcp_congestion` (the TCP+TLS transport's congestion
    /// control, e.g. `cubic`); `None` leaves it out (the kernel default).
    pub gateway_tcp_congestion: Option<String>,
    /// Static mode: the `failover` section of every sidecar `services[]`
    /// entry (as documented in `docs/reference/data-path-config.md`);
    /// `None` leaves it out.
    pub service_failover: Option<serde_json::Value>,
    /// Static mode: the `resilience` section of every sidecar `services[]`
    /// entry; `None` leaves it out.
    pub service_resilience: Option<serde_json::Value>,
}

impl Tuning {
    /// Short timeouts so failure tests finish quickly: QUIC keep-alive 500 ms
    /// and idle timeout 3000 ms (gateways and sidecars), reconnect backoff
    /// 100–1000 ms, drain 1000 ms.
    pub fn fast() -> Self {
        Tuning {
            gateway_quic: Some(Quic {
                keep_alive_ms: Some(500),
                idle_timeout_ms: Some(3000),
            }),
            gateway_timeouts: Some(GatewayTimeouts {
                drain_ms: Some(1000),
                ..GatewayTimeouts::default()
            }),
            reconnect: Some(Reconnect {
                initial_backoff_ms: 100,
                max_backoff_ms: 1000,
            }),
            sidecar_gateway_keep_alive_ms: Some(500),
            sidecar_gateway_idle_timeout_ms: Some(3000),
            sidecar_timeouts: None,
            max_header_bytes: None,
            peer_transport: None,
            gateway_tcp_congestion: None,
            service_failover: None,
            service_resilience: None,
        }
    }

    /// The binaries' defaults everywhere (benchmarks).
    pub fn defaults() -> Self {
        Tuning::default()
    }
}

/// A workload: one service account with a sidecar.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Name, also its service account.
    pub name: String,
    /// Services it serves, one inbound listener each.
    pub inbound: Vec<InboundSpec>,
    /// Upstreams it calls, one outbound listener each.
    pub outbound: Vec<OutboundSpec>,
}

/// A service a workload serves through an inbound listener.
#[derive(Debug, Clone)]
pub struct InboundSpec {
    /// `namespace/name`.
    pub service: String,
    /// Service port.
    pub port: u16,
    /// `http` or `tcp`.
    pub protocol: Protocol,
    /// The app's address.
    pub app: SocketAddr,
    /// Allowed callers.
    pub allow: Vec<String>,
}

/// An upstream a workload calls through an outbound listener.
#[derive(Debug, Clone)]
pub struct OutboundSpec {
    /// `namespace/name`.
    pub service: String,
    /// Service port.
    pub port: u16,
    /// `http` or `tcp`.
    pub protocol: Protocol,
    /// Pin to one cluster.
    pub cluster: Option<String>,
}

impl Workload {
    /// A workload `namespace/name` with no listeners yet.
    pub fn new(namespace: &str, name: &str) -> Self {
        Workload {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            inbound: Vec::new(),
            outbound: Vec::new(),
        }
    }

    /// Serves `service:port` with the app at `app`, allowing `allow`.
    pub fn serves(
        mut self,
        service: &str,
        port: u16,
        protocol: Protocol,
        app: SocketAddr,
        allow: &[&str],
    ) -> Self {
        self.inbound.push(InboundSpec {
            service: service.to_owned(),
            port,
            protocol,
            app,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// Calls `service:port` through an outbound listener.
    pub fn calls(mut self, service: &str, port: u16, protocol: Protocol) -> Self {
        self.outbound.push(OutboundSpec {
            service: service.to_owned(),
            port,
            protocol,
            cluster: None,
        });
        self
    }
}

/// Where a workload was placed.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) spec: Workload,
    pub(crate) admin: SocketAddr,
    pub(crate) inbound_listen: Vec<SocketAddr>,
    pub(crate) outbound_listen: Vec<SocketAddr>,
}

/// Where one gateway replica listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatewayPlace {
    pub(crate) listen: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// Written as `tcp_listen` only with [`PeerTransport::TcpTls`].
    pub(crate) tcp_listen: SocketAddr,
}

/// A cluster's host addresses.
#[derive(Debug)]
enum Hosts {
    /// `127.x.y.0/24` in the test's namespace.
    Loopback(Subnet),
    /// `198.18.<i+1>.0/24` in the cluster's WAN namespace; the next host
    /// number to hand out.
    Wan { next: u8 },
}

#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) trust_domain: String,
    hosts: Hosts,
    /// Addresses handed out by [`Topology::host`] (workloads, apps).
    hosts_given: usize,
    /// Its region ([`Topology::set_region`]).
    pub(crate) region: Option<String>,
    /// Gateway replicas, replica 0 first (component `gateway`).
    pub(crate) gateways: Vec<GatewayPlace>,
    pub(crate) workloads: Vec<Placed>,
    /// Dynamic mode: the controller's gRPC address, set once it runs.
    pub(crate) controller_grpc: Option<SocketAddr>,
}

#[derive(Debug)]
pub(crate) struct ExportSpec {
    pub(crate) cluster: String,
    pub(crate) service: String,
    to: Vec<String>,
}

/// A multi-cluster topology under construction (then started with
/// [`Topology::start`]).
pub struct Topology {
    dir: TempDir,
    block: Block,
    pub(crate) clusters: Vec<Cluster>,
    /// Directed trust: `(a, b)` means a's gateway peers with b and a's
    /// bundle map holds b's bundle.
    trusts: BTreeSet<(String, String)>,
    pub(crate) exports: Vec<ExportSpec>,
    /// Dynamic mode ([`Topology::use_control_plane`]).
    pub(crate) control_plane: Option<ControlPlaneOptions>,
    /// Dynamic mode: resources applied through each cluster's admin API
    /// before the components start ([`Topology::apply_on_start`]).
    pub(crate) resources: Vec<(String, String)>,
    /// Knobs written into every config.
    pub tuning: Tuning,
    /// When set, every gateway and sidecar process runs pinned to this CPU
    /// list (`taskset -c` syntax; see [`crate::process::Spec::cpus`]).
    pub cpus: Option<String>,
    /// Network-namespace placement ([`Topology::use_wan`]).
    wan: Option<Wan>,
}

impl Topology {
    /// An empty topology in a fresh temp dir named after `test`, with
    /// [`Tuning::fast`]. The directory is removed on drop unless
    /// `ISTHMUS_TEST_KEEP=1`.
    ///
    /// # Errors
    /// The temp dir cannot be made.
    pub fn new(test: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("isthmus-{test}-"))
            .tempdir()
            .context("creating the topology temp dir")?;
        let mut dir = dir;
        if std::env::var("ISTHMUS_TEST_KEEP").is_ok_and(|v| v == "1") {
            dir.disable_cleanup(true);
        }
        // Other users (PostgreSQL's, when running as root) must traverse it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        Ok(Topology {
            dir,
            block: Block::allocate(),
            clusters: Vec::new(),
            trusts: BTreeSet::new(),
            exports: Vec::new(),
            control_plane: None,
            resources: Vec::new(),
            tuning: Tuning::fast(),
            cpus: None,
            wan: None,
        })
    }

    /// The temp dir everything is written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds cluster `name` with trust domain `<name>.mesh` and its gateway
    /// (QUIC on UDP 15443, admin on TCP 15021, TCP+TLS on TCP 15444 when
    /// used; the ports are preferred, not guaranteed).
    ///
    /// # Errors
    /// Too many clusters, or no free port.
    pub fn add_cluster(&mut self, name: &str) -> Result<()> {
        ensure!(
            self.wan.is_none(),
            "add every cluster before use_wan ({name} comes after)"
        );
        let subnet = self.block.subnet(self.clusters.len())?;
        let mut c = Cluster {
            name: name.to_owned(),
            trust_domain: format!("{name}.mesh"),
            hosts: Hosts::Loopback(subnet),
            hosts_given: 0,
            region: None,
            gateways: Vec::new(),
            workloads: Vec::new(),
            controller_grpc: None,
        };
        let first = place_gateway(&mut c, 0, None)?;
        c.gateways.push(first);
        self.clusters.push(c);
        std::fs::create_dir_all(self.dir().join(name))?;
        Ok(())
    }

    /// Moves every cluster into its own network namespace of a new [`Wan`]
    /// whose links all start as `link` (e.g. 15 ms each way for a 30 ms
    /// RTT): cluster `i` (in the order added) owns `198.18.<i+1>.0/24`,
    /// gateway replica `r` listens on `.<r+1>` (replica 0 on the WAN
    /// address), every other host (workloads, apps, controllers) gets the
    /// next address from `.10` (added to the namespace's loopback), and
    /// [`Topology::start`] spawns every process inside its cluster's
    /// namespace. Start apps with [`Topology::site`] (their namespace) and
    /// reach listeners through it; clients run there too
    /// (`site.command("h2load")`). The WAN is [`Topology::wan`] /
    /// [`crate::Mesh::wan`], torn down with the mesh.
    ///
    /// Call it after every [`Topology::add_cluster`] and before any host,
    /// workload or app is placed.
    ///
    /// # Errors
    /// Called twice, too late, or the WAN cannot be set up (not root, no
    /// `ip`, no `/dev/net/tun`): never skipped.
    pub fn use_wan(&mut self, link: LinkConfig) -> Result<()> {
        ensure!(self.wan.is_none(), "use_wan called twice");
        ensure!(!self.clusters.is_empty(), "add the clusters before use_wan");
        for c in &self.clusters {
            ensure!(
                c.hosts_given == 0,
                "use_wan must come before any host or workload of {} is placed",
                c.name
            );
        }
        let names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let wan = Wan::start(&names, link).context("starting the WAN (network namespaces)")?;
        for c in &mut self.clusters {
            c.hosts = Hosts::Wan {
                next: WAN_FIRST_HOST,
            };
            let replicas = c.gateways.len();
            c.gateways.clear();
            for r in 0..replicas {
                let place = place_gateway(c, r, Some(&wan))?;
                c.gateways.push(place);
            }
        }
        self.wan = Some(wan);
        Ok(())
    }

    /// The WAN of [`Topology::use_wan`], if used.
    pub fn wan(&self) -> Option<&Wan> {
        self.wan.as_ref()
    }

    /// Where `cluster`'s processes run: its WAN namespace, or the root
    /// namespace on loopback.
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn site(&self, cluster: &str) -> Result<Site> {
        self.cluster(cluster)?;
        Ok(match &self.wan {
            Some(w) => Site::netns(w.netns(cluster)),
            None => Site::root(),
        })
    }

    /// Runs `n` gateway replicas (1..=9) in `cluster`: replica 0 is the
    /// component `gateway`, replica `r` is `gateway-<r>`, each with its own
    /// address (and, in dynamic mode, its own join token). Every peer's
    /// `peers[]` entry for `cluster` lists them all as `addresses`, the
    /// cluster's sidecars get them as `gateway.addresses`, its controller
    /// as `gateways[]`.
    ///
    /// # Errors
    /// Unknown cluster, `n` out of range, or fewer than before.
    pub fn gateway_replicas(&mut self, cluster: &str, n: usize) -> Result<()> {
        ensure!(
            (1..=MAX_GATEWAY_REPLICAS).contains(&n),
            "gateway replicas must be 1..={MAX_GATEWAY_REPLICAS}, got {n}"
        );
        let wan = self.wan.take();
        let result = (|| {
            let c = self.cluster_mut(cluster)?;
            ensure!(
                n >= c.gateways.len(),
                "{cluster} already has {} gateway replicas",
                c.gateways.len()
            );
            for r in c.gateways.len()..n {
                let place = place_gateway(c, r, wan.as_ref())?;
                c.gateways.push(place);
            }
            Ok(())
        })();
        self.wan = wan;
        result
    }

    /// The component name of gateway replica `r`: `gateway` for 0, else
    /// `gateway-<r>`.
    pub fn gateway_component(r: usize) -> String {
        if r == 0 {
            "gateway".to_owned()
        } else {
            format!("gateway-{r}")
        }
    }

    /// The component names of `cluster`'s gateway replicas.
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn gateway_components(&self, cluster: &str) -> Result<Vec<String>> {
        Ok((0..self.cluster(cluster)?.gateways.len())
            .map(Self::gateway_component)
            .collect())
    }

    /// A fresh address in `cluster`'s subnet (for apps): loopback, or in
    /// WAN mode `198.18.<i+1>.<h>` added to the cluster's namespace.
    ///
    /// # Errors
    /// Unknown cluster, exhausted subnet, or `ip addr add` failed.
    pub fn host(&mut self, cluster: &str) -> Result<Ipv4Addr> {
        let wan = self.wan.take();
        let result = self.cluster_mut(cluster).and_then(|c| {
            c.hosts_given += 1;
            next_host(c, wan.as_ref())
        });
        self.wan = wan;
        result
    }

    /// Places `w` in `cluster`: its own address, admin on port 15000,
    /// inbound listeners from 15006, outbound from 18080.
    ///
    /// # Errors
    /// Unknown cluster, exhausted subnet or no free port.
    pub fn add_workload(&mut self, cluster: &str, w: Workload) -> Result<()> {
        let site = self.site(cluster)?;
        let ip = self.host(cluster)?;
        let c = self.cluster_mut(cluster)?;
        let inbound_listen = (0..w.inbound.len())
            .map(|i| site.tcp_addr(ip, 15006 + i as u16))
            .collect::<Result<_>>()?;
        let outbound_listen = (0..w.outbound.len())
            .map(|i| site.tcp_addr(ip, 18080 + i as u16))
            .collect::<Result<_>>()?;
        c.workloads.push(Placed {
            admin: site.tcp_addr(ip, 15000)?,
            spec: w,
            inbound_listen,
            outbound_listen,
        });
        Ok(())
    }

    /// Links `a` and `b` both ways (peers and bundles).
    pub fn link(&mut self, a: &str, b: &str) {
        self.trust_one_way(a, b);
        self.trust_one_way(b, a);
    }

    /// `from` peers with `to` and trusts its bundle; `to` knows nothing of
    /// `from` (an unlinked or half-linked cluster).
    pub fn trust_one_way(&mut self, from: &str, to: &str) {
        self.trusts.insert((from.to_owned(), to.to_owned()));
    }

    /// `cluster`'s gateway exports `service` (served by its workloads) to
    /// the clusters `to`.
    pub fn export(&mut self, cluster: &str, service: &str, to: &[&str]) {
        self.exports.push(ExportSpec {
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            to: to.iter().map(|s| (*s).to_owned()).collect(),
        });
    }

    /// Puts `cluster` in `region` (a DNS label): its controllers get
    /// `region`, its sidecars `locality.region`. Failover priorities rank
    /// other clusters of the same region before a policy's targets.
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn set_region(&mut self, cluster: &str, region: &str) -> Result<()> {
        self.cluster_mut(cluster)?.region = Some(region.to_owned());
        Ok(())
    }

    /// Switches to dynamic config: [`Topology::start`] runs a controller
    /// group per cluster (`options.nodes` nodes), links the linked clusters
    /// and applies the exports through its admin API, and the gateways and
    /// sidecars take their SVIDs, peers, exports and catalog from it
    /// (sidecars serving a service register themselves with a lease).
    /// Every link must be both ways, and a workload may serve one service.
    pub fn use_control_plane(&mut self, options: ControlPlaneOptions) {
        self.control_plane = Some(options);
    }

    /// Dynamic mode: [`Topology::start`] applies `yaml` (a YAML stream of
    /// resources, e.g. a `FailoverPolicy` and a `TrafficPolicy`) through
    /// `cluster`'s admin API after the links and exports and before any
    /// gateway or sidecar starts, so their first configuration has it.
    pub fn apply_on_start(&mut self, cluster: &str, yaml: &str) {
        self.resources.push((cluster.to_owned(), yaml.to_owned()));
    }

    /// Whether the configs come from controllers.
    pub fn is_dynamic(&self) -> bool {
        self.control_plane.is_some()
    }

    /// `spiffe://<cluster>.mesh/ns/<ns>/sa/<name>`.
    pub fn spiffe_id(cluster: &str, namespace: &str, name: &str) -> String {
        format!("spiffe://{cluster}.mesh/ns/{namespace}/sa/{name}")
    }

    /// The gateway's SPIFFE ID in `cluster`.
    pub fn gateway_id(cluster: &str) -> String {
        Self::spiffe_id(cluster, "isthmus-system", "east-west-gateway")
    }

    /// The outbound listener of `workload` in `cluster` for `service`.
    ///
    /// # Errors
    /// No such workload or outbound.
    pub fn outbound_addr(
        &self,
        cluster: &str,
        workload: &str,
        service: &str,
    ) -> Result<SocketAddr> {
        let w = self.workload(cluster, workload)?;
        w.spec
            .outbound
            .iter()
            .position(|o| o.service == service)
            .map(|i| w.outbound_listen[i])
            .ok_or_else(|| anyhow!("{cluster}/{workload} has no outbound for {service}"))
    }

    /// The inbound listener of `workload` in `cluster` for `service`.
    ///
    /// # Errors
    /// No such workload or inbound.
    pub fn inbound_addr(&self, cluster: &str, workload: &str, service: &str) -> Result<SocketAddr> {
        let w = self.workload(cluster, workload)?;
        w.spec
            .inbound
            .iter()
            .position(|o| o.service == service)
            .map(|i| w.inbound_listen[i])
            .ok_or_else(|| anyhow!("{cluster}/{workload} has no inbound for {service}"))
    }

    /// The admin listener of `workload`'s sidecar.
    ///
    /// # Errors
    /// No such workload.
    pub fn sidecar_admin(&self, cluster: &str, workload: &str) -> Result<SocketAddr> {
        Ok(self.workload(cluster, workload)?.admin)
    }

    /// The gateway's QUIC (UDP) address.
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn gateway_listen(&self, cluster: &str) -> Result<SocketAddr> {
        Ok(self.cluster(cluster)?.gateways[0].listen)
    }

    /// The QUIC (UDP) address of every gateway replica of `cluster`.
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn gateway_listens(&self, cluster: &str) -> Result<Vec<SocketAddr>> {
        Ok(self
            .cluster(cluster)?
            .gateways
            .iter()
            .map(|g| g.listen)
            .collect())
    }

    /// The gateway's TCP+TLS (`tcp_listen`) address; it is listened on only
    /// when [`Tuning::peer_transport`] is [`PeerTransport::TcpTls`].
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn gateway_tcp_listen(&self, cluster: &str) -> Result<SocketAddr> {
        Ok(self.cluster(cluster)?.gateways[0].tcp_listen)
    }

    /// Whether gateways reach their peers over the TCP+TLS transport.
    pub fn peers_over_tcp_tls(&self) -> bool {
        self.tuning.peer_transport == Some(PeerTransport::TcpTls)
    }

    /// The gateway's admin address.
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn gateway_admin(&self, cluster: &str) -> Result<SocketAddr> {
        self.gateway_replica_admin(cluster, 0)
    }

    /// The admin address of gateway replica `r` of `cluster`.
    ///
    /// # Errors
    /// Unknown cluster or replica.
    pub fn gateway_replica_admin(&self, cluster: &str, r: usize) -> Result<SocketAddr> {
        self.cluster(cluster)?
            .gateways
            .get(r)
            .map(|g| g.admin)
            .ok_or_else(|| anyhow!("{cluster} has no gateway replica {r}"))
    }

    /// The config file path of a component (`gateway` or a workload name).
    pub fn config_path(&self, cluster: &str, component: &str) -> PathBuf {
        self.dir().join(cluster).join(format!("{component}.yaml"))
    }

    /// The log file path of a component.
    pub fn log_path(&self, cluster: &str, component: &str) -> PathBuf {
        self.dir().join(cluster).join(format!("{component}.log"))
    }

    /// The gateway config of `cluster`, generated from the topology.
    ///
    /// # Errors
    /// Unknown cluster or an export of a service nobody serves.
    pub fn gateway_config(&self, cluster: &str) -> Result<GatewayConfig> {
        self.gateway_replica_config(cluster, 0)
    }

    /// The config of gateway replica `r` of `cluster` (replicas differ only
    /// in their listen and admin addresses and, in dynamic mode, their join
    /// token file).
    ///
    /// # Errors
    /// As [`Topology::gateway_config`], or no such replica.
    pub fn gateway_replica_config(&self, cluster: &str, r: usize) -> Result<GatewayConfig> {
        let c = self.cluster(cluster)?;
        let place = *c
            .gateways
            .get(r)
            .ok_or_else(|| anyhow!("{cluster} has no gateway replica {r}"))?;
        let tcp_tls = self.peers_over_tcp_tls();
        if self.is_dynamic() {
            let component = Self::gateway_component(r);
            return Ok(GatewayConfig {
                cluster: c.name.clone(),
                identity: dynamic_identity(Self::gateway_id(cluster)),
                listen: place.listen,
                admin: place.admin,
                tcp_listen: tcp_tls.then_some(place.tcp_listen),
                tcp_congestion: self.tuning.gateway_tcp_congestion.clone(),
                peers: Vec::new(),
                exports: Vec::new(),
                quic: self.tuning.gateway_quic.clone(),
                timeouts: self.tuning.gateway_timeouts.clone(),
                reconnect: self.tuning.reconnect.clone(),
                control_plane: Some(self.control_plane_ref(cluster, &component, None)?),
            });
        }
        let peers = self
            .trusted_by(cluster)
            .map(|p| {
                let pc = self.cluster(p)?;
                let one_or_many = |f: fn(&GatewayPlace) -> SocketAddr| match pc.gateways.as_slice()
                {
                    [one] => (Some(f(one).to_string()), None),
                    many => (None, Some(many.iter().map(|g| f(g).to_string()).collect())),
                };
                let (address, addresses) = one_or_many(|g| g.listen);
                let (tcp_address, tcp_addresses) = if tcp_tls {
                    one_or_many(|g| g.tcp_listen)
                } else {
                    (None, None)
                };
                Ok(Peer {
                    cluster: pc.name.clone(),
                    trust_domain: pc.trust_domain.clone(),
                    address,
                    addresses,
                    spiffe_id: Some(Self::gateway_id(p)),
                    transport: self.tuning.peer_transport,
                    tcp_address,
                    tcp_addresses,
                })
            })
            .collect::<Result<_>>()?;
        let mut exports = Vec::new();
        for e in self.exports.iter().filter(|e| e.cluster == cluster) {
            let endpoints = self.endpoints(cluster, &e.service);
            let Some(port) = self.service_port(cluster, &e.service) else {
                bail!("{cluster} exports {} but no workload serves it", e.service);
            };
            exports.push(Export {
                service: e.service.clone(),
                port,
                exported_to: e.to.clone(),
                endpoints,
            });
        }
        Ok(GatewayConfig {
            cluster: c.name.clone(),
            identity: identity(Self::gateway_id(cluster)),
            listen: place.listen,
            admin: place.admin,
            tcp_listen: tcp_tls.then_some(place.tcp_listen),
            tcp_congestion: self.tuning.gateway_tcp_congestion.clone(),
            peers,
            exports,
            quic: self.tuning.gateway_quic.clone(),
            timeouts: self.tuning.gateway_timeouts.clone(),
            reconnect: self.tuning.reconnect.clone(),
            control_plane: None,
        })
    }

    /// The token file of a component in dynamic mode (relative to the
    /// cluster dir, where its config lives).
    pub fn token_file(component: &str) -> String {
        format!("{component}.token")
    }

    /// The `control_plane` section of a component of `cluster`.
    fn control_plane_ref(
        &self,
        cluster: &str,
        component: &str,
        register: Option<Register>,
    ) -> Result<ControlPlaneRef> {
        let grpc = self
            .cluster(cluster)?
            .controller_grpc
            .ok_or_else(|| anyhow!("{cluster}'s controller is not running yet"))?;
        Ok(ControlPlaneRef {
            address: grpc.to_string(),
            spiffe_id: None,
            join_token_file: Self::token_file(component).into(),
            register,
            initial_backoff_ms: Some(100),
            max_backoff_ms: Some(1000),
        })
    }

    /// Dynamic mode: the registration of a workload serving something (one
    /// service, every port of it).
    fn registration(w: &Placed) -> Result<Option<Register>> {
        let Some(first) = w.spec.inbound.first() else {
            return Ok(None);
        };
        let Some((ns, name)) = first.service.split_once('/') else {
            bail!("service {:?} is not namespace/name", first.service);
        };
        if ns != w.spec.namespace {
            bail!(
                "{}/{} serves {} of another namespace: a registration is in the SVID's namespace",
                w.spec.namespace,
                w.spec.name,
                first.service
            );
        }
        let mut ports = Vec::new();
        for (i, listen) in w.spec.inbound.iter().zip(&w.inbound_listen) {
            if i.service != first.service {
                bail!(
                    "{} serves {} and {}: dynamic mode registers one service per workload",
                    w.spec.name,
                    first.service,
                    i.service
                );
            }
            ports.push(RegisterPort {
                port: i.port,
                target_port: listen.port(),
                protocol: i.protocol,
            });
        }
        Ok(Some(Register {
            name: w.spec.name.clone(),
            service: name.to_owned(),
            ports,
        }))
    }

    /// The sidecar config of `workload` in `cluster`, generated from the
    /// topology: the catalog lists every service it calls, with local
    /// endpoints and, as `remote`, every trusted cluster with a workload
    /// serving it (exported or not: the remote gateway decides).
    ///
    /// # Errors
    /// Unknown cluster or workload.
    pub fn sidecar_config(&self, cluster: &str, workload: &str) -> Result<SidecarConfig> {
        let c = self.cluster(cluster)?;
        let w = self.workload(cluster, workload)?;
        let outbound = w
            .spec
            .outbound
            .iter()
            .zip(&w.outbound_listen)
            .map(|(o, listen)| Outbound {
                listen: *listen,
                service: o.service.clone(),
                port: o.port,
                protocol: o.protocol,
                cluster: o.cluster.clone(),
            })
            .collect();
        let inbound = w
            .spec
            .inbound
            .iter()
            .zip(&w.inbound_listen)
            .map(|(i, listen)| Inbound {
                listen: *listen,
                protocol: i.protocol,
                app: i.app,
                app_protocol: (i.protocol == Protocol::Http).then_some(AppProtocol::Http1),
                allow: i.allow.clone(),
            })
            .collect();
        let mut services: Vec<Service> = Vec::new();
        let control_plane = if self.is_dynamic() {
            Some(self.control_plane_ref(cluster, workload, Self::registration(w)?)?)
        } else {
            None
        };
        for o in w.spec.outbound.iter().filter(|_| control_plane.is_none()) {
            if services.iter().any(|s| s.service == o.service) {
                continue;
            }
            let remote = self
                .trusted_by(cluster)
                .filter_map(|rc| {
                    self.server_of(rc, &o.service).map(|(ns, name)| Remote {
                        cluster: rc.to_owned(),
                        spiffe_id: Self::spiffe_id(rc, ns, name),
                    })
                })
                .collect();
            services.push(Service {
                service: o.service.clone(),
                port: o.port,
                endpoints: self.endpoints(cluster, &o.service),
                remote,
                failover: self.tuning.service_failover.clone(),
                resilience: self.tuning.service_resilience.clone(),
            });
        }
        let addresses =
            (c.gateways.len() > 1).then(|| c.gateways.iter().map(|g| g.listen).collect());
        Ok(SidecarConfig {
            cluster: c.name.clone(),
            identity: if control_plane.is_some() {
                dynamic_identity(Self::spiffe_id(cluster, &w.spec.namespace, &w.spec.name))
            } else {
                identity(Self::spiffe_id(cluster, &w.spec.namespace, &w.spec.name))
            },
            admin: w.admin,
            locality: c.region.as_ref().map(|r| Locality {
                region: Some(r.clone()),
                zone: None,
            }),
            gateway: GatewayRef {
                address: c.gateways[0].listen,
                addresses,
                spiffe_id: Self::gateway_id(cluster),
                keep_alive_ms: self.tuning.sidecar_gateway_keep_alive_ms,
                idle_timeout_ms: self.tuning.sidecar_gateway_idle_timeout_ms,
            },
            outbound,
            inbound,
            services,
            timeouts: self.tuning.sidecar_timeouts.clone(),
            max_header_bytes: self.tuning.max_header_bytes,
            control_plane,
        })
    }

    /// Writes a config struct as YAML to `path`.
    ///
    /// # Errors
    /// Serialization or write failure.
    pub fn write_yaml(path: &Path, value: &impl serde::Serialize) -> Result<()> {
        let text = serde_yaml_ng::to_string(value).context("serializing a config")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub(crate) fn cluster(&self, name: &str) -> Result<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow!("no cluster {name}"))
    }

    pub(crate) fn cluster_mut(&mut self, name: &str) -> Result<&mut Cluster> {
        self.clusters
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow!("no cluster {name}"))
    }

    /// The spec of `cluster`'s workload `name`.
    ///
    /// # Errors
    /// No such workload.
    pub fn workload_spec(&self, cluster: &str, name: &str) -> Result<&Workload> {
        Ok(&self.workload(cluster, name)?.spec)
    }

    /// Whether some workload of `cluster` serves `service`.
    pub fn serves(&self, cluster: &str, service: &str) -> bool {
        self.server_of(cluster, service).is_some()
    }

    fn workload(&self, cluster: &str, name: &str) -> Result<&Placed> {
        self.cluster(cluster)?
            .workloads
            .iter()
            .find(|w| w.spec.name == name)
            .ok_or_else(|| anyhow!("no workload {name} in {cluster}"))
    }

    /// The clusters `cluster` trusts.
    pub(crate) fn trusted_by<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.trusts
            .iter()
            .filter(move |(a, _)| a == cluster)
            .map(|(_, b)| b.as_str())
    }

    fn endpoints(&self, cluster: &str, service: &str) -> Vec<Endpoint> {
        let Ok(c) = self.cluster(cluster) else {
            return Vec::new();
        };
        c.workloads
            .iter()
            .flat_map(|w| {
                w.spec
                    .inbound
                    .iter()
                    .zip(&w.inbound_listen)
                    .filter(|(i, _)| i.service == service)
                    .map(|(_, listen)| Endpoint {
                        address: *listen,
                        spiffe_id: Self::spiffe_id(cluster, &w.spec.namespace, &w.spec.name),
                    })
            })
            .collect()
    }

    fn service_port(&self, cluster: &str, service: &str) -> Option<u16> {
        let c = self.cluster(cluster).ok()?;
        c.workloads
            .iter()
            .flat_map(|w| &w.spec.inbound)
            .find(|i| i.service == service)
            .map(|i| i.port)
    }

    /// `(namespace, name)` of the first workload in `cluster` serving
    /// `service`.
    fn server_of(&self, cluster: &str, service: &str) -> Option<(&str, &str)> {
        let c = self.cluster(cluster).ok()?;
        c.workloads
            .iter()
            .find(|w| w.spec.inbound.iter().any(|i| i.service == service))
            .map(|w| (w.spec.namespace.as_str(), w.spec.name.as_str()))
    }
}

/// The identity section every component of a cluster uses: the cluster CA
/// and bundle map, by paths relative to the config file.
fn identity(spiffe_id: String) -> Identity {
    Identity {
        spiffe_id,
        ca: Some(PemFiles {
            cert: "ca.pem".into(),
            key: "ca-key.pem".into(),
        }),
        bundles: "bundles.json".into(),
    }
}

/// The identity section with a controller: the SVID comes from it;
/// `bundles.json` holds the bootstrap trust (the cluster's own bundle as
/// fetched from its bundle endpoint).
fn dynamic_identity(spiffe_id: String) -> Identity {
    Identity {
        spiffe_id,
        ca: None,
        bundles: "bundles.json".into(),
    }
}

/// The next host address of `c`: loopback, or in WAN mode added to its
/// namespace.
fn next_host(c: &mut Cluster, wan: Option<&Wan>) -> Result<Ipv4Addr> {
    match &mut c.hosts {
        Hosts::Loopback(subnet) => subnet.next_host(),
        Hosts::Wan { next, .. } => {
            let wan = wan.ok_or_else(|| anyhow!("{} is in WAN mode without a WAN", c.name))?;
            ensure!(*next < 255, "{}'s /24 is exhausted", c.name);
            let host = *next;
            *next += 1;
            wan.add_addr(&c.name, host)
        }
    }
}

/// Addresses of gateway replica `r` of `c`: QUIC on UDP 15443, admin on
/// TCP 15021, TCP+TLS on 15444. Loopback: replica 0 on the subnet's `.1`,
/// others on fresh hosts, ports preferred; WAN: `198.18.<i+1>.<r+1>`.
fn place_gateway(c: &mut Cluster, r: usize, wan: Option<&Wan>) -> Result<GatewayPlace> {
    let (ip, site) = match &mut c.hosts {
        Hosts::Loopback(subnet) if r == 0 => (subnet.gateway_ip(), Site::root()),
        Hosts::Loopback(subnet) => (subnet.next_host()?, Site::root()),
        Hosts::Wan { .. } => {
            let wan = wan.ok_or_else(|| anyhow!("{} is in WAN mode without a WAN", c.name))?;
            let ip = if r == 0 {
                wan.addr(&c.name)
            } else {
                let host = u8::try_from(r + 1).context("replica number")?;
                wan.add_addr(&c.name, host)?
            };
            (ip, Site::netns(wan.netns(&c.name)))
        }
    };
    Ok(GatewayPlace {
        listen: site.udp_addr(ip, 15443)?,
        admin: site.tcp_addr(ip, 15021)?,
        tcp_listen: site.tcp_addr(ip, 15444)?,
    })
}
