//! Compose files (the specification as `docker compose config` prints it,
//! and the shorter forms people write) translated into devstack's tree.
//!
//! Routes come from labels, since Compose has no routing of its own:
//! `devstack.route: "HOST[/PATH][, ...]"` (a path alone, `/api`, routes on
//! every host), `devstack.route.strip_prefix: "true"` and
//! `devstack.route.port: "8080"` for all of a service's routes.
//! A service that others wait for with `service_completed_successfully` is
//! a one-off: it becomes a task that runs `before` them.

use std::collections::BTreeMap;

use super::report::Note;
use super::tree::{
    child, datastore_kind, entries, index, items, resource_limits, scalar, text, texts, words,
    MapBuilder,
};
use super::{Dirs, Translated};
use crate::spec::model::DatastoreKind;
use crate::spec::yaml::{Node, Span, Value};

/// The label that carries a service's routes.
pub const ROUTE_LABEL: &str = "devstack.route";

struct Cx<'a> {
    dirs: Dirs<'a>,
    notes: Vec<Note>,
    inferred: Vec<(String, String)>,
}

impl Cx<'_> {
    fn ignored(&mut self, node: &Node, path: &str, why: &str) {
        self.notes.push(Note::ignored(node.span, path, why));
    }
    fn unsupported(&mut self, node: &Node, path: &str, why: &str) {
        self.notes.push(Note::unsupported(node.span, path, why));
    }
    fn inferred(&mut self, path: String, why: impl Into<String>) {
        self.inferred.push((path, why.into()));
    }
}

pub fn translate(doc: &Node, dirs: Dirs) -> Translated {
    let mut cx = Cx {
        dirs,
        notes: Vec::new(),
        inferred: Vec::new(),
    };
    let mut out = MapBuilder::new(doc.span);
    for (key, value) in entries(doc) {
        let path = key.name.as_str();
        match path {
            "name" => out.set("name", value.clone()),
            "services" => {}
            "volumes" => top_volumes(&mut cx, value),
            "networks" => {
                for (name, net) in entries(value) {
                    let p = child("networks", &name.name);
                    if name.name != "default" || !entries(net).is_empty() {
                        cx.ignored(
                            net,
                            &p,
                            "devstack puts a stack's containers on one network of its own",
                        );
                    }
                }
            }
            "version" => cx.ignored(value, path, "obsolete in the Compose specification"),
            "configs" | "secrets" => cx.unsupported(
                value,
                path,
                "devstack has no configs or secrets; mount files with `volumes` in an overlay",
            ),
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(value, path, "not a Compose top-level field devstack knows"),
        }
    }
    if let Some(services) = doc.get("services") {
        translate_services(&mut cx, services, &mut out);
    }
    Translated::new(out.build(), cx.notes, cx.inferred)
}

fn top_volumes(cx: &mut Cx, volumes: &Node) {
    for (name, volume) in entries(volumes) {
        for (key, value) in entries(volume) {
            let p = child(&child("volumes", &name.name), &key.name);
            match key.name.as_str() {
                "name" => cx.ignored(value, &p, "devstack names volumes per project"),
                "labels" => cx.ignored(value, &p, "devstack labels its volumes itself"),
                _ => cx.unsupported(
                    value,
                    &p,
                    "devstack creates plain local volumes (no drivers, options or external volumes)",
                ),
            }
        }
    }
}

/// A service's `depends_on` as (name, condition, node) triples.
fn dependencies(node: &Node) -> Vec<(String, String, &Node)> {
    match &node.value {
        Value::Seq(list) => list
            .iter()
            .filter_map(|n| scalar(n).map(|s| (s.to_string(), "service_started".into(), n)))
            .collect(),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| {
                let condition = v
                    .get("condition")
                    .and_then(scalar)
                    .unwrap_or("service_started")
                    .to_string();
                (k.name.clone(), condition, v)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn translate_services(cx: &mut Cx, services: &Node, out: &mut MapBuilder) {
    // One-offs: what another service waits on to complete.
    let mut before: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, service) in entries(services) {
        if let Some(deps) = service.get("depends_on") {
            for (dep, condition, _) in dependencies(deps) {
                if condition == "service_completed_successfully" {
                    before.entry(dep).or_default().push(name.name.clone());
                }
            }
        }
    }
    let mut svc_out = MapBuilder::new(services.span);
    let mut ds_out = MapBuilder::new(services.span);
    let mut tasks_out = MapBuilder::new(services.span);
    let mut images: Vec<(String, String)> = Vec::new();
    for (name, service) in entries(services) {
        let path = child("services", &name.name);
        if let Some(profiles) = service.get("profiles") {
            cx.unsupported(
                profiles,
                &child(&path, "profiles"),
                "a service in a profile starts only when the profile is asked for; devstack has no profiles, so it is left out (add it in an overlay)",
            );
            continue;
        }
        if before.contains_key(&name.name) {
            continue;
        }
        let image = service.get("image").and_then(scalar);
        let kind = match (image, service.get("build")) {
            (Some(image), None) => datastore_kind(image),
            _ => None,
        };
        if let (Some(image), None) = (image, kind) {
            images.push((image.to_string(), name.name.clone()));
        }
        let unit = translate_unit(cx, service, &path, &name.name, kind);
        match kind {
            Some(kind) => {
                cx.inferred(
                    child(&child("datastores", &name.name), "kind"),
                    format!("a datastore: `{}` is a {kind} image", image.unwrap_or("")),
                );
                ds_out.set(&name.name, unit)
            }
            None => svc_out.set(&name.name, unit),
        }
    }
    for (name, service) in entries(services) {
        let Some(runs_before) = before.get(&name.name) else {
            continue;
        };
        let path = child("services", &name.name);
        let task = translate_task(
            cx,
            service,
            &path,
            &name.name,
            runs_before,
            services,
            &images,
        );
        tasks_out.set(&name.name, task);
    }
    if !svc_out.is_empty() {
        out.set("services", svc_out.build());
    }
    if !ds_out.is_empty() {
        out.set("datastores", ds_out.build());
    }
    if !tasks_out.is_empty() {
        out.set("tasks", tasks_out.build());
    }
}

/// `environment` as a map, in either of Compose's two forms.
fn environment(node: &Node) -> BTreeMap<String, Option<String>> {
    match &node.value {
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| (k.name.clone(), scalar(v).map(str::to_string)))
            .collect(),
        Value::Seq(list) => list
            .iter()
            .filter_map(scalar)
            .map(|s| match s.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (s.to_string(), None),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn env_node(cx: &mut Cx, node: &Node, path: &str) -> Node {
    let mut env = MapBuilder::new(node.span);
    let spans: Vec<Span> = match &node.value {
        Value::Map(map) => map.iter().map(|(_, v)| v.span).collect(),
        Value::Seq(list) => list.iter().map(|v| v.span).collect(),
        _ => Vec::new(),
    };
    for ((key, value), span) in environment(node).into_iter().zip(spans) {
        match value {
            Some(v) => env.set(&key, text(v, span)),
            None => cx.notes.push(Note::unsupported(
                span,
                child(path, &key),
                "a variable without a value takes the shell's; devstack does not pass the shell's environment: set it with `${VAR}`",
            )),
        }
    }
    env.build()
}

fn env_files(cx: &mut Cx, node: &Node, path: &str) -> Option<Node> {
    let list: Vec<&Node> = match &node.value {
        Value::Seq(list) => list.iter().collect(),
        _ => vec![node],
    };
    let mut files = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let file = match &item.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            Value::Map(_) => {
                if let Some(req) = item.get("required") {
                    if scalar(req) == Some("false") {
                        cx.unsupported(
                            req,
                            &child(&index(path, i), "required"),
                            "devstack reads every env file it is given; a missing one is an error",
                        );
                    }
                }
                item.get("path").and_then(scalar).map(str::to_string)
            }
            _ => None,
        };
        if let Some(file) = file {
            files.push(text(cx.dirs.rebase(&file), item.span));
        }
    }
    let span = node.span;
    (!files.is_empty()).then_some(Node {
        value: Value::Seq(files),
        span,
    })
}

fn translate_unit(cx: &mut Cx, service: &Node, path: &str, name: &str, kind: Option<&str>) -> Node {
    let mut unit = MapBuilder::new(service.span);
    let out_path = match kind {
        Some(_) => child("datastores", name),
        None => child("services", name),
    };
    if let Some(kind) = kind {
        unit.set("kind", text(kind, service.span));
    }
    let mut expose_port: Option<String> = None;
    let mut first_target: Option<(String, Span)> = None;
    let mut volumes: Vec<Node> = Vec::new();
    let mut resources = MapBuilder::new(service.span);
    let mut labels = MapBuilder::new(service.span);
    let mut route_label: Option<(String, Span)> = None;
    let mut strip: Option<(String, Span)> = None;
    let mut route_port: Option<(String, Span)> = None;
    let mut health: Option<&Node> = None;
    for (key, value) in entries(service) {
        let p = child(path, &key.name);
        match key.name.as_str() {
            "image" | "command" | "entrypoint" | "init" => unit.set(&key.name, value.clone()),
            "build" => unit.set("build", build(cx, value, &p)),
            "environment" => unit.set("env", env_node(cx, value, &p)),
            "env_file" => {
                if let Some(files) = env_files(cx, value, &p) {
                    unit.set("env_file", files);
                }
            }
            "expose" => {
                for (i, item) in items(value).iter().enumerate() {
                    let port = scalar(item).unwrap_or("").trim_end_matches("/tcp");
                    if i == 0 {
                        expose_port = Some(port.to_string());
                        unit.set("port", text(port, item.span));
                    } else {
                        cx.ignored(
                            item,
                            &index(&p, i),
                            "every port is reachable on the stack's network; the first exposed port is the service's `port`",
                        );
                    }
                }
            }
            "ports" => {
                let mut list = Vec::new();
                for (i, item) in items(value).iter().enumerate() {
                    if let Some(port) = port(cx, item, &index(&p, i)) {
                        if first_target.is_none() {
                            let target = match &port.value {
                                Value::Map(_) => {
                                    port.get("target").and_then(scalar).map(str::to_string)
                                }
                                Value::Scalar { text, .. } => text
                                    .rsplit(':')
                                    .next()
                                    .map(|t| t.split('/').next().unwrap_or(t).to_string()),
                                _ => None,
                            };
                            first_target = target.map(|t| (t, item.span));
                        }
                        list.push(port);
                    }
                }
                unit.set(
                    "ports",
                    Node {
                        value: Value::Seq(list),
                        span: value.span,
                    },
                );
            }
            "deploy" => deploy(cx, value, &p, &mut unit, &mut resources),
            "mem_limit" => resources.set("memory", size(value)),
            "cpus" => resources.set("cpus", value.clone()),
            "pids_limit" => resources.set("pids", value.clone()),
            "scale" => unit.set("replicas", value.clone()),
            "healthcheck" => health = Some(value),
            "depends_on" => {
                let mut deps = Vec::new();
                for (dep, condition, node) in dependencies(value) {
                    let dp = child(&p, &dep);
                    match condition.as_str() {
                        "service_completed_successfully" => continue,
                        "service_healthy" => {}
                        _ => cx.ignored(
                            node,
                            &dp,
                            "devstack waits until a dependency is healthy, not only started",
                        ),
                    }
                    for extra in ["required", "restart"] {
                        if let Some(n) = node.get(extra) {
                            if scalar(n) == Some("true") && extra == "restart" {
                                cx.ignored(
                                    n,
                                    &child(&dp, extra),
                                    "devstack does not restart dependants",
                                );
                            } else if scalar(n) == Some("false") && extra == "required" {
                                cx.unsupported(
                                    n,
                                    &child(&dp, extra),
                                    "devstack needs every dependency to exist",
                                );
                            }
                        }
                    }
                    deps.push(text(dep, node.span));
                }
                if !deps.is_empty() {
                    unit.set(
                        "depends_on",
                        Node {
                            value: Value::Seq(deps),
                            span: value.span,
                        },
                    );
                }
            }
            "volumes" => {
                for (i, item) in items(value).iter().enumerate() {
                    if let Some(v) = volume(cx, item, &index(&p, i)) {
                        volumes.push(v);
                    }
                }
            }
            "labels" => {
                for (k, v, span) in label_pairs(value) {
                    match k.as_str() {
                        ROUTE_LABEL => route_label = Some((v, span)),
                        "devstack.route.strip_prefix" => strip = Some((v, span)),
                        "devstack.route.port" => route_port = Some((v, span)),
                        _ => labels.set(&k, text(v, span)),
                    }
                }
            }
            "restart" => {
                let policy = scalar(value).unwrap_or("");
                match policy.split_once(':') {
                    Some((base, _)) => {
                        cx.ignored(value, &p, "devstack does not limit restart attempts");
                        unit.set("restart", text(base, value.span));
                    }
                    None => unit.set("restart", value.clone()),
                }
            }
            "stop_grace_period" => unit.set("stop_grace", value.clone()),
            "develop" => {
                if let Some(watch) = develop(cx, value, &p) {
                    unit.set("watch", watch);
                }
            }
            "networks" => networks(cx, value, &p, name),
            "container_name" | "hostname" => cx.ignored(
                value,
                &p,
                "devstack names containers per project and replica",
            ),
            "logging" | "pull_policy" | "stop_signal" | "labels_file" => {
                cx.ignored(value, &p, "devstack uses the engine's default")
            }
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(
                value,
                &p,
                "devstack has no equivalent of this Compose field",
            ),
        }
    }
    // The port the service listens on: `expose`, else the first published target.
    let port = match (expose_port, first_target) {
        (Some(p), _) => Some(p),
        (None, Some((target, span))) => {
            unit.set("port", text(target.clone(), span));
            cx.inferred(
                child(&out_path, "port"),
                "the first published port's container side",
            );
            Some(target)
        }
        (None, None) => None,
    };
    if let Some(h) = health {
        if let Some(node) = healthcheck(
            cx,
            h,
            &child(path, "healthcheck"),
            port.as_deref(),
            &out_path,
        ) {
            unit.set("health", node);
        }
    }
    if !resources.is_empty() {
        unit.set("resources", resources.build());
    }
    if !labels.is_empty() {
        unit.set("labels", labels.build());
    }
    if let Some(routes) = route_label {
        if kind.is_some() {
            cx.notes.push(Note::unsupported(
                routes.1,
                child(&child(path, "labels"), ROUTE_LABEL),
                "a datastore is not routed",
            ));
        } else {
            unit.set("routes", routes_from_label(&routes, strip, route_port));
        }
    }
    // Datastores: the volume on the kind's data directory is its data
    // volume; a host directory on the init-script directory is its seed.
    let data_dir = kind.and_then(|k| {
        DatastoreKind::ALL
            .iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, kind)| kind.data_dir())
    });
    let mut kept = Vec::new();
    for v in volumes {
        let target = v
            .get("target")
            .and_then(scalar)
            .unwrap_or("")
            .trim_end_matches('/');
        let source = v.get("source").and_then(scalar).unwrap_or("").to_string();
        let is_named = !source.is_empty()
            && !source.starts_with('.')
            && !source.starts_with('/')
            && !source.starts_with('~');
        if kind.is_some() && is_named && Some(target) == data_dir && unit.get("volume").is_none() {
            unit.set("volume", text(source, v.span));
            continue;
        }
        if kind.is_some()
            && !is_named
            && target == "/docker-entrypoint-initdb.d"
            && unit.get("seed").is_none()
        {
            unit.set("seed", text(source, v.span));
            cx.inferred(
                child(&out_path, "seed"),
                "the directory mounted on /docker-entrypoint-initdb.d",
            );
            continue;
        }
        kept.push(v);
    }
    if !kept.is_empty() {
        let span = kept[0].span;
        unit.set(
            "volumes",
            Node {
                value: Value::Seq(kept),
                span,
            },
        );
    }
    unit.build_unit()
}

fn build(cx: &mut Cx, node: &Node, path: &str) -> Node {
    if let Some(context) = scalar(node) {
        return text(cx.dirs.rebase(context), node.span);
    }
    let mut b = MapBuilder::new(node.span);
    for (key, value) in entries(node) {
        let p = child(path, &key.name);
        match key.name.as_str() {
            "context" => b.set(
                "context",
                text(cx.dirs.rebase(scalar(value).unwrap_or(".")), value.span),
            ),
            "dockerfile" | "target" => b.set(&key.name, value.clone()),
            "args" => {
                let args = env_node(cx, value, &p);
                b.set("args", args)
            }
            "cache_from" | "cache_to" | "labels" | "pull" | "no_cache" | "tags" => {
                cx.ignored(value, &p, "devstack builds with the engine's defaults")
            }
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(value, &p, "devstack's build has no equivalent"),
        }
    }
    b.build()
}

fn port(cx: &mut Cx, item: &Node, path: &str) -> Option<Node> {
    match &item.value {
        Value::Scalar { text: t, .. } => {
            if t.contains('-') {
                cx.unsupported(
                    item,
                    path,
                    "port ranges are not supported; publish each port",
                );
                return None;
            }
            Some(text(t.clone(), item.span))
        }
        Value::Map(map) => {
            let mut p = MapBuilder::new(item.span);
            for (key, value) in map {
                match key.name.as_str() {
                    "target" | "published" | "host_ip" | "protocol" => {
                        p.set(&key.name, value.clone())
                    }
                    "mode" | "name" | "app_protocol" => {}
                    _ => cx.unsupported(
                        value,
                        &child(path, &key.name),
                        "not a port field devstack knows",
                    ),
                }
            }
            Some(p.build())
        }
        _ => None,
    }
}

fn volume(cx: &mut Cx, item: &Node, path: &str) -> Option<Node> {
    let (kind, source, target, read_only) = match &item.value {
        Value::Scalar { text: t, .. } => {
            let parts: Vec<&str> = t.split(':').collect();
            match parts.as_slice() {
                [target] => ("volume", String::new(), target.to_string(), false),
                [source, target] => (
                    kind_of(source),
                    source.to_string(),
                    target.to_string(),
                    false,
                ),
                [source, target, mode] => (
                    kind_of(source),
                    source.to_string(),
                    target.to_string(),
                    mode.split(',').any(|m| m == "ro"),
                ),
                _ => {
                    cx.unsupported(item, path, "not a volume devstack can read");
                    return None;
                }
            }
        }
        Value::Map(_) => (
            match item.get("type").and_then(scalar) {
                Some("bind") => "bind",
                Some("tmpfs") => "tmpfs",
                Some("volume") | None => "volume",
                Some(_) => "other",
            },
            item.get("source")
                .and_then(scalar)
                .unwrap_or("")
                .to_string(),
            item.get("target")
                .and_then(scalar)
                .unwrap_or("")
                .to_string(),
            item.get("read_only").and_then(scalar) == Some("true"),
        ),
        _ => return None,
    };
    if kind == "tmpfs" || kind == "other" {
        cx.unsupported(
            item,
            path,
            "devstack mounts named volumes and host paths only",
        );
        return None;
    }
    if source.is_empty() {
        cx.unsupported(item, path, "an anonymous volume: give it a name to keep it");
        return None;
    }
    for (key, value) in entries(item) {
        if !matches!(
            key.name.as_str(),
            "type" | "source" | "target" | "read_only"
        ) {
            cx.ignored(
                value,
                &child(path, &key.name),
                "devstack mounts with the engine's defaults",
            );
        }
    }
    let source = if kind == "bind" && !source.starts_with('/') && !source.starts_with("~/") {
        let rebased = cx.dirs.rebase(&source);
        if rebased.starts_with('/') || rebased.starts_with("./") || rebased.starts_with("../") {
            rebased
        } else {
            format!("./{rebased}")
        }
    } else {
        source
    };
    let mut v = MapBuilder::new(item.span);
    v.set("source", text(source, item.span));
    v.set("target", text(target, item.span));
    if read_only {
        v.set("read_only", text("true", item.span));
    }
    Some(v.build())
}

fn kind_of(source: &str) -> &'static str {
    if source.starts_with('.') || source.starts_with('/') || source.starts_with('~') {
        "bind"
    } else {
        "volume"
    }
}

/// Compose sizes are binary (`384M` is 384 MiB), as devstack's are.
fn size(node: &Node) -> Node {
    text(scalar(node).unwrap_or("").to_ascii_lowercase(), node.span)
}

fn deploy(cx: &mut Cx, node: &Node, path: &str, unit: &mut MapBuilder, resources: &mut MapBuilder) {
    for (key, value) in entries(node) {
        let p = child(path, &key.name);
        match key.name.as_str() {
            "replicas" => unit.set("replicas", value.clone()),
            "mode" if scalar(value) == Some("global") => {
                cx.ignored(value, &p, "one machine: a global service runs one replica");
            }
            "mode" => {}
            "resources" => {
                let why = "devstack sets limits only; reservations place containers on a cluster";
                for (name, lv, lp) in resource_limits(value, &p, why, &mut cx.notes) {
                    match name {
                        "memory" => resources.set("memory", size(lv)),
                        "cpus" => resources.set("cpus", lv.clone()),
                        "pids" => resources.set("pids", lv.clone()),
                        _ => cx.unsupported(lv, &lp, "no such limit in devstack"),
                    }
                }
            }
            "placement" | "update_config" | "rollback_config" | "endpoint_mode" | "labels" => {
                cx.ignored(value, &p, "meaningful on a cluster only")
            }
            "restart_policy" => cx.ignored(value, &p, "devstack uses the service's `restart`"),
            _ => cx.unsupported(value, &p, "devstack has no equivalent of this deploy field"),
        }
    }
}

fn networks(cx: &mut Cx, node: &Node, path: &str, name: &str) {
    for (net, settings) in entries(node) {
        let p = child(path, &net.name);
        if net.name != "default" {
            cx.ignored(
                &Node {
                    value: Value::Null,
                    span: net.span,
                },
                &p,
                "devstack puts a stack's containers on one network of its own",
            );
        }
        for (key, value) in entries(settings) {
            let kp = child(&p, &key.name);
            let same = items(value).iter().all(|a| scalar(a) == Some(name));
            match key.name.as_str() {
                "aliases" if same => {}
                "aliases" => cx.unsupported(
                    value,
                    &kp,
                    "devstack gives a container its service's name only; other names would not resolve",
                ),
                _ => cx.unsupported(value, &kp, "devstack chooses addresses itself"),
            }
        }
    }
}

/// Labels in either form: key, value and where the value is.
fn label_pairs(node: &Node) -> Vec<(String, String, Span)> {
    match &node.value {
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| (k.name.clone(), scalar(v).unwrap_or("").to_string(), v.span))
            .collect(),
        Value::Seq(list) => list
            .iter()
            .filter_map(|n| {
                let (k, v) = scalar(n)?.split_once('=')?;
                Some((k.to_string(), v.to_string(), n.span))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn routes_from_label(
    (label, span): &(String, Span),
    strip: Option<(String, Span)>,
    port: Option<(String, Span)>,
) -> Node {
    let mut routes = Vec::new();
    for route in label.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let mut r = MapBuilder::new(*span);
        let (host, path) = match route.find('/') {
            Some(i) => (&route[..i], Some(&route[i..])),
            None => (route, None),
        };
        if !host.is_empty() {
            r.set("host", text(host, *span));
        }
        if let Some(path) = path {
            r.set("path", text(path, *span));
        }
        if let Some((strip, at)) = &strip {
            r.set("strip_prefix", text(strip.clone(), *at));
        }
        if let Some((port, at)) = &port {
            r.set("port", text(port.clone(), *at));
        }
        routes.push(r.build());
    }
    Node {
        value: Value::Seq(routes),
        span: *span,
    }
}

/// What a health test command checks, when it is a plain HTTP GET or TCP
/// connect on the container itself.
#[derive(Debug, PartialEq)]
pub(super) enum Recognised {
    Http { port: String, path: String },
    Tcp { port: String },
}

pub(super) fn recognise(argv: &[String]) -> Option<Recognised> {
    let mut argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // `curl -f http://localhost/ || exit 1`: the exit is only for the exit code.
    if argv.len() > 3 && argv[argv.len() - 3..] == ["||", "exit", "1"] {
        argv.truncate(argv.len() - 3);
    }
    let (program, args) = argv.split_first()?;
    let program = program.rsplit('/').next().unwrap_or(program);
    let local = |host: &str| matches!(host, "localhost" | "127.0.0.1" | "0.0.0.0" | "[::1]");
    match program {
        "curl" | "wget" => {
            let mut url = None;
            for arg in args {
                if let Some(rest) = arg.strip_prefix("http://") {
                    if url.replace(rest).is_some() {
                        return None;
                    }
                } else if !arg.starts_with('-') {
                    return None;
                }
            }
            let rest = url?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h, p),
                _ => (authority, "80"),
            };
            local(host).then(|| Recognised::Http {
                port: port.to_string(),
                path: path.to_string(),
            })
        }
        "nc" => match args {
            [flag, host, port] if flag == &"-z" && local(host) && port.parse::<u16>().is_ok() => {
                Some(Recognised::Tcp {
                    port: port.to_string(),
                })
            }
            _ => None,
        },
        _ => None,
    }
}

fn healthcheck(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    port: Option<&str>,
    out_path: &str,
) -> Option<Node> {
    if node.get("disable").and_then(scalar) == Some("true") {
        return None;
    }
    let mut h = MapBuilder::new(node.span);
    for (key, value) in entries(node) {
        let p = child(path, &key.name);
        match key.name.as_str() {
            "test" => {
                let (argv, shell) = match &value.value {
                    Value::Scalar { text, .. } => (shlex::split(text), Some(text.clone())),
                    Value::Seq(_) => {
                        let all = words(value).unwrap_or_default();
                        match all.split_first() {
                            Some((first, _)) if first == "NONE" => return None,
                            Some((first, rest)) if first == "CMD" => (Some(rest.to_vec()), None),
                            Some((first, rest)) if first == "CMD-SHELL" => {
                                let line = rest.join(" ");
                                (shlex::split(&line), Some(line))
                            }
                            _ => (Some(all), None),
                        }
                    }
                    _ => (None, None),
                };
                let recognised = argv.as_deref().and_then(recognise);
                let hp = child(out_path, "health");
                match recognised {
                    Some(Recognised::Http {
                        port: at,
                        path: url_path,
                    }) => {
                        h.set("http", text(url_path, value.span));
                        if port != Some(at.as_str()) {
                            h.set("port", text(at, value.span));
                        }
                        cx.inferred(
                            hp,
                            "an HTTP check: the health command only fetches a local URL",
                        );
                    }
                    Some(Recognised::Tcp { port: at }) => {
                        h.set("tcp", text(at, value.span));
                        cx.inferred(
                            hp,
                            "a TCP check: the health command only connects to a local port",
                        );
                    }
                    None => match (shell, argv) {
                        (Some(line), _) => h.set("command", text(line, value.span)),
                        (None, Some(argv)) => h.set("command", texts(&argv, value.span)),
                        (None, None) => {
                            cx.unsupported(value, &p, "not a health test devstack can read")
                        }
                    },
                }
            }
            "interval" | "timeout" | "retries" | "start_period" => h.set(&key.name, value.clone()),
            "start_interval" => {
                cx.ignored(value, &p, "devstack checks at `interval` from the start")
            }
            "disable" => {}
            _ => cx.unsupported(value, &p, "not a health field devstack knows"),
        }
    }
    h.get("http")
        .or(h.get("tcp"))
        .or(h.get("command"))
        .is_some()
        .then(|| h.build())
}

fn develop(cx: &mut Cx, node: &Node, path: &str) -> Option<Node> {
    let mut watch: Option<MapBuilder> = None;
    let mut sync_path: Option<String> = None;
    let mut rebuild_on: Vec<Node> = Vec::new();
    for (key, value) in entries(node) {
        let p = child(path, &key.name);
        if key.name != "watch" {
            cx.unsupported(
                value,
                &p,
                "devstack has no equivalent of this develop field",
            );
            continue;
        }
        for (i, rule) in items(value).iter().enumerate() {
            let rp = index(&p, i);
            let action = rule.get("action").and_then(scalar).unwrap_or("");
            let rule_path = rule.get("path").and_then(scalar).unwrap_or(".").to_string();
            if let Some(w) = &watch {
                // Devstack has one watch rule per service: a later rebuild
                // rule under the synced path becomes `rebuild_on`.
                let relative = sync_path
                    .as_deref()
                    .and_then(|s| rule_path.strip_prefix(s))
                    .map(|r| r.trim_start_matches('/').to_string())
                    .filter(|r| !r.is_empty());
                match (action, relative) {
                    ("rebuild", Some(rel)) if w.get("action").and_then(scalar) == Some("sync") => {
                        rebuild_on.push(text(rel, rule.span));
                    }
                    _ => cx.unsupported(
                        rule,
                        &rp,
                        "devstack watches one path set per service; this rule is left out",
                    ),
                }
                continue;
            }
            let mut w = MapBuilder::new(rule.span);
            let devstack_action = match action {
                "rebuild" => "rebuild",
                "sync" | "sync+restart" | "sync+exec" => "sync",
                "restart" => "restart",
                _ => {
                    cx.unsupported(
                        rule,
                        &child(&rp, "action"),
                        "not a watch action devstack knows",
                    );
                    continue;
                }
            };
            w.set("action", text(devstack_action, rule.span));
            w.set(
                "paths",
                Node {
                    value: Value::Seq(vec![text(cx.dirs.rebase(&rule_path), rule.span)]),
                    span: rule.span,
                },
            );
            for (k, v) in entries(rule) {
                let kp = child(&rp, &k.name);
                match k.name.as_str() {
                    "action" | "path" => {}
                    "target" => w.set("target", v.clone()),
                    "ignore" => w.set("ignore", v.clone()),
                    "exec" => match v.get("command") {
                        Some(c) => w.set("then", c.clone()),
                        None => cx.unsupported(v, &kp, "an exec without a command"),
                    },
                    "initial_sync" => cx.ignored(v, &kp, "devstack starts from the built image"),
                    _ => cx.unsupported(v, &kp, "not a watch field devstack knows"),
                }
            }
            if action == "sync+restart" {
                cx.unsupported(
                    rule,
                    &child(&rp, "action"),
                    "devstack does not restart after a sync; add `then` with a reload command",
                );
            }
            sync_path = Some(rule_path);
            watch = Some(w);
        }
    }
    let mut w = watch?;
    if !rebuild_on.is_empty() {
        let span = rebuild_on[0].span;
        w.set(
            "rebuild_on",
            Node {
                value: Value::Seq(rebuild_on),
                span,
            },
        );
    }
    Some(w.build())
}

#[allow(clippy::too_many_arguments)]
fn translate_task(
    cx: &mut Cx,
    service: &Node,
    path: &str,
    name: &str,
    runs_before: &[String],
    services: &Node,
    images: &[(String, String)],
) -> Node {
    let mut task = MapBuilder::new(service.span);
    let image = service.get("image").and_then(scalar).unwrap_or("");
    // The same image as a service: the task is that service's one-off.
    let owner = images
        .iter()
        .find(|(i, _)| i == image)
        .map(|(_, s)| s.clone());
    let owner_node = owner.as_deref().and_then(|o| services.get(o));
    match &owner {
        Some(owner) => {
            task.set(
                "service",
                text(
                    owner.clone(),
                    service.get("image").map_or(service.span, |n| n.span),
                ),
            );
            cx.inferred(
                child(&child("tasks", name), "service"),
                format!("it runs the image of `{owner}`, with its environment"),
            );
        }
        None => {
            if let Some(n) = service.get("image") {
                task.set("image", n.clone());
            }
        }
    }
    let owner_env = owner_node
        .and_then(|o| o.get("environment"))
        .map(environment)
        .unwrap_or_default();
    for (key, value) in entries(service) {
        let p = child(path, &key.name);
        match key.name.as_str() {
            "image" | "restart" => {}
            "command" => task.set("command", value.clone()),
            "environment" => {
                let mut env = MapBuilder::new(value.span);
                let own = env_node(cx, value, &p);
                for (k, v) in entries(&own) {
                    if owner_env.get(&k.name).cloned().flatten().as_deref() != scalar(v) {
                        env.set(&k.name, v.clone());
                    }
                }
                if !env.is_empty() {
                    task.set("env", env.build());
                }
            }
            "env_file" => {
                let same = owner_node.and_then(|o| o.get("env_file")).map(|o| o.value == value.value);
                if same != Some(true) {
                    cx.unsupported(value, &p, "a task takes its service's env files only");
                }
            }
            "depends_on" => cx.ignored(
                value,
                &p,
                "a task runs just before the services it comes before, once their dependencies are healthy",
            ),
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(value, &p, "a one-off task has no equivalent of this field"),
        }
    }
    task.set("before", texts(runs_before, service.span));
    task.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        shlex::split(line).unwrap()
    }

    #[test]
    fn local_fetches_are_http_checks() {
        assert_eq!(
            recognise(&argv("curl -fsS http://localhost:8000/health/")),
            Some(Recognised::Http {
                port: "8000".into(),
                path: "/health/".into()
            })
        );
        assert_eq!(
            recognise(&argv("wget -q --spider http://127.0.0.1/ || exit 1")),
            Some(Recognised::Http {
                port: "80".into(),
                path: "/".into()
            })
        );
        assert_eq!(
            recognise(&argv("nc -z localhost 11211")),
            Some(Recognised::Tcp {
                port: "11211".into()
            })
        );
        // Anything more is a command, as written.
        assert_eq!(recognise(&argv("curl -f http://other:80/")), None);
        assert_eq!(recognise(&argv("curl -H x http://localhost/")), None);
        assert_eq!(recognise(&argv("healthcheck.sh --connect")), None);
    }
}
