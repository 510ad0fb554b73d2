//! `watch.action: sync`: the changed files are copied into the running
//! containers (no new image, no new container), then the stack's `then`
//! command runs in each. A change to a file matching `rebuild_on` (a
//! dependency manifest) needs a rebuild instead, which the caller does.
//!
//! What is copied is what the build context holds, never what it points
//! at: a symbolic link arrives as the same link (as `docker build` copies
//! it), a file reached through a linked directory is not synced, FIFOs,
//! sockets and devices are skipped without being opened (opening a FIFO
//! blocks until a writer comes), and setuid/setgid bits are dropped. Each
//! skipped file is named in the report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::swap::{Outcome, Report};
use super::WatchError;
use crate::engine::containers::Upload;
use crate::engine::Engine;
use crate::plan::ObservedState;

/// How long a `then` command may run before the sync is reported failed.
const THEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One service's sync rules.
#[derive(Debug)]
pub struct Syncer {
    /// The watched roots; a file's path below its root is its path below `target`.
    roots: Vec<(PathBuf, Gitignore)>,
    target: String,
    then: Option<Vec<String>>,
}

impl Syncer {
    pub fn new(
        service: &str,
        roots: &[PathBuf],
        target: &str,
        rebuild_on: &[String],
        then: Option<Vec<String>>,
    ) -> Result<Syncer, WatchError> {
        let mut out = Vec::new();
        for root in roots {
            let mut b = GitignoreBuilder::new(root);
            for p in rebuild_on {
                b.add_line(None, p).map_err(|e| WatchError::Pattern {
                    service: service.into(),
                    pattern: p.clone(),
                    message: e.to_string(),
                })?;
            }
            let m = b.build().map_err(|e| WatchError::Pattern {
                service: service.into(),
                pattern: rebuild_on.join(" "),
                message: e.to_string(),
            })?;
            out.push((root.clone(), m));
        }
        Ok(Syncer {
            roots: out,
            target: target.trim_end_matches('/').to_string(),
            then,
        })
    }

    /// Where `file` lands in the container, or `None` when it is under no root.
    pub fn destination(&self, file: &Path) -> Option<String> {
        self.roots.iter().find_map(|(root, _)| {
            let rel = file.strip_prefix(root).ok()?;
            let rel = rel.to_str()?;
            (!rel.is_empty()).then(|| format!("{}/{rel}", self.target))
        })
    }

    /// True when one of the files needs a rebuild (or is outside every root).
    pub fn needs_rebuild<'a>(&self, files: impl IntoIterator<Item = &'a PathBuf>) -> bool {
        files.into_iter().any(
            |f| match self.roots.iter().find(|(root, _)| f.starts_with(root)) {
                Some((root, m)) => f
                    .strip_prefix(root)
                    .map(|rel| m.matched_path_or_any_parents(rel, false).is_ignore())
                    .unwrap_or(true),
                None => true,
            },
        )
    }

    /// Copies (or deletes) `files` in every running container of `service`.
    pub async fn run(
        &self,
        engine: &Engine,
        project: &str,
        service: &str,
        trigger: &str,
        files: &BTreeSet<PathBuf>,
    ) -> Report {
        let t0 = Instant::now();
        let outcome = self.apply(engine, project, service, files).await;
        Report {
            service: service.into(),
            trigger: trigger.into(),
            build_ms: 0,
            swap_ms: t0.elapsed().as_millis() as u64,
            superseded: 0,
            overlay: None,
            full_build: None,
            outcome,
        }
    }

    async fn apply(
        &self,
        engine: &Engine,
        project: &str,
        service: &str,
        files: &BTreeSet<PathBuf>,
    ) -> Outcome {
        let failed = |message: String| Outcome::Failed { message };
        let observed = match engine.list_project(project).await {
            Ok(o) => o,
            Err(e) => return failed(e.to_string()),
        };
        let running: Vec<_> = observed
            .iter()
            .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
            .filter(|o| o.state == ObservedState::Running)
            .collect();
        // Read every file once, before touching any container: a file that
        // vanished is deleted there, one that cannot be read fails the sync.
        let Collected {
            entries,
            deletes,
            skipped,
        } = match self.collect(files) {
            Ok(c) => c,
            Err(message) => return failed(message),
        };
        let mut names = Vec::new();
        for c in &running {
            for entry in &entries {
                if let Err(e) = engine.upload(&c.id, &entry.dest, entry.upload()).await {
                    return failed(e.to_string());
                }
            }
            if !deletes.is_empty() {
                let mut argv = vec!["rm".to_string(), "-f".into(), "--".into()];
                argv.extend(deletes.iter().cloned());
                if let Err(e) = engine.exec_capture(&c.id, &argv, THEN_TIMEOUT).await {
                    return failed(e.to_string());
                }
            }
            if let Some(then) = &self.then {
                match engine.exec_capture(&c.id, then, THEN_TIMEOUT).await {
                    Ok(out) if out.exit_code == Some(0) => {}
                    Ok(out) => {
                        return failed(format!(
                            "`{}` in `{}` exited with {:?}: {}",
                            then.join(" "),
                            c.name,
                            out.exit_code,
                            out.output.trim()
                        ))
                    }
                    Err(e) => return failed(e.to_string()),
                }
            }
            names.push(c.name.clone());
        }
        Outcome::Synced {
            files: entries.len() + deletes.len(),
            containers: names,
            skipped,
        }
    }

    /// What `files` ask of the containers, read from the context.
    fn collect(&self, files: &BTreeSet<PathBuf>) -> Result<Collected, String> {
        let mut c = Collected::default();
        for f in files {
            let Some(dest) = self.destination(f) else {
                continue;
            };
            let Some((root, _)) = self.roots.iter().find(|(root, _)| f.starts_with(root)) else {
                continue;
            };
            match read_entry(root, f) {
                Ok(Read::Entry(content)) => c.entries.push(Entry { dest, content }),
                Ok(Read::Gone) => c.deletes.push(dest),
                Ok(Read::Directory) => {}
                Ok(Read::Skipped(why)) => c.skipped.push(format!("{}: {why}", f.display())),
                Err(e) => return Err(format!("reading {}: {e}", f.display())),
            }
        }
        Ok(c)
    }
}

/// What a burst of changed files asks of the containers.
#[derive(Debug, Default)]
struct Collected {
    entries: Vec<Entry>,
    /// Destinations of files that no longer exist.
    deletes: Vec<String>,
    /// Files not synced, each with why.
    skipped: Vec<String>,
}

/// One file or link to write, at `dest` in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    dest: String,
    content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    File { bytes: Vec<u8>, mode: u32 },
    Link(PathBuf),
}

impl Entry {
    fn upload(&self) -> Upload<'_> {
        match &self.content {
            Content::File { bytes, mode } => Upload::File { bytes, mode: *mode },
            Content::Link(target) => Upload::Link { target },
        }
    }
}

/// What reading one changed file found.
#[derive(Debug)]
enum Read {
    Entry(Content),
    Gone,
    Directory,
    /// Not synced, with why.
    Skipped(String),
}

/// Reads `file` (below `root`) as the context holds it, following no link.
fn read_entry(root: &Path, file: &Path) -> std::io::Result<Read> {
    // A directory between the root and the file that is a link would lead
    // out of the context (notify may report paths below it).
    let mut dir = file.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() => {
                return Ok(Read::Skipped(format!(
                    "reached through the link {}, which sync does not follow",
                    d.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Gone),
            Err(e) => return Err(e),
        }
        dir = d.parent();
    }
    let meta = match std::fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Gone),
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        return Ok(Read::Directory);
    }
    if kind.is_symlink() {
        return Ok(Read::Entry(Content::Link(std::fs::read_link(file)?)));
    }
    if !kind.is_file() {
        #[cfg(unix)]
        let what = {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "a device"
            }
        };
        #[cfg(not(unix))]
        let what = "not a regular file";
        return Ok(Read::Skipped(format!("{what}, not synced")));
    }
    // Opened without following a link and without blocking, then checked
    // again: the path may have been swapped for a link or a FIFO since.
    let mut opened = match open_no_follow(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Gone),
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Read::Skipped("replaced while read, not synced".into()))
        }
        Err(e) => return Err(e),
    };
    let meta = opened.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(Read::Skipped("replaced while read, not synced".into()));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut opened, &mut bytes)?;
    Ok(Read::Entry(Content::File {
        bytes,
        // The permission bits, so a synced script stays executable; never
        // setuid, setgid or sticky.
        mode: file_mode(&meta),
    }))
}

/// The permission bits of a file (Unix); elsewhere what a build context
/// sent from there gets: 0644, 0444 if read-only.
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() {
            0o444
        } else {
            0o644
        }
    }
}

#[cfg(unix)]
fn open_no_follow(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
}

/// Elsewhere the file is opened as named; the type check after the open
/// still refuses anything but a regular file.
#[cfg(not(unix))]
fn open_no_follow(file: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_under_the_target_and_manifests_rebuild() {
        let s = Syncer::new(
            "web",
            &[PathBuf::from("/src/web")],
            "/app/",
            &["requirements.txt".into(), "package.json".into()],
            None,
        )
        .unwrap();
        assert_eq!(
            s.destination(Path::new("/src/web/sub/a.py")).as_deref(),
            Some("/app/sub/a.py")
        );
        assert_eq!(s.destination(Path::new("/elsewhere/a.py")), None);
        let code = [PathBuf::from("/src/web/a.py")];
        assert!(!s.needs_rebuild(&code));
        let manifest = [
            PathBuf::from("/src/web/a.py"),
            PathBuf::from("/src/web/requirements.txt"),
        ];
        assert!(s.needs_rebuild(&manifest));
        assert!(s.needs_rebuild(&[PathBuf::from("/src/web/lib/package.json")]));
    }

    /// A context holding what a careless or hostile checkout may: a link to
    /// a secret outside it, a directory link leading out, a FIFO, a setuid
    /// script; and the tars sync would send for it.
    #[test]
    fn sync_sends_links_as_links_and_skips_what_is_not_a_file() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("home");
        std::fs::create_dir(&outside).unwrap();
        let secret = outside.join("id_ed25519");
        std::fs::write(&secret, "PRIVATE KEY").unwrap();
        let ctx = tmp.path().join("web");
        std::fs::create_dir(&ctx).unwrap();
        let script = ctx.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o6755)).unwrap();
        symlink(&secret, ctx.join("key")).unwrap();
        symlink(&outside, ctx.join("home")).unwrap();
        let fifo = ctx.join("pipe");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let files: BTreeSet<PathBuf> = [
            script.clone(),
            ctx.join("key"),
            ctx.join("home/id_ed25519"),
            fifo.clone(),
            ctx.join("gone.txt"),
        ]
        .into();
        let sync = Syncer::new("web", std::slice::from_ref(&ctx), "/app", &[], None).unwrap();

        // Bounded: opening the FIFO would block this thread for good.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(sync.collect(&files));
        });
        let c = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("collecting blocked (a FIFO was opened?)")
            .expect("collects");

        assert_eq!(c.deletes, ["/app/gone.txt"]);
        let skipped = c.skipped.join("\n");
        assert_eq!(c.skipped.len(), 2, "{skipped}");
        assert!(skipped.contains("pipe: a FIFO"), "{skipped}");
        assert!(
            skipped.contains("home/id_ed25519: reached through the link"),
            "{skipped}"
        );
        assert_eq!(c.entries.len(), 2, "{:?}", c.entries);

        // The tars: the link is a link to the same target, no content; the
        // script keeps its rwx bits but not setuid/setgid.
        let mut seen = Vec::new();
        for e in &c.entries {
            let tar = crate::engine::containers::pack_upload(&e.dest, e.upload()).unwrap();
            assert!(
                !tar.windows(11).any(|w| w == b"PRIVATE KEY"),
                "the secret's content is in the tar of {}",
                e.dest
            );
            let mut archive = tar::Archive::new(tar.as_slice());
            for entry in archive.entries().unwrap() {
                let entry = entry.unwrap();
                let h = entry.header();
                seen.push((
                    entry.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    entry.link_name().unwrap().map(|l| l.display().to_string()),
                    h.size().unwrap(),
                ));
            }
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            [
                (
                    "app/key".to_string(),
                    tar::EntryType::Symlink,
                    0o777,
                    Some(secret.display().to_string()),
                    0
                ),
                (
                    "app/run.sh".to_string(),
                    tar::EntryType::Regular,
                    0o755,
                    None,
                    10
                ),
            ]
        );
    }
}
