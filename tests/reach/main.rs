//! Issue 15, "the host cannot reach bridge addresses", simulated on a Linux
//! engine: a firewall rule drops every connection the devstack processes
//! start towards the stack network's subnet, as Docker Desktop's VM or a
//! host without a route to the bridge would. Under it the routed web stack
//! of the watch tests (a `build:` service, two replicas, behind the proxy)
//! must come up and be routed, decide `published` as its reach, keep
//! serving when a replica is killed, keep its registrations when its routing
//! agent is killed and started again, keep the proxy's control port out of
//! its containers' reach, and swap on a save without one failed request.
//!
//! The rule matches devstack's own traffic only: every devstack command of
//! the stack runs in a cgroup v2 directory of this test (the routing agent
//! it starts inherits it), and the rule is
//! `OUTPUT -o <bridge> -d <subnet> -m cgroup --path <dir> -m conntrack
//! --ctstate NEW -j DROP`. So
//! - Docker's userland proxy (`docker-proxy`, outside that cgroup), which
//!   forwards a port published on 127.0.0.1 by connecting from the host to
//!   the container's address, still works: that is the path under test;
//! - replies of devstack's embedded etcd to the containers (connections the
//!   containers start) still leave;
//! - the network's gateway, a local address reached over `lo`, stays
//!   reachable (the embedded etcd listens there);
//! - the test itself, outside the cgroup, requests the proxy as a user would;
//! - nothing else on the machine (other tests, other helpers) is affected.
//!
//! The network is made by the test (with the project label, so devstack
//! adopts it) so that its subnet is known before the first devstack command.
//!
//! It changes the host's firewall, so it is the only test of its binary, and
//! it undoes the rule and the cgroup even when it fails: a guard's `Drop`
//! and a panic hook both do (as `tests/swarm` does for its swarm).

#[path = "../support/fixtures.rs"]
mod fixtures;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/undoing.rs"]
mod undoing;
#[path = "../support/watched.rs"]
mod watched;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use process::run;
use undoing::Undoing;
use watched::*;

/// `docker ARGS`, trimmed stdout; a failure fails the test.
fn docker_ok(args: &[&str]) -> String {
    let out = run("docker", args);
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts is readable");
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
        .expect("cgroup v2 is mounted (the firewall rule matches devstack's processes by it)")
}

/// What the test must undo, taken (once) by whichever of the guard's drop
/// and the panic hook comes first.
struct Undo {
    /// The rule's specification, as given to `iptables -I OUTPUT`.
    rule: Vec<String>,
    /// The cgroup directory devstack's commands ran in.
    cgroup: PathBuf,
}

static UNDO: Mutex<Option<Undo>> = Mutex::new(None);

/// Deletes the rule, moves any process still in the cgroup back to the
/// root and removes the directory. Returns what could not be undone. No
/// panic in here: it also runs inside the panic hook.
fn undo() -> Vec<String> {
    let Some(undo) = UNDO.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Vec::new();
    };
    let mut failed = Vec::new();
    let mut args = vec!["-w", "-D", "OUTPUT"];
    args.extend(undo.rule.iter().map(String::as_str));
    match Command::new("iptables").args(&args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => failed.push(format!(
            "`iptables {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => failed.push(format!("cannot run iptables: {e}")),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A process left behind (an agent a failed `down` did not stop)
        // goes back to the root cgroup, so the directory can go.
        let procs = std::fs::read_to_string(undo.cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(cgroup2_root().join("cgroup.procs"), pid);
        }
        match std::fs::remove_dir(&undo.cgroup) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) if Instant::now() > deadline => {
                failed.push(format!("cannot remove {}: {e}", undo.cgroup.display()));
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    failed
}

/// Makes the cgroup and inserts the rule for the network `network`
/// (already made), recording both for [`undo`] before either exists.
fn firewall(network: &str) -> (Undoing, PathBuf) {
    let id = docker_ok(&["network", "inspect", "-f", "{{.Id}}", network]);
    let subnet = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        network,
    ]);
    let subnet = subnet
        .split_whitespace()
        .find(|s| s.contains('.'))
        .expect("an IPv4 subnet")
        .to_string();
    let bridge = format!("br-{}", &id[..12]);
    let root = cgroup2_root();
    let name = format!("devstack-reach-{}", std::process::id());
    let dir = root.join(&name);
    let rule: Vec<String> = [
        "-o",
        &bridge,
        "-d",
        &subnet,
        "-m",
        "cgroup",
        "--path",
        &name,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let guard = Undoing::arm("reach test", undo);
    *UNDO.lock().unwrap() = Some(Undo {
        rule: rule.clone(),
        cgroup: dir.clone(),
    });
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
    let mut args = vec!["-w", "-I", "OUTPUT"];
    args.extend(rule.iter().map(String::as_str));
    let out = run("iptables", &args);
    assert!(
        out.status.success(),
        "`iptables {}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (guard, dir)
}

/// Whether a TCP connection to `addr` opens within 3 s, tried by a process
/// in `cgroup` (or, `None`, by one outside it).
fn connects(cgroup: Option<&Path>, addr: &str) -> bool {
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let probe =
        format!("import socket; socket.create_connection(('{ip}', {port}), timeout=3).close()");
    let mut cmd = Command::new("sh");
    cmd.arg("-c");
    match cgroup {
        Some(dir) => cmd
            .arg("echo $$ > \"$0/cgroup.procs\" && exec python3 -c \"$1\"")
            .arg(dir)
            .arg(&probe),
        None => cmd.arg("exec python3 -c \"$0\"").arg(&probe),
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A container's address on the stack network.
fn address(container: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ])
}

/// The project's routing state file, as devstack writes it.
fn routing_state(project: &str) -> serde_json::Value {
    let home = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".local/state")
        });
    let path = home.join("devstack").join(project).join("routing.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is readable: {e}", path.display()));
    serde_json::from_str(&text).expect("routing.json is JSON")
}

/// `n` answers in a row from the stack, each "first"; false at the first other.
fn serves_in_a_row(s: &Stack, n: usize) -> bool {
    (0..n).all(|_| message(s.listen).as_deref() == Ok("first"))
}

/// The engine answers and the fixture images the stack uses exist (built,
/// under the lock every test binary shares, when they do not).
fn ready() {
    fixtures::engine_answers();
    let wanted = [
        "devstack-fixtures/haproxy:2.6",
        "devstack-fixtures/debian:bookworm",
    ];
    let missing = || {
        wanted
            .iter()
            .any(|i| docker_ok(&["images", "-q", i]).is_empty())
    };
    if missing() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        fixtures::under_build_lock(|| {
            if missing() {
                fixtures::build(repo, &[]);
            }
        });
    }
}

#[test]
fn a_stack_whose_bridge_devstack_cannot_reach_is_routed_survives_a_kill_and_swaps() {
    ready();
    let mut s = Stack::with("r", "    replicas: 2");
    // The stack network, made now so that its subnet is known; the project
    // label makes it the stack's own (devstack adopts it, `down` removes it).
    docker_ok(&[
        "network",
        "create",
        "--label",
        &format!("dev.devstack.project={}", s.name),
        &s.name,
    ]);
    let (_firewall, cgroup) = firewall(&s.name);
    s.cgroup = Some(cgroup.clone());

    // Up, routed, with the decision recorded and said.
    let out = s
        .cmd(&["up", "--detach", "--wait", "--json", "--timeout", "180s"])
        .output()
        .expect("devstack up runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "up failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reach: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "reach")
        .collect();
    assert_eq!(
        reach,
        [serde_json::json!({"event": "reach", "reach": "published", "decided": true})],
        "{stdout}"
    );
    assert_eq!(routing_state(&s.name)["reach"], "published");
    until(Duration::from_secs(30), "the stack answers", || {
        message(s.listen).as_deref() == Ok("first")
    });

    // The simulation holds: devstack's cgroup cannot open a connection to a
    // container's address, while a process outside it can, and the web
    // replicas publish their probe port on loopback only.
    let web1 = format!("{}-web-1", s.name);
    let target = format!("{}:8080", address(&web1));
    assert!(connects(None, &target), "the test reaches {target}");
    assert!(
        !connects(Some(&cgroup), &target),
        "devstack's cgroup must not reach {target}"
    );
    let published = docker_ok(&["port", &web1, "8080/tcp"]);
    assert!(
        !published.is_empty() && published.lines().all(|l| l.starts_with("127.0.0.1:")),
        "the probe port is published on loopback only: {published:?}"
    );

    // The safety rule holds on this path too: the control port admits the
    // gateway (where the loopback publication's connections come from),
    // never a container of the stack.
    let proxy_ip = address(&format!("{}-proxy", s.name));
    let asked = docker_ok(&[
        "exec",
        &web1,
        "python3",
        "-c",
        &format!(
            "import socket\ngot = b''\ntry:\n    c = socket.create_connection(('{proxy_ip}', 9990), 2)\n    c.settimeout(2)\n    c.sendall(b'show proc\\n')\n    c.shutdown(socket.SHUT_WR)\n    while True:\n        b = c.recv(4096)\n        if not b: break\n        got += b\nexcept Exception as e:\n    got += repr(e).encode()\nprint(repr(got))"
        ),
    ]);
    assert!(
        !asked.contains("master"),
        "a container of the stack reached the master CLI: {asked}"
    );

    // A killed replica: the other one serves, and `up` brings it back.
    docker_ok(&["kill", &web1]);
    until(
        Duration::from_secs(20),
        "the other replica serves alone",
        || serves_in_a_row(&s, 10),
    );
    up(&s, "first");
    let mut hosts = BTreeSet::new();
    until(Duration::from_secs(30), "both replicas serve again", || {
        if let Some(h) = hostname(s.listen) {
            hosts.insert(h);
        }
        hosts.len() == 2
    });

    // A routing agent killed and started again beside the running stack
    // decides on the running proxy before its registrar probes anything:
    // the replicas stay registered and served.
    let agent = routing_state(&s.name)["pid"]
        .as_u64()
        .expect("the agent's pid")
        .to_string();
    assert!(process::command_ok("kill", &["-9", &agent]));
    up(&s, "first");
    assert_eq!(routing_state(&s.name)["reach"], "published");
    assert_ne!(routing_state(&s.name)["pid"].to_string(), agent);
    hosts.clear();
    until(
        Duration::from_secs(30),
        "both replicas serve after the restart",
        || {
            if let Some(h) = hostname(s.listen) {
                hosts.insert(h);
            }
            hosts.len() == 2
        },
    );

    // A save swaps both replicas, and no request fails meanwhile.
    let rx = start_watch(&mut s);
    let load = Poll::start(s.listen, Duration::from_millis(20));
    std::fs::write(s.file("message.txt"), "second").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    until(Duration::from_secs(15), "the new version answers", || {
        message(s.listen).as_deref() == Ok("second")
    });
    let answers = load.finish();
    let errors = unexpected(&answers, &["first", "second"]);
    assert!(
        errors.is_empty(),
        "failed requests during the swap ({} answers): {errors:?}",
        answers.len()
    );
    // The swapped-in replicas, once the old ones are gone and they took the
    // usual names, publish their probe port on loopback too.
    let usual = [format!("{}-web-1", s.name), format!("{}-web-2", s.name)];
    until(Duration::from_secs(30), "the old replicas are gone", || {
        let mut names = web_names(&s);
        names.sort();
        names == usual
    });
    for name in &usual {
        let published = docker_ok(&["port", name, "8080/tcp"]);
        assert!(
            published.lines().any(|l| l.starts_with("127.0.0.1:")),
            "{name}: {published:?}"
        );
    }
}
