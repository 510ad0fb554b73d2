//! Durability: the write-ahead log in the data directory, its replay at
//! start-up, and the group commit that lets many writers share one fsync.
//!
//! The log is a sequence of frames `[len u32][crc32 u32][payload]`. A payload
//! is a revision's changes, a compaction, or a base (the live keys at a
//! compaction, written when the log is rewritten at start-up).
//!
//! At replay, a torn tail (the last frame runs past the end of the file, or a
//! sector of it never reached the disk and reads as zeroes, as etcd's
//! `isTornEntry` judges) is cut off: nothing in it was ever acknowledged,
//! because a write is acknowledged only after the fsync that covers it. Any
//! other bad frame is corruption of acknowledged data, and the log refuses
//! to open, naming the file and the byte offset, as etcd does.
//!
//! **Invariant:** one process at a time uses a data directory: [`DirLock`]
//! (an `flock` on `lock` inside it) is taken before anything in it is read,
//! and [`Wal::open`] needs it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

use super::store::{EventKind, KeyValue, Record, Store};

const TAG_RECORD: u8 = 1;
const TAG_COMPACT: u8 = 2;
const TAG_BASE: u8 = 3;
const WAL_FILE: &str = "wal";
const LOCK_FILE: &str = "lock";
/// The unit a torn write is judged in: a sector that never reached the disk
/// reads as zeroes (etcd's `minSectorSize`).
const SECTOR: usize = 512;

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("cannot use data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another devstack etcd{}; stop it first, or give this one another --data-dir",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { path: PathBuf, holder: Option<u32> },
    #[error(
        "{path}: corrupt record at byte offset {offset} ({reason}); refusing to start, because records after it were acknowledged to clients. Move the file aside to start with an empty store"
    )]
    Corrupt {
        path: PathBuf,
        offset: usize,
        reason: &'static str,
    },
}

/// Exclusive use of a data directory, for as long as this value lives: an
/// `flock` on its `lock` file, which also names the holder's pid for the
/// error a second server gets. The kernel drops the lock when the process
/// dies, so a crash never leaves the directory locked.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // flock(2) on Unix, LockFileEx on Windows.
        if let Err(held) = file.try_lock() {
            if let std::fs::TryLockError::Error(err) = held {
                return Err(io_err(&path)(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(WalError::InUse {
                path: dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        // Only the holder writes its pid, so a reader sees a whole one.
        file.set_len(0).map_err(io_err(&path))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io_err(&path))?;
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How far the log is on disk: every entry up to `seq` is durable, and the
/// store revision after the last of them is `rev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub seq: u64,
    pub rev: i64,
    /// The log could not be written: nothing more will become durable.
    pub broken: bool,
}

/// What the appenders share with the writer thread.
struct Pending {
    /// Framed entries not yet handed to the writer.
    buf: Vec<u8>,
    /// Sequence number of the last appended entry.
    seq: u64,
    /// Store revision after the last appended entry.
    rev: i64,
    closing: bool,
}

/// The log's appending end. Entries are appended while the store lock is held,
/// so the log order is the apply order.
pub struct Wal {
    shared: Arc<(Mutex<Pending>, Condvar)>,
    durable: Arc<watch::Sender<Durable>>,
    /// `None` for an in-memory server: entries are durable as soon as appended.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    on_disk: bool,
}

impl Wal {
    /// Appends one entry; returns its sequence number, to wait on.
    pub fn append(&self, payload: &[u8], rev: i64) -> u64 {
        let (lock, cond) = &*self.shared;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        p.seq += 1;
        p.rev = rev;
        if self.on_disk && self.durable.borrow().broken {
            // The writer has stopped: nothing more becomes durable, and
            // buffering it would only grow memory.
        } else if self.on_disk {
            frame(payload, &mut p.buf);
            cond.notify_one();
        } else {
            let (seq, rev) = (p.seq, p.rev);
            self.durable.send_modify(|d| {
                d.seq = seq;
                d.rev = rev;
            });
        }
        p.seq
    }

    /// The sequence number of the last appended entry.
    pub fn last_seq(&self) -> u64 {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).seq
    }

    pub fn subscribe(&self) -> watch::Receiver<Durable> {
        self.durable.subscribe()
    }

    /// Whether the log has failed: no further write will become durable.
    pub fn is_broken(&self) -> bool {
        self.durable.borrow().broken
    }

    /// Waits until entry `seq` is on disk. `false` if the log broke first.
    pub async fn wait(&self, seq: u64) -> bool {
        let mut rx = self.durable.subscribe();
        let result = rx.wait_for(|d| d.broken || d.seq >= seq).await;
        match result {
            Ok(d) => !d.broken,
            Err(_) => false,
        }
    }

    /// Writes out what is pending and stops the writer thread.
    pub fn close(&self) {
        {
            let (lock, cond) = &*self.shared;
            let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
            p.closing = true;
            cond.notify_one();
        }
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// An in-memory log for a server without a data directory.
    pub fn memory(rev: i64) -> Wal {
        let (shared, durable) = Wal::fresh(rev);
        Wal {
            shared,
            durable,
            writer: Mutex::new(None),
            on_disk: false,
        }
    }

    /// Nothing pending and everything durable up to `rev`.
    #[allow(clippy::type_complexity)]
    fn fresh(rev: i64) -> (Arc<(Mutex<Pending>, Condvar)>, Arc<watch::Sender<Durable>>) {
        let (tx, _) = watch::channel(Durable {
            seq: 0,
            rev,
            broken: false,
        });
        let pending = Pending {
            buf: Vec::new(),
            seq: 0,
            rev,
            closing: false,
        };
        (
            Arc::new((Mutex::new(pending), Condvar::new())),
            Arc::new(tx),
        )
    }

    /// Opens (or creates) the log in `dir`, replays it into `store`, rewrites
    /// it if compaction left history behind, and starts the writer thread.
    pub fn open(lock: &DirLock, store: &mut Store) -> Result<Wal, WalError> {
        let dir = lock.dir();
        let path = dir.join(WAL_FILE);
        let mut data = Vec::new();
        if path.exists() {
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io_err(&path))?;
        }
        let (valid_len, stale) = replay(&data, store).map_err(|c| WalError::Corrupt {
            path: path.clone(),
            offset: c.offset,
            reason: c.reason,
        })?;
        if stale > 0 {
            rewrite(dir, store)?;
        } else if valid_len < data.len() {
            // Cut the torn tail (or the zeroes written ahead) so new frames
            // follow the last good one.
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(valid_len as u64).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(dir)?;
        // New frames go right after the last good one; what follows is
        // zeroes written ahead (see `write_loop`) or nothing.
        let end = if stale > 0 {
            file.metadata().map_err(io_err(&path))?.len()
        } else {
            valid_len as u64
        };
        let (shared, durable) = Wal::fresh(store.rev());
        let writer = {
            let shared = shared.clone();
            let durable = durable.clone();
            std::thread::Builder::new()
                .name("etcd-wal".into())
                .spawn(move || write_loop(file, end, path, shared, durable))
                .map_err(io_err(dir))?
        };
        Ok(Wal {
            shared,
            durable,
            writer: Mutex::new(Some(writer)),
            on_disk: true,
        })
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

/// How far ahead of the last frame the log file is filled with zeroes.
const ZERO_AHEAD: u64 = 4 << 20;
/// How long the log must be idle before zeroes are written ahead.
const IDLE_BEFORE_ZEROING: std::time::Duration = std::time::Duration::from_millis(50);
/// How much is zeroed at a time while the writer is idle.
const ZERO_STEP: u64 = 256 << 10;

/// Writes all of `buf` at `offset` of `file` (pwrite on Unix; a seek and
/// write on Windows, where only the writer thread writes the log).
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_write(
                file,
                &buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Fills `[from, to)` of the file with zeroes and syncs it, so that later
/// frames overwrite allocated blocks of a file whose size does not change:
/// their fdatasync then writes data only, not the file's metadata. (A run
/// of zeroes reads as the end of the log at replay.)
fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeroes = vec![0u8; 256 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeroes.len() as u64) as usize;
        write_all_at(file, &zeroes[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

/// The writer thread: takes everything appended since the last round, writes
/// it and fsyncs once. Appends that arrive during an fsync wait for the next
/// round together, which is the group commit.
fn write_loop(
    file: File,
    mut offset: u64,
    path: PathBuf,
    shared: Arc<(Mutex<Pending>, Condvar)>,
    durable: Arc<watch::Sender<Durable>>,
) {
    let (lock, cond) = &*shared;
    let mut buf = Vec::new();
    let mut zeroed = file.metadata().map(|m| m.len()).unwrap_or(0).max(offset);
    // Zeroing ahead is only an optimisation: once it fails (a full disk),
    // the log simply grows with its frames.
    let mut zeroing = true;
    // A failed write (a full disk, an I/O error) may have left part of its
    // frames in the file. They are cut off again, so that the log ends with
    // the last acknowledged frame and the next start does not take the
    // remains for a torn tail or for corruption; and the log stops, because
    // the store in memory now holds a revision the disk does not.
    let fail = |e: std::io::Error, good_end: u64| {
        let cut = file.set_len(good_end).and_then(|_| file.sync_data());
        let _ = writeln!(
            std::io::stderr(),
            "etcd: writing {}: {e}; no further writes will be acknowledged{}",
            path.display(),
            match cut {
                Ok(()) => String::new(),
                Err(e) => format!(" (cutting the partial write also failed: {e})"),
            }
        );
        durable.send_modify(|d| d.broken = true);
    };
    loop {
        // Zeroes are written ahead only once the log has been idle for a
        // moment, one small step at a time, so writes never queue behind them.
        let (seq, rev, closing) = {
            let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if !p.buf.is_empty() || p.closing {
                    break;
                }
                if !zeroing || zeroed >= offset + ZERO_AHEAD / 2 {
                    p = cond.wait(p).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                let (next, timeout) = cond
                    .wait_timeout(p, IDLE_BEFORE_ZEROING)
                    .unwrap_or_else(|e| e.into_inner());
                p = next;
                if timeout.timed_out() {
                    break;
                }
            }
            std::mem::swap(&mut buf, &mut p.buf);
            (p.seq, p.rev, p.closing)
        };
        if buf.is_empty() && !closing {
            if zero_fill(&file, zeroed, zeroed + ZERO_STEP).is_err() {
                // Give back what the partial zeroing took; zeroes past the
                // last frame would read as the end of the log anyway.
                let _ = file.set_len(zeroed);
                zeroing = false;
            } else {
                zeroed += ZERO_STEP;
            }
            continue;
        }
        if !buf.is_empty() {
            let end = offset + buf.len() as u64;
            // Under steady load the log may outrun its zeroes: then it simply
            // grows, and that fsync also records the new size.
            zeroed = zeroed.max(end);
            let result = write_all_at(&file, &buf, offset).and_then(|_| file.sync_data());
            if let Err(e) = result {
                return fail(e, offset);
            }
            offset = end;
            buf.clear();
            durable.send_modify(|d| {
                d.seq = seq;
                d.rev = rev;
            });
        }
        if closing {
            return;
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Where and why replay found acknowledged data it cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Corruption {
    offset: usize,
    reason: &'static str,
}

/// What is at one position of the log.
enum Frame<'a> {
    /// A frame whose checksum matches, and where the next one starts.
    Good(&'a [u8], usize),
    /// The end of the log: the end of the file, or the zeroes written ahead.
    End,
    /// A write that never completed: it is the last thing in the log.
    Torn,
    /// A frame that was written whole and has changed since.
    Bad(&'static str),
}

/// Reads the frame at `pos`, telling a torn write from corruption the way
/// etcd's WAL decoder does: a frame that runs past the end of the file, or
/// has a sector that reads as all zeroes, never fully reached the disk.
fn read_frame(data: &[u8], pos: usize) -> Frame<'_> {
    let rest = &data[pos..];
    if rest.is_empty() {
        return Frame::End;
    }
    let Some(head) = rest.get(..8) else {
        return Frame::Torn;
    };
    if head.iter().all(|&b| b == 0) {
        return Frame::End;
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let Some(payload) = rest.get(8..8 + len) else {
        return Frame::Torn;
    };
    if crc32(payload) == crc {
        return Frame::Good(payload, pos + 8 + len);
    }
    // Split the frame at the file's sector boundaries, as the disk wrote it.
    let mut at = pos;
    let end = pos + 8 + len;
    while at < end {
        let next = ((at / SECTOR + 1) * SECTOR).min(end);
        if data[at..next].iter().all(|&b| b == 0) {
            return Frame::Torn;
        }
        at = next;
    }
    Frame::Bad("checksum mismatch")
}

/// Replays every frame into `store`. Returns the length of the log without
/// its torn tail and how many frames hold history that compaction made
/// unreachable; or where a frame that was written whole cannot be used.
fn replay(data: &[u8], store: &mut Store) -> Result<(usize, usize), Corruption> {
    let mut pos = 0;
    let mut stale = 0usize;
    let mut revs: Vec<i64> = Vec::new();
    loop {
        let bad = |reason| {
            Err(Corruption {
                offset: pos,
                reason,
            })
        };
        let (payload, next) = match read_frame(data, pos) {
            Frame::Good(payload, next) => (payload, next),
            Frame::End | Frame::Torn => return Ok((pos, stale)),
            Frame::Bad(reason) => return bad(reason),
        };
        let Some(entry) = decode(payload) else {
            return bad("a record that cannot be decoded");
        };
        match entry {
            Entry::Record(rev, changes) => {
                if rev != store.rev() + 1 {
                    return bad("a revision out of sequence");
                }
                store.replay(rev, changes);
                revs.push(rev);
            }
            Entry::Compact(rev) => {
                if rev > store.compacted() && rev <= store.rev() {
                    store.compact_unchecked(rev);
                    stale = revs.iter().filter(|r| **r < rev).count();
                }
            }
            Entry::Base(rev, compacted, kvs) => {
                if pos != 0 {
                    return bad("a base record after the start of the log");
                }
                store.load_base(rev, compacted, kvs);
            }
        }
        pos = next;
    }
}

/// Replaces the log with a base at the compacted revision plus every later
/// revision: the same store, without the history compaction dropped.
fn rewrite(dir: &Path, store: &Store) -> Result<(), WalError> {
    let compacted = store.compacted();
    let tmp = dir.join("wal.tmp");
    let mut out = Vec::new();
    let base: Vec<KeyValue> = store
        .live_kvs_at(compacted)
        .iter()
        .map(|kv| KeyValue::clone(kv))
        .collect();
    frame(&encode_base(compacted, compacted, &base), &mut out);
    for rec in store.log_since(compacted + 1) {
        frame(&encode_record(&rec), &mut out);
    }
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&out).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, dir.join(WAL_FILE)).map_err(io_err(dir))?;
    sync_dir(dir)
}

// ---- encoding ----

enum Entry {
    Record(i64, Vec<(EventKind, KeyValue)>),
    Compact(i64),
    Base(i64, i64, Vec<KeyValue>),
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload of one revision's record.
pub fn encode_record(rec: &Record) -> Vec<u8> {
    let mut out = vec![TAG_RECORD];
    put_varint(&mut out, rec.rev as u64);
    put_varint(&mut out, rec.events.len() as u64);
    for ev in &rec.events {
        match ev.kind {
            EventKind::Put => {
                out.push(0);
                put_kv(&mut out, &ev.kv);
            }
            EventKind::Delete => {
                out.push(1);
                put_bytes(&mut out, &ev.kv.key);
            }
        }
    }
    out
}

/// The payload of a compaction.
pub fn encode_compact(rev: i64) -> Vec<u8> {
    let mut out = vec![TAG_COMPACT];
    put_varint(&mut out, rev as u64);
    out
}

fn encode_base(rev: i64, compacted: i64, kvs: &[KeyValue]) -> Vec<u8> {
    let mut out = vec![TAG_BASE];
    put_varint(&mut out, rev as u64);
    put_varint(&mut out, compacted as u64);
    put_varint(&mut out, kvs.len() as u64);
    for kv in kvs {
        put_kv(&mut out, kv);
    }
    out
}

fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    put_bytes(out, &kv.key);
    put_bytes(out, &kv.value);
    put_varint(out, kv.create_revision as u64);
    put_varint(out, kv.mod_revision as u64);
    put_varint(out, kv.version as u64);
    put_varint(out, kv.lease as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over a payload; every read is checked, so a corrupt payload ends
/// replay instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (b, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(b.to_vec())
    }

    fn kv(&mut self) -> Option<KeyValue> {
        Some(KeyValue {
            key: self.bytes()?,
            value: self.bytes()?,
            create_revision: self.varint()? as i64,
            mod_revision: self.varint()? as i64,
            version: self.varint()? as i64,
            lease: self.varint()? as i64,
        })
    }
}

fn decode(payload: &[u8]) -> Option<Entry> {
    let mut r = Reader(payload);
    match r.byte()? {
        TAG_RECORD => {
            let rev = r.varint()? as i64;
            let n = r.varint()?;
            let mut changes = Vec::new();
            for _ in 0..n {
                match r.byte()? {
                    0 => changes.push((EventKind::Put, r.kv()?)),
                    1 => {
                        let key = r.bytes()?;
                        changes.push((
                            EventKind::Delete,
                            KeyValue {
                                key,
                                mod_revision: rev,
                                ..Default::default()
                            },
                        ))
                    }
                    _ => return None,
                }
            }
            Some(Entry::Record(rev, changes))
        }
        TAG_COMPACT => Some(Entry::Compact(r.varint()? as i64)),
        TAG_BASE => {
            let rev = r.varint()? as i64;
            let compacted = r.varint()? as i64;
            let n = r.varint()?;
            let mut kvs = Vec::new();
            for _ in 0..n {
                kvs.push(r.kv()?);
            }
            Some(Entry::Base(rev, compacted, kvs))
        }
        _ => None,
    }
}

/// CRC-32 (IEEE), table-driven; enough to tell a torn frame from a good one.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::pb::etcdserverpb::PutRequest;

    fn put(store: &mut Store, wal: &Wal, k: &str, v: &str) {
        let a = store
            .put(&PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
            .unwrap();
        let rec = a.record.unwrap();
        wal.append(&encode_record(&rec), rec.rev);
    }

    #[test]
    fn crc_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn replays_records_and_compaction_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        {
            let mut store = Store::new(0);
            let wal = Wal::open(&lock, &mut store).unwrap();
            put(&mut store, &wal, "a", "1");
            put(&mut store, &wal, "a", "2");
            put(&mut store, &wal, "b", "3");
            wal.append(&encode_compact(3), store.rev());
            put(&mut store, &wal, "c", "4");
            wal.close();
        }
        // A torn frame after the last good one: a header promising more than
        // is there (over the zeroes the writer keeps ahead).
        let path = dir.path().join(WAL_FILE);
        let data = fs::read(&path).unwrap();
        let mut end = 0;
        while let Frame::Good(_, next) = read_frame(&data, end) {
            end = next;
        }
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[200, 0, 0, 0, 1, 2, 3, 4, 9], end as u64)
            .unwrap();
        drop(f);

        let mut store = Store::new(0);
        let wal = Wal::open(&lock, &mut store).unwrap();
        assert_eq!(store.rev(), 5);
        assert_eq!(store.compacted(), 3);
        let kvs = store.live_kvs_at(5);
        let got: Vec<(&[u8], &[u8], i64)> = kvs
            .iter()
            .map(|kv| (kv.key.as_slice(), kv.value.as_slice(), kv.version))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"a"[..], &b"2"[..], 2),
                (&b"b"[..], &b"3"[..], 1),
                (&b"c"[..], &b"4"[..], 1)
            ]
        );
        // The rewrite kept the log replayable: a further write and a reopen agree.
        put(&mut store, &wal, "d", "5");
        wal.close();
        drop(wal);
        let mut again = Store::new(0);
        let _wal = Wal::open(&lock, &mut again).unwrap();
        assert_eq!(again.rev(), 6);
        assert_eq!(again.compacted(), 3);
        assert_eq!(again.live_kvs_at(6).len(), 4);
    }

    /// Writes three records ("a", "b", "c") and returns the log's bytes and
    /// the offsets of the frames.
    fn three_records(lock: &DirLock) -> (Vec<u8>, Vec<usize>) {
        let mut store = Store::new(0);
        let wal = Wal::open(lock, &mut store).unwrap();
        for k in ["a", "b", "c"] {
            put(&mut store, &wal, k, "some value");
        }
        wal.close();
        drop(wal);
        let data = fs::read(lock.dir().join(WAL_FILE)).unwrap();
        let mut offsets = vec![0];
        while let Frame::Good(_, next) = read_frame(&data, *offsets.last().unwrap()) {
            offsets.push(next);
        }
        offsets.pop();
        assert_eq!(offsets.len(), 3, "three frames written");
        (data, offsets)
    }

    #[test]
    fn a_flipped_byte_in_a_middle_record_refuses_to_open_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let (mut data, offsets) = three_records(&lock);
        data[offsets[1] + 12] ^= 0x40;
        fs::write(dir.path().join(WAL_FILE), &data).unwrap();
        let err = Wal::open(&lock, &mut Store::new(0)).err().expect("refused");
        match &err {
            WalError::Corrupt { offset, .. } => assert_eq!(*offset, offsets[1]),
            other => panic!("expected Corrupt, got {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("byte offset {}", offsets[1])),
            "{text}"
        );
        assert!(
            text.contains(&dir.path().join(WAL_FILE).display().to_string()),
            "{text}"
        );
        // Nothing was cut: the acknowledged record after it is still there.
        assert_eq!(fs::read(dir.path().join(WAL_FILE)).unwrap(), data);
    }

    #[test]
    fn a_last_record_with_a_sector_of_zeroes_is_a_torn_tail_and_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let (data, offsets) = three_records(&lock);
        // A big last record, of which the second sector never reached the disk.
        let mut store = Store::new(0);
        let wal = Wal::open(&lock, &mut store).unwrap();
        put(&mut store, &wal, "d", &"x".repeat(3 * SECTOR));
        wal.close();
        drop(wal);
        let mut data2 = fs::read(dir.path().join(WAL_FILE)).unwrap();
        let last = *offsets.last().unwrap();
        let Frame::Good(_, end_c) = read_frame(&data, last) else {
            panic!("frame c")
        };
        let sector = (end_c / SECTOR + 1) * SECTOR;
        data2[sector..sector + SECTOR].fill(0);
        fs::write(dir.path().join(WAL_FILE), &data2).unwrap();
        let mut store = Store::new(0);
        let _wal = Wal::open(&lock, &mut store).unwrap();
        assert_eq!(store.rev(), 4, "a, b and c kept; d cut");
        assert_eq!(
            fs::metadata(dir.path().join(WAL_FILE)).unwrap().len() as usize,
            end_c
        );
    }

    #[test]
    fn a_last_record_cut_short_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let (data, offsets) = three_records(&lock);
        let cut = offsets[2] + 10;
        fs::write(dir.path().join(WAL_FILE), &data[..cut]).unwrap();
        let mut store = Store::new(0);
        let _wal = Wal::open(&lock, &mut store).unwrap();
        assert_eq!(store.rev(), 3);
    }

    #[test]
    fn a_second_lock_on_a_directory_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(_held);
        DirLock::acquire(dir.path()).expect("free again once released");
    }
}
