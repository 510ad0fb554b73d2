//! Snapshots of datastores' data volumes, kept on the engine as volumes:
//! `devstack data snapshot|restore|ls|rm|export|import`.
//!
//! A snapshot of datastore D named N is the volume
//! `<project>_snapshot-N-D`, labelled with the snapshot's name, the
//! datastore, the image reference it ran and the time. Taking one flushes
//! the server (`kinds::flush`), pauses its container, copies its data
//! volume into the snapshot volume, then unpauses it. Restoring kills and
//! removes the datastore's containers, makes its data volume again and
//! copies the snapshot back; `up` then starts it. No dump and reload.
//!
//! Each copy ([`copy_volume`]) goes directly from volume directory to volume
//! directory on this host when the engine is local and both directories
//! are here and readable (`Engine::host_volume_dir`): files cloned where the
//! filesystem has reflinks, else copied in the kernel. Otherwise (a remote
//! engine, Docker Desktop's VM, a rootless engine whose files this user
//! cannot own), or when the host copy fails, it streams through the
//! engine's archive API between created, never started containers of the
//! datastore's own image (no helper image to pull). Either way the files
//! the server never reads are left out (postgres's recycled WAL segments,
//! see `datastore::wal`), so a snapshot holds the data, not `max_wal_size`
//! of stale WAL.
//!
//! Each part also records the on-disk format version of its files (postgres:
//! the data directory's `PG_VERSION`; mariadb/mysql: the server's release
//! series, from the image's env or `mariadbd --version`), and a restore into
//! a running server of another format is refused unless forced: an image
//! reference such as `postgres:latest` can move to another major version.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::engine::volcopy::{self, Copied, LeaveOut};
use crate::engine::{Engine, EngineError};
use crate::plan::{self, names, ContainerSpec, MountSource, MountSpec, Observed, ObservedState};
use crate::spec::{DatastoreKind, Stack, UnitKind};

/// The snapshot's name, on each of its volumes.
pub const LABEL_SNAPSHOT: &str = "dev.devstack.snapshot";
/// The datastore a snapshot volume holds.
pub const LABEL_OF: &str = "dev.devstack.snapshot-of";
/// The image reference the datastore ran when the snapshot was taken.
pub const LABEL_IMAGE: &str = "dev.devstack.snapshot-image";
/// When it was taken, seconds since the epoch.
pub const LABEL_TIME: &str = "dev.devstack.snapshot-time";
/// The on-disk format version of its files (see [`format_of_version`]), when the kind has one.
pub const LABEL_FORMAT: &str = "dev.devstack.snapshot-format";

/// One datastore's part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub name: String,
    pub datastore: String,
    /// The engine's volume holding the copy.
    pub volume: String,
    pub image: String,
    /// Seconds since the epoch.
    pub taken: u64,
    /// The on-disk format version of its files, when known.
    pub format: Option<String>,
}

/// Why a snapshot command did nothing, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// What was asked cannot be done (a bad name, an unknown datastore, ...).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A snapshot name: a letter or digit, then letters, digits, `_` and `-`, at most 40.
pub fn check_name(name: &str) -> Result<(), SnapshotError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::Refused(format!(
            "`{name}` is not a snapshot name: use lowercase letters, digits, `_` and `-` (at most 40), starting with a letter or digit"
        )))
    }
}

/// The name (within the stack) of the volume holding datastore `ds`'s part of snapshot `name`.
pub fn volume_of(name: &str, ds: &str) -> String {
    format!("snapshot-{name}-{ds}")
}

/// The datastores a command is about: those named (each must be a
/// datastore with a data volume), or every datastore that has one.
pub fn chosen(stack: &Stack, named: &[String]) -> Result<Vec<String>, SnapshotError> {
    let with_volume = |d: &str| plan::data_volume(stack, d).is_some();
    if named.is_empty() {
        return Ok(stack
            .datastores
            .keys()
            .filter(|d| with_volume(d))
            .cloned()
            .collect());
    }
    for d in named {
        if !stack.datastores.contains_key(d) {
            return Err(SnapshotError::Refused(format!(
                "`{d}` is not a datastore of this stack"
            )));
        }
        if !with_volume(d) {
            return Err(SnapshotError::Refused(format!(
                "datastore `{d}` keeps no data in a named volume"
            )));
        }
    }
    Ok(named.to_vec())
}

/// A created, never started container of `spec`'s image that mounts only
/// `volume` at `dir`: the other end of an archive copy.
pub fn helper(
    spec: &ContainerSpec,
    project: &str,
    task: &str,
    volume: &str,
    dir: &str,
) -> ContainerSpec {
    let mut labels = BTreeMap::new();
    labels.insert(names::LABEL_PROJECT.to_string(), project.to_string());
    labels.insert(names::LABEL_TASK.to_string(), task.to_string());
    ContainerSpec {
        name: names::task_container_name(project, task, &std::process::id().to_string()),
        mounts: vec![MountSpec {
            source: MountSource::Volume(volume.to_string()),
            target: dir.to_string(),
            read_only: false,
        }],
        ports: Vec::new(),
        aliases: Vec::new(),
        labels,
        health: None,
        config_hash: String::new(),
        ..spec.clone()
    }
}

/// Which way a volume copy went, and what it copied.
#[derive(Debug, Clone)]
pub struct Copy {
    /// Directory to directory on this host; else through the archive API.
    pub on_host: bool,
    /// Why a host copy was tried and given up, when it was.
    pub host_failed: Option<String>,
    pub copied: Copied,
}

impl Copy {
    /// A few words for the user: the way, the size, what was left out.
    pub fn describe(&self) -> String {
        let mb = |b: u64| b as f64 / 1_048_576.0;
        let mut text = format!(
            "{} files, {:.1} MB, {}",
            self.copied.files,
            mb(self.copied.bytes),
            if self.on_host {
                if self.copied.cloned > 0 {
                    "cloned on this host"
                } else {
                    "copied on this host"
                }
            } else {
                "through the engine's archive API"
            }
        );
        if self.copied.left_out > 0 {
            text.push_str(&format!(
                "; left out {} files, {:.1} MB, the server never reads",
                self.copied.left_out,
                mb(self.copied.left_out_bytes)
            ));
        }
        if let Some(why) = &self.host_failed {
            text.push_str(&format!(" (the copy on this host failed: {why})"));
        }
        text
    }
}

/// Where the time of a restore went, phase by phase, in order.
#[derive(Debug, Default, Clone)]
pub struct Phases(Vec<(&'static str, std::time::Duration)>);

impl Phases {
    /// Adds the time since `since` to phase `name`.
    pub fn since(&mut self, name: &'static str, since: std::time::Instant) {
        let took = since.elapsed();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += took,
            None => self.0.push((name, took)),
        }
    }

    /// `copy 1.02s, stop 0.11s, ...`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a restore did: each datastore with how its data was copied, and
/// where the time went.
#[derive(Debug, Default)]
pub struct Restored {
    pub parts: Vec<(String, Copy)>,
    pub phases: Phases,
}

/// The files a copy of `kind`'s data directory leaves out.
fn leave_out_for(kind: Option<DatastoreKind>) -> Arc<LeaveOut> {
    Arc::new(move |path: &str, size: u64, head: &[u8]| {
        kind.is_some_and(|k| crate::datastore::wal::leave_out(k, path, size, head))
    })
}

/// Where a volume copy reads from: a volume, mounted at the data directory
/// by a running (paused) container or by none.
struct Source<'a> {
    volume: &'a str,
    running: Option<&'a str>,
}

/// Copies the files of volume `from` into the empty volume `to` (both full
/// names), as datastore `ds` of kind `kind` sees them at `dir`: on this
/// host when the engine's directories of both volumes are here
/// (`Engine::host_volume_dir`), else, or when that fails, through the
/// archive API, with containers of the datastore's replica `spec` as the
/// ends (created, never started). Either way, the files the server never
/// reads are left out (`datastore::wal`).
#[allow(clippy::too_many_arguments)]
async fn copy_volume(
    engine: &Engine,
    spec: &ContainerSpec,
    project: &str,
    ds: &str,
    kind: Option<DatastoreKind>,
    from: Source<'_>,
    to: &str,
    dir: &str,
) -> Result<Copy, EngineError> {
    copy_volume_after(engine, spec, project, ds, kind, from, to, dir, None).await
}

/// As [`copy_volume`]; when `host_failed` says why a copy on this host
/// already failed, only the archive path is tried.
#[allow(clippy::too_many_arguments)]
async fn copy_volume_after(
    engine: &Engine,
    spec: &ContainerSpec,
    project: &str,
    ds: &str,
    kind: Option<DatastoreKind>,
    from: Source<'_>,
    to: &str,
    dir: &str,
    mut host_failed: Option<String>,
) -> Result<Copy, EngineError> {
    let leave_out = leave_out_for(kind);
    let dirs = match host_failed {
        Some(_) => (None, None),
        None => (
            engine.host_volume_dir(from.volume).await,
            engine.host_volume_dir(to).await,
        ),
    };
    if let (Some(src), Some(dst)) = dirs {
        let done = host_copy(&src, &dst, leave_out.clone()).await;
        match done {
            Ok(copied) => {
                return Ok(Copy {
                    on_host: true,
                    host_failed: None,
                    copied,
                })
            }
            Err(e) => {
                // Not half filled: the archive copy starts from nothing.
                let cleared = tokio::task::spawn_blocking(move || volcopy::empty_dir(&dst)).await;
                if !matches!(cleared, Ok(Ok(()))) {
                    return Err(EngineError::Api {
                        what: format!("copying `{}` into `{to}` on this host", from.volume),
                        message: e.to_string(),
                    });
                }
                host_failed = Some(e.to_string());
            }
        }
    }
    let target = helper(spec, project, &format!("{ds}-restore"), to, dir);
    let copied = match from.running {
        Some(id) => engine.move_data_filtered(id, &target, dir, leave_out).await,
        None => {
            let source = helper(spec, project, &format!("{ds}-snapshot"), from.volume, dir);
            let source_id = engine.create(&source).await?;
            let copied = engine
                .move_data_filtered(&source_id, &target, dir, leave_out)
                .await;
            let _ = engine.remove_with_volumes(&source_id).await;
            copied
        }
    }?;
    Ok(Copy {
        on_host: false,
        host_failed,
        copied: copied.unwrap_or_default(),
    })
}

/// `volcopy::copy_tree` from `src` into `dst`, off the async threads.
async fn host_copy(
    src: &std::path::Path,
    dst: &std::path::Path,
    leave_out: Arc<LeaveOut>,
) -> std::io::Result<Copied> {
    let (src, dst) = (src.to_path_buf(), dst.to_path_buf());
    tokio::task::spawn_blocking(move || volcopy::copy_tree(&src, &dst, &*leave_out))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// `volcopy::exchange` of two directories, off the async threads.
async fn host_exchange(a: &std::path::Path, b: &std::path::Path) -> Result<(), String> {
    let (a, b) = (a.to_path_buf(), b.to_path_buf());
    tokio::task::spawn_blocking(move || volcopy::exchange(&a, &b))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The snapshots of the project, oldest first.
pub async fn list(engine: &Engine, project: &str) -> Result<Vec<Snapshot>, EngineError> {
    let mut all: Vec<Snapshot> = engine
        .volumes_with_label(project, LABEL_SNAPSHOT)
        .await?
        .into_iter()
        .map(|v| Snapshot {
            name: v.labels.get(LABEL_SNAPSHOT).cloned().unwrap_or_default(),
            datastore: v.labels.get(LABEL_OF).cloned().unwrap_or_default(),
            image: v.labels.get(LABEL_IMAGE).cloned().unwrap_or_default(),
            taken: v
                .labels
                .get(LABEL_TIME)
                .and_then(|t| t.parse().ok())
                .unwrap_or_default(),
            format: v
                .labels
                .get(LABEL_FORMAT)
                .filter(|f| !f.is_empty())
                .cloned(),
            volume: v.name,
        })
        .collect();
    all.sort_by(|a, b| (a.taken, &a.name, &a.datastore).cmp(&(b.taken, &b.name, &b.datastore)));
    Ok(all)
}

/// The image reference a unit runs.
fn image_of(stack: &Stack, project: &str, unit: &str) -> String {
    stack
        .unit(unit)
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| names::built_image_tag(project, unit))
}

/// The command, run in a datastore's running container, whose output
/// tells the on-disk format its server reads: first the version an official
/// image's env gives, then the one the server binary reports.
fn server_version_probe(kind: DatastoreKind) -> Option<Vec<String>> {
    let script = match kind {
        DatastoreKind::Postgres => r#"echo "${PG_MAJOR:-}"; postgres -V 2>/dev/null || true"#,
        DatastoreKind::Mariadb | DatastoreKind::Mysql => {
            r#"echo "${MARIADB_VERSION:-${MYSQL_VERSION:-}}"; (mariadbd --version || mysqld --version) 2>/dev/null || true"#
        }
        _ => return None,
    };
    Some(vec!["sh".into(), "-c".into(), script.into()])
}

/// The on-disk format version of `kind`'s files for a server or file
/// version string: postgres's major version (`15`, or `9.6` before 10),
/// MariaDB's and MySQL's release series (`10.11`, `8.0`). A Debian epoch
/// (`1:`) and anything after the numbers are ignored. `None` for a kind
/// without one, or text with no version in it.
pub fn format_of_version(kind: DatastoreKind, version: &str) -> Option<String> {
    let version = version.trim();
    let version = match version.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.chars().all(|c| c.is_ascii_digit()) => {
            rest
        }
        _ => version,
    };
    let numbers: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?
        .split('.')
        .map_while(|n| n.parse().ok())
        .collect();
    let major = *numbers.first()?;
    let minor = numbers.get(1);
    match kind {
        DatastoreKind::Postgres if major >= 10 => Some(major.to_string()),
        DatastoreKind::Postgres | DatastoreKind::Mariadb | DatastoreKind::Mysql => {
            minor.map(|m| format!("{major}.{m}"))
        }
        _ => None,
    }
}

/// The format in a [`server_version_probe`]'s output: the env's version on
/// the first line when there is one, else the first version the server
/// binary printed (the first word that starts with a digit).
pub fn format_from_probe(kind: DatastoreKind, output: &str) -> Option<String> {
    let mut lines = output.lines();
    if let Some(found) = lines
        .next()
        .filter(|l| !l.trim().is_empty())
        .and_then(|l| format_of_version(kind, l))
    {
        return Some(found);
    }
    lines
        .flat_map(str::split_whitespace)
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|w| format_of_version(kind, w))
}

/// Whether snapshot `name`'s part of `ds`, whose files are of format
/// `recorded`, may go back into a server reading format `running`: refused
/// when both are known and differ, unless `force`. An unknown format on
/// either side (a snapshot from before formats were recorded, a datastore
/// not running) is not a difference; the image reference is still compared.
pub fn check_format(
    name: &str,
    ds: &str,
    kind: DatastoreKind,
    recorded: Option<&str>,
    running: Option<&str>,
    force: bool,
) -> Result<(), SnapshotError> {
    match (recorded, running) {
        (Some(was), Some(now)) if was != now && !force => Err(SnapshotError::Refused(format!(
            "snapshot `{name}` of `{ds}` holds {kind} {was} data files, and the running server is {kind} {now}, which may not read them (restore anyway with --force)",
            kind = kind.name()
        ))),
        _ => Ok(()),
    }
}

/// The text of file `path` in container `id` (running or not), read
/// through the engine's archive API; `None` when it is not there or unreadable.
async fn read_small_file(engine: &Engine, id: &str, path: &str) -> Option<String> {
    let scratch = tempfile::tempdir().ok()?;
    let tar_path = scratch.path().join("file.tar");
    engine.download_dir_to(id, path, &tar_path).await.ok()?;
    let file = std::fs::File::open(&tar_path).ok()?;
    let mut archive = tar::Archive::new(file);
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(&mut entry, 4096), &mut text).ok()?;
    Some(text)
}

/// The on-disk format of the files in `ds`'s data directory `dir`, read
/// from its running container `id` (postgres: `PG_VERSION`), else the
/// format its server reads.
async fn data_format(engine: &Engine, kind: DatastoreKind, id: &str, dir: &str) -> Option<String> {
    if kind == DatastoreKind::Postgres {
        let file = format!("{}/PG_VERSION", dir.trim_end_matches('/'));
        if let Some(found) = read_small_file(engine, id, &file)
            .await
            .and_then(|v| format_of_version(kind, &v))
        {
            return Some(found);
        }
    }
    server_format(engine, kind, id).await
}

/// The on-disk format the server in running container `id` reads.
async fn server_format(engine: &Engine, kind: DatastoreKind, id: &str) -> Option<String> {
    let argv = server_version_probe(kind)?;
    let out = engine
        .exec_capture(id, &argv, std::time::Duration::from_secs(30))
        .await
        .ok()?;
    if out.exit_code != Some(0) {
        return None;
    }
    format_from_probe(kind, &out.output)
}

/// The running first replica of datastore `ds`, if there is one.
fn running_replica<'a>(observed: &'a [Observed], ds: &str) -> Option<&'a Observed> {
    observed.iter().find(|o| {
        o.task.is_none()
            && o.service.as_deref() == Some(ds)
            && o.replica == Some(1)
            && o.state == ObservedState::Running
    })
}

/// Datastore `ds`'s first replica as it should be, to base helpers on.
pub(crate) async fn replica_spec(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    ds: &str,
) -> Result<ContainerSpec, SnapshotError> {
    let image = image_of(stack, project, ds);
    let image_id = engine.image_id(&image).await?.ok_or_else(|| {
        SnapshotError::Refused(format!(
            "the image `{image}` of `{ds}` is not present; run `devstack up` first"
        ))
    })?;
    let unit = plan::effective_unit(stack, ds)
        .ok_or_else(|| SnapshotError::Refused(format!("`{ds}` is not in the stack")))?;
    plan::desired_containers(
        project,
        ds,
        UnitKind::Datastore,
        &unit,
        &image,
        &image_id,
        1,
    )
    .into_iter()
    .next()
    .ok_or_else(|| SnapshotError::Refused(format!("`{ds}` has no replica")))
}

/// Takes snapshot `name` of `datastores` (all with a data volume when
/// empty) while the stack runs; each part with how it was copied.
pub async fn take(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    name: &str,
    datastores: &[String],
) -> Result<Vec<(Snapshot, Copy)>, SnapshotError> {
    check_name(name)?;
    let chosen = chosen(stack, datastores)?;
    if list(engine, project).await?.iter().any(|s| s.name == name) {
        return Err(SnapshotError::Refused(format!(
            "a snapshot `{name}` exists; remove it first (`devstack data rm {name}`) or choose another name"
        )));
    }
    let observed = engine.list_project(project).await?;
    let taken = u64::try_from(crate::engine::unix_now()).unwrap_or_default();
    let mut done = Vec::new();
    for ds in &chosen {
        let Some(running) = running_replica(&observed, ds) else {
            return Err(SnapshotError::Refused(format!(
                "datastore `{ds}` is not running; start it (`devstack up`) to snapshot it"
            )));
        };
        let Some((volume_name, dir)) = plan::data_volume(stack, ds) else {
            continue;
        };
        let image = image_of(stack, project, ds);
        let spec = replica_spec(engine, stack, project, ds).await?;
        let volume = volume_of(name, ds);
        let full = names::volume_name(project, &volume);
        let time = taken.to_string();
        let kind = stack.datastores.get(ds).map(|d| d.kind);
        let format = match kind {
            Some(kind) => data_format(engine, kind, &running.id, &dir).await,
            None => None,
        };
        let mut labels = vec![
            (LABEL_SNAPSHOT, name),
            (LABEL_OF, ds.as_str()),
            (LABEL_IMAGE, image.as_str()),
            (LABEL_TIME, time.as_str()),
        ];
        if let Some(f) = &format {
            labels.push((LABEL_FORMAT, f.as_str()));
        }
        engine.ensure_volume_with(project, &volume, &labels).await?;
        if let Some(kind) = kind {
            if let Some(argv) = crate::spec::kinds::flush(kind) {
                // Best effort: the paused copy is consistent as after a
                // power loss even without it; the flush only shortens recovery.
                let _ = engine
                    .exec_capture(&running.id, &argv, std::time::Duration::from_secs(60))
                    .await;
            }
        }
        let live = names::volume_name(project, &volume_name);
        if let Err(e) = pause(engine, &running.id).await {
            let _ = engine.remove_volume(&full).await;
            return Err(e.into());
        }
        let source = Source {
            volume: &live,
            running: Some(&running.id),
        };
        let copied = copy_volume(engine, &spec, project, ds, kind, source, &full, &dir).await;
        let resumed = engine.unpause(&running.id).await;
        let copy = match copied {
            Ok(c) => c,
            Err(e) => {
                let _ = engine.remove_volume(&full).await;
                return Err(e.into());
            }
        };
        resumed?;
        done.push((
            Snapshot {
                name: name.to_string(),
                datastore: ds.clone(),
                volume: full,
                image,
                taken,
                format,
            },
            copy,
        ));
    }
    Ok(done)
}

/// Pauses container `id`, trying again a few times: the cgroup freezer
/// gives up ("unable to freeze") when a process of a busy server does not
/// stop in time, and the next try usually catches it.
async fn pause(engine: &Engine, id: &str) -> Result<(), EngineError> {
    let mut tries = 0;
    loop {
        match engine.pause(id).await {
            Ok(()) => return Ok(()),
            Err(e) if tries >= 5 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
            }
        }
    }
}

/// Puts snapshot `name` back into the data volumes of `datastores` (all
/// the snapshot holds when empty); `up` then starts them. A snapshot of
/// another image reference, or of another on-disk format than the running
/// server reads, is refused unless `force`.
///
/// On this host ([`swap_in`]) the snapshot is copied into a staging volume
/// while the server still runs, so a copy that fails (a full disk) leaves
/// everything as it was; only then is the datastore's container killed
/// (its data is thrown away, so no shutdown checkpoint is waited for) and
/// the directories swapped. Otherwise ([`restore_by_copy`], through the
/// archive API) the container goes first and the copy goes into the
/// emptied volume.
pub async fn restore(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    name: &str,
    datastores: &[String],
    force: bool,
) -> Result<Restored, SnapshotError> {
    let parts = parts_of(engine, project, name, datastores).await?;
    let observed = engine.list_project(project).await?;
    for part in &parts {
        chosen(stack, std::slice::from_ref(&part.datastore))?;
        let image = image_of(stack, project, &part.datastore);
        if image != part.image && !force {
            return Err(SnapshotError::Refused(format!(
                "snapshot `{name}` of `{}` was taken with image `{}`, and the stack now runs `{image}`; its files may not be what this server reads (restore anyway with --force)",
                part.datastore, part.image
            )));
        }
        let Some(kind) = stack.datastores.get(&part.datastore).map(|d| d.kind) else {
            continue;
        };
        if force || part.format.is_none() {
            continue;
        }
        let running = match running_replica(&observed, &part.datastore) {
            Some(o) => server_format(engine, kind, &o.id).await,
            None => None,
        };
        check_format(
            name,
            &part.datastore,
            kind,
            part.format.as_deref(),
            running.as_deref(),
            force,
        )?;
    }
    for part in &parts {
        let previous = names::volume_name(project, &previous_volume(&part.datastore));
        if engine.volume_info(&previous).await?.is_some() {
            return Err(SnapshotError::Refused(format!(
                "volume `{previous}` holds `{}`'s data from before a restore that did not finish; take what you need from it, remove it (`docker volume rm {previous}`), then restore again",
                part.datastore
            )));
        }
    }
    let mut done = Restored::default();
    for part in &parts {
        let ds = &part.datastore;
        let Some((volume, dir)) = plan::data_volume(stack, ds) else {
            continue;
        };
        let spec = replica_spec(engine, stack, project, ds).await?;
        let kind = stack.datastores.get(ds).map(|d| d.kind);
        let here = Here {
            engine,
            project,
            ds,
            kind,
            volume: &volume,
            observed: &observed,
        };
        let copy = match swap_in(&here, part, &mut done.phases).await? {
            Swapped::Done(copy) => copy,
            Swapped::NotHere(host_failed) => {
                restore_by_copy(&here, &spec, part, &dir, host_failed, &mut done.phases).await?
            }
        };
        done.parts.push((ds.clone(), copy));
    }
    Ok(done)
}

/// Marks the volumes a restore of the datastore it names works with.
pub const LABEL_RESTORING: &str = "dev.devstack.restoring";

/// The volume (within the stack) a restore of `ds` copies the snapshot
/// into while the server still runs.
fn staging_volume(ds: &str) -> String {
    format!("restore-staging-{ds}")
}

/// The volume (within the stack) that holds `ds`'s data from before a
/// restore until the restored data is in place; left, and named in the
/// error, when a restore stops in between.
fn previous_volume(ds: &str) -> String {
    format!("restore-previous-{ds}")
}

/// The datastore a restore is putting back, and where.
struct Here<'a> {
    engine: &'a Engine,
    project: &'a str,
    ds: &'a str,
    kind: Option<DatastoreKind>,
    /// Its data volume, as the stack names it.
    volume: &'a str,
    observed: &'a [Observed],
}

impl Here<'_> {
    fn live(&self) -> String {
        names::volume_name(self.project, self.volume)
    }

    /// Kills and removes the datastore's containers (`up` makes them again).
    async fn stop(&self, phases: &mut Phases) -> Result<(), EngineError> {
        let t = std::time::Instant::now();
        let ids: Vec<&str> = self
            .observed
            .iter()
            .filter(|o| o.task.is_none() && o.service.as_deref() == Some(self.ds))
            .map(|o| o.id.as_str())
            .collect();
        // A forced removal kills: the data is thrown away, no shutdown is waited for.
        for r in futures::future::join_all(ids.iter().map(|id| self.engine.remove(id))).await {
            r?;
        }
        phases.since("stop", t);
        Ok(())
    }
}

/// How a restore on this host went.
enum Swapped {
    Done(Copy),
    /// Not possible here (the volumes' directories are not this host's), or
    /// the copy failed (why): nothing was touched.
    NotHere(Option<String>),
}

/// Restores `part` on this host, when the engine's directories of the
/// snapshot and data volumes are here: the snapshot's files are copied
/// into a staging volume while the server still runs; then the server is
/// killed and directories are exchanged (`rename`, atomic where the
/// filesystem can): the snapshot keeps the fresh copy, and its own files,
/// written when it was taken and long on disk, become the data volume's.
/// So the server, which syncs its whole data directory when it starts
/// after a crash, finds nothing left to write. The data volume is made
/// again (without the seed label, so it is never seeded over); the data
/// from before waits in [`previous_volume`] until the new data is in place.
async fn swap_in(
    here: &Here<'_>,
    part: &Snapshot,
    phases: &mut Phases,
) -> Result<Swapped, SnapshotError> {
    let engine = here.engine;
    let Some(snap_dir) = engine.host_volume_dir(&part.volume).await else {
        return Ok(Swapped::NotHere(None));
    };
    let live = here.live();
    let live_dir = match engine.volume_info(&live).await? {
        Some(_) => match engine.host_volume_dir(&live).await {
            Some(dir) => Some(dir),
            None => return Ok(Swapped::NotHere(None)),
        },
        None => None,
    };
    let staging_name = staging_volume(here.ds);
    let staging = names::volume_name(here.project, &staging_name);
    // Left by a restore that was killed: a copy of a snapshot, nothing more.
    engine.remove_volume(&staging).await?;
    engine
        .ensure_volume_with(here.project, &staging_name, &[(LABEL_RESTORING, here.ds)])
        .await?;
    let Some(stage_dir) = engine.host_volume_dir(&staging).await else {
        engine.remove_volume(&staging).await?;
        return Ok(Swapped::NotHere(None));
    };
    let t = std::time::Instant::now();
    let copied = host_copy(&snap_dir, &stage_dir, leave_out_for(here.kind)).await;
    // Both hold the same files: the snapshot takes the copy, whose pages
    // may not be on disk yet, and the server gets the files long written.
    let copied = match copied {
        Ok(c) => host_exchange(&snap_dir, &stage_dir).await.map(|()| c),
        Err(e) => Err(e.to_string()),
    };
    phases.since("copy", t);
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = engine.remove_volume(&staging).await;
            return Ok(Swapped::NotHere(Some(e)));
        }
    };
    let stopped = here.stop(phases).await;
    if let Err(e) = stopped {
        let _ = engine.remove_volume(&staging).await;
        return Err(e.into());
    }
    let t = std::time::Instant::now();
    let swapped = swap(here, &stage_dir, &staging, live_dir.as_deref()).await;
    phases.since("swap", t);
    swapped?;
    Ok(Swapped::Done(Copy {
        on_host: true,
        host_failed: None,
        copied,
    }))
}

/// With the server gone: the data volume's files set aside in
/// [`previous_volume`], the volume made again, the staged files (`stage_dir`
/// of volume `staging`) moved in, and what is left removed.
async fn swap(
    here: &Here<'_>,
    stage_dir: &std::path::Path,
    staging: &str,
    live_dir: Option<&std::path::Path>,
) -> Result<(), SnapshotError> {
    let engine = here.engine;
    let (project, ds, volume) = (here.project, here.ds, here.volume);
    let live = here.live();
    let previous_name = previous_volume(ds);
    let previous = names::volume_name(project, &previous_name);
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        SnapshotError::Refused(format!("restoring `{ds}` on this host: {what}: {e}"))
    };
    engine
        .remove_volume(&names::volume_name(project, &names::seeded_marker(volume)))
        .await?;
    if let Some(live_dir) = live_dir {
        engine
            .ensure_volume_with(project, &previous_name, &[(LABEL_RESTORING, ds)])
            .await?;
        let Some(prev_dir) = engine.host_volume_dir(&previous).await else {
            let _ = engine.remove_volume(&previous).await;
            return Err(failed(
                "setting the data aside",
                &format!("volume `{previous}` has no directory on this host"),
            ));
        };
        host_exchange(live_dir, &prev_dir)
            .await
            .map_err(|e| failed("setting the data aside", &e))?;
        // The data from before is in `previous` now, until the end.
        if let Err(e) = engine.remove_volume(&live).await {
            // Still used (by a container of another unit): put it back.
            return Err(match host_exchange(live_dir, &prev_dir).await {
                Ok(()) => {
                    let _ = engine.remove_volume(&previous).await;
                    failed(&format!("removing volume `{live}`"), &e)
                }
                Err(back) => kept(ds, &previous, &e.to_string(), &back),
            });
        }
    }
    let set_aside = |e: &dyn std::fmt::Display| match live_dir {
        Some(_) => kept(ds, &previous, "making the data volume again", e),
        None => failed("making the data volume", e),
    };
    // Made without the seed label: restored data is never seeded over.
    engine
        .ensure_volume(project, volume)
        .await
        .map_err(|e| set_aside(&e))?;
    let Some(new_dir) = engine.host_volume_dir(&live).await else {
        return Err(set_aside(&format!(
            "the new volume `{live}` has no directory on this host"
        )));
    };
    host_exchange(&new_dir, stage_dir)
        .await
        .map_err(|e| set_aside(&e))?;
    // What is left: the new volume's empty directory, and the data from before.
    let _ = engine.remove_volume(staging).await;
    if live_dir.is_some() {
        let _ = engine.remove_volume(&previous).await;
    }
    Ok(())
}

/// A restore that stopped with the data from before set aside in volume `previous`.
fn kept(ds: &str, previous: &str, what: &str, e: &dyn std::fmt::Display) -> SnapshotError {
    SnapshotError::Refused(format!(
        "restoring `{ds}` stopped half way ({what}: {e}); its data from before the restore is kept in volume `{previous}`"
    ))
}

/// Restores `part` by copying into the emptied data volume (the archive
/// path, or the host path when [`swap_in`] could not stage it): the
/// container goes, the volume is made again, the snapshot is copied in.
async fn restore_by_copy(
    here: &Here<'_>,
    spec: &ContainerSpec,
    part: &Snapshot,
    dir: &str,
    host_failed: Option<String>,
    phases: &mut Phases,
) -> Result<Copy, SnapshotError> {
    let engine = here.engine;
    here.stop(phases).await?;
    let t = std::time::Instant::now();
    let full = here.live();
    engine.remove_volume(&full).await?;
    engine
        .remove_volume(&names::volume_name(
            here.project,
            &names::seeded_marker(here.volume),
        ))
        .await?;
    // Made without the seed label: restored data is never seeded over.
    engine.ensure_volume(here.project, here.volume).await?;
    let source = Source {
        volume: &part.volume,
        running: None,
    };
    let copied = copy_volume_after(
        engine,
        spec,
        here.project,
        here.ds,
        here.kind,
        source,
        &full,
        dir,
        host_failed,
    )
    .await;
    phases.since("copy", t);
    match copied {
        Ok(copy) => Ok(copy),
        Err(e) => {
            // Not left half filled: the next `up` starts from nothing.
            let _ = engine.remove_volume(&full).await;
            Err(e.into())
        }
    }
}

/// The parts of snapshot `name` (of `datastores` only, unless empty); an
/// error when there is none.
async fn parts_of(
    engine: &Engine,
    project: &str,
    name: &str,
    datastores: &[String],
) -> Result<Vec<Snapshot>, SnapshotError> {
    let parts: Vec<Snapshot> = list(engine, project)
        .await?
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| datastores.is_empty() || datastores.contains(&s.datastore))
        .collect();
    if parts.is_empty() {
        return Err(SnapshotError::Refused(format!(
            "there is no snapshot `{name}`{} (see `devstack data ls`)",
            if datastores.is_empty() {
                String::new()
            } else {
                format!(" of {}", datastores.join(", "))
            }
        )));
    }
    Ok(parts)
}

/// Removes every volume of snapshot `name`; returns how many.
pub async fn remove(engine: &Engine, project: &str, name: &str) -> Result<usize, SnapshotError> {
    let parts = parts_of(engine, project, name, &[]).await?;
    for p in &parts {
        engine.remove_volume(&p.volume).await?;
    }
    Ok(parts.len())
}

/// Starts a copy of the stack (project `project`, usually another `-p`
/// than the snapshot's) from snapshot `name` of whichever project holds it:
/// each datastore whose data volume does not exist yet gets one filled from
/// the snapshot (never seeded over); existing volumes are kept. Returns the
/// datastores filled.
pub async fn branch(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    name: &str,
) -> Result<Vec<String>, SnapshotError> {
    check_name(name)?;
    let found = engine
        .volumes_with_label("", &format!("{LABEL_SNAPSHOT}={name}"))
        .await?;
    let mut owners: Vec<String> = found
        .iter()
        .filter_map(|v| v.labels.get(names::LABEL_PROJECT).cloned())
        .collect();
    owners.sort();
    owners.dedup();
    let owner = match owners.as_slice() {
        [] => {
            return Err(SnapshotError::Refused(format!(
                "no project has a snapshot `{name}` (see `devstack data ls`)"
            )))
        }
        [one] => one.clone(),
        more if more.iter().any(|p| p == project) => project.to_string(),
        more => {
            return Err(SnapshotError::Refused(format!(
            "projects {} each have a snapshot `{name}`; import the one you mean into this project",
            more.join(", ")
        )))
        }
    };
    let mut filled = Vec::new();
    for part in list(engine, &owner)
        .await?
        .into_iter()
        .filter(|s| s.name == name)
    {
        let ds = &part.datastore;
        let Some((volume, dir)) = plan::data_volume(stack, ds) else {
            continue;
        };
        let image = image_of(stack, project, ds);
        if image != part.image {
            return Err(SnapshotError::Refused(format!(
                "snapshot `{name}` of `{ds}` was taken with image `{}`, and this stack runs `{image}`",
                part.image
            )));
        }
        if !engine.ensure_volume(project, &volume).await? {
            continue;
        }
        let full = names::volume_name(project, &volume);
        let spec = replica_spec(engine, stack, project, ds).await?;
        let kind = stack.datastores.get(ds).map(|d| d.kind);
        let source = Source {
            volume: &part.volume,
            running: None,
        };
        let copied = copy_volume(engine, &spec, project, ds, kind, source, &full, &dir).await;
        if let Err(e) = copied {
            // Not left half filled: the next try starts from nothing.
            let _ = engine.remove_volume(&full).await;
            return Err(e.into());
        }
        filled.push(ds.clone());
    }
    Ok(filled)
}

/// The first entry of an export file: what it holds.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Manifest {
    /// The format of the file, for a later devstack to tell.
    format: u32,
    name: String,
    /// Each part's datastore, image and time; its data is the entry `<datastore>.tar`.
    parts: Vec<ManifestPart>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct ManifestPart {
    datastore: String,
    image: String,
    taken: u64,
    /// Absent in files from before formats were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<String>,
}

const MANIFEST: &str = "devstack-snapshot.json";

fn io_refused(what: &str, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Refused(format!("{what}: {e}"))
}

/// Writes snapshot `name` to `file`: a zstd-compressed tar of a manifest
/// and one tar per datastore (its data directory, owners and modes kept),
/// for `import` on another machine.
pub async fn export(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    name: &str,
    file: &std::path::Path,
) -> Result<usize, SnapshotError> {
    let parts = parts_of(engine, project, name, &[]).await?;
    let spool = tempfile::tempdir().map_err(|e| io_refused("making a scratch directory", e))?;
    let mut spooled = Vec::new();
    for part in &parts {
        let ds = &part.datastore;
        chosen(stack, std::slice::from_ref(ds))?;
        let Some((_, dir)) = plan::data_volume(stack, ds) else {
            continue;
        };
        let spec = replica_spec(engine, stack, project, ds).await?;
        let source = helper(
            &spec,
            project,
            &format!("{ds}-snapshot"),
            &part.volume,
            &dir,
        );
        let id = engine.create(&source).await?;
        let path = spool.path().join(format!("{ds}.tar"));
        let copied = engine.download_dir_to(&id, &dir, &path).await;
        let _ = engine.remove_with_volumes(&id).await;
        copied?;
        spooled.push((ds.clone(), path));
    }
    let manifest = Manifest {
        format: 1,
        name: name.to_string(),
        parts: parts
            .iter()
            .map(|p| ManifestPart {
                datastore: p.datastore.clone(),
                image: p.image.clone(),
                taken: p.taken,
                format: p.format.clone(),
            })
            .collect(),
    };
    let file = file.to_path_buf();
    let count = spooled.len();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let out = std::fs::File::create(&file)?;
        let mut tar = tar::Builder::new(zstd::Encoder::new(out, 3)?);
        let json = serde_json::to_vec_pretty(&manifest)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, MANIFEST, json.as_slice())?;
        for (ds, path) in &spooled {
            tar.append_path_with_name(path, format!("{ds}.tar"))?;
        }
        tar.into_inner()?.finish()?.sync_all()
    })
    .await
    .map_err(|e| io_refused("writing the export", e))?
    .map_err(|e| io_refused("writing the export", e))?;
    drop(spool);
    Ok(count)
}

/// Reads an export file into snapshot volumes of this project; returns the
/// snapshot's name. Refused when a snapshot of that name exists, or the
/// stack has no such datastore.
pub async fn import(
    engine: &Engine,
    stack: &Stack,
    project: &str,
    file: &std::path::Path,
) -> Result<String, SnapshotError> {
    let spool = tempfile::tempdir().map_err(|e| io_refused("making a scratch directory", e))?;
    let dir_path = spool.path().to_path_buf();
    let source = file.to_path_buf();
    let shown = file.display().to_string();
    let manifest = tokio::task::spawn_blocking(move || -> Result<Manifest, String> {
        let input = std::fs::File::open(&source).map_err(|e| e.to_string())?;
        let decoder = zstd::Decoder::new(input).map_err(|e| e.to_string())?;
        let mut tar = tar::Archive::new(decoder);
        let mut manifest = None;
        for entry in tar.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let path = entry.path().map_err(|e| e.to_string())?.into_owned();
            let name = path.to_string_lossy().into_owned();
            if name == MANIFEST {
                let mut text = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut text).map_err(|e| e.to_string())?;
                manifest =
                    Some(serde_json::from_slice::<Manifest>(&text).map_err(|e| e.to_string())?);
            } else if let Some(ds) = name.strip_suffix(".tar").filter(|d| {
                !d.is_empty()
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }) {
                let mut out = std::fs::File::create(dir_path.join(format!("{ds}.tar")))
                    .map_err(|e| e.to_string())?;
                std::io::copy(&mut entry, &mut out).map_err(|e| e.to_string())?;
            } else {
                return Err(format!("unexpected entry `{name}`"));
            }
        }
        manifest.ok_or_else(|| format!("no {MANIFEST} in it"))
    })
    .await
    .map_err(|e| io_refused(&format!("reading {shown}"), e))?
    .map_err(|e| SnapshotError::Refused(format!("{shown} is not a devstack export: {e}")))?;
    check_name(&manifest.name)?;
    if list(engine, project)
        .await?
        .iter()
        .any(|s| s.name == manifest.name)
    {
        return Err(SnapshotError::Refused(format!(
            "a snapshot `{}` exists; remove it first (`devstack data rm {}`)",
            manifest.name, manifest.name
        )));
    }
    for part in &manifest.parts {
        chosen(stack, std::slice::from_ref(&part.datastore))?;
    }
    for part in &manifest.parts {
        let ds = &part.datastore;
        let Some((_, dir)) = plan::data_volume(stack, ds) else {
            continue;
        };
        let tar = spool.path().join(format!("{ds}.tar"));
        if !tar.is_file() {
            return Err(SnapshotError::Refused(format!(
                "{shown} lists `{ds}` but holds no data for it"
            )));
        }
        let volume = volume_of(&manifest.name, ds);
        let full = names::volume_name(project, &volume);
        let time = part.taken.to_string();
        let mut labels = vec![
            (LABEL_SNAPSHOT, manifest.name.as_str()),
            (LABEL_OF, ds.as_str()),
            (LABEL_IMAGE, part.image.as_str()),
            (LABEL_TIME, time.as_str()),
        ];
        if let Some(f) = part.format.as_deref().filter(|f| !f.is_empty()) {
            labels.push((LABEL_FORMAT, f));
        }
        engine.ensure_volume_with(project, &volume, &labels).await?;
        let spec = replica_spec(engine, stack, project, ds).await?;
        let target = helper(&spec, project, &format!("{ds}-snapshot"), &full, &dir);
        let id = engine.create(&target).await?;
        // The tar holds `<basename>/...`: unpacked in the parent, as `move_data` does.
        let parent = match dir.trim_end_matches('/').rsplit_once('/') {
            Some((p, _)) if !p.is_empty() => p.to_string(),
            _ => "/".to_string(),
        };
        let copied = engine.upload_tar_from(&id, &parent, &tar).await;
        let _ = engine.remove_with_volumes(&id).await;
        if let Err(e) = copied {
            let _ = engine.remove_volume(&full).await;
            return Err(e.into());
        }
    }
    Ok(manifest.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_plain_words() {
        for good in ["before-migration", "bug_123", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "Has Space",
            "UPPER",
            "a/b",
            "a.b",
            &"x".repeat(41),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_versions_are_the_series_a_server_reads() {
        use DatastoreKind::*;
        let f = |k, v| format_of_version(k, v);
        assert_eq!(f(Postgres, "15\n").as_deref(), Some("15"));
        assert_eq!(f(Postgres, "15.18").as_deref(), Some("15"));
        assert_eq!(f(Postgres, "9.6").as_deref(), Some("9.6"));
        assert_eq!(f(Postgres, "9"), None, "9.x needs its minor");
        assert_eq!(
            f(Mariadb, "1:11.4.2+maria~ubu2204").as_deref(),
            Some("11.4")
        );
        assert_eq!(
            f(Mariadb, "10.11.18-MariaDB-0+deb12u1").as_deref(),
            Some("10.11")
        );
        assert_eq!(f(Mysql, "8.0.36-1.el8").as_deref(), Some("8.0"));
        assert_eq!(f(Postgres, "PostgreSQL"), None);
        assert_eq!(
            f(Redis, "7.2.4"),
            None,
            "redis is told by its image reference"
        );
    }

    #[test]
    fn a_probe_prefers_the_image_env_then_the_server_binary() {
        use DatastoreKind::*;
        assert_eq!(
            format_from_probe(Postgres, "15\npostgres (PostgreSQL) 16.1\n").as_deref(),
            Some("15")
        );
        assert_eq!(
            format_from_probe(
                Postgres,
                "\npostgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"
            )
            .as_deref(),
            Some("15")
        );
        assert_eq!(
            format_from_probe(
                Mariadb,
                "\nmariadbd  Ver 10.11.18-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n"
            )
            .as_deref(),
            Some("10.11")
        );
        assert_eq!(
            format_from_probe(
                Mysql,
                "\n/usr/sbin/mysqld  Ver 8.0.36 for Linux on x86_64\n"
            )
            .as_deref(),
            Some("8.0")
        );
        assert_eq!(
            format_from_probe(Postgres, "\nsh: postgres: not found\n"),
            None
        );
    }

    #[test]
    fn a_restore_of_another_format_is_refused_unless_forced() {
        let pg = DatastoreKind::Postgres;
        let refused = check_format("s", "pg", pg, Some("15"), Some("16"), false)
            .expect_err("15 files into a 16 server");
        let message = refused.to_string();
        assert!(message.contains("postgres 15 data files"), "{message}");
        assert!(message.contains("postgres 16"), "{message}");
        assert!(message.contains("--force"), "{message}");
        assert!(check_format("s", "pg", pg, Some("15"), Some("16"), true).is_ok());
        assert!(check_format("s", "pg", pg, Some("15"), Some("15"), false).is_ok());
        // Unknown on either side is no difference: the image reference still counts.
        assert!(check_format("s", "pg", pg, None, Some("16"), false).is_ok());
        assert!(check_format("s", "pg", pg, Some("15"), None, false).is_ok());
    }

    #[test]
    fn an_export_from_before_formats_reads_and_a_format_travels() {
        let old: Manifest = serde_json::from_str(
            r#"{"format":1,"name":"s","parts":[{"datastore":"pg","image":"i","taken":1}]}"#,
        )
        .expect("an old manifest reads");
        assert_eq!(old.parts[0].format, None);
        let new = Manifest {
            format: 1,
            name: "s".into(),
            parts: vec![ManifestPart {
                datastore: "pg".into(),
                image: "i".into(),
                taken: 1,
                format: Some("15".into()),
            }],
        };
        let back: Manifest =
            serde_json::from_slice(&serde_json::to_vec(&new).expect("writes")).expect("reads");
        assert_eq!(back.parts[0].format.as_deref(), Some("15"));
    }

    #[test]
    fn a_helper_mounts_only_the_volume_it_copies() {
        let spec = crate::plan::testing::unit("db").build();
        let spec =
            plan::desired_containers("p", "db", UnitKind::Datastore, &spec, "img", "sha256:1", 1)
                .remove(0);
        let h = helper(
            &spec,
            "p",
            "db-snapshot",
            "p_snapshot-s-db",
            "/var/lib/mysql",
        );
        assert_eq!(
            h.mounts,
            vec![MountSpec {
                source: MountSource::Volume("p_snapshot-s-db".into()),
                target: "/var/lib/mysql".into(),
                read_only: false,
            }]
        );
        assert!(h.ports.is_empty());
        assert_eq!(
            h.labels.get(names::LABEL_TASK).map(String::as_str),
            Some("db-snapshot")
        );
        assert!(names::task_container_owner(&h.name).is_some());
    }
}
