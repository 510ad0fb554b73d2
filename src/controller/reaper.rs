//! The reaper of a `devstack test` copy: the devstack binary again, as the
//! hidden `devstack -p COPY reap`, in a session of its own, so it outlives
//! a SIGKILL of the whole process group its `devstack test` ran in (what CI
//! runners do to a cancelled job). It needs no container, privileged or not.
//!
//! It watches its owner two ways: a pipe whose write end only the owner
//! holds (close-on-exec, so no process the owner starts keeps it), whose end
//! of file is the owner's exit however it exits; and the owner's identity
//! (pid and start time, `process::ProcessIdentity`), checked every second,
//! for an end that leaked somewhere after all. The owner writes `armed`
//! once the copy's network (with its identity) is made, and `done` once it
//! took the copy down itself: the reaper then exits without touching
//! anything. An owner gone without `done` leaves a copy: the reaper takes it
//! down (agent, containers, network, volumes, state directory), looks again
//! for what a request in flight at the owner's death made after that, and
//! notes what it did in `reaper.log` in the artifacts directory. It touches
//! a project only while its network names this owner, or when the network
//! is gone from a copy the owner said it made: never a project of the same
//! name that someone else made.
//!
//! A copy the reaper could not remove (it was killed too, the engine did
//! not answer) is still found by `devstack ls` as abandoned and removed by
//! `devstack prune` (`controller::projects`).

use std::io::{BufRead, Write};
#[cfg(unix)]
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{down, state};
use crate::engine::Engine;
use crate::plan::names::ProjectName;
use crate::process::ProcessIdentity;
use crate::ui::exit;

/// The environment variable naming the descriptor of the pipe's read end.
const FD_ENV: &str = "DEVSTACK_REAPER_FD";

/// What the owner writes once the copy's network, with its identity, is made.
const ARMED: &str = "armed";

/// What the owner writes once it took its copy down itself.
const DONE: &str = "done";

/// How often the owner's identity is checked besides the pipe.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long the reaper waits for an engine that does not answer.
const ENGINE_PATIENCE: Duration = Duration::from_secs(60);

/// The environment a reaper keeps: where the engine and the state are, and
/// little else. A CI runner that finds a job's leftover processes by an
/// environment cookie (Jenkins' `BUILD_ID`) does not find it.
fn kept(var: &str) -> bool {
    ["DOCKER_", "DEVSTACK_", "XDG_", "LC_"]
        .iter()
        .any(|p| var.starts_with(p))
        || [
            "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "NO_COLOR",
        ]
        .contains(&var)
}

/// The owner's side: the running reaper and the pipe's write end.
#[derive(Debug)]
pub struct Reaper {
    writer: Option<std::fs::File>,
    child: std::process::Child,
}

impl Reaper {
    /// Starts the reaper of `project`, owned by this process (`owner`);
    /// what it does goes to `log` (only when it acts).
    pub fn spawn(
        project: &ProjectName,
        owner: &ProcessIdentity,
        log: &Path,
    ) -> anyhow::Result<Reaper> {
        let exe = std::env::current_exe()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(kept)))
            .env_remove("DEVSTACK_PROJECT_NAME")
            .arg("-p")
            .arg(project.as_str())
            .arg("reap")
            .arg("--owner")
            .arg(owner.label())
            .arg("--log")
            .arg(absolute(log))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            let (reader, writer) = crate::process::pipe()?;
            let reader_fd = reader.as_raw_fd();
            cmd.env(FD_ENV, reader_fd.to_string());
            // SAFETY: setsid and fcntl are async-signal-safe and touch no memory.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    // Its own session and process group: a signal to the
                    // owner's group (Ctrl-C, a CI runner's SIGKILL) misses it.
                    libc::setsid();
                    // The read end, close-on-exec here, is the reaper's to keep.
                    if libc::fcntl(reader_fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn()?;
            // Only the reaper holds the read end now.
            drop(reader);
            Ok(Reaper {
                writer: Some(std::fs::File::from(writer)),
                child,
            })
        }
        // Windows: no descriptor to inherit; the reaper, detached from this
        // console, watches the owner's identity alone (`wait_for_owner`).
        #[cfg(windows)]
        {
            use std::os::windows::process::CommandExt;
            const DETACHED_PROCESS: u32 = 0x0000_0008;
            const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
            cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
            Ok(Reaper {
                writer: None,
                child: cmd.spawn()?,
            })
        }
    }

    /// The copy's network, with this owner's identity, is made: from now
    /// on the copy is this owner's, and the reaper's to remove if it dies.
    pub fn arm(&mut self) {
        self.say(ARMED);
    }

    /// The copy is down: tells the reaper, which exits without touching
    /// anything, and waits a moment for it.
    pub async fn dismiss(mut self) {
        self.say(DONE);
        self.writer = None;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn say(&mut self, what: &str) {
        if let Some(writer) = &mut self.writer {
            let _ = writeln!(writer, "{what}");
        }
    }
}

/// `devstack -p COPY reap`: waits for the owner's end and takes the copy
/// down unless the owner said it did. Returns the exit code.
pub async fn run(project: &ProjectName, owner: &ProcessIdentity, log: &Path) -> anyhow::Result<u8> {
    let pipe = crate::process::inherited_pipe(FD_ENV);
    let said = wait_for_owner(pipe, owner).await;
    if said == Said::Done {
        return Ok(exit::OK);
    }
    let note = |text: String| {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "[{}] {text}", crate::engine::unix_now());
        }
    };
    let Some(engine) = connect().await else {
        note(format!(
            "devstack test (process {}) ended without taking `{project}` down, and no Docker engine answered for {}s: it is left for `devstack prune`",
            owner.pid,
            ENGINE_PATIENCE.as_secs()
        ));
        return Ok(exit::NO_ENGINE);
    };
    let label = owner.label();
    // Up to three passes: a create the owner asked for just before it died
    // may land after the first.
    for pass in 0..3 {
        let found = match engine.devstack_projects().await {
            Ok(all) => all.into_iter().find(|p| p.project == project.as_str()),
            Err(e) => {
                note(format!("listing the engine's projects: {e}"));
                return Ok(exit::FAILURE);
            }
        };
        let Some(found) = found else {
            // Nothing on the engine; a state directory left (the agent's
            // log, the routing state) goes too.
            if pass == 0 && said == Said::Armed && state::state_dir(project).exists() {
                let _ = down::down(&engine, project, Some(GRACE), true, |_| {}).await;
            }
            break;
        };
        // Its network names this owner; or it is gone (taken down halfway)
        // from a copy the owner made: anything else is not this copy.
        let mine = match found.owner.as_deref() {
            Some(o) => o == label,
            None => said == Said::Armed && found.network.is_none(),
        };
        if !mine {
            if said == Said::Armed {
                note(format!(
                    "`{project}` is not the copy process {} made (its network names {}); left alone",
                    owner.pid,
                    found.owner.as_deref().unwrap_or("no owner")
                ));
            }
            return Ok(exit::OK);
        }
        if pass == 0 {
            note(format!(
                "devstack test (process {}) ended without taking `{project}` down; removing it",
                owner.pid
            ));
        }
        match down::down(&engine, project, Some(GRACE), true, |_| {}).await {
            Ok(_) => note(format!(
                "removed {} container(s), {} volume(s){} of `{project}`",
                found.containers.len(),
                found.volumes.len(),
                if found.network.is_some() {
                    " and its network"
                } else {
                    ""
                }
            )),
            Err(e) => note(format!("taking `{project}` down: {e:#}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(exit::OK)
}

/// How long a reaped copy's containers get between SIGTERM and SIGKILL:
/// short, the copy is throwaway and its volumes go with it.
const GRACE: Duration = Duration::from_secs(1);

/// What the owner said on the pipe before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    /// Nothing: it ended before it made the copy (or could not make it).
    Nothing,
    /// The copy's network is made: the copy is its own.
    Armed,
    /// It took the copy down itself.
    Done,
}

/// Waits until the owner ends; what it said by then.
async fn wait_for_owner(pipe: Option<std::fs::File>, owner: &ProcessIdentity) -> Said {
    let (tx, mut rx) = tokio::sync::watch::channel((Said::Nothing, false));
    if let Some(pipe) = pipe {
        // A plain thread: the read blocks until the owner writes or exits.
        std::thread::spawn(move || {
            let mut said = Said::Nothing;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                said = match line.trim() {
                    ARMED => Said::Armed,
                    DONE => Said::Done,
                    _ => said,
                };
                let _ = tx.send((said, false));
            }
            let _ = tx.send((said, true));
        });
    }
    // Started by hand there is no pipe (the sender is gone): the identity
    // alone tells.
    let mut piped = true;
    loop {
        tokio::select! {
            changed = rx.changed(), if piped => match changed {
                Ok(()) if rx.borrow().1 => return rx.borrow().0,
                Ok(()) => {}
                Err(_) => piped = false,
            },
            _ = tokio::time::sleep(LOOK_EVERY) => {
                if !owner.is_running() {
                    // Its exit closed its end, unless another process holds
                    // it too: a moment for what it wrote to arrive.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        rx.wait_for(|(_, ended)| *ended),
                    )
                    .await;
                    return rx.borrow().0;
                }
            }
        }
    }
}

/// The engine, waited for a while (a restarting daemon).
async fn connect() -> Option<Engine> {
    let until = Instant::now() + ENGINE_PATIENCE;
    loop {
        if let Ok(engine) = Engine::connect().await {
            return Some(engine);
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
