//! The Lease service (Grant, Revoke, KeepAlive, TimeToLive, Leases) and the
//! loop that revokes leases whose time is up.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::etcd::pb::etcdserverpb::{
    lease_server, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{wal, Core};

pub(crate) struct LeaseService(pub(crate) Arc<Core>);

#[tonic::async_trait]
impl lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        // A grant changes no key, so nothing is logged: leases are not kept
        // across restarts.
        let (id, ttl, rev) = self
            .0
            .write(|store, durable| {
                // etcd's quota refuses grants too while NOSPACE is raised.
                self.0.check_quota(store, 0)?;
                let (id, ttl) = store.lease_grant(req.id, req.ttl, Instant::now())?;
                Ok(((id, ttl, durable), None))
            })
            .await?;
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.0.header(rev)),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let rev = self
            .0
            .write(|store, _| {
                let rec = store.lease_revoke(id)?;
                Ok((store.rev(), rec.map(|r| wal::encode_record(&r))))
            })
            .await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.0.header(rev)),
        }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let core = self.0.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = core.stop.cancelled() => break,
                    msg = inbound.message() => msg,
                };
                let Ok(Some(msg)) = msg else { break };
                // An unknown or expired lease answers TTL 0, not an error.
                let (ttl, rev) = core.read_mut(|store, rev| {
                    (store.lease_renew(msg.id, Instant::now()).unwrap_or(0), rev)
                });
                let resp = LeaseKeepAliveResponse {
                    header: Some(core.header(rev)),
                    id: msg.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let (info, rev) = self
            .0
            .read(|store, rev| (store.lease_time_to_live(req.id, Instant::now()), rev));
        // An unknown lease answers TTL -1, not an error.
        let resp = match info {
            Some(info) => LeaseTimeToLiveResponse {
                header: Some(self.0.header(rev)),
                id: req.id,
                ttl: info.remaining,
                granted_ttl: info.granted,
                keys: if req.keys { info.keys } else { Vec::new() },
            },
            None => LeaseTimeToLiveResponse {
                header: Some(self.0.header(rev)),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let (ids, rev) = self.0.read(|store, rev| (store.leases(), rev));
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.0.header(rev)),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}

/// Revokes expired leases, each in its own revision, as etcd's leader does.
/// The revocations are logged but nobody waits for them: no client asked.
pub(crate) async fn expire_loop(core: Arc<Core>) {
    let mut tick = tokio::time::interval(core.config.lease_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = core.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut store = core.lock();
        for id in store.expired_leases(Instant::now()) {
            if let Ok(Some(rec)) = store.lease_revoke(id) {
                core.wal.append(&wal::encode_record(&rec), rec.rev);
            }
        }
    }
}
