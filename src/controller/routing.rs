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
//!
//! Where they cannot (Docker Desktop's VM, a rootless engine's namespace, a
//! firewall between the bridge and this host), the registry goes elsewhere:
//! the proxy, running before the registrar starts, is asked whether its own
//! connection to the gateway arrives (`Engine::probe_gateway`); if none
//! does, whether one to `host.docker.internal` does
//! (`Engine::probe_host_docker_internal`: the engine's `host-gateway`
//! mapping, the default bridge's gateway on Linux, this host's loopback on
//! Docker Desktop), and then the embedded server listens there and the
//! proxy's `etcd:2379` forward leads to `host.docker.internal`; if neither
//! does, `devstack etcd serve` runs in a container of the stack
//! (`engine::registry`) and the forward leads there. The decision
//! ([`Registry`], [`decide_registry`]) is recorded next to the reach.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::watch;

use tokio_util::sync::CancellationToken;

use crate::engine::reach::{Reach, Registry};
use crate::engine::registry::{EtcdTarget, GatewayProbe};
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
    #[error("cannot start the registry of `{project}` in a container of the stack (its containers cannot reach this host: {why}): {source}")]
    Registry {
        project: String,
        why: String,
        #[source]
        source: EngineError,
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
    /// Where the embedded registry runs; `None` for a stack's own etcd
    /// cluster (or endpoints a test gave).
    pub registry: Option<Registry>,
    etcd: Option<RunningServer>,
    /// The project whose registry container to remove at shutdown, when
    /// the registry runs in the stack.
    stack_registry: Option<(Engine, String)>,
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
        // `embedded`: the registry is devstack's own, on this host or in the
        // stack (decided below); `Err` says why it cannot be at the gateway.
        let mut embedded: Option<Result<(), String>> = None;
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
                // Until the registry is placed, the proxy's forward leads to
                // the gateway's etcd port (it carries the `etcd` alias either way).
                let placeholder = SocketAddr::new(ip, crate::engine::registry::REGISTRY_PORT);
                if engine.reach() == Reach::Exec {
                    embedded = Some(Err(
                        "the engine is reached only through `docker exec`".into()
                    ));
                    (None, Vec::new(), Some(placeholder))
                } else {
                    match Server::start(ServerConfig::in_memory(SocketAddr::new(ip, 0))).await {
                        Ok(server) => {
                            embedded = Some(Ok(()));
                            let url = server.client_url();
                            let addr = server.local_addr();
                            (Some(server), vec![url], Some(addr))
                        }
                        // Docker Desktop's, a rootless engine's gateway is
                        // no address of this host.
                        Err(e) if gateway.is_some() => {
                            embedded = Some(Err(format!(
                                "the embedded etcd cannot listen on the gateway {ip}: {e}"
                            )));
                            (None, Vec::new(), Some(placeholder))
                        }
                        Err(source) => {
                            return Err(RoutingError::Etcd {
                                project: project.to_string(),
                                source,
                            })
                        }
                    }
                }
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
        // The proxy first: it decides the reach, and it is the container
        // that asks whether the stack's containers reach this host.
        let mut prepared = match router::prepare(engine.clone(), config).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(etcd) = etcd {
                    etcd.shutdown().await;
                }
                return Err(e.into());
            }
        };
        let mut endpoints = endpoints;
        let mut etcd = etcd;
        let mut registry = None;
        let mut stack_registry = None;
        if let Some(on_gateway) = embedded {
            let proxy = prepared.proxy().id.clone();
            // Where this process listened for `host.docker.internal`, once
            // asked.
            let mut host_gateway = None;
            let (place, why) = {
                let hdi = async {
                    let (probe, ip) = engine.probe_host_docker_internal(&proxy).await;
                    host_gateway = ip;
                    probe
                };
                match on_gateway {
                    // A remote engine's `host.docker.internal` is its own host.
                    Err(why) if engine.reach() == Reach::Exec => (Registry::Stack, why),
                    Err(why) => decide_registry(async { GatewayProbe::Unreached(why) }, hdi).await,
                    Ok(()) => {
                        let gateway = engine.probe_gateway(&proxy, prepared.gateway());
                        decide_registry(gateway, hdi).await
                    }
                }
            };
            if place == Registry::Host && !why.is_empty() {
                sayln!(
                    "note: could not ask the proxy whether containers reach this host ({why}); the registry stays on this host"
                );
            }
            if place == Registry::HostGateway {
                if let Some(server) = etcd.take() {
                    server.shutdown().await;
                }
                let ip = host_gateway.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let server = Server::start(ServerConfig::in_memory(SocketAddr::new(ip, 0)))
                    .await
                    .map_err(|source| RoutingError::Etcd {
                        project: project.to_string(),
                        source,
                    })?;
                endpoints = vec![server.client_url()];
                // By name: where it leads is the engine's to say (on Docker
                // Desktop, not the loopback address this process listens on).
                prepared.move_registry(
                    endpoints.clone(),
                    EtcdTarget::host_docker_internal(server.local_addr().port()),
                );
                etcd = Some(server);
            }
            if place == Registry::Stack {
                if let Some(server) = etcd.take() {
                    server.shutdown().await;
                }
                let proxy_spec = router::proxy_spec(stack, project, true);
                let failed = |source| RoutingError::Registry {
                    project: project.to_string(),
                    why: why.clone(),
                    source,
                };
                let container = engine
                    .start_registry(
                        project,
                        &proxy_spec.image,
                        proxy_spec.platform.as_deref(),
                        engine.reach(),
                    )
                    .await
                    .map_err(failed)?;
                // start_registry returned once this process's way answered;
                // the containers' way is its address, there while it runs.
                let (Some(for_devstack), Some(for_containers)) = (
                    container.for_devstack(engine.reach()),
                    container.for_containers(),
                ) else {
                    return Err(failed(EngineError::Api {
                        what: format!("reaching `{}`", container.name),
                        message: "it has no address on the stack network, or no port this process reaches".into(),
                    }));
                };
                endpoints = vec![format!("http://{for_devstack}")];
                prepared.move_registry(endpoints.clone(), for_containers.into());
                stack_registry = Some((engine.clone(), project.to_string()));
            }
            engine.settle_registry(place);
            registry = Some(place);
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
        // The registry first: the router's loop (and its first apply) starts
        // only once the registrar re-registered what runs.
        let router = registry_first(registrar.ready(), async {
            prepared.run(stacks, cancel.clone())
        })
        .await;
        Ok(Routing {
            endpoints,
            router,
            reach: engine.reach(),
            registry,
            registrar,
            etcd,
            stack_registry,
            cancel,
        })
    }

    /// A token that stops everything when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the registrar (which deregisters what it registered), the
    /// router and the embedded etcd (or removes the registry container).
    /// The proxy container stays; `down` removes it with the stack.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.registrar.join().await;
        self.router.join().await;
        if let Some(etcd) = self.etcd {
            etcd.shutdown().await;
        }
        if let Some((engine, project)) = self.stack_registry {
            // As the embedded server ends with its process; `down` removes
            // it too, should this not run.
            if let Err(e) = engine.remove_registry(&project).await {
                sayln!("warning: cannot remove the registry container of `{project}`: {e}");
            }
        }
    }
}

/// Where the embedded registry runs, from the proxy's probes, asked in
/// turn: `gateway`, whether its connection to the stack network's gateway
/// arrives (or why the embedded etcd could not listen there), then, only
/// when that did not arrive, `host_docker_internal`, whether its connection
/// to `host.docker.internal` does. The first that arrives places it: on
/// this host at the gateway ([`Registry::Host`]), on this host where
/// `host.docker.internal` leads ([`Registry::HostGateway`]); neither: in
/// the stack ([`Registry::Stack`]). A gateway probe that cannot be made (no
/// tool in the proxy image) keeps it at the gateway, and the second value,
/// otherwise empty for `Host`, says why, for a note. For `Stack`, it says
/// why the containers reach neither. (The caller puts it in the stack
/// without asking when this process reaches the stack only through
/// `docker exec`: a remote engine, whose containers cannot reach this host
/// either way.)
async fn decide_registry(
    gateway: impl Future<Output = GatewayProbe>,
    host_docker_internal: impl Future<Output = GatewayProbe>,
) -> (Registry, String) {
    let unreached = match gateway.await {
        GatewayProbe::Reached => return (Registry::Host, String::new()),
        GatewayProbe::Unknown(why) => return (Registry::Host, why),
        GatewayProbe::Unreached(why) => why,
    };
    match host_docker_internal.await {
        GatewayProbe::Reached => (Registry::HostGateway, unreached),
        GatewayProbe::Unreached(other) | GatewayProbe::Unknown(other) => (
            Registry::Stack,
            format!("{unreached}; as host.docker.internal: {other}"),
        ),
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

    /// The probes, in turn, as the proxy would answer them; whether the
    /// second was asked is recorded.
    async fn decided(
        gateway: GatewayProbe,
        host_docker_internal: GatewayProbe,
    ) -> (crate::engine::reach::Registry, String, bool) {
        let asked = std::cell::Cell::new(false);
        let (place, why) = decide_registry(async { gateway }, async {
            asked.set(true);
            host_docker_internal
        })
        .await;
        (place, why, asked.get())
    }

    #[tokio::test]
    async fn the_registry_goes_where_the_first_probe_that_arrives_says() {
        use crate::engine::reach::Registry::{Host, HostGateway, Stack};
        use GatewayProbe::{Reached, Unknown, Unreached};
        let no = |why: &str| Unreached(why.to_string());

        // The gateway reached: host.docker.internal is not asked.
        assert_eq!(
            decided(Reached, Reached).await,
            (Host, String::new(), false)
        );
        assert_eq!(
            decided(Reached, no("x")).await,
            (Host, String::new(), false)
        );
        // No tool to ask with: the gateway, with a note.
        assert_eq!(
            decided(Unknown("no nc".into()), no("x")).await,
            (Host, "no nc".into(), false)
        );
        // The gateway unreached, host.docker.internal reached.
        let (place, why, asked) = decided(no("dropped"), Reached).await;
        assert_eq!((place, asked), (HostGateway, true));
        assert_eq!(why, "dropped");
        // Neither (or the second unknowable): in the stack, saying both.
        let (place, why, asked) = decided(no("dropped"), no("refused")).await;
        assert_eq!((place, asked), (Stack, true));
        assert!(why.contains("dropped") && why.contains("refused"), "{why}");
        let (place, _, _) = decided(no("dropped"), Unknown("exec failed".into())).await;
        assert_eq!(place, Stack);
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
