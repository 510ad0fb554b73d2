//! Readiness and health, probed by devstack itself.
//!
//! The engine's own HEALTHCHECK runs at most every second or so and needs a
//! client inside the image; a quick `up` wants to know within ~100 ms that a
//! port answers. So while a container starts, devstack probes it directly:
//!
//! - `http` and `tcp` probes go the way the stack's reach decision
//!   ([`super::reach::Reach`]) says: the container's address on the stack
//!   network, the port published on the engine's loopback, or `docker exec`
//!   of wget/curl/nc in the container.
//! - `command` probes run through `docker exec` (slower: a process in the
//!   container per probe, so they are paced at 250 ms).
//! - with no health check, an image's own HEALTHCHECK is followed; without
//!   one either, a running container is ready.
//!
//! [`wait_ready`] is the start-up wait; [`HealthMonitor`] keeps following a
//! container at the stack's own interval afterwards (for the registrar).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::containers::ContainerStatus;
use super::reach::Reach;
use super::{Engine, EngineError};
use crate::plan::ObservedState;
use crate::spec::diagnostic::io_reason;
use crate::spec::{Health, Probe, RestartPolicy};

/// How a container's readiness is decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The stack's health check.
    Probe(Health),
    /// The image's own HEALTHCHECK, as the engine reports it.
    Image,
    /// Ready as soon as it runs.
    Running,
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    /// What the probe saw: `HTTP 200`, `connection refused`, command output.
    pub detail: String,
}

/// Why a container did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum NotReady {
    /// It exited and its restart policy will not bring it back.
    Exited {
        exit_code: i64,
        error: Option<String>,
        oom_killed: bool,
    },
    /// It keeps restarting.
    CrashLoop {
        restarts: i64,
        exit_code: Option<i64>,
    },
    /// Its health check failed past the start period and retries.
    Unhealthy { last: String },
    /// The overall deadline passed first.
    Timeout { last: String },
    /// It was removed while we waited.
    Gone,
    /// The wait was cancelled (Ctrl-C).
    Cancelled,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited {
                exit_code,
                error,
                oom_killed,
            } => {
                write!(f, "exited with code {exit_code}")?;
                if *oom_killed {
                    write!(f, " (killed: out of memory)")?;
                }
                if let Some(e) = error {
                    write!(f, ": {e}")?;
                }
                Ok(())
            }
            NotReady::CrashLoop {
                restarts,
                exit_code,
            } => {
                write!(f, "is crash-looping: restarted {restarts} times")?;
                if let Some(code) = exit_code {
                    write!(f, ", last exit code {code}")?;
                }
                Ok(())
            }
            NotReady::Unhealthy { last } => write!(f, "is unhealthy: {last}"),
            NotReady::Timeout { last } => write!(f, "was not healthy in time: {last}"),
            NotReady::Gone => write!(f, "was removed while starting"),
            NotReady::Cancelled => write!(f, "was interrupted"),
        }
    }
}

/// How long a container without a health check must stay up to count as ready.
const STAYS_UP: Duration = Duration::from_millis(200);

/// Restarts during one wait beyond which a container counts as crash-looping.
const CRASH_LOOP_RESTARTS: i64 = 3;

/// The check for a unit: its health check, else the image's, else running.
pub async fn check_for(engine: &Engine, health: Option<&Health>, image: &str) -> Check {
    match health {
        Some(h) => Check::Probe(h.clone()),
        None if engine.image_has_healthcheck(image).await => Check::Image,
        None => Check::Running,
    }
}

/// How often a starting container is probed: every 100 ms from the host, or
/// 250 ms when each probe is a `docker exec` (or the image's own check).
fn fast_interval(check: &Check) -> Duration {
    match check {
        Check::Probe(Health {
            probe: Probe::Command { .. },
            ..
        })
        | Check::Image => Duration::from_millis(250),
        _ => Duration::from_millis(100),
    }
}

/// How often [`HealthMonitor`] probes a container that has not been healthy
/// yet: a probe of the container's address from the host is a refused
/// connection or one request, so every 20 ms (the registry learns of a
/// started replica within that); anything else as [`fast_interval`].
fn monitor_fast_interval(check: &Check, ips_reachable: bool) -> Duration {
    match check {
        Check::Probe(Health {
            probe: Probe::Http { .. } | Probe::Tcp { .. },
            ..
        }) if ips_reachable => Duration::from_millis(20),
        _ => fast_interval(check),
    }
}

/// Probes fast until the container is ready, fails, or `deadline` passes.
#[allow(clippy::too_many_arguments)]
/// `on_detail` hears each new probe outcome (for "waiting for HTTP /health: 503").
pub async fn wait_ready(
    engine: &Engine,
    id: &str,
    network: &str,
    restart: RestartPolicy,
    check: &Check,
    deadline: Instant,
    cancel: &CancellationToken,
    mut on_detail: impl FnMut(&str),
) -> Result<Duration, NotReady> {
    let started = Instant::now();
    let mut last = String::from("not probed yet");
    let mut status: Option<ContainerStatus> = None;
    let mut first_restarts: Option<i64> = None;
    let (fast, slow) = (fast_interval(check), Duration::from_millis(500));
    let mut tick: u32 = 0;
    // When the container was first seen running (with no health check,
    // "ready" means it stayed up a moment, so a process that dies at once is
    // not reported healthy).
    let mut running_since: Option<(Instant, i64)> = None;
    loop {
        // The state needs no re-reading on every probe: every 5th tick, or
        // while it is not running yet, is enough to catch a crash quickly.
        // With no probe, the state is all there is to read.
        let running = status.as_ref().map(|s| s.state == ObservedState::Running);
        if tick.is_multiple_of(5) || running != Some(true) || *check == Check::Running {
            match engine.inspect(id, network).await {
                Ok(s) => status = Some(s),
                Err(EngineError::NotFound(_)) => return Err(NotReady::Gone),
                Err(e) => last = e.to_string(),
            }
        }
        tick += 1;
        if let Some(s) = &status {
            let base = *first_restarts.get_or_insert(s.restart_count);
            let restarts = s.restart_count - base;
            if restarts >= CRASH_LOOP_RESTARTS {
                return Err(NotReady::CrashLoop {
                    restarts,
                    exit_code: s.exit_code,
                });
            }
            match s.state {
                ObservedState::Exited | ObservedState::Dead => {
                    let code = s.exit_code.unwrap_or(-1);
                    let comes_back = match restart {
                        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                        RestartPolicy::OnFailure => code != 0,
                        RestartPolicy::No => false,
                    };
                    if !comes_back || s.state == ObservedState::Dead {
                        return Err(NotReady::Exited {
                            exit_code: code,
                            error: s.error.clone(),
                            oom_killed: s.oom_killed,
                        });
                    }
                    last = format!("restarting after exit code {code}");
                }
                ObservedState::Removing => return Err(NotReady::Gone),
                ObservedState::Running => {
                    let result = match check {
                        Check::Running => {
                            let since = match running_since {
                                Some((at, restarts)) if restarts == s.restart_count => at,
                                _ => {
                                    let now = Instant::now();
                                    running_since = Some((now, s.restart_count));
                                    now
                                }
                            };
                            // One that was already up a while ago (kept by a
                            // second `up`) need not be watched again.
                            let up_before = s
                                .started_at
                                .as_deref()
                                .and_then(super::containers::parse_rfc3339)
                                .is_some_and(|t| t + 2 <= super::unix_now());
                            ProbeResult {
                                ok: up_before || since.elapsed() >= STAYS_UP,
                                detail: "running".into(),
                            }
                        }
                        Check::Image => ProbeResult {
                            ok: s.docker_health.as_deref() == Some("healthy"),
                            detail: format!(
                                "image HEALTHCHECK: {}{}",
                                s.docker_health.as_deref().unwrap_or("starting"),
                                s.docker_health_output
                                    .as_deref()
                                    .map(|o| format!(" ({})", o.trim()))
                                    .unwrap_or_default()
                            ),
                        },
                        Check::Probe(h) => probe(engine, s, &h.probe, probe_timeout(h)).await,
                    };
                    if result.ok {
                        return Ok(started.elapsed());
                    }
                    if result.detail != last {
                        on_detail(&result.detail);
                        last = result.detail;
                    }
                    if let Check::Probe(h) = check {
                        let allowed = h.start_period + h.interval * h.retries.max(1);
                        if started.elapsed() > allowed {
                            return Err(NotReady::Unhealthy { last });
                        }
                    }
                    if check == &Check::Image && s.docker_health.as_deref() == Some("unhealthy") {
                        return Err(NotReady::Unhealthy { last });
                    }
                }
                _ => {}
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NotReady::Timeout { last });
        }
        // Fast at first, calmer after ten seconds, never past the deadline.
        let pace = if started.elapsed() < Duration::from_secs(10) {
            fast
        } else {
            slow
        };
        let sleep = pace.min(deadline - now);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = cancel.cancelled() => return Err(NotReady::Cancelled),
        }
    }
}

/// A probe `what` that got no answer: an I/O error, or (`None`) nothing
/// within `timeout`.
fn no_answer(what: &str, error: Option<std::io::Error>, timeout: Duration) -> ProbeResult {
    let why = match error {
        Some(e) => io_reason(&e),
        None => format!("no answer in {}ms", timeout.as_millis()),
    };
    ProbeResult {
        ok: false,
        detail: format!("{what}: {why}"),
    }
}

/// How long one probe of `health` may take while devstack waits or looks:
/// the stack's `timeout`, at most 2 s (an exec probe on a loaded engine
/// takes most of a second before the probe itself starts).
pub fn probe_timeout(health: &Health) -> Duration {
    health.timeout.min(Duration::from_secs(2))
}

/// One probe of a running container.
pub async fn probe(
    engine: &Engine,
    status: &ContainerStatus,
    probe: &Probe,
    timeout: Duration,
) -> ProbeResult {
    match probe {
        Probe::Command { argv } => exec_probe(engine, &status.id, argv, timeout).await,
        Probe::Tcp { port } => match target(engine, status, *port) {
            Some(addr) => match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => ProbeResult {
                    ok: true,
                    detail: format!("tcp :{port} open"),
                },
                Ok(Err(e)) => no_answer(&format!("tcp :{port}"), Some(e), timeout),
                Err(_) => no_answer(&format!("tcp :{port}"), None, timeout),
            },
            None => shell_probe(engine, &status.id, tcp_script(*port), timeout).await,
        },
        Probe::Http { port, path } => match target(engine, status, *port) {
            Some(addr) => http_get(addr, path, timeout).await,
            None => shell_probe(engine, &status.id, http_script(*port, path), timeout).await,
        },
    }
}

/// The shell script of an HTTP probe run inside the container: the first
/// client the image has of wget, curl, python3 and bash (its `/dev/tcp`),
/// as images carry different ones (the official python images have no
/// wget or curl; slim ones have bash). Succeeds on a 2xx or 3xx answer, as
/// the direct probe does.
fn http_script(port: u16, path: &str) -> String {
    let url = shlex::try_quote(&format!("http://127.0.0.1:{port}{path}"))
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'http://127.0.0.1:{port}/'"));
    // Python's urlopen raises on 4xx/5xx; redirects it follows.
    let python = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)";
    let request = format!(
        "GET {} HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n",
        path.replace(['\'', '\\', '\r', '\n', '%'], "")
    );
    let bash = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 && head -n 1 <&3 | grep -q \" [23][0-9][0-9]\""
    );
    format!(
        "if command -v wget >/dev/null 2>&1; then wget -q -O /dev/null {url} 2>&1; \
         elif command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null {url} 2>&1; \
         elif command -v python3 >/dev/null 2>&1; then python3 -c '{python}' {url} 2>&1; \
         elif command -v bash >/dev/null 2>&1; then bash -c {bash}; \
         else echo 'no wget, curl, python3 or bash in the image to probe HTTP with' >&2; exit 127; fi",
        bash = shlex::try_quote(&bash).map(|q| q.into_owned()).unwrap_or_default(),
    )
}

/// The shell script of a TCP probe run inside the container: `nc -z`, else
/// bash's `/dev/tcp`, else python3's socket.
fn tcp_script(port: u16) -> String {
    format!(
        "if command -v nc >/dev/null 2>&1; then nc -z 127.0.0.1 {port}; \
         elif command -v bash >/dev/null 2>&1; then bash -c 'echo > /dev/tcp/127.0.0.1/{port}' 2>&1; \
         elif command -v python3 >/dev/null 2>&1; then python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 5)' 2>&1; \
         else echo 'no nc, bash or python3 in the image to probe TCP with' >&2; exit 127; fi"
    )
}

/// A probe the container's own shell runs, where its address is out of reach.
async fn shell_probe(engine: &Engine, id: &str, script: String, timeout: Duration) -> ProbeResult {
    exec_probe(engine, id, &["sh".into(), "-c".into(), script], timeout).await
}

/// Where to connect for a container port, or `None` to go through exec: as
/// the stack's one reach decision ([`Engine::reach`]) says. A container made
/// before a `Published` decision, without a loopback publication of this
/// port, is probed through exec.
fn target(engine: &Engine, status: &ContainerStatus, port: u16) -> Option<SocketAddr> {
    match engine.reach() {
        Reach::Direct => status.ip.map(|ip| SocketAddr::new(ip, port)),
        Reach::Published => loopback_published(status, port),
        Reach::Exec => None,
    }
}

/// The container port `port` as published on the engine's loopback (a port
/// bound to every address counts: loopback is one of them).
fn loopback_published(status: &ContainerStatus, port: u16) -> Option<SocketAddr> {
    let published = status
        .published
        .iter()
        .find(|p| p.container_port == port && p.protocol == "tcp")?;
    let ip: IpAddr = match published.host_ip.as_str() {
        "" | "0.0.0.0" | "127.0.0.1" => IpAddr::from([127, 0, 0, 1]),
        "::" | "::1" => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        _ => return None,
    };
    Some(SocketAddr::new(ip, published.host_port))
}

async fn exec_probe(engine: &Engine, id: &str, argv: &[String], timeout: Duration) -> ProbeResult {
    match engine.exec_capture(id, argv, timeout).await {
        Ok(out) => {
            let text = out.output.trim();
            let tail: String = text
                .lines()
                .last()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            match out.exit_code {
                Some(0) => ProbeResult {
                    ok: true,
                    detail: "command succeeded".into(),
                },
                Some(code) => ProbeResult {
                    ok: false,
                    detail: if tail.is_empty() {
                        format!("`{}` exited {code}", argv.join(" "))
                    } else {
                        format!("`{}` exited {code}: {tail}", argv.join(" "))
                    },
                },
                None => ProbeResult {
                    ok: false,
                    detail: format!("`{}` {}", argv.join(" "), text),
                },
            }
        }
        Err(e) => ProbeResult {
            ok: false,
            detail: e.to_string(),
        },
    }
}

/// A minimal HTTP/1.1 GET: enough to read a status line, with no client
/// library and no connection pool (each probe is a fresh connection, as a
/// load balancer's check would be).
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> ProbeResult {
    let what = format!("HTTP {path}");
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: devstack-probe\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        // The status line is all we need.
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(buf)) => {
            let line = String::from_utf8_lossy(&buf);
            let line = line.lines().next().unwrap_or("");
            let code: Option<u16> = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            match code {
                Some(c) if (200..400).contains(&c) => ProbeResult {
                    ok: true,
                    detail: format!("{what}: {c}"),
                },
                Some(c) => ProbeResult {
                    ok: false,
                    detail: format!("{what}: {c}"),
                },
                None => ProbeResult {
                    ok: false,
                    detail: format!("{what}: no HTTP status in the answer"),
                },
            }
        }
        Ok(Err(e)) => no_answer(&what, Some(e), timeout),
        Err(_) => no_answer(&what, None, timeout),
    }
}

/// The health of a followed container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum HealthState {
    /// Not yet passed a probe.
    Starting,
    Healthy,
    /// `retries` probes in a row failed; `last` is what the last one saw.
    Unhealthy {
        last: String,
    },
    /// Not running any more (stopped, exited, removed).
    Stopped,
}

/// Follows one container's health at the stack's interval after start-up, so
/// the registrar can add it once healthy and take it out as soon as it is not.
///
/// `HealthMonitor::spawn(engine, id, network, check, cancel)` returns a
/// `watch::Receiver<HealthState>`; the task ends when the container is gone or
/// `cancel` fires. Combine it with [`Engine::project_events`] to notice a stop
/// at once rather than at the next probe.
pub struct HealthMonitor;

impl HealthMonitor {
    pub fn spawn(
        engine: Engine,
        id: String,
        network: String,
        check: Check,
        cancel: CancellationToken,
    ) -> watch::Receiver<HealthState> {
        Self::spawn_inspected(engine, id, network, check, None, cancel)
    }

    /// As [`HealthMonitor::spawn`], for a container the caller has just
    /// inspected: the first probe goes out at once, without asking again.
    pub fn spawn_inspected(
        engine: Engine,
        id: String,
        network: String,
        check: Check,
        status: Option<ContainerStatus>,
        cancel: CancellationToken,
    ) -> watch::Receiver<HealthState> {
        Self::spawn_paced(engine, id, network, check, status, Duration::ZERO, cancel)
    }

    /// As [`HealthMonitor::spawn_inspected`], probing a container no more
    /// often than every `at_least` (a datastore only `ps` and `up` ask
    /// about), also before its first healthy result.
    pub fn spawn_paced(
        engine: Engine,
        id: String,
        network: String,
        check: Check,
        status: Option<ContainerStatus>,
        at_least: Duration,
        cancel: CancellationToken,
    ) -> watch::Receiver<HealthState> {
        let (tx, rx) = watch::channel(HealthState::Starting);
        tokio::spawn(async move {
            let (interval, retries, timeout) = match &check {
                Check::Probe(h) => (h.interval, h.retries.max(1), h.timeout),
                _ => (Duration::from_secs(1), 1, Duration::from_secs(2)),
            };
            let mut failures = 0u32;
            let mut healthy_once = false;
            // A probe of the container's own address or port needs its
            // status only to find it: inspected once, then again only after
            // a failed probe (to tell a stopped container from a failing
            // one), so a healthy container costs one probe per interval and
            // no engine request. The image's check and "running" are read
            // from the engine each time.
            let probed = matches!(check, Check::Probe(_));
            let fast = monitor_fast_interval(&check, engine.reach() == Reach::Direct);
            let mut known: Option<ContainerStatus> = status;
            let mut inspected = Instant::now();
            let mut failed = false;
            loop {
                let fresh = failed && inspected.elapsed() >= Duration::from_millis(250);
                let status = match known.take() {
                    Some(s) if probed && !fresh => Ok(s),
                    _ => {
                        inspected = Instant::now();
                        engine.inspect(&id, &network).await
                    }
                };
                let state = match status {
                    Err(EngineError::NotFound(_)) => HealthState::Stopped,
                    // The engine did not answer (a loaded daemon, a dropped
                    // connection): that says nothing of the container. Its
                    // state stays as last seen, and it is asked again; a
                    // real stop comes as an engine event to the registrar.
                    Err(_) => {
                        failed = true;
                        tx.borrow().clone()
                    }
                    Ok(s) if s.state != ObservedState::Running => HealthState::Stopped,
                    Ok(s) => {
                        let result = match &check {
                            Check::Running => ProbeResult {
                                ok: true,
                                detail: String::new(),
                            },
                            Check::Image => ProbeResult {
                                ok: s.docker_health.as_deref() == Some("healthy"),
                                detail: s.docker_health_output.clone().unwrap_or_default(),
                            },
                            Check::Probe(h) => probe(&engine, &s, &h.probe, timeout).await,
                        };
                        failed = !result.ok;
                        // Not yet on the network: look again next time.
                        if s.ip.is_some() || engine.reach() != Reach::Direct {
                            known = Some(s);
                        }
                        if result.ok {
                            failures = 0;
                            healthy_once = true;
                            HealthState::Healthy
                        } else {
                            failures += 1;
                            if failures >= retries {
                                HealthState::Unhealthy {
                                    last: result.detail,
                                }
                            } else if healthy_once {
                                HealthState::Healthy
                            } else {
                                HealthState::Starting
                            }
                        }
                    }
                };
                let stopped = state == HealthState::Stopped;
                tx.send_if_modified(|current| {
                    if *current != state {
                        *current = state;
                        true
                    } else {
                        false
                    }
                });
                if stopped || tx.is_closed() {
                    return;
                }
                // Probe fast until first healthy (as `up` and a swap wait for
                // it, and as the proxy waits for a started replica), then at
                // the stack's interval.
                // A paced container (nothing waits on its first healthy
                // result) is never probed fast: while a stack starts, its
                // `up` probes it already, and engine work is scarce.
                let pause = if healthy_once || !at_least.is_zero() {
                    interval.max(at_least)
                } else {
                    fast
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A directory holding `sh`, `head`, `grep` and the named programs (by
    /// their real paths), to be the only `PATH` of a script: an image that
    /// has just those.
    fn image_path(tools: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for tool in ["sh", "head", "grep"].iter().chain(tools) {
            let real = if *tool == "python3" {
                // pyenv's python3 is a shim script: link the interpreter.
                let out = std::process::Command::new("python3")
                    .args(["-c", "import sys; print(sys.executable)"])
                    .output()
                    .expect("python3 runs");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            } else {
                let out = std::process::Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            assert!(
                !real.is_empty(),
                "`{tool}` is needed on this machine for this test"
            );
            std::os::unix::fs::symlink(&real, dir.path().join(tool)).unwrap();
        }
        dir
    }

    fn run_script(script: &str, path: &std::path::Path) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env_clear()
            .env("PATH", path)
            .output()
            .unwrap()
    }

    /// An HTTP server on loopback answering 200 on `/health`, 404 elsewhere.
    fn http_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream);
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line.trim().is_empty() => break,
                        Ok(_) => {}
                    }
                }
                let status = if first.starts_with("GET /health ") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.0 {status}\r\nContent-Length: 2\r\n\r\nok"
                );
            }
        });
        port
    }

    #[test]
    fn exec_probes_use_whichever_client_the_image_has() {
        let port = http_server();
        for tool in ["wget", "curl", "python3", "bash"] {
            let path = image_path(&[tool]);
            let ok = run_script(&http_script(port, "/health"), path.path());
            assert!(
                ok.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&ok.stderr)
            );
            let missing = run_script(&http_script(port, "/nope"), path.path());
            assert!(!missing.status.success(), "{tool}: a 404 passed");
        }
        let bare = image_path(&[]);
        let none = run_script(&http_script(port, "/health"), bare.path());
        assert_eq!(none.status.code(), Some(127));
        assert!(String::from_utf8_lossy(&none.stderr).contains("no wget, curl, python3 or bash"));

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        for tool in ["bash", "python3"] {
            let path = image_path(&[tool]);
            let open = run_script(&tcp_script(port), path.path());
            assert!(
                open.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&open.stderr)
            );
            let shut = run_script(&tcp_script(closed_port), path.path());
            assert!(!shut.status.success(), "{tool}: a closed port passed");
        }
    }

    /// A one-shot server answering every connection with `status`.
    async fn server(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_read_the_status_line() {
        let timeout = Duration::from_secs(2);
        let ok = http_get(server("200 OK").await, "/health", timeout).await;
        assert!(ok.ok, "{ok:?}");
        let redirect = http_get(server("302 Found").await, "/", timeout).await;
        assert!(redirect.ok, "3xx counts as healthy: {redirect:?}");
        let failing = http_get(server("503 Service Unavailable").await, "/health", timeout).await;
        assert_eq!(
            failing,
            ProbeResult {
                ok: false,
                detail: "HTTP /health: 503".into()
            }
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_named_as_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("an address");
        drop(listener);
        let r = http_get(addr, "/health", Duration::from_secs(2)).await;
        assert_eq!(r.detail, "HTTP /health: connection refused");
    }

    #[test]
    fn not_ready_reads_as_a_sentence() {
        let e = NotReady::CrashLoop {
            restarts: 3,
            exit_code: Some(2),
        };
        assert_eq!(
            e.to_string(),
            "is crash-looping: restarted 3 times, last exit code 2"
        );
        let e = NotReady::Exited {
            exit_code: 137,
            error: None,
            oom_killed: true,
        };
        assert_eq!(
            e.to_string(),
            "exited with code 137 (killed: out of memory)"
        );
    }

    /// An engine on a Unix socket answering `/version` and a container's
    /// inspection with what `inspections` says, one per request in turn
    /// (the last one repeats): `Some(json)`, or `None` for a 500.
    async fn fake_engine(
        dir: &std::path::Path,
        inspections: Vec<(u16, &'static str)>,
    ) -> (Engine, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = count.clone();
        let socket = dir.join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let mut asked = 0usize;
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let (status, body) = if line.contains("/version") {
                    (200, r#"{"ApiVersion":"1.41","Version":"20.10.0"}"#)
                } else {
                    let answer = inspections[asked.min(inspections.len() - 1)];
                    asked += 1;
                    counted.store(asked, Ordering::SeqCst);
                    answer
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        let engine = Engine::connect_to(format!("unix://{}", socket.display()))
            .await
            .expect("the fake engine answers");
        (engine, count)
    }

    #[tokio::test]
    async fn an_engine_that_fails_a_request_stops_no_monitor_and_a_gone_container_does() {
        const RUNNING: &str = r#"{"Id":"c0ffee","Name":"/shop-api-1","State":{"Status":"running","Running":true},"Config":{"Labels":{}},"NetworkSettings":{"Networks":{}}}"#;
        const FAILED: &str = r#"{"message":"the engine is busy"}"#;
        const GONE: &str = r#"{"message":"No such container: c0ffee"}"#;
        let dir = tempfile::tempdir().unwrap();
        let (engine, asked) = fake_engine(
            dir.path(),
            vec![
                (200, RUNNING),
                (500, FAILED),
                (500, FAILED),
                (200, RUNNING),
                (404, GONE),
            ],
        )
        .await;
        let cancel = CancellationToken::new();
        let mut rx = HealthMonitor::spawn(
            engine,
            "c0ffee".into(),
            "shop".into(),
            Check::Running,
            cancel.clone(),
        );
        let mut seen = Vec::new();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                seen.push(rx.borrow_and_update().clone());
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        cancel.cancel();
        assert!(outcome.is_ok(), "the monitor did not end: {seen:?}");
        // Healthy from the first answer; the failed requests change nothing;
        // only the engine's "no such container" stops it.
        assert_eq!(
            seen.iter()
                .filter(|s| **s != HealthState::Starting)
                .cloned()
                .collect::<Vec<_>>(),
            vec![HealthState::Healthy, HealthState::Stopped],
            "{seen:?}"
        );
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 5);
    }
}
