//! The routing path of a running stack (embedded etcd, registrar, proxy,
//! router: `controller::routing::Routing`), started by its controller: in the
//! process of a foreground `up`, or in a background `devstack agent` that
//! `up --detach`/`--wait` and `watch` spawn and `down` stops. Found by other
//! commands through `routing.json` ([`super::state`]).

use std::io::Write;
#[cfg(unix)]
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[cfg(unix)]
use tokio::io::AsyncReadExt;

use super::follow::Follower;
use super::state::{self, RoutingState};
use super::{LoadedStack, Signals, Tasks};
use crate::controller::routing::{Routing, RoutingError, RoutingOptions};
use crate::engine::Engine;
use crate::plan::names::ProjectName;
use crate::process::ProcessIdentity;
use crate::router::RouterEvent;
use crate::ui::{engine_failure, exit, Failed};

/// A routing path this process runs, recorded in `routing.json`.
pub struct RoutingPath {
    routing: Routing,
    project: ProjectName,
}

impl RoutingPath {
    /// The etcd client URLs of its registry.
    pub fn endpoints(&self) -> &[String] {
        &self.routing.endpoints
    }

    /// Takes the path down (the registrar deregisters first) and removes
    /// its record.
    pub async fn end(self) {
        self.routing.shutdown().await;
        state::remove(&self.project, &ProcessIdentity::current(&self.project));
    }
}

/// Starts the routing path in this process and records it for other
/// commands. The registrar and the router follow `follower`'s stacks; what
/// the router meets is said on stderr by a task of `tasks`.
pub async fn start_routing(
    engine: &Engine,
    loaded: &LoadedStack,
    follower: &Follower,
    tasks: &Tasks,
) -> anyhow::Result<RoutingPath> {
    let (stack, project) = (&loaded.stack, &loaded.project);
    let options = RoutingOptions {
        stacks: Some(follower.stacks()),
        ..RoutingOptions::default()
    };
    let routing = Routing::start(engine, stack, project, options)
        .await
        .map_err(|e| match e {
            RoutingError::Engine(e) => engine_failure(e),
            other => Failed::new(exit::FAILURE, other.to_string()).into(),
        })?;
    // Problems the router meets are worth a line: the stack keeps running
    // on the last good config, and the user should know why it did not change.
    let mut events = routing.router.subscribe();
    let stop = tasks.stop_token().clone();
    tasks.spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = stop.cancelled() => return,
            };
            match event {
                Ok(RouterEvent::RenderFailed { template, line, message }) => sayln!(
                    "router: the proxy template{}{} did not render: {message}; the last good config stays",
                    template.map(|t| format!(" {}", t.display())).unwrap_or_default(),
                    line.map(|l| format!(" (line {l})")).unwrap_or_default()
                ),
                Ok(RouterEvent::CheckFailed { proxy, line, message, text }) => sayln!(
                    "router: {} refused the rendered config{}{}: {message}; the last good config stays",
                    proxy.product(),
                    line.map(|l| format!(" at line {l}")).unwrap_or_default(),
                    text.map(|t| format!(" (`{t}`)")).unwrap_or_default()
                ),
                Ok(RouterEvent::ConfdCheckFailed { resource, command, output }) => sayln!(
                    "router: confd {resource}: check_cmd `{command}` refused the rendered file ({output}); the last good file stays"
                ),
                Ok(RouterEvent::ConfdInstalled { resource, dest, reload_cmd }) => sayln!(
                    "router: confd {resource}: installed {dest}{}",
                    reload_cmd
                        .map(|c| format!("; devstack's hitless reload stood in for `{c}`"))
                        .unwrap_or_default()
                ),
                Ok(RouterEvent::EtcdUnavailable { message, .. }) => {
                    sayln!("router: {message}; retrying, the proxy keeps its config")
                }
                Ok(RouterEvent::ProxyTrouble { message }) => sayln!("router: {message}"),
                Ok(RouterEvent::ReloadFailed { message, restored }) => sayln!(
                    "router: the proxy did not take the new config: {message}; {}",
                    if restored {
                        "the last good config is restored and still served"
                    } else {
                        "it still serves the last good config"
                    }
                ),
                Ok(RouterEvent::RegistrySkipped { key, reason }) => {
                    sayln!("warning: router: registry key {key:?} left out: {reason}")
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let mut recorded = RoutingState::of_this_process(
        project,
        routing.endpoints.clone(),
        stack.proxy.listen.to_string(),
    );
    // The stack's one reach decision, for `up`, `watch` and the rest.
    recorded.reach = engine.reach_decided().then_some(routing.reach);
    recorded.registry = routing.registry;
    if let Err(e) = state::write(project, &recorded) {
        sayln!(
            "warning: cannot record the routing state in {}: {e}",
            state::state_dir(project).display()
        );
    }
    record_health(&routing, project, tasks);
    Ok(RoutingPath {
        routing,
        project: project.clone(),
    })
}

/// Keeps `health.json` saying what the registrar knows of each container's
/// health, rewritten on each change (not on each probe), so `ps` and a
/// no-op `up` read it rather than probe every container again.
fn record_health(routing: &Routing, project: &ProjectName, tasks: &Tasks) {
    let mut known = routing.registrar.known();
    let stop = tasks.stop_token().clone();
    let project = project.clone();
    let owner = ProcessIdentity::current(&project);
    tasks.spawn(async move {
        let mut said = false;
        loop {
            let containers = known.borrow_and_update().clone();
            let record = state::HealthRecord {
                owner: owner.clone(),
                containers,
            };
            if let Err(e) = state::write_health(&project, &record) {
                if !said {
                    sayln!(
                        "warning: cannot record the containers' health in {}: {e}; `ps` probes them itself",
                        state::state_dir(&project).display()
                    );
                    said = true;
                }
            }
            tokio::select! {
                changed = known.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Follows the reach decision the stack's routing path recorded (see
/// `engine::reach`), and where its registry runs, so this process probes the stack's containers the way
/// the routing path found they answer. Nothing recorded (no routing path
/// runs): the engine's presumption stays.
pub fn adopt_reach(engine: &Engine, project: &ProjectName) {
    if engine.reach_decided() {
        return;
    }
    if let Ok(Some(recorded)) = state::read(project) {
        if let Some(reach) = recorded.reach {
            engine.settle_reach(reach);
        }
        if let Some(registry) = recorded.registry {
            engine.settle_registry(registry);
        }
    }
}

/// `devstack agent`: the routing path of a detached stack, following its
/// files, until SIGTERM (from `down`) or Ctrl-C.
/// `ready`: the pipe its spawner waits on, told once the path serves (a
/// failed start closes it unsaid).
pub async fn run(loaded: &LoadedStack, engine: &Engine, ready: ReadyPipe) -> anyhow::Result<u8> {
    let tasks = Tasks::new();
    let follower = Follower::start(loaded, &tasks);
    let _signals = super::on_signals(&tasks, Signals::InterruptOrTerminate);
    let path = match start_routing(engine, loaded, &follower, &tasks).await {
        Ok(path) => {
            ready.say_ready();
            path
        }
        Err(e) => {
            tasks.join().await;
            return Err(e);
        }
    };
    tasks.stop_token().cancelled().await;
    path.end().await;
    tasks.join().await;
    Ok(exit::OK)
}

/// How long a devstack waits for another one that is deciding about (or
/// starting) the project's routing path: an agent's start is bounded by 60 s.
pub const AGENT_LOCK_WAIT: Duration = Duration::from_secs(75);

/// Takes the project's agent lock: whoever holds it decides alone whether a
/// routing path runs and starts one, so two `up`s at once start one agent.
pub async fn agent_lock(project: &ProjectName) -> anyhow::Result<state::StateLock> {
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
pub async fn spawn_agent(loaded: &LoadedStack) -> anyhow::Result<()> {
    let project = &loaded.project;
    let _lock = agent_lock(project).await?;
    if state::read(project)?.is_some() {
        return Ok(());
    }
    let dir = state::state_dir(project);
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join(state::AGENT_LOG);
    let log = std::fs::File::create(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    for f in &loaded.files {
        cmd.arg("-f").arg(absolute(f.clone()));
    }
    cmd.arg("-p").arg(project.as_str()).arg("agent");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // The agent says it serves on a pipe: it writes a line once its routing
    // path runs and `routing.json` names it; the end of the pipe without
    // that line means it exited.
    // The port `up` chose for this copy's proxy (see `listen`); one not
    // chosen yet (`watch`) the agent chooses itself.
    if !super::listen::unsettled(loaded) {
        cmd.env(
            super::listen::AGENT_ENV,
            loaded.stack.proxy.listen.to_string(),
        );
    }
    #[cfg(unix)]
    let (mut child, said) = {
        let (ready, ready_writer) = crate::process::pipe()?;
        let writer_fd = ready_writer.as_raw_fd();
        cmd.env(READY_FD, writer_fd.to_string());
        // Its own session: the agent outlives this terminal and its Ctrl-C.
        // SAFETY: setsid and fcntl are async-signal-safe and touch no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                libc::setsid();
                // The write end, close-on-exec here, is the agent's to keep.
                if libc::fcntl(writer_fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The lock's descriptor is close-on-exec: the agent does not inherit it.
        let child = cmd.spawn()?;
        // Only the agent holds the write end now: its exit ends the pipe.
        drop(ready_writer);
        let said = tokio::time::timeout(AGENT_START, async {
            let mut text = String::new();
            let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(ready)?;
            reader.read_to_string(&mut text).await.map(|_| text)
        })
        .await;
        (child, said)
    };
    // Windows: no descriptor to inherit; the agent, detached from this
    // console, is heard from through `routing.json` naming it, and its exit
    // through its process.
    #[cfg(windows)]
    let (mut child, said) = {
        use std::os::windows::process::CommandExt;
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
        let mut child = cmd.spawn()?;
        let said = tokio::time::timeout(AGENT_START, async {
            loop {
                if state::read(project)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.owner.pid == child.id())
                {
                    return Ok::<String, std::io::Error>(READY.to_string());
                }
                if child.try_wait()?.is_some() {
                    return Ok(String::new());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        (child, said)
    };
    match said {
        Ok(Ok(text)) if text.trim() == READY => {
            if state::read(project)?.is_some_and(|s| s.owner.pid == child.id()) {
                return Ok(());
            }
            Err(Failed::new(
                exit::FAILURE,
                format!(
                    "the routing agent of `{project}` said it serves, but {} does not name it",
                    state::routing_file(project).display()
                ),
            )
            .into())
        }
        Ok(Ok(_)) | Ok(Err(_)) => {
            // The pipe ended without the line: the agent is exiting.
            let status = tokio::task::spawn_blocking(move || child.wait()).await??;
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(Failed::new(
                exit::FAILURE,
                format!(
                    "the routing agent of `{project}` exited ({status}):\n{}",
                    text.trim()
                ),
            )
            .into())
        }
        Err(_) => Err(Failed::new(
            exit::FAILURE,
            format!(
                "the routing agent of `{project}` did not start within {}s; see {}",
                AGENT_START.as_secs(),
                log_path.display()
            ),
        )
        .into()),
    }
}

/// How long an agent may take to start its routing path.
const AGENT_START: Duration = Duration::from_secs(60);

/// The environment variable naming the descriptor an agent says it serves on.
const READY_FD: &str = "DEVSTACK_AGENT_READY_FD";

/// The line an agent writes there once it serves.
const READY: &str = "ready";

/// In an agent: the pipe the devstack that spawned it waits on (its
/// environment names the descriptor), taken over at once and made
/// close-on-exec, so no process the agent starts (`ssh` to a remote engine)
/// keeps it open.
#[derive(Debug)]
pub struct ReadyPipe(Option<std::fs::File>);

impl ReadyPipe {
    /// The pipe this process inherited; none when it was not spawned that
    /// way (run by hand) or the descriptor is not a pipe.
    pub fn inherited() -> ReadyPipe {
        ReadyPipe(crate::process::inherited_pipe(READY_FD))
    }

    /// Says the routing path serves, and closes the pipe.
    fn say_ready(self) {
        if let Some(mut pipe) = self.0 {
            let _ = writeln!(pipe, "{READY}");
        }
    }
}

/// Stops the project's routing process, if one runs (a detached stack's
/// agent, or a foreground `up` elsewhere), and waits for it to deregister.
/// Only a process whose recorded identity (pid and start time) is still the
/// one running is signalled: a pid reused since, or a file an older devstack
/// wrote, is never sent anything; a file a newer devstack wrote is an error.
pub async fn stop_agent(project: &ProjectName) -> anyhow::Result<()> {
    let s = match state::look(project)? {
        state::Recorded::Running(s) => s,
        state::Recorded::Unverified { pid } => {
            sayln!(
                "note: {} names process {pid}, written by an older devstack; it is not signalled (stop that devstack yourself if it still runs)",
                state::routing_file(project).display()
            );
            return Ok(());
        }
        state::Recorded::Nothing | state::Recorded::Stale => return Ok(()),
    };
    if s.owner == ProcessIdentity::current(project) {
        return Ok(());
    }
    if !s.owner.terminate() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.owner.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
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
