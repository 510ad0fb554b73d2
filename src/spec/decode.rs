//! From the positioned YAML tree to the typed [`Stack`], collecting every
//! problem on the way instead of stopping at the first.
//!
//! Each section has one `decode_*` function that reads its fields through
//! [`Fields`], which reports unknown keys (with the closest valid one) and
//! type errors at the right place. Relative paths resolve against the stack's
//! directory; the only filesystem access is checking that build contexts, env
//! files and seed data exist.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;

use super::diagnostic::{closest, Problem};
use super::host::HostPaths;
use super::model::*;
use super::units::{check_image_ref, check_platform, parse_duration, parse_size};
use super::yaml::{Key, Node, Span, Value};

/// The problems found so far and what decoding needs to know about the world.
pub struct Decoder<'a> {
    pub problems: Vec<Problem>,
    /// The directory of the first stack file.
    pub dir: &'a Path,
    /// The host paths a bind mount may not reach without `allow_host_access`.
    pub host: &'a HostPaths,
}

/// A field path such as `services.api.health`.
#[derive(Debug, Clone)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    pub fn child(&self, segment: impl std::fmt::Display) -> Self {
        if self.0.is_empty() {
            FieldPath(segment.to_string())
        } else {
            FieldPath(format!("{}.{segment}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The entries of a mapping whose keys have been checked against the allowed set.
pub struct Fields<'n> {
    entries: Vec<(&'n Key, &'n Node)>,
    pub span: Span,
    path: FieldPath,
}

impl<'n> Fields<'n> {
    /// The value of a key, unless it is absent or null.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| *v)
            .filter(|v| v.value != Value::Null)
    }

    /// The path of a key of this mapping.
    pub fn path(&self, key: &str) -> FieldPath {
        self.path.child(key)
    }
}

impl Decoder<'_> {
    pub fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    fn error(&mut self, node: &Node, path: &FieldPath, message: impl Into<String>) {
        self.problems
            .push(Problem::at(node.span, path.as_str(), message));
    }

    fn expected(&mut self, node: &Node, path: &FieldPath, what: &str) {
        let found = match &node.value {
            Value::Scalar { text, .. } => format!("`{}`", truncate(text)),
            _ => node.kind_name().to_string(),
        };
        self.error(node, path, format!("expected {what}, found {found}"));
    }

    /// A mapping with only the `allowed` keys (and `x-` extension keys).
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &FieldPath,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                return Some(Fields {
                    entries: Vec::new(),
                    span: node.span,
                    path: path.clone(),
                })
            }
            _ => {
                self.expected(node, path, "a mapping");
                return None;
            }
        };
        let mut kept = Vec::new();
        for (key, value) in entries {
            if key.name.starts_with("x-") {
                continue;
            }
            if allowed.contains(&key.name.as_str()) {
                kept.push((key, value));
                continue;
            }
            let mut problem = Problem::at(
                key.span,
                path.child(&key.name).as_str(),
                format!("unknown field `{}`", key.name),
            );
            problem = match closest(&key.name, allowed.iter().copied()) {
                Some(near) => problem.hint(format!("did you mean `{near}`?")),
                None => problem.hint(format!("expected one of: {}", allowed.join(", "))),
            };
            self.problems.push(problem);
        }
        Some(Fields {
            entries: kept,
            span: node.span,
            path: path.clone(),
        })
    }

    /// A mapping of names to entries, each name checked as an object name.
    fn named<'n>(&mut self, node: &'n Node, path: &FieldPath) -> Vec<(&'n Key, &'n Node)> {
        match &node.value {
            Value::Map(entries) => entries
                .iter()
                .filter(|(k, _)| !k.name.starts_with("x-"))
                .filter(|(k, _)| {
                    if let Err(why) = check_name(&k.name) {
                        self.problems
                            .push(Problem::at(k.span, path.child(&k.name).as_str(), why));
                        return false;
                    }
                    true
                })
                .map(|(k, v)| (k, v))
                .collect(),
            Value::Null => Vec::new(),
            _ => {
                self.expected(node, path, "a mapping of names");
                Vec::new()
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &FieldPath) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    fn number<T: std::str::FromStr>(
        &mut self,
        node: &Node,
        path: &FieldPath,
        what: &str,
    ) -> Option<T> {
        match &node.value {
            Value::Scalar { text, .. } => match text.trim().parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.expected(node, path, what);
                    None
                }
            },
            _ => {
                self.expected(node, path, what);
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, path: &FieldPath) -> Option<bool> {
        match &node.value {
            Value::Scalar { text, .. } if text == "true" => Some(true),
            Value::Scalar { text, .. } if text == "false" => Some(false),
            _ => {
                self.expected(node, path, "`true` or `false`");
                None
            }
        }
    }

    /// A scalar read by `parse`; a failure is reported as `bad <what>` with an example.
    fn parsed<T>(
        &mut self,
        node: &Node,
        path: &FieldPath,
        parse: fn(&str) -> Result<T, String>,
        what: &str,
        example: &str,
    ) -> Option<T> {
        let text = self.string(node, path)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(why) => {
                self.problems.push(
                    Problem::at(node.span, path.as_str(), format!("bad {what}: {why}"))
                        .hint(format!("write a {what} like {example}")),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &FieldPath) -> Option<Duration> {
        self.parsed(
            node,
            path,
            parse_duration,
            "duration",
            "`500ms`, `2s`, `1m30s`",
        )
    }

    fn size(&mut self, node: &Node, path: &FieldPath) -> Option<u64> {
        self.parsed(node, path, parse_size, "size", "`512m`, `1g`, `64k`")
    }

    fn port_number(&mut self, node: &Node, path: &FieldPath) -> Option<u16> {
        let n: u32 = self.number(node, path, "a port number (1-65535)")?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.error(node, path, format!("port {n} is out of range (1-65535)"));
                None
            }
        }
    }

    fn image(&mut self, node: &Node, path: &FieldPath) -> Option<String> {
        let text = self.string(node, path)?;
        match check_image_ref(&text) {
            Ok(()) => Some(text),
            Err(why) => {
                self.error(
                    node,
                    path,
                    format!("bad image reference `{}`: {why}", truncate(&text)),
                );
                None
            }
        }
    }

    /// A platform, `os/arch[/variant]` with known values.
    fn platform(&mut self, node: &Node, path: &FieldPath) -> Option<String> {
        let text = self.string(node, path)?;
        match check_platform(&text) {
            Ok(()) => Some(text),
            Err(why) => {
                self.problems
                    .push(Problem::at(node.span, path.as_str(), why.message).hint(why.hint));
                None
            }
        }
    }

    /// A list of strings, or one string (split like a shell when `split` is set).
    fn argv(&mut self, node: &Node, path: &FieldPath, split: bool) -> Option<Vec<String>> {
        match &node.value {
            Value::Scalar { text, .. } => {
                if !split {
                    return Some(vec![text.clone()]);
                }
                match shlex::split(text) {
                    Some(words) if !words.is_empty() => Some(words),
                    _ => {
                        self.error(
                            node,
                            path,
                            "cannot split this command into words (an unclosed quote?)",
                        );
                        None
                    }
                }
            }
            Value::Seq(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    out.push(self.string(item, &path.index(i))?);
                }
                Some(out)
            }
            _ => {
                self.expected(node, path, "a string or a list of strings");
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, path: &FieldPath) -> Vec<String> {
        self.argv(node, path, false).unwrap_or_default()
    }

    /// `KEY: value` mapping, or a list of `KEY=value` strings (Compose's two forms).
    fn string_map(&mut self, node: &Node, path: &FieldPath) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    let text = match &value.value {
                        Value::Null => String::new(),
                        Value::Scalar { text, .. } => text.clone(),
                        _ => {
                            self.expected(value, &path.child(&key.name), "a string");
                            continue;
                        }
                    };
                    out.insert(key.name.clone(), text);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(text) = self.string(item, &path.index(i)) else {
                        continue;
                    };
                    match text.split_once('=') {
                        Some((k, v)) if !k.is_empty() => {
                            out.insert(k.to_string(), v.to_string());
                        }
                        _ => self.error(
                            item,
                            &path.index(i),
                            format!("expected `KEY=value`, found `{}`", truncate(&text)),
                        ),
                    }
                }
            }
            Value::Null => {}
            _ => self.expected(node, path, "a mapping or a list of `KEY=value`"),
        }
        out
    }

    /// A path from the stack file, made absolute against the stack's directory.
    fn path_value(&mut self, node: &Node, path: &FieldPath) -> Option<PathBuf> {
        let text = self.string(node, path)?;
        Some(resolve(self.dir, &text))
    }
}

/// Object names become container names and DNS names: keep them simple.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid name: use lowercase letters, digits, `-` and `_` (at most 63, starting with a letter or digit)",
            truncate(name)
        ))
    }
}

fn truncate(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    }
}

/// `~/x` and relative paths resolved; `..` folded without touching the disk.
pub fn resolve(dir: &Path, text: &str) -> PathBuf {
    let raw = if let Some(rest) = text.strip_prefix("~/") {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest)
    } else {
        dir.join(text)
    };
    super::host::fold(&raw)
}

/// A stack file's top-level keys, in the order a hand-written one has them.
pub const TOP: &[&str] = &[
    "name",
    "services",
    "datastores",
    "tasks",
    "discovery",
    "proxy",
];
const CONTAINER: &[&str] = &[
    "image",
    "build",
    "platform",
    "command",
    "entrypoint",
    "env",
    "env_file",
    "port",
    "ports",
    "replicas",
    "depends_on",
    "health",
    "resources",
    "volumes",
    "labels",
    "restart",
    "stop_grace",
    "allow_host_access",
    "init",
];
const SERVICE_ONLY: &[&str] = &["routes", "watch"];
const DATASTORE_ONLY: &[&str] = &["kind", "volume", "seed"];

/// Decodes the merged tree of a stack.
pub fn decode_stack(d: &mut Decoder, root: &Node) -> Option<Stack> {
    let path = FieldPath::root();
    let top = d.fields(root, &path, TOP)?;
    let name = match top.get("name") {
        Some(node) => {
            let name = d.string(node, &path.child("name"));
            if let Some(name) = &name {
                if let Err(why) = check_name(name) {
                    d.error(node, &path.child("name"), why);
                }
            }
            name
        }
        None => {
            d.problem(
                Problem::at(root.span, "name", "the stack has no `name`")
                    .hint("add `name: my-stack` at the top"),
            );
            None
        }
    };

    let mut services = IndexMap::new();
    if let Some(node) = top.get("services") {
        let p = path.child("services");
        for (key, value) in d.named(node, &p) {
            if let Some(service) = decode_service(d, value, &p.child(&key.name)) {
                services.insert(key.name.clone(), service);
            }
        }
    }
    let mut datastores = IndexMap::new();
    if let Some(node) = top.get("datastores") {
        let p = path.child("datastores");
        for (key, value) in d.named(node, &p) {
            if services.contains_key(&key.name) {
                d.problem(Problem::at(
                    key.span,
                    p.child(&key.name).as_str(),
                    format!("`{}` is already the name of a service", key.name),
                ));
                continue;
            }
            if let Some(ds) = decode_datastore(d, value, &p.child(&key.name)) {
                datastores.insert(key.name.clone(), ds);
            }
        }
    }
    let mut tasks = IndexMap::new();
    if let Some(node) = top.get("tasks") {
        let p = path.child("tasks");
        for (key, value) in d.named(node, &p) {
            if let Some(task) = decode_task(d, value, &p.child(&key.name)) {
                tasks.insert(key.name.clone(), task);
            }
        }
    }
    let discovery = decode_discovery(d, top.get("discovery"), &path.child("discovery"));
    let proxy = decode_proxy(d, top.get("proxy"), &path.child("proxy"));
    // Without a name the stack is still decoded, so cross-checks can report too.
    Some(Stack {
        name: name.unwrap_or_default(),
        dir: d.dir.to_path_buf(),
        services,
        datastores,
        tasks,
        discovery: discovery?,
        proxy: proxy?,
    })
}

fn decode_container(d: &mut Decoder, f: &Fields, needs_image: bool) -> Option<Container> {
    let image = f.get("image").and_then(|n| d.image(n, &f.path("image")));
    let build = f
        .get("build")
        .and_then(|n| decode_build(d, n, &f.path("build")));
    let platform = f
        .get("platform")
        .and_then(|n| d.platform(n, &f.path("platform")));
    if needs_image && f.get("image").is_none() && f.get("build").is_none() {
        d.problem(
            Problem::at(f.span, f.path.as_str(), "needs an `image` or a `build`")
                .hint("add `image: name:tag` (the production tag) or `build: ./dir`"),
        );
    }
    let command = f
        .get("command")
        .and_then(|n| d.argv(n, &f.path("command"), true));
    let entrypoint = f
        .get("entrypoint")
        .and_then(|n| d.argv(n, &f.path("entrypoint"), true));

    // Env files first, then `env` on top, as Compose layers them.
    let mut env = BTreeMap::new();
    let mut secret_env = Vec::new();
    if let Some(node) = f.get("env_file") {
        let p = f.path("env_file");
        let items: Vec<(usize, &Node)> = match &node.value {
            Value::Seq(items) => items.iter().enumerate().collect(),
            _ => vec![(0, node)],
        };
        for (i, item) in items {
            let ip = if matches!(node.value, Value::Seq(_)) {
                p.index(i)
            } else {
                p.clone()
            };
            let Some(file) = d.path_value(item, &ip) else {
                continue;
            };
            match super::envfile::read(&file) {
                Ok(pairs) => {
                    for (k, v) in pairs {
                        secret_env.push(k.clone());
                        env.insert(k, v);
                    }
                }
                Err(err) => d.error(item, &ip, err.0),
            }
        }
    }
    if let Some(node) = f.get("env") {
        for (k, v) in d.string_map(node, &f.path("env")) {
            secret_env.retain(|s| *s != k);
            env.insert(k, v);
        }
    }
    secret_env.sort();
    secret_env.dedup();

    let port = f
        .get("port")
        .and_then(|n| d.port_number(n, &f.path("port")));
    let mut ports = Vec::new();
    if let Some(node) = f.get("ports") {
        let p = f.path("ports");
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(port) = decode_port(d, item, &p.index(i)) {
                        ports.push(port);
                    }
                }
            }
            _ => d.expected(node, &p, "a list of ports"),
        }
    }
    let replicas = match f.get("replicas") {
        Some(n) => d
            .number::<u32>(n, &f.path("replicas"), "a number of replicas")
            .unwrap_or(1),
        None => 1,
    };
    if replicas > 64 {
        d.error(
            f.get("replicas").unwrap_or(&Node {
                value: Value::Null,
                span: f.span,
            }),
            &f.path("replicas"),
            "more than 64 replicas on one machine is not supported",
        );
    }
    let depends_on = f
        .get("depends_on")
        .map(|n| d.string_list(n, &f.path("depends_on")))
        .unwrap_or_default();
    let health = f.get("health").and_then(|n| {
        decode_health(
            d,
            n,
            &f.path("health"),
            port.or(ports.first().map(|p| p.container_port)),
        )
    });
    let resources = f
        .get("resources")
        .and_then(|n| decode_resources(d, n, &f.path("resources")))
        .unwrap_or_default();
    let allow_host_access = f
        .get("allow_host_access")
        .and_then(|n| d.bool(n, &f.path("allow_host_access")))
        .unwrap_or(false);
    let mut volumes = Vec::new();
    if let Some(node) = f.get("volumes") {
        let p = f.path("volumes");
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(v) = decode_volume(d, item, &p.index(i), None) {
                        if let VolumeSource::Bind(source) = &v.source {
                            if !allow_host_access {
                                check_bind_source(d, source, item, &p.index(i));
                            }
                        }
                        volumes.push(v);
                    }
                }
            }
            _ => d.expected(node, &p, "a list of volumes"),
        }
    }
    let labels = f
        .get("labels")
        .map(|n| d.string_map(n, &f.path("labels")))
        .unwrap_or_default();
    if let Some(node) = f.get("labels") {
        for key in labels.keys().filter(|k| k.starts_with("dev.devstack.")) {
            d.error(
                node,
                &f.path("labels").child(key),
                "labels starting with `dev.devstack.` are devstack's own",
            );
        }
    }
    let restart = match f.get("restart") {
        Some(n) => {
            let p = f.path("restart");
            match d.string(n, &p).as_deref() {
                Some("no") => RestartPolicy::No,
                Some("on-failure") => RestartPolicy::OnFailure,
                Some("unless-stopped") => RestartPolicy::UnlessStopped,
                Some("always") => RestartPolicy::Always,
                Some(other) => {
                    d.expected(n, &p, "`no`, `on-failure`, `unless-stopped` or `always`");
                    let _ = other;
                    RestartPolicy::No
                }
                None => RestartPolicy::No,
            }
        }
        None => RestartPolicy::No,
    };
    let stop_grace = f
        .get("stop_grace")
        .and_then(|n| d.duration(n, &f.path("stop_grace")))
        .unwrap_or(Duration::from_secs(10));
    let init = f
        .get("init")
        .and_then(|n| d.bool(n, &f.path("init")))
        .unwrap_or(false);
    Some(Container {
        image,
        build,
        platform,
        command,
        entrypoint,
        env,
        secret_env,
        port,
        ports,
        replicas,
        depends_on,
        health,
        resources,
        volumes,
        labels,
        restart,
        stop_grace,
        init,
    })
}

/// Reports a path from the stack file that names nothing, at its value.
fn check_exists(d: &mut Decoder, path: &Path, what: &str, node: &Node, at: &FieldPath) {
    if !path.exists() {
        d.error(
            node,
            at,
            format!("{what} {} does not exist", path.display()),
        );
    }
}

/// Refuses a bind source that would hand the container the host (see
/// [`HostPaths`]), unless the unit says `allow_host_access: true`.
fn check_bind_source(d: &mut Decoder, source: &Path, node: &Node, path: &FieldPath) {
    if let Some(why) = d.host.refusal(source) {
        d.problem(
            Problem::at(
                node.span,
                path.as_str(),
                format!("bind mount of {why}: a container could take over the host through it"),
            )
            .hint("mount a directory of the project instead, or set `allow_host_access: true` on this unit if it must"),
        );
    }
}

fn decode_build(d: &mut Decoder, node: &Node, path: &FieldPath) -> Option<Build> {
    let (context_node, f) = match &node.value {
        Value::Scalar { .. } => (node, None),
        _ => {
            let f = d.fields(
                node,
                path,
                &["context", "dockerfile", "args", "target", "allow_outside"],
            )?;
            let Some(context) = f.get("context") else {
                d.problem(
                    Problem::at(node.span, path.as_str(), "`build` needs a `context`")
                        .hint("add `context: ./dir`"),
                );
                return None;
            };
            (context, Some(f))
        }
    };
    let context_path = if f.is_some() {
        path.child("context")
    } else {
        path.clone()
    };
    let context = d.path_value(context_node, &context_path)?;
    let allow_outside = f
        .as_ref()
        .and_then(|f| f.get("allow_outside").map(|n| (n, f.path("allow_outside"))))
        .and_then(|(n, p)| d.bool(n, &p))
        .unwrap_or(false);
    let dockerfile = f
        .as_ref()
        .and_then(|f| f.get("dockerfile").map(|n| (n, f.path("dockerfile"))))
        .and_then(|(n, p)| d.string(n, &p))
        .unwrap_or_else(|| "Dockerfile".to_string());
    let args = f
        .as_ref()
        .and_then(|f| f.get("args").map(|n| (n, f.path("args"))))
        .map(|(n, p)| d.string_map(n, &p))
        .unwrap_or_default();
    let target = f
        .as_ref()
        .and_then(|f| f.get("target").map(|n| (n, f.path("target"))))
        .and_then(|(n, p)| d.string(n, &p));

    match std::fs::metadata(&context) {
        Ok(meta) if meta.is_dir() => {
            // Through `..` or a symlink, a context can reach the whole disk and be sent to the engine.
            let real_dir = std::fs::canonicalize(d.dir).unwrap_or_else(|_| d.dir.to_path_buf());
            let real = std::fs::canonicalize(&context).unwrap_or_else(|_| context.clone());
            if !allow_outside && !real.starts_with(&real_dir) {
                d.problem(
                    Problem::at(context_node.span, context_path.as_str(), format!("build context {} is outside the stack's directory {}", real.display(), real_dir.display()))
                        .hint("move the context under the stack's directory, or set `allow_outside: true` in `build`"),
                );
            } else if !context.join(&dockerfile).is_file() {
                let at = f
                    .as_ref()
                    .and_then(|f| f.get("dockerfile"))
                    .unwrap_or(context_node);
                d.error(
                    at,
                    &path.child("dockerfile"),
                    format!("no Dockerfile at {}", context.join(&dockerfile).display()),
                );
            }
        }
        Ok(_) => d.error(
            context_node,
            &context_path,
            format!("build context {} is not a directory", context.display()),
        ),
        Err(_) => d.error(
            context_node,
            &context_path,
            format!("build context {} does not exist", context.display()),
        ),
    }
    Some(Build {
        context,
        dockerfile,
        args,
        target,
    })
}

/// `"8080:80"`, `"127.0.0.1:8080:80/udp"`, `"80"`, `3000`, or the long form.
fn decode_port(d: &mut Decoder, node: &Node, path: &FieldPath) -> Option<Port> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Value::Map(_) = node.value {
        let f = d.fields(node, path, &["target", "published", "host_ip", "protocol"])?;
        let Some(target) = f.get("target") else {
            d.problem(Problem::at(
                node.span,
                path.as_str(),
                "a port needs a `target` (the container port)",
            ));
            return None;
        };
        let container_port = d.port_number(target, &f.path("target"))?;
        let host_port = match f.get("published") {
            Some(n) => {
                let p: u32 = d.number(n, &f.path("published"), "a port number")?;
                if p > 65535 {
                    d.error(
                        n,
                        &f.path("published"),
                        format!("port {p} is out of range (0-65535)"),
                    );
                    return None;
                }
                (p != 0).then_some(p as u16)
            }
            None => None,
        };
        let host_ip = match f.get("host_ip") {
            Some(n) => {
                let text = d.string(n, &f.path("host_ip"))?;
                match text.parse() {
                    Ok(ip) => ip,
                    Err(_) => {
                        d.error(
                            n,
                            &f.path("host_ip"),
                            format!("`{}` is not an IP address", truncate(&text)),
                        );
                        return None;
                    }
                }
            }
            None => loopback,
        };
        let protocol = match f.get("protocol") {
            Some(n) => match d.string(n, &f.path("protocol"))?.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => {
                    d.expected(n, &f.path("protocol"), "`tcp` or `udp`");
                    return None;
                }
            },
            None => Protocol::Tcp,
        };
        return Some(Port {
            host_ip,
            host_port,
            container_port,
            protocol,
        });
    }
    let text = d.string(node, path)?;
    match parse_port_text(&text) {
        Ok(mut port) => {
            if port.host_ip.is_unspecified() && !text.contains("0.0.0.0") && !text.contains("::") {
                port.host_ip = loopback;
            }
            Some(port)
        }
        Err(why) => {
            d.problems.push(
                Problem::at(node.span, path.as_str(), format!("bad port `{}`: {why}", truncate(&text)))
                    .hint("write `CONTAINER`, `HOST:CONTAINER` or `IP:HOST:CONTAINER`, optionally with `/udp`"),
            );
            None
        }
    }
}

fn parse_port_text(text: &str) -> Result<Port, String> {
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((r, "tcp")) => (r, Protocol::Tcp),
        Some((r, "udp")) => (r, Protocol::Udp),
        Some((_, other)) => return Err(format!("unknown protocol `{other}`")),
        None => (text, Protocol::Tcp),
    };
    // An IPv6 host address is written in brackets: `[::1]:8080:80`.
    let (ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, rest) = after
            .split_once("]:")
            .ok_or("an unclosed `[` in the address")?;
        (Some(ip), rest)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() == 3 {
            (Some(parts[0]), &rest[parts[0].len() + 1..])
        } else {
            (None, rest)
        }
    };
    let host_ip: IpAddr = match ip {
        Some(ip) => ip
            .parse()
            .map_err(|_| format!("`{ip}` is not an IP address"))?,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let number = |s: &str, allow_zero: bool| -> Result<u16, String> {
        if s.contains('-') {
            return Err("port ranges are not supported; list each port".into());
        }
        match s.parse::<u32>() {
            Ok(0) if allow_zero => Ok(0),
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is out of range (1-65535)")),
            Err(_) => Err(format!("`{s}` is not a port number")),
        }
    };
    let (host_port, container_port) = match rest.split_once(':') {
        Some((host, container)) => {
            let host = if host.is_empty() {
                0
            } else {
                number(host, true)?
            };
            (host, number(container, false)?)
        }
        None => (0, number(rest, false)?),
    };
    Ok(Port {
        host_ip,
        host_port: (host_port != 0).then_some(host_port),
        container_port,
        protocol,
    })
}

fn decode_health(
    d: &mut Decoder,
    node: &Node,
    path: &FieldPath,
    default_port: Option<u16>,
) -> Option<Health> {
    let f = d.fields(
        node,
        path,
        &[
            "http",
            "tcp",
            "command",
            "port",
            "interval",
            "timeout",
            "retries",
            "start_period",
        ],
    )?;
    let port = f
        .get("port")
        .and_then(|n| d.port_number(n, &f.path("port")))
        .or(default_port);
    let kinds: Vec<&str> = ["http", "tcp", "command"]
        .into_iter()
        .filter(|k| f.get(k).is_some())
        .collect();
    if kinds.len() != 1 {
        let message = if kinds.is_empty() {
            "a health check needs one of `http`, `tcp` or `command`".to_string()
        } else {
            format!(
                "a health check takes one of `http`, `tcp` or `command`, not {}",
                kinds.join(" and ")
            )
        };
        d.problem(Problem::at(node.span, path.as_str(), message));
        return None;
    }
    let probe = decode_probe(d, &f, port);
    let interval = f
        .get("interval")
        .and_then(|n| d.duration(n, &f.path("interval")))
        .unwrap_or(Duration::from_secs(5));
    let timeout = f
        .get("timeout")
        .and_then(|n| d.duration(n, &f.path("timeout")))
        .unwrap_or(Duration::from_secs(2));
    let retries = f
        .get("retries")
        .and_then(|n| d.number(n, &f.path("retries"), "a number of retries"))
        .unwrap_or(3);
    let start_period = f
        .get("start_period")
        .and_then(|n| d.duration(n, &f.path("start_period")))
        .unwrap_or(Duration::ZERO);
    for (key, value) in [("interval", interval), ("timeout", timeout)] {
        if value.is_zero() {
            if let Some(n) = f.get(key) {
                d.error(n, &f.path(key), format!("`{key}` must be more than zero"));
            }
        }
    }
    Some(Health {
        probe: probe?,
        interval,
        timeout,
        retries,
        start_period,
    })
}

/// The one probe of a health check. Kept apart so that a bad probe does not
/// hide problems in the timings.
fn decode_probe(d: &mut Decoder, f: &Fields, port: Option<u16>) -> Option<Probe> {
    let need_port = |d: &mut Decoder, n: &Node, p: &FieldPath| -> Option<u16> {
        if port.is_none() {
            d.problems.push(
                Problem::at(n.span, p.as_str(), "no port to check")
                    .hint("set `port` here or on the service"),
            );
        }
        port
    };
    if let Some(n) = f.get("http") {
        let p = f.path("http");
        let text = d.string(n, &p)?;
        if !text.starts_with('/') {
            d.problems.push(Problem::at(
                n.span,
                p.as_str(),
                format!(
                    "an http check takes a path starting with `/`, found `{}`",
                    truncate(&text)
                ),
            ));
            return None;
        }
        Some(Probe::Http {
            port: need_port(d, n, &p)?,
            path: text,
        })
    } else if let Some(n) = f.get("tcp") {
        let p = f.path("tcp");
        match &n.value {
            Value::Scalar { text, .. } if text == "true" => Some(Probe::Tcp {
                port: need_port(d, n, &p)?,
            }),
            _ => Some(Probe::Tcp {
                port: d.port_number(n, &p)?,
            }),
        }
    } else {
        let n = f.get("command")?;
        let p = f.path("command");
        // A string runs through the shell, as Docker's CMD-SHELL does.
        let argv = match &n.value {
            Value::Scalar { text, .. } => vec!["/bin/sh".into(), "-c".into(), text.clone()],
            _ => d.argv(n, &p, false)?,
        };
        if argv.is_empty() {
            d.error(n, &p, "an empty health command");
            return None;
        }
        Some(Probe::Command { argv })
    }
}

fn decode_resources(d: &mut Decoder, node: &Node, path: &FieldPath) -> Option<Resources> {
    let f = d.fields(node, path, &["memory", "cpus", "pids", "disk"])?;
    let cpus = f.get("cpus").and_then(|n| {
        let c: f64 = d.number(n, &f.path("cpus"), "a number of CPUs such as `0.5`")?;
        if !(c > 0.0 && c <= 1024.0) {
            d.error(n, &f.path("cpus"), "`cpus` must be more than 0");
            return None;
        }
        Some(c)
    });
    let pids = f.get("pids").and_then(|n| {
        let p: i64 = d.number(n, &f.path("pids"), "a number of processes")?;
        if p <= 0 {
            d.error(n, &f.path("pids"), "`pids` must be more than 0");
            return None;
        }
        Some(p)
    });
    Some(Resources {
        memory: f.get("memory").and_then(|n| d.size(n, &f.path("memory"))),
        cpus,
        pids,
        disk: f.get("disk").and_then(|n| d.size(n, &f.path("disk"))),
    })
}

/// `name:/path[:ro]`, `./dir:/path`, or the long form. `default_target` is a
/// datastore's data directory, used when only a name is given.
fn decode_volume(
    d: &mut Decoder,
    node: &Node,
    path: &FieldPath,
    default_target: Option<&str>,
) -> Option<Volume> {
    let (source, target, read_only) = if let Value::Map(_) = node.value {
        let f = d.fields(node, path, &["source", "target", "read_only"])?;
        let source = f.get("source").and_then(|n| d.string(n, &f.path("source")));
        let target = f.get("target").and_then(|n| d.string(n, &f.path("target")));
        let read_only = f
            .get("read_only")
            .and_then(|n| d.bool(n, &f.path("read_only")))
            .unwrap_or(false);
        let (Some(source), Some(target)) = (source, target) else {
            d.problem(Problem::at(
                node.span,
                path.as_str(),
                "a volume needs a `source` and a `target`",
            ));
            return None;
        };
        (source, target, read_only)
    } else {
        let text = d.string(node, path)?;
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            [source] if default_target.is_some() => (
                source.to_string(),
                default_target.unwrap_or_default().to_string(),
                false,
            ),
            [source, target] => (source.to_string(), target.to_string(), false),
            [source, target, mode] if *mode == "ro" || *mode == "rw" => {
                (source.to_string(), target.to_string(), *mode == "ro")
            }
            _ => {
                d.problems.push(
                    Problem::at(
                        node.span,
                        path.as_str(),
                        format!("bad volume `{}`", truncate(&text)),
                    )
                    .hint("write `NAME:/path`, `./dir:/path` or add `:ro`"),
                );
                return None;
            }
        }
    };
    if !target.starts_with('/') {
        d.error(
            node,
            path,
            format!(
                "the volume target `{}` must be an absolute path in the container",
                truncate(&target)
            ),
        );
        return None;
    }
    let source = if source.starts_with('.') || source.starts_with('/') || source.starts_with('~') {
        VolumeSource::Bind(resolve(d.dir, &source))
    } else {
        let ok = source.starts_with(|c: char| c.is_ascii_alphanumeric())
            && source
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            d.error(node, path, format!("`{}` is not a volume name (letters, digits, `_`, `.`, `-`) nor a path (start it with `./` or `/`)", truncate(&source)));
            return None;
        }
        VolumeSource::Named(source)
    };
    Some(Volume {
        source,
        target,
        read_only,
    })
}

fn decode_service(d: &mut Decoder, node: &Node, path: &FieldPath) -> Option<Service> {
    let allowed: Vec<&str> = CONTAINER.iter().chain(SERVICE_ONLY).copied().collect();
    let f = d.fields(node, path, &allowed)?;
    let container = decode_container(d, &f, true)?;
    let default_port = container
        .port
        .or(container.ports.first().map(|p| p.container_port));
    let mut routes = Vec::new();
    if let Some(n) = f.get("routes") {
        let p = f.path("routes");
        match &n.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(route) = decode_route(d, item, &p.index(i), default_port) {
                        routes.push(route);
                    }
                }
            }
            _ => d.expected(n, &p, "a list of routes"),
        }
    }
    let watch = f
        .get("watch")
        .and_then(|n| decode_watch(d, n, &f.path("watch"), container.build.as_ref()));
    Some(Service {
        container,
        routes,
        watch,
    })
}

/// `host`, `host/path`, `/path`, or `{host, path, strip_prefix, port}`.
fn decode_route(
    d: &mut Decoder,
    node: &Node,
    path: &FieldPath,
    default_port: Option<u16>,
) -> Option<Route> {
    let (host, route_path, strip_prefix, port) = if let Value::Map(_) = node.value {
        let f = d.fields(node, path, &["host", "path", "strip_prefix", "port"])?;
        (
            f.get("host").and_then(|n| d.string(n, &f.path("host"))),
            f.get("path").and_then(|n| d.string(n, &f.path("path"))),
            f.get("strip_prefix")
                .and_then(|n| d.bool(n, &f.path("strip_prefix")))
                .unwrap_or(false),
            f.get("port")
                .and_then(|n| d.port_number(n, &f.path("port"))),
        )
    } else {
        let text = d.string(node, path)?;
        match text.find('/') {
            Some(0) => (None, Some(text), false, None),
            Some(i) => (
                Some(text[..i].to_string()),
                Some(text[i..].to_string()),
                false,
                None,
            ),
            None => (Some(text), None, false, None),
        }
    };
    if host.is_none() && route_path.is_none() {
        d.problem(Problem::at(
            node.span,
            path.as_str(),
            "a route needs a `host`, a `path`, or both",
        ));
        return None;
    }
    if let Some(h) = &host {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
            });
        if !ok {
            d.error(node, path, format!("`{}` is not a host name", truncate(h)));
            return None;
        }
        // The proxy answers `<service>.internal` for every service; a route
        // with such a host would take another service's name over (or a
        // future one's), so the whole `.internal` domain is devstack's.
        let lower = h.to_ascii_lowercase();
        if lower == "internal" || lower.ends_with(".internal") {
            d.problem(
                Problem::at(
                    node.span,
                    path.as_str(),
                    format!(
                        "the route host `{}` is in `.internal`, where devstack names services",
                        truncate(h)
                    ),
                )
                .hint("every service already answers as `<service>.internal` through the proxy; route another host, such as `name.localhost`"),
            );
            return None;
        }
    }
    if let Some(p) = &route_path {
        if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace()) {
            d.error(
                node,
                path,
                format!(
                    "the route path `{}` must start with `/` and hold no spaces",
                    truncate(p)
                ),
            );
            return None;
        }
    }
    let Some(port) = port.or(default_port) else {
        d.problems.push(
            Problem::at(
                node.span,
                path.as_str(),
                "the route has no port to send traffic to",
            )
            .hint("set the service's `port` (the port it listens on), or `port` in the route"),
        );
        return None;
    };
    Some(Route {
        host: host.map(|h| h.to_ascii_lowercase()),
        path: route_path,
        strip_prefix,
        port,
    })
}

fn decode_watch(
    d: &mut Decoder,
    node: &Node,
    path: &FieldPath,
    build: Option<&Build>,
) -> Option<Watch> {
    let f = d.fields(
        node,
        path,
        &["paths", "ignore", "action", "target", "rebuild_on", "then"],
    )?;
    let action = match f.get("action") {
        Some(n) => match d.string(n, &f.path("action"))?.as_str() {
            "rebuild" => WatchAction::Rebuild,
            "sync" => WatchAction::Sync,
            "restart" => WatchAction::Restart,
            _ => {
                d.expected(n, &f.path("action"), "`rebuild`, `sync` or `restart`");
                return None;
            }
        },
        None if build.is_some() => WatchAction::Rebuild,
        None => WatchAction::Restart,
    };
    if action == WatchAction::Rebuild && build.is_none() {
        let at = f.get("action").unwrap_or(node);
        d.problems.push(
            Problem::at(
                at.span,
                f.path("action").as_str(),
                "`rebuild` needs the service to have a `build`",
            )
            .hint("add a `build`, or use `action: restart`"),
        );
    }
    let mut paths = Vec::new();
    if let Some(n) = f.get("paths") {
        let p = f.path("paths");
        match &n.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(path) = d.path_value(item, &p.index(i)) {
                        check_exists(d, &path, "watch path", item, &p.index(i));
                        paths.push(path);
                    }
                }
            }
            _ => {
                if let Some(path) = d.path_value(n, &p) {
                    check_exists(d, &path, "watch path", n, &p);
                    paths.push(path);
                }
            }
        }
    } else if let Some(build) = build {
        paths.push(build.context.clone());
    } else {
        d.problem(Problem::at(
            node.span,
            path.as_str(),
            "`watch` needs `paths` when the service has no `build`",
        ));
    }
    let target = f.get("target").and_then(|n| d.string(n, &f.path("target")));
    if action == WatchAction::Sync && target.is_none() {
        d.problems.push(
            Problem::at(
                node.span,
                path.as_str(),
                "`sync` needs a `target`: where the watched files live in the container",
            )
            .hint("add `target: /app`"),
        );
    }
    Some(Watch {
        paths,
        ignore: f
            .get("ignore")
            .map(|n| d.string_list(n, &f.path("ignore")))
            .unwrap_or_default(),
        action,
        target,
        rebuild_on: f
            .get("rebuild_on")
            .map(|n| d.string_list(n, &f.path("rebuild_on")))
            .unwrap_or_default(),
        then: f.get("then").and_then(|n| d.argv(n, &f.path("then"), true)),
    })
}

fn decode_datastore(d: &mut Decoder, node: &Node, path: &FieldPath) -> Option<Datastore> {
    let allowed: Vec<&str> = CONTAINER.iter().chain(DATASTORE_ONLY).copied().collect();
    let f = d.fields(node, path, &allowed)?;
    let kind = match f.get("kind") {
        Some(n) => {
            let text = d.string(n, &f.path("kind"))?;
            match DatastoreKind::ALL.iter().find(|(name, _)| *name == text) {
                Some((_, kind)) => *kind,
                None => {
                    let names: Vec<&str> = DatastoreKind::ALL.iter().map(|(n, _)| *n).collect();
                    let mut problem = Problem::at(
                        n.span,
                        f.path("kind").as_str(),
                        format!("unknown datastore kind `{}`", truncate(&text)),
                    );
                    problem = match closest(&text, names.iter().copied()) {
                        Some(near) => problem.hint(format!("did you mean `{near}`?")),
                        None => problem.hint(format!("expected one of: {}", names.join(", "))),
                    };
                    d.problem(problem);
                    return None;
                }
            }
        }
        None => {
            d.problem(
                Problem::at(node.span, path.as_str(), "a datastore needs a `kind`")
                    .hint("postgres, mariadb, mysql, redis, mongodb, elasticsearch, kafka, etcd, memcached or generic"),
            );
            return None;
        }
    };
    let mut container = decode_container(d, &f, true)?;
    let data_volume = match f.get("volume") {
        Some(n) => {
            let p = f.path("volume");
            let volume = decode_volume(d, n, &p, kind.data_dir());
            if volume.is_none()
                && kind.data_dir().is_none()
                && !matches!(&n.value, Value::Scalar { text, .. } if text.contains(':'))
            {
                d.problem(Problem::at(
                    n.span,
                    p.as_str(),
                    format!(
                        "a `{}` datastore's volume needs a target: `NAME:/path`",
                        kind.name()
                    ),
                ));
            }
            match volume {
                Some(v) => match &v.source {
                    VolumeSource::Named(name) => {
                        let name = name.clone();
                        container.volumes.push(v);
                        Some(name)
                    }
                    VolumeSource::Bind(_) => {
                        d.error(
                            n,
                            &p,
                            "a datastore's data volume must be a named volume, not a host path",
                        );
                        None
                    }
                },
                None => None,
            }
        }
        None => None,
    };
    let seed = f.get("seed").and_then(|n| {
        let p = f.path("seed");
        let seed = d.path_value(n, &p)?;
        check_exists(d, &seed, "seed data", n, &p);
        if kind == DatastoreKind::Memcached {
            d.error(n, &p, "a memcached datastore has no seed format");
        } else if kind.data_dir().is_none() && data_volume.is_none() {
            d.problem(
                Problem::at(
                    n.span,
                    p.as_str(),
                    "a generic datastore's seed is copied into its data volume, and it has none",
                )
                .hint("give it a `volume: NAME:/path`"),
            );
        }
        Some(seed)
    });
    Some(Datastore {
        container,
        kind,
        data_volume,
        seed,
    })
}

fn decode_task(d: &mut Decoder, node: &Node, path: &FieldPath) -> Option<Task> {
    let f = d.fields(
        node,
        path,
        &["service", "image", "command", "env", "before", "test"],
    )?;
    let service = f
        .get("service")
        .and_then(|n| d.string(n, &f.path("service")));
    let image = f.get("image").and_then(|n| d.image(n, &f.path("image")));
    if f.get("service").is_none() && f.get("image").is_none() {
        d.problem(Problem::at(
            node.span,
            path.as_str(),
            "a task needs a `service` (whose image and env it uses) or an `image`",
        ));
    }
    Some(Task {
        service,
        image,
        command: f
            .get("command")
            .and_then(|n| d.argv(n, &f.path("command"), true)),
        env: f
            .get("env")
            .map(|n| d.string_map(n, &f.path("env")))
            .unwrap_or_default(),
        before: f
            .get("before")
            .map(|n| d.string_list(n, &f.path("before")))
            .unwrap_or_default(),
        test: f
            .get("test")
            .and_then(|n| d.bool(n, &f.path("test")))
            .unwrap_or(false),
    })
}

fn decode_discovery(d: &mut Decoder, node: Option<&Node>, path: &FieldPath) -> Option<Discovery> {
    let mut discovery = Discovery {
        etcd: Etcd::Embedded,
        prefix: None,
        ttl: Duration::from_secs(30),
        key: None,
        value: None,
    };
    let Some(node) = node else {
        return Some(discovery);
    };
    let f = d.fields(node, path, &["etcd", "prefix", "ttl", "key", "value"])?;
    if let Some(n) = f.get("etcd") {
        let p = f.path("etcd");
        match &n.value {
            Value::Scalar { text, .. } if text == "embedded" => {}
            Value::Map(_) => {
                let ef = d.fields(n, &p, &["endpoints"])?;
                let endpoints = ef
                    .get("endpoints")
                    .map(|e| d.string_list(e, &ef.path("endpoints")))
                    .unwrap_or_default();
                if endpoints.is_empty() {
                    d.problem(
                        Problem::at(n.span, p.as_str(), "a real etcd cluster needs `endpoints`")
                            .hint("endpoints: [http://10.0.0.5:2379]"),
                    );
                }
                for (i, e) in endpoints.iter().enumerate() {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        let at = ef.get("endpoints").unwrap_or(n);
                        d.error(
                            at,
                            &ef.path("endpoints").index(i),
                            format!(
                                "endpoint `{}` must start with http:// or https://",
                                truncate(e)
                            ),
                        );
                    }
                }
                discovery.etcd = Etcd::External { endpoints };
            }
            _ => d.expected(n, &p, "`embedded` or `{endpoints: [...]}`"),
        }
    }
    if let Some(n) = f.get("prefix") {
        if let Some(prefix) = d.string(n, &f.path("prefix")) {
            if !prefix.starts_with('/') {
                d.error(n, &f.path("prefix"), "the key prefix must start with `/`");
            }
            discovery.prefix = Some(prefix.trim_end_matches('/').to_string());
        }
    }
    if let Some(n) = f.get("ttl") {
        if let Some(ttl) = d.duration(n, &f.path("ttl")) {
            if ttl < Duration::from_secs(1) {
                d.error(
                    n,
                    &f.path("ttl"),
                    "the TTL must be at least 1s (etcd leases count whole seconds)",
                );
            }
            discovery.ttl = ttl;
        }
    }
    discovery.key = f.get("key").and_then(|n| d.string(n, &f.path("key")));
    discovery.value = f.get("value").and_then(|n| d.string(n, &f.path("value")));
    Some(discovery)
}

fn decode_proxy(d: &mut Decoder, node: Option<&Node>, path: &FieldPath) -> Option<Proxy> {
    let mut proxy = Proxy {
        kind: ProxyKind::Haproxy,
        image: None,
        platform: None,
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
        listen_given: false,
        template: None,
        confd: None,
    };
    let Some(node) = node else {
        return Some(proxy);
    };
    let f = d.fields(
        node,
        path,
        &["kind", "image", "platform", "listen", "template", "confd"],
    )?;
    if let Some(n) = f.get("kind") {
        if let Some(kind) = d.string(n, &f.path("kind")) {
            match kind.as_str() {
                "haproxy" => proxy.kind = ProxyKind::Haproxy,
                "nginx" => proxy.kind = ProxyKind::Nginx,
                _ => d.expected(n, &f.path("kind"), "`haproxy` or `nginx`"),
            }
        }
    }
    proxy.image = f.get("image").and_then(|n| d.image(n, &f.path("image")));
    proxy.platform = f
        .get("platform")
        .and_then(|n| d.platform(n, &f.path("platform")));
    if let Some(n) = f.get("listen") {
        let p = f.path("listen");
        if let Some(text) = d.string(n, &p) {
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                text.parse::<u16>()
                    .ok()
                    .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            });
            match parsed {
                Some(addr) => {
                    proxy.listen = addr;
                    proxy.listen_given = true;
                }
                None => d.problems.push(
                    Problem::at(
                        n.span,
                        p.as_str(),
                        format!("`{}` is not an address to listen on", truncate(&text)),
                    )
                    .hint("write `127.0.0.1:8080` or a port such as `8080`"),
                ),
            }
        }
    }
    if let Some(n) = f.get("template") {
        let p = f.path("template");
        if let Some(template) = d.path_value(n, &p) {
            if !template.is_file() {
                d.error(
                    n,
                    &p,
                    format!("template {} does not exist", template.display()),
                );
            }
            proxy.template = Some(template);
        }
    }
    if let Some(n) = f.get("confd") {
        let p = f.path("confd");
        if let Some(dir) = d.path_value(n, &p) {
            if !dir.is_dir() {
                d.error(
                    n,
                    &p,
                    format!("confd directory {} does not exist", dir.display()),
                );
            } else if let Err(problems) = super::confd::read(&dir, proxy.kind) {
                for problem in problems {
                    d.error(n, &p, problem);
                }
            }
            if proxy.template.is_some() {
                d.error(
                    n,
                    &p,
                    "`confd` and `template` both render the proxy configuration: give one",
                );
            }
            proxy.confd = Some(dir);
        }
    }
    Some(proxy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        let p = parse_port_text("8080:80").unwrap();
        assert_eq!((p.host_port, p.container_port), (Some(8080), 80));
        let p = parse_port_text("127.0.0.1:9000:9000/udp").unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let p = parse_port_text("3000").unwrap();
        assert_eq!((p.host_port, p.container_port), (None, 3000));
        let p = parse_port_text("0:80").unwrap();
        assert_eq!(p.host_port, None);
        let p = parse_port_text("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, "::1".parse::<IpAddr>().unwrap());
        assert!(parse_port_text("99999:80").is_err());
        assert!(parse_port_text("80:0").is_err());
        assert!(parse_port_text("8000-8010:8000-8010")
            .unwrap_err()
            .contains("ranges"));
        assert!(parse_port_text("80/sctp").is_err());
        assert!(parse_port_text("abc").is_err());
    }

    #[test]
    fn resolve_folds_dots() {
        assert_eq!(
            resolve(Path::new("/s/stack"), "./api/../web"),
            PathBuf::from("/s/stack/web")
        );
        assert_eq!(
            resolve(Path::new("/s/stack"), "/abs"),
            PathBuf::from("/abs")
        );
        assert_eq!(
            resolve(Path::new("/s/stack"), "../x"),
            PathBuf::from("/s/x")
        );
    }
}
