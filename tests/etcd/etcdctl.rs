//! etcdctl (Debian's etcd-client, v3.4) against the embedded server: the
//! commands people type, with the output etcdctl prints.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::harness::*;

/// Runs etcdctl against `url`; returns (success, stdout, stderr).
async fn etcdctl(url: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .expect("etcdctl (Debian's etcd-client) must be installed");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
    }
    let out = within(90, &format!("etcdctl {args:?}"), child.wait_with_output())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ok(url: &str, args: &[&str]) -> String {
    let (success, out, err) = etcdctl(url, args, None).await;
    assert!(success, "etcdctl {args:?} failed:\n{out}\n{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_kv_txn_watch_lease_and_cluster_commands() {
    let e = Embedded::start(|_| {}).await;
    let url = e.url.as_str();
    assert_eq!(ok(url, &["put", "foo", "bar"]).await, "OK\n");
    assert_eq!(ok(url, &["get", "foo"]).await, "foo\nbar\n");
    ok(url, &["put", "foo/1", "one"]).await;
    ok(url, &["put", "foo/2", "two"]).await;
    assert_eq!(
        ok(url, &["get", "foo", "--prefix"]).await,
        "foo\nbar\nfoo/1\none\nfoo/2\ntwo\n"
    );
    assert_eq!(
        ok(url, &["get", "foo/", "--prefix", "--keys-only"]).await,
        "foo/1\n\nfoo/2\n\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(url, &["get", "foo", "--prefix", "-w", "json"]).await).unwrap();
    assert_eq!(json["count"], 3);
    assert_eq!(json["header"]["revision"], 4);
    assert_eq!(ok(url, &["del", "foo/1"]).await, "1\n");
    assert_eq!(ok(url, &["del", "nothing"]).await, "0\n");

    // txn: interactive input on stdin, as the etcdctl docs show it.
    let (success, out, err) = etcdctl(
        url,
        &["txn"],
        Some("value(\"foo\") = \"bar\"\n\nput foo/3 three\nget foo/2\n\nput foo/3 else\n\n"),
    )
    .await;
    assert!(success, "{out}{err}");
    assert_eq!(out, "SUCCESS\n\nOK\n\nfoo/2\ntwo\n");
    let (success, out, _) = etcdctl(
        url,
        &["txn"],
        Some("value(\"foo\") = \"nope\"\n\nput foo/3 then\n\nput foo/4 else\n\n"),
    )
    .await;
    assert!(success);
    assert_eq!(out, "FAILURE\n\nOK\n");

    // watch --rev replays history, then follows new changes.
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(["watch", "--rev=2", "foo/", "--prefix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let expected = [
        "PUT", "foo/1", "one", "PUT", "foo/2", "two", "DELETE", "foo/1", "", "PUT", "foo/3",
        "three", "PUT", "foo/4", "else", "PUT", "foo/live", "new",
    ];
    let mut put_live = false;
    while seen.len() < expected.len() {
        let line = within(10, "etcdctl watch output", lines.next_line())
            .await
            .unwrap()
            .expect("etcdctl watch keeps running");
        seen.push(line);
        if seen.len() == 15 && !put_live {
            put_live = true;
            ok(url, &["put", "foo/live", "new"]).await;
        }
    }
    assert_eq!(seen, expected);
    let _ = watch.kill().await;

    // Leases: grant, attach, keep alive, inspect, revoke.
    let out = ok(url, &["lease", "grant", "60"]).await;
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(out, format!("lease {id} granted with TTL(60s)\n"));
    ok(url, &["put", "--lease", &id, "leased/a", "x"]).await;
    let out = ok(url, &["lease", "keep-alive", "--once", &id]).await;
    assert_eq!(out, format!("lease {id} keepalived with TTL(60)\n"));
    let out = ok(url, &["lease", "timetolive", "--keys", &id]).await;
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(60s), remaining("))
            && out.ends_with("attached keys([leased/a])\n"),
        "{out}"
    );
    assert_eq!(
        ok(url, &["lease", "list"]).await,
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        ok(url, &["lease", "revoke", &id]).await,
        format!("lease {id} revoked\n")
    );
    assert_eq!(ok(url, &["get", "leased/a"]).await, "");

    // Compaction through etcdctl, then a read below it is refused.
    let out = ok(url, &["compaction", "3"]).await;
    assert_eq!(out, "compacted revision 3\n");
    let (success, _, err) = etcdctl(url, &["get", "foo", "--rev=2"], None).await;
    assert!(
        !success && err.contains("required revision has been compacted"),
        "{err}"
    );

    // Cluster views.
    let status: serde_json::Value =
        serde_json::from_str(&ok(url, &["endpoint", "status", "-w", "json"]).await).unwrap();
    let st = &status[0]["Status"];
    assert_eq!(st["version"], devstack::etcd::ETCD_VERSION);
    assert_eq!(st["leader"], st["header"]["member_id"]);
    let out = ok(url, &["endpoint", "status"]).await;
    assert!(out.starts_with(&format!("{url}, ")), "{out}");
    // etcdctl 3.4 prints the health report on stderr.
    let (success, _, err) = etcdctl(url, &["endpoint", "health"], None).await;
    assert!(
        success && err.starts_with(&format!("{url} is healthy")),
        "{err}"
    );
    let out = ok(url, &["member", "list"]).await;
    assert!(
        out.contains(", started, devstack, http://localhost:2380, ") && out.contains(url),
        "{out}"
    );
    assert_eq!(ok(url, &["alarm", "list"]).await, "");
    let out = ok(url, &["defrag"]).await;
    assert!(out.contains("Finished defragmenting"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_check_perf_passes() {
    let e = Embedded::start(|_| {}).await;
    let (success, out, err) = etcdctl(&e.url, &["check", "perf"], None).await;
    assert!(
        success && out.contains("PASS"),
        "check perf failed:\n{out}\n{err}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version_over_http() {
    use tokio::io::AsyncReadExt;
    let e = Embedded::start(|_| {}).await;
    let addr = e.url.trim_start_matches("http://").to_string();
    for (path, want) in [
        ("/health", r#"{"health":"true","reason":""}"#.to_string()),
        (
            "/version",
            format!(
                r#"{{"etcdserver":"{}","etcdcluster":"{}"}}"#,
                devstack::etcd::ETCD_VERSION,
                devstack::etcd::ETCD_CLUSTER_VERSION
            ),
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut body = String::new();
        within(5, "http", s.read_to_string(&mut body))
            .await
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.ends_with(&want), "{body}");
    }
    let _ = Duration::from_secs(0);
}
