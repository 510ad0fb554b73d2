//! Exports read back through the importers into the stack they came from,
//! less what the export lists as left out; manifests checked against the
//! Kubernetes API types.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;
use crate::spec::load::{load, LoadOptions};
use crate::spec::Stack;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stack_of(name: &str) -> Stack {
    let mut options =
        LoadOptions::new(vec![root().join("stacks").join(name).join("devstack.yaml")]);
    options.env.clear();
    load(&options).unwrap_or_else(|r| panic!("{}", r.render(false)))
}

/// Loads exported text as if it were `file` in the stack's directory,
/// with an overlay (also in memory) laid over it.
fn read_back(dir: &Path, file: &str, text: &str, overlay: &str) -> Stack {
    let options = LoadOptions {
        files: vec![dir.join(file), dir.join("laptop.yaml")],
        env: Default::default(),
        contents: Some(vec![text.to_string(), overlay.to_string()]),
    };
    load(&options).unwrap_or_else(|r| panic!("{}\n{text}", r.render(false)))
}

/// `services.web.ports[0].host_ip` as keys and indexes.
enum Step {
    Key(String),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        out.push(Step::Key(key.to_string()));
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Step::Index(i));
            }
        }
    }
    out
}

fn get<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(*i),
    })
}

/// Puts `value` at `path` (removes what is there when `None`).
fn put(v: &mut Value, path: &[Step], value: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = v;
    for step in parents {
        at = match step {
            Step::Key(k) => {
                let Value::Object(map) = at else { return };
                map.entry(k.clone())
                    .or_insert_with(|| Value::Object(Default::default()))
            }
            Step::Index(i) => match at.get_mut(*i) {
                Some(next) => next,
                None => return,
            },
        };
    }
    match (last, at, value) {
        (Step::Key(k), Value::Object(map), Some(value)) => {
            map.insert(k.clone(), value);
        }
        (Step::Key(k), Value::Object(map), None) => {
            map.remove(k);
        }
        (Step::Index(i), Value::Array(list), Some(value)) if *i < list.len() => list[*i] = value,
        (Step::Index(i), Value::Array(list), Some(value)) if *i == list.len() => list.push(value),
        (Step::Index(i), Value::Array(list), None) if *i < list.len() => {
            list.remove(*i);
        }
        _ => {}
    }
}

/// The two stacks are equal once every path the export listed as left out
/// takes the original's value.
fn assert_same_but_lost(original: &Stack, mut imported: Stack, lost: &[Lost]) {
    imported.dir = original.dir.clone();
    let want = serde_json::to_value(original).unwrap();
    let mut got = serde_json::to_value(&imported).unwrap();
    for l in lost {
        let path = steps(&l.path);
        put(&mut got, &path, get(&want, &path).cloned());
    }
    assert_eq!(
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&want).unwrap()
    );
}

fn compose_round_trip(name: &str) -> Vec<Lost> {
    let original = stack_of(name);
    let dir = root().join("stacks").join(name);
    let export = compose::export(&original, name, &dir);
    let text = export.joined();
    let imported = read_back(&dir, "compose.yaml", &text, &format!("name: {name}\n"));
    assert_same_but_lost(&original, imported, &export.lost);
    export.lost
}

fn k8s_round_trip(name: &str) -> Vec<Lost> {
    let original = stack_of(name);
    let dir = root().join("stacks").join(name);
    let export = k8s::export(&original, name, name);
    check_against_api_types(&export.joined());
    let imported = read_back(&dir, "manifests.yaml", &export.joined(), "{}\n");
    assert_same_but_lost(&original, imported, &export.lost);
    export.lost
}

fn paths(lost: &[Lost]) -> Vec<&str> {
    lost.iter().map(|l| l.path.as_str()).collect()
}

#[test]
fn compose_events_reads_back_less_its_tasks() {
    let lost = compose_round_trip("events");
    assert_eq!(
        paths(&lost),
        [
            "services.registration.env_file",
            "services.ticket-shop.env.REGISTRATION_URL",
            "services.matchmaking-admin.env_file",
            "services.matchmaking-admin.env.MATCHMAKING_API",
            "tasks.migrate-registration",
            "tasks.migrate-matchmaking",
            "name",
            "discovery",
            "proxy",
        ]
    );
}

#[test]
fn compose_giveaway_keeps_builds_and_loses_watch() {
    let lost = compose_round_trip("giveaway");
    assert_eq!(
        paths(&lost),
        ["services.app.watch", "name", "discovery", "proxy"]
    );
    let original = stack_of("giveaway");
    let text = compose::export(&original, "giveaway", &original.dir).joined();
    assert!(text.contains("image: giveaway/app:dev # the tag devstack builds"));
    assert!(text.contains("context: ./app"));
}

#[test]
fn compose_opinions_reads_back_less_disk_and_tasks() {
    let lost = compose_round_trip("opinions");
    assert_eq!(
        paths(&lost),
        [
            "services.media.resources.disk",
            "tasks.create-topics",
            "name",
            "discovery",
            "proxy",
        ]
    );
}

#[test]
fn compose_escapes_dollars_and_names_the_built_tag() {
    let text = "name: shop\nservices:\n  api:\n    build: ./app\n    port: 80\n    command: [sh, -c, 'echo $$HOME']\n";
    let dir = root().join("stacks/giveaway");
    let options = LoadOptions {
        files: vec![dir.join("devstack.yaml")],
        env: Default::default(),
        contents: Some(vec![text.into()]),
    };
    let stack = load(&options).unwrap_or_else(|r| panic!("{}", r.render(false)));
    let out = compose::export(&stack, "shop", &dir).joined();
    assert!(out.contains("- echo $$HOME"), "{out}");
    assert!(
        out.contains("image: devstack-built:shop.api # the tag devstack builds"),
        "{out}"
    );
    let back = read_back(&dir, "compose.yaml", &out, "name: shop\n");
    assert_eq!(
        back.services["api"].container.command.as_deref(),
        Some(&["sh".to_string(), "-c".into(), "echo $HOME".into()][..])
    );
}

#[test]
fn k8s_events_reads_back_less_start_order_and_seed() {
    let lost = k8s_round_trip("events");
    let lost = paths(&lost);
    assert!(lost.contains(&"services.registration.depends_on"));
    assert!(lost.contains(&"datastores.mariadb.seed"));
    // Every unit reached by name has a Service: memcached through its TCP check.
    assert!(!lost.iter().any(|p| p.ends_with(".port")), "{lost:?}");
}

#[test]
fn k8s_giveaway_reads_back_less_builds_and_host_paths() {
    let lost = k8s_round_trip("giveaway");
    let lost = paths(&lost);
    for path in [
        "services.app.build",
        "services.app.watch",
        "services.nginx.volumes[0]",
        "services.worker.port",
    ] {
        assert!(lost.contains(&path), "{path} not in {lost:?}");
    }
}

#[test]
fn k8s_opinions_reads_back_less_start_order_and_pids() {
    let lost = k8s_round_trip("opinions");
    let lost = paths(&lost);
    assert!(lost.contains(&"services.web.resources.pids"));
    assert!(lost.contains(&"tasks.create-topics.before"));
    assert!(!lost.contains(&"services.media.resources.disk"));
}

#[test]
fn k8s_strips_prefixes_with_the_rewrite_the_importer_reads() {
    let original = stack_of("events");
    let export = k8s::export(&original, "events", "events");
    let api = &export
        .files
        .iter()
        .find(|(f, _)| f == "matchmaking-api.yaml")
        .unwrap()
        .1;
    assert!(api.contains("path: /matchmaking(/|$)(.*)"), "{api}");
    assert!(api.contains("nginx.ingress.kubernetes.io/rewrite-target: /$2"));
}

/// Each document deserialised into its Kubernetes API type and serialised
/// again gives the same document: a field the type does not have (a typo,
/// a field at the wrong level) is dropped by the typed struct, so the two
/// differ.
fn check_against_api_types(text: &str) {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).unwrap();
        let kind = value["kind"].as_str().unwrap_or("").to_string();
        let typed = match typed_round_trip(&kind, value.clone()) {
            Ok(v) => v,
            Err(e) => panic!("{kind} does not deserialise: {e}\n{value:#}"),
        };
        assert_eq!(typed, value, "{kind} has fields its API type lacks");
    }
}

use serde::Deserialize;

fn typed_round_trip(kind: &str, value: Value) -> Result<Value, String> {
    use k8s_openapi::api::{apps, batch, core, networking};
    fn again<T: serde::de::DeserializeOwned + serde::Serialize>(
        value: Value,
    ) -> Result<Value, String> {
        let typed: T = serde_json::from_value(value).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
    match kind {
        "Deployment" => again::<apps::v1::Deployment>(value),
        "StatefulSet" => again::<apps::v1::StatefulSet>(value),
        "Service" => again::<core::v1::Service>(value),
        "ConfigMap" => again::<core::v1::ConfigMap>(value),
        "Secret" => again::<core::v1::Secret>(value),
        "PersistentVolumeClaim" => again::<core::v1::PersistentVolumeClaim>(value),
        "Ingress" => again::<networking::v1::Ingress>(value),
        "Job" => again::<batch::v1::Job>(value),
        other => Err(format!("`{other}` is not a kind export writes")),
    }
}

#[test]
fn api_type_check_catches_a_misplaced_field() {
    let doc = "apiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec:\n  selector: { app: web }\n  ports: [{ port: 80, targetport: 80 }]\n";
    let value: Value = serde_yaml::from_str(doc).unwrap();
    let typed = typed_round_trip("Service", value.clone()).unwrap();
    assert_ne!(typed, value);
}

#[test]
fn a_task_before_nothing_is_a_job() {
    let text = "name: shop\nservices:\n  api: { image: 'shop/api:1', port: 80 }\ntasks:\n  backfill: { service: api, command: ./backfill }\n";
    let stack = load(&LoadOptions::inline("devstack.yaml", text))
        .unwrap_or_else(|r| panic!("{}", r.render(false)));
    let export = k8s::export(&stack, "shop", "shop");
    let jobs = &export
        .files
        .iter()
        .find(|(f, _)| f == "jobs.yaml")
        .unwrap()
        .1;
    assert!(jobs.contains("kind: Job"));
    assert!(jobs.contains("restartPolicy: Never"));
    check_against_api_types(&export.joined());
}

#[test]
fn names_that_are_not_dns_labels_are_listed() {
    let text = "name: shop\nservices:\n  api_v2: { image: 'shop/api:1', port: 80 }\n";
    let stack = load(&LoadOptions::inline("devstack.yaml", text))
        .unwrap_or_else(|r| panic!("{}", r.render(false)));
    let export = k8s::export(&stack, "shop", "Shop");
    let lost = paths(&export.lost);
    assert!(lost.contains(&"name"), "{lost:?}");
    assert!(lost.contains(&"services.api_v2"), "{lost:?}");
}

#[test]
fn sizes_take_the_largest_unit_that_divides_them() {
    assert_eq!(size_text(384 << 20, ["k", "m", "g"]), "384m");
    assert_eq!(size_text(1 << 30, ["Ki", "Mi", "Gi"]), "1Gi");
    assert_eq!(size_text(1536, ["k", "m", "g"]), "1536");
    assert_eq!(size_text(3 << 10, ["k", "m", "g"]), "3k");
}

/// Without the routing mesh every published port is the node's own
/// (`mode: host`) and every service is found by DNS round robin; the file
/// reads back as the same stack.
#[test]
fn compose_without_the_routing_mesh_publishes_on_the_node() {
    let text = "name: shop
services:
  api: { image: 'shop/api:1', port: 80, ports: ['80'], replicas: 2 }
  admin: { image: 'shop/admin:1', port: 80, ports: ['127.0.0.1:9000:80'] }
  worker: { image: 'shop/worker:1' }
";
    let dir = root().join("stacks/giveaway");
    let options = LoadOptions {
        files: vec![dir.join("devstack.yaml")],
        env: Default::default(),
        contents: Some(vec![text.into()]),
    };
    let stack = load(&options).unwrap_or_else(|r| panic!("{}", r.render(false)));
    let mesh = compose::export(&stack, "shop", &dir).joined();
    assert!(!mesh.contains("mode: host"), "{mesh}");
    assert!(!mesh.contains("endpoint_mode"), "{mesh}");
    let export = compose::export_with(&stack, "shop", &dir, compose::Routing::Direct);
    let out = export.joined();
    let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    let mut published = Vec::new();
    for (name, service) in doc["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert_eq!(
            service["deploy"]["endpoint_mode"].as_str(),
            Some("dnsrr"),
            "{name}: {out}"
        );
        for port in service["ports"].as_sequence().into_iter().flatten() {
            assert_eq!(port["mode"].as_str(), Some("host"), "{name}: {out}");
            published.push((name.to_string(), port["published"].as_u64()));
        }
    }
    assert_eq!(
        published,
        [("api".to_string(), None), ("admin".to_string(), Some(9000))],
        "{out}"
    );
    let back = read_back(&dir, "compose.yaml", &out, "name: shop\n");
    assert_same_but_lost(&stack, back, &export.lost);
}
