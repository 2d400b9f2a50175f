//! The gateway's YAML config (`docs/reference/data-path-config.md`, section
//! `mesh-gateway`): serde raw structs, validated once into a typed
//! [`Config`] that is valid by construction.
//!
//! Loading binds no port and does no network I/O; the identity files are
//! read later, by [`crate::Gateway::start`] and reloads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use trust_bundle::config::{IdentityConfig, PemFiles};
use trust_bundle::{SpiffeId, TrustDomain};

/// Why a config file could not be loaded. Every message names the file and,
/// for validation errors, the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong type
    /// (the message carries the line and column).
    #[error("{file}")]
    Yaml {
        /// The config file.
        file: String,
        /// The parser error.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A value is syntactically fine but invalid.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The config file.
        file: String,
        /// The key path, e.g. `exports[0].endpoints[1].spiffe_id`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

mod raw;
pub use raw::*;

// ---------------------------------------------------------------- typed

/// A validated gateway config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This cluster's name.
    pub cluster: String,
    /// The identity section, paths as written.
    pub identity: IdentityConfig,
    /// Directory that relative identity paths are resolved against.
    pub base_dir: PathBuf,
    /// Our own trust domain (from `identity.spiffe_id`).
    pub trust_domain: TrustDomain,
    /// QUIC listener (UDP).
    pub listen: SocketAddr,
    /// Admin listener (TCP).
    pub admin: SocketAddr,
    /// TCP+TLS (HTTP/2 CONNECT) listener for peers, if any.
    pub tcp_listen: Option<SocketAddr>,
    /// TCP congestion control (`TCP_CONGESTION`) of the TCP+TLS transport's
    /// sockets, listener and outgoing; `None` = the kernel default.
    pub tcp_congestion: Option<String>,
    /// Linked peers, by cluster name.
    pub peers: BTreeMap<String, PeerConfig>,
    /// Exports, by service key.
    pub exports: BTreeMap<ServiceKey, Export>,
    /// QUIC transport settings.
    pub quic: QuicConfig,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Reconnect backoff.
    pub reconnect: ReconnectConfig,
    /// The controller, when the SVID, `peers` and `exports` come from it.
    pub control_plane: Option<ControlPlane>,
}

/// The `control_plane` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// `host:port` of the controller's gRPC listener.
    pub address: String,
    /// The SPIFFE ID the controller must present.
    pub spiffe_id: SpiffeId,
    /// The join token file (relative to the config's directory).
    pub join_token_file: PathBuf,
    /// Plaintext (h2c) to the controller: loopback tests only.
    pub danger_plaintext: bool,
    /// First reconnect delay.
    pub initial_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
}

/// A linked peer gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its cluster name.
    pub cluster: String,
    /// Its trust domain.
    pub trust_domain: TrustDomain,
    /// Where to reach its gateway replicas over QUIC (`address` or
    /// `addresses`; at least one, no duplicates), in config order.
    pub addresses: Vec<PeerAddress>,
    /// The only ID accepted for it, if restricted.
    pub spiffe_id: Option<SpiffeId>,
    /// How we reach it.
    pub transport: PeerTransport,
}

/// The transport of the hop from this gateway to a peer gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTransport {
    /// QUIC from our `listen` endpoint to the peer's `address`.
    Quic,
    /// One TLS 1.3 over TCP connection carrying HTTP/2 per replica, one
    /// CONNECT stream per tunnel stream, to each replica's `tcp_listen` at
    /// these addresses (`tcp_address` or `tcp_addresses`).
    TcpTls(Vec<PeerAddress>),
}

impl PeerConfig {
    /// The addresses the pool dials, one connection each: the replicas'
    /// `tcp_listen` addresses for `tcp-tls`, else their QUIC addresses.
    pub fn dial_addresses(&self) -> &[PeerAddress] {
        match &self.transport {
            PeerTransport::Quic => &self.addresses,
            PeerTransport::TcpTls(a) => a,
        }
    }

    /// Whether `id` may act as this peer's gateway.
    pub fn admits(&self, id: &SpiffeId) -> bool {
        match &self.spiffe_id {
            Some(only) => only == id,
            None => id.is_member_of(&self.trust_domain),
        }
    }
}

/// A peer gateway's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddress {
    /// An IP literal: no DNS.
    Ip(SocketAddr),
    /// A DNS name, resolved with hickory and re-resolved at TTL expiry.
    Dns {
        /// Host name.
        host: String,
        /// UDP port (TCP for a `tcp_address`).
        port: u16,
    },
}

impl std::fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddress::Ip(a) => write!(f, "{a}"),
            PeerAddress::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// `(namespace, service, port)`: how tunnel headers name a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Service port.
    pub port: u16,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// An exported service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Peer clusters allowed to reach it.
    pub exported_to: BTreeSet<String>,
    /// Its endpoints, in config order.
    pub endpoints: Vec<Endpoint>,
}

/// A local endpoint of an exported service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// TCP address of the workload sidecar's inbound listener.
    pub address: SocketAddr,
    /// The workload's identity.
    pub spiffe_id: SpiffeId,
    /// Where it runs.
    pub locality: Option<Locality>,
}

/// QUIC transport settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    /// Keep-alive interval (`None` = off).
    pub keep_alive: Option<Duration>,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Per-stream receive window, bytes.
    pub stream_receive_window: u64,
    /// Per-connection receive window, bytes.
    pub receive_window: u64,
    /// Per-connection send window, bytes.
    pub send_window: u64,
    /// Concurrent bidirectional streams a peer may open.
    pub max_concurrent_streams: u64,
    /// Streams in flight across the gateway before new ones are rejected
    /// with [`tunnel_proto::RejectReason::Overloaded`].
    pub max_streams_in_flight: usize,
    /// Congestion controller of every QUIC connection.
    pub congestion: RawCongestion,
}

/// Deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The tunnel header must arrive within this.
    pub header: Duration,
    /// TCP connect to a local endpoint, QUIC handshake to a peer.
    pub connect: Duration,
    /// How long SIGTERM waits for in-flight streams.
    pub drain: Duration,
    /// A peer gateway replica silent this long after a relayed OPEN header
    /// is marked down and the header goes to the next replica.
    pub peer_open: Duration,
}

/// Reconnect backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectConfig {
    /// First delay.
    pub initial_backoff: Duration,
    /// Cap.
    pub max_backoff: Duration,
}

/// Largest value a QUIC variable-length integer holds (RFC 9000 §16).
const VARINT_MAX: u64 = (1 << 62) - 1;

/// Longest duration accepted in any `_ms` key: one week, ms. Keeps deadline
/// arithmetic far from overflow.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;

impl Config {
    /// Reads and validates the file at `path`; relative paths inside it are
    /// resolved against its directory.
    ///
    /// # Errors
    /// [`ConfigError`], naming `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        Self::parse(&text, base, &path.display().to_string())
    }

    /// Parses and validates YAML text; relative paths resolve against
    /// `base_dir`. Errors name the file as `<inline>`.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse(text, base_dir, "<inline>")
    }

    /// Validates an already parsed [`RawConfig`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn from_raw(raw: RawConfig, base_dir: &Path, file: &str) -> Result<Config, ConfigError> {
        Validator { file }.config(raw, base_dir)
    }

    fn parse(text: &str, base_dir: &Path, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Yaml {
            file: file.to_owned(),
            source,
        })?;
        Self::from_raw(raw, base_dir, file)
    }

    /// This config with `peers` and `exports` replaced by `peers` and
    /// `exports` (from the control plane), validated exactly like the
    /// file's sections; errors name `source` as the file.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn with_dynamic(
        &self,
        peers: &[RawPeer],
        exports: &[RawExport],
        source: &str,
    ) -> Result<Config, ConfigError> {
        let v = Validator { file: source };
        let (peers, exports) =
            v.peers_and_exports(&self.cluster, &self.trust_domain, peers, exports)?;
        let mut next = self.clone();
        next.peers = peers;
        next.exports = exports;
        Ok(next)
    }

    /// The peer whose gateway may present `id`, if any.
    pub fn peer_for_id(&self, id: &SpiffeId) -> Option<&PeerConfig> {
        self.peers.values().find(|p| p.admits(id))
    }
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn config(&self, raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
        if !is_dns_label(&raw.cluster) {
            return Err(self.err("cluster", "must be a DNS label ([a-z0-9-], 1-63 bytes)"));
        }
        for (key, v) in [
            ("quic.keep_alive_ms", raw.quic.keep_alive_ms),
            ("quic.idle_timeout_ms", raw.quic.idle_timeout_ms),
            ("timeouts.header_ms", raw.timeouts.header_ms),
            ("timeouts.connect_ms", raw.timeouts.connect_ms),
            ("timeouts.drain_ms", raw.timeouts.drain_ms),
            ("timeouts.peer_open_ms", raw.timeouts.peer_open_ms),
            (
                "reconnect.initial_backoff_ms",
                raw.reconnect.initial_backoff_ms,
            ),
            ("reconnect.max_backoff_ms", raw.reconnect.max_backoff_ms),
            (
                "identity.svid_ttl_ms",
                raw.identity.svid_ttl_ms.unwrap_or(0),
            ),
        ] {
            if v > MAX_DURATION_MS {
                return Err(self.err(key, format!("must be at most {MAX_DURATION_MS} (one week)")));
            }
        }
        let id = SpiffeId::parse(&raw.identity.spiffe_id)
            .map_err(|e| self.err("identity.spiffe_id", e.to_string()))?;
        let trust_domain = id.trust_domain();
        let identity = IdentityConfig {
            spiffe_id: raw.identity.spiffe_id.clone(),
            ca: raw.identity.ca.map(|p| PemFiles {
                cert: p.cert,
                key: p.key,
            }),
            svid: raw.identity.svid.map(|p| PemFiles {
                cert: p.cert,
                key: p.key,
            }),
            bundles: raw.identity.bundles,
            svid_ttl_ms: raw.identity.svid_ttl_ms,
        };
        if raw.control_plane.is_some() {
            for (key, set) in [
                ("identity.ca", identity.ca.is_some()),
                ("identity.svid", identity.svid.is_some()),
                ("identity.svid_ttl_ms", identity.svid_ttl_ms.is_some()),
            ] {
                if set {
                    return Err(self.err(
                        key,
                        "not allowed with control_plane: the SVID comes from the controller",
                    ));
                }
            }
        } else if identity.ca.is_some() == identity.svid.is_some() {
            return Err(self.err("identity", "give exactly one of `ca` and `svid`"));
        }
        let listen = self.socket_addr("listen", &raw.listen)?;
        let admin = self.socket_addr("admin", &raw.admin)?;
        let tcp_listen = match &raw.tcp_listen {
            Some(s) => Some(self.socket_addr("tcp_listen", s)?),
            None => None,
        };
        let tcp_congestion = match raw.tcp_congestion {
            Some(name) if !is_congestion_name(&name) => {
                return Err(self.err(
                    "tcp_congestion",
                    format!(
                        "must be a kernel congestion control name \
                         ([A-Za-z0-9_-], 1-{MAX_CONGESTION_NAME} bytes), e.g. cubic"
                    ),
                ))
            }
            name => name,
        };

        let control_plane = match &raw.control_plane {
            None => None,
            Some(cp) => {
                if !raw.peers.is_empty() || !raw.exports.is_empty() {
                    let key = if raw.peers.is_empty() {
                        "exports"
                    } else {
                        "peers"
                    };
                    return Err(self.err(
                        key,
                        "not allowed with control_plane: peers and exports come from the controller",
                    ));
                }
                Some(self.control_plane(cp, &id)?)
            }
        };
        let (peers, exports) =
            self.peers_and_exports(&raw.cluster, &trust_domain, &raw.peers, &raw.exports)?;

        Ok(Config {
            cluster: raw.cluster,
            identity,
            base_dir: base_dir.to_path_buf(),
            trust_domain,
            listen,
            admin,
            tcp_listen,
            tcp_congestion,
            peers,
            exports,
            quic: self.quic(&raw.quic)?,
            timeouts: self.timeouts(&raw.timeouts)?,
            reconnect: self.reconnect(&raw.reconnect)?,
            control_plane,
        })
    }

    #[allow(clippy::type_complexity)]
    fn peers_and_exports(
        &self,
        own_cluster: &str,
        trust_domain: &TrustDomain,
        raw_peers: &[RawPeer],
        raw_exports: &[RawExport],
    ) -> Result<(BTreeMap<String, PeerConfig>, BTreeMap<ServiceKey, Export>), ConfigError> {
        let mut peers = BTreeMap::new();
        let mut tds = BTreeSet::new();
        for (i, p) in raw_peers.iter().enumerate() {
            let key = format!("peers[{i}]");
            let peer = self.peer(&key, p)?;
            if peer.cluster == own_cluster {
                return Err(self.err(format!("{key}.cluster"), "is our own cluster"));
            }
            if &peer.trust_domain == trust_domain {
                return Err(self.err(
                    format!("{key}.trust_domain"),
                    "is our own trust domain; each cluster needs its own",
                ));
            }
            if !tds.insert(peer.trust_domain.clone()) {
                return Err(self.err(
                    format!("{key}.trust_domain"),
                    "is already used by another peer",
                ));
            }
            if peers.insert(peer.cluster.clone(), peer).is_some() {
                return Err(self.err(format!("{key}.cluster"), "duplicate peer cluster"));
            }
        }

        let mut exports = BTreeMap::new();
        for (i, e) in raw_exports.iter().enumerate() {
            let key = format!("exports[{i}]");
            let (skey, export) = self.export(&key, e, &peers, trust_domain)?;
            if exports.insert(skey, export).is_some() {
                return Err(self.err(
                    format!("{key}.service"),
                    "service and port already exported",
                ));
            }
        }

        Ok((peers, exports))
    }

    fn control_plane(
        &self,
        cp: &RawControlPlane,
        id: &SpiffeId,
    ) -> Result<ControlPlane, ConfigError> {
        match cp.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(self.err(
                    "control_plane.address",
                    format!("`{}` is not host:port", cp.address),
                ))
            }
        }
        let spiffe_id = match &cp.spiffe_id {
            Some(s) => SpiffeId::parse(s)
                .map_err(|e| self.err("control_plane.spiffe_id", e.to_string()))?,
            None => SpiffeId::parse(&format!(
                "spiffe://{}/ns/isthmus-system/sa/controller",
                id.trust_domain_str()
            ))
            .map_err(|e| self.err("control_plane.spiffe_id", e.to_string()))?,
        };
        if cp.join_token_file.as_os_str().is_empty() {
            return Err(self.err("control_plane.join_token_file", "must not be empty"));
        }
        let initial = cp.initial_backoff_ms.unwrap_or(200);
        let max = cp.max_backoff_ms.unwrap_or(15_000);
        if initial == 0 {
            return Err(self.err("control_plane.initial_backoff_ms", "must be > 0"));
        }
        if max < initial {
            return Err(self.err(
                "control_plane.max_backoff_ms",
                "must be at least control_plane.initial_backoff_ms",
            ));
        }
        if max > MAX_DURATION_MS {
            return Err(self.err(
                "control_plane.max_backoff_ms",
                format!("must be at most {MAX_DURATION_MS} (one week)"),
            ));
        }
        Ok(ControlPlane {
            address: cp.address.clone(),
            spiffe_id,
            join_token_file: cp.join_token_file.clone(),
            danger_plaintext: cp.danger_plaintext.unwrap_or(false),
            initial_backoff: Duration::from_millis(initial),
            max_backoff: Duration::from_millis(max),
        })
    }

    fn socket_addr(&self, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
        s.parse()
            .map_err(|_| self.err(key, format!("`{s}` is not an ip:port address")))
    }

    fn peer(&self, key: &str, p: &RawPeer) -> Result<PeerConfig, ConfigError> {
        if !is_dns_label(&p.cluster) {
            return Err(self.err(format!("{key}.cluster"), "must be a DNS label"));
        }
        let trust_domain = TrustDomain::parse(&p.trust_domain)
            .map_err(|e| self.err(format!("{key}.trust_domain"), e.to_string()))?;
        let addresses =
            self.replica_addresses(key, "address", "addresses", &[&p.address], &p.addresses)?;
        let spiffe_id = match &p.spiffe_id {
            None => None,
            Some(s) => {
                let id = SpiffeId::parse(s)
                    .map_err(|e| self.err(format!("{key}.spiffe_id"), e.to_string()))?;
                if !id.is_member_of(&trust_domain) {
                    return Err(self.err(
                        format!("{key}.spiffe_id"),
                        format!("is not in trust domain {trust_domain}"),
                    ));
                }
                Some(id)
            }
        };
        let tcp_single = p.tcp_address.as_deref().unwrap_or_default();
        let has_tcp = !tcp_single.is_empty() || !p.tcp_addresses.is_empty();
        let tcp_key = if p.tcp_addresses.is_empty() {
            "tcp_address"
        } else {
            "tcp_addresses"
        };
        let transport = match (p.transport.unwrap_or(RawTransport::Quic), has_tcp) {
            (RawTransport::Quic, false) => PeerTransport::Quic,
            (RawTransport::Quic, true) => {
                return Err(self.err(
                    format!("{key}.{tcp_key}"),
                    "is only used with `transport: tcp-tls`",
                ))
            }
            (RawTransport::TcpTls, false) => {
                return Err(self.err(
                    format!("{key}.tcp_address"),
                    "is required with `transport: tcp-tls`",
                ))
            }
            (RawTransport::TcpTls, true) => PeerTransport::TcpTls(self.replica_addresses(
                key,
                "tcp_address",
                "tcp_addresses",
                &[tcp_single],
                &p.tcp_addresses,
            )?),
        };
        Ok(PeerConfig {
            cluster: p.cluster.clone(),
            trust_domain,
            addresses,
            spiffe_id,
            transport,
        })
    }

    /// A peer's replica addresses from the one-element key `single` (empty
    /// = absent) or the list key `list`: exactly one of them, no duplicates.
    fn replica_addresses(
        &self,
        key: &str,
        single_key: &str,
        list_key: &str,
        single: &[&str],
        list: &[String],
    ) -> Result<Vec<PeerAddress>, ConfigError> {
        let single: Vec<&str> = single.iter().copied().filter(|s| !s.is_empty()).collect();
        let (written, k): (Vec<&str>, &str) = match (single.is_empty(), list.is_empty()) {
            (false, false) => {
                return Err(self.err(
                    format!("{key}.{list_key}"),
                    format!("give `{single_key}` or `{list_key}`, not both"),
                ))
            }
            (true, true) => {
                return Err(self.err(
                    format!("{key}.{single_key}"),
                    format!("is required (or `{list_key}`)"),
                ))
            }
            (false, true) => (single, single_key),
            (true, false) => (list.iter().map(String::as_str).collect(), list_key),
        };
        let indexed = k == list_key;
        let mut out: Vec<PeerAddress> = Vec::with_capacity(written.len());
        for (j, a) in written.iter().enumerate() {
            let at = if indexed {
                format!("{key}.{k}[{j}]")
            } else {
                format!("{key}.{k}")
            };
            let parsed = parse_peer_address(a)
                .ok_or_else(|| self.err(&at, format!("`{a}` is not host:port")))?;
            if out.contains(&parsed) {
                return Err(self.err(at, "duplicate replica address"));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    fn export(
        &self,
        key: &str,
        e: &RawExport,
        peers: &BTreeMap<String, PeerConfig>,
        own: &TrustDomain,
    ) -> Result<(ServiceKey, Export), ConfigError> {
        let (namespace, service) = e
            .service
            .split_once('/')
            .filter(|(ns, name)| is_dns_label(ns) && is_dns_label(name))
            .ok_or_else(|| {
                self.err(
                    format!("{key}.service"),
                    "must be namespace/name, both DNS labels",
                )
            })?;
        if e.port == 0 {
            return Err(self.err(format!("{key}.port"), "must be 1-65535"));
        }
        let mut exported_to = BTreeSet::new();
        for (j, c) in e.exported_to.iter().enumerate() {
            if !peers.contains_key(c) {
                return Err(self.err(
                    format!("{key}.exported_to[{j}]"),
                    format!("`{c}` is not a configured peer cluster"),
                ));
            }
            exported_to.insert(c.clone());
        }
        let mut endpoints = Vec::with_capacity(e.endpoints.len());
        for (j, ep) in e.endpoints.iter().enumerate() {
            let ekey = format!("{key}.endpoints[{j}]");
            let address = self.socket_addr(&format!("{ekey}.address"), &ep.address)?;
            let spiffe_id = SpiffeId::parse(&ep.spiffe_id)
                .map_err(|err| self.err(format!("{ekey}.spiffe_id"), err.to_string()))?;
            if !spiffe_id.is_member_of(own) {
                return Err(self.err(
                    format!("{ekey}.spiffe_id"),
                    format!("is not in our trust domain {own}"),
                ));
            }
            endpoints.push(Endpoint {
                address,
                spiffe_id,
                locality: ep.locality.clone(),
            });
        }
        Ok((
            ServiceKey {
                namespace: namespace.to_owned(),
                service: service.to_owned(),
                port: e.port,
            },
            Export {
                exported_to,
                endpoints,
            },
        ))
    }

    fn quic(&self, q: &RawQuic) -> Result<QuicConfig, ConfigError> {
        if q.idle_timeout_ms == 0 {
            return Err(self.err("quic.idle_timeout_ms", "must be > 0"));
        }
        if q.keep_alive_ms >= q.idle_timeout_ms {
            return Err(self.err("quic.keep_alive_ms", "must be below quic.idle_timeout_ms"));
        }
        for (k, v) in [
            (
                "quic.stream_receive_window_bytes",
                q.stream_receive_window_bytes,
            ),
            ("quic.receive_window_bytes", q.receive_window_bytes),
            ("quic.send_window_bytes", q.send_window_bytes),
            ("quic.max_concurrent_streams", q.max_concurrent_streams),
            ("quic.max_streams_in_flight", q.max_streams_in_flight),
        ] {
            if v == 0 || v > VARINT_MAX {
                return Err(self.err(k, "must be between 1 and 2^62-1"));
            }
        }
        Ok(QuicConfig {
            keep_alive: (q.keep_alive_ms > 0).then(|| Duration::from_millis(q.keep_alive_ms)),
            idle_timeout: Duration::from_millis(q.idle_timeout_ms),
            stream_receive_window: q.stream_receive_window_bytes,
            receive_window: q.receive_window_bytes,
            send_window: q.send_window_bytes,
            max_concurrent_streams: q.max_concurrent_streams,
            max_streams_in_flight: usize::try_from(q.max_streams_in_flight).unwrap_or(usize::MAX),
            congestion: q.congestion,
        })
    }

    fn timeouts(&self, t: &RawTimeouts) -> Result<Timeouts, ConfigError> {
        for (k, v) in [
            ("timeouts.header_ms", t.header_ms),
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.peer_open_ms", t.peer_open_ms),
        ] {
            if v == 0 {
                return Err(self.err(k, "must be > 0"));
            }
        }
        Ok(Timeouts {
            header: Duration::from_millis(t.header_ms),
            connect: Duration::from_millis(t.connect_ms),
            drain: Duration::from_millis(t.drain_ms),
            peer_open: Duration::from_millis(t.peer_open_ms),
        })
    }

    fn reconnect(&self, r: &RawReconnect) -> Result<ReconnectConfig, ConfigError> {
        if r.initial_backoff_ms == 0 {
            return Err(self.err("reconnect.initial_backoff_ms", "must be > 0"));
        }
        if r.max_backoff_ms < r.initial_backoff_ms {
            return Err(self.err(
                "reconnect.max_backoff_ms",
                "must be at least reconnect.initial_backoff_ms",
            ));
        }
        Ok(ReconnectConfig {
            initial_backoff: Duration::from_millis(r.initial_backoff_ms),
            max_backoff: Duration::from_millis(r.max_backoff_ms),
        })
    }
}

/// A DNS label: 1–63 bytes of `[a-z0-9-]`, no leading or trailing `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Longest `tcp_congestion` name, bytes: the kernel's `TCP_CA_NAME_MAX`
/// (16) less the NUL.
pub const MAX_CONGESTION_NAME: usize = 15;

/// Whether `s` can be a kernel TCP congestion control name (`cubic`,
/// `bbr`, `reno`, ...): 1-15 bytes of `[A-Za-z0-9_-]`. Whether the kernel
/// has it is only known when a socket is given it.
pub fn is_congestion_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CONGESTION_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `ip:port`, `[v6]:port` or `host:port` with a DNS host name.
fn parse_peer_address(s: &str) -> Option<PeerAddress> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(PeerAddress::Ip(a));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.strip_suffix('.').unwrap_or(host);
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    ok.then(|| PeerAddress::Dns {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests;
