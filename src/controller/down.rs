//! `down` of a stack: its routing agent stopped first (deregistering), its
//! containers, network and (asked for) volumes removed, then what devstack
//! wrote in its state directory, unless another devstack still uses it.

use std::time::Duration;

use super::{agent, state, watch};
use crate::engine::apply::{self, DownOutcome};
use crate::engine::progress::{Progress, Reporter};
use crate::engine::Engine;
use crate::plan::names::ProjectName;
use crate::ui::engine_failure;

/// Takes the project down; `removed` is told each container removed.
pub async fn down(
    engine: &Engine,
    project: &ProjectName,
    grace: Option<Duration>,
    volumes: bool,
    removed: impl Fn(&str) + Send + 'static,
) -> anyhow::Result<DownOutcome> {
    // Held to the end: no `up` starts a routing path for the project while
    // it is taken down. One that cannot be had in time (an agent that hangs
    // starting) does not stop `down`.
    let agent_lock = match agent::agent_lock(project).await {
        Ok(lock) => Some(lock),
        Err(e) => {
            sayln!("warning: {e:#}");
            None
        }
    };
    // A detached stack's routing agent deregisters and stops first.
    agent::stop_agent(project).await?;
    let (reporter, mut rx) = Reporter::channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let Progress::Stopped { container, .. } = event {
                removed(&container);
            }
        }
    });
    let result = apply::down(engine, project, grace, volumes, &reporter).await;
    drop(reporter);
    let _ = printer.await;
    let outcome = result.map_err(engine_failure)?;
    // What devstack wrote in the project's state directory (routing state,
    // the agent's log, the locks) goes too, unless a foreground `up` or a
    // `watch` elsewhere still uses it; anything else there stays.
    if let Some(agent_lock) = &agent_lock {
        if let Ok(watch_lock) = watch::claim(project) {
            state::clear(project, &watch_lock, agent_lock);
        }
    }
    Ok(outcome)
}
