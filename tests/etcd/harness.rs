//! Test plumbing: a real etcd child process, the embedded server, a raw gRPC
//! client over etcd-client's protobuf types, and the side-by-side comparison.

use std::fmt::Debug;
use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use devstack::etcd::{RunningServer, Server, ServerConfig};
use etcd_client::proto::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

/// Fails the test with a clear message instead of hanging CI.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {secs} s (likely deadlocked)"),
    }
}

/// A free loopback port (there is a small race between closing and reuse).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real etcd, started on loopback with a temporary data directory and
/// killed when dropped.
pub struct RealEtcd {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl RealEtcd {
    pub async fn start(extra: &[&str]) -> RealEtcd {
        let dir = tempfile::tempdir().unwrap();
        let (cp, pp) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{cp}");
        let peer = format!("http://127.0.0.1:{pp}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = crate::real_etcd::command("real", &dir.path().join("data"), &url, &peer)
            .args(["--log-outputs", "stderr", "--logger", "zap"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the real etcd (Debian's etcd-server) must be installed");
        let etcd = RealEtcd { child, url, dir };
        etcd.wait_ready().await;
        etcd
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(raw) = Raw::connect(&self.url).await {
                let q = PbRangeRequest {
                    key: b"ready".to_vec(),
                    ..Default::default()
                };
                if tokio::time::timeout(Duration::from_millis(500), raw.range(q))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    return;
                }
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                panic!("the real etcd did not start within 20 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The embedded server with a temporary data directory.
pub struct Embedded {
    /// Held so the server runs as long as the test needs it.
    #[allow(dead_code)]
    pub server: Option<RunningServer>,
    pub url: String,
    /// The data directory, removed when the test ends.
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
}

impl Embedded {
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        tweak(&mut config);
        let server = Server::start(config).await.expect("embedded etcd starts");
        let url = server.client_url();
        Embedded {
            server: Some(server),
            url,
            dir,
        }
    }
}

/// A raw etcd v3 client: the wire messages as they are, so that every field
/// of every response can be compared.
#[derive(Clone)]
pub struct Raw {
    ch: Channel,
}

macro_rules! unary {
    ($name:ident, $path:literal, $req:ty, $resp:ty) => {
        /// The future owns a clone of the channel, so it outlives `&self`.
        pub fn $name(
            &self,
            q: $req,
        ) -> impl Future<Output = Result<$resp, Status>> + Send + 'static {
            let me = self.clone();
            async move { me.unary($path, q).await }
        }
    };
}

impl Raw {
    pub async fn connect(url: &str) -> Result<Raw, tonic::transport::Error> {
        let ch = Channel::from_shared(url.to_string())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(Raw { ch })
    }

    async fn unary<Q, P>(&self, path: &'static str, q: Q) -> Result<P, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        P: prost::Message + Default + Send + Sync + 'static,
    {
        let mut g = tonic::client::Grpc::new(self.ch.clone());
        g.ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        g.unary(
            Request::new(q),
            PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(|r| r.into_inner())
    }

    unary!(
        range,
        "/etcdserverpb.KV/Range",
        PbRangeRequest,
        PbRangeResponse
    );
    unary!(put, "/etcdserverpb.KV/Put", PbPutRequest, PbPutResponse);
    unary!(
        delete,
        "/etcdserverpb.KV/DeleteRange",
        PbDeleteRequest,
        PbDeleteResponse
    );
    unary!(txn, "/etcdserverpb.KV/Txn", PbTxnRequest, PbTxnResponse);
    unary!(
        compact,
        "/etcdserverpb.KV/Compact",
        PbCompactionRequest,
        PbCompactionResponse
    );
    unary!(
        lease_grant,
        "/etcdserverpb.Lease/LeaseGrant",
        PbLeaseGrantRequest,
        PbLeaseGrantResponse
    );
    unary!(
        lease_revoke,
        "/etcdserverpb.Lease/LeaseRevoke",
        PbLeaseRevokeRequest,
        PbLeaseRevokeResponse
    );
    unary!(
        lease_ttl,
        "/etcdserverpb.Lease/LeaseTimeToLive",
        PbLeaseTimeToLiveRequest,
        PbLeaseTimeToLiveResponse
    );
    unary!(
        lease_leases,
        "/etcdserverpb.Lease/LeaseLeases",
        PbLeaseLeasesRequest,
        PbLeaseLeasesResponse
    );
    unary!(
        status,
        "/etcdserverpb.Maintenance/Status",
        PbStatusRequest,
        PbStatusResponse
    );
    unary!(
        alarm,
        "/etcdserverpb.Maintenance/Alarm",
        PbAlarmRequest,
        PbAlarmResponse
    );
    unary!(
        member_list,
        "/etcdserverpb.Cluster/MemberList",
        PbMemberListRequest,
        PbMemberListResponse
    );

    /// Opens a watch stream. A Go gRPC server sends the response headers
    /// only with its first message, so the call completes in the background
    /// while requests are already being sent.
    pub async fn watch(&self) -> WatchConn {
        let (tx, rx) = mpsc::channel::<PbWatchRequest>(64);
        let ch = self.ch.clone();
        let opening = tokio::spawn(async move {
            let mut g = tonic::client::Grpc::new(ch);
            g.ready()
                .await
                .map_err(|e| Status::unknown(e.to_string()))?;
            g.streaming(
                Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(|r| r.into_inner())
        });
        WatchConn {
            tx,
            rx: None,
            opening: Some(opening),
        }
    }

    /// Opens a lease keep-alive stream (completing in the background, as for watches).
    pub fn keep_alive(&self) -> KeepAliveConn {
        let (tx, rx) = mpsc::channel(16);
        let ch = self.ch.clone();
        let opening = tokio::spawn(async move {
            let mut g = tonic::client::Grpc::new(ch);
            g.ready()
                .await
                .map_err(|e| Status::unknown(e.to_string()))?;
            g.streaming(
                Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static("/etcdserverpb.Lease/LeaseKeepAlive"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(|r| r.into_inner())
        });
        KeepAliveConn {
            tx,
            rx: None,
            opening: Some(opening),
        }
    }
}

type Opening<T> = tokio::task::JoinHandle<Result<Streaming<T>, Status>>;

async fn opened<'a, T>(
    rx: &'a mut Option<Streaming<T>>,
    opening: &mut Option<Opening<T>>,
) -> &'a mut Streaming<T> {
    if rx.is_none() {
        let handle = opening.take().expect("stream opening");
        let stream = within(20, "stream open", handle)
            .await
            .expect("stream task")
            .expect("stream opens");
        *rx = Some(stream);
    }
    rx.as_mut().unwrap()
}

/// One open keep-alive stream.
pub struct KeepAliveConn {
    pub tx: mpsc::Sender<PbLeaseKeepAliveRequest>,
    rx: Option<Streaming<PbLeaseKeepAliveResponse>>,
    opening: Option<Opening<PbLeaseKeepAliveResponse>>,
}

impl KeepAliveConn {
    pub async fn ask(&mut self, id: i64) -> PbLeaseKeepAliveResponse {
        self.tx.send(PbLeaseKeepAliveRequest { id }).await.unwrap();
        let rx = opened(&mut self.rx, &mut self.opening).await;
        within(10, "keep-alive", rx.message())
            .await
            .unwrap()
            .unwrap()
    }
}

/// A watch create request with every option.
#[derive(Debug, Clone, Default)]
pub struct Create {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub start_revision: i64,
    pub progress_notify: bool,
    pub filters: Vec<i32>,
    pub prev_kv: bool,
    pub watch_id: i64,
    pub fragment: bool,
}

impl Create {
    pub fn key(k: &str) -> Create {
        Create {
            key: k.into(),
            ..Default::default()
        }
    }

    pub fn prefix(k: &str) -> Create {
        Create {
            key: k.into(),
            range_end: prefix_end(k.as_bytes()),
            ..Default::default()
        }
    }

    pub fn rev(mut self, rev: i64) -> Create {
        self.start_revision = rev;
        self
    }

    pub fn prev_kv(mut self) -> Create {
        self.prev_kv = true;
        self
    }

    pub fn request(&self) -> PbWatchRequest {
        // etcd-client does not name WatchCreateRequest; fill it in place.
        let mut req = PbWatchRequest {
            request_union: Some(PbWatchRequestUnion::CreateRequest(Default::default())),
        };
        if let Some(PbWatchRequestUnion::CreateRequest(c)) = &mut req.request_union {
            c.key = self.key.clone();
            c.range_end = self.range_end.clone();
            c.start_revision = self.start_revision;
            c.progress_notify = self.progress_notify;
            c.filters = self.filters.clone();
            c.prev_kv = self.prev_kv;
            c.watch_id = self.watch_id;
            c.fragment = self.fragment;
        }
        req
    }
}

pub fn cancel_request(id: i64) -> PbWatchRequest {
    let mut req = PbWatchRequest {
        request_union: Some(PbWatchRequestUnion::CancelRequest(Default::default())),
    };
    if let Some(PbWatchRequestUnion::CancelRequest(c)) = &mut req.request_union {
        c.watch_id = id;
    }
    req
}

pub fn progress_request() -> PbWatchRequest {
    PbWatchRequest {
        request_union: Some(PbWatchRequestUnion::ProgressRequest(Default::default())),
    }
}

pub fn prefix_end(k: &[u8]) -> Vec<u8> {
    let mut end = k.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One open watch stream.
pub struct WatchConn {
    pub tx: mpsc::Sender<PbWatchRequest>,
    rx: Option<Streaming<PbWatchResponse>>,
    opening: Option<Opening<PbWatchResponse>>,
}

impl WatchConn {
    pub async fn send(&self, req: PbWatchRequest) {
        self.tx.send(req).await.expect("watch stream open");
    }

    /// Reads responses until `done` says so (or fails after `secs`).
    pub async fn until(
        &mut self,
        secs: u64,
        mut done: impl FnMut(&[PbWatchResponse]) -> bool,
    ) -> Vec<PbWatchResponse> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let rx = opened(&mut self.rx, &mut self.opening).await;
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.message()).await {
                Ok(Ok(Some(r))) => got.push(r),
                Ok(Ok(None)) => panic!("watch stream ended; got so far: {got:#?}"),
                Ok(Err(e)) => panic!("watch stream failed: {e}; got so far: {got:#?}"),
                Err(_) => panic!("watch: condition not met within {secs} s; got: {got:#?}"),
            }
        }
        got
    }

    /// Reads exactly `n` responses.
    pub async fn take(&mut self, n: usize) -> Vec<PbWatchResponse> {
        self.until(10, |got| got.len() >= n).await
    }

    /// Reads responses until `n` events have arrived in total.
    pub async fn events(&mut self, n: usize) -> Vec<PbWatchResponse> {
        self.until(10, |got| {
            got.iter().map(|r| r.events.len()).sum::<usize>() >= n
        })
        .await
    }

    /// Asserts nothing more arrives within `ms`.
    pub async fn quiet(&mut self, ms: u64) -> Option<PbWatchResponse> {
        let rx = opened(&mut self.rx, &mut self.opening).await;
        match tokio::time::timeout(Duration::from_millis(ms), rx.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            _ => None,
        }
    }
}

/// The identity parts of headers differ between any two clusters; the rest must not.
pub fn normalise(text: String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(pos) = ["cluster_id: ", "member_id: ", "raft_term: "]
        .iter()
        .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
        .min()
    {
        let (i, len) = pos;
        out.push_str(&rest[..i + len]);
        rest = &rest[i + len..];
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        let value = &rest[..digits];
        out.push_str(if value == "0" { "0" } else { "N" });
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// A result as text, errors as (code, message).
pub fn show<T: Debug>(r: &Result<T, Status>) -> String {
    match r {
        Ok(v) => normalise(format!("{v:#?}")),
        Err(s) => format!("Err({:?}, {:?})", s.code(), s.message()),
    }
}

/// The real etcd and the embedded server side by side.
pub struct Pair {
    pub real: Raw,
    pub emb: Raw,
    pub real_etcd: RealEtcd,
    pub embedded: Embedded,
    /// What was compared so far, to show context when a difference appears.
    pub log: Vec<String>,
    /// How many compared requests were refused (by both).
    pub errors: usize,
}

impl Pair {
    pub async fn start() -> Pair {
        Pair::start_with(&[], |_| {}).await
    }

    pub async fn start_with(real_args: &[&str], tweak: impl FnOnce(&mut ServerConfig)) -> Pair {
        let (real_etcd, embedded) =
            tokio::join!(RealEtcd::start(real_args), Embedded::start(tweak));
        let real = Raw::connect(&real_etcd.url).await.unwrap();
        let emb = Raw::connect(&embedded.url).await.unwrap();
        Pair {
            real,
            emb,
            real_etcd,
            embedded,
            log: Vec::new(),
            errors: 0,
        }
    }

    /// Runs `f` against both servers (real first) and requires the same answer.
    pub async fn same<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T, Status>
    where
        T: Debug,
        F: Fn(Raw) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let real = within(20, what, f(self.real.clone())).await;
        let emb = within(20, what, f(self.emb.clone())).await;
        let (a, b) = (show(&real), show(&emb));
        self.log.push(what.to_string());
        if emb.is_err() {
            self.errors += 1;
        }
        if a != b {
            panic!(
                "difference in `{what}` (after {} steps: {:?})\n--- real etcd ---\n{a}\n--- embedded ---\n{b}\n",
                self.log.len() - 1,
                self.log.iter().rev().take(8).collect::<Vec<_>>()
            );
        }
        emb
    }

    /// Compares two lists of watch responses (or anything else) already collected.
    pub fn same_value<T: Debug>(&mut self, what: &str, real: &T, emb: &T) {
        let (a, b) = (
            normalise(format!("{real:#?}")),
            normalise(format!("{emb:#?}")),
        );
        self.log.push(what.to_string());
        if a != b {
            panic!("difference in `{what}`\n--- real etcd ---\n{a}\n--- embedded ---\n{b}\n");
        }
    }

    /// The real etcd's client URL.
    pub fn real_url(&self) -> String {
        self.real_etcd.url.clone()
    }

    /// Opens a watch stream on each server.
    pub async fn watch(&self) -> (WatchConn, WatchConn) {
        (self.real.watch().await, self.emb.watch().await)
    }
}

// ---- request builders ----

pub fn put(k: &str, v: &str) -> PbPutRequest {
    PbPutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

pub fn get(k: &str) -> PbRangeRequest {
    PbRangeRequest {
        key: k.into(),
        ..Default::default()
    }
}

/// The keys from `k` up to `end` (`ranged("\0", "\0")`: every key).
pub fn ranged(k: &str, end: &str) -> PbRangeRequest {
    PbRangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub fn get_prefix(k: &str) -> PbRangeRequest {
    PbRangeRequest {
        key: k.into(),
        range_end: prefix_end(k.as_bytes()),
        ..Default::default()
    }
}

pub fn del(k: &str) -> PbDeleteRequest {
    PbDeleteRequest {
        key: k.into(),
        ..Default::default()
    }
}

pub fn del_prefix(k: &str) -> PbDeleteRequest {
    PbDeleteRequest {
        key: k.into(),
        range_end: prefix_end(k.as_bytes()),
        ..Default::default()
    }
}

pub fn op_put(p: PbPutRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(p)),
    }
}

pub fn op_get(r: PbRangeRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(r)),
    }
}

pub fn op_del(d: PbDeleteRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(d)),
    }
}

pub fn op_txn(t: PbTxnRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestTxn(t)),
    }
}

/// Compare targets and results as etcd numbers them.
pub mod cmp {
    pub const VERSION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const MOD: i32 = 2;
    pub const VALUE: i32 = 3;
    pub const LEASE: i32 = 4;
    pub const EQUAL: i32 = 0;
    pub const GREATER: i32 = 1;
    pub const LESS: i32 = 2;
    pub const NOT_EQUAL: i32 = 3;
}

pub fn compare(key: &str, target: i32, result: i32, value: PbTargetUnion) -> PbCompare {
    PbCompare {
        result,
        target,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(value),
    }
}

pub fn lease(id: i64, ttl: i64) -> PbLeaseGrantRequest {
    PbLeaseGrantRequest { ttl, id }
}

/// The arguments of `devstack etcd serve` on loopback `port` storing in `dir`.
pub fn serve_args(dir: &Path, port: u16) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["etcd", "serve", "--listen"]
        .iter()
        .map(Into::into)
        .collect();
    args.push(format!("127.0.0.1:{port}").into());
    args.push("--data-dir".into());
    args.push(dir.into());
    args
}

/// Where a `devstack etcd serve` child started by [`serve`] logs.
pub fn serve_log(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.with_extension(format!("{port}.log"))
}

/// `devstack etcd serve` as a child process, with `extra` arguments; its
/// stderr goes to [`serve_log`].
pub fn serve_with(dir: &Path, port: u16, extra: &[&str]) -> ChildGuard {
    let log = std::fs::File::create(serve_log(dir, port)).unwrap();
    ChildGuard(
        std::process::Command::new(devstack_bin())
            .args(serve_args(dir, port))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// `devstack etcd serve` as a child process (see [`serve_with`]).
pub fn serve(dir: &Path, port: u16) -> ChildGuard {
    serve_with(dir, port, &[])
}

/// A client of the server on `port`, once it answers (within 10 s).
pub async fn connect(port: u16) -> Raw {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(raw) = Raw::connect(&url).await {
            if raw.range(get("probe")).await.is_ok() {
                return raw;
            }
        }
        assert!(
            Instant::now() < deadline,
            "devstack etcd serve did not come up on {url}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A memory figure of process `pid` from /proc, in KiB: `VmRSS` (resident
/// now) or `VmHWM` (the peak of resident memory).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} for pid {pid}"))
}

/// Path of the built `devstack` binary.
pub fn devstack_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_devstack"))
}
