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

/// The path with its object left out (`services.*.logging`,
/// `Deployment/*.spec.strategy`): the same field of many objects.
fn shape(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("services.") {
        let field = rest.split_once('.').map(|(_, f)| f).unwrap_or("");
        return format!("services.*.{field}");
    }
    match path.split_once('/') {
        Some((kind, rest)) => {
            let field = rest.split_once('.').map(|(_, f)| f).unwrap_or("");
            format!("{kind}/*.{field}")
        }
        None => path.to_string(),
    }
}

/// The object a note is about (`services.web`, `Deployment/web`).
fn object(path: &str) -> &str {
    match path.strip_prefix("services.") {
        Some(rest) => rest.split('.').next().unwrap_or(rest),
        None => path.split('.').next().unwrap_or(path),
    }
}

/// Each note as one line; an ignored note repeated for many objects (the
/// same field with the same reason) is one line naming the others.
pub fn render_all(notes: &[Note], sources: &Sources) -> Vec<String> {
    let mut lines: Vec<(String, String, Vec<String>)> = Vec::new();
    for note in notes {
        let key = format!("{:?} {} {}", note.class, shape(&note.path), note.message);
        if note.class == Class::Ignored {
            if let Some((_, first, others)) = lines.iter_mut().find(|(k, _, _)| *k == key) {
                let this = object(&note.path).to_string();
                // The same field twice in one object (`ExecStartPre=` lines) is said once.
                if !first.contains(&format!(": {this}.")) && !others.contains(&this) {
                    others.push(this);
                }
                continue;
            }
        }
        lines.push((key, note.render(sources), Vec::new()));
    }
    lines
        .into_iter()
        .map(|(_, line, others)| match others.len() {
            0 => line,
            _ => format!("{line} (also {})", others.join(", ")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_ignored_field_of_many_objects_is_one_line() {
        let mut sources = Sources::default();
        let f = sources.add("m.yaml".into(), "a\nb\nc\nd\n".into());
        let at = |start| Span {
            file: f,
            start,
            end: start + 1,
        };
        let notes = vec![
            Note::ignored(at(0), "Deployment/web.spec.strategy", "rollouts"),
            Note::ignored(at(2), "Deployment/api.spec.strategy", "rollouts"),
            Note::unsupported(at(4), "Deployment/api.spec.x", "no"),
            Note::unsupported(at(6), "Deployment/web.spec.x", "no"),
        ];
        let lines = render_all(&notes, &sources);
        assert_eq!(
            lines,
            vec![
                "m.yaml:1:1: ignored: Deployment/web.spec.strategy: rollouts (also Deployment/api)",
                "m.yaml:3:1: unsupported: Deployment/api.spec.x: no",
                "m.yaml:4:1: unsupported: Deployment/web.spec.x: no",
            ]
        );
    }
}
