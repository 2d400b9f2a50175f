//! `meshctl delete KIND NAME [-n NS]` and `meshctl delete -f FILE`.

use std::process::ExitCode;

use clap::Args;

use super::{print_error, usage, Target};
use crate::api::Client;
use crate::documents::{identity, read_sources, values};
use crate::kinds::{self, Kind};
use crate::output::Console;

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The kind: serviceexports (svcex), workloads (wl), failoverpolicies (fp).
    #[arg(conflicts_with = "files", requires = "name")]
    pub(crate) kind: Option<String>,
    /// The resource's name.
    pub(crate) name: Option<String>,
    /// The namespace.
    #[arg(short, long, default_value = mesh_resources::DEFAULT_NAMESPACE)]
    pub(crate) namespace: String,
    /// Delete the resources named in these files (- for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub(crate) files: Vec<String>,
    /// A resource that does not exist is not an error.
    #[arg(long)]
    pub(crate) ignore_not_found: bool,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Runs `delete`.
pub(super) async fn run(args: DeleteArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let mut targets: Vec<(&'static Kind, String, String)> = Vec::new();
    if let (Some(kind), Some(name)) = (&args.kind, &args.name) {
        targets.push((resolve(kind)?, args.namespace.clone(), name.clone()));
    } else if !args.files.is_empty() {
        for source in read_sources(&args.files)? {
            for doc in values(&source)? {
                let (kind, namespace, name) =
                    identity(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", source.name))?;
                let Some(k) = kinds::by_kind(&kind) else {
                    return usage(format!("{}: unknown kind {kind:?}", source.name));
                };
                targets.push((k, namespace, name));
            }
        }
    } else {
        return usage("give KIND NAME or -f FILE");
    }
    for (kind, _, _) in &targets {
        if !kind.deletable {
            return usage(format!(
                "{} are read-only (derived by the controller){}",
                kind.plural,
                if kind.plural == "serviceimports" {
                    ": unexport the service instead (meshctl unexport NAME)"
                } else {
                    ": use meshctl unlink for peers"
                }
            ));
        }
    }
    let client = args.target.client()?;
    let failures = delete_all(&client, &targets, args.ignore_not_found, console).await;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn delete_all(
    client: &Client,
    targets: &[(&'static Kind, String, String)],
    ignore_not_found: bool,
    console: &mut Console,
) -> usize {
    let mut failures = 0;
    for (kind, namespace, name) in targets {
        match client.delete(kind.plural, namespace, name).await {
            Ok(()) => console.line(&format!("{} \"{name}\" deleted", kind.qualified())),
            Err(e) if ignore_not_found && e.status() == Some(hyper::StatusCode::NOT_FOUND) => {}
            Err(e) => {
                failures += 1;
                print_error(console, &e.into());
            }
        }
    }
    failures
}

/// The kind called `name`, or a usage error listing the known ones.
pub(super) fn resolve(name: &str) -> anyhow::Result<&'static Kind> {
    match kinds::lookup(name) {
        Some(kind) => Ok(kind),
        None => usage(format!(
            "unknown resource type {name:?}; known: {}",
            kinds::names()
        )),
    }
}
