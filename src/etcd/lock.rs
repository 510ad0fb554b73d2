//! The Lock service (`v3lockpb.Lock`), done as etcd's own lock server does it
//! with its client-side mutex: the lock `name` is held by the oldest key under
//! `name/`, each waiter's key is `name/<lease in hex>` attached to its lease,
//! so a lock is held only while its lease lives.
//!
//! etcd-client exports the response types but not the request types or the
//! server plumbing of this service, so both are written out here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use etcd_client::proto::{
    PbDeleteRequest, PbLockResponse, PbPutRequest, PbRangeRequest, PbUnlockResponse,
};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::{Request, Response, Status};

use super::{wal, Core};

/// `v3lockpb.LockRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub lease: i64,
}

/// `v3lockpb.UnlockRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

#[derive(Clone)]
pub(crate) struct LockServer(pub(crate) Arc<Core>);

impl tonic::server::NamedService for LockServer {
    const NAME: &'static str = "v3lockpb.Lock";
}

/// A unary gRPC method as a closure.
struct Unary<F>(F);

impl<F, Req, Resp, Fut> tonic::server::UnaryService<Req> for Unary<F>
where
    F: FnMut(Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    type Response = Resp;
    type Future = Fut;

    fn call(&mut self, request: Request<Req>) -> Fut {
        (self.0)(request)
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for LockServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let core = self.0.clone();
        match req.uri().path() {
            "/v3lockpb.Lock/Lock" => Box::pin(async move {
                let svc = Unary(move |r: Request<LockRequest>| {
                    let core = core.clone();
                    async move { lock(core, r.into_inner()).await.map(Response::new) }
                });
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(svc, req).await)
            }),
            "/v3lockpb.Lock/Unlock" => Box::pin(async move {
                let svc = Unary(move |r: Request<UnlockRequest>| {
                    let core = core.clone();
                    async move { unlock(core, r.into_inner()).await.map(Response::new) }
                });
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(svc, req).await)
            }),
            _ => Box::pin(async move {
                Ok(Status::unimplemented("unknown method for service v3lockpb.Lock").into_http())
            }),
        }
    }
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

async fn lock(core: Arc<Core>, req: LockRequest) -> Result<PbLockResponse, Status> {
    let mut prefix = req.name.clone();
    prefix.push(b'/');
    let key = [prefix.as_slice(), format!("{:x}", req.lease).as_bytes()].concat();
    // Join the queue: create our key under the lease, or find it if this
    // lease already waits for (or holds) the lock.
    let my_rev = core
        .write(|store, _| {
            let current = store.rev();
            let existing = store.range(
                &PbRangeRequest {
                    key: key.clone(),
                    ..Default::default()
                },
                current,
            )?;
            if let Some(kv) = existing.kvs.first() {
                return Ok((kv.create_revision, None));
            }
            let a = store.put(&PbPutRequest {
                key: key.clone(),
                lease: req.lease,
                ..Default::default()
            })?;
            let rev = a.response.header.map_or(current, |h| h.revision);
            Ok((rev, a.record.map(|r| wal::encode_record(&r))))
        })
        .await
        // etcd's lock server passes its client's error on as a plain error,
        // which gRPC sends with code Unknown.
        .map_err(|s| Status::unknown(s.message()))?;
    // Wait until every older waiter is gone.
    let mut durable = core.durable();
    loop {
        let (mine, older, rev) = core.read(|store, rev| {
            let mine = store.range(
                &PbRangeRequest {
                    key: key.clone(),
                    count_only: true,
                    ..Default::default()
                },
                rev,
            );
            let older = store.range(
                &PbRangeRequest {
                    key: prefix.clone(),
                    range_end: prefix_end(&prefix),
                    max_create_revision: my_rev - 1,
                    keys_only: true,
                    ..Default::default()
                },
                rev,
            );
            (mine.map(|r| r.count), older.map(|r| r.kvs.len()), rev)
        });
        if mine? == 0 {
            if rev >= my_rev {
                // Our key went with our lease: the lock can no longer be held.
                return Err(Status::unknown("etcdserver: requested lease not found"));
            }
        } else if older? == 0 {
            return Ok(PbLockResponse {
                header: Some(core.header(rev)),
                key,
            });
        }
        tokio::select! {
            _ = core.stop.cancelled() => return Err(Status::unavailable("etcdserver: server stopped")),
            changed = durable.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("etcdserver: server stopped"));
                }
            }
        }
    }
}

async fn unlock(core: Arc<Core>, req: UnlockRequest) -> Result<PbUnlockResponse, Status> {
    let rev = core
        .write(|store, _| {
            let a = store.delete_range(&PbDeleteRequest {
                key: req.key.clone(),
                ..Default::default()
            })?;
            let rev = a.response.header.map_or(store.rev(), |h| h.revision);
            Ok((rev, a.record.map(|r| wal::encode_record(&r))))
        })
        .await?;
    Ok(PbUnlockResponse {
        header: Some(core.header(rev)),
    })
}
