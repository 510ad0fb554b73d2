//! A project's state directory, `$XDG_STATE_HOME/devstack/<project>/` (or
//! `~/.local/state/...`): where a running project's routing path can be
//! found by other commands (`routes`, `etcd ls`, `down`, a second `up`), the
//! locks that keep two devstack processes from doing one job twice, and the
//! routing agent's log. Only a checked [`ProjectName`] makes a path here, and
//! only the files devstack writes are ever removed.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::reach::{Reach, Registry};
use crate::plan::names::ProjectName;
pub use crate::process::alive;
use crate::process::ProcessIdentity;
use crate::registrar::Known;

/// The version of `routing.json` this devstack writes. A file without one
/// (schema 0) is what the release before wrote, before the writer's identity
/// was recorded: it is read, and never trusted (see [`Recorded::Unverified`]).
/// A file with a larger one was written by a newer devstack and is refused
/// ([`NewerSchema`]), never read as this one's, signalled or removed.
pub const SCHEMA: u32 = 1;

/// The routing state file.
const ROUTING: &str = "routing.json";
/// What the running routing path knows of the containers' health.
const HEALTH: &str = "health.json";
/// The detached routing agent's output.
pub const AGENT_LOG: &str = "agent.log";

/// What a running routing path tells other commands (`routing.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingState {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The process running it (a `devstack up` or `devstack agent`); its
    /// fields sit at the top level (`pid` where older files had it).
    #[serde(flatten)]
    pub owner: ProcessIdentity,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Where the proxy serves every route.
    pub listen: String,
    /// How devstack reaches the stack's containers, as the routing path
    /// probed it on the proxy: `up`, `watch` and the other commands of this
    /// stack follow it rather than probe again. Absent in files written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
    /// Where the embedded registry runs (`host`, `host-gateway` or
    /// `stack`), as the routing path decided it; absent for a stack's own
    /// etcd cluster, and in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
}

impl RoutingState {
    /// The state of a routing path this process runs.
    pub fn of_this_process(project: &ProjectName, endpoints: Vec<String>, listen: String) -> Self {
        RoutingState {
            schema: SCHEMA,
            owner: ProcessIdentity::current(project),
            endpoints,
            listen,
            reach: None,
            registry: None,
        }
    }
}

/// `routing.json` as any devstack may have written it: the fields a file
/// written before [`SCHEMA`] 1 lacks are optional here.
#[derive(Debug, Deserialize)]
struct AnyVersion {
    #[serde(default)]
    schema: u32,
    pid: u32,
    #[serde(default)]
    start_time: Option<u64>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    listen: String,
    #[serde(default)]
    reach: Option<Reach>,
    #[serde(default)]
    registry: Option<Registry>,
}

/// Only the version of a `routing.json`, read before anything else in it.
#[derive(Debug, Deserialize)]
struct SchemaOnly {
    #[serde(default)]
    schema: u32,
}

/// A `routing.json` written by a newer devstack: its other fields may mean
/// something this one does not know, so it is not read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} was written by a newer devstack (schema {found}; this one reads up to {supported}): use that devstack for this project, or stop it first",
    path.display()
)]
pub struct NewerSchema {
    pub path: PathBuf,
    pub found: u32,
    pub supported: u32,
}

/// What a project's `routing.json` says, once checked against the processes running now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// No file.
    Nothing,
    /// A routing path of this project that runs now: its writer's identity
    /// (pid and start time) is a process that runs.
    Running(RoutingState),
    /// Written by an older devstack (no identity) whose pid lives: it may be
    /// that devstack's agent or a stranger that got the pid, so it is neither
    /// trusted nor signalled, and the file is left.
    Unverified { pid: u32 },
    /// Its writer is gone (the pid is dead, or another process has it now),
    /// or the file is not readable as routing state: safe to remove.
    Stale,
}

/// The state directory of a project.
pub fn state_dir(project: &ProjectName) -> PathBuf {
    state_root().join(project.as_str())
}

/// Where every project's state directory is.
pub fn state_root() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("devstack")
}

/// The projects with a state directory here (names that are not project
/// names are skipped).
pub fn projects() -> Vec<ProjectName> {
    let Ok(entries) = std::fs::read_dir(state_root()) else {
        return Vec::new();
    };
    let mut names: Vec<ProjectName> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| ProjectName::new(n).ok())
        })
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names
}

/// The project's `routing.json`.
pub fn routing_file(project: &ProjectName) -> PathBuf {
    state_dir(project).join(ROUTING)
}

/// Records the state; written to a temporary file and renamed, so a reader
/// never sees half of it.
pub fn write(project: &ProjectName, state: &RoutingState) -> std::io::Result<()> {
    let dir = state_dir(project);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{ROUTING}.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())?;
    std::fs::rename(&tmp, routing_file(project))
}

/// What a running routing path knows of each container's health
/// (`health.json`), rewritten by it on every change: its registrar follows
/// every running container of the stack (see [`crate::registrar::Known`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// The process that runs the routing path and wrote this.
    pub owner: ProcessIdentity,
    pub containers: Known,
}

/// Records what the routing path knows (temporary file, then renamed).
pub fn write_health(project: &ProjectName, record: &HealthRecord) -> std::io::Result<()> {
    let dir = state_dir(project);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{HEALTH}.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(record).unwrap_or_default())?;
    std::fs::rename(&tmp, dir.join(HEALTH))
}

/// What the routing path of `running` (the owner `routing.json` names, a
/// running process) knows; `None` when it wrote nothing, or the file is
/// another process's (a routing path that ended without removing it).
pub fn read_health(project: &ProjectName, running: &RoutingState) -> Option<HealthRecord> {
    let text = std::fs::read_to_string(state_dir(project).join(HEALTH)).ok()?;
    let record: HealthRecord = serde_json::from_str(&text).ok()?;
    (record.owner == running.owner).then_some(record)
}

/// The project's routing state, checked against the running processes; an
/// error when a newer devstack wrote it.
pub fn look(project: &ProjectName) -> Result<Recorded, NewerSchema> {
    let path = routing_file(project);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Recorded::Nothing);
    };
    if let Ok(SchemaOnly { schema }) = serde_json::from_str::<SchemaOnly>(&text) {
        if schema > SCHEMA {
            return Err(NewerSchema {
                path,
                found: schema,
                supported: SCHEMA,
            });
        }
    }
    let Ok(any) = serde_json::from_str::<AnyVersion>(&text) else {
        return Ok(Recorded::Stale);
    };
    if any.schema == 0 {
        return Ok(if alive(any.pid) {
            Recorded::Unverified { pid: any.pid }
        } else {
            Recorded::Stale
        });
    }
    // A file of this project names this project; one that does not was not
    // written for this directory and is trusted with nothing.
    if any.project.as_deref() != Some(project.as_str()) {
        return Ok(Recorded::Stale);
    }
    let state = RoutingState {
        schema: any.schema,
        owner: ProcessIdentity {
            pid: any.pid,
            start_time: any.start_time,
            project: project.clone(),
        },
        endpoints: any.endpoints,
        listen: any.listen,
        reach: any.reach,
        registry: any.registry,
    };
    // A process that died (kill -9, a reboot) leaves its file behind, and
    // its pid may be someone else's by now.
    Ok(if state.owner.is_running() {
        Recorded::Running(state)
    } else {
        Recorded::Stale
    })
}

/// The state of a project whose routing process still runs; an error when
/// a newer devstack wrote it.
pub fn read(project: &ProjectName) -> Result<Option<RoutingState>, NewerSchema> {
    Ok(match look(project)? {
        Recorded::Running(state) => Some(state),
        _ => None,
    })
}

/// Removes the state file, if `owner` wrote it.
pub fn remove(project: &ProjectName, owner: &ProcessIdentity) {
    if let Ok(Recorded::Running(state)) = look(project) {
        if &state.owner == owner {
            let _ = std::fs::remove_file(state_dir(project).join(HEALTH));
            let _ = std::fs::remove_file(routing_file(project));
        }
    }
}

/// Removes what devstack wrote in the project's state directory (a stale
/// routing state and its temporary files, the agent's log, the lock files),
/// then the directory if nothing else is left in it. A routing state whose
/// writer may still run stays, and so does anything devstack did not write:
/// nothing here removes a directory tree.
///
/// The caller holds both locks ([`LockKind::Watch`] and [`LockKind::Agent`]),
/// so no watcher or agent start is under way.
pub fn clear(project: &ProjectName, _watch: &StateLock, _agent: &StateLock) {
    let dir = state_dir(project);
    if look(project) == Ok(Recorded::Stale) {
        let _ = std::fs::remove_file(dir.join(ROUTING));
    }
    if !matches!(look(project), Ok(Recorded::Running(_))) {
        let _ = std::fs::remove_file(dir.join(HEALTH));
    }
    // `routing.json.<pid>`: left by a writer that died between its write
    // and its rename.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let writer = name.to_str().and_then(|n| {
                n.strip_prefix(ROUTING)
                    .or_else(|| n.strip_prefix(HEALTH))?
                    .strip_prefix('.')?
                    .parse::<u32>()
                    .ok()
            });
            if writer.is_some_and(|pid| !alive(pid)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    // `up.lock` too: an `up` holding it now keeps its descriptor, and the
    // next `up` locks a new file (see `try_lock`).
    for name in [
        AGENT_LOG,
        LockKind::Watch.file(),
        LockKind::Agent.file(),
        LockKind::Up.file(),
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    // Fails, as it should, when anything else is left in it.
    let _ = std::fs::remove_dir(&dir);
}

/// The locks in a project's state directory: each a `flock` on a file of its
/// own, which the kernel releases when the holder ends, however it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// The right to watch the project's sources (`watch`, a foreground `up`).
    Watch,
    /// The right to decide whether the project needs a routing path, and to
    /// start one (`up`, `watch`, `down`): two at once would start two.
    Agent,
    /// The right to bring the project's containers up (`up`): two plans
    /// carried out at once would both create the same containers.
    Up,
}

impl LockKind {
    fn file(self) -> &'static str {
        match self {
            LockKind::Watch => "watch.lock",
            LockKind::Agent => "agent.lock",
            LockKind::Up => "up.lock",
        }
    }
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is held{}", path.display(), holder.map(|p| format!(" by process {p}")).unwrap_or_default())]
    Held {
        path: PathBuf,
        /// The process that wrote its pid into the file when it took the lock.
        holder: Option<u32>,
    },
    #[error("cannot open {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the lock if no one holds it.
pub fn try_lock(project: &ProjectName, kind: LockKind) -> Result<StateLock, LockError> {
    let dir = state_dir(project);
    let path = dir.join(kind.file());
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    // A few rounds: see the removal check below.
    for _ in 0..10 {
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // flock(2) on Unix, LockFileEx on Windows.
        if let Err(held) = file.try_lock() {
            if let std::fs::TryLockError::Error(err) = held {
                return Err(io(err));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(LockError::Held {
                path: path.clone(),
                holder: holder.trim().parse().ok(),
            });
        }
        // `clear` may have removed the file between the open and the lock:
        // a lock on a removed file guards nothing, so take the new one.
        if !crate::process::same_file(&file, &path) {
            continue;
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        return Ok(StateLock { _file: file });
    }
    Err(LockError::Held { path, holder: None })
}

/// Takes the lock, waiting up to `limit` for its holder to let go.
pub async fn lock(
    project: &ProjectName,
    kind: LockKind,
    limit: Duration,
) -> Result<StateLock, LockError> {
    let deadline = Instant::now() + limit;
    loop {
        match try_lock(project, kind) {
            Err(LockError::Held { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points the state home at a scratch directory for the whole test binary.
    fn scratch() -> &'static std::path::Path {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let dir = tempfile::tempdir().expect("a scratch directory");
            std::env::set_var("XDG_STATE_HOME", dir.path());
            dir
        });
        dir.path()
    }

    fn project(name: &str) -> ProjectName {
        scratch();
        ProjectName::new(name).unwrap()
    }

    #[test]
    fn a_lock_is_held_once() {
        let p = project("lock-once");
        let held = try_lock(&p, LockKind::Agent).expect("free");
        let second = try_lock(&p, LockKind::Agent);
        assert!(
            matches!(second, Err(LockError::Held { holder: Some(pid), .. }) if pid == std::process::id()),
            "{second:?}"
        );
        // Another kind is another lock.
        let _watch = try_lock(&p, LockKind::Watch).expect("the watch lock is free");
        drop(held);
        try_lock(&p, LockKind::Agent).expect("free again");
    }

    #[test]
    fn clear_removes_only_what_devstack_wrote() {
        let p = project("clear-own");
        let dir = state_dir(&p);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(AGENT_LOG), "log").unwrap();
        // A routing state whose writer is gone: the pid has another start time.
        let mut stale = RoutingState::of_this_process(&p, vec![], "127.0.0.1:1".into());
        stale.owner.start_time = stale.owner.start_time.map(|t| t + 1);
        write(&p, &stale).unwrap();
        assert_eq!(look(&p), Ok(Recorded::Stale));
        std::fs::write(dir.join("mine.txt"), "not devstack's").unwrap();
        {
            let (w, a) = (
                try_lock(&p, LockKind::Watch).unwrap(),
                try_lock(&p, LockKind::Agent).unwrap(),
            );
            clear(&p, &w, &a);
        }
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["mine.txt"]);
        std::fs::remove_file(dir.join("mine.txt")).unwrap();
        let (w, a) = (
            try_lock(&p, LockKind::Watch).unwrap(),
            try_lock(&p, LockKind::Agent).unwrap(),
        );
        clear(&p, &w, &a);
        assert!(!dir.exists(), "an empty state directory goes");
    }

    #[test]
    fn a_running_writers_state_is_trusted_and_kept() {
        let p = project("running");
        let me = RoutingState::of_this_process(&p, vec!["http://e".into()], "l".into());
        write(&p, &me).unwrap();
        assert_eq!(read(&p), Ok(Some(me.clone())));
        let (w, a) = (
            try_lock(&p, LockKind::Watch).unwrap(),
            try_lock(&p, LockKind::Agent).unwrap(),
        );
        clear(&p, &w, &a);
        assert_eq!(
            read(&p),
            Ok(Some(me.clone())),
            "a live writer's state stays"
        );
        // Written for another project: trusted with nothing.
        let other = project("running-other");
        std::fs::create_dir_all(state_dir(&other)).unwrap();
        std::fs::copy(routing_file(&p), routing_file(&other)).unwrap();
        assert_eq!(look(&other), Ok(Recorded::Stale));
        remove(&p, &me.owner);
        assert_eq!(look(&p), Ok(Recorded::Nothing));
    }

    #[test]
    fn an_older_file_is_never_trusted_and_kept_while_its_pid_lives() {
        let p = project("legacy");
        std::fs::create_dir_all(state_dir(&p)).unwrap();
        let legacy = |pid: u32| {
            std::fs::write(
                routing_file(&p),
                format!(r#"{{"pid": {pid}, "endpoints": [], "listen": "x"}}"#),
            )
            .unwrap()
        };
        legacy(std::process::id());
        assert_eq!(
            look(&p),
            Ok(Recorded::Unverified {
                pid: std::process::id()
            })
        );
        assert_eq!(read(&p), Ok(None));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        legacy(dead);
        assert_eq!(look(&p), Ok(Recorded::Stale));
    }

    #[test]
    fn a_file_without_a_schema_is_read_as_the_previous_release_wrote_it() {
        let p = project("schema-zero");
        std::fs::create_dir_all(state_dir(&p)).unwrap();
        // The previous release's file: no schema, no start time, no project.
        std::fs::write(
            routing_file(&p),
            format!(
                r#"{{"pid": {}, "endpoints": ["http://10.0.0.1:2379"], "listen": "127.0.0.1:80"}}"#,
                std::process::id()
            ),
        )
        .unwrap();
        assert_eq!(
            look(&p),
            Ok(Recorded::Unverified {
                pid: std::process::id()
            }),
            "adopted as schema 0: read, and its live pid is not trusted"
        );
        // Writing it again (a new routing path) makes it this release's.
        let me = RoutingState::of_this_process(&p, vec![], "l".into());
        write(&p, &me).unwrap();
        let text = std::fs::read_to_string(routing_file(&p)).unwrap();
        assert!(text.contains(&format!("\"schema\": {SCHEMA}")), "{text}");
        assert_eq!(read(&p), Ok(Some(me.clone())));
        remove(&p, &me.owner);
    }

    #[test]
    fn a_file_with_a_newer_schema_is_refused_naming_it_and_both_versions() {
        let p = project("schema-newer");
        std::fs::create_dir_all(state_dir(&p)).unwrap();
        let newer = SCHEMA + 1;
        // Whatever else a newer devstack writes, it is not read as ours.
        std::fs::write(
            routing_file(&p),
            format!(r#"{{"schema": {newer}, "owner": {{"pid": 1}}, "routing": "elsewhere"}}"#),
        )
        .unwrap();
        let err = look(&p).expect_err("a newer file is refused");
        assert_eq!(
            err,
            NewerSchema {
                path: routing_file(&p),
                found: newer,
                supported: SCHEMA
            }
        );
        let message = err.to_string();
        assert!(
            message.contains(&routing_file(&p).display().to_string())
                && message.contains(&format!("schema {newer}"))
                && message.contains(&format!("up to {SCHEMA}")),
            "{message}"
        );
        assert!(read(&p).is_err(), "read refuses it too");
        // Neither removed by its owner check nor cleared as stale.
        remove(&p, &ProcessIdentity::current(&p));
        let (w, a) = (
            try_lock(&p, LockKind::Watch).unwrap(),
            try_lock(&p, LockKind::Agent).unwrap(),
        );
        clear(&p, &w, &a);
        assert!(routing_file(&p).exists(), "a newer devstack's file stays");
        std::fs::remove_file(routing_file(&p)).unwrap();
    }
}
