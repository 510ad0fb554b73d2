//! `devstack test`: a throwaway copy up, the command run against it, the
//! artifacts written, the copy down whatever happened; `ls` and `prune`
//! for a copy whose `devstack test` was killed outright.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::*;

const STACK: &str = "name: tested\n\
     services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env: { SERVICE: web }\n    health: { http: /health, interval: 500ms, retries: 60 }\n    stop_grace: 1s\n    routes: [web.tested.localhost]\n\
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

/// SIGKILL to the whole process group of `child` (made with
/// `process_group(0)`), as a CI runner does to a cancelled job. Through
/// libc, never `kill -KILL -PGID`: procps' kill once read that as pid -1,
/// every process on the machine.
fn kill_group(child: &mut Child) {
    let group = i32::try_from(child.id()).expect("a pid");
    assert!(group > 1, "a process group of its own: {group}");
    // SAFETY: a signal to the process group this test made (process_group(0)).
    assert_eq!(unsafe { libc::kill(-group, libc::SIGKILL) }, 0);
    let _ = child.wait();
}

/// The pid of the running `devstack -p NAME reap` (the copy's reaper).
fn reaper_of(project: &str) -> Option<i32> {
    let wanted = format!("\0-p\0{project}\0reap\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&wanted)
                .then_some(pid)
        })
        .next()
}

/// The project's state directory under the default state home, as the
/// reaper and `down` see it.
fn default_state_dir(project: &str) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".local/state")
        });
    base.join("devstack").join(project)
}

#[test]
fn a_test_killed_with_its_whole_process_group_is_reaped_without_help() {
    // A datastore with a named volume: the reaper removes volumes too.
    let stack = format!(
        "{STACK}datastores:\n  cache:\n    kind: redis\n    image: devstack-fixtures/redis\n    volume: cache-data\n    stop_grace: 1s\n"
    );
    let p = Project::inline("treap", &stack);
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_long_test(&p, dir.path(), true);
    assert!(reaper_of(&p.name).is_some(), "a reaper watches the copy");
    assert!(!p.volumes().is_empty(), "the copy has its volume");
    kill_group(&mut child);
    // Nobody else acts: the reaper, in a session of its own, outlived the
    // group and removes everything labelled with the project. The limit is
    // only the point at which the test gives up.
    let gone = eventually(Duration::from_secs(90), || {
        p.containers().is_empty() && p.networks().is_empty() && p.volumes().is_empty()
    });
    assert!(
        gone,
        "left: {:?} {:?} {:?}; reaper.log: {:?}",
        p.containers(),
        p.networks(),
        p.volumes(),
        std::fs::read_to_string(dir.path().join("reaper.log"))
    );
    assert!(
        eventually(Duration::from_secs(30), || reaper_of(&p.name).is_none()),
        "the reaper exits once done"
    );
    assert!(
        !default_state_dir(&p.name).exists(),
        "its state directory is gone"
    );
    assert!(!agent_runs(&p.name), "its agent is stopped");
    let note = std::fs::read_to_string(dir.path().join("reaper.log")).expect("reaper.log");
    assert!(note.contains("removing it"), "{note}");
}

#[test]
fn a_finished_test_dismisses_its_reaper() {
    let p = Project::inline("tdone", STACK);
    let dir = tempfile::tempdir().unwrap();
    let out = p.run(&[
        "test",
        "--artifacts",
        dir.path().to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(10), || reaper_of(&p.name).is_none()),
        "the reaper exits with its test"
    );
    assert!(
        !dir.path().join("reaper.log").exists(),
        "it had nothing to do"
    );
}

#[test]
fn a_killed_test_leaves_a_copy_that_ls_marks_abandoned_and_prune_removes() {
    let p = Project::inline("tkill", STACK);
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_long_test(&p, dir.path(), true);
    // Its reaper dies first (the OOM killer, a reboot): the copy stays.
    let reaper = reaper_of(&p.name).expect("a reaper watches the copy");
    assert!(reaper > 1);
    // SAFETY: a signal to one process, the reaper this test's run started.
    assert_eq!(unsafe { libc::kill(reaper, libc::SIGKILL) }, 0);
    kill_group(&mut child);
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

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_secret_from_an_env_file_appears_in_no_artifact() {
    const SECRET: &str = "tok-s3cr3t-4711-xyzzy";
    let stack = "name: tested\n\
         services:\n  web:\n    image: devstack-fixtures/app\n    port: 8080\n    env_file: ./web.env\n    env: { SERVICE: web }\n    command: [sh, -c, 'echo \"token=$$API_TOKEN\" >&2; exec python3 /app/app.py']\n    health: { http: /health, interval: 500ms, retries: 60 }\n    stop_grace: 1s\n    routes: [web.tested.localhost]\n\
         proxy:\n  image: devstack-fixtures/haproxy:2.6\n";
    let p = Project::inline("tsecret", stack);
    let stack_dir = p.files[0]
        .parent()
        .expect("the stack's directory")
        .to_path_buf();
    std::fs::write(stack_dir.join("web.env"), format!("API_TOKEN={SECRET}\n")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The command prints the secret too, and fails, so its output is in
    // command.log and in the JUnit failure.
    let out = p.run(&[
        "test",
        "--artifacts",
        dir.path().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &format!("echo leaked {SECRET}; exit 5"),
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let files = files_under(dir.path());
    assert!(files.len() >= 7, "{files:?}");
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).to_string();
        assert!(
            !text.contains(SECRET),
            "{} holds the secret:\n{text}",
            file.display()
        );
    }
    // Masked, not missing: each place that held it says so.
    let log = std::fs::read_to_string(
        dir.path()
            .join("logs")
            .join(format!("{}-web-1.log", p.name)),
    )
    .unwrap();
    assert!(log.contains("token=********"), "{log}");
    let command = std::fs::read_to_string(dir.path().join("command.log")).unwrap();
    assert!(command.contains("leaked ********"), "{command}");
    let config = std::fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    assert!(config.contains("API_TOKEN: '********'"), "{config}");
    assert!(config.contains("SERVICE: web"), "{config}");
    nothing_left(&p);
}

#[test]
fn the_stacks_test_task_runs_on_its_network_and_calls_services_by_name() {
    let suite = |code: u8| {
        format!(
            "tasks:\n  suite:\n    image: devstack-fixtures/app\n    test: true\n    command: [python3, -c, \"import urllib.request, sys; print('web said', urllib.request.urlopen('http://web:8080/').read().decode()); sys.exit({code})\"]\n"
        )
    };
    let p = Project::inline("ttask", &format!("{STACK}{}", suite(0)));
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    // No command: the task is the suite.
    let out = p.run(&["test", "--artifacts", pass.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("web said") && stdout(&out).contains("\"service\": \"web\""),
        "{}",
        stdout(&out)
    );
    let command = std::fs::read_to_string(pass.join("command.log")).unwrap();
    assert!(command.contains("web said"), "{command}");
    assert_eq!(
        junit_cases(&pass.join("junit.xml")),
        vec![
            ("health".into(), "web".into(), None),
            ("command".into(), "task suite".into(), None),
        ]
    );
    nothing_left(&p);

    let failing = Project::inline("ttaskf", &format!("{STACK}{}", suite(3)));
    let fail = dir.path().join("fail");
    let out = failing.run(&["test", "--artifacts", fail.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let cases = junit_cases(&fail.join("junit.xml"));
    assert_eq!(cases[1].2.as_deref(), Some("exited with 3"), "{cases:?}");
    nothing_left(&failing);
}
