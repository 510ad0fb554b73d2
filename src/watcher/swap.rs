//! Rebuild one service and swap its containers blue-green, replica by replica:
//! the new container starts beside the old one, and only when it is healthy
//! (and registered in etcd, when a registry is running) does the old one stop.
//! A new version that fails never got traffic: the registrar registers only
//! healthy containers, and the new one is removed, the old one untouched.
//! The old one leaves the registry (so the proxy) before it is stopped.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, ConnectOptions, GetOptions};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::{health, Engine, EngineError};
use crate::plan::{self, names, ObservedState};
use crate::router::Registry;
use crate::spec::{Stack, UnitKind};

/// Where the running stack's registry is, to wait for a new container's registration.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub endpoints: Vec<String>,
    pub prefix: String,
}

/// How one rebuild ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// Every replica runs the new image.
    Swapped { containers: Vec<String> },
    /// `sync`: the files were copied into the running containers.
    Synced {
        files: usize,
        containers: Vec<String>,
    },
    /// The build failed; the running version stays.
    BuildFailed { message: String },
    /// The new container never became healthy; it was removed, the old one serves.
    Unhealthy {
        container: String,
        reason: String,
        health: Option<String>,
        logs: Vec<String>,
    },
    /// Something else went wrong talking to the engine.
    Failed { message: String },
}

/// One line per rebuild: what triggered it, how long each half took, how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub service: String,
    pub trigger: String,
    pub build_ms: u64,
    pub swap_ms: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Report {
    pub fn line(&self) -> String {
        let result = match &self.outcome {
            Outcome::Swapped { containers } => format!("swapped {} replica(s)", containers.len()),
            Outcome::Synced { files, containers } => {
                format!(
                    "synced {files} file(s) into {} container(s)",
                    containers.len()
                )
            }
            Outcome::BuildFailed { message } => format!("build failed: {message}"),
            Outcome::Unhealthy {
                container, reason, ..
            } => {
                format!("new `{container}` {reason}; the old version keeps serving")
            }
            Outcome::Failed { message } => format!("failed: {message}"),
        };
        format!(
            "{}: {} changed · build {:.1}s · swap {:.1}s · {}",
            self.service,
            self.trigger,
            self.build_ms as f64 / 1000.0,
            self.swap_ms as f64 / 1000.0,
            result
        )
    }
}

/// How long a new replica may take to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for the registrar to put a healthy container in etcd.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// After registration, time for the router to apply it (its debounce is at
/// most 100 ms, a runtime update a few ms) before the old one leaves.
const ROUTE_SETTLE: Duration = Duration::from_millis(300);

/// Builds (or finds) the image of `service` and swaps its running replicas; never leaves it without a
/// serving container because of a failure of the new version.
pub async fn rebuild(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    service: &str,
    trigger: &str,
    discovery: Option<&Discovery>,
    cancel: &CancellationToken,
) -> Report {
    let mut report = Report {
        service: service.into(),
        trigger: trigger.into(),
        build_ms: 0,
        swap_ms: 0,
        outcome: Outcome::Failed {
            message: "not started".into(),
        },
    };
    let Some(unit) = stack.unit(service) else {
        report.outcome = Outcome::Failed {
            message: "is not in the stack".into(),
        };
        return report;
    };
    let tag = unit
        .image
        .clone()
        .unwrap_or_else(|| names::built_image_tag(project, service));
    let t0 = Instant::now();
    // A service without a build (redeployed because the stack file changed)
    // runs its image as found, or pulled as `up` would.
    let resolved = match &unit.build {
        Some(build) => engine.build(service, build, &tag, |_| {}).await,
        None => match engine.image_id(&tag).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => engine.pull(service, &tag, |_| {}).await,
            Err(e) => Err(e),
        },
    };
    let image_id = match resolved {
        Ok(id) => id,
        Err(e) => {
            report.build_ms = t0.elapsed().as_millis() as u64;
            report.outcome = Outcome::BuildFailed {
                message: e.to_string(),
            };
            return report;
        }
    };
    report.build_ms = t0.elapsed().as_millis() as u64;
    let t1 = Instant::now();
    report.outcome = match swap(
        engine, stack, project, service, &tag, &image_id, discovery, cancel,
    )
    .await
    {
        Ok(o) => o,
        Err(e) => Outcome::Failed {
            message: e.to_string(),
        },
    };
    report.swap_ms = t1.elapsed().as_millis() as u64;
    report
}

#[allow(clippy::too_many_arguments)]
async fn swap(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    service: &str,
    tag: &str,
    image_id: &str,
    discovery: Option<&Discovery>,
    cancel: &CancellationToken,
) -> Result<Outcome, EngineError> {
    let Some(unit) = stack.unit(service) else {
        return Ok(Outcome::Failed {
            message: "is not in the stack".into(),
        });
    };
    let observed = engine.list_project(project).await?;
    let mine: Vec<_> = observed
        .iter()
        .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
        .filter(|o| matches!(o.state, ObservedState::Running | ObservedState::Restarting))
        .collect();
    // The running scale, not the stack's: `scale` may have changed it.
    let replicas = mine
        .iter()
        .filter_map(|o| o.replica)
        .max()
        .unwrap_or(unit.replicas)
        .max(1);
    let desired = plan::desired_containers(
        project,
        service,
        UnitKind::Service,
        unit,
        tag,
        image_id,
        replicas,
    );
    let network = names::network_name(project);
    let check = health::check_for(engine, unit.health.as_ref(), tag).await;
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut swapped = Vec::new();
    for spec in desired {
        let old: Vec<_> = mine
            .iter()
            .filter(|o| o.replica == Some(spec.replica))
            .collect();
        if !old.is_empty()
            && old
                .iter()
                .all(|o| o.config_hash.as_deref() == Some(spec.config_hash.as_str()))
        {
            // The build produced the same image (a change the build ignores): nothing to swap.
            continue;
        }
        // A fixed host port can be bound by one container only: the old one
        // has to leave first, so this replica is replaced, not swapped.
        let fixed_port = spec.ports.iter().any(|p| p.host_port.is_some());
        let mut spec = spec;
        if !old.is_empty() && !fixed_port {
            // A distinct name so both run side by side; labels (project,
            // service, replica) are the same, which is what `up`, `ps` and the
            // registrar go by.
            spec.name = format!("{}-g{generation}", spec.name);
        }
        if fixed_port || old.iter().any(|o| o.name == spec.name) {
            for o in &old {
                engine.stop(&o.id, Some(spec.stop_grace)).await?;
                engine.remove(&o.id).await?;
            }
        }
        let id = engine.create(&spec).await?;
        engine.start(&id, service).await?;
        let mut last = None;
        let ready = health::wait_ready(
            engine,
            &id,
            &network,
            unit.restart,
            &check,
            Instant::now() + READY_TIMEOUT,
            cancel,
            |d| last = Some(d.to_string()),
        )
        .await;
        if let Err(why) = ready {
            let logs = engine.last_lines(&id, 20).await;
            // It never served (unhealthy containers are never registered); remove it.
            let _ = engine.stop(&id, Some(Duration::from_secs(1))).await;
            let _ = engine.remove(&id).await;
            let health = match &why {
                health::NotReady::Unhealthy { last } | health::NotReady::Timeout { last } => {
                    Some(last.clone())
                }
                _ => last,
            };
            return Ok(Outcome::Unhealthy {
                container: spec.name,
                reason: why.to_string(),
                health,
                logs,
            });
        }
        if let Some(d) = discovery {
            // Best effort: without a registry answer the swap still goes on,
            // after the same settle time, rather than leave two versions.
            let _ = wait_registered(d, service, &id).await;
            tokio::time::sleep(ROUTE_SETTLE).await;
            // Out of the proxy before it is stopped: its key goes now (the
            // registrar revokes its lease when it stops), and the router has
            // the settle time to apply that, so no new request reaches a
            // container that is shutting down.
            let ids: Vec<&str> = old.iter().map(|o| o.id.as_str()).collect();
            if deregister(d, service, &ids).await.unwrap_or(false) {
                tokio::time::sleep(ROUTE_SETTLE).await;
            }
        }
        for o in &old {
            // Stopping deregisters it at once (the registrar follows the kill
            // event); the grace period lets in-flight requests finish.
            engine.stop(&o.id, Some(spec.stop_grace)).await?;
            engine.remove(&o.id).await?;
        }
        swapped.push(spec.name);
    }
    Ok(Outcome::Swapped {
        containers: swapped,
    })
}

/// Polls etcd until the registrar has registered container `id` of `service`.
async fn wait_registered(d: &Discovery, service: &str, id: &str) -> Result<(), etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    let mut client = Client::connect(&d.endpoints, Some(options)).await?;
    let until = Instant::now() + REGISTER_TIMEOUT;
    let prefix = format!("{}/", d.prefix);
    while Instant::now() < until {
        let resp = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let registry = Registry::from_kvs(
            &d.prefix,
            resp.kvs().iter().map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            }),
        );
        if registry
            .instances(service)
            .iter()
            .any(|i| !i.id.is_empty() && (id.starts_with(&i.id) || i.id.starts_with(id)))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Deletes the registry keys of containers `ids` of `service`; true when one was deleted.
async fn deregister(
    d: &Discovery,
    service: &str,
    ids: &[&str],
) -> Result<bool, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    let mut client = Client::connect(&d.endpoints, Some(options)).await?;
    let prefix = format!("{}/", d.prefix);
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let mut deleted = false;
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        // Parsed one key at a time, so any key layout the registry reads
        // (a stack's own `discovery.key`) is recognized by its instance.
        let one = Registry::from_kvs(
            &d.prefix,
            [(
                key.clone(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )],
        );
        let ours = one.instances(service).iter().any(|i| {
            ids.iter()
                .any(|id| id.starts_with(&i.id) || i.id.starts_with(id))
        });
        if ours {
            client.delete(key, None).await?;
            deleted = true;
        }
    }
    Ok(deleted)
}
