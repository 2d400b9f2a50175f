//! The meshctl contexts file `dev up` writes into its state dir: one
//! context per cluster, named after it, pointing at its controller's admin
//! API; `export MESHCTL_CONFIG=<file>` makes `meshctl --context cluster-a …`
//! talk to the dev mesh without touching the user's own contexts file.
//! Same format as `meshctl config` (docs/reference/meshctl.md).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::topology::Topology;

/// The file name in the state dir.
pub(crate) const FILE: &str = "meshctl.yaml";

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct ContextsFile {
    current_context: String,
    contexts: Vec<Context>,
}

#[derive(Debug, Serialize)]
struct Context {
    name: String,
    server: String,
}

/// The contexts file's text: every cluster, the first one current.
///
/// # Errors
/// YAML serialization failed (not expected).
pub(crate) fn yaml(topology: &Topology) -> anyhow::Result<String> {
    let file = ContextsFile {
        current_context: topology.clusters[0].name.clone(),
        contexts: topology
            .clusters
            .iter()
            .map(|c| Context {
                name: c.name.clone(),
                server: c.controller.server(),
            })
            .collect(),
    };
    Ok(serde_yaml_ng::to_string(&file)?)
}

/// Writes [`FILE`] into `state`; returns its path.
///
/// # Errors
/// The file cannot be written.
pub(crate) fn write(state: &Path, topology: &Topology) -> anyhow::Result<PathBuf> {
    let path = state.join(FILE);
    std::fs::write(&path, yaml(topology)?).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DEFAULT_PORT_BASE;

    #[test]
    fn one_context_per_cluster_at_its_admin_api() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        assert_eq!(
            yaml(&t).unwrap(),
            "current-context: cluster-a\n\
             contexts:\n\
             - name: cluster-a\n  server: http://127.0.1.3:15014\n\
             - name: cluster-b\n  server: http://127.0.2.3:15014\n"
        );
    }
}
