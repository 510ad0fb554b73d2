//! `devstack doctor`: the report against the engine here, whose reach paths
//! work (a Linux engine on this host), and the probe's clean-up, also when
//! it is interrupted half way.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// The probe's containers and networks made by devstack process `pid`.
fn probe_objects(pid: u32) -> (String, String) {
    let label = format!("label=dev.devstack.doctor={pid}");
    (
        docker(&["ps", "-aq", "--filter", &label]),
        docker(&["network", "ls", "-q", "--filter", &label]),
    )
}

#[test]
fn doctor_json_reports_the_engine_and_working_reach_paths() {
    ready();
    let child = Command::new(BIN)
        .args(["doctor", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("devstack runs");
    let pid = child.id();
    let out = child.wait_with_output().expect("devstack doctor finishes");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("doctor --json prints JSON");

    // What the engine says of itself, checked against the docker CLI.
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert_eq!(report["engine_version"], version.as_str());
    assert_eq!(report["endpoint_kind"], "unix");
    assert_eq!(report["os_type"], "linux");
    let driver = docker(&["info", "--format", "{{.Driver}}"]);
    assert_eq!(report["storage_driver"], driver.as_str());
    let root = docker(&["info", "--format", "{{.DockerRootDir}}"]);
    assert_eq!(report["docker_root_dir"], root.as_str());
    assert!(report["free_disk_bytes"].as_u64().is_some_and(|b| b > 0));
    assert!(report["clock_skew_seconds"]
        .as_f64()
        .is_some_and(|s| s.abs() <= 5.0));
    assert_eq!(report["rootless"], false);
    assert_eq!(report["docker_desktop"], false);
    for field in ["api_version", "arch", "cgroup_driver", "kernel"] {
        assert!(report[field].is_string(), "{field} in {report:#}");
    }
    let image = report["probe_image"]
        .as_str()
        .expect("a local image ran the probe");
    assert!(
        !docker(&["images", "-q", image]).is_empty(),
        "{image} is local"
    );

    // The paths devstack uses today work here, and are probed for real.
    let reach = report["reach"].as_array().expect("reach paths");
    let path = |name: &str| {
        reach
            .iter()
            .find(|r| r["path"] == name)
            .unwrap_or_else(|| panic!("{name} in {reach:?}"))
    };
    for name in ["host-to-bridge", "container-to-gateway"] {
        assert_eq!(path(name)["works"], true, "{name}: {:#}", path(name));
        assert_eq!(path(name)["used_today"], true);
    }
    assert!(path("host-to-bridge")["detail"]
        .as_str()
        .unwrap()
        .ends_with(":7878"));
    assert_eq!(path("host-to-published")["works"], true);
    assert_eq!(path("host-to-published")["used_today"], false);
    // What a stack's own probe decides from the same paths.
    assert_eq!(report["stack_reach"], "direct");
    assert_eq!(report["stack_registry"], "host");
    assert_eq!(report["ok"], true);
    assert_eq!(report["problems"], serde_json::json!([]));

    assert_eq!(probe_objects(pid), (String::new(), String::new()));
}

#[test]
fn an_interrupted_doctor_removes_its_probe() {
    ready();
    let child = Command::new(BIN)
        .arg("doctor")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("devstack runs");
    let pid = child.id();
    // Interrupt it while its probe container exists.
    let seen = eventually(Duration::from_secs(20), || !probe_objects(pid).0.is_empty());
    assert!(seen, "the probe container of {pid} appeared");
    let target = i32::try_from(pid).expect("a pid");
    assert!(target > 1);
    // SAFETY: signalling our own child by its pid (never a group).
    assert_eq!(unsafe { libc::kill(target, libc::SIGINT) }, 0);
    let out = child.wait_with_output().expect("devstack doctor finishes");
    assert_eq!(out.status.code(), Some(130), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(probe_objects(pid), (String::new(), String::new()));
}

#[test]
fn doctor_without_an_engine_is_exit_3_and_says_where_it_looked() {
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("devstack runs");
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert!(stdout(&out).is_empty(), "no half report: {}", stdout(&out));
    assert!(
        stderr(&out).contains("unix:///nonexistent/docker.sock"),
        "{}",
        stderr(&out)
    );
}
