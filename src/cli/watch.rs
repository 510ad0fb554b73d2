//! `devstack watch [SERVICE...]`: watch the sources of services with a build,
//! and on each debounced change rebuild and swap (or restart) the service,
//! one line (or one JSON event) per rebuild.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::args::{GlobalArgs, WatchArgs};
use super::stack::{load_stack, LoadedStack};
use super::up::{connect, engine_failure};
use super::{exit, Failed};
use crate::engine::{context, Engine};
use crate::plan;
use crate::router::state;
use crate::spec::{Etcd, LoadOptions, Stack, WatchAction};
use crate::watcher::sync::Sync;
use crate::watcher::{debounce, fs, swap, Change, Filter};

/// Quiet time that ends a burst of saves; editors write a file in a few ms.
const QUIET: Duration = Duration::from_millis(150);
/// A steady stream of writes still rebuilds this long after it began.
const MAX_DELAY: Duration = Duration::from_secs(2);

pub async fn run(global: &GlobalArgs, args: WatchArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let stack = &loaded.stack;
    for s in &args.services {
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
    let (targets, actions) = watched(stack, &args.services)?;
    let engine = connect().await?;
    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    if !args.json {
        eprintln!(
            "watching {} (Ctrl-C to stop)",
            actions.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    watch_loop(&engine, &loaded, targets, actions, args.json, &cancel).await
}

/// What a change to a service does.
#[derive(Debug)]
pub(crate) enum Mode {
    Rebuild,
    Restart,
    Sync(Sync),
}

/// What each service watches, and what a change to it does.
pub(crate) type Watched = (Vec<fs::Target>, BTreeMap<String, Mode>);

/// The watched roots of the services with a build (all, or those named).
pub(crate) fn watched(stack: &Stack, services: &[String]) -> anyhow::Result<Watched> {
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
                    Sync::new(name, &paths, target, &w.rebuild_on, w.then.clone())
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
    if targets.is_empty() {
        return Err(Failed::new(
            exit::FAILURE,
            "no service of this stack has a build to watch",
        )
        .into());
    }
    Ok((targets, actions))
}

/// Watches until `cancel`: each debounced change rebuilds (or restarts) its
/// service, one at a time, and is reported as a line or a JSON event.
pub(crate) async fn watch_loop(
    engine: &Engine,
    loaded: &LoadedStack,
    targets: Vec<fs::Target>,
    actions: BTreeMap<String, Mode>,
    json: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<u8> {
    // The stack as last loaded: an edit of the stack file replaces it.
    let mut current = loaded.stack.clone();
    let stack = &loaded.stack;
    // Whether a registry runs decides whether swaps wait for registration.
    let discovery = match (state::read(&loaded.project), &stack.discovery.etcd) {
        (Some(s), _) => Some(s.endpoints),
        (None, Etcd::External { endpoints }) => Some(endpoints.clone()),
        (None, Etcd::Embedded) => None,
    }
    .map(|endpoints| swap::Discovery {
        endpoints,
        prefix: stack.discovery.prefix.clone(),
    });

    let (htx, hrx) = mpsc::unbounded_channel();
    let htx_stack = htx.clone();
    let (ctx, mut crx) = mpsc::unbounded_channel::<Change>();
    let _watcher =
        fs::watch(targets, htx).map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
    let _stack_watcher = fs::watch_files(&loaded.files, htx_stack)
        .map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
    tokio::spawn(debounce::run(hrx, ctx, QUIET, MAX_DELAY));
    loop {
        let first = tokio::select! {
            c = crx.recv() => c,
            _ = cancel.cancelled() => return Ok(exit::OK),
        };
        let Some(first) = first else {
            return Ok(exit::OK);
        };
        // Changes that queued during the previous rebuild: one rebuild per
        // service, with the latest trigger, so the last state wins.
        let mut batch = BTreeMap::new();
        batch.insert(first.service.clone(), first);
        while let Ok(c) = crx.try_recv() {
            batch.insert(c.service.clone(), c);
        }
        for (service, change) in batch {
            let trigger = change.file.display().to_string();
            if service == fs::STACK {
                // The stack file changed: the services whose configuration
                // changed are redeployed the same way; the rest are untouched.
                match crate::spec::load(&LoadOptions::new(loaded.files.clone())) {
                    Err(report) => {
                        // The running stack stays as it is until the file is valid again.
                        eprint!("{}", report.render(false));
                    }
                    Ok(next) => {
                        let changed: Vec<String> = next
                            .services
                            .iter()
                            .filter(|(n, svc)| current.services.get(*n).is_some_and(|o| o != *svc))
                            .map(|(n, _)| n.clone())
                            .collect();
                        current = next;
                        for name in changed {
                            let report = swap::rebuild(
                                engine,
                                &current,
                                &loaded.project,
                                &name,
                                &trigger,
                                discovery.as_ref(),
                                cancel,
                            );
                            let report = tokio::select! {
                                r = report => r,
                                _ = cancel.cancelled() => return Ok(exit::INTERRUPTED),
                            };
                            print(&report, json);
                        }
                    }
                }
                continue;
            }
            let stack = &current;
            let rebuild = swap::rebuild(
                engine,
                stack,
                &loaded.project,
                &service,
                &trigger,
                discovery.as_ref(),
                cancel,
            );
            let report = match actions.get(&service) {
                Some(Mode::Restart) => {
                    restart(engine, &loaded.project, &service, &trigger, stack).await?
                }
                Some(Mode::Sync(sync)) if !sync.needs_rebuild(&change.files) => {
                    sync.run(engine, &loaded.project, &service, &trigger, &change.files)
                        .await
                }
                // A dependency manifest changed in sync mode, or rebuild mode.
                _ => tokio::select! {
                    r = rebuild => r,
                    _ = cancel.cancelled() => return Ok(exit::INTERRUPTED),
                },
            };
            print(&report, json);
        }
    }
}

fn print(report: &swap::Report, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(report) {
            println!("{line}");
        }
        return;
    }
    println!("{}", report.line());
    if let swap::Outcome::Unhealthy { health, logs, .. } = &report.outcome {
        if let Some(h) = health {
            println!("  health: {h}");
        }
        for l in logs {
            println!("  | {l}");
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
        outcome: match failure {
            Some(message) => swap::Outcome::Failed { message },
            None => swap::Outcome::Swapped { containers: names },
        },
    })
}
