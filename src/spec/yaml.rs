//! A YAML tree that remembers where every node came from.
//!
//! serde_yaml stops at the first problem and forgets positions; validation
//! needs the file, line and column of every value to report every problem at
//! once. This module builds a small tree from the event parser of
//! `yaml-rust2`, with anchors, aliases and `<<` merge keys resolved, and with
//! limits on nesting and alias expansion so hostile input cannot exhaust the
//! stack or memory.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Index of a source file in a [`crate::spec::diagnostic::Sources`].
pub type FileId = usize;

/// Where a node starts and ends, in bytes, in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing at all.
    Null,
    /// A scalar, with whether it was quoted (a quoted `"8080"` is a string, a
    /// plain `8080` may be read as a number).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys are scalars; their order is kept.
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of value this is, for "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub span: Span,
    pub message: String,
}

/// Deepest nesting accepted; a stack file needs fewer than ten levels.
const MAX_DEPTH: usize = 64;
/// Most nodes an alias expansion may produce (the "billion laughs" guard).
const MAX_NODES: usize = 200_000;
/// Most scalar text aliases may copy: a megabyte anchored once and aliased
/// a thousand times stays under the node limit but would take a gigabyte.
const MAX_ALIAS_BYTES: usize = 16 << 20;

/// Parses one YAML document. An empty file is `Null`.
pub fn parse(file: FileId, source: &str) -> Result<Node, YamlError> {
    parse_stream(file, source, false).map(|mut docs| {
        docs.pop().unwrap_or(Node {
            value: Value::Null,
            span: Span {
                file,
                start: 0,
                end: 0,
            },
        })
    })
}

/// Parses every document of a multi-document stream (Kubernetes manifests
/// separated by `---`), in order; empty documents are left out.
pub fn parse_documents(file: FileId, source: &str) -> Result<Vec<Node>, YamlError> {
    parse_stream(file, source, true).map(|docs| {
        docs.into_iter()
            .filter(|d| d.value != Value::Null)
            .collect()
    })
}

fn parse_stream(file: FileId, source: &str, multi: bool) -> Result<Vec<Node>, YamlError> {
    let line_starts = line_starts(source);
    let mut builder = Builder {
        file,
        source,
        line_starts: &line_starts,
        stack: Vec::new(),
        anchors: HashMap::new(),
        roots: Vec::new(),
        multi,
        error: None,
        nodes: 0,
        alias_bytes: 0,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(source);
    if let Err(err) = parser.load(&mut builder, true) {
        let offset = builder.offset(err.marker());
        return Err(YamlError {
            span: Span {
                file,
                start: offset,
                end: offset,
            },
            message: err.info().to_string(),
        });
    }
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.roots)
}

/// Byte offset where each line starts.
fn line_starts(source: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(source.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

enum Open {
    Seq {
        items: Vec<Node>,
        start: usize,
        anchor: usize,
    },
    Map {
        entries: Vec<(Key, Node)>,
        pending_key: Option<Node>,
        /// Keys that came from a `<<` merge: an explicit key replaces them.
        merged: Vec<String>,
        start: usize,
        anchor: usize,
    },
}

struct Builder<'a> {
    file: FileId,
    source: &'a str,
    line_starts: &'a [usize],
    stack: Vec<Open>,
    /// Each anchored node with its node count and scalar bytes, counted once.
    anchors: HashMap<usize, (Node, usize, usize)>,
    /// The finished documents (at most one unless `multi`).
    roots: Vec<Node>,
    /// Whether several `---` documents are accepted.
    multi: bool,
    error: Option<YamlError>,
    nodes: usize,
    /// Scalar bytes copied by aliases so far.
    alias_bytes: usize,
    documents: usize,
}

impl Builder<'_> {
    /// The byte offset of a marker, computed from its line and column so that
    /// multi-byte characters cannot skew it.
    fn offset(&self, mark: &Marker) -> usize {
        let line = mark.line().max(1) - 1;
        let Some(&line_start) = self.line_starts.get(line) else {
            return self.source.len();
        };
        let line_end = self
            .line_starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.source.len());
        let text = &self.source[line_start..line_end];
        let col = mark.col();
        text.char_indices()
            .nth(col)
            .map(|(i, _)| line_start + i)
            .unwrap_or(line_end)
    }

    fn fail(&mut self, start: usize, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                span: Span {
                    file: self.file,
                    start,
                    end: start,
                },
                message: message.into(),
            });
        }
    }

    /// The end of a scalar written at `start`: the rest of its token on that line.
    fn scalar_end(&self, start: usize, text: &str, style: TScalarStyle) -> usize {
        let rest = &self.source[start.min(self.source.len())..];
        let line_len = rest.find('\n').unwrap_or(rest.len());
        let len = match style {
            TScalarStyle::Plain => text.len(),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => text.len() + 2,
            _ => 1,
        };
        (start + len.min(line_len).max(1)).min(self.source.len())
    }

    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = (node_count(&node), text_bytes(&node));
            self.anchors.insert(anchor, (node.clone(), size.0, size.1));
        }
        match self.stack.last_mut() {
            None => {
                if self.multi || self.roots.is_empty() {
                    self.roots.push(node);
                }
            }
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                pending_key,
                merged,
                ..
            }) => match pending_key.take() {
                None => {
                    if let Value::Scalar { .. } | Value::Null = node.value {
                        *pending_key = Some(node);
                    } else {
                        let start = node.span.start;
                        *pending_key = Some(node);
                        self.fail(
                            start,
                            "a mapping key must be a plain value, not a list or mapping",
                        );
                    }
                }
                Some(key_node) => {
                    let name = match &key_node.value {
                        Value::Scalar { text, .. } => text.clone(),
                        _ => String::new(),
                    };
                    let key = Key {
                        name,
                        span: key_node.span,
                    };
                    if key.name == "<<" {
                        merge_into(entries, merged, node);
                    } else if let Some(pos) = entries.iter().position(|(k, _)| k.name == key.name) {
                        if let Some(m) = merged.iter().position(|name| *name == key.name) {
                            merged.remove(m);
                            entries[pos] = (key, node);
                        } else {
                            // A key written twice: YAML forbids it; Compose reports it.
                            let message = format!("duplicate key `{}`", key.name);
                            let start = key.span.start;
                            self.fail(start, message);
                        }
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }

    fn count(&mut self, n: usize, at: usize) -> bool {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            self.fail(
                at,
                "the document expands to too many values (aliases nested too deep?)",
            );
            return false;
        }
        true
    }
}

/// A `<<` merge key: entries of the merged mapping(s) that the mapping does not set itself.
/// Later explicit keys override merged ones, as YAML 1.1 specifies.
fn merge_into(entries: &mut Vec<(Key, Node)>, merged_keys: &mut Vec<String>, merged: Node) {
    let sources = match merged.value {
        Value::Map(m) => vec![m],
        Value::Seq(items) => items
            .into_iter()
            .filter_map(|n| match n.value {
                Value::Map(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for source in sources {
        for (k, v) in source {
            if !entries.iter().any(|(e, _)| e.name == k.name) {
                merged_keys.push(k.name.clone());
                entries.push((k, v));
            }
        }
    }
}

/// The bytes of scalar text (keys and values) in a node.
fn text_bytes(node: &Node) -> usize {
    match &node.value {
        Value::Scalar { text, .. } => text.len(),
        Value::Seq(items) => items.iter().map(text_bytes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| k.name.len() + text_bytes(v))
            .sum(),
        Value::Null => 0,
    }
}

fn node_count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(node_count).sum(),
        Value::Map(entries) => entries.iter().map(|(_, v)| 1 + node_count(v)).sum(),
        _ => 0,
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = self.offset(&mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                // Anchors are per document in YAML.
                self.anchors.clear();
                if self.documents > 1 && !self.multi {
                    self.fail(
                        at,
                        "a stack file holds one YAML document; found a second `---`",
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, at) {
                    return;
                }
                let quoted =
                    style != TScalarStyle::Plain || tag.as_ref().is_some_and(|t| t.suffix == "str");
                let end = self.scalar_end(at, &text, style);
                let span = Span {
                    file: self.file,
                    start: at,
                    end,
                };
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    };
                self.push_node(Node { value, span }, anchor);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(at, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return;
                }
                if !self.count(1, at) {
                    return;
                }
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Open::Seq {
                        items: Vec::new(),
                        start: at,
                        anchor,
                    }
                } else {
                    Open::Map {
                        entries: Vec::new(),
                        pending_key: None,
                        merged: Vec::new(),
                        start: at,
                        anchor,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.stack.pop() else {
                    return;
                };
                let (value, start, anchor) = match open {
                    Open::Seq {
                        items,
                        start,
                        anchor,
                    } => (Value::Seq(items), start, anchor),
                    Open::Map {
                        entries,
                        start,
                        anchor,
                        ..
                    } => (Value::Map(entries), start, anchor),
                };
                let span = Span {
                    file: self.file,
                    start,
                    end: (start + 1).min(self.source.len()).max(start),
                };
                self.push_node(Node { value, span }, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(&(_, nodes, bytes)) => {
                    // Counted before the copy is made, so a refused alias costs nothing.
                    self.alias_bytes += bytes;
                    if self.alias_bytes > MAX_ALIAS_BYTES {
                        self.fail(
                            at,
                            format!(
                                "aliases copy more than {} MiB of text (a large anchored value aliased many times?)",
                                MAX_ALIAS_BYTES >> 20
                            ),
                        );
                        return;
                    }
                    if self.count(nodes, at) {
                        let node = self.anchors[&id].0.clone();
                        self.push_node(node, 0);
                    }
                }
                None => self.fail(at, "an alias to an unknown anchor"),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        match &node.value {
            Value::Scalar { text, .. } => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn positions_are_byte_offsets() {
        let src = "name: démo\nservices:\n  api:\n    image: x:1\n";
        let root = parse(0, src).unwrap();
        let image = root
            .get("services")
            .unwrap()
            .get("api")
            .unwrap()
            .get("image")
            .unwrap();
        assert_eq!(scalar(image), "x:1");
        assert_eq!(&src[image.span.start..image.span.end], "x:1");
        let name = root.get("name").unwrap();
        assert_eq!(&src[name.span.start..name.span.end], "démo");
    }

    #[test]
    fn quoted_and_null() {
        let root = parse(0, "a: '8080'\nb: 8080\nc: ~\nd:\n").unwrap();
        assert_eq!(
            root.get("a").unwrap().value,
            Value::Scalar {
                text: "8080".into(),
                quoted: true
            }
        );
        assert_eq!(
            root.get("b").unwrap().value,
            Value::Scalar {
                text: "8080".into(),
                quoted: false
            }
        );
        assert_eq!(root.get("c").unwrap().value, Value::Null);
        assert_eq!(root.get("d").unwrap().value, Value::Null);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let src = "base: &b {image: x, replicas: 2}\napi:\n  <<: *b\n  replicas: 3\n";
        let root = parse(0, src).unwrap();
        let api = root.get("api").unwrap();
        assert_eq!(scalar(api.get("image").unwrap()), "x");
        assert_eq!(scalar(api.get("replicas").unwrap()), "3");
    }

    #[test]
    fn syntax_error_has_position() {
        let src = "a: [1, 2\nb: c\n";
        let err = parse(0, src).unwrap_err();
        assert!(err.span.start > 0 && err.span.start <= src.len(), "{err:?}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse(0, "a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate key `a`"));
        assert_eq!(err.span.start, 5);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = "[".repeat(10_000);
        assert!(parse(0, &src).is_err());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(0, &src).unwrap_err();
        assert!(err.message.contains("too many"));
    }

    /// Regression (issue 10): a large scalar anchored once and aliased
    /// thousands of times stayed under the node limit, and took its size
    /// times the aliases in memory. Sized so the old code, which accepted
    /// it, needed under 200 MiB (`tests/cli` runs the megabyte version).
    #[test]
    fn alias_of_a_large_scalar_is_bounded_by_bytes() {
        let big = "x".repeat(64 << 10);
        let mut src = format!("big: &big {big}\nlist:\n");
        for _ in 0..3000 {
            src.push_str("  - *big\n");
        }
        let err = parse(0, &src).unwrap_err();
        assert!(err.message.contains("more than 16 MiB"), "{}", err.message);
        // The error points at the alias that went over, inside the list.
        assert!(err.span.start > big.len(), "{err:?}");
        // A few copies are fine.
        let src = format!("big: &big {big}\nlist: [*big, *big, *big]\n");
        assert!(parse(0, &src).is_ok());
    }

    #[test]
    fn second_document_is_refused() {
        assert!(parse(0, "a: 1\n---\nb: 2\n").is_err());
    }
}
