//! `devstack test [SERVICE...] -- CMD [ARGS...]`: a throwaway copy of the
//! stack under its own project name (`<stack>-test-<random>` unless `-p`
//! names it), brought up as `up --wait` does (healthy and routed, on a free
//! proxy port), the command run on the host with the copy's addresses in its
//! environment and its output streamed, the artifacts written, and the copy
//! taken down with its volumes, whatever happened: the command's end,
//! Ctrl-C, SIGTERM, or `--timeout`. Exits with the command's code.
//!
//! The copy's network carries its owner's identity (`engine::projects`). A
//! copy whose `devstack test` was killed outright (SIGKILL of its whole
//! process group) is removed by its reaper (`controller::reaper`, started
//! before the copy), and failing that found as abandoned by `devstack ls`
//! and removed by `devstack prune` (`controller::projects`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::reaper::Reaper;
use super::up::{self, UpOptions};
use super::{state, LoadedStack};
use crate::engine::apply;
use crate::engine::logs::LogQuery;
use crate::engine::progress::Reporter;
use crate::engine::projects::{LABEL_CREATED, LABEL_OWNER, LABEL_TEST};
use crate::engine::unix_now;
use crate::engine::{health, Engine};
use crate::plan::names::{network_name, ProjectName};
use crate::process::ProcessIdentity;
use crate::ui::junit::{self, Case, Outcome};
use crate::ui::progress::Render;
use crate::ui::{engine_failure, exit, Failed};

/// What the reaper notes, in the artifacts directory, when it acts.
pub const REAPER_LOG: &str = "reaper.log";

/// The exit code when `--timeout` ended the run (as `timeout(1)`).
pub const TIMED_OUT: u8 = 124;

/// What `devstack test` was asked.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The services to bring up (and what they depend on); all when empty.
    pub services: Vec<String>,
    /// The command and its arguments, run on the host; none: the stack's
    /// test task (`test: true`), run on its network.
    pub command: Vec<String>,
    /// Where the artifacts go (made if missing).
    pub artifacts: PathBuf,
    /// How long `up` may take.
    pub up_timeout: Duration,
    /// The whole run's limit; the copy is taken down when it passes.
    pub timeout: Option<Duration>,
    pub render: Render,
    pub color: bool,
}

/// A fresh project name for a test copy of `stack`: `<stack>-test-<6 hex>`.
/// The stack loaded again as a throwaway copy of its own
/// (`<stack>-test-<random>`), from the same files.
pub fn copy_of(loaded: &LoadedStack) -> anyhow::Result<LoadedStack> {
    let name = copy_name(loaded.project.as_str())?;
    LoadedStack::load(loaded.files.clone(), Some(&name)).map_err(|report| {
        Failed::new(exit::FAILURE, report.render(false).trim_end().to_string()).into()
    })
}

fn copy_name(stack: &str) -> anyhow::Result<ProjectName> {
    use sha2::{Digest, Sha256};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seed = format!("{}:{nanos}", std::process::id());
    let digest = Sha256::digest(seed.as_bytes());
    let suffix: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    ProjectName::new(&format!("{stack}-test-{suffix}")).map_err(|why| {
        Failed::new(
            exit::USAGE,
            format!("cannot name the test copy of `{stack}`: {why}; name it with `-p`"),
        )
        .into()
    })
}

/// What is tested: a command on the host, or the stack's test task.
enum Suite {
    Host(Vec<String>),
    Task(String),
}

impl Suite {
    /// The command given, else the stack's test task; `None`: neither.
    fn of(loaded: &LoadedStack, options: &TestOptions) -> Option<Suite> {
        if !options.command.is_empty() {
            return Some(Suite::Host(options.command.clone()));
        }
        loaded
            .stack
            .test_task()
            .map(|task| Suite::Task(task.to_string()))
    }
}

/// How the run ended before or during the command.
enum Ending {
    /// The command exited (its code; 128+N for a signal).
    Command(u8),
    /// The stack did not come up: `up`'s code and why.
    NotUp(u8, String),
    Interrupted,
    TimedOut,
}

/// `devstack test`: returns the exit code.
pub async fn run(loaded: &LoadedStack, options: &TestOptions) -> anyhow::Result<u8> {
    let Some(suite) = Suite::of(loaded, options) else {
        return Err(Failed::new(
            exit::USAGE,
            "no test command: write it after `--` (devstack test -- cargo test), or mark a task of the stack `test: true`",
        )
        .into());
    };
    let engine = crate::ui::connect().await?;
    let project = loaded.project.clone();
    super::agent::adopt_reach(&engine, &project);
    let started = Instant::now();
    let deadline = options.timeout.map(|t| started + t);
    let stop = CancellationToken::new();
    let signals = listen_for_signals(stop.clone())?;
    std::fs::create_dir_all(&options.artifacts).map_err(|e| {
        Failed::new(
            exit::FAILURE,
            format!(
                "cannot make the artifacts directory {}: {e}",
                options.artifacts.display()
            ),
        )
    })?;
    sayln!(
        "Testing {} as `{project}`; artifacts in {}",
        loaded.stack.name,
        options.artifacts.display()
    );
    // Made before anything else of the copy, with its owner: a copy whose
    // `devstack test` dies from here on is abandoned, not a stranger's, and
    // its reaper, started first, takes it down.
    let owner = ProcessIdentity::current(&project);
    let mut reaper = match Reaper::spawn(&project, &owner, &options.artifacts.join(REAPER_LOG)) {
        Ok(reaper) => Some(reaper),
        Err(e) => {
            sayln!("warning: cannot start the reaper of `{project}` ({e}): if this process is killed, the copy stays until `devstack prune`");
            None
        }
    };
    engine
        .create_owned_network(
            project.as_str(),
            &[
                (LABEL_OWNER, owner.label()),
                (LABEL_TEST, "true".into()),
                (LABEL_CREATED, unix_now().to_string()),
            ],
        )
        .await
        .map_err(|e| match e {
            // Never a running copy's: a test copy is made fresh, and taken down after.
            crate::engine::EngineError::Foreign { .. } => Failed::new(
                exit::FAILURE,
                format!("a network `{project}` is already on this engine: a test copy needs a name no project uses (drop `-p`, or name another)"),
            )
            .into(),
            other => engine_failure(other),
        })?;
    if let Some(reaper) = &mut reaper {
        reaper.arm();
    }

    let mut cases = Vec::new();
    let mut command_log = Vec::new();
    let ending = run_inside(
        &engine,
        loaded,
        options,
        &stop,
        deadline,
        &mut cases,
        &mut command_log,
    )
    .await;
    let ending = match ending {
        Ok(e) => e,
        Err(e) => {
            let code = e
                .downcast_ref::<Failed>()
                .map(|f| f.code)
                .unwrap_or(exit::FAILURE);
            Ending::NotUp(code, format!("{e:#}"))
        }
    };
    // The command's case, whatever happened to it.
    let command_name = match &suite {
        Suite::Host(command) => command.join(" "),
        Suite::Task(task) => format!("task {task}"),
    };
    let command_seconds = cases.iter().map(|c: &Case| c.seconds).fold(0.0, f64::max);
    let tail = tail_lines(&String::from_utf8_lossy(&command_log), 40);
    let command_case = |outcome| Case {
        class: "command".into(),
        name: command_name.clone(),
        seconds: (started.elapsed().as_secs_f64() - command_seconds).max(0.0),
        outcome,
    };
    let (code, case) = match &ending {
        Ending::Command(0) => (exit::OK, command_case(Outcome::Passed)),
        Ending::Command(code) => (
            *code,
            command_case(Outcome::Failed {
                message: format!("exited with {code}"),
                detail: tail,
            }),
        ),
        Ending::NotUp(code, why) => {
            sayln!("error: {why}");
            (
                *code,
                command_case(Outcome::Skipped {
                    message: format!("not run: the stack did not come up: {why}"),
                }),
            )
        }
        Ending::Interrupted => (
            exit::INTERRUPTED,
            command_case(Outcome::Failed {
                message: "interrupted".into(),
                detail: tail,
            }),
        ),
        Ending::TimedOut => (
            TIMED_OUT,
            command_case(Outcome::Failed {
                message: format!(
                    "timed out after {}",
                    crate::spec::units::format_duration(options.timeout.unwrap_or_default())
                ),
                detail: tail,
            }),
        ),
    };
    cases.push(case);
    let written = write_artifacts(&engine, loaded, &options.artifacts, &cases, &command_log).await;
    if let Err(e) = written {
        sayln!("warning: the artifacts are incomplete: {e:#}");
    }
    // Always down, with its volumes: the copy is throwaway. Signals that
    // come now are counted by the listener and change nothing.
    sayln!("Taking `{project}` down...");
    match super::down::down(&engine, &project, None, true, |_| {}).await {
        Ok(_) => {
            if let Some(reaper) = reaper {
                reaper.dismiss().await;
            }
        }
        // The reaper tries again once this process exits.
        Err(e) => sayln!("error: taking `{project}` down: {e:#}"),
    }
    signals.abort();
    Ok(code)
}

/// Up, then the command; records a health case per unit.
async fn run_inside(
    engine: &Engine,
    loaded: &LoadedStack,
    options: &TestOptions,
    stop: &CancellationToken,
    deadline: Option<Instant>,
    cases: &mut Vec<Case>,
    command_log: &mut Vec<u8>,
) -> anyhow::Result<Ending> {
    let left = |d: Option<Instant>| d.map(|d| d.saturating_duration_since(Instant::now()));
    let up_options = UpOptions {
        services: options.services.clone(),
        timeout: left(deadline)
            .map(|l| l.min(options.up_timeout))
            .unwrap_or(options.up_timeout),
        detach: false,
        wait: true,
        json: false,
        render: options.render,
        color: options.color,
        from_snapshot: None,
        free_port: true,
    };
    let up_started = Instant::now();
    let up_code = tokio::select! {
        code = up::run(loaded, &up_options) => code,
        _ = stop.cancelled() => return Ok(Ending::Interrupted),
        _ = sleep_until(deadline) => return Ok(Ending::TimedOut),
    };
    let up_seconds = up_started.elapsed().as_secs_f64();
    let up_failure = match &up_code {
        Ok(0) => None,
        Ok(code) => Some((*code, "not every service became healthy".to_string())),
        Err(e) => Some((
            e.downcast_ref::<Failed>()
                .map(|f| f.code)
                .unwrap_or(exit::FAILURE),
            format!("{e:#}"),
        )),
    };
    cases.extend(health_cases(engine, loaded, &options.services, up_seconds).await);
    if let Some((code, why)) = up_failure {
        return Ok(Ending::NotUp(code, why));
    }
    if stop.is_cancelled() {
        return Ok(Ending::Interrupted);
    }
    match Suite::of(loaded, options) {
        None => Ok(Ending::Command(exit::USAGE)),
        Some(Suite::Host(command)) => {
            let env = command_env(loaded)?;
            run_command(&command, &env, stop, deadline, command_log).await
        }
        Some(Suite::Task(task)) => {
            run_task(engine, loaded, &task, stop, deadline, command_log).await
        }
    }
}

/// The stack's test suite, a task, as a one-off container on the copy's
/// network (where services answer by their own names); its output streamed
/// and kept; stopped (its `stop_grace`) on a signal or the deadline.
async fn run_task(
    engine: &Engine,
    loaded: &LoadedStack,
    task: &str,
    stop: &CancellationToken,
    deadline: Option<Instant>,
    log: &mut Vec<u8>,
) -> anyhow::Result<Ending> {
    let (stack, project) = (&loaded.stack, loaded.project.as_str());
    let image = apply::task_image(engine, stack, project, task, &Reporter::silent())
        .await
        .map_err(engine_failure)?;
    apply::prepare_task(engine, stack, project, task)
        .await
        .map_err(engine_failure)?;
    let suffix = std::process::id().to_string();
    let Some(spec) = crate::plan::task_container(stack, project, task, &image, None, &suffix)
    else {
        return Err(
            Failed::new(exit::FAILURE, format!("task `{task}` is not in the stack")).into(),
        );
    };
    sayln!("Running task `{task}` on the stack's network");
    let why = std::cell::Cell::new(None);
    let stopped = async {
        tokio::select! {
            _ = stop.cancelled() => {
                sayln!("Stopping the test task...");
                why.set(Some(false));
            }
            _ = sleep_until(deadline) => {
                sayln!("The test run timed out; stopping the test task...");
                why.set(Some(true));
            }
        }
    };
    let code = engine
        .run_streamed(&spec, stopped, |stderr, chunk| {
            let text = String::from_utf8_lossy(chunk);
            if stderr {
                say!("{text}");
            } else {
                out!("{text}");
            }
            log.extend_from_slice(chunk);
        })
        .await
        .map_err(engine_failure)?;
    Ok(match why.get() {
        Some(true) => Ending::TimedOut,
        Some(false) => Ending::Interrupted,
        None => Ending::Command(u8::try_from(code & 0xff).unwrap_or(exit::FAILURE)),
    })
}

/// What the command finds in its environment: the proxy's URL, each
/// routed service's first URL, the project name.
fn command_env(loaded: &LoadedStack) -> anyhow::Result<Vec<(String, String)>> {
    let listen = state::read(&loaded.project)?
        .map(|s| s.listen)
        .unwrap_or_else(|| loaded.stack.proxy.listen.to_string());
    let mut stack = loaded.stack.clone();
    if let Ok(addr) = listen.parse() {
        stack.proxy.listen = addr;
    }
    let mut env = vec![
        ("DEVSTACK_PROJECT".to_string(), loaded.project.to_string()),
        ("DEVSTACK_PROXY_URL".to_string(), format!("http://{listen}")),
    ];
    for name in stack.services.keys() {
        if let Some(url) = crate::router::served::urls(&stack, name).into_iter().next() {
            env.push((format!("DEVSTACK_URL_{}", env_name(name)), url));
        }
    }
    Ok(env)
}

/// A unit name as part of an environment variable's name: `web-api` → `WEB_API`.
pub fn env_name(unit: &str) -> String {
    unit.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs the command with its output streamed through and kept; stopped
/// (SIGTERM, then SIGKILL after 10 s) on a signal or the deadline.
async fn run_command(
    command: &[String],
    env: &[(String, String)],
    stop: &CancellationToken,
    deadline: Option<Instant>,
    log: &mut Vec<u8>,
) -> anyhow::Result<Ending> {
    let Some((program, args)) = command.split_first() else {
        return Ok(Ending::Command(exit::USAGE));
    };
    sayln!("Running `{}`", command.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failed::new(exit::FAILURE, format!("cannot run `{program}`: {e}")))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Failed::new(exit::FAILURE, "the command's output is not readable").into());
    };
    let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    let mut ended = None;
    let mut stopping: Option<(Ending, Instant)> = None;
    loop {
        if !out_open && !err_open {
            if let Some(status) = ended.take() {
                return Ok(finish(stopping, status));
            }
        }
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    let chunk = &out_buf[..n];
                    out!("{}", String::from_utf8_lossy(chunk));
                    log.extend_from_slice(chunk);
                }
            },
            n = stderr.read(&mut err_buf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    let chunk = &err_buf[..n];
                    say!("{}", String::from_utf8_lossy(chunk));
                    log.extend_from_slice(chunk);
                }
            },
            status = child.wait(), if ended.is_none() => {
                let status = status?;
                if stopping.is_some() || (!out_open && !err_open) {
                    return Ok(finish(stopping, status));
                }
                ended = Some(status);
                // Output left in the pipes is read; a grandchild holding
                // them open does not hold the run up for long.
                let grace = tokio::time::sleep(Duration::from_secs(2));
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        n = stdout.read(&mut out_buf), if out_open => match n {
                            Ok(0) | Err(_) => out_open = false,
                            Ok(n) => { out!("{}", String::from_utf8_lossy(&out_buf[..n])); log.extend_from_slice(&out_buf[..n]); }
                        },
                        n = stderr.read(&mut err_buf), if err_open => match n {
                            Ok(0) | Err(_) => err_open = false,
                            Ok(n) => { say!("{}", String::from_utf8_lossy(&err_buf[..n])); log.extend_from_slice(&err_buf[..n]); }
                        },
                        _ = &mut grace => break,
                    }
                    if !out_open && !err_open {
                        break;
                    }
                }
                if let Some(status) = ended.take() {
                    return Ok(finish(None, status));
                }
            },
            _ = stop.cancelled(), if stopping.is_none() => {
                sayln!("Stopping the test command...");
                signal_child(&mut child);
                stopping = Some((Ending::Interrupted, Instant::now()));
            },
            _ = sleep_until(deadline), if stopping.is_none() => {
                sayln!("The test run timed out; stopping the test command...");
                signal_child(&mut child);
                stopping = Some((Ending::TimedOut, Instant::now()));
            },
            _ = tokio::time::sleep(Duration::from_millis(500)), if stopping.as_ref().is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(10)) => {
                let _ = child.start_kill();
            },
        }
    }
}

/// The ending once the command exited: what stopped it, else its code.
fn finish(stopping: Option<(Ending, Instant)>, status: std::process::ExitStatus) -> Ending {
    if let Some((why, _)) = stopping {
        return why;
    }
    #[cfg(unix)]
    let by_signal = {
        use std::os::unix::process::ExitStatusExt;
        status.signal().map(|s| 128u8.saturating_add(s as u8))
    };
    #[cfg(not(unix))]
    let by_signal = None;
    let code = status
        .code()
        .map(|c| u8::try_from(c & 0xff).unwrap_or(exit::FAILURE))
        .or(by_signal)
        .unwrap_or(exit::FAILURE);
    Ending::Command(code)
}

/// Asks the test command to stop: SIGTERM on Unix; on Windows, which has
/// no such signal, it is ended at once.
fn signal_child(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: a signal to the child this process spawned and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    #[cfg(not(unix))]
    let _ = child.start_kill();
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Ctrl-C and SIGTERM cancel `stop`; later ones are ignored (the copy is
/// being taken down). The listener ends when the guard is dropped.
#[cfg(not(unix))]
fn listen_for_signals(stop: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    }))
}

/// (See above.)
#[cfg(unix)]
fn listen_for_signals(stop: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        }
    }))
}

/// One case per unit brought up: healthy (its check passes now, or it
/// runs when it has none), or failed with its state and its last lines.
async fn health_cases(
    engine: &Engine,
    loaded: &LoadedStack,
    services: &[String],
    seconds: f64,
) -> Vec<Case> {
    let units = crate::plan::dependency_closure(&loaded.stack, services).unwrap_or_default();
    let observed = engine
        .list_project(loaded.project.as_str())
        .await
        .unwrap_or_default();
    let network = network_name(loaded.project.as_str());
    let mut cases = Vec::new();
    for unit in units {
        let Some(container) = loaded.stack.unit(&unit) else {
            continue;
        };
        let mine: Vec<_> = observed
            .iter()
            .filter(|o| o.service.as_deref() == Some(unit.as_str()) && o.task.is_none())
            .collect();
        let mut problems = Vec::new();
        if mine.is_empty() {
            problems.push("no container".to_string());
        }
        let mut tails = String::new();
        for o in &mine {
            let bad = match engine.inspect(&o.id, &network).await {
                Ok(status) if status.state == crate::plan::ObservedState::Running => {
                    match &container.health {
                        Some(h) => {
                            let r =
                                health::probe(engine, &status, &h.probe, Duration::from_secs(2))
                                    .await;
                            (!r.ok).then(|| format!("{}: unhealthy: {}", o.name, r.detail))
                        }
                        None => None,
                    }
                }
                Ok(status) => Some(format!("{}: {:?}", o.name, status.state)),
                Err(e) => Some(format!("{}: {e}", o.name)),
            };
            if let Some(bad) = bad {
                problems.push(bad);
                let lines = engine.last_lines(&o.id, 30).await;
                tails.push_str(&format!(
                    "--- {} (last lines)\n{}\n",
                    o.name,
                    lines.join("\n")
                ));
            }
        }
        cases.push(Case {
            class: "health".into(),
            name: unit.clone(),
            seconds,
            outcome: if problems.is_empty() {
                Outcome::Passed
            } else {
                Outcome::Failed {
                    message: problems.join("; "),
                    detail: tails,
                }
            },
        });
    }
    cases
}

/// Writes each container's log, `ps --json`, the routes, the proxy's
/// rendered config, the command's output and the JUnit report. Each is
/// tried; the first problem is returned after all were.
async fn write_artifacts(
    engine: &Engine,
    loaded: &LoadedStack,
    dir: &Path,
    cases: &[Case],
    command_log: &[u8],
) -> anyhow::Result<()> {
    let mut problems: Vec<String> = Vec::new();
    // Every file is masked as `devstack config` masks the stack.
    let secrets = Secrets::of(&loaded.stack);
    let mut put = |name: &str, bytes: &[u8]| {
        if let Err(e) = std::fs::write(dir.join(name), secrets.mask(bytes)) {
            problems.push(format!("{}: {e}", dir.join(name).display()));
        }
    };
    put(
        "junit.xml",
        junit::render(loaded.project.as_str(), cases).as_bytes(),
    );
    put("command.log", command_log);
    let mut stack = loaded.stack.clone();
    stack.mask_secrets();
    match serde_yaml::to_string(&stack) {
        Ok(text) => put("config.yaml", text.as_bytes()),
        Err(e) => put("config.yaml", format!("# {e}\n").as_bytes()),
    }
    for (name, args) in [
        ("ps.json", &["ps", "--json"][..]),
        ("routes.json", &["routes", "--json"][..]),
    ] {
        match devstack_output(loaded, args).await {
            Ok(text) => put(name, &text),
            Err(e) => put(
                name,
                format!("{{\"error\": {:?}}}\n", format!("{e:#}")).as_bytes(),
            ),
        }
    }
    let proxy = crate::engine::proxy::proxy_container_name(loaded.project.as_str());
    // The proxy's own file name: `haproxy.cfg`, or `nginx.conf`.
    let path = crate::engine::proxy::config_path(loaded.stack.proxy.kind);
    let artifact = path.rsplit('/').next().unwrap_or("proxy.conf");
    match engine.read_file(&proxy, path).await {
        Ok(Some(text)) => put(artifact, &text),
        Ok(None) => put(artifact, b"# the proxy did not run\n"),
        Err(e) => put(artifact, format!("# {e}\n").as_bytes()),
    }
    let logs = dir.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        problems.push(format!("{}: {e}", logs.display()));
    }
    let observed = engine
        .list_project(loaded.project.as_str())
        .await
        .map_err(engine_failure)?;
    for o in observed {
        use futures::StreamExt;
        let query = LogQuery {
            follow: false,
            since: 0,
            tail: None,
            timestamps: false,
        };
        let mut stream = Box::pin(engine.logs(&o.id, &query));
        let mut text = Vec::new();
        while let Some(Ok(line)) = stream.next().await {
            text.extend_from_slice(line.text.as_bytes());
            if !line.text.ends_with('\n') {
                text.push(b'\n');
            }
        }
        let path = logs.join(format!("{}.log", o.name));
        if let Err(e) = std::fs::write(&path, secrets.mask(&text)) {
            problems.push(format!("{}: {e}", path.display()));
        }
    }
    match problems.first() {
        None => Ok(()),
        Some(_) => Err(anyhow::anyhow!(problems.join("; "))),
    }
}

/// The values `devstack config` masks, to be masked in free text too
/// (logs, command output, JSON): wherever they appear, as a whole value or
/// inside another (a URL with a password in it).
struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    /// Values shorter than this are masked in `config.yaml` but not sought
    /// in free text, where `1` or `yes` would mask half of every log.
    const SHORTEST: usize = 4;

    fn of(stack: &crate::spec::Stack) -> Secrets {
        Secrets(
            stack
                .secret_values()
                .into_iter()
                .filter(|v| v.len() >= Self::SHORTEST)
                .map(|v| v.as_bytes().to_vec())
                .collect(),
        )
    }

    /// `text` with every secret replaced by [`crate::spec::SECRET_MASK`].
    fn mask(&self, text: &[u8]) -> Vec<u8> {
        let mut text = text.to_vec();
        for secret in &self.0 {
            let mut out = Vec::with_capacity(text.len());
            let mut rest = text.as_slice();
            while let Some(at) = rest
                .windows(secret.len())
                .position(|w| w == secret.as_slice())
            {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(crate::spec::SECRET_MASK.as_bytes());
                rest = &rest[at + secret.len()..];
            }
            out.extend_from_slice(rest);
            text = out;
        }
        text
    }
}

/// Another devstack command of this copy, as its JSON output.
async fn devstack_output(loaded: &LoadedStack, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    for f in &loaded.files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd
        .arg("-p")
        .arg(loaded.project.as_str())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(anyhow::anyhow!(
            "`devstack {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_appear_and_short_values_are_not_sought() {
        let secrets = Secrets(vec![b"s3cr3t-longer".to_vec(), b"s3cr3t".to_vec()]);
        assert_eq!(
            String::from_utf8(secrets.mask(b"a=s3cr3t url=pg://u:s3cr3t-longer@db s3cr3ts3cr3t"))
                .unwrap(),
            "a=******** url=pg://u:********@db ****************"
        );
        assert_eq!(secrets.mask(b""), b"");
        let mut stack = crate::plan::testing::stack_of(vec![(
            "web",
            crate::plan::testing::unit("app")
                .env("TOKEN", "tok-123456")
                .env("FLAG", "yes")
                .env("PLAIN", "visible"),
        )]);
        if let Some(web) = stack.services.get_mut("web") {
            web.container.secret_env = vec!["TOKEN".into(), "FLAG".into()];
        }
        let secrets = Secrets::of(&stack);
        assert_eq!(
            String::from_utf8(secrets.mask(b"tok-123456 yes visible")).unwrap(),
            "******** yes visible"
        );
    }

    #[test]
    fn copy_names_are_valid_and_differ() {
        let a = copy_name("shop").expect("a name");
        std::thread::sleep(Duration::from_millis(2));
        let b = copy_name("shop").expect("a name");
        assert!(a.as_str().starts_with("shop-test-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(env_name("web-api.v2"), "WEB_API_V2");
    }
}
