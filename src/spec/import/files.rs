//! Reading production definitions from disk: a directory of manifests,
//! and the files `devstack import` turns into one stack file.

use std::path::{Path, PathBuf};

use super::fleet::{self, Unit};
use super::{detect, translate, Dirs, Format, Note, Translated};
use crate::spec::diagnostic::{io_reason, Problem, Report, Sources};
use crate::spec::merge::merge_onto;
use crate::spec::yaml::{self, Node, Value};

/// A file's text, or a problem saying why it cannot be read as text.
fn read_text(file: &Path, problems: &mut Vec<Problem>) -> Option<String> {
    match std::fs::read(file).map(String::from_utf8) {
        Ok(Ok(text)) => Some(text),
        Ok(Err(_)) => {
            problems.push(Problem::nowhere(format!(
                "{} is not UTF-8 text",
                file.display()
            )));
            None
        }
        Err(err) => {
            problems.push(Problem::nowhere(format!(
                "cannot read {}: {}",
                file.display(),
                io_reason(&err)
            )));
            None
        }
    }
}

/// A directory given with `-f`: Kubernetes manifests, every `.yaml` and
/// `.yml` file in it (not below it), in name order.
pub fn manifest_docs(
    dir: &Path,
    sources: &mut Sources,
    problems: &mut Vec<Problem>,
) -> Option<Vec<Node>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(err) => {
            problems.push(Problem::nowhere(format!(
                "cannot read directory {}: {}",
                dir.display(),
                io_reason(&err)
            )));
            return None;
        }
    };
    let mut files: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        problems.push(
            Problem::nowhere(format!(
                "{} holds no .yaml, .yml or .service files",
                dir.display()
            ))
            .hint("a directory given with -f holds Kubernetes manifests or fleet units"),
        );
        return None;
    }
    let mut docs = Vec::new();
    let before = problems.len();
    for file in files {
        let Some(text) = read_text(&file, problems) else {
            continue;
        };
        let id = sources.add(file.display().to_string(), text);
        match yaml::parse_documents(id, sources.text(id)) {
            Ok(found) => {
                for doc in found {
                    if super::detect::is_kubernetes(&doc) {
                        docs.push(doc);
                    } else {
                        problems.push(
                            Problem::at(doc.span, "", "not a Kubernetes object (no `apiVersion` and `kind`)")
                                .hint("a directory given with -f holds Kubernetes manifests; name a stack file with its own -f"),
                        );
                    }
                }
            }
            Err(err) => problems.push(Problem::from(err)),
        }
    }
    (problems.len() == before).then_some(docs)
}

/// A directory given with `-f`: fleet units when it holds `.service`
/// files (every one of them, in name order), else Kubernetes manifests.
pub fn translate_dir(
    dir: &Path,
    sources: &mut Sources,
    problems: &mut Vec<Problem>,
) -> Option<(Format, Translated)> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|l| {
            l.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "service"))
                .collect()
        })
        .unwrap_or_default();
    if units.is_empty() {
        let docs = manifest_docs(dir, sources, problems)?;
        let dirs = Dirs {
            source: dir,
            stack: dir,
        };
        return translate(Format::Kubernetes, &docs, dirs).map(|t| (Format::Kubernetes, t));
    }
    units.sort();
    let mut parsed = Vec::new();
    for file in units {
        match std::fs::read(&file).map(String::from_utf8) {
            Ok(Ok(text)) => {
                let id = sources.add(file.display().to_string(), text);
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                parsed.push(Unit::parse(id, &name, sources.text(id)));
            }
            _ => problems.push(Problem::nowhere(format!(
                "cannot read {} as text",
                file.display()
            ))),
        }
    }
    Some((Format::Fleet, fleet::translate(&parsed)))
}

/// What `devstack import` made of its files.
#[derive(Debug)]
pub struct Imported {
    /// The devstack stack file's text.
    pub text: String,
    /// What was not carried over, in file order.
    pub notes: Vec<Note>,
    /// The files the notes point into.
    pub sources: Sources,
}

/// Translates and merges `files` (Compose files, Kubernetes manifests or
/// directories of them, devstack overlays) into one devstack stack file
/// whose relative paths resolve from `out_dir`. Values are kept as written:
/// Compose's `${VAR}` stays a variable; a literal `$` of a manifest is
/// written `$$`.
pub fn import_files(files: &[PathBuf], out_dir: &Path) -> Result<Imported, Report> {
    let mut sources = Sources::default();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut inferred = Vec::new();
    let mut merged: Option<Node> = None;
    for file in files {
        let source_dir = parent_dir(file);
        let dirs = Dirs {
            source: &source_dir,
            stack: out_dir,
        };
        let whole = if file.is_dir() {
            translate_dir(file, &mut sources, &mut problems)
        } else {
            match std::fs::read_to_string(file) {
                Ok(text) if fleet::is_unit(&text) => {
                    let id = sources.add(file.display().to_string(), text);
                    let name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let unit = Unit::parse(id, &name, sources.text(id));
                    Some((Format::Fleet, fleet::translate(&[unit])))
                }
                _ => None,
            }
        };
        if file.is_dir() || whole.is_some() {
            if let Some((format, mut t)) = whole {
                if format != Format::Compose {
                    escape_dollars(&mut t.tree);
                }
                notes.extend(t.notes);
                inferred.extend(t.inferred);
                merge_onto(&mut merged, t.tree);
            }
            continue;
        }
        let (format, docs) = {
            let Some(text) = read_text(file, &mut problems) else {
                continue;
            };
            let id = sources.add(file.display().to_string(), text);
            match yaml::parse_documents(id, sources.text(id)) {
                Ok(docs) => (detect(&docs), docs),
                Err(err) => {
                    problems.push(Problem::from(err));
                    continue;
                }
            }
        };
        let tree = match translate(format, &docs, dirs) {
            Some(mut t) => {
                if format == Format::Kubernetes {
                    escape_dollars(&mut t.tree);
                }
                notes.extend(t.notes);
                inferred.extend(t.inferred);
                t.tree
            }
            None => match docs.as_slice() {
                [doc] if matches!(doc.value, Value::Map(_)) => {
                    let mut doc = doc.clone();
                    rebase_stack_file(&mut doc, dirs);
                    doc
                }
                [] => continue,
                _ => {
                    let at = docs.first().map(|d| d.span);
                    let message =
                        "neither a devstack stack file, a Compose file nor Kubernetes manifests";
                    problems.push(match at {
                        Some(span) => Problem::at(span, "", message),
                        None => Problem::nowhere(message),
                    });
                    continue;
                }
            },
        };
        merge_onto(&mut merged, tree);
    }
    if !problems.is_empty() {
        let mut report = Report { sources, problems };
        report.sort();
        return Err(report);
    }
    let Some(tree) = merged else {
        return Err(Report {
            sources,
            problems: vec![Problem::nowhere("nothing to import")],
        });
    };
    let translated = super::Translated {
        tree,
        notes: Vec::new(),
        inferred,
    };
    let mut header = String::from("Written by `devstack import` from:\n");
    for file in files {
        header.push_str(&format!("  {}\n", file.display()));
    }
    if !notes.is_empty() {
        header.push_str("Not carried over:\n");
        for line in super::report::render_all(&notes, &sources) {
            header.push_str(&format!("  {line}\n"));
        }
    }
    Ok(Imported {
        text: super::write::stack_file(&translated, &header),
        notes,
        sources,
    })
}

fn parent_dir(file: &Path) -> PathBuf {
    let dir = if file.is_dir() {
        file
    } else {
        file.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    };
    let absolute = std::env::current_dir().unwrap_or_default().join(dir);
    std::fs::canonicalize(&absolute).unwrap_or(absolute)
}

/// A manifest's `$` is literal; in a stack file it is written `$$`.
fn escape_dollars(node: &mut Node) {
    match &mut node.value {
        Value::Scalar { text, .. } => {
            if text.contains('$') {
                *text = text.replace('$', "$$");
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(escape_dollars),
        Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| escape_dollars(v)),
        Value::Null => {}
    }
}

/// A devstack overlay's relative paths, rebased onto the output's directory.
fn rebase_stack_file(doc: &mut Node, dirs: Dirs) {
    let Value::Map(top) = &mut doc.value else {
        return;
    };
    for (key, section) in top.iter_mut() {
        match key.name.as_str() {
            "services" | "datastores" => {
                if let Value::Map(units) = &mut section.value {
                    for (_, unit) in units.iter_mut() {
                        rebase_unit(unit, dirs);
                    }
                }
            }
            "proxy" => {
                if let Value::Map(fields) = &mut section.value {
                    for (k, v) in fields.iter_mut() {
                        if k.name == "template" {
                            rebase_scalar(v, dirs);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn rebase_unit(unit: &mut Node, dirs: Dirs) {
    let Value::Map(fields) = &mut unit.value else {
        return;
    };
    for (key, value) in fields.iter_mut() {
        match key.name.as_str() {
            "seed" | "env_file" => rebase_all(value, dirs),
            "build" => match &mut value.value {
                Value::Scalar { .. } => rebase_scalar(value, dirs),
                Value::Map(build) => {
                    for (k, v) in build.iter_mut() {
                        if k.name == "context" {
                            rebase_scalar(v, dirs);
                        }
                    }
                }
                _ => {}
            },
            "watch" => {
                if let Value::Map(watch) = &mut value.value {
                    for (k, v) in watch.iter_mut() {
                        if k.name == "paths" {
                            rebase_all(v, dirs);
                        }
                    }
                }
            }
            "volumes" => {
                if let Value::Seq(items) = &mut value.value {
                    for item in items.iter_mut() {
                        match &mut item.value {
                            Value::Scalar { text, .. } if text.starts_with('.') => {
                                if let Some((source, rest)) = text.split_once(':') {
                                    *text = format!("{}:{rest}", dirs.rebase(source));
                                }
                            }
                            Value::Map(volume) => {
                                for (k, v) in volume.iter_mut() {
                                    if k.name == "source"
                                        && matches!(&v.value, Value::Scalar { text, .. } if text.starts_with('.'))
                                    {
                                        rebase_scalar(v, dirs);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn rebase_all(node: &mut Node, dirs: Dirs) {
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| rebase_scalar(i, dirs)),
        _ => rebase_scalar(node, dirs),
    }
}

fn rebase_scalar(node: &mut Node, dirs: Dirs) {
    if let Value::Scalar { text, .. } = &mut node.value {
        *text = dirs.rebase(text);
    }
}
