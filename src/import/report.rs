//! What an import could not carry over: one note per field, with its place.

use serde::Serialize;

use crate::spec::diagnostic::Sources;
use crate::spec::yaml::Span;

/// Why a field was not carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Meaningless on one machine (node selectors, tolerations, update
    /// strategies): leaving it out changes nothing a developer can see.
    Ignored,
    /// Would change behaviour (a sidecar, a host path, a network alias):
    /// the local stack differs from production here.
    Unsupported,
}

/// One field of a production definition that the translation left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub span: Span,
    /// The field's path in the source format (`services.web.container_name`,
    /// `Deployment/web.spec.template.spec.tolerations`).
    pub path: String,
    pub class: Class,
    pub message: String,
}

impl Note {
    pub fn ignored(span: Span, path: impl Into<String>, message: impl Into<String>) -> Self {
        Note {
            span,
            path: path.into(),
            class: Class::Ignored,
            message: message.into(),
        }
    }

    pub fn unsupported(span: Span, path: impl Into<String>, message: impl Into<String>) -> Self {
        Note {
            span,
            path: path.into(),
            class: Class::Unsupported,
            message: message.into(),
        }
    }

    /// `file:line:column: ignored: path: message`.
    pub fn render(&self, sources: &Sources) -> String {
        let (line, column) = sources.line_col(self.span.file, self.span.start);
        let class = match self.class {
            Class::Ignored => "ignored",
            Class::Unsupported => "unsupported",
        };
        format!(
            "{}:{line}:{column}: {class}: {}: {}",
            sources.name(self.span.file),
            self.path,
            self.message
        )
    }

    pub fn to_json(&self, sources: &Sources) -> serde_json::Value {
        let (line, column) = sources.line_col(self.span.file, self.span.start);
        serde_json::json!({
            "file": sources.name(self.span.file),
            "line": line,
            "column": column,
            "path": self.path,
            "class": self.class,
            "message": self.message,
        })
    }
}

/// Notes in source order, each field once.
pub fn tidy(notes: &mut Vec<Note>) {
    notes.sort_by_key(|n| (n.span.file, n.span.start));
    notes.dedup_by(|a, b| a.path == b.path && a.span == b.span);
}
