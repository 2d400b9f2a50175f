//! A small structural schema walked over a parsed document before it is
//! turned into typed values.
//!
//! The walk is strict (unknown fields are errors), reports every problem with
//! its field path, drops `null` values (Kubernetes treats them as absent) and
//! checks types, ranges, enumerations and string formats, so that the typed
//! deserialization that follows cannot fail.

use serde_json::{Map, Value};

use crate::error::{FieldError, FieldErrorKind};

/// The expected shape of a value.
#[derive(Debug)]
pub(crate) enum Shape {
    /// Any string.
    Str,
    /// A string accepted by a check, which returns the reason otherwise.
    Check(fn(&str) -> Result<(), String>),
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// An integer in an inclusive range.
    Int(i64, i64),
    /// A list of values of one shape.
    List(&'static Shape),
    /// A map from strings to strings (labels, annotations).
    StrMap,
    /// An object with a fixed set of fields.
    Obj(&'static [Field]),
}

/// One field of an [`Shape::Obj`].
#[derive(Debug)]
pub(crate) struct Field {
    /// The JSON name of the field.
    pub(crate) name: &'static str,
    /// Its shape.
    pub(crate) shape: Shape,
    /// Whether it must be present.
    pub(crate) required: bool,
}

/// An optional field.
pub(crate) const fn opt(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: false,
    }
}

/// A required field.
pub(crate) const fn req(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: true,
    }
}

/// Walks `value` against `shape`, removing `null`s and pushing every problem
/// found to `errors`, with paths below `path`.
pub(crate) fn walk(value: &mut Value, shape: &Shape, path: &str, errors: &mut Vec<FieldError>) {
    match shape {
        Shape::Str => {
            if !value.is_string() {
                errors.push(invalid(path, value, "must be a string"));
            }
        }
        Shape::Check(check) => match value.as_str() {
            Some(s) => {
                if let Err(detail) = check(s) {
                    errors.push(invalid(path, value, &detail));
                }
            }
            None => errors.push(invalid(path, value, "must be a string")),
        },
        Shape::Enum(allowed) => {
            if !value.as_str().is_some_and(|s| allowed.contains(&s)) {
                errors.push(field_error(
                    path,
                    FieldErrorKind::Unsupported {
                        value: value.to_string(),
                        supported: quoted_list(allowed),
                    },
                ));
            }
        }
        Shape::Int(min, max) => match value.as_i64() {
            Some(n) if (*min..=*max).contains(&n) => {}
            Some(_) => errors.push(invalid(
                path,
                value,
                &format!("must be between {min} and {max}"),
            )),
            None => errors.push(invalid(path, value, "must be an integer")),
        },
        Shape::List(item) => match value.as_array_mut() {
            Some(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(v, item, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(invalid(path, value, "must be a list")),
        },
        Shape::StrMap => match value.as_object_mut() {
            Some(map) => {
                map.retain(|_, v| !v.is_null());
                for (k, v) in map.iter() {
                    if !v.is_string() {
                        errors.push(invalid(&format!("{path}[{k}]"), v, "must be a string"));
                    }
                }
            }
            None => errors.push(invalid(path, value, "must be a map of strings")),
        },
        Shape::Obj(fields) => match value.as_object_mut() {
            Some(map) => walk_object(map, fields, path, errors),
            None => errors.push(invalid(path, value, "must be an object")),
        },
    }
}

fn walk_object(
    map: &mut Map<String, Value>,
    fields: &[Field],
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    map.retain(|_, v| !v.is_null());
    for name in map.keys() {
        if !fields.iter().any(|f| f.name == name) {
            errors.push(field_error(
                &join(path, name),
                FieldErrorKind::Unknown { name: name.clone() },
            ));
        }
    }
    for field in fields {
        match map.get_mut(field.name) {
            Some(v) => walk(v, &field.shape, &join(path, field.name), errors),
            None if field.required => {
                errors.push(field_error(
                    &join(path, field.name),
                    FieldErrorKind::Required,
                ));
            }
            None => {}
        }
    }
}

/// `parent.name`, or `name` at the top.
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// A field error.
pub(crate) fn field_error(path: &str, kind: FieldErrorKind) -> FieldError {
    FieldError {
        path: path.to_owned(),
        kind,
    }
}

/// An `Invalid value` error for a JSON value.
pub(crate) fn invalid(path: &str, value: &Value, detail: &str) -> FieldError {
    field_error(
        path,
        FieldErrorKind::Invalid {
            value: value.to_string(),
            detail: detail.to_owned(),
        },
    )
}

/// `"a", "b"`.
pub(crate) fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
