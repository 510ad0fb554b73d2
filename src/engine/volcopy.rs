//! Copying a volume's files into another volume, the two ways snapshots do it.
//!
//! - On this host ([`Engine::host_volume_dir`], [`copy_tree`]): when the
//!   engine is local (a unix socket) and a volume's directory, as the engine
//!   reports it, is this host's, files are copied from directory to
//!   directory: cloned (`FICLONE`, a reflink) where the filesystem can,
//!   else copied in the kernel (`copy_file_range`), else read and written;
//!   holes of sparse files stay holes; owners, modes, times, extended
//!   attributes, symlinks, hard links and device nodes are kept.
//! - Through the engine's archive API ([`Engine::move_data_filtered`]):
//!   a tar of the source container's directory streams into a helper
//!   container of the target volume, through [`filter_tar`], which leaves
//!   out the files a datastore can never read (see `datastore::wal`).
//!
//! Both ways take a `leave_out(path, size, head)` test over each regular
//! file (path relative to the copied directory, its first
//! [`wal::HEAD_BYTES`]).

#[cfg(unix)]
use std::fs;
use std::io;
use std::path::PathBuf;

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::io::{ReaderStream, StreamReader};

use super::{Engine, EngineError};
use crate::datastore::wal;
use crate::plan::ContainerSpec;

/// The test a copy asks of each regular file: leave it out?
pub type LeaveOut = dyn Fn(&str, u64, &[u8]) -> bool + Send + Sync;

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Regular files copied, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Regular files left out, and their bytes.
    pub left_out: u64,
    pub left_out_bytes: u64,
    /// Files cloned (reflinks) rather than copied.
    pub cloned: u64,
}

#[cfg(unix)]
mod host;
#[cfg(unix)]
pub use host::{copy_tree, empty_dir, exchange};

/// Copying on this host needs Unix's owners, modes and calls; elsewhere
/// (Docker Desktop on Windows) a volume's files are inside the engine's VM
/// and [`Engine::host_volume_dir`] finds none, so copies take the archive
/// path and these are never reached.
#[cfg(not(unix))]
mod host_elsewhere {
    use super::{Copied, LeaveOut};
    use std::io;
    use std::path::Path;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "copying a volume's files on this host needs a Unix host",
        )
    }
    pub fn copy_tree(_src: &Path, _dst: &Path, _leave_out: &LeaveOut) -> io::Result<Copied> {
        Err(unsupported())
    }
    pub fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
        Err(unsupported())
    }
    pub fn empty_dir(_dir: &Path) -> io::Result<()> {
        Err(unsupported())
    }
}
#[cfg(not(unix))]
pub use host_elsewhere::{copy_tree, empty_dir, exchange};

/// Seconds since the epoch of an RFC 3339 time as the engine writes it
/// (`2026-11-30T04:13:08Z`, `2026-11-30T05:13:08+01:00`, fractions ignored).
pub fn rfc3339_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        zone if zone.len() == 6 => {
            let sign = match &zone[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (zone.get(1..3)?.parse::<i64>().ok()? * 3600
                + zone.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

impl Engine {
    /// The directory on this host that holds volume `full_name`'s files,
    /// when there is one this process can read: the engine is local (a unix
    /// socket), the volume is a plain `local` one (no driver options, which
    /// would mount something else there only while it is in use), and its
    /// directory exists here and is the engine's: the local driver reports
    /// as the volume's `CreatedAt` a time of its directory as it is when
    /// asked (engines differ: the change or modification time of `_data`,
    /// or of the directory above it), which a same-named directory of
    /// another engine (a VM's, a forwarded socket's) would not share to the
    /// second. A directory that changes between the two looks (a running
    /// server's) is not trusted either: the copy then takes the archive path.
    /// `DEVSTACK_DATA_COPY=archive` turns this off (copies then go through
    /// the archive API).
    #[cfg(not(unix))]
    pub async fn host_volume_dir(&self, _full_name: &str) -> Option<PathBuf> {
        None
    }

    /// (See above.)
    #[cfg(unix)]
    pub async fn host_volume_dir(&self, full_name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        if !self.host.starts_with("unix://")
            || std::env::var("DEVSTACK_DATA_COPY").is_ok_and(|v| v == "archive")
        {
            return None;
        }
        let volume = self.docker.inspect_volume(full_name).await.ok()?;
        if volume.driver != "local" || !volume.options.is_empty() {
            return None;
        }
        let dir = PathBuf::from(&volume.mountpoint);
        let created = rfc3339_seconds(volume.created_at.as_deref()?)?;
        let here = fs::metadata(&dir).ok()?;
        let parent = fs::metadata(dir.parent()?).ok()?;
        // Reported to the second, truncated or rounded.
        let near = |t: i64| created == t || created == t + 1;
        let times = [here.ctime(), here.mtime(), parent.ctime(), parent.mtime()];
        if !here.is_dir() || !times.into_iter().any(near) {
            return None;
        }
        fs::read_dir(&dir).ok()?;
        Some(dir)
    }

    /// As `move_data`, with every regular file passed to `leave_out`: copies
    /// directory `dir` of container `from` (running, paused or only created)
    /// into a created helper container (`helper`), through the archive API.
    /// Returns what was left out; `None` when `from` has no `dir`.
    pub async fn move_data_filtered(
        &self,
        from: &str,
        helper: &ContainerSpec,
        dir: &str,
        leave_out: std::sync::Arc<LeaveOut>,
    ) -> Result<Option<Copied>, EngineError> {
        let dir = dir.trim_end_matches('/');
        let what = || format!("copying {dir} of `{from}` into `{}`", helper.name);
        let Some((id, parent)) = self.archive_helper(from, helper, dir, &what).await? else {
            return Ok(None);
        };
        let source = self
            .docker
            .download_from_container(
                from,
                Some(DownloadFromContainerOptions {
                    path: dir.to_string(),
                }),
            )
            .map(|c| c.map_err(io::Error::other));
        let (mut sink, pipe) = tokio::io::duplex(1 << 20);
        let (ok_tx, ok_rx) = tokio::sync::oneshot::channel::<bool>();
        let filter = async move {
            let mut result = filter_tar(StreamReader::new(source), &mut sink, &*leave_out).await;
            if result.is_ok() {
                if let Err(e) = sink.shutdown().await {
                    result = Err(e);
                }
            }
            drop(sink);
            let _ = ok_tx.send(result.is_ok());
            result
        };
        // The body ends with an error when the filter failed, so the engine
        // never takes a cut tar for a whole one.
        let tail = futures::stream::once(async move {
            match ok_rx.await {
                Ok(true) => None,
                _ => Some(Err(io::Error::other("the copy stopped"))),
            }
        })
        .filter_map(futures::future::ready);
        let body = ReaderStream::new(pipe).chain(tail);
        let upload = self.docker.upload_to_container(
            &id,
            Some(UploadToContainerOptions {
                path: parent,
                ..Default::default()
            }),
            bollard::body_try_stream(body),
        );
        let (filtered, uploaded) = tokio::join!(filter, upload);
        // Only the helper's own scratch volumes go; the named one stays.
        let removed = self.remove_with_volumes(&id).await;
        let copied = filtered.map_err(|e| EngineError::Api {
            what: what(),
            message: e.to_string(),
        })?;
        uploaded.map_err(|e| EngineError::api(what(), e))?;
        removed?;
        Ok(Some(copied))
    }
}

/// Size of a tar header's numeric field: octal text, or base-256 when its
/// first byte has the high bit set.
fn tar_number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(u64::from(b)))
                .ok_or_else(|| bad_tar("a size too large"))?;
        }
        return Ok(n);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| bad_tar("a size that is not a number"))
}

fn bad_tar(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the engine's tar has {what}"),
    )
}

/// The path in a ustar header: its prefix and name fields.
fn header_path(h: &[u8; 512]) -> String {
    let field = |r: std::ops::Range<usize>| {
        let f = &h[r];
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let name = field(0..100);
    // POSIX ustar has a prefix field; GNU tar uses those bytes for times.
    if &h[257..263] == b"ustar\0" {
        let prefix = field(345..500);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// A PAX extended header's `key` value.
fn pax_value(data: &[u8], key: &str) -> Option<String> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return found;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record
            .strip_prefix(key.as_bytes())
            .and_then(|r| r.strip_prefix(b"="))
        {
            found = Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = &rest[len..];
    }
    found
}

/// Reads a 512-byte block; `false` at a clean end of input.
async fn read_block<R: AsyncRead + Unpin>(r: &mut R, block: &mut [u8; 512]) -> io::Result<bool> {
    let mut got = 0;
    while got < 512 {
        let n = r.read(&mut block[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(bad_tar("a cut block"));
        }
        got += n;
    }
    Ok(true)
}

/// Passes exactly `n` bytes from `r` to `w` (to nowhere when `w` is `None`).
async fn pass<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: Option<&mut W>,
    n: u64,
) -> io::Result<()> {
    let mut part = r.take(n);
    let copied = match w {
        Some(w) => tokio::io::copy(&mut part, w).await?,
        None => tokio::io::copy(&mut part, &mut tokio::io::sink()).await?,
    };
    if copied == n {
        Ok(())
    } else {
        Err(bad_tar("a cut entry"))
    }
}

/// Copies tar `r` to `w` unchanged except for the regular files that
/// `leave_out` (given the path without its first component, the size and
/// the first [`wal::HEAD_BYTES`]) leaves out, which go with their extended
/// headers. Works block by block, so every other byte passes as it came
/// (PAX and GNU long-name headers, sparse and special entries included).
pub async fn filter_tar<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    w: &mut W,
    leave_out: &LeaveOut,
) -> io::Result<Copied> {
    let mut done = Copied::default();
    // Extended headers waiting for the entry they describe.
    let mut pending: Vec<u8> = Vec::new();
    let mut long_path: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    let mut header = [0u8; 512];
    loop {
        if !read_block(&mut r, &mut header).await? {
            w.write_all(&pending).await?;
            break;
        }
        if header.iter().all(|&b| b == 0) {
            // The end: the zero blocks and whatever padding follows pass as they are.
            w.write_all(&pending).await?;
            w.write_all(&header).await?;
            tokio::io::copy(&mut r, w).await?;
            break;
        }
        let size = tar_number(&header[124..136])?;
        let padded = size.div_ceil(512) * 512;
        let kind = header[156];
        match kind {
            b'x' | b'L' | b'K' => {
                if size > 1 << 20 {
                    return Err(bad_tar("an extended header over 1 MB"));
                }
                let mut data = vec![0u8; padded as usize];
                r.read_exact(&mut data).await?;
                match kind {
                    b'x' => {
                        let body = &data[..size as usize];
                        if let Some(p) = pax_value(body, "path") {
                            long_path = Some(p);
                        }
                        if let Some(s) = pax_value(body, "size").and_then(|s| s.parse().ok()) {
                            pax_size = Some(s);
                        }
                    }
                    b'L' => {
                        let body = &data[..size as usize];
                        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                        long_path = Some(String::from_utf8_lossy(&body[..end]).into_owned());
                    }
                    _ => {}
                }
                pending.extend_from_slice(&header);
                pending.extend_from_slice(&data);
                continue;
            }
            _ => {}
        }
        let path = long_path.take().unwrap_or_else(|| header_path(&header));
        let size = pax_size.take().unwrap_or(size);
        let padded = size.div_ceil(512) * 512;
        let regular = matches!(kind, b'0' | 0 | b'7');
        if regular && padded > 0 {
            let mut first = [0u8; 512];
            r.read_exact(&mut first).await?;
            let rel = path
                .trim_start_matches("./")
                .split_once('/')
                .map(|(_, rest)| rest)
                .unwrap_or("");
            let head = &first[..(size as usize).min(wal::HEAD_BYTES)];
            if !rel.is_empty() && leave_out(rel, size, head) {
                pending.clear();
                done.left_out += 1;
                done.left_out_bytes += size;
                pass::<_, W>(&mut r, None, padded - 512).await?;
                continue;
            }
            w.write_all(&pending).await?;
            pending.clear();
            w.write_all(&header).await?;
            w.write_all(&first).await?;
            pass(&mut r, Some(&mut *w), padded - 512).await?;
        } else {
            w.write_all(&pending).await?;
            pending.clear();
            w.write_all(&header).await?;
            pass(&mut r, Some(&mut *w), padded).await?;
        }
        if regular {
            done.files += 1;
            done.bytes += size;
        }
    }
    w.flush().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    #[test]
    fn engine_times_read_as_epoch_seconds() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2026-11-30T04:13:08Z"), Some(1_796_011_988));
        assert_eq!(
            rfc3339_seconds("2026-11-30T05:13:08.123456+01:00"),
            Some(1_796_011_988)
        );
        assert_eq!(
            rfc3339_seconds("2000-02-29T12:00:00-02:30"),
            Some(951_834_600)
        );
        assert_eq!(rfc3339_seconds("yesterday"), None);
        assert_eq!(rfc3339_seconds("2026-11-30T04:13:08"), None);
    }

    /// A tar of `entries` (path, content) under `data/`, with one long name.
    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o700);
        dir.set_size(0);
        dir.set_cksum();
        b.append_data(&mut dir, "data/", io::empty()).unwrap();
        let long = format!("data/{}/keep.txt", "d".repeat(120));
        for (path, content) in [
            ("data/a.txt", b"alpha".to_vec()),
            ("data/drop-me", vec![7u8; 3000]),
            (long.as_str(), b"long".to_vec()),
            ("data/empty", Vec::new()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_uid(999);
            h.set_size(content.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, path, content.as_slice()).unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_cksum();
        b.append_link(&mut link, "data/ln", "a.txt").unwrap();
        b.into_inner().unwrap()
    }

    fn listing(tar_bytes: &[u8]) -> Vec<(String, u64, u64)> {
        tar::Archive::new(tar_bytes)
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let uid = e.header().uid().unwrap_or(0);
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (path, content.len() as u64, uid)
            })
            .collect()
    }

    #[tokio::test]
    async fn the_tar_filter_drops_only_what_it_is_told_and_passes_the_rest_as_it_came() {
        let input = sample();
        let mut out = Vec::new();
        let none: &LeaveOut = &|_, _, _| false;
        let copied = filter_tar(input.as_slice(), &mut out, none).await.unwrap();
        assert_eq!(out, input, "nothing left out: byte for byte the same");
        assert_eq!((copied.files, copied.left_out), (4, 0));

        let mut out = Vec::new();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let drop: &LeaveOut = &move |path, size, head: &[u8]| {
            record
                .lock()
                .unwrap()
                .push((path.to_string(), size, head.to_vec()));
            path == "drop-me"
        };
        let copied = filter_tar(input.as_slice(), &mut out, drop).await.unwrap();
        assert_eq!((copied.left_out, copied.left_out_bytes), (1, 3000));
        let names: Vec<String> = listing(&out).into_iter().map(|e| e.0).collect();
        let long = format!("data/{}/keep.txt", "d".repeat(120));
        assert_eq!(
            names,
            vec![
                "data/",
                "data/a.txt",
                long.as_str(),
                "data/empty",
                "data/ln"
            ]
        );
        assert!(listing(&out)
            .iter()
            .all(|(p, _, uid)| p == "data/" || p == "data/ln" || *uid == 999));
        let seen = seen.lock().unwrap().clone();
        let drop_seen = seen.iter().find(|s| s.0 == "drop-me").unwrap();
        assert_eq!((drop_seen.1, drop_seen.2.len()), (3000, wal::HEAD_BYTES));
        assert!(seen
            .iter()
            .any(|s| s.0.ends_with("/keep.txt") && s.2 == b"long"));
    }

    #[tokio::test]
    async fn a_cut_tar_is_an_error_not_a_shorter_copy() {
        let input = sample();
        let cut = &input[..1200];
        let none: &LeaveOut = &|_, _, _| false;
        let mut out = Vec::new();
        assert!(filter_tar(cut, &mut out, none).await.is_err());
    }

    #[test]
    fn an_exchange_swaps_two_directories_whole() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("from-a"), b"A").unwrap();
        fs::write(b.join("from-b"), b"B").unwrap();
        exchange(&a, &b).unwrap();
        assert_eq!(fs::read(a.join("from-b")).unwrap(), b"B");
        assert_eq!(fs::read(b.join("from-a")).unwrap(), b"A");
        assert!(!a.join("from-a").exists() && !b.join("from-b").exists());
        let missing = root.path().join("missing");
        assert!(exchange(&a, &missing).is_err());
        assert_eq!(
            fs::read(a.join("from-b")).unwrap(),
            b"B",
            "a failed exchange moved nothing"
        );
    }

    #[test]
    fn a_tree_copy_keeps_owners_modes_links_holes_and_leaves_out_what_it_is_told() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir(s.join("sub")).unwrap();
        fs::write(s.join("sub/a"), b"alpha").unwrap();
        fs::set_permissions(s.join("sub/a"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(s.join("drop"), vec![1u8; 100]).unwrap();
        std::os::unix::fs::symlink("sub/a", s.join("ln")).unwrap();
        fs::hard_link(s.join("sub/a"), s.join("hard")).unwrap();
        // A sparse file: 8 MB with 4 KB of data in the middle.
        let sparse = File::create(s.join("sparse")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, &[9u8; 4096], 4 << 20).unwrap();
        drop(sparse);
        fs::set_permissions(s, fs::Permissions::from_mode(0o700)).unwrap();

        let copied = copy_tree(s, dst.path(), &|path, _, _| path == "drop").unwrap();
        let d = dst.path();
        assert_eq!((copied.left_out, copied.left_out_bytes), (1, 100));
        assert!(!d.join("drop").exists());
        assert_eq!(fs::read(d.join("sub/a")).unwrap(), b"alpha");
        assert_eq!(
            fs::metadata(d.join("sub/a")).unwrap().mode() & 0o7777,
            0o640
        );
        assert_eq!(fs::metadata(d).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(fs::read_link(d.join("ln")).unwrap(), Path::new("sub/a"));
        assert_eq!(
            fs::metadata(d.join("hard")).unwrap().ino(),
            fs::metadata(d.join("sub/a")).unwrap().ino()
        );
        let sparse = fs::metadata(d.join("sparse")).unwrap();
        assert_eq!(sparse.len(), 8 << 20);
        assert!(
            sparse.blocks() * 512 < 1 << 20,
            "the holes stayed holes: {} blocks",
            sparse.blocks()
        );
        let content = fs::read(d.join("sparse")).unwrap();
        assert_eq!(&content[4 << 20..(4 << 20) + 4096], &[9u8; 4096][..]);
        assert!(content[..4 << 20].iter().all(|&b| b == 0));
        assert_eq!(
            fs::metadata(d.join("sub/a")).unwrap().mtime(),
            fs::metadata(s.join("sub/a")).unwrap().mtime()
        );
    }
}
