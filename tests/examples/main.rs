//! The example stacks (`stacks/events`, `stacks/giveaway`) as a team would
//! run them, on the replicas of the official images: each is brought up with
//! `up --wait` and its overlay (`fixtures/stacks/examples/*.local.yaml`),
//! and so is the events stack imported from its Compose file
//! (`fixtures/import/events`) with the same overlay;
//! every route is requested through the proxy by its Host header, the answer
//! must come from the application behind the route (reading the seeded
//! database, a value round-tripping through Redis), and `down --volumes`
//! must leave no container, network or volume of the project.
//!
//! They fail (never skip) when no Docker engine answers, and first bring
//! the fixture images they use up to date. `DEVSTACK_FIXTURES_PREFIX` runs
//! them on another set of fixture images (build.sh and the overlays read it).

#[path = "../support/fixtures.rs"]
mod fixtures;
#[path = "../support/shown.rs"]
mod shown;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_devstack");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `docker ARGS` and returns its trimmed stdout.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every fixture image the examples use (`fixtures/images/build.sh` names).
const IMAGES: &[&str] = &[
    "haproxy:2.6",
    "redis:7.0",
    "nginx:1.22",
    "node:18",
    "python:3.11",
    "mariadb:10.11",
    "memcached:1.6",
    "wordpress:6.1-php8.2-apache",
];

static READY: Once = Once::new();

/// The engine answers and the fixture images the examples use are current:
/// `fixtures/images/build.sh IMAGE...` (about a second when they are, a
/// rebuild of those that are not, e.g. a node replica from before its
/// `node-redis`), once per test binary, under the lock the engine tests use.
fn ready() {
    READY.call_once(|| {
        fixtures::engine_answers();
        fixtures::under_build_lock(|| fixtures::build(&repo(), IMAGES));
    });
}

/// A port on loopback that nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One example stack with its overlay, under a project name of its own and
/// a free proxy port. Dropping it runs `down --volumes`, so a failing test
/// leaves nothing behind.
struct Example {
    name: String,
    files: Vec<PathBuf>,
    /// Variables the overlays read, besides the port.
    env: Vec<(&'static str, String)>,
    /// The variable the overlay reads the proxy port from, and its value.
    port_var: &'static str,
    port: u16,
}

impl Example {
    fn new(stack: &str, port_var: &'static str) -> Example {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Example {
            name: format!("ex{}{n}-{stack}", std::process::id() % 100_000),
            files: vec![
                repo().join("stacks").join(stack).join("devstack.yaml"),
                repo()
                    .join("fixtures/stacks/examples")
                    .join(format!("{stack}.local.yaml")),
            ],
            env: Vec::new(),
            port_var,
            port: free_port(),
        }
    }

    /// The events stack as imported from the team's Compose file and its
    /// laptop overlay, with the fixture overlay on top (its build contexts
    /// given absolute, since the first file's directory is another).
    fn imported_events() -> Example {
        let mut ex = Example::new("events", "EVENTS_PORT");
        ex.name = ex.name.replace("-events", "-imported");
        let apps = repo().join("fixtures/apps").display().to_string();
        ex.env.push(("EVENTS_FIXTURE_APPS", apps));
        let local = ex.files.pop().expect("the overlay");
        ex.files = vec![
            repo().join("fixtures/import/events/compose.yaml"),
            repo().join("fixtures/import/events/laptop.yaml"),
            local,
        ];
        ex
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        let out = cmd
            .arg("-p")
            .arg(&self.name)
            .args(args)
            .env("NO_COLOR", "1")
            .env(self.port_var, self.port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("DEVSTACK_PROJECT_NAME")
            .stdin(Stdio::null())
            .output()
            .expect("the devstack binary runs");
        crate::shown::shown(&self.name, args, &out);
        out
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        if !out.status.success() {
            let logs = self.run(&["logs", "--tail", "40"]);
            panic!(
                "`devstack {}` failed: {}\n--- logs\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&logs.stdout)
            );
        }
        out
    }

    /// What docker lists of this project: containers, networks, volumes.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=dev.devstack.project={}", self.name);
        let mut found = Vec::new();
        for kind in [["ps", "-a"], ["network", "ls"], ["volume", "ls"]] {
            let mut args: Vec<&str> = kind.to_vec();
            args.extend(["-q", "--filter", label.as_str()]);
            found.extend(
                docker(&args)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("{} {l}", kind[0])),
            );
        }
        found
    }

    /// The id of the one running container of a service or datastore.
    fn container(&self, unit: &str) -> String {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=dev.devstack.project={}", self.name),
            "--filter",
            &format!("label=dev.devstack.service={unit}"),
        ]);
        let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
        assert!(!ids.is_empty(), "no running container of `{unit}`");
        ids[0].to_string()
    }

    /// `down --volumes`, then nothing of the project is left.
    fn down_leaves_nothing(&self) {
        self.ok(&["down", "--volumes"]);
        let left = self.leftovers();
        assert!(left.is_empty(), "left after `down --volumes`: {left:?}");
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if !self.leftovers().is_empty() {
            let _ = self.run(&["down", "--volumes", "--timeout", "1s"]);
        }
    }
}

/// An HTTP answer: status code, headers (lower-case names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// `GET PATH` with `Host: HOST` to the proxy on 127.0.0.1:PORT (a request
/// as a browser on `http://HOST:PORT/` sends it), HTTP/1.0 so the body ends
/// with the connection.
fn get(port: u16, host: &str, path: &str) -> Answer {
    request(port, host, "GET", path, None)
}

fn request(port: u16, host: &str, method: &str, path: &str, form: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut text = format!("{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\n");
    if let Some(body) = form {
        text.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        text.push_str("\r\n");
    }
    stream.write_all(text.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {host}{path}: {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the answer to {host}{path}: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn ok_json(port: u16, host: &str, path: &str) -> Value {
    let answer = get(port, host, path);
    assert_eq!(answer.status, 200, "GET {host}{path}: {answer:?}");
    answer.json()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The app the giveaway overlay builds is the stack's own source: only the
/// Dockerfile differs (no `npm install`, the node replica).
#[test]
fn giveaway_fixture_app_is_the_stacks_app() {
    for file in ["server.js", "worker.js", "package.json"] {
        assert_eq!(
            read(&repo().join("stacks/giveaway/app").join(file)),
            read(&repo().join("fixtures/apps/giveaway").join(file)),
            "fixtures/apps/giveaway/{file} differs from stacks/giveaway/app/{file}"
        );
    }
}

/// giveaway: nginx (the replica of the official image) in front of the app,
/// which counts entries in Redis; the worker runs beside it.
#[test]
fn giveaway_serves_the_app_behind_nginx_with_redis() {
    ready();
    let ex = Example::new("giveaway", "GIVEAWAY_PORT");
    ex.ok(&["up", "--detach", "--wait", "--timeout", "240s"]);

    let first = get(ex.port, "giveaway.localhost", "/");
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        first
            .header("server")
            .is_some_and(|s| s.starts_with("nginx")),
        "not answered through nginx: {first:?}"
    );
    let n1 = first.json()["entries"]
        .as_i64()
        .unwrap_or_else(|| panic!("no entries count: {first:?}"));
    let n2 = ok_json(ex.port, "giveaway.localhost", "/")["entries"]
        .as_i64()
        .expect("an entries count");
    assert_eq!(n2, n1 + 1, "the counter did not go through Redis");
    let stored = docker(&[
        "exec",
        &ex.container("redis"),
        "redis-cli",
        "get",
        "entries",
    ]);
    assert_eq!(stored, n2.to_string(), "Redis holds another count");
    // The worker (`node worker.js`, same image) is connected and running.
    let worker = ex.container("worker");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &worker]),
        "true"
    );
    // A host the stack does not route is the proxy's 404, not the app.
    assert_eq!(get(ex.port, "nothing.localhost", "/").status, 404);

    ex.down_leaves_nothing();
}

/// One events stack at a time: each builds the same app images and runs
/// seven containers, which two cores serve slowly enough already.
static EVENTS: Mutex<()> = Mutex::new(());

/// Every route of the events stack on the proxy at `port` answers from its
/// app, each app reading the rows the stack's seed loaded, the Django apps
/// migrated by their tasks; WordPress sends to its installer, which has
/// reached its database.
fn events_routes_answer(port: u16) {
    // events.localhost/register: Django (gunicorn) on the seeded event row,
    // with its own table made by `manage.py migrate`.
    let reg = ok_json(port, "events.localhost", "/register/");
    assert_eq!(reg["service"], "registration", "{reg}");
    assert_eq!(reg["event"], "DevStack Summit 2026", "{reg}");
    assert_eq!(strings(&reg["migrations"]), ["0001_initial"], "{reg}");
    assert_eq!(reg["attendees"], 0, "{reg}");

    // events.localhost/tickets: Node, two replicas, the seeded ticket types,
    // and the event as registration.internal (through the proxy) names it.
    let mut hostnames = BTreeSet::new();
    for _ in 0..6 {
        let shop = ok_json(port, "events.localhost", "/tickets");
        assert_eq!(shop["service"], "ticket-shop", "{shop}");
        assert_eq!(shop["event"], "DevStack Summit 2026", "{shop}");
        let tickets: Vec<&str> = shop["tickets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(tickets, ["Early bird", "Regular"], "{shop}");
        hostnames.insert(shop["hostname"].to_string());
    }
    assert_eq!(
        hostnames.len(),
        2,
        "both ticket-shop replicas serve: {hostnames:?}"
    );

    // api.events.localhost/matchmaking/...: Node, the prefix stripped.
    let api = ok_json(port, "api.events.localhost", "/matchmaking/players");
    assert_eq!(api["service"], "matchmaking-api", "{api}");
    assert_eq!(api["path"], "/players", "{api}");
    let handles: Vec<&str> = api["players"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["handle"].as_str())
        .collect();
    assert_eq!(handles, ["grace", "ada"], "{api}");

    // admin.events.localhost: Django admin, migrated, on the seeded players,
    // calling the API as matchmaking-api.internal.
    let admin = ok_json(port, "admin.events.localhost", "/");
    assert_eq!(admin["service"], "matchmaking-admin", "{admin}");
    assert_eq!(strings(&admin["players"]), ["ada", "grace"], "{admin}");
    let migrations = strings(&admin["migrations"]);
    for m in [
        "admin.0001_initial",
        "auth.0001_initial",
        "sessions.0001_initial",
        "players.0001_initial",
    ] {
        assert!(
            migrations.iter().any(|x| x == m),
            "{m} not applied: {admin}"
        );
    }
    assert_eq!(admin["api"]["service"], "matchmaking-api", "{admin}");
    let login = get(port, "admin.events.localhost", "/admin/login/");
    assert_eq!(login.status, 200, "{login:?}");
    assert!(
        login.body.contains("Django administration"),
        "{}",
        login.body
    );

    // events.localhost (everything else): WordPress on Apache, configured
    // from WORDPRESS_DB_* by the entrypoint; not installed yet, so it sends
    // to the installer, which has reached its database.
    let home = get(port, "events.localhost", "/");
    assert_eq!(home.status, 302, "{home:?}");
    let location = home.header("location").unwrap_or_default();
    assert!(location.ends_with("/wp-admin/install.php"), "{home:?}");
    let install = get(port, "events.localhost", "/wp-admin/install.php");
    assert_eq!(install.status, 200, "{install:?}");
    assert!(
        install.body.contains("install.php?step=2"),
        "{}",
        install.body
    );
}

/// events: WordPress, two Django and two Node services on MariaDB and
/// memcached. Every route answers from its app, each app reads the rows the
/// stack's seed loaded, and the Django apps' migrate tasks ran first.
#[test]
fn events_routes_reach_the_apps_reading_the_seeded_database() {
    ready();
    let _one = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    let ex = Example::new("events", "EVENTS_PORT");
    ex.ok(&["up", "--detach", "--wait", "--timeout", "400s"]);
    let port = ex.port;
    events_routes_answer(port);
    // Installing writes to MariaDB; then the site serves its own title.
    let form = "weblog_title=DevStack+Events&user_name=admin&admin_password=local-only-Pw-1234\
                &admin_password2=local-only-Pw-1234&pw_weak=1&admin_email=admin%40events.localhost\
                &blog_public=0&Submit=Install+WordPress&language=";
    let done = request(
        port,
        "events.localhost",
        "POST",
        "/wp-admin/install.php?step=2",
        Some(form),
    );
    assert_eq!(done.status, 200, "{done:?}");
    assert!(done.body.contains("Success!"), "{}", done.body);
    let site = get(port, "events.localhost", "/");
    assert_eq!(site.status, 200, "{site:?}");
    assert!(site.body.contains("DevStack Events"), "{}", site.body);

    ex.down_leaves_nothing();
}

/// The events stack imported from the team's Compose file
/// (`fixtures/import/events`, production definitions and a laptop overlay)
/// comes up on the local image replicas and routes like the hand-written
/// one: the same overlay, every route answering from its app.
#[test]
fn imported_events_stack_comes_up_and_routes() {
    ready();
    let _one = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    let ex = Example::imported_events();
    let config = ex.ok(&["config", "--json"]);
    let mut written = Example::new("events", "EVENTS_PORT");
    written.port = ex.port;
    let written = written.ok(&["config", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&config.stdout),
        String::from_utf8_lossy(&written.stdout),
        "the imported stack with the overlay is the hand-written one with it"
    );
    ex.ok(&["up", "--detach", "--wait", "--timeout", "400s"]);
    events_routes_answer(ex.port);
    ex.down_leaves_nothing();
}
