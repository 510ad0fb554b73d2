//! What a Dockerfile does with a changed file: whether the file reaches the
//! image only through `COPY`/`ADD` steps of the final stage after its last
//! `RUN` (so no build step reads it, and the new image is the previous one
//! plus the file), and where it lands. Pure: the caller reads the files.
//!
//! Anything this does not understand exactly takes the full build: a
//! heredoc, a variable in a step that places the file, a `--chmod` (which
//! the classic builder devstack drives refuses), a flag it does not know,
//! an `ADD` of an archive or a URL, a file another stage reads, a later step
//! writing over the same place, a relative destination without a `WORKDIR`
//! in the stage.

use std::path::Path;

/// One instruction, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    From {
        image: String,
        name: Option<String>,
    },
    Run,
    Copy(Copy),
    Workdir(String),
    /// `ONBUILD`: runs in a child's build, never in this one.
    Onbuild,
    /// Anything else (`ENV`, `ARG`, `CMD`, `LABEL`, ...): shapes the image's
    /// configuration, never reads the context.
    Other(String),
}

/// A `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub add: bool,
    /// `--from`: copies from another stage or image, not the context.
    pub from: Option<String>,
    pub chown: Option<String>,
    /// Flags other than `--from` and `--chown` (`--chmod`, `--link`, ...).
    pub other_flags: Vec<String>,
    pub sources: Vec<String>,
    pub dest: String,
    /// A `$` somewhere in its flags or paths.
    pub variable: bool,
}

/// A parsed Dockerfile: its instructions in order (each stage starts at a
/// `From`), and whether it uses what this module does not follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dockerfile {
    pub steps: Vec<Step>,
    /// A heredoc (`<<EOF`) at this line.
    pub heredoc: Option<usize>,
}

/// Parses a Dockerfile: parser directives (`# escape=`, `# syntax=`),
/// comments, line continuations (also across comment and empty lines),
/// JSON and plain forms of `COPY`/`ADD`, their flags.
pub fn parse(text: &str) -> Result<Dockerfile, String> {
    let mut escape = '\\';
    let mut lines = text.lines().enumerate().peekable();
    // Parser directives: `# key=value` lines at the very top.
    while let Some((_, line)) = lines.peek() {
        let Some(rest) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        if key == "escape" {
            escape = match value.trim() {
                "`" => '`',
                "\\" => '\\',
                other => return Err(format!("line 1: unknown escape character `{other}`")),
            };
        }
        // `syntax` names a BuildKit frontend; the classic builder ignores it.
        lines.next();
    }
    let mut out = Dockerfile::default();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let start = n + 1;
        let mut logical = String::new();
        let mut current = line.to_string();
        loop {
            let t = current.trim_end();
            match t.strip_suffix(escape) {
                Some(body) => {
                    logical.push_str(body);
                    logical.push(' ');
                    // The next line that is not a comment or empty continues it.
                    let mut next = None;
                    for (_, l) in lines.by_ref() {
                        let lt = l.trim();
                        if lt.is_empty() || lt.starts_with('#') {
                            continue;
                        }
                        next = Some(l.to_string());
                        break;
                    }
                    match next {
                        Some(l) => current = l,
                        None => break,
                    }
                }
                None => {
                    logical.push_str(t);
                    break;
                }
            }
        }
        let logical = logical.trim();
        let (word, args) = match logical.split_once(char::is_whitespace) {
            Some((w, a)) => (w, a.trim()),
            None => (logical, ""),
        };
        let word = word.to_ascii_uppercase();
        if matches!(word.as_str(), "RUN" | "COPY" | "ADD") && has_heredoc(args) {
            out.heredoc.get_or_insert(start);
        }
        let kind = match word.as_str() {
            "FROM" => from(args).map_err(|e| format!("line {start}: {e}"))?,
            "RUN" => Kind::Run,
            "COPY" | "ADD" => {
                Kind::Copy(copy(word == "ADD", args).map_err(|e| format!("line {start}: {e}"))?)
            }
            "WORKDIR" => Kind::Workdir(args.to_string()),
            "ONBUILD" => Kind::Onbuild,
            other => Kind::Other(other.to_string()),
        };
        out.steps.push(Step { line: start, kind });
    }
    Ok(out)
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`: a heredoc (BuildKit's, or a shell's inside
/// a `RUN`, which the classic builder would read as instructions).
fn has_heredoc(args: &str) -> bool {
    args.match_indices("<<").any(|(i, _)| {
        let rest = args[i + 2..].trim_start_matches('-');
        rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '"' || c == '\'' || c == '_')
    })
}

fn from(args: &str) -> Result<Kind, String> {
    let words: Vec<&str> = args
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    match words.as_slice() {
        [image] => Ok(Kind::From {
            image: image.to_string(),
            name: None,
        }),
        [image, as_, name] if as_.eq_ignore_ascii_case("as") => Ok(Kind::From {
            image: image.to_string(),
            name: Some(name.to_ascii_lowercase()),
        }),
        _ => Err(format!(
            "FROM {args}: expected an image and an optional `AS name`"
        )),
    }
}

fn copy(add: bool, args: &str) -> Result<Copy, String> {
    let mut rest = args;
    let mut from = None;
    let mut chown = None;
    let mut other_flags = Vec::new();
    while let Some(flag) = rest.strip_prefix("--") {
        let (word, after) = match flag.split_once(char::is_whitespace) {
            Some((w, a)) => (w, a.trim_start()),
            None => (flag, ""),
        };
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
            None => (word.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("from", Some(v)) => from = Some(v.to_ascii_lowercase()),
            ("chown", Some(v)) => chown = Some(v),
            _ => other_flags.push(format!("--{word}")),
        }
        rest = after;
    }
    let paths: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest).map_err(|e| format!("a JSON array of paths: {e}"))?
    } else {
        rest.split_whitespace().map(str::to_string).collect()
    };
    let Some((dest, sources)) = paths.split_last() else {
        return Err(format!(
            "{} needs a source and a destination",
            if add { "ADD" } else { "COPY" }
        ));
    };
    if sources.is_empty() {
        return Err(format!(
            "{} needs a source and a destination",
            if add { "ADD" } else { "COPY" }
        ));
    }
    Ok(Copy {
        add,
        variable: args.contains('$'),
        from,
        chown,
        other_flags,
        sources: sources.to_vec(),
        dest: dest.clone(),
    })
}

/// A changed path of the build context, as the caller found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Relative to the context, `/`-separated.
    pub path: String,
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A regular file or a symbolic link.
    File,
    /// An archive `ADD` would unpack (tar, gzip, bzip2, xz).
    Archive,
    Directory,
    Deleted,
    /// Ignored by `.dockerignore`: never sent to the builder.
    Ignored,
}

/// Where one changed file lands in the image, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Relative to the context.
    pub file: String,
    /// Absolute in the image.
    pub dest: String,
    /// The directories between the step's destination and the file, which
    /// the step copies too (outermost first, absolute).
    pub parents: Vec<String>,
    /// `--chown` as written (`user`, `user:group`, numeric ids); root when none.
    pub chown: Option<String>,
    /// The line of the step that places it.
    pub line: usize,
}

/// What a save asks of the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The new image is the previous one with these files placed.
    Overlay(Vec<Placement>),
    /// The full build, and why.
    Build(String),
}

/// Decides, for the changed paths of a context, whether the new image is the
/// previous one plus the files (see the module documentation).
/// `dockerfile` is the Dockerfile's path relative to the context, `target`
/// the stage built (the last one when `None`).
pub fn plan(df: &Dockerfile, dockerfile: &str, target: Option<&str>, changed: &[Changed]) -> Plan {
    let full = |why: String| Plan::Build(why);
    if let Some(line) = df.heredoc {
        return full(format!("the Dockerfile has a heredoc (line {line})"));
    }
    let dockerfile = normalize(dockerfile);
    // Stages: index ranges of steps, each starting at a FROM.
    let starts: Vec<usize> = df
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.kind, Kind::From { .. }))
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return full("the Dockerfile has no FROM".into());
    }
    let stage_of = |i: usize| starts.iter().rposition(|&s| s <= i);
    let last = match target {
        Some(t) => {
            let t = t.to_ascii_lowercase();
            match starts.iter().position(
                |&s| matches!(&df.steps[s].kind, Kind::From { name: Some(n), .. } if *n == t),
            ) {
                Some(p) => p,
                None => return full(format!("no stage is named `{t}`")),
            }
        }
        None => starts.len() - 1,
    };
    let range = starts[last]..starts.get(last + 1).copied().unwrap_or(df.steps.len());
    let final_steps = &df.steps[range.clone()];
    let last_run = final_steps
        .iter()
        .rposition(|s| matches!(s.kind, Kind::Run))
        .map(|i| i + range.start);

    let mut placements = Vec::new();
    for c in changed {
        let path = normalize(&c.path);
        if path == dockerfile || path == ".dockerignore" {
            return full(format!("{path} changed"));
        }
        match c.state {
            State::Ignored => continue,
            State::Deleted => return full(format!("{path} was deleted")),
            State::Directory => return full(format!("the directory {path} changed")),
            State::File | State::Archive => {}
        }
        // Every step that reads the file from the context.
        let mut reached = false;
        for (i, step) in df.steps.iter().enumerate() {
            let Kind::Copy(cp) = &step.kind else {
                continue;
            };
            if cp.from.is_some() {
                continue;
            }
            let hits: Vec<Hit> = cp
                .sources
                .iter()
                .filter(|s| !is_url(s))
                .filter_map(|s| matches(s, &path))
                .collect();
            if hits.is_empty() {
                continue;
            }
            let line = step.line;
            if stage_of(i) != Some(last) {
                return full(format!(
                    "{path} is read by another stage than the final one (line {line})"
                ));
            }
            if last_run.is_some_and(|r| r > i) {
                return full(format!(
                    "{path} is copied at line {line}, before a RUN that may read it"
                ));
            }
            if cp.variable {
                return full(format!("the step at line {line} uses a variable"));
            }
            if !cp.other_flags.is_empty() {
                return full(format!(
                    "the step at line {line} has {}",
                    cp.other_flags.join(" ")
                ));
            }
            if cp.add && c.state == State::Archive {
                return full(format!("ADD at line {line} unpacks the archive {path}"));
            }
            if hits.len() > 1 {
                return full(format!("{path} matches two sources at line {line}"));
            }
            let Some(base) = resolve_dest(&df.steps[range.start..i], &cp.dest) else {
                return full(format!(
                    "the relative destination at line {line} depends on a WORKDIR outside the stage"
                ));
            };
            let many = cp.sources.len() > 1;
            let (dest, parents) = match &hits[0] {
                Hit::Inside(rel) => {
                    let dir = base.trim_end_matches('/').to_string();
                    let mut parents = Vec::new();
                    let mut at = dir.clone();
                    let parts: Vec<&str> = rel.split('/').collect();
                    for p in &parts[..parts.len() - 1] {
                        at = format!("{at}/{p}");
                        parents.push(at.clone());
                    }
                    (format!("{dir}/{rel}"), parents)
                }
                Hit::Itself { wildcard } => {
                    let name = path.rsplit('/').next().unwrap_or(&path);
                    if cp.dest.ends_with('/') {
                        (format!("{}/{name}", base.trim_end_matches('/')), Vec::new())
                    } else if many || *wildcard {
                        return full(format!(
                            "the destination at line {line} is a directory only if it ends with /"
                        ));
                    } else {
                        (base.clone(), Vec::new())
                    }
                }
                Hit::Under => {
                    return full(format!(
                        "a wildcard at line {line} matches a directory holding {path}"
                    ))
                }
            };
            // A later step writing at or above (or below) the same place
            // would decide what is there; so would a later ADD of a URL.
            for (j, later) in df.steps.iter().enumerate().take(range.end).skip(i + 1) {
                let Kind::Copy(other) = &later.kind else {
                    continue;
                };
                let Some(odest) = resolve_dest(&df.steps[range.start..j], &other.dest) else {
                    return full(format!(
                        "the destination at line {} is relative",
                        later.line
                    ));
                };
                if other.variable || overlaps(&dest, &odest) {
                    return full(format!(
                        "the step at line {} may write over {dest}",
                        later.line
                    ));
                }
            }
            reached = true;
            placements.push(Placement {
                file: path.clone(),
                dest,
                parents,
                chown: cp.chown.clone(),
                line,
            });
        }
        if !reached {
            // Not in the image: what the builder gets is the same.
            continue;
        }
    }
    // An `ADD <url>` in the final stage is fetched again by a real build.
    for step in final_steps {
        if let Kind::Copy(cp) = &step.kind {
            if cp.add && cp.sources.iter().any(|s| is_url(s)) {
                return full(format!("ADD of a URL at line {}", step.line));
            }
        }
    }
    if placements.is_empty() {
        return full("no changed file reaches the image".into());
    }
    Plan::Overlay(placements)
}

/// The image the stage built (the `target`, or the last) starts from,
/// following `FROM <stage>` to the image that stage starts from: its
/// `ONBUILD` triggers run in this build, so the caller checks it has none.
/// `None` when it cannot be told (a variable, an unknown target).
pub fn root_image(df: &Dockerfile, target: Option<&str>) -> Option<String> {
    let froms: Vec<(&str, Option<&str>)> = df
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            Kind::From { image, name } => Some((image.as_str(), name.as_deref())),
            _ => None,
        })
        .collect();
    let mut at = match target {
        Some(t) => froms
            .iter()
            .position(|(_, n)| n.is_some_and(|n| n.eq_ignore_ascii_case(t)))?,
        None => froms.len().checked_sub(1)?,
    };
    // Each hop goes to an earlier stage, so this ends.
    loop {
        let image = froms[at].0;
        if image.contains('$') {
            return None;
        }
        match froms[..at]
            .iter()
            .rposition(|(_, n)| n.is_some_and(|n| n.eq_ignore_ascii_case(image)))
        {
            Some(earlier) => at = earlier,
            None => return Some(image.to_string()),
        }
    }
}

/// How a `COPY` source covers a changed file.
#[derive(Debug, PartialEq, Eq)]
enum Hit {
    /// The source is a directory holding the file at this relative path.
    Inside(String),
    /// The source is the file itself.
    Itself { wildcard: bool },
    /// A wildcard names a directory above the file (Docker then copies that
    /// directory's contents, flattened: not followed here).
    Under,
}

fn matches(source: &str, file: &str) -> Option<Hit> {
    let s = normalize(source);
    if s.contains(['*', '?', '[']) {
        let pattern: Vec<char> = s.chars().collect();
        let is_match = |name: &str| glob_match(&pattern, &name.chars().collect::<Vec<_>>());
        if is_match(file) {
            return Some(Hit::Itself { wildcard: true });
        }
        let mut at = file;
        while let Some((dir, _)) = at.rsplit_once('/') {
            if is_match(dir) {
                return Some(Hit::Under);
            }
            at = dir;
        }
        return None;
    }
    if s.is_empty() {
        return Some(Hit::Inside(file.to_string()));
    }
    if s == file {
        return Some(Hit::Itself { wildcard: false });
    }
    file.strip_prefix(&s)
        .and_then(|r| r.strip_prefix('/'))
        .map(|r| Hit::Inside(r.to_string()))
}

/// Go's `filepath.Match` (what the builder uses): `*` and `?` never
/// cross a `/`; `[...]` classes (`^` or `!` negates, `a-z` ranges); `\`
/// escapes.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != '/')
            .any(|i| glob_match(rest, &name[i..])),
        Some((_, _)) if name.is_empty() => false,
        Some(('?', rest)) => name[0] != '/' && glob_match(rest, &name[1..]),
        Some(('[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == ']') else {
                return false;
            };
            let (class, after) = (&rest[..end], &rest[end + 1..]);
            let (negate, class) = match class.first() {
                Some('^') | Some('!') => (true, &class[1..]),
                _ => (false, class),
            };
            let c = name[0];
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            c != '/' && hit != negate && glob_match(after, &name[1..])
        }
        Some(('\\', rest)) => match rest.split_first() {
            Some((&e, rest)) => name[0] == e && glob_match(rest, &name[1..]),
            None => false,
        },
        Some((&c, rest)) => name[0] == c && glob_match(rest, &name[1..]),
    }
}

/// A context path as the builder cleans it: no `./`, no leading or trailing `/`.
fn normalize(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    parts.join("/")
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
}

/// The absolute destination of a step, given the steps of its stage before
/// it (for `WORKDIR`); `None` when it is relative and no `WORKDIR` (without
/// a variable) came before in the stage. Keeps a trailing `/`.
fn resolve_dest(before: &[Step], dest: &str) -> Option<String> {
    if dest.starts_with('/') {
        return Some(clean_abs(dest));
    }
    let mut dir: Option<String> = None;
    for s in before {
        if let Kind::Workdir(w) = &s.kind {
            if w.contains('$') {
                return None;
            }
            dir = Some(if w.starts_with('/') {
                clean_abs(w)
            } else {
                format!("{}/{}", dir?.trim_end_matches('/'), w)
            });
        }
    }
    let dir = dir?;
    Some(clean_abs(&format!("{}/{dest}", dir.trim_end_matches('/'))))
}

/// `/a/./b//c/` → `/a/b/c/` (the trailing slash kept: it says "a directory").
fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if (p.ends_with('/') || p.ends_with("/.")) && out != "/" {
        out.push('/');
    }
    out
}

/// Whether writing `b` (a file or a tree) may change what is at `a`.
fn overlaps(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    let under = |x: &str, y: &str| y.is_empty() || x == y || x.starts_with(&format!("{y}/"));
    under(a, b) || under(b, a)
}

/// Whether `bytes` (the start of a file) is an archive `ADD` unpacks.
pub fn is_archive(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
        || bytes.starts_with(b"BZh")
        || bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || bytes.get(257..262) == Some(b"ustar")
}

/// `--chown` resolved as the classic builder does: `user[:group]`, each a
/// number or a name looked up in the image's `/etc/passwd` and
/// `/etc/group`; a lone user is also the group's name.
pub fn resolve_chown(chown: &str, passwd: &str, group: &str) -> Result<(u64, u64), String> {
    let (user, grp) = match chown.split_once(':') {
        Some((u, g)) if !g.contains(':') => (u, g),
        Some(_) => return Err(format!("--chown={chown}: user:group expected")),
        None => (chown, chown),
    };
    let lookup = |name: &str, file: &str, what: &str| -> Result<u64, String> {
        if let Ok(n) = name.parse::<u64>() {
            return Ok(n);
        }
        file.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[0] == name)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("--chown={chown}: no {what} `{name}` in the image"))
    };
    Ok((lookup(user, passwd, "user")?, lookup(grp, group, "group")?))
}

/// Whether `rel` (relative to the context) is under `dir`.
pub fn relative(context: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(context).ok()?;
    let s = rel.to_str()?;
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests;
