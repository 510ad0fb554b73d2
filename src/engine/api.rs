//! The engine seam: the operations the controllers (`apply`, the watcher's
//! swap) ask of a container engine, as a trait. [`Engine`] implements it over
//! bollard; `engine::fake` (tests only) implements it in memory and records
//! every call, so the controllers' decisions are unit-tested without Docker.
//!
//! Each method is the inherent `Engine` method of the same name (or the
//! `health` function it names); callers holding an `Engine` keep calling
//! those. Methods return `impl Future + Send` so generic controllers can be
//! spawned (a swap retires old containers in the background).

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::containers::{ContainerStatus, Listed};
use super::health::{self, Check, NotReady};
use super::images::ImageOutput;
use super::progress::Reporter;
use super::proxy::proxy_container_name;
use super::reach::Reach;
use super::{Engine, EngineError};
use crate::engine::nginx::NginxControl;
use crate::engine::runtime::{MasterCli, ProxyRuntime, ServerState};
use crate::engine::seeding::LoadError;
use crate::plan::{ContainerSpec, Observed, OldMount};
use crate::spec::{Build, Health, ProxyKind, RestartPolicy, Stack};

/// What the controllers need of a container engine.
pub trait ContainerEngine: Clone + Send + Sync + 'static {
    /// How to ask the project's proxy where it sends traffic.
    type Proxy: ProxyRuntime;

    // Containers.
    /// Every container (running or not) labelled with the project.
    fn list_project(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<Vec<Observed>, EngineError>> + Send;
    /// As `list_project`, with each container's address and published
    /// ports from the same request (none by default).
    fn list_project_listed(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<Vec<Listed>, EngineError>> + Send {
        async move {
            Ok(self
                .list_project(project)
                .await?
                .into_iter()
                .map(|observed| Listed {
                    observed,
                    ip: None,
                    published: Vec::new(),
                })
                .collect())
        }
    }
    /// Creates a container; returns its id.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;
    fn start(
        &self,
        id: &str,
        service: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn stop(
        &self,
        id: &str,
        grace: Option<Duration>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn kill(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes a container, keeping its anonymous volumes.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn remove_with_volumes(&self, id: &str)
        -> impl Future<Output = Result<(), EngineError>> + Send;
    fn rename(&self, id: &str, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn inspect(
        &self,
        id: &str,
        network: &str,
    ) -> impl Future<Output = Result<ContainerStatus, EngineError>> + Send;
    fn mounts_of(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<OldMount>, EngineError>> + Send;
    /// Adds to `spec` the anonymous volumes of `old` it keeps; returns `old`'s mounts.
    fn carry_volumes_from(
        &self,
        spec: &mut ContainerSpec,
        old: &str,
    ) -> impl Future<Output = Result<Vec<OldMount>, EngineError>> + Send;
    /// Extracts a tar at `/` of a container (created, running or not):
    /// owners, modes and times as the tar gives them.
    fn put_archive(
        &self,
        id: &str,
        tar: Vec<u8>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// The contents of one regular file in a container; `None` when absent.
    fn read_file(
        &self,
        id: &str,
        path: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, EngineError>> + Send;
    /// The last `n` lines a container printed.
    fn last_lines(&self, id: &str, n: u64) -> impl Future<Output = Vec<String>> + Send;
    fn wait_exit(
        &self,
        id: &str,
        what: impl FnOnce() -> String + Send,
    ) -> impl Future<Output = Result<Option<i64>, EngineError>> + Send;
    /// Runs a one-off container to completion: exit code and last lines.
    fn run_detached(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<(i64, Vec<String>), EngineError>> + Send;
    /// Readies the data volumes of the seeded datastores among `units`
    /// (made, or reset after a seed that never finished); returns the
    /// datastores whose seed this `up` loads.
    fn prepare_seeds(
        &self,
        stack: &Stack,
        project: &str,
        units: &[String],
        reporter: &Reporter,
    ) -> impl Future<Output = Result<BTreeSet<String>, EngineError>> + Send;
    /// Loads `unit`'s seed through its ready container, then marks its
    /// volume seeded.
    fn load_seed(
        &self,
        stack: &Stack,
        project: &str,
        unit: &str,
        container: (&str, &str),
        deadline: Instant,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<(), LoadError>> + Send;

    // Images.
    fn image_id(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send;
    /// The id of the image here for `platform` (any platform when `None`);
    /// `None` when it is missing or here for another platform only.
    fn local_image(
        &self,
        reference: &str,
        platform: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send;
    /// The image under `tag` when it was built from what building `build`
    /// now would send (`Engine::built_image`): `up` skips that build.
    /// `None` (the default): build.
    fn built_image(
        &self,
        _service: &str,
        _build: &Build,
        _tag: &str,
        _platform: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send {
        async { Ok(None) }
    }
    fn build(
        &self,
        service: &str,
        build: &Build,
        tag: &str,
        platform: Option<&str>,
        on_output: impl FnMut(ImageOutput) + Send,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;
    fn pull(
        &self,
        service: &str,
        image: &str,
        platform: Option<&str>,
        on_output: impl FnMut(ImageOutput) + Send,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;
    /// Removes an untagged image nothing uses; true when it went.
    fn remove_unused_image(&self, id: &str) -> impl Future<Output = bool> + Send;

    // Networks and volumes.
    fn ensure_network(&self, project: &str)
        -> impl Future<Output = Result<(), EngineError>> + Send;
    fn remove_network(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// True when the volume was created now.
    fn ensure_volume(
        &self,
        project: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    fn list_volumes(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    fn remove_volume(
        &self,
        full_name: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn volume_created(
        &self,
        full_name: &str,
    ) -> impl Future<Output = Result<Option<i64>, EngineError>> + Send;
    fn move_data(
        &self,
        from: &str,
        helper: &ContainerSpec,
        dir: &str,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;

    // Readiness.
    /// The check a unit's containers pass ([`health::check_for`]).
    fn health_check(
        &self,
        health: Option<&Health>,
        image: &str,
    ) -> impl Future<Output = Check> + Send;
    /// Waits until a container is ready ([`health::wait_ready`]).
    #[allow(clippy::too_many_arguments)]
    fn wait_ready(
        &self,
        id: &str,
        network: &str,
        restart: RestartPolicy,
        check: &Check,
        deadline: Instant,
        cancel: &CancellationToken,
        on_detail: impl FnMut(&str) + Send,
    ) -> impl Future<Output = Result<Duration, NotReady>> + Send;

    // The proxy.
    /// The project's running proxy, when one answers its runtime API.
    fn find_proxy(&self, project: &str) -> impl Future<Output = Option<Self::Proxy>> + Send;

    /// How this process reaches the stack's containers, and whether the
    /// stack's probe decided it ([`super::reach`]). `apply` and a swap
    /// publish probe ports on loopback when it is `Published`.
    fn reach(&self) -> (Reach, bool) {
        (Reach::Direct, false)
    }

    /// Where the stack's registry runs, once its routing path decided
    /// ([`super::reach::Registry`]); for `up`'s output.
    fn registry(&self) -> Option<super::reach::Registry> {
        None
    }
}

impl ContainerEngine for Engine {
    type Proxy = ProxyControl;

    fn reach(&self) -> (Reach, bool) {
        (Engine::reach(self), self.reach_decided())
    }

    fn registry(&self) -> Option<super::reach::Registry> {
        Engine::registry(self)
    }

    async fn list_project(&self, project: &str) -> Result<Vec<Observed>, EngineError> {
        Engine::list_project(self, project).await
    }
    async fn list_project_listed(&self, project: &str) -> Result<Vec<Listed>, EngineError> {
        Engine::list_project_listed(self, project).await
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        Engine::create(self, spec).await
    }
    async fn start(&self, id: &str, service: &str) -> Result<(), EngineError> {
        Engine::start(self, id, service).await
    }
    async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<(), EngineError> {
        Engine::stop(self, id, grace).await
    }
    async fn kill(&self, id: &str) -> Result<(), EngineError> {
        Engine::kill(self, id).await
    }
    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        Engine::remove(self, id).await
    }
    async fn remove_with_volumes(&self, id: &str) -> Result<(), EngineError> {
        Engine::remove_with_volumes(self, id).await
    }
    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        Engine::rename(self, id, name).await
    }
    async fn inspect(&self, id: &str, network: &str) -> Result<ContainerStatus, EngineError> {
        Engine::inspect(self, id, network).await
    }
    async fn mounts_of(&self, id: &str) -> Result<Vec<OldMount>, EngineError> {
        Engine::mounts_of(self, id).await
    }
    async fn carry_volumes_from(
        &self,
        spec: &mut ContainerSpec,
        old: &str,
    ) -> Result<Vec<OldMount>, EngineError> {
        Engine::carry_volumes_from(self, spec, old).await
    }
    async fn last_lines(&self, id: &str, n: u64) -> Vec<String> {
        Engine::last_lines(self, id, n).await
    }
    async fn wait_exit(
        &self,
        id: &str,
        what: impl FnOnce() -> String + Send,
    ) -> Result<Option<i64>, EngineError> {
        Engine::wait_exit(self, id, what).await
    }
    async fn run_detached(&self, spec: &ContainerSpec) -> Result<(i64, Vec<String>), EngineError> {
        Engine::run_detached(self, spec).await
    }
    async fn prepare_seeds(
        &self,
        stack: &Stack,
        project: &str,
        units: &[String],
        reporter: &Reporter,
    ) -> Result<BTreeSet<String>, EngineError> {
        crate::engine::seeding::prepare(self, stack, project, units, reporter).await
    }
    async fn load_seed(
        &self,
        stack: &Stack,
        project: &str,
        unit: &str,
        container: (&str, &str),
        deadline: Instant,
        reporter: &Reporter,
    ) -> Result<(), LoadError> {
        crate::engine::seeding::load(self, stack, project, unit, container, deadline, reporter)
            .await
    }
    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        Engine::image_id(self, reference).await
    }
    async fn local_image(
        &self,
        reference: &str,
        platform: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        Engine::local_image(self, reference, platform).await
    }
    async fn built_image(
        &self,
        service: &str,
        build: &Build,
        tag: &str,
        platform: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        Engine::built_image(self, service, build, tag, platform).await
    }
    async fn build(
        &self,
        service: &str,
        build: &Build,
        tag: &str,
        platform: Option<&str>,
        on_output: impl FnMut(ImageOutput) + Send,
    ) -> Result<String, EngineError> {
        Engine::build(self, service, build, tag, platform, on_output).await
    }
    async fn pull(
        &self,
        service: &str,
        image: &str,
        platform: Option<&str>,
        on_output: impl FnMut(ImageOutput) + Send,
    ) -> Result<String, EngineError> {
        Engine::pull(self, service, image, platform, on_output).await
    }
    async fn remove_unused_image(&self, id: &str) -> bool {
        Engine::remove_unused_image(self, id).await
    }
    async fn put_archive(&self, id: &str, tar: Vec<u8>) -> Result<(), EngineError> {
        Engine::put_archive(self, id, tar).await
    }
    async fn read_file(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        Engine::read_file(self, id, path).await
    }
    async fn ensure_network(&self, project: &str) -> Result<(), EngineError> {
        Engine::ensure_network(self, project).await
    }
    async fn remove_network(&self, project: &str) -> Result<bool, EngineError> {
        Engine::remove_network(self, project).await
    }
    async fn ensure_volume(&self, project: &str, name: &str) -> Result<bool, EngineError> {
        Engine::ensure_volume(self, project, name).await
    }
    async fn list_volumes(&self, project: &str) -> Result<Vec<String>, EngineError> {
        Engine::list_volumes(self, project).await
    }
    async fn remove_volume(&self, full_name: &str) -> Result<(), EngineError> {
        Engine::remove_volume(self, full_name).await
    }
    async fn volume_created(&self, full_name: &str) -> Result<Option<i64>, EngineError> {
        Engine::volume_created(self, full_name).await
    }
    async fn move_data(
        &self,
        from: &str,
        helper: &ContainerSpec,
        dir: &str,
    ) -> Result<bool, EngineError> {
        Engine::move_data(self, from, helper, dir).await
    }
    async fn health_check(&self, health: Option<&Health>, image: &str) -> Check {
        health::check_for(self, health, image).await
    }
    async fn wait_ready(
        &self,
        id: &str,
        network: &str,
        restart: RestartPolicy,
        check: &Check,
        deadline: Instant,
        cancel: &CancellationToken,
        on_detail: impl FnMut(&str) + Send,
    ) -> Result<Duration, NotReady> {
        health::wait_ready(
            self, id, network, restart, check, deadline, cancel, on_detail,
        )
        .await
    }
    async fn find_proxy(&self, project: &str) -> Option<ProxyControl> {
        let c = self
            .proxy_container(&proxy_container_name(project))
            .await
            .ok()?;
        match c.kind {
            ProxyKind::Haproxy => MasterCli::answering(c.cli).await.map(ProxyControl::Haproxy),
            ProxyKind::Nginx => NginxControl::answering(c.cli)
                .await
                .map(ProxyControl::Nginx),
        }
    }
}

/// The project's proxy as found running: HAProxy asked through its master
/// CLI, or nginx through its control port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyControl {
    Haproxy(MasterCli),
    Nginx(NginxControl),
}

impl ProxyRuntime for ProxyControl {
    async fn servers(&self) -> Option<Vec<ServerState>> {
        match self {
            ProxyControl::Haproxy(p) => p.servers().await,
            ProxyControl::Nginx(p) => p.servers().await,
        }
    }

    async fn sessions(&self) -> Option<Vec<(String, String, u64)>> {
        match self {
            ProxyControl::Haproxy(p) => p.sessions().await,
            ProxyControl::Nginx(p) => p.sessions().await,
        }
    }
}

/// The registry as a swap uses it: to wait until the registrar registered a
/// new container, and to take old ones out of it before they stop.
/// `watcher::swap` implements it over the running stack's etcd; tests use
/// the fake engine's.
pub trait Registry: Send + Sync {
    /// Waits (a bounded time) until container `id` (its full id) is registered.
    fn wait_registered(&self, id: &str) -> impl Future<Output = ()> + Send;
    /// Deletes the registrations of containers `ids`; true when one was deleted.
    fn deregister(&self, ids: &[&str]) -> impl Future<Output = bool> + Send;
}
