//! A stack written out as production definitions for a shared cluster
//! engine: a Compose file that `docker stack deploy` accepts ([`compose`])
//! and Kubernetes manifests ([`k8s`]).
//!
//! Both read a valid [`Stack`] (never a stack file) and return text plus
//! the list of what the target cannot say ([`Lost`]), each with its field
//! path in the stack, so nothing is dropped silently. What they write is
//! what the importers (`crate::spec::import`) read back: the round trip gives the
//! same stack, less what is listed.
//!
//! [`output`] says where the text goes (stdout, a file, a directory) and
//! writes it, for `devstack export` and `devstack import` alike.
//!
//! Invariant: `export` never touches Docker or a cluster; it turns a
//! `Stack` into text. Its only filesystem access is asking whether a seed
//! is a directory, and `output` writing the files a command names.

pub mod compose;
pub mod k8s;
pub mod output;

use std::path::Path;

use crate::spec::model::{Container, Stack};

/// One thing the target format cannot carry, at its path in the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// `services.web.watch`, `tasks.migrate`.
    pub path: String,
    pub why: String,
}

impl Lost {
    fn new(path: impl Into<String>, why: impl Into<String>) -> Lost {
        Lost {
            path: path.into(),
            why: why.into(),
        }
    }
}

/// What an export wrote: files (name relative to the output, and text) and
/// what they leave out.
#[derive(Debug, Clone)]
pub struct Export {
    /// One file for Compose; one per unit for Kubernetes (joined into one
    /// multi-document file when the output is a file).
    pub files: Vec<(String, String)>,
    pub lost: Vec<Lost>,
}

impl Export {
    /// Every file as one text (documents joined with `---` for manifests).
    pub fn joined(&self) -> String {
        let mut out = String::new();
        for (i, (_, text)) in self.files.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(text);
        }
        out
    }
}

/// A size in bytes as devstack, Compose and Kubernetes all read it:
/// the largest binary unit that divides it (`384m`), else bytes.
fn size_text(bytes: u64, units: [&str; 3]) -> String {
    for (unit, mul) in units.iter().rev().zip([1u64 << 30, 1 << 20, 1 << 10]) {
        if bytes >= mul && bytes.is_multiple_of(mul) {
            return format!("{}{unit}", bytes / mul);
        }
    }
    bytes.to_string()
}

/// The image a unit runs: its own reference, or for a built unit without
/// one the tag devstack builds (`devstack-built:<project>.<service>`).
fn image_of(project: &str, name: &str, c: &Container) -> String {
    c.image
        .clone()
        .unwrap_or_else(|| crate::plan::names::built_image_tag(project, name))
}

/// `path` written relative to `dir` when both are absolute (`./x`, `../x`).
fn relative_to(dir: &Path, path: &Path) -> String {
    crate::spec::import::relative(dir, path).unwrap_or_else(|| path.display().to_string())
}

/// Env values that call a service as `<service>.internal`, a name only
/// devstack's proxy answers: listed, since on a cluster nothing does.
fn internal_names(stack: &Stack, c: &Container, path: &str, lost: &mut Vec<Lost>) {
    for (key, value) in &c.env {
        if let Some(service) = stack
            .services
            .keys()
            .find(|s| value.contains(&format!("{s}.internal")))
        {
            lost.push(Lost::new(
                format!("{path}.env.{key}"),
                format!("`{service}.internal` is answered by devstack's proxy only; on a cluster call the service as `{service}`"),
            ));
        }
    }
}

/// A shell command devstack wrote as `/bin/sh -c LINE`: the line.
fn shell_line(argv: &[String]) -> Option<&str> {
    match argv {
        [sh, c, line] if sh == "/bin/sh" && c == "-c" => Some(line),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
