//! `just bench-watch`: how long a save takes to be served, and what the swap
//! costs the requests in flight, against the loop a user would write by hand.
//!
//! - rebuild: `message.txt` of a copy of fixtures/apps/web (a `build:`
//!   service, warm layer cache) is edited; edit → live is from the write to
//!   the first response through the proxy that shows the new text. devstack:
//!   the stack is started with `devstack up --detach` and `devstack watch
//!   --json` runs as a child. Naive: `docker build -t IMG ctx && docker rm -f
//!   C && docker run -d -p 127.0.0.1:PORT:8080 --name C IMG`, polled on PORT.
//! - failed requests while those swaps run: 4 threads send GET / back to back
//!   on loopback (a new connection each; failed = connect error, non-200 or
//!   no answer within 2 s), through the proxy for devstack, to the published
//!   port for the naive loop.
//!   The rebuild is measured twice: with the watcher's fast path (the
//!   fixture's only COPY is its last step, so the edited file is placed on
//!   the previous image and the real build runs behind), and with it off
//!   (`DEVSTACK_WATCH_OVERLAY=off`: each edit is a `docker build`).
//! - sync: a second stack whose web has `watch: { action: sync, target: /app }`
//!   (the app reads message.txt on every request, so no restart is needed),
//!   against `docker cp message.txt C:/app/message.txt` into the naive
//!   container, under the same load.
//!
//! Each case is one warm-up edit, then `DEVSTACK_BENCH_ROUNDS` (default 20)
//! measured ones. Every container, image and network the bench made is
//! removed at the end, also when it fails or is interrupted (Drop guards;
//! Ctrl-C ends the run at the next check, a second one exits at once).

#[path = "../tests/support/process.rs"]
mod process;
use process::{command_ok, output};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_devstack");
/// The route of the web service through the proxy.
const HOST: &str = "web.bench.localhost";
const LOAD_THREADS: usize = 4;
/// A request of the load (or a probe) that takes longer has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one edit may take to be served before the bench gives up.
const LIVE_TIMEOUT: Duration = Duration::from_secs(180);
/// Between two edits, so each is its own burst for the watcher's debounce.
const PAUSE: Duration = Duration::from_millis(300);
const TARGET_REBUILD: Duration = Duration::from_secs(2);
const TARGET_SYNC: Duration = Duration::from_millis(300);

/// Set by the first Ctrl-C; the waits below check it and fail, so the
/// guards clean up on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn check_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("bench-watch: interrupted");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let edits: usize = std::env::var("DEVSTACK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
        .max(2);
    on_interrupt();
    if !command_ok("docker", &["version"]) {
        eprintln!("bench-watch: no Docker engine answered");
        std::process::exit(1);
    }
    ensure_fixtures();
    let tag = format!("bw{}", std::process::id() % 100_000);
    // Dropped last: the images go once no container uses them.
    let _images = Images {
        label: format!("devstack-bench=watch-{tag}"),
    };
    println!(
        "bench-watch: fixtures/apps/web (warm layer cache), message.txt edited {edits} times per case after 1 warm-up"
    );
    println!(
        "load: {LOAD_THREADS} threads, GET / back to back on loopback, a new connection each; failed = connect error, non-200 or > {}s",
        REQUEST_TIMEOUT.as_secs()
    );

    let ds_rebuild = devstack_case(&tag, Mode::Rebuild, edits);
    let ds_full = devstack_case(&tag, Mode::Full, edits);
    let (naive_rebuild, naive_sync) = naive_cases(&tag, edits);
    let ds_sync = devstack_case(&tag, Mode::Sync, edits);

    println!();
    println!(
        "{:<46}{:<36}{:<36}target",
        "", "devstack watch", "naive loop"
    );
    table(
        "rebuild (fast path)",
        &ds_rebuild,
        &naive_rebuild,
        TARGET_REBUILD,
        "swaps",
    );
    table(
        "rebuild (full build)",
        &ds_full,
        &naive_rebuild,
        TARGET_REBUILD,
        "swaps",
    );
    table("sync", &ds_sync, &naive_sync, TARGET_SYNC, "syncs");
    println!();
    println!(
        "devstack rebuild, fast path (message.txt placed on the previous image, the real build behind), from watch --json: analysis median {}, swap median {} (new container made, files placed, healthy and routed, old one drained, stopped, removed)",
        fmt(median_ms(&ds_rebuild.first)),
        fmt(median_ms(&ds_rebuild.second))
    );
    println!(
        "devstack rebuild, full build (DEVSTACK_WATCH_OVERLAY=off), from watch --json: build median {}, swap median {}",
        fmt(median_ms(&ds_full.first)),
        fmt(median_ms(&ds_full.second))
    );
    println!(
        "edits placed on the previous image: fast path case {}/{edits}, full build case {}/{edits}",
        ds_rebuild.placed, ds_full.placed
    );
    println!(
        "naive rebuild: docker build median {}, docker rm -f + docker run median {}, then the app starts",
        fmt(median_ms(&naive_rebuild.first)),
        fmt(median_ms(&naive_rebuild.second))
    );
    println!(
        "devstack sync, from watch --json: copy median {}; one container throughout: {}",
        fmt(median_ms(&ds_sync.second)),
        yes(ds_sync.same_container)
    );
    println!(
        "naive sync: docker cp median {} into the naive loop's running container; one container throughout: {}",
        fmt(median_ms(&naive_sync.second)),
        yes(naive_sync.same_container)
    );
    println!(
        "warm-up edit, before the load started: rebuild devstack {} (build {}), naive {} (build {}); sync devstack {}, naive {}",
        fmt_d(ds_rebuild.warm.0),
        fmt(ds_rebuild.warm.1),
        fmt_d(naive_rebuild.warm.0),
        fmt(naive_rebuild.warm.1),
        fmt_d(ds_sync.warm.0),
        fmt_d(naive_sync.warm.0)
    );
    for (label, case, placed) in [
        ("devstack rebuild (fast path)", &ds_rebuild, true),
        ("devstack rebuild (full build)", &ds_full, true),
        ("naive rebuild", &naive_rebuild, false),
        ("devstack sync", &ds_sync, true),
        ("naive sync", &naive_sync, false),
    ] {
        if case.load.failed == 0 {
            continue;
        }
        let mut kinds: Vec<_> = case.load.errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        let kinds: Vec<String> = kinds
            .iter()
            .take(3)
            .map(|(k, n)| format!("{n}× {k}"))
            .collect();
        println!("{label} failed requests: {}", kinds.join("; "));
        if placed {
            for line in case.placed_failures(10) {
                println!("  {line}");
            }
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

/// What one case measured.
struct Case {
    /// Edit → first response showing it.
    live: Vec<Duration>,
    /// Rebuild: the build's ms; sync: unused.
    first: Vec<u64>,
    /// devstack: the swap's (or the copy's) ms; naive: `rm -f` + `run`, or `docker cp`.
    second: Vec<u64>,
    /// The warm-up edit, made before the load starts: (edit → live, `first`).
    warm: (Duration, u64),
    /// When each edit was written, and when it was done (devstack: watch's
    /// event arrived; naive: served), to place failed requests.
    marks: Vec<(Instant, Duration)>,
    load: LoadResult,
    /// Every response during the case came from one container.
    same_container: bool,
    /// The measured edits watch placed on the previous image (`overlay`).
    placed: usize,
}

impl Case {
    fn new(warm: (Duration, u64)) -> Case {
        Case {
            live: Vec::new(),
            first: Vec::new(),
            second: Vec::new(),
            warm,
            marks: Vec::new(),
            load: LoadResult::default(),
            same_container: false,
            placed: 0,
        }
    }

    /// Each failed request (the first few) placed after the edit before it.
    fn placed_failures(&self, max: usize) -> Vec<String> {
        self.load
            .failures
            .iter()
            .take(max)
            .map(|(at, why)| {
                match self
                    .marks
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, (w, _))| w <= at)
                {
                    Some((i, (written, done))) => format!(
                        "edit {}: {why} at +{} (served at +{}, done at +{})",
                        i + 1,
                        fmt_d(*at - *written),
                        fmt_d(self.live[i]),
                        fmt_d(*done)
                    ),
                    None => format!("before the first edit: {why}"),
                }
            })
            .collect()
    }
}

fn table(label: &str, ds: &Case, naive: &Case, target: Duration, what: &str) {
    let mut a = ds.live.clone();
    let mut b = naive.live.clone();
    let (am, ap) = (median(&mut a), p95(&mut a));
    let (bm, bp) = (median(&mut b), p95(&mut b));
    let met = |d: Duration| if d < target { "met" } else { "MISSED" };
    let target_s = fmt(target.as_millis() as u64);
    println!(
        "{:<46}{:<36}{:<36}< {target_s} (devstack: {})",
        format!("{label}: edit → live, median"),
        fmt_d(am),
        fmt_d(bm),
        met(am)
    );
    println!(
        "{:<46}{:<36}{:<36}< {target_s} (devstack: {})",
        format!("{label}: edit → live, p95"),
        fmt_d(ap),
        fmt_d(bp),
        met(ap)
    );
    let load = |l: &LoadResult| {
        format!(
            "{} sent, {} failed ({:.0}/s)",
            l.sent,
            l.failed,
            l.sent as f64 / l.secs.max(0.001)
        )
    };
    println!(
        "{:<46}{:<36}{:<36}0 failed (devstack: {})",
        format!("{label}: requests during the {what}"),
        load(&ds.load),
        load(&naive.load),
        if ds.load.failed == 0 { "met" } else { "MISSED" }
    );
}

fn fmt(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

fn fmt_d(d: Duration) -> String {
    fmt(d.as_millis() as u64)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2,
        n => v[n / 2],
    }
}

/// Nearest rank: the smallest sample at or above 95% of them.
fn p95(v: &mut [Duration]) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn median_ms(v: &[u64]) -> u64 {
    let mut d: Vec<Duration> = v.iter().map(|ms| Duration::from_millis(*ms)).collect();
    median(&mut d).as_millis() as u64
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The watcher's fast path (the fixture's only COPY is its last step).
    Rebuild,
    /// The same edits with the fast path off: each one builds.
    Full,
    Sync,
}

/// devstack: `up --detach`, `watch --json`, one warm-up edit, then `edits`
/// measured ones under load; the stack goes down before this returns.
fn devstack_case(tag: &str, mode: Mode, edits: usize) -> Case {
    let (suffix, watch, expect, name, step) = match mode {
        Mode::Rebuild => ("r", "", "swapped", "rebuild", "swap"),
        Mode::Full => ("f", "", "swapped", "full rebuild", "swap"),
        Mode::Sync => (
            "s",
            "    watch: { action: sync, target: /app }\n",
            "synced",
            "sync",
            "copy",
        ),
    };
    let mut stack = DevStack::create(&format!("{tag}{suffix}"), tag, watch);
    eprintln!("devstack {name}: {} up --detach", stack.project);
    stack.up();
    stack.start_watch(mode == Mode::Full);
    let target = stack.target();
    let first_host = probe(&target).map(|(h, _)| h).unwrap_or_default();

    let warm = format!("{} {name} warm-up", stack.project);
    let (live, event, _) = stack.edit(&warm, expect);
    let mut case = Case::new((live, event["build_ms"].as_u64().unwrap_or(0)));
    let load = Load::start(target.clone());
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=edits {
        let text = format!("{} {name} edit {i}", stack.project);
        let written = Instant::now();
        let (live, event, done) = stack.edit(&text, expect);
        let build = event["build_ms"].as_u64().unwrap_or(0);
        let swap = event["swap_ms"].as_u64().unwrap_or(0);
        eprintln!(
            "  devstack {name} {i}/{edits}: live after {} (watch: build {}, {step} {}, done after {})",
            fmt_d(live),
            fmt(build),
            fmt(swap),
            fmt_d(done)
        );
        case.live.push(live);
        case.first.push(build);
        case.second.push(swap);
        case.marks.push((written, done));
        case.placed += usize::from(event.get("overlay").is_some());
        std::thread::sleep(PAUSE);
    }
    case.load = load.finish();
    case.same_container = mode == Mode::Sync
        && case.load.hosts.len() == 1
        && case.load.hosts.contains_key(&first_host);
    eprintln!("devstack {name}: down --volumes");
    drop(stack);
    case
}

/// The naive loop: rebuild by hand, then sync with `docker cp` into the
/// container the rebuilds left; the container goes before this returns.
fn naive_cases(tag: &str, edits: usize) -> (Case, Case) {
    let naive = Naive::create(tag);
    eprintln!(
        "naive: docker build + docker run on 127.0.0.1:{}",
        naive.port
    );
    naive.deploy(&format!("{tag} naive first"));
    let target = naive.target();
    let (live, build, _) = naive.edit_rebuild(&format!("{tag} naive rebuild warm-up"));

    let mut rebuild = Case::new((live, build));
    let load = Load::start(target.clone());
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=edits {
        let written = Instant::now();
        let (live, build, swap) = naive.edit_rebuild(&format!("{tag} naive rebuild edit {i}"));
        eprintln!(
            "  naive rebuild {i}/{edits}: live after {} (docker build {}, rm -f + run {})",
            fmt_d(live),
            fmt(build),
            fmt(swap)
        );
        rebuild.live.push(live);
        rebuild.first.push(build);
        rebuild.second.push(swap);
        rebuild.marks.push((written, live));
        std::thread::sleep(PAUSE);
    }
    rebuild.load = load.finish();

    let first_host = probe(&target).map(|(h, _)| h).unwrap_or_default();
    let (live, _) = naive.edit_cp(&format!("{tag} naive sync warm-up"));
    let mut sync = Case::new((live, 0));
    let load = Load::start(target.clone());
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=edits {
        let written = Instant::now();
        let (live, cp) = naive.edit_cp(&format!("{tag} naive sync edit {i}"));
        eprintln!(
            "  naive sync {i}/{edits}: live after {} (docker cp {})",
            fmt_d(live),
            fmt(cp)
        );
        sync.live.push(live);
        sync.second.push(cp);
        sync.marks.push((written, live));
        std::thread::sleep(PAUSE);
    }
    sync.load = load.finish();
    sync.same_container = sync.load.hosts.len() == 1 && sync.load.hosts.contains_key(&first_host);
    drop(naive);
    (rebuild, sync)
}

/// Where the load and the probes send GET /.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
}

/// One GET /: (hostname, message) on a 200, or why not.
fn probe(t: &Target) -> Result<(String, String), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&t.addr, REQUEST_TIMEOUT)
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = s.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = s.set_write_timeout(Some(REQUEST_TIMEOUT));
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            t.host
        )
        .as_bytes(),
    )
    .map_err(|e| format!("send: {}", e.kind()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout".to_string(),
        k => format!("read: {k}"),
    })?;
    if start.elapsed() > REQUEST_TIMEOUT {
        return Err("timeout".into());
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(if status.is_empty() {
            "closed without an answer".into()
        } else {
            status.to_string()
        });
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    Ok((field("hostname"), field("message")))
}

/// Polls `t` from `since` until it answers with `text`; the time it took.
fn until_live(t: &Target, text: &str, since: Instant, on_timeout: impl Fn() -> String) -> Duration {
    loop {
        if let Ok((_, m)) = probe(t) {
            if m == text {
                return since.elapsed();
            }
        }
        check_interrupted();
        if since.elapsed() > LIVE_TIMEOUT {
            panic!(
                "bench-watch: `{text}` not served within {}s\n{}",
                LIVE_TIMEOUT.as_secs(),
                on_timeout()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[derive(Default)]
struct LoadResult {
    sent: u64,
    failed: u64,
    secs: f64,
    /// Why requests failed, and how often.
    errors: BTreeMap<String, u64>,
    /// Which containers answered, and how often.
    hosts: BTreeMap<String, u64>,
    /// When requests failed and why, the first [`KEPT_FAILURES`] of each thread.
    failures: Vec<(Instant, String)>,
}

const KEPT_FAILURES: usize = 50;

/// `LOAD_THREADS` threads sending GET / back to back until finished (or dropped).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadResult>>,
    started: Instant,
}

impl Load {
    fn start(t: Target) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..LOAD_THREADS)
            .map(|_| {
                let (stop, t) = (stop.clone(), t.clone());
                std::thread::spawn(move || {
                    let mut r = LoadResult::default();
                    while !stop.load(Ordering::Relaxed) {
                        r.sent += 1;
                        match probe(&t) {
                            Ok((host, _)) => *r.hosts.entry(host).or_default() += 1,
                            Err(e) => {
                                r.failed += 1;
                                if r.failures.len() < KEPT_FAILURES {
                                    r.failures.push((Instant::now(), e.clone()));
                                }
                                *r.errors.entry(e).or_default() += 1;
                            }
                        }
                    }
                    r
                })
            })
            .collect();
        Load {
            stop,
            threads,
            started: Instant::now(),
        }
    }

    fn finish(mut self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadResult {
            secs: self.started.elapsed().as_secs_f64(),
            ..LoadResult::default()
        };
        for t in self.threads.drain(..) {
            if let Ok(r) = t.join() {
                total.sent += r.sent;
                total.failed += r.failed;
                for (k, n) in r.errors {
                    *total.errors.entry(k).or_default() += n;
                }
                for (k, n) in r.hosts {
                    *total.hosts.entry(k).or_default() += n;
                }
                total.failures.extend(r.failures);
            }
        }
        total.failures.sort_by_key(|(at, _)| *at);
        total
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A copy of fixtures/apps/web in `dir`, its image labelled for the cleanup
/// (a LABEL just before the final COPY: the layers above it are shared and
/// cached, and an edit still rebuilds only the COPY, as in the fixture).
fn copy_web(dir: &Path, tag: &str, message: &str) {
    std::fs::create_dir_all(dir).expect("the context directory");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apps/web");
    let dockerfile =
        std::fs::read_to_string(fixture.join("Dockerfile")).expect("the fixture Dockerfile");
    let labelled = dockerfile.replacen(
        "\nCOPY . /app/",
        &format!("\nLABEL devstack-bench=watch-{tag}\nCOPY . /app/"),
        1,
    );
    assert_ne!(
        labelled, dockerfile,
        "the fixture Dockerfile has a COPY . /app/ line"
    );
    std::fs::write(dir.join("Dockerfile"), labelled).expect("write the Dockerfile");
    std::fs::copy(fixture.join("app.py"), dir.join("app.py")).expect("copy app.py");
    std::fs::write(dir.join("message.txt"), message).expect("write message.txt");
}

/// A devstack project in a temp dir with a copy of the web fixture as
/// `web/`; dropping it stops `watch` and runs `devstack down --volumes`.
struct DevStack {
    project: String,
    dir: tempfile::TempDir,
    listen: SocketAddr,
    watch: Option<Child>,
    events: Option<Receiver<String>>,
}

impl DevStack {
    /// `watch`: the web service's `watch:` line, indented by 4, or "".
    fn create(project: &str, tag: &str, watch: &str) -> DevStack {
        let dir = tempfile::tempdir().expect("a temp dir");
        copy_web(&dir.path().join("web"), tag, &format!("{project} first"));
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let yaml = format!(
            "# Generated by benches/watch.rs.
name: {project}
services:
  web:
    build: ./web
    port: 8080
    health: {{ http: /health, interval: 500ms, retries: 2, start_period: 3s }}
    restart: \"no\"
    stop_grace: 1s
    routes: [{HOST}]
{watch}proxy:
  image: devstack-fixtures/haproxy:2.6
  listen: {listen}
"
        );
        std::fs::write(dir.path().join("devstack.yaml"), yaml).expect("write the stack");
        DevStack {
            project: project.to_string(),
            dir,
            listen,
            watch: None,
            events: None,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .args(args);
        c
    }

    fn target(&self) -> Target {
        Target {
            addr: self.listen,
            host: HOST.into(),
        }
    }

    fn up(&self) {
        let out = self
            .cmd(&["up", "--detach"])
            .output()
            .expect("devstack up runs");
        if !out.status.success() {
            panic!(
                "bench-watch: devstack up failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let first = format!("{} first", self.project);
        until_live(&self.target(), &first, Instant::now(), String::new);
    }

    fn watch_log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("watch.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "devstack watch's stderr (last lines):\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Starts `devstack watch --json`; its stdout lines arrive on `events`.
    /// `full`: with the fast path off.
    fn start_watch(&mut self, full: bool) {
        let log = File::create(self.dir.path().join("watch.log")).expect("the watch log");
        let mut child = self
            .cmd(&["watch", "--json"])
            .env("DEVSTACK_WATCH_OVERLAY", if full { "off" } else { "on" })
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("devstack watch starts");
        let stdout = child.stdout.take().expect("piped stdout");
        self.watch = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.events = Some(rx);
        // notify sets its watches up after the stack is loaded.
        std::thread::sleep(Duration::from_secs(1));
    }

    /// Writes `text` to web/message.txt: the time until it is served,
    /// watch's event for it (whose `result` must be `expect`) and the time
    /// until that event arrived.
    fn edit(&mut self, text: &str, expect: &str) -> (Duration, serde_json::Value, Duration) {
        let file = self.dir.path().join("web/message.txt");
        std::fs::write(&file, text).expect("write message.txt");
        let written = Instant::now();
        let live = until_live(&self.target(), text, written, || self.watch_log());
        let event = self.next_event();
        let done = written.elapsed();
        if event["result"] != expect
            || !event["trigger"]
                .as_str()
                .unwrap_or("")
                .ends_with("message.txt")
        {
            panic!("bench-watch: expected one `{expect}` event for message.txt, got {event}");
        }
        (live, event, done)
    }

    fn next_event(&mut self) -> serde_json::Value {
        let since = Instant::now();
        loop {
            let rx = self.events.as_ref().expect("watch runs");
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    return serde_json::from_str(&line)
                        .unwrap_or_else(|_| panic!("bench-watch: not a JSON event: {line}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("bench-watch: devstack watch exited\n{}", self.watch_log())
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            check_interrupted();
            if since.elapsed() > LIVE_TIMEOUT {
                panic!(
                    "bench-watch: no event from devstack watch within {}s\n{}",
                    LIVE_TIMEOUT.as_secs(),
                    self.watch_log()
                );
            }
        }
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        if let Some(mut w) = self.watch.take() {
            process::interrupt(&mut w, Duration::from_secs(15));
        }
        let _ = self
            .cmd(&["down", "--volumes", "--timeout", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The naive loop's container and build context; dropping it removes the container.
struct Naive {
    ctx: tempfile::TempDir,
    name: String,
    image: String,
    label: String,
    port: u16,
}

impl Naive {
    fn create(tag: &str) -> Naive {
        let ctx = tempfile::tempdir().expect("a temp dir");
        copy_web(ctx.path(), tag, "");
        Naive {
            ctx,
            name: format!("{tag}-naive"),
            image: format!("{tag}-naive:latest"),
            label: format!("devstack-bench=watch-{tag}"),
            port: free_port(),
        }
    }

    fn target(&self) -> Target {
        Target {
            addr: SocketAddr::from(([127, 0, 0, 1], self.port)),
            host: format!("127.0.0.1:{}", self.port),
        }
    }

    fn message(&self) -> PathBuf {
        self.ctx.path().join("message.txt")
    }

    /// `docker build` then `docker rm -f` + `docker run`: their ms.
    fn build_and_run(&self) -> (u64, u64) {
        let t0 = Instant::now();
        let ctx = self.ctx.path().display().to_string();
        docker_ok(&["build", "-q", "-t", &self.image, &ctx]);
        let built = t0.elapsed().as_millis() as u64;
        let t1 = Instant::now();
        // Not found the first time: `rm -f` of nothing is fine.
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let publish = format!("127.0.0.1:{}:8080", self.port);
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &self.name,
            "--label",
            &self.label,
            "-p",
            &publish,
            &self.image,
        ]);
        (built, t1.elapsed().as_millis() as u64)
    }

    fn deploy(&self, text: &str) {
        std::fs::write(self.message(), text).expect("write message.txt");
        let t0 = Instant::now();
        self.build_and_run();
        until_live(&self.target(), text, t0, || self.logs());
    }

    /// One edit by hand: (edit → live, build ms, rm + run ms).
    fn edit_rebuild(&self, text: &str) -> (Duration, u64, u64) {
        std::fs::write(self.message(), text).expect("write message.txt");
        let written = Instant::now();
        let (build, swap) = self.build_and_run();
        (
            until_live(&self.target(), text, written, || self.logs()),
            build,
            swap,
        )
    }

    /// One edit copied in: (edit → live, docker cp ms).
    fn edit_cp(&self, text: &str) -> (Duration, u64) {
        std::fs::write(self.message(), text).expect("write message.txt");
        let written = Instant::now();
        let dest = format!("{}:/app/message.txt", self.name);
        docker_ok(&["cp", &self.message().display().to_string(), &dest]);
        let cp = written.elapsed().as_millis() as u64;
        (
            until_live(&self.target(), text, written, || self.logs()),
            cp,
        )
    }

    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "30", &self.name])
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Naive {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes every image built from the bench's labelled Dockerfiles (both
/// sides, the devstack tags and the ones later builds left untagged).
struct Images {
    label: String,
}

impl Drop for Images {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        let ids = output("docker", &["images", "-aq", "--filter", &filter]);
        let mut ids: Vec<&str> = ids.lines().collect();
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(ids);
            let _ = Command::new("docker")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs docker; a failure fails the bench with its stderr.
fn docker_ok(args: &[&str]) {
    check_interrupted();
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI");
    if !out.status.success() {
        panic!(
            "bench-watch: docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// The base and proxy images the stacks use, built when missing.
fn ensure_fixtures() {
    let images = [
        "devstack-fixtures/debian:bookworm",
        "devstack-fixtures/haproxy:2.6",
    ];
    if images
        .iter()
        .any(|i| output("docker", &["images", "-q", i]).is_empty())
    {
        let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/build.sh");
        let status = Command::new("bash").arg(build).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("bench-watch: building the fixture images failed");
            std::process::exit(1);
        }
    }
}

/// The first Ctrl-C sets [`INTERRUPTED`] (the run fails at its next check
/// and the guards clean up); a second one exits at once.
fn on_interrupt() {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the signal");
        rt.block_on(async {
            let mut n = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                n += 1;
                if n > 1 {
                    std::process::exit(130);
                }
                eprintln!("bench-watch: interrupted, cleaning up (Ctrl-C again to leave at once)");
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        });
    });
}
