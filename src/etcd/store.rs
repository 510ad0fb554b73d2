//! The MVCC store: etcd's revision model, key history, the event log, leases and
//! compaction, as plain data. No I/O, no clock (callers pass `now`), no locks.
//!
//! The store applies requests with the semantics of etcd's `applierV3backend`
//! and `mvcc` packages: one store revision per write transaction, events that
//! share that revision, reads at any revision back to the compacted one.
//! Nothing here is visible to clients until the server says the revision is
//! durable; the store itself does not know about durability.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::etcd::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
pub use crate::etcd::pb::mvccpb::KeyValue;

/// etcd's `MaxLeaseTTL`: larger TTLs are refused.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// The smallest TTL etcd grants with its default election timeout (1 s) and
/// heartbeat (100 ms): 1.5 elections, rounded up to whole seconds.
pub const MIN_LEASE_TTL: i64 = 2;
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// A request the store refuses. Each variant is one of etcd's `rpctypes`
/// errors; its text is the exact message etcd sends, because clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
}

impl StoreError {
    /// The gRPC code etcd pairs with this error.
    pub fn code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            StoreError::EmptyKey
            | StoreError::KeyNotFound
            | StoreError::ValueProvided
            | StoreError::LeaseProvided
            | StoreError::TooManyOps
            | StoreError::DuplicateKey
            | StoreError::RequestTooLarge => Code::InvalidArgument,
            StoreError::Compacted | StoreError::FutureRev | StoreError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            StoreError::LeaseNotFound => Code::NotFound,
            StoreError::LeaseExists => Code::FailedPrecondition,
            StoreError::NoSpace => Code::ResourceExhausted,
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// A key range as etcd reads `key` + `range_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `range_end` is `\0`: every key from `key` on.
    From(Vec<u8>),
    /// `[key, end)`; empty when `end <= key`.
    Between(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::From(key.to_vec()),
            end => KeyRange::Between(key.to_vec(), end.to_vec()),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => k == key.as_slice(),
            KeyRange::From(key) => k >= key.as_slice(),
            KeyRange::Between(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }
}

/// Whether an event stores a value or a deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change inside a revision. For a delete, `kv` holds only the key and the
/// mod revision, as etcd's tombstone events do.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub kv: Arc<KeyValue>,
    /// The key's value at the previous store revision (what etcd's watch
    /// `prev_kv` reads at `mod_revision - 1`), if it existed.
    pub prev: Option<Arc<KeyValue>>,
}

impl Event {
    /// etcd's `IsCreateEvent`: a put that created the key. Such events never carry prev_kv.
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }
}

/// Every change made by one write transaction.
#[derive(Debug)]
pub struct Record {
    pub rev: i64,
    pub events: Vec<Event>,
}

/// One version of a key: a value, or a tombstone that ends a generation.
#[derive(Debug, Clone)]
struct Version {
    rev: i64,
    kv: Option<Arc<KeyValue>>,
}

/// A lease: its TTL, when it runs out, and the keys attached to it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
    pub expiry: Instant,
    pub keys: BTreeSet<Vec<u8>>,
}

/// One piece of a range read ([`Store::scan_chunk`]): the keys alive in it,
/// and the key to continue after if the range goes on.
pub type RangeChunk = (Vec<Arc<KeyValue>>, Option<Vec<u8>>);

/// What TimeToLive reports for a live lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub remaining: i64,
    pub granted: i64,
    pub keys: Vec<Vec<u8>>,
}

/// The outcome of a write: the response, and the record to persist if the
/// request changed anything.
#[derive(Debug)]
pub struct Applied<T> {
    pub response: T,
    pub record: Option<Arc<Record>>,
}

/// The MVCC store.
#[derive(Debug)]
pub struct Store {
    /// The revision of the last applied write; 1 for an empty store, as in etcd.
    rev: i64,
    /// Reads below this revision fail with `Compacted`; 0 before any compaction.
    compacted: i64,
    /// Every key's versions, oldest first; the newest at or below a revision is
    /// the key's state at that revision.
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// The records of consecutive revisions kept for watch replay.
    log: VecDeque<Arc<Record>>,
    leases: HashMap<i64, Lease>,
    /// Counter behind server-chosen lease IDs; seeded so IDs look like etcd's.
    next_lease_id: u64,
    /// About how many bytes the kept versions hold (see [`version_cost`]):
    /// what the space quota is measured against, as etcd measures its
    /// database file. It grows with history and shrinks at compaction.
    size: u64,
}

/// What one kept version of a key costs towards the quota: its key and
/// value plus a fixed allowance for the bookkeeping around them.
fn version_cost(kv: &KeyValue) -> u64 {
    (kv.key.len() + kv.value.len()) as u64 + 64
}

impl Default for Store {
    fn default() -> Self {
        Store::new(0)
    }
}

impl Store {
    /// An empty store; `lease_id_seed` makes server-chosen lease IDs differ between members.
    pub fn new(lease_id_seed: u64) -> Store {
        Store {
            rev: 1,
            compacted: 0,
            keys: BTreeMap::new(),
            log: VecDeque::new(),
            leases: HashMap::new(),
            next_lease_id: lease_id_seed,
            size: 0,
        }
    }

    /// About how many bytes the store holds, history included.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// The revision of the last applied write.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// The compacted revision (0 if never compacted).
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// Number of keys alive at the newest revision.
    pub fn live_keys(&self) -> usize {
        self.keys
            .values()
            .filter(|v| v.last().is_some_and(|v| v.kv.is_some()))
            .count()
    }

    fn value_at(versions: &[Version], rev: i64) -> Option<&Arc<KeyValue>> {
        let idx = versions.partition_point(|v| v.rev <= rev);
        if idx == 0 {
            return None;
        }
        versions[idx - 1].kv.as_ref()
    }

    fn get_at(&self, key: &[u8], rev: i64) -> Option<&Arc<KeyValue>> {
        self.keys.get(key).and_then(|v| Self::value_at(v, rev))
    }

    /// Every key alive at `rev` in `range`, in key order.
    fn scan<'a>(
        &'a self,
        range: &'a KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = &'a Arc<KeyValue>> + 'a {
        self.entries(range, None)
            .filter_map(move |(_, v)| Self::value_at(v, rev))
    }

    /// The keys of `range` (alive or not) in key order, after `after` if given.
    fn entries<'a>(
        &'a self,
        range: &'a KeyRange,
        after: Option<&'a [u8]>,
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> + 'a> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let (start, end): (&[u8], _) = match range {
            KeyRange::Single(k) => {
                let one = self.keys.get_key_value(k.as_slice());
                return Box::new(one.into_iter().filter(move |_| after.is_none()));
            }
            KeyRange::From(k) => (k, Unbounded),
            KeyRange::Between(k, end) => {
                if end <= k {
                    return Box::new(std::iter::empty());
                }
                (k, Excluded(end.as_slice()))
            }
        };
        // `after` came from this range, so it is below `end`.
        let start = after.map_or(Included(start), Excluded);
        Box::new(self.keys.range::<[u8], _>((start, end)))
    }

    /// The revision a range read in pieces ([`Store::scan_chunk`]) reads at,
    /// checked as etcd checks it.
    pub fn range_rev(&self, r: &RangeRequest, current: i64) -> Result<i64, StoreError> {
        check_range(r)?;
        self.read_rev(r.revision, current)
    }

    /// One piece of a range read: the keys alive at `rev` among the next
    /// `max` keys of `range` after `after`, and the key to continue after if
    /// the range goes on. Reads at a fixed revision see the same keys however
    /// many writes come between the pieces; a compaction past `rev` does
    /// not, so it fails the read, as it would have before it began.
    pub fn scan_chunk(
        &self,
        range: &KeyRange,
        rev: i64,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<RangeChunk, StoreError> {
        if rev < self.compacted {
            return Err(StoreError::Compacted);
        }
        let mut found = Vec::new();
        let mut last = None;
        for (i, (key, versions)) in self.entries(range, after).enumerate() {
            if i == max {
                return Ok((found, last.map(<[u8]>::to_vec)));
            }
            last = Some(key.as_slice());
            if let Some(kv) = Self::value_at(versions, rev) {
                found.push(kv.clone());
            }
        }
        Ok((found, None))
    }

    /// Checks a read revision against the store as etcd's `rangeKeys` does.
    fn read_rev(&self, requested: i64, current: i64) -> Result<i64, StoreError> {
        if requested > current {
            return Err(StoreError::FutureRev);
        }
        let rev = if requested <= 0 { current } else { requested };
        if rev < self.compacted {
            return Err(StoreError::Compacted);
        }
        Ok(rev)
    }

    /// Range as seen at revision `current` (the newest revision the caller may read).
    pub fn range(&self, req: &RangeRequest, current: i64) -> Result<RangeResponse, StoreError> {
        check_range(req)?;
        self.range_unchecked(req, current)
    }

    fn range_unchecked(&self, r: &RangeRequest, current: i64) -> Result<RangeResponse, StoreError> {
        let rev = self.read_rev(r.revision, current)?;
        let range = KeyRange::new(&r.key, &r.range_end);
        Ok(finish_range(r, current, self.scan(&range, rev)))
    }

    /// A standalone Put.
    pub fn put(&mut self, req: &PutRequest) -> Result<Applied<PutResponse>, StoreError> {
        check_put(req)?;
        self.check_put_applicable(req, self.rev)?;
        let mut txn = WriteTxn::begin(self);
        let response = txn.put(req);
        let record = txn.end();
        Ok(Applied { response, record })
    }

    /// A standalone DeleteRange.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Applied<DeleteRangeResponse>, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let mut txn = WriteTxn::begin(self);
        let response = txn.delete_range(req);
        let record = txn.end();
        Ok(Applied { response, record })
    }

    /// The checks etcd makes before applying a put: the key exists when the
    /// value or lease is to be kept, and the lease exists.
    fn check_put_applicable(&self, req: &PutRequest, rev: i64) -> Result<(), StoreError> {
        if (req.ignore_value || req.ignore_lease) && self.get_at(&req.key, rev).is_none() {
            return Err(StoreError::KeyNotFound);
        }
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(StoreError::LeaseNotFound);
        }
        Ok(())
    }

    /// The checks etcd makes before a Txn, and the branch every (nested)
    /// compare chooses, all against the state at `view`.
    fn txn_prepare(&self, req: &TxnRequest, view: i64) -> Result<Vec<bool>, StoreError> {
        check_txn(req, MAX_TXN_OPS)?;
        check_intervals(&req.success)?;
        check_intervals(&req.failure)?;
        // Every compare, nested ones included, is evaluated against the state
        // before the transaction, as etcd's `compareToPath` does.
        let mut path = Vec::new();
        self.compare_to_path(req, view, &mut path);
        if !txn_is_read_only(req) {
            self.check_ops(req, &path, &mut 0, &|s, op| match op {
                request_op::Request::RequestPut(p) => s.check_put_applicable(p, view),
                _ => Ok(()),
            })?;
        }
        let compacted = self.compacted;
        self.check_ops(req, &path, &mut 0, &|_, op| match op {
            request_op::Request::RequestRange(r) => {
                if r.revision == 0 {
                    Ok(())
                } else if r.revision > view {
                    Err(StoreError::FutureRev)
                } else if r.revision < compacted {
                    Err(StoreError::Compacted)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        })?;
        Ok(path)
    }

    /// Whether a Txn only reads (ranges at the top level of both branches).
    pub fn txn_is_read_only(req: &TxnRequest) -> bool {
        txn_is_read_only(req)
    }

    /// A Txn that only reads, at revision `current`. A Txn that writes is
    /// answered by [`Store::txn`].
    pub fn txn_read_only(&self, req: &TxnRequest, current: i64) -> Result<TxnResponse, StoreError> {
        let path = self.txn_prepare(req, current)?;
        let mut response = self.read_txn(req, &path, &mut 0, current);
        response.header = Some(header(current));
        Ok(response)
    }

    /// A Txn. Read-only transactions read at `current`; write transactions
    /// see the newest applied state, since writes are serialised.
    pub fn txn(
        &mut self,
        req: &TxnRequest,
        current: i64,
    ) -> Result<Applied<TxnResponse>, StoreError> {
        if txn_is_read_only(req) {
            return Ok(Applied {
                response: self.txn_read_only(req, current)?,
                record: None,
            });
        }
        let path = self.txn_prepare(req, self.rev)?;
        let mut txn = WriteTxn::begin(self);
        let mut response = txn.apply_txn(req, &path, &mut 0);
        let rev = txn.read_rev();
        let record = txn.end();
        response.header = Some(header(rev));
        Ok(Applied { response, record })
    }

    fn read_txn(&self, req: &TxnRequest, path: &[bool], pos: &mut usize, view: i64) -> TxnResponse {
        let (succeeded, ops) = branch(req, path, pos);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match &op.request {
                Some(request_op::Request::RequestRange(r)) => self
                    .range_unchecked(r, view)
                    .map(|mut resp| {
                        resp.header = Some(inner_header(view));
                        response_op::Response::ResponseRange(resp)
                    })
                    .ok(),
                _ => None,
            };
            responses.push(ResponseOp { response: resp });
        }
        TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        }
    }

    fn compare_to_path(&self, req: &TxnRequest, view: i64, path: &mut Vec<bool>) {
        let ok = req.compare.iter().all(|c| self.compare(c, view));
        path.push(ok);
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            if let Some(request_op::Request::RequestTxn(t)) = &op.request {
                self.compare_to_path(t, view, path);
            }
        }
    }

    /// Runs `check` over every op of the branches `path` chose, recursively.
    fn check_ops(
        &self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
        check: &dyn Fn(&Store, &request_op::Request) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let ops = if path[*pos] {
            &req.success
        } else {
            &req.failure
        };
        *pos += 1;
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestTxn(t)) => self.check_ops(t, path, pos, check)?,
                Some(other) => check(self, other)?,
                None => {}
            }
        }
        Ok(())
    }

    fn compare(&self, c: &Compare, view: i64) -> bool {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut any = false;
        for kv in self.scan(&range, view) {
            any = true;
            if !compare_kv(c, kv) {
                return false;
            }
        }
        if !any {
            // A value compare on a missing key always fails: gRPC cannot tell
            // an empty value from none. Other targets compare against zeroes.
            if c.target == 3 {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        true
    }

    /// Compaction at `rev`, as seen by a caller whose newest revision is `current`.
    pub fn compact(&mut self, rev: i64, current: i64) -> Result<(), StoreError> {
        if rev <= self.compacted {
            return Err(StoreError::Compacted);
        }
        if rev > current {
            return Err(StoreError::FutureRev);
        }
        self.compact_unchecked(rev);
        Ok(())
    }

    /// Drops every version no read at or after `rev` can see, as etcd's
    /// `keyIndex.compact` does: the newest version at or below `rev` stays
    /// unless it is a tombstone.
    pub fn compact_unchecked(&mut self, rev: i64) {
        self.compacted = rev;
        let mut size = 0u64;
        self.keys.retain(|key, versions| {
            let idx = versions.partition_point(|v| v.rev <= rev);
            if idx > 0 {
                let keep_from = if versions[idx - 1].kv.is_some() {
                    idx - 1
                } else {
                    idx
                };
                versions.drain(..keep_from);
            }
            // Tombstones have no value; count their key like an empty one.
            for v in versions.iter() {
                size += v.kv.as_deref().map_or(key.len() as u64 + 64, version_cost);
            }
            !versions.is_empty()
        });
        self.size = size;
        while self.log.front().is_some_and(|r| r.rev < rev) {
            self.log.pop_front();
        }
        // Events at exactly the compacted revision survive only where the key
        // version survives: tombstones go, so their delete events go too.
        if let Some(front) = self.log.front() {
            if front.rev == rev && front.events.iter().any(|e| e.kind == EventKind::Delete) {
                let events = front
                    .events
                    .iter()
                    .filter(|e| e.kind == EventKind::Put)
                    .cloned()
                    .collect();
                self.log[0] = Arc::new(Record { rev, events });
            }
        }
    }

    /// The records of revisions `from..=to` still in the log, oldest first.
    pub fn records(&self, from: i64, to: i64, max: usize) -> Vec<Arc<Record>> {
        let Some(first) = self.log.front().map(|r| r.rev) else {
            return Vec::new();
        };
        let start = (from.max(first) - first) as usize;
        self.log
            .iter()
            .skip(start)
            .take_while(|r| r.rev <= to)
            .take(max)
            .cloned()
            .collect()
    }

    // ---- leases ----

    /// Grants a lease. `id == 0` asks the store to choose one.
    pub fn lease_grant(
        &mut self,
        id: i64,
        ttl: i64,
        now: Instant,
    ) -> Result<(i64, i64), StoreError> {
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let id = if id == 0 { self.fresh_lease_id() } else { id };
        if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        self.leases.insert(
            id,
            Lease {
                id,
                ttl,
                expiry: now + Duration::from_secs(ttl as u64),
                keys: BTreeSet::new(),
            },
        );
        Ok((id, ttl))
    }

    fn fresh_lease_id(&mut self) -> i64 {
        loop {
            self.next_lease_id = self.next_lease_id.wrapping_add(1);
            let id = (self.next_lease_id & (u64::MAX >> 1)) as i64;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Revokes a lease, deleting its keys in one revision (in key order).
    pub fn lease_revoke(&mut self, id: i64) -> Result<Option<Arc<Record>>, StoreError> {
        let Some(lease) = self.leases.remove(&id) else {
            return Err(StoreError::LeaseNotFound);
        };
        if lease.keys.is_empty() {
            return Ok(None);
        }
        let mut txn = WriteTxn::begin(self);
        for key in &lease.keys {
            txn.delete_keys(&KeyRange::Single(key.clone()));
        }
        Ok(txn.end())
    }

    /// Renews a lease; `None` if it does not exist (or has run out).
    pub fn lease_renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        if lease.expiry <= now {
            return None;
        }
        lease.expiry = now + Duration::from_secs(lease.ttl as u64);
        Some(lease.ttl)
    }

    pub fn lease_time_to_live(&self, id: i64, now: Instant) -> Option<LeaseInfo> {
        let lease = self.leases.get(&id)?;
        Some(LeaseInfo {
            id,
            remaining: lease.expiry.saturating_duration_since(now).as_secs() as i64,
            granted: lease.ttl,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// Every lease, soonest expiry first (as etcd lists them).
    pub fn leases(&self) -> Vec<i64> {
        let mut all: Vec<&Lease> = self.leases.values().collect();
        all.sort_by_key(|l| (l.expiry, l.id));
        all.into_iter().map(|l| l.id).collect()
    }

    /// Leases whose time is up, soonest first.
    pub fn expired_leases(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<&Lease> = self.leases.values().filter(|l| l.expiry <= now).collect();
        ids.sort_by_key(|l| (l.expiry, l.id));
        ids.into_iter().map(|l| l.id).collect()
    }

    /// The soonest lease expiry, for timers.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expiry).min()
    }

    // ---- persistence support ----

    /// Replays one persisted record (revision `rev`), rebuilding history,
    /// the event log and lease attachments.
    pub fn replay(&mut self, rev: i64, changes: Vec<(EventKind, KeyValue)>) {
        let mut events = Vec::with_capacity(changes.len());
        for (kind, kv) in changes {
            let versions = self.keys.entry(kv.key.clone()).or_default();
            let prev = Self::value_at(versions, rev - 1).cloned();
            let kv = Arc::new(kv);
            let stored = match kind {
                EventKind::Put => Some(kv.clone()),
                EventKind::Delete => None,
            };
            match versions.last_mut() {
                Some(last) if last.rev == rev => last.kv = stored,
                _ => versions.push(Version { rev, kv: stored }),
            }
            self.size += version_cost(&kv);
            events.push(Event { kind, kv, prev });
        }
        self.rev = rev;
        self.log.push_back(Arc::new(Record { rev, events }));
    }

    /// Loads a snapshot base: the live keys at `rev` after compaction at `compacted`.
    pub fn load_base(&mut self, rev: i64, compacted: i64, kvs: Vec<KeyValue>) {
        self.rev = rev;
        self.compacted = compacted;
        let mut at_compacted = Vec::new();
        for kv in kvs {
            let kv = Arc::new(kv);
            self.size += version_cost(&kv);
            if kv.mod_revision == compacted {
                at_compacted.push(Event {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev: None,
                });
            }
            self.keys.insert(
                kv.key.clone(),
                vec![Version {
                    rev: kv.mod_revision,
                    kv: Some(kv),
                }],
            );
        }
        if compacted == rev && compacted > 1 {
            self.log.push_back(Arc::new(Record {
                rev: compacted,
                events: at_compacted,
            }));
        }
    }

    /// The live keys at revision `rev`.
    pub fn live_kvs_at(&self, rev: i64) -> Vec<Arc<KeyValue>> {
        self.scan(&KeyRange::From(vec![]), rev).cloned().collect()
    }

    /// The records at or after `from` (for rewriting the log).
    pub fn log_since(&self, from: i64) -> Vec<Arc<Record>> {
        self.log.iter().filter(|r| r.rev >= from).cloned().collect()
    }

    /// Deletes, in one revision, every key attached to a lease: leases do not
    /// survive a restart, so neither do their keys.
    pub fn drop_leased_keys(&mut self) -> Option<Arc<Record>> {
        let keys: Vec<Vec<u8>> = self
            .live_kvs_at(self.rev)
            .into_iter()
            .filter(|kv| kv.lease != 0)
            .map(|kv| kv.key.clone())
            .collect();
        if keys.is_empty() {
            return None;
        }
        let mut txn = WriteTxn::begin(self);
        for key in keys {
            txn.delete_keys(&KeyRange::Single(key));
        }
        txn.end()
    }
}

/// A Range's response from the keys alive in its range at its revision, in
/// key order: etcd's counting, limit, filters, sort and `keys_only`. It needs
/// no store, so a long range does it without the store's lock.
pub fn finish_range<'a>(
    r: &RangeRequest,
    current: i64,
    found: impl Iterator<Item = &'a Arc<KeyValue>>,
) -> RangeResponse {
    let filtered = r.sort_order != 0
        || r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    // etcd fetches one more than the limit to learn `more`, or everything
    // when it must sort or filter first.
    let fetch = if filtered || r.limit <= 0 {
        usize::MAX
    } else {
        (r.limit as usize).saturating_add(1)
    };
    let mut count = 0i64;
    let mut kvs: Vec<KeyValue> = Vec::new();
    for kv in found {
        count += 1;
        if !r.count_only && kvs.len() < fetch {
            kvs.push(KeyValue::clone(kv));
        }
    }
    if r.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
    }
    if r.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
    }
    if r.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
    }
    if r.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
    }
    let mut order = r.sort_order;
    if r.sort_target != 0 && order == 0 {
        // Results come in key order already; any other target sorts ascending.
        order = 1;
    }
    if order != 0 {
        let cmp: fn(&KeyValue, &KeyValue) -> Ordering = match r.sort_target {
            1 => |a, b| a.version.cmp(&b.version),
            2 => |a, b| a.create_revision.cmp(&b.create_revision),
            3 => |a, b| a.mod_revision.cmp(&b.mod_revision),
            4 => |a, b| a.value.cmp(&b.value),
            _ => |a, b| a.key.cmp(&b.key),
        };
        // Stable sorts: etcd's Go sort keeps ties in key order for the
        // small slices where that is observable, ascending or descending.
        if order == 2 {
            kvs.sort_by(|a, b| cmp(b, a));
        } else {
            kvs.sort_by(cmp);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: Some(header(current)),
        kvs,
        more,
        count,
    }
}

/// A response header carrying only a revision; the server fills in the rest.
pub fn header(rev: i64) -> ResponseHeader {
    ResponseHeader {
        revision: rev,
        ..Default::default()
    }
}

/// Headers of responses nested in a Txn keep only the revision: etcd never
/// fills their cluster, member or term.
fn inner_header(rev: i64) -> ResponseHeader {
    header(rev)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match c.target {
        3 => {
            let v: &[u8] = match &c.target_union {
                Some(compare::TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        1 => kv.create_revision.cmp(match &c.target_union {
            Some(compare::TargetUnion::CreateRevision(r)) => r,
            _ => &0,
        }),
        2 => kv.mod_revision.cmp(match &c.target_union {
            Some(compare::TargetUnion::ModRevision(r)) => r,
            _ => &0,
        }),
        0 => kv.version.cmp(match &c.target_union {
            Some(compare::TargetUnion::Version(r)) => r,
            _ => &0,
        }),
        4 => kv.lease.cmp(match &c.target_union {
            Some(compare::TargetUnion::Lease(r)) => r,
            _ => &0,
        }),
        _ => Ordering::Equal,
    };
    match c.result {
        0 => ord == Ordering::Equal,
        1 => ord == Ordering::Greater,
        2 => ord == Ordering::Less,
        3 => ord != Ordering::Equal,
        _ => true,
    }
}

/// etcd's `checkRangeRequest`.
pub fn check_range(r: &RangeRequest) -> Result<(), StoreError> {
    if r.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub fn check_put(r: &PutRequest) -> Result<(), StoreError> {
    if r.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkTxnRequest`.
pub fn check_txn(r: &TxnRequest, max_ops: usize) -> Result<(), StoreError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_ops {
        return Err(StoreError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(q)) => check_range(q)?,
            Some(request_op::Request::RequestPut(q)) => check_put(q)?,
            Some(request_op::Request::RequestDeleteRange(q)) => {
                if q.key.is_empty() {
                    return Err(StoreError::EmptyKey);
                }
            }
            Some(request_op::Request::RequestTxn(t)) => check_txn(t, max_ops - opc)?,
            // etcd answers an empty op this way.
            None => return Err(StoreError::KeyNotFound),
        }
    }
    Ok(())
}

/// A delete interval as etcd's `checkIntervals` sees it: a point, or a
/// half-open byte-string interval taken literally (so an end of `\0` is empty).
#[derive(Debug, Clone)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn hits(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.start.as_slice(),
            Some(end) => k >= self.start.as_slice() && k < end.as_slice(),
        }
    }
}

/// etcd's `checkIntervals`: no key may be put twice, or put and deleted, in
/// one transaction (then/else branches of a nested txn are exclusive).
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Interval>), StoreError> {
    let mut dels: Vec<Interval> = Vec::new();
    for op in ops {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &op.request {
            dels.push(Interval {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            });
        }
    }
    let hit = |dels: &[Interval], k: &[u8]| dels.iter().any(|d| d.hits(k));
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hit(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(StoreError::DuplicateKey);
            }
            if hit(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        if let Some(request_op::Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || hit(&dels, &p.key) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

/// etcd's `isTxnReadonly`: only ranges at the top level, in both branches.
fn txn_is_read_only(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// One write transaction: every change gets revision `begin + 1`.
struct WriteTxn<'s> {
    store: &'s mut Store,
    begin: i64,
    events: Vec<Event>,
}

impl<'s> WriteTxn<'s> {
    fn begin(store: &'s mut Store) -> Self {
        let begin = store.rev;
        WriteTxn {
            store,
            begin,
            events: Vec::new(),
        }
    }

    /// The revision reads inside the transaction see (etcd's `storeTxnWrite.Range`).
    fn read_rev(&self) -> i64 {
        if self.events.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn write_rev(&self) -> i64 {
        self.begin + 1
    }

    fn put(&mut self, p: &PutRequest) -> PutResponse {
        let rev = self.write_rev();
        let existing = self.store.get_at(&p.key, self.read_rev()).cloned();
        let mut value = p.value.clone();
        let mut lease = p.lease;
        if p.ignore_value {
            value = existing
                .as_ref()
                .map(|kv| kv.value.clone())
                .unwrap_or_default();
        }
        if p.ignore_lease {
            lease = existing.as_ref().map(|kv| kv.lease).unwrap_or_default();
        }
        let (create, version, old_lease) = match &existing {
            Some(kv) => (kv.create_revision, kv.version + 1, kv.lease),
            None => (rev, 1, 0),
        };
        let kv = Arc::new(KeyValue {
            key: p.key.clone(),
            create_revision: create,
            mod_revision: rev,
            version,
            value,
            lease,
        });
        let prev_at_begin = self.store.get_at(&p.key, self.begin).cloned();
        let versions = self.store.keys.entry(p.key.clone()).or_default();
        match versions.last_mut() {
            Some(last) if last.rev == rev => last.kv = Some(kv.clone()),
            _ => versions.push(Version {
                rev,
                kv: Some(kv.clone()),
            }),
        }
        if old_lease != 0 {
            if let Some(l) = self.store.leases.get_mut(&old_lease) {
                l.keys.remove(&p.key);
            }
        }
        if lease != 0 {
            if let Some(l) = self.store.leases.get_mut(&lease) {
                l.keys.insert(p.key.clone());
            }
        }
        self.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev: prev_at_begin,
        });
        PutResponse {
            header: Some(header(rev)),
            prev_kv: if p.prev_kv {
                existing.map(|kv| KeyValue::clone(&kv))
            } else {
                None
            },
        }
    }

    /// Deletes every live key in `range`; returns what was deleted.
    fn delete_keys(&mut self, range: &KeyRange) -> Vec<Arc<KeyValue>> {
        let read = self.read_rev();
        let rev = self.write_rev();
        let doomed: Vec<Arc<KeyValue>> = self.store.scan(range, read).cloned().collect();
        for kv in &doomed {
            let prev_at_begin = self.store.get_at(&kv.key, self.begin).cloned();
            let versions = self
                .store
                .keys
                .get_mut(&kv.key)
                .expect("scanned key exists");
            match versions.last_mut() {
                Some(last) if last.rev == rev => last.kv = None,
                _ => versions.push(Version { rev, kv: None }),
            }
            if kv.lease != 0 {
                if let Some(l) = self.store.leases.get_mut(&kv.lease) {
                    l.keys.remove(&kv.key);
                }
            }
            self.events.push(Event {
                kind: EventKind::Delete,
                kv: Arc::new(KeyValue {
                    key: kv.key.clone(),
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev: prev_at_begin,
            });
        }
        doomed
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let range = KeyRange::new(&d.key, &d.range_end);
        let deleted = self.delete_keys(&range);
        let rev = self.read_rev();
        DeleteRangeResponse {
            header: Some(header(rev)),
            deleted: deleted.len() as i64,
            prev_kvs: if d.prev_kv {
                deleted.iter().map(|kv| KeyValue::clone(kv)).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn apply_txn(&mut self, req: &TxnRequest, path: &[bool], pos: &mut usize) -> TxnResponse {
        let (succeeded, ops) = branch(req, path, pos);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    let read = self.read_rev();
                    self.store.range_unchecked(r, read).ok().map(|mut resp| {
                        resp.header = Some(inner_header(read));
                        response_op::Response::ResponseRange(resp)
                    })
                }
                Some(request_op::Request::RequestPut(p)) => {
                    Some(response_op::Response::ResponsePut(self.put(p)))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => Some(
                    response_op::Response::ResponseDeleteRange(self.delete_range(d)),
                ),
                Some(request_op::Request::RequestTxn(t)) => Some(
                    response_op::Response::ResponseTxn(self.apply_txn(t, path, pos)),
                ),
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        }
    }

    /// Ends the transaction: a new revision if anything changed.
    fn end(self) -> Option<Arc<Record>> {
        if self.events.is_empty() {
            return None;
        }
        let rev = self.begin + 1;
        self.store.rev = rev;
        // Each event is one new version (a delete's event carries the key).
        self.store.size += self.events.iter().map(|e| version_cost(&e.kv)).sum::<u64>();
        let record = Arc::new(Record {
            rev,
            events: self.events,
        });
        self.store.log.push_back(record.clone());
        Some(record)
    }
}

/// The branch a transaction took, as its compare `path` recorded (one
/// entry per transaction, nested ones included, in the order they run).
fn branch<'a>(req: &'a TxnRequest, path: &[bool], pos: &mut usize) -> (bool, &'a [RequestOp]) {
    let succeeded = path[*pos];
    *pos += 1;
    let ops = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    (succeeded, ops)
}

#[cfg(test)]
mod tests;
