//! Which files of a datastore's data directory a copy can leave out,
//! because the server, started on the copy, can never read them.
//!
//! Postgres keeps `max_wal_size` worth of WAL segments in `pg_wal`: after a
//! checkpoint, the segments it no longer needs are renamed to future
//! segment names ("recycled") and still hold their old contents, and new
//! ones may be made ahead of time, zero-filled. Recovery replays from the
//! last checkpoint's redo point to the end of the WAL that was written, so
//! only the segments from the redo segment to the insert position are
//! needed; the server makes the others again as it writes. After a bulk load
//! that is about 1 GB of files that a snapshot would otherwise carry.
//!
//! Which segment holds written WAL is told by the segment itself: a segment
//! file's first page begins with a long page header whose `xlp_pageaddr` is
//! the WAL position where the segment starts. A segment that WAL was written
//! to has it (WAL is written in order, first page first), a recycled one
//! holds the address of the segment it was before, a pre-made one zeros. So
//! a segment is left out exactly when its first page is not its own: every
//! segment from the redo point to the last written byte is kept, and so are
//! older ones the server still holds on purpose (`wal_keep_size`,
//! replication slots). Data pages cannot refer to WAL that was not written
//! (the server writes WAL before the pages it describes), so the copy is as
//! consistent as the one that kept everything.
//!
//! Pure: callers read the first [`HEAD_BYTES`] of each file.

use crate::spec::DatastoreKind;

/// How many bytes of a file's beginning [`leave_out`] needs.
pub const HEAD_BYTES: usize = 16;

/// `XLP_LONG_HEADER`: the page is a segment's first.
const XLP_LONG_HEADER: u16 = 0x0002;

/// The timeline, log and segment numbers in a WAL segment file name
/// (24 hex digits), or `None` for another name.
pub fn segment_name(name: &str) -> Option<(u32, u32, u32)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let part = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).ok();
    Some((part(0..8)?, part(8..16)?, part(16..24)?))
}

/// Whether segment file `name`, `size` bytes long and beginning with
/// `head`, holds WAL written for this segment (see the module's text).
/// Anything that is not clearly a segment of another position counts as
/// holding it: a file that is not a segment, of a size no segment has, or
/// too short to tell.
pub fn holds_own_wal(name: &str, size: u64, head: &[u8]) -> bool {
    let Some((_, log, seg)) = segment_name(name) else {
        return true;
    };
    // wal_segment_size is a power of two from 1 MB to 1 GB.
    if !size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&size) || head.len() < 16 {
        return true;
    }
    let start = (u64::from(log) << 32) + u64::from(seg) * size;
    let info = [head[2], head[3]];
    let addr: [u8; 8] = head[8..16].try_into().unwrap_or_default();
    // The server writes in its own byte order; a copy may be read on a host of another.
    let little =
        u16::from_le_bytes(info) & XLP_LONG_HEADER != 0 && u64::from_le_bytes(addr) == start;
    let big = u16::from_be_bytes(info) & XLP_LONG_HEADER != 0 && u64::from_be_bytes(addr) == start;
    little || big
}

/// Whether a copy of `kind`'s data directory may leave out the file at
/// `path` (relative to the data directory, `/`-separated), `size` bytes long
/// and beginning with `head` (its first [`HEAD_BYTES`], or all of it when shorter).
pub fn leave_out(kind: DatastoreKind, path: &str, size: u64, head: &[u8]) -> bool {
    match kind {
        DatastoreKind::Postgres => {
            // pg_xlog before postgres 10.
            let name = path
                .strip_prefix("pg_wal/")
                .or_else(|| path.strip_prefix("pg_xlog/"));
            name.is_some_and(|n| segment_name(n).is_some() && !holds_own_wal(n, size, head))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    /// A first page's header as postgres writes it (little-endian).
    fn head(info: u16, addr: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEAD_BYTES];
        h[0..2].copy_from_slice(&0xD113u16.to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..16].copy_from_slice(&addr.to_le_bytes());
        h
    }

    #[test]
    fn segment_names_are_24_hex_digits() {
        assert_eq!(
            segment_name("000000010000000A0000003F"),
            Some((1, 0xA, 0x3F))
        );
        assert_eq!(segment_name("00000002.history"), None);
        assert_eq!(segment_name("archive_status"), None);
        assert_eq!(segment_name("000000010000000A0000003G"), None);
    }

    #[test]
    fn a_written_segment_is_kept_and_a_recycled_or_blank_one_left_out() {
        let pg = DatastoreKind::Postgres;
        // Segment 0x3F of log 0xA starts at 0xA_0000_0000 + 0x3F * 16 MB.
        let start = (0xA << 32) + 0x3F * MB16;
        let name = "pg_wal/000000010000000A0000003F";
        assert!(!leave_out(pg, name, MB16, &head(XLP_LONG_HEADER, start)));
        // Recycled: it held segment 0x12 before.
        let old = (0xA << 32) + 0x12 * MB16;
        assert!(leave_out(pg, name, MB16, &head(XLP_LONG_HEADER, old)));
        // Made ahead of time: zeros.
        assert!(leave_out(pg, name, MB16, &[0u8; HEAD_BYTES]));
        // Its own address without the long-header flag is no first page.
        assert!(leave_out(pg, name, MB16, &head(0, start)));
        // Written by a server of the other byte order.
        let mut be = vec![0u8; HEAD_BYTES];
        be[2..4].copy_from_slice(&XLP_LONG_HEADER.to_be_bytes());
        be[8..16].copy_from_slice(&start.to_be_bytes());
        assert!(!leave_out(pg, name, MB16, &be));
        // pg_xlog, before postgres 10; and another segment size.
        let start64 = (0xA << 32) + 0x3F * (64 << 20);
        assert!(!leave_out(
            pg,
            "pg_xlog/000000010000000A0000003F",
            64 << 20,
            &head(XLP_LONG_HEADER, start64)
        ));
    }

    #[test]
    fn anything_unclear_is_kept() {
        let pg = DatastoreKind::Postgres;
        let zeros = [0u8; HEAD_BYTES];
        for (path, size) in [
            ("pg_wal/00000002.history", 40),
            ("pg_wal/archive_status/000000010000000A0000003F.done", 0),
            ("base/1/1259", MB16),
            ("pg_wal/000000010000000A0000003F.partial", MB16),
            // Not a segment size: a file being made, or not postgres's.
            ("pg_wal/000000010000000A0000003F", 1000),
        ] {
            assert!(!leave_out(pg, path, size, &zeros), "{path}");
        }
        assert!(!leave_out(
            pg,
            "pg_wal/000000010000000A0000003F",
            MB16,
            &[0u8; 4]
        ));
        assert!(!leave_out(
            DatastoreKind::Mariadb,
            "pg_wal/000000010000000A0000003F",
            MB16,
            &zeros
        ));
    }
}
