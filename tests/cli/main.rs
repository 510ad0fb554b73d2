//! The `devstack` binary run on fixture stacks, its output compared with
//! reviewed snapshots (`tests/cli/snapshots/`; `INSTA_UPDATE=always` rewrites
//! them, then review the diff).

use std::path::Path;
use std::process::Command;

/// One run of the built binary, described fluently.
struct Run {
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    dir: Option<std::path::PathBuf>,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn new(args: &[&str]) -> Self {
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            env_removed: Vec::new(),
            dir: None,
        }
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn env_remove(mut self, key: &str) -> Self {
        self.env_removed.push(key.into());
        self
    }

    fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    fn run(self) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_devstack"));
        cmd.args(&self.args)
            .env("NO_COLOR", "1")
            .env_remove("DEVSTACK_PROJECT_NAME");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        let out = cmd.output().expect("the devstack binary runs");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Absolute paths of this checkout differ between machines.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    let root = env!("CARGO_MANIFEST_DIR");
    settings.add_filter(&regex_escape(root), "[ROOT]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `validate` on a bad fixture: exit 1, and a report that matches its snapshot.
fn check_bad(name: &str) {
    let file = format!("fixtures/bad/{name}.yaml");
    // The engine's socket named by the environment would change the reports.
    let out = Run::new(&["validate", "-f", &file])
        .env_remove("DOCKER_HOST")
        .env_remove("XDG_RUNTIME_DIR")
        .run();
    assert_eq!(out.code, 1, "{name}: {}", out.stderr);
    assert!(out.stdout.is_empty(), "{name}: report goes to stderr");
    // Every problem names the file with line and column.
    assert!(out.stderr.contains(&format!("{file}:")), "{}", out.stderr);
    settings().bind(|| insta::assert_snapshot!(format!("bad-{name}"), out.stderr));
}

// A macro would hide which fixture failed; one test per bad fixture keeps it plain.
#[test]
fn bad_syntax() {
    check_bad("syntax");
}
#[test]
fn bad_unknown_field() {
    check_bad("unknown-field");
}
#[test]
fn bad_wrong_type() {
    check_bad("wrong-type");
}
#[test]
fn bad_values() {
    check_bad("bad-values");
}
#[test]
fn bad_missing_dependency() {
    check_bad("missing-dependency");
}
#[test]
fn bad_cycle() {
    check_bad("cycle");
}
#[test]
fn bad_duplicate_route() {
    check_bad("duplicate-route");
}
#[test]
fn bad_duplicate_port() {
    check_bad("duplicate-port");
}
#[test]
fn bad_build_context() {
    check_bad("build-context");
}
#[test]
fn bad_unset_variable() {
    check_bad("unset-variable");
}
#[test]
fn bad_not_a_mapping() {
    check_bad("not-a-mapping");
}
#[test]
fn bad_no_name() {
    check_bad("no-name");
}
#[test]
fn bad_host_access() {
    check_bad("host-access");
}
#[test]
fn bad_names() {
    check_bad("names");
}
#[test]
fn bad_missing_paths() {
    check_bad("missing-paths");
}
#[test]
fn bad_env_file() {
    check_bad("env-file");
    let out = Run::new(&["validate", "-f", "fixtures/bad/env-file.yaml"]).run();
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

/// Regression (issue 10): hostile stack files, run through the real binary
/// under a 2 GiB address-space limit and a 60 s budget. The old code
/// overflowed its stack on the first and needed ~4 GiB for the second.
#[test]
fn hostile_stack_files_get_a_diagnostic_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let depth = 50_000;
    let nested = format!(
        "name: nested\nservices:\n  api:\n    image: api:1\n    env:\n      X: '{}x{}'\n",
        "${A:-".repeat(depth),
        "}".repeat(depth)
    );
    let mut aliased = format!(
        "name: aliased\nx-big: &big '{}'\nservices:\n  api:\n    image: api:1\n    command:\n",
        "x".repeat(1 << 20)
    );
    for _ in 0..4000 {
        aliased.push_str("      - *big\n");
    }
    for (name, text, expected) in [
        (
            "nested.yaml",
            nested,
            "variables are nested more than 32 levels deep",
        ),
        (
            "aliased.yaml",
            aliased,
            "aliases copy more than 16 MiB of text",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let started = std::time::Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 2097152 && exec timeout 60 \"$0\" validate -f \"$1\"")
            .arg(env!("CARGO_BIN_EXE_devstack"))
            .arg(&file)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains(&format!("{name}:")), "{name}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn every_bad_fixture_has_a_test() {
    let tested = [
        "syntax",
        "unknown-field",
        "wrong-type",
        "bad-values",
        "missing-dependency",
        "cycle",
        "duplicate-route",
        "duplicate-port",
        "build-context",
        "unset-variable",
        "not-a-mapping",
        "no-name",
        "host-access",
        "names",
        "missing-paths",
        "env-file",
    ];
    for entry in std::fs::read_dir("fixtures/bad").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                tested.contains(&stem.as_str()),
                "fixtures/bad/{stem}.yaml has no test"
            );
        }
    }
}

#[test]
fn every_example_stack_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir("stacks").unwrap() {
        let file = entry.unwrap().path().join("devstack.yaml");
        if !file.exists() {
            continue;
        }
        seen += 1;
        let out = Run::new(&["validate", "-f", file.to_str().unwrap()]).run();
        assert_eq!(out.code, 0, "{}: {}", file.display(), out.stderr);
        assert!(out.stdout.contains(": valid ("), "{}", out.stdout);
    }
    assert!(
        seen >= 3,
        "expected at least three example stacks, found {seen}"
    );
}

#[test]
fn validate_json_lists_problems_with_positions() {
    let out = Run::new(&[
        "validate",
        "--json",
        "-f",
        "fixtures/bad/unknown-field.yaml",
    ])
    .run();
    assert_eq!(out.code, 1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let first = &report["problems"][0];
    assert_eq!(first["file"], "fixtures/bad/unknown-field.yaml");
    assert_eq!(first["line"], 6);
    assert_eq!(first["column"], 5);
    assert_eq!(first["path"], "services.api.helth");
    assert_eq!(first["hint"], "did you mean `health`?");
    assert_eq!(report["problems"].as_array().unwrap().len(), 3);
}

#[test]
fn overlays_merge_and_secrets_are_masked() {
    let out = Run::new(&[
        "config",
        "-f",
        "fixtures/good/overlay-base.yaml",
        "-f",
        "fixtures/good/overlay-dev.yaml",
    ])
    .env("API_TAG", "git-91be07d")
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    settings().bind(|| insta::assert_snapshot!("config-overlay", out.stdout));
    assert!(!out.stdout.contains("s3cr3t"));

    let shown = Run::new(&[
        "config",
        "--json",
        "--show-secrets",
        "-f",
        "fixtures/good/overlay-base.yaml",
        "-f",
        "fixtures/good/overlay-dev.yaml",
    ])
    .run();
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let stack: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let api = &stack["services"]["api"];
    assert_eq!(api["env"]["API_SECRET"], "s3cr3t");
    assert_eq!(api["env"]["LOG_LEVEL"], "debug", "the overlay wins");
    assert_eq!(api["env"]["FEATURE_X"], "off", "maps merge");
    assert_eq!(api["ports"], serde_json::json!([]), "lists replace");
    assert_eq!(api["replicas"], 2);
    assert_eq!(
        api["image"], "api:git-3f2a9c1",
        "the default applies when unset"
    );
    assert_eq!(
        stack["services"]["worker"]["command"],
        serde_json::json!(["./worker", "--queue", "high priority"])
    );
}

#[test]
fn image_tags_are_kept_exactly() {
    let out = Run::new(&["config", "--json", "-f", "stacks/opinions/devstack.yaml"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stack: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        stack["services"]["web"]["image"],
        "opinions/web:git-3f2a9c1"
    );
    assert_eq!(
        stack["datastores"]["elasticsearch"]["image"],
        "docker.elastic.co/elasticsearch/elasticsearch:7.17.18"
    );
    assert!(!out.stdout.contains(":latest"));
}

#[test]
fn env_file_beside_the_stack_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("devstack.yaml"),
        "name: dotenv\nservices:\n  api:\n    image: api:${API_TAG:?}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".env"), "API_TAG=git-from-dotenv\n").unwrap();
    let out = Run::new(&["config", "--json"]).dir(dir.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("api:git-from-dotenv"));
    // The environment wins over .env.
    let out = Run::new(&["config", "--json"])
        .dir(dir.path())
        .env("API_TAG", "git-from-env")
        .run();
    assert!(out.stdout.contains("api:git-from-env"), "{}", out.stdout);
}

#[test]
fn missing_default_stack_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Run::new(&["validate"]).dir(dir.path()).run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("cannot read stack file devstack.yaml: no such file"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("-f"), "{}", out.stderr);
}

#[test]
fn help_lists_every_subcommand_and_exit_codes() {
    let out = Run::new(&["--help"]).run();
    assert_eq!(out.code, 0);
    for sub in [
        "validate",
        "config",
        "up",
        "down",
        "ps",
        "logs",
        "exec",
        "run",
        "restart",
        "scale",
        "watch",
        "etcd",
        "routes",
        "import",
        "doctor",
        "completions",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "`{sub}` missing from --help"
        );
    }
    assert!(out.stdout.contains("Exit codes:"));
}

#[test]
fn bad_flag_is_a_usage_error() {
    let out = Run::new(&["validate", "--no-such-flag"]).run();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--no-such-flag"));
}

#[test]
fn completions_are_generated() {
    let out = Run::new(&["completions", "bash"]).run();
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("devstack"));
    assert!(out.stdout.contains("validate"));
}

#[test]
fn project_name_is_checked() {
    let out = Run::new(&[
        "config",
        "-p",
        "Not/Valid",
        "-f",
        "fixtures/good/overlay-base.yaml",
    ])
    .run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("'Not/Valid' for '--project-name <NAME>': `Not/Valid` is not a valid name"),
        "{}",
        out.stderr
    );
    let out = Run::new(&["config", "-f", "fixtures/good/overlay-base.yaml"])
        .env("DEVSTACK_PROJECT_NAME", "ci-job-17")
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn etcd_quick_looks_go_to_the_stacks_cluster() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("devstack.yaml"),
        "name: ext\ndiscovery:\n  etcd: { endpoints: [\"http://127.0.0.1:9\"] }\n",
    )
    .unwrap();
    let out = Run::new(&["etcd", "ls"])
        .dir(dir.path())
        .env_remove("DEVSTACK_ETCD_ENDPOINTS")
        .run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("http://127.0.0.1:9"), "{}", out.stderr);
}

/// `-p ..` once made `down` empty `$XDG_STATE_HOME` (the project's "state
/// directory" was `$XDG_STATE_HOME/devstack/..`): a project name that could
/// make a path outside devstack's own directory is a usage error for every
/// command, from `-p` and from `DEVSTACK_PROJECT_NAME`, and nothing is removed.
#[test]
fn a_project_name_that_climbs_out_of_the_state_directory_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("state");
    let victim = scratch.path().join("victim");
    for dir in [&home, &victim] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("sentinel"), "keep me").unwrap();
    }
    let absolute = victim.to_string_lossy().into_owned();
    let intact = || {
        for dir in [&home, &victim] {
            assert_eq!(
                std::fs::read_to_string(dir.join("sentinel"))
                    .ok()
                    .as_deref(),
                Some("keep me"),
                "{} lost its sentinel",
                dir.display()
            );
        }
    };
    for name in ["..", "../..", absolute.as_str(), "devstack/../..", "."] {
        for command in ["down", "ps", "logs", "routes", "up"] {
            let out = Run::new(&[command, "-p", name])
                .dir(scratch.path())
                .env("XDG_STATE_HOME", &home.to_string_lossy())
                .run();
            assert_eq!(out.code, 2, "{command} -p {name}: {}", out.stderr);
            assert!(
                out.stderr.contains("is not a valid name"),
                "{command} -p {name}: {}",
                out.stderr
            );
            intact();
        }
        let out = Run::new(&["down"])
            .dir(scratch.path())
            .env("XDG_STATE_HOME", &home.to_string_lossy())
            .env("DEVSTACK_PROJECT_NAME", name)
            .run();
        assert_eq!(out.code, 2, "DEVSTACK_PROJECT_NAME={name}: {}", out.stderr);
        intact();
    }
}

/// `devstack config | head -0`: a stdout whose reader is gone is not an
/// error (exit 0, nothing on stderr), never a panic; `config` once panicked
/// with "failed printing to stdout: Broken pipe" and exit 101.
#[test]
fn a_closed_stdout_is_not_an_error() {
    use std::os::fd::{FromRawFd, OwnedFd};
    for args in [
        &["config", "-f", "fixtures/good/overlay-base.yaml"][..],
        &["completions", "bash"][..],
        &["validate", "-f", "fixtures/good/overlay-base.yaml"][..],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors this test then owns.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: each descriptor was just made and is owned once.
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The reader is gone before devstack writes a byte.
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_devstack"))
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("DEVSTACK_PROJECT_NAME")
            .stdout(std::process::Stdio::from(writer))
            .output()
            .expect("the devstack binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// A copy under another project name must not make unit names clash with
/// that copy's own containers (`<project>-proxy`, `<project>-<unit>-<n>`).
#[test]
fn a_project_name_that_makes_unit_names_clash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("devstack.yaml"),
        "name: shop\nservices:\n  ci-proxy: { image: a }\n  web: { image: a }\n",
    )
    .unwrap();
    let file = dir.path().join("devstack.yaml");
    let file = file.to_str().unwrap();
    let out = Run::new(&["validate", "-f", file]).run();
    assert_eq!(out.code, 0, "valid under its own name: {}", out.stderr);
    let out = Run::new(&["config", "-p", "ci", "-f", file]).run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("project name `ci`")
            && out
                .stderr
                .contains("`ci-proxy` is the name of the stack's proxy container"),
        "{}",
        out.stderr
    );
}

/// Issue 11 item 5: a platform that is not `os/arch[/variant]` with known
/// values is a validate error at its line and column, with what to write.
#[test]
fn a_bad_platform_is_reported_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devstack.yaml");
    std::fs::write(
        &file,
        "name: t\nservices:\n  api:\n    image: api:1\n    platform: linux/aarch64\nproxy:\n  platform: linux/amd64\n",
    )
    .unwrap();
    let out = Run::new(&["validate", "-f", "devstack.yaml"])
        .dir(dir.path())
        .run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("devstack.yaml:5:15"),
        "the position: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("services.api.platform"),
        "the field: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("unknown architecture `aarch64`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Docker calls it `linux/arm64`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("1 problem"),
        "only the bad one: {}",
        out.stderr
    );
}

/// `config --json` of each imported fixture (production definitions plus a
/// laptop overlay) equals that of the hand-written devstack stack.
#[test]
fn imported_compose_and_manifests_are_the_example_stacks() {
    for (files, stack) in [
        (
            [
                "fixtures/import/events/compose.yaml",
                "fixtures/import/events/laptop.yaml",
            ],
            "stacks/events/devstack.yaml",
        ),
        (
            [
                "fixtures/import/opinions/k8s",
                "fixtures/import/opinions/laptop.yaml",
            ],
            "stacks/opinions/devstack.yaml",
        ),
    ] {
        let imported = Run::new(&["config", "--json", "-f", files[0], "-f", files[1]]).run();
        assert_eq!(imported.code, 0, "{}", imported.stderr);
        let written = Run::new(&["config", "--json", "-f", stack]).run();
        assert_eq!(written.code, 0, "{}", written.stderr);
        assert_eq!(imported.stdout, written.stdout, "{files:?}");
        // What was left out is said once, with file, line and field path.
        assert!(
            imported
                .stderr
                .lines()
                .all(|l| l.contains(": ignored: ") || l.contains(": unsupported: ")),
            "{}",
            imported.stderr
        );
    }
    let out = Run::new(&[
        "validate",
        "-f",
        "fixtures/import/events/compose.yaml",
        "-f",
        "fixtures/import/events/laptop.yaml",
    ])
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(
        "fixtures/import/events/compose.yaml:85:18: unsupported: services.matchmaking-api.networks.default.aliases:"
    ), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("services.registration.logging").count(),
        1
    );
}

#[test]
fn import_writes_an_equivalent_stack_file_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("devstack.yaml");
    let out_name = out_file.to_str().unwrap();
    let out = Run::new(&[
        "import",
        "fixtures/import/events/compose.yaml",
        "fixtures/import/events/laptop.yaml",
        "-o",
        out_name,
    ])
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(text.contains("# inferred: an HTTP check"), "{text}");
    assert!(text.contains("#   fixtures/import/events/compose.yaml:155:15: unsupported: services.mailhog.profiles"), "{text}");
    let imported = Run::new(&["config", "--json", "-f", out_name]).run();
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let written = Run::new(&["config", "--json", "-f", "stacks/events/devstack.yaml"]).run();
    assert_eq!(imported.stdout, written.stdout);
    // A second import does not overwrite without --force.
    let again = Run::new(&[
        "import",
        "fixtures/import/events/compose.yaml",
        "-o",
        out_name,
    ])
    .run();
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("pass --force"), "{}", again.stderr);
}

#[test]
fn import_of_a_broken_manifest_is_a_positioned_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web\n",
    )
    .unwrap();
    let out = Run::new(&["import", file.to_str().unwrap(), "-o", "-"]).run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("invalid YAML"), "{}", out.stderr);
    assert!(out.stderr.contains("web.yaml:"), "{}", out.stderr);
}

/// fleet units have no order: services and `before` lists compare unordered.
#[test]
fn imported_fleet_units_are_the_opinions_stack() {
    let imported = Run::new(&[
        "config",
        "--json",
        "-f",
        "fixtures/import/opinions/fleet",
        "-f",
        "fixtures/import/opinions/fleet-laptop.yaml",
    ])
    .run();
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let written = Run::new(&["config", "--json", "-f", "stacks/opinions/devstack.yaml"]).run();
    let unordered = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        for task in v["tasks"].as_object_mut().unwrap().values_mut() {
            task["before"]
                .as_array_mut()
                .unwrap()
                .sort_by_key(|b| b.to_string());
        }
        let services: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_value(v["services"].take()).unwrap();
        (v, services)
    };
    assert_eq!(unordered(&imported.stdout), unordered(&written.stdout));
    assert!(
        imported
            .stderr
            .contains("unsupported: Unit/kafka.ExecStart.-e.KAFKA_CFG_ADVERTISED_LISTENERS"),
        "{}",
        imported.stderr
    );
}

/// `export compose` of each example stack is a file the Docker CLI's stack
/// loader accepts (`docker stack config` checks it as `docker stack deploy`
/// does, without a swarm), with replicas and health carried over.
#[test]
fn exported_compose_files_are_what_docker_stack_deploy_reads() {
    let dir = tempfile::tempdir().unwrap();
    for stack in ["events", "giveaway", "opinions"] {
        let file = dir.path().join(format!("{stack}.yaml"));
        let out = Run::new(&[
            "-f",
            &format!("stacks/{stack}/devstack.yaml"),
            "export",
            "compose",
            "-o",
            file.to_str().unwrap(),
        ])
        .run();
        assert_eq!(out.code, 0, "{}", out.stderr);
        // What a stack deploy cannot say is listed, never dropped silently.
        assert!(out.stderr.contains("left out: proxy: "), "{}", out.stderr);
        let checked = Command::new("docker")
            .args(["stack", "config", "-c"])
            .arg(&file)
            .output()
            .expect("the docker CLI runs");
        let stdout = String::from_utf8_lossy(&checked.stdout);
        assert!(
            checked.status.success(),
            "{stack}: {}\n{}",
            String::from_utf8_lossy(&checked.stderr),
            std::fs::read_to_string(&file).unwrap()
        );
        if stack == "events" {
            assert!(stdout.contains("replicas: 2"), "{stdout}");
            assert!(stdout.contains("http://localhost:3000/healthz"), "{stdout}");
        }
    }
}

/// The events stack exported as Compose and as manifests (a directory, one
/// file per unit) and read back with a laptop overlay holding what each
/// format cannot say: `config --json` is the original's.
#[test]
fn exported_events_read_back_as_the_events_stack() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::canonicalize("stacks/events/seed/mariadb").unwrap();
    let tasks = "tasks:
  migrate-registration:
    service: registration
    command: python manage.py migrate --noinput
    before: [registration]
  migrate-matchmaking:
    service: matchmaking-admin
    command: python manage.py migrate --noinput
    before: [matchmaking-admin]
";
    let common = "discovery: { prefix: /events/services, ttl: 30s }
proxy: { image: 'haproxy:2.8', listen: '127.0.0.1:8081' }
";
    let compose_overlay = format!("name: events\n{tasks}{common}");
    let k8s_overlay = format!(
        "services:
  registration: {{ depends_on: [mariadb, memcached] }}
  ticket-shop: {{ depends_on: [mariadb] }}
  matchmaking-api: {{ depends_on: [mariadb, memcached] }}
  matchmaking-admin: {{ depends_on: [matchmaking-api] }}
  wordpress: {{ depends_on: [mariadb] }}
datastores:
  mariadb: {{ seed: '{}' }}
{common}",
        seed.display()
    );
    let written = Run::new(&[
        "config",
        "--json",
        "--show-secrets",
        "-f",
        "stacks/events/devstack.yaml",
    ])
    .run();
    assert_eq!(written.code, 0, "{}", written.stderr);
    for (target, output, overlay) in [
        ("compose", "compose.yaml", compose_overlay),
        ("k8s", "manifests/", k8s_overlay),
    ] {
        let out_path = dir.path().join(output);
        let out = Run::new(&[
            "-f",
            "stacks/events/devstack.yaml",
            "export",
            target,
            "-o",
            out_path.to_str().unwrap(),
        ])
        .run();
        assert_eq!(out.code, 0, "{}", out.stderr);
        if target == "k8s" {
            assert!(out_path.join("registration.yaml").is_file());
            assert!(out_path.join("mariadb.yaml").is_file());
        }
        let laptop = dir.path().join(format!("laptop-{target}.yaml"));
        std::fs::write(&laptop, overlay).unwrap();
        let imported = Run::new(&[
            "config",
            "--json",
            "--show-secrets",
            "-f",
            out_path.to_str().unwrap(),
            "-f",
            laptop.to_str().unwrap(),
        ])
        .run();
        assert_eq!(imported.code, 0, "{target}: {}", imported.stderr);
        // The same stack; a directory of manifests is read in file-name order.
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(json(&imported.stdout), json(&written.stdout), "{target}");
        if target == "compose" {
            assert_eq!(imported.stdout, written.stdout, "units keep their order");
        }
        // A second export does not overwrite without --force.
        let again = Run::new(&[
            "-f",
            "stacks/events/devstack.yaml",
            "export",
            target,
            "-o",
            out_path.to_str().unwrap(),
        ])
        .run();
        assert_eq!(again.code, 1, "{}", again.stderr);
        assert!(again.stderr.contains("pass --force"), "{}", again.stderr);
    }
}
