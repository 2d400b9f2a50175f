//! The controller's YAML config (`mesh-controller --config controller.yaml`,
//! docs/reference/controller.md) and its command line flags.
//!
//! Loading is pure: [`Config::from_yaml`] takes the text and the directory
//! relative paths are resolved against, binds nothing and reads no other
//! file. Every error names the key path (`gateways[0].admin`). Unknown keys
//! are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};
use trust_bundle::{SpiffeId, TrustDomain};

/// Default SVID lifetime (24 h, DESIGN.md).
pub const DEFAULT_SVID_TTL: Duration = Duration::from_secs(86_400);
/// Default workload lease (15 s).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Namespace of the controller's and gateways' identities.
pub const SYSTEM_NAMESPACE: &str = "isthmus-system";

/// The command line of `mesh-controller`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "mesh-controller", about = "The Isthmus federation controller")]
pub struct Args {
    /// The controller's YAML config file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Log filter (`tracing` env-filter syntax), e.g. `info,mesh_controller=debug`.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// The controller's config, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This cluster's name (DNS-1123 label).
    pub cluster: String,
    /// SPIFFE trust domain (default `<cluster>.mesh`).
    pub trust_domain: TrustDomain,
    /// Region of the cluster (may be empty).
    pub region: String,
    /// Raft node id (≥ 1).
    pub node_id: u64,
    /// redb database and snapshots (absolute, or relative to the config file).
    pub data_dir: PathBuf,
    /// Raft RPC listener (HTTP/1.1, plaintext: keep it on a private network).
    pub raft_listen: SocketAddr,
    /// Where other nodes reach `raft_listen` (`host:port`).
    pub raft_advertise: String,
    /// An existing node's Raft address to join through.
    pub join: Option<String>,
    /// The TLS gRPC listener: Identity, ADS, Peering.
    pub grpc_listen: SocketAddr,
    /// Where others reach `grpc_listen` (`host:port`).
    pub grpc_advertise: String,
    /// Optional plaintext ADS listener (loopback clients such as Envoy).
    pub xds_plaintext_listen: Option<SocketAddr>,
    /// The admin HTTP listener (REST API, health, metrics).
    pub admin_listen: SocketAddr,
    /// When set, `/v1/*` needs `Authorization: Bearer <token>` read from it.
    pub admin_token_file: Option<PathBuf>,
    /// The SPIFFE bundle endpoint listener (https_spiffe).
    pub bundle_listen: SocketAddr,
    /// The bundle endpoint URL peers use.
    pub bundle_endpoint_url: String,
    /// This cluster's east-west gateways.
    pub gateways: Vec<GatewayConfig>,
    /// Lifetime of the SVIDs the controller signs.
    pub svid_ttl: Duration,
    /// Default workload lease.
    pub lease: Duration,
}

/// One of this cluster's east-west gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// QUIC address (peers and local sidecars).
    pub address: SocketAddr,
    /// Admin HTTP address (`GET /peers`), if known.
    pub admin: Option<SocketAddr>,
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or not a mapping at the top.
    #[error("not a YAML mapping")]
    Syntax(#[source] serde_yaml_ng::Error),
    /// A key is missing, unknown or has a bad value.
    #[error("{path}: {message}")]
    Field {
        /// The key path, e.g. `gateways[0].admin`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and parses `path`; relative paths in it are resolved against
    /// the file's directory.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, dir)
    }

    /// Parses a config; relative paths are resolved against `base_dir`.
    ///
    /// # Errors
    /// [`ConfigError`], naming the key path.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(ConfigError::Syntax)?;
        let Value::Mapping(map) = value else {
            return Err(field("", "must be a mapping"));
        };
        let mut m = Fields::new(&map, "")?;
        let cluster = m.string("cluster")?.ok_or_else(|| required("cluster"))?;
        dns_label(&cluster).map_err(|e| field("cluster", &e))?;
        let trust_domain = match m.string("trust_domain")? {
            Some(td) => {
                TrustDomain::parse(&td).map_err(|e| field("trust_domain", &e.to_string()))?
            }
            None => TrustDomain::parse(&format!("{cluster}.mesh"))
                .map_err(|e| field("cluster", &format!("cannot make a trust domain: {e}")))?,
        };
        let region = m.string("region")?.unwrap_or_default();
        if !region.is_empty() {
            dns_label(&region).map_err(|e| field("region", &e))?;
        }
        let node_id = m.uint("node_id")?.ok_or_else(|| required("node_id"))?;
        if node_id == 0 {
            return Err(field("node_id", "must be at least 1"));
        }
        let data_dir = base_dir.join(m.string("data_dir")?.ok_or_else(|| required("data_dir"))?);
        let raft_listen = m
            .addr("raft_listen")?
            .ok_or_else(|| required("raft_listen"))?;
        let raft_advertise = m
            .host_port("raft_advertise")?
            .unwrap_or_else(|| raft_listen.to_string());
        let join = m.host_port("join")?;
        let grpc_listen = m
            .addr("grpc_listen")?
            .ok_or_else(|| required("grpc_listen"))?;
        let grpc_advertise = m
            .host_port("grpc_advertise")?
            .unwrap_or_else(|| grpc_listen.to_string());
        let xds_plaintext_listen = m.addr("xds_plaintext_listen")?;
        let admin_listen = m
            .addr("admin_listen")?
            .ok_or_else(|| required("admin_listen"))?;
        let admin_token_file = m.string("admin_token_file")?.map(|f| base_dir.join(f));
        let bundle_listen = m
            .addr("bundle_listen")?
            .ok_or_else(|| required("bundle_listen"))?;
        let bundle_endpoint_url = match m.string("bundle_endpoint_url")? {
            Some(url) if url.starts_with("https://") => url,
            Some(_) => return Err(field("bundle_endpoint_url", "must be an https:// URL")),
            None => format!("https://{bundle_listen}/"),
        };
        let gateways = match m.take("gateways") {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| gateway(item, &format!("gateways[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(field("gateways", "must be a list")),
        };
        let svid_ttl = m
            .uint("svid_ttl_seconds")?
            .map_or(DEFAULT_SVID_TTL, Duration::from_secs);
        if svid_ttl < Duration::from_secs(60) {
            return Err(field("svid_ttl_seconds", "must be at least 60"));
        }
        let lease = m
            .uint("lease_seconds")?
            .map_or(DEFAULT_LEASE, Duration::from_secs);
        if lease.is_zero() || lease > Duration::from_secs(3600) {
            return Err(field("lease_seconds", "must be between 1 and 3600"));
        }
        m.finish()?;
        Ok(Config {
            cluster,
            trust_domain,
            region,
            node_id,
            data_dir,
            raft_listen,
            raft_advertise,
            join,
            grpc_listen,
            grpc_advertise,
            xds_plaintext_listen,
            admin_listen,
            admin_token_file,
            bundle_listen,
            bundle_endpoint_url,
            gateways,
            svid_ttl,
            lease,
        })
    }

    /// `spiffe://<td>/ns/isthmus-system/sa/controller`.
    pub fn controller_id(&self) -> SpiffeId {
        self.system_id("controller")
    }

    /// `spiffe://<td>/ns/isthmus-system/sa/east-west-gateway`.
    pub fn gateway_id(&self) -> SpiffeId {
        self.system_id("east-west-gateway")
    }

    fn system_id(&self, sa: &str) -> SpiffeId {
        // Both segments are constant valid path segments and the trust
        // domain parsed: `service_account` cannot fail here.
        #[allow(clippy::expect_used)]
        self.trust_domain
            .service_account(SYSTEM_NAMESPACE, sa)
            .expect("constant path segments are valid")
    }
}

fn gateway(item: &Value, path: &str) -> Result<GatewayConfig, ConfigError> {
    let Value::Mapping(map) = item else {
        return Err(field(path, "must be a mapping"));
    };
    let mut m = Fields::new(map, path)?;
    let address = m
        .addr("address")?
        .ok_or_else(|| required(&join(path, "address")))?;
    let admin = m.addr("admin")?;
    m.finish()?;
    Ok(GatewayConfig { address, admin })
}

/// The keys of one mapping, taken one by one; [`Fields::finish`] reports
/// whatever is left as unknown.
struct Fields {
    path: String,
    entries: Vec<(String, Value)>,
}

impl Fields {
    fn new(map: &Mapping, path: &str) -> Result<Self, ConfigError> {
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let Some(k) = k.as_str() else {
                return Err(field(path, &format!("key {k:?} is not a string")));
            };
            entries.push((k.to_owned(), v.clone()));
        }
        Ok(Fields {
            path: path.to_owned(),
            entries,
        })
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        match self.entries.remove(i).1 {
            Value::Null => None,
            v => Some(v),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(field(&join(&self.path, key), "must be a non-empty string")),
        }
    }

    fn uint(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| field(&join(&self.path, key), "must be a non-negative integer")),
        }
    }

    fn addr(&mut self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        let path = join(&self.path, key);
        match self.string(key)? {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| field(&path, &format!("{s:?} is not an ip:port socket address"))),
        }
    }

    fn host_port(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        let path = join(&self.path, key);
        match self.string(key)? {
            None => Ok(None),
            Some(s) => match s.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    Ok(Some(s))
                }
                _ => Err(field(&path, &format!("{s:?} is not host:port"))),
            },
        }
    }

    fn finish(self) -> Result<(), ConfigError> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => Err(field(&join(&self.path, k), "unknown key")),
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn field(path: &str, message: &str) -> ConfigError {
    ConfigError::Field {
        path: if path.is_empty() {
            "<root>".to_owned()
        } else {
            path.to_owned()
        },
        message: message.to_owned(),
    }
}

fn required(path: &str) -> ConfigError {
    field(path, "required key is missing")
}

/// A DNS-1123 label.
pub(crate) fn dns_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(ok_char)
        && b.last().is_some_and(ok_char)
        && b.iter().all(|c| ok_char(c) || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS-1123 label (lowercase alphanumerics and '-', at most 63)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
cluster: cluster-a
region: eu-west
node_id: 1
data_dir: data
raft_listen: 127.0.1.2:15013
join: 127.0.1.3:15013
grpc_listen: 127.0.1.2:15012
xds_plaintext_listen: 127.0.1.2:15010
admin_listen: 127.0.1.2:15014
admin_token_file: admin-token
bundle_listen: 127.0.1.2:15015
gateways:
  - address: 127.0.1.1:15443
    admin: 127.0.1.1:15021
lease_seconds: 20
";

    #[test]
    fn full_config_with_defaults_and_relative_paths() {
        let c = Config::from_yaml(FULL, Path::new("/etc/isthmus")).unwrap();
        assert_eq!(c.trust_domain.as_str(), "cluster-a.mesh");
        assert_eq!(c.data_dir, Path::new("/etc/isthmus/data"));
        assert_eq!(
            c.admin_token_file.as_deref(),
            Some(Path::new("/etc/isthmus/admin-token"))
        );
        assert_eq!(c.raft_advertise, "127.0.1.2:15013");
        assert_eq!(c.grpc_advertise, "127.0.1.2:15012");
        assert_eq!(c.bundle_endpoint_url, "https://127.0.1.2:15015/");
        assert_eq!(c.gateways.len(), 1);
        assert_eq!(c.svid_ttl, DEFAULT_SVID_TTL);
        assert_eq!(c.lease, Duration::from_secs(20));
        assert_eq!(
            c.controller_id().as_str(),
            "spiffe://cluster-a.mesh/ns/isthmus-system/sa/controller"
        );
    }

    #[test]
    fn errors_name_the_key_path() {
        let cases = [
            (
                FULL.replace("cluster: cluster-a", "cluster: Cluster_A"),
                "cluster: ",
            ),
            (
                FULL.replace("node_id: 1", "node_id: 0"),
                "node_id: must be at least 1",
            ),
            (
                FULL.replace("node_id: 1\n", ""),
                "node_id: required key is missing",
            ),
            (
                FULL.replace("admin: 127.0.1.1:15021", "admin: nowhere"),
                "gateways[0].admin: \"nowhere\" is not an ip:port socket address",
            ),
            (
                FULL.replace("    admin:", "    adminn:"),
                "gateways[0].adminn: unknown key",
            ),
            (FULL.replace("region:", "regoin:"), "regoin: unknown key"),
            (
                FULL.replace("lease_seconds: 20", "lease_seconds: -1"),
                "lease_seconds: must be a non-negative integer",
            ),
        ];
        for (text, want) in cases {
            let err = Config::from_yaml(&text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(want),
                "{err:?} does not start with {want:?}"
            );
        }
    }
}
