//! State of the world ADS, one stream, sans-IO: requests and snapshots in,
//! responses out (xDS protocol, "State of the World" and "ACK/NACK and
//! resource type instance version").
//!
//! Per type URL the stream keeps the client's subscription (wildcard or
//! names), the version and nonce of the last response sent, and the last
//! version the client ACKed. The version of a response is a hash of the
//! names and versions of the resources in it, so the same content always
//! has the same version and a NACKed version is not sent again until the
//! content changes.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_api::xds::{CLUSTER_TYPE, LISTENER_TYPE};

use super::resources::{hash_of, Snapshot, TYPES};

/// One SotW stream's protocol state.
#[derive(Debug, Default)]
pub struct SotwStream {
    next_nonce: u64,
    types: BTreeMap<String, TypeState>,
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Version and nonce of the last response sent.
    sent_version: Option<String>,
    sent_nonce: String,
    /// Last version the client ACKed.
    acked_version: Option<String>,
}

/// What a request was, for the driver's logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// The first request for a type on this stream.
    Initial,
    /// ACK of `version`.
    Ack {
        /// The version the client applied.
        version: String,
    },
    /// NACK with the client's message; the client keeps `version`.
    Nack {
        /// The version the client still uses.
        version: String,
        /// `error_detail.message`.
        message: String,
    },
    /// A delta request without a nonce after the first: a subscription
    /// change only.
    Subscription,
    /// A request carrying a nonce other than the latest: ignored (SotW) or
    /// only its subscription change applied (delta).
    Stale,
    /// A type this server does not serve: ignored.
    Unsupported,
}

impl SotwStream {
    /// Handles one request against the client's current snapshot; returns
    /// what it was and the response to send, if any.
    pub fn handle_request(
        &mut self,
        req: &DiscoveryRequest,
        snap: &Snapshot,
    ) -> (RequestKind, Option<DiscoveryResponse>) {
        let type_url = req.type_url.as_str();
        if snap.resources(type_url).is_none() {
            return (RequestKind::Unsupported, None);
        }
        let first = !self.types.contains_key(type_url);
        let st = self.types.entry(type_url.to_owned()).or_default();
        let kind = if first {
            RequestKind::Initial
        } else if req.response_nonce != st.sent_nonce {
            // xDS: "the management server should ignore" requests whose
            // nonce is not the latest it sent for the type.
            return (RequestKind::Stale, None);
        } else if let Some(err) = &req.error_detail {
            RequestKind::Nack {
                version: req.version_info.clone(),
                message: err.message.clone(),
            }
        } else {
            st.acked_version = Some(req.version_info.clone());
            RequestKind::Ack {
                version: req.version_info.clone(),
            }
        };
        let mut names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let star = names.remove("*");
        let wildcard_type = type_url == LISTENER_TYPE || type_url == CLUSTER_TYPE;
        let wildcard = star || (names.is_empty() && wildcard_type && (first || st.wildcard));
        // A response is owed for a new type, newly added names and a newly
        // turned on wildcard (the client must learn what does not exist);
        // otherwise only when the content version differs.
        let changed = first || (wildcard && !st.wildcard) || !names.is_subset(&st.names);
        st.wildcard = wildcard;
        st.names = names;
        let resp = self.respond(type_url, snap, changed);
        (kind, resp)
    }

    /// Handles a new snapshot (model change): a response for every
    /// subscribed type whose content changed, in [`TYPES`] order.
    pub fn handle_snapshot(&mut self, snap: &Snapshot) -> Vec<DiscoveryResponse> {
        TYPES
            .iter()
            .filter_map(|t| self.respond(t, snap, false))
            .collect()
    }

    /// The last version the client ACKed for a type.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.acked_version.as_deref()
    }

    fn respond(
        &mut self,
        type_url: &str,
        snap: &Snapshot,
        force: bool,
    ) -> Option<DiscoveryResponse> {
        let st = self.types.get_mut(type_url)?;
        let all = snap.resources(type_url)?;
        let chosen: Vec<(&String, &super::resources::Resource)> = all
            .iter()
            .filter(|(name, r)| st.names.contains(*name) || (st.wildcard && r.wildcard))
            .collect();
        let listing: Vec<(&str, u64)> = chosen.iter().map(|(n, r)| (n.as_str(), r.hash)).collect();
        let version = format!("{:016x}", hash_of(&listing));
        if !force && st.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        st.sent_version = Some(version.clone());
        st.sent_nonce = nonce.clone();
        Some(DiscoveryResponse {
            version_info: version,
            resources: chosen.into_iter().map(|(_, r)| r.any.clone()).collect(),
            type_url: type_url.to_owned(),
            nonce,
            ..Default::default()
        })
    }
}
