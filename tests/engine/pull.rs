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
