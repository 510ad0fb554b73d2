//! Reading stack files: the `.env` beside the first file, each file parsed and
//! interpolated, overlays merged, then decoded and validated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::decode::{decode_stack, Decoder};
use super::diagnostic::{io_reason, Problem, Report, Sources};
use super::host::HostPaths;
use super::interpolate::{self, interpolate_within, MAX_LEN};
use super::merge::merge_onto;
use super::model::Stack;
use super::validate::validate;
use super::yaml::{self, Node, Value};
use crate::spec::import::{self, Note};

/// What loading needs from the outside world.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Stack files in merge order (at least one).
    pub files: Vec<PathBuf>,
    /// Environment variables, which win over the `.env` file.
    pub env: HashMap<String, String>,
    /// The files' text given in memory (tests and fuzzing); `files` then only names them.
    pub contents: Option<Vec<String>>,
}

impl LoadOptions {
    /// The given files with the process environment.
    pub fn new(files: Vec<PathBuf>) -> Self {
        LoadOptions {
            files,
            env: std::env::vars().collect(),
            contents: None,
        }
    }

    /// One stack file given as text, with an empty environment.
    pub fn inline(name: &str, text: &str) -> Self {
        LoadOptions {
            files: vec![PathBuf::from(name)],
            env: HashMap::new(),
            contents: Some(vec![text.to_string()]),
        }
    }
}

/// Loads, merges and validates stack files. On failure the report holds every
/// problem that could be found, in file order.
pub fn load(options: &LoadOptions) -> Result<Stack, Report> {
    load_with_notes(options).map(|loaded| loaded.stack)
}

/// A valid stack, with what translating production definitions (Compose
/// files, Kubernetes manifests) left out.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub stack: Stack,
    /// Fields of imported files not carried over, in file order.
    pub notes: Vec<Note>,
    /// The files the notes point into.
    pub sources: Sources,
}

/// [`load`], keeping the import notes: a file detected as Compose or
/// Kubernetes (see [`crate::spec::import::detect`]) is translated into the tree a
/// stack file would parse to, then merged like any stack file.
pub fn load_with_notes(options: &LoadOptions) -> Result<Loaded, Report> {
    let mut sources = Sources::default();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // The root of an imported file: a missing `name` there needs an overlay.
    let mut imported_root: Option<usize> = None;
    let first = options
        .files
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("devstack.yaml"));
    let dir = absolute_dir(&first);

    // `.env` beside the first file; the process environment wins over it.
    let mut vars: HashMap<String, String> = HashMap::new();
    let dotenv = dir.join(".env");
    if dotenv.is_file() {
        match super::envfile::read(&dotenv) {
            Ok(pairs) => vars.extend(pairs),
            Err(err) => problems.push(Problem::nowhere(err.0)),
        }
    }
    vars.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let lookup = |name: &str| {
        if name.starts_with(interpolate::DATASTORES) {
            return Some(super::refs::placeholder(name));
        }
        vars.get(name).cloned()
    };

    // What all values together may expand to, across files.
    let mut budget = Budget {
        left: MAX_TOTAL_EXPANSION,
        spent: false,
    };
    let mut merged: Option<Node> = None;
    for (i, file) in options.files.iter().enumerate() {
        let given = options.contents.as_ref().and_then(|c| c.get(i)).cloned();
        if given.is_none() && file.is_dir() {
            if let Some((_, translated)) =
                import::files::translate_dir(file, &mut sources, &mut problems)
            {
                notes.extend(translated.notes);
                imported_root.get_or_insert(translated.tree.span.file);
                merge_onto(&mut merged, translated.tree);
            }
            continue;
        }
        let read = match given {
            Some(text) => Ok(text.into_bytes()),
            None => std::fs::read(file),
        };
        let text = match read {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(err) => {
                    problems.push(Problem::nowhere(format!(
                        "{} is not UTF-8 text (invalid byte at offset {})",
                        file.display(),
                        err.utf8_error().valid_up_to()
                    )));
                    continue;
                }
            },
            Err(err) => {
                let mut problem = Problem::nowhere(format!(
                    "cannot read stack file {}: {}",
                    file.display(),
                    io_reason(&err)
                ));
                if err.kind() == std::io::ErrorKind::NotFound
                    && options.files.len() == 1
                    && file == Path::new("devstack.yaml")
                {
                    problem = problem.hint("run devstack in a directory with a devstack.yaml, or name the stack file with -f");
                }
                problems.push(problem);
                continue;
            }
        };
        let id = sources.add(file.display().to_string(), text);
        if import::fleet::is_unit(sources.text(id)) {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let unit = import::fleet::Unit::parse(id, &name, sources.text(id));
            let translated = import::fleet::translate(&[unit]);
            notes.extend(translated.notes);
            imported_root.get_or_insert(translated.tree.span.file);
            merge_onto(&mut merged, translated.tree);
            continue;
        }
        // Production definitions: translated, then merged like a stack file.
        if let Ok(mut docs) = yaml::parse_documents(id, sources.text(id)) {
            let format = import::detect(&docs);
            if format == import::Format::Compose {
                // Compose interpolates as devstack does; its errors name Compose's fields.
                for doc in &mut docs {
                    interpolate_tree(doc, "", &lookup, &mut budget, &mut problems);
                }
            }
            let source_dir = absolute_dir(file);
            let dirs = import::Dirs {
                source: &source_dir,
                stack: &dir,
            };
            if let Some(translated) = import::translate(format, &docs, dirs) {
                notes.extend(translated.notes);
                imported_root.get_or_insert(translated.tree.span.file);
                merge_onto(&mut merged, translated.tree);
                continue;
            }
        }
        let mut node = match yaml::parse(id, sources.text(id)) {
            Ok(node) => node,
            Err(err) => {
                problems.push(Problem::from(err));
                continue;
            }
        };
        if !matches!(node.value, Value::Map(_) | Value::Null) {
            problems.push(Problem::at(
                node.span,
                "",
                format!(
                    "a stack file is a mapping of fields, found {}",
                    node.kind_name()
                ),
            ));
            continue;
        }
        interpolate_tree(&mut node, "", &lookup, &mut budget, &mut problems);
        merge_onto(&mut merged, node);
    }

    let stack = match &merged {
        Some(root)
            if problems.is_empty()
                || !problems
                    .iter()
                    .any(|p| p.message.starts_with("invalid YAML")) =>
        {
            let host = HostPaths::from_env(&options.env);
            let mut decoder = Decoder {
                problems: Vec::new(),
                dir: &dir,
                host: &host,
            };
            let mut stack = decode_stack(&mut decoder, root);
            if let Some(stack) = &mut stack {
                problems.extend(super::refs::resolve(stack));
            }
            for problem in &mut decoder.problems {
                if problem.path == "name"
                    && problem.span.is_some_and(|s| Some(s.file) == imported_root)
                {
                    problem.hint = Some(
                        "Compose files, manifests and units may not name the stack: give `name:` in a devstack overlay (-f laptop.yaml)".into(),
                    );
                }
            }
            // A value whose interpolation failed was already reported; its
            // leftover `${...}` text would only cause a second, confusing problem.
            let failed: Vec<usize> = problems
                .iter()
                .filter_map(|p| p.span.map(|s| s.start))
                .collect();
            problems.extend(
                decoder
                    .problems
                    .into_iter()
                    .filter(|p| p.span.is_none_or(|s| !failed.contains(&s.start))),
            );
            if let Some(stack) = &stack {
                problems.extend(validate(stack, root));
            }
            stack
        }
        _ => None,
    };
    match stack {
        Some(stack) if problems.is_empty() => Ok(Loaded {
            stack,
            notes,
            sources,
        }),
        _ => {
            if problems.is_empty() {
                problems.push(Problem::nowhere("the stack could not be read"));
            }
            let mut report = Report { sources, problems };
            report.sort();
            Err(report)
        }
    }
}

/// The absolute directory of a stack file, without resolving symlinks in its name.
fn absolute_dir(file: &Path) -> PathBuf {
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let absolute = if parent.is_absolute() {
        parent.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(parent)
    };
    std::fs::canonicalize(&absolute).unwrap_or(absolute)
}

/// Most text that interpolation may produce over a whole stack: each value is
/// bounded, but an alias copies a value thousands of times before it is
/// interpolated.
const MAX_TOTAL_EXPANSION: usize = 16 << 20;

/// What is left of [`MAX_TOTAL_EXPANSION`], and whether running out was reported.
struct Budget {
    left: usize,
    spent: bool,
}

/// Interpolates every scalar value (not keys) in place, reporting bad or missing variables.
fn interpolate_tree(
    node: &mut Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    budget: &mut Budget,
    problems: &mut Vec<Problem>,
) {
    match &mut node.value {
        Value::Scalar { text, .. } => {
            if text.contains('$') {
                let max_len = budget.left.min(MAX_LEN);
                match interpolate_within(text, lookup, max_len) {
                    Ok(done) => {
                        budget.left -= done.len();
                        *text = done;
                    }
                    Err(why @ interpolate::Error::TooLong { .. }) if max_len < MAX_LEN => {
                        // Once the whole budget is spent, one report is enough.
                        if !budget.spent {
                            budget.spent = true;
                            problems.push(Problem::at(
                                node.span,
                                path,
                                format!(
                                    "the stack's values expand to more than {} MiB in all ({why})",
                                    MAX_TOTAL_EXPANSION >> 20
                                ),
                            ));
                        }
                    }
                    Err(why @ interpolate::Error::Invalid(_)) => {
                        problems.push(Problem::at(node.span, path, why.to_string()).hint(
                            "set it in the environment or in the .env file beside the stack file",
                        ))
                    }
                    Err(why) => problems.push(Problem::at(node.span, path, why.to_string())),
                }
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), lookup, budget, problems);
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let child = if path.is_empty() {
                    key.name.clone()
                } else {
                    format!("{path}.{}", key.name)
                };
                interpolate_tree(value, &child, lookup, budget, problems);
            }
        }
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = include_str!("../../stacks/opinions/devstack.yaml");

    fn load_text(text: &str) -> Result<Stack, Report> {
        load(&LoadOptions::inline("fuzz.yaml", text))
    }

    /// Every problem must point inside its file, so the report can quote it.
    fn check_report(report: &Report) {
        assert!(!report.problems.is_empty());
        for problem in &report.problems {
            if let Some(span) = problem.span {
                let len = report.sources.text(span.file).len();
                assert!(
                    span.start <= span.end && span.end <= len,
                    "{problem:?} in {len} bytes"
                );
            }
        }
        let _ = report.render(false);
        let _ = report.to_json();
    }

    #[test]
    fn inline_example_loads() {
        // The example's seed path is relative to its own directory, absent here.
        let text = GOOD.replace("    seed: ./seed/mongo\n", "");
        let stack = load_text(&text).unwrap_or_else(|r| panic!("{}", r.render(false)));
        assert_eq!(stack.services.len(), 15);
        assert_eq!(stack.services["gateway"].container.replicas, 2);
        assert_eq!(stack.services["profile"].container.replicas, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// Whatever the bytes, the loader answers with a stack or a report, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            if let Err(report) = load_text(&text) {
                check_report(&report);
            }
        }

        /// YAML-shaped noise reaches deeper than random characters.
        #[test]
        fn yaml_shaped_text_never_panics(
            lines in proptest::collection::vec(
                ("[ ]{0,6}", "[a-z_<>&*{}\\[\\]$-]{0,12}", "[:]?", "[ ]?", "[a-z0-9 ${}:/.\\[\\],&*!'\"-]{0,20}"),
                0..30,
            )
        ) {
            let text: String = lines
                .into_iter()
                .map(|(indent, key, colon, space, value)| format!("{indent}{key}{colon}{space}{value}\n"))
                .collect();
            if let Err(report) = load_text(&text) {
                check_report(&report);
            }
        }

        /// A real stack with one stretch of it cut out or replaced.
        #[test]
        fn mutated_example_never_panics(start in 0usize..4000, len in 0usize..40, insert in "\\PC{0,8}") {
            let mut text = GOOD.to_string();
            let start = start.min(text.len());
            let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (start + len).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
            text.replace_range(start..end, &insert);
            if let Err(report) = load_text(&text) {
                check_report(&report);
            }
        }
    }
}
