//! fleet unit files (systemd units that run `docker run`) translated into
//! devstack's tree.
//!
//! A unit's `ExecStart=` is split as systemd splits it and its `docker run`
//! flags are read as Docker reads them (`--flag value`, `--flag=value`,
//! `-p80:80`, `-it`). Instances of a template (`web@1.service`,
//! `web@2.service`) are replicas; `After=` on another container unit is
//! `depends_on`; a `Type=oneshot` container is a task that runs before the
//! units ordered after it; the presence side-car (a unit that writes its
//! container's address into etcd under a TTL) is what devstack's registrar
//! does, so it becomes the stack's `discovery` prefix and TTL.

use std::collections::BTreeMap;

use super::compose::{recognise, Recognised};
use super::report::Note;
use super::tree::{datastore_kind, text, texts, MapBuilder};
use super::Translated;
use crate::spec::model::DatastoreKind;
use crate::spec::yaml::{FileId, Node, Span, Value};

/// Whether a file's text is a systemd unit: its first line that is not
/// blank or a comment is a `[Unit]`, `[Service]` or `[X-Fleet]` header. A
/// stack file is a YAML mapping, so it never starts that way.
pub fn is_unit(text: &str) -> bool {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
    matches!(first, Some("[Unit]" | "[Service]" | "[X-Fleet]"))
}

/// One `Key=Value` line of a unit.
#[derive(Debug, Clone)]
struct Entry {
    section: String,
    key: String,
    value: String,
    span: Span,
}

/// A unit file, parsed.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The unit's name without `.service` (`web@1`, `mongo`).
    name: String,
    entries: Vec<Entry>,
    span: Span,
}

impl Unit {
    /// Parses the text of a unit file named `file_name`. Continuation lines
    /// (ending in `\`) are joined; comments are skipped.
    pub fn parse(file: FileId, file_name: &str, text: &str) -> Unit {
        let name = file_name
            .rsplit('/')
            .next()
            .unwrap_or(file_name)
            .trim_end_matches(".service")
            .to_string();
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut offset = 0;
        let mut pending: Option<Entry> = None;
        for line in text.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let trimmed = line.trim();
            if let Some(mut entry) = pending.take() {
                let (part, more) = continued(trimmed);
                entry.value.push(' ');
                entry.value.push_str(part);
                entry.span.end = start + line.trim_end().len();
                if more {
                    pending = Some(entry);
                } else {
                    entries.push(entry);
                }
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if trimmed.starts_with('[') && trimmed.ends_with(']') {
                section = trimmed[1..trimmed.len() - 1].to_string();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value_start = start + key.len() + 1;
            let lead = value.len() - value.trim_start().len();
            let (part, more) = continued(value.trim());
            let entry = Entry {
                section: section.clone(),
                key: key.trim().to_string(),
                value: part.to_string(),
                span: Span {
                    file,
                    start: value_start + lead,
                    end: (start + line.trim_end().len()).max(value_start + lead),
                },
            };
            if more {
                pending = Some(entry);
            } else {
                entries.push(entry);
            }
        }
        entries.extend(pending);
        Unit {
            name,
            entries,
            span: Span {
                file,
                start: 0,
                end: text.len().min(1),
            },
        }
    }

    /// The template's name (`web` for `web@1`), and the instance.
    fn prefix(&self) -> (&str, Option<&str>) {
        match self.name.split_once('@') {
            Some((p, i)) => (p, Some(i)),
            None => (&self.name, None),
        }
    }

    fn get(&self, section: &str, key: &str) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.section == section && e.key == key)
            .collect()
    }
}

fn continued(text: &str) -> (&str, bool) {
    match text.strip_suffix('\\') {
        Some(rest) => (rest.trim_end(), true),
        None => (text, false),
    }
}

/// `docker run` flags that take a value (the rest are booleans).
const VALUE_FLAGS: &[&str] = &[
    "-e",
    "--env",
    "--env-file",
    "-p",
    "--publish",
    "-v",
    "--volume",
    "--name",
    "-m",
    "--memory",
    "--cpus",
    "--pids-limit",
    "--restart",
    "--health-cmd",
    "--health-interval",
    "--health-timeout",
    "--health-retries",
    "--health-start-period",
    "--entrypoint",
    "-w",
    "--workdir",
    "-u",
    "--user",
    "--network",
    "--net",
    "-l",
    "--label",
    "--log-driver",
    "--log-opt",
    "-h",
    "--hostname",
    "--add-host",
    "--dns",
    "--cap-add",
    "--cap-drop",
    "--ulimit",
    "--stop-timeout",
    "--stop-signal",
    "--expose",
    "--mount",
    "--tmpfs",
    "--device",
    "--link",
    "--memory-swap",
    "--memory-reservation",
    "-c",
    "--cpu-shares",
    "--cpuset-cpus",
    "--shm-size",
    "--ip",
    "--mac-address",
    "--platform",
    "--pull",
    "--network-alias",
    "--label-file",
    "--storage-opt",
    "--volumes-from",
    "--security-opt",
    "--sysctl",
    "--group-add",
    "--cidfile",
    "--health-start-interval",
    "--runtime",
];

/// A `docker run` command line, read as Docker reads it.
#[derive(Debug, Default, PartialEq)]
struct DockerRun {
    /// Flags in order, with their value (booleans have none).
    flags: Vec<(String, Option<String>)>,
    image: String,
    args: Vec<String>,
}

/// The `docker run` in an ExecStart's words, if there is one (`docker`
/// directly, or through `sh -c "..."`).
fn docker_run(words: &[String]) -> Option<DockerRun> {
    let mut words: Vec<String> = words.to_vec();
    if let Some(first) = words.first() {
        let bare = first.trim_start_matches(['-', '@', '+', '!']).to_string();
        words[0] = bare;
    }
    let base = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
    if matches!(
        words.first().map(|w| base(w)).as_deref(),
        Some("sh" | "bash")
    ) && words.get(1).map(String::as_str) == Some("-c")
    {
        let inner = shlex::split(words.get(2)?)?;
        return docker_run(&inner);
    }
    if words.first().map(|w| base(w)).as_deref() != Some("docker") {
        return None;
    }
    let run_at = words.iter().position(|w| w == "run")?;
    let mut run = DockerRun::default();
    let mut rest = words[run_at + 1..].iter();
    while let Some(word) = rest.next() {
        if !word.starts_with('-') || word == "-" {
            run.image = word.clone();
            run.args = rest.cloned().collect();
            return Some(run);
        }
        if word == "--" {
            run.image = rest.next()?.clone();
            run.args = rest.cloned().collect();
            return Some(run);
        }
        if let Some((flag, value)) = word.split_once('=').filter(|_| word.starts_with("--")) {
            run.flags.push((flag.to_string(), Some(value.to_string())));
        } else if VALUE_FLAGS.contains(&word.as_str()) {
            run.flags.push((word.clone(), Some(rest.next()?.clone())));
        } else if word.len() > 2 && !word.starts_with("--") {
            // `-p80:80` (a value flag with its value attached) or `-it`.
            let flag = word.get(..2).unwrap_or(word);
            if VALUE_FLAGS.contains(&flag) {
                let value = word.get(2..).unwrap_or("");
                run.flags.push((flag.to_string(), Some(value.to_string())));
            } else {
                for c in word[1..].chars() {
                    run.flags.push((format!("-{c}"), None));
                }
            }
        } else {
            run.flags.push((word.clone(), None));
        }
    }
    None
}

struct Cx {
    notes: Vec<Note>,
    inferred: Vec<(String, String)>,
}

impl Cx {
    fn ignored(&mut self, span: Span, path: String, why: &str) {
        self.notes.push(Note::ignored(span, path, why));
    }
    fn unsupported(&mut self, span: Span, path: String, why: &str) {
        self.notes.push(Note::unsupported(span, path, why));
    }
}

/// What a unit is.
enum Role {
    /// A long-running container.
    Container(DockerRun, Span),
    /// A `Type=oneshot` container.
    OneShot(DockerRun, Span),
    /// The presence side-car: writes `key` under `ttl` seconds.
    Presence {
        key: String,
        ttl: Option<String>,
        span: Span,
    },
}

pub fn translate(units: &[Unit]) -> Translated {
    let mut cx = Cx {
        notes: Vec::new(),
        inferred: Vec::new(),
    };
    let span = units.first().map(|u| u.span).unwrap_or(Span {
        file: 0,
        start: 0,
        end: 0,
    });
    // One definition per template, with its instance count.
    let mut by_prefix: Vec<(String, &Unit, u32)> = Vec::new();
    for unit in units {
        let (prefix, instance) = unit.prefix();
        match by_prefix.iter_mut().find(|(p, _, _)| p == prefix) {
            Some((_, def, count)) => {
                if instance.is_some_and(|i| !i.is_empty()) {
                    *count += 1;
                }
                if instance == Some("") {
                    *def = unit;
                }
            }
            None => {
                let count = u32::from(instance.is_some_and(|i| !i.is_empty()));
                by_prefix.push((prefix.to_string(), unit, count));
            }
        }
    }
    let mut roles: Vec<(String, &Unit, u32, Role)> = Vec::new();
    for (prefix, unit, count) in by_prefix {
        match role(unit) {
            Some(r) => roles.push((prefix, unit, count, r)),
            None => cx.unsupported(
                unit.span,
                format!("Unit/{}", unit.name),
                "runs no `docker run` devstack can read; left out",
            ),
        }
    }
    let containers: Vec<String> = roles
        .iter()
        .filter(|(_, _, _, r)| !matches!(r, Role::Presence { .. }))
        .map(|(p, ..)| p.clone())
        .collect();
    let oneshots: Vec<String> = roles
        .iter()
        .filter(|(_, _, _, r)| matches!(r, Role::OneShot(..)))
        .map(|(p, ..)| p.clone())
        .collect();

    let mut out = MapBuilder::new(span);
    let mut services = MapBuilder::new(span);
    let mut datastores = MapBuilder::new(span);
    let mut tasks = MapBuilder::new(span);
    let mut before: BTreeMap<String, Vec<(String, Span)>> = BTreeMap::new();
    let mut images: Vec<(String, String, BTreeMap<String, String>)> = Vec::new();
    let mut discovery: Option<(String, Option<String>, Span)> = None;
    for (prefix, unit, count, role) in &roles {
        // Ordering on other container units: `After=`, with `Requires=`,
        // `Wants=` or `BindsTo=` or without.
        let mut deps = Vec::new();
        for e in unit.get("Unit", "After") {
            for word in e.value.split_whitespace() {
                let dep = word.trim_end_matches(".service");
                let dep = dep.split('@').next().unwrap_or(dep);
                if dep == prefix || !containers.iter().any(|c| c == dep) {
                    continue;
                }
                if oneshots.iter().any(|o| o == dep) {
                    before
                        .entry(dep.to_string())
                        .or_default()
                        .push((prefix.clone(), e.span));
                } else if !deps.iter().any(|(d, _)| d == dep) {
                    deps.push((dep.to_string(), e.span));
                }
            }
        }
        match role {
            Role::Presence { key, ttl, span } => {
                let prefix_key = registry_prefix(key, unit);
                cx.inferred.push((
                    "discovery".into(),
                    format!("the presence unit {}.service writes {key}", unit.name),
                ));
                if discovery.is_none() {
                    discovery = Some((prefix_key, ttl.clone(), *span));
                }
                other_entries(&mut cx, unit, true);
            }
            Role::Container(run, at) => {
                let kind = datastore_kind(&run.image);
                let path = match kind {
                    Some(_) => format!("datastores.{prefix}"),
                    None => format!("services.{prefix}"),
                };
                let mut c = container(&mut cx, unit, run, *at, kind, &path);
                if !deps.is_empty() {
                    let names: Vec<String> = deps.iter().map(|(d, _)| d.clone()).collect();
                    c.set("depends_on", texts(&names, deps[0].1));
                }
                let global = unit
                    .get("X-Fleet", "Global")
                    .iter()
                    .any(|e| e.value == "true");
                if *count > 1 && !global {
                    c.set("replicas", text(count.to_string(), unit.span));
                    cx.inferred.push((
                        format!("{path}.replicas"),
                        format!("{count} instance units of {prefix}@.service"),
                    ));
                }
                other_entries(&mut cx, unit, false);
                images.push((run.image.clone(), prefix.clone(), env_of(run)));
                if let Some(kind) = kind {
                    cx.inferred.push((
                        format!("{path}.kind"),
                        format!("a datastore: `{}` is a {kind} image", run.image),
                    ));
                    datastores.set(prefix, c.build_unit());
                } else {
                    services.set(prefix, c.build_unit());
                }
            }
            Role::OneShot(..) => {
                if let Some((_, at)) = deps.first() {
                    cx.ignored(
                        *at,
                        format!("Unit/{}.Unit.After", unit.name),
                        "a task runs just before the services it comes before, once their dependencies are healthy",
                    );
                }
            }
        }
    }
    for (prefix, unit, _, role) in &roles {
        let Role::OneShot(run, at) = role else {
            continue;
        };
        let mut task = MapBuilder::new(*at);
        let owner = images.iter().find(|(i, _, _)| *i == run.image);
        match owner {
            Some((_, name, _)) => {
                task.set("service", text(name.clone(), *at));
                cx.inferred.push((
                    format!("tasks.{prefix}.service"),
                    format!("it runs the image of `{name}`, with its environment"),
                ));
            }
            None => task.set("image", text(run.image.clone(), *at)),
        }
        if !run.args.is_empty() {
            task.set("command", texts(&run.args, *at));
        }
        let owner_env = owner.map(|(_, _, e)| e.clone()).unwrap_or_default();
        let mut env = MapBuilder::new(*at);
        for (k, v) in env_of(run) {
            if owner_env.get(&k) != Some(&v) {
                env.set(&k, text(v, *at));
            }
        }
        if !env.is_empty() {
            task.set("env", env.build());
        }
        for (flag, _) in &run.flags {
            if !matches!(
                flag.as_str(),
                "-e" | "--env" | "--rm" | "--name" | "-i" | "-t"
            ) {
                cx.unsupported(
                    *at,
                    format!("Unit/{}.ExecStart.{flag}", unit.name),
                    "a task takes its image, command and env only",
                );
            }
        }
        if let Some(b) = before.get(prefix) {
            let names: Vec<String> = b.iter().map(|(n, _)| n.clone()).collect();
            task.set("before", texts(&names, b[0].1));
        }
        other_entries(&mut cx, unit, false);
        tasks.set(prefix, task.build());
    }
    if !services.is_empty() {
        out.set("services", services.build());
    }
    if !datastores.is_empty() {
        out.set("datastores", datastores.build());
    }
    if !tasks.is_empty() {
        out.set("tasks", tasks.build());
    }
    if let Some((prefix, ttl, at)) = discovery {
        let mut d = MapBuilder::new(at);
        d.set("prefix", text(prefix, at));
        if let Some(ttl) = ttl {
            d.set("ttl", text(format!("{ttl}s"), at));
        }
        out.set("discovery", d.build());
    }
    Translated::new(out.build(), cx.notes, cx.inferred)
}

fn env_of(run: &DockerRun) -> BTreeMap<String, String> {
    run.flags
        .iter()
        .filter(|(f, _)| f == "-e" || f == "--env")
        .filter_map(|(_, v)| v.as_deref()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The registry prefix of a presence key: the part before the service's
/// own segment (`/services/web/%H:%i` under `/services`).
fn registry_prefix(key: &str, unit: &Unit) -> String {
    let service = unit
        .get("Unit", "BindsTo")
        .first()
        .map(|e| {
            e.value
                .trim_end_matches(".service")
                .split('@')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let segments: Vec<&str> = key.split('/').collect();
    match segments
        .iter()
        .position(|s| !service.is_empty() && *s == service)
    {
        Some(i) => segments[..i].join("/"),
        None => segments[..segments.len().saturating_sub(2).max(1)].join("/"),
    }
}

fn role(unit: &Unit) -> Option<Role> {
    let exec = unit.get("Service", "ExecStart");
    let exec = exec.first()?;
    let words = shlex::split(&exec.value)?;
    let joined = words.join(" ");
    if joined.contains("etcdctl") && (joined.contains(" set ") || joined.contains(" put ")) {
        // The key is the word after `etcdctl [flags] set|put`.
        let tokens: Vec<&str> = joined.split_whitespace().collect();
        let at = tokens.iter().position(|w| w.ends_with("etcdctl"))?;
        let verb = tokens[at..]
            .iter()
            .position(|w| *w == "set" || *w == "put")?;
        let key = tokens
            .get(at + verb + 1)
            .filter(|k| k.starts_with('/'))?
            .trim_matches(['\'', '"'])
            .to_string();
        let ttl = joined
            .split_whitespace()
            .skip_while(|w| *w != "--ttl")
            .nth(1)
            .map(|t| t.trim_matches(|c: char| !c.is_ascii_digit()).to_string())
            .filter(|t| !t.is_empty());
        return Some(Role::Presence {
            key,
            ttl,
            span: exec.span,
        });
    }
    let run = docker_run(&words)?;
    if unit
        .get("Service", "Type")
        .iter()
        .any(|e| e.value == "oneshot")
    {
        return Some(Role::OneShot(run, exec.span));
    }
    Some(Role::Container(run, exec.span))
}

/// A unit's `docker run` as a service or datastore.
fn container(
    cx: &mut Cx,
    unit: &Unit,
    run: &DockerRun,
    at: Span,
    kind: Option<&str>,
    out_path: &str,
) -> MapBuilder {
    let mut c = MapBuilder::new(at);
    let name = &format!("Unit/{}", unit.name);
    if let Some(kind) = kind {
        c.set("kind", text(kind, at));
    }
    c.set("image", text(run.image.clone(), at));
    if run.image.contains('%') || run.image.contains('$') {
        cx.unsupported(
            at,
            format!("{name}.ExecStart"),
            "the image names a systemd specifier or variable",
        );
    }
    if !run.args.is_empty() {
        c.set("command", texts(&run.args, at));
    }
    let mut env = MapBuilder::new(at);
    let mut resources = MapBuilder::new(at);
    let mut health = MapBuilder::new(at);
    let mut labels = MapBuilder::new(at);
    let mut volumes = Vec::new();
    let mut port: Option<String> = None;
    let data_dir = kind.and_then(|k| {
        DatastoreKind::ALL
            .iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, kind)| kind.data_dir())
    });
    for (flag, value) in &run.flags {
        let p = format!("{name}.ExecStart.{flag}");
        let v = value.clone().unwrap_or_default();
        match flag.as_str() {
            "-e" | "--env" => match v.split_once('=') {
                Some((k, val)) => {
                    if val.contains('%') || val.contains('$') {
                        cx.unsupported(at, format!("{p}.{k}"), "a systemd specifier or variable of the production host; left out (set it in an overlay)");
                    } else {
                        env.set(k, text(val, at))
                    }
                }
                None => cx.unsupported(
                    at,
                    format!("{p}.{v}"),
                    "takes the value from the host's environment",
                ),
            },
            "-p" | "--publish" => {
                let container = v.rsplit(':').next().unwrap_or(&v);
                let container = container.split('/').next().unwrap_or(container).to_string();
                if port.is_none() {
                    port = Some(container);
                }
                if v.contains(':') {
                    cx.ignored(at, p, "devstack reaches containers on the stack's network; publish with `ports` in an overlay");
                }
            }
            "--expose" => {
                if port.is_none() {
                    port = Some(v.split('/').next().unwrap_or(&v).to_string());
                }
            }
            "-v" | "--volume" => {
                let parts: Vec<&str> = v.split(':').collect();
                let (source, target, ro) = match parts.as_slice() {
                    [s, t] => (*s, *t, false),
                    [s, t, m] => (*s, *t, m.split(',').any(|x| x == "ro")),
                    _ => {
                        cx.unsupported(at, p, "an anonymous volume");
                        continue;
                    }
                };
                if source.starts_with('/') {
                    cx.unsupported(
                        at,
                        format!("{p} {v}"),
                        "a host path of the production machine",
                    );
                    continue;
                }
                if kind.is_some()
                    && Some(target.trim_end_matches('/')) == data_dir
                    && c.get("volume").is_none()
                {
                    c.set("volume", text(source, at));
                    continue;
                }
                let ro = if ro { ":ro" } else { "" };
                volumes.push(text(format!("{source}:{target}{ro}"), at));
            }
            "-m" | "--memory" => resources.set("memory", text(v.to_ascii_lowercase(), at)),
            "--cpus" => resources.set("cpus", text(v, at)),
            "--pids-limit" => resources.set("pids", text(v, at)),
            "--storage-opt" => match v.strip_prefix("size=") {
                Some(size) => resources.set("disk", text(size.to_ascii_lowercase(), at)),
                None => cx.unsupported(at, p, "a storage option devstack does not set"),
            },
            "--health-cmd" => match shlex::split(&v).as_deref().and_then(recognise) {
                Some(Recognised::Http { port: hp, path }) => {
                    health.set("http", text(path, at));
                    health.set("port", text(hp, at));
                    cx.inferred.push((
                        format!("{out_path}.health"),
                        "an HTTP check: the health command only fetches a local URL".into(),
                    ));
                }
                Some(Recognised::Tcp { port: tp }) => {
                    health.set("tcp", text(tp, at));
                    cx.inferred.push((
                        format!("{out_path}.health"),
                        "a TCP check: the health command only connects to a local port".into(),
                    ));
                }
                None => health.set("command", text(v, at)),
            },
            "--health-interval" => health.set("interval", text(v, at)),
            "--health-timeout" => health.set("timeout", text(v, at)),
            "--health-retries" => health.set("retries", text(v, at)),
            "--health-start-period" => health.set("start_period", text(v, at)),
            "--entrypoint" => c.set("entrypoint", texts(&[v], at)),
            "--init" => c.set("init", text("true", at)),
            "--stop-timeout" => c.set("stop_grace", text(format!("{v}s"), at)),
            "-l" | "--label" => {
                if let Some((k, val)) = v.split_once('=') {
                    labels.set(k, text(val, at));
                }
            }
            "--env-file" => cx.unsupported(
                at,
                format!("{p} {v}"),
                "a file on the production machine; give its values in an overlay",
            ),
            "--name" | "--rm" | "-d" | "--detach" | "-i" | "-t" | "--interactive" | "--tty"
            | "--restart" | "--log-driver" | "--log-opt" | "-h" | "--hostname" | "--pull" => cx
                .ignored(
                    at,
                    p,
                    "devstack names, runs and restarts its containers itself",
                ),
            "--net" | "--network" if v != "host" => cx.ignored(
                at,
                p,
                "devstack puts a stack's containers on one network of its own",
            ),
            _ => cx.unsupported(
                at,
                format!(
                    "{p}{}",
                    value.as_ref().map(|v| format!(" {v}")).unwrap_or_default()
                ),
                "devstack has no equivalent of this docker run flag",
            ),
        }
    }
    if let Some(port) = &port {
        c.set("port", text(port.clone(), at));
    }
    if !env.is_empty() {
        c.set("env", env.build());
    }
    if health.get("http").is_some()
        && health.get("port").and_then(super::tree::scalar) == port.as_deref()
    {
        let mut h = MapBuilder::new(at);
        if let Some(Node {
            value: Value::Map(entries),
            ..
        }) = Some(health.clone().build())
        {
            for (k, v) in entries {
                if k.name != "port" {
                    h.set(&k.name, v);
                }
            }
        }
        health = h;
    }
    if health
        .get("http")
        .or(health.get("tcp"))
        .or(health.get("command"))
        .is_some()
    {
        c.set("health", health.build());
    }
    if !resources.is_empty() {
        c.set("resources", resources.build());
    }
    if !volumes.is_empty() {
        c.set(
            "volumes",
            Node {
                value: Value::Seq(volumes),
                span: at,
            },
        );
    }
    if !labels.is_empty() {
        c.set("labels", labels.build());
    }
    c
}

/// Everything in a unit besides its ExecStart and ordering: reported.
fn other_entries(cx: &mut Cx, unit: &Unit, presence: bool) {
    for e in &unit.entries {
        let p = format!("Unit/{}.{}.{}", unit.name, e.section, e.key);
        match (e.section.as_str(), e.key.as_str()) {
            (
                "Unit",
                "Description" | "Documentation" | "After" | "Requires" | "Wants" | "BindsTo"
                | "Before",
            ) => {}
            ("Service", "ExecStart" | "Type" | "RemainAfterExit") => {}
            ("Service", "ExecStartPre" | "ExecStop" | "ExecStopPost")
                if e.value.contains("docker pull")
                    || e.value.contains("docker kill")
                    || e.value.contains("docker rm")
                    || e.value.contains("docker stop")
                    || (presence && e.value.contains("etcdctl")) =>
            {
                cx.ignored(
                    e.span,
                    p,
                    "devstack pulls, stops and removes its containers (and registrations) itself",
                )
            }
            (
                "Service",
                "Restart" | "RestartSec" | "TimeoutStartSec" | "TimeoutStopSec" | "EnvironmentFile"
                | "KillMode",
            ) => cx.ignored(
                e.span,
                p,
                "systemd's process control on the production machine",
            ),
            ("X-Fleet", _) => {
                cx.ignored(e.span, p, "scheduling across machines means nothing on one")
            }
            _ => cx.unsupported(e.span, p, "devstack has no equivalent of this unit setting"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        shlex::split(line).unwrap()
    }

    #[test]
    fn docker_run_flags_are_read_as_docker_reads_them() {
        let run = docker_run(&words(
            "-/usr/bin/docker run --rm -it -p8080:80 --name=web -e A=1 -v data:/d opinions/web:git-1 serve --port 80",
        ))
        .unwrap();
        assert_eq!(run.image, "opinions/web:git-1");
        assert_eq!(run.args, words("serve --port 80"));
        assert_eq!(
            run.flags,
            vec![
                ("--rm".to_string(), None),
                ("-i".to_string(), None),
                ("-t".to_string(), None),
                ("-p".to_string(), Some("8080:80".to_string())),
                ("--name".to_string(), Some("web".to_string())),
                ("-e".to_string(), Some("A=1".to_string())),
                ("-v".to_string(), Some("data:/d".to_string())),
            ]
        );
        let wrapped =
            docker_run(&words("/bin/sh -c 'docker run --rm redis:7 redis-server'")).unwrap();
        assert_eq!(wrapped.image, "redis:7");
        assert_eq!(docker_run(&words("/usr/bin/etcdctl set /a b")), None);
        // A value flag at the end, with no image: not a run devstack can read.
        assert_eq!(docker_run(&words("docker run -e")), None);
        // A flag with a multi-byte character is an unknown flag, not a panic.
        assert_eq!(
            docker_run(&words("docker run -é x:1")).unwrap().image,
            "x:1"
        );
    }

    #[test]
    fn units_parse_with_continuations_and_positions() {
        let text = "[Unit]\nAfter=mongo.service\n\n[Service]\nExecStart=/usr/bin/docker run \\\n  --rm web:1\n";
        let unit = Unit::parse(3, "web@.service", text);
        assert!(is_unit(text));
        assert!(!is_unit("name: x\n"));
        assert_eq!(unit.prefix(), ("web", Some("")));
        let exec = unit.get("Service", "ExecStart")[0];
        assert_eq!(exec.value, "/usr/bin/docker run --rm web:1");
        assert_eq!(
            &text[exec.span.start..exec.span.start + 15],
            "/usr/bin/docker"
        );
        assert_eq!(exec.span.file, 3);
    }
}
