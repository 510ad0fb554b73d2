//! Carrying out `up` (and `down`): resolve images, create the network and
//! volumes, then reconcile every unit in dependency order, in parallel where
//! the graph allows, each unit waiting only for its own dependencies.
//!
//! The decisions are [`crate::plan`]'s; this module only executes them and
//! reports progress. Builds happen before any container is touched, so a
//! failing build leaves the running stack as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::containers::Published;
use super::health::{self, NotReady};
use super::images::ImageOutput;
use super::progress::{Progress, Reporter};
use super::{Engine, EngineError};
use crate::plan::{self, names, Action, ContainerSpec, Observed, ObservedState, PlanError};
use crate::spec::{Stack, UnitKind, VolumeSource};

/// Why `up` stopped before reconciling units.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What to bring up.
#[derive(Debug, Clone)]
pub struct UpRequest {
    pub project: String,
    /// Units named on the command line (empty: all). Their dependencies come along.
    pub services: Vec<String>,
    /// Replica counts that override the stack's (`scale`).
    pub replicas: BTreeMap<String, u32>,
    /// How long units may take to become healthy, from the start of `up`.
    pub timeout: Duration,
    /// Remove containers of units the stack no longer has (a full `up` does).
    pub remove_orphans: bool,
}

/// How one unit ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum UnitState {
    Healthy,
    Failed {
        reason: String,
        /// The container that failed.
        container: Option<String>,
        /// The last health probe's output.
        last_health: Option<String>,
        /// Its last log lines.
        logs: Vec<String>,
    },
    /// Not started: a dependency failed.
    Blocked {
        by: String,
    },
}

/// One container as `up` left it.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerReport {
    pub name: String,
    pub id: String,
    /// `created`, `recreated`, `started` or `kept`.
    pub action: String,
    pub published: Vec<Published>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitOutcome {
    pub service: String,
    pub kind: UnitKind,
    pub replicas: u32,
    #[serde(flatten)]
    pub state: UnitState,
    pub containers: Vec<ContainerReport>,
    /// Milliseconds from the start of `up` to this unit's end.
    pub millis: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpOutcome {
    pub project: String,
    pub units: Vec<UnitOutcome>,
    pub millis: u64,
}

impl UpOutcome {
    pub fn all_healthy(&self) -> bool {
        self.units
            .iter()
            .all(|u| matches!(u.state, UnitState::Healthy))
    }
}

/// The signal a unit gives its dependents.
#[derive(Debug, Clone, PartialEq)]
enum Signal {
    Pending,
    /// Its containers were started (not yet healthy): dependents may create theirs.
    Started,
    Healthy,
    Failed,
}

/// The image each unit (and task) runs, resolved before anything starts.
type Images = HashMap<String, (String, String)>;

/// Brings the stack up: see the module documentation.
pub async fn up(
    engine: &Engine,
    stack: &Stack,
    request: &UpRequest,
    reporter: &Reporter,
    cancel: &CancellationToken,
) -> Result<UpOutcome, ApplyError> {
    let started = Instant::now();
    let deadline = started + request.timeout;
    let project = request.project.as_str();
    let units = plan::dependency_closure(stack, &request.services)?;
    plan::graph::start_order(stack)?;

    // Tasks that run before the chosen units need their images too.
    let tasks: Vec<&str> = units
        .iter()
        .flat_map(|u| plan::tasks_before(stack, u))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let images = resolve_images(engine, stack, project, &units, &tasks, reporter).await?;

    engine.ensure_network(project).await?;
    // Seeded datastores' data volumes first: made, or reset after a seed
    // that never finished (see `datastore::load`).
    let to_seed = crate::datastore::load::prepare(engine, stack, project, &units, reporter).await?;
    let mut volume_names = BTreeSet::new();
    for unit in &units {
        if let Some(c) = plan::effective_unit(stack, unit) {
            for v in &c.volumes {
                if let VolumeSource::Named(n) = &v.source {
                    volume_names.insert(n.clone());
                }
            }
        }
    }
    for name in &volume_names {
        if engine.ensure_volume(project, name).await? {
            reporter.send(Progress::Created {
                object: "volume".into(),
                name: names::volume_name(project, name),
            });
        }
    }

    let observed = engine.list_project(project).await?;
    // One-off task containers are removed by whoever ran them; one that
    // finished, or whose maker is gone, was left by a devstack killed
    // meanwhile. One still running for a dead devstack (a migration, say)
    // is let finish first, within this `up`'s deadline; one a live `run`
    // owns is left alone.
    for o in observed.iter().filter(|o| o.task.is_some()) {
        let finished = matches!(o.state, ObservedState::Exited | ObservedState::Dead);
        let orphaned = names::task_container_owner(&o.name)
            .is_some_and(|pid| !crate::router::state::alive(pid));
        if !finished && !orphaned {
            continue;
        }
        if o.state == ObservedState::Running {
            let left = deadline.saturating_duration_since(Instant::now());
            let waited = tokio::time::timeout(
                left,
                engine.wait_exit(&o.id, || format!("waiting for `{}`", o.name)),
            )
            .await;
            if !matches!(waited, Ok(Ok(_))) {
                continue;
            }
        }
        // A one-off's anonymous volumes were scratch of that run.
        engine.remove_with_volumes(&o.id).await?;
    }
    if request.remove_orphans {
        let all: Vec<&str> = stack.units().map(|(n, _, _)| n).collect();
        for action in plan::plan_orphans(all, &observed) {
            if let Action::Remove { id, name, reason } = action {
                reporter.send(Progress::Container {
                    service: String::new(),
                    container: name.clone(),
                    action: "removing".into(),
                    reason: Some(reason),
                });
                engine.stop(&id, None).await?;
                engine.remove(&id).await?;
            }
        }
    }

    let mut senders = Vec::new();
    let mut receivers: HashMap<String, watch::Receiver<Signal>> = HashMap::new();
    for u in &units {
        let (tx, rx) = watch::channel(Signal::Pending);
        senders.push((u.clone(), tx));
        receivers.insert(u.clone(), rx);
    }
    let observed = Arc::new(observed);
    let images = Arc::new(images);

    let receivers = &receivers;
    let futures = senders.into_iter().map(|(unit, tx)| {
        let observed = observed.clone();
        let images = images.clone();
        let to_seed = &to_seed;
        async move {
            let mut outcome = reconcile_unit(
                engine, stack, request, &unit, &tx, receivers, &observed, &images, deadline,
                reporter, cancel, started,
            )
            .await;
            if to_seed.contains(&unit) {
                seed_unit(engine, stack, project, &mut outcome, deadline, reporter).await;
            }
            let _ = tx.send(match outcome.state {
                UnitState::Healthy => Signal::Healthy,
                _ => Signal::Failed,
            });
            outcome
        }
    });
    let units = join_all(futures).await;
    Ok(UpOutcome {
        project: project.to_string(),
        units,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Loads a datastore's seed once its first replica is ready, before its
/// dependents hear it is healthy; a failure fails the unit, naming the file,
/// the line and the server's message.
async fn seed_unit(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    outcome: &mut UnitOutcome,
    deadline: Instant,
    reporter: &Reporter,
) {
    if !matches!(outcome.state, UnitState::Healthy) {
        return;
    }
    let Some(first) = outcome.containers.first() else {
        return;
    };
    let loaded = crate::datastore::load::load(
        engine,
        stack,
        project,
        &outcome.service,
        (&first.id, &first.name),
        deadline,
        reporter,
    )
    .await;
    if let Err(e) = loaded {
        let reason = e.to_string();
        reporter.send(Progress::Failed {
            service: outcome.service.clone(),
            reason: reason.clone(),
        });
        outcome.state = UnitState::Failed {
            reason,
            container: Some(first.name.clone()),
            last_health: None,
            logs: Vec::new(),
        };
    }
}

/// Builds or finds (pulling if needed) the image of every unit and task.
/// Builds run two at a time: more only fight over the CPU.
async fn resolve_images(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    units: &[String],
    tasks: &[&str],
    reporter: &Reporter,
) -> Result<Images, EngineError> {
    // Tasks reuse their service's image; a task's own image is resolved under its name.
    let mut wanted: Vec<(String, String)> = units.iter().map(|u| (u.clone(), u.clone())).collect();
    for task in tasks {
        if let Some(t) = stack.tasks.get(*task) {
            match (&t.image, &t.service) {
                (Some(_), _) => wanted.push((format!("task:{task}"), task.to_string())),
                (None, Some(s)) if !units.contains(s) => wanted.push((s.clone(), s.clone())),
                _ => {}
            }
        }
    }
    let builds = Arc::new(Semaphore::new(2));
    let jobs = wanted.into_iter().map(|(key, name)| {
        let builds = builds.clone();
        async move {
            let (image, build) = match key.strip_prefix("task:") {
                Some(task) => (stack.tasks.get(task).and_then(|t| t.image.clone()), None),
                None => match stack.unit(&name) {
                    Some(c) => (c.image.clone(), c.build.clone()),
                    None => (None, None),
                },
            };
            let tag = image
                .clone()
                .unwrap_or_else(|| names::built_image_tag(project, &name));
            if let Some(build) = build {
                let _permit = builds.acquire().await;
                let t0 = Instant::now();
                reporter.send(Progress::BuildStarted {
                    service: name.clone(),
                    tag: tag.clone(),
                });
                let id = engine
                    .build(&name, &build, &tag, |out| {
                        if let ImageOutput::Line(line) = out {
                            reporter.send(Progress::BuildOutput {
                                service: name.clone(),
                                line,
                            });
                        }
                    })
                    .await?;
                reporter.send(Progress::Built {
                    service: name.clone(),
                    image_id: id.clone(),
                    millis: t0.elapsed().as_millis() as u64,
                });
                return Ok::<_, EngineError>((key, (tag, id)));
            }
            if let Some(id) = engine.image_id(&tag).await? {
                return Ok((key, (tag, id)));
            }
            let id = engine
                .pull(&name, &tag, |out| {
                    let (layer, status) = match out {
                        ImageOutput::Layer { layer, status } => (Some(layer), status),
                        ImageOutput::Line(status) => (None, status),
                    };
                    reporter.send(Progress::Pull {
                        service: name.clone(),
                        image: tag.clone(),
                        layer,
                        status,
                    });
                })
                .await?;
            Ok((key, (tag, id)))
        }
    });
    let mut images = HashMap::new();
    let mut first_error = None;
    for result in join_all(jobs).await {
        match result {
            Ok((k, v)) => {
                images.insert(k, v);
            }
            // Every build is let finish (they share the cache), then the first failure is told.
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(_) => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(images),
    }
}

#[allow(clippy::too_many_arguments)]
async fn reconcile_unit(
    engine: &Engine,
    stack: &Stack,
    request: &UpRequest,
    unit: &str,
    signal: &watch::Sender<Signal>,
    signals: &HashMap<String, watch::Receiver<Signal>>,
    observed: &[Observed],
    images: &Images,
    deadline: Instant,
    reporter: &Reporter,
    cancel: &CancellationToken,
    started: Instant,
) -> UnitOutcome {
    let kind = if stack.services.contains_key(unit) {
        UnitKind::Service
    } else {
        UnitKind::Datastore
    };
    // With a datastore's default data volume, when it needs one.
    let Some(container) = plan::effective_unit(stack, unit) else {
        return failed(unit, kind, 0, "is not in the stack".into(), started);
    };
    let container = &*container;
    let replicas = request
        .replicas
        .get(unit)
        .copied()
        .unwrap_or(container.replicas);
    let end = |state: UnitState, containers: Vec<ContainerReport>| UnitOutcome {
        service: unit.to_string(),
        kind,
        replicas,
        state,
        containers,
        millis: started.elapsed().as_millis() as u64,
    };

    // 1. The plan for this unit: it needs only the image, not the dependencies.
    let Some((image, image_id)) = images.get(unit).cloned() else {
        return failed(unit, kind, replicas, "has no image".into(), started);
    };
    let desired = plan::desired_containers(
        &request.project,
        unit,
        kind,
        container,
        &image,
        &image_id,
        replicas,
    );
    let actions = plan::plan_unit(unit, &desired, observed);

    // 2. Fresh replicas are created as soon as the dependencies have started,
    //    while they become healthy: on slow storage creating is a good part of
    //    a container's start-up, and a created container does nothing until it
    //    is started. Not earlier, so that creating dependents does not slow the
    //    dependencies themselves down. Replacements wait for health, so the old
    //    container keeps serving until then.
    for dep in container.depends_on.iter().filter_map(|d| signals.get(d)) {
        let mut rx = dep.clone();
        tokio::select! {
            _ = rx.wait_for(|s| *s != Signal::Pending) => {}
            _ = cancel.cancelled() => {}
        }
    }
    let data_volume = plan::data_volume(stack, unit);
    let creations = join_all(
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { spec } => Some(spec),
                _ => None,
            })
            .map(|spec| async move {
                reporter.send(Progress::Container {
                    service: unit.to_string(),
                    container: spec.name.clone(),
                    action: "creating".into(),
                    reason: None,
                });
                let id = engine.create(spec).await?;
                Ok::<_, EngineError>((spec.name.clone(), id))
            }),
    )
    .await;
    let mut precreated: HashMap<String, String> = HashMap::new();
    for result in creations {
        match result {
            Ok((name, id)) => {
                precreated.insert(name, id);
            }
            Err(e) => {
                reporter.send(Progress::Failed {
                    service: unit.to_string(),
                    reason: e.to_string(),
                });
                return failed(unit, kind, replicas, e.to_string(), started);
            }
        }
    }

    // 3. Wait for the dependencies, and only them.
    let deps: Vec<&String> = container
        .depends_on
        .iter()
        .filter(|d| signals.contains_key(*d))
        .collect();
    let pending: Vec<String> = deps
        .iter()
        .filter(|d| *signals[**d].borrow() != Signal::Healthy)
        .map(|d| d.to_string())
        .collect();
    if !pending.is_empty() {
        reporter.send(Progress::Waiting {
            service: unit.to_string(),
            on: pending,
        });
    }
    for dep in deps {
        let mut rx = signals[dep].clone();
        let result = tokio::select! {
            r = rx.wait_for(|s| matches!(s, Signal::Healthy | Signal::Failed)) => r.map(|s| s.clone()).unwrap_or(Signal::Failed),
            _ = cancel.cancelled() => Signal::Failed,
        };
        if result != Signal::Healthy {
            reporter.send(Progress::Blocked {
                service: unit.to_string(),
                by: dep.clone(),
            });
            return end(UnitState::Blocked { by: dep.clone() }, Vec::new());
        }
    }

    // 4. Tasks that must succeed first, only when something is about to start.
    if actions.iter().any(|a| !a.is_noop()) {
        for task in plan::tasks_before(stack, unit) {
            if let Err(state) = run_task_before(
                engine,
                stack,
                &request.project,
                task,
                unit,
                images,
                reporter,
            )
            .await
            {
                return end(state, Vec::new());
            }
        }
    }

    // 5. Removals first (they free names and ports), then the rest in parallel.
    let mut work = Vec::new();
    for action in actions {
        match action {
            Action::Remove { id, name, reason } => {
                reporter.send(Progress::Container {
                    service: unit.to_string(),
                    container: name.clone(),
                    action: "removing".into(),
                    reason: Some(reason),
                });
                let result = async {
                    engine.stop(&id, Some(container.stop_grace)).await?;
                    engine.remove(&id).await
                }
                .await;
                if let Err(e) = result {
                    return failed(unit, kind, replicas, e.to_string(), started);
                }
            }
            other => work.push(other),
        }
    }
    let precreated = &precreated;
    let data_volume = &data_volume;
    let executed = join_all(work.into_iter().map(|action| {
        async move {
            let (verb, mut spec, reason, old) = match action {
                Action::Keep { id, spec } => {
                    reporter.send(Progress::Container {
                        service: unit.to_string(),
                        container: spec.name.clone(),
                        action: "up to date".into(),
                        reason: None,
                    });
                    return Ok(Some((id, spec, "kept")));
                }
                Action::Start { id, spec } => {
                    reporter.send(Progress::Container {
                        service: unit.to_string(),
                        container: spec.name.clone(),
                        action: "starting".into(),
                        reason: None,
                    });
                    engine.start(&id, unit).await?;
                    return Ok(Some((id, spec, "started")));
                }
                Action::Create { spec } => match precreated.get(&spec.name) {
                    Some(id) => {
                        engine.start(id, unit).await?;
                        return Ok(Some((id.clone(), spec, "created")));
                    }
                    None => ("created", spec, None, None),
                },
                Action::Recreate { id, spec, reason } => {
                    ("recreated", spec, Some(reason), Some(id))
                }
                // Removals were carried out above.
                Action::Remove { .. } => return Ok(None),
            };
            reporter.send(Progress::Container {
                service: unit.to_string(),
                container: spec.name.clone(),
                action: if old.is_some() {
                    "recreating"
                } else {
                    "creating"
                }
                .into(),
                reason,
            });
            if let Some(old) = old {
                engine.stop(&old, Some(spec.stop_grace)).await?;
                // Read before the old one goes: the anonymous volumes the new
                // one keeps, and data an older devstack left outside the
                // named data volume.
                let mounts = engine.carry_volumes_from(&mut spec, &old).await?;
                let moving = OldData {
                    id: &old,
                    created: observed.iter().find(|o| o.id == old).map(|o| o.created),
                    mounts: &mounts,
                };
                move_old_data(
                    engine,
                    &request.project,
                    data_volume.as_ref(),
                    &moving,
                    &spec,
                    reporter,
                )
                .await?;
                engine.remove(&old).await?;
            }
            let id = engine.create(&spec).await?;
            engine.start(&id, unit).await?;
            Ok::<_, EngineError>(Some((id, spec, verb)))
        }
    }))
    .await;
    for result in &executed {
        if let Err(e) = result {
            reporter.send(Progress::Failed {
                service: unit.to_string(),
                reason: e.to_string(),
            });
            return end(
                UnitState::Failed {
                    reason: e.to_string(),
                    container: None,
                    last_health: None,
                    logs: Vec::new(),
                },
                Vec::new(),
            );
        }
    }
    let started_containers: Vec<(String, Box<ContainerSpec>, &'static str)> = executed
        .into_iter()
        .filter_map(|r| r.ok().flatten())
        .collect();

    let _ = signal.send(Signal::Started);

    // 6. Wait for every replica to be ready, all at once.
    let check = health::check_for(engine, container.health.as_ref(), &image).await;
    let network = names::network_name(&request.project);
    let waits = started_containers.iter().map(|(id, spec, _)| {
        let check = check.clone();
        let network = network.clone();
        async move {
            let mut last = None;
            let result = health::wait_ready(
                engine,
                id,
                &network,
                container.restart,
                &check,
                deadline,
                cancel,
                |detail| {
                    last = Some(detail.to_string());
                    reporter.send(Progress::Probe {
                        service: unit.to_string(),
                        container: spec.name.clone(),
                        detail: detail.to_string(),
                    });
                },
            )
            .await;
            (result, last)
        }
    });
    let results = join_all(waits).await;
    let mut reports = Vec::new();
    for ((id, spec, verb), (result, last)) in started_containers.iter().zip(results) {
        match result {
            Ok(_) => {
                reporter.send(Progress::Ready {
                    service: unit.to_string(),
                    container: spec.name.clone(),
                    millis: started.elapsed().as_millis() as u64,
                });
                let published = engine
                    .inspect(id, &network)
                    .await
                    .map(|s| s.published)
                    .unwrap_or_default();
                reports.push(ContainerReport {
                    name: spec.name.clone(),
                    id: id.clone(),
                    action: verb.to_string(),
                    published,
                });
            }
            Err(not_ready) => {
                let reason = format!("`{}` {not_ready}", spec.name);
                reporter.send(Progress::Failed {
                    service: unit.to_string(),
                    reason: reason.clone(),
                });
                let logs = if not_ready == NotReady::Cancelled {
                    Vec::new()
                } else {
                    engine.last_lines(id, 20).await
                };
                return end(
                    UnitState::Failed {
                        reason,
                        container: Some(spec.name.clone()),
                        last_health: match &not_ready {
                            NotReady::Unhealthy { last } | NotReady::Timeout { last } => {
                                Some(last.clone())
                            }
                            _ => last,
                        },
                        logs,
                    },
                    reports,
                );
            }
        }
    }
    reporter.send(Progress::Healthy {
        service: unit.to_string(),
        millis: started.elapsed().as_millis() as u64,
    });
    end(UnitState::Healthy, reports)
}

/// A datastore container about to be replaced, as [`move_old_data`] needs it.
struct OldData<'a> {
    id: &'a str,
    /// Seconds since the epoch.
    created: Option<i64>,
    mounts: &'a [plan::OldMount],
}

/// Moves the data an older devstack left in a datastore container's
/// anonymous volume (or its own layer) into the named data volume its
/// replacement `spec` mounts, before the old container is removed; see
/// [`plan::moves_data`]. The old anonymous volume itself is kept.
async fn move_old_data(
    engine: &Engine,
    project: &str,
    data_volume: Option<&(String, String)>,
    old: &OldData<'_>,
    spec: &ContainerSpec,
    reporter: &Reporter,
) -> Result<(), EngineError> {
    let (Some((name, dir)), Some(old_created)) = (data_volume, old.created) else {
        return Ok(());
    };
    let full = names::volume_name(project, name);
    let Some(created) = engine.volume_created(&full).await? else {
        return Ok(());
    };
    if !plan::moves_data(&full, dir, created, old_created, old.mounts) {
        return Ok(());
    }
    let helper = plan::data_move_helper(spec, project, &full, &std::process::id().to_string());
    if helper.mounts.is_empty() {
        return Ok(());
    }
    reporter.send(Progress::Container {
        service: spec.service.clone(),
        container: spec.name.clone(),
        action: "moving data".into(),
        reason: Some(format!("{dir} of the old container into volume `{full}`")),
    });
    engine.move_data(old.id, &helper, dir).await?;
    Ok(())
}

fn failed(
    unit: &str,
    kind: UnitKind,
    replicas: u32,
    reason: String,
    started: Instant,
) -> UnitOutcome {
    UnitOutcome {
        service: unit.to_string(),
        kind,
        replicas,
        state: UnitState::Failed {
            reason,
            container: None,
            last_health: None,
            logs: Vec::new(),
        },
        containers: Vec::new(),
        millis: started.elapsed().as_millis() as u64,
    }
}

/// Runs a task that must succeed before `before` starts; on failure the unit
/// fails with the task's exit code and output.
async fn run_task_before(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    task: &str,
    before: &str,
    images: &Images,
    reporter: &Reporter,
) -> Result<(), UnitState> {
    let fail = |reason: String, logs: Vec<String>| UnitState::Failed {
        reason,
        container: None,
        last_health: None,
        logs,
    };
    let image = stack
        .tasks
        .get(task)
        .and_then(|t| {
            images
                .get(&format!("task:{task}"))
                .or_else(|| t.service.as_ref().and_then(|s| images.get(s)))
        })
        .map(|(tag, _)| tag.clone());
    let Some(image) = image else {
        return Err(fail(format!("task `{task}` has no image"), Vec::new()));
    };
    let suffix = format!("{}", std::process::id());
    let Some(spec) = plan::task_container(stack, project, task, &image, None, &suffix) else {
        return Err(fail(
            format!("task `{task}` is not in the stack"),
            Vec::new(),
        ));
    };
    reporter.send(Progress::Task {
        task: task.into(),
        before: before.into(),
        state: "running".into(),
        exit_code: None,
    });
    let (code, logs) = match engine.run_detached(&spec).await {
        Ok(r) => r,
        Err(e) => {
            return Err(fail(
                format!("task `{task}` could not run: {e}"),
                Vec::new(),
            ))
        }
    };
    reporter.send(Progress::Task {
        task: task.into(),
        before: before.into(),
        state: if code == 0 { "succeeded" } else { "failed" }.into(),
        exit_code: Some(code),
    });
    if code != 0 {
        return Err(fail(
            format!("task `{task}`, which must succeed before `{before}` starts, exited with code {code}"),
            logs,
        ));
    }
    Ok(())
}

/// Takes the project down: stops (SIGTERM, then kill after `grace`) and
/// removes its containers — application services first, datastores last, so
/// services do not log errors about vanished databases — then its network,
/// and with `volumes` the containers' anonymous volumes and the project's
/// named volumes; without it, no volume at all. Only objects with the project label
/// are touched.
pub async fn down(
    engine: &Engine,
    project: &str,
    grace: Option<Duration>,
    volumes: bool,
    reporter: &Reporter,
) -> Result<DownOutcome, EngineError> {
    let observed = engine.list_project(project).await?;
    let (datastores, first): (Vec<&Observed>, Vec<&Observed>) =
        observed.iter().partition(|o| is_datastore(engine, o));
    let mut removed = Vec::new();
    let mut anonymous = BTreeSet::new();
    for wave in [first, datastores] {
        let results = join_all(wave.iter().map(|o| async move {
            // Anonymous volumes are data too: they go only with `--volumes`,
            // found through the containers that mount them: the engine's
            // own `v` removes only those it made for that very container,
            // not one a replacement mounts by name.
            let mut anonymous = Vec::new();
            if volumes {
                let mounts = engine.mounts_of(&o.id).await.unwrap_or_default();
                anonymous.extend(
                    mounts
                        .into_iter()
                        .filter(|m| m.anonymous)
                        .filter_map(|m| m.volume),
                );
            }
            engine.stop(&o.id, grace).await?;
            if volumes {
                engine.remove_with_volumes(&o.id).await?;
            } else {
                engine.remove(&o.id).await?;
            }
            reporter.send(Progress::Stopped {
                container: o.name.clone(),
                removed: true,
            });
            Ok::<_, EngineError>((o.name.clone(), anonymous))
        }))
        .await;
        for r in results {
            let (name, volumes) = r?;
            removed.push(name);
            anonymous.extend(volumes);
        }
    }
    let network = engine.remove_network(project).await?;
    let mut removed_volumes = Vec::new();
    if volumes {
        // Every container that mounted them is gone by now.
        for v in anonymous {
            engine.remove_volume(&v).await?;
            removed_volumes.push(v);
        }
        for v in engine.list_volumes(project).await? {
            engine.remove_volume(&v).await?;
            removed_volumes.push(v);
        }
    }
    Ok(DownOutcome {
        containers: removed,
        network,
        volumes: removed_volumes,
    })
}

fn is_datastore(_engine: &Engine, o: &Observed) -> bool {
    o.kind.as_deref() == Some("datastore")
}

/// What `down` removed.
#[derive(Debug, Clone, Serialize)]
pub struct DownOutcome {
    pub containers: Vec<String>,
    pub network: bool,
    pub volumes: Vec<String>,
}

/// Stops every running container of the project (the foreground `up`'s
/// Ctrl-C): services first, then datastores; containers stay, as with Compose.
pub async fn stop_all(
    engine: &Engine,
    project: &str,
    grace: Option<Duration>,
    reporter: &Reporter,
) -> Result<(), EngineError> {
    let observed = engine.list_project(project).await?;
    let (datastores, first): (Vec<&Observed>, Vec<&Observed>) =
        observed.iter().partition(|o| is_datastore(engine, o));
    for wave in [first, datastores] {
        for r in join_all(wave.iter().map(|o| async move {
            engine.stop(&o.id, grace).await?;
            reporter.send(Progress::Stopped {
                container: o.name.clone(),
                removed: false,
            });
            Ok::<_, EngineError>(())
        }))
        .await
        {
            r?;
        }
    }
    Ok(())
}

/// Kills every running container of the project at once (the second Ctrl-C).
pub async fn kill_all(engine: &Engine, project: &str) -> Result<(), EngineError> {
    let observed = engine.list_project(project).await?;
    for r in join_all(observed.iter().map(|o| engine.kill(&o.id))).await {
        r?;
    }
    Ok(())
}

/// The image a task runs, built or pulled if it is missing (`devstack run`).
pub async fn task_image(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    task: &str,
    reporter: &Reporter,
) -> Result<String, EngineError> {
    let images = resolve_images(engine, stack, project, &[], &[task], reporter).await?;
    let found = images.get(&format!("task:{task}")).or_else(|| {
        stack
            .tasks
            .get(task)
            .and_then(|t| t.service.as_ref())
            .and_then(|s| images.get(s))
    });
    found.map(|(tag, _)| tag.clone()).ok_or_else(|| {
        EngineError::NotFound(format!(
            "task `{task}` names neither an image nor a service"
        ))
    })
}

/// The network and the named volumes a task's container needs, created if
/// the stack is not up.
pub async fn prepare_task(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    task: &str,
) -> Result<(), EngineError> {
    engine.ensure_network(project).await?;
    let service = stack.tasks.get(task).and_then(|t| t.service.as_deref());
    if let Some(unit) = service.and_then(|s| plan::effective_unit(stack, s)) {
        for v in &unit.volumes {
            if let VolumeSource::Named(n) = &v.source {
                engine.ensure_volume(project, n).await?;
            }
        }
    }
    Ok(())
}
