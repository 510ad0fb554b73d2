//! `just bench-etcd`: the embedded etcd against a real etcd on this machine,
//! side by side, with the same client (etcd-client): start-up to the first
//! served request, puts/s and ranges/s at 1 and 64 concurrent clients (small
//! keys, 256-byte values), watch latency from put to delivery, and memory.
//!
//! The load runs against `devstack etcd serve` as a process (the release
//! build), so both servers are measured the same way, memory included; the
//! start-up of the server embedded in a process is measured too.

#[path = "../tests/support/real_etcd.rs"]
mod real_etcd;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::etcd::{Server, ServerConfig};
use etcd_client::{Client, GetOptions, WatchOptions};

const RUN: Duration = Duration::from_secs(3);
const VALUE: [u8; 256] = [b'v'; 256];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when dropped.
struct Proc {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

fn spawn_real() -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let (cp, pp) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let child = real_etcd::command("bench", &dir.path().join("data"), &url, &peer)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's etcd-server must be installed");
    Proc {
        child,
        url,
        _dir: dir,
    }
}

fn spawn_embedded() -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(Path::new(env!("CARGO_BIN_EXE_devstack")))
        .args([
            "etcd",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc {
        child,
        url,
        _dir: dir,
    }
}

/// Polls until a Range is answered; returns the client.
async fn first_answer(url: &str) -> Client {
    loop {
        if let Ok(Ok(mut c)) =
            tokio::time::timeout(Duration::from_millis(500), Client::connect([url], None)).await
        {
            if c.get("probe", None).await.is_ok() {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `clients` loops of `op` for `RUN`; returns operations per second.
async fn throughput<F, Fut>(url: &str, clients: usize, op: F) -> f64
where
    F: Fn(Client, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = Client::connect([url], None).await.unwrap();
        let (count, op) = (count.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < RUN {
                op(client.clone(), (c as u64) << 32 | i).await;
                i += 1;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn puts(url: &str, clients: usize) -> f64 {
    throughput(url, clients, |mut c, i| async move {
        c.put(format!("bench/put/{i:016x}"), VALUE.to_vec(), None)
            .await
            .unwrap();
    })
    .await
}

async fn ranges(url: &str, clients: usize) -> f64 {
    let mut c = Client::connect([url], None).await.unwrap();
    for i in 0..1000 {
        c.put(format!("bench/get/{i:04}"), VALUE.to_vec(), None)
            .await
            .unwrap();
    }
    throughput(url, clients, |mut c, i| async move {
        let resp = c
            .get(format!("bench/get/{:04}", i % 1000), None)
            .await
            .unwrap();
        assert_eq!(resp.kvs().len(), 1);
    })
    .await
}

/// Latency from issuing a put to the watcher receiving its event.
async fn watch_latency(url: &str) -> (Duration, Duration) {
    let mut writer = Client::connect([url], None).await.unwrap();
    let mut watcher = Client::connect([url], None).await.unwrap();
    let mut stream = watcher
        .watch("bench/watch/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created());
    let mut samples = Vec::new();
    for i in 0..500 {
        let sent = Instant::now();
        let put = writer.put(format!("bench/watch/{i}"), VALUE.to_vec(), None);
        let (put, got) = tokio::join!(put, stream.message());
        put.unwrap();
        let got = got.unwrap().unwrap();
        assert_eq!(got.events().len(), 1);
        samples.push(sent.elapsed());
    }
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

struct Row {
    name: &'static str,
    real: String,
    embedded: String,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rows = Vec::new();

        // Start-up to the first answered request, median of 5.
        let mut real_times = Vec::new();
        let mut proc_times = Vec::new();
        let mut inproc_times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let p = spawn_real();
            first_answer(&p.url).await;
            real_times.push(t.elapsed());
            drop(p);
            let t = Instant::now();
            let p = spawn_embedded();
            first_answer(&p.url).await;
            proc_times.push(t.elapsed());
            drop(p);
            let dir = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let server = Server::start(ServerConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                dir.path(),
            ))
            .await
            .unwrap();
            first_answer(&server.client_url()).await;
            inproc_times.push(t.elapsed());
            server.shutdown().await;
        }
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        rows.push(Row {
            name: "start-up to first request (process)",
            real: ms(median(real_times)),
            embedded: ms(median(proc_times)),
        });
        rows.push(Row {
            name: "start-up to first request (in-process)",
            real: "-".into(),
            embedded: ms(median(inproc_times)),
        });

        let real = spawn_real();
        let emb = spawn_embedded();
        first_answer(&real.url).await;
        first_answer(&emb.url).await;
        let ops = |v: f64| format!("{v:.0} /s");
        for clients in [1, 64] {
            let (a, b) = (
                puts(&real.url, clients).await,
                puts(&emb.url, clients).await,
            );
            rows.push(Row {
                name: if clients == 1 {
                    "puts, 1 client"
                } else {
                    "puts, 64 clients"
                },
                real: ops(a),
                embedded: ops(b),
            });
        }
        for clients in [1, 64] {
            let (a, b) = (
                ranges(&real.url, clients).await,
                ranges(&emb.url, clients).await,
            );
            rows.push(Row {
                name: if clients == 1 {
                    "ranges, 1 client"
                } else {
                    "ranges, 64 clients"
                },
                real: ops(a),
                embedded: ops(b),
            });
        }
        let ((a50, a99), (b50, b99)) = (
            watch_latency(&real.url).await,
            watch_latency(&emb.url).await,
        );
        let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        rows.push(Row {
            name: "watch latency p50 (put → event)",
            real: us(a50),
            embedded: us(b50),
        });
        rows.push(Row {
            name: "watch latency p99 (put → event)",
            real: us(a99),
            embedded: us(b99),
        });
        let (ra, rp) = real.rss_kib();
        let (ea, ep) = emb.rss_kib();
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        rows.push(Row {
            name: "memory RSS after the load",
            real: mib(ra),
            embedded: mib(ea),
        });
        rows.push(Row {
            name: "memory RSS peak",
            real: mib(rp),
            embedded: mib(ep),
        });
        let _ = GetOptions::new();

        let version = String::from_utf8_lossy(
            &Command::new("etcd")
                .arg("--version")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default(),
        )
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
        println!();
        println!(
            "embedded etcd vs real etcd ({version}), same client (etcd-client), 256-byte values"
        );
        println!("{:<40} {:>16} {:>16}", "", "real etcd", "embedded");
        for r in rows {
            println!("{:<40} {:>16} {:>16}", r.name, r.real, r.embedded);
        }
    });
}
