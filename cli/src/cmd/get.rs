//! `meshctl get KIND [NAME] [-n NS | -A] [-o table|json|yaml]`.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::delete::resolve;
use super::Target;
use crate::kinds::Kind;
use crate::output::{render, table, unix_now, Console, Format};

/// Arguments of `get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The kind: serviceexports (svcex), serviceimports (svcim), workloads
    /// (wl), meshlinks (links), failoverpolicies (fp).
    pub(crate) kind: String,
    /// One resource by name (all when omitted).
    #[arg(conflicts_with = "all_namespaces")]
    pub(crate) name: Option<String>,
    /// The namespace [default: default; meshlinks: all].
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub(crate) namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub(crate) all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Runs `get`.
pub(super) async fn run(args: GetArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let kind = resolve(&args.kind)?;
    let client = args.target.client()?;
    let every_namespace = args.all_namespaces || (kind.cluster_wide && args.namespace.is_none());
    let namespace = args
        .namespace
        .as_deref()
        .unwrap_or(mesh_resources::DEFAULT_NAMESPACE);
    if let Some(name) = &args.name {
        let item = if every_namespace {
            // A cluster-wide view: find the name in any namespace.
            let items = client.list(kind.plural, None).await?;
            match items
                .into_iter()
                .find(|i| text(i, "/metadata/name") == *name)
            {
                Some(item) => item,
                None => return Err(anyhow::anyhow!("{} {name} not found", kind.plural)),
            }
        } else {
            client.get(kind.plural, namespace, name).await?
        };
        match render(args.output, &item) {
            Some(text) => console.print(&text),
            None => console.print(&list_table(kind, &[item], false, unix_now())),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let namespace = (!every_namespace).then_some(namespace);
    let mut items = client.list(kind.plural, namespace).await?;
    items.sort_by_key(|i| (text(i, "/metadata/namespace"), text(i, "/metadata/name")));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    match render(args.output, &list) {
        Some(text) => console.print(&text),
        None if items.is_empty() => console.detail(&match namespace {
            Some(ns) => format!("No resources found in {ns} namespace.\n"),
            None => "No resources found.\n".to_owned(),
        }),
        None => console.print(&list_table(kind, &items, args.all_namespaces, unix_now())),
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of `items`, with a NAMESPACE column first when `namespaced`.
pub(super) fn list_table(kind: &Kind, items: &[Value], namespaced: bool, now: i64) -> String {
    let mut headers: Vec<&str> = Vec::new();
    if namespaced {
        headers.push("NAMESPACE");
    }
    headers.extend_from_slice(kind.columns());
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let mut row = Vec::new();
            if namespaced {
                row.push(text(item, "/metadata/namespace"));
            }
            row.extend(kind.row(item, now));
            row
        })
        .collect();
    table(&headers, &rows)
}

fn text(item: &Value, pointer: &str) -> String {
    item.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_namespaces_adds_a_column() {
        let kind = crate::kinds::lookup("wl").unwrap();
        let items = vec![json!({
            "metadata": {"name": "w1", "namespace": "shop", "creationTimestamp": "1970-01-01T00:00:00Z"},
            "spec": {"service": "web", "address": "127.0.1.10", "ports": [{"port": 8080, "protocol": "http"}],
                     "locality": {"region": "eu", "zone": "a"}}
        })];
        assert_eq!(
            list_table(kind, &items, true, 7200),
            "NAMESPACE   NAME   SERVICE   ADDRESS      PORTS       LOCALITY   AGE\n\
             shop        w1     web       127.0.1.10   8080/http   eu/a       2h"
        );
        assert!(list_table(kind, &items, false, 0).starts_with("NAME   SERVICE"));
    }
}
