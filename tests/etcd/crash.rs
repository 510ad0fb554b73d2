//! Crash safety: `devstack etcd serve` killed with SIGKILL in the middle of a
//! stream of puts loses no acknowledged write, and leased keys do not survive
//! a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::proto::*;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_puts_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // key -> (value, revision) of every acknowledged put.
    let acked: Arc<Mutex<BTreeMap<String, (String, i64)>>> = Arc::default();
    for round in 0..3 {
        let port = free_port();
        let mut child = serve(&dir, port);
        let raw = within(15, "server start", connect(port)).await;
        if round == 0 {
            raw.lease_grant(lease(42, 600)).await.unwrap();
            raw.put(PbPutRequest {
                lease: 42,
                ..put("leased", "gone after restart")
            })
            .await
            .unwrap();
        }
        let mut writers = Vec::new();
        for w in 0..8 {
            let (raw, acked) = (raw.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("r{round}/w{w}/{i:05}");
                    let value = format!("value {round} {w} {i}");
                    match raw.put(put(&key, &value)).await {
                        Ok(resp) => {
                            let rev = resp.header.unwrap().revision;
                            acked.lock().unwrap().insert(key, (value, rev));
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let the puts run, then kill -9 while they are in flight.
        tokio::time::sleep(Duration::from_millis(300 + 200 * round)).await;
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        for w in writers {
            within(10, "writers stop", w).await.unwrap();
        }
        let before = acked.lock().unwrap().len();
        assert!(
            before > 100 * (round as usize + 1),
            "too few puts to be a test: {before}"
        );

        // Restart on the same directory: every acknowledged put is there.
        let port = free_port();
        let _child = serve(&dir, port);
        let raw = within(15, "server restart", connect(port)).await;
        let all = raw.range(ranged("\0", "\0")).await.unwrap();
        let store: BTreeMap<Vec<u8>, PbKeyValue> =
            all.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let acked = acked.lock().unwrap().clone();
        let mut max_rev = 0;
        for (key, (value, rev)) in &acked {
            let kv = store
                .get(key.as_bytes())
                .unwrap_or_else(|| panic!("round {round}: acknowledged put of {key} lost"));
            assert_eq!(kv.value, value.as_bytes(), "{key}");
            assert_eq!(kv.mod_revision, *rev, "{key}");
            max_rev = max_rev.max(*rev);
        }
        let current = all.header.unwrap().revision;
        assert!(current >= max_rev);
        assert!(
            !store.contains_key(b"leased".as_slice()),
            "leased keys must not survive a restart"
        );
        // Revisions stay gap-free across the restart: the next put is one more.
        let next = raw
            .put(put("after", "restart"))
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
        assert_eq!(next, current + 1);
        raw.delete(del("after")).await.unwrap();
        drop(_child);
    }
}
