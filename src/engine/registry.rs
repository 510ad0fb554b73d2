//! The stack's registry in a container of the stack, for engines whose
//! containers cannot reach this host (see [`super::reach::Registry`]).
//!
//! Whether they can is asked once per routing start, from the proxy
//! container ([`Engine::probe_gateway`]): this process listens on the stack
//! network's gateway address and the proxy's own shell connects there. A
//! connection that arrives proves the way. None within the probe's time (or
//! a gateway that is not an address of this host at all) asks the second
//! way ([`Engine::probe_host_docker_internal`]): this process listens where
//! the engine's `host-gateway` mapping leads ([`Engine::host_gateway_listener`]:
//! the default bridge's gateway on a Linux engine of this host, else this
//! host's loopback, which Docker Desktop forwards `host.docker.internal`
//! to) and the proxy, created with `host.docker.internal:host-gateway`
//! among its hosts, connects to `host.docker.internal`. A connection that
//! arrives keeps the registry on this host, there
//! ([`super::reach::Registry::HostGateway`]); none moves it into the stack.
//!
//! There, the registry is this very devstack program, `devstack etcd serve`
//! (in memory), copied through the engine's archive API into a container
//! `<project>-registry` made from an image the engine already has (the
//! proxy's: the official images are Debian, which runs a Linux devstack
//! binary). So it needs an engine of this host's OS and architecture: Linux,
//! and a devstack binary for Linux at hand, which is this one. Containers
//! reach it as `etcd:2379` through the proxy as before; this process reaches
//! it the way the stack's reach says: its address, its port 2379
//! published on the engine's loopback, or (reached only by exec) a tunnel
//! whose relay is this binary's `devstack relay` in the container
//! ([`super::tunnel`]).
//!
//! Its store lives in memory, as the embedded server's: the registry holds
//! only what the registrar derives from the running containers, and a routing
//! path that starts again makes it afresh (the registrar re-registers before
//! the router applies). A registry kept on disk would bring back
//! registrations of containers gone since.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use tokio::net::TcpListener;

use super::error::{is_conflict, is_not_found};
use super::reach::Reach;
use super::{Engine, EngineError};
use crate::plan::names::{self, LABEL_KIND, LABEL_PROJECT};
use crate::plan::ObservedState;

/// The value of the kind label on the registry container; `plan` leaves it
/// out of the orphans, as it does the proxy.
pub const REGISTRY_KIND: &str = "registry";
/// The port the registry serves etcd's API on, inside the container.
pub const REGISTRY_PORT: u16 = 2379;
/// Where the devstack binary goes in the container.
const BINARY_PATH: &str = "/usr/local/bin/devstack-registry";
/// How long the container's connection to the gateway may take.
const PROBE_CONNECT: Duration = Duration::from_secs(3);
/// How long the registry may take to answer once started.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The name by which containers reach this host through the engine's
/// `host-gateway` mapping (Docker Desktop resolves it by itself too).
pub const HOST_DOCKER_INTERNAL: &str = "host.docker.internal";
/// The extra host entry that maps [`HOST_DOCKER_INTERNAL`] to the engine's
/// host-gateway address, in a container's `extra_hosts`.
pub const HOST_GATEWAY_MAPPING: &str = "host.docker.internal:host-gateway";

/// Where the proxy's `etcd:2379` forward leads: an address, or a name the
/// proxy resolves itself (`host.docker.internal`, whose address only the
/// engine knows for sure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdTarget {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl EtcdTarget {
    /// `host.docker.internal:<port>`.
    pub fn host_docker_internal(port: u16) -> EtcdTarget {
        EtcdTarget::Name {
            host: HOST_DOCKER_INTERNAL.into(),
            port,
        }
    }
}

impl From<SocketAddr> for EtcdTarget {
    fn from(addr: SocketAddr) -> EtcdTarget {
        EtcdTarget::Addr(addr)
    }
}

/// As HAProxy's `server` and nginx's `proxy_pass` take it: `ip:port`,
/// `[ip6]:port`, `name:port`.
impl std::fmt::Display for EtcdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdTarget::Addr(addr) => write!(f, "{addr}"),
            EtcdTarget::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The registry container's name.
pub fn registry_container_name(project: &str) -> String {
    format!("{project}-registry")
}

/// What the container → gateway probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayProbe {
    /// A connection from the container arrived at this process.
    Reached,
    /// None arrived; why, in words.
    Unreached(String),
    /// The probe could not be made (no tool in the image, an engine
    /// failure): nothing is known.
    Unknown(String),
}

/// A running registry container, as devstack and the containers reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryContainer {
    pub id: String,
    pub name: String,
    /// Its address on the stack network.
    pub ip: Option<IpAddr>,
    /// Its port 2379 as published on the engine's loopback.
    pub published: Option<SocketAddr>,
    /// A tunnel to its port 2379 through `docker exec` (`devstack relay`
    /// in the container), made when the stack is reached only by exec.
    pub tunnel: Option<SocketAddr>,
}

impl RegistryContainer {
    /// Where the stack's containers reach it (the proxy's `etcd:2379`
    /// forward leads here).
    pub fn for_containers(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, REGISTRY_PORT))
    }

    /// Where this process reaches it, as `reach` says (for `Exec`, its
    /// tunnel); `None`: a path the container lacks.
    pub fn for_devstack(&self, reach: Reach) -> Option<SocketAddr> {
        match reach {
            Reach::Direct => self.for_containers(),
            Reach::Published => self.published,
            Reach::Exec => self.tunnel,
        }
    }
}

/// The shell script the probe runs in the container: a TCP connection to
/// `host` (an address or a name the container resolves) at `port` with the
/// first tool the image has (python3, nc, bash's `/dev/tcp` under
/// `timeout`). Its verdict is whether this process saw the connection
/// arrive, not its exit code; 127 says no tool was there.
fn connect_script(host: &str, port: u16) -> String {
    let (ip, secs) = (host, PROBE_CONNECT.as_secs());
    format!(
        "if command -v python3 >/dev/null 2>&1; then python3 -c 'import socket; socket.create_connection((\"{ip}\", {port}), {secs}).close()' 2>&1; \
         elif command -v nc >/dev/null 2>&1; then nc -z -w {secs} {ip} {port} 2>&1; \
         elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then timeout {secs} bash -c 'echo > /dev/tcp/{ip}/{port}' 2>&1; \
         else echo 'no python3, nc or bash in the image to connect with' >&2; exit 127; fi"
    )
}

impl Engine {
    /// Whether the stack's containers reach this process at the network's
    /// `gateway`, asked from the running container `container` (the proxy).
    pub async fn probe_gateway(&self, container: &str, gateway: IpAddr) -> GatewayProbe {
        let listener = match TcpListener::bind(SocketAddr::new(gateway, 0)).await {
            Ok(l) => l,
            // Docker Desktop's, a rootless or a remote engine's gateway is
            // not an address of this host: nothing could listen there.
            Err(e) => {
                return GatewayProbe::Unreached(format!(
                    "the gateway {gateway} is not an address of this host ({e})"
                ))
            }
        };
        self.probe_arrival(container, listener, &gateway.to_string())
            .await
    }

    /// Whether the stack's containers reach this process as
    /// `host.docker.internal`, asked from the running container `container`
    /// (the proxy, made with [`HOST_GATEWAY_MAPPING`]): this process
    /// listens where the mapping leads ([`Engine::host_gateway_listener`])
    /// and the container connects to the name. With the probe's verdict,
    /// the address this process listened on (where the embedded etcd is to
    /// listen when it reached).
    pub async fn probe_host_docker_internal(
        &self,
        container: &str,
    ) -> (GatewayProbe, Option<IpAddr>) {
        let listener = match self.host_gateway_listener().await {
            Ok(l) => l,
            Err(e) => {
                return (
                    GatewayProbe::Unknown(format!("devstack cannot open a listener: {e}")),
                    None,
                )
            }
        };
        let ip = listener.local_addr().ok().map(|a| a.ip());
        let probe = self
            .probe_arrival(container, listener, HOST_DOCKER_INTERNAL)
            .await;
        (probe, ip)
    }

    /// A listener of this process (on a port the kernel picks) where the
    /// containers' `host.docker.internal` leads: the engine's
    /// `host-gateway` address, which is the default `bridge` network's
    /// gateway unless the engine is told otherwise, when that is an address
    /// of this host (a Linux engine here); else this host's loopback, where
    /// an engine in a VM (Docker Desktop) forwards the name.
    pub async fn host_gateway_listener(&self) -> std::io::Result<TcpListener> {
        if let Some(ip) = self.gateway_of("bridge").await {
            if let Ok(listener) = TcpListener::bind((ip, 0)).await {
                return Ok(listener);
            }
        }
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
    }

    /// Whether a connection that the running container `container` makes
    /// to `host` (as it resolves that), at `listener`'s port, arrives at
    /// `listener`.
    async fn probe_arrival(
        &self,
        container: &str,
        listener: TcpListener,
        host: &str,
    ) -> GatewayProbe {
        let Ok(at) = listener.local_addr() else {
            return GatewayProbe::Unknown("the probe's listener has no address".into());
        };
        let argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            connect_script(host, at.port()),
        ];
        let exec = self.exec_capture(container, &argv, PROBE_CONNECT + Duration::from_secs(3));
        tokio::pin!(exec);
        let accept = listener.accept();
        tokio::pin!(accept);
        let out = tokio::select! {
            accepted = &mut accept => match accepted {
                Ok(_) => return GatewayProbe::Reached,
                Err(_) => exec.await,
            },
            out = &mut exec => {
                // A connection made before the script ended is queued.
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), accept).await {
                    return GatewayProbe::Reached;
                }
                out
            }
        };
        match out {
            Ok(o) if o.exit_code == Some(127) => GatewayProbe::Unknown(o.output.trim().to_string()),
            Ok(_) => GatewayProbe::Unreached(format!(
                "no connection from `{container}` to {host}:{} arrived at {at} within {}s",
                at.port(),
                PROBE_CONNECT.as_secs()
            )),
            Err(e) => GatewayProbe::Unknown(e.to_string()),
        }
    }

    /// Starts the project's registry container afresh (one left by an
    /// earlier routing path is removed first) from `image`, an image the
    /// engine has, with this devstack binary in it, and waits until it
    /// answers this process the way `reach` says.
    pub async fn start_registry(
        &self,
        project: &str,
        image: &str,
        platform: Option<&str>,
        reach: Reach,
    ) -> Result<RegistryContainer, EngineError> {
        let name = registry_container_name(project);
        let failed = |message: String| EngineError::Api {
            what: format!("running the registry of `{project}` in the container `{name}`"),
            message,
        };
        self.binary_fits_engine().await.map_err(&failed)?;
        let exe = std::env::current_exe()
            .map_err(|e| failed(format!("cannot find this devstack's binary: {e}")))?;
        let binary = tokio::fs::read(&exe)
            .await
            .map_err(|e| failed(format!("cannot read {}: {e}", exe.display())))?;
        self.remove_registry(project).await?;
        let network = names::network_name(project);
        let port = format!("{REGISTRY_PORT}/tcp");
        let labels: HashMap<String, String> = names::owner_labels(project)
            .into_iter()
            .chain([(LABEL_KIND.to_string(), REGISTRY_KIND.to_string())])
            .collect();
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec![BINARY_PATH.into()]),
            cmd: Some(vec![
                "etcd".into(),
                "serve".into(),
                "--in-memory".into(),
                "--listen".into(),
                format!("0.0.0.0:{REGISTRY_PORT}"),
                "--name".into(),
                name.clone(),
            ]),
            labels: Some(labels),
            exposed_ports: Some(vec![port.clone()]),
            stop_timeout: Some(5),
            host_config: Some(HostConfig {
                // Loopback only, on a port the engine picks: the way in for
                // this process when the stack is reached through published
                // ports; nothing beyond this host reaches it.
                port_bindings: Some(HashMap::from([(
                    port,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                network_mode: Some(network.clone()),
                // Its address is what the proxy forwards to: a restart
                // elsewhere would leave that stale. The routing path starts
                // it afresh instead.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = match self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: platform.unwrap_or_default().to_string(),
                }),
                body,
            )
            .await
        {
            Ok(created) => created.id,
            Err(e) if is_conflict(&e) => {
                return Err(EngineError::api(
                    format!("creating `{name}` (another devstack may be creating it)"),
                    e,
                ))
            }
            Err(e) => return Err(EngineError::api(format!("creating `{name}`"), e)),
        };
        self.copy_into(&id, BINARY_PATH, &binary, 0o755).await?;
        drop(binary);
        self.start(&id, "registry").await?;
        // No TCP way to the engine's containers: a tunnel of relays, this
        // very binary's `relay` in the container, to its own loopback.
        let tunnel = match reach {
            Reach::Exec => Some(
                self.tunnel(
                    &id,
                    SocketAddr::new(IpAddr::from([127, 0, 0, 1]), REGISTRY_PORT),
                    super::tunnel::Relay::Binary(BINARY_PATH.into()),
                )
                .await?,
            ),
            _ => None,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let status = self.inspect(&id, &network).await?;
            if matches!(status.state, ObservedState::Exited | ObservedState::Dead) {
                let lines = self.last_lines(&id, 20).await;
                return Err(failed(format!(
                    "it exited ({}); its last output:\n    {}",
                    status
                        .exit_code
                        .map(|c| format!("exit code {c}"))
                        .unwrap_or_else(|| "no exit code".into()),
                    lines.join("\n    ")
                )));
            }
            let published = status
                .published
                .iter()
                .find(|p| p.container_port == REGISTRY_PORT && p.protocol == "tcp")
                .and_then(|p| {
                    p.address()
                        .parse::<SocketAddr>()
                        .ok()
                        .map(|a| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port()))
                });
            let container = RegistryContainer {
                id: id.clone(),
                name: name.clone(),
                ip: status.ip,
                published,
                tunnel,
            };
            let Some(addr) = container.for_devstack(reach) else {
                return Err(failed(match reach {
                    Reach::Exec => "it has no tunnel through `docker exec`".into(),
                    Reach::Direct => "the container has no address on the stack network".into(),
                    Reach::Published => "its port is not published on 127.0.0.1".into(),
                }));
            };
            if status.state == ObservedState::Running
                && super::health::http_get(addr, "/health", Duration::from_secs(1))
                    .await
                    .ok
            {
                return Ok(container);
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "it did not answer at {addr} within {}s",
                    READY_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this binary can run on the engine: the same OS (Linux) and
    /// architecture. `Err`: why not, in words.
    async fn binary_fits_engine(&self) -> Result<(), String> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| format!("asking the engine for its OS: {e}"))?;
        let engine_os = info.os_type.unwrap_or_default();
        let engine_arch = info.architecture.unwrap_or_default();
        let here = (std::env::consts::OS, std::env::consts::ARCH);
        let same_arch = normal_arch(&engine_arch) == normal_arch(here.1);
        if here.0 == "linux" && engine_os == "linux" && same_arch {
            Ok(())
        } else {
            Err(format!(
                "the registry runs this devstack binary ({}/{}) in a container, which needs a Linux engine of the same architecture (the engine is {engine_os}/{engine_arch})",
                here.0, here.1
            ))
        }
    }

    /// Removes the project's registry container, if it has one (only one
    /// carrying the project's label).
    pub async fn remove_registry(&self, project: &str) -> Result<(), EngineError> {
        let name = registry_container_name(project);
        match self.docker.inspect_container(&name, None).await {
            Ok(found) => {
                let owner = found
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(LABEL_PROJECT).cloned());
                if owner.as_deref() != Some(project) {
                    return Err(EngineError::Foreign {
                        kind: "container",
                        name,
                        project: project.to_string(),
                    });
                }
            }
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(EngineError::api(format!("inspecting `{name}`"), e)),
        }
        match self
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(EngineError::api(format!("removing `{name}`"), e)),
        }
    }
}

/// Docker's and Rust's names of one architecture, made one.
pub(crate) fn normal_arch(arch: &str) -> &str {
    match arch {
        "amd64" | "x86_64" => "x86_64",
        "arm64" | "aarch64" => "aarch64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_reached_as_the_stack_is() {
        let c = RegistryContainer {
            id: "c".into(),
            name: "shop-registry".into(),
            ip: Some("172.18.0.4".parse().unwrap()),
            published: Some("127.0.0.1:49200".parse().unwrap()),
            tunnel: None,
        };
        assert_eq!(c.for_containers(), Some("172.18.0.4:2379".parse().unwrap()));
        assert_eq!(
            c.for_devstack(Reach::Direct),
            Some("172.18.0.4:2379".parse().unwrap())
        );
        assert_eq!(
            c.for_devstack(Reach::Published),
            Some("127.0.0.1:49200".parse().unwrap())
        );
        assert_eq!(c.for_devstack(Reach::Exec), None);
        let c = RegistryContainer {
            tunnel: Some("127.0.0.1:40001".parse().unwrap()),
            ..c
        };
        assert_eq!(
            c.for_devstack(Reach::Exec),
            Some("127.0.0.1:40001".parse().unwrap())
        );
    }

    #[test]
    fn the_etcd_forward_reads_as_the_proxies_take_it() {
        let addr: SocketAddr = "172.18.0.1:40001".parse().unwrap();
        assert_eq!(EtcdTarget::from(addr).to_string(), "172.18.0.1:40001");
        assert_eq!(
            EtcdTarget::host_docker_internal(40002).to_string(),
            "host.docker.internal:40002"
        );
    }

    #[test]
    fn docker_and_rust_name_architectures_alike() {
        assert_eq!(normal_arch("amd64"), normal_arch("x86_64"));
        assert_eq!(normal_arch("arm64"), normal_arch("aarch64"));
        assert_ne!(normal_arch("arm64"), normal_arch("x86_64"));
    }

    /// The script connects with whichever tool comes first and exits 127
    /// without any (run here with `sh` and a PATH holding none of them).
    #[test]
    fn the_connect_script_says_when_it_has_no_tool() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(connect_script("127.0.0.1", 9))
            .env("PATH", dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(127), "{out:?}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(connect_script("localhost", addr.port()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_ok(), "the connection arrived");
    }
}
