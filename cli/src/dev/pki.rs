//! Per-cluster CAs and bundle maps for the dev mesh: each cluster has its
//! own self-signed root for its own trust domain, and its bundle map holds
//! its own bundle plus every linked cluster's (the link).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use trust_bundle::{Bundle, BundleMap, CertificateAuthority, TrustDomain};

use super::configs::{BUNDLES, CA_CERT, CA_KEY};
use super::topology::{Cluster, Topology};

/// Lifetime of a dev CA: a week outlives any dev session.
const CA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A cluster's CA.
pub(crate) struct ClusterCa {
    /// The cluster's name.
    pub(crate) cluster: String,
    /// Its root.
    pub(crate) ca: CertificateAuthority,
}

/// Makes one self-signed root per cluster, for its trust domain.
///
/// # Errors
/// A trust domain is invalid or key generation failed.
pub(crate) fn generate(topology: &Topology, now: SystemTime) -> anyhow::Result<Vec<ClusterCa>> {
    topology
        .clusters
        .iter()
        .map(|c| {
            let td = TrustDomain::parse(&c.trust_domain)
                .with_context(|| format!("trust domain {}", c.trust_domain))?;
            let ca = CertificateAuthority::self_signed(td, CA_LIFETIME, now)
                .with_context(|| format!("CA for {}", c.name))?;
            Ok(ClusterCa {
                cluster: c.name.clone(),
                ca,
            })
        })
        .collect()
}

/// The bundle map `cluster` trusts: its own bundle and its peers'.
pub(crate) fn bundle_map(cluster: &Cluster, cas: &[ClusterCa]) -> BundleMap {
    let mut map = BundleMap::default();
    for ca in cas
        .iter()
        .filter(|ca| ca.cluster == cluster.name || cluster.peers.contains(&ca.cluster))
    {
        map.insert(Bundle::with_x509_authorities(
            ca.ca.trust_domain().clone(),
            [ca.ca.trust_anchor().clone()],
        ));
    }
    map
}

/// Writes `<cluster>/ca.pem`, `ca-key.pem` and `bundles.json` under `dir`.
///
/// # Errors
/// A file could not be written.
pub(crate) fn write(dir: &Path, topology: &Topology, cas: &[ClusterCa]) -> anyhow::Result<()> {
    for cluster in &topology.clusters {
        let cdir = dir.join(&cluster.name);
        std::fs::create_dir_all(&cdir).with_context(|| format!("create {}", cdir.display()))?;
        let own = cas
            .iter()
            .find(|ca| ca.cluster == cluster.name)
            .with_context(|| format!("no CA for {}", cluster.name))?;
        let (cert, key) = own.ca.to_pem();
        write_file(&cdir.join(CA_CERT), cert.as_bytes())?;
        write_file(&cdir.join(CA_KEY), key.as_bytes())?;
        write_file(&cdir.join(BUNDLES), &bundle_map(cluster, cas).to_json())?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::topology::DEFAULT_PORT_BASE;

    #[test]
    fn each_cluster_trusts_itself_and_its_linked_peer() {
        let topology = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let cas = generate(&topology, SystemTime::now()).unwrap();
        assert_eq!(cas.len(), 2);
        assert_ne!(cas[0].ca.trust_anchor(), cas[1].ca.trust_anchor());
        for cluster in &topology.clusters {
            let map = bundle_map(cluster, &cas);
            let tds: Vec<&str> = map.trust_domains.keys().map(|td| td.as_str()).collect();
            assert_eq!(tds.len(), 2, "{tds:?}");
            assert!(tds.contains(&"cluster-a.mesh") && tds.contains(&"cluster-b.mesh"));
        }
        let mut lonely = topology.clusters[0].clone();
        lonely.peers.clear();
        assert_eq!(bundle_map(&lonely, &cas).trust_domains.len(), 1);
    }
}
