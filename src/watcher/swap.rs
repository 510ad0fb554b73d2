//! Rebuild one service and swap its containers blue-green, replica by replica:
//! the new container starts beside the old one, and only when it is healthy
//! (and registered in etcd, when a registry is running) does the old one stop.
//! A new version that fails never got traffic: the registrar registers only
//! healthy containers, and the new one is removed, the old one untouched.
//! The old one leaves the registry (so the proxy) before it is stopped.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::health::{self, Check};
use crate::engine::reach::Reach;
use crate::engine::runtime::ProxyRuntime;
use crate::engine::{ContainerEngine, EngineError, Registry};
use crate::etcd::rpc::{self, Client, Timeouts};
use crate::plan::{self, names, ContainerSpec, Observed, ObservedState};
use crate::registrar::presence::{is_registered, withdraw};
use crate::router::Layout;
use crate::spec::{Container, Stack, UnitKind};
use crate::watcher::fast::Overlay;

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
    /// The fast path: how many changed files were placed on the previous
    /// image (the real build runs behind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<usize>,
    /// Why the fast path did not apply, when the watcher tried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_build: Option<String>,
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
        let build = match self.overlay {
            Some(n) => format!("{n} file(s) placed on the previous image"),
            None => format!("build {:.1}s{superseded}", self.build_ms as f64 / 1000.0),
        };
        format!(
            "{}: {} changed · {build} · swap {:.1}s · {}",
            self.service,
            self.trigger,
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
    /// The fast path: files to place in each new container before it
    /// starts; `image_id` is then the previous image they go on.
    pub overlay: Option<Arc<Overlay>>,
}

impl Built {
    /// What the configuration hash takes as the image: the image itself,
    /// or the previous image with this overlay's digest.
    pub fn hash_id(&self) -> String {
        match &self.overlay {
            Some(o) => format!("{}+overlay:{}", self.image_id, o.digest),
            None => self.image_id.clone(),
        }
    }
}

/// The configuration hash the replicas of `service` get from the image
/// `hash_id` (see [`Built::hash_id`]), as [`Swap`] computes it.
pub fn service_hash<E: ContainerEngine>(
    engine: &E,
    stack: &Stack,
    project: &str,
    service: &str,
    hash_id: &str,
) -> Option<String> {
    let unit = stack.unit(service)?;
    let published;
    let unit = if engine.reach().0 == Reach::Published {
        published = plan::probe_published(unit);
        &published
    } else {
        unit
    };
    plan::desired_containers(project, service, UnitKind::Service, unit, "", hash_id, 1)
        .pop()
        .map(|s| s.config_hash)
}

/// Builds (or finds) the image of `service`: the first half of a rebuild,
/// which the caller may abandon (drop) when a newer save arrives.
pub async fn build<E: ContainerEngine>(
    engine: &E,
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
        Ok(image_id) => Ok(Built {
            tag,
            image_id,
            overlay: None,
        }),
        Err(e) => Err(Outcome::BuildFailed {
            message: e.to_string(),
        }),
    }
}

impl Registry for Discovery {
    async fn wait_registered(&self, id: &str) {
        // Best effort: without a registry answer the swap still goes on,
        // as long as the proxy confirms the new one serves.
        let _ = wait_registered(self, id).await;
    }

    async fn deregister(&self, ids: &[&str]) -> bool {
        deregister(self, ids).await.unwrap_or(false)
    }
}

/// What one rebuild works with, the same for every replica it swaps.
pub struct Swap<'a, E, R> {
    pub engine: &'a E,
    pub stack: &'a Stack,
    pub project: &'a str,
    /// The running stack's registry, when a routing path runs: new
    /// containers must register (and the proxy route them) before old ones go.
    pub registry: Option<&'a R>,
    /// The old containers being stopped in the background.
    pub retiring: &'a Retiring,
    pub cancel: &'a CancellationToken,
}

/// What a swap does with one replica, decided from what runs
/// ([`replica_move`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// The running containers already have this configuration (a change the
    /// build ignores): nothing to swap.
    Unchanged,
    /// Nothing runs for the replica: the new container takes its name.
    Fresh,
    /// The old containers leave first, then the new one starts under the
    /// usual name: a fixed host port can be bound by one container only.
    Replace,
    /// The new container starts beside the old ones under a distinct name
    /// (the labels are the same, which is what `up`, `ps` and the registrar
    /// go by); it takes the usual name once they are gone.
    SideBySide { name: String },
}

/// Decides how replica `spec` replaces its running containers `old`.
/// `generation` makes the side-by-side name unique to this swap.
pub fn replica_move(old: &[&Observed], spec: &ContainerSpec, generation: u128) -> Move {
    if old.is_empty() {
        return Move::Fresh;
    }
    if old
        .iter()
        .all(|o| o.config_hash.as_deref() == Some(spec.config_hash.as_str()))
    {
        return Move::Unchanged;
    }
    let fixed_port = spec.ports.iter().any(|p| p.host_port.is_some());
    let name = format!("{}-g{generation}", spec.name);
    if fixed_port || old.iter().any(|o| o.name == name) {
        Move::Replace
    } else {
        Move::SideBySide { name }
    }
}

/// How one replica's swap ended.
enum Replica {
    /// Nothing to do.
    Unchanged,
    /// The new container serves; reported by the replica's usual name.
    Swapped(String),
    /// The swap of this service stops here, with this outcome.
    Stopped(Outcome),
}

impl<E: ContainerEngine, R: Registry> Swap<'_, E, R> {
    /// Builds (or finds) the image of `service` and swaps its running replicas.
    pub async fn rebuild(&self, service: &str, trigger: &str) -> Report {
        let t0 = Instant::now();
        let built = build(self.engine, self.stack, self.project, service).await;
        let build_ms = t0.elapsed().as_millis() as u64;
        let t1 = Instant::now();
        let outcome = match built {
            Ok(built) => self.deploy(service, &built).await,
            Err(outcome) => outcome,
        };
        Report {
            service: service.into(),
            trigger: trigger.into(),
            build_ms,
            swap_ms: t1.elapsed().as_millis() as u64,
            superseded: 0,
            overlay: None,
            full_build: None,
            outcome,
        }
    }

    /// Swaps the running replicas of `service` to `built` (see [`deploy`]).
    pub async fn deploy(&self, service: &str, built: &Built) -> Outcome {
        self.swap(service, built)
            .await
            .unwrap_or_else(|e| Outcome::Failed {
                message: e.to_string(),
            })
    }

    async fn swap(&self, service: &str, built: &Built) -> Result<Outcome, EngineError> {
        let Some(unit) = self.stack.unit(service) else {
            return Ok(Outcome::Failed {
                message: "is not in the stack".into(),
            });
        };
        let observed = self.engine.list_project(self.project).await?;
        // Containers an earlier swap is stopping left the proxy already: they
        // are nobody's old version any more.
        let mine: Vec<&Observed> = observed
            .iter()
            .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
            .filter(|o| matches!(o.state, ObservedState::Running | ObservedState::Restarting))
            .filter(|o| !self.retiring.contains(&o.id))
            .collect();
        // The running scale, not the stack's: `scale` may have changed it.
        let replicas = mine
            .iter()
            .filter_map(|o| o.replica)
            .max()
            .unwrap_or(unit.replicas)
            .max(1);
        // Reached through loopback ports only: the probe port is published there.
        let published;
        let unit = if self.engine.reach().0 == Reach::Published {
            published = plan::probe_published(unit);
            &published
        } else {
            unit
        };
        let mut desired = plan::desired_containers(
            self.project,
            service,
            UnitKind::Service,
            unit,
            &built.tag,
            &built.hash_id(),
            replicas,
        );
        if built.overlay.is_some() {
            // Made from the previous image by id: the tag may move to the
            // real build meanwhile.
            for spec in &mut desired {
                spec.image = built.image_id.clone();
                spec.image_id = built.image_id.clone();
            }
        }
        let check = self
            .engine
            .health_check(unit.health.as_ref(), &built.tag)
            .await;
        // The proxy itself says when it routes to a container: asked only when
        // a registry runs (without one, nothing routes by registration).
        let proxy = match self.registry {
            Some(_) => self.engine.find_proxy(self.project).await,
            None => None,
        };
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let mut swapped = Vec::new();
        for spec in desired {
            let old: Vec<&Observed> = mine
                .iter()
                .filter(|o| o.replica == Some(spec.replica))
                .copied()
                .collect();
            let how = replica_move(&old, &spec, generation);
            let replica = self
                .swap_replica(unit, built, &check, proxy.as_ref(), &old, spec, how)
                .await?;
            match replica {
                Replica::Unchanged => {}
                Replica::Swapped(name) => swapped.push(name),
                Replica::Stopped(outcome) => return Ok(outcome),
            }
        }
        Ok(Outcome::Swapped {
            containers: swapped,
        })
    }

    /// Swaps one replica: the new container starts (beside the old ones,
    /// or after them for [`Move::Replace`]), must be healthy, registered and
    /// routed, then the old ones leave the proxy and retire in the background.
    #[allow(clippy::too_many_arguments)]
    async fn swap_replica(
        &self,
        unit: &Container,
        built: &Built,
        check: &Check,
        proxy: Option<&E::Proxy>,
        old: &[&Observed],
        mut spec: ContainerSpec,
        how: Move,
    ) -> Result<Replica, EngineError> {
        if how == Move::Unchanged {
            return Ok(Replica::Unchanged);
        }
        let network = names::network_name(self.project);
        let canonical = spec.name.clone();
        let (mut leaving, mut old_ips) = self.retirement(old, &spec, built, proxy).await;
        // The replacement keeps the anonymous volumes of the one it replaces.
        if let Some(o) = old.first() {
            self.engine.carry_volumes_from(&mut spec, &o.id).await?;
        }
        match how {
            Move::SideBySide { name } => spec.name = name,
            Move::Replace => {
                leaving.run(self.engine, self.retiring).await;
                leaving.ids.clear();
                leaving.images.clear();
                old_ips.clear();
            }
            Move::Fresh | Move::Unchanged => {}
        }
        let old_routed = match proxy {
            Some(p) => !slots_serving(p, &old_ips).await.is_empty(),
            None => false,
        };
        let id = self.engine.create(&spec).await?;
        if let Some(overlay) = &built.overlay {
            if let Err(message) = self.place(&id, overlay).await {
                let _ = self.engine.remove(&id).await;
                return Ok(Replica::Stopped(Outcome::Failed {
                    message: format!("placing the changed files in `{}`: {message}", spec.name),
                }));
            }
        }
        self.engine.start(&id, &spec.service).await?;
        if let Err(unhealthy) = self.wait_healthy(unit, check, &id, &spec.name).await {
            return Ok(Replica::Stopped(unhealthy));
        }
        if let Some(registry) = self.registry {
            registry.wait_registered(&id).await;
            let new_ip = self.engine.inspect(&id, &network).await?.ip;
            let routed = match (proxy, new_ip) {
                // The old one is behind the proxy, so the new one must be
                // too before the old one leaves.
                (Some(p), Some(ip)) if old_routed => wait_serving(p, &[ip], true).await,
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
                    slots: leave_proxy(registry, proxy, &[&id], &ips).await,
                    images: Vec::new(),
                    ..leaving
                };
                failed.run(self.engine, self.retiring).await;
                return Ok(Replica::Stopped(Outcome::Failed {
                    message: format!(
                        "the proxy did not route to the new `{}` within {}s; the old version keeps serving",
                        spec.name,
                        ROUTE_TIMEOUT.as_secs()
                    ),
                }));
            }
            // Out of the proxy before it is stopped, so no new request
            // reaches a container that is shutting down.
            let ids: Vec<&str> = leaving.ids.iter().map(String::as_str).collect();
            leaving.slots = leave_proxy(registry, proxy, &ids, &old_ips).await;
        }
        // Draining, stopping (a process that ignores SIGTERM takes its whole
        // grace) and removing the old one hold up neither the next replica
        // nor the next save: they go on in the background.
        self.retiring.spawn(self.engine, leaving);
        // Reported by the name the replica goes by: the new container takes
        // it once the old one is gone.
        Ok(Replica::Swapped(canonical))
    }

    /// Places an overlay's files in the created (not started) container
    /// `id`, owners named by `--chown` looked up in its own user and group
    /// files (the previous image's, as the build would).
    async fn place(&self, id: &str, overlay: &Overlay) -> Result<(), String> {
        let names = if overlay.needs_names() {
            let read = |path: &'static str| async move {
                self.engine
                    .read_file(id, path)
                    .await
                    .map(|b| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned())
                    .map_err(|e| e.to_string())
            };
            Some((read("/etc/passwd").await?, read("/etc/group").await?))
        } else {
            None
        };
        let tar = overlay.pack(names.as_ref().map(|(p, g)| (p.as_str(), g.as_str())))?;
        self.engine
            .put_archive(id, tar)
            .await
            .map_err(|e| e.to_string())
    }

    /// The old containers of a replica as a retirement still to run, and
    /// where the proxy sends their traffic now, if anywhere; with the images
    /// they ran (removed once nothing needs them, or every save would leave
    /// one behind).
    async fn retirement(
        &self,
        old: &[&Observed],
        spec: &ContainerSpec,
        built: &Built,
        proxy: Option<&E::Proxy>,
    ) -> (Retirement<E::Proxy>, Vec<IpAddr>) {
        let network = names::network_name(self.project);
        let mut old_ips = Vec::new();
        let mut images = Vec::new();
        for o in old {
            if let Ok(status) = self.engine.inspect(&o.id, &network).await {
                old_ips.extend(status.ip);
                images.extend(status.image.filter(|i| *i != built.image_id));
            }
        }
        let leaving = Retirement {
            project: self.project.to_string(),
            service: spec.service.clone(),
            replica: spec.replica,
            canonical: spec.name.clone(),
            ids: old.iter().map(|o| o.id.clone()).collect(),
            proxy: proxy.cloned(),
            slots: Vec::new(),
            grace: spec.stop_grace,
            images,
        };
        (leaving, old_ips)
    }

    /// Waits until the new container `id` is ready; if it is not, removes it
    /// (it never served: unhealthy containers are never registered) and
    /// returns the outcome that says why.
    async fn wait_healthy(
        &self,
        unit: &Container,
        check: &Check,
        id: &str,
        name: &str,
    ) -> Result<(), Outcome> {
        let network = names::network_name(self.project);
        let mut last = None;
        let ready = self
            .engine
            .wait_ready(
                id,
                &network,
                unit.restart,
                check,
                std::time::Instant::now() + READY_TIMEOUT,
                self.cancel,
                |d| last = Some(d.to_string()),
            )
            .await;
        let Err(why) = ready else {
            return Ok(());
        };
        let logs = self.engine.last_lines(id, 20).await;
        let _ = self.engine.stop(id, Some(Duration::from_secs(1))).await;
        let _ = self.engine.remove(id).await;
        let health = match &why {
            health::NotReady::Unhealthy { last } | health::NotReady::Timeout { last } => {
                Some(last.clone())
            }
            _ => last,
        };
        Err(Outcome::Unhealthy {
            container: name.to_string(),
            reason: why.to_string(),
            health,
            logs,
        })
    }
}

/// The old containers of one replica on their way out: already out of the
/// proxy (when it routed to them), still to be drained, stopped, removed.
struct Retirement<P> {
    project: String,
    service: String,
    replica: u32,
    /// The replica's usual name, which its serving container takes back.
    canonical: String,
    ids: Vec<String>,
    proxy: Option<P>,
    /// The proxy's slots that sent them traffic, to drain.
    slots: Vec<(String, String)>,
    grace: Duration,
    /// The images they ran, removed when nothing else needs them.
    images: Vec<String>,
}

impl<P: ProxyRuntime> Retirement<P> {
    /// Drains, stops and removes; then the replica's serving container gets
    /// the usual name back and the old images go. Errors only leave
    /// something behind for the next `up` or `down`, so they are not
    /// reported.
    async fn run<E: ContainerEngine>(&self, engine: &E, retiring: &Retiring) {
        if let (Some(p), false) = (&self.proxy, self.slots.is_empty()) {
            drain(p, &self.slots, self.grace).await;
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
    async fn settle_name<E: ContainerEngine>(&self, engine: &E, retiring: &Retiring) {
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
    /// Whether container `id` is on its way out.
    pub fn contains(&self, id: &str) -> bool {
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

    fn spawn<E: ContainerEngine>(&self, engine: &E, job: Retirement<E::Proxy>) {
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
async fn leave_proxy<R: Registry, P: ProxyRuntime>(
    registry: &R,
    proxy: Option<&P>,
    ids: &[&str],
    ips: &[IpAddr],
) -> Vec<(String, String)> {
    let slots = match proxy {
        Some(p) => slots_serving(p, ips).await,
        None => Vec::new(),
    };
    let deleted = registry.deregister(ids).await;
    match proxy {
        Some(p) if !slots.is_empty() => {
            wait_serving(p, ips, false).await;
        }
        None if deleted => tokio::time::sleep(ROUTE_SETTLE).await,
        _ => {}
    }
    slots
}

/// The (backend, server) slots of the proxy that send traffic to one of `ips`.
async fn slots_serving<P: ProxyRuntime>(proxy: &P, ips: &[IpAddr]) -> Vec<(String, String)> {
    let servers = proxy.servers().await.unwrap_or_default();
    servers
        .into_iter()
        .filter(|s| s.serving() && ips.iter().any(|ip| s.address == ip.to_string()))
        .map(|s| (s.backend, s.server))
        .collect()
}

/// Waits until the proxy sends traffic to one of `ips` (`serving`), or to
/// none of them; false when that did not happen within [`ROUTE_TIMEOUT`].
async fn wait_serving<P: ProxyRuntime>(proxy: &P, ips: &[IpAddr], serving: bool) -> bool {
    let until = Instant::now() + ROUTE_TIMEOUT;
    loop {
        if slots_serving(proxy, ips).await.is_empty() != serving {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most `grace`) until `slots` have no request in flight.
async fn drain<P: ProxyRuntime>(proxy: &P, slots: &[(String, String)], grace: Duration) {
    let until = Instant::now() + grace;
    while Instant::now() < until {
        let Some(sessions) = proxy.sessions().await else {
            return;
        };
        let busy = sessions
            .iter()
            .any(|(b, s, n)| *n > 0 && slots.iter().any(|(sb, ss)| sb == b && ss == s));
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls etcd until the registrar has registered container `id` (its full id).
async fn wait_registered(d: &Discovery, id: &str) -> Result<(), rpc::Error> {
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
async fn deregister(d: &Discovery, ids: &[&str]) -> Result<bool, rpc::Error> {
    let mut client = connect(d).await?;
    let mut deleted = false;
    for id in ids {
        deleted |= withdraw(&mut client, &d.layout, id).await?;
    }
    Ok(deleted)
}

async fn connect(d: &Discovery) -> Result<Client, rpc::Error> {
    let timeouts = Timeouts::new(Duration::from_secs(2), Duration::from_secs(2));
    Client::connect(&d.endpoints, timeouts).await
}

#[cfg(test)]
mod tests;
