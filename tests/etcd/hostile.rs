//! Hostile clients of `devstack etcd serve`: a CONTINUATION flood, huge
//! requests, a connection opening thousands of streams, a client filling the
//! space quota, and long ranges against lease keep-alives. In each the server
//! stays up, its memory stays bounded, and other clients keep working.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use etcd_client::proto::*;

use crate::harness::*;

/// A server started as a child process, with a client.
struct Target {
    child: ChildGuard,
    raw: Raw,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Target {
    async fn start(extra: &[&str]) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = serve_with(&dir.path().join("data"), port, extra);
        let raw = within(15, "server start", connect(port)).await;
        Target {
            child,
            raw,
            _dir: dir,
            port,
        }
    }

    /// The peak of the server's resident memory so far, in KiB.
    fn peak_kib(&self) -> u64 {
        memory_kib(self.child.0.id(), "VmHWM")
    }

    /// Fails unless the server's peak memory grew by less than `mib` since
    /// `before` (a [`Target::peak_kib`]).
    fn assert_grew_less_than(&self, before: u64, mib: u64) {
        let grown = self.peak_kib().saturating_sub(before);
        assert!(
            grown < mib * 1024,
            "the server's peak memory grew by {} MiB",
            grown / 1024
        );
    }

    /// The server is up and a fresh client can write and read.
    async fn still_serves(&mut self) {
        assert!(
            self.child.0.try_wait().unwrap().is_none(),
            "the server process must stay up"
        );
        let other = within(10, "connect", connect(self.port)).await;
        within(10, "put", other.put(put("other", "client")))
            .await
            .unwrap();
        let got = within(10, "get", other.range(get("other"))).await.unwrap();
        assert_eq!(got.kvs[0].value, b"client");
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK "literal without indexing, new name" field.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// The header block of a gRPC call to `path`.
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(&mut b, ":path", path);
    literal(&mut b, ":authority", "127.0.0.1");
    literal(&mut b, "content-type", "application/grpc");
    literal(&mut b, "te", "trailers");
    b
}

/// A raw HTTP/2 connection: preface and an empty SETTINGS sent.
fn h2_connect(port: u16) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tcp.write_all(PREFACE).unwrap();
    tcp.write_all(&frame(0x4, 0, 0, &[])).unwrap();
    tcp
}

/// Reads one frame: (type, flags, stream, payload); `None` at the end of
/// the connection.
fn read_frame(tcp: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).ok()?;
    let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    Some((head[3], head[4], stream, payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let mut t = Target::start(&[]).await;
    let before = t.peak_kib();
    let port = t.port;
    let (sent, closed) = tokio::task::spawn_blocking(move || {
        let mut tcp = h2_connect(port);
        let block = grpc_headers("/etcdserverpb.KV/Range");
        tcp.write_all(&frame(0x1, 0, 1, &block)).unwrap();
        // CONTINUATION frames that never end the block: up to 128 MiB.
        let filler = frame(0x9, 0, 1, &[0x40; 16_000]);
        let mut sent = 0usize;
        while sent < 128 << 20 {
            if tcp.write_all(&filler).is_err() {
                break;
            }
            sent += filler.len();
        }
        // The server must have ended the connection: the end of the stream
        // or a reset, not a read that times out.
        let mut buf = [0u8; 64 * 1024];
        let closed = loop {
            match tcp.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => {
                    break !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        };
        (sent, closed)
    })
    .await
    .unwrap();
    assert!(
        closed,
        "the flooding connection must be closed by the server"
    );
    assert!(
        sent < 64 << 20,
        "the server took {} MiB of one header block before closing",
        sent >> 20
    );
    t.assert_grew_less_than(before, 32);
    t.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_requests_are_refused_with_etcds_errors_without_buffering_them() {
    let mut t = Target::start(&[]).await;
    let before = t.peak_kib();
    // Over --max-request-bytes (1.5 MiB) but within gRPC's allowance: etcd's words.
    let err = t
        .raw
        .put(put("big", &"x".repeat(1_600_000)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: request is too large");
    // Far beyond it, from several clients at once: refused on the length
    // prefix, as grpc-go refuses it, and never held in memory.
    let huge = "z".repeat(48 << 20);
    let mut calls = Vec::new();
    for _ in 0..6 {
        let raw = t.raw.clone();
        let huge = huge.clone();
        calls.push(tokio::spawn(
            async move { raw.put(put("huge", &huge)).await },
        ));
    }
    for c in calls {
        let err = within(60, "huge put", c).await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message()
                .starts_with("grpc: received message larger than max ("),
            "{err:?}"
        );
    }
    t.assert_grew_less_than(before, 64);
    t.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opening_thousands_of_streams_is_refused_beyond_the_limit() {
    let mut t = Target::start(&[]).await;
    let before = t.peak_kib();
    let port = t.port;
    let (advertised, refused, goaway) = tokio::task::spawn_blocking(move || {
        let mut tcp = h2_connect(port);
        let block = grpc_headers("/etcdserverpb.KV/Put");
        // Streams whose request body never comes: each would hold a call.
        let mut burst = Vec::new();
        for i in 0..5000u32 {
            burst.extend(frame(0x1, 0x4, 2 * i + 1, &block));
        }
        tcp.write_all(&burst).unwrap();
        let mut advertised = None;
        let mut refused = 0;
        let mut goaway = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        while Instant::now() < deadline && refused < 5000 - 256 {
            let Some((kind, flags, _stream, payload)) = read_frame(&mut tcp) else {
                break;
            };
            match kind {
                // SETTINGS: look for MAX_CONCURRENT_STREAMS (0x3).
                0x4 if flags & 1 == 0 => {
                    for s in payload.chunks(6) {
                        if s.len() == 6 && u16::from_be_bytes([s[0], s[1]]) == 3 {
                            advertised = Some(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                        }
                    }
                    tcp.write_all(&frame(0x4, 1, 0, &[])).unwrap();
                }
                // RST_STREAM with REFUSED_STREAM (0x7).
                0x3 if payload == [0, 0, 0, 7] => refused += 1,
                // GOAWAY: the server had enough of refusing (h2 ends a
                // connection that keeps provoking resets).
                0x7 => {
                    goaway = true;
                    break;
                }
                _ => {}
            }
        }
        (advertised, refused, goaway)
    })
    .await
    .unwrap();
    assert_eq!(advertised, Some(256));
    assert!(
        refused >= 5000 - 256 || (goaway && refused > 0),
        "only {refused} of 5000 streams over the limit were refused, and no GOAWAY"
    );
    t.assert_grew_less_than(before, 64);
    t.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_quota_raises_nospace_and_deletes_and_disarm_recover() {
    let mut t = Target::start(&["--quota-backend-bytes", "1048576"]).await;
    let status = t.raw.status(PbStatusRequest {}).await.unwrap();
    assert_eq!(status.db_size_quota, 1 << 20);
    let value = "q".repeat(32 * 1024);
    let mut stored = 0;
    let err = loop {
        match t.raw.put(put(&format!("fill/{stored:03}"), &value)).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 100, "a 1 MiB quota took {stored} puts of 32 KiB");
    };
    assert!(stored >= 20, "refused after only {stored} puts");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(err.message(), "etcdserver: mvcc: database space exceeded");
    // The alarm is up: listed, in Status, and small writes and grants fail too.
    let alarms = t.raw.alarm(PbAlarmRequest::default()).await.unwrap().alarms;
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0].alarm, 1, "NOSPACE");
    let status = t.raw.status(PbStatusRequest {}).await.unwrap();
    assert_eq!(status.errors.len(), 1, "{status:?}");
    assert!(status.errors[0].ends_with("alarm:NOSPACE "), "{status:?}");
    let small = t.raw.put(put("small", "x")).await.unwrap_err();
    assert_eq!(small.message(), "etcdserver: mvcc: database space exceeded");
    let grant = t.raw.lease_grant(lease(0, 60)).await.unwrap_err();
    assert_eq!(grant.message(), "etcdserver: mvcc: database space exceeded");
    // Reads, deletes and compaction still work: the way out.
    let got = t.raw.range(get("fill/000")).await.unwrap();
    assert_eq!(got.kvs.len(), 1);
    let rev = t
        .raw
        .delete(del_prefix("fill/"))
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    t.raw
        .compact(PbCompactionRequest {
            revision: rev,
            physical: true,
        })
        .await
        .unwrap();
    // Still refused until the alarm is disarmed, as in etcd.
    assert!(t.raw.put(put("small", "x")).await.is_err());
    let disarmed = t
        .raw
        .alarm(PbAlarmRequest {
            action: 2,
            member_id: alarms[0].member_id,
            alarm: 1,
        })
        .await
        .unwrap();
    assert_eq!(disarmed.alarms.len(), 1);
    assert!(t
        .raw
        .alarm(PbAlarmRequest::default())
        .await
        .unwrap()
        .alarms
        .is_empty());
    t.raw.put(put("small", "x")).await.unwrap();
    t.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ranges_do_not_let_a_kept_alive_lease_expire() {
    let t = Target::start(&[]).await;
    // 100k keys, written by a few writers in txns of 128 puts.
    let value = "r".repeat(100);
    let mut writers = Vec::new();
    for w in 0..4 {
        let (raw, value) = (t.raw.clone(), value.clone());
        writers.push(tokio::spawn(async move {
            for batch in (w..782).step_by(4) {
                let success = (0..128)
                    .map(|i| op_put(put(&format!("big/{:06}", batch * 128 + i), &value)))
                    .collect();
                raw.txn(PbTxnRequest {
                    success,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        within(300, "loading 100k keys", w).await.unwrap();
    }
    // A lease of etcd's smallest TTL, kept alive every half second.
    let id = t.raw.lease_grant(lease(7, 2)).await.unwrap().id;
    t.raw
        .put(PbPutRequest {
            lease: id,
            ..put("alive", "kept")
        })
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut ranges = Vec::new();
    for _ in 0..4 {
        // Each hostile client on its own connection, as separate processes
        // would be; the keep-alives have theirs.
        let raw = connect(t.port).await;
        let stop = stop.clone();
        ranges.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                // The greatest value: the whole range is fetched and sorted
                // for a one-key answer, the most server work per byte.
                let resp = raw
                    .range(PbRangeRequest {
                        sort_order: 2,
                        sort_target: 4,
                        limit: 1,
                        ..get_prefix("big/")
                    })
                    .await
                    .unwrap();
                assert_eq!(resp.count, 100_096);
                n += 1;
            }
            n
        }));
    }
    let mut keep = connect(t.port).await.keep_alive();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        let resp = within(20, "keep-alive under load", keep.ask(id)).await;
        slowest = slowest.max(asked.elapsed());
        assert!(
            resp.ttl > 0,
            "the lease expired after {:?} under ranges (slowest keep-alive {slowest:?})",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Still under load, the key of the kept-alive lease is there. (Once the
    // keep-alives stop, it may go: its TTL is 2 s.)
    let got = t.raw.range(get("alive")).await.unwrap();
    assert_eq!(got.kvs.len(), 1, "the kept-alive lease's key is there");
    stop.cancel();
    let mut total = 0;
    for r in ranges {
        total += within(120, "ranges stop", r).await.unwrap();
    }
    assert!(total >= 4, "only {total} ranges ran: not a test");
    eprintln!("{total} ranges of 100k keys; slowest keep-alive {slowest:?}");
}
