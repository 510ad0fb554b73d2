//! Data outlives containers: a datastore's data directory is a named volume
//! even when the stack names none, data an older devstack left in an
//! anonymous volume moves into it, a replacement keeps a service's anonymous
//! volumes, and only `down --volumes` deletes any of it. The images here
//! declare a `VOLUME` (the fixture images declare none), so each test builds
//! one on top of a fixture image and removes it at the end.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// An image built by the test from a Dockerfile, removed when dropped.
struct TestImage(String);

impl TestImage {
    fn build(tag: &str, dockerfile: &str) -> TestImage {
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", tag, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker build runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(dockerfile.as_bytes())
            .expect("the Dockerfile is sent");
        let out = child.wait_with_output().expect("docker build ends");
        assert!(
            out.status.success(),
            "docker build of {tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestImage(tag.to_string())
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// Volumes no label leads `down --volumes` to (anonymous ones a test made
/// or kept on purpose), removed when dropped.
#[derive(Default)]
struct Leftovers(Vec<String>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The volume names a container mounts at `target`.
fn volume_at(container: &str, target: &str) -> String {
    let fmt = format!("{{{{range .Mounts}}}}{{{{if eq .Destination \"{target}\"}}}}{{{{.Name}}}}{{{{end}}}}{{{{end}}}}");
    docker(&["inspect", "--format", &fmt, container])
}

/// A stack file rewritten in place (an edit between two `up`s).
fn rewrite(p: &Project, yaml: &str) {
    std::fs::write(&p.files[0], yaml).expect("the stack file is rewritten");
}

fn redis_stack(image: &str, edit: &str) -> String {
    format!(
        "name: vol\ndatastores:\n  store:\n    kind: redis\n    image: {image}\n    env: {{ EDIT: \"{edit}\" }}\n    health: {{ tcp: 6379 }}\n    stop_grace: 2s\n"
    )
}

#[test]
fn a_datastore_without_a_volume_keeps_its_data_until_down_volumes() {
    let image = TestImage::build(
        &format!("devstack-test-volume-redis-{}", std::process::id()),
        "FROM devstack-fixtures/redis\n\
         RUN mkdir -p /data && echo from-image > /data/from-image.txt\n\
         VOLUME /data\n",
    );
    let p = Project::inline("dsvol", &redis_stack(&image.0, "1"));
    let volume = format!("{}_store-data", p.name);
    let get = |p: &Project| {
        let out = p.ok(&["exec", "store", "--", "redis-cli", "get", "greeting"]);
        stdout(&out).trim().to_string()
    };

    p.ok(&["up", "--wait"]);
    assert_eq!(
        p.volumes(),
        vec![volume.clone()],
        "the datastore's data volume, with the project label"
    );
    // A fresh named volume starts with what the image holds there, as an
    // anonymous one would.
    let seeded = p.ok(&["exec", "store", "--", "cat", "/data/from-image.txt"]);
    assert_eq!(stdout(&seeded).trim(), "from-image");
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
    assert!(volume_exists(&volume), "down removed the data volume");
    p.ok(&["up", "--wait"]);
    assert_eq!(get(&p), "kept", "the data did not survive down and up");

    // A config edit recreates the container; the data stays.
    let before = p.containers();
    rewrite(&p, &redis_stack(&image.0, "2"));
    p.ok(&["up", "--wait"]);
    let after = p.containers();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(
        before[0].id, after[0].id,
        "the edit did not recreate the datastore"
    );
    assert_eq!(get(&p), "kept", "the data did not survive the recreate");

    p.ok(&["down", "--volumes"]);
    assert!(
        p.volumes().is_empty(),
        "down --volumes left {:?}",
        p.volumes()
    );
    p.ok(&["up", "--wait"]);
    assert_eq!(get(&p), "", "down --volumes kept the data");
}

#[test]
fn data_an_older_devstack_left_in_an_anonymous_volume_moves_into_the_named_one() {
    let image = TestImage::build(
        &format!("devstack-test-volume-postgres-{}", std::process::id()),
        "FROM devstack-fixtures/postgres\nVOLUME /var/lib/postgresql/data\n",
    );
    let mut leftovers = Leftovers::default();
    let stack = format!(
        "name: mig\ndatastores:\n  db:\n    kind: postgres\n    image: {}\n    health: {{ tcp: 5432 }}\n    stop_grace: 5s\n",
        image.0
    );
    let p = Project::inline("migrate", &stack);

    // The state an older devstack left: its labels, and the data directory
    // in the anonymous volume the image's VOLUME gave the container.
    let old = format!("{}-db-1", p.name);
    let project_label = format!("dev.devstack.project={}", p.name);
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &old,
        "--label",
        &project_label,
        "--label",
        "dev.devstack.service=db",
        "--label",
        "dev.devstack.replica=1",
        "--label",
        "dev.devstack.kind=datastore",
        "--label",
        "dev.devstack.config-hash=from-an-older-devstack",
        &image.0,
    ]);
    assert!(!id.is_empty(), "the old container did not start");
    let anonymous = volume_at(&id, "/var/lib/postgresql/data");
    assert_eq!(anonymous.len(), 64, "an anonymous volume: {anonymous:?}");
    leftovers.0.push(anonymous.clone());
    let psql = |sql: &str| {
        Command::new("docker")
            .args([
                "exec",
                &id,
                "psql",
                "-U",
                "postgres",
                "-h",
                "/run/postgresql",
                "-tAc",
                sql,
            ])
            .output()
            .expect("docker exec runs")
    };
    assert!(
        eventually(Duration::from_secs(60), || psql("select 1")
            .status
            .success()),
        "the old postgres never answered"
    );
    let made = psql("create table kept (v text); insert into kept values ('from the old volume')");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    p.ok(&["up", "--wait", "--timeout", "240s"]);
    let rows = p.containers();
    assert_eq!(
        rows.len(),
        1,
        "the old container (and no helper) is gone: {rows:?}"
    );
    assert_ne!(rows[0].id, id, "the old container was not replaced");
    let read = p.ok(&[
        "exec",
        "db",
        "--",
        "psql",
        "-U",
        "postgres",
        "-h",
        "/run/postgresql",
        "-tAc",
        "select v from kept",
    ]);
    assert_eq!(stdout(&read).trim(), "from the old volume");
    // Owners came along (postgres would not start otherwise, but say it).
    let owner = p.ok(&[
        "exec",
        "db",
        "--",
        "stat",
        "-c",
        "%U %a",
        "/var/lib/postgresql/data/PG_VERSION",
    ]);
    assert_eq!(stdout(&owner).trim(), "postgres 600");
    let named = format!("{}_db-data", p.name);
    assert_eq!(volume_at(&rows[0].id, "/var/lib/postgresql/data"), named);
    assert!(
        volume_exists(&anonymous),
        "the old anonymous volume is kept"
    );

    // The move happens once: a second up keeps the container.
    p.ok(&["up", "--wait"]);
    assert_eq!(p.containers()[0].id, rows[0].id);
}

fn box_stack(image: &str, edit: &str) -> String {
    format!(
        "name: anon\nservices:\n  box:\n    image: {image}\n    env: {{ EDIT: \"{edit}\" }}\n    stop_grace: 1s\n"
    )
}

#[test]
fn a_services_anonymous_volume_is_kept_over_a_recreate_and_down_and_goes_with_down_volumes() {
    let image = TestImage::build(
        &format!("devstack-test-volume-box-{}", std::process::id()),
        "FROM devstack-fixtures/busybox\nVOLUME /cache\n",
    );
    let mut leftovers = Leftovers::default();
    let p = Project::inline("anon", &box_stack(&image.0, "1"));

    p.ok(&["up", "--wait"]);
    let first = p.containers();
    let anonymous = volume_at(&first[0].id, "/cache");
    assert_eq!(anonymous.len(), 64, "an anonymous volume: {anonymous:?}");
    leftovers.0.push(anonymous.clone());
    p.ok(&["exec", "box", "--", "sh", "-c", "echo kept > /cache/file"]);

    rewrite(&p, &box_stack(&image.0, "2"));
    p.ok(&["up", "--wait"]);
    let second = p.containers();
    assert_ne!(
        first[0].id, second[0].id,
        "the edit did not recreate the service"
    );
    assert_eq!(volume_at(&second[0].id, "/cache"), anonymous);
    let read = p.ok(&["exec", "box", "--", "cat", "/cache/file"]);
    assert_eq!(stdout(&read).trim(), "kept");

    p.ok(&["down"]);
    assert!(
        volume_exists(&anonymous),
        "down deleted an anonymous volume"
    );

    // A new container after `down` gets a volume of its own (as with
    // Compose); carried over a recreate, `down --volumes` deletes it.
    p.ok(&["up", "--wait"]);
    let third = volume_at(&p.containers()[0].id, "/cache");
    assert_eq!(third.len(), 64, "{third:?}");
    leftovers.0.push(third.clone());
    rewrite(&p, &box_stack(&image.0, "3"));
    p.ok(&["up", "--wait"]);
    assert_eq!(volume_at(&p.containers()[0].id, "/cache"), third);
    p.ok(&["down", "--volumes"]);
    assert!(
        !volume_exists(&third),
        "down --volumes kept an anonymous volume"
    );
}
