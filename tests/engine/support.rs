//! What every engine test needs: the binary, a unique project that cleans up
//! after itself, the fixture images, and a few docker look-ups made with the
//! docker CLI (independent of the code under test).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_devstack");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn stack_file(name: &str) -> PathBuf {
    repo().join("fixtures/stacks/engine").join(name)
}

/// Runs `docker ARGS` and returns stdout; a failure to run docker at all fails the test.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

static READY: Once = Once::new();

/// The engine answers and the fixture images exist (built once, under a file
/// lock, when they do not: several test binaries may start at once).
pub fn ready() {
    READY.call_once(|| {
        crate::fixtures::engine_answers();
        let wanted = [
            "devstack-fixtures/app",
            "devstack-fixtures/redis",
            "devstack-fixtures/busybox",
        ];
        let missing = |w: &[&str]| w.iter().any(|i| docker(&["images", "-q", i]).is_empty());
        if !missing(&wanted) {
            return;
        }
        crate::fixtures::under_build_lock(|| {
            if missing(&wanted) {
                crate::fixtures::build(&repo(), &[]);
            }
        });
    });
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One copy of a stack under a project name no other test (or earlier run)
/// uses. Dropping it runs `down --volumes` and removes images built for it,
/// so a failing test leaves nothing behind.
pub struct Project {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// The directory of a stack written by the test itself (`inline`),
    /// removed after `down`.
    _scratch: Option<tempfile::TempDir>,
    /// `XDG_STATE_HOME` of every command, when the test looks into the
    /// project's state directory (`with_state_home`).
    state_home: Option<tempfile::TempDir>,
}

impl Project {
    pub fn new(tag: &str, stack: &str) -> Project {
        ready();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("dt{}{}-{tag}", std::process::id() % 100_000, n);
        Project {
            name,
            files: vec![stack_file(stack)],
            _scratch: None,
            state_home: None,
        }
    }

    /// A project of a stack the test spells out, written to a scratch directory.
    pub fn inline(tag: &str, yaml: &str) -> Project {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let file = dir.path().join("devstack.yaml");
        std::fs::write(&file, yaml).expect("the stack file is written");
        let mut p = Project::new(tag, "basic.yaml");
        p.files = vec![file];
        p._scratch = Some(dir);
        p
    }

    /// The same project with an overlay file on top.
    pub fn with_overlay(&self, overlay: &str) -> Project {
        let mut files = self.files.clone();
        files.push(stack_file(overlay));
        Project {
            name: self.name.clone(),
            files,
            _scratch: None,
            state_home: None,
        }
    }

    /// The same project with its state (`$XDG_STATE_HOME`) in a scratch
    /// directory of its own, for every command it runs.
    pub fn with_state_home(mut self) -> Project {
        self.state_home = Some(tempfile::tempdir().expect("a scratch state home"));
        self
    }

    /// The project's state directory (`routing.json`, the agent's log).
    pub fn state_dir(&self) -> PathBuf {
        let home = self
            .state_home
            .as_ref()
            .expect("a project made `with_state_home`");
        home.path().join("devstack").join(&self.name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.arg("-p").arg(&self.name).args(args);
        cmd.env("NO_COLOR", "1")
            .env_remove("DEVSTACK_PROJECT_NAME")
            .stdin(Stdio::null());
        if let Some(home) = &self.state_home {
            cmd.env("XDG_STATE_HOME", home.path());
        }
        cmd
    }

    /// Runs devstack with these arguments and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self
            .command(args)
            .output()
            .expect("the devstack binary runs");
        crate::shown::shown(&self.name, args, &out);
        out
    }

    /// Runs devstack and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`devstack {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Container ids (with name, created time and state) of the project, by docker's own account.
    pub fn containers(&self) -> Vec<ContainerRow> {
        let ids = docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=dev.devstack.project={}", self.name),
        ]);
        ids.lines()
            .filter(|l| !l.is_empty())
            .map(|id| {
                let fmt = "{{.Name}}|{{.Created}}|{{.State.Status}}|{{index .Config.Labels \"dev.devstack.service\"}}";
                let text = docker(&["inspect", "--format", fmt, id]);
                let parts: Vec<&str> = text.split('|').collect();
                ContainerRow {
                    id: id.to_string(),
                    name: parts.first().unwrap_or(&"").trim_start_matches('/').to_string(),
                    created: parts.get(1).unwrap_or(&"").to_string(),
                    state: parts.get(2).unwrap_or(&"").to_string(),
                    service: parts.get(3).unwrap_or(&"").to_string(),
                }
            })
            .collect()
    }

    pub fn networks(&self) -> Vec<String> {
        lines(&docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.devstack.project={}", self.name),
        ]))
    }

    pub fn volumes(&self) -> Vec<String> {
        lines(&docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.devstack.project={}", self.name),
        ]))
    }

    /// The host address of a service's published container port, from `ps --json`.
    pub fn published(&self, service: &str, port: u16) -> String {
        let out = self.ok(&["ps", "--json"]);
        let rows: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("ps --json is JSON");
        for row in rows.as_array().into_iter().flatten() {
            if row["service"] == service {
                for p in row["published"].as_array().into_iter().flatten() {
                    if p["container_port"] == port {
                        return format!("127.0.0.1:{}", p["host_port"]);
                    }
                }
            }
        }
        panic!("`{service}` publishes no port {port}: {rows}");
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self
            .command(&["down", "--volumes", "--timeout", "1s"])
            .output();
        // Images built for this project (tagged `devstack-built:<project>.<service>`).
        let images = docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference=devstack-built:{}.*", self.name),
        ]);
        for image in lines(&images) {
            let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub state: String,
    pub service: String,
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A plain HTTP GET of `http://ADDR/PATH`; returns the body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "not a 200: {text}"
    );
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[allow(dead_code)]
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A GET through the proxy on 127.0.0.1:`port` for `host`; the whole answer
/// (status line, headers and body), or what came before the 5 s read limit.
pub fn get_through(port: u16, host: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the proxy listens");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}
