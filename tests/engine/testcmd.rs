//! `devstack test`: a throwaway copy up, the command run against it, the
//! artifacts written, the copy down whatever happened; `ls` and `prune`
//! for a copy whose `devstack test` was killed outright.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::*;

const STACK: &str = "name: tested\n\
     services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env: { SERVICE: web }\n    health: { http: /health, interval: 500ms }\n    stop_grace: 1s\n    routes: [web.tested.localhost]\n\
     proxy:\n  image: devstack-fixtures/haproxy:2.6\n";

/// The test cases of a JUnit file, as (classname, name, failure message),
/// read with an XML parser (the file must be well-formed to get here).
fn junit_cases(path: &Path) -> Vec<(String, String, Option<String>)> {
    use quick_xml::events::Event;
    let text = std::fs::read_to_string(path).expect("junit.xml is there");
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut cases = Vec::new();
    let decoder = reader.decoder();
    let attr = |e: &quick_xml::events::BytesStart, key: &[u8]| -> String {
        e.attributes()
            .flatten()
            .find(|a| a.key.as_ref() == key)
            .map(|a| {
                a.decoded_and_normalized_value(quick_xml::XmlVersion::Implicit1_0, decoder)
                    .expect("an attribute")
                    .to_string()
            })
            .unwrap_or_default()
    };
    loop {
        match reader.read_event().expect("junit.xml parses") {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                cases.push((attr(&e, b"classname"), attr(&e, b"name"), None));
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"failure" => {
                if let Some(last) = cases.last_mut() {
                    last.2 = Some(attr(&e, b"message"));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    cases
}

/// Nothing of the project is left on the engine.
fn nothing_left(p: &Project) {
    assert!(
        p.containers().is_empty(),
        "containers: {:?}",
        p.containers()
    );
    assert!(p.networks().is_empty(), "networks: {:?}", p.networks());
    assert!(p.volumes().is_empty(), "volumes: {:?}", p.volumes());
}

/// Every artifact is there.
fn artifacts_complete(dir: &Path, p: &Project) {
    for name in [
        "junit.xml",
        "command.log",
        "ps.json",
        "routes.json",
        "haproxy.cfg",
    ] {
        assert!(dir.join(name).is_file(), "{name} in {}", dir.display());
    }
    let ps: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ps.json")).unwrap()).expect("ps.json");
    assert!(
        ps.as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["service"] == "web")),
        "{ps}"
    );
    let routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("routes.json")).unwrap())
            .expect("routes.json");
    let listen: std::net::SocketAddr = routes["listen"]
        .as_str()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("a listen address: {routes}"));
    // The copy's proxy port is in `ps --json` too, published by the proxy.
    let published_ports: Vec<u64> = ps
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["published"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["host_port"].as_u64())
        .collect();
    assert!(
        published_ports.contains(&u64::from(listen.port())),
        "{listen} in {ps}"
    );
    let cfg = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
    assert!(cfg.contains("web.tested.localhost"), "{cfg}");
    let log = dir.join("logs").join(format!("{}-web-1.log", p.name));
    assert!(log.is_file(), "{}", log.display());
}

#[test]
fn test_passes_and_fails_with_the_commands_code_artifacts_and_nothing_left() {
    let p = Project::inline("tpass", STACK);
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    let out = p.run(&[
        "test",
        "--artifacts",
        pass.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo \"proxy=$DEVSTACK_PROXY_URL web=$DEVSTACK_URL_WEB\"",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("proxy=http://127.0.0.1:"), "{said}");
    assert!(said.contains("web=http://web.tested.localhost:"), "{said}");
    artifacts_complete(&pass, &p);
    assert!(std::fs::read_to_string(pass.join("command.log"))
        .unwrap()
        .contains("proxy=http://127.0.0.1:"));
    let cases = junit_cases(&pass.join("junit.xml"));
    assert_eq!(
        cases,
        vec![
            ("health".into(), "web".into(), None),
            (
                "command".into(),
                "sh -c echo \"proxy=$DEVSTACK_PROXY_URL web=$DEVSTACK_URL_WEB\"".into(),
                None
            ),
        ]
    );
    nothing_left(&p);

    let fail = dir.path().join("fail");
    let out = p.run(&[
        "test",
        "--artifacts",
        fail.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo broken >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    artifacts_complete(&fail, &p);
    let cases = junit_cases(&fail.join("junit.xml"));
    assert_eq!(cases.len(), 2, "{cases:?}");
    assert_eq!(cases[1].2.as_deref(), Some("exited with 3"), "{cases:?}");
    assert!(std::fs::read_to_string(fail.join("junit.xml"))
        .unwrap()
        .contains("broken"));
    nothing_left(&p);
}

/// Starts `devstack test` with a command that runs until stopped, and
/// waits until it runs (its line on stdout).
fn start_long_test(p: &Project, artifacts: &Path, own_group: bool) -> Child {
    let mut cmd = p.command(&[
        "test",
        "--artifacts",
        artifacts.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 120",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    if own_group {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    let mut child = cmd.spawn().expect("devstack test starts");
    let stdout = child.stdout.take().expect("its stdout");
    let mut lines = BufReader::new(stdout).lines();
    let started = lines.any(|l| l.is_ok_and(|l| l.contains("started")));
    assert!(started, "the command started");
    // The rest of the output is drained so the child never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn sigterm_during_the_command_takes_the_copy_down() {
    let p = Project::inline("tterm", STACK);
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_long_test(&p, dir.path(), false);
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: a signal to the child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().expect("devstack test ends");
    assert_eq!(status.code(), Some(130), "interrupted");
    nothing_left(&p);
    let cases = junit_cases(&dir.path().join("junit.xml"));
    assert_eq!(
        cases.last().and_then(|c| c.2.clone()).as_deref(),
        Some("interrupted")
    );
}

#[test]
fn a_killed_test_leaves_a_copy_that_ls_marks_abandoned_and_prune_removes() {
    let p = Project::inline("tkill", STACK);
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_long_test(&p, dir.path(), true);
    // As a CI runner does: the whole process group, without warning.
    // Through libc, never `kill -KILL -PGID`: procps' kill reads that as
    // pid -1, every process on the machine.
    let group = i32::try_from(child.id()).expect("a pid");
    assert!(group > 1, "a process group of its own: {group}");
    // SAFETY: a signal to the process group this test made (process_group(0)).
    assert_eq!(unsafe { libc::kill(-group, libc::SIGKILL) }, 0);
    let _ = child.wait();
    assert!(!p.containers().is_empty(), "the copy is left behind");
    let ls = |p: &Project| -> serde_json::Value {
        let out = p.ok(&["ls", "--json"]);
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ls --json");
        all.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["project"] == p.name.as_str())
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let row = ls(&p);
    assert_eq!(row["state"], "abandoned", "{row}");
    assert_eq!(row["test"], true, "{row}");
    assert_eq!(row["agent"], true, "its routing agent outlived it: {row}");
    // A dry run removes nothing.
    let out = p.ok(&["prune", "--dry-run"]);
    assert!(
        stdout(&out).contains(&format!("would remove {}", p.name)),
        "{}",
        stdout(&out)
    );
    assert_eq!(ls(&p)["state"], "abandoned");
    // `--older-than` longer than its life leaves it too.
    let out = p.ok(&["prune", "--older-than", "1h"]);
    assert!(!stdout(&out).contains(&p.name), "{}", stdout(&out));
    assert!(!p.containers().is_empty());
    let out = p.ok(&["prune"]);
    assert!(
        stdout(&out).contains(&format!("removing {}", p.name)),
        "{}",
        stdout(&out)
    );
    nothing_left(&p);
    assert_eq!(ls(&p), serde_json::Value::Null, "gone from ls");
    assert!(
        eventually(Duration::from_secs(5), || !agent_runs(&p.name)),
        "its agent is stopped"
    );
}

/// Whether a `devstack -p NAME agent` process runs.
fn agent_runs(project: &str) -> bool {
    let wanted = format!("\0-p\0{project}\0agent\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(&wanted))
}

#[test]
fn the_timeout_stops_the_command_and_takes_the_copy_down() {
    let p = Project::inline("ttime", STACK);
    let dir = tempfile::tempdir().unwrap();
    let out = p.run(&[
        "test",
        "--timeout",
        "8s",
        "--artifacts",
        dir.path().to_str().unwrap(),
        "--",
        "sleep",
        "120",
    ]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    nothing_left(&p);
    let cases = junit_cases(&dir.path().join("junit.xml"));
    assert_eq!(
        cases.last().and_then(|c| c.2.clone()).as_deref(),
        Some("timed out after 8s"),
        "{cases:?}"
    );
}
