//! Who a process is: its pid, when it started and the project it serves.
//!
//! A pid alone names a process only while it lives: once it exits, the
//! kernel hands the number to the next process. devstack records the
//! processes it leaves running (a detached stack's routing agent, a
//! foreground `up`) as a [`ProcessIdentity`] and checks it, pid *and* start
//! time, before it trusts the record or sends a signal, so a stale record
//! never makes it signal a stranger.
//!
//! And how a spawned devstack learns of the one that spawned it: a pipe
//! whose one end only the parent holds ([`pipe`], [`inherited_pipe`]); its
//! end of file is the parent's exit, SIGKILL included.

#[cfg(unix)]
use std::os::fd::{FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::plan::names::ProjectName;

/// One process, told apart from any later process that gets its pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// When it started, in clock ticks since boot (field 22 of
    /// `/proc/<pid>/stat`); `None` where there is no `/proc`, and there the
    /// pid is all there is to check.
    pub start_time: Option<u64>,
    /// The project it serves.
    pub project: ProjectName,
}

impl ProcessIdentity {
    /// This process, serving `project`.
    pub fn current(project: &ProjectName) -> ProcessIdentity {
        let pid = std::process::id();
        ProcessIdentity {
            pid,
            start_time: start_time(pid),
            project: project.clone(),
        }
    }

    /// The identity as written on a throwaway copy's network (and handed
    /// to its reaper): `<pid>:<start time>`, `-` for no start time.
    pub fn label(&self) -> String {
        format!(
            "{}:{}",
            self.pid,
            self.start_time
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into())
        )
    }

    /// The identity a [`ProcessIdentity::label`] names, serving `project`;
    /// `None` when the text is not one devstack wrote.
    pub fn from_label(label: &str, project: &ProjectName) -> Option<ProcessIdentity> {
        let (pid, start) = label.split_once(':')?;
        Some(ProcessIdentity {
            pid: pid.parse().ok()?,
            start_time: match start {
                "-" => None,
                t => Some(t.parse().ok()?),
            },
            project: project.clone(),
        })
    }

    /// Whether the process this identity names still runs: a process with
    /// this pid exists, has not exited (a zombie counts as gone), and started
    /// when this one did.
    pub fn is_running(&self) -> bool {
        if !alive(self.pid) {
            return false;
        }
        match (self.start_time, start_time(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            // No /proc here: the recorded time could not be taken either.
            (None, None) => true,
            // Recorded with a start time that cannot be read now (the process
            // is gone between the two looks), or the other way round.
            _ => false,
        }
    }

    /// Sends `signal` to the process, only if it is still this one. Returns
    /// whether it was sent.
    ///
    /// On Linux the process is first pinned with a pidfd, then checked, then
    /// signalled through the pidfd: a process that exits after the check and
    /// whose pid is reused is not signalled, as the pidfd still names the
    /// one that was checked.
    #[cfg(unix)]
    pub fn signal(&self, signal: i32) -> bool {
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if fd >= 0 {
                let fd = fd as i32;
                let sent = self.is_running()
                    // SAFETY: a descriptor this function opened, a plain
                    // signal number, no siginfo.
                    && unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            fd,
                            signal,
                            std::ptr::null::<libc::siginfo_t>(),
                            0,
                        )
                    } == 0;
                // SAFETY: closing the descriptor opened above, once.
                unsafe { libc::close(fd) };
                return sent;
            }
            // Kernels before 5.3 have no pidfd: check, then kill.
        }
        // SAFETY: kill with a pid that was just checked to be this process.
        self.is_running() && unsafe { libc::kill(pid, signal) } == 0
    }
}

/// Asks the process to stop, only if it is still this one: SIGTERM on
/// Unix; on Windows, which has no such signal, it is ended at once
/// (`TerminateProcess`). Returns whether it was asked.
pub fn terminate_process(identity: &ProcessIdentity) -> bool {
    #[cfg(unix)]
    {
        identity.signal(libc::SIGTERM)
    }
    #[cfg(windows)]
    {
        identity.is_running() && windows::terminate(identity.pid)
    }
}

impl ProcessIdentity {
    /// [`terminate_process`] of this identity.
    pub fn terminate(&self) -> bool {
        terminate_process(self)
    }
}

/// A pipe, both ends close-on-exec: (read end, write end). A child that is
/// to keep one end clears the flag on it between fork and exec; every other
/// process this one starts never holds it, so the end closes exactly when
/// its holders exit, however they exit.
#[cfg(unix)]
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    #[cfg(target_os = "linux")]
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    // No pipe2 (macOS): the flag is set right after, which a thread of this
    // process forking in between could miss; devstack forks from one place.
    // SAFETY: pipe writes two descriptors into the array it is given.
    #[cfg(not(target_os = "linux"))]
    let made = unsafe { libc::pipe(fds.as_mut_ptr()) };
    if made == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and belong to nothing else.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(not(target_os = "linux"))]
    for fd in fds {
        // SAFETY: fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(ends)
}

/// The pipe end this process inherited from the devstack that spawned it,
/// its descriptor named by the environment variable `var`; taken over at
/// once and made close-on-exec, so no process this one starts keeps it
/// open. `None` when it was not spawned that way (run by hand) or the
/// descriptor is not a pipe.
#[cfg(not(unix))]
pub fn inherited_pipe(_var: &str) -> Option<std::fs::File> {
    None
}

/// (See above.)
#[cfg(unix)]
pub fn inherited_pipe(var: &str) -> Option<std::fs::File> {
    let fd = std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<libc::c_int>().ok())
        .filter(|fd| *fd > 2)?;
    // Only a descriptor that is open and a pipe is taken over.
    // SAFETY: fstat writes into the struct it is given; a closed or bad
    // descriptor is an error, not undefined behaviour.
    let is_pipe = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
    };
    if !is_pipe {
        return None;
    }
    // SAFETY: the descriptor was inherited for this one use and nothing
    // else in this process refers to it; fcntl only sets its flag.
    Some(unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        std::fs::File::from(OwnedFd::from_raw_fd(fd))
    })
}

/// Whether a process with this pid exists and has not exited (signal 0
/// checks without sending anything). A zombie, dead but not yet reaped (its
/// parent gone and no init reaping, as in some containers), counts as gone.
/// A pid alone: use [`ProcessIdentity::is_running`] for a process recorded
/// earlier.
#[cfg(windows)]
pub fn alive(pid: u32) -> bool {
    windows::alive(pid)
}

/// (See above.)
#[cfg(unix)]
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for the process.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match stat_fields(pid as u32) {
        Some(fields) => fields
            .first()
            .is_none_or(|state| state != "Z" && state != "X"),
        // No /proc (not Linux): the signal check is all there is.
        None => true,
    }
}

/// The process's start time in clock ticks since boot, from `/proc`; on
/// Windows its creation time (100 ns units since 1601).
pub fn start_time(pid: u32) -> Option<u64> {
    #[cfg(windows)]
    if let Some(t) = windows::created(pid) {
        return Some(t);
    }
    // Fields after `comm` start at field 3 (the state): field 22 is the 20th.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` after `(comm)`, which may itself hold
/// spaces and parentheses (hence the last `)`).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether the open `file` is still the file named `path` (no one removed
/// or replaced it since it was opened): device and inode on Unix. Elsewhere
/// a file that is open cannot be removed, so the name still holds it.
pub fn same_file(file: &std::fs::File, path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        file.metadata().is_ok() && path.exists()
    }
}

/// The few process calls Windows has instead of signals and `/proc`.
#[cfg(windows)]
mod windows {
    use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, GetProcessTimes, OpenProcess, TerminateProcess,
        PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
    };

    /// `f` with a handle of process `pid` opened for `access`; `None` when
    /// it cannot be opened (no such process, or not ours to open).
    fn with_process<T>(pid: u32, access: u32, f: impl FnOnce(HANDLE) -> T) -> Option<T> {
        // SAFETY: OpenProcess takes plain values; a null handle is failure.
        let handle = unsafe { OpenProcess(access, 0, pid) };
        if handle.is_null() {
            return None;
        }
        let out = f(handle);
        // SAFETY: closing the handle opened above, once.
        unsafe { CloseHandle(handle) };
        Some(out)
    }

    pub fn alive(pid: u32) -> bool {
        with_process(pid, PROCESS_QUERY_LIMITED_INFORMATION, |h| {
            let mut code = 0u32;
            // SAFETY: a valid handle and a u32 to write into.
            unsafe { GetExitCodeProcess(h, &mut code) != 0 && code == STILL_ACTIVE as u32 }
        })
        .unwrap_or(false)
    }

    pub fn created(pid: u32) -> Option<u64> {
        with_process(pid, PROCESS_QUERY_LIMITED_INFORMATION, |h| {
            let zero = FILETIME {
                dwLowDateTime: 0,
                dwHighDateTime: 0,
            };
            let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
            // SAFETY: a valid handle and four FILETIMEs to write into.
            let ok = unsafe {
                GetProcessTimes(h, &mut created, &mut exited, &mut kernel, &mut user) != 0
            };
            ok.then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
        })
        .flatten()
    }

    pub fn terminate(pid: u32) -> bool {
        // SAFETY: a valid handle; 1 is the exit code the process gets.
        with_process(pid, PROCESS_TERMINATE, |h| unsafe {
            TerminateProcess(h, 1) != 0
        })
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectName {
        ProjectName::new("p").unwrap()
    }

    #[test]
    fn the_owner_label_reads_back_as_the_same_identity() {
        let project = project();
        let me = ProcessIdentity::current(&project);
        assert_eq!(
            ProcessIdentity::from_label(&me.label(), &project),
            Some(me.clone())
        );
        assert!(me.is_running());
        assert_eq!(
            ProcessIdentity::from_label("12:-", &project).map(|o| o.start_time),
            Some(None)
        );
        assert_eq!(ProcessIdentity::from_label("nonsense", &project), None);
        assert_eq!(ProcessIdentity::from_label("1:x", &project), None);
    }

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

    #[test]
    fn the_current_process_is_itself_and_not_a_later_one() {
        let me = ProcessIdentity::current(&project());
        assert!(me.start_time.is_some(), "Linux has /proc");
        assert!(me.is_running());
        // The same pid with another start time: a process that got the pid later.
        let other = ProcessIdentity {
            start_time: me.start_time.map(|t| t + 1),
            ..me.clone()
        };
        assert!(!other.is_running());
        // Signal 0 checks without sending: sent to itself, refused to the impostor.
        assert!(me.signal(0));
        assert!(!other.signal(0));
    }

    #[test]
    fn a_process_with_a_reused_pid_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let recorded = ProcessIdentity {
            pid: child.id(),
            // Another start time: the record was of an earlier process.
            start_time: start_time(child.id()).map(|t| t.saturating_sub(1)),
            project: project(),
        };
        assert!(!recorded.signal(libc::SIGTERM));
        assert!(matches!(child.try_wait(), Ok(None)), "sleep was signalled");
        let real = ProcessIdentity {
            start_time: start_time(child.id()),
            ..recorded
        };
        assert!(real.signal(libc::SIGTERM));
        let status = child.wait().expect("sleep ends");
        assert!(!status.success());
    }
}
