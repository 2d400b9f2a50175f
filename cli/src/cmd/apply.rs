//! `meshctl apply -f FILE|DIR|- [-f …]`: validate locally, then one
//! all-or-nothing `POST /v1/apply` of every document.

use std::process::ExitCode;

use clap::Args;

use super::{usage, Target};
use crate::api::{ApiError, ApplyResult};
use crate::documents::{locate, numbered, problems, read_sources};
use crate::kinds;
use crate::output::Console;

/// Arguments of `apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// A YAML or JSON file, a directory of them, or - for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub(crate) files: Vec<String>,
    /// Validate locally and print what would be sent; send nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Runs `apply`.
pub(super) async fn run(args: ApplyArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let sources = read_sources(&args.files)?;
    let mut documents = Vec::new();
    let mut origins = Vec::new();
    let mut invalid = Vec::new();
    for source in &sources {
        invalid.extend(problems(source));
        if invalid.is_empty() {
            for (index, value) in numbered(source)? {
                documents.push(value);
                origins.push((source.name.clone(), index));
            }
        }
    }
    if !invalid.is_empty() {
        for problem in &invalid {
            console.fail(problem);
        }
        return usage(format!(
            "nothing applied: {} validation error(s)",
            invalid.len()
        ));
    }
    if documents.is_empty() {
        return usage(format!("no resources found in {}", args.files.join(", ")));
    }
    if args.dry_run {
        for doc in &documents {
            let (kind, namespace, name) = crate::documents::identity(doc)?;
            console.line(&format!(
                "{} (dry run, namespace {namespace})",
                result_line(&ApplyResult {
                    kind,
                    namespace: namespace.clone(),
                    name,
                    action: "valid".to_owned(),
                })
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let client = args.target.client()?;
    let results = client.apply(&documents).await.map_err(|e| match e {
        ApiError::Http {
            method,
            path,
            status,
            messages,
        } => ApiError::Http {
            method,
            path,
            status,
            messages: messages.iter().map(|m| locate(m, &origins)).collect(),
        },
        other => other,
    })?;
    for result in results {
        console.line(&result_line(&result));
    }
    Ok(ExitCode::SUCCESS)
}

/// `serviceexport.multicluster.x-k8s.io/web created`, as kubectl prints it.
pub(super) fn result_line(result: &ApplyResult) -> String {
    let kind = match kinds::by_kind(&result.kind) {
        Some(k) => k.qualified(),
        None => result.kind.to_ascii_lowercase(),
    };
    format!("{kind}/{} {}", result.name, result.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_kubectl() {
        let r = |kind: &str, action: &str| ApplyResult {
            kind: kind.into(),
            namespace: "default".into(),
            name: "web".into(),
            action: action.into(),
        };
        assert_eq!(
            result_line(&r("ServiceExport", "created")),
            "serviceexport.multicluster.x-k8s.io/web created"
        );
        assert_eq!(
            result_line(&r("FailoverPolicy", "unchanged")),
            "failoverpolicy.isthmus.dev/web unchanged"
        );
        assert_eq!(
            result_line(&r("Gadget", "configured")),
            "gadget/web configured"
        );
    }
}
