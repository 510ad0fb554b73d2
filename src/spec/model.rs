//! The validated stack: the typed desired state every later stage reads.
//!
//! Values here have passed validation: names exist, references resolve,
//! paths are absolute, durations and sizes are parsed. Nothing downstream
//! re-checks them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;

/// One stack: the services, datastores and tasks of one file (plus overlays).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stack {
    /// The stack's name from the file; the project name defaults to it.
    pub name: String,
    /// The directory of the first stack file: relative paths resolve against it.
    #[serde(skip)]
    pub dir: PathBuf,
    /// Stateless services, in file order.
    pub services: IndexMap<String, Service>,
    /// Datastores, in file order. Their names share one namespace with services.
    pub datastores: IndexMap<String, Datastore>,
    /// One-off containers (migrations, seeders).
    pub tasks: IndexMap<String, Task>,
    pub discovery: Discovery,
    pub proxy: Proxy,
}

/// Whether a unit is a stateless service or a datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Service,
    Datastore,
}

/// What replaces a secret's value wherever devstack shows it: `devstack
/// config`, and every artifact of `devstack test`.
pub const SECRET_MASK: &str = "********";

impl Stack {
    /// The task marked as the stack's test suite (`test: true`), if any.
    pub fn test_task(&self) -> Option<&str> {
        self.tasks
            .iter()
            .find(|(_, t)| t.test)
            .map(|(n, _)| n.as_str())
    }

    /// Env-file values are where teams keep credentials: each becomes
    /// [`SECRET_MASK`] (`devstack config` unless `--show-secrets`).
    pub fn mask_secrets(&mut self) {
        let containers = self
            .services
            .values_mut()
            .map(|s| &mut s.container)
            .chain(self.datastores.values_mut().map(|d| &mut d.container));
        for container in containers {
            for key in &container.secret_env {
                if let Some(value) = container.env.get_mut(key) {
                    *value = SECRET_MASK.to_string();
                }
            }
        }
    }

    /// The values [`Stack::mask_secrets`] hides, each once, longest first
    /// (so a secret that contains another is masked whole).
    pub fn secret_values(&self) -> Vec<&str> {
        let mut values: Vec<&str> = self
            .units()
            .flat_map(|(_, _, c)| {
                c.secret_env
                    .iter()
                    .filter_map(|k| c.env.get(k).map(String::as_str))
            })
            .filter(|v| !v.is_empty())
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        values
    }

    /// Every long-running unit (services, then datastores) with its container settings.
    pub fn units(&self) -> impl Iterator<Item = (&str, UnitKind, &Container)> {
        self.services
            .iter()
            .map(|(n, s)| (n.as_str(), UnitKind::Service, &s.container))
            .chain(
                self.datastores
                    .iter()
                    .map(|(n, d)| (n.as_str(), UnitKind::Datastore, &d.container)),
            )
    }

    /// The container settings of a service or datastore by name.
    pub fn unit(&self, name: &str) -> Option<&Container> {
        self.services
            .get(name)
            .map(|s| &s.container)
            .or_else(|| self.datastores.get(name).map(|d| &d.container))
    }
}

/// What services and datastores have in common: how to run one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    /// The image reference exactly as written (never rewritten to `latest`).
    /// With `build`, the tag given to the built image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// The platform the image is pulled or built for and the container runs
    /// as (`linux/amd64`, `linux/arm64/v8`): production's, on a laptop of
    /// another architecture. None: the engine's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Replaces the image's CMD. A string in the file is split like a shell would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's ENTRYPOINT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The effective environment: env files first, then `env` on top.
    pub env: BTreeMap<String, String>,
    /// Names in `env` whose value came from an env file (masked by `config`).
    #[serde(skip)]
    pub secret_env: Vec<String>,
    /// The port the process listens on inside the container: routes and an
    /// `http` health check default to it. Not published on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub ports: Vec<Port>,
    pub replicas: u32,
    /// Units that must be healthy before this one starts.
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    pub resources: Resources,
    pub volumes: Vec<Volume>,
    pub labels: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    /// Time between SIGTERM and kill when stopping.
    #[serde(with = "duration_text")]
    pub stop_grace: Duration,
    /// Runs Docker's init process as PID 1 (HostConfig.Init): it passes
    /// signals on and reaps zombies, so a process without a SIGTERM handler
    /// still stops at once instead of at the end of `stop_grace`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    /// Absolute path of the build context.
    pub context: PathBuf,
    /// Dockerfile path relative to the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Host address to bind; 127.0.0.1 unless the stack says otherwise.
    pub host_ip: IpAddr,
    /// Host port; `None` lets the engine choose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Probe {
    /// HTTP GET on the container's port; 2xx and 3xx are healthy.
    Http { port: u16, path: String },
    /// A TCP connect to the container's port.
    Tcp { port: u16 },
    /// A command run inside the container; exit 0 is healthy.
    Command { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub probe: Probe,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive failures (after the start period) that make a container unhealthy.
    pub retries: u32,
    /// Failures during this time after start do not count.
    #[serde(with = "duration_text")]
    pub start_period: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// CPU limit in cores (fractions allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Writable-layer size limit in bytes, where the storage driver allows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "source")]
pub enum VolumeSource {
    /// A named volume of the stack (created per project).
    Named(String),
    /// A host path, absolute.
    Bind(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub source: VolumeSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    OnFailure,
    UnlessStopped,
    Always,
}

/// A route the proxy sends to a service: by host, by path prefix, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix, starting with `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Remove the path prefix before forwarding.
    pub strip_prefix: bool,
    /// The container port that receives the traffic.
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchAction {
    /// Build the image again and swap containers.
    Rebuild,
    /// Copy changed files into the running containers.
    Sync,
    /// Restart the containers only.
    Restart,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Watch {
    /// Absolute paths to watch (default: the build context).
    pub paths: Vec<PathBuf>,
    /// Glob patterns, relative to the watched path, that never trigger.
    pub ignore: Vec<String>,
    pub action: WatchAction,
    /// For `sync`: where the watched path lands in the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Glob patterns that force a rebuild even in `sync` mode.
    pub rebuild_on: Vec<String>,
    /// For `sync`: a command run in the container after files are copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    #[serde(flatten)]
    pub container: Container,
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<Watch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatastoreKind {
    Postgres,
    Mariadb,
    Mysql,
    Redis,
    Mongodb,
    Elasticsearch,
    Kafka,
    Etcd,
    Memcached,
    Generic,
}

impl DatastoreKind {
    pub const ALL: &'static [(&'static str, DatastoreKind)] = &[
        ("postgres", DatastoreKind::Postgres),
        ("mariadb", DatastoreKind::Mariadb),
        ("mysql", DatastoreKind::Mysql),
        ("redis", DatastoreKind::Redis),
        ("mongodb", DatastoreKind::Mongodb),
        ("elasticsearch", DatastoreKind::Elasticsearch),
        ("kafka", DatastoreKind::Kafka),
        ("etcd", DatastoreKind::Etcd),
        ("memcached", DatastoreKind::Memcached),
        ("generic", DatastoreKind::Generic),
    ];

    /// Where the kind keeps its data, used when the stack names a data volume without a target.
    pub fn data_dir(self) -> Option<&'static str> {
        match self {
            DatastoreKind::Postgres => Some("/var/lib/postgresql/data"),
            DatastoreKind::Mariadb | DatastoreKind::Mysql => Some("/var/lib/mysql"),
            DatastoreKind::Redis => Some("/data"),
            DatastoreKind::Mongodb => Some("/data/db"),
            DatastoreKind::Elasticsearch => Some("/usr/share/elasticsearch/data"),
            DatastoreKind::Kafka => Some("/var/lib/kafka/data"),
            DatastoreKind::Etcd => Some("/etcd-data"),
            DatastoreKind::Memcached | DatastoreKind::Generic => None,
        }
    }

    /// The kind's name as a stack writes it.
    pub fn name(self) -> &'static str {
        DatastoreKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("generic")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Datastore {
    #[serde(flatten)]
    pub container: Container,
    pub kind: DatastoreKind,
    /// The named volume holding the data (also listed in `container.volumes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<String>,
    /// Absolute path of seed data (a directory or a dump file) loaded into a fresh volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// The service whose image and environment the task uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The image when the task has no service (or overrides the service's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment on top of the service's.
    pub env: BTreeMap<String, String>,
    /// Services that may start only after this task ran and succeeded.
    pub before: Vec<String>,
    /// The stack's test suite: what `devstack test` runs, with no command
    /// given, on the stack's network once every unit is healthy and routed.
    /// `up` never runs it. At most one task is marked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum Etcd {
    /// The etcd v3 server inside the devstack process.
    Embedded,
    /// A real cluster.
    External { endpoints: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discovery {
    pub etcd: Etcd,
    /// Key prefix of the registry, starting with `/`, as the stack gives it.
    /// None: devstack's own, per project (`router::layout::Layout` says
    /// which); given, it is the production layout, shared by every copy of
    /// the stack that uses the same etcd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Lease TTL of each registration.
    #[serde(with = "duration_text")]
    pub ttl: Duration,
    /// Template of a registration's key (None: `<prefix>/<service>/<container-id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Template of a registration's value (None: JSON with address, port, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// HAProxy: servers moved through its runtime API, other changes a
    /// checked, hitless reload through its master CLI.
    Haproxy,
    /// nginx (open source): no runtime API, so every change is a checked
    /// `nginx -s reload`, rolled back when nginx does not take it.
    Nginx,
}

impl ProxyKind {
    /// The name as the stack file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::Nginx => "nginx",
        }
    }

    /// The proxy's product name, for messages.
    pub fn product(self) -> &'static str {
        match self {
            ProxyKind::Haproxy => "HAProxy",
            ProxyKind::Nginx => "nginx",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proxy {
    pub kind: ProxyKind,
    /// The proxy image; None means devstack's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The platform of the proxy image (as a unit's `platform`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Host address and port where every route is served.
    pub listen: std::net::SocketAddr,
    /// Whether the stack files set `listen` (else it is the default): a
    /// copy under another project name gets a free port only when not.
    #[serde(skip)]
    pub listen_given: bool,
    /// Absolute path of a user template replacing the built-in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<PathBuf>,
    /// Absolute path of a confd configuration directory (`conf.d/*.toml`
    /// and `templates/*.tmpl`) rendering the proxy's configuration instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confd: Option<PathBuf>,
}

/// Durations are written back the way a user writes them (`2s`, `1m30s`, `250ms`).
pub mod duration_text {
    use std::time::Duration;

    pub fn format(d: Duration) -> String {
        crate::spec::units::format_duration(d)
    }

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }
}
