//! The discovery and routing path of one running stack, started and stopped
//! as one: the embedded etcd (or the stack's real cluster), the registrar,
//! the proxy container and the router loop. `controller::agent` starts it, in a
//! foreground `up` or in `devstack agent` for a detached stack.
//!
//! Where etcd listens: the embedded server binds the stack network's gateway
//! address (a host interface on Linux, reachable from this process and from
//! the containers), on a port the kernel picks. Containers do not need to
//! know that port: the proxy carries the network alias `etcd` and forwards
//! its port 2379 there, so `etcd:2379` works inside the stack as in
//! production.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::watch;

use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError};
use crate::etcd::{self, RunningServer, Server, ServerConfig};
use crate::registrar::{self, RegistrarConfig, RegistrarHandle};
use crate::router::confd::{self as router, RouterConfig, RouterError, RouterHandle};
use crate::spec::{Etcd, Stack};

/// Why the routing path could not start.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot start the embedded etcd for `{project}`: {source}")]
    Etcd {
        project: String,
        #[source]
        source: etcd::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Router(#[from] RouterError),
}

/// Knobs for tests and benchmarks; `Default` is what `up` uses.
#[derive(Debug, Clone, Default)]
pub struct RoutingOptions {
    /// Replaces the stack's etcd endpoints (tests point a stack at a real
    /// etcd they started themselves).
    pub endpoints: Option<Vec<String>>,
    /// Where containers' `etcd:2379` leads when `endpoints` is given.
    pub etcd_for_containers: Option<SocketAddr>,
    /// The stack's edits, for the registrar and the router to apply (the
    /// controller's follower of the stack files); none: the stack as started.
    pub stacks: Option<watch::Receiver<Arc<Stack>>>,
}

/// The running discovery and routing path of one project.
pub struct Routing {
    /// The etcd client URLs the registrar and router use.
    pub endpoints: Vec<String>,
    pub router: RouterHandle,
    pub registrar: RegistrarHandle,
    etcd: Option<RunningServer>,
    cancel: CancellationToken,
}

impl Routing {
    /// Starts etcd (when embedded), the proxy container, the router and the
    /// registrar for a stack whose network exists.
    pub async fn start(
        engine: &Engine,
        stack: &Stack,
        project: &str,
        options: RoutingOptions,
    ) -> Result<Routing, RoutingError> {
        engine.ensure_network(project).await?;
        let gateway = engine.network_gateway(project).await?;
        let (etcd, endpoints, for_containers) = match (&options.endpoints, &stack.discovery.etcd) {
            (Some(endpoints), _) => (None, endpoints.clone(), options.etcd_for_containers),
            (None, Etcd::External { endpoints }) => {
                // Containers reach the first endpoint; a loopback one is
                // reached on the gateway (etcd must then listen there too).
                let target = endpoints.first().and_then(|e| endpoint_addr(e)).map(|a| {
                    match (a.ip().is_loopback(), gateway) {
                        (true, Some(g)) => SocketAddr::new(g, a.port()),
                        _ => a,
                    }
                });
                (None, endpoints.clone(), target)
            }
            (None, Etcd::Embedded) => {
                let ip = gateway.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let server = Server::start(ServerConfig::in_memory(SocketAddr::new(ip, 0)))
                    .await
                    .map_err(|source| RoutingError::Etcd {
                        project: project.to_string(),
                        source,
                    })?;
                let url = server.client_url();
                let addr = server.local_addr();
                (Some(server), vec![url], Some(addr))
            }
        };
        let cancel = CancellationToken::new();
        // Without a follower, a channel that never changes.
        let stacks = options
            .stacks
            .clone()
            .unwrap_or_else(|| watch::channel(Arc::new(stack.clone())).1);
        let mut config = RouterConfig::new(stack, project, endpoints.clone());
        if let Some(addr) = for_containers {
            config = config.with_etcd_for_containers(addr);
        }
        let registrar = registrar::start(
            engine.clone(),
            RegistrarConfig {
                stack: stack.clone(),
                project: project.to_string(),
                endpoints: endpoints.clone(),
            },
            stacks.clone(),
            cancel.clone(),
        );
        // The registry first: a fresh etcd (a restarted agent's) is empty,
        // and a router applying it would take a serving stack out of the
        // proxy until the registrar caught up.
        registrar.ready().await;
        let router = match router::start(engine.clone(), config, stacks, cancel.clone()).await {
            Ok(r) => r,
            Err(e) => {
                // Nothing may stay behind: the registrar deregisters and ends.
                cancel.cancel();
                registrar.join().await;
                if let Some(etcd) = etcd {
                    etcd.shutdown().await;
                }
                return Err(e.into());
            }
        };
        Ok(Routing {
            endpoints,
            router,
            registrar,
            etcd,
            cancel,
        })
    }

    /// A token that stops everything when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the registrar (which deregisters what it registered), the
    /// router and the embedded etcd. The proxy container stays; `down`
    /// removes it with the stack.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.registrar.join().await;
        self.router.join().await;
        if let Some(etcd) = self.etcd {
            etcd.shutdown().await;
        }
    }
}

/// `http://10.0.0.5:2379` → the socket address, when the host is an IP.
fn endpoint_addr(endpoint: &str) -> Option<SocketAddr> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))?;
    let hostport = rest.split('/').next()?;
    hostport.parse().ok().or_else(|| {
        hostport.strip_prefix("localhost:").and_then(|p| {
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                p.parse().ok()?,
            ))
        })
    })
}
