//! [`ContainerSpec`]: everything one container of a unit should be, decided
//! from the stack alone, plus the hash that tells a later `up` whether an
//! existing container still matches.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::names;
use crate::spec::{
    Container, Health, Port, Probe, Protocol, Resources, RestartPolicy, Stack, UnitKind,
    VolumeSource,
};

/// Where a mount comes from, with names already made per project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "source")]
pub enum MountSource {
    /// A named volume, `<project>_<name>`.
    Volume(String),
    /// A host path.
    Bind(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

/// One container as it should be. The engine turns this into a create call
/// without making any decision of its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    /// The unit (service or datastore) this container runs.
    pub service: String,
    pub replica: u32,
    pub kind: UnitKind,
    /// The image reference to run.
    pub image: String,
    /// The image id it resolved to; part of the hash so a rebuilt image recreates.
    pub image_id: String,
    /// The platform the container runs as (`linux/amd64`); None: the engine's.
    pub platform: Option<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE`, sorted by key.
    pub env: Vec<String>,
    pub ports: Vec<Port>,
    pub mounts: Vec<MountSpec>,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub stop_grace: Duration,
    /// Docker's init process as PID 1.
    pub init: bool,
    /// The stack's network.
    pub network: String,
    /// Names other containers reach this one by on the stack network.
    pub aliases: Vec<String>,
    /// The user's labels plus devstack's own (project, service, replica, hash).
    pub labels: BTreeMap<String, String>,
    /// How devstack decides the container is ready; not part of the container.
    pub health: Option<Health>,
    /// The port the process listens on inside the container.
    pub port: Option<u16>,
    /// The hash of everything above that shapes the container (not the name,
    /// replica or health check), so replicas share it and a changed health
    /// check never recreates anything.
    pub config_hash: String,
}

/// The part of a container's configuration that, when changed, needs a new container.
#[derive(Serialize)]
struct HashInput<'a> {
    image_id: &'a str,
    /// Left out when unset, so containers made before `platform` existed
    /// keep their hash. The image id alone would not tell: an image that is
    /// already present under another platform keeps its id until pulled.
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: &'a Option<String>,
    command: &'a Option<Vec<String>>,
    entrypoint: &'a Option<Vec<String>>,
    env: &'a [String],
    ports: &'a [Port],
    mounts: &'a [MountSpec],
    resources: &'a Resources,
    restart: RestartPolicy,
    stop_grace: Duration,
    /// Left out when false, so containers made before `init` existed keep their hash.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    init: bool,
    network: &'a str,
    user_labels: &'a BTreeMap<String, String>,
}

/// The first 20 hex digits of a SHA-256: short enough to read in `docker
/// inspect`, long enough that two configurations never share one.
fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// The containers of one unit, replicas `1..=replicas`, for an image id that
/// has already been built, pulled or found.
pub fn desired_containers(
    project: &str,
    service: &str,
    kind: UnitKind,
    unit: &Container,
    image: &str,
    image_id: &str,
    replicas: u32,
) -> Vec<ContainerSpec> {
    let env: Vec<String> = unit.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<MountSpec> = unit
        .volumes
        .iter()
        .map(|v| MountSpec {
            source: match &v.source {
                VolumeSource::Named(n) => MountSource::Volume(names::volume_name(project, n)),
                VolumeSource::Bind(p) => MountSource::Bind(p.clone()),
            },
            target: v.target.clone(),
            read_only: v.read_only,
        })
        .collect();
    let network = names::network_name(project);
    let input = HashInput {
        image_id,
        platform: &unit.platform,
        command: &unit.command,
        entrypoint: &unit.entrypoint,
        env: &env,
        ports: &unit.ports,
        mounts: &mounts,
        resources: &unit.resources,
        restart: unit.restart,
        stop_grace: unit.stop_grace,
        init: unit.init,
        network: &network,
        user_labels: &unit.labels,
    };
    // Serialising these plain structs cannot fail; an empty input would still
    // give a stable (if useless) hash rather than a panic.
    let config_hash = short_hash(&serde_json::to_vec(&input).unwrap_or_default());

    (1..=replicas)
        .map(|replica| {
            let name = names::container_name(project, service, replica);
            let mut labels = unit.labels.clone();
            labels.extend(names::owner_labels(project));
            labels.insert(names::LABEL_SERVICE.into(), service.into());
            labels.insert(names::LABEL_REPLICA.into(), replica.to_string());
            labels.insert(names::LABEL_HASH.into(), config_hash.clone());
            labels.insert(
                names::LABEL_KIND.into(),
                match kind {
                    UnitKind::Service => "service".into(),
                    UnitKind::Datastore => "datastore".into(),
                },
            );
            ContainerSpec {
                aliases: vec![service.to_string(), name.clone()],
                name,
                service: service.into(),
                replica,
                kind,
                image: image.into(),
                image_id: image_id.into(),
                platform: unit.platform.clone(),
                command: unit.command.clone(),
                entrypoint: unit.entrypoint.clone(),
                env: env.clone(),
                ports: unit.ports.clone(),
                mounts: mounts.clone(),
                resources: unit.resources.clone(),
                restart: unit.restart,
                stop_grace: unit.stop_grace,
                init: unit.init,
                network: network.clone(),
                labels,
                health: unit.health.clone(),
                port: unit.port,
                config_hash: config_hash.clone(),
            }
        })
        .collect()
}

/// The one-off container of a task: the service's image, environment and
/// volumes (when it names one) with the task's command and env on top, on the
/// stack network, with no published ports and no restart.
/// `None` when the task names neither an image nor a known service.
pub fn task_container(
    stack: &Stack,
    project: &str,
    task_name: &str,
    image: &str,
    command_override: Option<Vec<String>>,
    suffix: &str,
) -> Option<ContainerSpec> {
    let task = stack.tasks.get(task_name)?;
    // A task on a datastore mounts its data volume, the default one included.
    let base = task
        .service
        .as_deref()
        .and_then(|s| super::volumes::effective_unit(stack, s));
    let base = base.as_deref();
    let mut env: BTreeMap<String, String> = base.map(|b| b.env.clone()).unwrap_or_default();
    env.extend(task.env.clone());
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts = base
        .map(|b| {
            b.volumes
                .iter()
                .map(|v| MountSpec {
                    source: match &v.source {
                        VolumeSource::Named(n) => {
                            MountSource::Volume(names::volume_name(project, n))
                        }
                        VolumeSource::Bind(p) => MountSource::Bind(p.clone()),
                    },
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = names::owner_labels(project).into();
    labels.insert(names::LABEL_TASK.to_string(), task_name.to_string());
    let command = command_override
        .filter(|c| !c.is_empty())
        .or_else(|| task.command.clone())
        .or_else(|| base.and_then(|b| b.command.clone()));
    Some(ContainerSpec {
        name: names::task_container_name(project, task_name, suffix),
        service: task_name.to_string(),
        replica: 1,
        kind: UnitKind::Service,
        image: image.to_string(),
        image_id: String::new(),
        // The service's platform goes with the service's image, not with an
        // image of the task's own.
        platform: base
            .filter(|_| task.image.is_none())
            .and_then(|b| b.platform.clone()),
        command,
        entrypoint: base.and_then(|b| b.entrypoint.clone()),
        env,
        ports: Vec::new(),
        mounts,
        resources: base.map(|b| b.resources.clone()).unwrap_or_default(),
        restart: RestartPolicy::No,
        stop_grace: base
            .map(|b| b.stop_grace)
            .unwrap_or(Duration::from_secs(10)),
        init: base.is_some_and(|b| b.init),
        network: names::network_name(project),
        aliases: Vec::new(),
        labels,
        health: None,
        port: None,
        config_hash: String::new(),
    })
}

/// The unit as it runs where devstack reaches containers only through ports
/// published on the engine's loopback (`engine::reach::Reach::Published`):
/// its `http`/`tcp` probe port published on 127.0.0.1 on a port the engine
/// picks, unless the stack publishes it on loopback (or every address)
/// already. Only then: the extra port is part of the config hash, so a stack
/// reached directly keeps its hash, and a change of decision recreates the
/// containers that need the publication.
pub fn probe_published(unit: &Container) -> Container {
    let port = match unit.health.as_ref().map(|h| &h.probe) {
        Some(Probe::Http { port, .. }) | Some(Probe::Tcp { port }) => *port,
        _ => return unit.clone(),
    };
    let covered = unit.ports.iter().any(|p| {
        p.container_port == port
            && p.protocol == Protocol::Tcp
            && (p.host_ip.is_loopback() || p.host_ip.is_unspecified())
    });
    let mut unit = unit.clone();
    if !covered {
        unit.ports.push(Port {
            host_ip: IpAddr::from([127, 0, 0, 1]),
            host_port: None,
            container_port: port,
            protocol: Protocol::Tcp,
        });
    }
    unit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::unit;

    fn specs(c: &Container, image_id: &str, n: u32) -> Vec<ContainerSpec> {
        desired_containers("shop", "web", UnitKind::Service, c, "app:1", image_id, n)
    }

    #[test]
    fn a_probe_port_is_published_on_loopback_only_when_asked_and_then_in_the_hash() {
        use crate::plan::testing::http_health;
        let base = unit("app:1").health(http_health(8080)).build();
        let published = probe_published(&base);
        let extra: Vec<&Port> = published
            .ports
            .iter()
            .filter(|p| p.container_port == 8080)
            .collect();
        assert_eq!(extra.len(), 1, "{:?}", published.ports);
        assert_eq!(extra[0].host_ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(extra[0].host_port, None, "the engine picks the host port");
        let h = |c: &Container| specs(c, "sha256:1", 1)[0].config_hash.clone();
        assert_ne!(h(&base), h(&published), "the publication recreates");
        assert_eq!(probe_published(&published), published, "once is enough");
        // No port probe, nothing to publish.
        let plain = unit("app:1").build();
        assert_eq!(probe_published(&plain), plain);
    }

    #[test]
    fn replicas_share_a_hash_and_get_their_own_names() {
        let s = specs(&unit("app:1").build(), "sha256:1", 2);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "shop-web-1");
        assert_eq!(s[1].name, "shop-web-2");
        assert_eq!(s[0].config_hash, s[1].config_hash);
        assert_eq!(s[1].labels[names::LABEL_REPLICA], "2");
        assert_eq!(s[0].labels[names::LABEL_PROJECT], "shop");
        assert_eq!(s[0].aliases, vec!["web", "shop-web-1"]);
    }

    #[test]
    fn the_hash_follows_config_and_image_but_not_health_or_replicas() {
        let base = unit("app:1").build();
        let h = |c: &Container, id: &str, n: u32| specs(c, id, n)[0].config_hash.clone();
        let original = h(&base, "sha256:1", 1);
        assert_eq!(original, h(&base, "sha256:1", 3), "scaling keeps the hash");
        assert_ne!(original, h(&base, "sha256:2", 1), "a new image changes it");
        let with_env = unit("app:1").env("A", "1").build();
        assert_ne!(original, h(&with_env, "sha256:1", 1), "env changes it");
        let mut with_init = base.clone();
        with_init.init = true;
        assert_ne!(original, h(&with_init, "sha256:1", 1), "init changes it");
        let amd64 = unit("app:1").platform("linux/amd64").build();
        let arm64 = unit("app:1").platform("linux/arm64").build();
        assert_ne!(original, h(&amd64, "sha256:1", 1), "a platform changes it");
        assert_ne!(
            h(&amd64, "sha256:1", 1),
            h(&arm64, "sha256:1", 1),
            "another platform changes it, even with the same image id"
        );
        assert_eq!(
            specs(&arm64, "sha256:1", 1)[0].platform.as_deref(),
            Some("linux/arm64")
        );
        let mut with_health = base.clone();
        with_health.health = Some(crate::plan::testing::http_health(8080));
        assert_eq!(
            original,
            h(&with_health, "sha256:1", 1),
            "a health check does not"
        );
    }

    #[test]
    fn named_volumes_are_per_project() {
        let mut c = unit("pg").build();
        c.volumes.push(crate::spec::Volume {
            source: VolumeSource::Named("pgdata".into()),
            target: "/var/lib/postgresql/data".into(),
            read_only: false,
        });
        let s = specs(&c, "sha256:1", 1);
        assert_eq!(
            s[0].mounts[0].source,
            MountSource::Volume("shop_pgdata".into())
        );
    }
}
