//! Running other programs from tests and benchmarks: a command's success or
//! output, and stopping a child as a user's Ctrl-C would.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether `cmd args...` ran and succeeded (its output is discarded).
#[allow(dead_code)]
pub fn command_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `cmd args...` run to its end with no input; a command that cannot be
/// started fails the test.
#[allow(dead_code)]
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// The trimmed standard output of `cmd args...`; empty if it could not run.
#[allow(dead_code)]
pub fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// SIGINT, as Ctrl-C (a devstack `up` or `watch` then cleans up after
/// itself); killed if it is still there after `grace`.
#[allow(dead_code)]
pub fn interrupt(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let until = Instant::now() + grace;
    while Instant::now() < until && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
