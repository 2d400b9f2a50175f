//! Errors of parsing and validating a stream of resources.
//!
//! Field errors use the vocabulary and capitalisation of Kubernetes
//! (`Required value`, `Invalid value: …`) so that messages read like kubectl's;
//! everything else follows the house rule of lowercase messages.

use std::fmt;

/// What is wrong with one field, in the vocabulary of Kubernetes field errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldErrorKind {
    /// A required field is missing.
    #[error("Required value")]
    Required,
    /// The value has the wrong type, is malformed or is out of range.
    #[error("Invalid value: {value}: {detail}")]
    Invalid {
        /// The offending value, rendered as JSON (strings quoted).
        value: String,
        /// Why it is invalid.
        detail: String,
    },
    /// The value is not one of a fixed set.
    #[error("Unsupported value: {value}: supported values: {supported}")]
    Unsupported {
        /// The offending value, rendered as JSON (strings quoted).
        value: String,
        /// The accepted values, quoted and comma-separated.
        supported: String,
    },
    /// The value repeats one that must be unique.
    #[error("Duplicate value: {value}")]
    Duplicate {
        /// The repeated value, rendered as JSON (strings quoted).
        value: String,
    },
    /// The schema has no field of this name (strict decoding).
    #[error("unknown field {name:?}")]
    Unknown {
        /// The name of the unknown field.
        name: String,
    },
}

/// A [`FieldErrorKind`] at a field path such as `spec.ports[0].port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct FieldError {
    /// The path of the field, as kubectl prints it (`spec.ports[0].port`).
    pub path: String,
    /// What is wrong with it.
    pub kind: FieldErrorKind,
}

/// The kind, namespace and name of a document, as far as they could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The `kind` of the document.
    pub kind: String,
    /// The `metadata.namespace` of the document (`default` when absent).
    pub namespace: String,
    /// The `metadata.name` of the document.
    pub name: String,
}

/// Why the input text could not be read as YAML or JSON at all.
#[derive(Debug, thiserror::Error)]
pub enum SyntaxError {
    /// Malformed YAML.
    #[error("invalid yaml")]
    Yaml(#[source] serde_yaml_ng::Error),
    /// Malformed JSON.
    #[error("invalid json")]
    Json(#[source] serde_json::Error),
    /// The document is not a mapping (or, in JSON, a list of mappings).
    #[error("a resource must be a mapping")]
    NotAnObject,
}

/// One problem found in one document of a stream.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The document is not well-formed.
    #[error("document {index}: {source}")]
    Syntax {
        /// 1-based index of the document in the stream.
        index: usize,
        /// What the reader reported.
        #[source]
        source: SyntaxError,
    },
    /// A field of the document fails the schema or validation.
    #[error("document {index}{}: {error}", SubjectSuffix(.subject.as_ref()))]
    Field {
        /// 1-based index of the document in the stream.
        index: usize,
        /// Kind, namespace and name of the document, when readable.
        subject: Option<Subject>,
        /// The field error.
        #[source]
        error: FieldError,
    },
}

impl DocumentError {
    /// The 1-based index of the document this error is about.
    pub fn index(&self) -> usize {
        match self {
            Self::Syntax { index, .. } | Self::Field { index, .. } => *index,
        }
    }

    /// The field error, if this is one.
    pub fn field(&self) -> Option<&FieldError> {
        match self {
            Self::Field { error, .. } => Some(error),
            Self::Syntax { .. } => None,
        }
    }
}

/// Every problem found in a stream; nothing of the stream is accepted.
#[derive(Debug, thiserror::Error)]
#[error("stream rejected ({} error(s)): {}", .0.len(), JoinLines(.0))]
pub struct ParseErrors(pub Vec<DocumentError>);

impl ParseErrors {
    /// The individual errors, in document order.
    pub fn errors(&self) -> &[DocumentError] {
        &self.0
    }
}

struct SubjectSuffix<'a>(Option<&'a Subject>);

impl fmt::Display for SubjectSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " ({} {}/{})", s.kind, s.namespace, s.name),
            None => Ok(()),
        }
    }
}

struct JoinLines<'a>(&'a [DocumentError]);

impl fmt::Display for JoinLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
            // Syntax errors carry the reader's message as their source.
            if let DocumentError::Syntax { source, .. } = e {
                let mut cause = std::error::Error::source(source);
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
            }
        }
        Ok(())
    }
}
