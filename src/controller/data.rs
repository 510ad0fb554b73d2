//! `data restore` as one operation: the datastores' volumes put back as the
//! snapshot holds them, the stack brought up again (`up --wait`), then the
//! units that depend on a restored datastore restarted.

use super::restart::{restart, Restarted};
use super::up::{self, UpOptions};
use super::LoadedStack;
use crate::engine::snapshot::{self, SnapshotError};
use crate::engine::Engine;
use crate::ui::{engine_failure, exit, Failed};
use std::time::Instant;

/// A snapshot error as the command reports it.
pub fn snapshot_failed(e: SnapshotError) -> anyhow::Error {
    match e {
        SnapshotError::Refused(m) => Failed::new(exit::FAILURE, m).into(),
        SnapshotError::Engine(e) => engine_failure(e),
    }
}

/// What a restore is asked.
pub struct Restore<'a> {
    /// The snapshot's name.
    pub name: &'a str,
    /// Datastores to restore (every one in the snapshot when empty).
    pub datastores: &'a [String],
    /// Restore a snapshot taken with another image reference.
    pub force: bool,
    /// How the `up` after it runs (`--wait`).
    pub up: UpOptions,
}

/// Restores, brings the stack up and restarts the dependents (`report` is
/// told each one's result); returns the exit code.
pub async fn restore(
    engine: &Engine,
    loaded: &LoadedStack,
    ask: &Restore<'_>,
    report: impl FnMut(&Restarted),
) -> anyhow::Result<u8> {
    let (stack, project) = (&loaded.stack, loaded.project.as_str());
    let began = Instant::now();
    let done = snapshot::restore(engine, stack, project, ask.name, ask.datastores, ask.force)
        .await
        .map_err(snapshot_failed)?;
    for (datastore, copy) in &done.parts {
        sayln!("{datastore}: {}", copy.describe());
    }
    let mut phases = done.phases;
    let restored: Vec<String> = done.parts.into_iter().map(|(ds, _)| ds).collect();
    sayln!(
        "restored {} from snapshot `{}`",
        restored.join(", "),
        ask.name
    );
    let t = Instant::now();
    let code = up::run(loaded, &ask.up).await?;
    phases.since("up", t);
    if code != exit::OK {
        return Ok(code);
    }
    let dependents: Vec<String> = stack
        .units()
        .filter(|(_, _, c)| c.depends_on.iter().any(|d| restored.contains(d)))
        .map(|(n, _, _)| n.to_string())
        .collect();
    let t = Instant::now();
    let healthy = dependents.is_empty() || restart(engine, loaded, &dependents, report).await?;
    if !dependents.is_empty() {
        phases.since("dependents", t);
    }
    sayln!(
        "restore took {:.2}s: {}",
        began.elapsed().as_secs_f64(),
        phases.describe()
    );
    Ok(if healthy { exit::OK } else { exit::UNHEALTHY })
}
