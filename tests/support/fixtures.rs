//! The engine answering and the local fixture images being built: what
//! every test binary that runs containers checks first. Several binaries
//! may start at once, so builds are serialised by a lock file they share.

use std::path::Path;
use std::process::Command;

/// Panics, saying so, when no Docker engine answers.
pub fn engine_answers() {
    let ping = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match ping {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker engine answered; these tests need one:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run the docker CLI ({e}); these tests need a Docker engine"),
    }
}

/// Runs `f` holding the lock every test binary takes before it builds
/// fixture images; released when `f` returns.
pub fn under_build_lock<T>(f: impl FnOnce() -> T) -> T {
    let lock_path = std::env::temp_dir().join("devstack-fixture-images.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .expect("a lock file in the temp dir");
    // SAFETY: flock on a file descriptor we own; released when `lock` drops.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "cannot lock {}", lock_path.display());
    let result = f();
    drop(lock);
    result
}

/// `fixtures/images/build.sh IMAGE...` (every image when `images` is empty);
/// panics when it fails.
pub fn build(repo: &Path, images: &[&str]) {
    let status = Command::new("bash")
        .arg(repo.join("fixtures/images/build.sh"))
        .args(images)
        .status()
        .expect("fixtures/images/build.sh runs");
    assert!(
        status.success(),
        "fixtures/images/build.sh {images:?} failed"
    );
}
