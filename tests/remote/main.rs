//! devstack against a remote engine: a second `dockerd` that this test
//! starts in a network namespace of its own, with its own socket, data root,
//! exec root, containerd and bridge, reached over a veth pair with
//! `DOCKER_HOST=tcp://ADDR:2375`. Its bridge and stack networks use address
//! pools the host has no route to, and its published ports listen in its
//! namespace only, so nothing of it is reachable from this host by accident:
//! devstack must reach containers the way it reaches any remote engine.
//!
//! The `basic` engine fixture (a service built from source, a prebuilt
//! service with two replicas, a redis datastore with a volume and a command
//! health check, a task before the web service) comes up healthy there
//! (probes go through exec: nothing of the engine's is reachable from
//! here), its port is published on the engine's loopback only, `exec` and `run` pass
//! exit codes through, nothing appears on the local engine, and `down
//! --volumes` leaves nothing on the remote one.
//!
//! Then a routed stack (two replicas of the prebuilt app behind the
//! fixture HAProxy): devstack reaches it only through exec, so the proxy's
//! control channel and its way to the registry (which runs in the stack)
//! are tunnels of `docker exec` relays. `up` says `exec` and `stack`, both
//! replicas answer through the proxy (asked inside the engine's namespace,
//! where its listen address is), a killed replica leaves the other
//! serving, and `down --volumes` leaves nothing. Its routing agent runs on
//! this host; a failed test stops it too.
//!
//! It changes the host (a namespace, a veth pair, a daemon), so it is the
//! only test of its binary (cargo runs test binaries one after another).
//! A guard's `Drop` and a panic hook both stop the daemon and its
//! containers, unmount what it mounted and remove the namespace and its
//! data, also when the test fails.

#[path = "../support/fixtures.rs"]
mod fixtures;
#[path = "../support/other_engine.rs"]
mod other_engine;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/state.rs"]
mod state;
#[path = "../support/undoing.rs"]
mod undoing;

use other_engine::{local_containers, text};
use process::run;
use state::routing_state;
use undoing::Undoing;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What this test made, named from its pid so that nothing else's is
/// touched; undone at most once, by whichever of the guard's `Drop`, the
/// panic hook and the end of the test comes first.
#[derive(Clone)]
struct Made {
    netns: String,
    veth: String,
    dir: PathBuf,
}

static MADE: Mutex<Option<Made>> = Mutex::new(None);

impl Made {
    fn new() -> Made {
        let id = std::process::id() % 100_000;
        Made {
            netns: format!("dsremote{id}"),
            veth: format!("dsrh{id}"),
            dir: std::env::temp_dir().join(format!("devstack-remote-engine-{id}")),
        }
    }
    fn pidfile(&self) -> PathBuf {
        self.dir.join("docker.pid")
    }
    fn exec_root(&self) -> PathBuf {
        self.dir.join("exec")
    }
    fn data_root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Processes whose command line names `needle` (the daemon's own exec root:
/// its containerd and the shims of its containers).
fn processes_naming(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Stops the daemon (SIGTERM, then SIGKILL after 30 s), then whatever of
/// its containerd and shims is left, unmounts what is mounted under its
/// directories and removes the namespace and the directory. No panic in
/// here: this also runs inside the panic hook.
fn undo() -> Vec<String> {
    let Some(made) = MADE.lock().map(|mut m| m.take()).unwrap_or(None) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let daemon = std::fs::read_to_string(made.pidfile())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    if let Some(pid) = daemon {
        // SAFETY: a positive pid this test started (never a group or -1).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        if pid_alive(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // The routed stack's routing agent runs on this host: stop it (its
    // engine is going) and forget its state.
    let routed = routed_project();
    for pid in processes_naming(&format!("{routed}\0agent")) {
        if pid > 1 && pid != std::process::id() as i32 {
            // SAFETY: a positive pid of this test's routing agent.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_dir_all(devstack::controller::state::state_root().join(&routed));
    let exec_root = made.exec_root().to_string_lossy().into_owned();
    for pid in processes_naming(&exec_root) {
        if pid > 1 && pid != std::process::id() as i32 {
            // SAFETY: a positive pid of a process naming this test's exec root.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    other_engine::unmount_under(&made.dir);
    // The daemon's `--cgroup-parent`, left empty once its containers are.
    for problem in remove_cgroups(&made.netns) {
        problems.push(problem);
    }
    let _ = run("ip", &["link", "del", &made.veth]);
    let removed = run("ip", &["netns", "del", &made.netns]);
    if !removed.status.success() {
        problems.push(format!(
            "namespace {}: {}",
            made.netns,
            text(&removed).trim()
        ));
    }
    if let Err(e) = std::fs::remove_dir_all(&made.dir) {
        problems.push(format!("cannot remove {}: {e}", made.dir.display()));
    }
    problems
}

/// Removes the cgroup `name` at the top of every hierarchy (cgroup v2's
/// one, or each v1 controller's), its children first; what cannot be
/// removed (a process still in it) is reported.
fn remove_cgroups(name: &str) -> Vec<String> {
    fn remove_tree(dir: &Path, problems: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path(), problems);
                }
            }
        }
        // A cgroup's files are the kernel's: rmdir takes them with it.
        if let Err(e) = std::fs::remove_dir(dir) {
            problems.push(format!("cgroup {}: {e}", dir.display()));
        }
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut tops = vec![root.join(name)];
    if let Ok(entries) = std::fs::read_dir(root) {
        tops.extend(entries.flatten().map(|e| e.path().join(name)));
    }
    let mut problems = Vec::new();
    for top in tops.iter().filter(|t| t.is_dir()) {
        remove_tree(top, &mut problems);
    }
    problems
}

/// The second engine: its namespace, veth pair and daemon. The host side of
/// the pair is `10.231.N.1/30`, the engine listens on `10.231.N.2:2375`.
struct Remote {
    made: Made,
    addr: String,
    /// `nsenter`, which became the daemon (it execs it).
    daemon: std::process::Child,
}

impl Drop for Remote {
    fn drop(&mut self) {
        for problem in undo() {
            eprintln!("remote test clean-up: {problem}");
        }
        let _ = self.daemon.wait();
    }
}

impl Remote {
    /// `curl -sS ARGS` from inside the engine's network namespace (where its
    /// loopback-published ports are).
    fn curl(&self, args: &[&str]) -> Output {
        let net = format!("--net=/run/netns/{}", self.made.netns);
        let mut argv = vec![net.as_str(), "curl", "-sS"];
        argv.extend_from_slice(args);
        run("nsenter", &argv)
    }

    fn start() -> Remote {
        let made = Made::new();
        *MADE.lock().unwrap() = Some(made.clone());
        let n = std::process::id() % 250;
        let host = format!("10.231.{n}.1/30");
        let addr = format!("10.231.{n}.2");
        let peer = format!("dsrn{}", std::process::id() % 100_000);
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), made.netns.clone()],
            vec![
                "link".into(),
                "add".into(),
                made.veth.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                peer.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                peer.clone(),
                "netns".into(),
                made.netns.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                host,
                "dev".into(),
                made.veth.clone(),
            ],
            vec!["link".into(), "set".into(), made.veth.clone(), "up".into()],
            vec![
                "-n".into(),
                made.netns.clone(),
                "addr".into(),
                "add".into(),
                format!("{addr}/30"),
                "dev".into(),
                peer.clone(),
            ],
            vec![
                "-n".into(),
                made.netns.clone(),
                "link".into(),
                "set".into(),
                peer,
                "up".into(),
            ],
            vec![
                "-n".into(),
                made.netns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in &steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            let out = run("ip", &args);
            assert!(
                out.status.success(),
                "`ip {}` failed: {}",
                args.join(" "),
                text(&out)
            );
        }
        std::fs::create_dir_all(&made.dir).unwrap();
        // An empty configuration file: the host's daemon.json names its own
        // data root, which must not be shared.
        let config = made.dir.join("daemon.json");
        std::fs::write(&config, "{}").unwrap();
        let driver = run("docker", &["info", "--format", "{{.Driver}}"]);
        let driver = String::from_utf8_lossy(&driver.stdout).trim().to_string();
        let log = std::fs::File::create(made.dir.join("dockerd.log")).unwrap();
        let mut daemon = Command::new("nsenter");
        daemon
            .arg(format!("--net=/run/netns/{}", made.netns))
            .arg("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(made.data_root())
            .arg("--exec-root")
            .arg(made.exec_root())
            .arg("--pidfile")
            .arg(made.pidfile())
            .arg("-H")
            .arg(format!("unix://{}", made.dir.join("docker.sock").display()))
            .arg("-H")
            .arg(format!("tcp://{addr}:2375"))
            // Pools the host has no route to: a container address never
            // answers from here by accident.
            .args(["--bip", "10.233.0.1/24"])
            .args(["--default-address-pool", "base=10.234.0.0/16,size=24"])
            .args(["--cgroup-parent", &format!("/{}", made.netns)]);
        if !driver.is_empty() {
            daemon.args(["--storage-driver", &driver]);
        }
        daemon
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own session, so that no signal to the test's group reaches it;
        // the guard stops it through its pid file.
        unsafe {
            use std::os::unix::process::CommandExt;
            daemon.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let daemon = daemon.spawn().expect("nsenter runs dockerd");
        let remote = Remote { made, addr, daemon };
        other_engine::wait_for(&remote.host(), &remote.made.dir.join("dockerd.log"));
        remote
    }

    fn host(&self) -> String {
        format!("tcp://{}:2375", self.addr)
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        other_engine::docker_ok(&self.host(), args)
    }

    fn devstack(&self, project: &str, args: &[&str]) -> Output {
        self.devstack_on(&other_engine::basic(), project, args)
    }

    fn devstack_on(&self, file: &Path, project: &str, args: &[&str]) -> Output {
        other_engine::devstack(&self.host(), file, project, args)
    }
}

/// `GET path` at `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: remote\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response)
}

/// A routed stack on the remote engine: two replicas of the prebuilt app
/// behind the proxy, which listens on the engine's loopback (`listen`).
fn routed_stack(dir: &Path, listen: &str) -> PathBuf {
    let file = dir.join("routed.yaml");
    std::fs::write(
        &file,
        format!(
            "name: routed
services:
  api:
    image: devstack-fixtures/app
    port: 8080
    replicas: 2
    env: {{ SERVICE: api }}
    health: {{ http: /health, start_period: 30s }}
    restart: \"no\"
    stop_grace: 1s
    routes: [{ROUTED_HOST}]
proxy:
  kind: haproxy
  image: devstack-fixtures/haproxy:2.6
  listen: {listen}
"
        ),
    )
    .unwrap();
    file
}

fn routed_project() -> String {
    format!("remoterouted{}", std::process::id() % 100_000)
}

const ROUTED_HOST: &str = "api.remote.localhost";

/// The routed stack's answer through its proxy, asked from inside the
/// engine's namespace (the proxy's port is on the engine's loopback): the
/// replica's hostname.
fn routed_hostname(remote: &Remote, listen: &str) -> Result<String, String> {
    let out = remote.curl(&[
        "--fail",
        "--max-time",
        "5",
        "-H",
        &format!("Host: {ROUTED_HOST}"),
        &format!("http://{listen}/"),
    ]);
    if !out.status.success() {
        return Err(text(&out));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
    v["hostname"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| text(&out))
}

fn until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The routed stack on the remote engine: devstack reaches it only through
/// exec, so the proxy's control channel and devstack's way to the registry
/// (which runs in the stack) are tunnels of `docker exec` relays. It comes
/// up routed, both replicas answer through the proxy, a killed replica
/// leaves the other serving, and `down --volumes` leaves nothing.
fn a_routed_stack_runs_through_exec_tunnels(remote: &Remote) {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", 18000 + std::process::id() % 1000);
    let listen = listen.as_str();
    let file = routed_stack(dir.path(), listen);
    // Its routing agent, on this host, is stopped by `undo` should the
    // test fail.
    let project = routed_project();
    let started = Instant::now();
    let up = remote.devstack_on(
        &file,
        &project,
        &["up", "--detach", "--wait", "--json", "--timeout", "180s"],
    );
    assert!(up.status.success(), "the routed stack's up failed");
    let said = other_engine::reach_events(&up.stdout);
    assert_eq!(
        said,
        [
            serde_json::json!({"event": "reach", "reach": "exec", "decided": true, "registry": "stack"})
        ],
        "{}",
        text(&up)
    );
    assert_eq!(routing_state(&project)["reach"], "exec");
    assert_eq!(routing_state(&project)["registry"], "stack");
    let registry = format!("{project}-registry");
    assert_eq!(
        remote.docker_ok(&["inspect", "-f", "{{.State.Running}}", &registry]),
        "true",
        "the registry runs in the stack"
    );

    let mut hosts = std::collections::BTreeSet::new();
    until(
        Duration::from_secs(30),
        "both replicas answer through the proxy",
        || {
            if let Ok(h) = routed_hostname(remote, listen) {
                hosts.insert(h);
            }
            hosts.len() == 2
        },
    );
    eprintln!(
        "routed through exec tunnels: up and both replicas in {:?}",
        started.elapsed()
    );

    // A killed replica: the registrar sees it die, the router takes it out
    // of the proxy (through the tunnel), and the other serves alone.
    remote.docker_ok(&["kill", &format!("{project}-api-1")]);
    let killed = Instant::now();
    until(
        Duration::from_secs(30),
        "the other replica serves alone, 10 requests in a row",
        || (0..10).all(|_| routed_hostname(remote, listen).is_ok()),
    );
    let alone: std::collections::BTreeSet<String> = (0..6)
        .map(|_| routed_hostname(remote, listen).expect("the remaining replica answers"))
        .collect();
    assert_eq!(
        alone.len(),
        1,
        "only the remaining replica answers: {alone:?}"
    );
    eprintln!(
        "routed through exec tunnels: serving alone {:?} after the kill",
        killed.elapsed()
    );

    let down = remote.devstack_on(&file, &project, &["down", "--volumes"]);
    assert!(down.status.success(), "down of the routed stack failed");
    other_engine::nothing_left(&remote.host(), &project);
    assert!(
        local_containers(&project).is_empty(),
        "containers of the routed stack appeared on the local engine"
    );
}

fn can_make_an_engine() -> Result<(), String> {
    for program in ["ip", "nsenter", "dockerd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Err(format!("`{program}` is not installed"));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: a network namespace and a daemon need root".into());
    }
    Ok(())
}

#[test]
fn a_stack_runs_on_a_remote_engine_reached_over_tcp() {
    fixtures::engine_answers();
    if let Err(why) = can_make_an_engine() {
        panic!("this test makes a second engine and cannot here: {why}");
    }
    let repo = other_engine::repo();
    fixtures::under_build_lock(|| fixtures::build(&repo, &[]));
    let _undoing = Undoing::arm("remote test", undo);
    let remote = Remote::start();
    let mut images = other_engine::images_of_basic();
    // The routed stack's proxy (its app image is basic's api).
    images.push("devstack-fixtures/haproxy:2.6".to_string());
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    other_engine::load(&remote.host(), &images);

    let project = format!("remote{}", std::process::id() % 100_000);
    let up = remote.devstack(&project, &["up", "--wait", "--timeout", "180s"]);
    assert!(up.status.success(), "up on the remote engine failed");
    assert!(
        local_containers(&project).is_empty(),
        "containers of the remote stack appeared on the local engine"
    );
    let running = other_engine::labelled(&remote.host(), "container", &project);
    assert_eq!(running.len(), 4, "web, 2 api, cache: {running:?}");

    let ps = remote.devstack(&project, &["ps", "--json"]);
    assert!(ps.status.success());
    assert_eq!(other_engine::healthy(&ps.stdout), 4, "every unit healthy");

    // The web service's port is published on the engine's loopback, as on
    // a local engine: it answers there (inside the engine's namespace) and
    // is not opened to the engine's other addresses.
    let published = remote.docker_ok(&["port", &format!("{project}-web-1"), "8080"]);
    let published = published.lines().next().unwrap_or_default().to_string();
    assert!(published.starts_with("127.0.0.1:"), "{published}");
    let port = published.rsplit(':').next().unwrap_or_default();
    let inside = remote.curl(&["--max-time", "10", &format!("http://127.0.0.1:{port}/")]);
    assert!(
        String::from_utf8_lossy(&inside.stdout).contains("\"service\": \"web\""),
        "web on the engine's loopback: {}",
        text(&inside)
    );
    assert!(
        http_get(&format!("{}:{port}", remote.addr), "/").is_err(),
        "a loopback-only port answered at the engine's address"
    );

    let exec = remote.devstack(&project, &["exec", "web", "--", "sh", "-c", "exit 7"]);
    assert_eq!(exec.status.code(), Some(7));
    let task = remote.devstack(&project, &["run", "prepare"]);
    assert_eq!(task.status.code(), Some(0));
    assert!(text(&task).contains("prepared"));

    let down = remote.devstack(&project, &["down", "--volumes"]);
    assert!(down.status.success(), "down on the remote engine failed");
    other_engine::nothing_left(&remote.host(), &project);

    a_routed_stack_runs_through_exec_tunnels(&remote);

    drop(remote);
    assert!(
        !Path::new(&format!("/run/netns/{}", Made::new().netns)).exists(),
        "the namespace is still there"
    );
    let cgroup = Path::new("/sys/fs/cgroup").join(Made::new().netns);
    assert!(!cgroup.exists(), "{} is still there", cgroup.display());
}
