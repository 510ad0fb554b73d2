//! A team's confd directory, unchanged (fixtures/confd: HAProxy frontends
//! from `lsdir`, backends from `gets`, every container registered as
//! `host:port` under `/services/<service>/<container>`), rendering the
//! proxy of a stack from the embedded etcd: requests route, a killed
//! replica leaves, a template error names its line and a refused check
//! keeps the last good config.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use devstack::router::RouterEvent;

use crate::support::*;

const SERVICES: &str = "  web:
    image: devstack-fixtures/app
    port: 8080
    replicas: 2
    env: { SERVICE: web }
    health: { http: /health, interval: 500ms, retries: 2, start_period: 20s }
    restart: \"no\"
    stop_grace: 1s
";

/// The production side: a presence side-car's layout (`host:port` under
/// `/services/<service>/<container>`), and the confd directory.
const EXTRA: &str = "  confd: ./confd
discovery:
  prefix: /services
  value: \"{{ address }}:{{ port }}\"
";

const TEMPLATE: &str = "confd/templates/haproxy.cfg.tmpl";

/// Every file of fixtures/confd, as (path under the stack's directory, text).
fn fixture_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/confd");
    let mut files = Vec::new();
    for sub in ["conf.d", "templates"] {
        for entry in std::fs::read_dir(root.join(sub)).expect("fixtures/confd") {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push((
                format!("confd/{sub}/{name}"),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    files
}

/// How long a test waits for the router event it expects.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// Hostnames answering `n` requests for `web.test.localhost`, and how many failed.
async fn answering(p: &Project, n: usize) -> (BTreeSet<String>, usize) {
    let mut seen = BTreeSet::new();
    let mut failed = 0;
    for _ in 0..n {
        match get(p.listen, "web.test.localhost", "/").await {
            Ok((200, body)) => {
                if let Some(h) = hostname(&body) {
                    seen.insert(h);
                }
            }
            _ => failed += 1,
        }
    }
    (seen, failed)
}

#[test]
fn a_production_confd_directory_routes_unchanged() {
    run(Duration::from_secs(180), async {
        let files = fixture_files();
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let p = Project::with_files("confd", SERVICES, EXTRA, &borrowed);
        let routing = p.up_routed().await;
        let mut events = routing.router.subscribe();

        // Both replicas answer through the frontend confd rendered.
        until(
            Duration::from_secs(30),
            "both replicas answer through the confd-rendered proxy",
            || async { answering(&p, 8).await.0.len() == 2 },
        )
        .await;
        // A host no service has: the template's own default backend.
        assert!(matches!(
            get(p.listen, "nothing.test.localhost", "/").await,
            Ok((503, body)) if body.contains("no service")
        ));
        // The keys are the production layout, written by the registrar.
        let url = routing.endpoints[0].clone();
        let mut etcd = etcd_client::Client::connect([url], None)
            .await
            .expect("etcd");
        let listed = etcd
            .get(
                "/services/web/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("get");
        assert_eq!(listed.kvs().len(), 2);
        for kv in listed.kvs() {
            let value = kv.value_str().unwrap();
            assert!(value.parse::<std::net::SocketAddr>().is_ok(), "{value}");
        }

        // A killed replica leaves: confd's file is installed again, standing
        // in for production's reload_cmd, and no request fails after that.
        let (before, _) = answering(&p, 8).await;
        let victim = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=dev.devstack.project={}", p.name),
            "--filter",
            "label=dev.devstack.service=web",
            "--filter",
            "label=dev.devstack.replica=2",
        ]);
        assert!(!victim.is_empty(), "replica 2 runs");
        docker(&["kill", &victim]);
        let reload = next_event(
            &mut events,
            EVENT_WAIT,
            "an install after the kill",
            |e| match e {
                RouterEvent::ConfdInstalled {
                    resource,
                    dest,
                    reload_cmd,
                } => Some((resource.clone(), dest.clone(), reload_cmd.clone())),
                _ => None,
            },
        )
        .await;
        assert_eq!(
            reload,
            (
                "haproxy.toml".to_string(),
                "/etc/haproxy/haproxy.cfg".to_string(),
                Some("systemctl reload haproxy".to_string())
            )
        );
        let (change, took) =
            next_event(
                &mut events,
                EVENT_WAIT,
                "the apply of the kill",
                |e| match e {
                    RouterEvent::Applied { change, took, .. } => Some((change.clone(), *took)),
                    _ => None,
                },
            )
            .await;
        // A measurement, not an assertion: render, check_cmd, haproxy -c, reload.
        eprintln!("confd apply after a kill: {change:?} in {took:?}");
        let (after, failed) = answering(&p, 20).await;
        assert_eq!(failed, 0, "requests failed after the replica left");
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(after.is_subset(&before));

        // Every later change re-renders: a key under the watched prefix.
        let mut n = 0;
        let mut poke = || {
            n += 1;
            format!("{n}")
        };
        let original = std::fs::read_to_string(p.path(TEMPLATE)).unwrap();

        // A template that stops rendering: its line is named, the proxy
        // keeps serving the last good config.
        let broken = original.replace("{{$instance.Value}}", "{{getv \"/services/missing\"}}");
        let line = broken
            .lines()
            .position(|l| l.contains("/services/missing"))
            .unwrap()
            + 1;
        std::fs::write(p.path(TEMPLATE), &broken).unwrap();
        etcd.put("/services/poke", poke(), None).await.expect("put");
        let (reported, message) =
            next_event(&mut events, EVENT_WAIT, "a render failure", |e| match e {
                RouterEvent::RenderFailed { line, message, .. } => Some((*line, message.clone())),
                _ => None,
            })
            .await;
        assert_eq!(reported, Some(line), "{message}");
        assert!(
            message.contains("key does not exist: /services/missing"),
            "{message}"
        );
        assert_eq!(answering(&p, 5).await.1, 0);

        // A rendered file the check_cmd refuses: reported, last good stays.
        let refused = original.replace(
            "    balance roundrobin",
            "    balance roundrobin\n    bogus_keyword here",
        );
        std::fs::write(p.path(TEMPLATE), &refused).unwrap();
        etcd.put("/services/poke", poke(), None).await.expect("put");
        let (command, output) =
            next_event(&mut events, EVENT_WAIT, "a refused check", |e| match e {
                RouterEvent::ConfdCheckFailed {
                    command, output, ..
                } => Some((command.clone(), output.clone())),
                _ => None,
            })
            .await;
        assert!(
            command.starts_with("haproxy -c -f /tmp/.haproxy.cfg"),
            "{{{{.src}}}} is the staged file: {command}"
        );
        assert!(output.contains("bogus_keyword"), "{output}");
        assert_eq!(answering(&p, 5).await.1, 0);

        // Fixed: the next change applies.
        std::fs::write(p.path(TEMPLATE), format!("{original}# fixed\n")).unwrap();
        etcd.put("/services/poke", poke(), None).await.expect("put");
        next_event(&mut events, EVENT_WAIT, "an apply", |e| match e {
            RouterEvent::Applied { .. } => Some(()),
            _ => None,
        })
        .await;
        assert_eq!(answering(&p, 5).await.1, 0);
        routing.shutdown().await;
    });
}
