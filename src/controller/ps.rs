//! `devstack ps`: each container of a project, its state, health (one quick
//! probe per running container, all at once) and published addresses.

use serde::Serialize;

use super::LoadedStack;
use crate::engine::containers::Published;
use crate::engine::health::{self, Check};
use crate::engine::Engine;
use crate::plan::{names, ObservedState};
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
    pub published: Vec<Published>,
    pub id: String,
}

/// The project's containers; the stack (when it loaded) says how each
/// service's health is probed.
pub async fn rows(
    engine: &Engine,
    project: &str,
    loaded: Option<&LoadedStack>,
) -> anyhow::Result<Vec<Row>> {
    let network = names::network_name(project);
    let observed = engine.list_project(project).await.map_err(engine_failure)?;
    // One probe per running container, all at once, each bounded as while
    // waiting (`probe_timeout`): a healthy stack answers in well under a
    // second; an exec probe on a loaded or remote engine gets its time.
    let rows = futures::future::join_all(observed.iter().map(|o| {
        let network = &network;
        async move {
            let status = engine.inspect(&o.id, network).await.ok();
            let health = match &status {
                Some(s) if s.state == ObservedState::Running => {
                    let stack_health = loaded
                        .and_then(|l| o.service.as_deref().and_then(|svc| l.stack.unit(svc)))
                        .and_then(|c| c.health.clone());
                    let check = match stack_health {
                        Some(h) => Check::Probe(h),
                        None if s.docker_health.is_some() => Check::Image,
                        None => Check::Running,
                    };
                    match check {
                        Check::Probe(h) => {
                            let r =
                                health::probe(engine, s, &h.probe, health::probe_timeout(&h)).await;
                            if r.ok {
                                "healthy".to_string()
                            } else {
                                format!("unhealthy: {}", r.detail)
                            }
                        }
                        Check::Image => s.docker_health.clone().unwrap_or_default(),
                        Check::Running => "running".to_string(),
                    }
                }
                _ => "-".to_string(),
            };
            Row {
                name: o.name.clone(),
                service: o.service.clone(),
                replica: o.replica,
                task: o.task.clone(),
                state: status.as_ref().map(|s| s.state).unwrap_or(o.state),
                exit_code: status
                    .as_ref()
                    .filter(|s| s.state == ObservedState::Exited)
                    .and_then(|s| s.exit_code),
                health,
                published: status.map(|s| s.published).unwrap_or_default(),
                id: o.id.chars().take(12).collect(),
            }
        }
    }))
    .await;
    Ok(rows)
}
