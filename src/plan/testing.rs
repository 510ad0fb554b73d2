//! Small builders for stacks in unit tests, so each test shows only what matters to it.

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;

use crate::spec::*;

pub struct UnitBuilder(Container);

/// A unit running `image` with every other setting at its default.
pub fn unit(image: &str) -> UnitBuilder {
    UnitBuilder(Container {
        image: Some(image.into()),
        build: None,
        platform: None,
        command: None,
        entrypoint: None,
        env: BTreeMap::new(),
        secret_env: Vec::new(),
        port: None,
        ports: Vec::new(),
        replicas: 1,
        depends_on: Vec::new(),
        health: None,
        resources: Resources::default(),
        volumes: Vec::new(),
        labels: BTreeMap::new(),
        restart: RestartPolicy::No,
        stop_grace: Duration::from_secs(10),
        init: false,
    })
}

impl UnitBuilder {
    pub fn deps(mut self, deps: &[&str]) -> Self {
        self.0.depends_on = deps.iter().map(|d| d.to_string()).collect();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.0.env.insert(k.into(), v.into());
        self
    }
    pub fn platform(mut self, platform: &str) -> Self {
        self.0.platform = Some(platform.into());
        self
    }
    pub fn replicas(mut self, n: u32) -> Self {
        self.0.replicas = n;
        self
    }
    /// Publishes container port 80 on host port `host`.
    pub fn host_port(mut self, host: u16) -> Self {
        self.0.ports.push(Port {
            host_ip: "127.0.0.1".parse().expect("a literal address"),
            host_port: Some(host),
            container_port: 80,
            protocol: Protocol::Tcp,
        });
        self
    }
    /// Built from a context (the image name is the built image's tag).
    pub fn built(mut self) -> Self {
        self.0.image = None;
        self.0.build = Some(Build {
            context: std::path::PathBuf::from("/src"),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
            target: None,
        });
        self
    }
    pub fn health(mut self, health: Health) -> Self {
        self.0.health = Some(health);
        self
    }
    pub fn build(self) -> Container {
        self.0
    }
}

impl Stack {
    /// Adds a datastore of `kind` (with its default data volume).
    pub fn with_datastore(mut self, name: &str, kind: DatastoreKind, unit: UnitBuilder) -> Stack {
        self.datastores.insert(
            name.to_string(),
            Datastore {
                container: unit.build(),
                kind,
                data_volume: None,
                seed: None,
            },
        );
        self
    }

    /// Adds a task running in `service`'s image, which must succeed before `before` start.
    pub fn with_task(mut self, name: &str, service: &str, before: &[&str]) -> Stack {
        self.tasks.insert(
            name.to_string(),
            Task {
                service: Some(service.to_string()),
                image: None,
                command: Some(vec!["migrate".into()]),
                env: BTreeMap::new(),
                before: before.iter().map(|b| b.to_string()).collect(),
                test: false,
            },
        );
        self
    }
}

pub fn http_health(port: u16) -> Health {
    Health {
        probe: Probe::Http {
            port,
            path: "/health".into(),
        },
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        retries: 3,
        start_period: Duration::ZERO,
    }
}

/// A stack of services (no datastores, no tasks).
pub fn stack_of(units: Vec<(&str, UnitBuilder)>) -> Stack {
    let mut services = IndexMap::new();
    for (name, u) in units {
        services.insert(
            name.to_string(),
            Service {
                container: u.build(),
                routes: Vec::new(),
                watch: None,
            },
        );
    }
    Stack {
        name: "shop".into(),
        dir: std::path::PathBuf::from("/"),
        services,
        datastores: IndexMap::new(),
        tasks: IndexMap::new(),
        discovery: Discovery {
            etcd: Etcd::Embedded,
            prefix: None,
            ttl: Duration::from_secs(300),
            key: None,
            value: None,
        },
        proxy: Proxy {
            kind: ProxyKind::Haproxy,
            image: None,
            platform: None,
            listen: "127.0.0.1:8080".parse().expect("a literal address"),
            listen_given: false,
            template: None,
            confd: None,
        },
    }
}
