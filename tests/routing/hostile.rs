//! Registry values are written by anyone on the stack network: a hostile
//! key put into the running stack's etcd (with Debian's etcdctl, as a
//! container could) never reaches the proxy's configuration, the proxy keeps
//! serving the good instances, and a warning names the key.

use std::process::Command;
use std::time::Duration;

use devstack::router::Layout;
use devstack::router::RouterEvent;
use tokio::sync::broadcast;

use crate::support::*;

const SERVICES: &str = "  a:
    image: devstack-fixtures/app
    port: 8080
    env: { SERVICE: a }
    health: { http: /health, interval: 500ms, start_period: 20s }
    restart: \"no\"
    stop_grace: 1s
    routes: [a.test.localhost]
";

/// `etcdctl put KEY VALUE` against `url`.
fn etcdctl_put(url: &str, key: &str, value: &str) {
    let out = Command::new("/usr/bin/etcdctl")
        .args(["--endpoints", url, "put", key, value])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("/usr/bin/etcdctl runs");
    assert!(
        out.status.success(),
        "etcdctl put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The keys the router reported as skipped, until `want` were all seen.
async fn skipped(rx: &mut broadcast::Receiver<RouterEvent>, want: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let wait = async {
        while !want.iter().all(|k| seen.contains(k)) {
            match rx.recv().await {
                Ok(RouterEvent::RegistrySkipped { key, reason }) => {
                    assert!(!reason.is_empty());
                    seen.push(key);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("router events ended: {e}"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .is_err()
    {
        panic!("warnings for {want:?} not all reported within 15s; saw {seen:?}");
    }
    seen
}

#[test]
fn hostile_registry_values_are_skipped_with_a_warning() {
    run(Duration::from_secs(120), async {
        let p = Project::new("hostile", SERVICES, "");
        let routing = p.up_routed().await;
        let mut events = routing.router.subscribe();
        let url = routing.endpoints[0].clone();
        let a1 = format!("{}-a-1", p.name);
        until(Duration::from_secs(20), "a answers through the proxy", || async {
            matches!(get(p.listen, "a.test.localhost", "/").await, Ok((200, ref b)) if hostname(b).as_deref() == Some(a1.as_str()))
        })
        .await;

        // What a container on the stack network could write. First a value
        // that, pasted into the built-in template, gives a config HAProxy
        // accepts: a server line, then a `program` section that runs a
        // command in the proxy, then a backend that takes the rest of the
        // line. It goes in alone, so nothing else spoils that config.
        let injected = "192.0.2.50:8080 check\n\nprogram pwned\n    command /bin/sh -c \"touch /tmp/pwned; exec sleep 3600\"\n\nbackend devstack_pwned\n    server x 127.0.0.1";
        let layout = Layout::new(&p.stack.discovery, &p.name);
        let mut keys = vec![layout.key("a", "nl")];
        etcdctl_put(
            &url,
            &keys[0],
            &serde_json::json!({"service": "a", "id": "nl", "address": injected, "port": 8080, "replica": 9}).to_string(),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Then a `;` for the master CLI, extra words, a comment, a raw line
        // break, a port out of range.
        let hostile = [
            ("raw", "192.0.2.51\nprogram pwned2\n    command /bin/true\n:8080".to_string()),
            ("semi", "{\"service\":\"a\",\"id\":\"semi\",\"address\":\"192.0.2.52;@master reload\",\"port\":8080}".to_string()),
            ("words", "192.0.2.53 backup:8080".to_string()),
            ("hash", "{\"service\":\"a\",\"id\":\"hash\",\"address\":\"192.0.2.54#\",\"port\":8080}".to_string()),
            ("port", "{\"service\":\"a\",\"id\":\"port\",\"address\":\"192.0.2.49\",\"port\":70000}".to_string()),
        ];
        for (id, value) in &hostile {
            let key = layout.key("a", id);
            etcdctl_put(&url, &key, value);
            keys.push(key);
        }
        let seen = skipped(&mut events, &keys).await;
        for key in &keys {
            assert!(seen.contains(key), "no warning names {key}: {seen:?}");
        }

        // The proxy keeps serving the good instance, and only it.
        for _ in 0..10 {
            let (status, body) = get(p.listen, "a.test.localhost", "/")
                .await
                .expect("the proxy answers");
            assert_eq!(status, 200, "{body}");
            assert_eq!(hostname(&body).as_deref(), Some(a1.as_str()));
        }
        // The live config in the proxy holds no injected line and no address
        // of the hostile values; the injected command never ran.
        let proxy = routing.router.proxy.name.clone();
        let config = docker(&["exec", &proxy, "cat", "/usr/local/etc/haproxy/haproxy.cfg"]);
        assert!(config.contains("backend svc_a"), "{config}");
        for injected in ["program", "pwned", "@master", "backup", "192.0.2."] {
            assert!(
                !config.contains(injected),
                "`{injected}` in the config:\n{config}"
            );
        }
        assert_eq!(
            docker(&[
                "exec",
                &proxy,
                "sh",
                "-c",
                "ls /tmp/pwned 2>/dev/null || echo absent"
            ]),
            "absent"
        );
        routing.shutdown().await;
    });
}
