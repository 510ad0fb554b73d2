//! The library side a registrar builds on: the project's typed event stream
//! and the health monitor of one container.

use std::time::Duration;

use devstack::engine::events::ContainerEventKind;
use devstack::engine::health::{Check, HealthMonitor, HealthState};
use devstack::engine::Engine;
use devstack::plan::names;
use devstack::spec::{Health, Probe};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[test]
fn events_and_the_health_monitor_follow_a_container_until_it_dies() {
    let p = Project::new("follow", "pair.yaml");
    p.ok(&["up", "--wait"]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let outcome = tokio::time::timeout(Duration::from_secs(60), async {
            let engine = Engine::connect().await.expect("the engine answers");
            let mut events = Box::pin(engine.project_events(&p.name, None));
            let observed = engine.list_project(&p.name).await.expect("lists");
            let app = observed
                .iter()
                .find(|o| o.service.as_deref() == Some("app"))
                .expect("the app container");
            let check = Check::Probe(Health {
                probe: Probe::Http {
                    port: 8080,
                    path: "/health".into(),
                },
                interval: Duration::from_millis(200),
                timeout: Duration::from_secs(1),
                retries: 2,
                start_period: Duration::ZERO,
            });
            let cancel = CancellationToken::new();
            let mut health = HealthMonitor::spawn(
                engine.clone(),
                app.id.clone(),
                names::network_name(&p.name),
                check,
                cancel.clone(),
            );
            health
                .wait_for(|h| *h == HealthState::Healthy)
                .await
                .expect("becomes healthy");

            docker(&["kill", &app.id]);
            let died = loop {
                let event = events
                    .next()
                    .await
                    .expect("the stream goes on")
                    .expect("an event");
                if let ContainerEventKind::Died { exit_code } = event.kind {
                    break (event.service, event.replica, exit_code);
                }
            };
            assert_eq!(died.0.as_deref(), Some("app"));
            assert_eq!(died.1, Some(1));
            assert_eq!(died.2, Some(137));
            health
                .wait_for(|h| *h == HealthState::Stopped)
                .await
                .expect("sees it stop");
            cancel.cancel();
        })
        .await;
        assert!(
            outcome.is_ok(),
            "likely deadlocked: no event or health change within 60s"
        );
    });
}
