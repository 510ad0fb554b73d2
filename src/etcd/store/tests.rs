//! Unit tests of the pure store: revisions, history, txn rules, compaction, leases.

use std::time::{Duration, Instant};

use crate::etcd::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};

use super::*;

fn put(s: &mut Store, k: &str, v: &str) -> i64 {
    s.put(&PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
    .unwrap()
    .response
    .header
    .unwrap()
    .revision
}

fn get_at(s: &Store, k: &str, rev: i64) -> Vec<(String, String, i64, i64, i64)> {
    let resp = s
        .range(
            &RangeRequest {
                key: k.into(),
                range_end: if k == "\0" { vec![0] } else { Vec::new() },
                revision: rev,
                ..Default::default()
            },
            s.rev(),
        )
        .unwrap();
    resp.kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

fn op(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

#[test]
fn an_empty_store_is_at_revision_one() {
    let s = Store::new(0);
    assert_eq!(s.rev(), 1);
    assert!(get_at(&s, "\0", 0).is_empty());
}

#[test]
fn every_write_is_one_revision_and_versions_restart_after_delete() {
    let mut s = Store::new(0);
    assert_eq!(put(&mut s, "a", "1"), 2);
    assert_eq!(put(&mut s, "a", "2"), 3);
    assert_eq!(get_at(&s, "a", 0), vec![("a".into(), "2".into(), 2, 3, 2)]);
    let d = s
        .delete_range(&DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(d.response.deleted, 1);
    assert_eq!(s.rev(), 4);
    // Deleting nothing does not move the revision.
    let d = s
        .delete_range(&DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(d.record.is_none());
    assert_eq!(d.response.header.unwrap().revision, 4);
    assert_eq!(put(&mut s, "a", "3"), 5);
    assert_eq!(get_at(&s, "a", 0), vec![("a".into(), "3".into(), 5, 5, 1)]);
    // History stays readable.
    assert_eq!(get_at(&s, "a", 2), vec![("a".into(), "1".into(), 2, 2, 1)]);
    assert!(get_at(&s, "a", 4).is_empty());
}

#[test]
fn a_txn_is_one_revision_and_reads_its_own_writes() {
    let mut s = Store::new(0);
    put(&mut s, "a", "1");
    let t = TxnRequest {
        // b does not exist yet: version 0.
        compare: vec![Compare {
            result: 0,
            target: 0,
            key: "b".into(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::Version(0)),
        }],
        success: vec![
            op(request_op::Request::RequestPut(PutRequest {
                key: "b".into(),
                value: "x".into(),
                ..Default::default()
            })),
            op(request_op::Request::RequestRange(RangeRequest {
                key: "b".into(),
                ..Default::default()
            })),
            op(request_op::Request::RequestPut(PutRequest {
                key: "c".into(),
                value: "y".into(),
                ..Default::default()
            })),
        ],
        failure: vec![],
    };
    let a = s.txn(&t, s.rev()).unwrap();
    assert!(a.response.succeeded);
    assert_eq!(a.response.header.unwrap().revision, 3);
    let rec = a.record.unwrap();
    assert_eq!(rec.rev, 3);
    assert_eq!(rec.events.len(), 2);
    match &a.response.responses[1].response {
        Some(response_op::Response::ResponseRange(r)) => {
            assert_eq!(r.kvs.len(), 1);
            assert_eq!(r.kvs[0].mod_revision, 3);
        }
        other => panic!("{other:?}"),
    }
    // Compare fails now: the failure branch is empty and nothing changes.
    let a = s.txn(&t, s.rev()).unwrap();
    assert!(!a.response.succeeded);
    assert!(a.record.is_none());
    assert_eq!(s.rev(), 3);
}

#[test]
fn txn_rules_refuse_duplicates_and_too_many_ops() {
    let mut s = Store::new(0);
    let p = |k: &str| {
        op(request_op::Request::RequestPut(PutRequest {
            key: k.into(),
            ..Default::default()
        }))
    };
    let dup = TxnRequest {
        success: vec![p("a"), p("a")],
        ..Default::default()
    };
    assert_eq!(s.txn(&dup, 1).unwrap_err(), StoreError::DuplicateKey);
    let overlap = TxnRequest {
        success: vec![
            op(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: "a".into(),
                    range_end: "c".into(),
                    ..Default::default()
                },
            )),
            p("b"),
        ],
        ..Default::default()
    };
    assert_eq!(s.txn(&overlap, 1).unwrap_err(), StoreError::DuplicateKey);
    let many = TxnRequest {
        success: (0..129).map(|i| p(&format!("k{i}"))).collect(),
        ..Default::default()
    };
    assert_eq!(s.txn(&many, 1).unwrap_err(), StoreError::TooManyOps);
    assert_eq!(s.rev(), 1, "refused txns change nothing");
}

#[test]
fn range_limit_count_and_more() {
    let mut s = Store::new(0);
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, k);
    }
    let r = s
        .range(
            &RangeRequest {
                key: "a".into(),
                range_end: "d".into(),
                limit: 2,
                ..Default::default()
            },
            s.rev(),
        )
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 3, true));
    let r = s
        .range(
            &RangeRequest {
                key: "a".into(),
                range_end: vec![0],
                count_only: true,
                ..Default::default()
            },
            s.rev(),
        )
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 4, false));
}

#[test]
fn compaction_keeps_the_newest_version_at_or_below_and_refuses_older_reads() {
    let mut s = Store::new(0);
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    put(&mut s, "b", "1"); // 4
    s.delete_range(&DeleteRangeRequest {
        key: "b".into(),
        ..Default::default()
    })
    .unwrap(); // 5
    put(&mut s, "a", "3"); // 6
    s.compact(5, s.rev()).unwrap();
    assert_eq!(get_at(&s, "a", 5), vec![("a".into(), "2".into(), 2, 3, 2)]);
    assert!(get_at(&s, "b", 5).is_empty());
    let err = s
        .range(
            &RangeRequest {
                key: "a".into(),
                revision: 4,
                ..Default::default()
            },
            s.rev(),
        )
        .unwrap_err();
    assert_eq!(err, StoreError::Compacted);
    assert_eq!(s.compact(5, s.rev()).unwrap_err(), StoreError::Compacted);
    assert_eq!(s.compact(7, s.rev()).unwrap_err(), StoreError::FutureRev);
    // The log keeps revision 5 on (minus its delete) for watchers.
    let recs = s.records(0, 10, usize::MAX);
    assert_eq!(recs.iter().map(|r| r.rev).collect::<Vec<_>>(), vec![5, 6]);
    assert!(recs[0].events.is_empty());
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut s = Store::new(0);
    let now = Instant::now();
    assert_eq!(s.lease_grant(7, 1, now).unwrap(), (7, MIN_LEASE_TTL));
    assert_eq!(
        s.lease_grant(7, 10, now).unwrap_err(),
        StoreError::LeaseExists
    );
    for k in ["y", "x"] {
        s.put(&PutRequest {
            key: k.into(),
            lease: 7,
            ..Default::default()
        })
        .unwrap();
    }
    put(&mut s, "z", "free");
    let rec = s.lease_revoke(7).unwrap().unwrap();
    assert_eq!(rec.rev, 5);
    let keys: Vec<&[u8]> = rec.events.iter().map(|e| e.kv.key.as_slice()).collect();
    assert_eq!(keys, vec![b"x".as_slice(), b"y".as_slice()]);
    assert_eq!(s.lease_revoke(7).unwrap_err(), StoreError::LeaseNotFound);
    assert_eq!(get_at(&s, "\0", 0).len(), 1);
}

#[test]
fn leases_expire_and_renew_by_the_given_clock() {
    let mut s = Store::new(0);
    let t0 = Instant::now();
    s.lease_grant(1, 10, t0).unwrap();
    assert_eq!(
        s.lease_time_to_live(1, t0 + Duration::from_millis(500))
            .unwrap()
            .remaining,
        9
    );
    assert!(s.expired_leases(t0 + Duration::from_secs(9)).is_empty());
    assert_eq!(s.lease_renew(1, t0 + Duration::from_secs(9)), Some(10));
    assert!(s.expired_leases(t0 + Duration::from_secs(18)).is_empty());
    assert_eq!(s.expired_leases(t0 + Duration::from_secs(19)), vec![1]);
    assert_eq!(s.lease_renew(1, t0 + Duration::from_secs(20)), None);
    assert_eq!(
        s.lease_grant(2, MAX_LEASE_TTL + 1, t0).unwrap_err(),
        StoreError::LeaseTtlTooLarge
    );
}

#[test]
fn events_carry_the_previous_value_at_the_previous_revision() {
    let mut s = Store::new(0);
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    let recs = s.records(0, 10, usize::MAX);
    assert!(recs[0].events[0].is_create());
    assert_eq!(recs[1].events[0].prev.as_ref().unwrap().value, b"1");
}

#[test]
fn replay_rebuilds_the_same_store() {
    let mut s = Store::new(0);
    put(&mut s, "a", "1");
    put(&mut s, "b", "1");
    s.delete_range(&DeleteRangeRequest {
        key: "a".into(),
        ..Default::default()
    })
    .unwrap();
    let mut copy = Store::new(0);
    for rec in s.records(0, 100, usize::MAX) {
        let changes = rec
            .events
            .iter()
            .map(|e| (e.kind, KeyValue::clone(&e.kv)))
            .collect();
        copy.replay(rec.rev, changes);
    }
    assert_eq!(copy.rev(), s.rev());
    assert_eq!(get_at(&copy, "\0", 0), get_at(&s, "\0", 0));
    assert_eq!(get_at(&copy, "\0", 3), get_at(&s, "\0", 3));
}
