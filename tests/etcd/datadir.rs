//! The data directory of `devstack etcd serve`: one server at a time, a
//! corrupt record refuses the start (naming file and offset) while a torn
//! tail is cut, and a full disk fails writes without losing acknowledged ones.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Waits (at most `secs`) for a child to exit; its exit status.
fn exit_within(child: &mut ChildGuard, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The offsets of the frames of a log (`[len u32][crc u32][payload]`, ended
/// by the file's end or by zeroes).
fn frames(wal: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= wal.len() {
        let len = u32::from_le_bytes(wal[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > wal.len() {
            break;
        }
        out.push((pos, len));
        pos += 8 + len;
    }
    out
}

/// Starts a server on `dir`, puts `keys` (value = key repeated), and kills it.
async fn store_keys(dir: &Path, keys: &[&str]) {
    let port = free_port();
    let _child = serve(dir, port);
    let raw = within(15, "server start", connect(port)).await;
    for k in keys {
        raw.put(put(k, &k.repeat(20))).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let first = serve(&dir, port);
    let raw = within(15, "server start", connect(port)).await;
    raw.put(put("k", "first")).await.unwrap();
    let wal_before = std::fs::read(dir.join("wal")).unwrap();

    // Another port, so that only the directory can stop it.
    let port2 = free_port();
    let mut second = serve(&dir, port2);
    let status = exit_within(&mut second, 15)
        .expect("a second server on a locked data directory must exit, not serve");
    assert!(!status.success());
    let log = std::fs::read_to_string(serve_log(&dir, port2)).unwrap();
    assert!(
        log.contains(&format!(
            "data directory {} is in use by another devstack etcd (pid {})",
            dir.display(),
            first.0.id()
        )),
        "{log}"
    );
    // It wrote nothing to the log (the first server's zeroes ahead aside).
    let wal_after = std::fs::read(dir.join("wal")).unwrap();
    assert_eq!(frames(&wal_after), frames(&wal_before));
    assert_eq!(
        &wal_after[..frames(&wal_before).last().map_or(0, |(p, l)| p + 8 + l)],
        &wal_before[..frames(&wal_before).last().map_or(0, |(p, l)| p + 8 + l)]
    );
    // The first goes on serving.
    let got = raw.range(get("k")).await.unwrap();
    assert_eq!(got.kvs[0].value, b"first");
    raw.put(put("k", "still")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_middle_record_refuses_to_start_naming_the_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store_keys(&dir, &["a", "b", "c"]).await;
    let path = dir.join("wal");
    let mut wal = std::fs::read(&path).unwrap();
    let f = frames(&wal);
    assert_eq!(f.len(), 3, "one frame per put");
    let (middle, len) = f[1];
    wal[middle + 8 + len / 2] ^= 0x10;
    std::fs::write(&path, &wal).unwrap();

    let port = free_port();
    let mut child = serve(&dir, port);
    let status = exit_within(&mut child, 15).expect("a corrupt log must stop the start");
    assert!(!status.success());
    let log = std::fs::read_to_string(serve_log(&dir, port)).unwrap();
    assert!(
        log.contains(&format!(
            "{}: corrupt record at byte offset {middle} (checksum mismatch)",
            path.display()
        )),
        "{log}"
    );
    // Nothing was cut: record "c", acknowledged, is still in the file.
    assert_eq!(std::fs::read(&path).unwrap()[..wal.len()], wal[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_and_the_server_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store_keys(&dir, &["a", "b", "c"]).await;
    let path = dir.join("wal");
    let wal = std::fs::read(&path).unwrap();
    let (last, len) = frames(&wal)[2];
    // The write of "c" reached the disk only in part.
    std::fs::write(&path, &wal[..last + 8 + len / 2]).unwrap();

    let port = free_port();
    let _child = serve(&dir, port);
    let raw = within(15, "server start", connect(port)).await;
    let all = raw.range(ranged("\0", "\0")).await.unwrap();
    let keys: Vec<&[u8]> = all.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"a"[..], &b"b"[..]]);
    let rev = raw
        .put(put("d", "after"))
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    assert_eq!(rev, 4, "revision 4 (the torn one) is written again");
}

/// A private mount namespace holding a small tmpfs over a directory, for as
/// long as this child (`unshare ... sleep`) lives: when it is killed, the
/// namespace and the mount go with it, whatever the test did.
struct SmallDisk {
    holder: ChildGuard,
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        use std::io::BufRead;
        std::fs::create_dir_all(dir).unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size} devstack-test '{}' && echo ready && exec sleep 300",
            dir.display()
        );
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "mounting a tmpfs needs root (CAP_SYS_ADMIN) in a new mount namespace"
        );
        SmallDisk {
            holder: ChildGuard(child),
            dir: dir.to_path_buf(),
        }
    }

    /// A command run inside the namespace.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.holder.0.id().to_string())
            .arg("-m")
            .arg("--")
            .arg(program);
        c
    }

    fn serve(&self, port: u16, log: &Path) -> ChildGuard {
        ChildGuard(
            self.command(devstack_bin())
                .args(serve_args(&self.dir.join("data"), port))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    fn resize(&self, size: &str) {
        let status = self
            .command("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount the tmpfs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_every_acknowledged_write_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&tmp.path().join("disk"), "1m");
    let log = tmp.path().join("serve.log");
    let port = free_port();
    let mut server = disk.serve(port, &log);
    let raw = within(15, "server start", connect(port)).await;
    // Let the writer go idle, when it would write zeroes ahead of the log
    // (more than the disk holds).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let value = "v".repeat(16 * 1024);
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..200 {
        let key = format!("k{i:03}");
        match within(10, "put", raw.put(put(&key, &value))).await {
            Ok(_) => acked.push(key),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("a 1 MiB disk cannot take 200 puts of 16 KiB");
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(
        acked.len() >= 20,
        "the disk had room for more than {} puts: the log must use it",
        acked.len()
    );
    // Later writes fail too (none is acknowledged), reads still answer.
    assert!(raw.put(put("later", "x")).await.is_err());
    let got = raw.range(get(&acked[0])).await.unwrap();
    assert_eq!(got.kvs.len(), 1);
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the server stays up"
    );

    // Space comes back; a restart finds every acknowledged write.
    disk.resize("16m");
    drop(server);
    let port = free_port();
    server = disk.serve(port, &log);
    let raw = within(15, "server restart", connect(port)).await;
    let all = raw.range(get_prefix("k")).await.unwrap();
    let keys: Vec<String> = all
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    assert_eq!(keys, acked, "exactly the acknowledged puts");
    assert!(all.kvs.iter().all(|kv| kv.value == value.as_bytes()));
    let rev = raw
        .put(put("after", "space"))
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    assert_eq!(rev, acked.len() as i64 + 2);
    drop(server);
    drop(disk);
}
