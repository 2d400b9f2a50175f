//! An xDS v3 ADS client for our proxies: one aggregated stream to the
//! controller, explicit subscriptions per type URL, ACK/NACK, reconnect with
//! exponential backoff, and a `watch` of the accepted resources.
//!
//! Protocol variant: **state of the world** (`StreamAggregatedResources`,
//! xDS protocol "Variants of the xDS transport protocol"). Our proxies
//! subscribe to a few named resources, so the full-state responses are
//! small, and SotW keeps the client simple: per type URL one version, one
//! nonce, one name set.
//!
//! Semantics (xDS protocol spec, "ACK/NACK and resource type instance
//! version"):
//! - Listener and Cluster responses carry every subscribed resource (a
//!   resource missing from a response is removed); for other types
//!   (ClusterLoadAssignment, RouteConfiguration) a response carries the
//!   resources that changed and is merged into what we hold.
//! - Every response is answered: an ACK carries its `version_info` and
//!   `response_nonce`; a NACK carries the *previous* accepted version, the
//!   nonce, and `error_detail` (`google.rpc.Status`, code
//!   `INVALID_ARGUMENT`). The caller's validation callback decides; after a
//!   NACK the last good resources stay in force.
//! - After a reconnect every subscription is sent again with the last
//!   accepted version and no nonce; the resources held stay published until
//!   the server sends new ones (last good config across controller loss).
//! - A changed name list is sent at once with the type's last accepted
//!   version and latest nonce (the server answers the new list); a type no
//!   longer wanted gets one request with an empty name list (unsubscribe).
//!   The first request of a type is never empty unless it is meant as a
//!   wildcard (LDS/CDS).
//!
//! Structure: [`SotwState`] is the sans-IO core (requests out, responses in,
//! no clock, no socket); [`AdsClient`] is the thin tokio driver that owns
//! the connection, the [`Backoff`] timer and the published [`AdsSnapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::transport::{Target, TransportError};
use crate::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

/// Type URL of the `envoy.service.discovery.v3.Resource` wrapper.
const RESOURCE_WRAPPER_TYPE: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";
/// `google.rpc.Code.INVALID_ARGUMENT`.
const CODE_INVALID_ARGUMENT: i32 = 3;

/// Subscribed resource names per type URL; an empty set is a wildcard
/// subscription (all resources of the type).
pub type Subscriptions = BTreeMap<String, BTreeSet<String>>;

/// Decides whether a candidate resource set of one type is acceptable:
/// `Err(message)` NACKs the response with that message. Called with the
/// type URL and the whole set that would be in force after the response.
pub type Validator = Arc<ValidateFn>;

/// The function behind a [`Validator`].
pub type ValidateFn = dyn Fn(&str, &BTreeMap<String, Any>) -> Result<(), String> + Send + Sync;

/// The accepted resources of one type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// `version_info` of the last accepted response.
    pub version: String,
    /// Resources by name.
    pub resources: BTreeMap<String, Any>,
}

/// What the client holds and publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdsSnapshot {
    /// Accepted resources by type URL.
    pub types: BTreeMap<String, Resources>,
    /// Incremented on every change of `types`.
    pub generation: u64,
    /// Whether a stream to the controller is open now.
    pub connected: bool,
    /// The error of the last NACK sent, cleared by the next ACK.
    pub last_nack: Option<String>,
    /// How many responses have been NACKed since start.
    pub nacks: u64,
}

/// Why resources could not be decoded or a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    /// A resource is not a valid protobuf of its type.
    #[error("resource {name:?} of {type_url} does not decode")]
    Decode {
        /// The type URL.
        type_url: String,
        /// The resource name.
        name: String,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// No channel to the controller.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The stream failed or the server refused it.
    #[error("ads stream")]
    Stream(#[source] tonic::Status),
    /// The server closed the stream.
    #[error("ads stream closed by the server")]
    Closed,
}

/// Reconnect backoff and node identity of an [`AdsClient`].
#[derive(Debug, Clone)]
pub struct AdsConfig {
    /// The node sent in every request.
    pub node: Node,
    /// Initial subscriptions.
    pub subscriptions: Subscriptions,
    /// First reconnect delay (doubled per failure, with jitter).
    pub initial_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
}

/// The result of handling one response in [`SotwState`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseOutcome {
    /// The ACK or NACK to send.
    pub request: DiscoveryRequest,
    /// Whether the accepted resources changed.
    pub changed: bool,
    /// The NACK message, when NACKed.
    pub nack: Option<String>,
}

/// The sans-IO state of a SotW ADS client.
#[derive(Debug, Clone)]
pub struct SotwState {
    node: Node,
    subscriptions: Subscriptions,
    accepted: BTreeMap<String, Resources>,
    /// The nonce of the latest response per type on the current stream.
    nonces: BTreeMap<String, String>,
}

impl SotwState {
    /// A client for `node` with `subscriptions`, holding nothing yet.
    pub fn new(node: Node, subscriptions: Subscriptions) -> SotwState {
        SotwState {
            node,
            subscriptions,
            accepted: BTreeMap::new(),
            nonces: BTreeMap::new(),
        }
    }

    /// The resources accepted so far, by type URL.
    pub fn accepted(&self) -> &BTreeMap<String, Resources> {
        &self.accepted
    }

    /// The requests that open a (new) stream: one per subscribed type, with
    /// the last accepted version and no nonce.
    pub fn handle_connected(&mut self) -> Vec<DiscoveryRequest> {
        self.nonces.clear();
        self.subscriptions
            .keys()
            .map(|t| self.request(t, String::new(), None))
            .collect()
    }

    /// Replaces the subscriptions; returns the requests to send now: one
    /// per type whose name set changed (carrying the type's latest nonce, as
    /// the spec asks of every request after the first), and for each type
    /// no longer wanted one with no names (unsubscribe; never sent for a
    /// type that was a wildcard). Resources of types or names no longer
    /// subscribed are dropped from what is held.
    pub fn handle_subscriptions(&mut self, subscriptions: Subscriptions) -> Vec<DiscoveryRequest> {
        let mut out = Vec::new();
        for (t, names) in &subscriptions {
            if self.subscriptions.get(t) != Some(names) {
                out.push((t.clone(), names.clone()));
            }
        }
        let mut unsubscribe = Vec::new();
        for (t, names) in &self.subscriptions {
            if !subscriptions.contains_key(t) && !names.is_empty() {
                unsubscribe.push(DiscoveryRequest {
                    node: Some(self.node.clone()),
                    type_url: t.clone(),
                    response_nonce: self.nonces.get(t).cloned().unwrap_or_default(),
                    ..Default::default()
                });
            }
        }
        self.accepted.retain(|t, _| subscriptions.contains_key(t));
        for (t, names) in &subscriptions {
            if let Some(held) = self.accepted.get_mut(t) {
                if !names.is_empty() {
                    held.resources.retain(|n, _| names.contains(n));
                }
            }
        }
        self.subscriptions = subscriptions;
        let mut requests: Vec<DiscoveryRequest> = out
            .into_iter()
            .map(|(t, _)| {
                let nonce = self.nonces.get(&t).cloned().unwrap_or_default();
                self.request(&t, nonce, None)
            })
            .collect();
        requests.extend(unsubscribe);
        requests
    }

    /// Handles one response: decodes names, merges or replaces per type,
    /// asks `validate`, and returns the ACK or NACK.
    pub fn handle_response(
        &mut self,
        response: DiscoveryResponse,
        validate: &ValidateFn,
    ) -> ResponseOutcome {
        let type_url = response.type_url.clone();
        self.nonces.insert(type_url.clone(), response.nonce.clone());
        let candidate = self.candidate(&response).and_then(|set| {
            validate(&type_url, &set)?;
            Ok(set)
        });
        match candidate {
            Ok(set) => {
                let held = self.accepted.entry(type_url.clone()).or_default();
                let changed = held.resources != set;
                held.resources = set;
                held.version = response.version_info.clone();
                ResponseOutcome {
                    request: self.request(&type_url, response.nonce, None),
                    changed,
                    nack: None,
                }
            }
            Err(message) => ResponseOutcome {
                request: self.request(&type_url, response.nonce, Some(message.clone())),
                changed: false,
                nack: Some(message),
            },
        }
    }

    /// The set of `response.type_url` that would be in force after it.
    fn candidate(&self, response: &DiscoveryResponse) -> Result<BTreeMap<String, Any>, String> {
        let type_url = response.type_url.as_str();
        let Some(names) = self.subscriptions.get(type_url) else {
            return Err(format!("not subscribed to {type_url}"));
        };
        let full_state = type_url == LISTENER_TYPE || type_url == CLUSTER_TYPE;
        let mut set = if full_state {
            BTreeMap::new()
        } else {
            self.accepted
                .get(type_url)
                .map(|r| r.resources.clone())
                .unwrap_or_default()
        };
        for (i, any) in response.resources.iter().enumerate() {
            let (name, any) =
                resource_name(type_url, any).map_err(|e| format!("resources[{i}]: {e}"))?;
            if !names.is_empty() && !names.contains(&name) {
                // Not asked for: ignore (servers may over-send).
                continue;
            }
            if set.insert(name.clone(), any).is_some() && full_state {
                return Err(format!("resources[{i}]: {name:?} appears twice"));
            }
        }
        Ok(set)
    }

    fn request(&self, type_url: &str, nonce: String, nack: Option<String>) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self
                .accepted
                .get(type_url)
                .map(|r| r.version.clone())
                .unwrap_or_default(),
            node: Some(self.node.clone()),
            resource_names: self
                .subscriptions
                .get(type_url)
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            resource_locators: Vec::new(),
            type_url: type_url.to_owned(),
            response_nonce: nonce,
            error_detail: nack.map(|message| Status {
                code: CODE_INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
        }
    }
}

/// The name of a resource of `type_url` (unwrapping a `Resource` wrapper).
///
/// # Errors
/// A lowercase message: wrong type URL, undecodable, unsupported type.
pub fn resource_name(type_url: &str, any: &Any) -> Result<(String, Any), String> {
    if any.type_url == RESOURCE_WRAPPER_TYPE {
        let wrapped = Resource::decode(any.value.as_slice())
            .map_err(|e| format!("envoy.service.discovery.v3.Resource does not decode: {e}"))?;
        let inner = wrapped
            .resource
            .ok_or_else(|| format!("wrapped resource {:?} is empty", wrapped.name))?;
        return resource_name(type_url, &inner);
    }
    if any.type_url != type_url {
        return Err(format!(
            "type {} in a response of type {type_url}",
            any.type_url
        ));
    }
    let bytes = any.value.as_slice();
    let name = match type_url {
        CLUSTER_TYPE => Cluster::decode(bytes).map(|c| c.name),
        ENDPOINT_TYPE => ClusterLoadAssignment::decode(bytes).map(|c| c.cluster_name),
        LISTENER_TYPE => Listener::decode(bytes).map(|l| l.name),
        ROUTE_TYPE => RouteConfiguration::decode(bytes).map(|r| r.name),
        other => return Err(format!("unsupported type {other}")),
    }
    .map_err(|e| format!("does not decode as {type_url}: {e}"))?;
    if name.is_empty() {
        return Err("resource without a name".to_owned());
    }
    Ok((name, any.clone()))
}

impl AdsSnapshot {
    /// The accepted resources of `type_url` decoded as `M`, by name.
    ///
    /// # Errors
    /// [`AdsError::Decode`] naming the resource (the validator normally
    /// keeps such resources out).
    pub fn decode<M: Message + Default>(
        &self,
        type_url: &str,
    ) -> Result<BTreeMap<String, M>, AdsError> {
        let Some(held) = self.types.get(type_url) else {
            return Ok(BTreeMap::new());
        };
        held.resources
            .iter()
            .map(|(name, any)| {
                M::decode(any.value.as_slice())
                    .map(|m| (name.clone(), m))
                    .map_err(|source| AdsError::Decode {
                        type_url: type_url.to_owned(),
                        name: name.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// Whether a response of `type_url` has been accepted (possibly empty).
    pub fn has(&self, type_url: &str) -> bool {
        self.types.contains_key(type_url)
    }
}

/// Exponential backoff with jitter: the `n`th consecutive failure waits a
/// uniformly random time in `[d/2, d]` with `d = min(max, initial * 2^n)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (`max` is raised
    /// to `initial` if smaller).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The delay before the next attempt; `unit_random` is in `[0, 1)`.
    pub fn next_delay(&mut self, unit_random: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        let d = self.initial.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let jitter = unit_random.clamp(0.0, 1.0);
        d.mul_f64(0.5 + jitter / 2.0)
    }

    /// Back to `initial` (after a stream that worked).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A running ADS client: a tokio task holding one stream to the controller.
/// Dropping it stops the task.
#[derive(Debug)]
pub struct AdsClient {
    subscriptions: watch::Sender<Subscriptions>,
    snapshot: watch::Receiver<Arc<AdsSnapshot>>,
    stop: watch::Sender<bool>,
}

impl AdsClient {
    /// Starts the client task: connects to `target`, subscribes per
    /// `config`, answers every response through `validate`, reconnects with
    /// backoff. Must run inside a tokio runtime.
    pub fn spawn(target: Target, config: AdsConfig, validate: Validator) -> AdsClient {
        let (subs_tx, subs_rx) = watch::channel(config.subscriptions.clone());
        let (snap_tx, snap_rx) = watch::channel(Arc::new(AdsSnapshot::default()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let driver = Driver {
            target,
            state: SotwState::new(config.node.clone(), config.subscriptions.clone()),
            backoff: Backoff::new(config.initial_backoff, config.max_backoff),
            validate,
            subscriptions: subs_rx,
            snapshot: snap_tx,
            stop: stop_rx,
        };
        tokio::spawn(driver.run());
        AdsClient {
            subscriptions: subs_tx,
            snapshot: snap_rx,
            stop: stop_tx,
        }
    }

    /// A receiver of every published snapshot (the current one first).
    pub fn watch(&self) -> watch::Receiver<Arc<AdsSnapshot>> {
        self.snapshot.clone()
    }

    /// The snapshot published last.
    pub fn snapshot(&self) -> Arc<AdsSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// Replaces the subscriptions (sent at once on the open stream).
    pub fn set_subscriptions(&self, subscriptions: Subscriptions) {
        self.subscriptions.send_replace(subscriptions);
    }

    /// Stops the client task (also on drop).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for AdsClient {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

struct Driver {
    target: Target,
    state: SotwState,
    backoff: Backoff,
    validate: Validator,
    subscriptions: watch::Receiver<Subscriptions>,
    snapshot: watch::Sender<Arc<AdsSnapshot>>,
    stop: watch::Receiver<bool>,
}

enum SessionEnd {
    Stopped,
    Failed { error: AdsError, worked: bool },
}

impl Driver {
    async fn run(mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            match self.session().await {
                SessionEnd::Stopped => return,
                SessionEnd::Failed { error, worked } => {
                    self.publish(|s| s.connected = false);
                    if worked {
                        self.backoff.reset();
                    }
                    let delay = self.backoff.next_delay(unit_random());
                    tracing::warn!(
                        address = %self.target.address,
                        error = %crate::error_chain(&error),
                        retry_in_ms = delay.as_millis() as u64,
                        "ads stream down; keeping the last good resources"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        r = self.stop.wait_for(|s| *s) => { let _ = r; return; }
                    }
                }
            }
        }
    }

    async fn session(&mut self) -> SessionEnd {
        let channel = tokio::select! {
            c = self.target.connect() => c,
            r = self.stop.wait_for(|s| *s) => { let _ = r; return SessionEnd::Stopped; }
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                return SessionEnd::Failed {
                    error: e.into(),
                    worked: false,
                }
            }
        };
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::unbounded_channel();
        // The subscriptions may have changed while we were away.
        let subs = self.subscriptions.borrow_and_update().clone();
        let _ = self.state.handle_subscriptions(subs);
        for r in self.state.handle_connected() {
            let _ = tx.send(r);
        }
        let opened = tokio::select! {
            r = client.stream_aggregated_resources(UnboundedReceiverStream::new(rx)) => r,
            r = self.stop.wait_for(|s| *s) => { let _ = r; return SessionEnd::Stopped; }
        };
        let mut stream = match opened {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return SessionEnd::Failed {
                    error: AdsError::Stream(status),
                    worked: false,
                }
            }
        };
        tracing::info!(address = %self.target.address, "ads stream open");
        self.publish(|s| s.connected = true);
        let mut worked = false;
        let mut subscriptions = self.subscriptions.clone();
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(response)) => {
                        worked = true;
                        let type_url = response.type_url.clone();
                        let version = response.version_info.clone();
                        let outcome = self.state.handle_response(response, &*self.validate);
                        if let Some(err) = &outcome.nack {
                            tracing::warn!(%type_url, %version, error = %err, "NACK: keeping the last good resources");
                        } else {
                            tracing::debug!(%type_url, %version, changed = outcome.changed, "ACK");
                        }
                        let accepted = self.state.accepted().clone();
                        let nack = outcome.nack.clone();
                        let changed = outcome.changed;
                        let first = nack.is_none()
                            && !self.snapshot.borrow().types.contains_key(&type_url);
                        self.publish(|s| {
                            if changed || first || s.types != accepted {
                                s.types = accepted;
                                s.generation += 1;
                            }
                            if nack.is_some() {
                                s.nacks += 1;
                            }
                            s.last_nack = nack;
                        });
                        if tx.send(outcome.request).is_err() {
                            return SessionEnd::Failed { error: AdsError::Closed, worked };
                        }
                    }
                    Ok(None) => return SessionEnd::Failed { error: AdsError::Closed, worked },
                    Err(status) => return SessionEnd::Failed { error: AdsError::Stream(status), worked },
                },
                changed = subscriptions.changed() => {
                    if changed.is_err() {
                        return SessionEnd::Stopped;
                    }
                    let subs = subscriptions.borrow_and_update().clone();
                    for r in self.state.handle_subscriptions(subs) {
                        let _ = tx.send(r);
                    }
                    let accepted = self.state.accepted().clone();
                    self.publish(|s| if s.types != accepted { s.types = accepted; s.generation += 1; });
                }
                r = stop.wait_for(|s| *s) => { let _ = r; return SessionEnd::Stopped; }
            }
        }
    }

    fn publish(&self, f: impl FnOnce(&mut AdsSnapshot)) {
        self.snapshot.send_modify(|s| {
            let mut next = (**s).clone();
            f(&mut next);
            if next != **s {
                *s = Arc::new(next);
            }
        });
    }
}

/// A number in `[0, 1)` from std's randomly keyed hasher (jitter only).
pub(crate) fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cla(name: &str) -> Any {
        Any {
            type_url: ENDPOINT_TYPE.to_owned(),
            value: ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    fn cluster(name: &str) -> Any {
        Any {
            type_url: CLUSTER_TYPE.to_owned(),
            value: Cluster {
                name: name.to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    fn response(type_url: &str, version: &str, nonce: &str, res: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.to_owned(),
            resources: res,
            type_url: type_url.to_owned(),
            nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    fn state() -> SotwState {
        let mut subs = Subscriptions::new();
        subs.insert(CLUSTER_TYPE.to_owned(), BTreeSet::new());
        subs.insert(
            ENDPOINT_TYPE.to_owned(),
            ["a".to_owned(), "b".to_owned()].into(),
        );
        SotwState::new(Node::default(), subs)
    }

    fn accept_all(_: &str, _: &BTreeMap<String, Any>) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn ack_carries_version_and_nonce_and_nack_keeps_the_last_good_set() {
        let mut s = state();
        let first = s.handle_connected();
        assert_eq!(first.len(), 2);
        assert!(first
            .iter()
            .all(|r| r.version_info.is_empty() && r.response_nonce.is_empty()));

        let out = s.handle_response(
            response(ENDPOINT_TYPE, "1", "n1", vec![cla("a")]),
            &accept_all,
        );
        assert!(out.changed);
        assert_eq!(out.request.version_info, "1");
        assert_eq!(out.request.response_nonce, "n1");
        assert!(out.request.error_detail.is_none());
        assert_eq!(out.request.resource_names, vec!["a", "b"]);

        let refuse = |_: &str, set: &BTreeMap<String, Any>| {
            if set.contains_key("b") {
                Err("b is bad".to_owned())
            } else {
                Ok(())
            }
        };
        let out = s.handle_response(response(ENDPOINT_TYPE, "2", "n2", vec![cla("b")]), &refuse);
        assert_eq!(out.nack.as_deref(), Some("b is bad"));
        assert_eq!(
            out.request.version_info, "1",
            "a NACK names the last accepted version"
        );
        assert_eq!(out.request.response_nonce, "n2");
        assert_eq!(out.request.error_detail.as_ref().map(|e| e.code), Some(3));
        let held = &s.accepted()[ENDPOINT_TYPE];
        assert_eq!(held.version, "1");
        assert_eq!(held.resources.keys().collect::<Vec<_>>(), vec!["a"]);

        // Reconnect: the last accepted version, no nonce.
        let again = s.handle_connected();
        let eds = again.iter().find(|r| r.type_url == ENDPOINT_TYPE).unwrap();
        assert_eq!(eds.version_info, "1");
        assert!(eds.response_nonce.is_empty());
    }

    #[test]
    fn eds_merges_cds_replaces_and_unasked_names_are_ignored() {
        let mut s = state();
        s.handle_response(
            response(ENDPOINT_TYPE, "1", "n", vec![cla("a")]),
            &accept_all,
        );
        s.handle_response(
            response(ENDPOINT_TYPE, "2", "n", vec![cla("b"), cla("zzz")]),
            &accept_all,
        );
        let eds = &s.accepted()[ENDPOINT_TYPE].resources;
        assert_eq!(eds.keys().collect::<Vec<_>>(), vec!["a", "b"]);

        s.handle_response(
            response(CLUSTER_TYPE, "1", "n", vec![cluster("x"), cluster("y")]),
            &accept_all,
        );
        let out = s.handle_response(
            response(CLUSTER_TYPE, "2", "n", vec![cluster("y")]),
            &accept_all,
        );
        assert!(out.changed);
        let cds = &s.accepted()[CLUSTER_TYPE].resources;
        assert_eq!(cds.keys().collect::<Vec<_>>(), vec!["y"]);
        let same = s.handle_response(
            response(CLUSTER_TYPE, "3", "n", vec![cluster("y")]),
            &accept_all,
        );
        assert!(!same.changed);
    }

    #[test]
    fn malformed_and_mistyped_resources_are_nacked() {
        let mut s = state();
        let bad = Any {
            type_url: ENDPOINT_TYPE.to_owned(),
            value: vec![0xff, 0xff, 0xff],
        };
        let out = s.handle_response(response(ENDPOINT_TYPE, "1", "n", vec![bad]), &accept_all);
        assert!(out.nack.unwrap().contains("resources[0]"));
        let out = s.handle_response(
            response(ENDPOINT_TYPE, "1", "n", vec![cluster("a")]),
            &accept_all,
        );
        assert!(out
            .nack
            .unwrap()
            .contains("type.googleapis.com/envoy.config.cluster.v3.Cluster"));
        let out = s.handle_response(response(LISTENER_TYPE, "1", "n", vec![]), &accept_all);
        assert!(out.nack.unwrap().contains("not subscribed"));
        assert!(s.accepted().is_empty());
    }

    #[test]
    fn subscription_changes_request_only_changed_types_and_drop_names() {
        let mut s = state();
        s.handle_response(
            response(ENDPOINT_TYPE, "1", "n", vec![cla("a"), cla("b")]),
            &accept_all,
        );
        let mut subs = Subscriptions::new();
        subs.insert(CLUSTER_TYPE.to_owned(), BTreeSet::new());
        subs.insert(ENDPOINT_TYPE.to_owned(), ["b".to_owned()].into());
        let reqs = s.handle_subscriptions(subs);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].resource_names, vec!["b"]);
        assert_eq!(reqs[0].version_info, "1");
        assert_eq!(reqs[0].response_nonce, "n", "the latest nonce of the type");
        assert_eq!(
            s.accepted()[ENDPOINT_TYPE]
                .resources
                .keys()
                .collect::<Vec<_>>(),
            vec!["b"]
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(0.999_999)).collect();
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![99, 199, 399, 799, 999, 999]);
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
        for r in [0.0, 0.3, 0.7, 0.99] {
            let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(5));
            for _ in 0..64 {
                let d = b.next_delay(r);
                assert!(
                    d >= Duration::from_millis(5) && d <= Duration::from_secs(5),
                    "{d:?}"
                );
            }
        }
    }
}
