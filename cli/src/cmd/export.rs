//! `meshctl export SVC [-n NS]` and `meshctl unexport SVC [-n NS]`.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::apply::result_line;
use super::{usage, Target};
use crate::output::Console;

/// Arguments of `export` and `unexport`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The service's name.
    pub(crate) service: String,
    /// The service's namespace.
    #[arg(short, long, default_value = mesh_resources::DEFAULT_NAMESPACE)]
    pub(crate) namespace: String,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// The ServiceExport that exports `service` in `namespace`.
pub(super) fn service_export(namespace: &str, service: &str) -> Value {
    json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": service, "namespace": namespace},
    })
}

/// Runs `export`: applies a ServiceExport.
pub(super) async fn export(args: ExportArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let doc = service_export(&args.namespace, &args.service);
    if let Err(errors) = mesh_resources::parse_json(&doc.to_string()) {
        let first = errors
            .errors()
            .iter()
            .map(|e| match e.field() {
                Some(f) => f.to_string(),
                None => e.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        return usage(format!(
            "cannot export {}/{}: {first}",
            args.namespace, args.service
        ));
    }
    let client = args.target.client()?;
    for result in client.apply(&[doc]).await? {
        console.line(&result_line(&result));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `unexport`: deletes the ServiceExport.
pub(super) async fn unexport(args: ExportArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let client = args.target.client()?;
    client
        .delete("serviceexports", &args.namespace, &args.service)
        .await?;
    console.line(&format!(
        "serviceexport.multicluster.x-k8s.io \"{}\" deleted",
        args.service
    ));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_document_is_valid() {
        let doc = service_export("shop", "web");
        let parsed = mesh_resources::parse_json(&doc.to_string()).unwrap();
        assert_eq!(parsed[0].name(), "web");
        assert_eq!(parsed[0].namespace(), "shop");
        assert!(
            mesh_resources::parse_json(&service_export("shop", "Bad_Name").to_string()).is_err()
        );
    }
}
