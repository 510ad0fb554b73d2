//! Which host paths a bind mount may not reach without `allow_host_access`:
//! those that hand a container the machine (the Docker socket, `/`, system
//! directories, the user's home and keys).
//!
//! Anyone who can write the stack file (a container holding the stack's
//! directory read-write, through `devstack watch`) could otherwise mount the
//! engine's socket and start privileged containers. A source is judged after
//! its symlinks are resolved, so `/var/run/docker.sock`, `/run`, and a link
//! to either are all the same path here.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Trees no bind mount may reach into: the engine's sockets and state, the
/// kernel's interfaces, the system's programs, configuration and root's home.
/// `/var/run` is `/run` once resolved; it is listed for hosts where it is not.
const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/var/run",
];

/// Entries of the user's home that hold their keys and the engine's access:
/// SSH and GnuPG keys, and `~/.docker` (registry credentials, contexts, and
/// Docker Desktop's socket).
const HOME_TREES: &[&str] = &[".docker", ".gnupg", ".ssh"];

/// What the check needs from the environment.
#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    /// The user's home directory, resolved.
    home: Option<PathBuf>,
    /// Sockets of the engine: the default one, and those named by the
    /// environment (`DOCKER_HOST=unix://...`, the rootless socket under
    /// `XDG_RUNTIME_DIR`), resolved.
    sockets: Vec<PathBuf>,
}

impl HostPaths {
    /// The paths named by these environment variables (the process's, or a test's).
    pub fn from_env(env: &HashMap<String, String>) -> HostPaths {
        let home = env
            .get("HOME")
            .filter(|h| h.starts_with('/'))
            .map(|h| real_path(Path::new(h)));
        // The engine's default socket, as `engine` connects to it.
        let mut sockets = vec![real_path(Path::new("/var/run/docker.sock"))];
        if let Some(path) = env
            .get("DOCKER_HOST")
            .and_then(|h| h.strip_prefix("unix://"))
            .filter(|p| p.starts_with('/'))
        {
            sockets.push(real_path(Path::new(path)));
        }
        if let Some(dir) = env.get("XDG_RUNTIME_DIR").filter(|d| d.starts_with('/')) {
            sockets.push(real_path(&Path::new(dir).join("docker.sock")));
        }
        HostPaths { home, sockets }
    }

    /// Why mounting `source` (absolute, as written) would hand over the host,
    /// or `None` when it does not.
    pub fn refusal(&self, source: &Path) -> Option<String> {
        let real = real_path(source);
        let shown = if real == source {
            format!("`{}`", source.display())
        } else {
            format!("`{}` (which is `{}`)", source.display(), real.display())
        };
        if real == Path::new("/") {
            return Some(format!("{shown} is the host's whole filesystem"));
        }
        if let Some(socket) = self.sockets.iter().find(|s| s.starts_with(&real)) {
            return Some(format!(
                "{shown} holds the Docker engine's socket {}",
                socket.display()
            ));
        }
        for tree in SYSTEM_TREES.iter().map(Path::new) {
            if real.starts_with(tree) {
                return Some(format!(
                    "{shown} is in {}, a system directory",
                    tree.display()
                ));
            }
            if tree.starts_with(&real) {
                return Some(format!(
                    "{shown} holds {}, a system directory",
                    tree.display()
                ));
            }
        }
        if let Some(home) = &self.home {
            if home.starts_with(&real) {
                return Some(format!(
                    "{shown} holds the home directory {}",
                    home.display()
                ));
            }
            for tree in HOME_TREES.iter().map(|t| home.join(t)) {
                if real.starts_with(&tree) {
                    return Some(format!("{shown} is in {}", tree.display()));
                }
            }
        }
        None
    }
}

/// `path` with its symlinks resolved as far as it exists; the part that does
/// not exist yet is appended as written (Docker would create it there).
pub fn real_path(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in missing.iter().rev() {
                out.push(part);
            }
            return fold(&out);
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return fold(path),
        }
    }
}

/// `.` and `..` removed without touching the disk.
pub(super) fn fold(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(home: &Path, docker_host: Option<&str>) -> HostPaths {
        let mut env = HashMap::new();
        env.insert("HOME".to_string(), home.display().to_string());
        if let Some(h) = docker_host {
            env.insert("DOCKER_HOST".to_string(), h.to_string());
        }
        HostPaths::from_env(&env)
    }

    /// Each source, refused (with a fragment of why) or allowed.
    fn check(host: &HostPaths, source: &Path, expected: Option<&str>) {
        match (host.refusal(source), expected) {
            (None, None) => {}
            (Some(why), Some(fragment)) => {
                assert!(why.contains(fragment), "{}: {why}", source.display())
            }
            (got, want) => panic!("{}: got {got:?}, want {want:?}", source.display()),
        }
    }

    #[test]
    fn system_paths_the_socket_and_home_are_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let home = scratch.path().join("home/dev");
        std::fs::create_dir_all(home.join("code/shop/data")).unwrap();
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let home = real_path(&home);
        let h = host(&home, None);
        check(&h, Path::new("/"), Some("whole filesystem"));
        let engine = Some("Docker engine's socket");
        check(&h, Path::new("/var/run/docker.sock"), engine);
        check(&h, Path::new("/run/docker.sock"), engine);
        check(&h, Path::new("/var/run"), engine);
        check(&h, Path::new("/run"), engine);
        let containerd = Path::new("/run/containerd/containerd.sock");
        check(&h, containerd, Some("is in /run, a system directory"));
        check(
            &h,
            Path::new("/var/run/user/1000"),
            Some("system directory"),
        );
        check(&h, Path::new("/var"), Some("holds /var/lib/"));
        check(&h, Path::new("/proc/1/root"), Some("is in /proc"));
        check(&h, Path::new("/sys"), Some("is in /sys"));
        check(&h, Path::new("/dev/sda"), Some("is in /dev"));
        check(&h, Path::new("/etc/shadow"), Some("is in /etc"));
        check(&h, Path::new("/root/.ssh"), Some("is in /root"));
        check(&h, Path::new("/usr/bin"), Some("is in /usr"));
        check(&h, &home, Some("holds the home directory"));
        check(&h, home.parent().unwrap(), Some("holds the home directory"));
        check(&h, &home.join(".ssh"), Some(".ssh"));
        check(&h, &home.join(".docker/run/docker.sock"), Some(".docker"));
        check(&h, &home.join("code/shop/data"), None);
        check(&h, &home.join("code/shop/not-yet"), None);
        check(&h, Path::new("/srv/data"), None);
        check(&h, Path::new("/tmp/cache"), None);
    }

    #[test]
    fn a_source_is_judged_after_its_links_are_resolved() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = real_path(scratch.path());
        let h = host(&dir.join("home"), None);
        std::os::unix::fs::symlink("/var/run", dir.join("runlink")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("rootlink")).unwrap();
        check(&h, &dir.join("rootlink"), Some("whole filesystem"));
        check(
            &h,
            &dir.join("runlink/docker.sock"),
            Some("(which is `/run/docker.sock`) holds the Docker engine's socket"),
        );
        check(&h, &dir.join("rootlink/etc/../proc"), Some("/proc"));
        // A link to a plain directory is that directory.
        std::fs::create_dir(dir.join("data")).unwrap();
        std::os::unix::fs::symlink(dir.join("data"), dir.join("datalink")).unwrap();
        check(&h, &dir.join("datalink"), None);
    }

    #[test]
    fn the_socket_named_by_docker_host_is_refused_wherever_it_is() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = real_path(scratch.path());
        let socket = dir.join("engine/docker.sock");
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        std::fs::write(&socket, "").unwrap();
        std::os::unix::fs::symlink(&socket, dir.join("link.sock")).unwrap();
        let h = host(
            &dir.join("home"),
            Some(&format!("unix://{}", socket.display())),
        );
        check(&h, &socket, Some("Docker engine's socket"));
        check(&h, &dir.join("engine"), Some("Docker engine's socket"));
        check(&h, &dir.join("link.sock"), Some("Docker engine's socket"));
        check(&h, &dir.join("other"), None);
        // A tcp engine names no socket.
        let h = host(&dir.join("home"), Some("tcp://127.0.0.1:2375"));
        check(&h, &socket, None);
    }
}
