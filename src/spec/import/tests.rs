//! Imports checked against the hand-written devstack versions of the same
//! stacks, and bad input checked for positioned errors.

use std::path::PathBuf;

use proptest::prelude::*;

use super::*;
use crate::spec::load::{load, load_with_notes, LoadOptions};
use crate::spec::{Report, Stack};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_files(files: &[&str]) -> Result<crate::spec::Loaded, Report> {
    let mut options = LoadOptions::new(files.iter().map(|f| root().join(f)).collect());
    options.env.clear();
    load_with_notes(&options)
}

fn stack(files: &[&str]) -> Stack {
    load_files(files)
        .unwrap_or_else(|r| panic!("{}", r.render(false)))
        .stack
}

/// The same effective stack: equal in everything but the directory the
/// files were read from (a JSON diff first, to show where they part).
fn assert_same(mut imported: Stack, written: Stack) {
    imported.dir = written.dir.clone();
    assert_eq!(
        serde_json::to_string_pretty(&imported).unwrap(),
        serde_json::to_string_pretty(&written).unwrap()
    );
    assert!(imported == written, "they differ outside the JSON form");
}

fn inline(name: &str, text: &str) -> Result<crate::spec::Loaded, Report> {
    load_with_notes(&LoadOptions::inline(name, text))
}

/// Every problem points inside its file, and the report renders.
fn check_report(report: &Report) {
    assert!(!report.problems.is_empty());
    for problem in &report.problems {
        if let Some(span) = problem.span {
            let len = report.sources.text(span.file).len();
            assert!(span.start <= span.end && span.end <= len, "{problem:?}");
        }
    }
    let _ = report.render(false);
}

#[test]
fn compose_events_is_the_events_stack() {
    let imported = stack(&[
        "fixtures/import/events/compose.yaml",
        "fixtures/import/events/laptop.yaml",
    ]);
    let written = stack(&["stacks/events/devstack.yaml"]);
    assert_same(imported, written);
}

#[test]
fn kubernetes_opinions_is_the_opinions_stack() {
    let imported = stack(&[
        "fixtures/import/opinions/k8s",
        "fixtures/import/opinions/laptop.yaml",
    ]);
    let written = stack(&["stacks/opinions/devstack.yaml"]);
    assert_same(imported, written);
}

/// (class, path) of each note, to compare whole lists.
fn notes_of(loaded: &crate::spec::Loaded) -> Vec<(Class, String)> {
    loaded
        .notes
        .iter()
        .map(|n| (n.class, n.path.clone()))
        .collect()
}

#[test]
fn compose_report_lists_each_field_left_out_once() {
    let loaded = load_files(&[
        "fixtures/import/events/compose.yaml",
        "fixtures/import/events/laptop.yaml",
    ])
    .unwrap_or_else(|r| panic!("{}", r.render(false)));
    use Class::*;
    let expected: Vec<(Class, String)> = [
        (Ignored, "services.registration.container_name"),
        (Ignored, "services.registration.depends_on.memcached"),
        (
            Ignored,
            "services.registration.deploy.resources.reservations",
        ),
        (Ignored, "services.registration.logging"),
        (Ignored, "services.migrate-registration.depends_on"),
        (Ignored, "services.ticket-shop.deploy.placement"),
        (Ignored, "services.matchmaking-api.depends_on.memcached"),
        (
            Unsupported,
            "services.matchmaking-api.networks.default.aliases",
        ),
        (Ignored, "services.migrate-matchmaking.depends_on"),
        (Unsupported, "services.mailhog.profiles"),
        (Unsupported, "volumes.wp-content.driver"),
    ]
    .into_iter()
    .map(|(c, p)| (c, p.to_string()))
    .collect();
    assert_eq!(notes_of(&loaded), expected);
    // Positions are the user's: the alias list is on line 85 of the file.
    let alias = &loaded.notes[7];
    let (line, _) = loaded.sources.line_col(alias.span.file, alias.span.start);
    assert_eq!(line, 85);
}

#[test]
fn kubernetes_report_lists_sidecars_field_refs_and_cluster_objects() {
    let loaded = load_files(&[
        "fixtures/import/opinions/k8s",
        "fixtures/import/opinions/laptop.yaml",
    ])
    .unwrap_or_else(|r| panic!("{}", r.render(false)));
    let notes = notes_of(&loaded);
    for (class, path) in [
        (
            Class::Unsupported,
            "StatefulSet/kafka.spec.template.spec.containers[1]",
        ),
        (
            Class::Unsupported,
            "StatefulSet/kafka.spec.template.spec.containers[0].env[5].valueFrom",
        ),
        (
            Class::Ignored,
            "StatefulSet/mongo.spec.template.spec.nodeSelector",
        ),
        (Class::Ignored, "Ingress/opinions.spec.tls"),
        (Class::Ignored, "HorizontalPodAutoscaler/gateway"),
        (
            Class::Ignored,
            "Deployment/admin.spec.template.spec.containers[0].livenessProbe",
        ),
    ] {
        assert!(
            notes.contains(&(class, path.to_string())),
            "{path} missing from {notes:#?}"
        );
    }
    // Each field once.
    let mut paths: Vec<&String> = notes.iter().map(|(_, p)| p).collect();
    let all = paths.len();
    paths.dedup();
    assert_eq!(paths.len(), all);
}

#[test]
fn secrets_jobs_and_daemonsets_translate() {
    let text = "\
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
data:
  PASSWORD: aHVudGVyMg==
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: shop}
spec:
  template:
    spec:
      containers:
        - name: agent
          image: shop/agent:1
          args: [--verbose]
          env:
            - name: DB_PASSWORD
              valueFrom: {secretKeyRef: {name: creds, key: PASSWORD}}
            - {name: PRICE, value: $5}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  backoffLimit: 2
  template:
    spec:
      containers:
        - name: migrate
          image: shop/agent:1
          command: [migrate, up]
";
    let loaded = inline("k8s.yaml", text).unwrap_or_else(|r| panic!("{}", r.render(false)));
    let s = loaded.stack;
    assert_eq!(s.name, "shop");
    let agent = &s.services["agent"].container;
    assert_eq!(agent.replicas, 1);
    assert_eq!(agent.env["DB_PASSWORD"], "hunter2");
    // A manifest's `$` is literal: no interpolation happened.
    assert_eq!(agent.env["PRICE"], "$5");
    assert_eq!(agent.command, Some(vec!["--verbose".to_string()]));
    let task = &s.tasks["migrate"];
    assert_eq!(task.service.as_deref(), Some("agent"));
    assert_eq!(task.command, Some(vec!["migrate".into(), "up".into()]));
    assert!(loaded
        .notes
        .iter()
        .any(|n| n.path == "Job/migrate.spec.backoffLimit" && n.class == Class::Ignored));
}

#[test]
fn compose_watch_build_and_ports_translate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM scratch\n").unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(
        &file,
        "\
name: shop
services:
  web:
    build: {context: ./app, args: {MODE: dev}}
    ports: ['127.0.0.1:8090:3000']
    develop:
      watch:
        - {action: sync, path: ./app, target: /srv, ignore: [node_modules/]}
        - {action: rebuild, path: ./app/package.json}
    healthcheck:
      test: curl -f http://localhost:3000/ready || exit 1
      interval: 1m30s
  cache:
    image: redis:7.2
    tmpfs: /tmp
",
    )
    .unwrap();
    let mut options = LoadOptions::new(vec![file]);
    options.env.clear();
    let loaded = load_with_notes(&options).unwrap_or_else(|r| panic!("{}", r.render(false)));
    let web = &loaded.stack.services["web"];
    assert_eq!(web.container.port, Some(3000));
    assert_eq!(web.container.ports[0].host_port, Some(8090));
    let build = web.container.build.as_ref().unwrap();
    assert_eq!(build.args["MODE"], "dev");
    let watch = web.watch.as_ref().unwrap();
    assert_eq!(watch.action, crate::spec::WatchAction::Sync);
    assert_eq!(watch.target.as_deref(), Some("/srv"));
    assert_eq!(watch.rebuild_on, vec!["package.json".to_string()]);
    assert_eq!(
        web.container.health.as_ref().map(|h| &h.probe),
        Some(&crate::spec::Probe::Http {
            port: 3000,
            path: "/ready".into()
        })
    );
    assert_eq!(
        loaded.stack.datastores["cache"].kind,
        crate::spec::DatastoreKind::Redis
    );
    assert!(loaded
        .notes
        .iter()
        .any(|n| n.path == "services.cache.tmpfs" && n.class == Class::Unsupported));
}

#[test]
fn bad_values_in_imported_files_point_into_them() {
    // A bad duration in a Compose healthcheck: the error is on its line.
    let text = "name: x\nservices:\n  api:\n    image: a:1\n    expose: ['80']\n    healthcheck:\n      test: [CMD, curl, -f, http://localhost/]\n      interval: five seconds\n";
    let report = inline("compose.yaml", text).unwrap_err();
    check_report(&report);
    let problem = &report.problems[0];
    let span = problem.span.unwrap();
    assert_eq!(report.sources.line_col(span.file, span.start).0, 8);
    assert!(problem.message.contains("duration"), "{problem:?}");

    // A manifest's replicas that are not a number.
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: n}\nspec:\n  replicas: two\n  template:\n    spec:\n      containers: [{name: web, image: 'web:1'}]\n";
    let report = inline("web.yaml", text).unwrap_err();
    check_report(&report);
    let span = report.problems[0].span.unwrap();
    assert_eq!(report.sources.line_col(span.file, span.start).0, 5);
}

#[test]
fn a_directory_of_manifests_refuses_other_files_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.yaml"), "name: x\nservices: {}\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not read").unwrap();
    let report = load(&LoadOptions::new(vec![dir.path().to_path_buf()])).unwrap_err();
    check_report(&report);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let span = report.problems[0].span.unwrap();
    assert!(report.sources.name(span.file).ends_with("b.yaml"));
    assert!(report.problems[0]
        .message
        .contains("not a Kubernetes object"));
}

#[test]
fn devstack_files_keep_todays_errors() {
    // Two documents in a stack file are still refused as before.
    let report = inline("devstack.yaml", "name: a\n---\nname: b\n").unwrap_err();
    assert!(report.problems[0].message.contains("second `---`"));
    // A Compose-shaped file with a devstack key is devstack's, with its errors.
    let report = inline(
        "devstack.yaml",
        "name: a\nservices:\n  web:\n    image: a:1\n    environment: {A: b}\n    port: 80\n",
    )
    .unwrap_err();
    assert!(report.problems[0]
        .message
        .contains("unknown field `environment`"));
}

#[test]
fn every_good_fixture_is_read_as_devstack() {
    for entry in std::fs::read_dir(root().join("fixtures/good")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Ok(docs) = crate::spec::yaml::parse_documents(0, &text) {
            assert_eq!(detect(&docs), Format::Devstack, "{}", path.display());
        }
    }
}

#[test]
fn import_writes_a_stack_file_that_loads_the_same() {
    let out_dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = [
        "fixtures/import/opinions/k8s",
        "fixtures/import/opinions/laptop.yaml",
    ]
    .iter()
    .map(|f| root().join(f))
    .collect();
    let imported = files::import_files(&files, out_dir.path()).unwrap();
    assert!(imported
        .text
        .contains("# inferred: a datastore: `mongo:4.4.29` is a mongodb image"));
    assert!(imported.text.contains("unsupported: StatefulSet/kafka"));
    let out = out_dir.path().join("devstack.yaml");
    std::fs::write(&out, &imported.text).unwrap();
    let mut options = LoadOptions::new(vec![out]);
    options.env.clear();
    let written =
        load(&options).unwrap_or_else(|r| panic!("{}\n{}", r.render(false), imported.text));
    assert_same(written, stack(&["stacks/opinions/devstack.yaml"]));
}

#[test]
fn import_keeps_compose_variables_as_variables() {
    let out_dir = tempfile::tempdir().unwrap();
    let files = vec![
        root().join("fixtures/import/events/compose.yaml"),
        root().join("fixtures/import/events/laptop.yaml"),
    ];
    let imported = files::import_files(&files, out_dir.path()).unwrap();
    assert!(
        imported.text.contains("${DB_PASSWORD:-events}"),
        "{}",
        imported.text
    );
    let out = out_dir.path().join("devstack.yaml");
    std::fs::write(&out, &imported.text).unwrap();
    let mut options = LoadOptions::new(vec![out]);
    options.env.clear();
    let written =
        load(&options).unwrap_or_else(|r| panic!("{}\n{}", r.render(false), imported.text));
    assert_same(written, stack(&["stacks/events/devstack.yaml"]));
}

fn mutated(text: &str, start: usize, len: usize, insert: &str) -> String {
    let mut text = text.to_string();
    let start = start.min(text.len());
    let start = (0..=start)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let end = (start + len).min(text.len());
    let end = (end..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text.replace_range(start..end, insert);
    text
}

const COMPOSE: &str = include_str!("../../../fixtures/import/events/compose.yaml");
const UNIT: &str = include_str!("../../../fixtures/import/opinions/fleet/elasticsearch.service");
const MANIFESTS: &str = include_str!("../../../fixtures/import/opinions/k8s/datastores.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// A Compose file with a stretch cut out or replaced: a stack or a report, never a panic.
    #[test]
    fn mutated_compose_never_panics(start in 0usize..6000, len in 0usize..40, insert in "\\PC{0,8}") {
        if let Err(report) = inline("compose.yaml", &mutated(COMPOSE, start, len, &insert)) {
            check_report(&report);
        }
    }

    /// The same for fleet units.
    #[test]
    fn mutated_units_never_panic(start in 0usize..900, len in 0usize..40, insert in "\\PC{0,8}") {
        if let Err(report) = inline("elasticsearch.service", &mutated(UNIT, start, len, &insert)) {
            check_report(&report);
        }
    }

    /// The same for manifests.
    #[test]
    fn mutated_manifests_never_panic(start in 0usize..4000, len in 0usize..40, insert in "\\PC{0,8}") {
        if let Err(report) = inline("k8s.yaml", &mutated(MANIFESTS, start, len, &insert)) {
            check_report(&report);
        }
    }
}

/// A stack as JSON with the orders fleet cannot give left out: units are
/// files in name order, so services and `before` lists are sorted.
fn unordered(stack: &Stack) -> serde_json::Value {
    let mut value = serde_json::to_value(stack).unwrap();
    if let Some(tasks) = value.get_mut("tasks").and_then(|t| t.as_object_mut()) {
        for task in tasks.values_mut() {
            if let Some(before) = task.get_mut("before").and_then(|b| b.as_array_mut()) {
                before.sort_by_key(|v| v.to_string());
            }
        }
    }
    // serde_json's maps compare as maps: service order does not count.
    value
}

#[test]
fn fleet_opinions_is_the_opinions_stack() {
    let loaded = load_files(&[
        "fixtures/import/opinions/fleet",
        "fixtures/import/opinions/fleet-laptop.yaml",
    ])
    .unwrap_or_else(|r| panic!("{}", r.render(false)));
    let written = stack(&["stacks/opinions/devstack.yaml"]);
    assert_eq!(unordered(&loaded.stack), unordered(&written));
    let notes = notes_of(&loaded);
    for (class, path) in [
        (
            Class::Unsupported,
            "Unit/kafka.ExecStart.-e.KAFKA_CFG_ADVERTISED_LISTENERS",
        ),
        (
            Class::Unsupported,
            "Unit/elasticsearch.ExecStart.--ulimit memlock=-1:-1",
        ),
        (
            Class::Unsupported,
            "Unit/elasticsearch.Service.LimitMEMLOCK",
        ),
        (Class::Ignored, "Unit/web@.X-Fleet.Conflicts"),
        (Class::Ignored, "Unit/mongo.X-Fleet.MachineMetadata"),
        (Class::Ignored, "Unit/create-topics.Unit.After"),
    ] {
        assert!(
            notes.contains(&(class, path.to_string())),
            "{path} missing from {notes:#?}"
        );
    }
}

#[test]
fn presence_units_become_the_registry_layout() {
    let web = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/usr/bin/docker run --rm -p 3000 shop/web:1\n";
    let presence = "[Unit]\nBindsTo=web@%i.service\n\n[Service]\nExecStart=/bin/sh -c \"while true; do etcdctl set /shop/services/web/%H:%i up --ttl 60; sleep 45; done\"\n";
    let mut sources = crate::spec::diagnostic::Sources::default();
    let a = sources.add("web@.service".into(), web.into());
    let b = sources.add("web-presence@.service".into(), presence.into());
    let t = fleet::translate(&[
        fleet::Unit::parse(a, "web@.service", web),
        fleet::Unit::parse(b, "web-presence@.service", presence),
    ]);
    let discovery = t.tree.get("discovery").expect("a discovery section");
    assert_eq!(
        discovery.get("prefix").and_then(tree::scalar),
        Some("/shop/services")
    );
    assert_eq!(discovery.get("ttl").and_then(tree::scalar), Some("60s"));
    assert!(t
        .tree
        .get("services")
        .and_then(|s| s.get("web-presence"))
        .is_none());
    let web = t.tree.get("services").and_then(|s| s.get("web")).unwrap();
    assert_eq!(web.get("port").and_then(tree::scalar), Some("3000"));
}

#[test]
fn a_unit_file_is_never_read_as_yaml_and_a_stack_never_as_a_unit() {
    // A unit with a broken ExecStart: reported, not a YAML error.
    let loaded = inline(
        "web.service",
        "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/docker run -e\n",
    );
    let report = loaded.unwrap_err();
    check_report(&report);
    assert!(
        report
            .problems
            .iter()
            .all(|p| !p.message.contains("invalid YAML")),
        "{:?}",
        report.problems
    );
    for text in [
        include_str!("../../../stacks/events/devstack.yaml"),
        include_str!("../../../stacks/opinions/devstack.yaml"),
    ] {
        assert!(!fleet::is_unit(text));
    }
}

#[test]
fn an_imported_file_without_a_name_says_to_name_it_in_an_overlay() {
    let report = inline(
        "web.service",
        "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/docker run --rm web:1\n",
    )
    .unwrap_err();
    check_report(&report);
    let problem = report.problems.iter().find(|p| p.path == "name").unwrap();
    assert!(
        problem
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("overlay")),
        "{problem:?}"
    );
}
