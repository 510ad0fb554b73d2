//! A user template that stops rendering, or renders a config HAProxy
//! refuses, is reported with its line and the last good config stays.

use std::time::Duration;

use devstack::router::{Layout, RouterEvent, BUILTIN_TEMPLATE};

use crate::support::*;

const SERVICES: &str = "  a:
    image: devstack-fixtures/app
    port: 8080
    env: { SERVICE: a }
    health: { http: /health, interval: 500ms, start_period: 20s }
    stop_grace: 1s
    routes: [a.test.localhost]
";

/// How long a test waits for the router event it expects.
const EVENT_WAIT: Duration = Duration::from_secs(15);

#[test]
fn a_bad_template_keeps_the_last_good_config() {
    run(Duration::from_secs(120), async {
        let p = Project::with_files(
            "tmpl",
            SERVICES,
            "  template: ./haproxy.cfg.j2\n",
            &[("haproxy.cfg.j2", BUILTIN_TEMPLATE)],
        );
        let routing = p.up_routed().await;
        let mut events = routing.router.subscribe();
        until(
            Duration::from_secs(20),
            "a answers through the proxy",
            || async { matches!(get(p.listen, "a.test.localhost", "/").await, Ok((200, _))) },
        )
        .await;
        let url = routing.endpoints[0].clone();
        let mut etcd = etcd_client::Client::connect([url], None)
            .await
            .expect("etcd");
        // A key under the project's prefix: every change re-renders.
        let poke_key = format!("{}poke", Layout::new(&p.stack.discovery, &p.name).listing());
        let mut n = 0;
        let mut poke = || {
            n += 1;
            format!("{n}")
        };

        // A template that no longer renders: the line is reported.
        std::fs::write(
            p.path("haproxy.cfg.j2"),
            "global\n    master-worker\n{{ no_such_name }}\n",
        )
        .unwrap();
        etcd.put(poke_key.as_str(), poke(), None)
            .await
            .expect("put");
        let line = next_event(&mut events, EVENT_WAIT, "render failure", |e| match e {
            RouterEvent::RenderFailed { line, .. } => Some(*line),
            _ => None,
        })
        .await;
        assert_eq!(line, Some(3));
        assert!(matches!(
            get(p.listen, "a.test.localhost", "/").await,
            Ok((200, _))
        ));

        // A template whose config HAProxy refuses: HAProxy's line is reported.
        let refused = format!("{BUILTIN_TEMPLATE}\nbackend broken\n    bogus_keyword here\n");
        std::fs::write(p.path("haproxy.cfg.j2"), refused).unwrap();
        etcd.put(poke_key.as_str(), poke(), None)
            .await
            .expect("put");
        let (line, text) = next_event(&mut events, EVENT_WAIT, "check failure", |e| match e {
            RouterEvent::CheckFailed { line, text, .. } => Some((*line, text.clone())),
            _ => None,
        })
        .await;
        assert!(line.is_some());
        assert_eq!(text.as_deref(), Some("bogus_keyword here"));
        assert!(matches!(
            get(p.listen, "a.test.localhost", "/").await,
            Ok((200, _))
        ));

        // Fixed again: the next change applies.
        std::fs::write(
            p.path("haproxy.cfg.j2"),
            format!("{BUILTIN_TEMPLATE}\n# fixed\n"),
        )
        .unwrap();
        etcd.put(poke_key.as_str(), poke(), None)
            .await
            .expect("put");
        next_event(&mut events, EVENT_WAIT, "an apply", |e| match e {
            RouterEvent::Applied { .. } => Some(()),
            _ => None,
        })
        .await;
        assert!(matches!(
            get(p.listen, "a.test.localhost", "/").await,
            Ok((200, _))
        ));
        routing.shutdown().await;
    });
}
