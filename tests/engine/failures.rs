//! Faults: a failing build, a crash-looping service, no engine at all.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_failing_build_exits_5_names_the_step_and_creates_nothing() {
    let p = Project::new("build", "broken-build.yaml");
    let out = p.run(&["up", "--wait"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    // Step 3 of the Dockerfile's four, the count as the engine gives it (the
    // label with the build's input hash is one more step on the classic
    // builder).
    assert!(
        err.contains("Step 3/") && err.contains("failed to build at Step 3/"),
        "the failing step is named: {err}"
    );
    assert!(
        err.contains("this step is meant to fail"),
        "the build output is shown: {err}"
    );
    assert!(
        p.containers().is_empty(),
        "a failed build must leave the stack as it was"
    );
}

#[test]
fn a_crash_looping_service_does_not_hang_wait_past_its_timeout() {
    let p = Project::new("crash", "crash-loop.yaml");
    let t0 = Instant::now();
    let out = p.run(&["up", "--wait", "--timeout", "5s"]);
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let err = stderr(&out);
    assert!(err.contains("crasher"), "{err}");
    assert!(
        err.contains("cannot reach the database"),
        "the last log lines are shown: {err}"
    );
}

#[test]
fn no_engine_is_exit_3_in_one_sentence() {
    let p = Project::new("noengine", "pair.yaml");
    let out = p
        .command(&["up", "--wait"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no Docker engine answered at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}
