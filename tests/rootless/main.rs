//! devstack against a rootless engine: Debian's `rootlesskit` and
//! `slirp4netns` running `dockerd-rootless.sh` as a user this test makes,
//! with subordinate ids of its own, the `fuse-overlayfs` storage driver (as
//! the host's engine here) and its own data root, runtime directory,
//! socket and address pools.
//!
//! Such an engine keeps its containers in a network namespace of
//! rootlesskit's: their addresses do not answer from this host, and ports
//! published on the engine's loopback are forwarded to this host's loopback
//! by rootlesskit. devstack must see from the socket (not root's) that the
//! engine is rootless, presume `published` reach, and probe through those
//! forwarded ports; `doctor` must say what it found. The `basic` engine
//! fixture (a service built from source, a prebuilt service with two
//! replicas, a redis datastore with a volume and a command health check, a
//! task before the web service) comes up healthy there, `exec` and `run`
//! pass exit codes through, nothing appears on the local engine, and `down
//! --volumes` leaves nothing. Then a routed stack: its network's gateway is
//! no address of this host, so its registry runs in a container of the
//! stack, and both replicas answer through the proxy.
//!
//! It changes the host (a user and its subordinate ids, the modes of
//! `/dev/net/tun` and `/dev/fuse`, which slirp4netns and fuse-overlayfs
//! open as that user, a daemon), so it is
//! the only test of its binary. A guard's `Drop` and a panic hook both stop
//! the daemon and every process of the user and its ids, and undo the rest,
//! also when the test fails.

#[path = "../support/fixtures.rs"]
mod fixtures;
#[path = "../support/other_engine.rs"]
mod other_engine;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/undoing.rs"]
mod undoing;

use other_engine::text;
use process::run;
use undoing::Undoing;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The local replica of the official HAProxy image.
const PROXY_IMAGE: &str = "devstack-fixtures/haproxy:2.6";
/// Devices the daemon's helpers open as the user: slirp4netns the tun
/// device, fuse-overlayfs the fuse device. Debian's udev gives both 0666,
/// this kind of machine 0600.
const DEVICES: &[&str] = &["/dev/net/tun", "/dev/fuse"];
/// Where Debian's docker.io keeps the rootless daemon's script.
const SCRIPT_DIRS: &[&str] = &["/usr/share/docker.io/contrib", "/usr/bin", "/usr/local/bin"];
const SUBIDS: u32 = 65_536;
/// fuse-overlayfs, as the host's engine here: layers are shared, not copied
/// (vfs copies every layer of every image, minutes for the fixture images).
const STORAGE: &str = "fuse-overlayfs";

/// What this test made or changed, named from its pid; undone at most once,
/// by whichever of the guard's `Drop`, the panic hook and the end of the
/// test comes first.
#[derive(Clone)]
struct Made {
    user: String,
    dir: PathBuf,
    /// The line added to `/etc/subuid` and `/etc/subgid` (`None` until it is).
    subid_line: Option<String>,
    /// The devices the test opened to users, with their modes before.
    device_modes: Vec<(&'static str, u32)>,
    user_made: bool,
    /// The user's uid and its subordinate range: whose processes to stop.
    uids: Option<(u32, u32, u32)>,
}

static MADE: Mutex<Option<Made>> = Mutex::new(None);

fn record(change: impl FnOnce(&mut Made)) {
    if let Some(made) = MADE.lock().unwrap().as_mut() {
        change(made);
    }
}

impl Made {
    fn new() -> Made {
        let id = std::process::id() % 100_000;
        Made {
            user: format!("dsrootless{id}"),
            dir: std::env::temp_dir().join(format!("devstack-rootless-{id}")),
            subid_line: None,
            device_modes: Vec::new(),
            user_made: false,
            uids: None,
        }
    }
    fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    fn socket(&self) -> PathBuf {
        self.run_dir().join("docker.sock")
    }
}

/// Each process whose real uid is `uid` or within
/// `[sub, sub + SUBIDS)`.
fn processes_of(uid: u32, sub: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if let Some(real) = real {
            if real == uid || (sub..sub + SUBIDS).contains(&real) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn signal_all(uid: u32, sub: u32, signal: i32) -> usize {
    let pids = processes_of(uid, sub);
    for &pid in &pids {
        if pid > 1 {
            // SAFETY: a positive pid of a process of the test's own user or
            // its subordinate ids (never a group or -1).
            unsafe { libc::kill(pid, signal) };
        }
    }
    pids.len()
}

fn without_line(path: &str, line: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let kept: String = text
        .lines()
        .filter(|l| *l != line)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(|e| format!("{path}: {e}"))
}

/// Stops every process of the user and its ids (SIGTERM, then SIGKILL
/// after 20 s), unmounts what is mounted under the test's directory, and
/// removes the user, its subordinate ids, the directory, and gives
/// `/dev/net/tun` its mode back. No panic in here: this also runs inside
/// the panic hook.
fn undo() -> Vec<String> {
    let Some(made) = MADE.lock().map(|mut m| m.take()).unwrap_or(None) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if let Some((uid, sub, _)) = made.uids {
        signal_all(uid, sub, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !processes_of(uid, sub).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        signal_all(uid, sub, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(300));
        let left = processes_of(uid, sub);
        if !left.is_empty() {
            problems.push(format!("processes of {} still there: {left:?}", made.user));
        }
    }
    other_engine::unmount_under(&made.dir);
    if let Some(line) = &made.subid_line {
        for file in ["/etc/subuid", "/etc/subgid"] {
            if let Err(e) = without_line(file, line) {
                problems.push(e);
            }
        }
    }
    if made.user_made {
        let removed = run("userdel", &[&made.user]);
        if !removed.status.success() {
            problems.push(format!("userdel {}: {}", made.user, text(&removed).trim()));
        }
    }
    for (device, mode) in &made.device_modes {
        if let Err(e) = std::fs::set_permissions(device, std::fs::Permissions::from_mode(*mode)) {
            problems.push(format!("cannot give {device} its mode {mode:o} back: {e}"));
        }
    }
    if made.dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&made.dir) {
            problems.push(format!("cannot remove {}: {e}", made.dir.display()));
        }
    }
    problems
}

/// The first subordinate id after every range already given out.
fn free_subid_start() -> u32 {
    let mut start = 1_000_000u32;
    for file in ["/etc/subuid", "/etc/subgid"] {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let mut parts = line.split(':').skip(1);
            let first = parts.next().and_then(|p| p.parse::<u32>().ok());
            let count = parts.next().and_then(|p| p.parse::<u32>().ok());
            if let (Some(first), Some(count)) = (first, count) {
                start = start.max(first.saturating_add(count));
            }
        }
    }
    start
}

fn script() -> Option<PathBuf> {
    SCRIPT_DIRS
        .iter()
        .map(|d| Path::new(d).join("dockerd-rootless.sh"))
        .find(|p| p.exists())
}

fn can_make_an_engine() -> Result<(), String> {
    for program in [
        "rootlesskit",
        "slirp4netns",
        "newuidmap",
        "useradd",
        "runuser",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Err(format!("`{program}` is not installed"));
        }
    }
    if script().is_none() {
        return Err(format!("no dockerd-rootless.sh under {SCRIPT_DIRS:?}"));
    }
    if let Some(device) = DEVICES.iter().find(|d| !Path::new(d).exists()) {
        return Err(format!("{device} does not exist"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: a user and its subordinate ids need root".into());
    }
    Ok(())
}

/// The rootless engine: its user, and the daemon it runs.
struct Rootless {
    made: Made,
    daemon: std::process::Child,
}

impl Drop for Rootless {
    fn drop(&mut self) {
        for problem in undo() {
            eprintln!("rootless test clean-up: {problem}");
        }
        let _ = self.daemon.wait();
    }
}

impl Rootless {
    fn start() -> Rootless {
        let mut made = Made::new();
        *MADE.lock().unwrap() = Some(made.clone());
        for dir in ["run", "home", "data"] {
            std::fs::create_dir_all(made.dir.join(dir)).unwrap();
        }
        let add = run(
            "useradd",
            &[
                "--no-create-home",
                "--home-dir",
                &made.dir.join("home").to_string_lossy(),
                "--shell",
                "/usr/sbin/nologin",
                &made.user,
            ],
        );
        assert!(add.status.success(), "useradd: {}", text(&add));
        record(|m| m.user_made = true);
        let uid: u32 = process::output("id", &["-u", &made.user]).parse().unwrap();
        let sub = free_subid_start();
        let line = format!("{}:{sub}:{SUBIDS}", made.user);
        record(|m| m.uids = Some((uid, sub, SUBIDS)));
        for file in ["/etc/subuid", "/etc/subgid"] {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        }
        record(|m| m.subid_line = Some(line.clone()));
        let chown = run("chown", &["-R", &made.user, &made.dir.to_string_lossy()]);
        assert!(chown.status.success(), "chown: {}", text(&chown));
        std::fs::set_permissions(made.run_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        for device in DEVICES {
            let mode = std::fs::metadata(device).unwrap().permissions().mode() & 0o7777;
            if mode & 0o006 != 0o006 {
                record(|m| m.device_modes.push((device, mode)));
                std::fs::set_permissions(device, std::fs::Permissions::from_mode(mode | 0o666))
                    .unwrap();
            }
        }
        made = MADE.lock().unwrap().clone().unwrap();

        let script = script().unwrap();
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            script.parent().unwrap().display()
        );
        let log = std::fs::File::create(made.dir.join("dockerd.log")).unwrap();
        let mut daemon = Command::new("runuser");
        daemon
            .args(["-u", &made.user, "--"])
            .arg("env")
            .arg(format!("XDG_RUNTIME_DIR={}", made.run_dir().display()))
            .arg(format!("HOME={}", made.dir.join("home").display()))
            .arg(format!("PATH={path}"))
            .arg(&script)
            .arg("--data-root")
            .arg(made.dir.join("data"))
            .args(["--storage-driver", STORAGE])
            // Pools no engine of this host uses: a container address that
            // answers from here would be another engine's container.
            .args(["--bip", "10.236.0.1/24"])
            .args(["--default-address-pool", "base=10.235.0.0/16,size=24"])
            .arg("-H")
            .arg(format!("unix://{}", made.socket().display()))
            .current_dir(&made.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own session, so that no signal to the test's group reaches it;
        // the guard stops it through its user's processes.
        unsafe {
            daemon.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let daemon = daemon.spawn().expect("runuser runs dockerd-rootless.sh");
        let engine = Rootless { made, daemon };
        other_engine::wait_for(&engine.host(), &engine.made.dir.join("dockerd.log"));
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}", self.made.socket().display())
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        other_engine::docker_ok(&self.host(), args)
    }

    fn devstack(&self, project: &str, args: &[&str]) -> Output {
        self.devstack_on(&other_engine::basic(), project, args)
    }

    fn devstack_on(&self, stack: &Path, project: &str, args: &[&str]) -> Output {
        other_engine::devstack(&self.host(), stack, project, args)
    }
}

/// `curl` from this host, with a bound.
fn curl(url: &str) -> Output {
    run("curl", &["-sS", "--max-time", "5", url])
}

#[test]
fn a_stack_runs_on_a_rootless_engine() {
    fixtures::engine_answers();
    if let Err(why) = can_make_an_engine() {
        panic!("this test makes a rootless engine and cannot here: {why}");
    }
    let repo = other_engine::repo();
    fixtures::under_build_lock(|| fixtures::build(&repo, &[]));
    let _undoing = Undoing::arm("rootless test", undo);
    let engine = Rootless::start();
    let mut images = other_engine::images_of_basic();
    images.push(PROXY_IMAGE.to_string());
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let started = Instant::now();
    other_engine::load(&engine.host(), &images);
    eprintln!("images loaded in {:.1?}", started.elapsed());

    let project = format!("rootless{}", std::process::id() % 100_000);

    // doctor sees a rootless engine, and that its containers' addresses do
    // not answer from here while a published port does.
    let doctor = engine.devstack(&project, &["doctor", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&doctor.stdout).expect("doctor --json is JSON");
    assert_eq!(report["rootless"], true, "{report}");
    assert_eq!(report["stack_reach"], "published", "{report}");

    let up = engine.devstack(&project, &["up", "--wait", "--timeout", "240s"]);
    assert!(up.status.success(), "up on the rootless engine failed");
    assert!(
        other_engine::local_containers(&project).is_empty(),
        "containers of the rootless stack appeared on the local engine"
    );
    let running = other_engine::labelled(&engine.host(), "container", &project);
    assert_eq!(running.len(), 4, "web, 2 api, cache: {running:?}");

    let ps = engine.devstack(&project, &["ps", "--json"]);
    assert!(ps.status.success());
    assert_eq!(other_engine::healthy(&ps.stdout), 4, "every unit healthy");

    // The web service's address is the engine's own (in rootlesskit's
    // namespace) and does not answer here; its loopback publication,
    // forwarded by rootlesskit, does.
    let web = format!("{project}-web-1");
    let address = engine.docker_ok(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &web,
    ]);
    let address = address
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(!address.is_empty(), "web has an address");
    // (Something on this host's default route answers any address, so the
    // web service's own answer is what must not come back.)
    let direct = curl(&format!("http://{address}:8080/"));
    assert!(
        !String::from_utf8_lossy(&direct.stdout).contains("\"service\": \"web\""),
        "the container's address {address} answered from the host: not rootless-like"
    );
    let published = engine.docker_ok(&["port", &web, "8080"]);
    let published = published.lines().next().unwrap_or_default().to_string();
    assert!(published.starts_with("127.0.0.1:"), "{published}");
    let answer = curl(&format!("http://{published}/"));
    assert!(
        String::from_utf8_lossy(&answer.stdout).contains("\"service\": \"web\""),
        "web on the forwarded loopback port: {}",
        text(&answer)
    );

    let exec = engine.devstack(&project, &["exec", "web", "--", "sh", "-c", "exit 7"]);
    assert_eq!(exec.status.code(), Some(7));
    let task = engine.devstack(&project, &["run", "prepare"]);
    assert_eq!(task.status.code(), Some(0));
    assert!(text(&task).contains("prepared"));

    let down = engine.devstack(&project, &["down", "--volumes"]);
    assert!(down.status.success(), "down on the rootless engine failed");
    other_engine::nothing_left(&engine.host(), &project);

    routed_stack(&engine, &format!("{project}r"));

    let user = engine.made.user.clone();
    let dir = engine.made.dir.clone();
    drop(engine);
    assert!(
        !process::command_ok("id", &[&user]),
        "the test's user {user} is still there"
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    assert!(!subuid.contains(&user), "/etc/subuid still names {user}");
}

/// A routed stack on the same engine: the gateway of its network is in
/// rootlesskit's namespace, no address of this host, so the registry runs
/// in a container of the stack; devstack reaches it, the proxy's control
/// port and the replicas' probes through loopback ports rootlesskit
/// forwards; requests through the proxy reach both replicas, and a killed
/// replica leaves the rotation.
fn routed_stack(engine: &Rootless, project: &str) {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let stack = engine.made.dir.join("routed.yaml");
    std::fs::write(
        &stack,
        format!(
            "name: {project}
services:
  web:
    image: devstack-fixtures/app
    port: 8080
    replicas: 2
    env: {{ SERVICE: web }}
    health: {{ http: /health, interval: 500ms }}
    stop_grace: 1s
    routes: [web.rootless.localhost]
proxy:
  image: {PROXY_IMAGE}
  listen: {listen}
"
        ),
    )
    .unwrap();
    let up = engine.devstack_on(
        &stack,
        project,
        &["up", "--detach", "--wait", "--json", "--timeout", "240s"],
    );
    assert!(
        up.status.success(),
        "routed up on the rootless engine failed"
    );
    let said = other_engine::reach_events(&up.stdout);
    assert_eq!(
        said,
        [
            serde_json::json!({"event": "reach", "reach": "published", "decided": true, "registry": "stack"})
        ]
    );
    let registry = format!("{project}-registry");
    assert_eq!(
        engine.docker_ok(&["inspect", "--format", "{{.State.Running}}", &registry]),
        "true"
    );

    let hostnames = |within: Duration| {
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + within;
        while seen.len() < 2 && Instant::now() < deadline {
            let out = run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "5",
                    "-H",
                    "Host: web.rootless.localhost",
                    &format!("http://{listen}/"),
                ],
            );
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                if let Some(h) = v["hostname"].as_str() {
                    seen.insert(h.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        seen
    };
    let seen = hostnames(Duration::from_secs(30));
    assert_eq!(
        seen.len(),
        2,
        "both replicas answer through the proxy: {seen:?}"
    );

    // A killed replica leaves the rotation: 20 requests in a row succeed.
    engine.docker_ok(&["kill", &format!("{project}-web-2")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(
            Instant::now() < deadline,
            "requests kept failing after a replica was killed"
        );
        let out = run(
            "curl",
            &[
                "-sf",
                "--max-time",
                "5",
                "-H",
                "Host: web.rootless.localhost",
                &format!("http://{listen}/"),
            ],
        );
        in_a_row = if out.status.success() {
            in_a_row + 1
        } else {
            0
        };
    }

    let down = engine.devstack_on(&stack, project, &["down", "--volumes"]);
    assert!(
        down.status.success(),
        "routed down on the rootless engine failed"
    );
    other_engine::nothing_left(&engine.host(), project);
}
