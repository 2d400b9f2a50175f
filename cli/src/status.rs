//! `GET /v1/status` as typed values, the checks of `meshctl check` as a pure
//! function of it, and the human summary of `meshctl status`.
//!
//! Decoding is lenient (every field defaults) so a controller that adds
//! fields or omits a section still gets a report; the check then says what
//! is missing rather than meshctl failing to parse.

use serde::{Deserialize, Serialize};

use crate::output::{short_duration, table};

/// The controller's view of its cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Status {
    /// This cluster's name.
    #[serde(deserialize_with = "nullable")]
    pub(crate) cluster: String,
    /// This cluster's trust domain.
    #[serde(deserialize_with = "nullable")]
    pub(crate) trust_domain: String,
    /// Raft facts of the answering node.
    pub(crate) raft: Option<RaftStatus>,
    /// The CA.
    pub(crate) ca: Option<CaStatus>,
    /// Linked peers.
    #[serde(deserialize_with = "nullable")]
    pub(crate) peers: Vec<PeerStatus>,
    /// Our east-west gateways and their tunnels.
    #[serde(deserialize_with = "nullable")]
    pub(crate) gateways: Vec<GatewayStatus>,
    /// Our exports and who imports them.
    #[serde(deserialize_with = "nullable")]
    pub(crate) exports: Vec<ExportStatus>,
    /// Our imports and which clusters back them.
    #[serde(deserialize_with = "nullable")]
    pub(crate) imports: Vec<ImportStatus>,
}

impl Status {
    /// Decodes the answer of `GET /v1/status`.
    ///
    /// # Errors
    /// A field has the wrong type.
    pub(crate) fn decode(value: serde_json::Value) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        serde_json::from_value(value).context("GET /v1/status: unexpected answer")
    }
}

/// Raft facts (the store's `RaftStatus`; snake or camel case accepted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RaftStatus {
    /// The answering node.
    #[serde(alias = "nodeId")]
    #[serde(deserialize_with = "nullable")]
    pub(crate) node_id: u64,
    /// The leader, if known.
    pub(crate) leader: Option<u64>,
    /// Current term.
    #[serde(deserialize_with = "nullable")]
    pub(crate) term: u64,
    /// Voting members.
    #[serde(deserialize_with = "nullable")]
    pub(crate) voters: Vec<Voter>,
    /// Last applied log index.
    #[serde(alias = "lastApplied")]
    #[serde(deserialize_with = "nullable")]
    pub(crate) last_applied: u64,
}

/// A voter: `[id, "addr"]` or `{"id", "address", "reachable"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Voter {
    /// `[id, address]`.
    Pair(u64, String),
    /// An object, possibly with reachability.
    Object {
        /// Node id.
        id: u64,
        /// Raft address.
        #[serde(default, alias = "addr")]
        address: String,
        /// Whether the answering node reaches it.
        #[serde(default)]
        reachable: Option<bool>,
    },
}

impl Voter {
    fn reachable(&self) -> Option<bool> {
        match self {
            Self::Pair(..) => None,
            Self::Object { reachable, .. } => *reachable,
        }
    }
}

/// The CA.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CaStatus {
    /// RFC 3339 expiry of the root.
    #[serde(deserialize_with = "nullable")]
    pub(crate) not_after: String,
    /// Days until expiry (negative once expired).
    #[serde(deserialize_with = "nullable")]
    pub(crate) days_left: f64,
    /// Root sequence (bumped by rotation).
    #[serde(deserialize_with = "nullable")]
    pub(crate) sequence: u64,
}

/// One linked peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PeerStatus {
    /// Peer cluster name.
    #[serde(deserialize_with = "nullable")]
    pub(crate) cluster: String,
    /// Peer trust domain.
    #[serde(deserialize_with = "nullable")]
    pub(crate) trust_domain: String,
    /// Sequence of the peer's bundle we hold.
    #[serde(deserialize_with = "nullable")]
    pub(crate) bundle_sequence: u64,
    /// Seconds since we last refreshed it.
    #[serde(deserialize_with = "nullable")]
    pub(crate) bundle_age_seconds: f64,
    /// The peer controller's address.
    #[serde(deserialize_with = "nullable")]
    pub(crate) controller_address: String,
    /// The peer's gateways.
    #[serde(deserialize_with = "nullable")]
    pub(crate) gateway_addresses: Vec<String>,
    /// What the peer exports to us, `ns/name`.
    #[serde(deserialize_with = "nullable")]
    pub(crate) exports: Vec<String>,
}

/// One of our gateways.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GatewayStatus {
    /// Tunnel address.
    #[serde(deserialize_with = "nullable")]
    pub(crate) address: String,
    /// Admin address.
    #[serde(deserialize_with = "nullable")]
    pub(crate) admin: String,
    /// Whether its admin answered.
    #[serde(deserialize_with = "nullable")]
    pub(crate) reachable: bool,
    /// Its tunnels to peers.
    #[serde(deserialize_with = "nullable")]
    pub(crate) peers: Vec<GatewayPeer>,
}

/// One tunnel of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GatewayPeer {
    /// Peer cluster.
    #[serde(deserialize_with = "nullable")]
    pub(crate) cluster: String,
    /// Whether the tunnel is up.
    #[serde(deserialize_with = "nullable")]
    pub(crate) connected: bool,
    /// Round-trip time, milliseconds.
    #[serde(alias = "rtt_ms")]
    #[serde(deserialize_with = "nullable")]
    pub(crate) rtt_ms: f64,
}

/// One of our exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ExportStatus {
    /// Namespace.
    #[serde(deserialize_with = "nullable")]
    pub(crate) namespace: String,
    /// Service name.
    pub(crate) name: String,
    /// Peer clusters that import it.
    #[serde(deserialize_with = "nullable")]
    pub(crate) imported_by: Vec<String>,
}

/// One of our imports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ImportStatus {
    /// Namespace.
    #[serde(deserialize_with = "nullable")]
    pub(crate) namespace: String,
    /// Service name.
    pub(crate) name: String,
    /// Clusters exporting it.
    #[serde(deserialize_with = "nullable")]
    pub(crate) clusters: Vec<String>,
}

/// A JSON `null` as the type's default (a controller may send `null` for
/// a missing string or list, e.g. a gateway without an admin address).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Thresholds of `check`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    /// A CA with fewer days left fails.
    pub(crate) ca_min_days: f64,
    /// A peer bundle older than this (seconds) fails.
    pub(crate) bundle_max_age_seconds: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ca_min_days: 7.0,
            bundle_max_age_seconds: 3600.0,
        }
    }
}

/// One ✔/✘ line of `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// What was checked: `raft-leader`, `ca`, `peer-bundle`, …
    pub(crate) name: String,
    /// Passed.
    pub(crate) ok: bool,
    /// The line shown after the mark.
    pub(crate) message: String,
}

fn check(name: &str, ok: bool, message: String) -> Check {
    Check {
        name: name.to_owned(),
        ok,
        message,
    }
}

/// Every check that `status` allows (the reachability check is the caller's).
pub(crate) fn checks(status: &Status, limits: &Limits) -> Vec<Check> {
    let mut out = Vec::new();
    raft_checks(status, &mut out);
    out.push(ca_check(status.ca.as_ref(), limits));
    for peer in &status.peers {
        let age = peer.bundle_age_seconds;
        let ok = age <= limits.bundle_max_age_seconds;
        let mut msg = format!(
            "peer {}: trust bundle sequence {}, refreshed {} ago",
            peer.cluster,
            peer.bundle_sequence,
            short_duration(age as i64)
        );
        if !ok {
            msg.push_str(&format!(
                " (older than {})",
                short_duration(limits.bundle_max_age_seconds as i64)
            ));
        }
        out.push(check("peer-bundle", ok, msg));
    }
    gateway_checks(status, &mut out);
    export_checks(status, &mut out);
    out
}

fn raft_checks(status: &Status, out: &mut Vec<Check>) {
    let Some(raft) = &status.raft else {
        out.push(check(
            "raft-leader",
            false,
            "raft: the controller reported no raft status".to_owned(),
        ));
        return;
    };
    out.push(match raft.leader {
        Some(leader) => check(
            "raft-leader",
            true,
            format!("raft leader: node {leader} (term {})", raft.term),
        ),
        None => check(
            "raft-leader",
            false,
            format!(
                "raft: no leader known to node {} (term {})",
                raft.node_id, raft.term
            ),
        ),
    });
    let voters = raft.voters.len();
    let majority = voters / 2 + 1;
    let known: Vec<bool> = raft.voters.iter().filter_map(Voter::reachable).collect();
    out.push(if voters <= 1 {
        check(
            "raft-quorum",
            raft.leader.is_some(),
            "raft quorum: single voter".to_owned(),
        )
    } else if known.len() == voters {
        let reachable = known.iter().filter(|r| **r).count();
        check(
            "raft-quorum",
            reachable >= majority,
            format!("raft quorum: {reachable}/{voters} voters reachable (majority {majority})"),
        )
    } else {
        // Without per-voter facts, an elected leader is the proof of a
        // majority (it needed one to win its term).
        check(
            "raft-quorum",
            raft.leader.is_some(),
            format!(
                "raft quorum: {voters} voters, {}",
                if raft.leader.is_some() {
                    "leader elected by a majority"
                } else {
                    "no leader elected"
                }
            ),
        )
    });
}

fn ca_check(ca: Option<&CaStatus>, limits: &Limits) -> Check {
    let Some(ca) = ca else {
        return check("ca", false, "CA: none yet".to_owned());
    };
    let days = ca.days_left.floor();
    if ca.days_left < 0.0 {
        check(
            "ca",
            false,
            format!("CA expired on {} (sequence {})", ca.not_after, ca.sequence),
        )
    } else if ca.days_left < limits.ca_min_days {
        check(
            "ca",
            false,
            format!(
                "CA expires in {days} days ({}), less than {} (sequence {})",
                ca.not_after, limits.ca_min_days, ca.sequence
            ),
        )
    } else {
        check(
            "ca",
            true,
            format!(
                "CA valid for {days} more days (until {}, sequence {})",
                ca.not_after, ca.sequence
            ),
        )
    }
}

fn gateway_checks(status: &Status, out: &mut Vec<Check>) {
    if status.gateways.is_empty() {
        if !status.peers.is_empty() {
            out.push(check(
                "gateway",
                false,
                "gateways: none configured, peers cannot be reached".to_owned(),
            ));
        }
        return;
    }
    for gw in &status.gateways {
        if !gw.reachable {
            let why = if gw.admin.is_empty() {
                "no admin address configured, tunnel state unknown".to_owned()
            } else {
                format!("admin {} unreachable", gw.admin)
            };
            out.push(check(
                "gateway",
                false,
                format!("gateway {}: {why}", gw.address),
            ));
            continue;
        }
        if status.peers.is_empty() {
            out.push(check(
                "gateway",
                true,
                format!("gateway {}: admin {} reachable", gw.address, gw.admin),
            ));
        }
        for peer in &status.peers {
            out.push(match gw.peers.iter().find(|p| p.cluster == peer.cluster) {
                Some(p) if p.connected => check(
                    "gateway-peer",
                    true,
                    format!(
                        "gateway {} → {}: connected, rtt {:.1} ms",
                        gw.address, peer.cluster, p.rtt_ms
                    ),
                ),
                Some(_) => check(
                    "gateway-peer",
                    false,
                    format!("gateway {} → {}: disconnected", gw.address, peer.cluster),
                ),
                None => check(
                    "gateway-peer",
                    false,
                    format!("gateway {} → {}: no tunnel", gw.address, peer.cluster),
                ),
            });
        }
    }
}

fn export_checks(status: &Status, out: &mut Vec<Check>) {
    for export in &status.exports {
        let missing: Vec<&str> = status
            .peers
            .iter()
            .map(|p| p.cluster.as_str())
            .filter(|c| !export.imported_by.iter().any(|i| i == c))
            .collect();
        let id = format!("{}/{}", export.namespace, export.name);
        out.push(if missing.is_empty() {
            let by = if export.imported_by.is_empty() {
                "no peers".to_owned()
            } else {
                export.imported_by.join(", ")
            };
            check("export", true, format!("export {id}: imported by {by}"))
        } else {
            check(
                "export",
                false,
                format!("export {id}: not imported by {}", missing.join(", ")),
            )
        });
    }
    for peer in &status.peers {
        for id in &peer.exports {
            let found = status.imports.iter().any(|i| {
                format!("{}/{}", i.namespace, i.name) == *id && i.clusters.contains(&peer.cluster)
            });
            out.push(check(
                "import",
                found,
                if found {
                    format!("import {id} from {}", peer.cluster)
                } else {
                    format!(
                        "import {id} from {}: exported there, missing here",
                        peer.cluster
                    )
                },
            ));
        }
    }
}

/// The human summary of `meshctl status`.
pub(crate) fn summary(status: &Status) -> String {
    let mut out = format!(
        "cluster:   {} (trust domain {})\n",
        status.cluster, status.trust_domain
    );
    match &status.raft {
        Some(r) => out.push_str(&format!(
            "raft:      node {}, leader {}, term {}, {} voter(s), applied {}\n",
            r.node_id,
            r.leader.map_or("none".to_owned(), |l| l.to_string()),
            r.term,
            r.voters.len().max(1),
            r.last_applied
        )),
        None => out.push_str("raft:      unknown\n"),
    }
    match &status.ca {
        Some(ca) => out.push_str(&format!(
            "ca:        sequence {}, expires {} ({} days)\n",
            ca.sequence,
            ca.not_after,
            ca.days_left.floor()
        )),
        None => out.push_str("ca:        none\n"),
    }
    section(
        &mut out,
        "peers",
        &[
            "CLUSTER",
            "TRUST DOMAIN",
            "BUNDLE SEQ",
            "BUNDLE AGE",
            "EXPORTS",
        ],
        status
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.cluster.clone(),
                    p.trust_domain.clone(),
                    p.bundle_sequence.to_string(),
                    short_duration(p.bundle_age_seconds as i64),
                    p.exports.len().to_string(),
                ]
            })
            .collect(),
    );
    let mut tunnels = Vec::new();
    for gw in &status.gateways {
        if gw.peers.is_empty() || !gw.reachable {
            tunnels.push(vec![
                gw.address.clone(),
                if gw.reachable { "-" } else { "unreachable" }.to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ]);
        }
        for p in gw.peers.iter().filter(|_| gw.reachable) {
            tunnels.push(vec![
                gw.address.clone(),
                p.cluster.clone(),
                if p.connected {
                    "connected"
                } else {
                    "disconnected"
                }
                .to_owned(),
                format!("{:.1}ms", p.rtt_ms),
            ]);
        }
    }
    section(
        &mut out,
        "gateways",
        &["GATEWAY", "PEER", "TUNNEL", "RTT"],
        tunnels,
    );
    section(
        &mut out,
        "exports",
        &["NAMESPACE", "NAME", "IMPORTED BY"],
        status
            .exports
            .iter()
            .map(|e| vec![e.namespace.clone(), e.name.clone(), list(&e.imported_by)])
            .collect(),
    );
    section(
        &mut out,
        "imports",
        &["NAMESPACE", "NAME", "CLUSTERS"],
        status
            .imports
            .iter()
            .map(|i| vec![i.namespace.clone(), i.name.clone(), list(&i.clusters)])
            .collect(),
    );
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(",")
    }
}

fn section(out: &mut String, title: &str, headers: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        out.push_str(&format!(
            "{title}:{}none\n",
            " ".repeat(9usize.saturating_sub(title.len()))
        ));
        return;
    }
    out.push_str(&format!("\n{title}:\n"));
    for line in table(headers, &rows).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn healthy() -> serde_json::Value {
        json!({
            "cluster": "cluster-a",
            "trustDomain": "cluster-a.mesh",
            "raft": {"node_id": 1, "leader": 1, "term": 2, "voters": [[1, "127.0.1.2:15013"]], "last_applied": 9},
            "ca": {"notAfter": "2036-01-01T00:00:00Z", "daysLeft": 3650, "sequence": 1},
            "peers": [{"cluster": "cluster-b", "trustDomain": "cluster-b.mesh", "bundleSequence": 2,
                       "bundleAgeSeconds": 30, "controllerAddress": "127.0.2.2:15012",
                       "gatewayAddresses": ["127.0.2.1:15443"], "exports": ["default/api"]}],
            "gateways": [{"address": "127.0.1.1:15443", "admin": "127.0.1.1:15021", "reachable": true,
                          "peers": [{"cluster": "cluster-b", "connected": true, "rttMs": 0.42}]}],
            "exports": [{"namespace": "default", "name": "web", "importedBy": ["cluster-b"]}],
            "imports": [{"namespace": "default", "name": "api", "clusters": ["cluster-b"]}]
        })
    }

    fn decode(v: serde_json::Value) -> Status {
        serde_json::from_value(v).unwrap()
    }

    fn failed(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.message.clone())
            .collect()
    }

    #[test]
    fn a_healthy_cluster_passes_every_check() {
        let checks = checks(&decode(healthy()), &Limits::default());
        assert!(failed(&checks).is_empty(), "{checks:#?}");
        let messages: Vec<&str> = checks.iter().map(|c| c.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "raft leader: node 1 (term 2)",
                "raft quorum: single voter",
                "CA valid for 3650 more days (until 2036-01-01T00:00:00Z, sequence 1)",
                "peer cluster-b: trust bundle sequence 2, refreshed 30s ago",
                "gateway 127.0.1.1:15443 → cluster-b: connected, rtt 0.4 ms",
                "export default/web: imported by cluster-b",
                "import default/api from cluster-b",
            ]
        );
    }

    #[test]
    fn each_problem_fails_its_check() {
        let mut v = healthy();
        v["raft"]["leader"] = json!(null);
        v["ca"]["daysLeft"] = json!(3.5);
        v["peers"][0]["bundleAgeSeconds"] = json!(7200);
        v["gateways"][0]["peers"][0]["connected"] = json!(false);
        v["exports"][0]["importedBy"] = json!([]);
        v["imports"] = json!([]);
        let f = failed(&checks(&decode(v), &Limits::default()));
        assert_eq!(
            f,
            vec![
                "raft: no leader known to node 1 (term 2)",
                "raft quorum: single voter",
                "CA expires in 3 days (2036-01-01T00:00:00Z), less than 7 (sequence 1)",
                "peer cluster-b: trust bundle sequence 2, refreshed 2h ago (older than 1h)",
                "gateway 127.0.1.1:15443 → cluster-b: disconnected",
                "export default/web: not imported by cluster-b",
                "import default/api from cluster-b: exported there, missing here",
            ]
        );
    }

    #[test]
    fn quorum_counts_reachable_voters_when_reported() {
        let mut v = healthy();
        v["raft"]["voters"] = json!([
            {"id": 1, "address": "a", "reachable": true},
            {"id": 2, "address": "b", "reachable": false},
            {"id": 3, "address": "c", "reachable": false}
        ]);
        let c = checks(&decode(v.clone()), &Limits::default());
        assert_eq!(
            failed(&c),
            vec!["raft quorum: 1/3 voters reachable (majority 2)"]
        );
        v["raft"]["voters"][1]["reachable"] = json!(true);
        assert!(failed(&checks(&decode(v), &Limits::default())).is_empty());
    }

    #[test]
    fn missing_sections_fail_instead_of_passing() {
        let c = checks(&decode(json!({"cluster": "x"})), &Limits::default());
        assert_eq!(
            failed(&c),
            vec![
                "raft: the controller reported no raft status",
                "CA: none yet"
            ]
        );
        let mut v = healthy();
        v["gateways"] = json!([]);
        assert_eq!(
            failed(&checks(&decode(v.clone()), &Limits::default())),
            vec!["gateways: none configured, peers cannot be reached"]
        );
        v["gateways"] = json!([{"address": "g", "admin": "h", "reachable": false}]);
        assert_eq!(
            failed(&checks(&decode(v), &Limits::default())),
            vec!["gateway g: admin h unreachable"]
        );
    }

    #[test]
    fn nulls_and_integers_as_the_controller_sends_them() {
        // Shaped like mesh-controller's admin.rs: RaftStatus serialized as is,
        // integer daysLeft and bundle age, a gateway without admin address.
        let status = decode(json!({
            "cluster": "cluster-a", "trustDomain": "cluster-a.mesh",
            "raft": {"node_id": 2, "leader": null, "term": 4,
                     "voters": [[1, "127.0.1.2:15013"], [2, "127.0.1.3:15013"], [3, "127.0.1.4:15013"]],
                     "last_applied": 10},
            "ca": null,
            "peers": [{"cluster": "cluster-b", "trustDomain": "cluster-b.mesh", "bundleSequence": 1,
                       "bundleAgeSeconds": 5, "controllerAddress": "x", "gatewayAddresses": null,
                       "exports": []}],
            "gateways": [{"address": "127.0.1.1:15443", "admin": null, "reachable": false, "peers": []}],
            "exports": [], "imports": []
        }));
        assert_eq!(status.gateways[0].admin, "");
        assert!(status.peers[0].gateway_addresses.is_empty());
        let f = failed(&checks(&status, &Limits::default()));
        assert_eq!(
            f,
            vec![
                "raft: no leader known to node 2 (term 4)",
                "raft quorum: 3 voters, no leader elected",
                "CA: none yet",
                "gateway 127.0.1.1:15443: no admin address configured, tunnel state unknown",
            ]
        );
    }

    #[test]
    fn summary_lists_every_section() {
        let s = summary(&decode(healthy()));
        assert!(
            s.starts_with("cluster:   cluster-a (trust domain cluster-a.mesh)\n"),
            "{s}"
        );
        assert!(
            s.contains("raft:      node 1, leader 1, term 2, 1 voter(s), applied 9"),
            "{s}"
        );
        assert!(s.contains("  CLUSTER     TRUST DOMAIN"), "{s}");
        assert!(
            s.contains("127.0.1.1:15443   cluster-b   connected   0.4ms"),
            "{s}"
        );
        let empty = summary(&Status::default());
        assert!(empty.contains("peers:    none\n"), "{empty}");
    }
}
