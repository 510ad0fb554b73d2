//! The engine: the only code that talks to Docker (through bollard).
//!
//! Everything it creates carries the labels of [`crate::plan::names`], so
//! later runs adopt it and `down` removes exactly the stack's objects.
//!
//! - [`Engine::connect`]: DOCKER_HOST conventions, API version negotiation,
//!   one clear sentence when no engine answers.
//! - [`containers`]: list (as [`crate::plan::Observed`]), create, start, stop, remove, inspect.
//! - [`images`] and [`context`]: find, pull and build images (context tar honouring `.dockerignore`).
//! - [`resources`]: the stack's network and named volumes.
//! - [`health`]: devstack's own fast readiness probes, and [`health::HealthMonitor`] to follow a container.
//! - [`logs`], [`exec`], [`events`]: container output, commands in containers, the engine's event stream.
//! - [`api`]: [`ContainerEngine`], the seam the controllers are written against
//!   (`fake`, in tests, is its in-memory, recording implementation).
//! - [`apply`]: carries out `up`: build, plan, start in dependency order, wait healthy.
//! - [`reach`]: [`reach::Reach`], how this process reaches a stack's containers, decided once per stack.
//! - [`tunnel`]: TCP through `docker exec` (a relay per connection), for a stack reached only by exec.
//! - [`doctor`]: what the engine is and which reach paths work, probed with a throwaway container.
//! - [`progress`]: the events `apply` reports, for bars, plain lines or JSON.
//! - [`volcopy`]: copying one volume's files into another, on this host or through the archive API.
//! - [`proxy`], [`runtime`], [`nginx`]: the proxy container (HAProxy or nginx), HAProxy's
//!   master CLI and runtime tables, nginx's `nginx -t`/`nginx -s reload` and control port.

pub mod adopted;
pub mod api;
pub mod apply;
pub mod auth;
pub mod containers;
pub mod context;
pub mod control;
pub mod datastore;
pub mod doctor;
pub mod error;
pub mod events;
pub mod exec;
#[cfg(test)]
pub mod fake;
pub mod health;
pub mod images;
pub mod logs;
pub mod nginx;
pub mod progress;
pub mod projects;
pub mod proxy;
pub mod reach;
pub mod registry;
pub mod resources;
pub mod runtime;
pub mod seeding;
pub mod snapshot;
pub mod tunnel;
pub mod volcopy;

use std::path::Path;
use std::time::Duration;

use bollard::Docker;

pub use api::{ContainerEngine, ProxyControl, Registry};
pub use error::EngineError;

/// Seconds since the epoch, as the engine stamps its logs and events.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How long connecting may take before we say no engine answered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-request timeout afterwards (a request, not a stream: builds and log
/// follows may run longer than this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A connected Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) docker: Docker,
    /// The address we connected to, for messages.
    host: String,
    /// How this process reaches the stack's containers: presumed at
    /// connect, decided by the stack's probe (shared by every clone).
    reach: reach::ReachCell,
    /// TCP through exec, for a stack reached only that way (shared).
    tunnels: tunnel::Tunnels,
    /// Where devstack's state is, to keep the fast path's records
    /// ([`adopted`]) and the build records ([`images`]); `None`: containers
    /// go by their labels alone, and every build runs.
    state_root: Option<std::path::PathBuf>,
}

impl Engine {
    /// Connects the way the docker CLI does: `DOCKER_HOST` (unix://, tcp://,
    /// http(s)://, with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` for TLS;
    /// ssh://user@host through the system's `ssh`, as the docker CLI does), else
    /// the default socket (or the rootless one under `XDG_RUNTIME_DIR`).
    /// Negotiates the API version down to what the engine speaks.
    pub async fn connect() -> Result<Engine, EngineError> {
        let host = match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
            _ => default_host(),
        };
        Engine::connect_to(host).await
    }

    /// Connects to the engine at `host`, written as `DOCKER_HOST` is.
    pub async fn connect_to(host: String) -> Result<Engine, EngineError> {
        let no_engine = |reason: String| EngineError::NoEngine {
            host: host.clone(),
            reason,
        };
        let docker = Docker::connect_with_host(&host)
            .map_err(|e| no_engine(error::message_of(&e)))?
            .with_timeout(CONNECT_TIMEOUT);
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(no_engine(short_reason(&e))),
            Err(_) => return Err(no_engine("it did not answer within 5s".into())),
        };
        Ok(Engine {
            docker: docker.with_timeout(REQUEST_TIMEOUT),
            reach: reach::ReachCell::presumed(&host),
            tunnels: tunnel::Tunnels::default(),
            host,
            state_root: None,
        })
    }

    /// Lets the engine keep devstack's records of its objects below
    /// `state_root`: the fast path's adoptions, which [`Engine::list_project`]
    /// reads (`<state_root>/<project>/adopted.json`), and what each built
    /// image was built from (`<state_root>/builds/`, see
    /// [`Engine::built_image`]).
    pub fn with_state(mut self, state_root: std::path::PathBuf) -> Engine {
        self.state_root = Some(state_root);
        self
    }

    /// The fast path's record file of `project`, when this engine reads them.
    pub fn adoption_file(&self, project: &str) -> Option<std::path::PathBuf> {
        self.state_root
            .as_ref()
            .map(|root| adopted::file(&root.join(project)))
    }

    /// The record of what the image tagged `tag` was built from, when this
    /// engine keeps them.
    pub fn build_record_file(&self, tag: &str) -> Option<std::path::PathBuf> {
        self.state_root
            .as_ref()
            .map(|root| images::build_record_file(root, tag))
    }

    /// The engine address, as connected.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The negotiated API version, for `--version`-style reports.
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }
}

/// The system socket, or the rootless daemon's socket when only that exists.
fn default_host() -> String {
    let system = "/var/run/docker.sock";
    if !Path::new(system).exists() {
        if let Ok(runtime) = std::env::var("XDG_RUNTIME_DIR") {
            let rootless = Path::new(&runtime).join("docker.sock");
            if rootless.exists() {
                return format!("unix://{}", rootless.display());
            }
        }
    }
    format!("unix://{system}")
}

/// A connection failure in a few words ("No such file or directory"), not a
/// chain of hyper internals.
fn short_reason(err: &bollard::errors::Error) -> String {
    let mut deepest: &dyn std::error::Error = err;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    let text = deepest.to_string();
    if text.is_empty() {
        error::message_of(err)
    } else {
        text
    }
}
