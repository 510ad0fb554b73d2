//! `logs --follow` follows the stack as it changes: a container that starts
//! after the follower began (a scale, a swap, a restart) is streamed too, and
//! every line is shown once.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// One service, so its replicas' lines are easy to count.
const STACK: &str = "\
name: logs
services:
  svc:
    image: devstack-fixtures/app
    port: 8080
    env: { SERVICE: svc }
    health: { http: /health, interval: 1s }
    stop_grace: 2s
";

/// The follower's stdout, line by line, as it comes.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(p: &Project, args: &[&str]) -> Follower {
        let mut child = p
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("devstack starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many lines of `label` contain `text`.
    fn count(&self, label: &str, text: &str) -> usize {
        let prefix = format!("{label} | ");
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&prefix) && l.contains(text))
            .count()
    }

    fn shown(&self) -> String {
        self.lines().join("\n")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_follow_streams_containers_that_start_after_it_began() {
    let p = Project::inline("logsf", STACK);
    p.ok(&["up", "--detach"]);
    // Dropped before `p`: the follower stops before `down`.
    let follower = Follower::start(&p, &["logs", "--follow", "svc"]);
    assert!(
        eventually(Duration::from_secs(30), || follower
            .count("svc-1", "listening on")
            == 1),
        "the follower never showed svc-1's start:\n{}",
        follower.shown()
    );

    // A replica started by another command while the follower runs.
    p.ok(&["scale", "svc=2"]);
    assert!(
        eventually(Duration::from_secs(20), || follower
            .count("svc-2", "listening on")
            == 1),
        "the new replica's output never appeared in `logs --follow`:\n{}",
        follower.shown()
    );

    // Both restarted in place (same ids): each run's lines once, the old
    // run's last lines not again.
    p.ok(&["restart", "svc"]);
    for label in ["svc-1", "svc-2"] {
        assert!(
            eventually(Duration::from_secs(30), || follower
                .count(label, "listening on")
                >= 2),
            "{label}'s second run never appeared:\n{}",
            follower.shown()
        );
    }
    // Anything shown twice would have come before the second run's first line.
    std::thread::sleep(Duration::from_millis(500));
    for label in ["svc-1", "svc-2"] {
        assert_eq!(
            follower.count(label, "listening on"),
            2,
            "{label}:\n{}",
            follower.shown()
        );
        assert_eq!(
            follower.count(label, "received SIGTERM"),
            1,
            "{label}:\n{}",
            follower.shown()
        );
        assert_eq!(
            follower.count(label, "] stopped"),
            1,
            "{label}:\n{}",
            follower.shown()
        );
    }
    // Only the chosen service: not the proxy, nothing unprefixed.
    let lines = follower.lines();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("svc-1 | ") || l.starts_with("svc-2 | ")),
        "{}",
        follower.shown()
    );
    drop(follower);
}
