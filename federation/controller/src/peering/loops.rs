//! The per-peer loops: keep each linked peer's bundle and exports fresh.
//!
//! [`run_peer_loops`] watches the catalog's peers. For each peer it runs
//! - a bundle refresher: SPIFFE Federation `https_spiffe` fetches from the
//!   peer's bundle endpoint, authenticating the endpoint as the peer's
//!   controller SPIFFE ID with the bundle already held (so a root rotation
//!   carries itself over), honoring `spiffe_refresh_hint` (default 5 min),
//!   retrying failures from 1 s doubling up to the refresh interval. Every
//!   fetched bundle goes into the process's [`BundleStore`] at once (while
//!   the peer is linked); the leader also writes `UpdatePeerBundle` when the sequence
//!   changed (or the stored refresh time is older than `bundle_rewrite`);
//! - on the Raft leader only, a `WatchExports` client: mTLS with our SVID,
//!   verifying the peer controller's SPIFFE ID against the peer's bundle,
//!   writing `UpdatePeerExports` when the streamed set differs from the
//!   stored one; reconnects from 1 s doubling up to `reconnect_max`.
//!
//! It also mirrors the catalog's peer bundles into the live bundle store
//! (on every node, so followers' listeners trust linked peers too), and
//! drops a removed peer's bundle. Tasks of a removed or changed peer are
//! aborted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_api::peering::peering_client::PeeringClient;
use mesh_api::peering::WatchExportsRequest;
use prost::Message as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trust_bundle::endpoint::{
    retry_interval, BundleEndpointClient, EndpointConfig, EndpointProfile, DEFAULT_REFRESH,
};
use trust_bundle::{Bundle, BundleStore, SpiffeId, TrustDomain};

use super::context::PeeringState;
use super::state::OLDER_BUNDLE;
use super::{error_chain, tls, PeeringContext};
use crate::catalog::{Command, PeerRecord, Response};

/// Runs the loops of every linked peer until `shutdown` flips to true or
/// its sender is dropped; then aborts them all.
pub async fn run_peer_loops<S: PeeringState>(
    ctx: Arc<PeeringContext<S>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut catalog = ctx.store.watch();
    let mut running: BTreeMap<String, PeerTasks> = BTreeMap::new();
    loop {
        let state = catalog.borrow_and_update().clone();
        let peers = &state.catalog().peers;
        // Dropping the tasks of a removed or changed peer aborts them.
        running.retain(|cluster, tasks| {
            peers
                .get(cluster)
                .is_some_and(|p| PeerKey::of(p) == tasks.key)
        });
        for (cluster, record) in peers {
            mirror_bundle(&ctx, record);
            if !running.contains_key(cluster) {
                running.insert(cluster.clone(), PeerTasks::spawn(&ctx, record));
            }
        }
        tokio::select! {
            changed = catalog.changed() => if changed.is_err() { return },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Puts the catalog's bundle of `record` into the live store when the store
/// holds none for its trust domain or an older one.
fn mirror_bundle<S: PeeringState>(ctx: &PeeringContext<S>, record: &PeerRecord) {
    let Ok(td) = TrustDomain::parse(&record.trust_domain) else {
        return;
    };
    let held = ctx.bundles.get(&td).map(|b| b.sequence());
    if held.is_some_and(|s| s >= record.bundle_sequence) {
        return;
    }
    match Bundle::from_jwks(td, record.bundle_json.as_bytes()) {
        Ok(bundle) => ctx.bundles.set(bundle),
        Err(e) => {
            tracing::warn!(peer = %record.cluster, error = %error_chain(&e), "stored peer bundle does not parse")
        }
    }
}

/// What the tasks of a peer depend on; a change restarts them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerKey {
    trust_domain: String,
    bundle_endpoint: String,
    controller_address: String,
    controller_spiffe_id: String,
    linked_ms: u64,
}

impl PeerKey {
    fn of(p: &PeerRecord) -> Self {
        PeerKey {
            trust_domain: p.trust_domain.clone(),
            bundle_endpoint: p.bundle_endpoint.clone(),
            controller_address: p.controller_address.clone(),
            controller_spiffe_id: p.controller_spiffe_id.clone(),
            linked_ms: p.linked_ms,
        }
    }
}

/// The running tasks of one peer; dropping aborts them and forgets the
/// peer's bundle if no linked peer uses its trust domain any more.
struct PeerTasks {
    key: PeerKey,
    handles: Vec<JoinHandle<()>>,
    forget: Box<dyn Fn(&str) + Send>,
}

impl PeerTasks {
    fn spawn<S: PeeringState>(ctx: &Arc<PeeringContext<S>>, record: &PeerRecord) -> Self {
        let key = PeerKey::of(record);
        let mut handles = Vec::new();
        match (
            TrustDomain::parse(&key.trust_domain),
            SpiffeId::parse(&key.controller_spiffe_id),
        ) {
            (Ok(td), Ok(controller)) => {
                if key.bundle_endpoint.is_empty() {
                    tracing::warn!(peer = %record.cluster, "peer has no bundle endpoint; its bundle will not be refreshed");
                } else {
                    handles.push(tokio::spawn(bundle_loop(
                        ctx.clone(),
                        record.cluster.clone(),
                        td,
                        key.bundle_endpoint.clone(),
                        controller.clone(),
                    )));
                }
                handles.push(tokio::spawn(exports_loop(
                    ctx.clone(),
                    record.cluster.clone(),
                    key.controller_address.clone(),
                    controller,
                )));
            }
            _ => {
                tracing::warn!(peer = %record.cluster, "peer record has an invalid trust domain or controller ID; not watching it")
            }
        }
        let weak = Arc::downgrade(ctx);
        PeerTasks {
            key,
            handles,
            forget: Box::new(move |td| {
                if let Some(ctx) = weak.upgrade() {
                    ctx.forget_bundle(td);
                }
            }),
        }
    }
}

impl Drop for PeerTasks {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
        (self.forget)(&self.key.trust_domain);
    }
}

async fn bundle_loop<S: PeeringState>(
    ctx: Arc<PeeringContext<S>>,
    cluster: String,
    trust_domain: TrustDomain,
    url: String,
    endpoint_id: SpiffeId,
) {
    // The client authenticates each fetch with the bundle it fetched last,
    // kept in a store of its own; a fetched bundle reaches the live store
    // only while the peer is still linked (an unlink must not be undone by
    // a fetch that was in flight).
    let own = BundleStore::new();
    match ctx.bundles.get(&trust_domain) {
        Some(held) => own.set(held),
        None => match ctx
            .peer(&cluster)
            .map(|p| Bundle::from_jwks(trust_domain.clone(), p.bundle_json.as_bytes()))
        {
            Some(Ok(bundle)) => own.set(bundle),
            _ => {
                tracing::warn!(peer = %cluster, "no bundle held for the peer; its bundle endpoint cannot be authenticated")
            }
        },
    }
    let config = EndpointConfig {
        trust_domain: trust_domain.clone(),
        url,
        profile: EndpointProfile::HttpsSpiffe { endpoint_id },
    };
    let client = match BundleEndpointClient::new(config, own) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(peer = %cluster, error = %error_chain(&e), "cannot refresh the peer's bundle");
            return;
        }
    };
    let mut failures = 0u32;
    let mut interval = DEFAULT_REFRESH;
    loop {
        let wait = match client.refresh().await {
            Ok(bundle) => {
                failures = 0;
                interval = bundle
                    .refresh_hint()
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_REFRESH);
                if ctx
                    .peer(&cluster)
                    .is_some_and(|p| p.trust_domain == trust_domain.as_str())
                {
                    ctx.bundles.set(bundle.clone());
                    record_bundle(&ctx, &cluster, &bundle).await;
                }
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(peer = %cluster, error = %error_chain(&e), failures, "peer bundle refresh failed; keeping the last good bundle");
                retry_interval(failures, interval)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Writes a fetched bundle to the catalog when it is news (leader only).
async fn record_bundle<S: PeeringState>(ctx: &PeeringContext<S>, cluster: &str, bundle: &Bundle) {
    if !ctx.store.is_leader() {
        return;
    }
    let Some(record) = ctx.peer(cluster) else {
        return;
    };
    let now_ms = ctx.now_ms();
    if !bundle_write_needed(
        &record,
        bundle.sequence(),
        now_ms,
        ctx.timing.bundle_rewrite,
    ) {
        return;
    }
    let command = Command::UpdatePeerBundle {
        cluster: cluster.to_owned(),
        bundle_json: String::from_utf8_lossy(&bundle.to_jwks()).into_owned(),
        sequence: bundle.sequence(),
        now_ms,
    };
    match ctx.store.write(command).await {
        Ok(Response::Refused(reason)) if reason == OLDER_BUNDLE => {
            tracing::warn!(
                peer = cluster,
                sequence = bundle.sequence(),
                held = record.bundle_sequence,
                "peer served an older bundle sequence; ignored"
            )
        }
        Ok(_) => {
            if record.bundle_sequence != bundle.sequence() {
                tracing::info!(
                    peer = cluster,
                    sequence = bundle.sequence(),
                    "peer bundle updated"
                );
            }
        }
        Err(e) => {
            tracing::warn!(peer = cluster, error = %error_chain(&e), "could not store the peer bundle")
        }
    }
}

/// Whether a fetched bundle with `sequence` should be written over
/// `record`: the sequence differs (a lower one is written too, so the
/// catalog's refusal is logged), or the stored refresh time is at least
/// `rewrite` old.
fn bundle_write_needed(record: &PeerRecord, sequence: u64, now_ms: u64, rewrite: Duration) -> bool {
    let age_ms = now_ms.saturating_sub(record.bundle_refreshed_ms);
    record.bundle_sequence != sequence
        || age_ms >= u64::try_from(rewrite.as_millis()).unwrap_or(u64::MAX)
}

async fn exports_loop<S: PeeringState>(
    ctx: Arc<PeeringContext<S>>,
    cluster: String,
    address: String,
    controller: SpiffeId,
) {
    let mut failures = 0u32;
    loop {
        if !ctx.store.is_leader() {
            tokio::time::sleep(ctx.timing.leader_check).await;
            continue;
        }
        match watch_exports(&ctx, &cluster, &address, &controller, &mut failures).await {
            Ok(()) => tracing::debug!(peer = %cluster, "WatchExports stream ended"),
            Err(reason) => {
                tracing::warn!(peer = %cluster, %address, %reason, failures, "WatchExports failed")
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(retry_interval(failures, ctx.timing.reconnect_max)).await;
    }
}

/// One `WatchExports` stream, until it ends or fails; `failures` is reset
/// on every message.
async fn watch_exports<S: PeeringState>(
    ctx: &PeeringContext<S>,
    cluster: &str,
    address: &str,
    controller: &SpiffeId,
    failures: &mut u32,
) -> Result<(), String> {
    let config = tls::client_config(
        Some(ctx.svid.clone()),
        ctx.bundles.clone(),
        controller.clone(),
    )
    .map_err(|e| error_chain(&e))?;
    let channel = tls::connect(address, config, ctx.timing.connect_timeout).await?;
    let mut stream = PeeringClient::new(channel)
        .watch_exports(WatchExportsRequest {})
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    loop {
        let set = match stream.message().await {
            Ok(Some(set)) => set,
            Ok(None) => return Ok(()),
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        };
        *failures = 0;
        if !ctx.store.is_leader() {
            return Ok(());
        }
        let bytes = set.encode_to_vec();
        match ctx.peer(cluster) {
            None => return Ok(()),
            Some(p) if p.exports == bytes => continue,
            Some(_) => {}
        }
        let command = Command::UpdatePeerExports {
            cluster: cluster.to_owned(),
            exports: bytes,
        };
        match ctx.store.write(command).await {
            Ok(_) => tracing::info!(
                peer = cluster,
                services = set.services.len(),
                version = set.version,
                "peer exports updated"
            ),
            Err(e) => return Err(format!("store write failed: {}", error_chain(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_written_on_a_new_sequence_or_when_stale() {
        let record = PeerRecord {
            cluster: "b".into(),
            trust_domain: "b.mesh".into(),
            bundle_json: String::new(),
            bundle_sequence: 3,
            bundle_refreshed_ms: 10_000,
            bundle_endpoint: String::new(),
            controller_address: String::new(),
            controller_spiffe_id: String::new(),
            gateway_addresses: vec![],
            gateway_spiffe_id: String::new(),
            region: String::new(),
            exports: vec![],
            linked_ms: 0,
        };
        let minute = Duration::from_secs(60);
        assert!(!bundle_write_needed(&record, 3, 69_999, minute));
        assert!(bundle_write_needed(&record, 3, 70_000, minute));
        assert!(bundle_write_needed(&record, 4, 10_001, minute));
        assert!(bundle_write_needed(&record, 2, 10_001, minute));
        assert!(
            !bundle_write_needed(&record, 3, 0, minute),
            "clock went back"
        );
    }
}
