//! Where a running project's routing path can be found by other commands
//! (`routes`, `etcd ls`, `down`): a small JSON file per project under
//! `$XDG_STATE_HOME/devstack/<project>/routing.json` (or
//! `~/.local/state/...`), written by whoever runs the path (`up` in the
//! foreground, or `devstack agent` for a detached stack).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a running routing path tells other commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingState {
    /// The process running it (a `devstack up` or `devstack agent`).
    pub pid: u32,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Where the proxy serves every route.
    pub listen: String,
}

/// The state directory of a project.
pub fn state_dir(project: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("devstack").join(project)
}

fn file(project: &str) -> PathBuf {
    state_dir(project).join("routing.json")
}

/// Records the state; written to a temporary file and renamed, so a reader
/// never sees half of it.
pub fn write(project: &str, state: &RoutingState) -> std::io::Result<()> {
    let dir = state_dir(project);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("routing.json.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())?;
    std::fs::rename(&tmp, file(project))
}

/// The state of a project whose routing process still runs.
pub fn read(project: &str) -> Option<RoutingState> {
    let text = std::fs::read_to_string(file(project)).ok()?;
    let state: RoutingState = serde_json::from_str(&text).ok()?;
    // A process that died (kill -9, a reboot) leaves its file behind.
    alive(state.pid).then_some(state)
}

/// Removes the state file, if it is `pid`'s.
pub fn remove(project: &str, pid: u32) {
    let path = file(project);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if serde_json::from_str::<RoutingState>(&text).is_ok_and(|s| s.pid == pid) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether a process exists and has not exited (signal 0 checks without
/// sending anything). A zombie, dead but not yet reaped (its parent gone and
/// no init reaping, as in some containers), counts as gone.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for the process.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // `/proc/<pid>/stat` is `pid (comm) state ...`; comm may hold spaces.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        // No /proc (not Linux): the signal check is all there is.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_alive() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        // Exited but not yet waited for: a zombie of this process.
        let pid = child.id();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid), "an exited, unreaped child counts as gone");
        let _ = child.wait();
        assert!(!alive(pid));
    }
}
