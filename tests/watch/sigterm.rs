//! Swaps of services that ignore SIGTERM (a shell as PID 1, as many real
//! images run), and swaps under a load that keeps slow requests in flight:
//! the old container's stop holds up neither the next replica nor the next
//! save, and no request fails, over a hundred swaps.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// The web command for a service that ignores SIGTERM: the shell is PID 1
/// with no handler (the kernel drops the signal), python its child (the
/// `exit` after it keeps dash from exec'ing it), so `docker stop` waits
/// out the whole grace period and ends it with SIGKILL.
const IGNORES_TERM: &str = "python3 /app/app.py; exit 0";

/// Rewrites the stack file of `s` with `edit`, and returns the new text.
/// The start period is made long, as a busy CI machine may take seconds to
/// start python: a slow start must not count as a failed version here.
fn edit_stack(s: &Stack, edit: impl Fn(String) -> String) -> String {
    let path = s.dir.path().join("devstack.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let yaml = edit(yaml.replacen("start_period: 20s", "start_period: 120s", 1));
    std::fs::write(&path, &yaml).unwrap();
    yaml
}

/// One HTTP/1.1 request on `s`; the status code and body, or why not.
/// `keep` asks for the connection to stay open; the answer says whether
/// it may be used again.
fn exchange(s: &mut TcpStream, path: &str, keep: bool) -> Result<(u16, String, bool), String> {
    let connection = if keep { "keep-alive" } else { "close" };
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: web.test.localhost\r\nConnection: {connection}\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err(format!("closed after {} byte(s) of the answer", head.len())),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("read: {e}")),
        }
        if head.len() > 16 * 1024 {
            return Err("an answer head over 16 KiB".into());
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let lower = head.to_ascii_lowercase();
    let length: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("{status} without a length"))?;
    let mut body = vec![0u8; length.min(1 << 20)];
    s.read_exact(&mut body)
        .map_err(|e| format!("{status}, body: {e}"))?;
    let again = keep && !lower.contains("connection: close") && lower.starts_with("http/1.1");
    Ok((status, String::from_utf8_lossy(&body).to_string(), again))
}

fn connect(listen: SocketAddr, read_timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&listen, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(read_timeout)).ok();
    Ok(s)
}

/// What one load thread saw.
#[derive(Default)]
struct Tally {
    sent: u64,
    failed: Vec<String>,
}

/// Load through the proxy until [`MixedLoad::finish`], of three kinds at
/// once: a new connection per request, requests one after another on
/// kept-alive connections, and `/slow?ms=1500` requests (so some are always
/// in flight while an old container drains). Anything but a 200 fails.
struct MixedLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Tally>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Fresh,
    KeptAlive,
    Slow,
}

impl MixedLoad {
    fn start(listen: SocketAddr) -> MixedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let kinds = [
            Kind::Fresh,
            Kind::Fresh,
            Kind::KeptAlive,
            Kind::KeptAlive,
            Kind::Slow,
            Kind::Slow,
        ];
        let threads = kinds
            .into_iter()
            .map(|kind| {
                let stop = stop.clone();
                std::thread::spawn(move || run_load(listen, kind, &stop))
            })
            .collect();
        MixedLoad { stop, threads }
    }

    /// (requests sent, the failures with their time since the start).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut sent = 0;
        let mut failed = Vec::new();
        for t in self.threads {
            let tally = t.join().expect("a load thread");
            sent += tally.sent;
            failed.extend(tally.failed);
        }
        (sent, failed)
    }
}

fn run_load(listen: SocketAddr, kind: Kind, stop: &AtomicBool) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut kept: Option<TcpStream> = None;
    while !stop.load(Ordering::SeqCst) {
        let at = started.elapsed();
        let result = match kind {
            Kind::Fresh => connect(listen, Duration::from_secs(5))
                .and_then(|mut s| exchange(&mut s, "/", false)),
            Kind::Slow => connect(listen, Duration::from_secs(10))
                .and_then(|mut s| exchange(&mut s, "/slow?ms=1500", false)),
            Kind::KeptAlive => {
                let reused = kept.is_some();
                let stream = match kept.take() {
                    Some(s) => Ok(s),
                    None => connect(listen, Duration::from_secs(5)),
                };
                stream.and_then(|mut s| {
                    let r = exchange(&mut s, "/", true);
                    if let Ok((_, _, true)) = &r {
                        kept = Some(s);
                    }
                    r.map_err(|e| format!("{e} (connection reused: {reused})"))
                })
            }
        };
        tally.sent += 1;
        match result {
            Ok((200, _, _)) => {}
            Ok((status, body, _)) => tally
                .failed
                .push(format!("+{at:?}: {status} {}", body.trim())),
            Err(e) => tally.failed.push(format!("+{at:?}: {e}")),
        }
    }
    tally
}

/// The ids of the running containers of `web`.
fn web_ids(s: &Stack) -> Vec<String> {
    process::output(
        "docker",
        &[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "label=dev.devstack.service=web",
            "--filter",
            &format!("label=dev.devstack.project={}", s.name),
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn running(id: &str) -> bool {
    process::output("docker", &["inspect", "-f", "{{.State.Running}}", id]) == "true"
}

/// Kills the stack's containers (its own, made by this test), so that
/// tearing down does not wait out a long grace period on each.
fn kill_web(s: &Stack) {
    let ids = web_ids(s);
    if !ids.is_empty() {
        let mut args = vec!["kill"];
        args.extend(ids.iter().map(String::as_str));
        let _ = process::command_ok("docker", &args);
    }
}

#[test]
fn a_second_save_is_served_while_the_old_container_ignoring_sigterm_still_stops() {
    let mut s = Stack::with(
        "p",
        &format!("    replicas: 2\n    command: [sh, -c, \"{IGNORES_TERM}\"]\n    stop_grace: 60s"),
    );
    // The fixture's own `stop_grace: 1s` line would clash with this one.
    edit_stack(&s, |y| y.replacen("    stop_grace: 1s\n", "", 1));
    up(&s, "first");
    let listen = s.listen;
    let originals = web_ids(&s);
    assert_eq!(originals.len(), 2, "{originals:?}");
    let rx = start_watch(&mut s);
    let load = Poll::start(listen, Duration::from_millis(10));

    let saved = Instant::now();
    std::fs::write(s.file("message.txt"), "second").unwrap();
    until(Duration::from_secs(180), "the first save is served", || {
        message(listen).as_deref() == Ok("second")
    });
    let first_live = saved.elapsed();
    // The second save comes while the first swap may still be stopping
    // the old containers (each waits 60 s for a SIGTERM it ignores).
    let saved = Instant::now();
    std::fs::write(s.file("message.txt"), "third").unwrap();
    until(
        Duration::from_secs(300),
        "the second save is served",
        || message(listen).as_deref() == Ok("third"),
    );
    let second_live = saved.elapsed();
    println!(
        "SIGTERM-ignoring service, 2 replicas, stop_grace 60s: edit → live {:.2}s for the first save, {:.2}s for the second",
        first_live.as_secs_f64(),
        second_live.as_secs_f64()
    );
    // Order, not timing: the second save was served before the containers
    // the first one replaced had exited.
    let still = originals.iter().filter(|id| running(id)).count();
    assert!(
        still > 0,
        "the replaced containers had exited before the second save was served: their stop held up the swaps"
    );
    for _ in 0..2 {
        let v = next_event(&rx);
        assert_eq!(v["result"], "swapped", "{v}");
    }
    // Nothing failed meanwhile.
    let errors = unexpected(&load.finish(), &["first", "second", "third"]);
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    // The replaced containers still run (ignoring SIGTERM for up to a
    // minute) and still answer their health check, yet no request reaches
    // them: they never go back into the proxy.
    let originals_running = originals.iter().filter(|id| running(id)).count();
    let answers: Vec<_> = (0..30).map(|_| message(listen)).collect();
    let stale = unexpected(&answers, &["third"]);
    assert!(
        stale.is_empty(),
        "after both swaps, with {originals_running} replaced container(s) still running: {stale:?}"
    );
    kill_web(&s);
}

#[test]
fn init_true_stops_a_service_ignoring_sigterm_at_once() {
    let s = Stack::with(
        "q",
        &format!("    command: [sh, -c, \"{IGNORES_TERM}\"]\n    init: true"),
    );
    edit_stack(&s, |y| {
        y.replacen("    stop_grace: 1s\n", "    stop_grace: 60s\n", 1)
    });
    up(&s, "first");
    let ids = web_ids(&s);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    assert_eq!(
        process::output("docker", &["inspect", "-f", "{{.HostConfig.Init}}", id]),
        "true"
    );
    let t0 = Instant::now();
    assert!(process::command_ok("docker", &["stop", "-t", "60", id]));
    let took = t0.elapsed();
    // 143 = 128 + SIGTERM: the init passed the signal on and the shell died
    // of it; at the end of the grace period it would be 137 (SIGKILL).
    assert_eq!(
        process::output("docker", &["inspect", "-f", "{{.State.ExitCode}}", id]),
        "143",
        "stopped by SIGTERM, not killed at the end of the grace"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_hundred_swaps_under_load_with_slow_requests_fail_no_request() {
    // Replica 1 ignores SIGTERM (the shell is PID 1), replica 2 handles it;
    // the hostname is the container's name, so it tells them apart.
    let command = format!(
        "case $(cat /etc/hostname) in *-web-1*) {IGNORES_TERM};; *) exec python3 /app/app.py;; esac"
    );
    let mut s = Stack::with(
        "r",
        &format!(
            "    replicas: 2\n    env: {{ VERSION: \"0\" }}\n    command: [sh, -c, \"{command}\"]"
        ),
    );
    // Long enough for a slow request to finish while its container drains.
    let yaml = edit_stack(&s, |y| {
        y.replacen("    stop_grace: 1s\n", "    stop_grace: 3s\n", 1)
    });
    let path = s.dir.path().join("devstack.yaml");
    up(&s, "first");
    let listen = s.listen;
    let rx = start_watch(&mut s);
    let swaps: usize = std::env::var("DEVSTACK_TEST_SWAPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let load = MixedLoad::start(listen);
    let t0 = Instant::now();
    for i in 1..=swaps {
        // An edit of the stack file: each swap is a new container config
        // without a new build, so a hundred of them stay quick.
        let edited = yaml.replacen("VERSION: \"0\"", &format!("VERSION: \"{i}\""), 1);
        std::fs::write(&path, edited).unwrap();
        let v = next_event(&rx);
        assert_eq!(v["result"], "swapped", "swap {i}: {v}");
    }
    let took = t0.elapsed();
    let (sent, failed) = load.finish();
    println!(
        "{swaps} swaps of 2 replicas (one ignoring SIGTERM) in {:.1}s under load: {sent} requests, {} failed",
        took.as_secs_f64(),
        failed.len()
    );
    assert!(sent > 0);
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    kill_web(&s);
}
