//! Rebuild one service and swap its containers blue-green, replica by replica:
//! the new container starts beside the old one, and only when it is healthy
//! (and registered in etcd, when a registry is running) does the old one stop.
//! A new version that fails never got traffic: the registrar registers only
//! healthy containers, and the new one is removed, the old one untouched.
//! The old one leaves the registry (so the proxy) before it is stopped.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, ConnectOptions};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::proxy::{master_cli, proxy_container_name};
use crate::engine::{health, Engine, EngineError};
use crate::plan::{self, names, ObservedState};
use crate::registrar::run::{is_registered, withdraw};
use crate::router::runtime::{parse_servers_state, parse_stat_sessions, ServerState};
use crate::router::Layout;
use crate::spec::{Stack, UnitKind};

/// Where the running stack's registry is, to wait for a new container's registration.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub endpoints: Vec<String>,
    /// The project's registry keys (a container's registration is found by
    /// its exact id there).
    pub layout: Layout,
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
        /// Files left out (links into other directories, FIFOs, sockets,
        /// devices), each with why.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        skipped: Vec<String>,
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
    /// Units the edited stack file added (or datastores it changed) were started.
    Started { containers: Vec<String> },
    /// Units the edited stack file no longer has were stopped and removed.
    Removed { containers: Vec<String> },
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
    /// Builds abandoned because another save came during them.
    #[serde(skip_serializing_if = "is_zero")]
    pub superseded: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Report {
    pub fn line(&self) -> String {
        let result = match &self.outcome {
            Outcome::Swapped { containers } => format!("swapped {} replica(s)", containers.len()),
            Outcome::Synced {
                files,
                containers,
                skipped,
            } => {
                let mut line = format!(
                    "synced {files} file(s) into {} container(s)",
                    containers.len()
                );
                if !skipped.is_empty() {
                    line.push_str(&format!("; skipped {}", skipped.join("; ")));
                }
                line
            }
            Outcome::BuildFailed { message } => format!("build failed: {message}"),
            Outcome::Unhealthy {
                container, reason, ..
            } => {
                format!("new `{container}` {reason}; the old version keeps serving")
            }
            Outcome::Started { containers } => format!("started {}", containers.join(", ")),
            Outcome::Removed { containers } => format!("removed {}", containers.join(", ")),
            Outcome::Failed { message } => format!("failed: {message}"),
        };
        let superseded = match self.superseded {
            0 => String::new(),
            n => format!(" ({n} newer save(s) restarted the build)"),
        };
        format!(
            "{}: {} changed · build {:.1}s{superseded} · swap {:.1}s · {}",
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
/// How long the proxy may take to start (or stop) routing to a container
/// once the registry says so; its router applies a change within ~100 ms.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Without a proxy to ask (a registry but no reachable proxy), the time
/// left to the router to apply a registry change before the swap goes on.
const ROUTE_SETTLE: Duration = Duration::from_millis(300);

/// An image ready to deploy.
#[derive(Debug, Clone)]
pub struct Built {
    pub tag: String,
    pub image_id: String,
}

/// Builds (or finds) the image of `service`: the first half of a rebuild,
/// which the caller may abandon (drop) when a newer save arrives.
pub async fn build(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    service: &str,
) -> Result<Built, Outcome> {
    let Some(unit) = stack.unit(service) else {
        return Err(Outcome::Failed {
            message: "is not in the stack".into(),
        });
    };
    let tag = unit
        .image
        .clone()
        .unwrap_or_else(|| names::built_image_tag(project, service));
    // A service without a build (redeployed because the stack file changed)
    // runs its image as found, or pulled as `up` would.
    let platform = unit.platform.as_deref();
    let resolved = match &unit.build {
        Some(build) => engine.build(service, build, &tag, platform, |_| {}).await,
        None => match engine.local_image(&tag, platform).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => engine.pull(service, &tag, platform, |_| {}).await,
            Err(e) => Err(e),
        },
    };
    match resolved {
        Ok(image_id) => Ok(Built { tag, image_id }),
        Err(e) => Err(Outcome::BuildFailed {
            message: e.to_string(),
        }),
    }
}

/// Swaps the running replicas of `service` to `built`: the second half of a
/// rebuild. Never leaves the service without a serving container because
/// the new version failed. Returns once every new replica serves and the
/// old ones left the proxy; `retiring` drains, stops and removes those.
#[allow(clippy::too_many_arguments)]
pub async fn deploy(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    service: &str,
    built: &Built,
    discovery: Option<&Discovery>,
    retiring: &Retiring,
    cancel: &CancellationToken,
) -> Outcome {
    swap(
        engine, stack, project, service, built, discovery, retiring, cancel,
    )
    .await
    .unwrap_or_else(|e| Outcome::Failed {
        message: e.to_string(),
    })
}

/// Builds (or finds) the image of `service` and swaps its running replicas.
#[allow(clippy::too_many_arguments)]
pub async fn rebuild(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    service: &str,
    trigger: &str,
    discovery: Option<&Discovery>,
    retiring: &Retiring,
    cancel: &CancellationToken,
) -> Report {
    let t0 = Instant::now();
    let built = build(engine, stack, project, service).await;
    let build_ms = t0.elapsed().as_millis() as u64;
    let t1 = Instant::now();
    let outcome = match built {
        Ok(built) => {
            deploy(
                engine, stack, project, service, &built, discovery, retiring, cancel,
            )
            .await
        }
        Err(outcome) => outcome,
    };
    Report {
        service: service.into(),
        trigger: trigger.into(),
        build_ms,
        swap_ms: t1.elapsed().as_millis() as u64,
        superseded: 0,
        outcome,
    }
}

#[allow(clippy::too_many_arguments)]
async fn swap(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    service: &str,
    built: &Built,
    discovery: Option<&Discovery>,
    retiring: &Retiring,
    cancel: &CancellationToken,
) -> Result<Outcome, EngineError> {
    let Some(unit) = stack.unit(service) else {
        return Ok(Outcome::Failed {
            message: "is not in the stack".into(),
        });
    };
    let observed = engine.list_project(project).await?;
    // Containers an earlier swap is stopping left the proxy already: they
    // are nobody's old version any more.
    let mine: Vec<_> = observed
        .iter()
        .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
        .filter(|o| matches!(o.state, ObservedState::Running | ObservedState::Restarting))
        .filter(|o| !retiring.contains(&o.id))
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
        &built.tag,
        &built.image_id,
        replicas,
    );
    let network = names::network_name(project);
    let check = health::check_for(engine, unit.health.as_ref(), &built.tag).await;
    // The proxy itself says when it routes to a container: asked only when
    // a registry runs (without one, nothing routes by registration).
    let proxy = match discovery {
        Some(_) => ProxyView::find(engine, project).await,
        None => None,
    };
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
        // Where the proxy sends this replica's traffic now, if anywhere,
        // and the images the old ones ran (removed once nothing needs them,
        // or every save would leave one behind).
        let mut old_ips = Vec::new();
        let mut images = Vec::new();
        for o in &old {
            if let Ok(status) = engine.inspect(&o.id, &network).await {
                old_ips.extend(status.ip);
                images.extend(status.image.filter(|i| *i != built.image_id));
            }
        }
        let mut leaving = Retirement {
            project: project.to_string(),
            service: service.to_string(),
            replica: spec.replica,
            canonical: spec.name.clone(),
            ids: old.iter().map(|o| o.id.clone()).collect(),
            proxy,
            slots: Vec::new(),
            grace: spec.stop_grace,
            images,
        };
        // A fixed host port can be bound by one container only: the old one
        // has to leave first, so this replica is replaced, not swapped.
        let fixed_port = spec.ports.iter().any(|p| p.host_port.is_some());
        let canonical = spec.name.clone();
        let mut spec = spec;
        // The replacement keeps the anonymous volumes of the one it replaces.
        if let Some(o) = old.first() {
            engine.carry_volumes_from(&mut spec, &o.id).await?;
        }
        if !old.is_empty() && !fixed_port {
            // A distinct name so both run side by side; labels (project,
            // service, replica) are the same, which is what `up`, `ps` and the
            // registrar go by. It takes the usual name once the old one is gone.
            spec.name = format!("{canonical}-g{generation}");
        }
        if fixed_port || old.iter().any(|o| o.name == spec.name) {
            leaving.run(engine, retiring).await;
            leaving.ids.clear();
            leaving.images.clear();
            old_ips.clear();
        }
        let old_routed = match &proxy {
            Some(p) => !p.slots_serving(&old_ips).await.is_empty(),
            None => false,
        };
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
            // as long as the proxy (below) confirms the new one serves.
            let _ = wait_registered(d, &id).await;
            let new_ip = engine.inspect(&id, &network).await?.ip;
            let routed = match (&proxy, new_ip) {
                // The old one is behind the proxy, so the new one must be
                // too before the old one leaves.
                (Some(p), Some(ip)) if old_routed => p.wait_serving(&[ip], true).await,
                (None, _) => {
                    tokio::time::sleep(ROUTE_SETTLE).await;
                    true
                }
                _ => true,
            };
            if !routed {
                // It may serve without HAProxy saying so: out of the proxy
                // first, like an old version, then gone.
                let ips: Vec<IpAddr> = new_ip.into_iter().collect();
                let failed = Retirement {
                    ids: vec![id.clone()],
                    slots: leave_proxy(d, proxy.as_ref(), &[&id], &ips).await,
                    images: Vec::new(),
                    ..leaving
                };
                failed.run(engine, retiring).await;
                return Ok(Outcome::Failed {
                    message: format!(
                        "the proxy did not route to the new `{}` within {}s; the old version keeps serving",
                        spec.name,
                        ROUTE_TIMEOUT.as_secs()
                    ),
                });
            }
            // Out of the proxy before it is stopped, so no new request
            // reaches a container that is shutting down.
            let ids: Vec<&str> = leaving.ids.iter().map(String::as_str).collect();
            leaving.slots = leave_proxy(d, proxy.as_ref(), &ids, &old_ips).await;
        }
        // Draining, stopping (a process that ignores SIGTERM takes its whole
        // grace) and removing the old one hold up neither the next replica
        // nor the next save: they go on in the background.
        retiring.spawn(engine, leaving);
        // Reported by the name the replica goes by: the new container takes
        // it once the old one is gone.
        swapped.push(canonical);
    }
    Ok(Outcome::Swapped {
        containers: swapped,
    })
}

/// The old containers of one replica on their way out: already out of the
/// proxy (when it routed to them), still to be drained, stopped, removed.
struct Retirement {
    project: String,
    service: String,
    replica: u32,
    /// The replica's usual name, which its serving container takes back.
    canonical: String,
    ids: Vec<String>,
    proxy: Option<ProxyView>,
    /// The proxy's slots that sent them traffic, to drain.
    slots: Vec<(String, String)>,
    grace: Duration,
    /// The images they ran, removed when nothing else needs them.
    images: Vec<String>,
}

impl Retirement {
    /// Drains, stops and removes; then the replica's serving container gets
    /// the usual name back and the old images go. Errors only leave
    /// something behind for the next `up` or `down`, so they are not
    /// reported.
    async fn run(&self, engine: &Engine, retiring: &Retiring) {
        if let (Some(p), false) = (&self.proxy, self.slots.is_empty()) {
            p.drain(&self.slots, self.grace).await;
        }
        for id in &self.ids {
            // Stopping deregisters it for good (the registrar follows the
            // stop signal); the grace lets in-flight requests finish.
            let _ = engine.stop(id, Some(self.grace)).await;
            let _ = engine.remove(id).await;
        }
        retiring.forget(&self.ids);
        self.settle_name(engine, retiring).await;
        for image in &self.images {
            // Only untagged and unused ones: a pulled or pinned image stays.
            engine.remove_unused_image(image).await;
        }
    }

    /// Gives the replica's one serving container its usual name, so `exec`,
    /// `logs` and the next `up` see the container they expect. Decided on
    /// what runs now, not on what this swap made: a later swap of the same
    /// replica may have replaced that one already, and retirements end in
    /// any order. Nothing is renamed while two serve (a swap under way) or
    /// while another container holds the name.
    async fn settle_name(&self, engine: &Engine, retiring: &Retiring) {
        let Ok(observed) = engine.list_project(&self.project).await else {
            return;
        };
        if observed.iter().any(|o| o.name == self.canonical) {
            return;
        }
        let serving: Vec<_> = observed
            .iter()
            .filter(|o| o.task.is_none() && o.service.as_deref() == Some(&self.service))
            .filter(|o| o.replica == Some(self.replica) && !retiring.contains(&o.id))
            .filter(|o| o.state == ObservedState::Running)
            .collect();
        if let [one] = serving.as_slice() {
            let _ = engine.rename(&one.id, &self.canonical).await;
        }
    }
}

/// The old containers swaps are retiring in the background, so that one
/// slow to stop (a process that ignores SIGTERM waits out its whole
/// `stop_grace`) holds up neither the next replica nor the next save. Cloned
/// handles share one set; [`Retiring::finish`] waits for all of them.
#[derive(Clone, Default)]
pub struct Retiring {
    tasks: TaskTracker,
    /// The containers being retired, which the next swap leaves alone.
    ids: Arc<Mutex<HashSet<String>>>,
}

impl Retiring {
    fn contains(&self, id: &str) -> bool {
        self.ids.lock().is_ok_and(|ids| ids.contains(id))
    }

    fn forget(&self, ids: &[String]) {
        if let Ok(mut set) = self.ids.lock() {
            for id in ids {
                set.remove(id);
            }
        }
    }

    /// How many containers are still on their way out.
    pub fn len(&self) -> usize {
        self.ids.lock().map(|ids| ids.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spawn(&self, engine: &Engine, job: Retirement) {
        if job.ids.is_empty() {
            return;
        }
        if let Ok(mut set) = self.ids.lock() {
            set.extend(job.ids.iter().cloned());
        }
        let engine = engine.clone();
        let retiring = self.clone();
        self.tasks
            .spawn(async move { job.run(&engine, &retiring).await });
    }

    /// Waits until every retirement begun has ended (each is bounded by
    /// its drain and stop grace), so a watcher that exits leaves no old
    /// container running nor half removed.
    pub async fn finish(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}

/// Takes containers `ids` (full ids, at `ips`) out of the proxy: their
/// keys are deleted (the registrar revokes their leases when they stop), then
/// HAProxy is asked until no slot sends them traffic. Returns those slots,
/// whose requests in flight are still to finish. Without a proxy to ask, a
/// settle time stands in.
async fn leave_proxy(
    d: &Discovery,
    proxy: Option<&ProxyView>,
    ids: &[&str],
    ips: &[IpAddr],
) -> Vec<(String, String)> {
    let slots = match proxy {
        Some(p) => p.slots_serving(ips).await,
        None => Vec::new(),
    };
    let deleted = deregister(d, ids).await.unwrap_or(false);
    match proxy {
        Some(p) if !slots.is_empty() => {
            p.wait_serving(ips, false).await;
        }
        None if deleted => tokio::time::sleep(ROUTE_SETTLE).await,
        _ => {}
    }
    slots
}

/// The proxy's own account of where it sends traffic, from HAProxy's runtime
/// API: exact where a fixed wait would only guess.
#[derive(Debug, Clone, Copy)]
struct ProxyView {
    cli: SocketAddr,
}

impl ProxyView {
    /// The project's proxy, if one runs and answers.
    async fn find(engine: &Engine, project: &str) -> Option<ProxyView> {
        let c = engine
            .proxy_container(&proxy_container_name(project))
            .await
            .ok()?;
        let view = ProxyView { cli: c.cli };
        view.servers().await.map(|_| view)
    }

    async fn servers(&self) -> Option<Vec<ServerState>> {
        let text = master_cli(self.cli, "@1 show servers state").await.ok()?;
        let servers = parse_servers_state(&text);
        // An answer with no table is an error (no worker yet, say).
        (!servers.is_empty() || text.trim_start().starts_with('1')).then_some(servers)
    }

    /// The (backend, server) slots that send traffic to one of `ips`.
    async fn slots_serving(&self, ips: &[IpAddr]) -> Vec<(String, String)> {
        let servers = self.servers().await.unwrap_or_default();
        servers
            .into_iter()
            .filter(|s| s.serving() && ips.iter().any(|ip| s.address == ip.to_string()))
            .map(|s| (s.backend, s.server))
            .collect()
    }

    /// Waits until the proxy sends traffic to one of `ips` (`serving`), or to
    /// none of them; false when that did not happen within [`ROUTE_TIMEOUT`].
    async fn wait_serving(&self, ips: &[IpAddr], serving: bool) -> bool {
        let until = Instant::now() + ROUTE_TIMEOUT;
        loop {
            if self.slots_serving(ips).await.is_empty() != serving {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (at most `grace`) until `slots` have no request in flight.
    async fn drain(&self, slots: &[(String, String)], grace: Duration) {
        let until = Instant::now() + grace;
        while Instant::now() < until {
            let Ok(text) = master_cli(self.cli, "@1 show stat").await else {
                return;
            };
            let busy = parse_stat_sessions(&text)
                .iter()
                .any(|(b, s, n)| *n > 0 && slots.iter().any(|(sb, ss)| sb == b && ss == s));
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls etcd until the registrar has registered container `id` (its full id).
async fn wait_registered(d: &Discovery, id: &str) -> Result<(), etcd_client::Error> {
    let mut client = connect(d).await?;
    let until = Instant::now() + REGISTER_TIMEOUT;
    while Instant::now() < until {
        if is_registered(&mut client, &d.layout, id).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Deletes the registry keys of containers `ids` (full ids, matched
/// exactly); true when one was deleted.
async fn deregister(d: &Discovery, ids: &[&str]) -> Result<bool, etcd_client::Error> {
    let mut client = connect(d).await?;
    let mut deleted = false;
    for id in ids {
        deleted |= withdraw(&mut client, &d.layout, id).await?;
    }
    Ok(deleted)
}

async fn connect(d: &Discovery) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    Client::connect(&d.endpoints, Some(options)).await
}
