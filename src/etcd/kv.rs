//! The KV service: Range, Put, DeleteRange, Txn and Compact over the store.

use std::sync::Arc;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::store::{Store, StoreError};
use super::{wal, Core, GRPC_OVERHEAD_BYTES};

pub(crate) struct KvService(pub(crate) Arc<Core>);

impl KvService {
    /// etcd refuses a write whose encoded request exceeds `--max-request-bytes`;
    /// gRPC refuses anything beyond that plus its overhead allowance first.
    fn check_size(&self, len: usize) -> Result<(), Status> {
        let limit = self.0.max_request_bytes() + GRPC_OVERHEAD_BYTES;
        if len > limit {
            // The words of grpc-go's own refusal, which etcd clients see.
            return Err(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({len} vs. {limit})"
            )));
        }
        if len > self.0.max_request_bytes() {
            return Err(StoreError::RequestTooLarge.into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let req = req.into_inner();
        let mut resp = self.0.read(|store, rev| store.range(&req, rev))?;
        resp.header = Some(self.0.header(resp.header.map_or(0, |h| h.revision)));
        Ok(Response::new(resp))
    }

    type RangeStreamStream = futures::stream::Empty<Result<PbRangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _req: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented(
            "unknown method RangeStream for service etcdserverpb.KV",
        ))
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        let mut resp = self
            .0
            .write(|store, _| {
                let a = store.put(&req)?;
                Ok((a.response, a.record.map(|r| wal::encode_record(&r))))
            })
            .await?;
        resp.header = Some(self.0.header(resp.header.map_or(0, |h| h.revision)));
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
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

    async fn txn(&self, req: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        let mut resp = if Store::txn_is_read_only(&req) {
            // A read-only txn is a read: it sees the durable state only.
            self.0.read(|store, rev| store.txn_read_only(&req, rev))?
        } else {
            self.0
                .write(|store, durable| {
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
        req: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let req = req.into_inner();
        let rev = self
            .0
            .write(|store, durable| {
                store.compact(req.revision, durable)?;
                Ok((durable, Some(wal::encode_compact(req.revision))))
            })
            .await?;
        Ok(Response::new(PbCompactionResponse {
            header: Some(self.0.header(rev)),
        }))
    }
}
