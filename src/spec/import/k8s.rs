//! Kubernetes manifests (a file or a directory of multi-document YAML)
//! translated into devstack's tree.
//!
//! Read straight from the position-keeping tree rather than through typed
//! API structs (k8s-openapi): every field left out must be reported with
//! its line and path, which typed deserialisation forgets, and devstack
//! reads a small part of a few kinds. Invariant: no object is looked up in
//! a cluster; only the documents given are read.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::report::Note;
use super::tree::{
    child, datastore_kind, entries, items, k8s_cpus, k8s_quantity_bytes, resource_limits, scalar,
    seconds, text, texts, words, MapBuilder,
};
use super::Translated;
use crate::spec::model::DatastoreKind;
use crate::spec::yaml::{Node, Span, Value};

/// A Service's ports: (port, port name, container port).
type ServicePorts = Vec<(String, String, String)>;
/// Services by name: the workload each selects, and its ports.
type ServiceTargets = BTreeMap<String, (String, ServicePorts)>;
/// A workload's main image, its name and its environment: a one-off with
/// the same image is that workload's task.
type Owner = (String, String, Option<BTreeMap<String, String>>);

/// One object of the manifests.
struct Object<'a> {
    kind: &'a str,
    name: &'a str,
    node: &'a Node,
}

impl Object<'_> {
    /// `Deployment/web`, the start of every note's path.
    fn path(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

struct Cx {
    notes: Vec<Note>,
    inferred: Vec<(String, String)>,
    /// ConfigMap and Secret data: object name -> key -> (value, where).
    config_maps: BTreeMap<String, BTreeMap<String, (String, Span)>>,
    secrets: BTreeMap<String, BTreeMap<String, (String, Span)>>,
}

impl Cx {
    fn ignored(&mut self, node: &Node, path: &str, why: &str) {
        self.notes.push(Note::ignored(node.span, path, why));
    }
    fn unsupported(&mut self, node: &Node, path: &str, why: &str) {
        self.notes.push(Note::unsupported(node.span, path, why));
    }
}

/// Kinds that only matter to a cluster.
const CLUSTER_ONLY: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "LimitRange",
    "ResourceQuota",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
];

pub fn translate(docs: &[Node]) -> Translated {
    let mut cx = Cx {
        notes: Vec::new(),
        inferred: Vec::new(),
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    let span = docs.first().map(|d| d.span).unwrap_or(Span {
        file: 0,
        start: 0,
        end: 0,
    });
    let mut objects = Vec::new();
    for doc in docs {
        collect(&mut cx, doc, &mut objects);
    }
    for o in &objects {
        match o.kind {
            "ConfigMap" => {
                let data = data_of(o.node, false);
                cx.config_maps.insert(o.name.to_string(), data);
            }
            "Secret" => {
                let mut data = data_of(o.node, true);
                data.extend(data_of_key(o.node, "stringData", false));
                cx.secrets.insert(o.name.to_string(), data);
            }
            _ => {}
        }
    }

    let mut out = MapBuilder::new(span);
    // The stack's name: the namespace every object shares, if they do.
    let namespaces: Vec<&Node> = objects
        .iter()
        .filter_map(|o| o.node.get("metadata").and_then(|m| m.get("namespace")))
        .collect();
    if let Some(first) = namespaces.first() {
        if namespaces.iter().all(|n| scalar(n) == scalar(first)) {
            out.set("name", (*first).clone());
            cx.inferred
                .push(("name".into(), "the namespace of every object".into()));
        }
    }

    // Volume claim templates: named after the template, or `<set>-<template>`
    // when the template's name alone says nothing (`data`) or is shared.
    let mut template_names: BTreeMap<String, usize> = BTreeMap::new();
    for o in objects.iter().filter(|o| o.kind == "StatefulSet") {
        for t in items(
            o.node
                .get("spec")
                .and_then(|s| s.get("volumeClaimTemplates"))
                .unwrap_or(&NULL),
        ) {
            if let Some(n) = t
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(scalar)
            {
                *template_names.entry(n.to_string()).or_default() += 1;
            }
        }
    }

    let mut services = MapBuilder::new(span);
    let mut datastores = MapBuilder::new(span);
    let mut tasks: Vec<(String, MapBuilder, Vec<String>, Span)> = Vec::new();
    // Workload name -> (pod labels, main image, container ports by name, port).
    let mut workloads: Vec<Workload> = Vec::new();
    for o in &objects {
        if !matches!(o.kind, "Deployment" | "StatefulSet" | "DaemonSet") {
            continue;
        }
        if let Some(w) = workload(&mut cx, o, &template_names) {
            workloads.push(w);
        }
    }
    let images: Vec<Owner> = workloads
        .iter()
        .map(|w| (w.image.clone(), w.name.clone(), w.env.clone()))
        .collect();
    for w in &workloads {
        for init in &w.inits {
            add_task(&mut cx, &mut tasks, init, Some(&w.name), &images);
        }
    }
    for o in objects.iter().filter(|o| o.kind == "Job") {
        if let Some(t) = job(&mut cx, o) {
            add_task(&mut cx, &mut tasks, &t, None, &images);
        }
    }

    // Services name workloads; Ingresses route to Services.
    let mut routes: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    let mut svc_targets: ServiceTargets = BTreeMap::new();
    for o in objects.iter().filter(|o| o.kind == "Service") {
        service(&mut cx, o, &workloads, &mut svc_targets);
    }
    for o in objects.iter().filter(|o| o.kind == "Ingress") {
        ingress(&mut cx, o, &workloads, &svc_targets, &mut routes);
    }
    for o in &objects {
        match o.kind {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "Service" | "Ingress"
            | "ConfigMap" | "Secret" => {}
            k if CLUSTER_ONLY.contains(&k) => cx.ignored(
                o.node,
                &o.path(),
                "a cluster object with no meaning on one machine",
            ),
            "CronJob" => cx.unsupported(
                o.node,
                &o.path(),
                "devstack runs no schedules; run it with `devstack run`",
            ),
            _ => cx.unsupported(o.node, &o.path(), "a kind devstack does not read"),
        }
    }

    for mut w in workloads {
        if let Some(r) = routes.remove(&w.name) {
            if w.datastore.is_some() {
                cx.unsupported(
                    &r[0],
                    &format!("Ingress -> {}", w.name),
                    "a datastore is not routed",
                );
            } else {
                let span = r[0].span;
                w.unit.set(
                    "routes",
                    Node {
                        value: Value::Seq(r),
                        span,
                    },
                );
            }
        }
        match w.datastore {
            Some(_) => datastores.set(&w.name, w.unit.build_unit()),
            None => services.set(&w.name, w.unit.build_unit()),
        }
    }
    if !services.is_empty() {
        out.set("services", services.build());
    }
    if !datastores.is_empty() {
        out.set("datastores", datastores.build());
    }
    if !tasks.is_empty() {
        let mut t_out = MapBuilder::new(span);
        for (name, mut task, before, span) in tasks {
            if !before.is_empty() {
                task.set("before", texts(&before, span));
            }
            t_out.set(&name, task.build());
        }
        out.set("tasks", t_out.build());
    }
    Translated::new(out.build(), cx.notes, cx.inferred)
}

static NULL: Node = Node {
    value: Value::Null,
    span: Span {
        file: 0,
        start: 0,
        end: 0,
    },
};

/// Objects of a document, with `kind: List` unpacked.
fn collect<'a>(cx: &mut Cx, doc: &'a Node, out: &mut Vec<Object<'a>>) {
    let kind = doc.get("kind").and_then(scalar).unwrap_or("");
    if kind == "List" || kind.ends_with("List") {
        for item in items(doc.get("items").unwrap_or(&NULL)) {
            collect(cx, item, out);
        }
        return;
    }
    match doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(scalar)
    {
        Some(name) => out.push(Object {
            kind,
            name,
            node: doc,
        }),
        None => cx.unsupported(doc, kind, "an object without `metadata.name`"),
    }
}

fn data_of(node: &Node, base64: bool) -> BTreeMap<String, (String, Span)> {
    data_of_key(node, "data", base64)
}

fn data_of_key(node: &Node, key: &str, base64: bool) -> BTreeMap<String, (String, Span)> {
    let mut out = BTreeMap::new();
    for (k, v) in entries(node.get(key).unwrap_or(&NULL)) {
        let raw = scalar(v).unwrap_or("");
        let value = if base64 {
            match base64::engine::general_purpose::STANDARD.decode(raw.trim()) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => continue,
            }
        } else {
            raw.to_string()
        };
        out.insert(k.name.clone(), (value, v.span));
    }
    out
}

/// A one-off container: an init container or a Job's.
struct OneOff {
    name: String,
    image: String,
    command: Option<Vec<String>>,
    env: BTreeMap<String, (String, Span)>,
    span: Span,
}

struct Workload {
    name: String,
    labels: BTreeMap<String, String>,
    image: String,
    /// Container ports by name, and the service's `port`.
    port_names: BTreeMap<String, String>,
    port: Option<String>,
    env: Option<BTreeMap<String, String>>,
    datastore: Option<&'static str>,
    unit: MapBuilder,
    inits: Vec<OneOff>,
}

fn workload(cx: &mut Cx, o: &Object, templates: &BTreeMap<String, usize>) -> Option<Workload> {
    let path = o.path();
    let spec = o.node.get("spec").unwrap_or(&NULL);
    let template = spec.get("template").unwrap_or(&NULL);
    let pod = template.get("spec").unwrap_or(&NULL);
    let containers = items(pod.get("containers").unwrap_or(&NULL));
    let Some(main) = containers.first() else {
        cx.unsupported(o.node, &path, "a workload without containers");
        return None;
    };
    let pod_path = "spec.template.spec";
    let image = main.get("image").and_then(scalar).unwrap_or("").to_string();
    let datastore = datastore_kind(&image);
    let out_path = match datastore {
        Some(_) => child("datastores", o.name),
        None => child("services", o.name),
    };
    let mut unit = MapBuilder::new(o.node.span);
    if let Some(kind) = datastore {
        unit.set("kind", text(kind, main.span));
        cx.inferred.push((
            child(&out_path, "kind"),
            format!("a datastore: `{image}` is a {kind} image"),
        ));
    }
    match o.kind {
        "DaemonSet" => {
            unit.set("replicas", text("1", o.node.span));
            cx.inferred.push((
                child(&out_path, "replicas"),
                "a DaemonSet runs one replica on one machine".into(),
            ));
        }
        _ => {
            if let Some(r) = spec.get("replicas") {
                unit.set("replicas", r.clone());
            }
        }
    }
    for (key, value) in entries(spec) {
        let p = format!("{path}.spec.{}", key.name);
        match key.name.as_str() {
            "replicas" | "template" | "selector" | "serviceName" | "volumeClaimTemplates" => {}
            "strategy"
            | "updateStrategy"
            | "revisionHistoryLimit"
            | "minReadySeconds"
            | "progressDeadlineSeconds"
            | "podManagementPolicy"
            | "persistentVolumeClaimRetentionPolicy" => cx.ignored(
                value,
                &p,
                "rollouts are devstack's own (blue-green per replica)",
            ),
            _ => cx.unsupported(value, &p, "devstack has no equivalent of this field"),
        }
    }
    // Pod-level fields.
    let mut volumes: BTreeMap<String, &Node> = BTreeMap::new();
    for v in items(pod.get("volumes").unwrap_or(&NULL)) {
        if let Some(n) = v.get("name").and_then(scalar) {
            volumes.insert(n.to_string(), v);
        }
    }
    for (key, value) in entries(pod) {
        let p = format!("{path}.{pod_path}.{}", key.name);
        match key.name.as_str() {
            "containers" | "initContainers" | "volumes" => {}
            "terminationGracePeriodSeconds" => {
                if let Some(s) = scalar(value).and_then(seconds) {
                    unit.set("stop_grace", text(s, value.span));
                }
            }
            "nodeSelector"
            | "affinity"
            | "tolerations"
            | "topologySpreadConstraints"
            | "priorityClassName"
            | "serviceAccountName"
            | "serviceAccount"
            | "automountServiceAccountToken"
            | "imagePullSecrets"
            | "schedulerName"
            | "restartPolicy"
            | "dnsPolicy"
            | "enableServiceLinks" => cx.ignored(
                value,
                &p,
                "scheduling and cluster identity mean nothing on one machine",
            ),
            _ => cx.unsupported(value, &p, "devstack has no equivalent of this pod field"),
        }
    }
    for (i, extra) in containers.iter().enumerate().skip(1) {
        cx.unsupported(
            extra,
            &format!("{path}.{pod_path}.containers[{i}]"),
            "a sidecar: devstack runs one container per replica",
        );
    }
    let cpath = format!("{path}.{pod_path}.containers[0]");
    let mut port_names = BTreeMap::new();
    let mut port = None;
    for (i, p) in items(main.get("ports").unwrap_or(&NULL)).iter().enumerate() {
        let Some(number) = p.get("containerPort").and_then(scalar) else {
            continue;
        };
        if let Some(n) = p.get("name").and_then(scalar) {
            port_names.insert(n.to_string(), number.to_string());
        }
        if let Some(host) = p.get("hostPort") {
            cx.unsupported(
                host,
                &format!("{cpath}.ports[{i}].hostPort"),
                "publish host ports with `ports` in an overlay",
            );
        }
        if port.is_none() {
            port = Some(number.to_string());
            unit.set("port", text(number, p.span));
        }
    }
    let mut resources = MapBuilder::new(main.span);
    let mut health: Option<(&Node, String)> = None;
    let mut env_out = None;
    for (key, value) in entries(main) {
        let p = format!("{cpath}.{}", key.name);
        match key.name.as_str() {
            "name" | "ports" | "env" | "envFrom" => {}
            "image" => unit.set("image", value.clone()),
            "command" => unit.set("entrypoint", value.clone()),
            "args" => unit.set("command", value.clone()),
            "readinessProbe" => health = Some((value, p)),
            "livenessProbe" => {
                if main.get("readinessProbe").is_some() {
                    cx.ignored(
                        value,
                        &p,
                        "devstack has one health check: the readiness probe's",
                    );
                } else {
                    health = Some((value, p));
                }
            }
            "startupProbe" => cx.ignored(value, &p, "devstack's `start_period` covers start-up"),
            "resources" => {
                let why = "devstack sets limits only; requests place pods on nodes";
                for (name, lv, lp) in resource_limits(value, &p, why, &mut cx.notes) {
                    let raw = scalar(lv).unwrap_or("");
                    let converted = match name {
                        "memory" => k8s_quantity_bytes(raw).map(|s| ("memory", s)),
                        "cpu" => k8s_cpus(raw).map(|s| ("cpus", s)),
                        "ephemeral-storage" => k8s_quantity_bytes(raw).map(|s| ("disk", s)),
                        _ => None,
                    };
                    match converted {
                        Some((field, v)) => resources.set(field, text(v, lv.span)),
                        None => cx.unsupported(lv, &lp, "not a limit devstack can set"),
                    }
                }
            }
            "volumeMounts" => {}
            "imagePullPolicy" | "terminationMessagePath" | "terminationMessagePolicy" => {
                cx.ignored(value, &p, "meaningless on one machine")
            }
            _ => cx.unsupported(
                value,
                &p,
                "devstack has no equivalent of this container field",
            ),
        }
    }
    let env = container_env(cx, main, &cpath);
    if !env.is_empty() {
        let mut m = MapBuilder::new(main.span);
        for (k, (v, span)) in &env {
            m.set(k, text(v.clone(), *span));
        }
        unit.set("env", m.build());
        env_out = Some(
            env.iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
        );
    }
    if let Some((probe_node, p)) = health {
        if let Some(h) = probe(cx, probe_node, &p, &port_names, port.as_deref()) {
            unit.set("health", h);
        }
    }
    if !resources.is_empty() {
        unit.set("resources", resources.build());
    }
    // Volumes: claims are named volumes, the data directory's is a datastore's `volume`.
    let data_dir = datastore.and_then(|k| {
        DatastoreKind::ALL
            .iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, kind)| kind.data_dir())
    });
    let claim_templates: Vec<String> = items(spec.get("volumeClaimTemplates").unwrap_or(&NULL))
        .iter()
        .filter_map(|t| {
            t.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(scalar)
        })
        .map(str::to_string)
        .collect();
    let mut mounts = Vec::new();
    for (i, m) in items(main.get("volumeMounts").unwrap_or(&NULL))
        .iter()
        .enumerate()
    {
        let mp = format!("{cpath}.volumeMounts[{i}]");
        let name = m.get("name").and_then(scalar).unwrap_or("");
        let target = m.get("mountPath").and_then(scalar).unwrap_or("");
        let read_only = m.get("readOnly").and_then(scalar) == Some("true");
        if m.get("subPath").is_some() {
            cx.unsupported(m, &child(&mp, "subPath"), "devstack mounts whole volumes");
            continue;
        }
        let volume_name = if claim_templates.iter().any(|t| t == name) {
            let shared = templates.get(name).copied().unwrap_or(0) > 1;
            let v = if name == "data" || shared {
                format!("{}-{name}", o.name)
            } else {
                name.to_string()
            };
            cx.inferred.push((
                child(&out_path, "volume"),
                format!("the `{name}` volume claim template"),
            ));
            Some(v)
        } else {
            match volumes.get(name) {
                Some(v) => {
                    if let Some(claim) = v.get("persistentVolumeClaim") {
                        claim.get("claimName").and_then(scalar).map(str::to_string)
                    } else {
                        let vp = format!("{path}.{pod_path}.volumes.{name}");
                        if v.get("emptyDir").is_some() {
                            cx.ignored(
                                v,
                                &vp,
                                "scratch space: the container's own filesystem holds it",
                            );
                        } else if v.get("configMap").is_some() || v.get("secret").is_some() {
                            cx.unsupported(v, &vp, "files from ConfigMaps and Secrets are not mounted; bind a directory in an overlay");
                        } else {
                            cx.unsupported(
                                v,
                                &vp,
                                "devstack mounts named volumes and host paths only",
                            );
                        }
                        None
                    }
                }
                None => {
                    cx.unsupported(m, &mp, "a mount of a volume the pod does not declare");
                    None
                }
            }
        };
        let Some(volume_name) = volume_name else {
            continue;
        };
        if datastore.is_some()
            && Some(target.trim_end_matches('/')) == data_dir
            && unit.get("volume").is_none()
        {
            unit.set("volume", text(volume_name, m.span));
            continue;
        }
        let ro = if read_only { ":ro" } else { "" };
        mounts.push(text(format!("{volume_name}:{target}{ro}"), m.span));
    }
    if !mounts.is_empty() {
        let span = mounts[0].span;
        unit.set(
            "volumes",
            Node {
                value: Value::Seq(mounts),
                span,
            },
        );
    }
    let mut inits = Vec::new();
    for (i, c) in items(pod.get("initContainers").unwrap_or(&NULL))
        .iter()
        .enumerate()
    {
        let ip = format!("{path}.{pod_path}.initContainers[{i}]");
        if let Some(one) = one_off(cx, c, &ip) {
            inits.push(one);
        }
    }
    let labels = entries(
        template
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .unwrap_or(&NULL),
    )
    .iter()
    .filter_map(|(k, v)| scalar(v).map(|v| (k.name.clone(), v.to_string())))
    .collect();
    Some(Workload {
        name: o.name.to_string(),
        labels,
        image,
        port_names,
        port,
        env: env_out,
        datastore,
        unit,
        inits,
    })
}

/// `env` and `envFrom`, with ConfigMap and Secret references resolved.
fn container_env(cx: &mut Cx, c: &Node, cpath: &str) -> BTreeMap<String, (String, Span)> {
    let mut env = BTreeMap::new();
    for (i, from) in items(c.get("envFrom").unwrap_or(&NULL)).iter().enumerate() {
        let p = format!("{cpath}.envFrom[{i}]");
        let prefix = from.get("prefix").and_then(scalar).unwrap_or("");
        let (source, name) = if let Some(r) = from.get("configMapRef") {
            (
                &cx.config_maps,
                r.get("name").and_then(scalar).unwrap_or(""),
            )
        } else if let Some(r) = from.get("secretRef") {
            (&cx.secrets, r.get("name").and_then(scalar).unwrap_or(""))
        } else {
            cx.unsupported(from, &p, "not an env source devstack can read");
            continue;
        };
        match source.get(name) {
            Some(data) => {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v.clone());
                }
            }
            None => {
                let optional = from
                    .get("configMapRef")
                    .or(from.get("secretRef"))
                    .and_then(|r| r.get("optional"))
                    .and_then(scalar)
                    == Some("true");
                if !optional {
                    cx.unsupported(
                        from,
                        &p,
                        &format!("`{name}` is not among the manifests given"),
                    );
                }
            }
        }
    }
    for (i, e) in items(c.get("env").unwrap_or(&NULL)).iter().enumerate() {
        let p = format!("{cpath}.env[{i}]");
        let Some(name) = e.get("name").and_then(scalar) else {
            continue;
        };
        if let Some(v) = e.get("value") {
            let value = scalar(v).unwrap_or("").to_string();
            if value.contains("$(") {
                cx.unsupported(
                    v,
                    &child(&p, "value"),
                    "devstack does not expand `$(VAR)` references",
                );
            }
            env.insert(name.to_string(), (value, v.span));
        } else if let Some(from) = e.get("valueFrom") {
            let (source, r) = if let Some(r) = from.get("configMapKeyRef") {
                (&cx.config_maps, r)
            } else if let Some(r) = from.get("secretKeyRef") {
                (&cx.secrets, r)
            } else {
                cx.unsupported(
                    from,
                    &child(&p, "valueFrom"),
                    "pod and node fields do not exist locally; set the value in an overlay",
                );
                continue;
            };
            let object = r.get("name").and_then(scalar).unwrap_or("");
            let key = r.get("key").and_then(scalar).unwrap_or("");
            match source.get(object).and_then(|d| d.get(key)) {
                Some(v) => {
                    env.insert(name.to_string(), v.clone());
                }
                None => cx.unsupported(
                    from,
                    &child(&p, "valueFrom"),
                    &format!("`{object}` key `{key}` is not among the manifests given"),
                ),
            }
        } else {
            env.insert(name.to_string(), (String::new(), e.span));
        }
    }
    env
}

fn probe(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    port_names: &BTreeMap<String, String>,
    port: Option<&str>,
) -> Option<Node> {
    let mut h = MapBuilder::new(node.span);
    let resolve_port = |n: &Node| -> Option<String> {
        let raw = scalar(n)?;
        if raw.parse::<u16>().is_ok() {
            Some(raw.to_string())
        } else {
            port_names.get(raw).cloned()
        }
    };
    for (key, value) in entries(node) {
        let p = child(path, &key.name);
        match key.name.as_str() {
            "httpGet" => {
                let at = value.get("port").and_then(resolve_port);
                h.set(
                    "http",
                    text(
                        value.get("path").and_then(scalar).unwrap_or("/"),
                        value.span,
                    ),
                );
                if at.as_deref() != port {
                    if let Some(at) = at {
                        h.set("port", text(at, value.span));
                    }
                }
                for (k, v) in entries(value) {
                    if k.name == "scheme" && scalar(v) == Some("HTTPS") {
                        cx.unsupported(
                            v,
                            &child(&p, "scheme"),
                            "devstack's http check speaks plain HTTP",
                        );
                    } else if !matches!(k.name.as_str(), "path" | "port" | "scheme") {
                        cx.unsupported(
                            v,
                            &child(&p, &k.name),
                            "devstack's http check sends a plain GET",
                        );
                    }
                }
            }
            "tcpSocket" => match value.get("port").and_then(resolve_port) {
                Some(at) => h.set("tcp", text(at, value.span)),
                None => cx.unsupported(value, &p, "a port devstack cannot resolve"),
            },
            "exec" => match value.get("command").and_then(words) {
                Some(argv) => h.set("command", texts(&argv, value.span)),
                None => cx.unsupported(value, &p, "an exec probe without a command"),
            },
            "periodSeconds" => set_seconds(&mut h, "interval", value),
            "timeoutSeconds" => set_seconds(&mut h, "timeout", value),
            "initialDelaySeconds" => set_seconds(&mut h, "start_period", value),
            "failureThreshold" => h.set("retries", value.clone()),
            "successThreshold" | "terminationGracePeriodSeconds" => {
                cx.ignored(value, &p, "one success makes a container healthy locally")
            }
            _ => cx.unsupported(value, &p, "a probe devstack cannot run"),
        }
    }
    h.get("http")
        .or(h.get("tcp"))
        .or(h.get("command"))
        .is_some()
        .then(|| h.build())
}

fn set_seconds(h: &mut MapBuilder, key: &str, value: &Node) {
    if let Some(s) = scalar(value).and_then(seconds) {
        h.set(key, text(s, value.span));
    }
}

fn one_off(cx: &mut Cx, c: &Node, path: &str) -> Option<OneOff> {
    let name = c.get("name").and_then(scalar).unwrap_or("").to_string();
    let image = c.get("image").and_then(scalar).unwrap_or("").to_string();
    let mut command: Vec<String> = c.get("command").and_then(words).unwrap_or_default();
    command.extend(c.get("args").and_then(words).unwrap_or_default());
    for (key, value) in entries(c) {
        match key.name.as_str() {
            "name" | "image" | "command" | "args" | "env" | "envFrom" => {}
            "resources" | "imagePullPolicy" => cx.ignored(
                value,
                &child(path, &key.name),
                "meaningless for a one-off locally",
            ),
            _ => cx.unsupported(
                value,
                &child(path, &key.name),
                "a one-off task has no equivalent",
            ),
        }
    }
    let env = container_env(cx, c, path);
    Some(OneOff {
        name,
        image,
        command: (!command.is_empty()).then_some(command),
        env,
        span: c.span,
    })
}

fn job(cx: &mut Cx, o: &Object) -> Option<OneOff> {
    let path = o.path();
    let pod = o
        .node
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .unwrap_or(&NULL);
    let containers = items(pod.get("containers").unwrap_or(&NULL));
    let c = containers.first()?;
    for (key, value) in entries(o.node.get("spec").unwrap_or(&NULL)) {
        if key.name != "template" {
            cx.ignored(
                value,
                &format!("{path}.spec.{}", key.name),
                "a task runs once, when its services start",
            );
        }
    }
    let mut one = one_off(cx, c, &format!("{path}.spec.template.spec.containers[0]"))?;
    one.name = o.name.to_string();
    Some(one)
}

/// A one-off as a task: the same one-off in several workloads (the same
/// init container in each) is one task that runs before all of them.
fn add_task(
    cx: &mut Cx,
    tasks: &mut Vec<(String, MapBuilder, Vec<String>, Span)>,
    one: &OneOff,
    before: Option<&str>,
    images: &[Owner],
) {
    if let Some((_, _, b, _)) = tasks.iter_mut().find(|(n, ..)| *n == one.name) {
        if let Some(before) = before {
            if !b.iter().any(|x| x == before) {
                b.push(before.to_string());
            }
        }
        return;
    }
    let mut task = MapBuilder::new(one.span);
    let owner = images.iter().find(|(i, _, _)| *i == one.image);
    match owner {
        Some((_, name, _)) => {
            task.set("service", text(name.clone(), one.span));
            cx.inferred.push((
                child(&child("tasks", &one.name), "service"),
                format!("it runs the image of `{name}`, with its environment"),
            ));
        }
        None => task.set("image", text(one.image.clone(), one.span)),
    }
    if let Some(command) = &one.command {
        task.set("command", texts(command, one.span));
    }
    let owner_env = owner.and_then(|(_, _, e)| e.clone()).unwrap_or_default();
    let mut env = MapBuilder::new(one.span);
    for (k, (v, span)) in &one.env {
        if owner_env.get(k) != Some(v) {
            env.set(k, text(v.clone(), *span));
        }
    }
    if !env.is_empty() {
        task.set("env", env.build());
    }
    tasks.push((
        one.name.clone(),
        task,
        before.map(|b| vec![b.to_string()]).unwrap_or_default(),
        one.span,
    ));
}

/// A Service: which workload it selects, and its port -> target port map.
fn service(cx: &mut Cx, o: &Object, workloads: &[Workload], targets: &mut ServiceTargets) {
    let path = o.path();
    let spec = o.node.get("spec").unwrap_or(&NULL);
    let selector: BTreeMap<String, String> = entries(spec.get("selector").unwrap_or(&NULL))
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|v| (k.name.clone(), v.to_string())))
        .collect();
    let selected: Vec<&Workload> = workloads
        .iter()
        .filter(|w| {
            !selector.is_empty() && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
        })
        .collect();
    let Some(w) = selected.first() else {
        cx.unsupported(
            o.node,
            &path,
            "selects no workload among the manifests given",
        );
        return;
    };
    if selected.len() > 1 {
        cx.unsupported(
            o.node,
            &format!("{path}.spec.selector"),
            "selects several workloads; devstack routes a name to one",
        );
    }
    if o.name != w.name {
        cx.unsupported(
            o.node,
            &path,
            &format!(
                "pods reach this as `{}` in production; locally the service is `{}`",
                o.name, w.name
            ),
        );
    }
    let mut ports = Vec::new();
    for p in items(spec.get("ports").unwrap_or(&NULL)) {
        let port = p.get("port").and_then(scalar).unwrap_or("").to_string();
        let name = p.get("name").and_then(scalar).unwrap_or("").to_string();
        let target = p
            .get("targetPort")
            .and_then(scalar)
            .map(|t| {
                w.port_names
                    .get(t)
                    .cloned()
                    .unwrap_or_else(|| t.to_string())
            })
            .unwrap_or_else(|| port.clone());
        ports.push((port, name, target));
    }
    for (key, value) in entries(spec) {
        let p = format!("{path}.spec.{}", key.name);
        match key.name.as_str() {
            "selector" | "ports" => {}
            "type" if matches!(scalar(value), Some("ClusterIP") | None) => {}
            "type" => cx.ignored(
                value,
                &p,
                "exposed outside the cluster; publish with `ports` in an overlay",
            ),
            "clusterIP" if scalar(value) == Some("None") => {}
            _ => cx.ignored(
                value,
                &p,
                "cluster networking; devstack reaches services by name",
            ),
        }
    }
    targets.insert(o.name.to_string(), (w.name.clone(), ports));
}

fn ingress(
    cx: &mut Cx,
    o: &Object,
    workloads: &[Workload],
    targets: &ServiceTargets,
    routes: &mut BTreeMap<String, Vec<Node>>,
) {
    let path = o.path();
    let annotations = o
        .node
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .unwrap_or(&NULL);
    let mut rewrite: Option<&str> = None;
    for (k, v) in entries(annotations) {
        let p = format!("{path}.metadata.annotations.{}", k.name);
        if k.name.ends_with("/rewrite-target") {
            rewrite = scalar(v);
        } else if k.name.ends_with("/use-regex") {
        } else if k.name.contains("ingress") {
            cx.unsupported(
                v,
                &p,
                "an ingress controller setting devstack's proxy does not apply",
            );
        }
    }
    let spec = o.node.get("spec").unwrap_or(&NULL);
    for (key, value) in entries(spec) {
        let p = format!("{path}.spec.{}", key.name);
        match key.name.as_str() {
            "rules" => {}
            "tls" => cx.ignored(value, &p, "devstack's proxy serves plain HTTP locally"),
            "ingressClassName" => cx.ignored(value, &p, "devstack has one proxy for every route"),
            _ => cx.unsupported(value, &p, "devstack routes by host and path only"),
        }
    }
    for (i, rule) in items(spec.get("rules").unwrap_or(&NULL)).iter().enumerate() {
        let host = rule.get("host");
        let paths = rule
            .get("http")
            .and_then(|h| h.get("paths"))
            .unwrap_or(&NULL);
        for (j, entry) in items(paths).iter().enumerate() {
            let ep = format!("{path}.spec.rules[{i}].http.paths[{j}]");
            let backend = entry.get("backend").unwrap_or(&NULL);
            let (svc, port_node) = match backend.get("service") {
                Some(s) => (s.get("name").and_then(scalar), s.get("port")),
                None => (
                    backend.get("serviceName").and_then(scalar),
                    backend.get("servicePort"),
                ),
            };
            let Some((workload, ports)) = svc.and_then(|s| targets.get(s)) else {
                cx.unsupported(
                    entry,
                    &ep,
                    "the backend is not a Service among the manifests given",
                );
                continue;
            };
            let wanted = port_node.and_then(|p| {
                p.get("number")
                    .or(p.get("name"))
                    .and_then(scalar)
                    .or(scalar(p))
            });
            let target = match wanted {
                Some(want) => ports
                    .iter()
                    .find(|(port, name, _)| port == want || name == want)
                    .map(|(_, _, t)| t.clone()),
                None => ports.first().map(|(_, _, t)| t.clone()),
            };
            if entry.get("pathType").and_then(scalar) == Some("Exact") {
                cx.unsupported(
                    entry,
                    &child(&ep, "pathType"),
                    "devstack routes by path prefix; this exact path becomes a prefix",
                );
            }
            let span = entry.span;
            let mut r = MapBuilder::new(span);
            if let Some(h) = host {
                r.set("host", h.clone());
            }
            // ingress-nginx strips a prefix with `rewrite-target: /$2` on
            // `/prefix(/|$)(.*)`, or `rewrite-target: /` on `/prefix`.
            let raw = entry.get("path").and_then(scalar).unwrap_or("/");
            let (prefix, strip) = match raw.strip_suffix("(/|$)(.*)") {
                Some(base) => (base, rewrite.is_some_and(|r| r.starts_with("/$"))),
                None => (raw, rewrite == Some("/")),
            };
            if rewrite.is_some() && !strip {
                cx.unsupported(
                    entry,
                    &child(&ep, "path"),
                    "a rewrite devstack's proxy does not make (it strips a path prefix only)",
                );
            }
            if prefix != "/" && !prefix.is_empty() {
                r.set("path", text(prefix, span));
                if strip {
                    r.set("strip_prefix", text("true", span));
                    cx.inferred.push((
                        child(&child("services", workload), "routes"),
                        "the ingress rewrite strips the path prefix".into(),
                    ));
                }
            }
            let own = workloads
                .iter()
                .find(|w| w.name == *workload)
                .and_then(|w| w.port.clone());
            if let Some(t) = target.filter(|t| Some(t) != own.as_ref()) {
                r.set("port", text(t, span));
            }
            routes.entry(workload.clone()).or_default().push(r.build());
        }
    }
}
