//! `up` as one operation: the routing path first (in this process, or in a
//! background agent), then the containers (one `up` of a project at a
//! time), then, in the foreground, the running stack: logs streamed, sources
//! and stack files followed, until Ctrl-C stops it gracefully (a second
//! Ctrl-C kills).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::agent::{self, RoutingPath};
use super::follow::Follower;
use super::{state, LoadedStack, Signals, Tasks};
use crate::engine::api::ContainerEngine;
use crate::engine::apply::{self, ApplyError, UpOutcome, UpRequest};
use crate::engine::health::HealthState;
use crate::engine::logs::LogQuery;
use crate::engine::progress::Reporter;
use crate::engine::reach::Reach;
use crate::engine::runtime::ProxyRuntime;
use crate::engine::tunnel::Relay;
use crate::engine::unix_now;
use crate::engine::Engine;
use crate::plan::names::ProjectName;
use crate::router::served;
use crate::spec::Stack;
use crate::ui::progress::{print_failures, print_table, render, Render};
use crate::ui::{engine_failure, exit, Failed};

/// What `devstack up` was asked.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The services named (and what they depend on); all when empty.
    pub services: Vec<String>,
    pub timeout: Duration,
    /// Return once healthy (`--detach`), or report and return (`--wait`).
    pub detach: bool,
    pub wait: bool,
    /// JSON events on stdout instead of progress on stderr.
    pub json: bool,
    pub render: Render,
    pub color: bool,
    /// New data volumes start from this snapshot (`--from-snapshot`).
    pub from_snapshot: Option<String>,
    /// The proxy gets a free port whatever the files say (a `devstack test` copy).
    pub free_port: bool,
}

impl UpOptions {
    /// What `up --wait` is asked for the whole stack, with the default timeout.
    pub fn wait(render: Render, color: bool) -> UpOptions {
        UpOptions {
            services: Vec::new(),
            timeout: Duration::from_secs(120),
            detach: false,
            wait: true,
            json: false,
            render,
            color,
            from_snapshot: None,
            free_port: false,
        }
    }

    fn stays(&self) -> bool {
        !(self.detach || self.wait)
    }
}

/// `devstack up`: returns the exit code.
pub async fn run(loaded: &LoadedStack, options: &UpOptions) -> anyhow::Result<u8> {
    let engine = crate::ui::connect().await?.with_state(state::state_root());
    // A watcher's fast swaps are kept once the builds behind them are done.
    super::overlay::wait_behind(&engine, &loaded.project).await;
    // Where this copy's proxy listens, settled before anything starts.
    let mut loaded = loaded.clone();
    super::listen::resolve(&engine, &mut loaded, options.free_port).await?;
    let loaded = &loaded;
    let request = UpRequest {
        project: loaded.project.to_string(),
        services: options.services.clone(),
        replicas: BTreeMap::new(),
        timeout: options.timeout,
        remove_orphans: options.services.is_empty(),
        known_healthy: Default::default(),
    };
    let since = unix_now();
    let tasks = Tasks::new();
    let interrupts = super::on_signals(&tasks, Signals::Interrupt);
    let cancel = tasks.stop_token().clone();
    // One follower of the stack files for the routing path and the watch
    // loop of a foreground `up`.
    let follower = options.stays().then(|| Follower::start(loaded, &tasks));

    let result = async {
        let (routing, routing_on) =
            start_routing(&engine, loaded, options, follower.as_ref(), &tasks).await?;
        // The routing path (this process's or an agent's) probed how the
        // stack's containers are reached: `apply` follows that decision.
        agent::adopt_reach(&engine, &loaded.project);
        let mut routing = Some(routing).flatten();
        let code = bring_up_routed(&engine, loaded, options, &request, &cancel, routing_on).await;
        let code = match code {
            Err(e) => Err(e),
            Ok(Some(code)) => Ok(code),
            Ok(None) => match follower.as_ref() {
                Some(follower) => foreground(&engine, loaded, options, since, follower, &tasks)
                    .await
                    .map(|()| exit::INTERRUPTED),
                // Only a foreground `up` goes on, and it follows its files.
                None => Ok(exit::OK),
            },
        };
        // Stopped only when interrupted once up, or at the end of the
        // foreground; an `up` that failed leaves what it started running.
        let stopping = options.stays() && matches!(code, Ok(exit::INTERRUPTED));
        // Out of the registry (and so the proxy) first, then stopped.
        if let Some(r) = routing.take() {
            r.end().await;
        }
        if stopping {
            stop_gracefully(&engine, &loaded.project, &interrupts).await;
        }
        code
    }
    .await;
    tasks.join().await;
    result
}

/// The discovery and routing path (etcd, registrar, proxy, router) runs
/// beside the stack: in a background agent when `up` returns, in this
/// process when it stays in the foreground (unless an agent already serves).
/// When the stack has routes (or a real registry) "up" means routed, so a
/// routing path that cannot start is an error, before any container
/// starts; without either it is only said, and the stack runs on its own.
/// Returns the path this process runs, and whether one runs at all.
async fn start_routing(
    engine: &Engine,
    loaded: &LoadedStack,
    options: &UpOptions,
    follower: Option<&Follower>,
    tasks: &Tasks,
) -> anyhow::Result<(Option<RoutingPath>, bool)> {
    let routed = needs_routing(&loaded.stack, &options.services);
    let failed = |e: anyhow::Error| -> anyhow::Result<(Option<RoutingPath>, bool)> {
        if routed {
            Err(Failed::new(
                exit::ROUTING,
                format!("routing for `{}` could not start: {e:#}", loaded.project),
            )
            .into())
        } else {
            sayln!("warning: routing is off for {}: {e:#}", loaded.project);
            Ok((None, false))
        }
    };
    let follower = match follower {
        Some(f) if options.stays() => f,
        _ => {
            return match agent::spawn_agent(loaded).await {
                Ok(()) => Ok((None, true)),
                Err(e) => failed(e),
            }
        }
    };
    // Decided and started under the agent lock, as `spawn_agent` does:
    // an `up --detach` at the same moment starts no second path.
    let started = async {
        let _lock = agent::agent_lock(&loaded.project).await?;
        if state::read(&loaded.project)?.is_some() {
            return Ok(None);
        }
        agent::start_routing(engine, loaded, follower, tasks)
            .await
            .map(Some)
    };
    match started.await {
        Ok(path) => Ok((path, true)),
        Err(e) => failed(e),
    }
}

/// Brings the containers up (one `up` of a project at a time), then checks
/// that every route is served and reports. `None`: healthy and routed, and
/// a foreground `up` goes on running the stack; otherwise the exit code.
async fn bring_up_routed(
    engine: &Engine,
    loaded: &LoadedStack,
    options: &UpOptions,
    request: &UpRequest,
    cancel: &CancellationToken,
    routing_on: bool,
) -> anyhow::Result<Option<u8>> {
    // One `up` of a project at a time: a second one (another terminal, a
    // script) waits, then finds the containers the first one made.
    let turn = tokio::select! {
        turn = wait_turn(&loaded.project) => turn?,
        _ = cancel.cancelled() => return Err(Failed::new(exit::INTERRUPTED, "interrupted while waiting").into()),
    };
    if let Some(name) = &options.from_snapshot {
        let filled = crate::engine::snapshot::branch(engine, &loaded.stack, &loaded.project, name)
            .await
            .map_err(|e| Failed::new(exit::FAILURE, e.to_string()))?;
        if !filled.is_empty() {
            sayln!("{} from snapshot `{name}`", filled.join(", "));
        }
    }
    // Containers the running routing path follows and found healthy are
    // not probed again when the plan keeps them.
    let mut request = request.clone();
    if routing_on {
        request.known_healthy = super::ps::known_health(&loaded.project)
            .into_iter()
            .filter(|(_, k)| k.health == HealthState::Healthy)
            .map(|(id, _)| id)
            .collect();
    }
    let outcome = bring_up(
        engine,
        &loaded.stack,
        &request,
        options.render,
        options.color,
        cancel,
    )
    .await;
    drop(turn);
    let outcome = outcome?;
    // Healthy is not yet routed: every route must answer through the proxy
    // (within what is left of the timeout) before its URL is shown.
    let unserved = if routing_on && outcome.all_healthy() && !cancel.is_cancelled() {
        let units: Vec<String> = outcome.units.iter().map(|u| u.service.clone()).collect();
        let mut targets = if units.is_empty() {
            Vec::new()
        } else {
            served::targets(&loaded.stack, &units)
        };
        // A remote engine's listen address is its own: ask the proxy
        // through a tunnel into its container instead.
        if engine.reach_decided() && engine.reach() == Reach::Exec && !targets.is_empty() {
            let proxy = crate::engine::proxy::proxy_container_name(&loaded.project);
            let port = SocketAddr::new(
                IpAddr::from([127, 0, 0, 1]),
                crate::engine::proxy::HTTP_PORT,
            );
            if let Ok(addr) = engine.tunnel(&proxy, port, Relay::Shell).await {
                targets = targets.into_iter().map(|t| t.via(addr)).collect();
            }
        }
        let deadline = std::time::Instant::now()
            + options
                .timeout
                .saturating_sub(Duration::from_millis(outcome.millis));
        // Both at once: each route answering, and every replica in the
        // proxy's table (a route that never answers is what is reported).
        let routed = async {
            let (left, unrouted) = futures::future::join(
                served::wait_served(&targets, deadline),
                wait_instances_routed(engine, loaded, &outcome, deadline),
            )
            .await;
            if left.is_empty() {
                (left, unrouted)
            } else {
                (left, Vec::new())
            }
        };
        tokio::select! {
            left = routed => left,
            _ = cancel.cancelled() => (Vec::new(), Vec::new()),
        }
    } else {
        (Vec::new(), Vec::new())
    };
    let (unserved, unrouted) = unserved;
    let interrupted = cancel.is_cancelled();
    if options.json {
        outln!(
            "{}",
            serde_json::json!({
                "event": "outcome",
                "outcome": outcome,
                "routing": routing_on,
                "unserved": unserved
                    .iter()
                    .map(|(t, why)| serde_json::json!({ "service": t.service, "url": t.url, "reason": why }))
                    .collect::<Vec<_>>(),
            })
        );
    } else if !interrupted {
        let unserved_urls: Vec<String> = unserved.iter().map(|(t, _)| t.url.clone()).collect();
        let routes = routing_on.then_some(unserved_urls.as_slice());
        print_table(&loaded.stack, &outcome, routes, options.color);
    }
    if !unserved.is_empty() && !interrupted {
        let list: Vec<String> = unserved
            .iter()
            .map(|(t, why)| format!("  {} ({}): {why}", t.url, t.service))
            .collect();
        return Err(Failed::new(
            exit::ROUTING,
            format!(
                "{} is healthy, but these routes were not served through the proxy in time:\n{}",
                loaded.project,
                list.join("\n")
            ),
        )
        .into());
    }
    if !unrouted.is_empty() && !interrupted {
        return Err(Failed::new(
            exit::ROUTING,
            format!(
                "{} is healthy and its routes are served, but the proxy did not send requests to {} in time",
                loaded.project,
                unrouted.join(", ")
            ),
        )
        .into());
    }
    if !outcome.all_healthy() && !interrupted {
        if !options.json {
            print_failures(&outcome, options.color);
        }
        return Ok(Some(exit::UNHEALTHY));
    }
    if interrupted {
        return Ok(Some(exit::INTERRUPTED));
    }
    if !options.stays() {
        return Ok(Some(exit::OK));
    }
    Ok(None)
}

/// Waits until the proxy sends requests to every healthy container of the
/// routed services (all replicas, not only the first to answer), so the
/// first requests after `up --wait` reach each one. Read from the proxy's
/// own table (HAProxy's `show servers state`, nginx's control port) by the
/// containers' addresses, for devstack's built-in templates; a stack's own
/// template or confd resources may route otherwise, and their routes
/// answering is all that is checked. Returns the containers not served by
/// `deadline`.
async fn wait_instances_routed(
    engine: &Engine,
    loaded: &LoadedStack,
    outcome: &UpOutcome,
    deadline: std::time::Instant,
) -> Vec<String> {
    let stack = &loaded.stack;
    if stack.proxy.template.is_some() || stack.proxy.confd.is_some() {
        return Vec::new();
    }
    let wanted: Vec<(String, std::net::IpAddr)> = outcome
        .units
        .iter()
        .filter(|u| {
            stack
                .services
                .get(&u.service)
                .is_some_and(|s| !s.routes.is_empty())
        })
        .flat_map(|u| u.containers.iter())
        .filter_map(|c| Some((c.name.clone(), c.ip?)))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let Some(proxy) = engine.find_proxy(&loaded.project).await else {
        return Vec::new();
    };
    loop {
        let servers = proxy.servers().await.unwrap_or_default();
        let left: Vec<String> = wanted
            .iter()
            .filter(|(_, ip)| {
                let ip = ip.to_string();
                !servers.iter().any(|s| s.serving() && s.address == ip)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Foreground: sources of services with a build are watched, and a save
/// rebuilds and swaps; an edit of the stack file applies to the running
/// stack; every container's output is streamed, prefixed; all until Ctrl-C.
async fn foreground(
    engine: &Engine,
    loaded: &LoadedStack,
    options: &UpOptions,
    since: i64,
    follower: &Follower,
    tasks: &Tasks,
) -> anyhow::Result<()> {
    let cancel = tasks.stop_token().clone();
    {
        let (engine, loaded, json, services, edits, cancel) = (
            engine.clone(),
            loaded.clone(),
            options.json,
            options.services.clone(),
            follower.edits(),
            cancel.clone(),
        );
        tasks.spawn(async move {
            // A `devstack watch` already running keeps watching; this one only runs.
            let _claim = match super::watch::claim(&loaded.project) {
                Ok(c) => c,
                Err(e) => {
                    sayln!("watch: {e}; this `up` does not watch");
                    return;
                }
            };
            if let Err(e) =
                super::watch::watch_loop(&engine, &loaded, &services, json, edits, &cancel).await
            {
                // The stack keeps running; only the watching stopped.
                sayln!("watch: {e:#}; saves are not applied");
            }
        });
    }
    sayln!("Streaming logs; Ctrl-C stops the stack (twice to kill it).");
    let units =
        crate::plan::dependency_closure(&loaded.stack, &options.services).unwrap_or_default();
    crate::ui::logs::stream_logs(
        engine,
        &loaded.project,
        &units,
        &LogQuery {
            follow: true,
            since: since.saturating_sub(1),
            tail: None,
            timestamps: false,
        },
        options.color,
        Some(&cancel),
    )
    .await
}

/// Waits (as long as it takes; Ctrl-C ends it) until no other `up` of the
/// project is bringing it up, and holds the right until dropped.
async fn wait_turn(project: &ProjectName) -> anyhow::Result<state::StateLock> {
    let mut said = false;
    loop {
        match state::try_lock(project, state::LockKind::Up) {
            Ok(lock) => return Ok(lock),
            Err(state::LockError::Held { holder, .. }) => {
                if !said {
                    sayln!(
                        "waiting for another `devstack up` of {project}{} to finish...",
                        holder
                            .map(|p| format!(" (process {p})"))
                            .unwrap_or_default()
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `apply::up` with a renderer for its progress (`up`, `scale`).
pub async fn bring_up(
    engine: &Engine,
    stack: &Stack,
    request: &UpRequest,
    mode: Render,
    color: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<UpOutcome> {
    let (reporter, rx) = Reporter::channel();
    let renderer = tokio::spawn(render(rx, mode, color));
    let result = apply::up(engine, stack, request, &reporter, cancel).await;
    drop(reporter);
    let _ = renderer.await;
    result.map_err(|e| match e {
        ApplyError::Engine(e) => engine_failure(e),
        ApplyError::Plan(e) => Failed::new(exit::FAILURE, e.to_string()).into(),
    })
}

/// SIGTERM every container with its own grace period; a further Ctrl-C kills.
async fn stop_gracefully(
    engine: &Engine,
    project: &str,
    interrupts: &tokio::sync::watch::Receiver<u32>,
) {
    sayln!("Stopping {project} gracefully (Ctrl-C again to kill)...");
    let mut rx = interrupts.clone();
    // Called after the first Ctrl-C: only a further one kills.
    let seen = (*rx.borrow_and_update()).max(1);
    let silent = Reporter::silent();
    let stop = apply::stop_all(engine, project, None, &silent);
    tokio::select! {
        result = stop => {
            if let Err(e) = result {
                sayln!("error: {e}");
            }
        }
        _ = rx.wait_for(|n| *n > seen) => {
            sayln!("Killing {project}...");
            if let Err(e) = apply::kill_all(engine, project).await {
                sayln!("error: {e}");
            }
        }
    }
}

/// Whether "up" means routed for this stack: it has routes among the units
/// brought up, it registers in a real etcd cluster, or its confd
/// resources route (they decide their frontends themselves).
fn needs_routing(stack: &Stack, services: &[String]) -> bool {
    let units = crate::plan::dependency_closure(stack, services).unwrap_or_default();
    let routes = stack
        .services
        .iter()
        .any(|(name, s)| !s.routes.is_empty() && (services.is_empty() || units.contains(name)));
    routes
        || stack.proxy.confd.is_some()
        || matches!(stack.discovery.etcd, crate::spec::Etcd::External { .. })
}
