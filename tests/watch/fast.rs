//! The fast path on the real engine (fixtures/apps/overlay): a save whose
//! files reach the image only through COPY steps after the final stage's
//! last RUN is placed on the previous image, and the container holds the
//! same files, owners, modes and times as the real build behind it (in a
//! multi-stage Dockerfile); a file read by a RUN takes the full build.
//! (A file another stage reads is the unit tests' case:
//! `watcher::dockerfile::tests`.)

use super::*;

/// The stack's web service built from fixtures/apps/overlay (with the
/// web fixture's app.py), each stage labelled for the clean-up.
fn overlay_stack(tag: &str) -> Stack {
    let s = Stack::new(tag);
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apps/overlay");
    let dockerfile = std::fs::read_to_string(fixture.join("Dockerfile")).unwrap();
    let labelled: String = dockerfile
        .lines()
        .flat_map(|l| {
            let mut out = vec![l.to_string()];
            if l.starts_with("FROM ") {
                out.push(format!("LABEL devstack-test={}", s.name));
            }
            out
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(s.file("Dockerfile"), labelled).unwrap();
    for f in [
        ".dockerignore",
        "requirements.txt",
        "gen/version.txt",
        "static/index.html",
    ] {
        let to = s.file(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture.join(f), to).unwrap();
    }
    s
}

/// `find` over the copied trees of `image`, run with `docker run` (or in
/// the running container `exec`): path, type, mode, owner, group, size,
/// mtime, link target, and a checksum of each file.
fn listing(how: &[&str]) -> String {
    let script =
        "find /srv/static /app -xdev -mindepth 1 -printf '%p %y %m %U:%G %s %T@ %l\\n' | sort; \
                  find /srv/static /app -xdev -type f | sort | xargs md5sum";
    let out = Command::new("docker")
        .args(how)
        .args(["sh", "-c", script])
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inside(container: &str, script: &str) -> String {
    process::output("docker", &["exec", container, "sh", "-c", script])
}

#[test]
fn a_fast_swap_holds_what_the_real_build_holds_and_a_file_a_step_reads_is_built() {
    let mut s = overlay_stack("o");
    up(&s, "first");
    let listen = s.listen;
    let rx = start_watch(&mut s);

    // A new file in a new directory under the COPY --chown, the code's
    // message, and a file .dockerignore leaves out.
    std::fs::create_dir(s.file("static/css")).unwrap();
    std::fs::write(s.file("static/css/site.css"), "body {}\n").unwrap();
    std::fs::write(s.file("message.txt"), "second").unwrap();
    std::fs::write(s.file("key.secret"), "PRIVATE").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    assert_eq!(v["overlay"], 2, "both files placed: {v}");
    until(Duration::from_secs(10), "the new version answers", || {
        message(listen).as_deref() == Ok("second")
    });
    let serving = hostname(listen).expect("web answers");

    // `up` waits for the build behind the swap, then keeps its container.
    up(&s, "second");
    assert_eq!(
        hostname(listen),
        Some(serving),
        "up kept the fast container"
    );
    let container = format!("{}-web-1", s.name);
    until(Duration::from_secs(15), "the usual name", || {
        web_names(&s) == [container.clone()]
    });
    // What the real build holds, as the tag names it now.
    let image = format!("devstack-built:{}.web", s.name);
    let built = listing(&["run", "--rm", "--entrypoint", "", &image]);
    let fast = listing(&["exec", &container]);
    assert_eq!(fast, built, "the fast container differs from the build");
    assert!(
        built.contains("/srv/static/css/site.css f 644 1234:2345 8 1153704088"),
        "{built}"
    );
    assert!(built.contains("/srv/static/css d 755 1234:2345"), "{built}");
    assert!(built.contains("/app/message.txt f 644 0:0 6 "), "{built}");
    assert_eq!(
        inside(&container, "test -e /app/key.secret && echo there"),
        ""
    );
    // No warning came from the comparison behind.
    assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());

    // requirements.txt is read by the RUN after its COPY: the full build.
    std::fs::write(s.file("requirements.txt"), "# still none\n").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    let why = v["full_build"].as_str().unwrap_or("");
    assert!(why.contains("before a RUN"), "{v}");
    until(Duration::from_secs(15), "the RUN saw the new file", || {
        web_names(&s).len() == 1 && inside(&web_names(&s)[0], "cat /app/deps.txt") == "# still none"
    });
    // After a full build the next save is fast again, on the new image.
    std::fs::write(s.file("message.txt"), "third").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["overlay"], 1, "{v}");
    until(Duration::from_secs(10), "the third version answers", || {
        message(listen).as_deref() == Ok("third")
    });
}
