//! Incremental (delta) ADS, one stream, sans-IO (xDS protocol,
//! "Incremental xDS").
//!
//! Per type URL the stream keeps the subscription (wildcard and/or names)
//! and the version of every resource the client is believed to hold
//! (seeded from `initial_resource_versions`). A response carries only
//! resources whose version differs from that record, and in
//! `removed_resources` the names the client holds that are gone, plus names
//! it just subscribed to that do not exist. A NACKed resource is not sent
//! again until its version changes.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use mesh_api::xds::{CLUSTER_TYPE, LISTENER_TYPE};

use super::resources::{Snapshot, TYPES};
use super::sotw::RequestKind;

/// One delta stream's protocol state.
#[derive(Debug, Default)]
pub struct DeltaStream {
    next_nonce: u64,
    types: BTreeMap<String, TypeState>,
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// name → version the client holds.
    known: BTreeMap<String, String>,
    sent_nonce: String,
}

impl DeltaStream {
    /// Handles one request against the client's current snapshot.
    pub fn handle_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snap: &Snapshot,
    ) -> (RequestKind, Option<DeltaDiscoveryResponse>) {
        let type_url = req.type_url.as_str();
        if snap.resources(type_url).is_none() {
            return (RequestKind::Unsupported, None);
        }
        let first = !self.types.contains_key(type_url);
        let st = self.types.entry(type_url.to_owned()).or_default();
        let kind = if first {
            st.known = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let wildcard_type = type_url == LISTENER_TYPE || type_url == CLUSTER_TYPE;
            st.wildcard = wildcard_type && req.resource_names_subscribe.is_empty();
            RequestKind::Initial
        } else if req.response_nonce.is_empty() {
            RequestKind::Subscription
        } else if req.response_nonce != st.sent_nonce {
            // Delta ACK/NACK of an older response: still apply any
            // subscription change it carries.
            RequestKind::Stale
        } else if let Some(err) = &req.error_detail {
            RequestKind::Nack {
                version: String::new(),
                message: err.message.clone(),
            }
        } else {
            RequestKind::Ack {
                version: String::new(),
            }
        };
        let mut newly = Vec::new();
        for n in &req.resource_names_subscribe {
            if n == "*" {
                st.wildcard = true;
            } else if st.names.insert(n.clone()) || first {
                newly.push(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(n);
                st.known.remove(n);
            }
        }
        let resp = self.respond(type_url, snap, &newly, first);
        (kind, resp)
    }

    /// Handles a new snapshot: per subscribed type, the changed and removed
    /// resources, in [`TYPES`] order.
    pub fn handle_snapshot(&mut self, snap: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        TYPES
            .iter()
            .filter_map(|t| self.respond(t, snap, &[], false))
            .collect()
    }

    fn respond(
        &mut self,
        type_url: &str,
        snap: &Snapshot,
        newly: &[String],
        force: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let st = self.types.get_mut(type_url)?;
        let all = snap.resources(type_url)?;
        let mut resources = Vec::new();
        let mut desired = BTreeSet::new();
        for (name, r) in all {
            if !(st.names.contains(name) || (st.wildcard && r.wildcard)) {
                continue;
            }
            desired.insert(name.clone());
            let version = r.version();
            if st.known.get(name) != Some(&version) {
                st.known.insert(name.clone(), version.clone());
                resources.push(DeltaResource {
                    name: name.clone(),
                    version,
                    resource: Some(r.any.clone()),
                    ..Default::default()
                });
            }
        }
        let mut removed: BTreeSet<String> = st
            .known
            .keys()
            .filter(|n| !desired.contains(*n))
            .cloned()
            .collect();
        st.known.retain(|n, _| desired.contains(n));
        removed.extend(newly.iter().filter(|n| !all.contains_key(*n)).cloned());
        if resources.is_empty() && removed.is_empty() && !force {
            return None;
        }
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        st.sent_nonce = nonce.clone();
        Some(DeltaDiscoveryResponse {
            system_version_info: String::new(),
            resources,
            type_url: type_url.to_owned(),
            removed_resources: removed.into_iter().collect(),
            nonce,
            ..Default::default()
        })
    }
}
