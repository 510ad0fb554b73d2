//! `devstack down [--volumes]`: stop and remove the stack's containers and
//! network (and with `--volumes` its named volumes), touching nothing that
//! lacks the project's labels.

use std::io::IsTerminal;

use super::args::{DownArgs, GlobalArgs};
use super::exit;
use super::up::{connect, duration_arg, engine_failure, project_of};
use crate::engine::apply;
use crate::engine::progress::Reporter;
use crate::router::state;

pub async fn run(global: &GlobalArgs, args: DownArgs) -> anyhow::Result<u8> {
    // `-p NAME` is enough: a CI job can clean up even if the stack file changed.
    let (project, _) = project_of(global)?;
    let grace = match &args.timeout {
        Some(t) => Some(duration_arg("--timeout", t)?),
        None => None,
    };
    let engine = connect().await?;
    // Held to the end: no `up` starts a routing path for the project while
    // it is taken down. One that cannot be had in time (an agent that hangs
    // starting) does not stop `down`.
    let agent_lock = match super::agent::agent_lock(&project).await {
        Ok(lock) => Some(lock),
        Err(e) => {
            sayln!("warning: {e:#}");
            None
        }
    };
    // A detached stack's routing agent deregisters and stops first.
    super::agent::stop_agent(&project).await;
    let (reporter, mut rx) = Reporter::channel();
    let quiet = !std::io::stderr().is_terminal() && std::env::var_os("CI").is_some();
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let crate::engine::progress::Progress::Stopped { container, .. } = event {
                if !quiet {
                    sayln!("removed {container}");
                }
            }
        }
    });
    let result = apply::down(&engine, &project, grace, args.volumes, &reporter).await;
    drop(reporter);
    let _ = printer.await;
    let outcome = result.map_err(engine_failure)?;
    // What devstack wrote in the project's state directory (routing state,
    // the agent's log, the locks) goes too, unless a foreground `up` or a
    // `watch` elsewhere still uses it; anything else there stays.
    if let Some(agent_lock) = &agent_lock {
        if let Ok(watch_lock) = super::watch::claim(&project) {
            state::clear(&project, &watch_lock, agent_lock);
        }
    }
    if outcome.network {
        sayln!("removed network {project}");
    }
    for v in &outcome.volumes {
        sayln!("removed volume {v}");
    }
    if outcome.containers.is_empty() && !outcome.network && outcome.volumes.is_empty() {
        sayln!("{project}: nothing to remove");
    }
    Ok(exit::OK)
}
