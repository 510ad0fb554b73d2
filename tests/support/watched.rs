//! A project of the watch tests: a `build:` web service (a copy of
//! fixtures/apps/web) behind the proxy, and what drives and measures it:
//! `up`, `watch --json` and its events, a steady load through the proxy and
//! the answers it got. Shared by `tests/watch` and `tests/reach`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::process;

pub const BIN: &str = env!("CARGO_BIN_EXE_devstack");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A project in a temp dir with a copy of fixtures/apps/web as `web/`;
/// dropping it kills `watch` and runs `devstack down --volumes`.
pub struct Stack {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    /// `devstack watch`, or a foreground `devstack up`.
    pub watch: Option<Child>,
    /// A cgroup v2 directory every devstack command of this stack runs in
    /// (`tests/reach` firewalls devstack's own traffic by it); `None`: the
    /// test's own.
    pub cgroup: Option<PathBuf>,
}

impl Stack {
    pub fn new(tag: &str) -> Stack {
        Stack::with(tag, "")
    }

    /// `web_extra`: more of the web service's YAML, indented by 4.
    pub fn with(tag: &str, web_extra: &str) -> Stack {
        Stack::full(tag, web_extra, "")
    }

    /// `services`: more services, indented by 2.
    pub fn full(tag: &str, web_extra: &str, services: &str) -> Stack {
        Stack::on(tag, web_extra, services, "haproxy")
    }

    /// With a proxy of `kind` (`haproxy`, `nginx`), on its replica of the
    /// official image.
    pub fn on(tag: &str, web_extra: &str, services: &str, kind: &str) -> Stack {
        let image = match kind {
            "nginx" => "devstack-fixtures/nginx:1.22",
            _ => "devstack-fixtures/haproxy:2.6",
        };
        // `DEVSTACK_FIXTURES_PREFIX` picks another set, as the example
        // overlays do.
        let image = match std::env::var("DEVSTACK_FIXTURES_PREFIX") {
            Ok(prefix) => image.replacen("devstack-fixtures", &prefix, 1),
            Err(_) => image.to_string(),
        };
        let name = format!("wt{}{tag}", std::process::id() % 100_000);
        let dir = tempfile::tempdir().expect("a temp dir");
        let web = dir.path().join("web");
        std::fs::create_dir(&web).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apps/web");
        std::fs::copy(fixture.join("app.py"), web.join("app.py")).unwrap();
        // Labelled, so dropping the stack removes every image its builds made.
        let dockerfile = std::fs::read_to_string(fixture.join("Dockerfile")).unwrap();
        // Just before the COPY: the layers above it stay shared and cached.
        let dockerfile = dockerfile.replacen(
            "\nCOPY . /app/",
            &format!("\nLABEL devstack-test={name}\nCOPY . /app/"),
            1,
        );
        std::fs::write(web.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(web.join("message.txt"), "first").unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // A start period that a busy CI machine's slow python start fits in:
        // it only bounds how long a version that never answers is waited for.
        let yaml = format!(
            "name: {name}
services:
  web:
    build: ./web
    port: 8080
    health: {{ http: /health, interval: 500ms, retries: 2, start_period: 20s }}
    restart: \"no\"
    stop_grace: 1s
    routes: [web.test.localhost]
{web_extra}
{services}
proxy:
  kind: {kind}
  image: {image}
  listen: {listen}
"
        );
        std::fs::write(dir.path().join("devstack.yaml"), yaml).unwrap();
        Stack {
            name,
            dir,
            listen,
            watch: None,
            cgroup: None,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match &self.cgroup {
            // The shell moves itself into the cgroup, then becomes devstack,
            // so devstack and every process it starts (the routing agent)
            // live there from their first instruction. A cgroup already
            // removed (a failed test's clean-up ran first) is no reason to
            // skip the `down` that follows; failing to join an existing one is.
            Some(dir) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg("if [ -d \"$0\" ]; then echo $$ > \"$0/cgroup.procs\" || exit 125; fi; exec \"$@\"")
                    .arg(dir)
                    .arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        c.current_dir(self.dir.path()).args(args);
        c
    }

    pub fn file(&self, f: &str) -> PathBuf {
        self.dir.path().join("web").join(f)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut w) = self.watch.take() {
            // As Ctrl-C: a foreground `up` then takes its routing path down;
            // `down` below removes whatever is left.
            process::interrupt(&mut w, Duration::from_secs(15));
        }
        let _ = self
            .cmd(&["down", "--volumes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let images = Command::new("docker")
            .args(["images", "-q", "--filter"])
            .arg(format!("label=devstack-test={}", self.name))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut ids: Vec<&str> = images.split_whitespace().collect();
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// GET / of `host` through the proxy: the app's JSON answer, or why not
/// (a refused connection, a status other than 200, a body that is not JSON).
pub fn get(listen: SocketAddr, host: &str) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&listen, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        return Err(text.lines().next().unwrap_or("").to_string());
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// The `message` web answered with, or why not.
pub fn message(listen: SocketAddr) -> Result<String, String> {
    let v = get(listen, "web.test.localhost")?;
    Ok(v["message"].as_str().unwrap_or("").trim().to_string())
}

/// Asks web for its message every `pause` until [`Poll::finish`]: a steady
/// load through the proxy, and a record of everything it answered.
pub struct Poll {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Result<String, String>>>,
}

impl Poll {
    pub fn start(listen: SocketAddr, pause: Duration) -> Poll {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    answers.push(message(listen));
                    std::thread::sleep(pause);
                }
                answers
            })
        };
        Poll { stop, thread }
    }

    /// Every answer, in order.
    pub fn finish(self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the polling thread")
    }
}

/// The answers that are neither of `expected` (failed requests included).
pub fn unexpected(answers: &[Result<String, String>], expected: &[&str]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| !a.as_ref().is_ok_and(|m| expected.contains(&m.as_str())))
        .map(|a| format!("{a:?}"))
        .collect()
}

pub fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `devstack watch --json`; its stdout lines arrive on the receiver.
pub fn start_watch(s: &mut Stack) -> std::sync::mpsc::Receiver<String> {
    let mut watch = s
        .cmd(&["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("devstack watch starts");
    let stdout = watch.stdout.take().expect("piped stdout");
    s.watch = Some(watch);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Give notify time to set its watches up before the edit.
    std::thread::sleep(Duration::from_secs(1));
    rx
}

pub fn up(s: &Stack, serving: &str) {
    let up = s
        .cmd(&["up", "--detach", "--wait"])
        .output()
        .expect("devstack up runs");
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let listen = s.listen;
    until(Duration::from_secs(30), "the stack answers", || {
        message(listen).as_deref() == Ok(serving)
    });
}

pub fn next_event(rx: &std::sync::mpsc::Receiver<String>) -> serde_json::Value {
    let event = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("one rebuild event");
    serde_json::from_str(&event).expect("a JSON event")
}

/// The names of the running containers of service `web`.
pub fn web_names(s: &Stack) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .args(["--filter", "label=dev.devstack.service=web"])
        .args([
            "--filter",
            &format!("label=dev.devstack.project={}", s.name),
        ])
        .output()
        .expect("docker ps runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `hostname` (container id) web answered with.
pub fn hostname(listen: SocketAddr) -> Option<String> {
    let v = get(listen, "web.test.localhost").ok()?;
    v["hostname"].as_str().map(str::to_string)
}
