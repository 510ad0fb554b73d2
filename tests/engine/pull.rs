//! Pulling what production runs: private tags are pulled with the user's
//! Docker credentials (`DOCKER_CONFIG`'s `config.json`), against Debian's
//! `docker-registry` started here on loopback with htpasswd authentication,
//! the fixture image pushed into it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

const USER: &str = "deployer";
const PASSWORD: &str = "s3cret-pull";

/// A private registry on a loopback port, removed (process and data) on drop.
struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils) runs");
        assert!(htpasswd.status.success(), "htpasswd makes a bcrypt entry");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: devstack-test\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's docker-registry runs");
        let r = Registry { child, addr, dir };
        assert!(
            eventually(Duration::from_secs(20), || std::net::TcpStream::connect(
                &r.addr
            )
            .is_ok()),
            "the registry listens on {}",
            r.addr
        );
        r
    }

    /// A Docker client config directory holding `user:password` for this registry.
    fn client_config(&self, name: &str, user: &str, password: &str) -> std::path::PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            dir.join("config.json"),
            format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
                self.addr
            ),
        )
        .unwrap();
        dir
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn docker_with(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

#[test]
fn a_private_tag_is_pulled_with_the_users_docker_credentials() {
    let registry = Registry::start();
    let good = registry.client_config("good", USER, PASSWORD);
    let wrong = registry.client_config("wrong", USER, "not-the-password");
    let none = registry.dir.path().join("none");
    std::fs::create_dir_all(&none).unwrap();
    let image = format!("{}/team/web:git-3f2a9c1", registry.addr);
    // Publish the fixture app as production would have it, then forget the
    // tag here so `up` has to pull it.
    docker(&["tag", "devstack-fixtures/app", &image]);
    let pushed = docker_with(&good, &["push", &image]);
    assert!(
        pushed.status.success(),
        "push to the test registry: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    docker(&["rmi", &image]);

    let p = Project::inline(
        "pull",
        &format!(
            "name: pull\nservices:\n  web:\n    image: {image}\n    port: 8080\n    env: {{ SERVICE: web }}\n    health: {{ http: /health }}\n"
        ),
    );
    // Nothing configured, and a wrong password: refused, named, nothing started.
    for (config, says) in [
        (&none, "no credentials for"),
        (&wrong, "refused the credentials"),
    ] {
        let out = p
            .command(&["up", "--wait"])
            .env("DOCKER_CONFIG", config)
            .output()
            .expect("devstack runs");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "exit 5: {err}");
        assert!(err.contains(&image), "the image is named: {err}");
        assert!(err.contains(says), "says what was sent: {err}");
        assert!(
            !err.contains("not-the-password") && !err.contains(PASSWORD),
            "no password is echoed: {err}"
        );
        assert!(
            p.containers().iter().all(|c| c.service != "web"),
            "nothing started"
        );
    }
    // The right credentials: pulled, started, healthy.
    let out = p
        .command(&["up", "--wait"])
        .env("DOCKER_CONFIG", &good)
        .output()
        .expect("devstack runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !docker(&["images", "-q", &image]).is_empty(),
        "the image was pulled"
    );
    drop(p);
    docker(&["rmi", &image]);
}

/// Removes the image tags a test made, even when it fails half-way.
struct Tags(Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}

/// The platform of an image as the engine holds it: `os/arch`.
fn platform_of(image: &str) -> String {
    docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        image,
    ])
}

/// Issue 11 item 5: `platform:` pulls what production runs (an amd64-only
/// image on an arm64 laptop), from a multi-platform index as from a
/// single-platform image, and says so when the registry has no such image.
/// Only amd64 runs on this machine; the arm64 image is a one-file image
/// marked arm64, pulled and inspected but never run.
#[test]
fn the_platform_a_stack_names_is_the_one_pulled_and_run() {
    let registry = Registry::start();
    let config = registry.client_config("good", USER, PASSWORD);
    let repo = format!("{}/team/web", registry.addr);
    let (amd64, arm64, index) = (
        format!("{repo}:git-1-amd64"),
        format!("{repo}:git-1-arm64"),
        format!("{repo}:git-1"),
    );
    let local_arm64 = format!("devstack-test-arm64:{}", std::process::id());
    let _tags = Tags(vec![
        amd64.clone(),
        arm64.clone(),
        index.clone(),
        local_arm64.clone(),
    ]);
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\nCMD [\"/hello\"]\n",
    )
    .unwrap();
    let built = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "--platform",
            "linux/arm64",
            "-t",
            &local_arm64,
        ])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert_eq!(platform_of(&local_arm64), "linux/arm64");
    docker(&["tag", "devstack-fixtures/app", &amd64]);
    docker(&["tag", &local_arm64, &arm64]);
    for tag in [&amd64, &arm64] {
        let pushed = docker_with(&config, &["push", "-q", tag]);
        assert!(
            pushed.status.success(),
            "{}",
            String::from_utf8_lossy(&pushed.stderr)
        );
    }
    for args in [
        vec!["manifest", "create", "--insecure", &index, &amd64, &arm64],
        vec!["manifest", "push", "--insecure", &index],
    ] {
        let out = docker_with(&config, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    docker(&["rmi", &amd64, &arm64]);

    let stack = |image: &str, platform: &str| {
        format!(
            "name: platform\nservices:\n  web:\n    image: {image}\n{platform}    port: 8080\n    env: {{ SERVICE: web }}\n    health: {{ http: /health }}\n"
        )
    };
    let p = Project::inline("platform", &stack(&index, "    platform: linux/arm64\n"));
    let write = |text: String| std::fs::write(&p.files[0], text).unwrap();
    let up = || {
        p.command(&["up", "--wait", "--timeout", "60s"])
            .env("DOCKER_CONFIG", &config)
            .output()
            .unwrap()
    };
    // linux/arm64: the index's arm64 entry is pulled (it cannot run here:
    // the pull succeeded, the start did not).
    let out = up();
    println!("arm64 up: {:?}\n{}", out.status.code(), stderr(&out));
    assert!(
        !out.status.success() && out.status.code() != Some(5),
        "pulled, not started: {}",
        stderr(&out)
    );
    assert_eq!(
        platform_of(&index),
        "linux/arm64",
        "the index's arm64 image"
    );

    // linux/amd64: the arm64 image present under that tag is not it, so
    // `up` pulls the amd64 one, and runs it.
    write(stack(&index, "    platform: linux/amd64\n"));
    let out = up();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(platform_of(&index), "linux/amd64", "pulled again for amd64");
    let first = p.containers();
    assert_eq!(first.len(), 1, "{first:?}");

    // The same image without a platform: a container made another way, so
    // it is recreated (the platform is part of the config hash).
    write(stack(&index, ""));
    let out = up();
    assert!(out.status.success(), "{}", stderr(&out));
    let second = p.containers();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first[0].id, second[0].id, "a changed platform recreates");

    // A platform the index does not list, and one a single-platform image
    // is not: refused at the pull (exit 5), naming the image and platform,
    // and nothing is started.
    for (image, platform, says) in [
        (&index, "linux/s390x", "linux/s390x"),
        (
            &arm64,
            "linux/amd64",
            "for linux/arm64 only, not for linux/amd64",
        ),
    ] {
        write(stack(image, &format!("    platform: {platform}\n")));
        let out = up();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "exit 5: {err}");
        assert!(err.contains(image.as_str()), "the image is named: {err}");
        assert!(err.contains(says), "says which platform: {err}");
    }
    assert_eq!(
        p.containers()
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        vec![second[0].id.clone()],
        "nothing new was started"
    );
}

/// Runs the demo's image decision (stacks/demo/choose-images.sh, what
/// `just up` runs first) with the probe pointed at `registry`; returns the
/// stack files it chose and what it said.
fn choose_demo_images(registry: &str) -> (Vec<std::path::PathBuf>, String) {
    let out = Command::new("bash")
        .arg(repo().join("stacks/demo/choose-images.sh"))
        .arg("--no-build")
        .env("DEVSTACK_DEMO_REGISTRY", registry)
        .env_remove("DEVSTACK_DEMO_IMAGES")
        .output()
        .expect("bash runs");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    let files = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(std::path::PathBuf::from)
        .collect();
    (files, said)
}

/// Issue 11 item 6: `just up` on an ordinary laptop. Where a registry
/// answers (here the loopback one, which says 401 as Docker Hub does), the
/// demo runs on the public images it names; where none does (a closed
/// port), on the local replicas, and the demo then comes up and routes.
#[test]
fn the_demo_runs_on_public_images_where_a_registry_answers_and_on_replicas_where_none_does() {
    let demo = repo().join("stacks/demo/devstack.yaml");
    let overlay = repo().join("stacks/demo/replicas.yaml");
    let registry = Registry::start();
    let (files, said) = choose_demo_images(&format!("http://{}", registry.addr));
    assert_eq!(files, vec![demo.clone()], "{said}");
    assert!(said.contains("public images"), "{said}");
    assert!(said.contains("HTTP 401"), "{said}");
    drop(registry);

    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (files, said) = choose_demo_images(&format!("http://{closed}"));
    assert_eq!(files, vec![demo, overlay], "{said}");
    assert!(said.contains("local replicas"), "{said}");
    assert!(said.contains("nothing accepts the connection"), "{said}");

    // What `just up` then runs here: the demo on the replicas, every route
    // answered by the app behind it.
    // Declared before the project, so dropped after its `down`.
    let _built = Tags(vec!["demo/api:dev".into()]);
    let mut p = Project::new("demo", "basic.yaml");
    p.files = files;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let out = p
        .command(&["up", "--wait", "--timeout", "240s"])
        .env("DEMO_PORT", port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for (host, path, says) in [
        ("demo.localhost", "/", "\"service\": \"web\""),
        ("api.demo.localhost", "/", "\"service\": \"api\""),
        ("demo.localhost", "/api", "\"service\": \"api\""),
        ("demo.localhost", "/redis", "+PONG"),
    ] {
        let answer = get_through(port, host, path);
        assert!(
            answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
            "{host}{path}: {answer}"
        );
        assert!(answer.contains(says), "{host}{path}: {answer}");
    }
}
