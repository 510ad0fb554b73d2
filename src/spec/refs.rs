//! `${datastores.NAME.url}` in a unit's `env` and `command`: the connection
//! URL of datastore NAME (`datastore::kinds::url`), known only once the
//! datastore is decoded. Interpolation leaves a placeholder for each such
//! name; `resolve` replaces it, or reports what it names that does not exist.

use super::diagnostic::Problem;
use super::model::Stack;

/// Marks a datastore reference inside an interpolated value; never typed by hand.
const MARK: char = '\u{1}';

/// What interpolation puts in place of `${datastores....}`.
pub fn placeholder(name: &str) -> String {
    format!("{MARK}{name}{MARK}")
}

/// Replaces the placeholders in every unit's and task's env values and
/// command; returns a problem per reference that names no datastore, a
/// fact other than `url`, or a datastore without one.
pub fn resolve(stack: &mut Stack) -> Vec<Problem> {
    let urls: Vec<(String, Option<String>)> = stack
        .datastores
        .iter()
        .map(|(name, d)| {
            (
                name.clone(),
                crate::spec::kinds::url(d.kind, name, &d.container.env),
            )
        })
        .collect();
    let mut problems = Vec::new();
    let mut fix = |text: &mut String, path: String| {
        if !text.contains(MARK) {
            return;
        }
        let mut out = String::new();
        let mut parts = text.split(MARK);
        out.push_str(parts.next().unwrap_or_default());
        while let Some(name) = parts.next() {
            let rest = parts.next().unwrap_or_default();
            let fact = name
                .strip_prefix(super::interpolate::DATASTORES)
                .unwrap_or(name);
            let (ds, what) = fact.rsplit_once('.').unwrap_or((fact, ""));
            match urls.iter().find(|(n, _)| n == ds) {
                Some((_, Some(url))) if what == "url" => out.push_str(url),
                Some((_, None)) if what == "url" => problems.push(problem(
                    &path,
                    format!("`${{{name}}}`: a `generic` datastore has no known URL"),
                    "write the address out, e.g. `NAME:PORT`",
                )),
                Some(_) => problems.push(problem(
                    &path,
                    format!("`${{{name}}}`: a datastore offers only `url`"),
                    format!("`${{datastores.{ds}.url}}`"),
                )),
                None => problems.push(problem(
                    &path,
                    format!("`${{{name}}}`: there is no datastore `{ds}`"),
                    format!(
                        "the datastores are: {}",
                        urls.iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
            out.push_str(rest);
        }
        *text = out;
    };
    let mut containers: Vec<(String, &mut super::model::Container)> = Vec::new();
    for (n, s) in stack.services.iter_mut() {
        containers.push((format!("services.{n}"), &mut s.container));
    }
    for (n, d) in stack.datastores.iter_mut() {
        containers.push((format!("datastores.{n}"), &mut d.container));
    }
    for (prefix, c) in containers {
        for (k, v) in c.env.iter_mut() {
            fix(v, format!("{prefix}.env.{k}"));
        }
        for (i, arg) in c.command.iter_mut().flatten().enumerate() {
            fix(arg, format!("{prefix}.command[{i}]"));
        }
    }
    for (n, t) in stack.tasks.iter_mut() {
        for (k, v) in t.env.iter_mut() {
            fix(v, format!("tasks.{n}.env.{k}"));
        }
        for (i, arg) in t.command.iter_mut().flatten().enumerate() {
            fix(arg, format!("tasks.{n}.command[{i}]"));
        }
    }
    problems
}

fn problem(path: &str, message: String, hint: impl Into<String>) -> Problem {
    let mut p = Problem::nowhere(message).hint(hint);
    p.path = path.to_string();
    p
}
