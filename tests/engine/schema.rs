//! Labels carry a schema number: containers an older devstack made (no
//! schema label) are the project's own, while a newer devstack's are left
//! untouched, with a message saying why.

use crate::support::*;

const STACK: &str = "\
name: schema
services:
  web:
    image: devstack-fixtures/app
    port: 8080
    env: { SERVICE: web }
    health: { http: /health, interval: 1s }
    stop_grace: 1s
";

/// Creates and starts `<project>-web-1` with the project's labels plus `extra`.
fn planted(p: &Project, extra: &[&str]) -> String {
    let name = format!("{}-web-1", p.name);
    let project = format!("dev.devstack.project={}", p.name);
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &project,
        "--label",
        "dev.devstack.service=web",
        "--label",
        "dev.devstack.replica=1",
        "--label",
        "dev.devstack.kind=service",
        "--label",
        "dev.devstack.config-hash=0ld",
    ];
    for label in extra {
        args.extend(["--label", label]);
    }
    args.push("devstack-fixtures/app");
    docker(&args).trim().to_string()
}

fn label(id: &str, key: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        &format!("{{{{index .Config.Labels \"{key}\"}}}}"),
        id,
    ])
    .trim()
    .to_string()
}

#[test]
fn an_older_devstacks_container_is_adopted_and_a_newer_ones_is_left_alone() {
    let p = Project::inline("schema", STACK);

    // As a release before schema labels left it: the project's own.
    let old = planted(&p, &[]);
    p.ok(&["up", "--wait", "--timeout", "90s"]);
    let rows = p.containers();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_ne!(rows[0].id, old, "the stale container was kept");
    assert_eq!(label(&rows[0].id, "dev.devstack.schema"), "1");
    assert_eq!(
        label(&rows[0].id, "dev.devstack.version"),
        env!("CARGO_PKG_VERSION")
    );
    p.ok(&["down"]);
    assert!(p.containers().is_empty(), "{:?}", p.containers());

    // As a newer devstack would leave it: neither up nor down touches it.
    let newer = planted(&p, &["dev.devstack.schema=99"]);
    for args in [&["up", "--wait"][..], &["down"][..]] {
        let out = p.run(args);
        assert!(!out.status.success(), "{args:?} went ahead");
        let err = stderr(&out);
        assert!(
            err.contains("newer devstack") && err.contains(&format!("{}-web-1", p.name)),
            "{args:?}: {err}"
        );
        let rows = p.containers();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].id, newer);
        assert_eq!(rows[0].state, "running", "{args:?} stopped it");
    }
    docker(&["rm", "-f", &newer]);
}
