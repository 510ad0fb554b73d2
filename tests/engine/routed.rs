//! "Up" means routed: a stack with routes whose routing path cannot start,
//! or whose routes the proxy does not serve, is a failure with the reason,
//! never a warning behind exit code 0; a stack without routes runs on its own.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A proxy image whose HAProxy cannot start: like a site image that bakes
/// in a config of its own (loaded after devstack's) naming a socket
/// directory the image does not have, the fault the official image showed.
/// Built once per test run from the fixture base; removed by the guard.
struct BrokenProxyImage(String);

impl BrokenProxyImage {
    fn build(tag: &str) -> BrokenProxyImage {
        let name = format!(
            "devstack-test/broken-proxy-{tag}-{}:latest",
            std::process::id()
        );
        let dir = tempfile::tempdir().expect("a scratch directory");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM devstack-fixtures/debian:bookworm\n\
             RUN mkdir -p /usr/local/etc/haproxy /etc/haproxy \
               && printf 'global\\n    stats socket /run/site-haproxy/admin.sock mode 600 level admin\\n' > /etc/haproxy/site.cfg \
               && printf '#!/bin/sh\\nexec /usr/sbin/haproxy \"$@\" -f /etc/haproxy/site.cfg\\n' > /usr/local/sbin/haproxy \
               && chmod 755 /usr/local/sbin/haproxy\n",
        )
        .unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", &name])
            .arg(dir.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("docker build runs");
        assert!(
            out.status.success(),
            "the broken proxy image builds: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        BrokenProxyImage(name)
    }
}

impl Drop for BrokenProxyImage {
    fn drop(&mut self) {
        // Containers of the project are gone by now (Project drops first).
        docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn up_wait_fails_naming_the_proxys_error_when_routes_cannot_be_routed() {
    let image = BrokenProxyImage::build("wait");
    let listen = free_port();
    let p = Project::inline(
        "noproxy",
        &format!(
            "name: noproxy\n\
             services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env: {{ SERVICE: web }}\n    health: {{ http: /health }}\n    routes: [web.noproxy.localhost]\n\
             proxy:\n  image: {}\n  listen: 127.0.0.1:{listen}\n",
            image.0
        ),
    );
    for args in [&["up", "--wait"][..], &["up", "--detach"][..]] {
        let out = p.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(6), "exit 6 (routing): {err}");
        assert!(
            err.contains("cannot bind UNIX socket"),
            "HAProxy's own words are shown: {err}"
        );
        assert!(
            !stdout(&out).contains("http://web.noproxy.localhost"),
            "no URL of a route nobody serves: {}",
            stdout(&out)
        );
    }
    // The stack's services were not started behind a proxy that cannot run.
    assert!(
        p.containers().iter().all(|c| c.service != "web"),
        "no service container: {:?}",
        p.containers()
    );
}

#[test]
fn a_stack_without_routes_runs_when_the_proxy_cannot_start() {
    let image = BrokenProxyImage::build("noroutes");
    let listen = free_port();
    let p = Project::inline(
        "unrouted",
        &format!(
            "name: unrouted\n\
             services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env: {{ SERVICE: web }}\n    health: {{ http: /health }}\n\
             proxy:\n  image: {}\n  listen: 127.0.0.1:{listen}\n",
            image.0
        ),
    );
    let out = p.ok(&["up", "--wait"]);
    let err = stderr(&out);
    assert!(err.contains("routing is off"), "said, not fatal: {err}");
    assert!(
        p.containers()
            .iter()
            .any(|c| c.service == "web" && c.state == "running"),
        "{:?}",
        p.containers()
    );
}

#[test]
fn up_wait_fails_when_a_healthy_service_is_not_served_through_the_proxy() {
    // The app answers its health check on 8080, but the route sends traffic
    // to 9999, where nothing listens: healthy, never routed.
    let listen = free_port();
    let p = Project::inline(
        "unserved",
        &format!(
            "name: unserved\n\
             services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env: {{ SERVICE: web }}\n    health: {{ http: /health }}\n    routes: [{{ host: web.unserved.localhost, port: 9999 }}]\n  ok:\n    image: devstack-fixtures/app\n    port: 8080\n    env: {{ SERVICE: ok }}\n    health: {{ http: /health }}\n    routes: [ok.unserved.localhost]\n\
             proxy:\n  image: devstack-fixtures/haproxy:2.6\n  listen: 127.0.0.1:{listen}\n"
        ),
    );
    let out = p.run(&["up", "--wait", "--timeout", "20s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "exit 6 (routing): {err}");
    assert!(
        err.contains(&format!("http://web.unserved.localhost:{listen}/")),
        "the unserved route is named: {err}"
    );
    assert!(
        !err.contains("http://ok.unserved.localhost"),
        "the served route is not blamed: {err}"
    );
    assert!(
        !stdout(&out).contains("http://web.unserved.localhost"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn up_wait_returns_with_every_route_answering() {
    let listen = free_port();
    let p = Project::inline(
        "served",
        &format!(
            "name: served\n\
             services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    replicas: 2\n    env: {{ SERVICE: web }}\n    health: {{ http: /health }}\n    routes: [web.served.localhost, {{ path: /api, strip_prefix: true }}]\n\
             datastores:\n  cache:\n    kind: redis\n    image: devstack-fixtures/redis:7.0\n\
             proxy:\n  image: devstack-fixtures/haproxy:2.6\n  listen: 127.0.0.1:{listen}\n"
        ),
    );
    let out = p.ok(&["up", "--detach", "--wait"]);
    assert!(
        stdout(&out).contains(&format!("http://web.served.localhost:{listen}/")),
        "{}",
        stdout(&out)
    );
    // Right when `up --wait` returns, not eventually: both routes answer
    // from the application, and from both replicas (round robin: four
    // requests reach each twice once both are in the proxy).
    let mut answered = std::collections::BTreeSet::new();
    for (host, path) in [
        ("web.served.localhost", "/"),
        ("127.0.0.1", "/api/"),
        ("web.served.localhost", "/"),
        ("web.served.localhost", "/"),
    ] {
        let text = get_through(listen, host, path);
        let status = text.lines().next().unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.") && status.contains(" 200 "),
            "{host}{path}: {text}"
        );
        assert!(!text.contains("devstack: no"), "{host}{path}: {text}");
        for replica in ["web-1", "web-2"] {
            if text.contains(&format!("{}-{replica}", p.name)) {
                answered.insert(replica);
            }
        }
    }
    assert_eq!(
        answered.len(),
        2,
        "both replicas answer right after `up --detach --wait`: {answered:?}"
    );
    // `ps` reads the health the routing agent follows (the datastore's
    // too) rather than probing; `--probe` probes.
    let rows = |args: &[&str]| -> Vec<serde_json::Value> {
        serde_json::from_slice(&p.ok(args).stdout).expect("ps --json is JSON")
    };
    let units = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .filter(|r| !r["service"].is_null())
            .collect()
    };
    // A datastore is probed every 10 s from its start, so its first
    // healthy result may come that late.
    let from_agent = eventually(Duration::from_secs(30), || {
        let rows = units(rows(&["ps", "--json"]));
        rows.len() == 3
            && rows
                .iter()
                .all(|r| r["health"] == "healthy" && r["health_from"] == "agent")
    });
    assert!(from_agent, "{:#?}", rows(&["ps", "--json"]));
    let probed = units(rows(&["ps", "--json", "--probe"]));
    assert!(
        probed.len() == 3
            && probed
                .iter()
                .all(|r| r["health"] == "healthy" && r["health_from"] == "probe"),
        "{probed:#?}"
    );
}

/// Four copies of one routed stack (`-p`, no `listen` in the file), brought
/// up at once: each gets a proxy port of its own, printed by `up`, recorded
/// for `routes`, and answering from its own containers.
#[test]
fn four_copies_started_at_once_each_answer_through_their_own_port() {
    let yaml = "name: copies\n\
         services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env: { SERVICE: web }\n    health: { http: /health, interval: 500ms, start_period: 30s }\n    stop_grace: 1s\n    routes: [web.copies.localhost]\n\
         proxy:\n  image: devstack-fixtures/haproxy:2.6\n";
    let copies: Vec<Project> = (0..4)
        .map(|i| Project::inline(&format!("copy{i}"), yaml))
        .collect();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = copies
            .iter()
            .map(|p| s.spawn(move || p.run(&["up", "--wait", "--timeout", "90s"])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("the thread ends"))
            .collect()
    });
    let mut ports = Vec::new();
    for (p, out) in copies.iter().zip(&outs) {
        assert_eq!(out.status.code(), Some(0), "{}: {}", p.name, stderr(out));
        let routes: serde_json::Value =
            serde_json::from_slice(&p.ok(&["routes", "--json"]).stdout).expect("routes --json");
        let listen: std::net::SocketAddr = routes["listen"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("a listen address: {routes}"));
        assert_ne!(listen.port(), 8080, "{}: not the stack's own port", p.name);
        assert!(
            stdout(out).contains(&format!("http://web.copies.localhost:{}/", listen.port())),
            "the table shows the copy's port: {}",
            stdout(out)
        );
        let text = get_through(listen.port(), "web.copies.localhost", "/");
        assert!(text.contains(" 200 "), "{}: {text}", p.name);
        assert!(
            text.contains(&format!("{}-web-1", p.name)),
            "{} answers from its own container: {text}",
            p.name
        );
        ports.push(listen.port());
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "four ports: {ports:?}");
}

/// A fixed port held by another devstack copy is refused before anything
/// starts, naming that copy.
#[test]
fn a_fixed_port_held_by_another_copy_is_refused_naming_it() {
    let listen = free_port();
    let yaml = format!(
        "name: fixed\n\
         services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env: {{ SERVICE: web }}\n    health: {{ http: /health, interval: 500ms, start_period: 30s }}\n    stop_grace: 1s\n    routes: [web.fixed.localhost]\n\
         proxy:\n  image: devstack-fixtures/haproxy:2.6\n  listen: 127.0.0.1:{listen}\n"
    );
    let a = Project::inline("fixeda", &yaml);
    let b = Project::inline("fixedb", &yaml);
    a.ok(&["up", "--wait"]);
    let out = b.run(&["up", "--wait"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains(&a.name) && err.contains(&listen.to_string()),
        "names the holder and the port: {err}"
    );
    assert!(
        b.containers().is_empty(),
        "nothing started: {:?}",
        b.containers()
    );
}
