//! devstack's etcd client: the calls devstack itself makes to an etcd (its
//! embedded one or a real cluster) over the tonic clients generated in
//! [`super::pb`]. Reads, writes, transactions, watches and leases, each a
//! thin wrapper that keeps etcd's messages.
//!
//! Like the clients etcd ships, [`Client::connect`] does not wait for a
//! connection: the endpoints are balanced over, connected to on first use,
//! and a request fails (with the reason) when none answers.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use super::pb::etcdserverpb::{
    compare, kv_client::KvClient, lease_client::LeaseClient, request_op, watch_client::WatchClient,
    watch_request, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use super::pb::prefix_end;

/// What a call to etcd could not do, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("invalid etcd endpoint `{endpoint}`: {why}")]
    Endpoint { endpoint: String, why: String },
    /// etcd (or the connection to it) refused or failed the request.
    #[error("grpc request error: {0}")]
    Status(#[from] tonic::Status),
    #[error("watch error: {0}")]
    Watch(String),
    #[error("lease keep alive error: {0}")]
    KeepAlive(String),
}

/// How long to wait: for a connection, and for each answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub request: Option<Duration>,
}

impl Timeouts {
    pub fn new(connect: Duration, request: Duration) -> Timeouts {
        Timeouts {
            connect: Some(connect),
            request: Some(request),
        }
    }
}

/// A client of one etcd cluster; clones share the connections.
#[derive(Clone)]
pub struct Client {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
}

impl Client {
    /// A client of the etcd at `endpoints` (`http://host:port`, or
    /// `host:port`). Nothing is connected yet: see the module's doc.
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        timeouts: Timeouts,
    ) -> Result<Client, Error> {
        let mut balanced = Vec::new();
        for e in endpoints {
            balanced.push(endpoint(e.as_ref(), timeouts)?);
        }
        if balanced.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let (channel, changes) = Channel::balance_channel(64);
        for e in balanced {
            let uri = e.uri().clone();
            changes
                .send(Change::Insert(uri.clone(), e))
                .await
                .map_err(|_| Error::Endpoint {
                    endpoint: uri.to_string(),
                    why: "the connection balancer stopped".into(),
                })?;
        }
        Ok(Client {
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        })
    }

    /// A Range as it comes.
    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Error> {
        Ok(self.kv.range(req).await?.into_inner())
    }

    /// `key`, or every key starting with it when `prefix`.
    pub async fn get(
        &mut self,
        key: impl Into<Vec<u8>>,
        prefix: bool,
    ) -> Result<RangeResponse, Error> {
        let (key, range_end) = range_of(key.into(), prefix);
        self.range(RangeRequest {
            key,
            range_end,
            ..Default::default()
        })
        .await
    }

    /// Writes `key` (attached to `lease` unless it is 0).
    pub async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<PutResponse, Error> {
        let req = PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        };
        Ok(self.kv.put(req).await?.into_inner())
    }

    /// Deletes `key`, or every key starting with it when `prefix`.
    pub async fn delete(
        &mut self,
        key: impl Into<Vec<u8>>,
        prefix: bool,
    ) -> Result<DeleteRangeResponse, Error> {
        let (key, range_end) = range_of(key.into(), prefix);
        let req = DeleteRangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        Ok(self.kv.delete_range(req).await?.into_inner())
    }

    pub async fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Error> {
        Ok(self.kv.txn(req).await?.into_inner())
    }

    /// Starts a watch on its own stream; the stream lives as long as the
    /// returned [`WatchStream`].
    pub async fn watch(&mut self, create: WatchCreateRequest) -> Result<WatchStream, Error> {
        let (requests, rx) = mpsc::channel(8);
        requests
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
            })
            .await
            .map_err(|e| Error::Watch(e.to_string()))?;
        let responses = self
            .watch
            .watch(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(WatchStream {
            _requests: requests,
            responses,
        })
    }

    pub async fn lease_grant(&mut self, ttl: i64) -> Result<LeaseGrantResponse, Error> {
        let req = LeaseGrantRequest { ttl, id: 0 };
        Ok(self.lease.lease_grant(req).await?.into_inner())
    }

    pub async fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        let req = LeaseRevokeRequest { id };
        Ok(self.lease.lease_revoke(req).await?.into_inner())
    }

    /// The lease's remaining TTL (-1 when it does not exist), with the keys
    /// attached to it when `keys`.
    pub async fn lease_time_to_live(
        &mut self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        let req = LeaseTimeToLiveRequest { id, keys };
        Ok(self.lease.lease_time_to_live(req).await?.into_inner())
    }

    /// Opens a keep-alive stream for lease `id` and renews it once; an
    /// error when the lease does not exist.
    pub async fn lease_keep_alive(&mut self, id: i64) -> Result<(LeaseKeeper, LeaseStream), Error> {
        let (requests, rx) = mpsc::channel(8);
        let keeper = LeaseKeeper { id, requests };
        keeper.keep_alive().await?;
        let mut stream = LeaseStream(
            self.lease
                .lease_keep_alive(ReceiverStream::new(rx))
                .await?
                .into_inner(),
        );
        match stream.message().await? {
            Some(resp) if resp.ttl > 0 => Ok((keeper, stream)),
            Some(_) => Err(Error::KeepAlive(format!("lease {id:x} not found"))),
            None => Err(Error::KeepAlive(
                "the server ended the keep-alive stream at once".into(),
            )),
        }
    }
}

fn endpoint(url: &str, timeouts: Timeouts) -> Result<Endpoint, Error> {
    let invalid = |why: String| Error::Endpoint {
        endpoint: url.to_string(),
        why,
    };
    if url.starts_with("https://") {
        return Err(invalid(
            "TLS (https) is not supported; give an http:// endpoint".into(),
        ));
    }
    let full = if url.starts_with("http://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let mut endpoint = Endpoint::from_shared(full).map_err(|e| invalid(e.to_string()))?;
    if let Some(t) = timeouts.request {
        endpoint = endpoint.timeout(t);
    }
    if let Some(t) = timeouts.connect {
        endpoint = endpoint.connect_timeout(t);
    }
    Ok(endpoint)
}

/// A watch's responses; the watch ends when this is dropped.
pub struct WatchStream {
    /// Kept open: closing the request side would end the stream.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchStream {
    /// The next response; `None` once the server ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Error> {
        Ok(self.responses.message().await?)
    }
}

/// Sends renewals of one lease on its keep-alive stream.
pub struct LeaseKeeper {
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
}

impl LeaseKeeper {
    /// Asks for one renewal; its answer comes on the [`LeaseStream`].
    pub async fn keep_alive(&self) -> Result<(), Error> {
        self.requests
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| Error::KeepAlive("the keep-alive stream is closed".into()))
    }
}

/// The answers to a [`LeaseKeeper`]'s renewals.
pub struct LeaseStream(Streaming<LeaseKeepAliveResponse>);

impl LeaseStream {
    /// The next answer; `None` once the server ended the stream.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>, Error> {
        Ok(self.0.message().await?)
    }
}

/// The range of `key` alone, or of every key starting with it when
/// `prefix` (every key at all for an empty prefix, as etcdctl has it).
pub fn range_of(key: Vec<u8>, prefix: bool) -> (Vec<u8>, Vec<u8>) {
    match (prefix, key.is_empty()) {
        (false, _) => (key, Vec::new()),
        (true, true) => (vec![0], vec![0]),
        (true, false) => {
            let end = prefix_end(&key);
            (key, end)
        }
    }
}

/// A watch of `key`, or of every key starting with it when `prefix`, from
/// revision `start` (0: from now).
pub fn watch_of(key: impl Into<Vec<u8>>, prefix: bool, start: i64) -> WatchCreateRequest {
    let (key, range_end) = range_of(key.into(), prefix);
    WatchCreateRequest {
        key,
        range_end,
        start_revision: start,
        ..Default::default()
    }
}

/// A transaction operation writing `key` on `lease` (0: none).
pub fn op_put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        })),
    }
}

/// A transaction operation deleting `key`.
pub fn op_delete(key: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    }
}

/// A transaction condition: `key` is attached to `lease`.
pub fn lease_is(key: impl Into<Vec<u8>>, lease: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Lease as i32,
        key: key.into(),
        target_union: Some(compare::TargetUnion::Lease(lease)),
        range_end: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{Server, ServerConfig};

    #[tokio::test]
    async fn leases_txns_and_keep_alives_against_a_server() {
        let server = Server::start(ServerConfig::in_memory("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("server");
        let mut client = Client::connect(&[server.client_url()], Timeouts::default())
            .await
            .expect("connect");
        let lease = client.lease_grant(30).await.expect("grant").id;
        client.put("/k", "v", lease).await.expect("put");
        // Only while the key is on the lease does the delete happen.
        let on_other = TxnRequest {
            compare: vec![lease_is("/k", lease + 1)],
            success: vec![op_delete("/k")],
            failure: Vec::new(),
        };
        assert!(!client.txn(on_other).await.expect("txn").succeeded);
        let ttl = client.lease_time_to_live(lease, true).await.expect("ttl");
        assert!(ttl.ttl > 0);
        assert_eq!(ttl.keys, [b"/k".to_vec()]);
        let (keeper, mut answers) = client.lease_keep_alive(lease).await.expect("keep-alive");
        keeper.keep_alive().await.expect("renewal sent");
        let answer = answers
            .message()
            .await
            .expect("answer")
            .expect("the stream goes on");
        assert_eq!((answer.id, answer.ttl), (lease, 30));
        client.lease_revoke(lease).await.expect("revoke");
        assert!(client.get("/k", false).await.expect("get").kvs.is_empty());
        let gone = client
            .lease_keep_alive(lease)
            .await
            .err()
            .expect("a revoked lease");
        assert!(gone.to_string().contains("not found"), "{gone}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bad_and_unreachable_endpoints_say_why() {
        let none: [&str; 0] = [];
        let err = Client::connect(&none, Timeouts::default()).await.err();
        assert!(matches!(err, Some(Error::NoEndpoints)));
        let err = Client::connect(&["https://127.0.0.1:2379"], Timeouts::default())
            .await
            .err()
            .expect("https is refused");
        assert!(err.to_string().contains("https://127.0.0.1:2379"), "{err}");
        // A port nothing listens on: connecting succeeds (lazily), the
        // request fails with the connection's error.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let timeouts = Timeouts::new(Duration::from_secs(2), Duration::from_secs(2));
        let mut client = Client::connect(&[addr.to_string()], timeouts)
            .await
            .expect("a lazy client");
        let err = client.get("/k", false).await.expect_err("nobody answers");
        assert!(
            matches!(&err, Error::Status(s) if s.code() == tonic::Code::Unavailable),
            "{err}"
        );
    }
}
