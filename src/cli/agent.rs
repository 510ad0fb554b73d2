//! `devstack agent` (hidden): runs a detached stack's discovery and routing
//! path (embedded etcd, registrar, proxy, router) until `down` stops it.
//! `up --detach` and `up --wait` start it in the background; `up` in the
//! foreground runs the same path in its own process instead.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::args::GlobalArgs;
use super::stack::{load_stack, LoadedStack};
use super::up::{connect, engine_failure};
use super::{exit, Failed};
use crate::engine::Engine;
use crate::plan::names::ProjectName;
use crate::process::ProcessIdentity;
use crate::router::routing::{Routing, RoutingError, RoutingOptions};
use crate::router::state::{self, RoutingState};
use crate::spec::LoadOptions;

/// Starts the routing path in this process and records it for other commands.
/// It follows the stack files: an edit's routes (and template) are applied.
pub(crate) async fn start_routing(
    engine: &Engine,
    loaded: &LoadedStack,
) -> anyhow::Result<Routing> {
    let (stack, project) = (&loaded.stack, &loaded.project);
    let routing = Routing::start(engine, stack, project, RoutingOptions::default())
        .await
        .map_err(|e| match e {
            RoutingError::Engine(e) => engine_failure(e),
            other => Failed::new(exit::FAILURE, other.to_string()).into(),
        })?;
    // Problems the router meets are worth a line: the stack keeps running
    // on the last good config, and the user should know why it did not change.
    let mut events = routing.router.subscribe();
    tokio::spawn(async move {
        use crate::router::RouterEvent;
        loop {
            match events.recv().await {
                Ok(RouterEvent::RenderFailed { template, line, message }) => sayln!(
                    "router: the proxy template{}{} did not render: {message}; the last good config stays",
                    template.map(|t| format!(" {}", t.display())).unwrap_or_default(),
                    line.map(|l| format!(" (line {l})")).unwrap_or_default()
                ),
                Ok(RouterEvent::CheckFailed { line, message, text }) => sayln!(
                    "router: haproxy refused the rendered config{}{}: {message}; the last good config stays",
                    line.map(|l| format!(" at line {l}")).unwrap_or_default(),
                    text.map(|t| format!(" (`{t}`)")).unwrap_or_default()
                ),
                Ok(RouterEvent::EtcdUnavailable { message, .. }) => {
                    sayln!("router: {message}; retrying, the proxy keeps its config")
                }
                Ok(RouterEvent::ProxyTrouble { message }) => sayln!("router: {message}"),
                Ok(RouterEvent::RegistrySkipped { key, reason }) => {
                    sayln!("warning: router: registry key {key:?} left out: {reason}")
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    follow_stack_files(&routing, loaded);
    let recorded = RoutingState::of_this_process(
        project,
        routing.endpoints.clone(),
        stack.proxy.listen.to_string(),
    );
    if let Err(e) = state::write(project, &recorded) {
        sayln!(
            "warning: cannot record the routing state in {}: {e}",
            state::state_dir(project).display()
        );
    }
    Ok(routing)
}

/// Hands every valid edit of the stack files (or of the proxy template) to
/// the router, for as long as it runs. An invalid edit changes nothing: the
/// watch loop (or the next `up`) reports it.
fn follow_stack_files(routing: &Routing, loaded: &LoadedStack) {
    let mut files = loaded.files.clone();
    files.extend(loaded.stack.proxy.template.clone());
    let (tx, hits) = tokio::sync::mpsc::unbounded_channel();
    let watcher = match crate::watcher::fs::watch_files(&files, tx) {
        Ok(w) => w,
        Err(e) => {
            sayln!("router: stack file edits are not followed: {e}");
            return;
        }
    };
    // An editor's save is a few events: the file is read once they end.
    let (ctx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(crate::watcher::debounce::run(
        hits,
        ctx,
        crate::watcher::debounce::QUIET,
        crate::watcher::debounce::MAX_DELAY,
    ));
    let senders = [
        routing.registrar.stack_sender(),
        routing.router.stack_sender(),
    ];
    let stop = routing.stop_token();
    let files = loaded.files.clone();
    tokio::spawn(async move {
        // Dropped when this ends: the hits end, and the debounce task with them.
        let _watcher = watcher;
        loop {
            tokio::select! {
                change = changes.recv() => if change.is_none() { return },
                _ = stop.cancelled() => return,
            }
            if let Ok(stack) = crate::spec::load(&LoadOptions::new(files.clone())) {
                for s in &senders {
                    let _ = s.send(stack.clone());
                }
            }
        }
    });
}

/// `devstack agent`: the routing path until SIGTERM or Ctrl-C.
pub async fn run(global: &GlobalArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let engine = connect().await?;
    let routing = start_routing(&engine, &loaded).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    routing.shutdown().await;
    state::remove(&loaded.project, &ProcessIdentity::current(&loaded.project));
    Ok(exit::OK)
}

/// How long a devstack waits for another one that is deciding about (or
/// starting) the project's routing path: an agent's start is bounded by 60 s.
pub(crate) const AGENT_LOCK_WAIT: Duration = Duration::from_secs(75);

/// Takes the project's agent lock: whoever holds it decides alone whether a
/// routing path runs and starts one, so two `up`s at once start one agent.
pub(crate) async fn agent_lock(project: &ProjectName) -> anyhow::Result<state::StateLock> {
    state::lock(project, state::LockKind::Agent, AGENT_LOCK_WAIT)
        .await
        .map_err(|e| match e {
            state::LockError::Held { holder, .. } => {
                Failed::new(
                    exit::FAILURE,
                    format!(
                    "another devstack{} has been starting the routing path of `{project}` for {}s",
                    holder.map(|p| format!(" (process {p})")).unwrap_or_default(),
                    AGENT_LOCK_WAIT.as_secs()
                ),
                )
                .into()
            }
            other => other.into(),
        })
}

/// Starts `devstack agent` for the project in the background (its own
/// session, output to `agent.log` in the state directory) unless a routing
/// path runs, and waits until it serves. The decision and the start happen
/// under the agent lock.
pub(crate) async fn spawn_agent(global: &GlobalArgs, project: &ProjectName) -> anyhow::Result<()> {
    let _lock = agent_lock(project).await?;
    if state::read(project).is_some() {
        return Ok(());
    }
    let dir = state::state_dir(project);
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join(state::AGENT_LOG);
    let log = std::fs::File::create(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    for f in super::stack::stack_files(global) {
        cmd.arg("-f").arg(absolute(f));
    }
    cmd.arg("-p").arg(project.as_str()).arg("agent");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: the agent outlives this terminal and its Ctrl-C.
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    // The lock's descriptor is close-on-exec: the agent does not inherit it.
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if state::read(project).is_some_and(|s| s.owner.pid == child.id()) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Failed::new(
                exit::FAILURE,
                format!(
                    "the routing agent of `{project}` exited ({status}):\n{}",
                    text.trim()
                ),
            )
            .into());
        }
        if Instant::now() > deadline {
            return Err(Failed::new(
                exit::FAILURE,
                format!(
                    "the routing agent of `{project}` did not start within 60s; see {}",
                    log_path.display()
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the project's routing process, if one runs (a detached stack's
/// agent, or a foreground `up` elsewhere), and waits for it to deregister.
/// Only a process whose recorded identity (pid and start time) is still the
/// one running is signalled: a pid reused since, or a file an older devstack
/// wrote, is never sent anything.
pub(crate) async fn stop_agent(project: &ProjectName) {
    let s = match state::look(project) {
        state::Recorded::Running(s) => s,
        state::Recorded::Unverified { pid } => {
            sayln!(
                "note: {} names process {pid}, written by an older devstack; it is not signalled (stop that devstack yourself if it still runs)",
                state::state_dir(project).join("routing.json").display()
            );
            return;
        }
        state::Recorded::Nothing | state::Recorded::Stale => return,
    };
    if s.owner == ProcessIdentity::current(project) {
        return;
    }
    if !s.owner.signal(libc::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.owner.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map(|d| d.join(&path))
            .unwrap_or(path)
    }
}
