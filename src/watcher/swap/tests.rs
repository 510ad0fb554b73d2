//! Blue-green swaps against the recording fake engine (which also plays the
//! registrar and the proxy): each test names one decision of the swap and
//! fails when it is inverted. Time is paused, so the proxy's route timeout
//! passes at once.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::engine::apply::{self, UpRequest};
use crate::engine::fake::{Call, FakeEngine, ROUTE_LAG};
use crate::engine::progress::Reporter;
use crate::plan::testing::{stack_of, unit, UnitBuilder};
use crate::spec::{DatastoreKind, Stack};

const PROJECT: &str = "shop";

/// `api` (built, with `api`'s settings) beside a redis `db`.
fn stack(api: UnitBuilder) -> Stack {
    stack_of(vec![("api", api)]).with_datastore("db", DatastoreKind::Redis, unit("redis:7"))
}

/// The stack brought up on a fresh fake, calls cleared, the next build
/// producing a new image.
async fn running(stack: &Stack, replicas: u32) -> FakeEngine {
    let fake = FakeEngine::new();
    let request = UpRequest {
        project: PROJECT.into(),
        services: Vec::new(),
        replicas: BTreeMap::from([("api".to_string(), replicas)]),
        timeout: Duration::from_secs(60),
        remove_orphans: true,
        known_healthy: Default::default(),
    };
    let outcome = apply::up(
        &fake,
        stack,
        &request,
        &Reporter::silent(),
        &CancellationToken::new(),
    )
    .await
    .expect("up");
    assert!(outcome.all_healthy(), "{outcome:?}");
    // The proxy routes to what runs.
    tokio::time::sleep(ROUTE_LAG).await;
    fake.clear_calls();
    fake.script(|s| {
        s.build_ids.insert("api".into(), "sha256:api-v2".into());
    });
    fake
}

/// Rebuilds `api` (with the registry and proxy when `routed`) and waits for
/// the old containers to retire.
async fn rebuild_api(fake: &FakeEngine, stack: &Stack, routed: bool) -> Outcome {
    let registry = fake.registry();
    let retiring = Retiring::default();
    let cancel = CancellationToken::new();
    let swap = Swap {
        engine: fake,
        stack,
        project: PROJECT,
        registry: routed.then_some(&registry),
        retiring: &retiring,
        cancel: &cancel,
    };
    let report = swap.rebuild("api", "src/main.rs").await;
    retiring.finish().await;
    assert!(retiring.is_empty());
    report.outcome
}

fn at(calls: &[Call], wanted: impl Fn(&Call) -> bool, what: &str) -> usize {
    calls
        .iter()
        .position(wanted)
        .unwrap_or_else(|| panic!("no {what} among {calls:#?}"))
}

fn named<'a>(name: &'a str) -> impl Fn(&Call) -> bool + 'a {
    move |c| match c {
        Call::Create(n) | Call::Start(n) | Call::Stop(n) | Call::Remove(n) => n == name,
        _ => false,
    }
}

/// The name the swap gave the new container of replica 1 (`shop-api-1-g...`).
fn new_name(calls: &[Call]) -> String {
    calls
        .iter()
        .find_map(|c| match c {
            Call::Create(n) if n.starts_with("shop-api-1-g") => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no side-by-side container created: {calls:#?}"))
}

#[tokio::test(start_paused = true)]
async fn a_swap_never_stops_the_old_container_before_the_new_one_is_routed() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    let outcome = rebuild_api(&fake, &stack, true).await;
    assert!(matches!(outcome, Outcome::Swapped { .. }), "{outcome:?}");
    let calls = fake.calls();
    let new = new_name(&calls);
    let stop_old = at(
        &calls,
        |c| *c == Call::Stop("shop-api-1".into()),
        "stop of the old",
    );
    let routed_new = at(
        &calls,
        |c| *c == Call::Routed(new.clone()),
        "route to the new",
    );
    let old_leaves = at(
        &calls,
        |c| *c == Call::Deregistered("shop-api-1".into()),
        "deregistration of the old",
    );
    assert!(
        routed_new < old_leaves && old_leaves < stop_old,
        "{calls:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_old_container_leaves_the_registry_and_the_proxy_before_it_stops() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    rebuild_api(&fake, &stack, true).await;
    let calls = fake.calls();
    let stop_old = at(
        &calls,
        |c| *c == Call::Stop("shop-api-1".into()),
        "stop of the old",
    );
    let deregistered = at(
        &calls,
        |c| *c == Call::Deregistered("shop-api-1".into()),
        "deregistration of the old",
    );
    let unrouted = at(
        &calls,
        |c| *c == Call::Unrouted("shop-api-1".into()),
        "the proxy dropping the old",
    );
    assert!(deregistered < unrouted && unrouted < stop_old, "{calls:#?}");
}

#[tokio::test(start_paused = true)]
async fn without_a_routing_path_the_old_stops_only_after_the_new_is_healthy() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    rebuild_api(&fake, &stack, false).await;
    let calls = fake.calls();
    let new = new_name(&calls);
    let ready = at(
        &calls,
        |c| *c == Call::Registered(new.clone()),
        "the new one ready",
    );
    let stop_old = at(
        &calls,
        |c| *c == Call::Stop("shop-api-1".into()),
        "stop of the old",
    );
    assert!(ready < stop_old, "{calls:#?}");
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_new_container_is_removed_and_the_old_keeps_serving() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    fake.script(|s| {
        s.unhealthy.insert("api".into());
    });
    let outcome = rebuild_api(&fake, &stack, true).await;
    let Outcome::Unhealthy {
        container, health, ..
    } = &outcome
    else {
        panic!("expected unhealthy: {outcome:?}");
    };
    assert!(container.starts_with("shop-api-1-g"), "{container}");
    assert_eq!(health.as_deref(), Some("HTTP /health: 503"));
    let calls = fake.calls();
    at(&calls, named(container), "the new one");
    at(
        &calls,
        |c| *c == Call::Remove(container.clone()),
        "removal of the new",
    );
    assert!(!calls.iter().any(named("shop-api-1")), "{calls:#?}");
    assert_eq!(fake.running("api"), ["shop-api-1"]);
    tokio::time::sleep(ROUTE_LAG).await;
    let proxy = fake.find_proxy(PROJECT).await.expect("the fake proxy");
    let servers = proxy.servers().await.expect("servers");
    let old = fake
        .containers()
        .into_iter()
        .find(|c| c.name == "shop-api-1")
        .expect("the old api");
    let api: Vec<&str> = servers
        .iter()
        .filter(|s| s.backend == "api")
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(api, [old.ip.to_string()], "the old one alone serves");
}

#[tokio::test(start_paused = true)]
async fn a_new_container_the_proxy_never_routes_is_withdrawn_and_the_old_keeps_serving() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    fake.stop_routing_new();
    let outcome = rebuild_api(&fake, &stack, true).await;
    assert!(
        matches!(&outcome, Outcome::Failed { message } if message.contains("did not route")),
        "{outcome:?}"
    );
    let calls = fake.calls();
    let new = new_name(&calls);
    at(
        &calls,
        |c| *c == Call::Remove(new.clone()),
        "removal of the new",
    );
    assert!(
        !calls.contains(&Call::Stop("shop-api-1".into())),
        "{calls:#?}"
    );
    assert_eq!(fake.running("api"), ["shop-api-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_fixed_host_port_replica_is_replaced_not_swapped() {
    let stack = stack(unit("api").built().host_port(8080));
    let fake = running(&stack, 1).await;
    let outcome = rebuild_api(&fake, &stack, true).await;
    assert!(matches!(outcome, Outcome::Swapped { .. }), "{outcome:?}");
    let calls = fake.calls();
    let stop_old = at(&calls, named("shop-api-1"), "the old stopped");
    let create = at(
        &calls,
        |c| matches!(c, Call::Create(n) if n.starts_with("shop-api-1")),
        "the new created",
    );
    assert!(stop_old < create, "{calls:#?}");
    assert_eq!(calls[create], Call::Create("shop-api-1".into()));
    assert_eq!(fake.running("api"), ["shop-api-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_build_that_changes_nothing_swaps_nothing() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    fake.script(|s| {
        s.build_ids.insert("api".into(), "sha256:api-v1".into());
    });
    let outcome = rebuild_api(&fake, &stack, true).await;
    assert!(
        matches!(&outcome, Outcome::Swapped { containers } if containers.is_empty()),
        "{outcome:?}"
    );
    let calls = fake.calls();
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Create(_) | Call::Stop(_))),
        "{calls:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_rebuild_keeps_the_old_version_untouched() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    fake.script(|s| {
        s.build_fails.insert("api".into());
    });
    let outcome = rebuild_api(&fake, &stack, true).await;
    assert!(
        matches!(outcome, Outcome::BuildFailed { .. }),
        "{outcome:?}"
    );
    let calls = fake.calls();
    assert_eq!(calls, [Call::Build("api".into())]);
    assert_eq!(fake.running("api"), ["shop-api-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_swap_keeps_the_running_scale_not_the_stacks() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 2).await;
    let outcome = rebuild_api(&fake, &stack, true).await;
    assert!(
        matches!(&outcome, Outcome::Swapped { containers } if containers == &["shop-api-1", "shop-api-2"]),
        "{outcome:?}"
    );
    assert_eq!(fake.running("api"), ["shop-api-1", "shop-api-2"]);
    let images: Vec<String> = fake
        .containers()
        .into_iter()
        .filter(|c| c.spec.service == "api")
        .map(|c| c.spec.image_id)
        .collect();
    assert_eq!(images, ["sha256:api-v2", "sha256:api-v2"]);
}

#[tokio::test(start_paused = true)]
async fn replicas_are_swapped_one_at_a_time() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 2).await;
    rebuild_api(&fake, &stack, true).await;
    let calls = fake.calls();
    let first = new_name(&calls);
    let routed_first = at(
        &calls,
        |c| *c == Call::Routed(first.clone()),
        "route to the first",
    );
    let second = at(
        &calls,
        |c| matches!(c, Call::Create(n) if n.starts_with("shop-api-2")),
        "the second created",
    );
    assert!(routed_first < second, "{calls:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_swap_never_touches_a_datastore() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    rebuild_api(&fake, &stack, true).await;
    let calls = fake.calls();
    assert!(!calls.iter().any(named("shop-db-1")), "{calls:#?}");
    assert_eq!(fake.running("db"), ["shop-db-1"]);
}

#[tokio::test(start_paused = true)]
async fn the_new_container_takes_the_usual_name_once_the_old_is_gone() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    rebuild_api(&fake, &stack, true).await;
    let calls = fake.calls();
    let new = new_name(&calls);
    let removed = at(
        &calls,
        |c| *c == Call::Remove("shop-api-1".into()),
        "removal of the old",
    );
    let renamed = at(
        &calls,
        |c| {
            *c == Call::Rename {
                from: new.clone(),
                to: "shop-api-1".into(),
            }
        },
        "the rename",
    );
    assert!(removed < renamed, "{calls:#?}");
    assert_eq!(fake.running("api"), ["shop-api-1"]);
}

#[tokio::test(start_paused = true)]
async fn the_old_image_goes_once_its_container_is_removed() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    rebuild_api(&fake, &stack, true).await;
    let calls = fake.calls();
    let removed = at(
        &calls,
        |c| *c == Call::Remove("shop-api-1".into()),
        "removal of the old",
    );
    let image = at(
        &calls,
        |c| *c == Call::RemoveImage("sha256:api-v1".into()),
        "removal of the old image",
    );
    assert!(removed < image, "{calls:#?}");
    assert!(!calls.contains(&Call::RemoveImage("sha256:api-v2".into())));
}

#[tokio::test(start_paused = true)]
async fn with_a_registry_but_no_proxy_the_old_is_deregistered_before_it_stops() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    fake.script(|s| s.no_proxy = true);
    let outcome = rebuild_api(&fake, &stack, true).await;
    assert!(matches!(outcome, Outcome::Swapped { .. }), "{outcome:?}");
    let calls = fake.calls();
    let deregistered = at(
        &calls,
        |c| *c == Call::Deregistered("shop-api-1".into()),
        "deregistration of the old",
    );
    let stop_old = at(
        &calls,
        |c| *c == Call::Stop("shop-api-1".into()),
        "stop of the old",
    );
    assert!(deregistered < stop_old, "{calls:#?}");
}

fn observed(name: &str, hash: &str) -> Observed {
    Observed {
        id: format!("id-{name}"),
        name: name.into(),
        service: Some("api".into()),
        replica: Some(1),
        config_hash: Some(hash.into()),
        task: None,
        kind: Some("service".into()),
        state: ObservedState::Running,
        created: 0,
    }
}

fn desired(api: UnitBuilder) -> ContainerSpec {
    let stack = stack_of(vec![("api", api)]);
    let unit = stack.unit("api").expect("api");
    plan::desired_containers(
        PROJECT,
        "api",
        UnitKind::Service,
        unit,
        "api",
        "sha256:x",
        1,
    )
    .remove(0)
}

#[test]
fn replica_move_decides_from_what_runs() {
    let spec = desired(unit("api"));
    let same = observed("shop-api-1", &spec.config_hash);
    let other = observed("shop-api-1", "old");
    assert_eq!(replica_move(&[], &spec, 7), Move::Fresh);
    assert_eq!(replica_move(&[&same], &spec, 7), Move::Unchanged);
    assert_eq!(
        replica_move(&[&other], &spec, 7),
        Move::SideBySide {
            name: "shop-api-1-g7".into()
        }
    );
    // One of two still runs the old configuration: swapped.
    assert!(matches!(
        replica_move(&[&same, &other], &spec, 7),
        Move::SideBySide { .. }
    ));
    let fixed = desired(unit("api").host_port(8080));
    assert_eq!(replica_move(&[&other], &fixed, 7), Move::Replace);
    // A leftover already holding the side-by-side name: replaced instead.
    let clash = observed("shop-api-1-g7", "old");
    assert_eq!(replica_move(&[&clash], &spec, 7), Move::Replace);
}

#[tokio::test(start_paused = true)]
async fn a_fast_swap_places_the_files_before_the_new_container_starts_on_the_previous_image() {
    let stack = stack(unit("api").built());
    let fake = running(&stack, 1).await;
    let overlay = Overlay {
        entries: vec![crate::watcher::fast::Entry {
            dest: "/app/message.txt".into(),
            content: crate::watcher::fast::Content::File {
                bytes: b"second".to_vec(),
                mode: 0o644,
            },
            chown: None,
        }],
        digest: "d1".into(),
        files: vec!["message.txt".into()],
        root: "base".into(),
    };
    let built = Built {
        tag: "api".into(),
        image_id: "sha256:api-v1".into(),
        overlay: Some(Arc::new(overlay)),
    };
    let registry = fake.registry();
    let retiring = Retiring::default();
    let cancel = CancellationToken::new();
    let swap = Swap {
        engine: &fake,
        stack: &stack,
        project: PROJECT,
        registry: Some(&registry),
        retiring: &retiring,
        cancel: &cancel,
    };
    let outcome = swap.deploy("api", &built).await;
    retiring.finish().await;
    assert!(
        matches!(&outcome, Outcome::Swapped { containers } if containers == &["shop-api-1"]),
        "{outcome:?}"
    );
    let calls = fake.calls();
    let new = new_name(&calls);
    let create = at(&calls, |c| *c == Call::Create(new.clone()), "the create");
    let placed = at(
        &calls,
        |c| *c == Call::Upload(format!("{new}:/")),
        "the files placed",
    );
    let start = at(&calls, |c| *c == Call::Start(new.clone()), "the start");
    assert!(create < placed && placed < start, "{calls:#?}");
    // Made from the previous image, which stays: the new container uses it.
    let api = fake
        .containers()
        .into_iter()
        .find(|c| c.spec.service == "api")
        .expect("the api");
    assert_eq!(api.spec.image_id, "sha256:api-v1");
    assert!(
        !calls.contains(&Call::RemoveImage("sha256:api-v1".into())),
        "{calls:#?}"
    );
}
