//! Log streaming: the prefixed output of the foreground `up` and of
//! `logs`, one stream per container, merged, each line once.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{engine_failure, service_style};
use crate::engine::events::{ContainerEvent, ContainerEventKind};
use crate::engine::logs::{LogLine, LogQuery};
use crate::engine::unix_now;
use crate::engine::{Engine, EngineError};
use crate::plan::ObservedState;
use console::Style;

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
pub async fn stream_logs(
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
