//! `devstack ps`: each container of a project, its state, health and
//! published addresses, from one list of the project's containers.
//!
//! Health comes from what the stack's running routing path knows (its
//! registrar follows every container: `health.json`, see
//! [`super::state::HealthRecord`]) when it runs and knows the container;
//! otherwise (no routing path, a container it does not know or still
//! calls starting, `--probe`) from one quick probe per container, all at
//! once. Each row says which (`health_from`).

use serde::Serialize;

use super::{state, LoadedStack};
use crate::engine::containers::{Listed, Published};
use crate::engine::health::{self, Check, HealthState};
use crate::engine::Engine;
use crate::plan::names::ProjectName;
use crate::plan::{names, ObservedState};
use crate::registrar::Known;
use crate::ui::engine_failure;

/// One container as `ps` shows it.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub service: Option<String>,
    pub replica: Option<u32>,
    pub task: Option<String>,
    pub state: ObservedState,
    pub exit_code: Option<i64>,
    /// `healthy`, `unhealthy: <what the probe saw>`, or `-` when not running.
    pub health: String,
    /// Where `health` comes from: `agent` (the running routing path's own
    /// probes), `probe` (probed by this `ps`), `engine` (the image's
    /// HEALTHCHECK, or running without a check); absent when not running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_from: Option<&'static str>,
    pub published: Vec<Published>,
    pub id: String,
}

/// What the project's running routing path knows of its containers'
/// health: empty when none runs (or it recorded nothing yet).
pub fn known_health(project: &ProjectName) -> Known {
    match state::read(project) {
        Ok(Some(running)) => state::read_health(project, &running)
            .map(|r| r.containers)
            .unwrap_or_default(),
        _ => Known::new(),
    }
}

/// The health a running routing path settled for a container: healthy or
/// unhealthy (one starting, or not followed, is probed instead).
pub fn settled(known: &Known, id: &str) -> Option<String> {
    match &known.get(id)?.health {
        HealthState::Healthy => Some("healthy".into()),
        HealthState::Unhealthy { last } => Some(format!("unhealthy: {last}")),
        HealthState::Starting | HealthState::Stopped => None,
    }
}

/// The project's containers; the stack (when it loaded) says how each
/// service's health is probed. `probe`: probe every running container,
/// whatever the routing path knows.
pub async fn rows(
    engine: &Engine,
    project: &ProjectName,
    loaded: Option<&LoadedStack>,
    probe: bool,
) -> anyhow::Result<Vec<Row>> {
    let network = names::network_name(project);
    let listed = engine
        .list_project_listed(project)
        .await
        .map_err(engine_failure)?;
    let known = if probe {
        Known::new()
    } else {
        known_health(project)
    };
    let rows = futures::future::join_all(listed.iter().map(|l| {
        let network = &network;
        let known = &known;
        async move {
            let o = &l.observed;
            let row = |state, exit_code, health: String, from, published| Row {
                name: o.name.clone(),
                service: o.service.clone(),
                replica: o.replica,
                task: o.task.clone(),
                state,
                exit_code,
                health,
                health_from: from,
                published,
                id: o.id.chars().take(12).collect(),
            };
            if o.state == ObservedState::Running {
                if let Some(health) = settled(known, &o.id) {
                    return row(o.state, None, health, Some("agent"), l.published.clone());
                }
                // Not a unit's (the proxy, a one-off task): running is all
                // there is to say, and the listing said it.
                if o.service.is_none() {
                    let published = l.published.clone();
                    return row(o.state, None, "running".into(), Some("engine"), published);
                }
            }
            probed(engine, l, network, loaded, row).await
        }
    }))
    .await;
    Ok(rows)
}

/// A container's row from its inspection and (when running) one probe,
/// each bounded as while waiting (`probe_timeout`): a healthy stack answers
/// in well under a second; an exec probe on a loaded or remote engine gets
/// its time.
async fn probed(
    engine: &Engine,
    l: &Listed,
    network: &str,
    loaded: Option<&LoadedStack>,
    row: impl FnOnce(ObservedState, Option<i64>, String, Option<&'static str>, Vec<Published>) -> Row,
) -> Row {
    let o = &l.observed;
    let status = engine.inspect(&o.id, network).await.ok();
    let (health, from) = match &status {
        Some(s) if s.state == ObservedState::Running => {
            // With a datastore kind's readiness check when the stack gives none.
            let stack_health = loaded
                .and_then(|l| {
                    o.service
                        .as_deref()
                        .and_then(|svc| crate::plan::effective_unit(&l.stack, svc))
                })
                .and_then(|c| c.health.clone());
            let check = match stack_health {
                Some(h) => Check::Probe(h),
                None if s.docker_health.is_some() => Check::Image,
                None => Check::Running,
            };
            match check {
                Check::Probe(h) => {
                    let r = health::probe(engine, s, &h.probe, health::probe_timeout(&h)).await;
                    let health = if r.ok {
                        "healthy".to_string()
                    } else {
                        format!("unhealthy: {}", r.detail)
                    };
                    (health, Some("probe"))
                }
                Check::Image => (s.docker_health.clone().unwrap_or_default(), Some("engine")),
                Check::Running => ("running".to_string(), Some("engine")),
            }
        }
        _ => ("-".to_string(), None),
    };
    row(
        status.as_ref().map(|s| s.state).unwrap_or(o.state),
        status
            .as_ref()
            .filter(|s| s.state == ObservedState::Exited)
            .and_then(|s| s.exit_code),
        health,
        from,
        status.map(|s| s.published).unwrap_or_default(),
    )
}
