//! The edit-to-live fast path: when [`dockerfile::plan`] says the changed
//! files reach the image only through `COPY`/`ADD` steps after the final
//! stage's last `RUN`, the new image's file system is the previous image
//! plus those files. An [`Overlay`] holds them as the build would place
//! them (the context tar's modes: `0755` for directories and files with the
//! owner's execute bit, `0644` for others; its fixed mtime; root, or the
//! step's `--chown`), packed as one tar that goes into the new container
//! between its creation and its start. The real build runs behind it, and
//! is compared with what was placed ([`differences`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::dockerfile::{self, Changed, Placement, Plan, State};
use crate::engine::context;
use crate::spec::Build;

/// The mtime `tar`'s deterministic mode gives every entry of the build
/// context (so a copied file has it in the image).
pub const CONTEXT_MTIME: u64 = 1_153_704_088;

/// One entry of an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute in the image.
    pub dest: String,
    pub content: Content,
    /// `--chown` as written; root when `None`.
    pub chown: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    File { bytes: Vec<u8>, mode: u32 },
    Link(PathBuf),
    Directory,
}

/// The files a save placed, ready to pack into a new container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Directories first (outermost first), then files and links.
    pub entries: Vec<Entry>,
    /// A digest of every entry: what makes this version's configuration
    /// hash differ from the previous image's.
    pub digest: String,
    /// The context files placed, relative to the context.
    pub files: Vec<String>,
    /// The image the built stage starts from ([`dockerfile::root_image`]),
    /// whose `ONBUILD` triggers the caller checks.
    pub root: String,
}

impl Overlay {
    /// Whether packing needs the image's `/etc/passwd` and `/etc/group`.
    pub fn needs_names(&self) -> bool {
        self.entries.iter().any(|e| {
            e.chown
                .as_deref()
                .is_some_and(|c| c.split(':').any(|p| p.parse::<u64>().is_err()))
        })
    }

    /// The destinations of the files placed (not the directories).
    pub fn dests(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| !matches!(e.content, Content::Directory))
            .map(|e| e.dest.clone())
            .collect()
    }

    /// The tar to extract at `/` of the new container; `names` are the
    /// image's `/etc/passwd` and `/etc/group` (for `--chown` by name).
    pub fn pack(&self, names: Option<(&str, &str)>) -> Result<Vec<u8>, String> {
        let mut tar = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let (uid, gid) = match (&e.chown, names) {
                (None, _) => (0, 0),
                (Some(c), Some((passwd, group))) => dockerfile::resolve_chown(c, passwd, group)?,
                (Some(c), None) => dockerfile::resolve_chown(c, "", "")?,
            };
            let mut h = tar::Header::new_gnu();
            h.set_mtime(CONTEXT_MTIME);
            h.set_uid(uid);
            h.set_gid(gid);
            let path = e.dest.trim_start_matches('/');
            let io = |err: std::io::Error| format!("packing {}: {err}", e.dest);
            match &e.content {
                Content::Directory => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_cksum();
                    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
                        .map_err(io)?;
                }
                Content::File { bytes, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(bytes.len() as u64);
                    h.set_cksum();
                    tar.append_data(&mut h, path, bytes.as_slice())
                        .map_err(io)?;
                }
                Content::Link(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target).map_err(io)?;
                }
            }
        }
        tar.into_inner()
            .map_err(|e| format!("packing the overlay: {e}"))
    }
}

/// What `files` (changed paths, absolute) ask of `build`: the overlay that
/// makes the previous image the new one, or why the full build is needed.
pub fn overlay(build: &Build, files: &BTreeSet<PathBuf>) -> Result<Overlay, String> {
    let context = &build.context;
    let text = std::fs::read_to_string(context.join(&build.dockerfile))
        .map_err(|e| format!("reading the Dockerfile: {e}"))?;
    let df = dockerfile::parse(&text).map_err(|e| format!("the Dockerfile: {e}"))?;
    let ignore = context::dockerignore(context).map_err(|e| e.to_string())?;
    let mut changed: Vec<Changed> = Vec::new();
    let mut todo: Vec<PathBuf> = files.iter().cloned().collect();
    while let Some(f) = todo.pop() {
        let Some(rel) = dockerfile::relative(context, &f) else {
            return Err(format!("{} is outside the build context", f.display()));
        };
        let state = state_of(context, &f, &rel, &ignore)?;
        if state == State::Directory {
            // A directory made (or moved in): what it holds is copied, each
            // file placed like a changed one.
            let mut inner: Vec<PathBuf> = std::fs::read_dir(&f)
                .map_err(|e| format!("{rel}: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            if inner.is_empty() {
                return Err(format!("the empty directory {rel} is new"));
            }
            inner.retain(|p| !files.contains(p));
            todo.extend(inner);
            continue;
        }
        if !changed.iter().any(|c| c.path == rel) {
            changed.push(Changed { state, path: rel });
        }
    }
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    let placements =
        match dockerfile::plan(&df, &build.dockerfile, build.target.as_deref(), &changed) {
            Plan::Overlay(p) => p,
            Plan::Build(why) => return Err(why),
        };
    let Some(root) = dockerfile::root_image(&df, build.target.as_deref()) else {
        return Err("the image the stage starts from is not known without building".into());
    };
    entries(context, &placements, root)
}

/// What a changed path is now, as the builder would see it.
fn state_of(
    context: &Path,
    file: &Path,
    rel: &str,
    ignore: &ignore::gitignore::Gitignore,
) -> Result<State, String> {
    // A directory between the context and the file that is a link: the
    // builder would not follow it.
    let mut dir = file.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(context) && *d != context) {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{rel} is reached through a link"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::Deleted),
            Err(e) => return Err(format!("{rel}: {e}")),
        }
        dir = d.parent();
    }
    let meta = match std::fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::Deleted),
        Err(e) => return Err(format!("{rel}: {e}")),
    };
    let kind = meta.file_type();
    if ignore
        .matched_path_or_any_parents(file, kind.is_dir())
        .is_ignore()
    {
        return Ok(State::Ignored);
    }
    if kind.is_dir() {
        return Ok(State::Directory);
    }
    if kind.is_symlink() {
        return Ok(State::File);
    }
    if !kind.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    let mut head = [0u8; 262];
    let n = read_head(file, &mut head).map_err(|e| format!("{rel}: {e}"))?;
    Ok(if dockerfile::is_archive(&head[..n]) {
        State::Archive
    } else {
        State::File
    })
}

fn read_head(file: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut f = open_no_follow(file)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn open_no_follow(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
}

/// Reads each placed file as the context holds it.
fn entries(context: &Path, placements: &[Placement], root: String) -> Result<Overlay, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<Entry> = Vec::new();
    let mut files: Vec<Entry> = Vec::new();
    for p in placements {
        for parent in &p.parents {
            if !dirs.iter().any(|d| d.dest == *parent) {
                dirs.push(Entry {
                    dest: parent.clone(),
                    content: Content::Directory,
                    chown: p.chown.clone(),
                });
            }
        }
        let path = context.join(&p.file);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", p.file))?;
        let content = if meta.file_type().is_symlink() {
            Content::Link(std::fs::read_link(&path).map_err(|e| format!("{}: {e}", p.file))?)
        } else {
            let mut f = open_no_follow(&path).map_err(|e| format!("{}: {e}", p.file))?;
            let meta = f.metadata().map_err(|e| format!("{}: {e}", p.file))?;
            if !meta.is_file() {
                return Err(format!("{} was replaced while read", p.file));
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut bytes)
                .map_err(|e| format!("{}: {e}", p.file))?;
            // What the deterministic context tar gives it.
            let mode = if meta.permissions().mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            };
            Content::File { bytes, mode }
        };
        files.retain(|e| e.dest != p.dest);
        files.push(Entry {
            dest: p.dest.clone(),
            content,
            chown: p.chown.clone(),
        });
    }
    // A directory entry that is also a file's place would make the
    // builder's result depend on order: the full build decides.
    if let Some(d) = dirs.iter().find(|d| files.iter().any(|f| f.dest == d.dest)) {
        return Err(format!("{} is both a file and a directory", d.dest));
    }
    dirs.sort_by(|a, b| a.dest.cmp(&b.dest));
    let mut entries = dirs;
    entries.extend(files);
    let mut h = Sha256::new();
    for e in &entries {
        h.update(e.dest.as_bytes());
        h.update([0]);
        h.update(e.chown.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        match &e.content {
            Content::File { bytes, mode } => {
                h.update(mode.to_le_bytes());
                h.update(bytes);
            }
            Content::Link(t) => h.update(t.to_string_lossy().as_bytes()),
            Content::Directory => h.update(b"/"),
        }
        h.update([0]);
    }
    let digest = h
        .finalize()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Overlay {
        entries,
        digest,
        files: placements.iter().map(|p| p.file.clone()).collect(),
        root,
    })
}

/// One path as a tar (the engine's archive of it) holds it: what is
/// compared between the fast container and the real build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub digest: String,
}

/// The first entry of an archive of one path (`None` for an empty one).
pub fn listed(tar_bytes: &[u8]) -> Result<Option<Listed>, String> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entries = archive.entries().map_err(|e| e.to_string())?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry.map_err(|e| e.to_string())?;
    let h = entry.header().clone();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(Listed {
        kind: format!("{:?}", h.entry_type()),
        mode: h.mode().unwrap_or(0) & 0o7777,
        uid: h.uid().unwrap_or(0),
        gid: h.gid().unwrap_or(0),
        mtime: h.mtime().unwrap_or(0),
        link: entry
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.display().to_string()),
        digest: Sha256::digest(&bytes)
            .iter()
            .take(10)
            .map(|b| format!("{b:02x}"))
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temp dir");
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    fn build(dir: &Path) -> Build {
        Build {
            context: dir.to_path_buf(),
            dockerfile: "Dockerfile".into(),
            args: Default::default(),
            target: None,
        }
    }

    #[test]
    fn an_overlay_packs_files_as_the_context_tar_gives_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = context(&[
            (
                "Dockerfile",
                "FROM x\nWORKDIR /app\nCOPY --chown=app:7 . .\n",
            ),
            (".dockerignore", "*.env\n"),
            ("bin/run.sh", "#!/bin/sh\n"),
            ("secret.env", "KEY=1"),
        ]);
        let script = dir.path().join("bin/run.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let files: BTreeSet<PathBuf> = [script, dir.path().join("secret.env")].into();
        let o = overlay(&build(dir.path()), &files).expect("an overlay");
        assert_eq!(o.files, ["bin/run.sh"], "the ignored file is not placed");
        assert!(o.needs_names());
        let tar = o
            .pack(Some(("app:x:1000:1000::/:/bin/sh\n", "")))
            .expect("packs");
        let mut seen = Vec::new();
        for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            seen.push((
                e.path().unwrap().display().to_string(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("app/bin/".to_string(), 0o755, 1000, 7, CONTEXT_MTIME),
                ("app/bin/run.sh".to_string(), 0o755, 1000, 7, CONTEXT_MTIME),
            ]
        );
        // A user the image does not have: the full build says so.
        assert!(o.pack(Some(("", ""))).is_err());
    }

    #[test]
    fn a_new_directory_places_what_it_holds() {
        let dir = context(&[
            ("Dockerfile", "FROM x\nCOPY . /app/\n"),
            ("new/a.txt", "a"),
            ("new/deeper/b.txt", "b"),
        ]);
        let files: BTreeSet<PathBuf> = [dir.path().join("new")].into();
        let o = overlay(&build(dir.path()), &files).expect("an overlay");
        assert_eq!(o.files, ["new/a.txt", "new/deeper/b.txt"]);
        let dests: Vec<&str> = o.entries.iter().map(|e| e.dest.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/app/new",
                "/app/new/deeper",
                "/app/new/a.txt",
                "/app/new/deeper/b.txt"
            ]
        );
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let files: BTreeSet<PathBuf> = [dir.path().join("empty")].into();
        let why = overlay(&build(dir.path()), &files).unwrap_err();
        assert!(why.contains("empty directory"), "{why}");
    }

    #[test]
    fn a_deleted_file_or_an_archive_under_add_takes_the_full_build() {
        let dir = context(&[("Dockerfile", "FROM x\nADD . /app/\n"), ("a.txt", "a")]);
        let gone: BTreeSet<PathBuf> = [dir.path().join("gone.txt")].into();
        let why = overlay(&build(dir.path()), &gone).unwrap_err();
        assert!(why.contains("deleted"), "{why}");
        std::fs::write(dir.path().join("v.tgz"), [0x1f, 0x8b, 8, 0, 0]).unwrap();
        let tgz: BTreeSet<PathBuf> = [dir.path().join("v.tgz")].into();
        let why = overlay(&build(dir.path()), &tgz).unwrap_err();
        assert!(why.contains("unpacks"), "{why}");
    }
}
