//! A recording fake of [`ContainerEngine`] for the controllers' unit tests:
//! containers, images, the network and volumes live in memory; every call
//! that changes something is appended to a log ([`Call`]) so tests assert
//! what happened and in which order; a [`Script`] makes things go wrong (a
//! build that fails, a container that never becomes healthy, a proxy that
//! never routes).
//!
//! The fake also plays the registrar and the proxy, as far as a swap sees
//! them: a container that became ready is registered ([`Call::Registered`])
//! and stays so until it stops or is deregistered; [`FakeProxy`] routes to
//! registered, running containers and logs when it starts ([`Call::Routed`])
//! or stops ([`Call::Unrouted`]) answering with one. Like the real router,
//! the proxy follows the registry [`ROUTE_LAG`] late (on tokio's clock, so
//! tests with paused time do not wait): a controller that does not wait for
//! the proxy is caught acting on a registration it has not applied yet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::yield_now;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use super::api::Registry;
use super::containers::ContainerStatus;
use super::health::{Check, NotReady};
use super::images::ImageOutput;
use super::progress::Reporter;
use super::{ContainerEngine, EngineError};
use crate::engine::runtime::{ProxyRuntime, ServerState};
use crate::engine::seeding::LoadError;
use crate::plan::names::{
    LABEL_HASH, LABEL_KIND, LABEL_PROJECT, LABEL_REPLICA, LABEL_SERVICE, LABEL_TASK,
};
use crate::plan::{ContainerSpec, Observed, ObservedState, OldMount};
use crate::spec::{Build, Health, RestartPolicy, Stack};

/// How long the fake proxy takes to apply a registry change.
pub const ROUTE_LAG: Duration = Duration::from_millis(100);

/// One thing a controller did, by container name (as it was at the time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Build(String),
    Pull(String),
    EnsureNetwork,
    RemoveNetwork,
    /// A named volume created (its full name).
    CreateVolume(String),
    RemoveVolume(String),
    Create(String),
    Start(String),
    Stop(String),
    Kill(String),
    Remove(String),
    Rename {
        from: String,
        to: String,
    },
    Seed(String),
    /// A one-off task container ran (its task).
    RunTask(String),
    MoveData(String),
    /// Files placed in a container: `container:dir/name`, one per file.
    Upload(String),
    /// A command run in a container: `container: argv...`.
    Exec(String),
    /// A readiness wait began.
    WaitReady(String),
    /// The (fake) registrar registered a container that became ready.
    Registered(String),
    Deregistered(String),
    /// The proxy answered, for the first time, with this container serving.
    Routed(String),
    /// The proxy answered, for the first time, without it.
    Unrouted(String),
    RemoveImage(String),
}

/// What goes wrong, set by the test.
#[derive(Debug, Default)]
pub struct Script {
    /// Services whose builds fail.
    pub build_fails: BTreeSet<String>,
    /// The image id each service's build produces (else `sha256:<service>-v1`).
    pub build_ids: BTreeMap<String, String>,
    /// Services whose containers, from now on, never become ready.
    pub unhealthy: BTreeSet<String>,
    /// Services whose containers fail to start.
    pub start_fails: BTreeSet<String>,
    /// Services whose containers exit right after they were found ready.
    pub exit_after_ready: BTreeSet<String>,
    /// Exit codes of one-off tasks (else 0).
    pub task_exit: BTreeMap<String, i64>,
    /// Services the proxy never routes to, registered or not.
    pub unroutable: BTreeSet<String>,
    /// Containers created after this many were are never routed either.
    pub unroutable_after: Option<u32>,
    /// No proxy answers (a registry runs, but no HAProxy).
    pub no_proxy: bool,
    /// Commands run in containers that fail: the first whose text contains
    /// the key exits 1 with the value as its output (else every command exits 0).
    pub exec_fails: Vec<(String, String)>,
    /// The stack's reach decision (else `Direct`, undecided).
    pub reach: Option<crate::engine::reach::Reach>,
}

/// One container of the fake engine.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// Its place in creation order (1, 2, ...).
    pub seq: u32,
    pub id: String,
    pub name: String,
    pub spec: ContainerSpec,
    pub state: ObservedState,
    pub ip: IpAddr,
    pub created: i64,
}

#[derive(Debug, Default)]
struct State {
    /// By id, in creation order (ids are `c1`, `c2`, ...).
    containers: BTreeMap<u32, FakeContainer>,
    next: u32,
    /// Image tag → id.
    images: BTreeMap<String, String>,
    network: bool,
    /// Full volume name → creation time.
    volumes: BTreeMap<String, i64>,
    /// Registered container ids, with when.
    registered: BTreeMap<String, TokioInstant>,
    /// Container ids deregistered (while running), with when: the proxy
    /// still routes to them for [`ROUTE_LAG`].
    withdrawn: BTreeMap<String, TokioInstant>,
    /// Container ids the proxy last answered as serving.
    routed: BTreeSet<String>,
    calls: Vec<Call>,
    script: Script,
}

impl State {
    fn find(&self, id: &str) -> Result<&FakeContainer, EngineError> {
        self.containers
            .values()
            .find(|c| c.id == id)
            .ok_or_else(|| EngineError::NotFound(format!("no container `{id}`")))
    }

    fn find_mut(&mut self, id: &str) -> Result<&mut FakeContainer, EngineError> {
        self.containers
            .values_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| EngineError::NotFound(format!("no container `{id}`")))
    }

    fn name_of(&self, id: &str) -> String {
        self.find(id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|_| id.to_string())
    }
}

/// The fake engine; clones share one state.
#[derive(Debug, Clone, Default)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock fails anyway.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeEngine {
    pub fn new() -> FakeEngine {
        FakeEngine::default()
    }

    /// Changes the script.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut lock(&self.state).script);
    }

    /// From now on, the proxy routes no container created later.
    pub fn stop_routing_new(&self) {
        let mut s = lock(&self.state);
        s.script.unroutable_after = Some(s.next);
    }

    /// An image present on the engine.
    pub fn image(&self, tag: &str, id: &str) {
        lock(&self.state).images.insert(tag.into(), id.into());
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Forgets the calls made so far (after a set-up `up`, say).
    pub fn clear_calls(&self) {
        lock(&self.state).calls.clear();
    }

    /// Every container, in creation order.
    pub fn containers(&self) -> Vec<FakeContainer> {
        lock(&self.state).containers.values().cloned().collect()
    }

    /// The names of the running containers of `service`, sorted.
    pub fn running(&self, service: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .containers()
            .into_iter()
            .filter(|c| c.spec.service == service && c.state == ObservedState::Running)
            .map(|c| c.name)
            .collect();
        names.sort();
        names
    }

    /// The named volumes (full names).
    pub fn volumes(&self) -> Vec<String> {
        lock(&self.state).volumes.keys().cloned().collect()
    }

    /// Stops a container behind the controllers' back (a crash, `docker stop`).
    pub fn crash(&self, name: &str) {
        let mut s = lock(&self.state);
        let Some(c) = s.containers.values_mut().find(|c| c.name == name) else {
            return;
        };
        c.state = ObservedState::Exited;
        let id = c.id.clone();
        s.registered.remove(&id);
    }

    /// The fake registry, sharing this engine's state.
    pub fn registry(&self) -> FakeRegistry {
        FakeRegistry {
            state: self.state.clone(),
        }
    }

    fn log(&self, call: Call) {
        lock(&self.state).calls.push(call);
    }
}

impl ContainerEngine for FakeEngine {
    type Proxy = FakeProxy;

    async fn list_project(&self, project: &str) -> Result<Vec<Observed>, EngineError> {
        yield_now().await;
        let s = lock(&self.state);
        Ok(s.containers
            .values()
            .filter(|c| c.spec.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project))
            .map(|c| {
                let label = |k: &str| c.spec.labels.get(k).cloned();
                Observed {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    service: label(LABEL_SERVICE),
                    replica: label(LABEL_REPLICA).and_then(|r| r.parse().ok()),
                    config_hash: label(LABEL_HASH),
                    task: label(LABEL_TASK),
                    kind: label(LABEL_KIND),
                    state: c.state,
                    created: c.created,
                }
            })
            .collect())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        if s.containers.values().any(|c| c.name == spec.name) {
            return Err(EngineError::Api {
                what: format!("creating `{}`", spec.name),
                message: "Conflict. The container name is already in use".into(),
            });
        }
        s.next += 1;
        let n = s.next;
        let id = format!("c{n}");
        s.containers.insert(
            n,
            FakeContainer {
                seq: n,
                id: id.clone(),
                name: spec.name.clone(),
                spec: spec.clone(),
                state: ObservedState::Created,
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, (n / 250) as u8, (n % 250 + 2) as u8)),
                created: 1_000 + i64::from(n),
            },
        );
        s.calls.push(Call::Create(spec.name.clone()));
        Ok(id)
    }

    async fn start(&self, id: &str, service: &str) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(id);
        s.calls.push(Call::Start(name));
        let c = s.find(id)?;
        let ports: Vec<u16> = c.spec.ports.iter().filter_map(|p| p.host_port).collect();
        let taken = s.containers.values().any(|o| {
            o.id != id
                && o.state == ObservedState::Running
                && o.spec
                    .ports
                    .iter()
                    .any(|p| p.host_port.is_some_and(|h| ports.contains(&h)))
        });
        if taken || s.script.start_fails.contains(service) {
            return Err(EngineError::PortTaken {
                service: service.into(),
                port: ports.first().map(|p| p.to_string()).unwrap_or_default(),
            });
        }
        s.find_mut(id)?.state = ObservedState::Running;
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Option<Duration>) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(id);
        s.calls.push(Call::Stop(name));
        s.find_mut(id)?.state = ObservedState::Exited;
        // The registrar follows the stop.
        s.registered.remove(id);
        Ok(())
    }

    async fn kill(&self, id: &str) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(id);
        s.calls.push(Call::Kill(name));
        s.find_mut(id)?.state = ObservedState::Exited;
        s.registered.remove(id);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(id);
        s.calls.push(Call::Remove(name));
        let before = s.containers.len();
        s.containers.retain(|_, c| c.id != id);
        s.registered.remove(id);
        if s.containers.len() == before {
            return Err(EngineError::NotFound(format!("no container `{id}`")));
        }
        Ok(())
    }

    async fn remove_with_volumes(&self, id: &str) -> Result<(), EngineError> {
        yield_now().await;
        ContainerEngine::remove(self, id).await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        if s.containers.values().any(|c| c.name == name) {
            return Err(EngineError::Api {
                what: format!("renaming `{id}`"),
                message: "name in use".into(),
            });
        }
        let c = s.find_mut(id)?;
        let from = std::mem::replace(&mut c.name, name.to_string());
        s.calls.push(Call::Rename {
            from,
            to: name.to_string(),
        });
        Ok(())
    }

    async fn inspect(&self, id: &str, _network: &str) -> Result<ContainerStatus, EngineError> {
        yield_now().await;
        let s = lock(&self.state);
        let c = s.find(id)?;
        Ok(ContainerStatus {
            id: c.id.clone(),
            name: c.name.clone(),
            state: c.state,
            exit_code: None,
            error: None,
            restart_count: 0,
            oom_killed: false,
            ip: Some(c.ip),
            published: Vec::new(),
            docker_health: None,
            docker_health_output: None,
            pid: 0,
            labels: c.spec.labels.clone().into_iter().collect(),
            started_at: None,
            image: Some(c.spec.image_id.clone()),
        })
    }

    async fn mounts_of(&self, id: &str) -> Result<Vec<OldMount>, EngineError> {
        yield_now().await;
        lock(&self.state).find(id).map(|_| Vec::new())
    }

    async fn carry_volumes_from(
        &self,
        _spec: &mut ContainerSpec,
        old: &str,
    ) -> Result<Vec<OldMount>, EngineError> {
        yield_now().await;
        lock(&self.state).find(old).map(|_| Vec::new())
    }

    async fn last_lines(&self, id: &str, _n: u64) -> Vec<String> {
        yield_now().await;
        vec![format!("last words of {}", lock(&self.state).name_of(id))]
    }

    async fn wait_exit(
        &self,
        id: &str,
        _what: impl FnOnce() -> String + Send,
    ) -> Result<Option<i64>, EngineError> {
        yield_now().await;
        lock(&self.state).find_mut(id)?.state = ObservedState::Exited;
        Ok(Some(0))
    }

    async fn run_detached(&self, spec: &ContainerSpec) -> Result<(i64, Vec<String>), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let task = spec.labels.get(LABEL_TASK).cloned().unwrap_or_default();
        s.calls.push(Call::RunTask(task.clone()));
        let code = s.script.task_exit.get(&task).copied().unwrap_or(0);
        Ok((code, vec![format!("{task} exited {code}")]))
    }

    async fn prepare_seeds(
        &self,
        stack: &Stack,
        project: &str,
        units: &[String],
        _reporter: &Reporter,
    ) -> Result<BTreeSet<String>, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let mut to_seed = BTreeSet::new();
        for unit in units {
            let seeded = stack.datastores.get(unit).is_some_and(|d| d.seed.is_some());
            let Some((volume, _)) = crate::plan::data_volume(stack, unit).filter(|_| seeded) else {
                continue;
            };
            // Only a volume made now is seeded.
            let full = crate::plan::names::volume_name(project, &volume);
            if !s.volumes.contains_key(&full) {
                s.volumes.insert(full.clone(), 500);
                s.calls.push(Call::CreateVolume(full));
                to_seed.insert(unit.clone());
            }
        }
        Ok(to_seed)
    }

    async fn load_seed(
        &self,
        _stack: &Stack,
        _project: &str,
        _unit: &str,
        (_, name): (&str, &str),
        _deadline: Instant,
        _reporter: &Reporter,
    ) -> Result<(), LoadError> {
        yield_now().await;
        self.log(Call::Seed(name.to_string()));
        Ok(())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        yield_now().await;
        Ok(lock(&self.state).images.get(reference).cloned())
    }

    async fn local_image(
        &self,
        reference: &str,
        _platform: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        yield_now().await;
        Ok(lock(&self.state).images.get(reference).cloned())
    }

    async fn build(
        &self,
        service: &str,
        _build: &Build,
        tag: &str,
        _platform: Option<&str>,
        _on_output: impl FnMut(ImageOutput) + Send,
    ) -> Result<String, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        s.calls.push(Call::Build(service.into()));
        if s.script.build_fails.contains(service) {
            return Err(EngineError::Build {
                service: service.into(),
                step: "Step 2/3 : RUN make".into(),
                message: "exit code 2".into(),
                output: vec!["make: *** [all] Error 2".into()],
            });
        }
        let id = s
            .script
            .build_ids
            .get(service)
            .cloned()
            .unwrap_or_else(|| format!("sha256:{service}-v1"));
        s.images.insert(tag.into(), id.clone());
        Ok(id)
    }

    async fn pull(
        &self,
        _service: &str,
        image: &str,
        _platform: Option<&str>,
        _on_output: impl FnMut(ImageOutput) + Send,
    ) -> Result<String, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        s.calls.push(Call::Pull(image.into()));
        let id = format!("sha256:pulled-{image}");
        s.images.insert(image.into(), id.clone());
        Ok(id)
    }

    async fn put_archive(&self, id: &str, _tar: Vec<u8>) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(id);
        s.calls.push(Call::Upload(format!("{name}:/")));
        Ok(())
    }

    async fn read_file(&self, _id: &str, _path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        yield_now().await;
        Ok(None)
    }

    async fn remove_unused_image(&self, id: &str) -> bool {
        yield_now().await;
        self.log(Call::RemoveImage(id.into()));
        true
    }

    async fn ensure_network(&self, _project: &str) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        s.network = true;
        s.calls.push(Call::EnsureNetwork);
        Ok(())
    }

    async fn remove_network(&self, _project: &str) -> Result<bool, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        s.calls.push(Call::RemoveNetwork);
        Ok(std::mem::take(&mut s.network))
    }

    async fn ensure_volume(&self, project: &str, name: &str) -> Result<bool, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let full = crate::plan::names::volume_name(project, name);
        if s.volumes.contains_key(&full) {
            return Ok(false);
        }
        s.volumes.insert(full.clone(), 500);
        s.calls.push(Call::CreateVolume(full));
        Ok(true)
    }

    async fn list_volumes(&self, _project: &str) -> Result<Vec<String>, EngineError> {
        yield_now().await;
        Ok(self.volumes())
    }

    async fn remove_volume(&self, full_name: &str) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        s.volumes.remove(full_name);
        s.calls.push(Call::RemoveVolume(full_name.into()));
        Ok(())
    }

    async fn volume_created(&self, full_name: &str) -> Result<Option<i64>, EngineError> {
        yield_now().await;
        Ok(lock(&self.state).volumes.get(full_name).copied())
    }

    async fn move_data(
        &self,
        from: &str,
        _helper: &ContainerSpec,
        _dir: &str,
    ) -> Result<bool, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(from);
        s.calls.push(Call::MoveData(name));
        Ok(true)
    }

    async fn health_check(&self, health: Option<&Health>, _image: &str) -> Check {
        yield_now().await;
        match health {
            Some(h) => Check::Probe(h.clone()),
            None => Check::Running,
        }
    }

    async fn wait_ready(
        &self,
        id: &str,
        _network: &str,
        _restart: RestartPolicy,
        _check: &Check,
        _deadline: Instant,
        cancel: &CancellationToken,
        mut on_detail: impl FnMut(&str) + Send,
    ) -> Result<Duration, NotReady> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(id);
        s.calls.push(Call::WaitReady(name));
        if cancel.is_cancelled() {
            return Err(NotReady::Cancelled);
        }
        let Ok(c) = s.find(id) else {
            return Err(NotReady::Gone);
        };
        if c.state != ObservedState::Running {
            return Err(NotReady::Exited {
                exit_code: 1,
                error: None,
                oom_killed: false,
            });
        }
        if s.script.unhealthy.contains(&c.spec.service) {
            on_detail("HTTP /health: 503");
            return Err(NotReady::Unhealthy {
                last: "HTTP /health: 503".into(),
            });
        }
        let (id, name) = (c.id.clone(), c.name.clone());
        if s.script.exit_after_ready.contains(&c.spec.service) {
            if let Ok(c) = s.find_mut(&id) {
                c.state = ObservedState::Exited;
            }
            return Ok(Duration::ZERO);
        }
        // The registrar registers what became healthy.
        if let std::collections::btree_map::Entry::Vacant(e) = s.registered.entry(id) {
            e.insert(TokioInstant::now());
            s.calls.push(Call::Registered(name));
        }
        Ok(Duration::ZERO)
    }

    fn reach(&self) -> (crate::engine::reach::Reach, bool) {
        match lock(&self.state).script.reach {
            Some(reach) => (reach, true),
            None => (crate::engine::reach::Reach::Direct, false),
        }
    }

    async fn find_proxy(&self, _project: &str) -> Option<FakeProxy> {
        yield_now().await;
        let no_proxy = lock(&self.state).script.no_proxy;
        (!no_proxy).then(|| FakeProxy {
            state: self.state.clone(),
        })
    }
}

/// The fake engine's proxy: it routes to registered, running containers
/// (except the script's unroutable services), one backend per service.
#[derive(Debug, Clone)]
pub struct FakeProxy {
    state: Arc<Mutex<State>>,
}

impl ProxyRuntime for FakeProxy {
    async fn servers(&self) -> Option<Vec<ServerState>> {
        yield_now().await;
        let now = TokioInstant::now();
        let mut s = lock(&self.state);
        let serving: Vec<FakeContainer> = s
            .containers
            .values()
            .filter(|c| c.state == ObservedState::Running)
            .filter(|c| {
                let applied = |t: Option<&TokioInstant>| t.is_some_and(|t| now >= *t + ROUTE_LAG);
                let joined = applied(s.registered.get(&c.id));
                let left = applied(s.withdrawn.get(&c.id));
                joined || (s.withdrawn.contains_key(&c.id) && !left)
            })
            .filter(|c| !s.script.unroutable.contains(&c.spec.service))
            .filter(|c| s.script.unroutable_after.is_none_or(|n| c.seq <= n))
            .cloned()
            .collect();
        let now: BTreeSet<String> = serving.iter().map(|c| c.id.clone()).collect();
        let gone: Vec<String> = s.routed.difference(&now).cloned().collect();
        let new: Vec<String> = now.difference(&s.routed).cloned().collect();
        for id in gone {
            let name = s.name_of(&id);
            s.calls.push(Call::Unrouted(name));
        }
        for id in new {
            let name = s.name_of(&id);
            s.calls.push(Call::Routed(name));
        }
        s.routed = now;
        Some(
            serving
                .iter()
                .map(|c| ServerState {
                    backend: c.spec.service.clone(),
                    server: format!("{}-{}", c.spec.service, c.spec.replica),
                    address: c.ip.to_string(),
                    port: 80,
                    op_state: 2,
                    admin_state: 0,
                })
                .collect(),
        )
    }

    async fn sessions(&self) -> Option<Vec<(String, String, u64)>> {
        yield_now().await;
        // Nothing in flight: draining ends at once.
        Some(Vec::new())
    }
}

/// The fake engine's registry.
#[derive(Debug, Clone)]
pub struct FakeRegistry {
    state: Arc<Mutex<State>>,
}

impl Registry for FakeRegistry {
    async fn wait_registered(&self, _id: &str) {
        yield_now().await;
        // The fake registrar registers at readiness; nothing to wait for.
    }

    async fn deregister(&self, ids: &[&str]) -> bool {
        yield_now().await;
        let mut s = lock(&self.state);
        let mut deleted = false;
        for id in ids {
            if s.registered.remove(*id).is_some() {
                s.withdrawn.insert(id.to_string(), TokioInstant::now());
                deleted = true;
                let name = s.name_of(id);
                s.calls.push(Call::Deregistered(name));
            }
        }
        deleted
    }
}

impl crate::engine::seeding::SeedEngine for FakeEngine {
    async fn upload_files(
        &self,
        id: &str,
        dir: &str,
        files: &[(String, Vec<u8>)],
        _make_dir: bool,
    ) -> Result<(), EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let name = s.name_of(id);
        for (file, _) in files {
            s.calls.push(Call::Upload(format!("{name}:{dir}/{file}")));
        }
        Ok(())
    }

    async fn exec_capture(
        &self,
        id: &str,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<crate::engine::exec::ExecOutput, EngineError> {
        yield_now().await;
        let mut s = lock(&self.state);
        let text = argv.join(" ");
        let name = s.name_of(id);
        s.calls.push(Call::Exec(format!("{name}: {text}")));
        let failed = s
            .script
            .exec_fails
            .iter()
            .find(|(key, _)| text.contains(key.as_str()))
            .map(|(_, output)| output.clone());
        Ok(crate::engine::exec::ExecOutput {
            exit_code: Some(if failed.is_some() { 1 } else { 0 }),
            output: failed.unwrap_or_default(),
        })
    }

    async fn volume_info(
        &self,
        full_name: &str,
    ) -> Result<Option<crate::engine::datastore::VolumeInfo>, EngineError> {
        yield_now().await;
        Ok(lock(&self.state).volumes.get(full_name).map(|created| {
            crate::engine::datastore::VolumeInfo {
                name: full_name.to_string(),
                created: created.to_string(),
                labels: Default::default(),
            }
        }))
    }

    async fn remove_volume(&self, full_name: &str) -> Result<(), EngineError> {
        ContainerEngine::remove_volume(self, full_name).await
    }

    async fn ensure_volume_with(
        &self,
        project: &str,
        name: &str,
        _extra: &[(&str, &str)],
    ) -> Result<bool, EngineError> {
        ContainerEngine::ensure_volume(self, project, name).await
    }
}
