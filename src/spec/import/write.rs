//! A translated tree printed as a devstack stack file, with a comment above
//! every value devstack inferred.

use super::tree::child;
use super::Translated;
use crate::spec::yaml::{Node, Value};

/// The stack file text, with `header` as a comment at the top.
pub fn stack_file(t: &Translated, header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    let w = Writer {
        inferred: &t.inferred,
    };
    if let Value::Map(entries) = &t.tree.value {
        // Sections in the order of a hand-written stack file.
        const ORDER: &[&str] = crate::spec::decode::TOP;
        let rank = |name: &str| ORDER.iter().position(|k| *k == name).unwrap_or(ORDER.len());
        let mut entries: Vec<_> = entries.iter().collect();
        entries.sort_by_key(|(k, _)| rank(&k.name));
        for (key, value) in entries {
            w.entry(&mut out, 0, "", &key.name, value);
        }
    }
    out
}

struct Writer<'a> {
    inferred: &'a [(String, String)],
}

impl Writer<'_> {
    fn comments(&self, out: &mut String, indent: usize, path: &str) {
        for (_, why) in self.inferred.iter().filter(|(p, _)| p == path) {
            out.push_str(&format!("{:indent$}# inferred: {why}\n", ""));
        }
    }

    fn entry(&self, out: &mut String, indent: usize, parent: &str, key: &str, value: &Node) {
        let path = child(parent, key);
        self.comments(out, indent, &path);
        let k = quote_key(key);
        match &value.value {
            Value::Map(entries) if !entries.is_empty() => {
                out.push_str(&format!("{:indent$}{k}:\n", ""));
                for (ck, cv) in entries {
                    self.entry(out, indent + 2, &path, &ck.name, cv);
                }
            }
            Value::Seq(items) if !items.is_empty() => {
                out.push_str(&format!("{:indent$}{k}:\n", ""));
                for item in items {
                    self.item(out, indent + 2, &path, item);
                }
            }
            _ => out.push_str(&format!("{:indent$}{k}: {}\n", "", self.inline(value))),
        }
    }

    fn item(&self, out: &mut String, indent: usize, path: &str, value: &Node) {
        match &value.value {
            Value::Map(entries) if !entries.is_empty() => {
                let mut first = true;
                for (k, v) in entries {
                    let mut sub = String::new();
                    self.entry(&mut sub, indent + 2, path, &k.name, v);
                    if first {
                        // `- key: value` on the dash's line.
                        let trimmed = sub.trim_start_matches(' ');
                        out.push_str(&format!("{:indent$}- {trimmed}", ""));
                        first = false;
                    } else {
                        out.push_str(&sub);
                    }
                }
            }
            _ => out.push_str(&format!("{:indent$}- {}\n", "", self.inline(value))),
        }
    }

    fn inline(&self, value: &Node) -> String {
        match &value.value {
            Value::Null => "null".into(),
            Value::Scalar { text, .. } => quote(text),
            Value::Seq(items) if items.is_empty() => "[]".into(),
            Value::Map(entries) if entries.is_empty() => "{}".into(),
            Value::Seq(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| self.inline(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Map(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", quote_key(&k.name), self.inline(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A scalar as YAML: plain when it reads back as the same string, else
/// double-quoted with JSON's escapes (valid YAML).
fn quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || "._/-+=@()".contains(c)
                || c == ' '
                || c == ':'
                || c == ','
                || c == '$'
                || c == '{'
                || c == '}'
        })
        && !text.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`$".contains(c))
        && !text.ends_with(' ')
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
        && !text.contains(['{', '}', ','])
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "null" | "~" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
    }
}

fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
    {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap_or_else(|_| key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse;

    #[test]
    fn written_text_reads_back_as_the_same_tree() {
        let src = "name: x\nservices:\n  a:\n    image: 'a:1'\n    env: {A: 'x: y', B: '#', C: 'yes', D: '', E: '8080'}\n    command: [sh, -c, 'echo \"hi\" ${X}']\n    routes:\n      - {host: a.localhost, path: /a}\n";
        let tree = parse(0, src).unwrap();
        let t = Translated {
            tree: tree.clone(),
            notes: Vec::new(),
            inferred: vec![("services.a.image".into(), "a guess".into())],
        };
        let text = stack_file(&t, "header");
        assert!(
            text.contains("    # inferred: a guess\n    image: a:1\n"),
            "{text}"
        );
        let back = parse(1, &text).unwrap();
        assert_eq!(strip(&back), strip(&tree), "{text}");
    }

    /// The tree without positions or quoting, to compare.
    fn strip(node: &Node) -> serde_json::Value {
        match &node.value {
            Value::Null => serde_json::Value::Null,
            Value::Scalar { text, .. } => text.clone().into(),
            Value::Seq(items) => items.iter().map(strip).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.name.clone(), strip(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}
