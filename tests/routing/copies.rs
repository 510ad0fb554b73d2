//! Two copies of one stack (`-p a`, `-p b`) on one real etcd: neither
//! registrar takes the other's registrations, each proxy sends only to its
//! own containers, and keys devstack did not make (a hand-made key on a
//! lease under the prefix, another key on that lease outside it) survive
//! both registrars, their lease never revoked.

use std::time::Duration;

use devstack::controller::routing::{Routing, RoutingOptions};
use devstack::engine::Engine;
use etcd_client::{Client, GetOptions, PutOptions};

use crate::support::*;

const SERVICES: &str = "  hello:
    image: devstack-fixtures/app
    port: 8080
    env: { SERVICE: hello }
    health: { http: /health, interval: 500ms, start_period: 20s }
    restart: \"no\"
    stop_grace: 1s
    routes: [hello.test.localhost]
";

/// Every key under `prefix`.
async fn keys(c: &mut Client, prefix: &str) -> Vec<String> {
    c.get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("etcd answers")
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap_or_default().to_string())
        .collect()
}

/// The full id of a copy's `hello` container.
fn hello_id(p: &Project) -> String {
    docker(&["inspect", "-f", "{{.Id}}", &format!("{}-hello-1", p.name)])
}

/// True when some key under `/` ends with container `id`: registered,
/// whatever the layout.
async fn registered(c: &mut Client, listing: &str, id: &str) -> bool {
    keys(c, listing)
        .await
        .iter()
        .any(|k| k.ends_with(&format!("/hello/{id}")))
}

/// Ten requests through a copy's proxy all answer from its own container.
async fn only_own(p: &Project) {
    let own = format!("{}-hello-1", p.name);
    for _ in 0..10 {
        let (status, body) = get(p.listen, "hello.test.localhost", "/")
            .await
            .unwrap_or_else(|e| panic!("{}'s proxy: {e}", p.name));
        assert_eq!(status, 200, "{}'s proxy: {body}", p.name);
        assert_eq!(hostname(&body).as_deref(), Some(own.as_str()), "{body}");
    }
}

/// Both copies up and routed against `etcd` (with `prefix`, or devstack's
/// own); `hand_key` is put on a lease of its own first, with a key outside
/// every prefix on the same lease.
async fn two_copies(prefix: Option<&str>, hand_key: impl Fn(&Project) -> String) {
    let etcd = RealEtcd::start().await;
    let extra = format!(
        "discovery:\n  etcd: {{ endpoints: ['{}'] }}\n  ttl: 60s\n{}",
        etcd.url,
        prefix
            .map(|p| format!("  prefix: {p}\n"))
            .unwrap_or_default()
    );
    let a = Project::new("ca", SERVICES, &extra);
    let b = Project::new("cb", SERVICES, &extra);
    let mut c = Client::connect([etcd.url.clone()], None)
        .await
        .expect("etcd");
    let lease = c.lease_grant(300, None).await.expect("a lease").id();
    let by_hand = hand_key(&a);
    let outside = "/elsewhere/by-hand".to_string();
    for k in [&by_hand, &outside] {
        c.put(
            k.as_str(),
            "10.9.9.9:80",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
    }

    let engine = Engine::connect().await.expect("the engine answers");
    a.up(&engine).await;
    let ra = Routing::start(&engine, &a.stack, &a.name, RoutingOptions::default())
        .await
        .expect("a's routing path starts");
    let a_id = hello_id(&a);
    until(Duration::from_secs(20), "a registered", || {
        let mut c = c.clone();
        let id = a_id.clone();
        async move { registered(&mut c, "/", &id).await }
    })
    .await;

    b.up(&engine).await;
    let rb = Routing::start(&engine, &b.stack, &b.name, RoutingOptions::default())
        .await
        .expect("b's routing path starts");
    // b's registrar has resynced by now (before its router started).
    assert!(
        registered(&mut c, "/", &a_id).await,
        "b's registrar took a's registration: {:?}",
        keys(&mut c, "/").await
    );
    let b_id = hello_id(&b);
    until(Duration::from_secs(20), "b registered", || {
        let mut c = c.clone();
        let id = b_id.clone();
        async move { registered(&mut c, "/", &id).await }
    })
    .await;
    assert!(registered(&mut c, "/", &a_id).await, "a still registered");

    if prefix.is_none() {
        // Each copy reads only its own registrations.
        for p in [&a, &b] {
            until(Duration::from_secs(20), "the copy answers", || async {
                matches!(
                    get(p.listen, "hello.test.localhost", "/").await,
                    Ok((200, _))
                )
            })
            .await;
            only_own(p).await;
        }
    }

    let all = keys(&mut c, "/").await;
    for k in [&by_hand, &outside] {
        assert!(all.contains(k), "`{k}` was deleted: {all:?}");
    }
    let ttl = c.lease_time_to_live(lease, None).await.expect("ttl").ttl();
    assert!(ttl > 0, "the hand-made key's lease was revoked (ttl {ttl})");

    // Stopping takes only each copy's own registrations.
    ra.shutdown().await;
    assert!(!registered(&mut c, "/", &a_id).await, "a deregistered");
    assert!(registered(&mut c, "/", &b_id).await, "b still registered");
    rb.shutdown().await;
    let all = keys(&mut c, "/").await;
    assert_eq!(all, {
        let mut left = vec![outside.clone(), by_hand.clone()];
        left.sort();
        left
    });
}

#[test]
fn two_copies_on_one_real_etcd_keep_their_own_registrations_and_routes() {
    run(
        Duration::from_secs(180),
        // Under the prefix a's registrations go to (`/services/<project>`),
        // and under the one every copy shared before.
        two_copies(None, |a| format!("/services/{}/by-hand", a.name)),
    );
}

#[test]
fn two_copies_sharing_a_production_prefix_keep_their_own_registrations() {
    run(
        Duration::from_secs(180),
        two_copies(Some("/shared"), |_| "/shared/by-hand".to_string()),
    );
}
