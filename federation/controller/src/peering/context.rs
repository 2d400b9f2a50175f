//! [`PeeringContext`]: everything the peering code needs from its
//! controller process, and the validation of a peer's [`PeerInfo`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_api::peering::{ExportSet, PeerInfo};
use prost::Message as _;
use tokio::sync::watch;
use trust_bundle::source::{Clock, SystemClock};
use trust_bundle::{Bundle, BundleStore, SpiffeId, SvidSource, TrustDomain};

use crate::catalog::{Catalog, Command, PeerRecord, Response};
use crate::store::{StateMachine, Store};

/// A state machine the peering code can drive: it takes the catalog's
/// [`Command`]s and exposes a [`Catalog`]. Implemented by [`Catalog`]; the
/// peering tests implement it on a small test state machine that calls
/// [`apply_peering`](super::apply_peering).
pub trait PeeringState: StateMachine<Command = Command, Response = Response> {
    /// The catalog view of this state.
    fn catalog(&self) -> &Catalog;
}

impl PeeringState for Catalog {
    fn catalog(&self) -> &Catalog {
        self
    }
}

/// This cluster as peers see it: the source of our [`PeerInfo`].
#[derive(Debug, Clone)]
pub struct LocalPeer {
    /// Our cluster name (DNS label).
    pub cluster: String,
    /// Our trust domain.
    pub trust_domain: TrustDomain,
    /// Our region (may be empty).
    pub region: String,
    /// Our current bundle: the same channel that feeds our bundle endpoint
    /// server, so a root rotation shows up in new tokens and redeem answers.
    pub bundle: watch::Receiver<Bundle>,
    /// `https://host:port/path` of our bundle endpoint (https_spiffe,
    /// presenting the controller SVID).
    pub bundle_endpoint: String,
    /// `host:port` peers dial for the Peering service (`grpc_advertise`).
    pub controller_address: String,
    /// Our controller's SPIFFE ID (the SVID on the gRPC listener and the
    /// bundle endpoint).
    pub controller_spiffe_id: SpiffeId,
    /// Our east-west gateways, `host:port` (QUIC).
    pub gateway_addresses: Vec<String>,
    /// Our gateways' SPIFFE ID.
    pub gateway_spiffe_id: SpiffeId,
}

impl LocalPeer {
    /// A local peer with the conventional controller and gateway IDs
    /// (`spiffe://<td>/ns/isthmus-system/sa/controller` and
    /// `…/sa/east-west-gateway`), no region and no gateways.
    pub fn new(
        cluster: impl Into<String>,
        trust_domain: TrustDomain,
        bundle: watch::Receiver<Bundle>,
        bundle_endpoint: impl Into<String>,
        controller_address: impl Into<String>,
    ) -> Self {
        LocalPeer {
            cluster: cluster.into(),
            controller_spiffe_id: conventional_id(&trust_domain, "controller"),
            gateway_spiffe_id: conventional_id(&trust_domain, "east-west-gateway"),
            trust_domain,
            region: String::new(),
            bundle,
            bundle_endpoint: bundle_endpoint.into(),
            controller_address: controller_address.into(),
            gateway_addresses: Vec::new(),
        }
    }

    /// What we tell a peer about ourselves, with the current bundle.
    pub fn peer_info(&self) -> PeerInfo {
        let bundle_json = String::from_utf8_lossy(&self.bundle.borrow().to_jwks()).into_owned();
        PeerInfo {
            cluster: self.cluster.clone(),
            trust_domain: self.trust_domain.to_string(),
            bundle_json,
            bundle_endpoint: self.bundle_endpoint.clone(),
            controller_address: self.controller_address.clone(),
            gateway_addresses: self.gateway_addresses.clone(),
            controller_spiffe_id: self.controller_spiffe_id.to_string(),
            gateway_spiffe_id: self.gateway_spiffe_id.to_string(),
            region: self.region.clone(),
        }
    }
}

fn conventional_id(td: &TrustDomain, sa: &str) -> SpiffeId {
    match td.service_account("isthmus-system", sa) {
        Ok(id) => id,
        // Both segments are constant, valid path segments.
        Err(_) => td.id(),
    }
}

/// Timeouts and backoff of the peering I/O. `Default` is production.
#[derive(Debug, Clone)]
pub struct PeeringTiming {
    /// TCP + TLS + HTTP/2 connect to a peer controller: 5 s.
    pub connect_timeout: Duration,
    /// A whole `Redeem` call: 10 s.
    pub rpc_timeout: Duration,
    /// The best-effort `Unlink` call to the peer: 5 s.
    pub unlink_timeout: Duration,
    /// Longest wait between `WatchExports` reconnects (doubling from 1 s): 30 s.
    pub reconnect_max: Duration,
    /// How often a follower checks whether it became leader: 2 s.
    pub leader_check: Duration,
    /// A refreshed bundle with an unchanged sequence is still written when
    /// the stored refresh time is older than this (keeps `bundleAgeSeconds`
    /// honest): 60 s.
    pub bundle_rewrite: Duration,
}

impl Default for PeeringTiming {
    fn default() -> Self {
        PeeringTiming {
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(10),
            unlink_timeout: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(30),
            leader_check: Duration::from_secs(2),
            bundle_rewrite: Duration::from_secs(60),
        }
    }
}

/// What the peering code needs from its controller process. One per
/// process, shared as `Arc<PeeringContext>` by the admin API (actions), the
/// gRPC service and the peer loops.
///
/// - `local`: our own [`PeerInfo`] source;
/// - `store`: the catalog store; writes go to the Raft leader, loops write
///   only when [`Store::is_leader`];
/// - `svid`: our controller SVID, presented as client certificate on
///   `WatchExports` and `Unlink` calls (mTLS);
/// - `bundles`: the process's live [`BundleStore`] (our own bundle and every
///   linked peer's), shared with the gRPC listener's client verifier: the
///   peering code adds a peer's bundle when linking, keeps it fresh from
///   the peer's bundle endpoint and removes it when unlinking;
/// - `clock`: wall time for token expiry and record timestamps;
/// - `timing`: timeouts and backoff.
pub struct PeeringContext<S: PeeringState = Catalog> {
    /// This cluster.
    pub local: LocalPeer,
    /// The catalog store.
    pub store: Arc<Store<S>>,
    /// Our controller SVID.
    pub svid: Arc<SvidSource>,
    /// The bundles this process trusts.
    pub bundles: BundleStore,
    /// Wall time.
    pub clock: Arc<dyn Clock>,
    /// Timeouts and backoff.
    pub timing: PeeringTiming,
}

impl<S: PeeringState> PeeringContext<S> {
    /// A context with the system clock and default timing.
    pub fn new(
        local: LocalPeer,
        store: Arc<Store<S>>,
        svid: Arc<SvidSource>,
        bundles: BundleStore,
    ) -> Self {
        PeeringContext {
            local,
            store,
            svid,
            bundles,
            clock: Arc::new(SystemClock),
            timing: PeeringTiming::default(),
        }
    }

    /// Now, Unix ms.
    pub(crate) fn now_ms(&self) -> u64 {
        unix_ms(self.clock.now())
    }

    /// The peer record for `cluster` in the locally applied state.
    pub(crate) fn peer(&self, cluster: &str) -> Option<PeerRecord> {
        self.store
            .watch()
            .borrow()
            .catalog()
            .peers
            .get(cluster)
            .cloned()
    }

    /// Removes `td`'s bundle from the live store unless it is ours or a
    /// still-linked peer's.
    pub(crate) fn forget_bundle(&self, td: &str) {
        if td == self.local.trust_domain.as_str() {
            return;
        }
        let still_used = self
            .store
            .watch()
            .borrow()
            .catalog()
            .peers
            .values()
            .any(|p| p.trust_domain == td);
        if !still_used {
            if let Ok(td) = TrustDomain::parse(td) {
                self.bundles.remove(&td);
            }
        }
    }
}

impl<S: PeeringState> std::fmt::Debug for PeeringContext<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeeringContext")
            .field("cluster", &self.local.cluster)
            .field("trust_domain", &self.local.trust_domain)
            .field("bundles", &self.bundles)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// Unix ms of `t` (0 before the epoch).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A [`PeerInfo`] field that is missing or invalid.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PeerInfoError {
    /// The field, camelCase as in the token JSON (e.g. `trustDomain`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl std::fmt::Display) -> PeerInfoError {
    PeerInfoError {
        field,
        reason: reason.to_string(),
    }
}

/// Checks a peer's [`PeerInfo`] and builds the [`PeerRecord`] to store
/// (`linked_ms` and `bundle_refreshed_ms` = `now_ms`, no exports yet), its
/// parsed [`Bundle`] and controller [`SpiffeId`].
///
/// # Errors
/// The first invalid field: cluster not a DNS label, unparsable trust
/// domain, bundle JSON not a SPIFFE bundle or without X.509 authorities,
/// controller or gateway ID not in the trust domain, empty controller
/// address, bundle endpoint not `https://`.
pub fn peer_record(
    info: &PeerInfo,
    now_ms: u64,
) -> Result<(PeerRecord, Bundle, SpiffeId), PeerInfoError> {
    if !is_dns_label(&info.cluster) {
        return Err(bad(
            "cluster",
            format!("{:?} is not a DNS-1123 label", info.cluster),
        ));
    }
    let td = TrustDomain::parse(&info.trust_domain).map_err(|e| bad("trustDomain", e))?;
    let bundle = Bundle::from_jwks(td.clone(), info.bundle_json.as_bytes())
        .map_err(|e| bad("bundleJson", e))?;
    if bundle.x509_authorities().is_empty() {
        return Err(bad("bundleJson", "holds no X.509 authority"));
    }
    let controller_id =
        SpiffeId::parse(&info.controller_spiffe_id).map_err(|e| bad("controllerSpiffeId", e))?;
    if !controller_id.is_member_of(&td) {
        return Err(bad(
            "controllerSpiffeId",
            format!("{controller_id} is not in trust domain {td}"),
        ));
    }
    if !info.gateway_spiffe_id.is_empty() {
        let gw = SpiffeId::parse(&info.gateway_spiffe_id).map_err(|e| bad("gatewaySpiffeId", e))?;
        if !gw.is_member_of(&td) {
            return Err(bad(
                "gatewaySpiffeId",
                format!("{gw} is not in trust domain {td}"),
            ));
        }
    }
    if info.controller_address.is_empty() {
        return Err(bad("controllerAddress", "is empty"));
    }
    if !info.bundle_endpoint.is_empty() && !info.bundle_endpoint.starts_with("https://") {
        return Err(bad(
            "bundleEndpoint",
            format!("{:?} is not an https:// URL", info.bundle_endpoint),
        ));
    }
    let record = PeerRecord {
        cluster: info.cluster.clone(),
        trust_domain: td.to_string(),
        bundle_json: info.bundle_json.clone(),
        bundle_sequence: bundle.sequence(),
        bundle_refreshed_ms: now_ms,
        bundle_endpoint: info.bundle_endpoint.clone(),
        controller_address: info.controller_address.clone(),
        controller_spiffe_id: controller_id.to_string(),
        gateway_addresses: info.gateway_addresses.clone(),
        gateway_spiffe_id: info.gateway_spiffe_id.clone(),
        region: info.region.clone(),
        exports: Vec::new(),
        linked_ms: now_ms,
    };
    Ok((record, bundle, controller_id))
}

/// Why `record` cannot be linked next to the already linked `peers`: a peer
/// with the same cluster name has another trust domain, or a peer with
/// another name has the same trust domain (a trust domain names one
/// cluster). Re-linking the same cluster and trust domain is allowed (it
/// replaces the record).
pub fn link_conflict(peers: &BTreeMap<String, PeerRecord>, record: &PeerRecord) -> Option<String> {
    peers.values().find_map(|p| {
        let same_name = p.cluster == record.cluster;
        let same_td = p.trust_domain == record.trust_domain;
        (same_name != same_td).then(|| {
            format!(
                "cluster {} (trust domain {}) is already linked; unlink it before linking {} (trust domain {})",
                p.cluster, p.trust_domain, record.cluster, record.trust_domain
            )
        })
    })
}

/// What `record`'s peer exports to us, decoded; `None` before the first
/// `WatchExports` message or when the stored bytes do not decode.
pub fn decode_exports(record: &PeerRecord) -> Option<ExportSet> {
    if record.exports.is_empty() {
        return None;
    }
    ExportSet::decode(record.exports.as_slice()).ok()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trust_bundle::CertificateAuthority;

    use super::*;

    fn info() -> PeerInfo {
        let td = TrustDomain::parse("cluster-b.mesh").unwrap();
        let ca = CertificateAuthority::self_signed(
            td.clone(),
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
        let bundle = Bundle::with_x509_authorities(td.clone(), [ca.trust_anchor().clone()]);
        let (_tx, rx) = watch::channel(bundle);
        let mut local = LocalPeer::new("cluster-b", td, rx, "https://127.0.0.1:1/", "127.0.0.1:2");
        local.gateway_addresses = vec!["127.0.0.1:3".into()];
        local.peer_info()
    }

    #[test]
    fn a_valid_peer_info_becomes_a_record() {
        let (record, bundle, id) = peer_record(&info(), 77).unwrap();
        assert_eq!(record.cluster, "cluster-b");
        assert_eq!(record.bundle_sequence, bundle.sequence());
        assert_eq!(
            id.as_str(),
            "spiffe://cluster-b.mesh/ns/isthmus-system/sa/controller"
        );
        assert_eq!((record.linked_ms, record.bundle_refreshed_ms), (77, 77));
        assert!(record.exports.is_empty());
        assert!(decode_exports(&record).is_none());
    }

    #[test]
    fn a_cluster_name_and_a_trust_domain_belong_together() {
        let (b, _, _) = peer_record(&info(), 0).unwrap();
        let peers = BTreeMap::from([(b.cluster.clone(), b.clone())]);
        assert_eq!(link_conflict(&peers, &b), None, "re-linking is allowed");
        let mut renamed = b.clone();
        renamed.cluster = "cluster-x".into();
        assert!(link_conflict(&peers, &renamed).is_some());
        let mut other_td = b.clone();
        other_td.trust_domain = "x.mesh".into();
        assert!(link_conflict(&peers, &other_td)
            .unwrap()
            .contains("unlink it before"));
        let mut unrelated = other_td;
        unrelated.cluster = "cluster-x".into();
        assert_eq!(link_conflict(&peers, &unrelated), None);
    }

    #[test]
    fn invalid_peer_infos_name_the_field() {
        let field = |edit: fn(&mut PeerInfo)| {
            let mut i = info();
            edit(&mut i);
            peer_record(&i, 0).unwrap_err().field
        };
        assert_eq!(field(|i| i.cluster = "Cluster_B".into()), "cluster");
        assert_eq!(field(|i| i.trust_domain = "not a td".into()), "trustDomain");
        assert_eq!(field(|i| i.bundle_json = "{".into()), "bundleJson");
        assert_eq!(
            field(|i| i.bundle_json = "{\"keys\":[]}".into()),
            "bundleJson"
        );
        assert_eq!(
            field(|i| i.controller_spiffe_id = "spiffe://cluster-a.mesh/x".into()),
            "controllerSpiffeId"
        );
        assert_eq!(
            field(|i| i.gateway_spiffe_id = "spiffe://other.mesh/gw".into()),
            "gatewaySpiffeId"
        );
        assert_eq!(field(|i| i.controller_address.clear()), "controllerAddress");
        assert_eq!(
            field(|i| i.bundle_endpoint = "http://x/".into()),
            "bundleEndpoint"
        );
    }
}
