//! Decoding and validation, checked on inline stacks: one helper per outcome.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

fn ok(yaml: &str) -> Stack {
    load(&LoadOptions::inline("t.yaml", yaml)).unwrap_or_else(|r| panic!("{}", r.render(false)))
}

/// Loading fails, and the problems' paths and messages contain these fragments, in order.
fn problems(yaml: &str, expected: &[(&str, &str)]) {
    let report = load(&LoadOptions::inline("t.yaml", yaml)).expect_err("should be invalid");
    let got: Vec<(String, String)> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.message.clone()))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((path, message), (want_path, want_message)) in got.iter().zip(expected) {
        assert_eq!(path, want_path, "{got:#?}");
        assert!(
            message.contains(want_message),
            "`{message}` lacks `{want_message}`"
        );
    }
}

#[test]
fn defaults() {
    let s = ok(
        "name: t\nservices:\n  api: {image: 'api:git-1', port: 8080, routes: [api.t.localhost]}\n",
    );
    let api = &s.services["api"];
    assert_eq!(api.container.replicas, 1);
    assert_eq!(api.container.restart, RestartPolicy::No);
    assert_eq!(api.container.stop_grace, Duration::from_secs(10));
    assert_eq!(
        api.routes[0].port, 8080,
        "routes default to the service's port"
    );
    assert_eq!(s.discovery.etcd, Etcd::Embedded);
    assert_eq!(s.discovery.prefix, "/services");
    assert_eq!(s.discovery.ttl, Duration::from_secs(30));
    assert_eq!(s.proxy.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn ports_bind_loopback_unless_told() {
    let s = ok("name: t\nservices:\n  api:\n    image: a\n    ports: ['8081:80', '0.0.0.0:9090:90', 3000, {target: 53, published: 5353, protocol: udp}]\n");
    let ports = &s.services["api"].container.ports;
    assert_eq!(ports[0].host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(ports[1].host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!((ports[2].host_port, ports[2].container_port), (None, 3000));
    assert_eq!(ports[3].protocol, Protocol::Udp);
    assert_eq!(ports[3].host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn health_forms() {
    let s = ok("name: t\nservices:\n  a: {image: a, port: 80, health: {http: /h, interval: 1s}}\n  b: {image: b, health: {tcp: 5432}}\n  c: {image: c, health: {command: 'pg_isready -q'}}\n  d: {image: d, health: {command: [redis-cli, ping], retries: 5, start_period: 1m}}\n");
    let probe = |n: &str| s.services[n].container.health.clone().unwrap();
    assert_eq!(
        probe("a").probe,
        Probe::Http {
            port: 80,
            path: "/h".into()
        }
    );
    assert_eq!(probe("a").interval, Duration::from_secs(1));
    assert_eq!(probe("b").probe, Probe::Tcp { port: 5432 });
    assert_eq!(
        probe("c").probe,
        Probe::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), "pg_isready -q".into()]
        }
    );
    assert_eq!(probe("d").retries, 5);
    assert_eq!(probe("d").start_period, Duration::from_secs(60));
}

#[test]
fn datastore_volume_lands_in_the_kinds_data_dir() {
    let s = ok("name: t\ndatastores:\n  db: {kind: postgres, image: 'postgres:15.6', volume: pg}\n  g: {kind: generic, image: g, volume: 'data:/srv'}\n");
    let db = &s.datastores["db"];
    assert_eq!(db.data_volume.as_deref(), Some("pg"));
    assert_eq!(db.container.volumes[0].target, "/var/lib/postgresql/data");
    assert_eq!(s.datastores["g"].container.volumes[0].target, "/srv");
}

#[test]
fn tasks_refer_to_services() {
    let s = ok("name: t\nservices:\n  api: {image: 'api:1'}\ntasks:\n  migrate: {service: api, command: 'npm run migrate', before: [api]}\n");
    let t = &s.tasks["migrate"];
    assert_eq!(
        t.command.as_deref(),
        Some(&["npm".to_string(), "run".into(), "migrate".into()][..])
    );
    assert_eq!(t.before, ["api"]);
}

#[test]
fn external_etcd() {
    let s = ok("name: t\ndiscovery: {etcd: {endpoints: ['http://10.0.0.5:2379']}, prefix: /reg/, ttl: 5m}\n");
    assert_eq!(
        s.discovery.etcd,
        Etcd::External {
            endpoints: vec!["http://10.0.0.5:2379".into()]
        }
    );
    assert_eq!(s.discovery.prefix, "/reg");
    assert_eq!(s.discovery.ttl, Duration::from_secs(300));
}

#[test]
fn every_problem_in_one_report() {
    problems(
        "name: t\nservices:\n  api: {image: 'api:1', replicas: -1, helth: {}}\n  web: {imag: w}\n",
        &[
            ("services.api.replicas", "expected a number of replicas"),
            ("services.api.helth", "unknown field"),
            ("services.web", "needs an `image` or a `build`"),
            ("services.web.imag", "unknown field"),
        ],
    );
}

#[test]
fn names_are_checked() {
    problems(
        "name: T\nservices:\n  Api: {image: a}\n",
        &[
            ("name", "not a valid name"),
            ("services.Api", "not a valid name"),
        ],
    );
    problems(
        "name: t\nservices:\n  db: {image: a}\ndatastores:\n  db: {kind: redis, image: r}\n",
        &[("datastores.db", "already the name of a service")],
    );
}

#[test]
fn cycles_through_tasks() {
    problems(
        "name: t\nservices:\n  api: {image: a, depends_on: [web]}\n  web: {image: w}\ntasks:\n  m: {service: api, before: [web]}\n",
        &[("services.api.depends_on", "dependency cycle: api → web → api")],
    );
}

#[test]
fn watch_needs_what_its_action_needs() {
    problems(
        "name: t\nservices:\n  api: {image: a, watch: {action: rebuild}}\n",
        &[
            ("services.api.watch", "needs `paths`"),
            (
                "services.api.watch.action",
                "needs the service to have a `build`",
            ),
        ],
    );
    problems(
        "name: t\nservices:\n  api: {image: a, watch: {action: sync, paths: [./src]}}\n",
        &[("services.api.watch", "`sync` needs a `target`")],
    );
}

#[test]
fn reserved_labels() {
    problems(
        "name: t\nservices:\n  api: {image: a, labels: {dev.devstack.project: x}}\n",
        &[("services.api.labels.dev.devstack.project", "devstack's own")],
    );
}

#[test]
fn init_is_a_boolean_off_by_default() {
    let s = ok("name: t\nservices:\n  a: {image: a, init: true}\n  b: {image: b}\n");
    assert!(s.services["a"].container.init);
    assert!(!s.services["b"].container.init);
    problems(
        "name: t\nservices:\n  a: {image: a, init: yes please}\n",
        &[("services.a.init", "`true` or `false`")],
    );
}
