//! What every routing test needs: a unique project from an inline stack that
//! removes its containers, network and processes when dropped, the stack
//! brought up through the engine, HTTP through the proxy, and a real etcd.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use devstack::controller::routing::{Routing, RoutingOptions};
use devstack::engine::apply::{self, UpRequest};
use devstack::engine::progress::Reporter;
use devstack::engine::runtime::ProxyRuntime;
use devstack::engine::{ContainerEngine, Engine};
use devstack::spec::{load, LoadOptions, ProxyKind, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Runs `docker ARGS`; stdout, trimmed.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The replica of the official image a proxy kind runs on in the tests
/// (`DEVSTACK_FIXTURES_PREFIX` picks another set, as the example overlays do).
pub fn proxy_image(kind: ProxyKind) -> String {
    let prefix =
        std::env::var("DEVSTACK_FIXTURES_PREFIX").unwrap_or_else(|_| "devstack-fixtures".into());
    match kind {
        ProxyKind::Haproxy => format!("{prefix}/haproxy:2.6"),
        ProxyKind::Nginx => format!("{prefix}/nginx:1.22"),
    }
}

/// The engine answers and the fixture images are here (built by `just fixtures`).
pub fn ready() {
    for image in [
        "devstack-fixtures/app".to_string(),
        proxy_image(ProxyKind::Haproxy),
        proxy_image(ProxyKind::Nginx),
    ] {
        let image = image.as_str();
        assert!(
            !docker(&["images", "-q", image]).is_empty(),
            "the fixture image {image} is missing: run `just fixtures` (no registry can be reached here)"
        );
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One copy of an inline stack under a unique project name.
pub struct Project {
    pub name: String,
    pub stack: Stack,
    pub listen: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Project {
    /// `services` is the YAML of the `services:` block (indented by 2);
    /// `extra` goes at the top level (discovery, proxy.template...).
    pub fn new(tag: &str, services: &str, proxy_extra: &str) -> Project {
        Project::with_files(tag, services, proxy_extra, &[])
    }

    /// Like [`Project::new`], with files written next to the stack file first.
    pub fn with_files(
        tag: &str,
        services: &str,
        proxy_extra: &str,
        files: &[(&str, &str)],
    ) -> Project {
        Project::on(ProxyKind::Haproxy, tag, services, proxy_extra, files)
    }

    /// Like [`Project::with_files`], with a proxy of `kind`.
    pub fn on(
        kind: ProxyKind,
        tag: &str,
        services: &str,
        proxy_extra: &str,
        files: &[(&str, &str)],
    ) -> Project {
        ready();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("rt{}{}-{tag}", std::process::id() % 100_000, n);
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = tempfile::tempdir().expect("a temp dir");
        let yaml = format!(
            "name: {name}\nservices:\n{services}\nproxy:\n  kind: {}\n  image: {}\n  listen: {listen}\n{proxy_extra}",
            kind.as_str(),
            proxy_image(kind)
        );
        for (file, text) in files {
            let path = dir.path().join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, text).unwrap();
        }
        let path = dir.path().join("devstack.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let stack = load(&LoadOptions::new(vec![path]))
            .unwrap_or_else(|r| panic!("test stack invalid:\n{}\n{yaml}", r.render(false)));
        Project {
            name,
            stack,
            listen,
            dir,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `up` through the engine, then the stack's routing path started as
    /// `up` starts it.
    pub async fn up_routed(&self) -> Routing {
        let engine = Engine::connect().await.expect("the engine answers");
        self.up(&engine).await;
        Routing::start(&engine, &self.stack, &self.name, RoutingOptions::default())
            .await
            .expect("the routing path starts")
    }

    /// `up` through the engine: every service healthy.
    pub async fn up(&self, engine: &Engine) {
        let request = UpRequest {
            project: self.name.clone(),
            services: vec![],
            replicas: BTreeMap::new(),
            timeout: Duration::from_secs(60),
            remove_orphans: true,
            known_healthy: Default::default(),
        };
        let outcome = apply::up(
            engine,
            &self.stack,
            &request,
            &Reporter::silent(),
            &CancellationToken::new(),
        )
        .await
        .expect("up runs");
        assert!(outcome.all_healthy(), "not healthy: {outcome:?}");
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.devstack.project={}", self.name),
        ]);
        let ids: Vec<&str> = ids.lines().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            docker(&args);
        }
        docker(&["network", "rm", &self.name]);
    }
}

/// Whether the project's proxy, asked as a swap asks it (HAProxy's
/// `show servers state`, nginx's control port), sends traffic to `ip`.
/// None when it does not answer.
pub async fn proxy_serves(engine: &Engine, project: &str, ip: &str) -> Option<bool> {
    let proxy = engine.find_proxy(project).await?;
    let servers = proxy.servers().await?;
    Some(servers.iter().any(|s| s.serving() && s.address == ip))
}

/// A GET through the proxy with a Host header: (status, body).
pub async fn get(listen: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(listen).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<String, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer in 5s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `hostname` (container id) the fixture app answered with.
pub fn hostname(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("hostname")?.as_str().map(str::to_string)
}

/// Polls `f` every 10 ms until it holds; returns how long that took.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs an async test body on a fresh runtime with an overall timeout.
pub fn run<F: std::future::Future<Output = ()>>(limit: Duration, body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        tokio::time::timeout(limit, body).await.unwrap_or_else(|_| {
            panic!("the test did not finish within {limit:?}: likely deadlocked")
        })
    });
}

/// A real etcd (Debian's /usr/bin/etcd) on loopback, killed when dropped.
pub struct RealEtcd {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RealEtcd {
    pub async fn start() -> RealEtcd {
        assert!(
            std::path::Path::new("/usr/bin/etcd").exists(),
            "/usr/bin/etcd is missing: apt-get install etcd-server"
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child =
            crate::real_etcd::command("routing-test", &dir.path().join("data"), &url, &peer)
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("/usr/bin/etcd starts");
        let etcd = RealEtcd {
            url,
            child,
            _dir: dir,
        };
        let url = etcd.url.clone();
        until(Duration::from_secs(20), "the real etcd answers", || {
            let url = url.clone();
            async move {
                match etcd_client::Client::connect([url], None).await {
                    Ok(mut c) => c.status().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        etcd
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `etcdctl get --prefix PREFIX --keys-only` against `url`.
pub fn etcdctl_keys(url: &str, prefix: &str) -> Vec<String> {
    let out = Command::new("/usr/bin/etcdctl")
        .args(["--endpoints", url, "get", "--prefix", "--keys-only", prefix])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("/usr/bin/etcdctl runs");
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits up to `within` for the first router event `pick` accepts.
pub async fn next_event<T>(
    rx: &mut tokio::sync::broadcast::Receiver<devstack::router::RouterEvent>,
    within: Duration,
    what: &str,
    mut pick: impl FnMut(&devstack::router::RouterEvent) -> Option<T>,
) -> T {
    use tokio::sync::broadcast::error::RecvError;
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(e) => panic!("router events ended: {e}"),
            }
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
}

/// What the registrar and the router of a routing path said, with the time
/// since recording began, for a failing assertion to show.
#[derive(Clone)]
pub struct EventLog {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    known: tokio::sync::watch::Receiver<devstack::registrar::Known>,
}

impl EventLog {
    /// Records from now on (until the routing path stops).
    pub fn of(routing: &Routing) -> EventLog {
        let log = EventLog {
            lines: Default::default(),
            known: routing.registrar.known(),
        };
        let start = Instant::now();
        let mut registrar = routing.registrar.subscribe();
        let mut router = routing.router.subscribe();
        let into = log.clone();
        tokio::spawn(async move {
            while let Ok(e) = registrar.recv().await {
                into.push(format!(
                    "{:>7.3}s registrar {e:?}",
                    start.elapsed().as_secs_f64()
                ));
            }
        });
        let into = log.clone();
        tokio::spawn(async move {
            while let Ok(e) = router.recv().await {
                into.push(format!(
                    "{:>7.3}s router {e:?}",
                    start.elapsed().as_secs_f64()
                ));
            }
        });
        log
    }

    fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// Every line so far, one per line, and what the registrar knows now.
    pub fn dump(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "{}\nthe registrar knows: {:?}",
            lines.join("\n"),
            *self.known.borrow()
        )
    }
}
