//! nginx has no runtime API: every instance coming or going is a reload.
//! Under a steady load, repeated reloads (an instance registered and
//! withdrawn, over and over) fail no request: nginx's reload is graceful
//! and devstack waits for each before the next.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use devstack::router::{Change, Layout, RouterEvent};
use devstack::spec::ProxyKind;

use crate::support::*;

const SERVICES: &str = "  a:
    image: devstack-fixtures/app
    port: 8080
    replicas: 2
    env: { SERVICE: a }
    health: { http: /health, interval: 500ms, start_period: 20s }
    restart: \"no\"
    stop_grace: 1s
    routes: [a.test.localhost]
";

/// How many instance changes (each one reload) the test makes.
const CHANGES: usize = 30;
/// Clients sending requests back to back, a new connection each.
const CLIENTS: usize = 4;

#[test]
fn nginx_reloads_under_load_fail_no_request() {
    run(Duration::from_secs(240), async {
        let p = Project::on(ProxyKind::Nginx, "reloads", SERVICES, "", &[]);
        let routing = p.up_routed().await;
        let mut events = routing.router.subscribe();
        // Serving: the first configuration with the registry's instances
        // took over from the empty one nginx started on (whose old workers
        // may answer 503 for a few milliseconds after the new ones start).
        until(
            Duration::from_secs(20),
            "a answers through nginx",
            || async {
                for _ in 0..20 {
                    if !matches!(get(p.listen, "a.test.localhost", "/").await, Ok((200, _))) {
                        return false;
                    }
                }
                true
            },
        )
        .await;

        // The load: every answer must be the application's 200.
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        // Which change was under way, for the failure messages.
        let phase = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (stop, sent, failures, listen, phase) = (
                stop.clone(),
                sent.clone(),
                failures.clone(),
                p.listen,
                phase.clone(),
            );
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    match get(listen, "a.test.localhost", "/").await {
                        Ok((200, body)) if hostname(&body).is_some() => {}
                        other => failures.lock().unwrap().push(format!(
                            "change {}: {other:?}",
                            phase.load(Ordering::Relaxed)
                        )),
                    }
                }
            }));
        }

        // An extra registration of a real replica's address, put and
        // withdrawn: each is a change of the rendering, so a reload.
        let a1 = format!("{}-a-1", p.name);
        let ip = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &a1,
        ]);
        let key = format!(
            "{}a/extra",
            Layout::new(&p.stack.discovery, &p.name).listing()
        );
        let value = serde_json::json!({
            "service": "a", "id": "extra", "replica": 9, "address": ip, "port": 8080
        })
        .to_string();
        let mut etcd = etcd_client::Client::connect([routing.endpoints[0].clone()], None)
            .await
            .expect("etcd");
        let mut reloads = 0;
        for i in 0..CHANGES {
            phase.store(i as u64, Ordering::Relaxed);
            let revision = if i % 2 == 0 {
                etcd.put(key.as_str(), value.as_str(), None)
                    .await
                    .expect("put")
                    .header()
                    .map(|h| h.revision())
            } else {
                etcd.delete(key.as_str(), None)
                    .await
                    .expect("delete")
                    .header()
                    .map(|h| h.revision())
            }
            .expect("a revision");
            // The apply of this change (earlier ones' events are skipped).
            let change = next_event(
                &mut events,
                Duration::from_secs(20),
                "the change applied",
                |e| match e {
                    RouterEvent::Applied {
                        change,
                        revision: r,
                        ..
                    } if *r >= revision => Some(change.clone()),
                    RouterEvent::CheckFailed { message, .. }
                    | RouterEvent::ReloadFailed { message, .. }
                    | RouterEvent::ProxyTrouble { message } => {
                        panic!("change {i} was not applied: {message}")
                    }
                    _ => None,
                },
            )
            .await;
            if change == Change::Reload {
                reloads += 1;
            }
        }
        // Requests that were in flight at the last reload finish too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.expect("a client");
        }
        let sent = sent.load(Ordering::Relaxed);
        let failures = failures.lock().unwrap().clone();
        assert_eq!(reloads, CHANGES, "every change is a reload on nginx");
        assert!(sent > CHANGES as u64, "the load ran: {sent} requests");
        assert!(
            failures.is_empty(),
            "{} of {sent} requests failed across {reloads} reloads: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        routing.shutdown().await;
    });
}

/// A proxy frozen for a moment (paused: its reload waits, unseen, until it
/// thaws) serves the registry's change once it thaws: the new file stays in
/// place (the previous one put back would be what it then loads), and the
/// router tries again by itself, not only at the registry's next change.
#[test]
fn nginx_gets_a_change_it_missed_once_it_can_be_changed_again() {
    run(Duration::from_secs(150), async {
        let p = Project::on(ProxyKind::Nginx, "missed", SERVICES, "", &[]);
        let routing = p.up_routed().await;
        let engine = devstack::engine::Engine::connect()
            .await
            .expect("the engine answers");
        let mut events = routing.router.subscribe();
        let log = EventLog::of(&routing);
        let a2 = format!("{}-a-2", p.name);
        let ip2 = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &a2,
        ]);
        until(Duration::from_secs(20), "a-2 is in nginx", || async {
            proxy_serves(&engine, &p.name, &ip2).await == Some(true)
        })
        .await;

        let proxy = format!("{}-proxy", p.name);
        docker(&["pause", &proxy]);
        docker(&["stop", "-t", "1", &a2]);
        let trouble = next_event(
            &mut events,
            Duration::from_secs(30),
            "a failed apply",
            |e| match e {
                RouterEvent::ProxyTrouble { message } => Some(message.clone()),
                _ => None,
            },
        )
        .await;
        docker(&["unpause", &proxy]);
        // No other change comes: the stop was the registry's last.
        until(
            Duration::from_secs(30),
            "the stopped replica leaves nginx once it can be changed",
            || async { proxy_serves(&engine, &p.name, &ip2).await == Some(false) },
        )
        .await;
        // And the router knows it: it tried again by itself and saw the
        // change taken.
        next_event(
            &mut events,
            Duration::from_secs(40),
            "an apply after the proxy answered again",
            |e| match e {
                RouterEvent::Applied { .. } => Some(()),
                _ => None,
            },
        )
        .await;
        assert!(!trouble.is_empty(), "{}", log.dump());
        assert!(matches!(
            get(p.listen, "a.test.localhost", "/").await,
            Ok((200, _))
        ));
    });
}
