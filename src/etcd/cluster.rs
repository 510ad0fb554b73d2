//! The Maintenance and Cluster services, answered as a one-member cluster:
//! enough for `etcdctl endpoint status`, `endpoint health`, `member list`,
//! `alarm list` / `alarm disarm` (the `NOSPACE` alarm of the space quota)
//! and `defrag`. Membership changes and snapshots are refused.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::etcd::pb::etcdserverpb::{
    cluster_server, maintenance_server, AlarmMember, AlarmRequest, AlarmResponse,
    DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, Member, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{Core, ALARM_NOSPACE, ETCD_VERSION, RAFT_TERM};

pub(crate) struct MaintenanceService(pub(crate) Arc<Core>);
pub(crate) struct ClusterService(pub(crate) Arc<Core>);

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not supported by devstack's embedded etcd"
    ))
}

impl Core {
    /// The size of the data on disk (the log), or an estimate in memory.
    fn db_size(&self) -> i64 {
        match &self.config.data_dir {
            Some(dir) => std::fs::metadata(dir.join("wal"))
                .map(|m| m.len() as i64)
                .unwrap_or(0),
            None => 0,
        }
    }

    fn member(&self) -> Member {
        Member {
            id: self.ids.member_id,
            name: self.config.name.clone(),
            // There are no peers; report where a peer port would be, as a
            // single-member etcd started with defaults does.
            peer_ur_ls: vec!["http://localhost:2380".into()],
            client_ur_ls: self.client_urls.clone(),
            is_learner: false,
        }
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // The only alarm this member raises is NOSPACE (the space quota).
        // GET lists it; DEACTIVATE and ACTIVATE name a member and an alarm,
        // as in etcd (etcdctl disarms what it listed), and a write still
        // over the quota raises it again.
        let req = req.into_inner();
        let mine = req.member_id == self.0.ids.member_id;
        let raised = match req.action {
            0 => {
                self.0.nospace.load(Ordering::Relaxed)
                    && (req.alarm == 0 || req.alarm == ALARM_NOSPACE)
            }
            1 if req.alarm == ALARM_NOSPACE && mine => {
                self.0.nospace.store(true, Ordering::Relaxed);
                true
            }
            1 => return Err(unsupported("raising this alarm")),
            _ => {
                req.alarm == ALARM_NOSPACE && mine && self.0.nospace.swap(false, Ordering::Relaxed)
            }
        };
        Ok(Response::new(AlarmResponse {
            // etcd answers an alarm list without a header.
            header: None,
            alarms: if raised {
                vec![AlarmMember {
                    member_id: self.0.ids.member_id,
                    alarm: ALARM_NOSPACE,
                }]
            } else {
                Vec::new()
            },
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let rev = self.0.durable_rev();
        let index = self.0.raft_index.load(Ordering::Relaxed);
        let size = self.0.db_size();
        Ok(Response::new(StatusResponse {
            header: Some(self.0.header(rev)),
            version: ETCD_VERSION.into(),
            db_size: size,
            leader: self.0.ids.member_id,
            raft_index: index,
            raft_term: RAFT_TERM,
            raft_applied_index: index,
            errors: if self.0.nospace.load(Ordering::Relaxed) {
                // etcd reports raised alarms here, in AlarmMember's text form.
                vec![format!("memberID:{} alarm:NOSPACE ", self.0.ids.member_id)]
            } else {
                Vec::new()
            },
            db_size_in_use: size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: self.0.config.quota_backend_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // The log is compacted on restart; there is nothing to defragment.
        Ok(Response::new(DefragmentResponse {
            header: Some(self.0.header(self.0.durable_rev())),
        }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unsupported("Hash"))
    }

    async fn hash_kv(
        &self,
        _req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        Err(unsupported("HashKV"))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unsupported("Snapshot"))
    }

    async fn move_leader(
        &self,
        _req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unsupported("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unsupported("Downgrade"))
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(unsupported("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(unsupported("MemberRemove"))
    }

    async fn member_update(
        &self,
        _req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unsupported("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.0.header(self.0.durable_rev())),
            members: vec![self.0.member()],
        }))
    }

    async fn member_promote(
        &self,
        _req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(unsupported("MemberPromote"))
    }
}
