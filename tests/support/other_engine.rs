//! A second engine a test starts (a remote one in its own network
//! namespace, a rootless one): images copied to it, devstack run against it,
//! what it holds of a project, and the clean-up of what its daemon mounted.
//! Everything names the engine by its `DOCKER_HOST`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_devstack");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command's standard output and error, one after the other.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `docker args...` against the engine at `host`.
pub fn docker(host: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", host)
        .stdin(Stdio::null())
        .output()
        .expect("docker runs")
}

/// As [`docker`], which must succeed: its trimmed output.
pub fn docker_ok(host: &str, args: &[&str]) -> String {
    let out = docker(host, args);
    assert!(
        out.status.success(),
        "`docker {}` on {host} failed: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits up to 90 s for the engine at `host` to answer; a test failure
/// with the last lines of the daemon's `log` if it does not.
pub fn wait_for(host: &str, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let out = docker(host, &["version", "--format", "{{.Server.Version}}"]);
        if out.status.success() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "the engine at {host} did not answer in 90 s:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The `reach` events of `up --json`'s output.
pub fn reach_events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "reach")
        .collect()
}

/// Copies images of the local engine to the one at `host` (`docker save |
/// docker load`): no registry answers here.
pub fn load(host: &str, images: &[&str]) {
    let mut save = Command::new("docker")
        .arg("save")
        .args(images)
        .env_remove("DOCKER_HOST")
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save runs");
    let load = Command::new("docker")
        .args(["load", "--quiet"])
        .env("DOCKER_HOST", host)
        .stdin(save.stdout.take().unwrap())
        .output()
        .expect("docker load runs");
    let saved = save.wait().expect("docker save ends");
    assert!(
        saved.success() && load.status.success(),
        "copying {images:?} to {host} failed: {}",
        text(&load)
    );
}

/// `devstack -f stack -p project args...` against the engine at `host`,
/// its output echoed for the test's log.
pub fn devstack(host: &str, stack: &Path, project: &str, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("-f")
        .arg(stack)
        .arg("-p")
        .arg(project)
        .args(args)
        .env("DOCKER_HOST", host)
        .env("NO_COLOR", "1")
        .env_remove("DEVSTACK_PROJECT_NAME")
        .stdin(Stdio::null())
        .output()
        .expect("devstack runs");
    eprintln!("$ devstack {}\n{}", args.join(" "), text(&out));
    out
}

/// The ids of the project's containers, networks or volumes (`what`) on
/// the engine at `host`.
pub fn labelled(host: &str, what: &str, project: &str) -> Vec<String> {
    let filter = format!("label=dev.devstack.project={project}");
    let args: Vec<&str> = match what {
        "container" => vec!["ps", "-aq", "--filter", &filter],
        "network" => vec!["network", "ls", "-q", "--filter", &filter],
        _ => vec!["volume", "ls", "-q", "--filter", &filter],
    };
    docker_ok(host, &args)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The ids of the project's containers on this host's own engine (the
/// default one): none, when a stack meant for another engine went there.
pub fn local_containers(project: &str) -> String {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dev.devstack.project={project}"))
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Nothing of the project is left on the engine at `host`.
pub fn nothing_left(host: &str, project: &str) {
    for what in ["container", "network", "volume"] {
        let left = labelled(host, what, project);
        assert!(left.is_empty(), "{what}s left on {host}: {left:?}");
    }
}

/// The `basic` engine fixture's stack file.
pub fn basic() -> PathBuf {
    repo().join("fixtures/stacks/engine/basic.yaml")
}

/// The images the `basic` fixture needs: the fixture base (its web
/// service's Dockerfile builds FROM it) and those it uses as they are.
pub fn images_of_basic() -> Vec<String> {
    let stack = std::fs::read_to_string(basic()).unwrap();
    let mut images = vec!["devstack-fixtures/debian:bookworm".to_string()];
    for line in stack.lines() {
        if let Some(image) = line.trim().strip_prefix("image: ") {
            images.push(image.trim().to_string());
        }
    }
    images
}

/// How many units `devstack ps --json` printed as healthy.
pub fn healthy(ps_json: &[u8]) -> usize {
    let rows: serde_json::Value = serde_json::from_slice(ps_json).expect("ps --json is JSON");
    let rows = rows
        .as_array()
        .or_else(|| rows.get("containers").and_then(|c| c.as_array()))
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .filter(|r| {
            r.get("health").and_then(|h| h.as_str()) == Some("healthy")
                || r.get("state").and_then(|h| h.as_str()) == Some("healthy")
        })
        .count()
}

/// Unmounts (lazily, deepest first) whatever is mounted under `dir`. No
/// panic: this runs in clean-ups, also inside a panic hook.
pub fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let dir = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount")
            .args(["-l", point])
            .stdin(Stdio::null())
            .output();
    }
}
