//! The registrar loop: follows the project's Docker events and devstack's
//! health monitors, and keeps etcd holding exactly the healthy containers.
//!
//! One task owns all state and `select!`s over a closed set of triggers
//! (engine events, health changes, lease losses, rechecks, a one-second tick
//! while etcd is away, the stop signal). Each trigger only says "look at
//! container X again"; [`Registrar::reconcile`] then compares what should be
//! registered with what is, so a lost event or a restart never leaves the
//! registry wrong (level-triggered).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::template::{key_of, value_of, version_of, Presence};
use crate::engine::events::ContainerEventKind;
use crate::engine::health::{check_for, HealthMonitor, HealthState};
use crate::engine::{Engine, EngineError};
use crate::etcd::pb::etcdserverpb::TxnRequest;
use crate::etcd::rpc::{self, lease_is, op_delete, op_put, Client, Timeouts};
use crate::plan::{names, ObservedState};
use crate::router::layout::{Layout, Record};
use crate::spec::Stack;

/// What the registrar needs.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub stack: Stack,
    pub project: String,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
}

/// What the registrar reports.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum RegistrarEvent {
    Registered {
        service: String,
        container: String,
        key: String,
        address: String,
    },
    Deregistered {
        service: String,
        container: String,
        key: String,
        reason: String,
    },
    /// etcd did not answer; registrations are retried and, once it is back,
    /// everything is registered again.
    EtcdUnavailable { message: String },
    /// A registration could not be made (a key template error, say).
    Failed { container: String, message: String },
}

/// What the registrar knows of one followed container (see [`Known`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KnownContainer {
    pub service: String,
    /// Its health monitor's last word.
    #[serde(flatten)]
    pub health: HealthState,
    /// Whether it is in the registry now.
    pub registered: bool,
}

/// Every running container of the stack the registrar follows, by full id:
/// routed ones probed at their service's interval, the others (datastores,
/// services without a port) at [`UNROUTED_INTERVAL`] at least; a stop, death
/// or kill takes one out at once (engine events).
pub type Known = std::collections::BTreeMap<String, KnownContainer>;

/// How often a container with nothing to route to is probed (from its
/// start: nothing waits on the registrar for it): only `ps` and a no-op
/// `up` read its health, and a `command` probe is a `docker exec` (~100 ms
/// of engine work), so not at every interval.
pub const UNROUTED_INTERVAL: Duration = Duration::from_secs(10);

/// A running registrar.
pub struct RegistrarHandle {
    events: broadcast::Sender<RegistrarEvent>,
    ready: tokio::sync::watch::Receiver<bool>,
    known: tokio::sync::watch::Receiver<Known>,
    task: tokio::task::JoinHandle<()>,
}

impl RegistrarHandle {
    pub fn subscribe(&self) -> broadcast::Receiver<RegistrarEvent> {
        self.events.subscribe()
    }

    /// What it knows of each container's health, updated on every change.
    pub fn known(&self) -> tokio::sync::watch::Receiver<Known> {
        self.known.clone()
    }

    /// Waits until the containers running when it started have had their
    /// first health result, the healthy ones registered (or until
    /// [`READY_WITHIN`] has passed), so a router started after this does not
    /// render an empty registry over a stack that is serving.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Waits until the registrar has stopped and removed its registrations.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Starts the registrar. It runs until `cancel` fires, then deletes what it
/// registered (a stopped devstack means nothing is present any more).
/// Each stack `stacks` publishes (an edit of the stack files) applies its
/// services (ports, health checks, new ones) to containers followed from
/// then on; discovery stays.
pub fn start(
    engine: Engine,
    config: RegistrarConfig,
    stacks: tokio::sync::watch::Receiver<Arc<Stack>>,
    cancel: CancellationToken,
) -> RegistrarHandle {
    let (events, _) = broadcast::channel(1024);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let (known_tx, known) = tokio::sync::watch::channel(Known::new());
    let registrar = Registrar {
        ready: ready_tx,
        known: known_tx,
        initial: HashSet::new(),
        engine,
        network: names::network_name(&config.project),
        layout: Layout::new(&config.stack.discovery, &config.project),
        config,
        events: events.clone(),
        client: None,
        etcd_down: true,
        tracked: HashMap::new(),
        tx,
        cancel: cancel.clone(),
    };
    let task = tokio::spawn(registrar.run(rx, stacks));
    RegistrarHandle {
        events,
        ready,
        known,
        task,
    }
}

/// The triggers, sent by helper tasks into the main loop.
#[derive(Debug)]
enum Msg {
    Health(String, HealthState),
    /// The lease of a registration is gone (expired while etcd was away).
    LeaseLost(String, i64),
    Recheck(String),
    /// Follow a running container the engine did not describe when asked.
    Track(String, String),
    /// List the project's containers again (the engine did not list them).
    Relist,
}

/// How soon a container is asked about again after the engine failed to
/// describe it.
const TRACK_AGAIN: Duration = Duration::from_millis(500);

/// One registration in etcd.
#[derive(Debug)]
struct Registration {
    key: String,
    lease: i64,
    /// Stops the keep-alive task.
    keeper: CancellationToken,
}

/// A followed container.
#[derive(Debug)]
struct Tracked {
    service: String,
    /// Where it is registered; `None` for one with nothing to route to (a
    /// datastore: followed for its health only) or not on the network yet.
    presence: Option<Presence>,
    health: HealthState,
    /// Stops its health monitor.
    monitor: CancellationToken,
    registration: Option<Registration>,
    /// No registration before this (a flapping container waits one health
    /// interval; a signalled one until its fate is clear).
    not_before: Option<Instant>,
    interval: Duration,
    /// Sent a signal that stops it: never registered again, however long
    /// it takes to exit (a start makes a new `Tracked`).
    stopping: bool,
    /// Its service routes (or has a port): a member of the registry.
    routed: bool,
}

struct Registrar {
    engine: Engine,
    config: RegistrarConfig,
    network: String,
    /// Where registrations and their ownership records go (discovery
    /// settings wait for the next `up`, so this never changes).
    layout: Layout,
    events: broadcast::Sender<RegistrarEvent>,
    client: Option<Client>,
    /// Set when an etcd call failed; cleared by a successful resync.
    etcd_down: bool,
    tracked: HashMap<String, Tracked>,
    tx: mpsc::UnboundedSender<Msg>,
    cancel: CancellationToken,
    /// Set once the containers found at start have a first health result.
    ready: tokio::sync::watch::Sender<bool>,
    /// Each followed container's health, for `ps` and a no-op `up`.
    known: tokio::sync::watch::Sender<Known>,
    /// Those containers still waiting for it.
    initial: HashSet<String>,
}

/// Whether a signal is one `docker stop` sends to end a container: SIGTERM
/// (the default stop signal), SIGINT and SIGQUIT (images' `STOPSIGNAL`, as
/// postgres and nginx set), and SIGKILL.
fn asks_to_stop(signal: i32) -> bool {
    matches!(signal, 2 | 3 | 9 | 15)
}

/// How long the first pass may hold `ready` back (a container whose check
/// never answers must not stop the routing path from starting).
pub const READY_WITHIN: Duration = Duration::from_secs(5);

impl Registrar {
    fn report(&self, event: RegistrarEvent) {
        let _ = self.events.send(event);
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut stacks: tokio::sync::watch::Receiver<Arc<Stack>>,
    ) {
        let mut events = Box::pin(self.engine.project_events(&self.config.project, None));
        self.relist().await;
        self.resync().await;
        self.initial = self
            .tracked
            .iter()
            .filter(|(_, t)| t.routed)
            .map(|(id, _)| id.clone())
            .collect();
        self.check_ready();
        let ready_by = tokio::time::sleep(READY_WITHIN);
        tokio::pin!(ready_by);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                e = events.next() => match e {
                    Some(Ok(e)) => self.on_event(e).await,
                    Some(Err(_)) | None => {
                        // The engine connection dropped: follow again and
                        // re-list, since events meanwhile are lost.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        events = Box::pin(self.engine.project_events(&self.config.project, None));
                        self.relist().await;
                    }
                },
                Some(msg) = rx.recv() => match msg {
                    Msg::Health(id, state) => {
                        if let Some(t) = self.tracked.get_mut(&id) {
                            if state == HealthState::Starting {
                                continue;
                            }
                            let was_registered = t.registration.is_some();
                            if matches!(state, HealthState::Unhealthy { .. }) && was_registered {
                                // Back no sooner than its check can tell.
                                t.not_before = Some(Instant::now() + t.interval);
                            }
                            t.health = state;
                        }
                        self.reconcile(&id).await;
                        self.check_ready();
                    }
                    Msg::LeaseLost(id, lease) => {
                        if let Some(t) = self.tracked.get_mut(&id) {
                            if t.registration.as_ref().map(|r| r.lease) == Some(lease) {
                                if let Some(r) = t.registration.take() {
                                    r.keeper.cancel();
                                }
                            }
                        }
                        self.reconcile(&id).await;
                    }
                    Msg::Recheck(id) => self.reconcile(&id).await,
                    Msg::Track(id, service) => {
                        if !self.tracked.contains_key(&id) {
                            self.track(&id, &service).await;
                        }
                    }
                    Msg::Relist => self.relist().await,
                },
                // An error: no one publishes edits (any more).
                Ok(()) = stacks.changed() => {
                    let stack = stacks.borrow_and_update().clone();
                    self.config.stack.services = stack.services.clone();
                    self.config.stack.datastores = stack.datastores.clone();
                    // A new service's containers may have started before
                    // the stack arrived: their start events were skipped.
                    self.relist().await;
                }
                _ = &mut ready_by, if !*self.ready.borrow() => {
                    let _ = self.ready.send(true);
                }
                _ = tick.tick() => {
                    if self.etcd_down {
                        self.resync().await;
                    }
                }
            }
            self.publish_known();
        }
        self.deregister_all().await;
        self.publish_known();
    }

    /// Publishes what it knows when that changed.
    fn publish_known(&self) {
        let now: Known = self
            .tracked
            .iter()
            .map(|(id, t)| {
                let known = KnownContainer {
                    service: t.service.clone(),
                    health: t.health.clone(),
                    registered: t.registration.is_some(),
                };
                (id.clone(), known)
            })
            .collect();
        self.known.send_if_modified(|k| {
            if *k != now {
                *k = now;
                true
            } else {
                false
            }
        });
    }

    /// Marks the registrar ready once no container found at start is still
    /// waiting for its first health result.
    fn check_ready(&mut self) {
        let tracked = &self.tracked;
        self.initial.retain(|id| {
            tracked
                .get(id)
                .is_some_and(|t| t.health == HealthState::Starting)
        });
        if self.initial.is_empty() && !*self.ready.borrow() {
            let _ = self.ready.send(true);
        }
    }

    async fn client(&mut self) -> Option<Client> {
        if self.client.is_none() {
            let timeouts = Timeouts::new(Duration::from_secs(2), Duration::from_secs(5));
            match Client::connect(&self.config.endpoints, timeouts).await {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    self.etcd_unavailable(format!(
                        "cannot reach etcd at {}: {e}",
                        self.config.endpoints.join(",")
                    ));
                    return None;
                }
            }
        }
        self.client.clone()
    }

    fn etcd_unavailable(&mut self, message: String) {
        if !self.etcd_down {
            self.report(RegistrarEvent::EtcdUnavailable { message });
        }
        self.etcd_down = true;
    }

    /// Follows every running container of the stack's services.
    async fn relist(&mut self) {
        let Ok(observed) = self.engine.list_project(&self.config.project).await else {
            // Listed again soon: what runs must not wait for its next start.
            self.send_later(Msg::Relist, TRACK_AGAIN);
            return;
        };
        for o in observed {
            let Some(service) = o.service.clone() else {
                continue;
            };
            if o.state == ObservedState::Running && !self.tracked.contains_key(&o.id) {
                self.track(&o.id, &service).await;
            }
        }
    }

    /// Makes etcd match: registrations this project made (its ownership
    /// records) that no followed container accounts for are released (left
    /// by a crashed devstack); followed containers' registrations already
    /// there are adopted with their lease; registrations that vanished (etcd
    /// restarted empty) are made again. Keys without a record of this
    /// project (another copy's, a hand-made one) are never touched.
    async fn resync(&mut self) {
        let Some(mut client) = self.client().await else {
            return;
        };
        let listed = async {
            let present = list(&mut client, self.layout.listing()).await?;
            let records = list(&mut client, self.layout.records()).await?;
            Ok::<_, rpc::Error>((present, records))
        };
        let (present, records) = match listed.await {
            Ok(l) => l,
            Err(e) => {
                self.etcd_unavailable(format!("etcd: {e}"));
                return;
            }
        };
        self.etcd_down = false;
        let present: HashMap<String, i64> = present
            .into_iter()
            .map(|(key, _, lease)| (key, lease))
            .collect();
        // Container id → (registered key, lease) of this project's records.
        let records: HashMap<String, (String, i64)> = records
            .into_iter()
            .filter_map(|(key, value, lease)| {
                let id = self.layout.record_id(&key)?.to_string();
                let record: Record = serde_json::from_str(&value).ok()?;
                Some((id, (record.key, lease)))
            })
            .collect();
        let ids: Vec<String> = self.tracked.keys().cloned().collect();
        for id in &ids {
            let discovery = self.config.stack.discovery.clone();
            let Some(t) = self.tracked.get_mut(id) else {
                continue;
            };
            let Some(key) = t.presence.as_ref().and_then(|p| key_of(&discovery, p).ok()) else {
                continue;
            };
            match (&t.registration, present.get(&key)) {
                // Registered and still there with our lease: fine.
                (Some(r), Some(lease)) if r.lease == *lease => {}
                // Ours but gone (or replaced): register again.
                (Some(_), _) => {
                    if let Some(r) = t.registration.take() {
                        r.keeper.cancel();
                    }
                }
                // Made by a previous devstack of this project: adopt the lease.
                (None, Some(lease))
                    if *lease != 0 && records.get(id) == Some(&(key.clone(), *lease)) =>
                {
                    let keeper = CancellationToken::new();
                    spawn_keeper(
                        client.clone(),
                        id.clone(),
                        *lease,
                        self.config.stack.discovery.ttl,
                        keeper.clone(),
                        self.tx.clone(),
                    );
                    t.registration = Some(Registration {
                        key,
                        lease: *lease,
                        keeper,
                    });
                }
                _ => {}
            }
        }
        for (id, (key, lease)) in &records {
            let kept = self
                .tracked
                .get(id)
                .and_then(|t| t.registration.as_ref())
                .is_some_and(|r| r.lease == *lease);
            if !kept
                && release(&mut client, &self.layout, id, key, *lease)
                    .await
                    .is_err()
            {
                self.etcd_down = true;
            }
        }
        for id in ids {
            self.reconcile(&id).await;
        }
    }

    async fn on_event(&mut self, e: crate::engine::events::ContainerEvent) {
        let Some(service) = e.service.clone() else {
            return;
        };
        if self.config.stack.unit(&service).is_none() {
            return;
        }
        let id = e.container_id.clone();
        match &e.kind {
            ContainerEventKind::Started
            | ContainerEventKind::Unpaused
            | ContainerEventKind::Restarted => {
                self.untrack(&id, None).await;
                self.track(&id, &service).await;
            }
            ContainerEventKind::Killed { signal } => {
                // SIGKILL, or the SIGTERM of a stop: out of the proxy before
                // the process even reacts. A signal that asks it to stop
                // keeps it out until it starts again: one that ignores
                // SIGTERM (a shell as PID 1) still answers its health check
                // until SIGKILL, and must get no request meanwhile. Another
                // signal it survives (SIGHUP to reload) brings it back after
                // one health interval.
                if let Some(t) = self.tracked.get_mut(&id) {
                    if signal.is_some_and(asks_to_stop) {
                        t.stopping = true;
                    } else {
                        let wait = t.interval.max(Duration::from_secs(1));
                        t.not_before = Some(Instant::now() + wait);
                        self.schedule(&id, wait);
                    }
                }
                self.deregister(&id, "killed").await;
            }
            ContainerEventKind::Died { exit_code } => {
                let reason = match exit_code {
                    Some(c) => format!("died (exit code {c})"),
                    None => "died".into(),
                };
                self.untrack(&id, Some(&reason)).await;
            }
            ContainerEventKind::Stopped => self.untrack(&id, Some("stopped")).await,
            ContainerEventKind::Removed => self.untrack(&id, Some("removed")).await,
            ContainerEventKind::Paused => self.untrack(&id, Some("paused")).await,
            ContainerEventKind::OutOfMemory => self.deregister(&id, "out of memory").await,
            _ => {}
        }
    }

    /// Starts following a running container: its presence and a health monitor.
    async fn track(&mut self, id: &str, service: &str) {
        // With a datastore kind's readiness check when the stack gives none.
        let Some(unit) = crate::plan::effective_unit(&self.config.stack, service) else {
            return;
        };
        // Nothing to route to (a datastore, a worker): not a member of the
        // registry, followed for its health only, and less often.
        let routed = self
            .config
            .stack
            .services
            .get(service)
            .and_then(|s| s.routes.first().map(|r| r.port).or(s.container.port));
        let port = routed.unwrap_or_default();
        let status = match self.engine.inspect(id, &self.network).await {
            Ok(s) if s.state == ObservedState::Running => s,
            Ok(_) | Err(EngineError::NotFound(_)) => return,
            // The engine did not answer: asked again, or a running replica
            // would stay out of the registry until it next started.
            Err(_) => {
                self.send_later(Msg::Track(id.to_string(), service.to_string()), TRACK_AGAIN);
                return;
            }
        };
        let image = unit
            .image
            .clone()
            .unwrap_or_else(|| names::built_image_tag(&self.config.project, service));
        let replica = status
            .labels
            .get(names::LABEL_REPLICA)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let version = version_of(&image);
        let presence = status.ip.filter(|_| routed.is_some()).map(|ip| Presence {
            project: self.config.project.clone(),
            prefix: self.layout.prefix().to_string(),
            service: service.to_string(),
            id: status.id.clone(),
            name: status.name.clone(),
            replica,
            address: ip.to_string(),
            port,
            version,
            image: image.clone(),
        });
        let check = check_for(&self.engine, unit.health.as_ref(), &image).await;
        let interval = unit
            .health
            .as_ref()
            .map(|h| h.interval)
            .unwrap_or(Duration::from_secs(1));
        let monitor = self.cancel.child_token();
        let mut rx = HealthMonitor::spawn_paced(
            self.engine.clone(),
            status.id.clone(),
            self.network.clone(),
            check,
            Some(status.clone()),
            if routed.is_some() {
                Duration::ZERO
            } else {
                UNROUTED_INTERVAL
            },
            monitor.clone(),
        );
        let tx = self.tx.clone();
        let forwarded = status.id.clone();
        tokio::spawn(async move {
            loop {
                let state = rx.borrow_and_update().clone();
                if tx.send(Msg::Health(forwarded.clone(), state)).is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    let _ = tx.send(Msg::Health(forwarded, HealthState::Stopped));
                    return;
                }
            }
        });
        self.tracked.insert(
            status.id.clone(),
            Tracked {
                service: service.to_string(),
                presence,
                health: HealthState::Starting,
                monitor,
                registration: None,
                not_before: None,
                interval,
                stopping: false,
                routed: routed.is_some(),
            },
        );
    }

    /// Stops following a container, deregistering it first.
    async fn untrack(&mut self, id: &str, reason: Option<&str>) {
        if let Some(reason) = reason {
            self.deregister(id, reason).await;
        } else {
            self.deregister(id, "restarted").await;
        }
        if let Some(t) = self.tracked.remove(id) {
            t.monitor.cancel();
        }
    }

    fn schedule(&self, id: &str, after: Duration) {
        self.send_later(Msg::Recheck(id.to_string()), after);
    }

    /// Sends `msg` to the registrar's own loop `after` from now.
    fn send_later(&self, msg: Msg, after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(msg);
        });
    }

    /// Brings one container's registration in line with its health.
    async fn reconcile(&mut self, id: &str) {
        let Some(t) = self.tracked.get(id) else {
            return;
        };
        let wanted = t.health == HealthState::Healthy && t.presence.is_some() && !t.stopping;
        let unwanted = matches!(
            t.health,
            HealthState::Unhealthy { .. } | HealthState::Stopped
        );
        match (&t.registration, wanted, unwanted) {
            (None, true, _) => {
                if let Some(at) = t.not_before {
                    let now = Instant::now();
                    if now < at {
                        self.schedule(id, at - now);
                        return;
                    }
                }
                self.register(id).await;
            }
            (Some(_), _, true) => {
                let reason = match &t.health {
                    HealthState::Unhealthy { last } => format!("unhealthy: {last}"),
                    _ => "stopped".into(),
                };
                self.deregister(id, &reason).await;
            }
            _ => {}
        }
    }

    async fn register(&mut self, id: &str) {
        let discovery = self.config.stack.discovery.clone();
        let Some(t) = self.tracked.get(id) else {
            return;
        };
        let Some(presence) = t.presence.clone() else {
            return;
        };
        let (key, value) = match key_of(&discovery, &presence)
            .and_then(|k| Ok((k, value_of(&discovery, &presence)?)))
        {
            Ok(kv) => kv,
            Err(e) => {
                self.report(RegistrarEvent::Failed {
                    container: presence.name.clone(),
                    message: e.to_string(),
                });
                return;
            }
        };
        let Some(mut client) = self.client().await else {
            self.schedule(id, Duration::from_millis(500));
            return;
        };
        let ttl = discovery.ttl.as_secs().max(1) as i64;
        let record =
            serde_json::to_string(&Record { key: key.clone() }).expect("a record serializes");
        let result = async {
            let lease = client.lease_grant(ttl).await?.id;
            // The key and its ownership record on one lease, in one
            // transaction: whatever holds the key also says whose it is.
            client
                .txn(TxnRequest {
                    success: vec![
                        op_put(key.as_str(), value.as_str(), lease),
                        op_put(self.layout.record(id), record.as_str(), lease),
                    ],
                    ..Default::default()
                })
                .await?;
            Ok::<i64, rpc::Error>(lease)
        }
        .await;
        match result {
            Ok(lease) => {
                let keeper = self.cancel.child_token();
                spawn_keeper(
                    client,
                    id.to_string(),
                    lease,
                    discovery.ttl,
                    keeper.clone(),
                    self.tx.clone(),
                );
                if let Some(t) = self.tracked.get_mut(id) {
                    t.registration = Some(Registration {
                        key: key.clone(),
                        lease,
                        keeper,
                    });
                    t.not_before = None;
                }
                self.report(RegistrarEvent::Registered {
                    service: presence.service,
                    container: presence.name,
                    key,
                    address: format!("{}:{}", presence.address, presence.port),
                });
            }
            Err(e) => {
                self.etcd_unavailable(format!("etcd: {e}"));
                self.schedule(id, Duration::from_millis(500));
            }
        }
    }

    async fn deregister(&mut self, id: &str, reason: &str) {
        let Some(t) = self.tracked.get_mut(id) else {
            return;
        };
        let Some(r) = t.registration.take() else {
            return;
        };
        r.keeper.cancel();
        let service = t.service.clone();
        let container = t
            .presence
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| id.to_string());
        if let Some(mut client) = self.client().await {
            if let Err(e) = release(&mut client, &self.layout, id, &r.key, r.lease).await {
                // The key expires with its lease anyway; the resync after
                // etcd returns removes it sooner.
                self.etcd_unavailable(format!("etcd: {e}"));
            }
        }
        self.report(RegistrarEvent::Deregistered {
            service,
            container,
            key: r.key,
            reason: reason.to_string(),
        });
    }

    async fn deregister_all(&mut self) {
        let ids: Vec<String> = self.tracked.keys().cloned().collect();
        for id in ids {
            self.deregister(&id, "devstack stopped").await;
            if let Some(t) = self.tracked.remove(&id) {
                t.monitor.cancel();
            }
        }
    }
}

/// Every key under `prefix`: (key, value, lease).
async fn list(
    client: &mut Client,
    prefix: String,
) -> Result<Vec<(String, String, i64)>, rpc::Error> {
    let resp = client.get(prefix, true).await?;
    Ok(resp
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.lease,
            )
        })
        .collect())
}

/// Takes back a registration of container `id` this project made: its key
/// and ownership record, each only while it is still on `lease` (a key
/// registered again since, by anyone, stays). The key goes first, in one
/// request, so the router hears of it before anything else is asked. The
/// lease is then revoked (the record goes with it) only when nothing but
/// the record is attached to it: a lease someone else put a key on, inside
/// the prefix or out, is left to expire.
async fn release(
    client: &mut Client,
    layout: &Layout,
    id: &str,
    key: &str,
    lease: i64,
) -> Result<(), rpc::Error> {
    delete_on_lease(client, key, lease).await?;
    let record = layout.record(id);
    let attached = client.lease_time_to_live(lease, true).await?;
    let only_ours = attached
        .keys
        .iter()
        .all(|k| k.as_slice() == key.as_bytes() || k.as_slice() == record.as_bytes());
    if attached.ttl > 0 && only_ours {
        client.lease_revoke(lease).await?;
        return Ok(());
    }
    delete_on_lease(client, &record, lease).await?;
    Ok(())
}

/// Deletes `key` if it is still attached to `lease`; true when it was.
async fn delete_on_lease(client: &mut Client, key: &str, lease: i64) -> Result<bool, rpc::Error> {
    let resp = client
        .txn(TxnRequest {
            compare: vec![lease_is(key, lease)],
            success: vec![op_delete(key)],
            failure: Vec::new(),
        })
        .await?;
    Ok(resp.succeeded)
}

/// The registration of container `id` (its full id) this project made, as
/// its ownership record names it: (key, lease).
async fn registration_of(
    client: &mut Client,
    layout: &Layout,
    id: &str,
) -> Result<Option<(String, i64)>, rpc::Error> {
    let resp = client.get(layout.record(id), false).await?;
    Ok(resp.kvs.first().and_then(|kv| {
        let record: Record = serde_json::from_slice(&kv.value).ok()?;
        Some((record.key, kv.lease))
    }))
}

/// Whether container `id` (its full id, matched exactly) is registered.
pub async fn is_registered(
    client: &mut Client,
    layout: &Layout,
    id: &str,
) -> Result<bool, rpc::Error> {
    Ok(registration_of(client, layout, id).await?.is_some())
}

/// Takes container `id` (its full id, matched exactly) out of the registry
/// ahead of its stop: its key is deleted if it is still the one its record
/// names; the record and the lease stay for the registrar to release when
/// the container stops. True when a key was deleted.
pub async fn withdraw(client: &mut Client, layout: &Layout, id: &str) -> Result<bool, rpc::Error> {
    match registration_of(client, layout, id).await? {
        Some((key, lease)) => delete_on_lease(client, &key, lease).await,
        None => Ok(false),
    }
}

/// Keeps one lease alive at a third of its TTL. Reports the lease lost when
/// etcd says it no longer exists (it expired while etcd was unreachable, or
/// etcd restarted without it), so the registrar registers again.
fn spawn_keeper(
    client: Client,
    id: String,
    lease: i64,
    ttl: Duration,
    cancel: CancellationToken,
    tx: mpsc::UnboundedSender<Msg>,
) {
    tokio::spawn(async move {
        let period = (ttl / 3).max(Duration::from_millis(300));
        let mut client = client;
        let mut stream = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = cancel.cancelled() => return,
            }
            if stream.is_none() {
                stream = client.lease_keep_alive(lease).await.ok();
            }
            let Some((keeper, responses)) = stream.as_mut() else {
                continue;
            };
            let answer = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(Duration::from_secs(5), answer).await {
                Ok(Ok(Some(resp))) if resp.ttl > 0 => {}
                Ok(Ok(Some(_))) => {
                    let _ = tx.send(Msg::LeaseLost(id, lease));
                    return;
                }
                // The stream broke (etcd away): open a new one next time.
                _ => stream = None,
            }
        }
    });
}
