//! A user template that stops rendering, or renders a config the proxy
//! refuses (`haproxy -c`, `nginx -t`), is reported with its line and the
//! last good config stays; on nginx, a config that passes `nginx -t` but
//! that nginx cannot load at its reload is reported and the previous file
//! is put back. Each runs on both proxy kinds.

use std::time::Duration;

use devstack::router::{builtin_template, Layout, RouterEvent};
use devstack::spec::ProxyKind;

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
    run(Duration::from_secs(120), bad_template(ProxyKind::Haproxy));
}

#[test]
fn a_bad_template_keeps_the_last_good_config_on_nginx() {
    run(Duration::from_secs(150), bad_template(ProxyKind::Nginx));
}

async fn bad_template(kind: ProxyKind) {
    let builtin = builtin_template(kind);
    {
        let p = Project::on(
            kind,
            "tmpl",
            SERVICES,
            "  template: ./proxy.j2\n",
            &[("proxy.j2", builtin)],
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
            p.path("proxy.j2"),
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

        // A template whose config the proxy refuses: its line is reported.
        let (refused, bad_line) = match kind {
            ProxyKind::Haproxy => (
                format!("{builtin}\nbackend broken\n    bogus_keyword here\n"),
                "bogus_keyword here",
            ),
            ProxyKind::Nginx => (
                format!("{builtin}\nbogus_keyword here;\n"),
                "bogus_keyword here;",
            ),
        };
        std::fs::write(p.path("proxy.j2"), refused).unwrap();
        etcd.put(poke_key.as_str(), poke(), None)
            .await
            .expect("put");
        let (line, text) = next_event(&mut events, EVENT_WAIT, "check failure", |e| match e {
            RouterEvent::CheckFailed { line, text, .. } => Some((*line, text.clone())),
            _ => None,
        })
        .await;
        assert!(line.is_some());
        assert_eq!(text.as_deref(), Some(bad_line));
        assert!(matches!(
            get(p.listen, "a.test.localhost", "/").await,
            Ok((200, _))
        ));

        if kind == ProxyKind::Nginx {
            // `nginx -t` passes (a port in use is no error to it), but the
            // reload cannot bind the control port twice: nginx keeps its
            // workers, devstack puts the previous file back and says so.
            let unloadable =
                builtin.replacen("http {\n", "http {\n    server { listen 9990; }\n", 1);
            assert_ne!(unloadable, builtin);
            std::fs::write(p.path("proxy.j2"), unloadable).unwrap();
            etcd.put(poke_key.as_str(), poke(), None)
                .await
                .expect("put");
            let (message, restored) =
                next_event(&mut events, EVENT_WAIT, "reload failure", |e| match e {
                    RouterEvent::ReloadFailed { message, restored } => {
                        Some((message.clone(), *restored))
                    }
                    RouterEvent::CheckFailed { message, .. } => {
                        panic!("nginx -t refused it: {message}")
                    }
                    _ => None,
                })
                .await;
            assert!(restored, "{message}");
            assert!(message.contains("9990"), "{message}");
            let installed = docker(&[
                "exec",
                &format!("{}-proxy", p.name),
                "cat",
                "/etc/nginx/nginx.conf",
            ]);
            assert!(
                !installed.contains("server { listen 9990; }"),
                "{installed}"
            );
            assert!(matches!(
                get(p.listen, "a.test.localhost", "/").await,
                Ok((200, _))
            ));
        }

        // Fixed again: the next change applies.
        std::fs::write(p.path("proxy.j2"), format!("{builtin}\n# fixed\n")).unwrap();
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
    }
}
