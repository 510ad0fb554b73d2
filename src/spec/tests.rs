//! Decoding and validation, checked on inline stacks: one helper per outcome.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

/// A stack accepted by mistake, not printed: it may hold megabytes of
/// hostile input.
#[derive(Debug)]
struct Accepted;

fn ok(yaml: &str) -> Stack {
    load(&LoadOptions::inline("t.yaml", yaml)).unwrap_or_else(|r| panic!("{}", r.render(false)))
}

/// Loading fails, and the problems' paths and messages contain these fragments, in order.
fn problems(yaml: &str, expected: &[(&str, &str)]) {
    let report = load(&LoadOptions::inline("t.yaml", yaml))
        .map(|_| Accepted)
        .expect_err("should be invalid");
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
    assert_eq!(s.discovery.prefix, None, "devstack's per-project prefix");
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
    assert_eq!(s.discovery.prefix.as_deref(), Some("/reg"));
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
fn one_task_is_the_test_suite_and_it_runs_before_nothing() {
    let s = ok("name: t\nservices:\n  api: {image: a}\ntasks:\n  migrate: {service: api, before: [api]}\n  suite: {service: api, command: 'make test', test: true}\n");
    assert_eq!(s.test_task(), Some("suite"));
    assert!(!s.tasks["migrate"].test);
    assert_eq!(
        ok("name: t\nservices:\n  api: {image: a}\n").test_task(),
        None
    );
    problems(
        "name: t\nservices:\n  api: {image: a}\ntasks:\n  a: {service: api, test: true}\n  b: {service: api, test: true}\n",
        &[("tasks.b.test", "task `a` is already the stack's test suite")],
    );
    problems(
        "name: t\nservices:\n  api: {image: a}\ntasks:\n  a: {service: api, test: true, before: [api]}\n",
        &[("tasks.a.before", "cannot run before a unit")],
    );
    problems(
        "name: t\nservices:\n  api: {image: a}\ntasks:\n  a: {service: api, test: sometimes}\n",
        &[("tasks.a.test", "")],
    );
}

#[test]
fn config_masks_env_file_values_and_knows_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.env"), "TOKEN=abcdef123\nSHORT=1\n").unwrap();
    let file = dir.path().join("devstack.yaml");
    std::fs::write(
        &file,
        "name: t\nservices:\n  api: {image: a, env_file: ./api.env, env: {PLAIN: p, SHORT: '2'}}\n",
    )
    .unwrap();
    let mut s =
        load(&LoadOptions::new(vec![file])).unwrap_or_else(|r| panic!("{}", r.render(false)));
    // `env` over the file: SHORT is no secret any more.
    assert_eq!(s.secret_values(), vec!["abcdef123"]);
    s.mask_secrets();
    let env = &s.services["api"].container.env;
    assert_eq!(env["TOKEN"], SECRET_MASK);
    assert_eq!(env["SHORT"], "2");
    assert_eq!(env["PLAIN"], "p");
    assert!(s.secret_values().iter().all(|v| *v == SECRET_MASK));
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

/// Regression (issue 10): bind mounts of the Docker socket, `/` and system
/// directories were accepted; the watcher would start such a service added
/// to the file by a container holding the stack's directory.
#[test]
fn host_takeover_binds_are_refused_without_the_opt_in() {
    problems(
        "name: t\nservices:\n  api:\n    image: a\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n      - /run/docker.sock:/d.sock\n      - /:/host\n      - {source: /etc, target: /e, read_only: true}\n      - /proc:/p\n      - ./data:/data\n      - cache:/cache\n",
        &[
            ("services.api.volumes[0]", "bind mount of `/var/run/docker.sock`"),
            ("services.api.volumes[1]", "`/run/docker.sock` holds the Docker engine's socket"),
            ("services.api.volumes[2]", "bind mount of `/` is the host's whole filesystem"),
            ("services.api.volumes[3]", "bind mount of `/etc` is in /etc"),
            ("services.api.volumes[4]", "`/proc` is in /proc"),
        ],
    );
    // The unit that needs the engine says so, and only it may.
    let s = ok("name: t\nservices:\n  portainer:\n    image: a\n    allow_host_access: true\n    volumes: ['/var/run/docker.sock:/var/run/docker.sock']\n");
    assert_eq!(s.services["portainer"].container.volumes.len(), 1);
    problems(
        "name: t\nservices:\n  ok: {image: a, allow_host_access: true, volumes: ['/:/host']}\ndatastores:\n  db: {kind: generic, image: g, volumes: ['/:/host']}\n",
        &[("datastores.db.volumes[0]", "the host's whole filesystem")],
    );
    problems(
        "name: t\nservices:\n  api: {image: a, allow_host_access: yes}\n",
        &[(
            "services.api.allow_host_access",
            "expected `true` or `false`",
        )],
    );
    // A datastore's data volume is never a host path at all.
    problems(
        "name: t\ndatastores:\n  db: {kind: redis, image: r, volume: '/var/run/docker.sock'}\n",
        &[("datastores.db.volume", "must be a named volume")],
    );
}

/// A link in the stack's directory is judged by what it points at.
#[test]
fn a_bind_through_a_link_is_judged_by_its_target() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/var/run", dir.path().join("sockets")).unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("everything")).unwrap();
    let yaml = format!(
        "name: t\nservices:\n  api:\n    image: a\n    volumes: ['{0}/sockets/docker.sock:/s', '{0}/everything:/h']\n",
        dir.path().display()
    );
    problems(
        &yaml,
        &[
            (
                "services.api.volumes[0]",
                "holds the Docker engine's socket",
            ),
            (
                "services.api.volumes[1]",
                "(which is `/`) is the host's whole filesystem",
            ),
        ],
    );
}

/// The socket `DOCKER_HOST` names is the engine, wherever it lives.
#[test]
fn the_socket_docker_host_names_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    std::fs::write(&socket, "").unwrap();
    let mut options = LoadOptions::inline(
        "t.yaml",
        &format!(
            "name: t\nservices:\n  api: {{image: a, volumes: ['{}:/s']}}\n",
            socket.display()
        ),
    );
    options
        .env
        .insert("DOCKER_HOST".into(), format!("unix://{}", socket.display()));
    let report = load(&options)
        .map(|_| Accepted)
        .expect_err("the engine's socket is refused");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0]
            .message
            .contains("holds the Docker engine's socket"),
        "{}",
        report.problems[0].message
    );
}

/// Regression (issue 10): a route `web.internal` on `api` took `web`'s
/// internal name over (the route sorts before the built-in one).
#[test]
fn routes_in_internal_are_refused() {
    problems(
        "name: t\nservices:\n  web: {image: w, port: 80}\n  api: {image: a, port: 80, routes: [web.internal, 'web.internal/x', {host: Foo.Internal}, api.t.localhost]}\n",
        &[
            ("services.api.routes[0]", "the route host `web.internal` is in `.internal`"),
            ("services.api.routes[1]", "`web.internal` is in `.internal`"),
            ("services.api.routes[2]", "`Foo.Internal` is in `.internal`"),
        ],
    );
}

/// Regression (issue 10): names that mean two containers on one network.
#[test]
fn names_that_clash_on_the_network_are_refused() {
    problems(
        "name: t\nservices:\n  migrate-run: {image: a}\ntasks:\n  migrate: {image: m}\n",
        &[(
            "services.migrate-run",
            "would be named like the task `migrate`'s",
        )],
    );
    problems(
        "name: t\nservices:\n  web: {image: a}\n  t-web-2: {image: b}\n  t-proxy: {image: c}\n",
        &[
            (
                "services.t-web-2",
                "the name of `web`'s replica 2 container",
            ),
            ("services.t-proxy", "the stack's proxy container"),
        ],
    );
    // Look-alikes that name nothing else are fine.
    ok("name: t\nservices:\n  web: {image: a}\n  t-web: {image: b}\n  t-api-1: {image: c}\n  web-run: {image: d}\n");
}

/// Regression (issue 11 item 7): `watch.paths` naming nothing was reported
/// only when `watch` started.
#[test]
fn paths_that_name_nothing_are_reported_with_their_place() {
    problems(
        "name: t\nservices:\n  api: {image: a, watch: {action: restart, paths: [./src, ./no-such-dir]}}\n  web: {image: a, watch: {action: restart, paths: ./no-such-file}}\n",
        &[
            ("services.api.watch.paths[1]", "watch path"),
            ("services.web.watch.paths", "no-such-file does not exist"),
        ],
    );
    problems(
        "name: t\nservices:\n  api: {image: a, env_file: [./no-such.env]}\ndatastores:\n  db: {kind: redis, image: r, seed: ./no-such-seed}\nproxy:\n  template: ./no-such.cfg\n",
        &[
            ("services.api.env_file[0]", "no-such.env: no such file"),
            ("datastores.db.seed", "no-such-seed does not exist"),
            ("proxy.template", "no-such.cfg does not exist"),
        ],
    );
}

/// Regression (issue 10): a malformed env-file line was quoted, value and all.
#[test]
fn a_bad_env_file_line_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.env");
    std::fs::write(&file, "A=1\n# note\nDB_PASSWORD hunter2-s3cr3t\n").unwrap();
    let yaml = format!(
        "name: t\nservices:\n  api: {{image: a, env_file: '{}'}}\n",
        file.display()
    );
    let report = load(&LoadOptions::inline("t.yaml", &yaml))
        .map(|_| Accepted)
        .expect_err("bad env file");
    let text = report.render(false);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("api.env, line 3 is not `KEY=value`"),
        "{text}"
    );
    assert_eq!(report.problems[0].path, "services.api.env_file");
}

/// Regression (issue 10): interpolation nested tens of thousands deep
/// overflowed the stack, and aliases of a large value took its size times
/// their count. The loader runs on a thread with a bounded stack (2 MiB).
#[test]
fn hostile_stack_files_get_a_diagnostic() {
    fn load_bounded(yaml: String) -> Report {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || load(&LoadOptions::inline("t.yaml", &yaml)))
            .unwrap()
            .join()
            .expect("the loader did not overflow its stack")
            .map(|_| Accepted)
            .expect_err("the stack is refused")
    }
    let depth = 50_000;
    let nested = format!(
        "name: t\nservices:\n  api: {{image: a, env: {{X: '{}x{}'}}}}\n",
        "${A:-".repeat(depth),
        "}".repeat(depth)
    );
    let report = load_bounded(nested);
    assert_eq!(report.problems[0].path, "services.api.env.X");
    assert!(
        report.problems[0].message.contains("nested more than 32"),
        "{:?}",
        report.problems
    );

    // 64 KiB aliased 3,000 times: under the node limit, 190 MiB copied.
    let mut aliased = format!(
        "name: t\nx-big: &big '{}'\nservices:\n  api:\n    image: a\n    command:\n",
        "x".repeat(64 << 10)
    );
    for _ in 0..3000 {
        aliased.push_str("      - *big\n");
    }
    let report = load_bounded(aliased);
    assert!(
        report.problems[0].message.contains("more than 16 MiB"),
        "{:?}",
        report.problems
    );

    // An alias of a value holding a long variable, thousands of times.
    let mut options = LoadOptions::inline("t.yaml", "");
    options.env.insert("LONG".into(), "y".repeat(64 << 10));
    let mut text =
        String::from("name: t\nx-v: &v '$LONG'\nservices:\n  api:\n    image: a\n    command:\n");
    for _ in 0..3000 {
        text.push_str("      - *v\n");
    }
    options.contents = Some(vec![text]);
    let report = load(&options)
        .map(|_| Accepted)
        .expect_err("the expansion is refused");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0]
            .message
            .contains("expand to more than 16 MiB in all"),
        "{:?}",
        report.problems
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

/// Issue 11 item 5: production's platform, per service, datastore and proxy,
/// checked when the stack loads rather than at the pull.
#[test]
fn platform_is_checked_where_it_is_written() {
    let s = ok("name: t\nservices:\n  a: {image: a, platform: linux/amd64}\n  b: {image: b}\ndatastores:\n  db: {kind: redis, image: r, platform: linux/arm64/v8}\nproxy:\n  platform: linux/arm/v7\n");
    assert_eq!(
        s.services["a"].container.platform.as_deref(),
        Some("linux/amd64")
    );
    assert_eq!(s.services["b"].container.platform, None);
    assert_eq!(
        s.datastores["db"].container.platform.as_deref(),
        Some("linux/arm64/v8")
    );
    assert_eq!(s.proxy.platform.as_deref(), Some("linux/arm/v7"));
    problems(
        "name: t\nservices:\n  a: {image: a, platform: amd64}\n  b: {image: b, platform: linux/x86_64}\ndatastores:\n  db: {kind: redis, image: r, platform: linux/arm64/v7}\nproxy:\n  platform: [linux/amd64]\n",
        &[
            ("services.a.platform", "`amd64` is not a platform"),
            ("services.b.platform", "unknown architecture `x86_64`"),
            ("datastores.db.platform", "`v7` is not a variant of `arm64`"),
            ("proxy.platform", "expected a string"),
        ],
    );
    let report = load(&LoadOptions::inline(
        "t.yaml",
        "name: t\nservices:\n  b: {image: b, platform: linux/x86_64}\n",
    ))
    .map(|_| Accepted)
    .expect_err("should be invalid");
    let problem = &report.problems[0];
    assert_eq!(
        problem.hint.as_deref(),
        Some("Docker calls it `linux/amd64`"),
        "{problem:?}"
    );
}

#[test]
fn a_datastores_url_is_offered_to_env_and_commands() {
    let s = ok("name: t\nservices:\n  api: {image: 'api:1', env: {DATABASE_URL: '${datastores.db.url}?sslmode=disable', CACHE: '${datastores.cache.url}'}, command: [serve, '--db=${datastores.db.url}']}\ndatastores:\n  db: {kind: postgres, image: 'postgres:15.6', env: {POSTGRES_USER: app, POSTGRES_PASSWORD: s3cret}}\n  cache: {kind: redis, image: 'redis:7'}\n");
    let api = &s.services["api"].container;
    assert_eq!(
        api.env["DATABASE_URL"],
        "postgres://app:s3cret@db:5432/app?sslmode=disable"
    );
    assert_eq!(api.env["CACHE"], "redis://cache:6379");
    assert_eq!(
        api.command.as_ref().unwrap()[1],
        "--db=postgres://app:s3cret@db:5432/app"
    );
}

#[test]
fn a_datastore_reference_to_nothing_is_a_problem() {
    problems(
        "name: t\nservices:\n  api: {image: 'api:1', env: {A: '${datastores.nope.url}', B: '${datastores.db.host}'}}\ndatastores:\n  db: {kind: redis, image: 'redis:7'}\n",
        &[
            ("services.api.env.A", "there is no datastore `nope`"),
            ("services.api.env.B", "a datastore offers only `url`"),
        ],
    );
}

#[test]
fn a_seed_a_kind_cannot_take_is_a_problem() {
    problems(
        "name: t\ndatastores:\n  mc: {kind: memcached, image: 'memcached:1.6', seed: .}\n  g: {kind: generic, image: g, seed: .}\n",
        &[
            ("datastores.mc.seed", "a memcached datastore has no seed format"),
            ("datastores.g.seed", "a generic datastore's seed is copied into its data volume, and it has none"),
        ],
    );
}

/// `proxy.confd`: a confd directory's problems are reported at the stack's
/// `proxy.confd` line, each naming its resource file and line; the fixture
/// directory loads.
#[test]
fn a_confd_directory_is_checked_at_load() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/confd");
    let s = ok(&format!(
        "name: t\nservices:\n  api: {{image: a}}\nproxy:\n  confd: '{}'\n",
        fixture.display()
    ));
    assert_eq!(s.proxy.confd.as_deref(), Some(fixture.as_path()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/haproxy.toml"),
        "[template]\nsrc = \"haproxy.cfg.tmpl\"\ndest = \"/etc/haproxy/haproxy.cfg\"\nkeys = [\"/services\"]\n",
    )
    .unwrap();
    let yaml = format!(
        "name: t\nservices:\n  api: {{image: a}}\nproxy:\n  confd: '{}'\n",
        dir.path().display()
    );
    problems(&yaml, &[("proxy.confd", "haproxy.toml:2: template")]);
    let report = load(&LoadOptions::inline("t.yaml", &yaml))
        .map(|_| Accepted)
        .expect_err("invalid");
    let text = report.render(false);
    assert!(text.contains("t.yaml:5"), "{text}");
    problems(
        "name: t\nservices:\n  api: {image: a}\nproxy:\n  confd: ./no-such-dir\n  template: ./no.cfg\n",
        &[
            ("proxy.confd", "no-such-dir does not exist"),
            ("proxy.confd", "`confd` and `template` both"),
            ("proxy.template", "no.cfg does not exist"),
        ],
    );
}

/// `proxy.kind: nginx`: accepted, anything else named with both kinds; a
/// confd directory rendering HAProxy's configuration is refused with kind
/// nginx, naming the resource and the kind.
#[test]
fn the_proxy_kind_is_haproxy_or_nginx() {
    assert_eq!(ok("name: t\n").proxy.kind, ProxyKind::Haproxy);
    let s = ok("name: t\nproxy:\n  kind: nginx\n");
    assert_eq!(s.proxy.kind, ProxyKind::Nginx);
    assert_eq!(s.proxy.image, None);
    problems(
        "name: t\nproxy:\n  kind: traefik\n",
        &[("proxy.kind", "`haproxy` or `nginx`")],
    );
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/confd");
    problems(
        &format!(
            "name: t\nservices:\n  api: {{image: a}}\nproxy:\n  kind: nginx\n  confd: '{}'\n",
            fixture.display()
        ),
        &[(
            "proxy.confd",
            "renders an HAProxy configuration (`dest = \"/etc/haproxy/haproxy.cfg\"`), but `proxy.kind` is `nginx`",
        )],
    );
}
