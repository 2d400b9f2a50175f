//! Parsing a YAML or JSON stream into [`Resource`]s, all or nothing.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{DocumentError, FieldError, FieldErrorKind, ParseErrors, Subject, SyntaxError};
use crate::isthmus::{self, FAILOVER_POLICY, MESH_LINK};
use crate::mcs::{McsVersion, ServiceExport, ServiceImport, SERVICE_EXPORT, SERVICE_IMPORT};
use crate::meta::DEFAULT_NAMESPACE;
use crate::resource::{Resource, KINDS};
use crate::schema::{field_error, invalid, quoted_list, walk, Shape};
use crate::traffic::TRAFFIC_POLICY;
use crate::workload::WORKLOAD;

/// Parses JSON when the input starts with `{` or `[`, YAML otherwise.
pub fn parse(input: &str) -> Result<Vec<Resource>, ParseErrors> {
    match input.trim_start().as_bytes().first() {
        Some(b'{' | b'[') => parse_json(input),
        _ => parse_yaml(input),
    }
}

/// Parses a YAML stream of `---`-separated documents; empty documents are
/// skipped but counted. Returns every resource, or every error.
pub fn parse_yaml(input: &str) -> Result<Vec<Resource>, ParseErrors> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
        let index = i + 1;
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push((index, v)),
            Err(e) => {
                errors.push(DocumentError::Syntax {
                    index,
                    source: SyntaxError::Yaml(e),
                });
                // The reader cannot resynchronise after a syntax error.
                break;
            }
        }
    }
    finish(docs, errors)
}

/// Parses one JSON object, or a JSON array of objects (document `n` is the
/// `n`th element). Returns every resource, or every error.
pub fn parse_json(input: &str) -> Result<Vec<Resource>, ParseErrors> {
    match serde_json::from_str::<Value>(input) {
        Ok(Value::Array(items)) => finish(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, v))
                .collect(),
            Vec::new(),
        ),
        Ok(v) => finish(vec![(1, v)], Vec::new()),
        Err(e) => Err(ParseErrors(vec![DocumentError::Syntax {
            index: 1,
            source: SyntaxError::Json(e),
        }])),
    }
}

fn finish(
    docs: Vec<(usize, Value)>,
    mut errors: Vec<DocumentError>,
) -> Result<Vec<Resource>, ParseErrors> {
    let mut resources = Vec::with_capacity(docs.len());
    for (index, value) in docs {
        match document(value) {
            Ok(r) => resources.push(r),
            Err(DocError::NotAnObject) => errors.push(DocumentError::Syntax {
                index,
                source: SyntaxError::NotAnObject,
            }),
            Err(DocError::Fields(subject, fields)) => {
                errors.extend(fields.into_iter().map(|error| DocumentError::Field {
                    index,
                    subject: subject.clone(),
                    error,
                }));
            }
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        errors.sort_by_key(DocumentError::index);
        Err(ParseErrors(errors))
    }
}

enum DocError {
    NotAnObject,
    Fields(Option<Subject>, Vec<FieldError>),
}

fn document(mut value: Value) -> Result<Resource, DocError> {
    let Some(map) = value.as_object_mut() else {
        return Err(DocError::NotAnObject);
    };
    let api_version = map.remove("apiVersion");
    let kind = map.remove("kind");
    let subject = subject(kind.as_ref(), &value);
    let fail = |errors| DocError::Fields(subject.clone(), errors);

    let (kind, api_version) = kind_and_version(kind, api_version).map_err(|e| fail(vec![e]))?;
    let mut errors = Vec::new();
    let resource =
        match kind {
            "ServiceExport" => typed::<ServiceExport>(&mut value, &SERVICE_EXPORT, &mut errors)
                .map(|mut r| {
                    r.version = mcs_version(&api_version);
                    Resource::ServiceExport(r)
                }),
            "ServiceImport" => typed::<ServiceImport>(&mut value, &SERVICE_IMPORT, &mut errors)
                .map(|mut r| {
                    r.version = mcs_version(&api_version);
                    Resource::ServiceImport(r)
                }),
            "MeshLink" => typed(&mut value, &MESH_LINK, &mut errors).map(Resource::MeshLink),
            "Workload" => typed(&mut value, &WORKLOAD, &mut errors).map(Resource::Workload),
            "TrafficPolicy" => {
                typed(&mut value, &TRAFFIC_POLICY, &mut errors).map(Resource::TrafficPolicy)
            }
            _ => {
                walk(&mut value, &FAILOVER_POLICY, "", &mut errors);
                isthmus::validate_targets(&value, &mut errors);
                deserialize(value, &mut errors).map(Resource::FailoverPolicy)
            }
        };
    if let Some(r) = &resource {
        match r {
            Resource::ServiceImport(si) => si.validate(&mut errors),
            Resource::MeshLink(ml) => ml.validate(&mut errors),
            Resource::Workload(w) => w.validate(&mut errors),
            Resource::FailoverPolicy(fp) => fp.validate(&mut errors),
            Resource::TrafficPolicy(tp) => tp.validate(&mut errors),
            Resource::ServiceExport(_) => {}
        }
    }
    match resource {
        Some(r) if errors.is_empty() => Ok(r),
        _ => Err(fail(errors)),
    }
}

/// Walks the schema, then deserializes; `None` when anything is wrong.
fn typed<T: DeserializeOwned>(
    value: &mut Value,
    shape: &Shape,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    walk(value, shape, "", errors);
    deserialize(value.take(), errors)
}

/// Deserializes a walked value; `None` if the walk found anything wrong.
fn deserialize<T: DeserializeOwned>(value: Value, errors: &mut Vec<FieldError>) -> Option<T> {
    if !errors.is_empty() {
        return None;
    }
    match serde_json::from_value(value) {
        Ok(t) => Some(t),
        Err(e) => {
            // The schema should make this unreachable; report rather than panic.
            errors.push(invalid("", &Value::Null, &e.to_string()));
            None
        }
    }
}

fn kind_and_version(
    kind: Option<Value>,
    api_version: Option<Value>,
) -> Result<(&'static str, String), FieldError> {
    let kind = kind.ok_or_else(|| field_error("kind", FieldErrorKind::Required))?;
    let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
    let Some((kind, versions)) = KINDS
        .iter()
        .find(|(k, _)| kind.as_str() == Some(k))
        .copied()
    else {
        return Err(field_error(
            "kind",
            FieldErrorKind::Unsupported {
                value: kind.to_string(),
                supported: quoted_list(&known),
            },
        ));
    };
    let api_version =
        api_version.ok_or_else(|| field_error("apiVersion", FieldErrorKind::Required))?;
    match api_version.as_str() {
        Some(v) if versions.contains(&v) => Ok((kind, v.to_owned())),
        _ => Err(field_error(
            "apiVersion",
            FieldErrorKind::Unsupported {
                value: api_version.to_string(),
                supported: quoted_list(versions),
            },
        )),
    }
}

fn mcs_version(api_version: &str) -> McsVersion {
    McsVersion::from_api_version(api_version).unwrap_or_default()
}

fn subject(kind: Option<&Value>, value: &Value) -> Option<Subject> {
    let kind = kind?.as_str()?;
    let name = value.pointer("/metadata/name")?.as_str()?;
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE);
    Some(Subject {
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}
