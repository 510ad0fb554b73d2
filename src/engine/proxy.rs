//! The proxy container: HAProxy (or nginx, see `super::nginx`) as a
//! container of the stack, with its config uploaded, checked with the
//! proxy's own checker, reloaded and updated through the master CLI.
//!
//! devstack sets the proxy's command itself (`haproxy -W -db -S <master CLI>
//! -f <config>`) and nothing else about the image: it runs as the image's
//! user (the official image's `haproxy`, not root), may bind :80 through the
//! `net.ipv4.ip_unprivileged_port_start` sysctl, and needs no file or
//! directory but the config's own (`/usr/local/etc/haproxy`, which uploads
//! reach as they go through the engine).
//!
//! The master CLI can reload the proxy and drive its servers, so only devstack
//! may reach it. It listens on the container's loopback only
//! ([`MASTER_CLI_LOCAL_PORT`]); devstack reaches it through the control port
//! ([`MASTER_CLI_PORT`]), a TCP relay in the config ([`control_section`])
//! that accepts connections only from the stack network's gateway: the host,
//! whether it connects to the container's address or through the loopback
//! port the control port is published on (the engine's proxy connects from
//! the gateway). A container of the stack connects from its own address and
//! is refused. Through it devstack reloads (`reload`) and talks to the current
//! worker's runtime API (`@1 set server ...`) without any tool in the image.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
    RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{is_conflict, is_not_found};
use super::reach::Reach;
use super::{Engine, EngineError};
use crate::plan::names::{self, LABEL_KIND, LABEL_PROJECT};
use crate::plan::ObservedState;
use crate::spec::ProxyKind;

/// The image when the stack names none: what a user would pull.
pub const DEFAULT_PROXY_IMAGE: &str = "haproxy:2.8";
/// Where the config lives in both the official and the fixture image.
pub const CONFIG_PATH: &str = "/usr/local/etc/haproxy/haproxy.cfg";

/// nginx's image when the stack names none: what a user would pull.
pub const NGINX_DEFAULT_IMAGE: &str = "nginx:1.26";
/// nginx's main configuration file in the official image (and its replica):
/// devstack writes the whole file, as it writes HAProxy's.
pub const NGINX_CONFIG_PATH: &str = "/etc/nginx/nginx.conf";

/// The image when the stack names none, for a proxy of `kind`.
pub fn default_image(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Haproxy => DEFAULT_PROXY_IMAGE,
        ProxyKind::Nginx => NGINX_DEFAULT_IMAGE,
    }
}

/// Where a proxy of `kind` reads its configuration (the file devstack writes).
pub fn config_path(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Haproxy => CONFIG_PATH,
        ProxyKind::Nginx => NGINX_CONFIG_PATH,
    }
}
/// Where candidate configs are checked before they replace the live one.
const CANDIDATE_PATH: &str = "/usr/local/etc/haproxy/candidate.cfg";
/// The control port: devstack's way to the master CLI, published on a
/// loopback port of the host and open to the network's gateway only.
pub const MASTER_CLI_PORT: u16 = 9990;
/// Where the master CLI itself listens: the container's loopback.
pub const MASTER_CLI_LOCAL_PORT: u16 = 9991;
/// The port every route is served on inside the container.
pub const HTTP_PORT: u16 = 80;
/// The value of the kind label on the proxy container; `plan` leaves it out of
/// the orphans.
pub const PROXY_KIND: &str = "proxy";
/// How long one master CLI exchange may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy container should be.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySpec {
    pub project: String,
    /// Which proxy the image runs.
    pub kind: ProxyKind,
    /// The image (already resolved from the stack or the default).
    pub image: String,
    /// The platform to pull it for and run it as (the stack's `proxy.platform`).
    pub platform: Option<String>,
    /// The host address where every route is served.
    pub listen: SocketAddr,
    /// Network aliases: every service's production name (`<service>.internal`),
    /// so `http://b.internal/` inside the network goes through the proxy.
    pub aliases: Vec<String>,
}

/// A running proxy container, as devstack reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyContainer {
    pub id: String,
    pub name: String,
    /// Which proxy it runs (its kind label; HAProxy for a proxy made before
    /// the label existed).
    pub kind: ProxyKind,
    /// The control port's address as seen from this process, the way
    /// [`Engine::reach`] says: HAProxy's master CLI, or nginx's read-only
    /// table (`super::nginx`).
    pub cli: SocketAddr,
    /// The container's address on the stack network.
    pub ip: Option<IpAddr>,
    /// Both ways to the control port, for the reach probe.
    pub paths: ControlPaths,
}

/// A config that the proxy's checker (`haproxy -c`, `nginx -t`) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} rejected the configuration{}: {message}", kind.product(), line.map(|l| format!(" at line {l}")).unwrap_or_default())]
pub struct CheckError {
    /// Whose checker.
    pub kind: ProxyKind,
    /// The config line HAProxy complained about first, when it said.
    pub line: Option<usize>,
    /// HAProxy's ALERT lines.
    pub message: String,
}

/// The proxy container's name.
pub fn proxy_container_name(project: &str) -> String {
    format!("{project}-proxy")
}

impl Engine {
    /// Makes sure the project's proxy container runs as `spec` says with
    /// `config` as its configuration: adopts a running one that matches
    /// (leaving its config to the caller), else replaces it. The config is
    /// uploaded before the first start, so HAProxy never starts without one.
    pub async fn ensure_proxy(
        &self,
        spec: &ProxySpec,
        config: &str,
    ) -> Result<ProxyContainer, EngineError> {
        let name = proxy_container_name(&spec.project);
        let network = names::network_name(&spec.project);
        match self.docker.inspect_container(&name, None).await {
            Ok(found) => {
                let labels = found
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                if labels.get(LABEL_PROJECT) != Some(&spec.project) {
                    return Err(EngineError::Foreign {
                        kind: "container",
                        name,
                        project: spec.project.clone(),
                    });
                }
                let id = found.id.clone().unwrap_or_else(|| name.clone());
                let matches = labels.get(LABEL_SPEC).map(String::as_str)
                    == Some(spec_fingerprint(spec).as_str());
                if matches {
                    let status = self.inspect(&id, &network).await?;
                    if status.state != ObservedState::Running {
                        self.upload_file(&id, config_path(spec.kind), config)
                            .await?;
                        self.start(&id, "proxy").await?;
                    }
                    return self.proxy_container(&id).await;
                }
                self.remove_proxy(&spec.project).await?;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(EngineError::api(format!("inspecting `{name}`"), e)),
        }
        // The image is pulled when it is not here (or is of another
        // platform), as a service's is: a laptop has no `haproxy:2.8` yet.
        if self
            .local_image(&spec.image, spec.platform.as_deref())
            .await?
            .is_none()
        {
            self.pull("proxy", &spec.image, spec.platform.as_deref(), |_| {})
                .await?;
        }
        let id = self.create_proxy(spec, &name, &network).await?;
        self.upload_file(&id, config_path(spec.kind), config)
            .await?;
        self.start(&id, "proxy").await?;
        self.proxy_container(&id).await
    }

    async fn create_proxy(
        &self,
        spec: &ProxySpec,
        name: &str,
        network: &str,
    ) -> Result<String, EngineError> {
        let http = format!("{HTTP_PORT}/tcp");
        let cli = format!("{MASTER_CLI_PORT}/tcp");
        let bindings = HashMap::from([
            (
                http.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(spec.listen.ip().to_string()),
                    host_port: Some(spec.listen.port().to_string()),
                }]),
            ),
            // Loopback only, on a port the engine picks: the master CLI can
            // reload the proxy, so nothing outside this host may reach it.
            (
                cli.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            ),
        ]);
        let labels: HashMap<String, String> = names::owner_labels(&spec.project)
            .into_iter()
            .chain([
                (LABEL_KIND.to_string(), PROXY_KIND.to_string()),
                (LABEL_SPEC.to_string(), spec_fingerprint(spec)),
                (LABEL_PROXY_KIND.to_string(), spec.kind.as_str().to_string()),
            ])
            .collect();
        let (entrypoint, cmd, stop_signal) = match spec.kind {
            ProxyKind::Haproxy => (
                "haproxy",
                vec![
                    "-W".into(),
                    "-db".into(),
                    "-S".into(),
                    format!("ipv4@127.0.0.1:{MASTER_CLI_LOCAL_PORT}"),
                    "-f".into(),
                    CONFIG_PATH.into(),
                ],
                // SIGUSR1 is HAProxy's soft stop: in-flight requests finish.
                "SIGUSR1",
            ),
            // The master in the foreground, as the official image runs it;
            // SIGQUIT is nginx's graceful stop.
            ProxyKind::Nginx => (
                "nginx",
                vec![
                    "-c".into(),
                    NGINX_CONFIG_PATH.into(),
                    "-g".into(),
                    "daemon off;".into(),
                ],
                "SIGQUIT",
            ),
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(vec![entrypoint.into()]),
            cmd: Some(cmd),
            // No `user`: the image's own (the official HAProxy image runs as
            // `haproxy`, uid 99, which can write only its home and /tmp;
            // nginx's master runs as root and its workers as `nginx`).
            labels: Some(labels),
            exposed_ports: Some(vec![http, cli]),
            stop_signal: Some(stop_signal.into()),
            stop_timeout: Some(5),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                network_mode: Some(network.to_string()),
                // A non-root HAProxy may bind :80 only with this (namespaced)
                // sysctl; Docker 20.10 sets it by default, older engines and
                // other runtimes do not.
                sysctls: Some(HashMap::from([(
                    "net.ipv4.ip_unprivileged_port_start".to_string(),
                    "0".to_string(),
                )])),
                // `host.docker.internal` resolves in it to the engine's
                // host-gateway address (Docker Desktop resolves the name
                // without it; a Linux engine only with it): the way to this
                // host its `etcd:2379` forward takes when the stack network's
                // gateway is out of the containers' reach (see
                // `super::registry`).
                extra_hosts: Some(vec![super::registry::HOST_GATEWAY_MAPPING.into()]),
                // The router restarts it and hands it the current config.
                restart_policy: Some(DockerRestart {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_string(),
                    EndpointSettings {
                        aliases: Some(spec.aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        match self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    platform: spec.platform.clone().unwrap_or_default(),
                }),
                body,
            )
            .await
        {
            Ok(created) => Ok(created.id),
            Err(e) if is_not_found(&e) => Err(EngineError::Pull {
                service: "proxy".into(),
                image: spec.image.clone(),
                message: "the image went away between its pull and the proxy's creation".into(),
            }),
            Err(e) if is_conflict(&e) => Err(EngineError::api(
                format!("creating `{name}` (another devstack may be creating it)"),
                e,
            )),
            Err(e) => Err(EngineError::api(format!("creating `{name}`"), e)),
        }
    }

    /// Removes the project's proxy container, if it has one.
    pub async fn remove_proxy(&self, project: &str) -> Result<(), EngineError> {
        let name = proxy_container_name(project);
        match self.docker.inspect_container(&name, None).await {
            Ok(found) => {
                let owner = found
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(LABEL_PROJECT).cloned());
                if owner.as_deref() != Some(project) {
                    return Ok(());
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
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(EngineError::api(format!("removing `{name}`"), e)),
        }
    }

    /// How to reach a running proxy's master CLI.
    pub async fn proxy_container(&self, id: &str) -> Result<ProxyContainer, EngineError> {
        let c = self.docker.inspect_container(id, None).await.map_err(|e| {
            if is_not_found(&e) {
                EngineError::NotFound(format!("the proxy container `{id}` no longer exists"))
            } else {
                EngineError::api(format!("inspecting `{id}`"), e)
            }
        })?;
        let name = c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
        let project = labels
            .and_then(|l| l.get(LABEL_PROJECT).cloned())
            .unwrap_or_default();
        let kind = match labels
            .and_then(|l| l.get(LABEL_PROXY_KIND))
            .map(String::as_str)
        {
            Some("nginx") => ProxyKind::Nginx,
            _ => ProxyKind::Haproxy,
        };
        let status = super::containers::status_of(c, id, &names::network_name(&project));
        let published = status
            .published
            .iter()
            .find(|p| p.container_port == MASTER_CLI_PORT && p.protocol == "tcp")
            .and_then(|p| p.address().parse::<SocketAddr>().ok());
        let paths = ControlPaths {
            ip: status.ip,
            published,
        };
        let reach = self.reach();
        // Undecided, any path stands in: the router's probe settles it.
        let cli = if self.reach_decided() && reach == Reach::Exec {
            Some(self.control_tunnel(&status.id).await?)
        } else if self.reach_decided() {
            paths.for_reach(reach)
        } else {
            [reach, Reach::Published, Reach::Direct]
                .iter()
                .find_map(|&r| paths.for_reach(r))
        };
        let Some(cli) = cli else {
            return Err(EngineError::Api {
                what: format!("reaching the master CLI of `{name}`"),
                message: match reach {
                    Reach::Exec => {
                        "neither its address nor its control port on 127.0.0.1 answers".into()
                    }
                    Reach::Direct => "the container has no address on the stack network".into(),
                    Reach::Published => "the control port is not published on 127.0.0.1".into(),
                },
            });
        };
        Ok(ProxyContainer {
            id: status.id,
            name,
            kind,
            cli,
            ip: status.ip,
            paths,
        })
    }

    /// The proxy's control port through `docker exec` (a relay per
    /// connection, from the container's loopback, which the control port
    /// admits): for a stack reached only by exec.
    pub async fn control_tunnel(&self, id: &str) -> Result<SocketAddr, EngineError> {
        let target = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), MASTER_CLI_PORT);
        self.tunnel(id, target, super::tunnel::Relay::Shell).await
    }

    /// Writes one file into a container (running or only created).
    pub async fn upload_file(&self, id: &str, path: &str, text: &str) -> Result<(), EngineError> {
        self.copy_into(id, path, text.as_bytes(), 0o644).await
    }

    /// Checks a config with the proxy's own `haproxy -c` inside the container.
    /// `Ok(Err(_))` is a config HAProxy refused; `Err(_)` an engine failure.
    pub async fn proxy_check(
        &self,
        id: &str,
        config: &str,
    ) -> Result<Result<(), CheckError>, EngineError> {
        self.upload_file(id, CANDIDATE_PATH, config).await?;
        let argv: Vec<String> = ["haproxy", "-c", "-f", CANDIDATE_PATH]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = self
            .exec_capture(id, &argv, Duration::from_secs(10))
            .await?;
        match out.exit_code {
            Some(0) => Ok(Ok(())),
            _ => Ok(Err(check_error(&out.output))),
        }
    }

    /// Sends a signal to the proxy's master (SIGUSR2 reloads).
    pub async fn signal(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        self.docker
            .kill_container(
                id,
                Some(bollard::query_parameters::KillContainerOptions {
                    signal: signal.to_string(),
                }),
            )
            .await
            .map_err(|e| EngineError::api(format!("sending {signal} to `{id}`"), e))
    }

    /// The gateway address of the stack's network: the host as containers see
    /// it (where an embedded etcd listens for them).
    pub async fn network_gateway(&self, project: &str) -> Result<Option<IpAddr>, EngineError> {
        let name = names::network_name(project);
        let found = self
            .docker
            .inspect_network(&name, None)
            .await
            .map_err(|e| EngineError::api(format!("inspecting network `{name}`"), e))?;
        Ok(super::resources::ipv4_gateway(found.ipam.as_ref()))
    }
}

/// The label recording what the proxy was created from; a change recreates it.
const LABEL_SPEC: &str = "dev.devstack.proxy-spec";
/// The label naming the proxy's kind (`haproxy`, `nginx`), so whoever finds
/// the container knows how to ask it where it sends traffic.
const LABEL_PROXY_KIND: &str = "dev.devstack.proxy-kind";
/// The version of the container settings devstack applies (see `create_proxy`).
const CONTAINER_LAYOUT: u32 = 4;

fn spec_fingerprint(spec: &ProxySpec) -> String {
    use sha2::{Digest, Sha256};
    let mut aliases = spec.aliases.clone();
    aliases.sort();
    // CONTAINER_LAYOUT changes whenever what devstack asks of the container
    // does (user, sysctls, command, extra hosts), so an older devstack's
    // proxy is replaced.
    let mut text = format!(
        "{}\n{}\n{}\n{}\n{CONTAINER_LAYOUT}",
        spec.image,
        spec.listen,
        aliases.join(","),
        MASTER_CLI_PORT
    );
    // Only when set, so a proxy made before `platform` existed is kept.
    if let Some(platform) = &spec.platform {
        text.push_str(&format!("\n{platform}"));
    }
    // Likewise only for nginx, so existing HAProxy proxies are kept.
    if spec.kind != ProxyKind::Haproxy {
        text.push_str(&format!("\nkind {}", spec.kind.as_str()));
    }
    Sha256::digest(text.as_bytes())
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The section devstack appends to every config: the control port, relaying
/// to the master CLI on the container's loopback, for connections from
/// `gateway` (the host, as the stack network sees it) and from the
/// container's own loopback (devstack's relay through `docker exec`, see
/// [`super::tunnel`]; no other container can send from a loopback address)
/// only. Anything else is closed before a byte is read. Not logged: devstack
/// polls it while reloading.
pub fn control_section(gateway: IpAddr) -> String {
    format!(
        "\n# Added by devstack: the master CLI, for devstack only (it connects from\n# the network's gateway, or through exec from this container's loopback;\n# containers of the stack are refused).\nlisten devstack_control\n    mode tcp\n    no log\n    bind ipv4@:{MASTER_CLI_PORT}\n    tcp-request connection reject unless {{ src {gateway} 127.0.0.1 }}\n    timeout client 1m\n    timeout server 1m\n    server master 127.0.0.1:{MASTER_CLI_LOCAL_PORT}\n"
    )
}

/// HAProxy's complaint, reduced to its ALERT lines and the first line number
/// (`[ALERT] ... : config : parsing [/path/candidate.cfg:12] : ...`).
pub fn check_error(output: &str) -> CheckError {
    let alerts: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("ALERT") || l.contains("parsing ["))
        .collect();
    let line = alerts.iter().find_map(|l| {
        let after = l.split(".cfg:").nth(1)?;
        let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    });
    let message = if alerts.is_empty() {
        output.trim().to_string()
    } else {
        alerts
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join("\n")
    };
    CheckError {
        kind: ProxyKind::Haproxy,
        line,
        message,
    }
}

/// One exchange with HAProxy's master CLI: send the command line, half-close,
/// read everything until HAProxy closes. Commands prefixed with `@1` go to the
/// current worker's runtime API.
pub async fn master_cli(addr: SocketAddr, command: &str) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(command.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        // The CLI answers and closes once it sees the end of the input.
        stream.shutdown().await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok::<String, std::io::Error>(out)
    };
    match tokio::time::timeout(CLI_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the master CLI at {addr} did not answer within {CLI_TIMEOUT:?}"),
        )),
    }
}

/// Where a proxy's control port is, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPaths {
    /// The proxy's address on the stack network.
    pub ip: Option<IpAddr>,
    /// The control port as published on the engine's loopback.
    pub published: Option<SocketAddr>,
}

impl ControlPaths {
    /// The control port's address for `reach`; `None`: that path has none
    /// (and `Exec` never has: the control port is a TCP port).
    pub fn for_reach(&self, reach: Reach) -> Option<SocketAddr> {
        match reach {
            Reach::Direct => self.ip.map(|ip| SocketAddr::new(ip, MASTER_CLI_PORT)),
            Reach::Published => self.published,
            Reach::Exec => None,
        }
    }
}

/// How long one path may take to answer in one round of the reach probe
/// (`super::control::probe_reach`).
pub(super) const ATTEMPT: Duration = Duration::from_millis(700);

/// Whether HAProxy's master answers `show proc` at `addr` within [`ATTEMPT`].
pub(super) async fn master_answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(ATTEMPT, master_cli(addr, "show proc")).await,
        Ok(Ok(text)) if parse_show_proc(&text).is_some()
    )
}

/// The master's `show proc`: the current worker's pid and the reload count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcState {
    pub reloads: u64,
    pub failed_reloads: u64,
    /// The newest worker's pid (workers are listed newest first).
    pub worker: Option<u32>,
}

/// Parses `show proc` output.
pub fn parse_show_proc(text: &str) -> Option<ProcState> {
    let mut reloads = None;
    let mut failed = 0;
    let mut worker = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.get(1) {
            Some(&"master") => {
                reloads = fields.get(2).and_then(|r| r.parse().ok());
                if let Some(pos) = fields.iter().position(|f| *f == "[failed:") {
                    failed = fields
                        .get(pos + 1)
                        .map(|f| f.trim_end_matches(']'))
                        .and_then(|f| f.parse().ok())
                        .unwrap_or(0);
                }
            }
            Some(&"worker") if worker.is_none() => {
                worker = fields.first().and_then(|p| p.parse().ok());
            }
            _ => {}
        }
    }
    Some(ProcState {
        reloads: reloads?,
        failed_reloads: failed,
        worker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc_is_parsed() {
        let text = "#<PID>          <type>          <reloads>       <uptime>        <version>\n1               master          1 [failed: 0]   0d00h10m17s     2.6.12\n# workers\n17              worker          0               0d00h00m01s     2.6.12\n7               worker          1               0d00h00m01s     2.6.12\n# programs\n";
        assert_eq!(
            parse_show_proc(text),
            Some(ProcState {
                reloads: 1,
                failed_reloads: 0,
                worker: Some(17)
            })
        );
        assert_eq!(parse_show_proc("garbage"), None);
    }

    #[test]
    fn the_control_port_admits_the_gateway_only() {
        let text = control_section("172.18.0.1".parse().unwrap());
        assert!(text.contains("\n    bind ipv4@:9990\n"), "{text}");
        assert!(
            text.contains(
                "\n    tcp-request connection reject unless { src 172.18.0.1 127.0.0.1 }\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n    server master 127.0.0.1:9991\n"),
            "{text}"
        );
    }

    #[test]
    fn check_errors_name_the_line() {
        let out = "[NOTICE]   (40) : haproxy version is 2.6.12\n[ALERT]    (40) : config : parsing [/usr/local/etc/haproxy/candidate.cfg:12] : unknown keyword 'bogus' in 'backend' section\n[ALERT]    (40) : config : Fatal errors found in configuration.\n";
        let err = check_error(out);
        assert_eq!(err.line, Some(12));
        assert!(err.message.contains("unknown keyword 'bogus'"), "{err}");
        assert!(!err.message.contains("NOTICE"));
    }

    #[test]
    fn the_control_port_has_no_exec_path() {
        let paths = ControlPaths {
            ip: Some("172.18.0.3".parse().unwrap()),
            published: Some("127.0.0.1:49153".parse().unwrap()),
        };
        assert_eq!(
            paths.for_reach(Reach::Direct),
            Some("172.18.0.3:9990".parse().unwrap())
        );
        assert_eq!(
            paths.for_reach(Reach::Published),
            Some("127.0.0.1:49153".parse().unwrap())
        );
        assert_eq!(paths.for_reach(Reach::Exec), None);
        assert_eq!(
            serde_json::to_string(&Reach::Published).unwrap(),
            "\"published\""
        );
    }
}
