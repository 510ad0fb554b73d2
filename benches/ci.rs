//! `just bench-ci`: a CI job's integration test, four times: four copies of
//! one 6-unit stack (four services, postgres, redis) each brought up,
//! checked, and taken down with its volumes, once all four at the same
//! time and once one after another; by `devstack test` (a throwaway copy
//! each, free proxy port, artifacts) and by `docker-compose -p` doing the
//! same (`up -d`, polled until every container is healthy, the same check,
//! `down -v`). The check asks each of the four services for `/` over HTTP:
//! through the copy's proxy for devstack, on each service's ephemeral host
//! port for Compose (which has no proxy). Prints the four wall times side
//! by side, and removes everything it made, also when a step fails.
//!
//! Environment: `DEVSTACK_BENCH_ROUNDS` (default 1) rounds of each.

#[path = "../tests/support/process.rs"]
mod process;
#[path = "support/stack.rs"]
mod stack;
use process::{command_ok, output};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (name, dependencies) of the four services.
const SERVICES: stack::Services = &[
    ("users", &["postgres"]),
    ("catalog", &["redis"]),
    ("orders", &["postgres", "redis"]),
    ("gateway", &["users", "catalog", "orders"]),
];

const COPIES: usize = 4;

/// The project name of copy `i` of a tool.
fn project(tool: &str, i: usize) -> String {
    format!("benchci-{tool}-{i}")
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let rounds: usize = std::env::var("DEVSTACK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .max(1);
    if !command_ok("docker", &["version"]) {
        eprintln!("bench-ci: no Docker engine answered");
        std::process::exit(1);
    }
    if !command_ok("docker-compose", &["version"]) {
        eprintln!("bench-ci: docker-compose is not installed");
        std::process::exit(1);
    }
    if !command_ok("curl", &["--version"]) {
        eprintln!("bench-ci: curl is not installed (the check uses it)");
        std::process::exit(1);
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench-ci: no temp dir: {e}");
            std::process::exit(1);
        }
    };
    let bench = Bench {
        devstack: env!("CARGO_BIN_EXE_devstack"),
        stack: dir.path().join("devstack.yaml"),
        compose: dir.path().join("docker-compose.yml"),
        dir: dir.path().to_path_buf(),
    };
    let written = std::fs::write(
        &bench.stack,
        stack::devstack_yaml("ci", "benchci", SERVICES, true),
    )
    .and_then(|_| std::fs::write(&bench.compose, stack::compose_yaml("ci", SERVICES, true)));
    if let Err(e) = written {
        eprintln!("bench-ci: writing the stack files: {e}");
        std::process::exit(1);
    }
    bench.clean();
    let result = run(&bench, rounds);
    bench.clean();
    if let Err(e) = result {
        eprintln!("bench-ci: {e}");
        std::process::exit(1);
    }
}

fn run(bench: &Bench, rounds: usize) -> Result<(), String> {
    println!(
        "bench-ci: {COPIES} copies of a 6-unit stack ({} services, postgres, redis), warm images: up, check each service over HTTP, down with volumes; {rounds} round(s)",
        SERVICES.len()
    );
    let mut best = [Duration::MAX; 4];
    for round in 1..=rounds {
        let times = [
            timed(|| bench.all(Tool::Devstack, true))?,
            timed(|| bench.all(Tool::Devstack, false))?,
            timed(|| bench.all(Tool::Compose, true))?,
            timed(|| bench.all(Tool::Compose, false))?,
        ];
        println!(
            "round {round}: devstack test parallel {:>6.2}s  sequential {:>6.2}s   docker-compose parallel {:>6.2}s  sequential {:>6.2}s",
            times[0].as_secs_f64(),
            times[1].as_secs_f64(),
            times[2].as_secs_f64(),
            times[3].as_secs_f64()
        );
        for (b, t) in best.iter_mut().zip(times) {
            *b = (*b).min(t);
        }
    }
    println!();
    println!(
        "{:<28} {:>10} {:>12} {:>8}",
        "best wall time", "parallel", "sequential", "ratio"
    );
    for (name, (par, seq)) in [
        ("devstack test", (best[0], best[1])),
        ("docker-compose -p", (best[2], best[3])),
    ] {
        println!(
            "{name:<28} {:>9.2}s {:>11.2}s {:>7.2}x",
            par.as_secs_f64(),
            seq.as_secs_f64(),
            seq.as_secs_f64() / par.as_secs_f64().max(0.001)
        );
    }
    println!(
        "compose / devstack: parallel {:.2}x, sequential {:.2}x",
        best[2].as_secs_f64() / best[0].as_secs_f64().max(0.001),
        best[3].as_secs_f64() / best[1].as_secs_f64().max(0.001)
    );
    Ok(())
}

fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed())
}

#[derive(Debug, Clone, Copy)]
enum Tool {
    Devstack,
    Compose,
}

struct Bench {
    devstack: &'static str,
    stack: PathBuf,
    compose: PathBuf,
    dir: PathBuf,
}

impl Bench {
    /// The four copies, at once (a thread each) or one after another.
    fn all(&self, tool: Tool, parallel: bool) -> Result<(), String> {
        let one = |i: usize| match tool {
            Tool::Devstack => self.devstack_copy(i),
            Tool::Compose => self.compose_copy(i),
        };
        if !parallel {
            return (0..COPIES).try_for_each(one);
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..COPIES).map(|i| s.spawn(move || one(i))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a copy panicked".into())))
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ())
        })
    }

    /// `devstack test`: up (healthy and routed), the check through the
    /// copy's proxy, artifacts, down with volumes.
    fn devstack_copy(&self, i: usize) -> Result<(), String> {
        let hosts: Vec<String> = SERVICES
            .iter()
            .map(|(s, _)| format!("{s}.benchci.localhost"))
            .collect();
        let check = format!(
            "for h in {}; do curl -sf -o /dev/null -H \"Host: $h\" \"$DEVSTACK_PROXY_URL/\" || exit 1; done",
            hosts.join(" ")
        );
        let artifacts = self.dir.join(format!("artifacts-{i}"));
        let out = Command::new(self.devstack)
            .arg("-f")
            .arg(&self.stack)
            .args(["-p", &project("ds", i), "test", "--artifacts"])
            .arg(&artifacts)
            .args(["--", "sh", "-c", &check])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("devstack: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "devstack test of copy {i} exited with {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// `docker-compose -p`: up -d, polled until every container is
    /// healthy, the check on each service's published port, down -v.
    fn compose_copy(&self, i: usize) -> Result<(), String> {
        let name = project("dc", i);
        let compose = |args: &[&str]| {
            Command::new("docker-compose")
                .arg("-f")
                .arg(&self.compose)
                .args(["-p", &name])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("docker-compose: {e}"))
        };
        let result = (|| {
            let out = compose(&["up", "-d"])?;
            if !out.status.success() {
                return Err(format!(
                    "docker-compose up of copy {i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let status = output(
                    "docker",
                    &[
                        "ps",
                        "--filter",
                        &format!("label=com.docker.compose.project={name}"),
                        "--format",
                        "{{.Status}}",
                    ],
                );
                let lines: Vec<&str> = status.lines().collect();
                if lines.len() == SERVICES.len() + 2
                    && lines.iter().all(|l| l.contains("(healthy)"))
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("copy {i} was not healthy within 180s: {lines:?}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            for (service, _) in SERVICES {
                let out = compose(&["port", service, "8080"])?;
                let addr = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !command_ok(
                    "curl",
                    &["-sf", "-o", "/dev/null", &format!("http://{addr}/")],
                ) {
                    return Err(format!("copy {i}: {service} did not answer on {addr}"));
                }
            }
            Ok(())
        })();
        let down = compose(&["down", "--volumes", "--timeout", "2"])?;
        if result.is_ok() && !down.status.success() {
            return Err(format!(
                "docker-compose down of copy {i}: {}",
                String::from_utf8_lossy(&down.stderr)
            ));
        }
        result
    }

    /// Removes every copy either tool may have left.
    fn clean(&self) {
        for i in 0..COPIES {
            let _ = Command::new(self.devstack)
                .arg("-f")
                .arg(&self.stack)
                .args([
                    "-p",
                    &project("ds", i),
                    "down",
                    "--volumes",
                    "--timeout",
                    "1s",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("docker-compose")
                .arg("-f")
                .arg(&self.compose)
                .args([
                    "-p",
                    &project("dc", i),
                    "down",
                    "--volumes",
                    "--timeout",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
