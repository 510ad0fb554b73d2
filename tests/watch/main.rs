//! `devstack watch` on the real engine: a file of a `build:` fixture service
//! edited, the new content served through the proxy, and the old container
//! answering every request until the new one has taken over. Fails, never
//! skips, without an engine or the fixture images.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod fast;
#[path = "../support/process.rs"]
mod process;
mod sigterm;
#[path = "../support/watched.rs"]
mod watched;

use watched::*;

/// After a burst's first rebuild: at most one more event comes (the burst
/// was cut, or saves queued behind the first build), none after that.
fn at_most_one_more_rebuild(rx: &std::sync::mpsc::Receiver<String>) {
    let mut builds = 1;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        builds += 1;
        assert!(builds <= 2, "more than two rebuilds: {line}");
    }
}

#[test]
fn a_version_failing_its_health_check_never_serves_and_the_next_save_fixes_it() {
    let mut s = Stack::new("b");
    up(&s, "first");
    let rx = start_watch(&mut s);
    let listen = s.listen;
    let dockerfile = std::fs::read_to_string(s.file("Dockerfile")).unwrap();
    // The new version answers /health with 500 (and its message changes, so
    // a request reaching it would show).
    std::fs::write(
        s.file("Dockerfile"),
        format!("{dockerfile}\nENV FAIL_HEALTH=1\n"),
    )
    .unwrap();
    std::fs::write(s.file("message.txt"), "broken").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "unhealthy", "{v}");
    assert!(v["health"].as_str().unwrap_or("").contains("500"), "{v}");
    assert!(v["logs"].is_array(), "{v}");
    for _ in 0..20 {
        assert_eq!(message(listen).as_deref(), Ok("first"));
    }
    // The broken container is gone; only the old one runs.
    let names = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", "label=dev.devstack.service=web"])
        .args([
            "--filter",
            &format!("label=dev.devstack.project={}", s.name),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&names.stdout).lines().count(), 1);

    std::fs::write(s.file("Dockerfile"), dockerfile).unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    until(Duration::from_secs(10), "the fixed version answers", || {
        message(listen).as_deref() == Ok("broken")
    });
}

#[test]
fn an_edit_is_served_through_the_proxy_and_the_old_version_serves_until_then() {
    edit_served(Stack::new("a"));
}

/// The same swap through nginx: the new container is routed once nginx's
/// control port names it, the old one leaves only then, and no request
/// fails across the reloads.
#[test]
fn an_edit_is_served_through_nginx_and_the_old_version_serves_until_then() {
    edit_served(Stack::on("an", "", "", "nginx"));
}

fn edit_served(mut s: Stack) {
    up(&s, "first");
    let rx = start_watch(&mut s);
    let listen = s.listen;

    // A steady load through the proxy while the swap runs: every answer is
    // the old or the new message, never an error.
    let load = Poll::start(listen, Duration::from_millis(20));

    std::fs::write(s.file("message.txt"), "second").unwrap();
    // Editor scratch files never trigger (and must not confuse the watcher).
    std::fs::write(s.file(".message.txt.swp"), "x").unwrap();

    let v = next_event(&rx);
    assert_eq!(v["service"], "web", "{v}");
    assert_eq!(v["result"], "swapped", "{v}");
    assert!(
        v["trigger"].as_str().unwrap_or("").ends_with("message.txt"),
        "{v}"
    );
    until(Duration::from_secs(10), "the new version answers", || {
        message(listen).as_deref() == Ok("second")
    });
    let errors = unexpected(&load.finish(), &["first", "second"]);
    // The old container served until the new one was in: nothing failed
    // while the swap ran (a refused request would show here).
    assert!(errors.is_empty(), "{errors:?}");
    // One rebuild for the edit: no second event from the swap file.
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err());
    // The replaced build is removed with the old container (which stops in
    // the background): the images of this stack's web are the one its
    // container runs and the one its tag names (the same after a full
    // build; after a fast swap, the previous image and the real build
    // behind it), not one more per save.
    until(Duration::from_secs(15), "the old image is removed", || {
        let mut wanted = std::collections::BTreeSet::new();
        for name in web_names(&s) {
            wanted.insert(process::output(
                "docker",
                &["inspect", "-f", "{{.Image}}", &name],
            ));
        }
        wanted.insert(process::output(
            "docker",
            &[
                "image",
                "inspect",
                "-f",
                "{{.Id}}",
                &format!("devstack-built:{}.web", s.name),
            ],
        ));
        let images: std::collections::BTreeSet<String> = process::output(
            "docker",
            &[
                "images",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("label=devstack-test={}", s.name),
            ],
        )
        .lines()
        .map(str::to_string)
        .collect();
        let wanted: std::collections::BTreeSet<String> =
            wanted.into_iter().map(|w| w.trim().to_string()).collect();
        images == wanted
    });
    // The new container takes the usual name once the old one is gone, so
    // `up` finds what it expects and keeps it rather than recreating it.
    until(Duration::from_secs(15), "the usual name", || {
        web_names(&s) == [format!("{}-web-1", s.name)]
    });
    let serving = hostname(listen).expect("web answers");
    up(&s, "second");
    assert_eq!(
        hostname(listen),
        Some(serving),
        "up kept the swapped container"
    );
}

#[test]
fn a_foreground_up_watches_too() {
    let mut s = Stack::new("c");
    let child = s
        .cmd(&["up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("devstack up starts");
    s.watch = Some(child);
    let listen = s.listen;
    until(
        Duration::from_secs(120),
        "the first version answers",
        || message(listen).as_deref() == Ok("first"),
    );
    // The watcher starts once the stack is healthy; give notify its moment.
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(s.file("message.txt"), "second").unwrap();
    until(Duration::from_secs(180), "the edit is served", || {
        message(listen).as_deref() == Ok("second")
    });
}

#[test]
fn sync_mode_serves_the_edit_from_the_same_container_and_a_manifest_rebuilds() {
    let mut s = Stack::with(
        "d",
        "    watch: { action: sync, target: /app, rebuild_on: [requirements.txt] }",
    );
    up(&s, "first");
    let listen = s.listen;
    let before = hostname(listen).expect("a hostname");
    let rx = start_watch(&mut s);
    std::fs::write(s.file("message.txt"), "second").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "synced", "{v}");
    assert_eq!(v["build_ms"], 0, "{v}");
    until(Duration::from_secs(10), "the synced file is served", || {
        message(listen).as_deref() == Ok("second")
    });
    assert_eq!(hostname(listen), Some(before.clone()), "no new container");

    // A dependency manifest is not synced: it rebuilds and swaps.
    std::fs::write(s.file("requirements.txt"), "# none\n").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    until(Duration::from_secs(10), "the new container answers", || {
        hostname(listen).is_some_and(|h| h != before)
    });
    assert_eq!(message(listen).as_deref(), Ok("second"));
}

#[test]
fn sync_copies_a_link_out_of_the_context_as_a_link_and_skips_a_fifo() {
    let mut s = Stack::with("l", "    watch: { action: sync, target: /app }");
    up(&s, "first");
    let rx = start_watch(&mut s);
    let container = format!("{}-web-1", s.name);
    let inside = |script: &str| {
        let out = Command::new("docker")
            .args(["exec", &container, "sh", "-c", script])
            .output()
            .expect("docker exec runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    // A link in the context to a secret outside it (`~/.ssh/id_ed25519`).
    let home = tempfile::tempdir().expect("a temp dir");
    let secret = home.path().join("id_ed25519");
    std::fs::write(&secret, "PRIVATE KEY").unwrap();
    std::os::unix::fs::symlink(&secret, s.file("key")).unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "synced", "{v}");
    assert_eq!(
        inside("readlink /app/key"),
        secret.display().to_string(),
        "not a link"
    );
    let read = inside("cat /app/key 2>/dev/null");
    assert!(
        !read.contains("PRIVATE KEY"),
        "the secret was copied: {read}"
    );

    // A FIFO is skipped, named, and does not block the watcher.
    let fifo = s.file("pipe");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let v = next_event(&rx);
    assert_eq!(v["result"], "synced", "{v}");
    let skipped = v["skipped"].to_string();
    assert!(skipped.contains("pipe: a FIFO"), "{v}");
    assert_eq!(inside("test -e /app/pipe && echo there"), "");
}

#[test]
fn a_burst_of_fifty_saves_is_one_or_two_builds_and_the_last_state_wins() {
    let mut s = Stack::new("e");
    up(&s, "first");
    let listen = s.listen;
    let rx = start_watch(&mut s);
    for i in 0..50 {
        std::fs::write(s.file("message.txt"), format!("save {i}")).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    at_most_one_more_rebuild(&rx);
    until(Duration::from_secs(10), "the last save is served", || {
        message(listen).as_deref() == Ok("save 49")
    });
}

/// A second service, `api`, from the prebuilt fixture app, routed by host.
const API: &str = "  api:
    image: devstack-fixtures/app
    port: 8080
    env: { SERVICE: api, VERSION: \"1\" }
    health: { http: /health, interval: 500ms, retries: 2, start_period: 3s }
    restart: \"no\"
    stop_grace: 1s
    routes: [api.test.localhost]";

/// GET / of `host` through the proxy: (hostname, version).
fn identity(listen: SocketAddr, host: &str) -> Option<(String, String)> {
    let v = get(listen, host).ok()?;
    Some((
        v["hostname"].as_str()?.to_string(),
        v["version"].as_str()?.to_string(),
    ))
}

#[test]
fn a_stack_file_edit_redeploys_only_the_changed_service() {
    let mut s = Stack::full("f", "", API);
    up(&s, "first");
    let listen = s.listen;
    until(Duration::from_secs(30), "api answers", || {
        identity(listen, "api.test.localhost").is_some()
    });
    let web_before = hostname(listen).expect("web answers");
    let rx = start_watch(&mut s);
    let path = s.dir.path().join("devstack.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, yaml.replace("VERSION: \"1\"", "VERSION: \"2\"")).unwrap();
    let v = next_event(&rx);
    assert_eq!(v["service"], "api", "{v}");
    assert_eq!(v["result"], "swapped", "{v}");
    until(Duration::from_secs(10), "the new api answers", || {
        identity(listen, "api.test.localhost").is_some_and(|(_, version)| version == "2")
    });
    // web's configuration did not change: same container, no event for it.
    assert_eq!(hostname(listen), Some(web_before));
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err());
}

/// Regression (issue 10): a container holding the stack's directory could
/// add a service mounting the Docker socket, and the watcher started it.
/// The edit is refused and nothing starts; once the mount is gone, the same
/// service starts (as new, so the refused edit was never applied).
#[test]
fn a_stack_file_edit_adding_a_host_takeover_mount_is_not_applied() {
    let mut s = Stack::new("k");
    up(&s, "first");
    let rx = start_watch(&mut s);
    let path = s.dir.path().join("devstack.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let intruder = "  intruder:
    image: devstack-fixtures/busybox
    command: sleep 3600
    stop_grace: 1s
    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]
";
    let with = |service: &str| yaml.replacen("proxy:\n", &format!("{service}proxy:\n"), 1);
    std::fs::write(&path, with(intruder)).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "the edit mounting the Docker socket was applied"
    );
    let intruders = || {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                "label=dev.devstack.service=intruder",
            ])
            .args([
                "--filter",
                &format!("label=dev.devstack.project={}", s.name),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(intruders(), 0, "a container was made for the refused edit");
    let harmless = intruder.replace(
        "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
        "",
    );
    std::fs::write(&path, with(&harmless)).unwrap();
    let v = next_event(&rx);
    assert_eq!(v["service"], "intruder", "{v}");
    assert_eq!(v["result"], "started", "{v}");
    assert_eq!(intruders(), 1);
}

#[test]
fn a_save_during_a_build_abandons_it_and_only_the_last_state_is_deployed() {
    let mut s = Stack::new("g");
    // A slow step after the copy: every edit takes seconds to build.
    let dockerfile = std::fs::read_to_string(s.file("Dockerfile")).unwrap();
    std::fs::write(
        s.file("Dockerfile"),
        dockerfile.replace("COPY . /app/\n", "COPY . /app/\nRUN sleep 4\n"),
    )
    .unwrap();
    up(&s, "first");
    let listen = s.listen;
    let rx = start_watch(&mut s);
    // Everything served meanwhile: "second" must never be among it.
    let poll = Poll::start(listen, Duration::from_millis(20));
    std::fs::write(s.file("message.txt"), "second").unwrap();
    // Past the debounce, into the build's sleep.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(s.file("message.txt"), "third").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    assert!(v["superseded"].as_u64().unwrap_or(0) >= 1, "{v}");
    until(Duration::from_secs(10), "the last save is served", || {
        message(listen).as_deref() == Ok("third")
    });
    // No second rebuild: the abandoned build's state is never deployed.
    assert!(rx.recv_timeout(Duration::from_secs(3)).is_err());
    let seen: std::collections::BTreeSet<String> =
        poll.finish().into_iter().filter_map(Result::ok).collect();
    assert!(!seen.contains("second"), "a stale image served: {seen:?}");
    assert!(seen.contains("first") && seen.contains("third"), "{seen:?}");
}

#[test]
fn a_stack_file_edit_starts_new_units_removes_dropped_ones_and_routes_them() {
    let api = API;
    let mut s = Stack::full("h", "", api);
    up(&s, "first");
    let listen = s.listen;
    until(Duration::from_secs(30), "api answers", || {
        identity(listen, "api.test.localhost").is_some()
    });
    let rx = start_watch(&mut s);
    let path = s.dir.path().join("devstack.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    // api goes; shop comes, with a route of its own; web ignores *.log from now on.
    let edited = yaml.replace(api, &api.replace("api", "shop")).replace(
        "    routes: [web.test.localhost]",
        "    routes: [web.test.localhost]\n    watch: { ignore: [\"*.log\"] }",
    );
    std::fs::write(&path, edited).unwrap();
    let mut results = std::collections::BTreeMap::new();
    while results.len() < 2 {
        let v = next_event(&rx);
        results.insert(v["service"].as_str().unwrap_or("").to_string(), v);
    }
    assert_eq!(results["shop"]["result"], "started", "{results:?}");
    assert_eq!(results["api"]["result"], "removed", "{results:?}");
    // The router follows the stack file: the new route is served, the old one is gone.
    until(Duration::from_secs(15), "shop is routed", || {
        identity(listen, "shop.test.localhost").is_some()
    });
    until(Duration::from_secs(15), "api is gone", || {
        identity(listen, "api.test.localhost").is_none()
    });
    // The new watch rules apply: an ignored file changes nothing...
    std::fs::write(s.file("debug.log"), "noise").unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "an ignored file rebuilt"
    );
    // ...and a real edit still rebuilds.
    std::fs::write(s.file("message.txt"), "second").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
}

#[test]
fn a_checkout_of_hundreds_of_files_and_a_replaced_directory_is_one_rebuild() {
    let mut s = Stack::new("i");
    let pages = s.file("pages");
    std::fs::create_dir(&pages).unwrap();
    for i in 0..50 {
        std::fs::write(pages.join(format!("p{i}.txt")), "old").unwrap();
    }
    up(&s, "first");
    let listen = s.listen;
    let rx = start_watch(&mut s);
    // What a `git checkout` of another branch does: a directory replaced
    // wholesale, hundreds of files written, one renamed over another.
    std::fs::remove_dir_all(&pages).unwrap();
    std::fs::create_dir(&pages).unwrap();
    for i in 0..300 {
        std::fs::write(pages.join(format!("q{i}.txt")), format!("new {i}")).unwrap();
    }
    std::fs::write(s.file("message.tmp"), "checked out").unwrap();
    std::fs::rename(s.file("message.tmp"), s.file("message.txt")).unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    at_most_one_more_rebuild(&rx);
    until(
        Duration::from_secs(10),
        "the checked-out state is served",
        || message(listen).as_deref() == Ok("checked out"),
    );
    // The watcher survived it all: the replaced directory is watched again.
    std::fs::write(pages.join("q0.txt"), "again").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    assert!(
        v["trigger"].as_str().unwrap_or("").ends_with("q0.txt"),
        "{v}"
    );
}

#[test]
fn a_build_that_fails_names_its_step_and_the_running_version_stays() {
    let mut s = Stack::new("j");
    up(&s, "first");
    let listen = s.listen;
    let rx = start_watch(&mut s);
    let dockerfile = std::fs::read_to_string(s.file("Dockerfile")).unwrap();
    std::fs::write(
        s.file("Dockerfile"),
        format!("{dockerfile}RUN echo this step is broken && false\n"),
    )
    .unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "build-failed", "{v}");
    let why = v["message"].as_str().unwrap_or("");
    assert!(why.contains("Step"), "the failing step is named: {v}");
    assert!(why.contains("this step is broken"), "{v}");
    for _ in 0..10 {
        assert_eq!(message(listen).as_deref(), Ok("first"));
    }
    std::fs::write(s.file("Dockerfile"), dockerfile).unwrap();
    std::fs::write(s.file("message.txt"), "repaired").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    until(
        Duration::from_secs(10),
        "the repaired version answers",
        || message(listen).as_deref() == Ok("repaired"),
    );
}

#[test]
fn a_second_watcher_of_the_same_project_is_refused() {
    let mut s = Stack::new("k");
    let _rx = start_watch(&mut s);
    let first = s.watch.as_ref().map(|w| w.id()).expect("the first watcher");
    let second = s.cmd(&["watch"]).output().expect("devstack watch runs");
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already watched") && stderr.contains(&first.to_string()),
        "{stderr}"
    );
}

#[test]
fn two_replicas_are_swapped_one_at_a_time_without_a_failed_request() {
    two_replicas_swapped(Stack::with("l", "    replicas: 2"));
}

#[test]
fn two_replicas_are_swapped_through_nginx_without_a_failed_request() {
    two_replicas_swapped(Stack::on("ln", "    replicas: 2", "", "nginx"));
}

fn two_replicas_swapped(mut s: Stack) {
    up(&s, "first");
    let listen = s.listen;
    let rx = start_watch(&mut s);
    let load = Poll::start(listen, Duration::from_millis(10));
    std::fs::write(s.file("message.txt"), "second").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    assert_eq!(
        v["containers"],
        serde_json::json!([format!("{}-web-1", s.name), format!("{}-web-2", s.name)]),
        "{v}"
    );
    // Both replicas serve the new version (round robin alternates them).
    let mut hosts = std::collections::BTreeSet::new();
    until(Duration::from_secs(10), "both new replicas answer", || {
        if message(listen).as_deref() == Ok("second") {
            hosts.extend(hostname(listen));
        }
        hosts.len() == 2
    });
    let errors = unexpected(&load.finish(), &["first", "second"]);
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    until(Duration::from_secs(15), "the old replicas are gone", || {
        web_names(&s).len() == 2
    });
}

#[test]
fn a_stack_file_edit_of_the_replica_count_scales_without_a_swap() {
    let mut s = Stack::new("m");
    up(&s, "first");
    let listen = s.listen;
    let before = hostname(listen).expect("web answers");
    let rx = start_watch(&mut s);
    let path = s.dir.path().join("devstack.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        yaml.replace("    port: 8080\n", "    port: 8080\n    replicas: 2\n"),
    )
    .unwrap();
    let v = next_event(&rx);
    assert_eq!(v["service"], "web", "{v}");
    assert_eq!(v["result"], "started", "{v}");
    assert_eq!(web_names(&s).len(), 2);
    // The first replica is the same container; a second one joined it.
    let mut hosts = std::collections::BTreeSet::new();
    until(Duration::from_secs(10), "both replicas answer", || {
        hosts.extend(hostname(listen));
        hosts.len() == 2
    });
    assert!(hosts.contains(&before), "{hosts:?}");
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err(), "no swap");
}

/// The pid of the project's routing process, from its state file.
fn routing_pid(project: &str) -> Option<u32> {
    let file = devstack::controller::state::state_root()
        .join(project)
        .join("routing.json");
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

#[test]
fn watch_starts_a_routing_agent_that_died_before_it_swaps() {
    let mut s = Stack::new("n");
    up(&s, "first");
    let listen = s.listen;
    let agent = routing_pid(&s.name).expect("the routing agent's state");
    assert!(process::command_ok("kill", &["-9", &agent.to_string()]));
    std::thread::sleep(Duration::from_millis(200));
    // The load runs while the agent starts again too: its fresh etcd must
    // not take the serving stack out of the proxy meanwhile.
    let load = Poll::start(listen, Duration::from_millis(20));
    let rx = start_watch(&mut s);
    let restarted = routing_pid(&s.name).expect("a routing agent again");
    assert_ne!(restarted, agent);
    std::fs::write(s.file("message.txt"), "second").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    until(Duration::from_secs(10), "the new version answers", || {
        message(listen).as_deref() == Ok("second")
    });
    let errors = unexpected(&load.finish(), &["first", "second"]);
    assert!(errors.is_empty(), "{errors:?}");
}

/// Runs `devstack exec web -- ARGS` in the stack's directory.
fn exec_web(s: &Stack, args: &[&str]) -> std::process::Output {
    s.cmd(&["exec", "web", "--"])
        .args(args)
        .output()
        .expect("devstack exec runs")
}

#[test]
fn a_swapped_replica_keeps_the_anonymous_volumes_of_the_one_it_replaces() {
    let mut s = Stack::new("v");
    // The image declares a VOLUME, as many do for caches and uploads: the
    // engine gives each container an anonymous volume there.
    let dockerfile = std::fs::read_to_string(s.file("Dockerfile")).unwrap();
    std::fs::write(
        s.file("Dockerfile"),
        format!("{dockerfile}\nVOLUME /cache\n"),
    )
    .unwrap();
    // What this test checks does not depend on a quick start: room for a busy machine.
    let stack = s.dir.path().join("devstack.yaml");
    let yaml = std::fs::read_to_string(&stack).unwrap();
    std::fs::write(
        &stack,
        yaml.replace("start_period: 3s", "start_period: 60s"),
    )
    .unwrap();
    up(&s, "first");
    let wrote = exec_web(&s, &["sh", "-c", "echo kept > /cache/file"]);
    assert!(
        wrote.status.success(),
        "{}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let rx = start_watch(&mut s);
    std::fs::write(s.file("message.txt"), "second").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    let listen = s.listen;
    until(Duration::from_secs(10), "the new version answers", || {
        message(listen).as_deref() == Ok("second")
    });
    let read = exec_web(&s, &["cat", "/cache/file"]);
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "kept",
        "the new container did not get the old one's volume: {}",
        String::from_utf8_lossy(&read.stderr)
    );
}
