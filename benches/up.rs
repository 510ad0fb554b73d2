//! `just bench-up`: time from `devstack up --detach` to all healthy on a stack
//! of 10 services and 2 datastores with warm images, against `docker-compose
//! up -d` of the same stack (a generated compose file with equivalent health
//! checks) polled until every container is healthy. Prints both and the ratio,
//! and removes everything it created.
//!
//! Environment: `DEVSTACK_BENCH_ROUNDS` (default 2) rounds of each, alternating.

#[path = "../tests/support/process.rs"]
mod process;
#[path = "support/stack.rs"]
mod stack;
use process::{command_ok, output};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (name, dependencies) of the ten services: a realistic fan-in with chains
/// three deep, so start order matters.
const SERVICES: stack::Services = &[
    ("users", &["postgres"]),
    ("orders", &["postgres", "redis"]),
    ("catalog", &["redis"]),
    ("cart", &["redis"]),
    ("payments", &["postgres"]),
    ("notify", &[]),
    ("reports", &["postgres"]),
    ("search", &["catalog"]),
    ("admin", &["users"]),
    ("gateway", &["users", "orders", "catalog", "cart"]),
];

const DS_PROJECT: &str = "benchup-devstack";
const DC_PROJECT: &str = "benchup-compose";

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let devstack = env!("CARGO_BIN_EXE_devstack");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rounds: usize = std::env::var("DEVSTACK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2)
        .max(1);
    if !command_ok("docker", &["version"]) {
        eprintln!("bench-up: no Docker engine answered");
        std::process::exit(1);
    }
    if !command_ok("docker-compose", &["version"]) {
        eprintln!("bench-up: docker-compose is not installed");
        std::process::exit(1);
    }
    let images = [
        "devstack-fixtures/app",
        "devstack-fixtures/redis",
        "devstack-fixtures/postgres",
    ];
    if images
        .iter()
        .any(|i| output("docker", &["images", "-q", i]).is_empty())
    {
        let status = Command::new("bash")
            .arg(repo.join("fixtures/images/build.sh"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("bench-up: building the fixture images failed");
            std::process::exit(1);
        }
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench-up: no temp dir: {e}");
            std::process::exit(1);
        }
    };
    let stack = dir.path().join("devstack.yaml");
    let compose = dir.path().join("docker-compose.yml");
    std::fs::write(
        &stack,
        stack::devstack_yaml("up", "benchup", SERVICES, false),
    )
    .expect("write the stack");
    std::fs::write(&compose, stack::compose_yaml("up", SERVICES, false))
        .expect("write the compose file");
    let stack_s = stack.display().to_string();
    let compose_s = compose.display().to_string();

    let down_devstack = || {
        let _ = Command::new(devstack)
            .args([
                "-f",
                &stack_s,
                "-p",
                DS_PROJECT,
                "down",
                "--volumes",
                "--timeout",
                "2s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    let down_compose = || {
        let _ = Command::new("docker-compose")
            .args([
                "-f",
                &compose_s,
                "-p",
                DC_PROJECT,
                "down",
                "--volumes",
                "--timeout",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    down_devstack();
    down_compose();

    println!("bench-up: 10 services + 2 datastores (postgres, redis), warm images, {rounds} round(s) each");
    let mut ds_times = Vec::new();
    let mut dc_times = Vec::new();
    for round in 1..=rounds {
        // devstack: `up --detach` returns once every unit is healthy. Its
        // `--json` events, timed as they arrive, say where the time goes.
        let t0 = Instant::now();
        let mut child = Command::new(devstack)
            .args(["-f", &stack_s, "-p", DS_PROJECT, "up", "--detach", "--json"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("devstack runs");
        let events = timed_lines(child.stdout.take().expect("piped"), t0);
        let out = child.wait_with_output().expect("devstack runs");
        let ds = t0.elapsed();
        let phases = Phases::of(&events.join().unwrap_or_default(), ds);
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            down_devstack();
            eprintln!("bench-up: devstack up failed");
            std::process::exit(1);
        }
        let healthy = count_healthy_devstack();
        down_devstack();

        // docker-compose: `up -d`, then poll until every container is healthy.
        let t0 = Instant::now();
        let out = Command::new("docker-compose")
            .args(["-f", &compose_s, "-p", DC_PROJECT, "up", "-d"])
            .stdin(Stdio::null())
            .output()
            .expect("docker-compose runs");
        let dc_returned = t0.elapsed();
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            down_compose();
            eprintln!("bench-up: docker-compose up failed");
            std::process::exit(1);
        }
        let deadline = t0 + Duration::from_secs(180);
        let mut all = false;
        while Instant::now() < deadline {
            let status = output(
                "docker",
                &[
                    "ps",
                    "--filter",
                    &format!("label=com.docker.compose.project={DC_PROJECT}"),
                    "--format",
                    "{{.Status}}",
                ],
            );
            let lines: Vec<&str> = status.lines().collect();
            if lines.len() == SERVICES.len() + 2 && lines.iter().all(|l| l.contains("(healthy)")) {
                all = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let dc = t0.elapsed();
        down_compose();
        if !all {
            eprintln!("bench-up: docker-compose's stack was not healthy within 180s");
            std::process::exit(1);
        }
        println!(
            "round {round}: devstack {:>6.2}s ({healthy} containers healthy)   docker-compose {:>6.2}s (`up -d` returned at {:.2}s)",
            ds.as_secs_f64(),
            dc.as_secs_f64(),
            dc_returned.as_secs_f64()
        );
        println!("         devstack's time: {phases}");
        ds_times.push(ds);
        dc_times.push(dc);
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    let (ds_best, dc_best) = (best(&ds_times), best(&dc_times));
    println!(
        "devstack up --detach → all healthy:      best {:.2}s  mean {:.2}s",
        ds_best.as_secs_f64(),
        mean(&ds_times).as_secs_f64()
    );
    println!(
        "docker-compose up -d → all healthy:      best {:.2}s  mean {:.2}s",
        dc_best.as_secs_f64(),
        mean(&dc_times).as_secs_f64()
    );
    println!(
        "ratio (compose / devstack, best):        {:.2}x",
        dc_best.as_secs_f64() / ds_best.as_secs_f64().max(0.001)
    );
}

fn count_healthy_devstack() -> usize {
    output(
        "docker",
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=dev.devstack.project={DS_PROJECT}"),
        ],
    )
    .lines()
    .count()
}

/// Reads `from` line by line on a thread, each line with when it arrived
/// (since `t0`).
fn timed_lines(
    from: impl std::io::Read + Send + 'static,
    t0: Instant,
) -> std::thread::JoinHandle<Vec<(Duration, String)>> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(from)
            .lines()
            .map_while(Result::ok)
            .map(|line| (t0.elapsed(), line))
            .collect()
    })
}

/// Where one `up --detach --json` spent its time: when its first event
/// came (the stack read, the engine asked), the first container began to be
/// created, each unit was healthy (a dependent starts once its dependencies
/// are), and when it exited.
struct Phases {
    first_event: Option<Duration>,
    first_created: Option<Duration>,
    /// Each unit when it was healthy, in that order.
    healthy: Vec<(Duration, String)>,
    exit: Duration,
}

impl Phases {
    fn of(events: &[(Duration, String)], exit: Duration) -> Phases {
        let mut p = Phases {
            first_event: events.first().map(|(t, _)| *t),
            first_created: None,
            healthy: Vec::new(),
            exit,
        };
        for (t, line) in events {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            match field("event").as_str() {
                "container" if field("action") == "creating" => {
                    p.first_created = p.first_created.or(Some(*t))
                }
                "healthy" => p.healthy.push((*t, field("service"))),
                _ => {}
            }
        }
        p
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |d: Option<Duration>| match d {
            Some(d) => format!("{:.2}s", d.as_secs_f64()),
            None => "-".into(),
        };
        let healthy: Vec<String> = self
            .healthy
            .iter()
            .map(|(t, unit)| format!("{unit} {:.2}", t.as_secs_f64()))
            .collect();
        write!(
            f,
            "first event {}, first container creating {}, healthy at [{}] s, exit {:.2}s",
            at(self.first_event),
            at(self.first_created),
            healthy.join(", "),
            self.exit.as_secs_f64()
        )
    }
}
