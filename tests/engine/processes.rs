//! devstack's own processes: the routing agent started once however many
//! `up`s race, recorded by identity (pid and start time) so `down` never
//! signals a process that is not its agent, a state directory of which
//! `down` removes only what devstack wrote, and a stack stopped on Ctrl-C
//! even when the reader of its output is gone.

use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::process::interrupt;
use crate::support::*;

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One routed service behind the fixture proxy on `listen`; its health
/// check is patient, as a loaded machine starts the app slowly.
fn routed_stack(listen: &str) -> String {
    format!(
        "\
name: procs
services:
  web:
    image: devstack-fixtures/app
    port: 8080
    env: {{ SERVICE: web }}
    health: {{ http: /health, interval: 1s, start_period: 60s }}
    stop_grace: 1s
    routes: [web.test.localhost]
proxy:
  image: devstack-fixtures/haproxy:2.6
  listen: {listen}
"
    )
}

/// The pids of `devstack ... -p <project> agent` processes, read from /proc.
fn agents_of(project: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let of_project = args.windows(2).any(|w| w[0] == "-p" && w[1] == project);
        if of_project && args.iter().any(|a| a == "agent") && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Running and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Field 22 of /proc/<pid>/stat: when the process started, in clock ticks.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    rest.split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("a start time")
}

/// A status line through the proxy, with a Host header; None when nothing answers.
fn status_through(listen: &str, host: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(listen).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().next().map(str::to_string)
}

/// A process that is not devstack's, killed when dropped.
struct Stranger(Child);

impl Stranger {
    fn start() -> Stranger {
        Stranger(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("sleep runs"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn still_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `routing.json` naming a live process that is not the project's agent
/// (the agent died and its pid went to someone else; or an older devstack
/// wrote the file): `down` must not send it anything. It once sent SIGTERM
/// to whatever had the pid.
#[test]
fn down_never_signals_a_process_that_is_not_its_agent() {
    let p = Project::new("stranger", "basic.yaml").with_state_home();
    let dir = p.state_dir();
    let mut stranger = Stranger::start();
    let pid = stranger.pid();
    let records = [
        // This devstack's schema, the stranger's pid, another start time.
        serde_json::json!({
            "schema": 1, "pid": pid, "start_time": start_time(pid) - 1,
            "project": p.name, "endpoints": [], "listen": "127.0.0.1:1"
        }),
        // The right pid and start time, written for another project.
        serde_json::json!({
            "schema": 1, "pid": pid, "start_time": start_time(pid),
            "project": "someone-else", "endpoints": [], "listen": "127.0.0.1:1"
        }),
        // An older devstack's file: a pid and nothing to check it by.
        serde_json::json!({ "pid": pid, "endpoints": [], "listen": "127.0.0.1:1" }),
    ];
    for record in &records {
        // `down` removed the directory with a stale file in it.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("routing.json"), record.to_string()).unwrap();
        p.ok(&["down"]);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            stranger.still_running(),
            "down signalled process {pid}, which routing.json named: {record}"
        );
    }
    // The older file stays while its pid lives (it may be that devstack's
    // agent); the mismatching ones were removed as stale.
    assert!(dir.join("routing.json").exists());
}

/// `down` removes what devstack wrote in the project's state directory and
/// leaves the rest; it once removed the whole directory.
#[test]
fn down_leaves_a_file_it_did_not_write_in_the_state_directory() {
    let p = Project::new("ownfiles", "basic.yaml").with_state_home();
    let dir = p.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    std::fs::write(dir.join("agent.log"), "devstack's").unwrap();
    // A stale routing state: its writer (a `true` that has exited) is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    std::fs::write(
        dir.join("routing.json"),
        serde_json::json!({
            "schema": 1, "pid": dead, "start_time": 1,
            "project": p.name, "endpoints": [], "listen": "127.0.0.1:1"
        })
        .to_string(),
    )
    .unwrap();
    p.ok(&["down"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt"))
            .ok()
            .as_deref(),
        Some("mine")
    );
    assert!(!dir.join("agent.log").exists(), "devstack's log stays");
    assert!(!dir.join("routing.json").exists(), "the stale state stays");
}

/// Two `up --detach` of one stack at the same moment: one routing agent,
/// and the stack routed.
#[test]
fn two_detached_ups_at_once_start_one_agent() {
    let listen = format!("127.0.0.1:{}", free_port());
    let p = Project::inline("race", &routed_stack(&listen)).with_state_home();
    let ups: Vec<Child> = (0..2)
        .map(|_| {
            p.command(&["up", "--detach"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("devstack starts")
        })
        .collect();
    for up in ups {
        let out = up.wait_with_output().expect("up ends");
        assert!(
            out.status.success(),
            "up --detach failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let routed = eventually(Duration::from_secs(30), || {
        status_through(&listen, "web.test.localhost").is_some_and(|s| s.contains(" 200 "))
    });
    assert!(routed, "the stack is not routed through {listen}");
    // A second agent would have taken a moment to start (or to fail): look
    // again after that.
    std::thread::sleep(Duration::from_secs(2));
    let agents = agents_of(&p.name);
    assert_eq!(agents.len(), 1, "agents of {}: {agents:?}", p.name);
    p.ok(&["down"]);
    assert!(
        eventually(Duration::from_secs(15), || agents_of(&p.name).is_empty()),
        "down left the agent running"
    );
}

/// A pipe whose read end the test holds: (read end, write end).
fn pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors this function then owns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just made and are owned once each.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// `devstack up 2>&1 | tee up.log`, then Ctrl-C: the terminal's SIGINT goes
/// to `tee` too, so devstack's output has no reader any more. It must stop
/// the stack anyway and exit 130; it once exited with every container
/// still running.
#[test]
fn ctrl_c_stops_the_stack_when_the_output_pipe_is_gone() {
    let listen = format!("127.0.0.1:{}", free_port());
    let p = Project::inline("tee", &routed_stack(&listen)).with_state_home();
    let (reader, writer) = pipe();
    let mut up = p
        .command(&["up"])
        .stdout(Stdio::from(writer.try_clone().unwrap()))
        .stderr(Stdio::from(writer))
        .spawn()
        .expect("devstack up starts");
    // Read as `tee` would until the stack is up and its logs stream.
    let mut lines = BufReader::new(reader);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !seen.contains("Streaming logs") {
        let mut line = String::new();
        let n = lines.read_line(&mut line).expect("devstack's output");
        assert!(n > 0, "devstack ended before streaming logs:\n{seen}");
        seen.push_str(&line);
        assert!(Instant::now() < deadline, "not up in time:\n{seen}");
    }
    assert!(
        p.containers().iter().any(|c| c.state == "running"),
        "nothing runs:\n{seen}"
    );
    // `tee` dies: every later write of devstack's fails with EPIPE.
    drop(lines);
    let sigint = std::process::Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sigint.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = up.try_wait().expect("wait for devstack") {
            break status;
        }
        if Instant::now() > deadline {
            interrupt(&mut up, Duration::from_secs(1));
            panic!("devstack did not end within 60s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let running: Vec<ContainerRow> = p
        .containers()
        .into_iter()
        .filter(|c| c.state == "running")
        .collect();
    assert!(
        running.is_empty(),
        "still running after Ctrl-C: {running:?}"
    );
    assert_eq!(status.code(), Some(130), "{status:?}");
}

/// `devstack logs --follow | head -1`: once `head` is gone, devstack ends
/// quietly with exit 0, without a panic.
#[test]
fn logs_into_a_pipe_closed_after_the_first_line_end_quietly() {
    let p = Project::inline(
        "head",
        "\
name: head
services:
  ticker:
    image: devstack-fixtures/busybox
    command: [sh, -c, 'while true; do echo tick; sleep 0.1; done']
    stop_grace: 1s
",
    );
    p.ok(&["up", "--detach"]);
    let (reader, writer) = pipe();
    let mut logs = p
        .command(&["logs", "--follow"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .expect("devstack logs starts");
    let mut first = String::new();
    BufReader::new(reader)
        .read_line(&mut first)
        .expect("a first line");
    assert!(first.contains("tick"), "{first:?}");
    // The reader is dropped here: the pipe has no reader any more.
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(logs.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = logs.kill();
            panic!("logs kept running with its reader gone");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = logs.wait_with_output().expect("logs ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
