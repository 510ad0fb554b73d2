//! Production's own definitions read as stack files: Compose files,
//! Kubernetes manifests and fleet units translated into devstack's YAML tree.
//!
//! [`detect`] decides from content markers alone which format a file is in
//! (when in doubt, devstack's own). [`compose`] and [`k8s`] turn the parsed,
//! position-keeping tree of such a file into the tree a devstack stack file
//! would parse to, so that overlays merge onto it and decoding, validation
//! and their errors work unchanged, pointing into the user's file. What
//! cannot be carried over becomes a [`Note`] with its position and field
//! path, classed ignored or unsupported. [`write`] prints a translated tree
//! as a devstack stack file, with comments where a value was inferred.

pub mod compose;
pub mod detect;
pub mod files;
pub mod fleet;
pub mod k8s;
pub mod report;
pub(crate) mod tree;
pub mod write;

use std::path::Path;

use crate::spec::yaml::Node;

pub use detect::{detect, Format};
pub use report::{Class, Note};

/// A production definition translated into devstack's tree.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The tree a devstack stack file with the same meaning would parse to.
    pub tree: Node,
    /// What was not carried over, each once, in source order.
    pub notes: Vec<Note>,
    /// Field paths of the translated tree (`services.web.port`) whose value
    /// devstack inferred rather than read, with why: comments for `import`.
    pub inferred: Vec<(String, String)>,
}

impl Translated {
    /// A translation's result, its notes tidied (source order, each field once).
    pub fn new(tree: Node, mut notes: Vec<Note>, inferred: Vec<(String, String)>) -> Translated {
        report::tidy(&mut notes);
        Translated {
            tree,
            notes,
            inferred,
        }
    }
}

/// Where relative paths in a source resolve: the source's own directory,
/// and the directory the translated stack will be read from.
#[derive(Debug, Clone, Copy)]
pub struct Dirs<'a> {
    pub source: &'a Path,
    pub stack: &'a Path,
}

impl Dirs<'_> {
    /// A relative path of the source, written so that it resolves to the
    /// same place from the stack's directory (relative when both are known
    /// absolute directories).
    pub fn rebase(&self, text: &str) -> String {
        let path = Path::new(text);
        if path.is_absolute() || text.starts_with("~/") || self.source == self.stack {
            return text.to_string();
        }
        let target = crate::spec::decode::resolve(self.source, text);
        match relative(self.stack, &target) {
            Some(rel) => rel,
            None => target.display().to_string(),
        }
    }
}

/// `to` written relative to the directory `from` (`./x` or `../x`).
pub(crate) fn relative(from: &Path, to: &Path) -> Option<String> {
    if !from.is_absolute() || !to.is_absolute() {
        return None;
    }
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    if parts.is_empty() {
        parts.push(".".into());
    }
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Some(parts.join("/"))
}

/// Translates the documents of one format (all of one file, or of every
/// file of a directory of manifests).
pub fn translate(format: Format, docs: &[Node], dirs: Dirs) -> Option<Translated> {
    match format {
        Format::Devstack | Format::Fleet => None,
        Format::Compose => docs.first().map(|doc| compose::translate(doc, dirs)),
        Format::Kubernetes => Some(k8s::translate(docs)),
    }
}

#[cfg(test)]
mod tests;
