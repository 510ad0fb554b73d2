//! `just bench-routing`: how fast the registry reaches the proxy, and what
//! reloads cost under load, against the naive alternative.
//!
//! - propagation "healthy → routed": a replica is restarted; from the moment
//!   its /health answers (polled directly every 2 ms) to the first request
//!   through the proxy that it serves.
//! - propagation "killed → out": from the kill request to HAProxy holding
//!   the server in maintenance (read through the master CLI every 2 ms,
//!   while the engine's kill request is still running).
//! - failed requests while HAProxy reloads 100 times under a steady load
//!   (~300 req/s, a new connection per request, on loopback).
//! - failed requests over 100 instance changes under that load, through the
//!   router (an extra registration of a live replica put and withdrawn):
//!   HAProxy applies them through its runtime API, nginx (`proxy.kind:
//!   nginx`, which has none) with a checked reload each.
//!
//! The nginx rows measure the same on the nginx replica: "killed → out" is
//! read from its control port (the table of the configuration its workers
//! run), every change being `nginx -t` + upload + `nginx -s reload` and the
//! wait for the new workers.
//!
//! The naive alternative is confd-style: poll etcd every second, render,
//! and on any change check + upload + `docker restart` the proxy (a Compose
//! user's `reload_cmd`). Environment: `DEVSTACK_BENCH_ROUNDS` (default 30
//! for devstack; the naive side runs a third of that, each round taking seconds).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use devstack::controller::routing::{Routing, RoutingOptions};
use devstack::engine::apply::{self, UpRequest};
use devstack::engine::events::ContainerEventKind;
use devstack::engine::progress::Reporter;
use devstack::engine::proxy::CONFIG_PATH;
use devstack::engine::runtime::ProxyRuntime;
use devstack::engine::{ContainerEngine, Engine, ProxyControl};
use devstack::registrar::{self, RegistrarConfig, RegistrarEvent};
use devstack::router::confd::{proxy_spec, reload};
use devstack::router::{render, view, Change, Layout, Registry, RouterEvent, BUILTIN_TEMPLATE};
use devstack::spec::{load, LoadOptions, ProxyKind, Stack};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn stack(project: &str, listen: SocketAddr, kind: ProxyKind) -> Stack {
    // The replicas of the official images (`DEVSTACK_FIXTURES_PREFIX` picks
    // another set).
    let prefix =
        std::env::var("DEVSTACK_FIXTURES_PREFIX").unwrap_or_else(|_| "devstack-fixtures".into());
    let image = match kind {
        ProxyKind::Haproxy => format!("{prefix}/haproxy:2.6"),
        ProxyKind::Nginx => format!("{prefix}/nginx:1.22"),
    };
    let kind = kind.as_str();
    let yaml = format!(
        "name: {project}
services:
  a:
    image: devstack-fixtures/app
    port: 8080
    replicas: 2
    env: {{ SERVICE: a }}
    health: {{ http: /health, interval: 500ms, start_period: 30s }}
    restart: \"no\"
    stop_grace: 1s
    routes: [a.bench.localhost]
proxy:
  kind: {kind}
  image: {image}
  listen: {listen}
"
    );
    load(&LoadOptions::inline("bench.yaml", &yaml))
        .unwrap_or_else(|r| panic!("{}", r.render(false)))
}

fn cleanup(project: &str) {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.devstack.project={project}"),
    ]);
    let ids: Vec<&str> = ids.lines().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids);
        docker(&args);
    }
    docker(&["network", "rm", project]);
}

/// One GET through the proxy: the answering hostname, or None on failure.
async fn get(listen: SocketAddr, path: &str) -> Option<String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(listen).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: a.bench.localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<String, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()?
        .ok()?;
    if text.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("hostname")?.as_str().map(str::to_string)
}

async fn healthy_direct(ip: &str) -> bool {
    let addr: SocketAddr = match format!("{ip}:8080").parse() {
        Ok(a) => a,
        Err(_) => return false,
    };
    devstack::engine::health::http_get(addr, "/health", Duration::from_millis(200))
        .await
        .ok
}

fn ip_of(name: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn report(label: &str, samples: &mut [Duration]) {
    println!(
        "  {label:<44} n={:<3} p50 {:>7.1} ms   p99 {:>7.1} ms",
        samples.len(),
        percentile(samples, 0.5).as_secs_f64() * 1000.0,
        percentile(samples, 0.99).as_secs_f64() * 1000.0
    );
}

/// When each stage of the routing path saw a change of the victim: marks
/// from the engine's events, the registrar's and router's reports and a
/// watch of the registry of this bench's own, each stamped on arrival.
#[derive(Clone, Default)]
struct Timeline {
    marks: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Timeline {
    fn mark_at(&self, at: Instant, label: &str) {
        self.marks
            .lock()
            .expect("timeline")
            .push((at, label.to_string()));
    }

    fn mark(&self, label: &str) {
        self.mark_at(Instant::now(), label);
    }

    fn take(&self) -> Vec<(Instant, String)> {
        std::mem::take(&mut *self.marks.lock().expect("timeline"))
    }

    /// Follows the victim through the engine's events, the registrar, the
    /// router and the registry. `cancel` ends the followers.
    fn follow(
        &self,
        engine: &Engine,
        routing: &Routing,
        stack: &Stack,
        project: &str,
        victim: &str,
        cancel: &CancellationToken,
    ) {
        let (tl, c) = (self.clone(), cancel.clone());
        let mut events = Box::pin(engine.project_events(project, None));
        let victim_name = victim.to_string();
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    _ = c.cancelled() => return,
                    e = events.next() => e,
                };
                let Some(Ok(e)) = e else { return };
                if e.name != victim_name {
                    continue;
                }
                let label = match e.kind {
                    ContainerEventKind::Killed { .. } => "kill",
                    ContainerEventKind::Died { .. } => "die",
                    ContainerEventKind::Started => "start",
                    _ => continue,
                };
                // The engine's own stamp, on this process's clock.
                let now_sys = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as i64;
                let age = Duration::from_nanos((now_sys - e.time_nano).max(0) as u64);
                let now = Instant::now();
                tl.mark_at(
                    now.checked_sub(age).unwrap_or(now),
                    &format!("engine stamps `{label}`"),
                );
                tl.mark_at(now, &format!("`{label}` event reaches a follower"));
            }
        });
        let (tl, c) = (self.clone(), cancel.clone());
        let mut reg = routing.registrar.subscribe();
        let victim_name = victim.to_string();
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    _ = c.cancelled() => return,
                    e = reg.recv() => e,
                };
                match e {
                    Ok(RegistrarEvent::Registered { container, .. })
                        if container == victim_name =>
                    {
                        tl.mark("registrar: registered in etcd")
                    }
                    Ok(RegistrarEvent::Deregistered { container, .. })
                        if container == victim_name =>
                    {
                        tl.mark("registrar: deregistered in etcd")
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        let (tl, c) = (self.clone(), cancel.clone());
        let mut router = routing.router.subscribe();
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    _ = c.cancelled() => return,
                    e = router.recv() => e,
                };
                match e {
                    Ok(RouterEvent::ProxyTrouble { message }) => {
                        eprintln!("  (router: {message})");
                    }
                    Ok(RouterEvent::Applied { change, took, .. }) => {
                        let how = match change {
                            Change::Runtime { .. } => "runtime API",
                            Change::Reload => "reload",
                            Change::Unchanged => continue,
                        };
                        let now = Instant::now();
                        tl.mark_at(now.checked_sub(took).unwrap_or(now), "router: apply starts");
                        tl.mark_at(now, &format!("router: applied ({how})"));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        let (tl, c) = (self.clone(), cancel.clone());
        let endpoints = routing.endpoints.clone();
        let prefix = Layout::new(&stack.discovery, project).listing();
        tokio::spawn(async move {
            let Ok(mut client) = Client::connect(&endpoints, None).await else {
                return;
            };
            let Ok(mut stream) = client
                .watch(prefix, Some(WatchOptions::new().with_prefix()))
                .await
            else {
                return;
            };
            loop {
                let m = tokio::select! {
                    _ = c.cancelled() => return,
                    m = stream.message() => m,
                };
                let Ok(Some(resp)) = m else { return };
                for ev in resp.events() {
                    tl.mark(match ev.event_type() {
                        EventType::Put => "a watch sees the put",
                        EventType::Delete => "a watch sees the delete",
                    });
                }
            }
        });
    }
}

/// One measured change: each stage's first mark after `from`, in ms from it.
fn stages(from: Instant, marks: &[(Instant, String)]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut sorted: Vec<&(Instant, String)> = marks.iter().collect();
    sorted.sort_by_key(|m| m.0);
    for (at, label) in sorted {
        if out.iter().any(|(l, _)| l == label) {
            continue;
        }
        let ms = if *at >= from {
            (*at - from).as_secs_f64() * 1000.0
        } else {
            -((from - *at).as_secs_f64() * 1000.0)
        };
        out.push((label.clone(), ms));
    }
    out
}

/// Per stage, p50 and p99 of its offset over the rounds (stages in the
/// order of their medians).
fn report_stages(title: &str, rounds: &[Vec<(String, f64)>]) {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in rounds {
        for (label, ms) in r {
            by.entry(label.clone()).or_default().push(*ms);
        }
    }
    let mut rows: Vec<(String, f64, f64, usize)> = by
        .into_iter()
        .map(|(label, mut v)| {
            v.sort_by(f64::total_cmp);
            let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
            (label, at(0.5), at(0.99), v.len())
        })
        .collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    println!("    {title}");
    for (label, p50, p99, n) in rows {
        println!("      {label:<42} n={n:<3} p50 {p50:>7.1} ms   p99 {p99:>7.1} ms");
    }
}

/// Restarts replica 1 `rounds` times; returns (healthy→routed, killed→out) samples.
async fn propagation(
    engine: &Engine,
    project: &str,
    listen: SocketAddr,
    proxy: Option<ProxyControl>,
    rounds: usize,
    timeline: Option<&Timeline>,
) -> (
    Vec<Duration>,
    Vec<Duration>,
    Vec<Vec<(String, f64)>>,
    Vec<Vec<(String, f64)>>,
) {
    let victim = format!("{project}-a-1");
    let id = docker(&["inspect", "-f", "{{.Id}}", &victim]);
    let mut routed = Vec::new();
    let mut out = Vec::new();
    let (mut routed_stages, mut out_stages) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // Make sure it is routed before killing it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(listen, "/").await.as_deref() != Some(victim.as_str()) {
            assert!(Instant::now() < deadline, "{victim} never routed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ip = ip_of(&victim);
        if let Some(t) = timeline {
            t.take();
        }
        let killed = Instant::now();
        // The engine answers a SIGKILL once the container is gone (hundreds
        // of ms on a busy machine): the proxy is watched meanwhile.
        let kill = {
            let (engine, id, timeline) = (engine.clone(), id.clone(), timeline.cloned());
            tokio::spawn(async move {
                engine.kill(&id).await.expect("kill");
                if let Some(t) = timeline {
                    t.mark("the kill request returns");
                }
            })
        };
        match &proxy {
            // Asked as a swap asks: HAProxy's `show servers state`, nginx's
            // control port.
            Some(proxy) => loop {
                let servers = proxy.servers().await.unwrap_or_default();
                let live = servers.iter().any(|s| s.serving() && s.address == ip);
                if !live {
                    out.push(killed.elapsed());
                    if let Some(t) = timeline {
                        t.mark("out of the proxy (seen by the control port poll)");
                        // Late reports of this change still arrive.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        out_stages.push(stages(killed, &t.take()));
                    }
                    break;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(30),
                    "never taken out"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            },
            None => {
                // The naive proxy restarts: out once 20 requests in a row miss it.
                let mut streak = 0;
                while streak < 20 {
                    match get(listen, "/").await {
                        Some(h) if h == victim => streak = 0,
                        Some(_) => streak += 1,
                        None => {}
                    }
                    assert!(
                        killed.elapsed() < Duration::from_secs(60),
                        "never taken out"
                    );
                }
                out.push(killed.elapsed());
            }
        }
        if let Some(t) = timeline {
            t.take();
            t.mark("docker start is run");
        }
        kill.await.expect("kill");
        docker(&["start", &victim]);
        let ip = ip_of(&victim);
        while !healthy_direct(&ip).await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let healthy = Instant::now();
        loop {
            let sent = Instant::now();
            if get(listen, "/").await.as_deref() == Some(victim.as_str()) {
                routed.push(healthy.elapsed());
                if let Some(t) = timeline {
                    // A request through the proxy takes a while here: the
                    // server was ready somewhere between these two.
                    t.mark_at(sent, "the request that reached it was sent");
                    t.mark("first request routed to it");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    routed_stages.push(stages(healthy, &t.take()));
                }
                break;
            }
            assert!(healthy.elapsed() < Duration::from_secs(60), "never routed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    (routed, out, routed_stages, out_stages)
}

/// A steady load of `rate` requests per second until `stop`; returns (sent, failed).
fn load_gen(
    listen: SocketAddr,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut tasks = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let (sent, failed) = (sent.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                sent.fetch_add(1, Ordering::Relaxed);
                if get(listen, "/").await.is_none() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    })
}

async fn up(engine: &Engine, stack: &Stack, project: &str) {
    let request = UpRequest {
        project: project.to_string(),
        services: vec![],
        replicas: BTreeMap::new(),
        timeout: Duration::from_secs(90),
        remove_orphans: true,
        known_healthy: Default::default(),
    };
    let outcome = apply::up(
        engine,
        stack,
        &request,
        &Reporter::silent(),
        &CancellationToken::new(),
    )
    .await
    .expect("up");
    assert!(outcome.all_healthy(), "not healthy: {outcome:?}");
}

/// `n` instance changes under ~300 req/s through the running router: an
/// extra registration of replica 1's address put and withdrawn in turn,
/// each awaited until the router applied it. Prints one row.
async fn instance_changes(
    routing: &Routing,
    stack: &Stack,
    project: &str,
    listen: SocketAddr,
    n: usize,
) {
    let mut events = routing.router.subscribe();
    let key = format!(
        "{}a/bench-extra",
        Layout::new(&stack.discovery, project).listing()
    );
    let value = serde_json::json!({
        "service": "a", "id": "bench-extra", "replica": 9,
        "address": ip_of(&format!("{project}-a-1")), "port": 8080
    })
    .to_string();
    let mut etcd = Client::connect(routing.endpoints.clone(), None)
        .await
        .expect("etcd");
    let stop = Arc::new(AtomicBool::new(false));
    let load_task = load_gen(listen, 300, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut reloads, mut runtime) = (0, 0);
    let started = Instant::now();
    for i in 0..n {
        let revision = if i % 2 == 0 {
            etcd.put(key.as_str(), value.as_str(), None)
                .await
                .expect("put")
                .header()
                .map(|h| h.revision())
        } else {
            etcd.delete(key.as_str(), None)
                .await
                .expect("delete")
                .header()
                .map(|h| h.revision())
        }
        .unwrap_or(0);
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Ok(RouterEvent::Applied {
                    change,
                    revision: r,
                    ..
                })) if r >= revision => {
                    match change {
                        Change::Reload => reloads += 1,
                        Change::Runtime { .. } => runtime += 1,
                        Change::Unchanged => {}
                    }
                    break;
                }
                Ok(Ok(RouterEvent::CheckFailed { message, .. }))
                | Ok(Ok(RouterEvent::ReloadFailed { message, .. }))
                | Ok(Ok(RouterEvent::ProxyTrouble { message })) => {
                    panic!("change {i} not applied: {message}")
                }
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("router events ended: {e}"),
                Err(_) => panic!("change {i} not applied within 30s"),
            }
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = load_task.await.expect("load");
    println!(
        "  {n} instance changes ({runtime} runtime API, {reloads} reloads) in {:.1}s under ~300 req/s: {sent} requests, {failed} failed",
        took.as_secs_f64()
    );
}

async fn devstack_side(engine: &Engine, rounds: usize) {
    let project = format!("benchroute-ds{}", std::process::id() % 10000);
    cleanup(&project);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stack = stack(&project, listen, ProxyKind::Haproxy);
    up(engine, &stack, &project).await;
    let routing = Routing::start(engine, &stack, &project, RoutingOptions::default())
        .await
        .expect("routing starts");
    settled(&routing).await;
    let cli = routing.router.proxy.cli;
    let proxy = engine
        .find_proxy(&project)
        .await
        .expect("the proxy answers");
    let timeline = Timeline::default();
    let following = CancellationToken::new();
    timeline.follow(
        engine,
        &routing,
        &stack,
        &project,
        &format!("{project}-a-1"),
        &following,
    );
    let (mut routed, mut out, routed_stages, out_stages) = propagation(
        engine,
        &project,
        listen,
        Some(proxy),
        rounds,
        Some(&timeline),
    )
    .await;
    following.cancel();
    println!("devstack, HAProxy (etcd watch → runtime API; reload only when routes change):");
    report("healthy → first request routed to it", &mut routed);
    report_stages(
        "stages, ms after its /health first answered the bench's 2 ms poll:",
        &routed_stages,
    );
    report("killed → out of HAProxy", &mut out);
    report_stages("stages, ms after the kill request was sent:", &out_stages);
    instance_changes(&routing, &stack, &project, listen, 100).await;

    // 100 reloads under load: a new config each time (a comment changes),
    // checked, uploaded and reloaded exactly as the router does.
    let stop = Arc::new(AtomicBool::new(false));
    let load_task = load_gen(listen, 300, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The live config as the router installed it, devstack's sections (the
    // control port the reloads go through) included.
    let proxy = routing.router.proxy.id.clone();
    let base = engine
        .read_file(&proxy, CONFIG_PATH)
        .await
        .expect("the live config")
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .expect("a live config");
    let started = Instant::now();
    for i in 0..100 {
        let text = format!("{base}\n# reload {i}\n");
        engine
            .proxy_check(&proxy, &text)
            .await
            .expect("check runs")
            .expect("config ok");
        engine
            .upload_file(&proxy, CONFIG_PATH, &text)
            .await
            .expect("upload");
        reload(cli).await.expect("reload");
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = load_task.await.expect("load");
    println!(
        "  100 reloads (check + upload + master-CLI reload) in {:.1}s under ~300 req/s: {sent} requests, {failed} failed",
        took.as_secs_f64()
    );
    routing.shutdown().await;
    cleanup(&project);
}

/// The same measures with `proxy.kind: nginx`: every change a checked reload.
async fn nginx_side(engine: &Engine, rounds: usize) {
    let project = format!("benchroute-ng{}", std::process::id() % 10000);
    cleanup(&project);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stack = stack(&project, listen, ProxyKind::Nginx);
    up(engine, &stack, &project).await;
    let routing = Routing::start(engine, &stack, &project, RoutingOptions::default())
        .await
        .expect("routing starts");
    settled(&routing).await;
    let proxy = engine.find_proxy(&project).await.expect("nginx answers");
    let (mut routed, mut out, _, _) =
        propagation(engine, &project, listen, Some(proxy), rounds, None).await;
    println!("devstack, nginx (etcd watch → nginx -t, upload, nginx -s reload on every change):");
    report("healthy → first request routed to it", &mut routed);
    report("killed → out of nginx", &mut out);
    instance_changes(&routing, &stack, &project, listen, 100).await;
    routing.shutdown().await;
    cleanup(&project);
}

/// Waits until the router's first apply (a reload, with the registry as
/// the registrar wrote it) is done and it has been quiet for a second, so
/// the first round does not wait behind it (it measured that reload, not a
/// kill: 890-930 ms in one round of 30).
async fn settled(routing: &Routing) {
    let mut events = routing.router.subscribe();
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    let mut applied = false;
    while start.elapsed() < Duration::from_secs(15) {
        match tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
            Ok(Ok(RouterEvent::Applied { .. })) => {
                applied = true;
                quiet_since = Instant::now();
            }
            Ok(_) => quiet_since = Instant::now(),
            Err(_) => {}
        }
        // The first apply may be over before this listened: a quiet
        // stretch of 2 s counts as well.
        let quiet = quiet_since.elapsed();
        if (applied && quiet >= Duration::from_secs(1)) || quiet >= Duration::from_secs(2) {
            return;
        }
    }
}

async fn current_registry(endpoints: &[String], stack: &Stack, project: &str) -> Registry {
    let layout = Layout::new(&stack.discovery, project);
    let mut c = Client::connect(endpoints, None).await.expect("etcd");
    let resp = c
        .get(layout.listing(), Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    Registry::from_kvs(
        layout.prefix(),
        resp.kvs().iter().map(|kv| {
            (
                kv.key_str().unwrap_or_default().to_string(),
                kv.value_str().unwrap_or_default().to_string(),
            )
        }),
    )
}

/// The naive alternative: the same registrar and etcd, but a confd-style
/// loop polling every second and restarting the proxy on any change.
async fn naive_side(engine: &Engine, rounds: usize) {
    let project = format!("benchroute-naive{}", std::process::id() % 10000);
    cleanup(&project);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stack = stack(&project, listen, ProxyKind::Haproxy);
    up(engine, &stack, &project).await;
    engine.ensure_network(&project).await.expect("network");
    let etcd = devstack::etcd::Server::start(devstack::etcd::ServerConfig::in_memory(
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .expect("etcd");
    let endpoints = vec![etcd.client_url()];
    let cancel = CancellationToken::new();
    let reg = registrar::start(
        engine.clone(),
        RegistrarConfig {
            stack: stack.clone(),
            project: project.clone(),
            endpoints: endpoints.clone(),
        },
        tokio::sync::watch::channel(std::sync::Arc::new(stack.clone())).1,
        cancel.clone(),
    );
    let empty = render(
        BUILTIN_TEMPLATE,
        &view(&stack, &project, &Registry::default()),
    )
    .unwrap();
    let proxy = engine
        .ensure_proxy(&proxy_spec(&stack, &project, false), &empty)
        .await
        .expect("proxy");
    let poller = {
        let (engine, stack, project, endpoints, cancel) = (
            engine.clone(),
            stack.clone(),
            project.clone(),
            endpoints.clone(),
            cancel.clone(),
        );
        let id = proxy.id.clone();
        tokio::spawn(async move {
            let mut live = empty;
            while !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let registry = current_registry(&endpoints, &stack, &project).await;
                let text = render(BUILTIN_TEMPLATE, &view(&stack, &project, &registry)).unwrap();
                if text != live {
                    if let Ok(Ok(())) = engine.proxy_check(&id, &text).await {
                        let _ = engine.upload_file(&id, CONFIG_PATH, &text).await;
                        docker(&["restart", "-t", "1", &id]);
                        live = text;
                    }
                }
            }
        })
    };
    let (mut routed, mut out, _, _) =
        propagation(engine, &project, listen, None, rounds, None).await;
    println!("naive (confd-style: poll etcd every 1s, check, docker restart the proxy):");
    report("healthy → first request routed to it", &mut routed);
    report("killed → out of HAProxy", &mut out);

    let stop = Arc::new(AtomicBool::new(false));
    let load_task = load_gen(listen, 300, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarts = 10;
    let started = Instant::now();
    for _ in 0..restarts {
        docker(&["restart", "-t", "1", &proxy.id]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = load_task.await.expect("load");
    println!(
        "  {restarts} reloads (docker restart) in {:.1}s under ~300 req/s: {sent} requests, {failed} failed",
        took.as_secs_f64()
    );
    cancel.cancel();
    let _ = poller.await;
    reg.join().await;
    etcd.shutdown().await;
    cleanup(&project);
}

fn main() {
    let rounds: usize = std::env::var("DEVSTACK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30)
        .max(2);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let engine = Engine::connect().await.expect("a Docker engine");
        devstack_side(&engine, rounds).await;
        nginx_side(&engine, rounds).await;
        naive_side(&engine, (rounds / 3).max(2)).await;
    });
}
