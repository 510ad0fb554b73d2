//! The Watch service: one task per gRPC stream, holding that stream's watchers.
//!
//! Watchers pull: whenever the durable revision moves, the stream's task reads
//! the new records from the store's log and sends each watcher what matches.
//! A watcher is a cursor (`next_rev`) into the log, so events arrive in
//! revision order, each exactly once, and a slow client only slows its own
//! stream. Requests on a stream are handled in order, so `created` replies
//! come in request order and a progress reply is sent only after every event
//! at or below its revision.

/// Why a watch whose start revision was compacted away is canceled (etcd 3.5's text).
pub const COMPACTED_REASON: &str = "mvcc: required revision has been compacted";

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use crate::etcd::pb::etcdserverpb::{
    watch_request, watch_server, ResponseHeader, WatchRequest, WatchResponse,
};
use crate::etcd::pb::mvccpb;
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::store::{Event, EventKind, KeyRange, Record};
use super::Core;

/// etcd's `watchBatchMaxRevs`: a catch-up response carries at most this many revisions.
const MAX_REVS_PER_BATCH: usize = 1000;

pub(crate) struct WatchService(pub(crate) Arc<Core>);

#[tonic::async_trait]
impl watch_server::Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let stream = WatchStream {
            core: self.0.clone(),
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(req.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One watcher on a stream.
struct Watcher {
    range: KeyRange,
    /// The next revision this watcher has not yet been sent.
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Nothing was sent since the last progress tick.
    idle: bool,
    /// Caught up with history: new revisions go out one response each, as
    /// etcd's synced watchers get them; a catching-up watcher gets batches.
    synced: bool,
}

/// The client went away (or the server is stopping).
struct Gone;

struct WatchStream {
    core: Arc<Core>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    /// Where automatic watch IDs continue from (etcd's `nextID`).
    next_id: i64,
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let mut durable = self.core.durable();
        let period = self.core.config.progress_notify_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let step = tokio::select! {
                biased;
                _ = self.core.stop.cancelled() => return,
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    _ => return,
                },
                changed = durable.changed() => match changed {
                    Ok(()) => Ok(()),
                    Err(_) => return,
                },
                _ = tick.tick() => self.progress_tick().await,
            };
            if step.is_err() {
                return;
            }
            if self.deliver().await.is_err() {
                return;
            }
        }
    }

    fn header(&self, rev: i64) -> Option<ResponseHeader> {
        Some(self.core.header(rev))
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        self.tx.send(Ok(resp)).await.map_err(|_| Gone)
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => {
                let rev = self.core.durable_rev();
                let key = if c.key.is_empty() { vec![0] } else { c.key };
                let range = KeyRange::new(&key, &c.range_end);
                let id = if let KeyRange::Between(k, end) = &range {
                    if k >= end {
                        Err("mvcc: watcher range is empty")
                    } else {
                        Ok(())
                    }
                } else {
                    Ok(())
                }
                .and_then(|()| self.pick_id(c.watch_id));
                let resp = match id {
                    Ok(id) => {
                        let start = if c.start_revision == 0 {
                            rev + 1
                        } else {
                            c.start_revision
                        };
                        self.watchers.insert(
                            id,
                            Watcher {
                                range,
                                next_rev: start,
                                no_put: c.filters.contains(&0),
                                no_delete: c.filters.contains(&1),
                                prev_kv: c.prev_kv,
                                fragment: c.fragment,
                                progress_notify: c.progress_notify,
                                idle: true,
                                synced: start > rev,
                            },
                        );
                        WatchResponse {
                            header: self.header(rev),
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        }
                    }
                    Err(reason) => WatchResponse {
                        header: self.header(rev),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: reason.into(),
                        ..Default::default()
                    },
                };
                self.send(resp).await
            }
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    let rev = self.core.durable_rev();
                    self.send(WatchResponse {
                        header: self.header(rev),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // Everything at or below the reported revision goes out first,
                // so the client can trust the progress revision.
                let rev = self.deliver().await?;
                self.send(WatchResponse {
                    header: self.header(rev),
                    watch_id: -1,
                    ..Default::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    fn pick_id(&mut self, requested: i64) -> Result<i64, &'static str> {
        if requested != 0 {
            if self.watchers.contains_key(&requested) {
                return Err("mvcc: duplicate watch ID provided on the WatchStream");
            }
            return Ok(requested);
        }
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        Ok(id)
    }

    /// etcd's periodic progress notification: every idle, caught-up watcher
    /// that asked for it hears the current revision.
    async fn progress_tick(&mut self) -> Result<(), Gone> {
        let rev = self.deliver().await?;
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && w.synced && w.idle)
            .map(|(id, _)| *id)
            .collect();
        for w in self.watchers.values_mut() {
            w.idle = true;
        }
        for id in due {
            self.send(WatchResponse {
                header: self.header(rev),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Sends every watcher everything up to the durable revision; returns that revision.
    async fn deliver(&mut self) -> Result<i64, Gone> {
        let target = self.core.durable_rev();
        loop {
            let mut work: Vec<(i64, Vec<Arc<Record>>, i64)> = Vec::new();
            let mut compacted_out: Vec<i64> = Vec::new();
            let compacted;
            {
                let store = self.core.lock();
                compacted = store.compacted();
                for (id, w) in &self.watchers {
                    if w.next_rev > target {
                        continue;
                    }
                    if w.next_rev < compacted {
                        compacted_out.push(*id);
                        continue;
                    }
                    let max = if w.synced {
                        usize::MAX
                    } else {
                        MAX_REVS_PER_BATCH
                    };
                    let records = store.records(w.next_rev, target, max);
                    let upto = records.last().map_or(target, |r| r.rev);
                    // A batch cut at the limit continues at the next revision;
                    // otherwise the watcher has seen everything up to `target`.
                    let next = if records.len() == max { upto } else { target };
                    work.push((*id, records, next));
                }
            }
            if work.is_empty() && compacted_out.is_empty() {
                return Ok(target);
            }
            for id in compacted_out {
                self.watchers.remove(&id);
                // etcd sends this without a header revision: the response is
                // about the compaction, not about a store revision.
                self.send(WatchResponse {
                    header: self.header(0),
                    watch_id: id,
                    canceled: true,
                    compact_revision: compacted,
                    // etcd 3.4 leaves the reason empty; 3.5 (whose version we
                    // report) and clients that log it expect the mvcc error.
                    cancel_reason: COMPACTED_REASON.into(),
                    ..Default::default()
                })
                .await?;
            }
            for (id, records, next) in work {
                let Some(w) = self.watchers.get(&id) else {
                    continue;
                };
                let mut responses = Vec::new();
                if w.synced {
                    for rec in &records {
                        let events = self.events_for(w, rec, compacted);
                        if !events.is_empty() {
                            responses.push(self.event_response(id, rec.rev, events));
                        }
                    }
                } else {
                    let events: Vec<mvccpb::Event> = records
                        .iter()
                        .flat_map(|rec| self.events_for(w, rec, compacted))
                        .collect();
                    if !events.is_empty() {
                        responses.push(self.event_response(id, target, events));
                    }
                }
                let fragment = w.fragment;
                if let Some(w) = self.watchers.get_mut(&id) {
                    w.next_rev = next + 1;
                    if next >= target {
                        w.synced = true;
                    }
                    if !responses.is_empty() {
                        w.idle = false;
                    }
                }
                for resp in responses {
                    if fragment {
                        self.send_fragments(resp).await?;
                    } else {
                        self.send(resp).await?;
                    }
                }
            }
        }
    }

    fn events_for(&self, w: &Watcher, rec: &Record, compacted: i64) -> Vec<mvccpb::Event> {
        rec.events
            .iter()
            .filter(|e| w.range.contains(&e.kv.key))
            .filter(|e| match e.kind {
                EventKind::Put => !w.no_put,
                EventKind::Delete => !w.no_delete,
            })
            .map(|e| to_pb(e, w.prev_kv, compacted))
            .collect()
    }

    fn event_response(&self, id: i64, rev: i64, events: Vec<mvccpb::Event>) -> WatchResponse {
        WatchResponse {
            header: self.header(rev),
            watch_id: id,
            events,
            ..Default::default()
        }
    }

    /// etcd's `sendFragments`: a response bigger than the request limit (plus
    /// gRPC's allowance, as etcd's watch server counts it) is split into
    /// pieces, all but the last marked `fragment`.
    async fn send_fragments(&self, resp: WatchResponse) -> Result<(), Gone> {
        let max = self.core.max_request_bytes() + super::GRPC_OVERHEAD_BYTES;
        if resp.encoded_len() < max || resp.events.len() < 2 {
            return self.send(resp).await;
        }
        let mut events = resp.events.clone().into_iter().peekable();
        let template = WatchResponse {
            events: Vec::new(),
            fragment: true,
            ..resp
        };
        while events.peek().is_some() {
            let mut cur = template.clone();
            while let Some(ev) = events.peek() {
                cur.events.push(ev.clone());
                if cur.events.len() > 1 && cur.encoded_len() >= max {
                    cur.events.pop();
                    break;
                }
                events.next();
            }
            if events.peek().is_none() {
                cur.fragment = false;
            }
            self.send(cur).await?;
        }
        Ok(())
    }
}

/// An event as etcd sends it. prev_kv is what a read at `mod_revision - 1`
/// returns: nothing for a create, nothing once that revision is compacted.
fn to_pb(e: &Event, want_prev: bool, compacted: i64) -> mvccpb::Event {
    let prev = if want_prev && !e.is_create() && e.kv.mod_revision > compacted {
        e.prev.as_deref().cloned()
    } else {
        None
    };
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        },
        kv: Some((*e.kv).clone()),
        prev_kv: prev,
    }
}
