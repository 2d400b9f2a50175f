//! The meshctl contexts file `dev up` writes into its state dir: one
//! context per cluster, named after it, pointing at its controller's admin
//! API; `export MESHCTL_CONFIG=<file>` makes `meshctl --context cluster-a …`
//! talk to the dev mesh without touching the user's own contexts file.
//! Same format as `meshctl config` (docs/reference/meshctl.md).

use std::path::{Path, PathBuf};

use super::topology::Topology;
use crate::contexts::{Context, ContextsFile};

/// The file name in the state dir.
pub(crate) const FILE: &str = "meshctl.yaml";

/// The contexts: every cluster, the first one current.
pub(crate) fn contexts(topology: &Topology) -> ContextsFile {
    ContextsFile {
        current_context: Some(topology.clusters[0].name.clone()),
        contexts: topology
            .clusters
            .iter()
            .map(|c| Context {
                name: c.name.clone(),
                server: c.controller.server(),
                token: None,
                token_file: None,
            })
            .collect(),
    }
}

/// Writes [`FILE`] into `state`; returns its path.
///
/// # Errors
/// The file cannot be written.
pub(crate) fn write(state: &Path, topology: &Topology) -> anyhow::Result<PathBuf> {
    let path = state.join(FILE);
    contexts(topology).save(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DEFAULT_PORT_BASE;

    #[test]
    fn one_context_per_cluster_at_its_admin_api_and_meshctl_reads_them() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &t).unwrap();
        let file = ContextsFile::load(&path).unwrap();
        assert_eq!(file.current_context.as_deref(), Some("cluster-a"));
        let b = file.select(Some("cluster-b")).unwrap();
        assert_eq!(b.server, "http://127.0.2.3:15014");
        assert_eq!(file.select(None).unwrap().server, "http://127.0.1.3:15014");
    }
}
