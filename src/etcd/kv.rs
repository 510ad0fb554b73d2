//! The KV service: Range, Put, DeleteRange, Txn and Compact over the store.

use std::sync::Arc;

use crate::etcd::pb::etcdserverpb::request_op::Request as Op;
use crate::etcd::pb::etcdserverpb::{
    kv_server, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::store::{self, KeyRange, Store, StoreError};
use super::{wal, Core};

/// How many keys a Range reads per hold of the store's lock: a range over
/// the whole store must not keep lease renewals and writes waiting.
const RANGE_CHUNK: usize = 1024;

pub(crate) struct KvService(pub(crate) Arc<Core>);

impl KvService {
    /// etcd refuses a write whose encoded request exceeds `--max-request-bytes`
    /// (gRPC has refused anything beyond that plus its allowance already).
    fn check_size(&self, len: usize) -> Result<(), Status> {
        if len > self.0.max_request_bytes() {
            return Err(StoreError::RequestTooLarge.into());
        }
        Ok(())
    }
}

/// Whether a txn may add data (a put in any branch, at any depth): those are
/// the txns etcd's quota refuses.
fn txn_has_put(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(t)) => txn_has_put(t),
            _ => false,
        })
}

#[tonic::async_trait]
impl kv_server::Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        let (rev, current) = self.0.read(|store, current| {
            Ok::<_, StoreError>((store.range_rev(&req, current)?, current))
        })?;
        // The range is read in pieces, each under the lock for a moment, and
        // built (copied, filtered, sorted) without it.
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut found = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (chunk, next) = self
                .0
                .read(|store, _| store.scan_chunk(&range, rev, after.as_deref(), RANGE_CHUNK))?;
            found.extend(chunk);
            match next {
                Some(key) => after = Some(key),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        // Copying and sorting a large range is long work: it is done on the
        // blocking pool, so the async workers stay free for keep-alives.
        let mut resp = if found.len() <= RANGE_CHUNK {
            store::finish_range(&req, current, found.iter())
        } else {
            tokio::task::spawn_blocking(move || store::finish_range(&req, current, found.iter()))
                .await
                .map_err(|e| Status::internal(format!("range: {e}")))?
        };
        resp.header = Some(self.0.header(current));
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        let mut resp = self
            .0
            .write(|store, _| {
                self.0.check_quota(store, req.encoded_len())?;
                let a = store.put(&req)?;
                Ok((a.response, a.record.map(|r| wal::encode_record(&r))))
            })
            .await?;
        resp.header = Some(self.0.header(resp.header.map_or(0, |h| h.revision)));
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        let mut resp = self
            .0
            .write(|store, _| {
                let a = store.delete_range(&req)?;
                Ok((a.response, a.record.map(|r| wal::encode_record(&r))))
            })
            .await?;
        resp.header = Some(self.0.header(resp.header.map_or(0, |h| h.revision)));
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        let mut resp = if Store::txn_is_read_only(&req) {
            // A read-only txn is a read: it sees the durable state only.
            self.0.read(|store, rev| store.txn_read_only(&req, rev))?
        } else {
            self.0
                .write(|store, durable| {
                    if txn_has_put(&req) {
                        self.0.check_quota(store, req.encoded_len())?;
                    }
                    let a = store.txn(&req, durable)?;
                    Ok((a.response, a.record.map(|r| wal::encode_record(&r))))
                })
                .await?
        };
        resp.header = Some(self.0.header(resp.header.map_or(0, |h| h.revision)));
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = req.into_inner();
        let rev = self
            .0
            .write(|store, durable| {
                store.compact(req.revision, durable)?;
                Ok((durable, Some(wal::encode_compact(req.revision))))
            })
            .await?;
        Ok(Response::new(CompactionResponse {
            header: Some(self.0.header(rev)),
        }))
    }
}
