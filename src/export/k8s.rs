//! A stack as Kubernetes manifests for one shared namespace: per unit a
//! Deployment (a StatefulSet for a datastore with a data volume, its claim
//! a volume claim template), a Service when it has a `port`, a ConfigMap
//! for its `env` (a Secret for values from env files), an Ingress per
//! route (ingress-nginx's `rewrite-target` for `strip_prefix`) and a
//! PersistentVolumeClaim per other named volume. Health becomes a
//! readiness probe; tasks become init containers of the units they come
//! before (a Job when they come before none).
//!
//! Kubernetes has no start order, seed data, host paths or per-container
//! process limits: those are listed as [`Lost`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::{image_of, internal_names, size_text, Export, Lost};
use crate::spec::model::{Container, Probe, Route, Stack, Task, VolumeSource};

/// The pod label that Services and workloads select by.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The claim size written for a volume: the stack does not say one.
pub const CLAIM_SIZE: &str = "1Gi";

/// Writes `stack` as manifests in `namespace`: one file per unit
/// (`<unit>.yaml`, several documents), and `jobs.yaml` for tasks that
/// come before no unit.
pub fn export(stack: &Stack, project: &str, namespace: &str) -> Export {
    let mut lost = Vec::new();
    let mut files = Vec::new();
    let mut claims_written = BTreeSet::new();
    if !is_dns_label(namespace) {
        lost.push(Lost::new(
            "name",
            format!("`{namespace}` is not a namespace name (lowercase letters, digits, `-`); pass --namespace"),
        ));
    }
    let units = stack
        .services
        .iter()
        .map(|(n, s)| (n, "services", &s.container, s.routes.as_slice(), None))
        .chain(stack.datastores.iter().map(|(n, d)| {
            (
                n,
                "datastores",
                &d.container,
                &[][..],
                Some((d.data_volume.as_deref(), d.seed.is_some(), d.kind)),
            )
        }));
    for (name, section, c, routes, datastore) in units {
        let path = format!("{section}.{name}");
        if !is_dns_label(name) {
            lost.push(Lost::new(
                path.clone(),
                "not a Kubernetes object name (lowercase letters, digits, `-`); rename it",
            ));
        }
        let mut docs = Vec::new();
        let meta = |object: &str| metadata(object, name, namespace);
        // Environment: a ConfigMap, and a Secret for env-file values.
        let (plain, secret): (BTreeMap<_, _>, BTreeMap<_, _>) =
            c.env.iter().partition(|(k, _)| !c.secret_env.contains(k));
        let mut env_from = Vec::new();
        if !plain.is_empty() {
            docs.push(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": meta(&format!("{name}-env")),
                "data": plain,
            }));
            env_from.push(json!({ "configMapRef": { "name": format!("{name}-env") } }));
        }
        if !secret.is_empty() {
            docs.push(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": meta(&format!("{name}-env")),
                "type": "Opaque",
                "stringData": secret,
            }));
            env_from.push(json!({ "secretRef": { "name": format!("{name}-env") } }));
        }
        // The main container.
        let mut container = Map::new();
        container.insert("name".into(), json!(name));
        container.insert("image".into(), json!(image_of(project, name, c)));
        if let Some(ep) = &c.entrypoint {
            container.insert("command".into(), json!(ep));
        }
        if let Some(cmd) = &c.command {
            container.insert("args".into(), json!(cmd));
        }
        if let Some(port) = c.port {
            container.insert("ports".into(), json!([{ "containerPort": port }]));
        }
        if !env_from.is_empty() {
            container.insert("envFrom".into(), Value::Array(env_from.clone()));
        }
        if let Some(h) = &c.health {
            let mut probe = match &h.probe {
                Probe::Http { port, path } => {
                    json!({ "httpGet": { "path": path, "port": port } })
                }
                Probe::Tcp { port } => json!({ "tcpSocket": { "port": port } }),
                Probe::Command { argv } => json!({ "exec": { "command": argv } }),
            };
            let hp = format!("{path}.health");
            if let Value::Object(p) = &mut probe {
                p.insert(
                    "periodSeconds".into(),
                    json!(seconds(h.interval, 1, &hp, &mut lost)),
                );
                p.insert(
                    "timeoutSeconds".into(),
                    json!(seconds(h.timeout, 1, &hp, &mut lost)),
                );
                p.insert("failureThreshold".into(), json!(h.retries.max(1)));
                let delay = seconds(h.start_period, 0, &hp, &mut lost);
                if delay > 0 {
                    p.insert("initialDelaySeconds".into(), json!(delay));
                }
            }
            container.insert("readinessProbe".into(), probe);
        }
        let mut limits = Map::new();
        if let Some(m) = c.resources.memory {
            limits.insert("memory".into(), json!(size_text(m, ["Ki", "Mi", "Gi"])));
        }
        if let Some(cpus) = c.resources.cpus {
            let milli = (cpus * 1000.0).round() as u64;
            let cpu = if milli.is_multiple_of(1000) {
                (milli / 1000).to_string()
            } else {
                format!("{milli}m")
            };
            limits.insert("cpu".into(), json!(cpu));
        }
        if let Some(disk) = c.resources.disk {
            limits.insert(
                "ephemeral-storage".into(),
                json!(size_text(disk, ["Ki", "Mi", "Gi"])),
            );
        }
        if !limits.is_empty() {
            container.insert("resources".into(), json!({ "limits": limits }));
        }
        lose_what_kubernetes_cannot_say(c, &path, &mut lost);
        internal_names(stack, c, &path, &mut lost);
        if stack
            .services
            .get(name.as_str())
            .is_some_and(|s| s.watch.is_some())
        {
            lost.push(Lost::new(
                format!("{path}.watch"),
                "a cluster runs images; rebuild and push them to change what runs",
            ));
        }
        // Volumes: the data volume as a claim template, other named
        // volumes as claims.
        let data_volume = datastore.and_then(|(v, _, _)| v);
        if let Some((_, true, _)) = datastore {
            lost.push(Lost::new(
                format!("{path}.seed"),
                "seed data is loaded by devstack; load it into the cluster's volume yourself",
            ));
        }
        if data_volume == Some("data") {
            lost.push(Lost::new(
                format!("{path}.volume"),
                format!("a claim template named `data` reads back as `{name}-data`"),
            ));
        }
        let mut mounts = Vec::new();
        let mut pod_volumes = Vec::new();
        for (i, v) in c.volumes.iter().enumerate() {
            let VolumeSource::Named(vol) = &v.source else {
                lost.push(Lost::new(
                    format!("{path}.volumes[{i}]"),
                    "a host path means nothing on a cluster; put the files in an image or a ConfigMap",
                ));
                continue;
            };
            let mut mount = json!({ "name": vol, "mountPath": v.target });
            if v.read_only {
                mount["readOnly"] = json!(true);
            }
            mounts.push(mount);
            if Some(vol.as_str()) == data_volume {
                continue;
            }
            pod_volumes.push(json!({ "name": vol, "persistentVolumeClaim": { "claimName": vol } }));
            if claims_written.insert(vol.clone()) {
                docs.push(json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": metadata(vol, vol, namespace),
                    "spec": claim_spec(),
                }));
            }
        }
        if !mounts.is_empty() {
            container.insert("volumeMounts".into(), Value::Array(mounts));
        }
        // Tasks that come before this unit, as init containers.
        let inits: Vec<Value> = stack
            .tasks
            .iter()
            .filter(|(_, t)| t.before.iter().any(|b| b == name))
            .map(|(task_name, t)| one_off(stack, project, task_name, t))
            .collect();
        let mut pod = Map::new();
        pod.insert(
            "terminationGracePeriodSeconds".into(),
            json!(c.stop_grace.as_secs()),
        );
        if !inits.is_empty() {
            pod.insert("initContainers".into(), Value::Array(inits));
        }
        pod.insert("containers".into(), json!([Value::Object(container)]));
        if !pod_volumes.is_empty() {
            pod.insert("volumes".into(), Value::Array(pod_volumes));
        }
        let selector = json!({ NAME_LABEL: name });
        let mut spec = json!({
            "replicas": c.replicas,
            "selector": { "matchLabels": selector },
            "template": {
                "metadata": { "labels": selector },
                "spec": Value::Object(pod),
            },
        });
        let kind = match data_volume {
            Some(vol) => {
                spec["serviceName"] = json!(name);
                spec["volumeClaimTemplates"] = json!([{
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": { "name": vol },
                    "spec": claim_spec(),
                }]);
                "StatefulSet"
            }
            None => "Deployment",
        };
        docs.push(json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": meta(name),
            "spec": spec,
        }));
        // A Service for every port something reaches it on: its `port`,
        // else its kind's, else the one its health check connects to.
        let own_port = c
            .port
            .or_else(|| datastore.and_then(|(_, _, kind)| crate::spec::kinds::default_port(kind)))
            .or(match c.health.as_ref().map(|h| &h.probe) {
                Some(Probe::Tcp { port }) => Some(*port),
                _ => None,
            });
        let ports: BTreeSet<u16> = own_port
            .into_iter()
            .chain(routes.iter().map(|r| r.port))
            .collect();
        if !ports.is_empty() {
            let named = ports.len() > 1;
            let list: Vec<Value> = ports
                .iter()
                .map(|p| {
                    let mut v = json!({ "port": p, "targetPort": p });
                    if named {
                        v["name"] = json!(format!("p{p}"));
                    }
                    v
                })
                .collect();
            docs.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": meta(name),
                "spec": { "selector": selector, "ports": list },
            }));
        } else {
            lost.push(Lost::new(
                format!("{path}.port"),
                "no `port` (nor a kind's or a TCP check's): no Service is written, so nothing in the namespace reaches it by name",
            ));
        }
        for (i, route) in routes.iter().enumerate() {
            let object = if routes.len() == 1 {
                name.to_string()
            } else {
                format!("{name}-{i}")
            };
            docs.push(ingress(&object, name, namespace, route));
        }
        files.push((format!("{name}.yaml"), documents(&docs)));
    }
    // Tasks that come before nothing: Jobs.
    let jobs: Vec<Value> = stack
        .tasks
        .iter()
        .filter(|(_, t)| t.before.is_empty() && !t.test)
        .map(|(task_name, t)| {
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": metadata(task_name, task_name, namespace),
                "spec": { "template": { "spec": {
                    "restartPolicy": "Never",
                    "containers": [one_off(stack, project, task_name, t)],
                } } },
            })
        })
        .collect();
    if !jobs.is_empty() {
        files.push(("jobs.yaml".into(), documents(&jobs)));
    }
    for (name, t) in &stack.tasks {
        if t.test {
            lost.push(Lost::new(
                format!("tasks.{name}"),
                "the stack's test suite runs under `devstack test`, not in the cluster",
            ));
        }
        if t.before.len() > 1 {
            lost.push(Lost::new(
                format!("tasks.{name}.before"),
                "an init container of each unit it comes before: it runs once per pod, not once",
            ));
        }
    }
    lost.push(Lost::new(
        "discovery",
        "the registry layout is devstack's; in the cluster Services reach units by name",
    ));
    lost.push(Lost::new(
        "proxy",
        "the proxy is devstack's; routes are written as Ingresses",
    ));
    Export { files, lost }
}

/// What a unit says that a pod cannot.
fn lose_what_kubernetes_cannot_say(c: &Container, path: &str, lost: &mut Vec<Lost>) {
    let mut lose = |field: &str, why: &str| lost.push(Lost::new(format!("{path}.{field}"), why));
    if !c.depends_on.is_empty() {
        lose(
            "depends_on",
            "Kubernetes has no start order: pods restart until what they need answers",
        );
    }
    if c.build.is_some() {
        lose(
            "build",
            "the image is the tag devstack builds: push it where the cluster pulls from",
        );
    }
    if c.platform.is_some() {
        lose(
            "platform",
            "a pod runs on its node's platform; select nodes with `kubernetes.io/arch`",
        );
    }
    if !c.ports.is_empty() {
        lose(
            "ports",
            "host ports are not published; reach the Service with `kubectl port-forward`",
        );
    }
    if c.resources.pids.is_some() {
        lose(
            "resources.pids",
            "a process limit is the node's setting, not a pod's",
        );
    }
    if !c.labels.is_empty() {
        lose(
            "labels",
            "container labels have no place in a pod (labels there select pods)",
        );
    }
    if c.restart != crate::spec::model::RestartPolicy::No {
        lose(
            "restart",
            "a Deployment always restarts its pods; the policy reads back as `no`",
        );
    }
    if c.init {
        lose(
            "init",
            "a pod has no init process option; use `shareProcessNamespace` or an image with one",
        );
    }
}

/// A task as a container: its image (its service's), the service's
/// environment plus its own, its command as the container's arguments.
fn one_off(stack: &Stack, project: &str, name: &str, t: &Task) -> Value {
    let owner = t
        .service
        .as_deref()
        .and_then(|s| stack.unit(s).map(|c| (s, c)));
    let image = t
        .image
        .clone()
        .or_else(|| owner.map(|(s, c)| image_of(project, s, c)))
        .unwrap_or_default();
    let mut c = json!({ "name": name, "image": image });
    if let Some(cmd) = &t.command {
        c["args"] = json!(cmd);
    }
    if let Some((service, container)) = owner {
        let mut from = Vec::new();
        if container
            .env
            .keys()
            .any(|k| !container.secret_env.contains(k))
        {
            from.push(json!({ "configMapRef": { "name": format!("{service}-env") } }));
        }
        if !container.secret_env.is_empty() {
            from.push(json!({ "secretRef": { "name": format!("{service}-env") } }));
        }
        if !from.is_empty() {
            c["envFrom"] = Value::Array(from);
        }
    }
    if !t.env.is_empty() {
        let env: Vec<Value> = t
            .env
            .iter()
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect();
        c["env"] = Value::Array(env);
    }
    c
}

fn ingress(object: &str, service: &str, namespace: &str, route: &Route) -> Value {
    let prefix = route.path.as_deref().unwrap_or("/");
    let mut meta = metadata(object, service, namespace);
    let (path, path_type) = if route.strip_prefix && prefix != "/" {
        meta["annotations"] = json!({
            "nginx.ingress.kubernetes.io/rewrite-target": "/$2",
            "nginx.ingress.kubernetes.io/use-regex": "true",
        });
        (format!("{prefix}(/|$)(.*)"), "ImplementationSpecific")
    } else {
        (prefix.to_string(), "Prefix")
    };
    let mut rule = json!({ "http": { "paths": [{
        "path": path,
        "pathType": path_type,
        "backend": { "service": { "name": service, "port": { "number": route.port } } },
    }] } });
    if let Some(host) = &route.host {
        rule["host"] = json!(host);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": meta,
        "spec": { "rules": [rule] },
    })
}

fn metadata(object: &str, unit: &str, namespace: &str) -> Value {
    json!({
        "name": object,
        "namespace": namespace,
        "labels": { NAME_LABEL: unit },
    })
}

fn claim_spec() -> Value {
    json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": CLAIM_SIZE } },
    })
}

/// Whole seconds, at least `min`; a fraction is rounded up and listed.
fn seconds(d: std::time::Duration, min: u64, path: &str, lost: &mut Vec<Lost>) -> u64 {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if d.subsec_nanos() > 0 || whole < min {
        let entry = Lost::new(
            path,
            "probe times are whole seconds (at least 1 s for period and timeout); rounded up",
        );
        if !lost.contains(&entry) {
            lost.push(entry);
        }
    }
    whole.max(min)
}

/// Documents as one multi-document YAML text.
fn documents(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// An RFC 1123 label: what names of namespaces, Services and containers must be.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
