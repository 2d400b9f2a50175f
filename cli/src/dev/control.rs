//! The control-plane steps of `dev up`, all through the controllers' admin
//! API as an operator would do them with meshctl: bootstrap trust for the
//! proxies, the link between the clusters (`meshctl link`), join tokens
//! (`meshctl token create`), the ServiceExports (`meshctl apply`), and the
//! wait for the ServiceImports they produce in the linked clusters.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::configs::{self, GATEWAY_TOKEN};
use super::topology::{Cluster, Topology, GATEWAY_SA, NAMESPACE, SYSTEM_NAMESPACE};
use super::trust;
use crate::api::Client;

/// Between two reads of a resource that should appear.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lifetime of the join tokens `dev up` makes: the proxies need them for
/// their first SVID only (renewals are authenticated by the SVID).
const JOIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of the peering token, redeemed at once.
const PEERING_TOKEN_TTL: Duration = Duration::from_secs(600);

/// The admin API client of `cluster`'s controller (context `cluster`).
///
/// # Errors
/// The server URL is unusable (not for the dev topology's).
pub(crate) fn admin(cluster: &Cluster) -> anyhow::Result<Client> {
    Ok(Client::new(
        &cluster.name,
        &cluster.controller.server(),
        None,
    )?)
}

/// Writes `<cluster>/bundles.json` for every cluster: its own bundle as
/// its controller serves it.
///
/// # Errors
/// A bundle cannot be fetched or written.
pub(crate) async fn bootstrap_trust(
    topology: &Topology,
    state: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for c in &topology.clusters {
        let bundle = trust::own_bundle(c).await?;
        let roots = bundle.x509_authorities().len();
        let path = state.join(&c.name).join(configs::BUNDLES);
        std::fs::write(&path, trust::bundle_map_json(bundle))
            .with_context(|| format!("write {}", path.display()))?;
        done.push(format!(
            "trust bundle of {} ({roots} root{}) from {} → {}/{}",
            c.trust_domain,
            if roots == 1 { "" } else { "s" },
            c.controller.bundle_url(),
            c.name,
            configs::BUNDLES
        ));
    }
    Ok(done)
}

/// Links every cluster to its `peers`: a peering token made on the cluster,
/// redeemed by the peer (what `meshctl link A B` does).
///
/// # Errors
/// A token cannot be made or redeemed.
pub(crate) async fn link(topology: &Topology) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for c in &topology.clusters {
        for peer in c.peers.iter().filter_map(|p| topology.cluster(p)) {
            let token = admin(c)?
                .create_peering_token(PEERING_TOKEN_TTL)
                .await
                .with_context(|| format!("peering token on {}", c.name))?;
            let linked = admin(peer)?
                .redeem(&token.token)
                .await
                .with_context(|| format!("redeem {}'s peering token on {}", c.name, peer.name))?
                .cluster;
            if linked != c.name {
                bail!(
                    "{} redeemed a token of {} but linked {linked}",
                    peer.name,
                    c.name
                );
            }
            done.push(format!(
                "linked {} and {} (peering token made on {0}, redeemed on {1})",
                c.name, peer.name
            ));
        }
    }
    Ok(done)
}

/// Makes a join token for every gateway and workload and writes it next
/// to their configs (what `meshctl token create` does).
///
/// # Errors
/// A token cannot be made or written.
pub(crate) async fn join_tokens(topology: &Topology, state: &Path) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for c in &topology.clusters {
        let dir = state.join(&c.name);
        let api = admin(c)?;
        let mut wanted = vec![(SYSTEM_NAMESPACE, GATEWAY_SA, GATEWAY_TOKEN.to_owned())];
        for w in &c.workloads {
            wanted.push((NAMESPACE, &w.name, configs::sidecar_token(w)));
        }
        let mut made = Vec::new();
        for (namespace, sa, file) in wanted {
            let token = api
                .create_join_token(namespace, sa, JOIN_TOKEN_TTL)
                .await
                .with_context(|| format!("join token for {namespace}/{sa} on {}", c.name))?;
            write_secret(&dir.join(file), &token.token)?;
            made.push(format!("{namespace}/{sa}"));
        }
        done.push(format!(
            "join tokens from {} for {}",
            c.name,
            made.join(", ")
        ));
    }
    Ok(done)
}

/// The ServiceExport document of `service` (`namespace/name`).
pub(crate) fn service_export(service: &str) -> Value {
    let (namespace, name) = service.split_once('/').unwrap_or((NAMESPACE, service));
    json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": { "namespace": namespace, "name": name },
    })
}

/// Applies every cluster's ServiceExports (what `meshctl apply -f` does).
/// Returns when each one is stored.
///
/// # Errors
/// The controller refused them.
pub(crate) async fn export(topology: &Topology) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for c in topology.clusters.iter().filter(|c| !c.exports.is_empty()) {
        let documents: Vec<Value> = c.exports.iter().map(|s| service_export(s)).collect();
        let results = admin(c)?
            .apply(&documents)
            .await
            .with_context(|| format!("apply the ServiceExports of {}", c.name))?;
        for r in results {
            done.push(format!(
                "{}: {} {}/{} {}",
                c.name, r.kind, r.namespace, r.name, r.action
            ));
        }
    }
    Ok(done)
}

/// The clusters linked with `cluster`, in either direction.
pub(crate) fn linked<'t>(topology: &'t Topology, cluster: &Cluster) -> Vec<&'t Cluster> {
    topology
        .clusters
        .iter()
        .filter(|o| o.name != cluster.name)
        .filter(|o| o.peers.contains(&cluster.name) || cluster.peers.contains(&o.name))
        .collect()
}

/// Waits until every exported service has a ServiceImport in every linked
/// cluster naming the exporting cluster, within `patience`.
///
/// # Errors
/// One did not appear in time (the last answer is named).
pub(crate) async fn await_imports(
    topology: &Topology,
    patience: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let deadline = Instant::now() + patience;
    for c in &topology.clusters {
        for service in &c.exports {
            let (namespace, name) = service.split_once('/').unwrap_or((NAMESPACE, service));
            for importer in linked(topology, c) {
                let api = admin(importer)?;
                loop {
                    let last = match api.get("serviceimports", namespace, name).await {
                        Ok(import) if names_cluster(&import, &c.name) => break,
                        Ok(import) => format!("without {}: {import}", c.name),
                        Err(e) => e.to_string(),
                    };
                    if Instant::now() >= deadline {
                        bail!(
                            "no ServiceImport {service} from {} in {} after {}s (last: {last})",
                            c.name,
                            importer.name,
                            patience.as_secs()
                        );
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                done.push(format!(
                    "{}: ServiceImport {service} (from {})",
                    importer.name, c.name
                ));
            }
        }
    }
    Ok(done)
}

/// Whether a ServiceImport lists `cluster` among its sources: in
/// `status.clusters[].cluster` (the MCS API shape) or anywhere as a string.
fn names_cluster(import: &Value, cluster: &str) -> bool {
    match import {
        Value::String(s) => s == cluster,
        Value::Array(items) => items.iter().any(|v| names_cluster(v, cluster)),
        Value::Object(map) => map.values().any(|v| names_cluster(v, cluster)),
        _ => false,
    }
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(secret.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DEFAULT_PORT_BASE;

    #[test]
    fn exports_are_mcs_service_exports() {
        assert_eq!(
            service_export("default/backend"),
            json!({
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceExport",
                "metadata": { "namespace": "default", "name": "backend" },
            })
        );
    }

    #[test]
    fn links_are_seen_from_both_sides() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let names = |c: &str| -> Vec<String> {
            linked(&t, t.cluster(c).unwrap())
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names("cluster-a"), ["cluster-b"]);
        assert_eq!(names("cluster-b"), ["cluster-a"]);
    }

    #[test]
    fn imports_name_their_source_clusters() {
        let import = json!({
            "metadata": { "name": "backend" },
            "status": { "clusters": [ { "cluster": "cluster-b" } ] },
        });
        assert!(names_cluster(&import, "cluster-b"));
        assert!(!names_cluster(&import, "cluster-c"));
    }

    #[test]
    fn secrets_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.token");
        write_secret(&path, "s3cret").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
