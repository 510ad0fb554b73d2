//! `up`, `down`, `stop_all` and `kill_all` against the recording fake
//! engine: each test names one decision and fails when it is inverted.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::engine::fake::{Call, FakeEngine};
use crate::engine::progress::Reporter;
use crate::plan::testing::{http_health, stack_of, unit};
use crate::spec::{DatastoreKind, Stack};
use crate::watcher::edit;

const PROJECT: &str = "shop";

fn request(services: &[&str]) -> UpRequest {
    UpRequest {
        project: PROJECT.into(),
        services: services.iter().map(|s| s.to_string()).collect(),
        replicas: BTreeMap::new(),
        timeout: Duration::from_secs(60),
        remove_orphans: services.is_empty(),
        known_healthy: Default::default(),
    }
}

async fn up_with(fake: &FakeEngine, stack: &Stack, request: &UpRequest) -> UpOutcome {
    up(
        fake,
        stack,
        request,
        &Reporter::silent(),
        &CancellationToken::new(),
    )
    .await
    .expect("up reaches the units")
}

/// A full `up` of `stack`.
async fn up_all(fake: &FakeEngine, stack: &Stack) -> UpOutcome {
    up_with(fake, stack, &request(&[])).await
}

fn state<'a>(outcome: &'a UpOutcome, unit: &str) -> &'a UnitState {
    &outcome
        .units
        .iter()
        .find(|u| u.service == unit)
        .unwrap_or_else(|| panic!("no outcome for `{unit}` in {outcome:?}"))
        .state
}

/// Where `call` is in `calls`; fails the test when it is not there.
fn at(calls: &[Call], call: &Call) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call:?} was never made; calls: {calls:#?}"))
}

fn any_of(calls: &[Call], wanted: impl Fn(&Call) -> bool) -> bool {
    calls.iter().any(wanted)
}

/// True for the calls that change containers.
fn touches_containers(c: &Call) -> bool {
    matches!(
        c,
        Call::Create(_) | Call::Start(_) | Call::Stop(_) | Call::Kill(_) | Call::Remove(_)
    )
}

fn call(make: fn(String) -> Call, name: &str) -> Call {
    make(name.to_string())
}

/// `db` (postgres), `api` built and depending on it.
fn shop() -> Stack {
    stack_of(vec![("api", unit("api").built().deps(&["db"]))]).with_datastore(
        "db",
        DatastoreKind::Postgres,
        unit("postgres:16"),
    )
}

fn ids(fake: &FakeEngine) -> Vec<(String, String)> {
    fake.containers()
        .into_iter()
        .map(|c| (c.name, c.id))
        .collect()
}

#[tokio::test]
async fn a_failing_build_creates_nothing_and_stops_nothing() {
    let fake = FakeEngine::new();
    let stack = shop();
    up_all(&fake, &stack).await;
    let before = ids(&fake);
    fake.clear_calls();
    fake.script(|s| {
        s.build_fails.insert("api".into());
    });
    let result = up(
        &fake,
        &stack,
        &request(&[]),
        &Reporter::silent(),
        &CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(result, Err(ApplyError::Engine(EngineError::Build { .. }))),
        "{result:?}"
    );
    let calls = fake.calls();
    assert!(!any_of(&calls, touches_containers), "{calls:#?}");
    assert_eq!(ids(&fake), before);
    assert_eq!(fake.running("api"), ["shop-api-1"]);
}

#[tokio::test]
async fn a_failing_build_touches_no_network_nor_volume() {
    let fake = FakeEngine::new();
    fake.script(|s| {
        s.build_fails.insert("api".into());
    });
    let result = up(
        &fake,
        &shop(),
        &request(&[]),
        &Reporter::silent(),
        &CancellationToken::new(),
    )
    .await;
    assert!(result.is_err());
    let calls = fake.calls();
    assert!(
        !any_of(&calls, |c| matches!(
            c,
            Call::EnsureNetwork | Call::CreateVolume(_)
        ) || touches_containers(c)),
        "{calls:#?}"
    );
    assert!(fake.volumes().is_empty());
}

#[tokio::test]
async fn up_is_level_triggered_a_second_up_keeps_everything() {
    let fake = FakeEngine::new();
    let stack = shop();
    let first = up_all(&fake, &stack).await;
    assert!(first.all_healthy(), "{first:?}");
    let before = ids(&fake);
    fake.clear_calls();
    let second = up_all(&fake, &stack).await;
    assert!(second.all_healthy(), "{second:?}");
    let calls = fake.calls();
    assert!(!any_of(&calls, touches_containers), "{calls:#?}");
    assert_eq!(ids(&fake), before);
    for u in &second.units {
        assert!(u.containers.iter().all(|c| c.action == "kept"), "{u:?}");
    }
}

#[tokio::test]
async fn a_stopped_container_is_started_again_not_recreated() {
    let fake = FakeEngine::new();
    let stack = shop();
    up_all(&fake, &stack).await;
    let before = ids(&fake);
    fake.crash("shop-api-1");
    fake.clear_calls();
    let outcome = up_all(&fake, &stack).await;
    let calls = fake.calls();
    at(&calls, &call(Call::Start, "shop-api-1"));
    assert!(
        !any_of(&calls, |c| matches!(c, Call::Create(_))),
        "{calls:#?}"
    );
    assert_eq!(ids(&fake), before);
    let api = outcome
        .units
        .iter()
        .find(|u| u.service == "api")
        .expect("api");
    assert_eq!(api.containers[0].action, "started");
}

#[tokio::test]
async fn a_dependent_starts_only_after_its_dependency_is_healthy() {
    let fake = FakeEngine::new();
    let outcome = up_all(&fake, &shop()).await;
    assert!(outcome.all_healthy());
    let calls = fake.calls();
    assert!(
        at(&calls, &call(Call::Registered, "shop-db-1"))
            < at(&calls, &call(Call::Start, "shop-api-1")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_dependent_is_created_only_after_its_dependency_started() {
    let fake = FakeEngine::new();
    up_all(&fake, &shop()).await;
    let calls = fake.calls();
    assert!(
        at(&calls, &call(Call::Start, "shop-db-1")) < at(&calls, &call(Call::Create, "shop-api-1")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_unit_is_blocked_when_its_dependency_fails() {
    let fake = FakeEngine::new();
    fake.script(|s| {
        s.unhealthy.insert("db".into());
    });
    let outcome = up_all(&fake, &shop()).await;
    assert!(matches!(state(&outcome, "db"), UnitState::Failed { .. }));
    assert!(
        matches!(state(&outcome, "api"), UnitState::Blocked { by } if by == "db"),
        "{outcome:?}"
    );
    let calls = fake.calls();
    assert!(
        !calls.contains(&call(Call::Start, "shop-api-1")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn blocking_passes_down_the_dependency_chain() {
    let fake = FakeEngine::new();
    let stack = stack_of(vec![
        ("web", unit("web").deps(&["api"])),
        ("api", unit("api").deps(&["db"])),
    ])
    .with_datastore("db", DatastoreKind::Redis, unit("redis:7"));
    fake.script(|s| {
        s.unhealthy.insert("db".into());
    });
    let outcome = up_all(&fake, &stack).await;
    assert!(matches!(state(&outcome, "api"), UnitState::Blocked { by } if by == "db"));
    assert!(matches!(state(&outcome, "web"), UnitState::Blocked { by } if by == "api"));
}

#[tokio::test]
async fn a_failing_unit_does_not_hold_up_an_independent_one() {
    let fake = FakeEngine::new();
    let stack = stack_of(vec![
        ("api", unit("api").deps(&["db"])),
        ("worker", unit("worker")),
    ])
    .with_datastore("db", DatastoreKind::Redis, unit("redis:7"));
    fake.script(|s| {
        s.unhealthy.insert("db".into());
    });
    let outcome = up_all(&fake, &stack).await;
    assert!(matches!(state(&outcome, "worker"), UnitState::Healthy));
    assert_eq!(fake.running("worker"), ["shop-worker-1"]);
}

#[tokio::test]
async fn an_unhealthy_replica_fails_its_unit_with_probe_output_and_logs() {
    let fake = FakeEngine::new();
    fake.script(|s| {
        s.unhealthy.insert("api".into());
    });
    let stack = stack_of(vec![("api", unit("api").health(http_health(80)))]);
    let outcome = up_all(&fake, &stack).await;
    match state(&outcome, "api") {
        UnitState::Failed {
            container,
            last_health,
            logs,
            ..
        } => {
            assert_eq!(container.as_deref(), Some("shop-api-1"));
            assert_eq!(last_health.as_deref(), Some("HTTP /health: 503"));
            assert_eq!(logs, &["last words of shop-api-1"]);
        }
        other => panic!("api should have failed: {other:?}"),
    }
}

#[tokio::test]
async fn a_start_failure_fails_the_unit_and_blocks_its_dependents() {
    let fake = FakeEngine::new();
    fake.script(|s| {
        s.start_fails.insert("db".into());
    });
    let outcome = up_all(&fake, &shop()).await;
    assert!(matches!(state(&outcome, "db"), UnitState::Failed { .. }));
    assert!(matches!(state(&outcome, "api"), UnitState::Blocked { .. }));
}

#[tokio::test]
async fn a_container_that_exits_after_it_was_ready_fails_its_unit() {
    let fake = FakeEngine::new();
    fake.script(|s| {
        s.exit_after_ready.insert("api".into());
    });
    let outcome = up_all(&fake, &shop()).await;
    match state(&outcome, "api") {
        UnitState::Failed {
            reason, container, ..
        } => {
            assert!(reason.contains("after it was ready"), "{reason}");
            assert_eq!(container.as_deref(), Some("shop-api-1"));
        }
        other => panic!("api was reported {other:?}"),
    }
    assert!(matches!(state(&outcome, "db"), UnitState::Healthy));
    assert!(!outcome.all_healthy());
}

#[tokio::test]
async fn a_replica_count_edit_scales_and_does_not_swap() {
    let fake = FakeEngine::new();
    let stack = stack_of(vec![("api", unit("api"))]);
    up_all(&fake, &stack).await;
    let first = ids(&fake);
    let scaled = stack_of(vec![("api", unit("api").replicas(3))]);
    let change = edit::diff(&stack, &scaled);
    assert!(change.swap.is_empty(), "{change:?}");
    assert_eq!(change.start, ["api"]);
    fake.clear_calls();
    up_with(&fake, &scaled, &request(&["api"])).await;
    let calls = fake.calls();
    assert!(
        !any_of(&calls, |c| matches!(c, Call::Stop(_) | Call::Remove(_))),
        "{calls:#?}"
    );
    at(&calls, &call(Call::Create, "shop-api-2"));
    at(&calls, &call(Call::Create, "shop-api-3"));
    assert!(ids(&fake).contains(&first[0]));
    assert_eq!(
        fake.running("api"),
        ["shop-api-1", "shop-api-2", "shop-api-3"]
    );
}

#[tokio::test]
async fn scaling_down_removes_only_the_replicas_beyond_the_count() {
    let fake = FakeEngine::new();
    up_all(&fake, &stack_of(vec![("api", unit("api").replicas(3))])).await;
    fake.clear_calls();
    up_all(&fake, &stack_of(vec![("api", unit("api"))])).await;
    let calls = fake.calls();
    at(&calls, &call(Call::Remove, "shop-api-2"));
    at(&calls, &call(Call::Remove, "shop-api-3"));
    assert!(
        !calls.contains(&call(Call::Stop, "shop-api-1")),
        "{calls:#?}"
    );
    assert_eq!(fake.running("api"), ["shop-api-1"]);
}

#[tokio::test]
async fn the_requested_replica_count_overrides_the_stack() {
    let fake = FakeEngine::new();
    let mut req = request(&["api"]);
    req.replicas.insert("api".into(), 2);
    up_with(&fake, &stack_of(vec![("api", unit("api"))]), &req).await;
    assert_eq!(fake.running("api"), ["shop-api-1", "shop-api-2"]);
}

#[tokio::test]
async fn a_changed_service_is_recreated_old_gone_before_the_new_starts() {
    let fake = FakeEngine::new();
    up_all(&fake, &stack_of(vec![("api", unit("api"))])).await;
    fake.clear_calls();
    let outcome = up_all(
        &fake,
        &stack_of(vec![("api", unit("api").env("MODE", "fast"))]),
    )
    .await;
    let calls = fake.calls();
    let stop = at(&calls, &call(Call::Stop, "shop-api-1"));
    let remove = at(&calls, &call(Call::Remove, "shop-api-1"));
    let create = at(&calls, &call(Call::Create, "shop-api-1"));
    assert!(stop < remove && remove < create, "{calls:#?}");
    assert_eq!(outcome.units[0].containers[0].action, "recreated");
}

#[tokio::test]
async fn a_replacement_waits_for_the_dependencies_to_be_healthy() {
    let fake = FakeEngine::new();
    let stack = shop();
    up_all(&fake, &stack).await;
    fake.crash("shop-db-1");
    fake.clear_calls();
    let mut changed = stack.clone();
    changed.services["api"]
        .container
        .env
        .insert("MODE".into(), "fast".into());
    up_all(&fake, &changed).await;
    let calls = fake.calls();
    assert!(
        at(&calls, &call(Call::Registered, "shop-db-1"))
            < at(&calls, &call(Call::Stop, "shop-api-1")),
        "the old api must serve until the new one can start: {calls:#?}"
    );
}

#[tokio::test]
async fn an_unchanged_datastore_is_never_recreated_when_its_dependent_changes() {
    let fake = FakeEngine::new();
    let stack = shop();
    up_all(&fake, &stack).await;
    let db = fake
        .containers()
        .into_iter()
        .find(|c| c.name == "shop-db-1")
        .expect("db");
    fake.clear_calls();
    let mut changed = stack.clone();
    changed.services["api"]
        .container
        .env
        .insert("MODE".into(), "fast".into());
    fake.script(|s| {
        s.build_ids.insert("api".into(), "sha256:api-v2".into());
    });
    up_all(&fake, &changed).await;
    let calls = fake.calls();
    assert!(
        !any_of(
            &calls,
            |c| matches!(c, Call::Stop(n) | Call::Create(n) | Call::Remove(n) if n == "shop-db-1")
        ),
        "{calls:#?}"
    );
    assert!(fake.containers().iter().any(|c| c.id == db.id));
}

#[tokio::test]
async fn a_recreated_datastore_keeps_its_data_volume() {
    let fake = FakeEngine::new();
    let stack = shop();
    up_all(&fake, &stack).await;
    assert_eq!(fake.volumes(), ["shop_db-data"]);
    let mut changed = stack.clone();
    changed.datastores["db"]
        .container
        .env
        .insert("TUNE".into(), "1".into());
    fake.clear_calls();
    up_all(&fake, &changed).await;
    let calls = fake.calls();
    at(&calls, &call(Call::Create, "shop-db-1"));
    assert!(
        !any_of(&calls, |c| matches!(c, Call::RemoveVolume(_))),
        "{calls:#?}"
    );
    assert_eq!(fake.volumes(), ["shop_db-data"]);
    let db = fake
        .containers()
        .into_iter()
        .find(|c| c.name == "shop-db-1")
        .expect("db");
    assert!(db
        .spec
        .mounts
        .iter()
        .any(|m| m.source == plan::MountSource::Volume("shop_db-data".into())));
}

#[tokio::test]
async fn seed_data_goes_only_into_a_fresh_volume() {
    let fake = FakeEngine::new();
    let mut stack = shop();
    stack.datastores["db"].seed = Some("/seed/dump.sql".into());
    up_all(&fake, &stack).await;
    assert!(fake.calls().contains(&call(Call::Seed, "shop-db-1")));
    // The container goes, its volume stays: the next one is not seeded.
    down(&fake, PROJECT, None, false, &Reporter::silent())
        .await
        .expect("down");
    fake.clear_calls();
    up_all(&fake, &stack).await;
    let calls = fake.calls();
    at(&calls, &call(Call::Create, "shop-db-1"));
    assert!(
        !any_of(&calls, |c| matches!(c, Call::Seed(_))),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn orphans_are_removed_only_by_a_full_up() {
    let fake = FakeEngine::new();
    let with_old = stack_of(vec![("api", unit("api")), ("legacy", unit("legacy"))]);
    up_all(&fake, &with_old).await;
    let without = stack_of(vec![("api", unit("api"))]);
    fake.clear_calls();
    up_with(&fake, &without, &request(&["api"])).await;
    assert_eq!(fake.running("legacy"), ["shop-legacy-1"]);
    assert!(!fake.calls().iter().any(touches_containers));
    up_all(&fake, &without).await;
    let calls = fake.calls();
    at(&calls, &call(Call::Remove, "shop-legacy-1"));
    assert!(fake.containers().iter().all(|c| c.spec.service != "legacy"));
}

#[tokio::test]
async fn a_partial_up_brings_its_dependencies_and_nothing_else() {
    let fake = FakeEngine::new();
    let stack = stack_of(vec![
        ("api", unit("api").deps(&["db"])),
        ("web", unit("web")),
    ])
    .with_datastore("db", DatastoreKind::Redis, unit("redis:7"));
    up_with(&fake, &stack, &request(&["api"])).await;
    assert_eq!(fake.running("db"), ["shop-db-1"]);
    assert_eq!(fake.running("api"), ["shop-api-1"]);
    assert!(fake.running("web").is_empty());
}

#[tokio::test]
async fn a_before_task_runs_after_the_dependencies_and_before_the_unit_starts() {
    let fake = FakeEngine::new();
    let stack = shop().with_task("migrate", "api", &["api"]);
    let outcome = up_all(&fake, &stack).await;
    assert!(outcome.all_healthy(), "{outcome:?}");
    let calls = fake.calls();
    let task = at(&calls, &call(Call::RunTask, "migrate"));
    assert!(
        at(&calls, &call(Call::Registered, "shop-db-1")) < task,
        "{calls:#?}"
    );
    assert!(
        task < at(&calls, &call(Call::Start, "shop-api-1")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_failing_before_task_fails_its_unit_which_never_starts() {
    let fake = FakeEngine::new();
    fake.script(|s| {
        s.task_exit.insert("migrate".into(), 3);
    });
    let stack = shop().with_task("migrate", "api", &["api"]);
    let outcome = up_all(&fake, &stack).await;
    match state(&outcome, "api") {
        UnitState::Failed { reason, logs, .. } => {
            assert!(reason.contains("exited with code 3"), "{reason}");
            assert_eq!(logs, &["migrate exited 3"]);
        }
        other => panic!("api should have failed: {other:?}"),
    }
    assert!(!fake.calls().contains(&call(Call::Start, "shop-api-1")));
}

#[tokio::test]
async fn before_tasks_do_not_run_when_nothing_is_about_to_start() {
    let fake = FakeEngine::new();
    let stack = shop().with_task("migrate", "api", &["api"]);
    up_all(&fake, &stack).await;
    fake.clear_calls();
    up_all(&fake, &stack).await;
    let calls = fake.calls();
    assert!(
        !any_of(&calls, |c| matches!(c, Call::RunTask(_))),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_task_container_left_by_a_dead_devstack_is_removed() {
    let fake = FakeEngine::new();
    let stack = shop().with_task("migrate", "api", &[]);
    // Pid 0 never owns a devstack: the maker is gone.
    let left = plan::task_container(&stack, PROJECT, "migrate", "api", None, "0").expect("task");
    ContainerEngine::create(&fake, &left).await.expect("create");
    up_all(&fake, &stack).await;
    at(&fake.calls(), &Call::Remove(left.name.clone()));
    assert!(fake.containers().iter().all(|c| c.name != left.name));
}

#[tokio::test]
async fn down_removes_services_before_datastores_and_keeps_volumes() {
    let fake = FakeEngine::new();
    up_all(&fake, &shop()).await;
    fake.clear_calls();
    let outcome = down(&fake, PROJECT, None, false, &Reporter::silent())
        .await
        .expect("down");
    let calls = fake.calls();
    assert!(
        at(&calls, &call(Call::Remove, "shop-api-1")) < at(&calls, &call(Call::Stop, "shop-db-1")),
        "{calls:#?}"
    );
    assert!(fake.containers().is_empty());
    assert!(outcome.volumes.is_empty());
    assert_eq!(fake.volumes(), ["shop_db-data"]);
}

#[tokio::test]
async fn down_with_volumes_removes_the_named_volumes_after_the_containers() {
    let fake = FakeEngine::new();
    up_all(&fake, &shop()).await;
    fake.clear_calls();
    down(&fake, PROJECT, None, true, &Reporter::silent())
        .await
        .expect("down");
    let calls = fake.calls();
    assert!(
        at(&calls, &call(Call::Remove, "shop-db-1"))
            < at(&calls, &call(Call::RemoveVolume, "shop_db-data")),
        "{calls:#?}"
    );
    assert!(fake.volumes().is_empty());
}

#[tokio::test]
async fn stop_all_stops_services_first_and_removes_nothing() {
    let fake = FakeEngine::new();
    up_all(&fake, &shop()).await;
    fake.clear_calls();
    stop_all(&fake, PROJECT, None, &Reporter::silent())
        .await
        .expect("stop");
    let calls = fake.calls();
    assert!(
        at(&calls, &call(Call::Stop, "shop-api-1")) < at(&calls, &call(Call::Stop, "shop-db-1")),
        "{calls:#?}"
    );
    assert!(!any_of(&calls, |c| matches!(c, Call::Remove(_))));
    assert_eq!(fake.containers().len(), 2);
}

#[tokio::test]
async fn kill_all_kills_every_container_of_the_project() {
    let fake = FakeEngine::new();
    up_all(&fake, &shop()).await;
    kill_all(&fake, PROJECT).await.expect("kill");
    assert!(fake.running("api").is_empty() && fake.running("db").is_empty());
    let calls = fake.calls();
    at(&calls, &call(Call::Kill, "shop-api-1"));
    at(&calls, &call(Call::Kill, "shop-db-1"));
}

/// The probe port of a stack reached through loopback ports is published
/// on 127.0.0.1 by the containers `up` creates (decided before creating
/// them), and a stack reached directly publishes nothing it did not ask for.
#[tokio::test]
async fn a_published_reach_publishes_the_probe_port_on_loopback_before_creating() {
    use crate::engine::reach::Reach;
    let stack = stack_of(vec![("api", unit("app:1").health(http_health(8080)))]);
    let direct = FakeEngine::new();
    direct.image("app:1", "sha256:app");
    up_all(&direct, &stack).await;
    let ports = |fake: &FakeEngine| -> Vec<Vec<crate::spec::Port>> {
        fake.containers()
            .iter()
            .map(|c| c.spec.ports.clone())
            .collect()
    };
    assert_eq!(ports(&direct), [Vec::new()]);

    let published = FakeEngine::new();
    published.image("app:1", "sha256:app");
    published.script(|s| s.reach = Some(Reach::Published));
    up_all(&published, &stack).await;
    let made = ports(&published);
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].len(), 1, "{made:?}");
    assert_eq!(made[0][0].container_port, 8080);
    assert!(made[0][0].host_ip.is_loopback(), "{made:?}");
    assert_eq!(made[0][0].host_port, None);
}
