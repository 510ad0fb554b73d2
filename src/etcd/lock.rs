//! The Lock service (`v3lockpb.Lock`), done as etcd's own lock server does it
//! with its client-side mutex: the lock `name` is held by the oldest key under
//! `name/`, each waiter's key is `name/<lease in hex>` attached to its lease,
//! so a lock is held only while its lease lives.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use super::pb::prefix_end;
use super::pb::v3lockpb::{lock_server, LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use super::{wal, Core};

pub(crate) struct LockService(pub(crate) Arc<Core>);

#[tonic::async_trait]
impl lock_server::Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        lock(self.0.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        unlock(self.0.clone(), req.into_inner())
            .await
            .map(Response::new)
    }
}

async fn lock(core: Arc<Core>, req: LockRequest) -> Result<LockResponse, Status> {
    let mut prefix = req.name.clone();
    prefix.push(b'/');
    let key = [prefix.as_slice(), format!("{:x}", req.lease).as_bytes()].concat();
    // Join the queue: create our key under the lease, or find it if this
    // lease already waits for (or holds) the lock.
    let my_rev = core
        .write(|store, _| {
            let current = store.rev();
            let existing = store.range(
                &RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                },
                current,
            )?;
            if let Some(kv) = existing.kvs.first() {
                return Ok((kv.create_revision, None));
            }
            let a = store.put(&PutRequest {
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
                &RangeRequest {
                    key: key.clone(),
                    count_only: true,
                    ..Default::default()
                },
                rev,
            );
            let older = store.range(
                &RangeRequest {
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
            return Ok(LockResponse {
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

async fn unlock(core: Arc<Core>, req: UnlockRequest) -> Result<UnlockResponse, Status> {
    let rev = core
        .write(|store, _| {
            let a = store.delete_range(&DeleteRangeRequest {
                key: req.key.clone(),
                ..Default::default()
            })?;
            let rev = a.response.header.map_or(store.rev(), |h| h.revision);
            Ok((rev, a.record.map(|r| wal::encode_record(&r))))
        })
        .await?;
    Ok(UnlockResponse {
        header: Some(core.header(rev)),
    })
}
