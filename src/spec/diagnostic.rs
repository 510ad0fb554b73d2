//! Problems found in stack files, and how they are shown: file:line:column,
//! the field path, the source line with a caret, and a hint.

use std::io::IsTerminal;

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};
use serde::Serialize;

use super::yaml::{FileId, Span, YamlError};

/// An I/O error as a problem or a probe's detail says it: the common kinds
/// in plain words, any other as the system puts it.
pub fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => err.to_string(),
    }
}

/// One stack file's name (as the user gave it) and text.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<(String, String)>,
}

impl Sources {
    pub fn add(&mut self, name: String, text: String) -> FileId {
        self.files.push((name, text));
        self.files.len() - 1
    }

    pub fn name(&self, file: FileId) -> &str {
        &self.files[file].0
    }

    pub fn text(&self, file: FileId) -> &str {
        &self.files[file].1
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> (usize, usize) {
        let text = self.text(file);
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, text[line_start..offset].chars().count() + 1)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// One problem in the stack files.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where, when the problem is tied to a place in a file.
    pub span: Option<Span>,
    /// The field path, e.g. `services.api.health.interval` (empty for the file itself).
    pub path: String,
    /// What is wrong, as one sentence.
    pub message: String,
    /// What to do about it, e.g. "did you mean `health`?".
    pub hint: Option<String>,
    /// Other places that explain the problem, e.g. where a route was first claimed.
    pub related: Vec<(Span, String)>,
}

impl Problem {
    pub fn at(span: Span, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            span: Some(span),
            path: path.into(),
            message: message.into(),
            hint: None,
            related: Vec::new(),
        }
    }

    pub fn nowhere(message: impl Into<String>) -> Self {
        Problem {
            span: None,
            path: String::new(),
            message: message.into(),
            hint: None,
            related: Vec::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn related(mut self, span: Span, note: impl Into<String>) -> Self {
        self.related.push((span, note.into()));
        self
    }
}

/// Every problem found in a set of stack files, with the files to quote from.
#[derive(Debug, Clone)]
pub struct Report {
    pub sources: Sources,
    pub problems: Vec<Problem>,
}

/// A problem as `--json` prints it.
#[derive(Debug, Serialize)]
struct JsonProblem<'a> {
    file: Option<&'a str>,
    line: Option<usize>,
    column: Option<usize>,
    path: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
}

impl Report {
    /// Problems in file order, then by position.
    pub fn sort(&mut self) {
        self.problems
            .sort_by_key(|p| p.span.map(|s| (0, s.file, s.start)).unwrap_or((0, 0, 0)));
    }

    /// The report as text, with colours when `color` is set.
    pub fn render(&self, color: bool) -> String {
        let mut files = SimpleFiles::new();
        for (name, text) in &self.sources.files {
            files.add(name.as_str(), text.as_str());
        }
        let config = term::Config::default();
        let mut out = termcolor::Buffer::no_color();
        if color {
            out = termcolor::Buffer::ansi();
        }
        let styles = term::Styles::default();
        for problem in &self.problems {
            let mut diagnostic = Diagnostic::error().with_message(problem.message.clone());
            if !problem.path.is_empty() {
                diagnostic = diagnostic.with_code(problem.path.clone());
            }
            let mut labels = Vec::new();
            if let Some(span) = problem.span {
                labels.push(
                    Label::primary(span.file, span.start..span.end)
                        .with_message(problem.hint.clone().unwrap_or_default()),
                );
            }
            for (span, note) in &problem.related {
                labels.push(Label::secondary(span.file, span.start..span.end).with_message(note));
            }
            diagnostic = diagnostic.with_labels(labels);
            if problem.span.is_none() {
                if let Some(hint) = &problem.hint {
                    diagnostic = diagnostic.with_notes(vec![hint.clone()]);
                }
            }
            let mut writer = term::StylesWriter::new(&mut out, &styles);
            if term::emit_to_write_style(&mut writer, &config, &files, &diagnostic).is_err() {
                // A span outside its file would be a bug in the parser; still say something.
                let _ = std::io::Write::write_all(
                    &mut out,
                    format!("error: {}\n", problem.message).as_bytes(),
                );
            }
        }
        let count = self.problems.len();
        let summary = format!(
            "{count} problem{} found\n",
            if count == 1 { "" } else { "s" }
        );
        let mut text = String::from_utf8_lossy(out.as_slice()).into_owned();
        text.push_str(&summary);
        text
    }

    pub fn to_json(&self) -> serde_json::Value {
        let problems: Vec<JsonProblem> = self
            .problems
            .iter()
            .map(|p| {
                let (line, column) = match p.span {
                    Some(s) => {
                        let (l, c) = self.sources.line_col(s.file, s.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                JsonProblem {
                    file: p.span.map(|s| self.sources.name(s.file)),
                    line,
                    column,
                    path: &p.path,
                    message: &p.message,
                    hint: p.hint.as_deref(),
                }
            })
            .collect();
        serde_json::json!({ "valid": problems.is_empty(), "problems": problems })
    }
}

/// Whether stderr should get colour: a terminal, and neither `NO_COLOR` nor `--no-color`.
pub fn stderr_color(no_color_flag: bool) -> bool {
    !no_color_flag
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal()
}

/// The closest of `candidates` to `word`, if any is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

impl From<YamlError> for Problem {
    /// A file that is not YAML at all, at the place the parser stopped.
    fn from(err: YamlError) -> Problem {
        Problem::at(err.span, "", format!("invalid YAML: {}", err.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos() {
        assert_eq!(
            closest("helth", ["health", "image", "ports"]),
            Some("health")
        );
        assert_eq!(
            closest("imgae", ["health", "image", "ports"]),
            Some("image")
        );
        assert_eq!(closest("zzzzzzz", ["health", "image"]), None);
    }

    #[test]
    fn line_col_counts_characters() {
        let mut sources = Sources::default();
        let f = sources.add("a.yaml".into(), "name: é\nx: 1\n".into());
        assert_eq!(sources.line_col(f, 0), (1, 1));
        assert_eq!(sources.line_col(f, 9), (2, 1));
        assert_eq!(sources.line_col(f, 6), (1, 7));
    }
}
