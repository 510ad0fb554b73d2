//! `devstack doctor`: what the engine is (endpoint, version, OS, rootless,
//! storage and cgroup drivers, clock skew, free disk) and which reach paths
//! between this process and containers really work, probed with a throwaway
//! container on a throwaway network.
//!
//! The probe never pulls: it runs an image the engine already has (its
//! `python3`, else its `busybox`), and removes its container and network on
//! every path, Ctrl-C included. Both carry [`LABEL_DOCTOR`], so anything a
//! killed run left behind is easy to find.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{CreateContainerOptions, ListImagesOptions};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

use super::containers::parse_rfc3339;
use super::error::message_of;
use super::{Engine, EngineError};
use crate::plan::ObservedState;

/// The label on the probe's container and network (its value: the pid of
/// the devstack process that made them).
pub const LABEL_DOCTOR: &str = "dev.devstack.doctor";
/// The port the probe container listens on.
const PROBE_PORT: u16 = 7878;
/// What the probe container answers on [`PROBE_PORT`].
const GREETING: &str = "devstack-doctor";
/// How long one reach path may take to prove itself.
const REACH_LIMIT: Duration = Duration::from_secs(10);
/// Clock skew above which timestamps (logs since, event times) mislead.
const SKEW_LIMIT: f64 = 5.0;
/// Free disk below which builds and pulls start to fail.
const DISK_LOW: u64 = 2 * 1024 * 1024 * 1024;

/// One reach path between devstack and a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// devstack connects to a container's address on the stack's bridge network.
    HostToBridge,
    /// devstack connects to a container port published on 127.0.0.1.
    HostToPublished,
    /// A container connects to devstack on the network's gateway address.
    ContainerToGateway,
    /// A container connects to devstack as `host.docker.internal` (host-gateway mapping).
    ContainerToHostDockerInternal,
}

impl Path {
    pub const ALL: [Path; 4] = [
        Path::HostToBridge,
        Path::HostToPublished,
        Path::ContainerToGateway,
        Path::ContainerToHostDockerInternal,
    ];

    /// In words, for the text report.
    pub fn describe(self) -> &'static str {
        match self {
            Path::HostToBridge => "host → container bridge address",
            Path::HostToPublished => "host → port published on 127.0.0.1",
            Path::ContainerToGateway => "container → host at the bridge gateway",
            Path::ContainerToHostDockerInternal => "container → host.docker.internal",
        }
    }

    /// Whether devstack prefers this path (health probes and the proxy's
    /// control port at the bridge address, the embedded etcd on the
    /// gateway). A stack whose bridge does not answer is reached through
    /// loopback-published ports instead (see `engine::reach`), so a failed
    /// bridge fails `doctor` only when those fail too; a stack whose
    /// containers cannot reach the gateway gets its registry where their
    /// `host.docker.internal` leads, else in a container of the stack
    /// (`engine::registry`), so that fails `doctor` only when neither
    /// works (host.docker.internal unreached, and this binary cannot run on
    /// the engine).
    pub fn used_today(self) -> bool {
        matches!(self, Path::HostToBridge | Path::ContainerToGateway)
    }
}

/// What one reach path did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    pub path: Path,
    pub works: bool,
    pub used_today: bool,
    /// The address tried, or why it could not be tried.
    pub detail: String,
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The engine address as connected (`unix:///var/run/docker.sock`).
    pub endpoint: String,
    /// `unix`, `tcp`, `ssh`, `npipe`, `http(s)`.
    pub endpoint_kind: String,
    pub engine_version: Option<String>,
    /// The API version the engine speaks at most, and the one negotiated.
    pub api_version: Option<String>,
    pub api_negotiated: String,
    /// `linux` or `windows`.
    pub os_type: Option<String>,
    pub arch: Option<String>,
    /// `Ubuntu 24.04`, `Docker Desktop`, …
    pub operating_system: Option<String>,
    pub kernel: Option<String>,
    pub docker_desktop: bool,
    pub rootless: bool,
    pub storage_driver: Option<String>,
    pub cgroup_driver: Option<String>,
    pub cgroup_version: Option<String>,
    /// Engine clock minus this host's, in seconds (`None`: the engine did not say).
    pub clock_skew_seconds: Option<f64>,
    pub docker_root_dir: Option<String>,
    /// Free bytes under `docker_root_dir`, when that directory is on this host.
    pub free_disk_bytes: Option<u64>,
    /// The local image the probe ran (`None`: no usable image was present).
    pub probe_image: Option<String>,
    pub reach: Vec<Reach>,
    /// How a stack's containers would be reached here: what the stack's own
    /// probe (on its proxy, when its routing path starts) decides from the
    /// same two paths. `None`: the paths were not probed.
    pub stack_reach: Option<super::reach::Reach>,
    /// Where a stack's registry would run here: on this host where
    /// containers reach the gateway, else where they reach it as
    /// `host.docker.internal` (in both cases when this process reaches them
    /// other than by exec), else in a container of the stack. `None`: the
    /// paths were not probed.
    pub stack_registry: Option<super::reach::Registry>,
    /// What will not work, one sentence each.
    pub problems: Vec<String>,
    /// Everything devstack needs today works.
    pub ok: bool,
}

/// What the probe container runs: python3 where the image has it, else busybox.
const PROBE_PY: &str = r#"
import os, socket, threading, time
def serve():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', 7878)); s.listen(16)
    while True:
        c, _ = s.accept()
        try: c.sendall(b'devstack-doctor\n')
        finally: c.close()
def reach(target):
    host, port = target.rsplit(':', 1)
    for _ in range(40):
        try:
            c = socket.create_connection((host, int(port)), timeout=1)
            c.sendall(os.environ['DOCTOR_TOKEN'].encode() + b'\n'); c.close(); return
        except Exception: time.sleep(0.25)
for name in ('DOCTOR_GW', 'DOCTOR_HDI'):
    if os.environ.get(name): threading.Thread(target=reach, args=(os.environ[name],), daemon=True).start()
serve()
"#;

const PROBE_SH: &str = r#"
if command -v python3 >/dev/null 2>&1; then exec python3 -c "$DOCTOR_PY"; fi
if command -v busybox >/dev/null 2>&1; then
  for t in "$DOCTOR_GW" "$DOCTOR_HDI"; do
    [ -n "$t" ] || continue
    ( i=0; while [ $i -lt 10 ]; do
        echo "$DOCTOR_TOKEN" | busybox nc -w 1 "${t%:*}" "${t##*:}" && break
        i=$((i+1)); sleep 1; done ) &
  done
  while :; do echo devstack-doctor | busybox nc -l -p 7878; done
fi
echo "devstack doctor: this image has neither python3 nor busybox" >&2
exit 3
"#;

impl Engine {
    /// Looks at the engine and probes the reach paths. Errors only when the
    /// engine itself does not answer; everything else becomes a problem line.
    /// When `stop` completes first (Ctrl-C), the probe's objects are removed
    /// and the answer is `None`.
    pub async fn doctor(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Report>, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| EngineError::api("asking the engine for its info", e))?;
        let version = self.docker.version().await.ok();
        let now = super::unix_now();
        let endpoint_kind = self
            .host()
            .split_once("://")
            .map(|(k, _)| k.to_string())
            .unwrap_or_else(|| "unix".into());
        let operating_system = info.operating_system.clone();
        let docker_desktop = operating_system
            .as_deref()
            .is_some_and(|o| o.contains("Docker Desktop"))
            || info.name.as_deref() == Some("docker-desktop");
        let rootless = info
            .security_options
            .iter()
            .flatten()
            .any(|o| o.split(',').any(|part| part == "name=rootless"));
        let clock_skew_seconds = info
            .system_time
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|engine| (engine - now) as f64);
        let free_disk_bytes = match &info.docker_root_dir {
            Some(dir) if endpoint_kind == "unix" && !docker_desktop => free_bytes(dir),
            _ => None,
        };
        let mut report = Report {
            endpoint: self.host().to_string(),
            endpoint_kind,
            engine_version: info
                .server_version
                .clone()
                .or_else(|| version.as_ref().and_then(|v| v.version.clone())),
            api_version: version.as_ref().and_then(|v| v.api_version.clone()),
            api_negotiated: self.api_version(),
            os_type: info.os_type.clone(),
            arch: info.architecture.clone(),
            operating_system,
            kernel: info.kernel_version.clone(),
            docker_desktop,
            rootless,
            storage_driver: info.driver.clone(),
            cgroup_driver: info.cgroup_driver.map(|d| d.to_string()),
            cgroup_version: info.cgroup_version.map(|v| v.to_string()),
            clock_skew_seconds,
            docker_root_dir: info.docker_root_dir.clone(),
            free_disk_bytes,
            probe_image: None,
            reach: Vec::new(),
            stack_reach: None,
            stack_registry: None,
            problems: Vec::new(),
            ok: false,
        };
        let probed = tokio::select! {
            probed = self.probe_reach() => Some(probed),
            _ = stop => None,
        };
        // The probe's objects go whatever happened (a stop drops the probe
        // future half way, so clean-up is by name, not by what it recorded).
        self.remove_probe().await;
        let Some(probed) = probed else {
            return Ok(None);
        };
        let (image, reach) = probed?;
        report.probe_image = image;
        report.reach = reach;
        report.stack_reach = stack_reach(&report);
        report.stack_registry = stack_registry(&report);
        let found = problems(&report);
        report.ok = found.iter().all(|p| !p.blocking);
        report.problems = found.into_iter().map(|p| p.text).collect();
        Ok(Some(report))
    }

    /// Creates the probe's network and container, tries every path, and
    /// returns the image used and what each path did. Leaves the objects for
    /// [`Engine::remove_probe`].
    async fn probe_reach(&self) -> Result<(Option<String>, Vec<Reach>), EngineError> {
        let not_tried = |why: &str| {
            Path::ALL
                .iter()
                .map(|&path| Reach {
                    path,
                    works: false,
                    used_today: path.used_today(),
                    detail: why.to_string(),
                })
                .collect::<Vec<_>>()
        };
        let candidates = self.probe_images().await?;
        if candidates.is_empty() {
            return Ok((None, not_tried("no local image to probe with")));
        }
        let name = probe_name();
        let labels = HashMap::from([(LABEL_DOCTOR.to_string(), std::process::id().to_string())]);
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::api(format!("creating the probe network `{name}`"), e))?;
        let gateway: Option<IpAddr> = self.gateway_of(&name).await;
        let token = format!(
            "devstack-doctor-{}-{}",
            std::process::id(),
            super::unix_now()
        );

        // devstack's listeners: one on the gateway, one for host.docker.internal
        // where a stack's routing path would listen for it (the default
        // bridge's gateway is where `host-gateway` points on a Linux engine;
        // elsewhere the engine forwards it to this host's loopback).
        let gw_listener = match gateway {
            Some(ip) => TcpListener::bind((ip, 0)).await.map_err(|e| {
                format!("devstack cannot listen on the gateway {ip} ({e}): it is not an address of this host")
            }),
            None => Err("the probe network has no gateway address".to_string()),
        };
        let hdi_listener = self
            .host_gateway_listener()
            .await
            .map_err(|e| format!("devstack cannot open a listener: {e}"));
        let gw_env = match &gw_listener {
            Ok(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Err(_) => String::new(),
        };
        let hdi_env = match &hdi_listener {
            Ok(l) => l
                .local_addr()
                .map(|a| format!("host.docker.internal:{}", a.port()))
                .unwrap_or_default(),
            Err(_) => String::new(),
        };

        let mut started = None;
        let mut refusals = Vec::new();
        for image in candidates.iter().take(3) {
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                entrypoint: Some(vec!["sh".into(), "-c".into(), PROBE_SH.into()]),
                cmd: Some(Vec::new()),
                env: Some(vec![
                    format!("DOCTOR_PY={PROBE_PY}"),
                    format!("DOCTOR_GW={gw_env}"),
                    format!("DOCTOR_HDI={hdi_env}"),
                    format!("DOCTOR_TOKEN={token}"),
                ]),
                labels: Some(labels.clone()),
                exposed_ports: Some(vec![format!("{PROBE_PORT}/tcp")]),
                host_config: Some(HostConfig {
                    network_mode: Some(name.clone()),
                    port_bindings: Some(HashMap::from([(
                        format!("{PROBE_PORT}/tcp"),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some(String::new()),
                        }]),
                    )])),
                    extra_hosts: Some(vec![super::registry::HOST_GATEWAY_MAPPING.into()]),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        name.clone(),
                        EndpointSettings::default(),
                    )])),
                }),
                ..Default::default()
            };
            // The previous candidate's container, if any, makes way.
            let _ = self.remove(&name).await;
            let created = self
                .docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await;
            if let Err(e) = created {
                refusals.push(format!("{image}: {}", message_of(&e)));
                continue;
            }
            if let Err(e) = self.docker.start_container(&name, None).await {
                refusals.push(format!("{image}: {}", message_of(&e)));
                continue;
            }
            // A script without its tools exits at once; a listener keeps running.
            sleep(Duration::from_millis(1500)).await;
            match self.inspect(&name, &name).await {
                Ok(status) if status.state == ObservedState::Running => {
                    started = Some((image.clone(), status));
                    break;
                }
                Ok(_) => refusals.push(format!("{image}: has neither python3 nor busybox")),
                Err(e) => refusals.push(format!("{image}: {e}")),
            }
        }
        let Some((image, status)) = started else {
            let why = format!(
                "no local image could run the probe ({})",
                refusals.join("; ")
            );
            return Ok((None, not_tried(&why)));
        };

        let bridge = async {
            match status.ip {
                Some(ip) => {
                    let addr = SocketAddr::new(ip, PROBE_PORT);
                    reach(Path::HostToBridge, addr.to_string(), greeted(addr).await)
                }
                None => reach(
                    Path::HostToBridge,
                    "the container has no address on the probe network".into(),
                    false,
                ),
            }
        };
        let published = async {
            match status
                .published
                .iter()
                .find(|p| p.container_port == PROBE_PORT)
            {
                Some(p) => {
                    let addr = SocketAddr::from(([127, 0, 0, 1], p.host_port));
                    reach(Path::HostToPublished, addr.to_string(), greeted(addr).await)
                }
                None => reach(
                    Path::HostToPublished,
                    "the engine published no port".into(),
                    false,
                ),
            }
        };
        let to_gateway = async {
            match gw_listener {
                Ok(l) => {
                    let at = gw_env.clone();
                    reach(Path::ContainerToGateway, at, called(l, &token).await)
                }
                Err(why) => reach(Path::ContainerToGateway, why, false),
            }
        };
        let to_hdi = async {
            match hdi_listener {
                Ok(l) => {
                    let at = l
                        .local_addr()
                        .map(|a| format!("host.docker.internal → {a}"))
                        .unwrap_or_default();
                    reach(
                        Path::ContainerToHostDockerInternal,
                        at,
                        called(l, &token).await,
                    )
                }
                Err(why) => reach(Path::ContainerToHostDockerInternal, why, false),
            }
        };
        let (a, b, c, d) = tokio::join!(bridge, published, to_gateway, to_hdi);
        Ok((Some(image), vec![a, b, c, d]))
    }

    /// Local images the probe may run, likeliest first: small images known
    /// to carry busybox or python3, then the rest by size.
    async fn probe_images(&self) -> Result<Vec<String>, EngineError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(|e| EngineError::api("listing local images", e))?;
        let mut tagged: Vec<(u8, i64, String)> = images
            .into_iter()
            .filter_map(|i| {
                let tag = i
                    .repo_tags
                    .into_iter()
                    .find(|t| !t.is_empty() && !t.ends_with(":<none>") && t != "<none>:<none>")?;
                let rank = probe_rank(&tag);
                Some((rank, i.size, tag))
            })
            .collect();
        tagged.sort();
        Ok(tagged.into_iter().map(|(_, _, t)| t).collect())
    }

    /// Removes this process's probe container and network, if present.
    async fn remove_probe(&self) {
        let name = probe_name();
        let _ = self.remove(&name).await;
        let _ = self.docker.remove_network(&name).await;
    }
}

/// The probe's container and network name: one per devstack process.
fn probe_name() -> String {
    format!("devstack-doctor-{}", std::process::id())
}

/// Lower ranks are tried first.
fn probe_rank(tag: &str) -> u8 {
    let repo = tag.rsplit_once(':').map(|(r, _)| r).unwrap_or(tag);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    match last {
        "busybox" | "alpine" => 0,
        "python" => 1,
        "debian" | "ubuntu" => 2,
        _ => 3,
    }
}

fn reach(path: Path, detail: String, works: bool) -> Reach {
    Reach {
        path,
        works,
        used_today: path.used_today(),
        detail,
    }
}

/// Whether the probe container's greeting arrives at `addr` within the limit.
async fn greeted(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + REACH_LIMIT;
    while Instant::now() < deadline {
        let attempt = timeout(Duration::from_secs(1), async {
            let stream = TcpStream::connect(addr).await.ok()?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await.ok()?;
            Some(line.trim() == GREETING)
        })
        .await;
        if let Ok(Some(true)) = attempt {
            return true;
        }
        sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Whether the probe container calls `listener` with `token` within the limit.
async fn called(listener: TcpListener, token: &str) -> bool {
    let wait = async {
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: try again shortly rather than spin.
                Err(_) => {
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut buf = vec![0u8; 256];
            let mut got = 0;
            let read = timeout(Duration::from_secs(1), async {
                while got < buf.len() {
                    match stream.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            });
            let _ = read.await;
            if String::from_utf8_lossy(&buf[..got]).trim() == token {
                return;
            }
        }
    };
    timeout(REACH_LIMIT, wait).await.is_ok()
}

/// Free bytes for unprivileged users on the filesystem holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &str) -> Option<u64> {
    let c = std::ffi::CString::new(dir).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_dir: &str) -> Option<u64> {
    None
}

/// The decision a stack's probe would make from the probed paths: its
/// bridge address where that answers, else a loopback-published port, else
/// exec.
fn stack_reach(report: &Report) -> Option<super::reach::Reach> {
    use super::reach::Reach as StackReach;
    report.probe_image.as_ref()?;
    let works = |path: Path| report.reach.iter().any(|r| r.path == path && r.works);
    Some(if works(Path::HostToBridge) {
        StackReach::Direct
    } else if works(Path::HostToPublished) {
        StackReach::Published
    } else {
        StackReach::Exec
    })
}

/// Where a stack's routing path would put its registry from the probed
/// paths: when this process reaches the stack over TCP, on this host at the
/// gateway when containers reach that, else where they reach it as
/// `host.docker.internal`; else in a container of the stack.
fn stack_registry(report: &Report) -> Option<super::reach::Registry> {
    use super::reach::{Reach as StackReach, Registry};
    let reach = report.stack_reach?;
    let works = |path: Path| report.reach.iter().any(|r| r.path == path && r.works);
    Some(if reach == StackReach::Exec {
        Registry::Stack
    } else if works(Path::ContainerToGateway) {
        Registry::Host
    } else if works(Path::ContainerToHostDockerInternal) {
        Registry::HostGateway
    } else {
        Registry::Stack
    })
}

/// Whether this devstack binary can run in a container of the engine (a
/// registry in the stack needs it): both Linux, one architecture.
fn binary_fits(report: &Report) -> bool {
    use super::registry::normal_arch;
    std::env::consts::OS == "linux"
        && report.os_type.as_deref() == Some("linux")
        && report.arch.as_deref().map(normal_arch) == Some(normal_arch(std::env::consts::ARCH))
}

/// A problem, and whether it stops devstack from working.
struct Problem {
    text: String,
    blocking: bool,
}

/// What will not work, from what was found.
fn problems(report: &Report) -> Vec<Problem> {
    let mut out = Vec::new();
    if report.probe_image.is_none() {
        let why = report
            .reach
            .first()
            .map(|r| r.detail.clone())
            .unwrap_or_default();
        out.push(Problem {
            text: format!("the reach paths could not be probed: {why}"),
            blocking: true,
        });
    } else {
        let published_works = report
            .reach
            .iter()
            .any(|r| r.path == Path::HostToPublished && r.works);
        let via_host_gateway = report.stack_registry == Some(super::reach::Registry::HostGateway);
        for r in &report.reach {
            if r.works {
                continue;
            }
            let text = match r.path {
                Path::HostToBridge if published_works => format!(
                    "devstack cannot reach containers at their bridge address ({}): it reaches them through ports published on 127.0.0.1 instead",
                    r.detail
                ),
                Path::HostToBridge if binary_fits(report) => format!(
                    "devstack cannot reach containers at their bridge address ({}), nor ports published on 127.0.0.1: health probes go through `docker exec`, and so do the proxy's control channel and the registry, which runs in the stack (a relay per connection, slower)",
                    r.detail
                ),
                Path::HostToBridge => format!(
                    "devstack cannot reach containers at their bridge address ({}), nor ports published on 127.0.0.1: health probes go through `docker exec`, and the registry would run in the stack, which needs this devstack binary ({}/{}) to run on the engine, so routing will not start",
                    r.detail,
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
                Path::ContainerToGateway if via_host_gateway => format!(
                    "containers cannot reach devstack on the bridge gateway ({}): the registry behind `etcd:2379` stays on this host, where their `host.docker.internal` leads",
                    r.detail
                ),
                Path::ContainerToGateway if binary_fits(report) => format!(
                    "containers cannot reach devstack on the bridge gateway ({}): the registry behind `etcd:2379` runs in a container of the stack instead",
                    r.detail
                ),
                Path::ContainerToGateway => format!(
                    "containers cannot reach devstack on the bridge gateway ({}), nor as host.docker.internal, and the registry cannot move into the stack (it runs this devstack binary, {}/{}, which needs a Linux engine of that architecture), so routing will not start",
                    r.detail,
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
                Path::HostToPublished => format!(
                    "devstack cannot reach a port published on 127.0.0.1 ({}): `ports:` on the host will not answer",
                    r.detail
                ),
                Path::ContainerToHostDockerInternal => format!(
                    "containers cannot reach host.docker.internal ({}); devstack needs it only where they cannot reach the bridge gateway",
                    r.detail
                ),
            };
            out.push(Problem {
                text,
                blocking: r.used_today
                    && !(r.path == Path::HostToBridge && (published_works || binary_fits(report)))
                    && !(r.path == Path::ContainerToGateway
                        && (via_host_gateway || binary_fits(report))),
            });
        }
    }
    if let Some(skew) = report.clock_skew_seconds {
        if skew.abs() > SKEW_LIMIT {
            out.push(Problem {
                text: format!("the engine's clock is {skew:+.0}s off this host's: `logs --since` and event times will be off by as much"),
                blocking: false,
            });
        }
    }
    if let Some(free) = report.free_disk_bytes {
        if free < DISK_LOW {
            out.push(Problem {
                text: format!(
                    "only {} free where the engine keeps its data: builds and pulls may fail",
                    human_bytes(free)
                ),
                blocking: false,
            });
        }
    }
    out
}

/// `1.5 GiB`, `300 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_images_prefer_small_known_ones() {
        assert_eq!(probe_rank("devstack-fixtures/busybox:latest"), 0);
        assert_eq!(probe_rank("python:3.11"), 1);
        assert_eq!(probe_rank("localhost:5000/debian:bookworm"), 2);
        assert_eq!(probe_rank("events/registration:git-a41c7e2"), 3);
    }

    /// A Linux engine's report where the paths in `failing` do not work,
    /// with its estimates made as `doctor` makes them.
    fn probed(os: &str, failing: &[Path]) -> Report {
        let mut report = Report {
            endpoint: "unix:///var/run/docker.sock".into(),
            endpoint_kind: "unix".into(),
            engine_version: None,
            api_version: None,
            api_negotiated: "1.41".into(),
            os_type: Some(os.into()),
            arch: Some(std::env::consts::ARCH.into()),
            operating_system: None,
            kernel: None,
            docker_desktop: false,
            rootless: false,
            storage_driver: None,
            cgroup_driver: None,
            cgroup_version: None,
            clock_skew_seconds: None,
            docker_root_dir: None,
            free_disk_bytes: None,
            probe_image: Some("busybox:latest".into()),
            reach: Path::ALL
                .iter()
                .map(|&path| reach(path, "addr".into(), !failing.contains(&path)))
                .collect(),
            stack_reach: None,
            stack_registry: None,
            problems: Vec::new(),
            ok: false,
        };
        report.stack_reach = stack_reach(&report);
        report.stack_registry = stack_registry(&report);
        let found = problems(&report);
        report.ok = found.iter().all(|p| !p.blocking);
        report
    }

    #[test]
    fn the_registry_is_estimated_at_the_gateway_then_host_docker_internal_then_the_stack() {
        use super::super::reach::Registry;
        let linux = "linux";
        assert_eq!(probed(linux, &[]).stack_registry, Some(Registry::Host));
        let gateway_only = probed(linux, &[Path::ContainerToGateway]);
        assert_eq!(gateway_only.stack_registry, Some(Registry::HostGateway));
        assert!(gateway_only.ok);
        let both = [
            Path::ContainerToGateway,
            Path::ContainerToHostDockerInternal,
        ];
        assert_eq!(probed(linux, &both).stack_registry, Some(Registry::Stack));
        // Reached only by exec: in the stack whatever containers reach.
        let exec = [
            Path::HostToBridge,
            Path::HostToPublished,
            Path::ContainerToGateway,
        ];
        assert_eq!(probed(linux, &exec).stack_registry, Some(Registry::Stack));
        // An engine this binary cannot run on: host.docker.internal keeps
        // routing possible; without it, nothing does.
        let other = probed("windows", &[Path::ContainerToGateway]);
        assert_eq!(other.stack_registry, Some(Registry::HostGateway));
        assert!(other.ok);
        assert!(!probed("windows", &both).ok);
    }

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
