//! A stack as a Compose file that `docker stack deploy` accepts: the
//! Compose file format 3 schema the Docker CLI checks a stack against
//! (`depends_on` as a list, no `name`, no `develop`, no port `host_ip`).
//!
//! Routes become the `devstack.route` labels the Compose importer reads;
//! datastores are services with their image, data volume and (for kinds
//! whose image runs `/docker-entrypoint-initdb.d`) their seed directory
//! mounted there. Tasks, watch rules, platforms, disk limits and the
//! discovery and proxy settings have no place in such a file: each is
//! listed as [`Lost`].
//!
//! [`Routing`] chooses how the swarm reaches the services: through its
//! routing mesh (the default), or, for swarms whose kernel has no IPVS
//! (which the mesh's published ports and per-service virtual IPs need),
//! directly: each task's ports on its own node and service names resolving
//! to every task, as devstack itself publishes and names them.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::{image_of, internal_names, relative_to, shell_line, size_text, Export, Lost};
use crate::spec::import::compose::ROUTE_LABEL;
use crate::spec::model::{
    Container, DatastoreKind, Health, Probe, Protocol, RestartPolicy, Route, Stack, VolumeSource,
};
use crate::spec::units::format_duration;

/// How a swarm reaches a stack's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Published ports on every node and a virtual IP per service, both
    /// load-balanced by the swarm's routing mesh (IPVS in the kernel).
    #[default]
    Mesh,
    /// Each task's ports published on the node that runs it (`mode: host`,
    /// an engine-chosen port when the stack names none) and service names
    /// resolving to every task (`endpoint_mode: dnsrr`): no IPVS needed.
    Direct,
}

/// Writes `stack` (run as `project`) as a Compose file; relative paths
/// (build contexts, seeds, bind mounts) are written relative to `out_dir`.
pub fn export(stack: &Stack, project: &str, out_dir: &Path) -> Export {
    export_with(stack, project, out_dir, Routing::Mesh)
}

/// [`export`], the services reached as `routing` says.
pub fn export_with(stack: &Stack, project: &str, out_dir: &Path, routing: Routing) -> Export {
    let mut lost = Vec::new();
    let mut services: Vec<(String, Value)> = Vec::new();
    let mut volumes = BTreeSet::new();
    let mut built = Vec::new();
    for (name, service) in &stack.services {
        let path = format!("services.{name}");
        let c = &service.container;
        let mut s = unit(
            project,
            name,
            c,
            &path,
            out_dir,
            routing,
            &mut lost,
            &mut volumes,
        );
        internal_names(stack, c, &path, &mut lost);
        if c.build.is_some() {
            built.push(image_of(project, name, c));
        }
        routes(&mut s, &service.routes, c.port, &path, &mut lost);
        if service.watch.is_some() {
            lost.push(Lost::new(
                format!("{path}.watch"),
                "a Compose file for a stack deploy has no `develop.watch`",
            ));
        }
        services.push((name.clone(), Value::Object(s)));
    }
    for (name, ds) in &stack.datastores {
        let path = format!("datastores.{name}");
        let c = &ds.container;
        let mut s = unit(
            project,
            name,
            c,
            &path,
            out_dir,
            routing,
            &mut lost,
            &mut volumes,
        );
        if c.build.is_some() {
            built.push(image_of(project, name, c));
        }
        let image = image_of(project, name, c);
        if crate::spec::import::tree::datastore_kind(&image).is_none() {
            lost.push(Lost::new(
                format!("{path}.kind"),
                format!(
                    "`{image}` is not an image the importer knows as a datastore: it reads back as a service"
                ),
            ));
        }
        if let Some(seed) = &ds.seed {
            let initdb = matches!(
                ds.kind,
                DatastoreKind::Postgres
                    | DatastoreKind::Mysql
                    | DatastoreKind::Mariadb
                    | DatastoreKind::Mongodb
            );
            if initdb && seed.is_dir() {
                let list = s
                    .entry("volumes")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(json!({
                        "type": "bind",
                        "source": relative_to(out_dir, seed),
                        "target": "/docker-entrypoint-initdb.d",
                        "read_only": true,
                    }));
                }
            } else {
                lost.push(Lost::new(
                    format!("{path}.seed"),
                    "seed data is loaded by devstack; only a directory for an image that runs /docker-entrypoint-initdb.d is mounted there",
                ));
            }
        }
        services.push((name.clone(), Value::Object(s)));
    }
    for name in stack.tasks.keys() {
        lost.push(Lost::new(
            format!("tasks.{name}"),
            "a stack deploy has no one-off that runs before services; run it with `docker run`",
        ));
    }
    lost.push(Lost::new(
        "name",
        "a stack deploy names the stack on its command line; give `name:` in a devstack overlay to read it back",
    ));
    lost.push(Lost::new(
        "discovery",
        "the registry layout is devstack's; the swarm's routing mesh reaches services by name",
    ));
    lost.push(Lost::new(
        "proxy",
        "the proxy is devstack's; routes are written as `devstack.route` labels",
    ));
    // Services in the stack's order (a JSON map would sort them).
    let mut ordered = serde_yaml::Mapping::new();
    for (name, service) in services {
        let value = serde_yaml::to_value(service).unwrap_or(serde_yaml::Value::Null);
        ordered.insert(name.into(), value);
    }
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("services".into(), serde_yaml::Value::Mapping(ordered));
    if !volumes.is_empty() {
        let v: Map<String, Value> = volumes.into_iter().map(|n| (n, json!({}))).collect();
        let v = serde_yaml::to_value(v).unwrap_or(serde_yaml::Value::Null);
        doc.insert("volumes".into(), v);
    }
    let yaml = serde_yaml::to_string(&doc).unwrap_or_default();
    let mut text = format!(
        "# The {} stack, written by `devstack export compose`.\n\
         # Deploy it with `docker stack deploy -c FILE {project}`; read it back with\n\
         # `devstack -f FILE` or `devstack import FILE`.\n",
        stack.name
    );
    for line in yaml.lines() {
        text.push_str(line);
        let value = line.trim_start().strip_prefix("image: ");
        if value.is_some_and(|v| built.iter().any(|b| b == v.trim_matches(['\'', '"']))) {
            text.push_str(
                " # the tag devstack builds from `build`: push it where the swarm pulls from",
            );
        }
        text.push('\n');
    }
    Export {
        files: vec![("compose.yaml".into(), text)],
        lost,
    }
}

#[allow(clippy::too_many_arguments)]
fn unit(
    project: &str,
    name: &str,
    c: &Container,
    path: &str,
    out_dir: &Path,
    routing: Routing,
    lost: &mut Vec<Lost>,
    volumes: &mut BTreeSet<String>,
) -> Map<String, Value> {
    let mut s = Map::new();
    s.insert("image".into(), json!(image_of(project, name, c)));
    if let Some(b) = &c.build {
        let mut build = Map::new();
        build.insert("context".into(), json!(relative_to(out_dir, &b.context)));
        if b.dockerfile != "Dockerfile" {
            build.insert("dockerfile".into(), json!(b.dockerfile));
        }
        if !b.args.is_empty() {
            build.insert("args".into(), json!(escape_map(&b.args)));
        }
        if let Some(t) = &b.target {
            build.insert("target".into(), json!(t));
        }
        s.insert("build".into(), Value::Object(build));
    }
    if let Some(p) = &c.platform {
        lost.push(Lost::new(
            format!("{path}.platform"),
            format!("a stack deploy takes the node's platform; constrain nodes to `{p}` with deploy.placement"),
        ));
    }
    if let Some(cmd) = &c.command {
        s.insert("command".into(), json!(escape_list(cmd)));
    }
    if let Some(ep) = &c.entrypoint {
        s.insert("entrypoint".into(), json!(escape_list(ep)));
    }
    if !c.env.is_empty() {
        s.insert("environment".into(), json!(escape_map(&c.env)));
    }
    if !c.secret_env.is_empty() {
        lost.push(Lost::new(
            format!("{path}.env_file"),
            format!(
                "values from env files are written inline: {}",
                c.secret_env.join(", ")
            ),
        ));
    }
    if let Some(port) = c.port {
        s.insert("expose".into(), json!([port.to_string()]));
    }
    if !c.ports.is_empty() {
        let mut ports = Vec::new();
        for (i, p) in c.ports.iter().enumerate() {
            let mut port = Map::new();
            port.insert("target".into(), json!(p.container_port));
            if let Some(h) = p.host_port {
                port.insert("published".into(), json!(h));
            }
            let protocol = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            port.insert("protocol".into(), json!(protocol));
            if routing == Routing::Direct {
                port.insert("mode".into(), json!("host"));
            }
            if !p.host_ip.is_loopback() {
                lost.push(Lost::new(
                    format!("{path}.ports[{i}].host_ip"),
                    "a swarm publishes on every node's interfaces; the address reads back as 127.0.0.1",
                ));
            }
            ports.push(Value::Object(port));
        }
        s.insert("ports".into(), Value::Array(ports));
    }
    let mut deploy = Map::new();
    deploy.insert("replicas".into(), json!(c.replicas));
    if routing == Routing::Direct {
        deploy.insert("endpoint_mode".into(), json!("dnsrr"));
    }
    let mut limits = Map::new();
    if let Some(m) = c.resources.memory {
        limits.insert("memory".into(), json!(size_text(m, ["k", "m", "g"])));
    }
    if let Some(cpus) = c.resources.cpus {
        limits.insert("cpus".into(), json!(cpus.to_string()));
    }
    if let Some(pids) = c.resources.pids {
        limits.insert("pids".into(), json!(pids));
    }
    if c.resources.disk.is_some() {
        lost.push(Lost::new(
            format!("{path}.resources.disk"),
            "Compose has no limit on a container's writable layer",
        ));
    }
    if !limits.is_empty() {
        deploy.insert("resources".into(), json!({ "limits": limits }));
    }
    s.insert("deploy".into(), Value::Object(deploy));
    if let Some(h) = &c.health {
        s.insert("healthcheck".into(), healthcheck(h));
    }
    if !c.depends_on.is_empty() {
        s.insert("depends_on".into(), json!(c.depends_on));
    }
    if !c.volumes.is_empty() {
        let mut list = Vec::new();
        for v in &c.volumes {
            let mut m = Map::new();
            match &v.source {
                VolumeSource::Named(n) => {
                    volumes.insert(n.clone());
                    m.insert("type".into(), json!("volume"));
                    m.insert("source".into(), json!(n));
                }
                VolumeSource::Bind(p) => {
                    m.insert("type".into(), json!("bind"));
                    m.insert("source".into(), json!(relative_to(out_dir, p)));
                }
            }
            m.insert("target".into(), json!(v.target));
            if v.read_only {
                m.insert("read_only".into(), json!(true));
            }
            list.push(Value::Object(m));
        }
        s.insert("volumes".into(), Value::Array(list));
    }
    if !c.labels.is_empty() {
        s.insert("labels".into(), json!(c.labels));
    }
    // `no` is the default of both (and a boolean to YAML 1.1 readers).
    if c.restart != RestartPolicy::No {
        let restart = serde_json::to_value(c.restart).unwrap_or(Value::Null);
        s.insert("restart".into(), restart);
    }
    s.insert(
        "stop_grace_period".into(),
        json!(format_duration(c.stop_grace)),
    );
    if c.init {
        s.insert("init".into(), json!(true));
    }
    s
}

/// Compose interpolates `$`: a literal one is written `$$`.
fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

fn escape_list(list: &[String]) -> Vec<String> {
    list.iter().map(|s| escape(s)).collect()
}

fn escape_map(map: &std::collections::BTreeMap<String, String>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (k.clone(), json!(escape(v))))
        .collect()
}

/// The health check as a test the importer recognises again: a local
/// `curl` for `http`, `nc -z` for `tcp`, the command itself otherwise.
fn healthcheck(h: &Health) -> Value {
    let test: Vec<String> = match &h.probe {
        Probe::Http { port, path } => vec![
            "CMD".into(),
            "curl".into(),
            "-fsS".into(),
            format!("http://localhost:{port}{path}"),
        ],
        Probe::Tcp { port } => vec![
            "CMD".into(),
            "nc".into(),
            "-z".into(),
            "localhost".into(),
            port.to_string(),
        ],
        Probe::Command { argv } => match shell_line(argv) {
            Some(line) => vec!["CMD-SHELL".into(), line.to_string()],
            None => std::iter::once("CMD".to_string())
                .chain(argv.iter().cloned())
                .collect(),
        },
    };
    json!({
        "test": escape_list(&test),
        "interval": format_duration(h.interval),
        "timeout": format_duration(h.timeout),
        "retries": h.retries,
        "start_period": format_duration(h.start_period),
    })
}

/// Routes as the importer's labels: one list per service, with
/// `strip_prefix` and `port` for all of them (a label each).
fn routes(
    s: &mut Map<String, Value>,
    routes: &[Route],
    port: Option<u16>,
    path: &str,
    lost: &mut Vec<Lost>,
) {
    let Some(first) = routes.first() else {
        return;
    };
    let list: Vec<String> = routes
        .iter()
        .map(|r| {
            format!(
                "{}{}",
                r.host.as_deref().unwrap_or(""),
                r.path.as_deref().unwrap_or("")
            )
        })
        .collect();
    for (i, r) in routes.iter().enumerate().skip(1) {
        if r.strip_prefix != first.strip_prefix || r.port != first.port {
            lost.push(Lost::new(
                format!("{path}.routes[{i}]"),
                "the route labels give every route of a service the first one's `strip_prefix` and `port`",
            ));
        }
    }
    let labels = s
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(labels) = labels {
        labels.insert(ROUTE_LABEL.into(), json!(list.join(", ")));
        if first.strip_prefix {
            labels.insert(format!("{ROUTE_LABEL}.strip_prefix"), json!("true"));
        }
        if Some(first.port) != port {
            labels.insert(format!("{ROUTE_LABEL}.port"), json!(first.port.to_string()));
        }
    }
}
