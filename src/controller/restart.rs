//! `restart` of a running stack: each service's containers restarted
//! together (SIGTERM, grace, start) in dependency order, the next service
//! only once these are healthy again, as its dependencies would be at `up`.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::LoadedStack;
use crate::engine::{health, Engine};
use crate::plan::{self, names};
use crate::ui::{engine_failure, exit, Failed};

/// One container restarted.
#[derive(Debug)]
pub struct Restarted {
    pub name: String,
    /// Healthy again after this long, or why not.
    pub outcome: Result<Duration, String>,
    /// Its last lines of output, when it is not healthy.
    pub last_lines: Vec<String>,
}

/// Restarts the containers of `services` (all when empty); `report` is told
/// each container's result as its service's restart ends. Whether every
/// container is healthy again.
pub async fn restart(
    engine: &Engine,
    loaded: &LoadedStack,
    services: &[String],
    mut report: impl FnMut(&Restarted),
) -> anyhow::Result<bool> {
    let mut healthy = true;
    let stack = &loaded.stack;
    let observed = engine
        .list_project(&loaded.project)
        .await
        .map_err(engine_failure)?;
    let order =
        plan::graph::start_order(stack).map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
    let network = names::network_name(&loaded.project);
    let cancel = CancellationToken::new();
    for service in order
        .iter()
        .filter(|s| services.is_empty() || services.contains(s))
    {
        let Some(unit) = stack.unit(service) else {
            continue;
        };
        let containers: Vec<_> = observed
            .iter()
            .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service.as_str()))
            .collect();
        if containers.is_empty() {
            continue;
        }
        let image = unit
            .image
            .clone()
            .unwrap_or_else(|| names::built_image_tag(&loaded.project, service));
        let check = health::check_for(engine, unit.health.as_ref(), &image).await;
        // Replicas of one service restart together; the next service waits
        // until these are healthy, as its dependencies would at `up`.
        let results = futures::future::join_all(containers.iter().map(|c| {
            let check = &check;
            let network = &network;
            let cancel = &cancel;
            async move {
                let t0 = Instant::now();
                engine.restart(&c.id, unit.stop_grace).await?;
                let ready = health::wait_ready(
                    engine,
                    &c.id,
                    network,
                    unit.restart,
                    check,
                    Instant::now() + Duration::from_secs(120),
                    cancel,
                    |_| {},
                )
                .await;
                Ok::<_, crate::engine::EngineError>((c.name.clone(), ready, t0.elapsed()))
            }
        }))
        .await;
        for r in results {
            let (name, ready, took) = r.map_err(engine_failure)?;
            let restarted = match ready {
                Ok(_) => Restarted {
                    name,
                    outcome: Ok(took),
                    last_lines: Vec::new(),
                },
                Err(why) => Restarted {
                    last_lines: engine.last_lines(&name, 20).await,
                    name,
                    outcome: Err(why.to_string()),
                },
            };
            healthy &= restarted.outcome.is_ok();
            report(&restarted);
        }
    }
    Ok(healthy)
}
