//! `just bench-agent`: what the routing agent of a stack that is up costs
//! while nothing happens, beside the work it cannot avoid.
//!
//! The demo stack (5 units: web ×2, api, redis, postgres, and the proxy) is
//! brought up with `devstack up --detach` on the local fixture replicas of
//! its images (`stacks/demo/choose-images.sh`, as `just up` would), then the
//! agent process is sampled for `DEVSTACK_BENCH_SECONDS` (default 30):
//! resident memory (`VmRSS`, `VmHWM` from `/proc/<pid>/status`) and CPU
//! (`utime + stime` of `/proc/<pid>/stat`, and the nanoseconds of
//! `/proc/<pid>/task/*/schedstat`).
//!
//! Beside it, the alternative: the probes alone, as the smallest program a
//! user could write to follow the same containers' health would run them
//! (the same inspect and HTTP GET, at each service's interval, in this
//! process on one thread), for the same time. Its CPU is the floor of any
//! health follower; the agent's CPU above it is everything else (etcd,
//! lease keep-alives, the router's watch, timers). Also printed: the CPU
//! the containers themselves spent meanwhile (answering the probes), from
//! their cgroups, and no-op `ps` and `up --detach --wait` timings of the
//! same stack (best and median of 10) beside `docker ps --filter` of it, and
//! `ps --probe` (every container probed, as `ps` did before it read the
//! agent's record).
//! `DEVSTACK_BENCH_BIN` runs another devstack binary (an older build).

#[path = "../tests/support/process.rs"]
mod process;
use process::{command_ok, output};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devstack::engine::health;
use devstack::engine::Engine;
use devstack::plan::names;
use devstack::spec::{load, LoadOptions, Probe};

fn die(message: &str) -> ! {
    eprintln!("bench-agent: {message}");
    std::process::exit(1);
}

/// Clock ticks per second (`USER_HZ`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds.
fn stat_cpu(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// Nanoseconds on CPU of a process's live threads (schedstat's first field).
fn schedstat_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds a container's cgroup has used (cgroup v1 cpuacct, or v2).
fn container_cpu(id: &str) -> Option<f64> {
    let candidates = [
        format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage"),
        format!("/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage"),
    ];
    for c in &candidates {
        if let Ok(t) = std::fs::read_to_string(c) {
            return t.trim().parse::<f64>().ok().map(|ns| ns / 1e9);
        }
    }
    for c in [
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"),
        format!("/sys/fs/cgroup/docker/{id}/cpu.stat"),
    ] {
        if let Ok(t) = std::fs::read_to_string(&c) {
            let usec = t
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse::<f64>()
                .ok()?;
            return Some(usec / 1e6);
        }
    }
    None
}

fn uptime_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("load average {} {} {}", f[0], f[1], f[2])
        })
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| die(&format!("no free port: {e}")))
}

struct Devstack<'a> {
    bin: &'a str,
    files: Vec<PathBuf>,
    project: String,
    state: PathBuf,
    port: u16,
}

impl Devstack<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin);
        for f in &self.files {
            c.arg("-f").arg(f);
        }
        c.args(["-p", &self.project])
            .args(args)
            .env("XDG_STATE_HOME", &self.state)
            .env("DEMO_PORT", self.port.to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    fn down(&self) {
        let _ = self
            .command(&["down", "--volumes", "--timeout", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The agent's pid, from the project's `routing.json`.
    fn agent_pid(&self) -> Option<u32> {
        let path = self
            .state
            .join("devstack")
            .join(&self.project)
            .join("routing.json");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("pid")?.as_u64().map(|p| p as u32)
    }
}

/// Times `n` runs of a command; (best, median) in ms.
fn time_runs(n: usize, mut make: impl FnMut() -> Command) -> (f64, f64) {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let out = make()
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("runs");
            if !out.status.success() {
                die(&format!(
                    "a timed command failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// The probe loop alone: each routed container's check at its interval, as
/// the registrar runs it once the container is healthy (an inspect, then
/// the probe), on one thread of this process for `seconds`. Returns
/// (probes run, CPU seconds this thread used).
fn probes_alone(
    targets: &[(String, Probe, Duration, Duration)],
    network: &str,
    seconds: u64,
) -> (u64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let engine = Engine::connect()
            .await
            .unwrap_or_else(|e| die(&format!("no engine: {e}")));
        let thread_ns = || {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let start = thread_ns();
        let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut runs = Vec::new();
        for (id, probe, interval, timeout) in targets.iter().cloned() {
            let engine = engine.clone();
            let network = network.to_string();
            runs.push(async move {
                let mut n = 0u64;
                while tokio::time::Instant::now() < until {
                    if let Ok(s) = engine.inspect(&id, &network).await {
                        let _ = health::probe(&engine, &s, &probe, timeout).await;
                        n += 1;
                    }
                    tokio::time::sleep(interval).await;
                }
                n
            });
        }
        let counts = futures::future::join_all(runs).await;
        let used = thread_ns().saturating_sub(start) as f64 / 1e9;
        (counts.iter().sum(), used)
    })
}

fn main() {
    // Another build to compare (a copy of an older binary, say).
    let bin = std::env::var("DEVSTACK_BENCH_BIN").ok();
    let devstack = bin.as_deref().unwrap_or(env!("CARGO_BIN_EXE_devstack"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seconds: u64 = std::env::var("DEVSTACK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .max(5);
    if !command_ok("docker", &["version"]) {
        die("no Docker engine answered");
    }
    let chosen = Command::new("bash")
        .arg(repo.join("stacks/demo/choose-images.sh"))
        .env("DEVSTACK_DEMO_IMAGES", "replicas")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| die(&format!("choose-images.sh: {e}")));
    if !chosen.status.success() {
        die("stacks/demo/choose-images.sh failed");
    }
    let files: Vec<PathBuf> = String::from_utf8_lossy(&chosen.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let state = tempfile::tempdir().unwrap_or_else(|e| die(&format!("no temp dir: {e}")));
    let ds = Devstack {
        bin: devstack,
        files,
        project: format!("benchagent-{}", std::process::id() % 100000),
        state: state.path().to_path_buf(),
        port: free_port(),
    };
    ds.down();
    println!(
        "bench-agent: demo stack (web x2, api, redis, postgres + proxy), fixture replicas, {seconds}s idle; {}",
        uptime_load()
    );
    let t0 = Instant::now();
    let out = ds
        .command(&["up", "--detach"])
        .output()
        .expect("devstack runs");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        ds.down();
        die("devstack up --detach failed");
    }
    println!(
        "  up --detach (cold, builds api if needed): {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let Some(pid) = ds.agent_pid() else {
        ds.down();
        die("no agent recorded in routing.json");
    };

    // The stack's routed containers and their checks, for the probe-only loop.
    let stack = {
        let mut options = LoadOptions::new(ds.files.clone());
        options
            .env
            .insert("DEMO_PORT".to_string(), ds.port.to_string());
        load(&options).unwrap_or_else(|r| die(&r.render(false)))
    };
    let ids = output(
        "docker",
        &[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=dev.devstack.project={}", ds.project),
        ],
    );
    let ids: Vec<String> = ids.lines().map(str::to_string).collect();
    let mut targets = Vec::new();
    for id in &ids {
        let service = output(
            "docker",
            &[
                "inspect",
                "-f",
                "{{index .Config.Labels \"dev.devstack.service\"}}",
                id,
            ],
        );
        let Some(unit) = stack.services.get(&service) else {
            continue;
        };
        if unit.routes.is_empty() && unit.container.port.is_none() {
            continue;
        }
        if let Some(h) = &unit.container.health {
            targets.push((id.clone(), h.probe.clone(), h.interval, h.timeout));
        }
    }

    // Let start-up work settle (first probes, registrations), then sample.
    std::thread::sleep(Duration::from_secs(3));
    let cpu0 = stat_cpu(pid).unwrap_or_else(|| die("the agent is gone"));
    let ns0 = schedstat_ns(pid);
    let containers0: f64 = ids.iter().filter_map(|i| container_cpu(i)).sum();
    let mut rss_max: f64 = 0.0;
    let mut rss_sum = 0.0;
    let mut samples = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        if let Some(r) = status_mib(pid, "VmRSS:") {
            rss_max = rss_max.max(r);
            rss_sum += r;
            samples += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = stat_cpu(pid).unwrap_or_else(|| die("the agent is gone")) - cpu0;
    let ns = schedstat_ns(pid).saturating_sub(ns0) as f64 / 1e9;
    let containers = ids.iter().filter_map(|i| container_cpu(i)).sum::<f64>() - containers0;
    let hwm = status_mib(pid, "VmHWM:").unwrap_or(0.0);
    let threads = thread_count(pid);

    // The alternative: the same probes, alone, for the same time.
    let (probes, probe_cpu) = probes_alone(&targets, &names::network_name(&ds.project), seconds);
    let containers1: f64 = ids.iter().filter_map(|i| container_cpu(i)).sum();

    let pct = |s: f64| s / wall * 100.0;
    println!(
        "devstack agent (pid {pid}, {threads} threads), {:.0}s idle:",
        wall
    );
    println!(
        "  RSS                                    mean {:.1} MiB, max {:.1} MiB (high-water {:.1} MiB)",
        rss_sum / samples.max(1) as f64,
        rss_max,
        hwm
    );
    println!(
        "  CPU (utime+stime)                      {:.3}s = {:.2}% of a core   (schedstat of live threads: {:.3}s = {:.3}%)",
        cpu,
        pct(cpu),
        ns,
        pct(ns)
    );
    println!(
        "  containers' own CPU meanwhile (cgroups) {:.3}s = {:.2}% of a core",
        containers,
        pct(containers)
    );
    println!(
        "probes alone ({} routed containers, each at its interval: inspect + probe), same {:.0}s:",
        targets.len(),
        wall
    );
    println!(
        "  CPU (this thread)                      {:.3}s = {:.3}% of a core for {probes} probes",
        probe_cpu,
        pct(probe_cpu)
    );
    // The agent kept probing meanwhile: the second window's extra is the loop's.
    let window2 = containers1 - containers0 - containers;
    println!(
        "  containers' own CPU for them (cgroups)  {:.3}s = {:.2}% of a core",
        window2 - containers,
        pct(window2 - containers)
    );
    if cfg!(debug_assertions) {
        println!("  (this bench was built without optimizations: the loop's CPU is inflated; `just bench-agent` builds it optimized)");
    }
    let agent_cpu = if ns > 0.0 { ns } else { cpu };
    println!(
        "agent CPU beyond its probes: {:.3}s = {:.3}% of a core ({:.0}% of the agent's)",
        (agent_cpu - probe_cpu).max(0.0),
        pct((agent_cpu - probe_cpu).max(0.0)),
        ((agent_cpu - probe_cpu).max(0.0) / agent_cpu.max(1e-9)) * 100.0
    );

    // No-op commands on the stack that is up.
    let (ps_best, ps_median) = time_runs(10, || ds.command(&["ps"]));
    let (probe_best, probe_median) = time_runs(10, || ds.command(&["ps", "--probe"]));
    let (up_best, up_median) = time_runs(10, || ds.command(&["up", "--detach", "--wait"]));
    let label = format!("label=dev.devstack.project={}", ds.project);
    let (dps_best, dps_median) = time_runs(10, || {
        let mut c = Command::new("docker");
        c.args(["ps", "-a", "--filter", &label]);
        c
    });
    println!("no-op commands on the stack that is up (10 runs each):");
    println!("  devstack ps (the agent's health)       best {ps_best:>6.1} ms  median {ps_median:>6.1} ms");
    println!("  devstack ps --probe (every one probed) best {probe_best:>6.1} ms  median {probe_median:>6.1} ms");
    println!("  devstack up --detach --wait            best {up_best:>6.1} ms  median {up_median:>6.1} ms");
    println!("  docker ps -a --filter (the CLI's list) best {dps_best:>6.1} ms  median {dps_median:>6.1} ms");
    println!("  {}", uptime_load());
    ds.down();
}
