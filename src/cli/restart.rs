//! `devstack restart [SERVICE...]`: restart containers (SIGTERM, grace, start)
//! in dependency order and wait for each to be healthy again.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::args::{GlobalArgs, RestartArgs};
use super::stack::load_stack;
use super::{exit, Failed};
use crate::engine::health;
use crate::plan::{self, names};
use crate::ui::{connect, engine_failure};

pub async fn run(global: &GlobalArgs, args: RestartArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let stack = &loaded.stack;
    for s in &args.services {
        if stack.unit(s).is_none() {
            let hint = plan::graph::suggest(s, stack.units().map(|(n, _, _)| n));
            return Err(Failed::new(
                exit::USAGE,
                format!("`{s}` is not a service or datastore of this stack{hint}"),
            )
            .into());
        }
    }
    let engine = connect().await?;
    let observed = engine
        .list_project(&loaded.project)
        .await
        .map_err(engine_failure)?;
    let order =
        plan::graph::start_order(stack).map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
    let network = names::network_name(&loaded.project);
    let cancel = CancellationToken::new();
    let mut failed = false;
    for service in order
        .iter()
        .filter(|s| args.services.is_empty() || args.services.contains(s))
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
        let check = health::check_for(&engine, unit.health.as_ref(), &image).await;
        // Replicas of one service restart together; the next service waits
        // until these are healthy, as its dependencies would at `up`.
        let results = futures::future::join_all(containers.iter().map(|c| {
            let engine = &engine;
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
            match ready {
                Ok(_) => sayln!("{name}: restarted, healthy in {:.2}s", took.as_secs_f64()),
                Err(why) => {
                    failed = true;
                    sayln!("{name}: restarted but {why}");
                    for line in engine.last_lines(&name, 20).await {
                        sayln!("  | {line}");
                    }
                }
            }
        }
    }
    Ok(if failed { exit::UNHEALTHY } else { exit::OK })
}
