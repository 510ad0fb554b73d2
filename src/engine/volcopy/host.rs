//! Copying a volume's files from directory to directory on this host
//! (Unix): cloned where the filesystem can, else copied in the kernel, else
//! read and written; owners, modes, times, extended attributes, symlinks,
//! hard links, device nodes and holes kept.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Copied, LeaveOut};
use crate::datastore::wal;

/// `FICLONE`: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Copies the contents of directory `src` into the existing, empty
/// directory `dst`, and gives `dst` the owner, mode and times of `src`.
/// Sockets are not copied (a socket file means nothing without its server).
pub fn copy_tree(src: &Path, dst: &Path, leave_out: &LeaveOut) -> io::Result<Copied> {
    let mut copy = TreeCopy {
        leave_out,
        links: HashMap::new(),
        done: Copied::default(),
        kernel_copy: true,
    };
    copy.dir(src, dst, "")?;
    let meta = fs::symlink_metadata(src).map_err(|e| with_path(src, e))?;
    copy.metadata(src, dst, &meta)?;
    Ok(copy.done)
}

/// Exchanges directories `a` and `b` (on one filesystem), atomically where
/// the filesystem can (`renameat2` with `RENAME_EXCHANGE`), else by three
/// renames through a name beside `a`.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (ca, cb) = (c_path(a)?, c_path(b)?);
        // SAFETY: two valid NUL-terminated paths; renameat2 reads only them.
        let done = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if done == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
            return Err(io::Error::new(
                e.kind(),
                format!("exchanging {} and {}: {e}", a.display(), b.display()),
            ));
        }
    }
    let mut aside = a.as_os_str().to_owned();
    aside.push(".devstack-exchange");
    let aside = PathBuf::from(aside);
    fs::rename(a, &aside).map_err(|e| with_path(a, e))?;
    if let Err(e) = fs::rename(b, a) {
        let _ = fs::rename(&aside, a);
        return Err(with_path(b, e));
    }
    fs::rename(&aside, b).map_err(|e| with_path(b, e))
}

/// Removes everything inside directory `dir` (after a failed copy).
pub fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

struct TreeCopy<'a> {
    leave_out: &'a LeaveOut,
    /// Files with more than one link: (device, inode) to the first copy.
    links: HashMap<(u64, u64), PathBuf>,
    done: Copied,
    /// Cleared when `copy_file_range` is not supported here (Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    kernel_copy: bool,
}

impl TreeCopy<'_> {
    fn dir(&mut self, src: &Path, dst: &Path, rel: &str) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(|e| with_path(src, e))?
            .collect::<io::Result<_>>()
            .map_err(|e| with_path(src, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let name = entry.file_name();
            let rel = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            let meta = fs::symlink_metadata(&from).map_err(|e| with_path(&from, e))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                fs::create_dir(&to).map_err(|e| with_path(&to, e))?;
                self.dir(&from, &to, &rel)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&from).map_err(|e| with_path(&from, e))?;
                std::os::unix::fs::symlink(&target, &to).map_err(|e| with_path(&to, e))?;
            } else if kind.is_file() {
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                        fs::hard_link(first, &to).map_err(|e| with_path(&to, e))?;
                        continue;
                    }
                    self.links.insert((meta.dev(), meta.ino()), to.clone());
                }
                if !self.file(&from, &to, &rel, meta.len())? {
                    continue;
                }
            } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
                let path = c_path(&to)?;
                // SAFETY: a valid NUL-terminated path; mknod reads only it.
                // (`as _`: mode_t and dev_t are narrower than Linux's elsewhere.)
                let made =
                    unsafe { libc::mknod(path.as_ptr(), meta.mode() as _, meta.rdev() as _) };
                if made != 0 {
                    return Err(with_path(&to, io::Error::last_os_error()));
                }
            } else {
                continue;
            }
            self.metadata(&from, &to, &meta)?;
        }
        Ok(())
    }

    /// Copies one regular file, unless left out; whether it was copied.
    fn file(&mut self, src: &Path, dst: &Path, rel: &str, len: u64) -> io::Result<bool> {
        let mut from = File::open(src).map_err(|e| with_path(src, e))?;
        let mut head = Vec::with_capacity(wal::HEAD_BYTES);
        (&mut from)
            .take(wal::HEAD_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| with_path(src, e))?;
        if (self.leave_out)(rel, len, &head) {
            self.done.left_out += 1;
            self.done.left_out_bytes += len;
            return Ok(false);
        }
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)
            .map_err(|e| with_path(dst, e))?;
        self.done.files += 1;
        self.done.bytes += len;
        // SAFETY: two open descriptors; FICLONE reads the source's number.
        if unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) } == 0 {
            self.done.cloned += 1;
            return Ok(true);
        }
        self.ranges(&from, &to, len)
            .map_err(|e| with_path(dst, e))?;
        to.set_len(len).map_err(|e| with_path(dst, e))?;
        Ok(true)
    }

    /// Copies the data of `from` into `to`, holes left as holes.
    fn ranges(&mut self, from: &File, to: &File, len: u64) -> io::Result<()> {
        let fd = from.as_raw_fd();
        let mut pos: u64 = 0;
        while pos < len {
            // SAFETY: lseek on an open descriptor.
            let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
            let (data, hole) = if data < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    // No data after `pos`: the rest is a hole.
                    Some(libc::ENXIO) => break,
                    // SEEK_DATA unsupported: all of it is data.
                    _ => (pos, len),
                }
            } else {
                let data = data as u64;
                // SAFETY: as above.
                let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
                (
                    data,
                    if hole < 0 {
                        len
                    } else {
                        (hole as u64).min(len)
                    },
                )
            };
            if data >= len {
                break;
            }
            self.range(from, to, data, hole)?;
            pos = hole.max(data + 1);
        }
        Ok(())
    }

    /// Copies bytes `start..end` of `from` to the same place in `to`: in
    /// the kernel (`copy_file_range`) on Linux, else through a buffer.
    fn range(&mut self, from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
        #[allow(unused_mut)]
        let mut at = start;
        #[cfg(target_os = "linux")]
        while at < end && self.kernel_copy {
            let mut off_in = at as libc::loff_t;
            let mut off_out = at as libc::loff_t;
            let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(1 << 30);
            // SAFETY: open descriptors and offsets that live through the call.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut off_in,
                    to.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n > 0 {
                at += n as u64;
            } else if n == 0 {
                // The source ended early: nothing more to copy.
                return Ok(());
            } else {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                        self.kernel_copy = false;
                    }
                    Some(libc::EINTR) => {}
                    _ => return Err(e),
                }
            }
        }
        let mut buf = vec![0u8; 1 << 20];
        while at < end {
            let want = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = std::os::unix::fs::FileExt::read_at(from, &mut buf[..want], at)?;
            if n == 0 {
                return Ok(());
            }
            std::os::unix::fs::FileExt::write_all_at(to, &buf[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Gives `dst` the owner, mode, extended attributes and times of `src`.
    fn metadata(&self, src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
        std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| with_path(dst, e))?;
        let symlink = meta.file_type().is_symlink();
        if !symlink {
            // After the owner: chown clears set-user-id bits.
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| with_path(dst, e))?;
        }
        copy_xattrs(src, dst);
        let times = [
            libc::timespec {
                tv_sec: meta.atime() as libc::time_t,
                tv_nsec: meta.atime_nsec() as _,
            },
            libc::timespec {
                tv_sec: meta.mtime() as libc::time_t,
                tv_nsec: meta.mtime_nsec() as _,
            },
        ];
        let path = c_path(dst)?;
        // SAFETY: a valid path and two timespecs.
        let set = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                path.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if set != 0 {
            return Err(with_path(dst, io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Copies the extended attributes of `src` to `dst`, as far as this
/// filesystem and this user allow (as `cp -a` does, a refused one is skipped).
/// Linux only: elsewhere a volume's files are inside the engine's VM, never
/// copied by this module.
#[cfg(not(target_os = "linux"))]
fn copy_xattrs(_src: &Path, _dst: &Path) {}

/// Copies the extended attributes of `src` to `dst`, as far as this
/// filesystem and this user allow (as `cp -a` does, a refused one is skipped).
#[cfg(target_os = "linux")]
fn copy_xattrs(src: &Path, dst: &Path) {
    let (Ok(s), Ok(d)) = (c_path(src), c_path(dst)) else {
        return;
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: a valid path and a buffer of the given length.
    let n = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return;
    }
    names.truncate(n as usize);
    let mut value = vec![0u8; 65536];
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = CString::new(name) else {
            continue;
        };
        // SAFETY: valid paths, name and a buffer of the given length.
        let len = unsafe {
            libc::lgetxattr(
                s.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        // SAFETY: as above; `len` bytes of `value` were written.
        unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                len as usize,
                0,
            );
        }
    }
}
