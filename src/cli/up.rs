//! `devstack up`: build, start in dependency order, wait healthy, then stream
//! logs (foreground), return (`--detach`), or report (`--wait`).
//!
//! Also home to what every engine subcommand shares: connecting with the right
//! exit code, turning engine errors into exit codes, colour and durations.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use console::Style;
use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::args::{GlobalArgs, UpArgs};
use super::stack::{load_stack, LoadedStack};
use super::{exit, Failed};
use crate::engine::apply::{self, ApplyError, UnitState, UpOutcome, UpRequest};
use crate::engine::events::{ContainerEvent, ContainerEventKind};
use crate::engine::logs::{LogLine, LogQuery};
use crate::engine::progress::{Progress, Reporter};
use crate::engine::{Engine, EngineError};
use crate::plan::names::ProjectName;
use crate::plan::ObservedState;
use crate::process::ProcessIdentity;
use crate::router::served;
use crate::router::state;
use crate::spec::Stack;

pub async fn run(global: &GlobalArgs, args: UpArgs) -> anyhow::Result<u8> {
    let loaded = load_stack(global)?;
    let timeout = duration_arg("--timeout", &args.timeout)?;
    let engine = connect().await?;
    let color = use_color(global);
    let mode = if args.json {
        Render::Json
    } else if std::io::stderr().is_terminal() {
        Render::Bars
    } else {
        Render::Plain
    };
    let request = UpRequest {
        project: loaded.project.to_string(),
        services: args.services.clone(),
        replicas: BTreeMap::new(),
        timeout,
        remove_orphans: args.services.is_empty(),
    };
    let since = unix_now();
    let cancel = CancellationToken::new();
    let interrupts = interrupt_counter(cancel.clone());

    // The discovery and routing path (etcd, registrar, proxy, router) runs
    // beside the stack: in a background agent when `up` returns, in this
    // process when it stays in the foreground (unless an agent already serves).
    // When the stack has routes (or a real registry) "up" means routed, so a
    // routing path that cannot start is an error, before any container
    // starts; without either it is only said, and the stack runs on its own.
    let routed = needs_routing(&loaded.stack, &args.services);
    let routing_failed = |e: anyhow::Error| -> anyhow::Result<()> {
        if routed {
            Err(Failed::new(
                exit::ROUTING,
                format!("routing for `{}` could not start: {e:#}", loaded.project),
            )
            .into())
        } else {
            sayln!("warning: routing is off for {}: {e:#}", loaded.project);
            Ok(())
        }
    };
    let mut routing_on = true;
    let routing = if args.detach || args.wait {
        if let Err(e) = super::agent::spawn_agent(global, &loaded.project).await {
            routing_failed(e)?;
            routing_on = false;
        }
        None
    } else {
        // Decided and started under the agent lock, as `spawn_agent` does:
        // an `up --detach` at the same moment starts no second path.
        let started = async {
            let _lock = super::agent::agent_lock(&loaded.project).await?;
            if crate::router::state::read(&loaded.project).is_some() {
                return Ok(None);
            }
            super::agent::start_routing(&engine, &loaded)
                .await
                .map(Some)
        };
        match started.await {
            Ok(r) => r,
            Err(e) => {
                routing_failed(e)?;
                routing_on = false;
                None
            }
        }
    };

    // One `up` of a project at a time: a second one (another terminal, a
    // script) waits, then finds the containers the first one made.
    let turn = tokio::select! {
        turn = wait_turn(&loaded.project) => turn,
        _ = cancel.cancelled() => Err(Failed::new(exit::INTERRUPTED, "interrupted while waiting").into()),
    };
    let turn = match turn {
        Ok(turn) => turn,
        Err(e) => {
            // Nothing was brought up by this one, so nothing is stopped.
            end_routing(routing, &loaded.project).await;
            return Err(e);
        }
    };
    if let Some(name) = &args.from_snapshot {
        let filled =
            crate::datastore::snapshot::branch(&engine, &loaded.stack, &loaded.project, name).await;
        match filled {
            Ok(filled) if !filled.is_empty() => {
                sayln!("{} from snapshot `{name}`", filled.join(", "));
            }
            Ok(_) => {}
            Err(e) => {
                end_routing(routing, &loaded.project).await;
                return Err(Failed::new(exit::FAILURE, e.to_string()).into());
            }
        }
    }
    let outcome = bring_up(&engine, &loaded.stack, &request, mode, color, &cancel).await;
    drop(turn);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            end_routing(routing, &loaded.project).await;
            return Err(e);
        }
    };
    // Healthy is not yet routed: every route must answer through the proxy
    // (within what is left of the timeout) before its URL is shown.
    let unserved = if routing_on && outcome.all_healthy() && !cancel.is_cancelled() {
        let units: Vec<String> = outcome.units.iter().map(|u| u.service.clone()).collect();
        let targets = if units.is_empty() {
            Vec::new()
        } else {
            served::targets(&loaded.stack, &units)
        };
        let deadline = std::time::Instant::now()
            + timeout.saturating_sub(Duration::from_millis(outcome.millis));
        tokio::select! {
            left = served::wait_served(&targets, deadline) => left,
            _ = cancel.cancelled() => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let interrupted = cancel.is_cancelled();
    if args.json {
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
        print_table(&loaded.stack, &outcome, routes, color);
    }
    if !unserved.is_empty() && !interrupted {
        let list: Vec<String> = unserved
            .iter()
            .map(|(t, why)| format!("  {} ({}): {why}", t.url, t.service))
            .collect();
        end_routing(routing, &loaded.project).await;
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
    if !outcome.all_healthy() && !interrupted {
        if !args.json {
            print_failures(&outcome, color);
        }
        end_routing(routing, &loaded.project).await;
        return Ok(exit::UNHEALTHY);
    }
    if interrupted {
        end_routing(routing, &loaded.project).await;
        if !(args.detach || args.wait) {
            stop_gracefully(&engine, &loaded.project, &interrupts).await;
        }
        return Ok(exit::INTERRUPTED);
    }
    if args.detach || args.wait {
        return Ok(exit::OK);
    }

    // Foreground: sources of services with a build are watched, and a save
    // rebuilds and swaps; an edit of the stack file applies to the running
    // stack; both until Ctrl-C.
    let watcher = {
        let (engine, loaded, cancel, json, services) = (
            engine.clone(),
            loaded.clone(),
            cancel.clone(),
            args.json,
            args.services.clone(),
        );
        tokio::spawn(async move {
            // A `devstack watch` already running keeps watching; this one only runs.
            let _claim = match super::watch::claim(&loaded.project) {
                Ok(c) => c,
                Err(e) => {
                    sayln!("watch: {e}; this `up` does not watch");
                    return;
                }
            };
            if let Err(e) =
                super::watch::watch_loop(&engine, &loaded, &services, json, &cancel).await
            {
                // The stack keeps running; only the watching stopped.
                sayln!("watch: {e:#}; saves are not applied");
            }
        })
    };
    // Foreground: every container's output, prefixed, until Ctrl-C.
    sayln!("Streaming logs; Ctrl-C stops the stack (twice to kill it).");
    let units = crate::plan::dependency_closure(&loaded.stack, &args.services).unwrap_or_default();
    stream_logs(
        &engine,
        &loaded.project,
        &units,
        &LogQuery {
            follow: true,
            since: since.saturating_sub(1),
            tail: None,
            timestamps: false,
        },
        color,
        Some(&cancel),
    )
    .await?;
    // The loop ends on the same cancel; a rebuild under way is abandoned.
    watcher.abort();
    // Out of the registry (and so the proxy) first, then stopped.
    end_routing(routing, &loaded.project).await;
    stop_gracefully(&engine, &loaded.project, &interrupts).await;
    Ok(exit::INTERRUPTED)
}

/// Takes down the routing path this process runs, if it does, and its
/// record in the state directory.
async fn end_routing(routing: Option<crate::router::routing::Routing>, project: &ProjectName) {
    if let Some(r) = routing {
        r.shutdown().await;
        state::remove(project, &ProcessIdentity::current(project));
    }
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

/// Runs `apply::up` with a renderer for its progress.
pub(crate) async fn bring_up(
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

/// Counts Ctrl-Cs: the first cancels `cancel`, later ones are counted for
/// whoever is stopping the stack (the second forces).
fn interrupt_counter(cancel: CancellationToken) -> tokio::sync::watch::Receiver<u32> {
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        let mut count = 0u32;
        while tokio::signal::ctrl_c().await.is_ok() {
            count += 1;
            // Counted before the cancel wakes anyone, so the first Ctrl-C is
            // never mistaken for a second one.
            let sent = tx.send(count);
            cancel.cancel();
            if sent.is_err() {
                return;
            }
        }
    });
    rx
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

// ---------------------------------------------------------------------------
// Shared by the engine subcommands.

/// Connects to Docker; no engine is exit code 3 with one sentence.
pub(crate) async fn connect() -> anyhow::Result<Engine> {
    Engine::connect().await.map_err(engine_failure)
}

/// An engine error as the exit code it deserves, with build output for a
/// failed build.
pub(crate) fn engine_failure(e: EngineError) -> anyhow::Error {
    let code = match &e {
        EngineError::NoEngine { .. } => exit::NO_ENGINE,
        EngineError::Build { .. } | EngineError::Context { .. } | EngineError::Pull { .. } => {
            exit::BUILD_FAILED
        }
        _ => exit::FAILURE,
    };
    let mut message = e.to_string();
    if let EngineError::Build { output, .. } = &e {
        if !output.is_empty() {
            message.push_str("\nlast lines of the build:\n");
            for line in output {
                message.push_str("  | ");
                message.push_str(line);
                message.push('\n');
            }
            message.push_str("(the rest of the stack was left as it was)");
        }
    }
    Failed::new(code, message.trim_end().to_string()).into()
}

/// Parses a duration flag (`120s`, `1m30s`, `500ms`).
pub(crate) fn duration_arg(flag: &str, text: &str) -> anyhow::Result<Duration> {
    crate::spec::units::parse_duration(text)
        .map_err(|e| Failed::new(exit::USAGE, format!("{flag}: {e}")).into())
}

/// Colour only on a terminal, and never with `--no-color` or `NO_COLOR`.
pub(crate) fn use_color(global: &GlobalArgs) -> bool {
    !global.no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Loads the stack, or (for commands that only need the project) settles for
/// `-p` when the stack file cannot be read.
pub(crate) fn project_of(
    global: &GlobalArgs,
) -> anyhow::Result<(ProjectName, Option<LoadedStack>)> {
    if let Some(project) = &global.project_name {
        let loaded = super::stack::try_load(global).ok();
        return Ok((project.clone(), loaded));
    }
    let loaded = load_stack(global)?;
    Ok((loaded.project.clone(), Some(loaded)))
}

/// A stable colour per service name, so each one's lines are easy to follow.
pub(crate) fn service_style(name: &str, color: bool) -> Style {
    if !color {
        return Style::new();
    }
    let palette = [
        Style::new().cyan(),
        Style::new().yellow(),
        Style::new().green(),
        Style::new().magenta(),
        Style::new().blue(),
        Style::new().red(),
        Style::new().cyan().bright(),
        Style::new().yellow().bright(),
        Style::new().green().bright(),
        Style::new().magenta().bright(),
    ];
    let hash = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    palette[hash % palette.len()].clone().force_styling(true)
}

/// How long a follower without a stop token (`logs --follow`) waits, once
/// none of its streams is left, for a container to start again (a restart
/// stops before it starts) before it ends.
const QUIET_END: Duration = Duration::from_secs(2);

/// Streams the logs of the project's containers (of `units`, or all; never
/// tasks), each line prefixed with the container's service and replica. A
/// closed stdout ends it quietly; without `follow` it ends with the streams.
///
/// Following, it also streams containers that start while it runs (a scale,
/// a restart, a blue-green swap, another `up`): it subscribes to the
/// project's events before listing, so a container that starts in between is
/// either listed or announced. Each container id has at most one stream at a
/// time; one that starts again after its stream ended gets a new stream from
/// its start, without the lines already shown. With `stop` (the foreground
/// `up`) it runs until `stop`, also while no container runs (a swap or a
/// restart may start one); without (`logs --follow`), it ends once no stream
/// is left and nothing started for [`QUIET_END`].
pub(crate) async fn stream_logs(
    engine: &Engine,
    project: &str,
    units: &[String],
    query: &LogQuery,
    color: bool,
    stop: Option<&CancellationToken>,
) -> anyhow::Result<()> {
    let wanted = |service: Option<&str>, task: Option<&str>| {
        task.is_none()
            && (units.is_empty() || service.is_some_and(|s| units.iter().any(|u| u == s)))
    };
    // Subscribed before listing; a subscription made again after the
    // connection broke replays from this second, the last event's.
    let mut resume_from = unix_now();
    let mut events = query
        .follow
        .then(|| engine.project_events(project, Some(resume_from)).boxed());
    let containers = engine.list_project(project).await.map_err(engine_failure)?;
    let mut streams = LogStreams::new(engine.clone(), color);
    let first = LogQuery {
        timestamps: true,
        ..query.clone()
    };
    for c in containers
        .iter()
        .filter(|c| wanted(c.service.as_deref(), c.task.as_deref()))
    {
        let label = label_of(c.service.as_deref(), c.replica, &c.name);
        streams.open(&c.id, label, c.service.as_deref(), &first);
    }

    let never = CancellationToken::new();
    let ends_when_quiet = stop.is_none();
    let stop = stop.unwrap_or(&never);
    let mut quiet_since: Option<tokio::time::Instant> = None;
    use std::io::Write;
    loop {
        if streams.live > 0 {
            quiet_since = None;
        } else if events.is_none() {
            // Not following: every stream has been read to its end.
            break;
        } else if quiet_since.is_none() {
            quiet_since = Some(tokio::time::Instant::now());
        }
        let quiet_end = quiet_since.unwrap_or_else(tokio::time::Instant::now) + QUIET_END;
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(quiet_end), if ends_when_quiet && streams.live == 0 => break,
            item = streams.merged.next(), if !streams.merged.is_empty() => Next::Log(item),
            event = next_event(&mut events) => Next::Event(event),
        };
        match next {
            Next::Log(None) => {}
            Next::Log(Some(StreamItem::End(i))) => streams.ended(i, query),
            Next::Log(Some(StreamItem::Line(i, Ok(line)))) => {
                let Some(prefix) = streams.prefix_for(i, line.time_nano) else {
                    continue;
                };
                // Locked per line, not while waiting: the watcher beside a
                // foreground `up` prints its reports to stdout too.
                let mut out = std::io::stdout().lock();
                for text in line.text.split('\n') {
                    // A closed pipe (`| head`) ends the stream quietly.
                    if writeln!(out, "{prefix} {text}").is_err() {
                        return Ok(());
                    }
                }
                let _ = out.flush();
            }
            // A container removed mid-stream ends its stream; the rest go on.
            Next::Log(Some(StreamItem::Line(_, Err(_)))) => {}
            Next::Event(Some(Ok(event))) => {
                resume_from = resume_from.max(event.time_nano / 1_000_000_000);
                if event.kind == ContainerEventKind::Started
                    && wanted(event.service.as_deref(), event.task.as_deref())
                {
                    let label = label_of(event.service.as_deref(), event.replica, &event.name);
                    let start = event.time_nano / 1_000_000_000;
                    streams.started(
                        &event.container_id,
                        label,
                        event.service.as_deref(),
                        start,
                        query,
                    );
                }
            }
            // The engine's connection broke. A second later: subscribe again,
            // replaying from the last event's second, then list again, so a
            // container that started meanwhile is streamed even if its event
            // is lost (a start seen twice never opens a second stream).
            Next::Event(Some(Err(_)) | None) => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                events = Some(engine.project_events(project, Some(resume_from)).boxed());
                let running = engine.list_project(project).await.unwrap_or_default();
                for c in running.iter().filter(|c| {
                    c.state == ObservedState::Running
                        && wanted(c.service.as_deref(), c.task.as_deref())
                }) {
                    let label = label_of(c.service.as_deref(), c.replica, &c.name);
                    streams.running(&c.id, label, c.service.as_deref(), resume_from, query);
                }
            }
        }
    }
    Ok(())
}

/// What `stream_logs` waits for next.
enum Next {
    Log(Option<StreamItem>),
    Event(Option<Result<ContainerEvent, EngineError>>),
}

/// The next project event; never, when not following.
async fn next_event(
    events: &mut Option<BoxStream<'static, Result<ContainerEvent, EngineError>>>,
) -> Option<Result<ContainerEvent, EngineError>> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

/// An item of the merged log streams: a line of the container at this
/// index of `LogStreams::containers`, or the end of its stream.
enum StreamItem {
    Line(usize, Result<LogLine, EngineError>),
    End(usize),
}

/// The containers being streamed, merged into one stream of lines.
struct LogStreams {
    engine: Engine,
    color: bool,
    merged: SelectAll<BoxStream<'static, StreamItem>>,
    /// Every container streamed so far; its index names it in `StreamItem`.
    containers: Vec<Streamed>,
    by_id: HashMap<String, usize>,
    /// How many streams have not ended yet.
    live: usize,
    /// The widest label so far; prefixes are padded to it, so the column
    /// widens when a container with a longer label comes.
    width: usize,
}

/// One container's place in `LogStreams`.
struct Streamed {
    id: String,
    /// `service-replica`, or the container name.
    label: String,
    /// The service's colour.
    style: Style,
    /// Its stream has not ended yet.
    live: bool,
    /// The engine's stamp of the last line shown.
    last_shown: Option<i64>,
    /// Lines stamped at or before this were shown by an earlier stream.
    shown_through: Option<i64>,
    /// It started again (at this second) while its stream was still open:
    /// once that stream ends, a new one follows the new run.
    started_again: Option<i64>,
}

impl LogStreams {
    fn new(engine: Engine, color: bool) -> LogStreams {
        LogStreams {
            engine,
            color,
            merged: SelectAll::new(),
            containers: Vec::new(),
            by_id: HashMap::new(),
            live: 0,
            width: 0,
        }
    }

    /// Opens a stream of the container's logs (again, for one seen before).
    fn open(&mut self, id: &str, label: String, service: Option<&str>, query: &LogQuery) {
        let i = match self.by_id.get(id) {
            Some(&i) => i,
            None => {
                self.width = self.width.max(label.chars().count());
                self.containers.push(Streamed {
                    id: id.to_string(),
                    label,
                    style: service_style(service.unwrap_or(""), self.color),
                    live: false,
                    last_shown: None,
                    shown_through: None,
                    started_again: None,
                });
                self.by_id.insert(id.to_string(), self.containers.len() - 1);
                self.containers.len() - 1
            }
        };
        let c = &mut self.containers[i];
        c.live = true;
        c.shown_through = c.last_shown;
        self.live += 1;
        let lines = self
            .engine
            .logs(id, query)
            .map(move |line| StreamItem::Line(i, line))
            .chain(futures::stream::once(async move { StreamItem::End(i) }));
        self.merged.push(lines.boxed());
    }

    /// A container of the project started (at `start`, seconds): streamed
    /// from its start unless its stream is still open.
    fn started(
        &mut self,
        id: &str,
        label: String,
        service: Option<&str>,
        start: i64,
        query: &LogQuery,
    ) {
        match self.by_id.get(id) {
            Some(&i) if self.containers[i].live => self.containers[i].started_again = Some(start),
            _ => self.open(id, label, service, &since_start(query, start)),
        }
    }

    /// A container found running (since `since` at the latest, seconds):
    /// streamed from then unless it is already.
    fn running(
        &mut self,
        id: &str,
        label: String,
        service: Option<&str>,
        since: i64,
        query: &LogQuery,
    ) {
        if self.by_id.get(id).is_none_or(|&i| !self.containers[i].live) {
            self.open(id, label, service, &since_start(query, since));
        }
    }

    /// The stream of container `i` ended (it stopped, or is gone).
    fn ended(&mut self, i: usize, query: &LogQuery) {
        let c = &mut self.containers[i];
        c.live = false;
        self.live -= 1;
        if let Some(start) = c.started_again.take() {
            let (id, label) = (c.id.clone(), c.label.clone());
            // A container seen before keeps its label and colour.
            self.open(&id, label, None, &since_start(query, start));
        }
    }

    /// The prefix for a line of container `i` stamped `time`; `None` for a
    /// line an earlier stream of the container already showed.
    fn prefix_for(&mut self, i: usize, time: Option<i64>) -> Option<String> {
        let c = &mut self.containers[i];
        if let (Some(t), Some(through)) = (time, c.shown_through) {
            if t <= through {
                return None;
            }
        }
        if time.is_some() {
            c.last_shown = time;
        }
        let prefix = format!("{:w$} |", c.label, w = self.width);
        Some(c.style.apply_to(prefix).to_string())
    }
}

/// The query for a container that started at `start` (seconds): everything
/// since, following. A second early, as the engine's start event comes after
/// the process started; lines shown before are dropped by their stamps.
fn since_start(query: &LogQuery, start: i64) -> LogQuery {
    LogQuery {
        follow: true,
        since: query.since.max(start - 1),
        tail: None,
        timestamps: true,
    }
}

/// How a container's lines are prefixed: `service-replica`, or its name.
fn label_of(service: Option<&str>, replica: Option<u32>, name: &str) -> String {
    match (service, replica) {
        (Some(s), Some(r)) => format!("{s}-{r}"),
        _ => name.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Rendering progress.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Render {
    /// One JSON object per event on stdout.
    Json,
    /// A spinner per unit on stderr (a terminal).
    Bars,
    /// One plain line per event on stderr.
    Plain,
}

async fn render(mut rx: mpsc::UnboundedReceiver<Progress>, mode: Render, color: bool) {
    let multi = MultiProgress::new();
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let spinner = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    while let Some(event) = rx.recv().await {
        match mode {
            Render::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    outln!("{line}");
                }
            }
            Render::Plain => {
                if let Some(line) = plain_line(&event) {
                    sayln!("{line}");
                }
            }
            Render::Bars => {
                let Some(service) = service_of(&event) else {
                    if let Some(line) = plain_line(&event) {
                        let _ = multi.println(line);
                    }
                    continue;
                };
                let bar = bars.entry(service.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(spinner.clone());
                    bar.set_prefix(
                        service_style(&service, color)
                            .apply_to(service.clone())
                            .to_string(),
                    );
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                match &event {
                    Progress::Healthy { millis, .. } => {
                        bar.finish_with_message(format!(
                            "healthy ({:.1}s)",
                            *millis as f64 / 1000.0
                        ));
                    }
                    Progress::Failed { reason, .. } => {
                        bar.finish_with_message(format!("FAILED: {reason}"))
                    }
                    Progress::Blocked { by, .. } => {
                        bar.finish_with_message(format!("not started: `{by}` failed"))
                    }
                    other => {
                        if let Some(message) = bar_message(other) {
                            bar.set_message(message);
                        }
                    }
                }
            }
        }
    }
    for bar in bars.values() {
        if !bar.is_finished() {
            bar.abandon();
        }
    }
}

fn service_of(event: &Progress) -> Option<String> {
    match event {
        Progress::BuildStarted { service, .. }
        | Progress::BuildOutput { service, .. }
        | Progress::Built { service, .. }
        | Progress::Pull { service, .. }
        | Progress::Waiting { service, .. }
        | Progress::Probe { service, .. }
        | Progress::Ready { service, .. }
        | Progress::Healthy { service, .. }
        | Progress::Failed { service, .. }
        | Progress::Blocked { service, .. } => Some(service.clone()),
        Progress::Container { service, .. } if !service.is_empty() => Some(service.clone()),
        Progress::Task { before, .. } => Some(before.clone()),
        _ => None,
    }
}

fn bar_message(event: &Progress) -> Option<String> {
    Some(match event {
        Progress::BuildStarted { tag, .. } => format!("building {tag}"),
        Progress::BuildOutput { line, .. } => format!("building: {line}"),
        Progress::Built { millis, .. } => format!("built in {:.1}s", *millis as f64 / 1000.0),
        Progress::Pull { status, layer, .. } => match layer {
            Some(l) => format!("pulling {l}: {status}"),
            None => format!("pulling: {status}"),
        },
        Progress::Waiting { on, .. } => format!("waiting for {}", on.join(", ")),
        Progress::Task { task, state, .. } => format!("task {task}: {state}"),
        Progress::Container {
            container,
            action,
            reason,
            ..
        } => match reason {
            Some(r) => format!("{action} {container} ({r})"),
            None => format!("{action} {container}"),
        },
        Progress::Probe { detail, .. } => format!("waiting for health: {detail}"),
        Progress::Ready { container, .. } => format!("{container} ready"),
        _ => return None,
    })
}

fn plain_line(event: &Progress) -> Option<String> {
    Some(match event {
        Progress::BuildStarted { service, tag } => format!("{service}: building {tag}"),
        Progress::BuildOutput { service, line } => format!("{service} | {line}"),
        Progress::Built {
            service, millis, ..
        } => {
            format!("{service}: built in {:.1}s", *millis as f64 / 1000.0)
        }
        Progress::Pull {
            service,
            image,
            layer,
            status,
        } => match layer {
            Some(l) => format!("{service}: pulling {image} {l}: {status}"),
            None => format!("{service}: pulling {image}: {status}"),
        },
        Progress::Created { object, name } => format!("created {object} {name}"),
        Progress::Waiting { service, on } => format!("{service}: waiting for {}", on.join(", ")),
        Progress::Task {
            task,
            before,
            state,
            exit_code,
        } => match exit_code {
            Some(code) => format!("{before}: task {task} {state} (exit {code})"),
            None => format!("{before}: task {task} {state}"),
        },
        Progress::Container {
            service,
            container,
            action,
            reason,
        } => {
            let who = if service.is_empty() {
                container.clone()
            } else {
                format!("{service}: {action} {container}")
            };
            let who = if service.is_empty() {
                format!("{action} {who}")
            } else {
                who
            };
            match reason {
                Some(r) => format!("{who} ({r})"),
                None => who,
            }
        }
        Progress::Probe {
            container, detail, ..
        } => format!("{container}: waiting for health: {detail}"),
        Progress::Ready { .. } => return None,
        Progress::Healthy { service, millis } => {
            format!("{service}: healthy ({:.2}s)", *millis as f64 / 1000.0)
        }
        Progress::Failed { service, reason } => format!("{service}: FAILED: {reason}"),
        Progress::Blocked { service, by } => format!("{service}: not started: `{by}` failed"),
        Progress::Stopped { container, removed } => {
            format!(
                "{} {container}",
                if *removed { "removed" } else { "stopped" }
            )
        }
    })
}

/// The table after a successful `up`: service, replicas, state, published
/// addresses and route URLs.
/// `routing`: `None` when no routing path runs (no URL is shown), else the
/// URLs the proxy did not serve (left out).
pub(crate) fn print_table(
    stack: &Stack,
    outcome: &UpOutcome,
    routing: Option<&[String]>,
    color: bool,
) {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for unit in &outcome.units {
        let state = match &unit.state {
            UnitState::Healthy => "healthy".to_string(),
            UnitState::Failed { .. } => "FAILED".to_string(),
            UnitState::Blocked { by } => format!("not started ({by} failed)"),
        };
        let published: Vec<String> = unit
            .containers
            .iter()
            .flat_map(|c| {
                c.published
                    .iter()
                    .map(|p| format!("{}->{}", p.address(), p.container_port))
            })
            .collect();
        // A URL is shown only when the proxy serves it.
        let urls = served::urls(stack, &unit.service);
        let routes = match (routing, &unit.state) {
            (Some(unserved), UnitState::Healthy) => {
                urls.into_iter().filter(|u| !unserved.contains(u)).collect()
            }
            (None, _) if !urls.is_empty() => vec!["(routing is off)".to_string()],
            _ => Vec::new(),
        };
        rows.push([
            unit.service.clone(),
            format!("{}/{}", unit.containers.len(), unit.replicas),
            state,
            published.join(", "),
            routes.join(" "),
        ]);
    }
    let header = ["SERVICE", "REPLICAS", "STATE", "PUBLISHED", "ROUTES"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let bold = if color {
        Style::new().bold().force_styling(true)
    } else {
        Style::new()
    };
    let line = |cells: [&str; 5]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    outln!("{}", bold.apply_to(line(header)));
    for row in &rows {
        let cells = [
            row[0].as_str(),
            row[1].as_str(),
            row[2].as_str(),
            row[3].as_str(),
            row[4].as_str(),
        ];
        let text = line(cells);
        let style = match outcome
            .units
            .iter()
            .find(|u| u.service == row[0])
            .map(|u| &u.state)
        {
            Some(UnitState::Healthy) | None => Style::new(),
            Some(_) if color => Style::new().red().force_styling(true),
            Some(_) => Style::new(),
        };
        outln!("{}", style.apply_to(text));
    }
    outln!(
        "{} {} ({:.2}s)",
        outcome.project,
        if outcome.all_healthy() {
            "is up"
        } else {
            "is not healthy"
        },
        outcome.millis as f64 / 1000.0
    );
}

/// Whether "up" means routed for this stack: it has routes among the units
/// brought up, or it registers in a real etcd cluster.
fn needs_routing(stack: &Stack, services: &[String]) -> bool {
    let units = crate::plan::dependency_closure(stack, services).unwrap_or_default();
    let routes = stack
        .services
        .iter()
        .any(|(name, s)| !s.routes.is_empty() && (services.is_empty() || units.contains(name)));
    routes || matches!(stack.discovery.etcd, crate::spec::Etcd::External { .. })
}

/// For each unit that is not healthy: why, the last health output and its
/// last log lines.
pub(crate) fn print_failures(outcome: &UpOutcome, color: bool) {
    let red = if color {
        Style::new().red().bold().force_styling(true)
    } else {
        Style::new()
    };
    for unit in &outcome.units {
        match &unit.state {
            UnitState::Healthy => {}
            UnitState::Blocked { by } => {
                sayln!(
                    "{} {}: not started because `{by}` is not healthy",
                    red.apply_to("✗"),
                    unit.service
                );
            }
            UnitState::Failed {
                reason,
                container,
                last_health,
                logs,
            } => {
                sayln!("{} {}: {reason}", red.apply_to("✗"), unit.service);
                if let Some(h) = last_health {
                    sayln!("  last health check: {h}");
                }
                if !logs.is_empty() {
                    sayln!(
                        "  last {} log lines of {}:",
                        logs.len(),
                        container.as_deref().unwrap_or(&unit.service)
                    );
                    for l in logs {
                        sayln!("  | {l}");
                    }
                }
            }
        }
    }
}
