//! `devstack export compose` on a real Docker Swarm: the fixture stack
//! `fixtures/stacks/swarm` (replicated services on the local fixture
//! images, a published port, a datastore with a volume) is exported and
//! `docker stack deploy`ed; every service must reach its replica count, each
//! service that publishes a port must answer there, and a service must reach
//! another and the datastore by name on the stack's network.
//!
//! It changes the engine, so it is the only test of its binary (cargo runs
//! test binaries one after another). An engine that is already a swarm
//! manager is used as it is and only the deployed stack is removed. Else the
//! test makes a one-node swarm (`docker swarm init --advertise-addr
//! 127.0.0.1`) and leaves it afterwards, also when it fails: a guard's
//! `Drop` and a panic hook both remove the stack, wait for its networks to
//! go, leave the swarm and remove the `docker_gwbridge` network the swarm
//! made (`swarm leave` keeps it). The engine must then be as it was.
//!
//! The routing mesh (ports published on every node, a virtual IP per
//! service) needs IPVS in the kernel. Where the kernel has none
//! (`/proc/sys/net/ipv4/vs` missing; dockerd logs "error reading the
//! kernel parameter net.ipv4.vs.*", virtual IPs answer "No route to host"
//! and mesh ports refuse connections), the stack is exported with
//! `--no-routing-mesh`: each task's port on its own node, names resolving to
//! every task.

#[path = "../support/fixtures.rs"]
mod fixtures;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/undoing.rs"]
mod undoing;

use process::run;
use undoing::Undoing;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_devstack");
/// The label `docker stack deploy` puts on everything of a stack.
const NAMESPACE: &str = "com.docker.stack.namespace";
/// The bridge `swarm init` makes for containers on overlay networks; `swarm
/// leave` keeps it.
const GWBRIDGE: &str = "docker_gwbridge";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `docker ARGS`: stdout, trimmed, when it succeeds; the error otherwise.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = run("docker", args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The engine's swarm state: `inactive`, `active`, `pending`, `error`,
/// `locked`.
fn swarm_state() -> String {
    docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
}

fn network_names() -> BTreeSet<String> {
    lines(&docker_ok(&["network", "ls", "--format", "{{.Name}}"]))
        .into_iter()
        .collect()
}

/// What the engine lists of a stack: containers, networks, volumes.
fn stack_leftovers(stack: &str) -> Vec<String> {
    let label = format!("label={NAMESPACE}={stack}");
    let mut found = Vec::new();
    for kind in [["ps", "-a"], ["network", "ls"], ["volume", "ls"]] {
        let mut args: Vec<&str> = kind.to_vec();
        args.extend(["-q", "--filter", label.as_str()]);
        for id in lines(&docker(&args).unwrap_or_default()) {
            found.push(format!("{} {id}", kind[0]));
        }
    }
    found
}

/// What the test must undo, taken (once) by whichever of the guard's drop,
/// the panic hook and the end of the test comes first.
struct Undo {
    stack: String,
    /// The test made the swarm: leave it, and remove the bridge it made.
    leave: bool,
}

static UNDO: Mutex<Option<Undo>> = Mutex::new(None);

/// Removes the stack (and its volumes, which `stack rm` keeps), waits for
/// its containers and networks to go, and leaves a swarm the test made.
/// Returns what could not be undone.
fn undo() -> Vec<String> {
    let Some(undo) = UNDO.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Vec::new();
    };
    let mut failed = Vec::new();
    if let Err(e) = docker(&["stack", "rm", &undo.stack]) {
        failed.push(e);
    }
    let label = format!("label={NAMESPACE}={}", undo.stack);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let containers = docker(&["ps", "-aq", "--filter", &label]).unwrap_or_default();
        let networks = docker(&["network", "ls", "-q", "--filter", &label]).unwrap_or_default();
        if containers.is_empty() && networks.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            failed.push(format!(
                "after 90 s the stack's containers [{containers}] and networks [{networks}] are still there"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for volume in lines(&docker(&["volume", "ls", "-q", "--filter", &label]).unwrap_or_default()) {
        if let Err(e) = docker(&["volume", "rm", &volume]) {
            failed.push(e);
        }
    }
    if undo.leave {
        if let Err(e) = docker(&["swarm", "leave", "--force"]) {
            failed.push(e);
        }
        // No panic in here: this also runs inside the panic hook.
        let networks = docker(&["network", "ls", "--format", "{{.Name}}"]).unwrap_or_default();
        if networks.lines().any(|n| n.trim() == GWBRIDGE) {
            if let Err(e) = docker(&["network", "rm", GWBRIDGE]) {
                failed.push(e);
            }
        }
    }
    failed
}

/// The kernel has IPVS, which the routing mesh needs.
fn kernel_has_ipvs() -> bool {
    Path::new("/proc/sys/net/ipv4/vs").exists()
}

/// `GET PATH` on 127.0.0.1:PORT as JSON, retried while nothing accepts the
/// connection (for at most 30 s).
fn get_json(port: u16, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_get(port, path) {
            Ok((200, body)) => {
                return serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("GET :{port}{path}: not JSON ({e}): {body}"))
            }
            Ok((status, body)) => panic!("GET :{port}{path}: {status} {body}"),
            Err(e) if Instant::now() > deadline => panic!("GET :{port}{path}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn try_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {head}"))?;
    Ok((status, body.to_string()))
}

/// `docker service ps --no-trunc` of every service of the stack, for a
/// failure message.
fn tasks_report(stack: &str) -> String {
    let mut text = docker(&[
        "service",
        "ls",
        "--filter",
        &format!("label={NAMESPACE}={stack}"),
    ])
    .unwrap_or_else(|e| e);
    for service in lines(
        &docker(&[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label={NAMESPACE}={stack}"),
        ])
        .unwrap_or_default(),
    ) {
        text.push_str("\n\n");
        text.push_str(&docker(&["service", "ps", "--no-trunc", &service]).unwrap_or_else(|e| e));
    }
    text
}

/// Waits until every service of the stack runs its replicas (`n/n` in
/// `docker service ls`, a task counting once its health check passes).
fn wait_for_replicas(stack: &str, expected: &BTreeMap<String, u32>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let filter = format!("label={NAMESPACE}={stack}");
    loop {
        let listed = docker_ok(&[
            "service",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}} {{.Replicas}}",
        ]);
        let running: BTreeMap<String, String> = lines(&listed)
            .iter()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect();
        let done = expected.iter().all(|(service, n)| {
            running.get(&format!("{stack}_{service}")) == Some(&format!("{n}/{n}"))
        });
        if done {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "after 300 s not every service runs its replicas {expected:?}:\n{}",
                tasks_report(stack)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The running task containers of a service.
fn task_containers(stack: &str, service: &str) -> Vec<String> {
    lines(&docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={stack}_{service}"),
    ]))
}

#[test]
fn exported_stack_runs_on_a_swarm_and_answers() {
    fixtures::engine_answers();
    fixtures::under_build_lock(|| fixtures::build(&repo(), &["app", "redis"]));

    let before_state = swarm_state();
    let before_networks = network_names();
    let leave = match before_state.as_str() {
        "inactive" => true,
        "active" => {
            let manager = docker_ok(&["info", "--format", "{{.Swarm.ControlAvailable}}"]);
            assert_eq!(
                manager, "true",
                "this engine is a swarm worker: `docker stack deploy` needs a manager"
            );
            eprintln!("the engine is already a swarm manager: using it as it is");
            false
        }
        other => panic!("the engine's swarm is `{other}`; this test leaves such an engine alone"),
    };

    // The export, with or without the routing mesh as the kernel allows.
    let mesh = kernel_has_ipvs();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("stack.yaml");
    let file_arg = file.to_str().expect("a UTF-8 temp path");
    let stack_file = repo().join("fixtures/stacks/swarm/devstack.yaml");
    let mut args = vec![
        "-f",
        stack_file.to_str().expect("a UTF-8 repo path"),
        "export",
        "compose",
        "-o",
        file_arg,
    ];
    if !mesh {
        eprintln!("no IPVS in this kernel: exporting with --no-routing-mesh");
        args.push("--no-routing-mesh");
    }
    let exported = run(BIN, &args);
    assert!(
        exported.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("the export was written");
    assert_eq!(text.contains("mode: host"), !mesh, "{text}");

    let stack = format!("dsswarm{}", std::process::id());
    let guard = Undoing::arm("swarm test", undo);
    *UNDO.lock().unwrap_or_else(|e| e.into_inner()) = Some(Undo {
        stack: stack.clone(),
        leave,
    });
    if leave {
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    }
    docker_ok(&[
        "stack",
        "deploy",
        "--detach=true",
        "--resolve-image",
        "never",
        "-c",
        file_arg,
        &stack,
    ]);

    let expected: BTreeMap<String, u32> = [
        ("front".to_string(), 2),
        ("back".to_string(), 2),
        ("cache".to_string(), 1),
    ]
    .into();
    wait_for_replicas(&stack, &expected);

    // Each service that publishes a port answers there: the fixture app's
    // JSON, from one of the service's own tasks.
    let mut publishers = Vec::new();
    for service in expected.keys() {
        let spec = docker_ok(&[
            "service",
            "inspect",
            &format!("{stack}_{service}"),
            "--format",
            "{{json .Endpoint.Ports}}",
        ]);
        let ports: Vec<Value> = serde_json::from_str(&spec).unwrap_or_default();
        if ports.is_empty() {
            continue;
        }
        publishers.push(service.clone());
        let tasks = task_containers(&stack, service);
        let hostnames: BTreeSet<String> = tasks
            .iter()
            .map(|id| docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", id]))
            .collect();
        let mut answered = BTreeSet::new();
        if mesh {
            // One port on every node, load-balanced over the tasks.
            let port = ports[0]["PublishedPort"]
                .as_u64()
                .expect("a published port") as u16;
            for _ in 0..8 {
                let answer = get_json(port, "/");
                assert_eq!(answer["service"], service.as_str(), "{answer}");
                answered.insert(answer["hostname"].as_str().unwrap_or("").to_string());
            }
            assert!(
                answered.is_subset(&hostnames),
                "{answered:?} not of {hostnames:?}"
            );
        } else {
            // Each task's own port on this node.
            for id in &tasks {
                let mapped = docker_ok(&["port", id, "8080/tcp"]);
                let port: u16 = mapped
                    .lines()
                    .next()
                    .and_then(|l| l.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("no host port of {id}: {mapped}"));
                let answer = get_json(port, "/");
                assert_eq!(answer["service"], service.as_str(), "{answer}");
                answered.insert(answer["hostname"].as_str().unwrap_or("").to_string());
            }
            assert_eq!(answered, hostnames, "every task answers on its port");
        }
        assert!(!answered.is_empty());
    }
    assert_eq!(publishers, ["front"], "the services that publish a port");

    // On the stack's network, services find each other by name: front calls
    // back, and reaches the datastore.
    let front = task_containers(&stack, "front");
    let front_port: u16 = if mesh {
        let spec = docker_ok(&[
            "service",
            "inspect",
            &format!("{stack}_front"),
            "--format",
            "{{(index .Endpoint.Ports 0).PublishedPort}}",
        ]);
        spec.parse().expect("a published port")
    } else {
        docker_ok(&["port", &front[0], "8080/tcp"])
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("a host port")
    };
    let called = get_json(front_port, "/call?url=http://back:8080/");
    assert_eq!(called["service"], "back", "{called}");
    let back_hostnames: BTreeSet<String> = task_containers(&stack, "back")
        .iter()
        .map(|id| docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", id]))
        .collect();
    assert!(
        back_hostnames.contains(called["hostname"].as_str().unwrap_or("")),
        "{called} not from {back_hostnames:?}"
    );
    assert_eq!(
        docker_ok(&["exec", &front[0], "redis-cli", "-h", "cache", "ping"]),
        "PONG"
    );
    let volumes = docker_ok(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label={NAMESPACE}={stack}"),
    ]);
    assert_eq!(lines(&volumes), [format!("{stack}_cache-data")]);

    // Removed, and the engine as it was: the guard's work, done here so
    // that what could not be undone fails the test.
    std::mem::forget(guard);
    let failed = undo();
    assert!(failed.is_empty(), "clean-up: {failed:?}");
    assert_eq!(swarm_state(), before_state, "the engine's swarm state");
    let left = stack_leftovers(&stack);
    assert!(left.is_empty(), "left of the stack: {left:?}");
    let after_networks = network_names();
    for swarm_network in [GWBRIDGE, "ingress"] {
        assert_eq!(
            after_networks.contains(swarm_network),
            before_networks.contains(swarm_network),
            "{swarm_network}: before {before_networks:?}, after {after_networks:?}"
        );
    }
}
