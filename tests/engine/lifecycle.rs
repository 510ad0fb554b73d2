//! The everyday path: up, request, idempotent re-up, a changed service,
//! adoption after a crash, data surviving down/up, down leaving nothing.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[test]
fn up_serves_requests_and_down_leaves_nothing() {
    let p = Project::new("life", "basic.yaml");
    // A stranger with a look-alike name and no labels must survive `down`.
    let stranger = format!("{}-web-9", p.name);
    docker(&["create", "--name", &stranger, "devstack-fixtures/busybox"]);

    let out = p.ok(&["up", "--wait", "--timeout", "90s"]);
    let table = stdout(&out);
    assert!(
        table.contains("SERVICE") && table.contains("healthy"),
        "{table}"
    );
    let rows = p.containers();
    assert_eq!(rows.len(), 4, "web, 2 api, cache: {rows:?}");
    assert!(rows.iter().all(|r| r.state == "running"), "{rows:?}");

    // The web service answers on its engine-chosen, loopback-only port.
    let addr = p.published("web", 8080);
    let body = http_get(&addr, "/");
    assert!(body.contains("\"service\": \"web\""), "{body}");
    assert!(body.contains(&format!("{}-web-1", p.name)), "{body}");

    // exec and run pass exit codes through.
    let exec = p.run(&["exec", "web", "--", "sh", "-c", "echo in-web; exit 7"]);
    assert_eq!(exec.status.code(), Some(7));
    assert!(stdout(&exec).contains("in-web"));
    let task = p.run(&["run", "prepare"]);
    assert_eq!(task.status.code(), Some(0));
    assert!(stdout(&task).contains("prepared"));

    p.ok(&["down", "--volumes"]);
    assert!(
        p.containers().is_empty(),
        "containers left: {:?}",
        p.containers()
    );
    assert!(p.networks().is_empty(), "network left");
    assert!(p.volumes().is_empty(), "volumes left");
    assert!(
        !docker(&["ps", "-aq", "--filter", &format!("name={stranger}")]).is_empty(),
        "down removed a container that is not the stack's"
    );
    docker(&["rm", "-f", &stranger]);
}

#[test]
fn a_second_up_changes_nothing_and_a_changed_service_is_recreated_alone() {
    // Its own copy of the web context, with a file no other test has: when
    // copies of one context are built at the same moment, the builder's cache
    // ends up with two chains of the same steps, and a rebuild may take the
    // other one (the same files under another image id).
    let basic = std::fs::read_to_string(stack_file("basic.yaml")).expect("basic.yaml");
    assert!(basic.contains("{ context: ../../apps/web, allow_outside: true }"));
    let p = Project::inline(
        "idem",
        &basic.replace("{ context: ../../apps/web, allow_outside: true }", "./web"),
    );
    let web_dir = p.files[0]
        .parent()
        .expect("a scratch directory")
        .join("web");
    std::fs::create_dir(&web_dir).expect("the context directory");
    for file in ["Dockerfile", "app.py", ".dockerignore"] {
        std::fs::copy(
            repo().join("fixtures/apps/web").join(file),
            web_dir.join(file),
        )
        .expect("the context is copied");
    }
    std::fs::write(web_dir.join("unique.txt"), &p.name).expect("a file of its own");
    p.ok(&["up", "--wait"]);
    let before: BTreeMap<String, (String, String)> = p
        .containers()
        .into_iter()
        .map(|r| (r.name, (r.id, r.created)))
        .collect();

    let again = p.ok(&["up", "--wait"]);
    let after: BTreeMap<String, (String, String)> = p
        .containers()
        .into_iter()
        .map(|r| (r.name, (r.id, r.created)))
        .collect();
    assert_eq!(before, after, "a second up recreated something");
    assert!(!stderr(&again).contains("creating"), "{}", stderr(&again));
    // Nothing the build would read changed (an ignored file is no input):
    // the image is not built again.
    std::fs::write(web_dir.join("notes.swp"), "ignored").expect("an ignored file");
    let third = p.ok(&["up", "--wait"]);
    for out in [&again, &third] {
        assert!(
            stderr(out).contains("web: image current (build inputs unchanged), not rebuilt")
                && !stderr(out).contains("building"),
            "{}",
            stderr(out)
        );
    }

    // The overlay changes web's env only.
    let v2 = p.with_overlay("basic-v2.yaml");
    let changed = v2.ok(&["up", "--wait"]);
    assert!(
        stderr(&changed).contains("recreating"),
        "{}",
        stderr(&changed)
    );
    let now: BTreeMap<String, (String, String)> = p
        .containers()
        .into_iter()
        .map(|r| (r.name, (r.id, r.created)))
        .collect();
    let web = format!("{}-web-1", p.name);
    for (name, id) in &before {
        if name == &web {
            assert_ne!(now.get(name), Some(id), "web was not recreated");
        } else {
            assert_eq!(
                now.get(name),
                Some(id),
                "{name} was recreated although it did not change"
            );
        }
    }
    let body = http_get(&p.published("web", 8080), "/");
    assert!(body.contains("\"version\": \"2\""), "{body}");
}

#[test]
fn up_after_kill_9_in_the_middle_adopts_and_finishes() {
    let p = Project::new("kill", "basic.yaml");
    let mut child = p
        .command(&["up", "--detach"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("devstack starts");
    // Kill it once the first containers exist, while others are still to come.
    let started = eventually(Duration::from_secs(60), || !p.containers().is_empty());
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(started, "no container appeared before the kill");

    p.ok(&["up", "--wait"]);
    let rows = p.containers();
    let mut per_service: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *per_service.entry(r.service.clone()).or_default() += 1;
    }
    assert_eq!(per_service.get("web"), Some(&1), "{rows:?}");
    assert_eq!(per_service.get("api"), Some(&2), "{rows:?}");
    assert_eq!(per_service.get("cache"), Some(&1), "{rows:?}");
    assert!(rows.iter().all(|r| r.state == "running"), "{rows:?}");
}

#[test]
fn datastore_data_survives_down_and_up() {
    let p = Project::new("data", "pair.yaml");
    p.ok(&["up", "--wait"]);
    let set = p.ok(&[
        "exec",
        "store",
        "--",
        "sh",
        "-c",
        "redis-cli set greeting kept && redis-cli save",
    ]);
    assert!(stdout(&set).contains("OK"), "{}", stdout(&set));
    p.ok(&["down"]);
    assert!(p.containers().is_empty());
    assert_eq!(p.volumes().len(), 1, "the data volume must survive down");
    p.ok(&["up", "--wait"]);
    let get = p.ok(&["exec", "store", "--", "redis-cli", "get", "greeting"]);
    assert_eq!(stdout(&get).trim(), "kept");
}

#[test]
fn seed_data_fills_a_fresh_volume_and_only_a_fresh_one() {
    let p = Project::new("seed", "seeded.yaml");
    p.ok(&["up", "--wait"]);
    let read = p.ok(&["exec", "store", "--", "cat", "/data/greeting.txt"]);
    assert_eq!(stdout(&read).trim(), "seeded at creation");
    p.ok(&[
        "exec",
        "store",
        "--",
        "sh",
        "-c",
        "echo changed > /data/greeting.txt",
    ]);
    p.ok(&["down"]);
    p.ok(&["up", "--wait"]);
    let again = p.ok(&["exec", "store", "--", "cat", "/data/greeting.txt"]);
    assert_eq!(
        stdout(&again).trim(),
        "changed",
        "the seed must not overwrite existing data"
    );
}
