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

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::watch;

use tokio_util::sync::CancellationToken;

use crate::engine::reach::Reach;
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
    /// How this process reaches the stack's containers, as probed on the proxy.
    pub reach: Reach,
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
        // A proxy already running (a routing path started again beside a
        // running stack) decides the stack's reach before the registrar
        // probes anything; otherwise the router's start does, on the proxy
        // it makes.
        engine.decide_reach_on_running_proxy(project).await;
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
        let start_router = router::start(engine.clone(), config, stacks, cancel.clone());
        let router = match registry_first(registrar.ready(), start_router).await {
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
            reach: engine.reach(),
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

/// The registry first: a fresh etcd (a restarted agent's) is empty, and a
/// router applying it would take a serving stack out of the proxy until the
/// registrar caught up. So the router starts (and makes its first apply)
/// only once the registrar is ready: it re-registered what runs.
async fn registry_first<T>(
    registrar_ready: impl Future<Output = ()>,
    start_router: impl Future<Output = T>,
) -> T {
    registrar_ready.await;
    start_router.await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::rpc::{Client, Timeouts};
    use crate::registrar::{key_of, value_of, Presence};
    use crate::router::{Layout, Registry};

    async fn embedded_etcd() -> RunningServer {
        Server::start(ServerConfig::in_memory(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            0,
        )))
        .await
        .expect("the embedded etcd starts")
    }

    /// What the registrar writes for `api`'s one running container.
    fn api_presence(prefix: &str) -> Presence {
        Presence {
            project: "shop".into(),
            prefix: prefix.into(),
            service: "api".into(),
            id: "c0ffee".into(),
            name: "shop-api-1".into(),
            replica: 1,
            address: "172.18.0.5".into(),
            port: 8080,
            image: "api:git-1".into(),
            version: "git-1".into(),
        }
    }

    /// The registrar's registration: key and value on a lease, as it puts them.
    async fn register(url: &str, stack: &Stack, presence: &Presence) {
        let mut client = Client::connect(&[url], Timeouts::default())
            .await
            .expect("etcd answers");
        let lease = client.lease_grant(30).await.expect("a lease").id;
        let key = key_of(&stack.discovery, presence).expect("the key");
        let value = value_of(&stack.discovery, presence).expect("the value");
        client
            .put(key, value, lease)
            .await
            .expect("the registration is written");
    }

    /// What a router's first apply sees: the registry under its prefix.
    async fn first_apply(url: &str, prefix: &str) -> Registry {
        let mut client = Client::connect(&[url], Timeouts::default())
            .await
            .expect("etcd answers");
        let answer = client
            .get(prefix, true)
            .await
            .expect("the registry is read");
        let kvs = answer.kvs.iter().map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        });
        Registry::from_kvs(prefix, kvs.collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn a_killed_registrars_restart_re_registers_before_the_router_applies() {
        let stack = crate::plan::testing::stack_of(Vec::new());
        let layout = Layout::new(&stack.discovery, "shop");
        let presence = api_presence(layout.prefix());

        // The first agent registered `api`, then was killed: its embedded
        // etcd, and every registration in it, went with it.
        let first = embedded_etcd().await;
        register(&first.client_url(), &stack, &presence).await;
        assert_eq!(
            first_apply(&first.client_url(), layout.prefix())
                .await
                .instances("api")
                .len(),
            1
        );
        first.shutdown().await;

        // The restart: a fresh, empty etcd; the registrar re-registers what
        // still runs, and only then may the router make its first apply.
        let second = embedded_etcd().await;
        let url = second.client_url();
        assert!(first_apply(&url, layout.prefix())
            .await
            .instances("api")
            .is_empty());
        let seen = registry_first(
            register(&url, &stack, &presence),
            first_apply(&url, layout.prefix()),
        )
        .await;
        let instances = seen.instances("api");
        assert_eq!(instances.len(), 1, "the router saw {instances:?}");
        assert_eq!(instances[0].id, "c0ffee");
        assert_eq!(instances[0].address, "172.18.0.5");
        second.shutdown().await;
    }
}
