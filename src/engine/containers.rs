//! Containers: list the project's (as [`Observed`]), create from a
//! [`ContainerSpec`], start, stop, remove, inspect.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, EndpointSettings,
    HostConfig, Mount, MountType, NetworkingConfig, PortBinding, RestartPolicy as DockerRestart,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use serde::Serialize;

use super::error::{is_conflict, is_not_found, message_of};
use super::{Engine, EngineError};
use crate::plan::names::{
    self as names, LABEL_HASH, LABEL_KIND, LABEL_PROJECT, LABEL_REPLICA, LABEL_SCHEMA,
    LABEL_SERVICE, LABEL_TASK,
};
use crate::plan::{ContainerSpec, MountSource, Observed, ObservedState, OldMount};
use crate::spec::{Protocol, RestartPolicy};

/// A published port as the engine bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
    pub host_port: u16,
}

impl Published {
    /// `127.0.0.1:49153`; an unspecified bind address shows as loopback, which
    /// is where a developer would connect.
    pub fn address(&self) -> String {
        let ip = match self.host_ip.as_str() {
            "" | "0.0.0.0" => "127.0.0.1",
            "::" => "[::1]",
            other => other,
        };
        format!("{ip}:{}", self.host_port)
    }
}

/// One container of a project as the engine's list shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub observed: Observed,
    /// Its address on the stack network.
    pub ip: Option<IpAddr>,
    pub published: Vec<Published>,
}

/// What `inspect` tells about a running (or stopped) container, reduced to
/// what devstack acts on.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub state: ObservedState,
    pub exit_code: Option<i64>,
    /// The engine's error for a container that failed to start.
    pub error: Option<String>,
    pub restart_count: i64,
    pub oom_killed: bool,
    /// The container's address on the stack network.
    pub ip: Option<IpAddr>,
    pub published: Vec<Published>,
    /// The image's own HEALTHCHECK status, when the image has one
    /// (`starting`, `healthy`, `unhealthy`).
    pub docker_health: Option<String>,
    /// The last output of the image's HEALTHCHECK.
    pub docker_health_output: Option<String>,
    /// The main process id on the host (0 when not running).
    pub pid: i64,
    pub labels: HashMap<String, String>,
    pub started_at: Option<String>,
    /// The id of the image it runs.
    pub image: Option<String>,
}

impl Engine {
    /// Every container (running or not) labelled with the project.
    pub async fn list_project(&self, project: &str) -> Result<Vec<Observed>, EngineError> {
        Ok(self
            .list_project_listed(project)
            .await?
            .into_iter()
            .map(|l| l.observed)
            .collect())
    }

    /// As [`Engine::list_project`], with what the same one engine request
    /// tells beyond it (published ports, the address on the stack network),
    /// so `ps` and a no-op `up` need no inspect per container.
    pub async fn list_project_listed(&self, project: &str) -> Result<Vec<Listed>, EngineError> {
        let network = names::network_name(project);
        let what = format!("listing the containers of `{project}`");
        let list = self
            .containers_labelled(vec![format!("{LABEL_PROJECT}={project}")], &what)
            .await?;
        for c in &list {
            let labels = c.labels.as_ref();
            let schema = labels.and_then(|l| l.get(LABEL_SCHEMA));
            match names::schema_of(schema) {
                Some(n) if n <= names::SCHEMA => {}
                _ => {
                    let name = c.names.as_ref().and_then(|n| n.first()).cloned();
                    return Err(EngineError::NewerSchema {
                        what: format!(
                            "the container `{}`",
                            name.unwrap_or_default().trim_start_matches('/')
                        ),
                        found: schema.cloned().unwrap_or_default(),
                        known: names::SCHEMA,
                    });
                }
            }
        }
        let mut out: Vec<Listed> = list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                // The filter already matched, but a label check here keeps the
                // ownership rule in one visible place.
                if labels.get(LABEL_PROJECT).map(String::as_str) != Some(project) {
                    return None;
                }
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let ip = c
                    .network_settings
                    .as_ref()
                    .and_then(|s| s.networks.as_ref())
                    .and_then(|n| n.get(&network))
                    .and_then(|e| e.ip_address.as_deref())
                    .and_then(|ip| ip.parse().ok());
                let mut published: Vec<Published> = c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| {
                        Some(Published {
                            container_port: p.private_port,
                            protocol: p
                                .typ
                                .map(|t| t.to_string())
                                .filter(|t| !t.is_empty())
                                .unwrap_or_else(|| "tcp".into()),
                            host_ip: p.ip.unwrap_or_default(),
                            host_port: p.public_port?,
                        })
                    })
                    .collect();
                published.sort_by(|a, b| {
                    (a.container_port, &a.host_ip).cmp(&(b.container_port, &b.host_ip))
                });
                published.dedup_by(|a, b| {
                    a.container_port == b.container_port && a.host_port == b.host_port
                });
                let observed = Observed {
                    id: c.id?,
                    name,
                    service: labels.get(LABEL_SERVICE).cloned(),
                    replica: labels.get(LABEL_REPLICA).and_then(|r| r.parse().ok()),
                    config_hash: labels.get(LABEL_HASH).cloned(),
                    task: labels.get(LABEL_TASK).cloned(),
                    kind: labels.get(LABEL_KIND).cloned(),
                    state: match c.state {
                        Some(ContainerSummaryStateEnum::RUNNING) => ObservedState::Running,
                        Some(ContainerSummaryStateEnum::RESTARTING) => ObservedState::Restarting,
                        Some(ContainerSummaryStateEnum::PAUSED) => ObservedState::Paused,
                        Some(ContainerSummaryStateEnum::CREATED) => ObservedState::Created,
                        Some(ContainerSummaryStateEnum::REMOVING) => ObservedState::Removing,
                        Some(ContainerSummaryStateEnum::DEAD) => ObservedState::Dead,
                        _ => ObservedState::Exited,
                    },
                    created: c.created.unwrap_or_default(),
                };
                Some(Listed {
                    observed,
                    ip,
                    published,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            let (a, b) = (&a.observed, &b.observed);
            (&a.service, a.replica, &a.name).cmp(&(&b.service, b.replica, &b.name))
        });
        // A fast-path container whose real build is done stands for it.
        if let Some(file) = self.adoption_file(project) {
            let records = super::adopted::read(&file);
            for o in &mut out {
                let o = &mut o.observed;
                if let Some(r) = records.get(&o.id).filter(|r| !r.pending) {
                    o.config_hash = Some(r.hash.clone());
                }
            }
        }
        Ok(out)
    }

    /// Creates the container (not started). A name already held by a container
    /// without the project's label is reported, never taken over.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let body = create_body(spec);
        let result = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    // The engine refuses an image of another platform
                    // rather than run it (or emulate it) unasked.
                    platform: spec.platform.clone().unwrap_or_default(),
                }),
                body,
            )
            .await;
        match result {
            Ok(created) => Ok(created.id),
            Err(e) if is_conflict(&e) => {
                let project = spec.labels.get(LABEL_PROJECT).cloned().unwrap_or_default();
                match self.docker.inspect_container(&spec.name, None).await {
                    Ok(found)
                        if found
                            .config
                            .as_ref()
                            .and_then(|c| c.labels.as_ref())
                            .and_then(|l| l.get(LABEL_PROJECT))
                            != Some(&project) =>
                    {
                        Err(EngineError::Foreign {
                            kind: "container",
                            name: spec.name.clone(),
                            project,
                        })
                    }
                    _ => Err(EngineError::api(format!("creating `{}`", spec.name), e)),
                }
            }
            Err(e) => Err(EngineError::api(format!("creating `{}`", spec.name), e)),
        }
    }

    /// Starts a container; a host port conflict names the service that asked for it.
    pub async fn start(&self, id: &str, service: &str) -> Result<(), EngineError> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => {
                let message = message_of(&e);
                if message.contains("port is already allocated")
                    || message.contains("address already in use")
                {
                    return Err(EngineError::PortTaken {
                        service: service.to_string(),
                        port: port_in_message(&message).unwrap_or_else(|| "?".into()),
                    });
                }
                Err(EngineError::Api {
                    what: format!("starting a container of `{service}`"),
                    message,
                })
            }
        }
    }

    /// SIGTERM (or the image's stop signal), then kill after `grace` (`None`:
    /// the container's own stop timeout, which devstack sets from the stack).
    /// A container that is already gone or stopped is not an error.
    pub async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<(), EngineError> {
        let t = grace.map(|g| i32::try_from(g.as_secs()).unwrap_or(i32::MAX));
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(EngineError::api(format!("stopping `{id}`"), e)),
        }
    }

    /// Kills at once (the second Ctrl-C).
    pub async fn kill(&self, id: &str) -> Result<(), EngineError> {
        match self.docker.kill_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(EngineError::api(format!("killing `{id}`"), e)),
        }
    }

    /// Removes a container (forcefully: callers stop it first when they care
    /// about a graceful end). Its anonymous volumes stay, as with Compose: a
    /// replacement mounts them again, and only `down --volumes` deletes data.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.remove_container(id, false).await
    }

    /// Removes a container and its anonymous volumes (`down --volumes`, and
    /// one-off containers, whose volumes are scratch of that one run, as
    /// with `docker run --rm`). Named volumes are never removed here.
    pub async fn remove_with_volumes(&self, id: &str) -> Result<(), EngineError> {
        self.remove_container(id, true).await
    }

    async fn remove_container(&self, id: &str, volumes: bool) -> Result<(), EngineError> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: volumes,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "removal already in progress": someone else is removing it; wait a little.
            Err(e) if is_conflict(&e) => {
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Err(e) = self.docker.inspect_container(id, None).await {
                        if is_not_found(&e) {
                            return Ok(());
                        }
                    }
                }
                Err(EngineError::api(format!("removing `{id}`"), e))
            }
            Err(e) => Err(EngineError::api(format!("removing `{id}`"), e)),
        }
    }

    /// Writes `bytes` into a container at the absolute `path` (missing
    /// directories are made), for the proxy's configuration. One tar, so the
    /// file appears whole: a request never reads half of it.
    pub async fn copy_into(
        &self,
        id: &str,
        path: &str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), EngineError> {
        self.upload(id, path, Upload::File { bytes, mode }).await
    }

    /// Writes a file or a symbolic link into a container at the absolute
    /// `path` (missing directories are made), one tar per upload (see
    /// [`pack_upload`]), for `watch` in `sync` mode.
    pub async fn upload(&self, id: &str, path: &str, what: Upload<'_>) -> Result<(), EngineError> {
        let packed = pack_upload(path, what).map_err(|e| EngineError::Api {
            what: format!("packing {path}"),
            message: e.to_string(),
        })?;
        self.extract(id, packed, || format!("writing {path} into `{id}`"))
            .await
    }

    /// Creates (does not start) an unnamed container of `image` with no
    /// label, to read files from; the caller removes it.
    pub async fn scratch_container(&self, image: &str) -> Result<String, EngineError> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["/nonexistent".into()]),
            ..Default::default()
        };
        self.docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map(|c| c.id)
            .map_err(|e| EngineError::api(format!("creating a container of `{image}`"), e))
    }

    /// Extracts `tar` at `/` of container `id` (created or running): the
    /// engine keeps each entry's owner, mode and time.
    pub async fn put_archive(&self, id: &str, tar: Vec<u8>) -> Result<(), EngineError> {
        self.extract(id, tar, || format!("writing files into `{id}`"))
            .await
    }

    /// Extracts `tar` at `/` of container `id`; `what` names it in an error.
    async fn extract(
        &self,
        id: &str,
        tar: Vec<u8>,
        what: impl FnOnce() -> String,
    ) -> Result<(), EngineError> {
        self.docker
            .upload_to_container(
                id,
                Some(bollard::query_parameters::UploadToContainerOptions {
                    path: "/".into(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(|e| EngineError::api(what(), e))
    }

    /// The engine's archive of one path in container `id`; `None` when
    /// the path is not there.
    pub async fn archive_of(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        use futures::TryStreamExt;
        match self
            .docker
            .download_from_container(
                id,
                Some(bollard::query_parameters::DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
        {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if super::error::is_not_found(&e) => Ok(None),
            Err(e) => Err(EngineError::api(format!("reading `{path}` from `{id}`"), e)),
        }
    }

    /// Gives a container another name (the engine updates its DNS name on
    /// the stack network too).
    pub async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        self.docker
            .rename_container(
                id,
                bollard::query_parameters::RenameContainerOptions { name: name.into() },
            )
            .await
            .map_err(|e| EngineError::api(format!("renaming `{id}` to `{name}`"), e))
    }

    /// Restarts with the given grace period.
    pub async fn restart(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        self.docker
            .restart_container(
                id,
                Some(bollard::query_parameters::RestartContainerOptions {
                    t: Some(t),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| EngineError::api(format!("restarting `{id}`"), e))
    }

    /// The state devstack acts on; `network` picks which address to report.
    pub async fn inspect(&self, id: &str, network: &str) -> Result<ContainerStatus, EngineError> {
        let c = self.docker.inspect_container(id, None).await.map_err(|e| {
            if is_not_found(&e) {
                EngineError::NotFound(format!("container `{id}` no longer exists"))
            } else {
                EngineError::api(format!("inspecting `{id}`"), e)
            }
        })?;
        Ok(status_of(c, id, network))
    }
}

/// What devstack acts on of an engine's inspection of container `id`;
/// `network` picks which address to report.
pub(crate) fn status_of(
    c: bollard::models::ContainerInspectResponse,
    id: &str,
    network: &str,
) -> ContainerStatus {
    {
        let state = c.state.unwrap_or_default();
        let settings = c.network_settings.unwrap_or_default();
        let ip = settings
            .networks
            .as_ref()
            .and_then(|n| n.get(network))
            .and_then(|e| e.ip_address.as_deref())
            .and_then(|ip| ip.parse().ok());
        let mut published = Vec::new();
        for (key, bindings) in settings.ports.unwrap_or_default() {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let Ok(container_port) = port.parse::<u16>() else {
                continue;
            };
            for b in bindings.unwrap_or_default() {
                if let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse().ok()) {
                    published.push(Published {
                        container_port,
                        protocol: proto.to_string(),
                        host_ip: b.host_ip.unwrap_or_default(),
                        host_port,
                    });
                }
            }
        }
        published
            .sort_by(|a, b| (a.container_port, &a.host_ip).cmp(&(b.container_port, &b.host_ip)));
        // Docker publishes on IPv4 and IPv6 alike; one address per port is enough to show.
        published
            .dedup_by(|a, b| a.container_port == b.container_port && a.host_port == b.host_port);
        let health = state.health.as_ref();
        ContainerStatus {
            id: c.id.unwrap_or_else(|| id.to_string()),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            state: match state.status {
                Some(ContainerStateStatusEnum::RUNNING) => ObservedState::Running,
                Some(ContainerStateStatusEnum::RESTARTING) => ObservedState::Restarting,
                Some(ContainerStateStatusEnum::PAUSED) => ObservedState::Paused,
                Some(ContainerStateStatusEnum::CREATED) => ObservedState::Created,
                Some(ContainerStateStatusEnum::REMOVING) => ObservedState::Removing,
                Some(ContainerStateStatusEnum::DEAD) => ObservedState::Dead,
                _ => ObservedState::Exited,
            },
            exit_code: state.exit_code,
            error: state.error.filter(|e| !e.is_empty()),
            restart_count: c.restart_count.unwrap_or_default(),
            oom_killed: state.oom_killed.unwrap_or_default(),
            ip,
            published,
            docker_health: health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            docker_health_output: health
                .and_then(|h| h.log.as_ref())
                .and_then(|log| log.last())
                .and_then(|l| l.output.clone()),
            pid: state.pid.unwrap_or_default(),
            labels: c.config.and_then(|c| c.labels).unwrap_or_default(),
            started_at: state.started_at,
            image: c.image,
        }
    }
}

impl Engine {
    /// The mounts of container `id`, as [`crate::plan::volumes`] judges them.
    pub async fn mounts_of(&self, id: &str) -> Result<Vec<OldMount>, EngineError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| EngineError::api(format!("inspecting `{id}`"), e))?;
        Ok(c.mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let volume = match m.typ.as_deref() {
                    Some("volume") => Some(m.name?),
                    _ => None,
                };
                Some(OldMount {
                    anonymous: volume.as_deref().is_some_and(is_anonymous_volume),
                    volume,
                    target: m.destination?,
                    read_only: !m.rw.unwrap_or(true),
                })
            })
            .collect())
    }

    /// The paths an image declares a `VOLUME` for.
    pub async fn image_volumes(&self, image: &str) -> Result<Vec<String>, EngineError> {
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| EngineError::api(format!("inspecting image `{image}`"), e))?;
        Ok(i.config.and_then(|c| c.volumes).unwrap_or_default())
    }

    /// Adds to `spec` (a replacement of container `old`) the anonymous
    /// volumes of `old` it must keep ([`crate::plan::carried_mounts`]), and
    /// returns `old`'s mounts. Call it before `old` is removed.
    pub async fn carry_volumes_from(
        &self,
        spec: &mut ContainerSpec,
        old: &str,
    ) -> Result<Vec<OldMount>, EngineError> {
        let mounts = self.mounts_of(old).await?;
        if mounts.iter().any(|m| m.anonymous) {
            let image_volumes = self.image_volumes(&spec.image).await?;
            let carried = crate::plan::carried_mounts(spec, &image_volumes, &mounts);
            spec.mounts.extend(carried);
        }
        Ok(mounts)
    }

    /// Whether an image carries its own HEALTHCHECK (used when the stack gives none).
    pub async fn image_has_healthcheck(&self, image: &str) -> bool {
        match self.docker.inspect_image(image).await {
            Ok(i) => i
                .config
                .and_then(|c| c.healthcheck)
                .and_then(|h| h.test)
                .map(|t| !t.is_empty() && t.first().map(String::as_str) != Some("NONE"))
                .unwrap_or(false),
            Err(_) => false,
        }
    }
}

/// The engine names a volume it makes for a container (from an image's
/// `VOLUME`, or a mount without a source) with 64 hex digits; devstack's own
/// volumes are always `<project>_<name>`.
fn is_anonymous_volume(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The address in the engine's complaint: "Bind for 127.0.0.1:8080 failed:
/// port is already allocated" (another container has it) or "listen tcp4
/// 127.0.0.1:8080: bind: address already in use" (another process has it).
fn port_in_message(message: &str) -> Option<String> {
    let after = message.split("Bind for ").nth(1).or_else(|| {
        [
            "listen tcp4 ",
            "listen tcp6 ",
            "listen tcp ",
            "listen udp4 ",
            "listen udp ",
        ]
        .iter()
        .find_map(|marker| message.split(marker).nth(1))
    })?;
    let addr = after.split_whitespace().next()?;
    Some(addr.trim_end_matches(':').to_string())
}

/// A UTC (or offset) RFC 3339 time, to whole seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    } else {
        (time, 0)
    };
    let mut c = clock.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let min: i64 = c.next()?.parse().ok()?;
    let sec: f64 = c.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + min * 60 + sec as i64 - offset)
}

/// The engine's create body for a spec; no decisions, only translation.
pub(crate) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!(
            "{}/{}",
            p.container_port,
            match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            }
        );
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.to_string()),
                // An empty host port lets the engine choose one.
                host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
            });
    }
    if let Some(port) = spec.port {
        let key = format!("{port}/tcp");
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    }
    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(match &m.source {
                MountSource::Volume(v) => v.clone(),
                MountSource::Bind(p) => p.display().to_string(),
            }),
            typ: Some(match m.source {
                MountSource::Volume(_) => MountType::VOLUME,
                MountSource::Bind(_) => MountType::BIND,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let restart = DockerRestart {
        name: Some(match spec.restart {
            RestartPolicy::No => RestartPolicyNameEnum::NO,
            RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
            RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        }),
        maximum_retry_count: None,
    };
    let mut storage_opt = None;
    if let Some(disk) = spec.resources.disk {
        // Only some storage drivers (overlay2 on xfs with pquota, btrfs, zfs)
        // honour this; on others the create call fails, and says so.
        storage_opt = Some(HashMap::from([("size".to_string(), disk.to_string())]));
    }
    let host_config = HostConfig {
        port_bindings: if bindings.is_empty() {
            None
        } else {
            Some(bindings)
        },
        mounts: if mounts.is_empty() {
            None
        } else {
            Some(mounts)
        },
        restart_policy: Some(restart),
        memory: spec.resources.memory.and_then(|m| i64::try_from(m).ok()),
        nano_cpus: spec.resources.cpus.map(|c| (c * 1e9) as i64),
        pids_limit: spec.resources.pids,
        storage_opt,
        network_mode: Some(spec.network.clone()),
        init: spec.init.then_some(true),
        ..Default::default()
    };
    let endpoint = EndpointSettings {
        aliases: Some(spec.aliases.clone()),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.clone()),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: if exposed.is_empty() {
            None
        } else {
            Some(exposed)
        },
        stop_timeout: Some(i64::try_from(spec.stop_grace.as_secs()).unwrap_or(i64::MAX)),
        hostname: Some(spec.name.clone()).filter(|n| n.len() <= 63),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])),
        }),
        ..Default::default()
    }
}

/// What [`Engine::upload`] writes at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload<'a> {
    /// A regular file with these permission bits (setuid, setgid and sticky
    /// are dropped: a synced file never gains privileges in the container).
    File { bytes: &'a [u8], mode: u32 },
    /// A symbolic link to `target`, written as a link (the engine makes it
    /// as `ln -s` would), never as the content it points at.
    Link { target: &'a std::path::Path },
}

/// The tar [`Engine::upload`] sends: one entry at `path` (absolute in the
/// container), stamped now.
pub fn pack_upload(path: &str, what: Upload<'_>) -> std::io::Result<Vec<u8>> {
    let relative = path.trim_start_matches('/');
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    );
    match what {
        Upload::File { bytes, mode } => {
            header.set_size(bytes.len() as u64);
            header.set_mode(mode & 0o777);
            header.set_cksum();
            tar.append_data(&mut header, relative, bytes)?;
        }
        Upload::Link { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            tar.append_link(&mut header, relative, target)?;
        }
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::port_in_message;

    #[test]
    fn both_kinds_of_port_conflict_name_the_address() {
        assert_eq!(
            port_in_message("driver failed programming external connectivity on endpoint x (y): Bind for 127.0.0.1:8080 failed: port is already allocated").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            port_in_message("driver failed programming external connectivity on endpoint x (y): Error starting userland proxy: listen tcp4 127.0.0.1:18080: bind: address already in use").as_deref(),
            Some("127.0.0.1:18080")
        );
    }
}
