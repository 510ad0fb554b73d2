//! The embedded etcd: an etcd v3 API server (gRPC, single member) that runs
//! inside the devstack process, so etcdctl, confd and any etcd client work
//! against it unchanged.
//!
//! Layout:
//! - [`store`]: the MVCC store, pure (revisions, history, leases, compaction).
//! - [`wal`]: the on-disk log, its replay, and group commit.
//! - `kv`, `watch`, `lease`, `cluster`, `lock`: the gRPC services over one [`Core`].
//! - `http`: `/health` and `/version` on the same port.
//! - [`pb`]: the etcd v3 API, generated from `proto/etcd/` by `build.rs`.
//! - [`rpc`]: devstack's etcd client over the generated tonic clients.
//! - [`client`]: quick looks at any etcd (get, put, del, ls, watch), as etcdctl takes them.
//!
//! Start one with [`Server::start`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), devstack::etcd::Error> {
//! use devstack::etcd::{Server, ServerConfig};
//! let server = Server::start(ServerConfig::in_memory("127.0.0.1:0".parse().unwrap())).await?;
//! println!("etcd at {}", server.client_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod authority;
pub mod client;
mod cluster;
mod http;
mod kv;
mod lease;
mod lock;
pub mod pb;
pub mod rpc;
pub mod store;
pub mod wal;
mod watch;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::etcd::pb::etcdserverpb::{
    cluster_server, kv_server, lease_server, maintenance_server, watch_server, ResponseHeader,
};
use crate::etcd::pb::v3lockpb::lock_server;
use tokio::net::TcpListener;
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use store::Store;
use wal::{DirLock, Durable, Wal, WalError};

/// The etcd version this server reports. It follows etcd 3.5 because clients
/// (Kubernetes among them) gate features such as watch progress requests on
/// the version, and this server implements those with 3.5's semantics.
pub const ETCD_VERSION: &str = "3.5.17";
/// The cluster version reported next to [`ETCD_VERSION`].
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";
/// etcd's default `--max-request-bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// What gRPC accepts on top of `max_request_bytes` before it refuses a
/// message outright (etcd's `grpcOverheadBytes`).
pub(crate) const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's default `--quota-backend-bytes` (2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;
/// How many streams one client connection may have open at once. etcd
/// leaves this unbounded; here one connection must not be able to pin the
/// process's memory with streams it never finishes. etcd clients multiplex
/// their watches over one stream, so real clients stay far below it.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// The largest header list a client may send on one request (decoded), and
/// twice that is the most of a header block `authority` buffers before it
/// drops the connection (the CONTINUATION flood).
pub(crate) const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// etcd's alarm type for an exceeded space quota (`AlarmType_NOSPACE`).
const ALARM_NOSPACE: i32 = 1;
/// The raft term a freshly elected single member reports.
const RAFT_TERM: u64 = 2;

/// A server that could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot read or write {path}: {source}")]
    Meta {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free one. Loopback by default.
    pub listen: SocketAddr,
    /// Where the store persists; `None` keeps it in memory only.
    pub data_dir: Option<PathBuf>,
    /// The member name reported by `member list`.
    pub name: String,
    /// Client URLs reported by `member list`; default: the bound address.
    pub advertise_client_urls: Vec<String>,
    /// etcd's `--max-request-bytes`: larger writes are refused, and watch
    /// responses marked `fragment` are split at this size.
    pub max_request_bytes: usize,
    /// etcd's `--quota-backend-bytes`: once the store (history included)
    /// would outgrow it, writes that add data fail with `NOSPACE` until the
    /// alarm is disarmed after compacting.
    pub quota_backend_bytes: u64,
    /// How often watches created with `progress_notify` hear from an idle
    /// store (etcd's `--experimental-watch-progress-notify-interval`).
    pub progress_notify_interval: Duration,
    /// How often expired leases are looked for (etcd checks every 500 ms).
    pub lease_check_interval: Duration,
}

impl ServerConfig {
    /// A persistent server on `listen` storing under `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: Some(data_dir.into()),
            ..Self::in_memory(listen)
        }
    }

    /// A server whose store lives in memory only (tests, throwaway stacks).
    pub fn in_memory(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            data_dir: None,
            name: "devstack".into(),
            advertise_client_urls: Vec::new(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            progress_notify_interval: Duration::from_secs(600),
            lease_check_interval: Duration::from_millis(500),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::in_memory(SocketAddr::from(([127, 0, 0, 1], 2379)))
    }
}

/// The identity a single-member cluster reports in every header.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Ids {
    cluster_id: u64,
    member_id: u64,
}

/// What every service shares: the store behind its lock, the log, and the
/// member's identity.
pub(crate) struct Core {
    store: Mutex<Store>,
    wal: Wal,
    ids: Ids,
    config: ServerConfig,
    client_urls: Vec<String>,
    /// Counts applied requests, reported as the raft index by Status.
    raft_index: AtomicU64,
    /// The `NOSPACE` alarm: raised when a write would outgrow the quota,
    /// lowered only by an Alarm DEACTIVATE, as in etcd.
    nospace: AtomicBool,
    stop: CancellationToken,
    /// The data directory's lock, held as long as the server lives.
    _dir_lock: Option<DirLock>,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-written
        // (requests are checked before they mutate), so poisoning is ignored.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest revision clients may see: the last one on disk.
    fn durable_rev(&self) -> i64 {
        self.wal.subscribe().borrow().rev
    }

    fn durable(&self) -> tokio_watch::Receiver<Durable> {
        self.wal.subscribe()
    }

    /// A full response header at `rev`.
    fn header(&self, rev: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.ids.cluster_id,
            member_id: self.ids.member_id,
            revision: rev,
            raft_term: RAFT_TERM,
        }
    }

    /// Runs a read against the durable state.
    fn read<T>(&self, f: impl FnOnce(&Store, i64) -> T) -> T {
        let store = self.lock();
        let rev = self.durable_rev();
        f(&store, rev)
    }

    /// Runs something that changes no key (a lease renewal) against the store.
    fn read_mut<T>(&self, f: impl FnOnce(&mut Store, i64) -> T) -> T {
        let mut store = self.lock();
        let rev = self.durable_rev();
        f(&mut store, rev)
    }

    /// Runs a write under the store lock, logs what it changed, and returns
    /// once everything the response may reveal is on disk.
    async fn write<T>(
        &self,
        f: impl FnOnce(&mut Store, i64) -> Result<(T, Option<Vec<u8>>), store::StoreError>,
    ) -> Result<T, tonic::Status> {
        // A log that failed once stays failed: refuse before the store
        // changes, so memory does not run further ahead of the disk.
        if self.wal.is_broken() {
            return Err(unwritable());
        }
        let (resp, seq) = {
            let mut store = self.lock();
            let durable = self.durable_rev();
            let (resp, entry) = f(&mut store, durable)?;
            self.raft_index.fetch_add(1, Ordering::Relaxed);
            let seq = match entry {
                Some(payload) => self.wal.append(&payload, store.rev()),
                // Nothing changed, but the response may show state another
                // writer has not made durable yet: wait for that too.
                None => self.wal.last_seq(),
            };
            (resp, seq)
        };
        if self.wal.wait(seq).await {
            Ok(resp)
        } else {
            Err(unwritable())
        }
    }

    fn max_request_bytes(&self) -> usize {
        self.config.max_request_bytes
    }

    /// etcd's quota check for a write that adds about `cost` bytes: refused
    /// with `NOSPACE` while the alarm is up, and the alarm goes up when the
    /// store would outgrow the quota. Deletes and compaction are not checked,
    /// so that space can be freed.
    fn check_quota(&self, store: &Store, cost: usize) -> Result<(), store::StoreError> {
        if self.nospace.load(Ordering::Relaxed) {
            return Err(store::StoreError::NoSpace);
        }
        if store.size_bytes().saturating_add(cost as u64) > self.config.quota_backend_bytes {
            self.nospace.store(true, Ordering::Relaxed);
            let _ = writeln!(
                std::io::stderr(),
                "etcd: the store would exceed its quota of {} bytes: alarm NOSPACE raised, writes refused until it is disarmed",
                self.config.quota_backend_bytes
            );
            return Err(store::StoreError::NoSpace);
        }
        Ok(())
    }
}

fn unwritable() -> tonic::Status {
    tonic::Status::unavailable("etcdserver: the data directory cannot be written")
}

/// The embedded etcd server.
pub struct Server;

impl Server {
    /// Opens the store, binds the listener and starts serving. Returns once
    /// the server accepts connections.
    pub async fn start(config: ServerConfig) -> Result<RunningServer, Error> {
        let started = Instant::now();
        // Nothing in the data directory is read before it is ours.
        let dir_lock = match &config.data_dir {
            Some(dir) => Some(DirLock::acquire(dir)?),
            None => None,
        };
        let ids = match &config.data_dir {
            Some(dir) => load_ids(dir)?,
            None => fresh_ids(),
        };
        let mut store = Store::new(ids.member_id << 16 ^ now_nanos() & 0xffff_ffff);
        let wal = match &dir_lock {
            Some(lock) => Wal::open(lock, &mut store)?,
            None => Wal::memory(store.rev()),
        };
        // Leases do not survive a restart, so neither do their keys: a real
        // cluster would delete them once their TTL ran out.
        if let Some(rec) = store.drop_leased_keys() {
            let seq = wal.append(&wal::encode_record(&rec), rec.rev);
            wal.wait(seq).await;
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let client_urls = if config.advertise_client_urls.is_empty() {
            vec![format!("http://{addr}")]
        } else {
            config.advertise_client_urls.clone()
        };
        let stop = CancellationToken::new();
        let core = Arc::new(Core {
            store: Mutex::new(store),
            wal,
            ids,
            config,
            client_urls,
            raft_index: AtomicU64::new(1),
            nospace: AtomicBool::new(false),
            stop: stop.clone(),
            _dir_lock: dir_lock,
        });
        let lease_task = tokio::spawn(lease::expire_loop(core.clone()));
        let serve = tokio::spawn(serve(core.clone(), listener));
        Ok(RunningServer {
            addr,
            core,
            stop,
            serve,
            lease_task,
            startup: started.elapsed(),
        })
    }
}

async fn serve(core: Arc<Core>, listener: TcpListener) -> Result<(), tonic::transport::Error> {
    // Requests up to `max_request_bytes` plus gRPC's allowance reach the
    // services, which refuse what is over `max_request_bytes` with etcd's
    // words; anything larger is refused by tonic before it is buffered, so
    // one stream holds at most this much.
    let max_in = core.max_request_bytes() + GRPC_OVERHEAD_BYTES;
    let mut routes = tonic::service::Routes::new(
        kv_server::KvServer::new(kv::KvService(core.clone()))
            .max_decoding_message_size(max_in)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        watch_server::WatchServer::new(watch::WatchService(core.clone()))
            .max_decoding_message_size(max_in)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(lease_server::LeaseServer::new(lease::LeaseService(
        core.clone(),
    )))
    .add_service(maintenance_server::MaintenanceServer::new(
        cluster::MaintenanceService(core.clone()),
    ))
    .add_service(cluster_server::ClusterServer::new(cluster::ClusterService(
        core.clone(),
    )))
    .add_service(lock_server::LockServer::new(lock::LockService(
        core.clone(),
    )));
    http::add_routes(routes.axum_router_mut(), core.clone());
    let router = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = router.layer(axum::middleware::map_response(grpc_go_size_refusal));
    use futures::StreamExt;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.map(|tcp| {
            // Small requests and replies: do not let Nagle hold them back.
            let _ = tcp.set_nodelay(true);
            authority::FixedConn::new(tcp)
        })
    });
    let stop = core.stop.clone();
    tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
}

/// tonic refuses a message over the size limit with OUT_OF_RANGE and its own
/// words; grpc-go, which etcd clients know, says RESOURCE_EXHAUSTED
/// "grpc: received message larger than max (N vs. M)". This rewrites the
/// one into the other (the refusal comes before any handler runs, so the
/// status is in the response headers).
async fn grpc_go_size_refusal(mut resp: axum::response::Response) -> axum::response::Response {
    use axum::http::HeaderValue;
    let headers = resp.headers_mut();
    if headers.get("grpc-status").is_none_or(|v| v != "11") {
        return resp;
    }
    let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return resp;
    };
    // tonic percent-encodes spaces in the message.
    let message = message.replace("%20", " ");
    let Some(rest) = message.strip_prefix("Error, decoded message length too large: found ") else {
        return resp;
    };
    let number = |s: &str| s.split(' ').next().and_then(|n| n.parse::<u64>().ok());
    let (Some(found), Some(limit)) = (
        number(rest),
        rest.split("the limit is: ").nth(1).and_then(number),
    ) else {
        return resp;
    };
    let text = format!("grpc: received message larger than max ({found} vs. {limit})");
    if let Ok(value) = HeaderValue::from_str(&text) {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert("grpc-message", value);
    }
    resp
}

/// A server that is running. Dropping it stops it too, without waiting.
pub struct RunningServer {
    addr: SocketAddr,
    core: Arc<Core>,
    stop: CancellationToken,
    serve: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    lease_task: tokio::task::JoinHandle<()>,
    startup: Duration,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, what etcdctl's `--endpoints` takes.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How long [`Server::start`] took, store replay included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The store's current (durable) revision.
    pub fn revision(&self) -> i64 {
        self.core.durable_rev()
    }

    /// Stops accepting requests, ends open streams, and flushes the log.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let _ = (&mut self.serve).await;
        let _ = (&mut self.lease_task).await;
        self.core.wal.close();
    }

    /// Waits until the server stops (after [`RunningServer::stop_token`] is cancelled).
    pub async fn wait(mut self) -> Result<(), tonic::transport::Error> {
        let result = (&mut self.serve).await;
        let _ = (&mut self.lease_task).await;
        self.core.wal.close();
        match result {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    /// A token that stops the server when cancelled (e.g. on Ctrl-C).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Random-looking, nonzero IDs; no cryptographic need, so the clock and the
/// process id are mixed with a splitmix step.
fn fresh_ids() -> Ids {
    let mut seed = now_nanos() ^ (u64::from(std::process::id()) << 32);
    let mut next = || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) | 1
    };
    Ids {
        cluster_id: next(),
        member_id: next(),
    }
}

/// The member's identity is kept in the data directory so that it stays the
/// same across restarts, as a real member's does.
fn load_ids(dir: &std::path::Path) -> Result<Ids, Error> {
    let path = dir.join("member.json");
    let meta = |source| Error::Meta {
        path: path.clone(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(ids) = serde_json::from_str::<Ids>(&text) {
            return Ok(ids);
        }
    }
    std::fs::create_dir_all(dir).map_err(meta)?;
    let ids = fresh_ids();
    let text = serde_json::to_string(&ids).unwrap_or_default();
    let tmp = dir.join("member.json.tmp");
    std::fs::write(&tmp, text).map_err(meta)?;
    std::fs::rename(&tmp, &path).map_err(meta)?;
    Ok(ids)
}
