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
use super::health::{Check, NotReady};
use super::images::ImageOutput;
use super::progress::{Progress, Reporter};
use super::reach::Reach;
use super::{ContainerEngine, EngineError};
use crate::plan::{self, names, Action, ContainerSpec, Observed, ObservedState, PlanError};
use crate::spec::{Container, Stack, UnitKind, VolumeSource};

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
    /// Containers (full ids) the stack's running routing path follows and
    /// found healthy: one the plan keeps is not probed again.
    pub known_healthy: BTreeSet<String>,
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
    /// Its address on the stack network (what the proxy sends requests to).
    #[serde(skip)]
    pub ip: Option<std::net::IpAddr>,
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

/// Each container's published ports and address, by id, as listed.
type Listing = HashMap<String, (Vec<Published>, Option<std::net::IpAddr>)>;

/// The image each unit (and task) runs, resolved before anything starts.
type Images = HashMap<String, (String, String)>;

/// Brings the stack up: see the module documentation.
pub async fn up<E: ContainerEngine>(
    engine: &E,
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
    let (reach, decided) = engine.reach();
    reporter.send(Progress::Reach {
        reach,
        decided,
        registry: engine.registry(),
    });
    // Seeded datastores' data volumes first: made, or reset after a seed
    // that never finished (see `engine::seeding`).
    let to_seed = engine
        .prepare_seeds(stack, project, &units, reporter)
        .await?;
    ensure_volumes(engine, stack, project, &units, reporter).await?;
    let listed = engine.list_project_listed(project).await?;
    let found: Listing = listed
        .iter()
        .map(|l| (l.observed.id.clone(), (l.published.clone(), l.ip)))
        .collect();
    let observed: Vec<Observed> = listed.into_iter().map(|l| l.observed).collect();
    remove_task_leftovers(engine, &observed, deadline).await?;
    if request.remove_orphans {
        remove_orphans(engine, stack, &observed, reporter).await?;
    }

    let mut senders = Vec::new();
    let mut receivers: HashMap<String, watch::Receiver<Signal>> = HashMap::new();
    for u in &units {
        let (tx, rx) = watch::channel(Signal::Pending);
        senders.push((u.clone(), tx));
        receivers.insert(u.clone(), rx);
    }
    let run = Run {
        engine,
        stack,
        request,
        signals: &receivers,
        observed: &observed,
        listed: &found,
        images: &images,
        deadline,
        reporter,
        cancel,
        started,
    };
    let run = &run;
    let to_seed = &to_seed;
    let futures = senders.into_iter().map(|(unit, tx)| async move {
        let mut outcome = reconcile_unit(run, &unit, &tx).await;
        if to_seed.contains(&unit) {
            seed_unit(run, &mut outcome).await;
        }
        let _ = tx.send(match outcome.state {
            UnitState::Healthy => Signal::Healthy,
            _ => Signal::Failed,
        });
        outcome
    });
    let mut units = join_all(futures).await;
    // Only what this `up` started (or did not know healthy) can have exited
    // since it was ready; a no-op `up` asks the engine nothing more.
    let all_known = units.iter().all(|u| {
        u.containers
            .iter()
            .all(|c| c.action == "kept" && request.known_healthy.contains(&c.id))
    });
    if !all_known {
        exited_since_ready(engine, project, &mut units).await;
    }
    Ok(UpOutcome {
        project: project.to_string(),
        units,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// A unit is reported healthy only if its containers still run when `up`
/// ends: one with no health check is "ready" once it has stayed up a moment,
/// and a process that dies a second later (a worker that cannot reach its
/// queue) would otherwise be reported healthy.
async fn exited_since_ready<E: ContainerEngine>(
    engine: &E,
    project: &str,
    units: &mut [UnitOutcome],
) {
    let Ok(observed) = engine.list_project(project).await else {
        return;
    };
    let network = names::network_name(project);
    for unit in units.iter_mut() {
        if !matches!(unit.state, UnitState::Healthy) {
            continue;
        }
        let ids: BTreeSet<&str> = unit.containers.iter().map(|c| c.id.as_str()).collect();
        let exited = observed.iter().find(|o| {
            ids.contains(o.id.as_str())
                && matches!(o.state, ObservedState::Exited | ObservedState::Dead)
        });
        let Some(o) = exited else {
            continue;
        };
        let code = match engine.inspect(&o.id, &network).await {
            Ok(status) => status.exit_code.unwrap_or(-1),
            Err(_) => -1,
        };
        unit.state = UnitState::Failed {
            reason: format!("exited with code {code} after it was ready"),
            container: Some(o.name.clone()),
            last_health: None,
            logs: engine.last_lines(&o.id, 20).await,
        };
    }
}

/// Loads a datastore's seed once its first replica is ready, before its
/// dependents hear it is healthy; a failure fails the unit, naming the file,
/// the line and the server's message.
async fn seed_unit<E: ContainerEngine>(run: &Run<'_, E>, outcome: &mut UnitOutcome) {
    if !matches!(outcome.state, UnitState::Healthy) {
        return;
    }
    let Some(first) = outcome.containers.first() else {
        return;
    };
    let loaded = run
        .engine
        .load_seed(
            run.stack,
            &run.request.project,
            &outcome.service,
            (&first.id, &first.name),
            run.deadline,
            run.reporter,
        )
        .await;
    if let Err(e) = loaded {
        let reason = e.to_string();
        run.reporter.send(Progress::Failed {
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

/// Creates the named volumes `units` mount that do not exist yet.
async fn ensure_volumes<E: ContainerEngine>(
    engine: &E,
    stack: &Stack,
    project: &str,
    units: &[String],
    reporter: &Reporter,
) -> Result<(), EngineError> {
    let mut volume_names = BTreeSet::new();
    for unit in units {
        if let Some(c) = plan::effective_unit(stack, unit) {
            for v in &c.volumes {
                if let VolumeSource::Named(n) = &v.source {
                    volume_names.insert(n.clone());
                }
            }
        }
    }
    // All at once: each is one request when it exists (a no-op `up`).
    let ensured = join_all(
        volume_names
            .iter()
            .map(|n| engine.ensure_volume(project, n)),
    )
    .await;
    for (name, created) in volume_names.iter().zip(ensured) {
        if created? {
            reporter.send(Progress::Created {
                object: "volume".into(),
                name: names::volume_name(project, name),
            });
        }
    }
    Ok(())
}

/// One-off task containers are removed by whoever ran them; one that
/// finished, or whose maker is gone, was left by a devstack killed
/// meanwhile. One still running for a dead devstack (a migration, say) is
/// let finish first, within this `up`'s deadline; one a live `run` owns is
/// left alone.
async fn remove_task_leftovers<E: ContainerEngine>(
    engine: &E,
    observed: &[Observed],
    deadline: Instant,
) -> Result<(), EngineError> {
    for o in observed.iter().filter(|o| o.task.is_some()) {
        let finished = matches!(o.state, ObservedState::Exited | ObservedState::Dead);
        let orphaned =
            names::task_container_owner(&o.name).is_some_and(|pid| !crate::process::alive(pid));
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
    Ok(())
}

/// Stops and removes the containers of units the stack no longer has.
async fn remove_orphans<E: ContainerEngine>(
    engine: &E,
    stack: &Stack,
    observed: &[Observed],
    reporter: &Reporter,
) -> Result<(), EngineError> {
    let all: Vec<&str> = stack.units().map(|(n, _, _)| n).collect();
    for action in plan::plan_orphans(all, observed) {
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
    Ok(())
}

/// Builds or finds (pulling if needed) the image of every unit and task.
/// Builds run two at a time: more only fight over the CPU.
async fn resolve_images<E: ContainerEngine>(
    engine: &E,
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
            let (image, build, platform) = match key.strip_prefix("task:") {
                Some(task) => (
                    stack.tasks.get(task).and_then(|t| t.image.clone()),
                    None,
                    None,
                ),
                None => match stack.unit(&name) {
                    Some(c) => (c.image.clone(), c.build.clone(), c.platform.clone()),
                    None => (None, None, None),
                },
            };
            let tag = image
                .clone()
                .unwrap_or_else(|| names::built_image_tag(project, &name));
            if let Some(build) = build {
                // Built from these very inputs already: no build (a cached
                // `docker build` still costs a context upload and a pass
                // over every step).
                if let Some(id) = engine
                    .built_image(&name, &build, &tag, platform.as_deref())
                    .await?
                {
                    reporter.send(Progress::BuildCurrent {
                        service: name.clone(),
                        image_id: id.clone(),
                    });
                    return Ok::<_, EngineError>((key, (tag, id)));
                }
                let _permit = builds.acquire().await;
                let t0 = Instant::now();
                reporter.send(Progress::BuildStarted {
                    service: name.clone(),
                    tag: tag.clone(),
                });
                let id = engine
                    .build(&name, &build, &tag, platform.as_deref(), |out| {
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
            if let Some(id) = engine.local_image(&tag, platform.as_deref()).await? {
                return Ok((key, (tag, id)));
            }
            let id = engine
                .pull(&name, &tag, platform.as_deref(), |out| {
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

/// What every unit's reconcile shares within one `up`.
struct Run<'a, E> {
    engine: &'a E,
    stack: &'a Stack,
    request: &'a UpRequest,
    /// Each unit's signal to its dependents.
    signals: &'a HashMap<String, watch::Receiver<Signal>>,
    /// The project's containers as `up` found them.
    observed: &'a [Observed],
    /// Their published ports and addresses, as the same listing showed them.
    listed: &'a Listing,
    images: &'a Images,
    deadline: Instant,
    reporter: &'a Reporter,
    cancel: &'a CancellationToken,
    started: Instant,
}

/// One unit being reconciled: what its outcome reports.
struct Unit<'a> {
    name: &'a str,
    kind: UnitKind,
    replicas: u32,
    started: Instant,
}

impl Unit<'_> {
    fn end(&self, state: UnitState, containers: Vec<ContainerReport>) -> UnitOutcome {
        UnitOutcome {
            service: self.name.to_string(),
            kind: self.kind,
            replicas: self.replicas,
            state,
            containers,
            millis: self.started.elapsed().as_millis() as u64,
        }
    }

    fn failed(&self, reason: String) -> UnitOutcome {
        self.end(
            UnitState::Failed {
                reason,
                container: None,
                last_health: None,
                logs: Vec::new(),
            },
            Vec::new(),
        )
    }
}

/// A container started (or kept) by a unit's plan, waiting to be ready:
/// its id, its spec, and the verb the report gives it.
type Started = (String, Box<ContainerSpec>, &'static str);

/// Brings one unit to its plan: create fresh replicas once the dependencies
/// started, wait for them to be healthy, run the `before` tasks, carry out
/// the rest of the plan, wait for the replicas.
async fn reconcile_unit<E: ContainerEngine>(
    run: &Run<'_, E>,
    name: &str,
    signal: &watch::Sender<Signal>,
) -> UnitOutcome {
    let kind = if run.stack.services.contains_key(name) {
        UnitKind::Service
    } else {
        UnitKind::Datastore
    };
    let mut unit = Unit {
        name,
        kind,
        replicas: 0,
        started: run.started,
    };
    // With a datastore's default data volume, when it needs one.
    let Some(container) = plan::effective_unit(run.stack, name) else {
        return unit.failed("is not in the stack".into());
    };
    let container = &*container;
    unit.replicas = run
        .request
        .replicas
        .get(name)
        .copied()
        .unwrap_or(container.replicas);

    // 1. The plan for this unit: it needs only the image, not the dependencies.
    let Some((image, image_id)) = run.images.get(name).cloned() else {
        return unit.failed("has no image".into());
    };
    // Reached through loopback ports only: the probe port is published there.
    let published;
    let container = if run.engine.reach().0 == Reach::Published {
        published = plan::probe_published(container);
        &published
    } else {
        container
    };
    let desired = plan::desired_containers(
        &run.request.project,
        name,
        kind,
        container,
        &image,
        &image_id,
        unit.replicas,
    );
    let actions = plan::plan_unit(name, &desired, run.observed);

    // 2. Fresh replicas are created as soon as the dependencies have started,
    //    while they become healthy: on slow storage creating is a good part of
    //    a container's start-up, and a created container does nothing until it
    //    is started. Not earlier, so that creating dependents does not slow the
    //    dependencies themselves down. Replacements wait for health, so the old
    //    container keeps serving until then.
    wait_dependencies_started(run, container).await;
    let precreated = match precreate(run, name, &actions).await {
        Ok(p) => p,
        Err(e) => {
            run.reporter.send(Progress::Failed {
                service: name.to_string(),
                reason: e.to_string(),
            });
            return unit.failed(e.to_string());
        }
    };

    // 3. Wait for the dependencies, and only them.
    if let Err(by) = wait_dependencies_healthy(run, name, container).await {
        run.reporter.send(Progress::Blocked {
            service: name.to_string(),
            by: by.clone(),
        });
        return unit.end(UnitState::Blocked { by }, Vec::new());
    }

    // 4. Tasks that must succeed first, only when something is about to start.
    if actions.iter().any(|a| !a.is_noop()) {
        for task in plan::tasks_before(run.stack, name) {
            if let Err(state) = run_task_before(run, task, name).await {
                return unit.end(state, Vec::new());
            }
        }
    }

    // 5. Removals first (they free names and ports), then the rest in parallel.
    let (removals, work): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::Remove { .. }));
    if let Err(e) = remove_extra(run, name, container, removals).await {
        return unit.failed(e.to_string());
    }
    let started = match execute(run, name, work, &precreated).await {
        Ok(started) => started,
        Err(e) => {
            run.reporter.send(Progress::Failed {
                service: name.to_string(),
                reason: e.to_string(),
            });
            return unit.failed(e.to_string());
        }
    };
    let _ = signal.send(Signal::Started);

    // 6. Wait for every replica to be ready, all at once.
    wait_replicas(run, &unit, container, &image, &started).await
}

/// Waits until every dependency has at least started (or ended), or `up`
/// is cancelled.
async fn wait_dependencies_started<E>(run: &Run<'_, E>, container: &Container) {
    for dep in container
        .depends_on
        .iter()
        .filter_map(|d| run.signals.get(d))
    {
        let mut rx = dep.clone();
        tokio::select! {
            _ = rx.wait_for(|s| *s != Signal::Pending) => {}
            _ = run.cancel.cancelled() => {}
        }
    }
}

/// Creates (does not start) the unit's fresh replicas; returns their ids by name.
async fn precreate<E: ContainerEngine>(
    run: &Run<'_, E>,
    name: &str,
    actions: &[Action],
) -> Result<HashMap<String, String>, EngineError> {
    let creations = actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { spec } => Some(spec),
            _ => None,
        })
        .map(|spec| async move {
            run.reporter.send(Progress::Container {
                service: name.to_string(),
                container: spec.name.clone(),
                action: "creating".into(),
                reason: None,
            });
            let id = run.engine.create(spec).await?;
            Ok::<_, EngineError>((spec.name.clone(), id))
        });
    join_all(creations).await.into_iter().collect()
}

/// Waits until every dependency is healthy; the first that is not (failed,
/// blocked, or `up` cancelled) is the error.
async fn wait_dependencies_healthy<E>(
    run: &Run<'_, E>,
    name: &str,
    container: &Container,
) -> Result<(), String> {
    let deps: Vec<&String> = container
        .depends_on
        .iter()
        .filter(|d| run.signals.contains_key(*d))
        .collect();
    let pending: Vec<String> = deps
        .iter()
        .filter(|d| *run.signals[**d].borrow() != Signal::Healthy)
        .map(|d| d.to_string())
        .collect();
    if !pending.is_empty() {
        run.reporter.send(Progress::Waiting {
            service: name.to_string(),
            on: pending,
        });
    }
    for dep in deps {
        let mut rx = run.signals[dep].clone();
        let result = tokio::select! {
            r = rx.wait_for(|s| matches!(s, Signal::Healthy | Signal::Failed)) => r.map(|s| s.clone()).unwrap_or(Signal::Failed),
            _ = run.cancel.cancelled() => Signal::Failed,
        };
        if result != Signal::Healthy {
            return Err(dep.clone());
        }
    }
    Ok(())
}

/// Stops and removes the containers the plan removes, one after another.
async fn remove_extra<E: ContainerEngine>(
    run: &Run<'_, E>,
    name: &str,
    container: &Container,
    removals: Vec<Action>,
) -> Result<(), EngineError> {
    for action in removals {
        if let Action::Remove {
            id,
            name: c,
            reason,
        } = action
        {
            run.reporter.send(Progress::Container {
                service: name.to_string(),
                container: c,
                action: "removing".into(),
                reason: Some(reason),
            });
            run.engine.stop(&id, Some(container.stop_grace)).await?;
            run.engine.remove(&id).await?;
        }
    }
    Ok(())
}

/// Carries out the plan's keeps, starts, creations and replacements, in
/// parallel; returns the containers to wait for. The first error wins.
async fn execute<E: ContainerEngine>(
    run: &Run<'_, E>,
    name: &str,
    work: Vec<Action>,
    precreated: &HashMap<String, String>,
) -> Result<Vec<Started>, EngineError> {
    let executed = join_all(
        work.into_iter()
            .map(|action| execute_one(run, name, action, precreated)),
    )
    .await;
    let mut started = Vec::new();
    for result in executed {
        started.extend(result?);
    }
    Ok(started)
}

/// One action of the plan (removals were carried out before).
async fn execute_one<E: ContainerEngine>(
    run: &Run<'_, E>,
    name: &str,
    action: Action,
    precreated: &HashMap<String, String>,
) -> Result<Option<Started>, EngineError> {
    let report = |container: &str, action: &str, reason: Option<String>| {
        run.reporter.send(Progress::Container {
            service: name.to_string(),
            container: container.to_string(),
            action: action.into(),
            reason,
        })
    };
    match action {
        Action::Keep { id, spec } => {
            report(&spec.name, "up to date", None);
            Ok(Some((id, spec, "kept")))
        }
        Action::Start { id, spec } => {
            report(&spec.name, "starting", None);
            run.engine.start(&id, name).await?;
            Ok(Some((id, spec, "started")))
        }
        Action::Create { spec } => {
            let id = match precreated.get(&spec.name) {
                Some(id) => id.clone(),
                None => {
                    report(&spec.name, "creating", None);
                    run.engine.create(&spec).await?
                }
            };
            run.engine.start(&id, name).await?;
            Ok(Some((id, spec, "created")))
        }
        Action::Recreate {
            id,
            mut spec,
            reason,
        } => {
            report(&spec.name, "recreating", Some(reason));
            replace(run, &id, &mut spec).await?;
            // A replacement's data volume is not fresh, so no seed here.
            let new = run.engine.create(&spec).await?;
            run.engine.start(&new, name).await?;
            Ok(Some((new, spec, "recreated")))
        }
        Action::Remove { .. } => Ok(None),
    }
}

/// Takes container `old` away for its replacement `spec`: stops it, carries
/// its anonymous volumes over, moves data an older devstack left outside
/// the named data volume, removes it.
async fn replace<E: ContainerEngine>(
    run: &Run<'_, E>,
    old: &str,
    spec: &mut ContainerSpec,
) -> Result<(), EngineError> {
    run.engine.stop(old, Some(spec.stop_grace)).await?;
    // Read before the old one goes: the anonymous volumes the new one
    // keeps, and data an older devstack left outside the named data volume.
    let mounts = run.engine.carry_volumes_from(spec, old).await?;
    let moving = OldData {
        id: old,
        created: run.observed.iter().find(|o| o.id == old).map(|o| o.created),
        mounts: &mounts,
    };
    let data_volume = plan::data_volume(run.stack, &spec.service);
    move_old_data(
        run.engine,
        &run.request.project,
        data_volume.as_ref(),
        &moving,
        spec,
        run.reporter,
    )
    .await?;
    run.engine.remove(old).await
}

/// Waits for the unit's started containers to be ready, all at once; the
/// first that is not fails the unit with its probe output and last lines.
async fn wait_replicas<E: ContainerEngine>(
    run: &Run<'_, E>,
    unit: &Unit<'_>,
    container: &Container,
    image: &str,
    started: &[Started],
) -> UnitOutcome {
    let name = unit.name;
    // Kept containers the routing path already follows as healthy are not
    // probed again (a no-op `up` of a running stack).
    let known = |id: &str, verb: &str| verb == "kept" && run.request.known_healthy.contains(id);
    let check = if started.iter().all(|(id, _, verb)| known(id, verb)) {
        Check::Running
    } else {
        run.engine
            .health_check(container.health.as_ref(), image)
            .await
    };
    let network = names::network_name(&run.request.project);
    let waits = started.iter().map(|(id, spec, verb)| {
        let check = check.clone();
        let network = network.clone();
        async move {
            if known(id, verb) {
                return (Ok(Duration::ZERO), None);
            }
            let mut last = None;
            let result = run
                .engine
                .wait_ready(
                    id,
                    &network,
                    container.restart,
                    &check,
                    run.deadline,
                    run.cancel,
                    |detail| {
                        last = Some(detail.to_string());
                        run.reporter.send(Progress::Probe {
                            service: name.to_string(),
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
    for ((id, spec, verb), (result, last)) in started.iter().zip(results) {
        let not_ready = match result {
            Ok(_) => {
                run.reporter.send(Progress::Ready {
                    service: name.to_string(),
                    container: spec.name.clone(),
                    millis: run.started.elapsed().as_millis() as u64,
                });
                // A kept container is as the listing showed it.
                let (published, ip) = match run.listed.get(id) {
                    Some((p, ip)) if *verb == "kept" => (p.clone(), *ip),
                    _ => run
                        .engine
                        .inspect(id, &network)
                        .await
                        .map(|s| (s.published, s.ip))
                        .unwrap_or_default(),
                };
                reports.push(ContainerReport {
                    name: spec.name.clone(),
                    id: id.clone(),
                    action: verb.to_string(),
                    published,
                    ip,
                });
                continue;
            }
            Err(not_ready) => not_ready,
        };
        let reason = format!("`{}` {not_ready}", spec.name);
        run.reporter.send(Progress::Failed {
            service: name.to_string(),
            reason: reason.clone(),
        });
        let logs = if not_ready == NotReady::Cancelled {
            Vec::new()
        } else {
            run.engine.last_lines(id, 20).await
        };
        let last_health = match &not_ready {
            NotReady::Unhealthy { last } | NotReady::Timeout { last } => Some(last.clone()),
            _ => last,
        };
        return unit.end(
            UnitState::Failed {
                reason,
                container: Some(spec.name.clone()),
                last_health,
                logs,
            },
            reports,
        );
    }
    run.reporter.send(Progress::Healthy {
        service: name.to_string(),
        millis: run.started.elapsed().as_millis() as u64,
    });
    unit.end(UnitState::Healthy, reports)
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
async fn move_old_data<E: ContainerEngine>(
    engine: &E,
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

/// Runs a task that must succeed before `before` starts; on failure the unit
/// fails with the task's exit code and output.
async fn run_task_before<E: ContainerEngine>(
    run: &Run<'_, E>,
    task: &str,
    before: &str,
) -> Result<(), UnitState> {
    let (engine, stack, project, images, reporter) = (
        run.engine,
        run.stack,
        run.request.project.as_str(),
        run.images,
        run.reporter,
    );
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
pub async fn down<E: ContainerEngine>(
    engine: &E,
    project: &str,
    grace: Option<Duration>,
    volumes: bool,
    reporter: &Reporter,
) -> Result<DownOutcome, EngineError> {
    let observed = engine.list_project(project).await?;
    let (datastores, first): (Vec<&Observed>, Vec<&Observed>) =
        observed.iter().partition(|o| is_datastore(o));
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

fn is_datastore(o: &Observed) -> bool {
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
pub async fn stop_all<E: ContainerEngine>(
    engine: &E,
    project: &str,
    grace: Option<Duration>,
    reporter: &Reporter,
) -> Result<(), EngineError> {
    let observed = engine.list_project(project).await?;
    let (datastores, first): (Vec<&Observed>, Vec<&Observed>) =
        observed.iter().partition(|o| is_datastore(o));
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
pub async fn kill_all<E: ContainerEngine>(engine: &E, project: &str) -> Result<(), EngineError> {
    let observed = engine.list_project(project).await?;
    for r in join_all(observed.iter().map(|o| engine.kill(&o.id))).await {
        r?;
    }
    Ok(())
}

/// The image a task runs, built or pulled if it is missing (`devstack run`).
pub async fn task_image<E: ContainerEngine>(
    engine: &E,
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
pub async fn prepare_task<E: ContainerEngine>(
    engine: &E,
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

#[cfg(test)]
mod tests;
