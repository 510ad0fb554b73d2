//! Hand-written conformance cases: each runs the same requests against a real
//! etcd and the embedded server and requires identical responses, field by
//! field, revisions included (only cluster/member IDs and the raft term are
//! normalised).

use std::time::Duration;

use etcd_client::proto::*;

use crate::harness::*;

/// Puts a fixed set of keys with a few versions each.
async fn seed(p: &mut Pair) {
    for (k, v) in [
        ("a", "1"),
        ("b", "22"),
        ("b", "2"),
        ("c", "333"),
        ("d/x", "4"),
        ("d/y", "5"),
        ("d/y", "55"),
        ("d/z", "6"),
        ("e", "0"),
    ] {
        p.same(&format!("put {k}={v}"), |c| c.put(put(k, v)))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_with_every_option() {
    let mut p = Pair::start().await;
    p.same("empty store", |c| c.range(get("a"))).await.unwrap();
    seed(&mut p).await;
    let cases: Vec<(&str, PbRangeRequest)> = vec![
        ("single", get("b")),
        ("missing", get("zz")),
        ("prefix", get_prefix("d/")),
        ("range", ranged("b", "d/y")),
        ("inverted range", ranged("d", "b")),
        ("from key", ranged("c", "\0")),
        ("all", ranged("\0", "\0")),
        (
            "limit",
            PbRangeRequest {
                limit: 2,
                ..ranged("\0", "\0")
            },
        ),
        (
            "limit equal to count",
            PbRangeRequest {
                limit: 3,
                ..get_prefix("d/")
            },
        ),
        (
            "past revision",
            PbRangeRequest {
                revision: 3,
                ..ranged("\0", "\0")
            },
        ),
        (
            "keys only",
            PbRangeRequest {
                keys_only: true,
                ..get_prefix("d/")
            },
        ),
        (
            "count only",
            PbRangeRequest {
                count_only: true,
                ..ranged("\0", "\0")
            },
        ),
        (
            "count only with limit",
            PbRangeRequest {
                count_only: true,
                limit: 1,
                ..ranged("\0", "\0")
            },
        ),
        (
            "min mod revision",
            PbRangeRequest {
                min_mod_revision: 6,
                ..ranged("\0", "\0")
            },
        ),
        (
            "max mod revision",
            PbRangeRequest {
                max_mod_revision: 5,
                ..ranged("\0", "\0")
            },
        ),
        (
            "min create revision with limit",
            PbRangeRequest {
                min_create_revision: 4,
                limit: 2,
                ..ranged("\0", "\0")
            },
        ),
        (
            "max create revision",
            PbRangeRequest {
                max_create_revision: 5,
                ..ranged("\0", "\0")
            },
        ),
        (
            "invalid sort option",
            PbRangeRequest {
                sort_order: 7,
                ..get("a")
            },
        ),
        (
            "empty key",
            PbRangeRequest {
                ..Default::default()
            },
        ),
        (
            "future revision",
            PbRangeRequest {
                revision: 100,
                ..get("a")
            },
        ),
        (
            "negative limit",
            PbRangeRequest {
                limit: -3,
                ..get_prefix("d/")
            },
        ),
    ];
    for (what, q) in cases {
        p.same(what, |c| c.range(q.clone())).await.ok();
    }
    // Every sort target, both orders, with and without a limit.
    for target in 0..5 {
        for order in 0..3 {
            for limit in [0, 2] {
                let q = PbRangeRequest {
                    sort_order: order,
                    sort_target: target,
                    limit,
                    ..ranged("\0", "\0")
                };
                p.same(
                    &format!("sort target {target} order {order} limit {limit}"),
                    |c| c.range(q.clone()),
                )
                .await
                .unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_options_and_errors() {
    let mut p = Pair::start().await;
    p.same("put", |c| c.put(put("k", "v1"))).await.unwrap();
    p.same("put prev_kv", |c| {
        c.put(PbPutRequest {
            prev_kv: true,
            ..put("k", "v2")
        })
    })
    .await
    .unwrap();
    p.same("put prev_kv on a new key", |c| {
        c.put(PbPutRequest {
            prev_kv: true,
            ..put("n", "x")
        })
    })
    .await
    .unwrap();
    p.same("grant", |c| c.lease_grant(lease(1000, 60)))
        .await
        .unwrap();
    p.same("put with lease", |c| {
        c.put(PbPutRequest {
            lease: 1000,
            ..put("k", "v3")
        })
    })
    .await
    .unwrap();
    p.same("ignore_value keeps the value", |c| {
        c.put(PbPutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put("k", "")
        })
    })
    .await
    .unwrap();
    p.same("ignore_lease keeps the lease", |c| {
        c.put(PbPutRequest {
            ignore_lease: true,
            ..put("k", "v4")
        })
    })
    .await
    .unwrap();
    p.same("get", |c| c.range(get("k"))).await.unwrap();
    p.same("put without lease detaches", |c| c.put(put("k", "v5")))
        .await
        .unwrap();
    p.same("ttl shows no keys", |c| {
        c.lease_ttl(PbLeaseTimeToLiveRequest {
            id: 1000,
            keys: true,
        })
    })
    .await
    .map(|_| ())
    .ok();
    for (what, q) in [
        (
            "ignore_value on a missing key",
            PbPutRequest {
                ignore_value: true,
                ..put("missing", "")
            },
        ),
        (
            "ignore_lease on a missing key",
            PbPutRequest {
                ignore_lease: true,
                ..put("missing", "x")
            },
        ),
        (
            "ignore_value with a value",
            PbPutRequest {
                ignore_value: true,
                ..put("k", "x")
            },
        ),
        (
            "ignore_lease with a lease",
            PbPutRequest {
                ignore_lease: true,
                lease: 1000,
                ..put("k", "x")
            },
        ),
        (
            "unknown lease",
            PbPutRequest {
                lease: 4242,
                ..put("k", "x")
            },
        ),
        ("empty key", put("", "x")),
    ] {
        p.same(what, |c| c.put(q.clone())).await.ok();
    }
    p.same("delete missing (no new revision)", |c| {
        c.delete(del("nothing"))
    })
    .await
    .unwrap();
    p.same("delete prev_kv", |c| {
        c.delete(PbDeleteRequest {
            prev_kv: true,
            ..del("k")
        })
    })
    .await
    .unwrap();
    p.same("recreated key starts at version 1", |c| {
        c.put(put("k", "again"))
    })
    .await
    .unwrap();
    p.same("get recreated", |c| c.range(get("k")))
        .await
        .unwrap();
    for k in ["p/1", "p/2", "p/3", "q"] {
        p.same("put", |c| c.put(put(k, k))).await.unwrap();
    }
    p.same("delete prefix with prev_kv", |c| {
        c.delete(PbDeleteRequest {
            prev_kv: true,
            ..del_prefix("p/")
        })
    })
    .await
    .unwrap();
    p.same("delete from key", |c| {
        c.delete(PbDeleteRequest {
            key: b"n".to_vec(),
            range_end: vec![0],
            prev_kv: false,
        })
    })
    .await
    .unwrap();
    p.same("delete empty key", |c| c.delete(del(""))).await.ok();
    p.same("everything", |c| c.range(ranged("\0", "\0")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_branches_and_nesting() {
    use PbTargetUnion as T;
    let mut p = Pair::start().await;
    seed(&mut p).await;
    p.same("grant", |c| c.lease_grant(lease(77, 60)))
        .await
        .unwrap();
    p.same("put leased", |c| {
        c.put(PbPutRequest {
            lease: 77,
            ..put("l", "x")
        })
    })
    .await
    .unwrap();
    let compares = vec![
        compare("b", cmp::VALUE, cmp::EQUAL, T::Value(b"2".to_vec())),
        compare("b", cmp::VALUE, cmp::GREATER, T::Value(b"1".to_vec())),
        compare("b", cmp::VALUE, cmp::LESS, T::Value(b"1".to_vec())),
        compare("b", cmp::VALUE, cmp::NOT_EQUAL, T::Value(b"2".to_vec())),
        compare("b", cmp::VERSION, cmp::EQUAL, T::Version(2)),
        compare("b", cmp::VERSION, cmp::GREATER, T::Version(1)),
        compare("b", cmp::CREATE, cmp::EQUAL, T::CreateRevision(3)),
        compare("b", cmp::CREATE, cmp::LESS, T::CreateRevision(3)),
        compare("b", cmp::MOD, cmp::EQUAL, T::ModRevision(4)),
        compare("b", cmp::MOD, cmp::NOT_EQUAL, T::ModRevision(4)),
        compare("l", cmp::LEASE, cmp::EQUAL, T::Lease(77)),
        compare("b", cmp::LEASE, cmp::EQUAL, T::Lease(0)),
        compare("missing", cmp::VALUE, cmp::EQUAL, T::Value(Vec::new())),
        compare("missing", cmp::VERSION, cmp::EQUAL, T::Version(0)),
        compare("missing", cmp::CREATE, cmp::EQUAL, T::CreateRevision(0)),
        compare("missing", cmp::MOD, cmp::LESS, T::ModRevision(1)),
        // A target that does not match the union compares against zero.
        compare("b", cmp::VERSION, cmp::GREATER, T::Value(b"x".to_vec())),
        PbCompare {
            range_end: b"d0".to_vec(),
            ..compare("d/", cmp::VERSION, cmp::GREATER, T::Version(0))
        },
        PbCompare {
            range_end: b"d0".to_vec(),
            ..compare("d/", cmp::VALUE, cmp::EQUAL, T::Value(b"4".to_vec()))
        },
    ];
    for (i, c0) in compares.into_iter().enumerate() {
        let t = PbTxnRequest {
            compare: vec![c0],
            success: vec![op_get(get("b"))],
            failure: vec![op_get(get("c"))],
        };
        p.same(&format!("read-only compare #{i}"), |c| c.txn(t.clone()))
            .await
            .unwrap();
    }
    // Writes in both branches, reads seeing earlier writes of the same txn,
    // and nested txns whose compares see the state before the outer txn.
    let t = PbTxnRequest {
        compare: vec![compare(
            "a",
            cmp::VALUE,
            cmp::EQUAL,
            T::Value(b"1".to_vec()),
        )],
        success: vec![
            op_put(PbPutRequest {
                prev_kv: true,
                ..put("a", "2")
            }),
            op_get(get("a")),
            op_del(PbDeleteRequest {
                prev_kv: true,
                ..del("c")
            }),
            op_del(del("nothing")),
            op_txn(PbTxnRequest {
                compare: vec![compare(
                    "a",
                    cmp::VALUE,
                    cmp::EQUAL,
                    T::Value(b"1".to_vec()),
                )],
                success: vec![op_put(put("nested", "yes")), op_get(get_prefix("n"))],
                failure: vec![op_put(put("nested", "no"))],
            }),
            op_get(ranged("\0", "\0")),
        ],
        failure: vec![op_put(put("a", "failed"))],
    };
    p.same("write txn with nesting", |c| c.txn(t.clone()))
        .await
        .unwrap();
    p.same("same txn again takes the failure branch", |c| {
        c.txn(t.clone())
    })
    .await
    .unwrap();
    let t = PbTxnRequest {
        compare: vec![],
        success: vec![op_del(del("nothing")), op_get(get("a"))],
        failure: vec![],
    };
    p.same("write txn that changes nothing", |c| c.txn(t.clone()))
        .await
        .unwrap();
    p.same("empty txn", |c| c.txn(PbTxnRequest::default()))
        .await
        .unwrap();
    let t = PbTxnRequest {
        compare: vec![],
        success: vec![op_get(PbRangeRequest {
            revision: 2,
            ..get("a")
        })],
        failure: vec![],
    };
    p.same("read-only txn at a past revision", |c| c.txn(t.clone()))
        .await
        .unwrap();
    // Errors.
    let many: Vec<PbTxnRequestOp> = (0..129)
        .map(|i| op_put(put(&format!("m{i}"), "x")))
        .collect();
    let errors: Vec<(&str, PbTxnRequest)> = vec![
        (
            "too many ops",
            PbTxnRequest {
                success: many.clone(),
                ..Default::default()
            },
        ),
        (
            "128 ops is fine",
            PbTxnRequest {
                success: many[..128].to_vec(),
                ..Default::default()
            },
        ),
        (
            "duplicate put",
            PbTxnRequest {
                success: vec![op_put(put("x", "1")), op_put(put("x", "2"))],
                ..Default::default()
            },
        ),
        (
            "put inside a deleted range",
            PbTxnRequest {
                success: vec![op_del(del_prefix("d/")), op_put(put("d/q", "2"))],
                ..Default::default()
            },
        ),
        (
            "put in nested txn and outer",
            PbTxnRequest {
                success: vec![
                    op_put(put("y", "1")),
                    op_txn(PbTxnRequest {
                        success: vec![op_put(put("y", "2"))],
                        ..Default::default()
                    }),
                ],
                ..Default::default()
            },
        ),
        (
            "same key in then and else of a nested txn",
            PbTxnRequest {
                success: vec![op_txn(PbTxnRequest {
                    compare: vec![compare("a", cmp::VERSION, cmp::GREATER, T::Version(0))],
                    success: vec![op_put(put("z", "then"))],
                    failure: vec![op_put(put("z", "else"))],
                })],
                ..Default::default()
            },
        ),
        (
            "empty compare key",
            PbTxnRequest {
                compare: vec![compare("", cmp::VERSION, cmp::EQUAL, T::Version(0))],
                ..Default::default()
            },
        ),
        (
            "empty op",
            PbTxnRequest {
                success: vec![PbTxnRequestOp { request: None }],
                ..Default::default()
            },
        ),
        (
            "unknown lease in chosen branch",
            PbTxnRequest {
                success: vec![op_put(PbPutRequest {
                    lease: 999,
                    ..put("u", "1")
                })],
                ..Default::default()
            },
        ),
        (
            "unknown lease in the other branch",
            PbTxnRequest {
                failure: vec![op_put(PbPutRequest {
                    lease: 999,
                    ..put("u", "1")
                })],
                ..Default::default()
            },
        ),
        (
            "ignore_value on a missing key",
            PbTxnRequest {
                success: vec![op_put(PbPutRequest {
                    ignore_value: true,
                    ..put("nope", "")
                })],
                ..Default::default()
            },
        ),
        (
            "range at a future revision",
            PbTxnRequest {
                success: vec![op_get(PbRangeRequest {
                    revision: 1000,
                    ..get("a")
                })],
                ..Default::default()
            },
        ),
        (
            "range at a future revision beside a put",
            PbTxnRequest {
                success: vec![
                    op_put(put("w", "1")),
                    op_get(PbRangeRequest {
                        revision: 1000,
                        ..get("a")
                    }),
                ],
                ..Default::default()
            },
        ),
    ];
    for (what, t) in errors {
        p.same(what, |c| c.txn(t.clone())).await.ok();
    }
    p.same("final state", |c| c.range(ranged("\0", "\0")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_revision_errors() {
    let mut p = Pair::start().await;
    seed(&mut p).await;
    p.same("delete b", |c| c.delete(del("b"))).await.unwrap();
    p.same("put b again", |c| c.put(put("b", "new")))
        .await
        .unwrap();
    p.same("compact in the future", |c| {
        c.compact(PbCompactionRequest {
            revision: 100,
            physical: false,
        })
    })
    .await
    .ok();
    p.same("compact at 5", |c| {
        c.compact(PbCompactionRequest {
            revision: 5,
            physical: true,
        })
    })
    .await
    .unwrap();
    p.same("compact at 5 again", |c| {
        c.compact(PbCompactionRequest {
            revision: 5,
            physical: false,
        })
    })
    .await
    .ok();
    p.same("compact below", |c| {
        c.compact(PbCompactionRequest {
            revision: 3,
            physical: false,
        })
    })
    .await
    .ok();
    for rev in [0, 4, 5, 6, 11, 12, 13] {
        p.same(&format!("range all at {rev}"), |c| {
            c.range(PbRangeRequest {
                revision: rev,
                ..ranged("\0", "\0")
            })
        })
        .await
        .ok();
    }
    let t = PbTxnRequest {
        success: vec![op_get(PbRangeRequest {
            revision: 2,
            ..get("a")
        })],
        ..Default::default()
    };
    p.same("txn range below compaction", |c| c.txn(t.clone()))
        .await
        .ok();
    p.same("compact at current", |c| {
        c.compact(PbCompactionRequest {
            revision: 12,
            physical: false,
        })
    })
    .await
    .unwrap();
    p.same("range all", |c| c.range(ranged("\0", "\0")))
        .await
        .unwrap();
    p.same("put after compaction", |c| c.put(put("a", "after")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_limit() {
    let mut p = Pair::start().await;
    let big = "x".repeat(1_700_000);
    p.same("put over max-request-bytes", |c| c.put(put("big", &big)))
        .await
        .ok();
    let fits = "y".repeat(1_000_000);
    p.same("put under max-request-bytes", |c| c.put(put("big", &fits)))
        .await
        .unwrap();
    p.same("get it back", |c| {
        c.range(PbRangeRequest {
            keys_only: true,
            ..get("big")
        })
    })
    .await
    .unwrap();
    // Beyond what gRPC itself accepts the message is refused before etcd sees
    // it; the code is what clients see (the text is the gRPC library's own).
    let huge = "z".repeat(2_200_000);
    let real = within(10, "call", p.real.put(put("huge", &huge)))
        .await
        .unwrap_err();
    let emb = within(10, "call", p.emb.put(put("huge", &huge)))
        .await
        .unwrap_err();
    assert_eq!(real.code(), emb.code(), "real: {real:?}\nembedded: {emb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_grant_revoke_keepalive_ttl() {
    let mut p = Pair::start().await;
    p.same("grant with id", |c| c.lease_grant(lease(10, 30)))
        .await
        .unwrap();
    p.same("grant below the minimum TTL", |c| {
        c.lease_grant(lease(11, 1))
    })
    .await
    .unwrap();
    p.same("grant TTL 0", |c| c.lease_grant(lease(12, 0)))
        .await
        .unwrap();
    p.same("grant duplicate id", |c| c.lease_grant(lease(10, 30)))
        .await
        .ok();
    p.same("grant too large", |c| {
        c.lease_grant(lease(13, 9_000_000_001))
    })
    .await
    .ok();
    // A server-chosen ID differs between servers; its shape must not.
    let (real, emb) = (
        within(10, "grant", p.real.lease_grant(lease(0, 30)))
            .await
            .unwrap(),
        within(10, "grant", p.emb.lease_grant(lease(0, 30)))
            .await
            .unwrap(),
    );
    assert!(real.id > 0 && emb.id > 0, "{real:?} {emb:?}");
    assert_eq!((real.ttl, emb.ttl), (30, 30));
    for (k, id) in [("l/b", 10), ("l/a", 10), ("l/c", 11), ("other", 0)] {
        p.same("put", |c| {
            c.put(PbPutRequest {
                lease: id,
                ..put(k, "v")
            })
        })
        .await
        .unwrap();
    }
    let ttl = |mut r: PbLeaseTimeToLiveResponse| {
        r.keys.sort();
        r
    };
    p.same("ttl with keys", |c| async move {
        c.lease_ttl(PbLeaseTimeToLiveRequest { id: 10, keys: true })
            .await
            .map(ttl)
    })
    .await
    .unwrap();
    p.same("ttl without keys", |c| {
        c.lease_ttl(PbLeaseTimeToLiveRequest {
            id: 11,
            keys: false,
        })
    })
    .await
    .unwrap();
    p.same("ttl of unknown lease", |c| {
        c.lease_ttl(PbLeaseTimeToLiveRequest {
            id: 999,
            keys: true,
        })
    })
    .await
    .unwrap();
    let (real_w, emb_w) = p.watch().await;
    let (mut real_w, mut emb_w) = (real_w, emb_w);
    real_w.send(Create::prefix("l/").prev_kv().request()).await;
    emb_w.send(Create::prefix("l/").prev_kv().request()).await;
    let (a, b) = (real_w.take(1).await, emb_w.take(1).await);
    p.same_value("watch created", &a, &b);
    p.same("revoke deletes keys in one revision", |c| {
        c.lease_revoke(PbLeaseRevokeRequest { id: 10 })
    })
    .await
    .unwrap();
    let (a, b) = (real_w.events(2).await, emb_w.events(2).await);
    p.same_value("watchers see the deletes", &a, &b);
    p.same("revoke a lease without keys", |c| {
        c.lease_revoke(PbLeaseRevokeRequest { id: 12 })
    })
    .await
    .unwrap();
    p.same("revoke unknown", |c| {
        c.lease_revoke(PbLeaseRevokeRequest { id: 10 })
    })
    .await
    .ok();
    p.same("everything", |c| c.range(ranged("\0", "\0")))
        .await
        .unwrap();
    // Leases lists what remains (sorted here: etcd orders by expiry).
    let (mut a, mut b) = (
        within(10, "call", p.real.lease_leases(PbLeaseLeasesRequest {}))
            .await
            .unwrap(),
        within(10, "call", p.emb.lease_leases(PbLeaseLeasesRequest {}))
            .await
            .unwrap(),
    );
    a.leases.retain(|l| l.id < 1000);
    b.leases.retain(|l| l.id < 1000);
    a.leases.sort_by_key(|l| l.id);
    b.leases.sort_by_key(|l| l.id);
    p.same_value("leases", &a, &b);
    // KeepAlive: a live lease renews to its TTL, an unknown one answers TTL 0.
    let mut real_ka = p.real.keep_alive();
    let mut emb_ka = p.emb.keep_alive();
    for id in [11, 4242] {
        let (a, b) = (real_ka.ask(id).await, emb_ka.ask(id).await);
        p.same_value(&format!("keepalive {id}"), &a, &b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_keys_and_notifies_watchers() {
    let mut p = Pair::start().await;
    p.same("grant", |c| c.lease_grant(lease(5, 2)))
        .await
        .unwrap();
    p.same("put", |c| c.put(put("stay", "1"))).await.unwrap();
    for k in ["x/2", "x/1"] {
        p.same("put leased", |c| {
            c.put(PbPutRequest {
                lease: 5,
                ..put(k, "v")
            })
        })
        .await
        .unwrap();
    }
    let (mut real_w, mut emb_w) = p.watch().await;
    real_w.send(Create::prefix("x/").prev_kv().request()).await;
    emb_w.send(Create::prefix("x/").prev_kv().request()).await;
    let (a, b) = (real_w.take(1).await, emb_w.take(1).await);
    p.same_value("watch created", &a, &b);
    let (a, b) = tokio::join!(real_w.events(2), emb_w.events(2));
    p.same_value("expiry deletes both keys in one revision", &a, &b);
    p.same("after expiry", |c| c.range(ranged("\0", "\0")))
        .await
        .unwrap();
    p.same("ttl after expiry", |c| {
        c.lease_ttl(PbLeaseTimeToLiveRequest { id: 5, keys: true })
    })
    .await
    .unwrap();
    p.same("put with the expired lease", |c| {
        c.put(PbPutRequest {
            lease: 5,
            ..put("x/3", "v")
        })
    })
    .await
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_many_watchers_history_filters_cancel() {
    let mut p = Pair::start().await;
    seed(&mut p).await; // revision 10
    let (mut r, mut e) = p.watch().await;
    let creates = vec![
        Create::key("a"),                      // id 0: from now on
        Create::prefix("d/").rev(2).prev_kv(), // id 1: history replay with prev_kv
        Create {
            filters: vec![0],
            ..Create::prefix("").rev(1)
        }, // id 2: no puts
        Create {
            filters: vec![1],
            ..Create::key("b").rev(3)
        }, // id 3: no deletes
        Create {
            watch_id: 7,
            ..Create::key("e")
        }, // explicit id
        Create {
            watch_id: 7,
            ..Create::key("e")
        }, // duplicate id
        Create::key("a"),                      // id 4 (skips none)
        Create {
            range_end: b"a".to_vec(),
            ..Create::key("b")
        }, // empty range
        Create {
            key: Vec::new(),
            range_end: vec![0],
            ..Default::default()
        }, // all keys
    ];
    for c in &creates {
        r.send(c.request()).await;
        e.send(c.request()).await;
    }
    // Created replies in request order; the two replays (watch 1 from d/ at
    // revision 2, watch 3 from b at revision 3) may interleave with them.
    let all = |g: &[PbWatchResponse]| g.len() >= creates.len() + 2;
    let (a, b) = (r.until(10, all).await, e.until(10, all).await);
    let created =
        |v: &[PbWatchResponse]| v.iter().filter(|x| x.created).cloned().collect::<Vec<_>>();
    p.same_value("created replies", &created(&a), &created(&b));
    let replay = |v: &[PbWatchResponse]| {
        let mut v: Vec<_> = v.iter().filter(|x| !x.created).cloned().collect();
        v.sort_by_key(|x| x.watch_id);
        v
    };
    p.same_value("history replay", &replay(&a), &replay(&b));
    // Live events: a delete and puts in one txn, seen by the matching watchers.
    let t = PbTxnRequest {
        success: vec![
            op_put(put("a", "new")),
            op_del(del("b")),
            op_put(put("d/w", "w")),
        ],
        ..Default::default()
    };
    p.same("txn", |c| c.txn(t.clone())).await.unwrap();
    let count = |v: &[PbWatchResponse]| v.len();
    // a -> watches 0, 4, 8(all); b delete -> 2, 8 (3 filters deletes); d/w -> 1, 8.
    let (a, b) = (
        r.until(5, |g| count(g) >= 5).await,
        e.until(5, |g| count(g) >= 5).await,
    );
    let sorted = |mut v: Vec<PbWatchResponse>| {
        v.sort_by_key(|x| x.watch_id);
        v
    };
    p.same_value("live events", &sorted(a), &sorted(b));
    // Cancel one, and an unknown id (no reply), then a progress request.
    r.send(cancel_request(0)).await;
    e.send(cancel_request(0)).await;
    r.send(cancel_request(99)).await;
    e.send(cancel_request(99)).await;
    r.send(progress_request()).await;
    e.send(progress_request()).await;
    let (a, b) = (r.take(2).await, e.take(2).await);
    p.same_value("cancel and progress", &a, &b);
    p.same("put a", |c| c.put(put("a", "after cancel")))
        .await
        .unwrap();
    let (a, b) = (r.take(2).await, e.take(2).await);
    p.same_value("only the remaining watchers see it", &sorted(a), &sorted(b));
    assert!(r.quiet(200).await.is_none() && e.quiet(50).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_revision_zero_and_future_revision() {
    let mut p = Pair::start().await;
    seed(&mut p).await;
    let (mut r, mut e) = p.watch().await;
    for c in [
        Create::key("a"),
        Create::key("a").rev(12),
        Create::key("a").rev(11).prev_kv(),
    ] {
        r.send(c.request()).await;
        e.send(c.request()).await;
    }
    let (a, b) = (r.take(3).await, e.take(3).await);
    p.same_value("created", &a, &b);
    for v in ["x", "y", "z"] {
        p.same("put a", |c| c.put(put("a", v))).await.unwrap();
    }
    // Revisions 11, 12, 13: watch 0 sees all, watch 1 from 12, watch 2 from 11.
    let (a, b) = (r.events(8).await, e.events(8).await);
    // Watchers of one stream may interleave differently; each watcher's own
    // events must be the same, in order.
    let by_watcher = |mut v: Vec<PbWatchResponse>| {
        v.sort_by_key(|x| x.watch_id);
        v
    };
    p.same_value("events in order, each once", &by_watcher(a), &by_watcher(b));
    assert!(e.quiet(100).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_compacted_revision_is_canceled() {
    let mut p = Pair::start().await;
    seed(&mut p).await;
    p.same("compact", |c| {
        c.compact(PbCompactionRequest {
            revision: 6,
            physical: true,
        })
    })
    .await
    .unwrap();
    let (mut r, mut e) = p.watch().await;
    for c in [
        Create::prefix("").rev(3),
        Create::prefix("").rev(6).prev_kv(),
        Create::prefix("").rev(7).prev_kv(),
    ] {
        r.send(c.request()).await;
        e.send(c.request()).await;
    }
    let done = |g: &[PbWatchResponse]| {
        g.iter().filter(|x| x.created).count() == 3
            && g.iter().any(|x| x.canceled)
            && g.iter().filter(|x| !x.events.is_empty()).count() == 2
    };
    let (a, mut b) = (r.until(10, done).await, e.until(10, done).await);
    // The one deliberate difference: etcd 3.4 sends no reason, the embedded
    // server sends 3.5's, as the issue asks. Checked here, then set aside.
    for x in b.iter_mut().filter(|x| x.canceled) {
        assert_eq!(
            x.cancel_reason,
            "mvcc: required revision has been compacted"
        );
        x.cancel_reason.clear();
    }
    let sorted = |mut v: Vec<PbWatchResponse>| {
        v.sort_by_key(|x| (x.watch_id, !x.created));
        v
    };
    p.same_value(
        "compacted watch canceled, others replay",
        &sorted(a),
        &sorted(b),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fragments_large_responses() {
    let mut p = Pair::start().await;
    // etcd fragments at --max-request-bytes plus gRPC's 512 KiB allowance
    // (2 MiB by default): three 900 kB values replayed together exceed it.
    let v = "v".repeat(900_000);
    for i in 0..3 {
        p.same("big put", |c| c.put(put(&format!("f/{i}"), &v)))
            .await
            .unwrap();
    }
    let (mut r, mut e) = p.watch().await;
    for c in [
        Create {
            fragment: true,
            ..Create::prefix("f/").rev(2)
        },
        Create::prefix("f/").rev(2),
    ] {
        r.send(c.request()).await;
        e.send(c.request()).await;
    }
    let (a, b) = (r.events(6).await, e.events(6).await);
    let sorted = |mut v: Vec<PbWatchResponse>| {
        v.sort_by_key(|x| (x.watch_id, !x.created));
        v
    };
    // Values shrunk to their length: comparing megabytes as text is slow.
    let shrink = |mut v: Vec<PbWatchResponse>| {
        for kv in v
            .iter_mut()
            .flat_map(|x| x.events.iter_mut())
            .filter_map(|e| e.kv.as_mut())
        {
            kv.value = format!("<{} bytes>", kv.value.len()).into_bytes();
        }
        v
    };
    let (a, b) = (shrink(sorted(a)), shrink(sorted(b)));
    assert!(
        a.iter().any(|x| x.fragment),
        "the real etcd fragments: {a:#?}"
    );
    p.same_value("fragments", &a, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_reports_an_idle_store() {
    let mut p = Pair::start_with(
        &["--experimental-watch-progress-notify-interval", "1s"],
        |c| c.progress_notify_interval = Duration::from_secs(1),
    )
    .await;
    seed(&mut p).await;
    let (mut r, mut e) = p.watch().await;
    let c = Create {
        progress_notify: true,
        ..Create::key("a")
    };
    r.send(c.request()).await;
    e.send(c.request()).await;
    let (a, b) = (r.take(2).await, e.take(2).await);
    p.same_value("created, then a progress notification", &a, &b);
    assert!(a[1].events.is_empty() && a[1].header.as_ref().unwrap().revision == 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_cluster() {
    let mut p = Pair::start().await;
    let (real, emb) = (
        within(10, "call", p.real.status(PbStatusRequest {}))
            .await
            .unwrap(),
        within(10, "call", p.emb.status(PbStatusRequest {}))
            .await
            .unwrap(),
    );
    assert_eq!(emb.leader, emb.header.as_ref().unwrap().member_id);
    assert_eq!(real.leader, real.header.as_ref().unwrap().member_id);
    assert!(emb.version.starts_with("3."), "{emb:?}");
    p.same("alarm list", |c| {
        c.alarm(PbAlarmRequest {
            action: 0,
            member_id: 0,
            alarm: 0,
        })
    })
    .await
    .unwrap();
    let (real, emb) = (
        p.real
            .member_list(PbMemberListRequest {
                linearizable: false,
            })
            .await
            .unwrap(),
        p.emb
            .member_list(PbMemberListRequest {
                linearizable: false,
            })
            .await
            .unwrap(),
    );
    assert_eq!(real.members.len(), 1);
    assert_eq!(emb.members.len(), 1);
    assert_eq!(emb.members[0].client_ur_ls, vec![p.embedded.url.clone()]);
    assert_eq!(emb.members[0].id, emb.header.unwrap().member_id);
}

/// The Lock service, through etcd-client's lock API: the oldest waiter holds
/// the lock, the next gets it when the first unlocks, and a lock needs a live lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_service_grants_in_order() {
    use etcd_client::{Client, LockOptions};
    let mut p = Pair::start().await;
    for id in [1, 2] {
        p.same("grant", |c| c.lease_grant(lease(id, 60)))
            .await
            .unwrap();
    }
    let mut outcomes = Vec::new();
    for url in [p.real_url(), p.embedded.url.clone()] {
        let mut c = within(10, "connect", Client::connect([url.as_str()], None))
            .await
            .unwrap();
        let first = within(
            10,
            "lock",
            c.lock("mylock", Some(LockOptions::new().with_lease(1))),
        )
        .await
        .unwrap();
        let mut c2 = c.clone();
        let second = tokio::spawn(async move {
            c2.lock("mylock", Some(LockOptions::new().with_lease(2)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waited = !second.is_finished();
        within(10, "unlock", c.unlock(first.key())).await.unwrap();
        let second = within(10, "second lock", second).await.unwrap().unwrap();
        let unknown = within(
            10,
            "lock",
            c.lock("other", Some(LockOptions::new().with_lease(99))),
        )
        .await
        .map(|r| r.key().to_vec())
        .map_err(|e| e.to_string());
        outcomes.push((
            String::from_utf8_lossy(first.key()).into_owned(),
            first.header().map(|h| h.revision()),
            waited,
            String::from_utf8_lossy(second.key()).into_owned(),
            unknown,
        ));
    }
    p.same_value("lock, wait, unlock", &outcomes[0], &outcomes[1]);
    assert!(outcomes[1].2, "the second lock waited for the first");
}

/// Puts 64 KiB values until the server refuses one; that refusal.
async fn fill_until_refused(c: &Raw) -> tonic::Status {
    let value = "f".repeat(64 * 1024);
    for i in 0..400 {
        if let Err(e) = within(10, "put", c.put(put(&format!("fill/{i:03}"), &value))).await {
            return e;
        }
    }
    panic!("400 puts of 64 KiB fitted in a 4 MiB quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_quota_and_the_nospace_alarm() {
    let quota = 4 << 20;
    let mut p = Pair::start_with(&["--quota-backend-bytes", "4194304"], |c| {
        c.quota_backend_bytes = quota
    })
    .await;
    let (real, emb) = tokio::join!(fill_until_refused(&p.real), fill_until_refused(&p.emb));
    p.same_value(
        "the refusal",
        &(real.code(), real.message()),
        &(emb.code(), emb.message()),
    );
    let get_alarms = |c: Raw| c.alarm(PbAlarmRequest::default());
    p.same("alarm list", get_alarms).await.unwrap();
    p.same("a small put while NOSPACE", |c| c.put(put("small", "x")))
        .await
        .ok();
    p.same("a grant while NOSPACE", |c| c.lease_grant(lease(5, 60)))
        .await
        .ok();
    // Deletes still work (the revisions differ: the stores filled unlike).
    p.real.delete(del("fill/000")).await.unwrap();
    p.emb.delete(del("fill/000")).await.unwrap();
    p.same("disarm for another member", |c| {
        c.alarm(PbAlarmRequest {
            action: 2,
            member_id: 1,
            alarm: 1,
        })
    })
    .await
    .unwrap();
    p.same("disarm, as etcdctl does it", |c| async move {
        let listed = c.alarm(PbAlarmRequest::default()).await?;
        c.alarm(PbAlarmRequest {
            action: 2,
            member_id: listed.alarms[0].member_id,
            alarm: listed.alarms[0].alarm,
        })
        .await
    })
    .await
    .unwrap();
    p.same("alarm list after disarm", get_alarms).await.unwrap();
}
