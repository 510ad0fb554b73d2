//! The watch loop of a running stack: each debounced save in a service's
//! sources rebuilds and swaps (or restarts, or syncs) it, one at a time, and
//! each edit of the stack files the follower publishes is applied to the
//! running stack; one line (or one JSON event) per result. One watcher per
//! project, held by the watch lock in its state directory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::follow::{Edit, Follower};
use super::overlay::FastPath;
use super::{state, LoadedStack, Signals, Tasks};
use crate::engine::apply::{self, UnitState, UpRequest};
use crate::engine::progress::Reporter;
use crate::engine::{context, Engine};
use crate::plan;
use crate::plan::names::ProjectName;
use crate::router::Layout;
use crate::spec::{Etcd, Stack, WatchAction};
use crate::ui::{engine_failure, exit, Failed};
use crate::watcher::sync::Syncer;
use crate::watcher::{burst, edit, fs, swap, Burst, Filter};

/// How long units that an edit of the stack file adds may take to be healthy.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// `devstack watch [SERVICE...]`: checks what to watch, claims the project's
/// watch lock, starts the routing agent again if the stack runs without
/// one, then watches until Ctrl-C.
pub async fn run(loaded: &LoadedStack, services: &[String], json: bool) -> anyhow::Result<u8> {
    let stack = &loaded.stack;
    for s in services {
        if stack
            .services
            .get(s)
            .and_then(|x| x.container.build.as_ref())
            .is_none()
        {
            let hint = plan::graph::suggest(s, stack.services.keys().map(|k| k.as_str()));
            return Err(Failed::new(
                exit::USAGE,
                format!("`{s}` is not a service with a build in this stack{hint}"),
            )
            .into());
        }
    }
    let (targets, actions) = watched(stack, services)?;
    if targets.is_empty() {
        return Err(Failed::new(
            exit::FAILURE,
            "no service of this stack has a build to watch",
        )
        .into());
    }
    // One watcher per project: two would rebuild and swap the same save twice.
    let _claim = claim(&loaded.project).map_err(|e| Failed::new(exit::FAILURE, e))?;
    let engine = crate::ui::connect().await?.with_state(state::state_root());
    // A running stack whose routing agent is gone (killed, a reboot) would
    // swap containers behind a proxy that no longer follows them: the agent
    // is started again first, as `up --detach` does.
    let running = engine
        .list_project(&loaded.project)
        .await
        .map_err(engine_failure)?
        .iter()
        .any(|o| o.task.is_none() && o.state == crate::plan::ObservedState::Running);
    if running && state::read(&loaded.project)?.is_none() {
        if let Err(e) = super::agent::spawn_agent(loaded).await {
            sayln!("warning: routing is off for {}: {e:#}", loaded.project);
        }
    }
    // Probes and swaps follow the routing path's reach decision.
    super::agent::adopt_reach(&engine, &loaded.project);
    let tasks = Tasks::new();
    let _signals = super::on_signals(&tasks, Signals::Interrupt);
    let follower = Follower::start(loaded, &tasks);
    if !json {
        sayln!(
            "watching {} (Ctrl-C to stop)",
            actions.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let result = watch_loop(
        &engine,
        loaded,
        services,
        json,
        follower.edits(),
        tasks.stop_token(),
    )
    .await;
    tasks.join().await;
    result
}

/// Claims the right to watch the project's sources (the watch lock in its
/// state directory, held until the returned lock drops or the process ends),
/// or says who holds it.
pub fn claim(project: &ProjectName) -> Result<state::StateLock, String> {
    match state::try_lock(project, state::LockKind::Watch) {
        Ok(lock) => Ok(lock),
        Err(state::LockError::Held { holder, .. }) => Err(format!(
            "the sources of `{project}` are already watched{} (a foreground `devstack up` watches too); one watcher per project",
            holder.map(|p| format!(" by process {p}")).unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// What a change to a service does.
#[derive(Debug)]
pub enum Mode {
    Rebuild,
    Restart,
    Sync(Syncer),
}

/// What each service watches, and what a change to it does.
pub type Watched = (Vec<fs::Target>, BTreeMap<String, Mode>);

/// The watched roots of the services with a build (all, or those named);
/// none when no service has one.
pub fn watched(stack: &Stack, services: &[String]) -> anyhow::Result<Watched> {
    let mut targets = Vec::new();
    let mut actions = BTreeMap::new();
    for (name, svc) in &stack.services {
        if !services.is_empty() && !services.contains(name) {
            continue;
        }
        let build = svc.container.build.as_ref();
        let (paths, ignore, action) = match (&svc.watch, build) {
            (Some(w), _) if !w.paths.is_empty() => (w.paths.clone(), w.ignore.clone(), w.action),
            (Some(w), Some(b)) => (vec![b.context.clone()], w.ignore.clone(), w.action),
            (None, Some(b)) => (vec![b.context.clone()], Vec::new(), WatchAction::Rebuild),
            // Nothing to watch: no build context and no paths.
            (_, None) => continue,
        };
        let mode = match (action, &svc.watch) {
            (WatchAction::Rebuild, _) => Mode::Rebuild,
            (WatchAction::Restart, _) => Mode::Restart,
            (WatchAction::Sync, Some(w)) => {
                // The loader insists on a target for sync; "/" only if that ever slips.
                let target = w.target.as_deref().unwrap_or("/");
                Mode::Sync(
                    Syncer::new(name, &paths, target, &w.rebuild_on, w.then.clone())
                        .map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?,
                )
            }
            (WatchAction::Sync, None) => Mode::Rebuild,
        };
        actions.insert(name.clone(), mode);
        for root in paths {
            // .dockerignore applies to the context only; another watched path has its own rules.
            let dockerignore = if build.map(|b| &b.context) == Some(&root) {
                context::dockerignore(&root)
                    .map_err(|e| Failed::new(exit::FAILURE, format!("service `{name}`: {e}")))?
            } else {
                ignore::gitignore::Gitignore::empty()
            };
            let filter = Filter::new(name, &root, dockerignore, &ignore)
                .map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
            targets.push(fs::Target {
                service: name.clone(),
                filter,
            });
        }
    }
    Ok((targets, actions))
}

/// Watches until `cancel`: each debounced change rebuilds (or syncs, or
/// restarts) its service, one at a time, and is reported as a line or a JSON
/// event; an edit of the stack file applies to the running stack. `services`
/// limits both to those named (and their dependencies) when not empty.
/// Returns once the old containers swaps left behind have stopped.
pub async fn watch_loop(
    engine: &Engine,
    loaded: &LoadedStack,
    services: &[String],
    json: bool,
    edits: watch::Receiver<Option<Edit>>,
    cancel: &CancellationToken,
) -> anyhow::Result<u8> {
    // Swapped-out containers drain and stop in the background while the
    // next change runs; they are waited for here, so none is left half way.
    let retiring = swap::Retiring::default();
    let result = watch_changes(engine, loaded, services, json, edits, &retiring, cancel).await;
    if !retiring.is_empty() && !json {
        sayln!(
            "watch: waiting for {} replaced container(s) to stop",
            retiring.len()
        );
    }
    retiring.finish().await;
    result
}

async fn watch_changes(
    engine: &Engine,
    loaded: &LoadedStack,
    services: &[String],
    json: bool,
    edits: watch::Receiver<Option<Edit>>,
    retiring: &swap::Retiring,
    cancel: &CancellationToken,
) -> anyhow::Result<u8> {
    // The stack as last applied: an edit of the stack file replaces it.
    let mut current = loaded.stack.clone();
    let project = &loaded.project;
    // Whether a registry runs decides whether swaps wait for registration.
    let discovery = match (state::read(project)?, &current.discovery.etcd) {
        (Some(s), _) => Some(s.endpoints),
        (None, Etcd::External { endpoints }) => Some(endpoints.clone()),
        (None, Etcd::Embedded) => None,
    }
    .map(|endpoints| swap::Discovery {
        endpoints,
        layout: Layout::new(&current.discovery, project),
    });

    let (htx, hrx) = mpsc::unbounded_channel();
    let (ctx, mut crx) = mpsc::unbounded_channel::<Burst>();
    let (targets, mut actions) = watched(&current, services)?;
    let mut sources =
        fs::watch(targets, htx.clone()).map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
    // Joined at the end of this function, whatever ends it.
    let done = CancellationToken::new();
    let debouncer = {
        let done = done.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = burst::run(hrx, ctx, burst::QUIET, burst::MAX_DELAY) => {}
                _ = done.cancelled() => {}
            }
        })
    };
    // Saves during this first build wait in the queue: nothing is lost.
    let built_services: Vec<String> = actions
        .iter()
        .filter(|(_, m)| !matches!(m, Mode::Restart))
        .map(|(s, _)| s.clone())
        .collect();
    let mut fast = tokio::select! {
        f = FastPath::start(engine, &current, project, &built_services, json) => f,
        _ = cancel.cancelled() => FastPath::default(),
    };
    let result: anyhow::Result<u8> = async {
        // Changes waiting their turn, one per service (the latest state wins).
        let mut queue: BTreeMap<String, Burst> = BTreeMap::new();
        let mut edits = Edits::new(edits);
        loop {
            if queue.is_empty() && !edits.waiting() {
                tokio::select! {
                    c = crx.recv() => match c {
                        Some(c) => enqueue(&mut queue, c),
                        None => return Ok(exit::OK),
                    },
                    () = edits.changed() => {}
                    _ = cancel.cancelled() => return Ok(exit::OK),
                }
            }
            while let Ok(c) = crx.try_recv() {
                enqueue(&mut queue, c);
            }
            // An edit of the stack file goes first, before any source change.
            if let Some(edit) = edits.take() {
                let next = match edit.stack {
                    Ok(next) => Stack::clone(&next),
                    Err(report) => {
                        // The running stack stays as it is until the file is valid again.
                        say!("{}", report.render(false));
                        continue;
                    }
                };
                let trigger = edit.file.display().to_string();
                fast.forget();
                let applied = tokio::select! {
                    a = apply_edit(engine, &current, next, project, services, &trigger, discovery.as_ref(), retiring, json, cancel) => a,
                    _ = cancel.cancelled() => return Ok(exit::INTERRUPTED),
                };
                current = applied.stack;
                if applied.watch_rules {
                    // New watchers first, so no save falls between the two.
                    match watched(&current, services)
                        .and_then(|(t, a)| Ok((fs::watch(t, htx.clone())?, a)))
                    {
                        Ok((w, a)) => {
                            sources = w;
                            actions = a;
                        }
                        Err(e) => sayln!("watch: the new watch rules are not applied: {e:#}"),
                    }
                }
                continue;
            }
            let Some((service, change)) = queue.pop_first() else {
                continue;
            };
            let trigger = change.file.display().to_string();
            let report = match actions.get(&service) {
                // A service the edited stack file no longer watches.
                None => continue,
                Some(Mode::Restart) => restart(engine, project, &service, &trigger, &current).await?,
                Some(Mode::Sync(sync)) if !sync.needs_rebuild(&change.files) => {
                    fast.changed_in_place(&service, &change.files);
                    sync.run(engine, project, &service, &trigger, &change.files)
                        .await
                }
                // A dependency manifest changed in sync mode, or rebuild mode.
                _ => {
                    fast.stop_behind(&service);
                    let swapper = swap::Swap {
                        engine,
                        stack: &current,
                        project,
                        registry: discovery.as_ref(),
                        retiring,
                        cancel,
                    };
                    let t0 = Instant::now();
                    match fast.attempt(engine, &current, project, &service, &change.files, retiring).await {
                        Ok(attempt) => {
                            let build_ms = t0.elapsed().as_millis() as u64;
                            let t1 = Instant::now();
                            let outcome = tokio::select! {
                                o = swapper.deploy(&service, &attempt.built) => o,
                                _ = cancel.cancelled() => return Ok(exit::INTERRUPTED),
                            };
                            let placed = attempt.built.overlay.as_ref().map(|o| o.files.len());
                            let report = swap::Report {
                                service: service.clone(),
                                trigger: trigger.clone(),
                                build_ms,
                                swap_ms: t1.elapsed().as_millis() as u64,
                                superseded: 0,
                                overlay: placed,
                                full_build: None,
                                outcome,
                            };
                            fast.swapped_fast(engine, &current, project, &service, attempt, &report.outcome);
                            report
                        }
                        Err(why) => {
                            let files = change.files.clone();
                            let latest = rebuild_latest(
                                engine,
                                &current,
                                project,
                                change,
                                &mut crx,
                                &mut queue,
                                discovery.as_ref(),
                                retiring,
                                cancel,
                            );
                            match latest.await {
                                Some((mut r, image)) => {
                                    fast.swapped_full(engine, &service, image.as_deref(), &r.outcome, &files);
                                    r.full_build = Some(why);
                                    r
                                }
                                None => return Ok(exit::INTERRUPTED),
                            }
                        }
                    }
                }
            };
            print(&report, json);
        }
    }
    .await;
    fast.finish().await;
    drop((sources, htx));
    done.cancel();
    let _ = debouncer.await;
    result
}

/// The stack-file edits a watch loop has yet to apply: the latest one the
/// follower published, taken once.
struct Edits {
    rx: watch::Receiver<Option<Edit>>,
    /// The follower still publishes.
    open: bool,
    /// An edit arrived and is not taken yet (`changed` marks it seen, so
    /// `has_changed` alone would miss it).
    waiting: bool,
}

impl Edits {
    fn new(rx: watch::Receiver<Option<Edit>>) -> Edits {
        Edits {
            rx,
            open: true,
            waiting: false,
        }
    }

    /// Whether an edit waits to be taken.
    fn waiting(&mut self) -> bool {
        self.waiting |= self.open && self.rx.has_changed().unwrap_or(false);
        self.waiting
    }

    /// Returns once an edit arrives; never once the follower is gone (saves
    /// are still watched).
    async fn changed(&mut self) {
        if !self.open {
            return std::future::pending().await;
        }
        match self.rx.changed().await {
            Ok(()) => self.waiting = true,
            Err(_) => {
                self.open = false;
                std::future::pending().await
            }
        }
    }

    /// The edit waiting, if one is.
    fn take(&mut self) -> Option<Edit> {
        if !self.waiting() {
            return None;
        }
        self.waiting = false;
        self.rx.borrow_and_update().clone()
    }
}

/// Adds a change to the queue, folded into one already waiting for its service.
fn enqueue(queue: &mut BTreeMap<String, Burst>, change: Burst) {
    match queue.get_mut(&change.service) {
        Some(waiting) => waiting.absorb(change),
        None => {
            queue.insert(change.service.clone(), change);
        }
    }
}

/// Rebuilds a service and swaps it in. A save of the same service during the
/// build abandons that build for a new one, so an image older than the
/// files is never deployed; other services' changes wait in `queue`. The
/// report, with the image built; `None` when cancelled.
#[allow(clippy::too_many_arguments)]
async fn rebuild_latest(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    mut change: Burst,
    changes: &mut mpsc::UnboundedReceiver<Burst>,
    queue: &mut BTreeMap<String, Burst>,
    discovery: Option<&swap::Discovery>,
    retiring: &swap::Retiring,
    cancel: &CancellationToken,
) -> Option<(swap::Report, Option<String>)> {
    let service = change.service.clone();
    let t0 = Instant::now();
    let mut superseded = 0;
    let mut open = true;
    let built = 'build: loop {
        // Dropping this future ends the engine's build (the connection closes).
        let build = swap::build(engine, stack, project, &service);
        tokio::pin!(build);
        loop {
            tokio::select! {
                r = &mut build => break 'build r,
                c = changes.recv(), if open => match c {
                    Some(c) if c.service == service => {
                        change.absorb(c);
                        superseded += 1;
                        continue 'build;
                    }
                    Some(c) => enqueue(queue, c),
                    None => open = false,
                },
                _ = cancel.cancelled() => return None,
            }
        }
    };
    let build_ms = t0.elapsed().as_millis() as u64;
    let t1 = Instant::now();
    let swapper = swap::Swap {
        engine,
        stack,
        project,
        registry: discovery,
        retiring,
        cancel,
    };
    let image = built.as_ref().ok().map(|b| b.image_id.clone());
    let outcome = match built {
        Ok(built) => tokio::select! {
            o = swapper.deploy(&service, &built) => o,
            _ = cancel.cancelled() => return None,
        },
        Err(outcome) => outcome,
    };
    let report = swap::Report {
        service,
        trigger: change.file.display().to_string(),
        build_ms,
        swap_ms: t1.elapsed().as_millis() as u64,
        superseded,
        overlay: None,
        full_build: None,
        outcome,
    };
    Some((report, image))
}

/// The stack an edit left running, and whether the watchers need remaking.
struct Applied {
    stack: Stack,
    watch_rules: bool,
}

/// Applies an edit of the stack file: changed services are swapped
/// blue-green, new units started, datastores that changed replaced, units
/// the file lost removed, each reported like a rebuild. A service whose new
/// version fails keeps its old configuration in the returned stack, so no
/// later step replaces it by another route, and the next edit tries again.
#[allow(clippy::too_many_arguments)]
async fn apply_edit(
    engine: &Engine,
    current: &Stack,
    next: Stack,
    project: &str,
    services: &[String],
    trigger: &str,
    discovery: Option<&swap::Discovery>,
    retiring: &swap::Retiring,
    json: bool,
    cancel: &CancellationToken,
) -> Applied {
    let mut change = edit::diff(current, &next);
    if !services.is_empty() {
        // Only what `up SERVICE...` (or `watch SERVICE...`) brought up.
        let scope = plan::dependency_closure(&next, services).unwrap_or_default();
        let old_scope = plan::dependency_closure(current, services).unwrap_or_default();
        change.swap.retain(|u| scope.contains(u));
        change.start.retain(|u| scope.contains(u));
        change.remove.retain(|u| old_scope.contains(u));
    }
    let mut stack = next;
    let report = |service: &str, ms: u64, outcome: swap::Outcome| swap::Report {
        service: service.into(),
        trigger: trigger.into(),
        build_ms: 0,
        swap_ms: ms,
        superseded: 0,
        overlay: None,
        full_build: None,
        outcome,
    };
    for name in &change.swap {
        let swapper = swap::Swap {
            engine,
            stack: &stack,
            project,
            registry: discovery,
            retiring,
            cancel,
        };
        let r = swapper.rebuild(name, trigger).await;
        if !matches!(r.outcome, swap::Outcome::Swapped { .. }) {
            if let (Some(old), Some(slot)) =
                (current.services.get(name), stack.services.get_mut(name))
            {
                *slot = old.clone();
            }
        }
        print(&r, json);
    }
    if !change.start.is_empty() {
        let t0 = Instant::now();
        let request = UpRequest {
            project: project.to_string(),
            services: change.start.clone(),
            replicas: BTreeMap::new(),
            timeout: START_TIMEOUT,
            remove_orphans: false,
            known_healthy: Default::default(),
        };
        match apply::up(engine, &stack, &request, &Reporter::silent(), cancel).await {
            Err(e) => print(
                &report(
                    &change.start.join(", "),
                    0,
                    swap::Outcome::Failed {
                        message: e.to_string(),
                    },
                ),
                json,
            ),
            Ok(outcome) => {
                let ms = t0.elapsed().as_millis() as u64;
                for unit in outcome
                    .units
                    .iter()
                    .filter(|u| change.start.contains(&u.service))
                {
                    let containers = unit.containers.iter().map(|c| c.name.clone()).collect();
                    let o = match &unit.state {
                        UnitState::Healthy => swap::Outcome::Started { containers },
                        UnitState::Failed {
                            reason,
                            last_health,
                            logs,
                            container,
                        } => swap::Outcome::Unhealthy {
                            container: container.clone().unwrap_or_default(),
                            reason: reason.clone(),
                            health: last_health.clone(),
                            logs: logs.clone(),
                        },
                        UnitState::Blocked { by } => swap::Outcome::Failed {
                            message: format!("not started: `{by}` failed"),
                        },
                    };
                    print(&report(&unit.service, ms, o), json);
                }
            }
        }
    }
    if !change.remove.is_empty() {
        let t0 = Instant::now();
        let removed = remove_units(engine, current, project, &change.remove).await;
        let ms = t0.elapsed().as_millis() as u64;
        let o = match removed {
            Ok(containers) => swap::Outcome::Removed { containers },
            Err(e) => swap::Outcome::Failed {
                message: e.to_string(),
            },
        };
        print(&report(&change.remove.join(", "), ms, o), json);
    }
    if !change.later.is_empty() {
        let what = change.later.join(", ");
        if json {
            outln!(
                "{}",
                serde_json::json!({ "event": "not-applied", "trigger": trigger, "changed": change.later })
            );
        } else {
            outln!("stack file: {what} changed; the running routing path applies that at the next `devstack down` and `up`");
        }
    }
    Applied {
        stack,
        watch_rules: change.watch_rules,
    }
}

/// Stops and removes the containers of `units` (their registrations go with
/// them, since the registrar follows the engine's events).
async fn remove_units(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    units: &[String],
) -> Result<Vec<String>, crate::engine::EngineError> {
    let observed = engine.list_project(project).await?;
    let mut removed = Vec::new();
    for o in observed
        .iter()
        .filter(|o| o.task.is_none() && o.service.as_ref().is_some_and(|s| units.contains(s)))
    {
        let grace = o
            .service
            .as_deref()
            .and_then(|s| stack.unit(s))
            .map(|u| u.stop_grace);
        engine.stop(&o.id, grace).await?;
        engine.remove(&o.id).await?;
        removed.push(o.name.clone());
    }
    Ok(removed)
}

fn print(report: &swap::Report, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(report) {
            outln!("{line}");
        }
        return;
    }
    outln!("{}", report.line());
    if let swap::Outcome::Unhealthy { health, logs, .. } = &report.outcome {
        if let Some(h) = health {
            outln!("  health: {h}");
        }
        for l in logs {
            outln!("  | {l}");
        }
    }
}

/// `watch.action: restart`: restart the running containers, no new image.
async fn restart(
    engine: &Engine,
    project: &str,
    service: &str,
    trigger: &str,
    stack: &Stack,
) -> anyhow::Result<swap::Report> {
    let t0 = std::time::Instant::now();
    let grace = stack
        .unit(service)
        .map(|u| u.stop_grace)
        .unwrap_or(Duration::from_secs(10));
    let observed = engine.list_project(project).await.map_err(engine_failure)?;
    let mut names = Vec::new();
    let mut failure = None;
    for o in observed
        .iter()
        .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
    {
        match engine.restart(&o.id, grace).await {
            Ok(()) => names.push(o.name.clone()),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    Ok(swap::Report {
        service: service.into(),
        trigger: trigger.into(),
        build_ms: 0,
        swap_ms: t0.elapsed().as_millis() as u64,
        superseded: 0,
        overlay: None,
        full_build: None,
        outcome: match failure {
            Some(message) => swap::Outcome::Failed { message },
            None => swap::Outcome::Swapped { containers: names },
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn edit(name: &str) -> Option<Edit> {
        Some(Edit {
            file: PathBuf::from(name),
            stack: Err(Arc::new(crate::spec::Report {
                sources: Default::default(),
                problems: Vec::new(),
            })),
        })
    }

    fn file(e: Option<Edit>) -> Option<PathBuf> {
        e.map(|e| e.file)
    }

    #[tokio::test]
    async fn an_edit_the_loop_waited_for_is_taken_once() {
        let (tx, rx) = watch::channel(None);
        let mut edits = Edits::new(rx);
        assert!(!edits.waiting());
        tx.send_replace(edit("a.yaml"));
        // Waited for first (the loop was idle), then taken: the regression
        // was an edit marked seen by the wait and never applied.
        tokio::time::timeout(Duration::from_secs(5), edits.changed())
            .await
            .expect("the edit wakes the loop");
        assert_eq!(file(edits.take()), Some(PathBuf::from("a.yaml")));
        assert!(edits.take().is_none(), "an edit is applied once");
    }

    #[tokio::test]
    async fn an_edit_that_came_while_busy_is_taken_and_the_latest_wins() {
        let (tx, rx) = watch::channel(None);
        let mut edits = Edits::new(rx);
        // Two edits while the loop was rebuilding: only the latest applies.
        tx.send_replace(edit("first.yaml"));
        tx.send_replace(edit("second.yaml"));
        assert!(edits.waiting());
        assert_eq!(file(edits.take()), Some(PathBuf::from("second.yaml")));
        assert!(!edits.waiting());
    }

    #[tokio::test]
    async fn a_gone_follower_leaves_the_loop_waiting_for_saves() {
        let (tx, rx) = watch::channel(None);
        let mut edits = Edits::new(rx);
        drop(tx);
        // Neither an edit nor a busy loop: the wait never returns.
        let waited = tokio::time::timeout(Duration::from_millis(50), edits.changed()).await;
        assert!(waited.is_err(), "a closed follower never wakes the loop");
        assert!(edits.take().is_none());
        let again = tokio::time::timeout(Duration::from_millis(50), edits.changed()).await;
        assert!(again.is_err());
    }
}
