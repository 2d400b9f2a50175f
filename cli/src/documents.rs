//! Reading `-f` sources (files, directories, `-` for stdin) into resource
//! documents, and validating them with `mesh-resources` before anything is
//! sent, so mistakes are reported with field paths without a round trip.
//!
//! Kinds this meshctl does not know (a controller may serve newer ones, e.g.
//! `Workload`) pass through unvalidated: the server validates them.

use std::io::Read as _;
use std::path::Path;

use anyhow::{anyhow, Context as _};
use mesh_resources::{DocumentError, FieldErrorKind};
use serde::Deserialize;
use serde_json::Value;

/// One `-f` source read into memory.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The name shown in messages (`-` is `<stdin>`).
    pub(crate) name: String,
    /// The text.
    pub(crate) text: String,
}

/// Reads every `-f` argument: `-` is stdin (once), a directory is its
/// `*.yaml`, `*.yml` and `*.json` files in name order.
///
/// # Errors
/// Unreadable file, directory or stdin.
pub(crate) fn read_sources(args: &[String]) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read stdin")?;
            out.push(Source {
                name: "<stdin>".to_owned(),
                text,
            });
            continue;
        }
        let path = Path::new(arg);
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("read directory {arg}"))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            for file in files {
                out.push(read_file(&file)?);
            }
        } else {
            out.push(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> anyhow::Result<Source> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

/// The documents of `source` as JSON values: a JSON object or array when the
/// text starts with `{` or `[`, else a YAML stream (empty documents skipped).
///
/// # Errors
/// Malformed YAML or JSON, naming the source.
pub(crate) fn values(source: &Source) -> anyhow::Result<Vec<Value>> {
    Ok(numbered(source)?.into_iter().map(|(_, v)| v).collect())
}

/// Like [`values`], each with its 1-based document number in the source as
/// `mesh-resources` counts them (empty YAML documents count).
///
/// # Errors
/// Malformed YAML or JSON, naming the source.
pub(crate) fn numbered(source: &Source) -> anyhow::Result<Vec<(usize, Value)>> {
    match source.text.trim_start().as_bytes().first() {
        Some(b'{' | b'[') => {
            let value: Value = serde_json::from_str(&source.text)
                .map_err(|e| anyhow!("{}: invalid json: {e}", source.name))?;
            Ok(match value {
                Value::Array(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i + 1, v))
                    .collect(),
                other => vec![(1, other)],
            })
        }
        _ => {
            let mut out = Vec::new();
            for (i, de) in serde_yaml_ng::Deserializer::from_str(&source.text).enumerate() {
                let value = Value::deserialize(de).map_err(|e| {
                    anyhow!("{}: document {}: invalid yaml: {e}", source.name, i + 1)
                })?;
                if !value.is_null() {
                    out.push((i + 1, value));
                }
            }
            Ok(out)
        }
    }
}

/// Rewrites a server message about `document N` of the sent array into
/// `<source>: document M`, using `origins[N-1] = (source name, M)`.
pub(crate) fn locate(message: &str, origins: &[(String, usize)]) -> String {
    let Some(rest) = message.strip_prefix("document ") else {
        return message.to_owned();
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let Some(n) = rest[..digits].parse::<usize>().ok() else {
        return message.to_owned();
    };
    match n.checked_sub(1).and_then(|i| origins.get(i)) {
        Some((name, m)) => format!("{name}: document {m}{}", &rest[digits..]),
        None => message.to_owned(),
    }
}

/// Every validation problem of `source`, each prefixed with its name and
/// naming the document and field path; unknown kinds are left to the server.
pub(crate) fn problems(source: &Source) -> Vec<String> {
    match mesh_resources::parse(&source.text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .errors()
            .iter()
            .filter(|e| !is_unknown_kind(e))
            .map(|e| format!("{}: {e}", source.name))
            .collect(),
    }
}

fn is_unknown_kind(error: &DocumentError) -> bool {
    matches!(
        error.field(),
        Some(f) if f.path == "kind" && matches!(f.kind, FieldErrorKind::Unsupported { .. })
    )
}

/// `kind`, `metadata.namespace` (default `default`) and `metadata.name` of
/// a document.
///
/// # Errors
/// A missing `kind` or `metadata.name`.
pub(crate) fn identity(doc: &Value) -> anyhow::Result<(String, String, String)> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("document without kind"))?;
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{kind} without metadata.name"))?;
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(mesh_resources::DEFAULT_NAMESPACE);
    Ok((kind.to_owned(), namespace.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            name: "x.yaml".into(),
            text: text.into(),
        }
    }

    const EXPORT: &str =
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: web\n";

    #[test]
    fn yaml_streams_and_json_arrays() {
        let s = source(&format!("{EXPORT}---\n---\n{EXPORT}"));
        assert_eq!(values(&s).unwrap().len(), 2);
        let s = source(r#"[{"kind":"A"},{"kind":"B"}]"#);
        assert_eq!(values(&s).unwrap().len(), 2);
        let s = source(r#"{"kind":"A"}"#);
        assert_eq!(values(&s).unwrap().len(), 1);
        let err = values(&source("a: [\n")).unwrap_err().to_string();
        assert!(err.starts_with("x.yaml: document 1: invalid yaml"), "{err}");
    }

    #[test]
    fn field_errors_name_source_document_and_path() {
        assert!(problems(&source(EXPORT)).is_empty());
        let bad = "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: Not_A_Label\nspec: {}\n";
        let p = problems(&source(bad));
        assert!(!p.is_empty());
        assert!(
            p.iter().all(|m| m.starts_with("x.yaml: document 1")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("metadata.name")), "{p:?}");
    }

    #[test]
    fn server_messages_point_back_to_files() {
        let origins = vec![("a.yaml".to_owned(), 1), ("b.yaml".to_owned(), 3)];
        assert_eq!(
            locate(
                "document 2 (Workload default/w): spec.address: Required value",
                &origins
            ),
            "b.yaml: document 3 (Workload default/w): spec.address: Required value"
        );
        assert_eq!(locate("document 9: x", &origins), "document 9: x");
        assert_eq!(locate("no raft leader", &origins), "no raft leader");
        // Numbered as mesh-resources numbers them, empty documents included.
        let s = source("---\n---\nkind: A\n");
        let theirs = mesh_resources::parse(&s.text).unwrap_err().errors()[0].index();
        assert_eq!(numbered(&s).unwrap()[0].0, theirs);
        assert_eq!(theirs, 2);
    }

    #[test]
    fn unknown_kinds_are_left_to_the_server() {
        // mesh-resources knows Workload now; a kind it does not know yet:
        let route = "apiVersion: isthmus.dev/v1alpha1\nkind: TrafficRoute\nmetadata:\n  name: w1\nspec:\n  service: web\n";
        assert_eq!(problems(&source(route)), Vec::<String>::new());
        let (kind, ns, name) = identity(&values(&source(route)).unwrap()[0]).unwrap();
        assert_eq!(
            (kind.as_str(), ns.as_str(), name.as_str()),
            ("TrafficRoute", "default", "w1")
        );
        // ...while an incomplete Workload is now caught before sending.
        let workload = "apiVersion: isthmus.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: w1\nspec:\n  service: web\n";
        assert!(problems(&source(workload))
            .iter()
            .any(|p| p.ends_with("spec.address: Required value")));
    }
}
