//! Repairs the HTTP/2 `:authority` of requests from clients that put a whole
//! URL there, before the HTTP/2 server sees it.
//!
//! etcd's Go client dials a single endpoint (as `etcdctl endpoint status`
//! does) with the target `passthrough:///http://host:port`, and grpc-go then
//! sends `:authority: http://host:port`. Go's HTTP/2 server accepts that; the
//! `h2` crate refuses it and resets the stream. So each connection's inbound
//! bytes pass through this filter: HTTP/2 frames are forwarded untouched,
//! except header blocks whose `:authority` is not a valid authority, whose
//! value is rewritten to one of the same length (`http---host:port`).
//!
//! The filter is the first to see a client's bytes, so it bounds what it
//! holds: a header block (HEADERS and its CONTINUATION frames) larger than
//! [`MAX_BLOCK`] ends the connection (the CONTINUATION flood, which would
//! otherwise grow one buffer without end), and a frame longer than the
//! HTTP/2 server accepts is not buffered but passed on for it to refuse.
//!
//! **Invariant:** the rewritten value has the same decoded length as the
//! original, so both ends' HPACK dynamic tables stay the same size and in
//! step; header blocks are otherwise passed through byte for byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE
/// default), which is also the largest the server accepts.
const MAX_FRAME: usize = 16_384;
/// The most of one header block held before the connection is dropped:
/// twice the header list the server accepts, so a block that HPACK made
/// larger than its decoded list still reaches the server to be judged.
const MAX_BLOCK: usize = 2 * super::MAX_HEADER_LIST_BYTES as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Still reading the client connection preface.
    Preface,
    /// HTTP/2 frames.
    Frames,
    /// Not HTTP/2 (an HTTP/1.1 `/health`, say): bytes pass as they are.
    Passthrough,
}

/// A server-side TCP connection with the `:authority` repair on its read side.
pub(crate) struct FixedConn {
    inner: TcpStream,
    mode: Mode,
    /// Bytes read from the socket and not yet processed.
    raw: Vec<u8>,
    /// Processed bytes not yet handed to the reader.
    ready: Vec<u8>,
    ready_pos: usize,
    /// A header block in progress: the HEADERS frame's header and payload,
    /// then CONTINUATION payloads, until END_HEADERS.
    block: Option<PendingBlock>,
    eof: bool,
    /// A header block outgrew [`MAX_BLOCK`]: the connection is ended.
    flooded: bool,
}

struct PendingBlock {
    flags: u8,
    stream: u32,
    /// Priority fields of the HEADERS frame, kept as they were.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, forwarded unchanged when nothing needs fixing.
    original: Vec<u8>,
}

impl FixedConn {
    pub(crate) fn new(inner: TcpStream) -> FixedConn {
        FixedConn {
            inner,
            mode: Mode::Preface,
            raw: Vec::new(),
            ready: Vec::new(),
            ready_pos: 0,
            block: None,
            eof: false,
            flooded: false,
        }
    }

    /// Moves every complete unit from `raw` to `ready`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    self.ready.append(&mut self.raw);
                    return;
                }
                Mode::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.ready.extend(self.raw.drain(..PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.flooded || self.raw.len() < 9 {
                        return;
                    }
                    let len = usize::from(self.raw[0]) << 16
                        | usize::from(self.raw[1]) << 8
                        | usize::from(self.raw[2]);
                    if len > MAX_FRAME {
                        // The server refuses such a frame with a connection
                        // error; it is not buffered here to get there.
                        if let Some(block) = self.block.take() {
                            self.ready.extend_from_slice(&block.original);
                        }
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if self.raw.len() < 9 + len {
                        return;
                    }
                    let kind = self.raw[3];
                    let flags = self.raw[4];
                    let stream = u32::from_be_bytes([
                        self.raw[5] & 0x7f,
                        self.raw[6],
                        self.raw[7],
                        self.raw[8],
                    ]);
                    let frame: Vec<u8> = self.raw.drain(..9 + len).collect();
                    self.frame(kind, flags, stream, frame);
                }
            }
        }
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, frame: Vec<u8>) {
        match (kind, self.block.take()) {
            (FRAME_HEADERS, None) => {
                let payload = &frame[9..];
                let mut start = 0;
                let mut end = payload.len();
                if flags & FLAG_PADDED != 0 {
                    let pad = usize::from(payload.first().copied().unwrap_or(0));
                    start = 1;
                    end = end.saturating_sub(pad);
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 && start + 5 <= end {
                    let mut p = [0u8; 5];
                    p.copy_from_slice(&payload[start..start + 5]);
                    priority = Some(p);
                    start += 5;
                }
                let fragment = payload.get(start..end).unwrap_or(&[]).to_vec();
                let block = PendingBlock {
                    flags,
                    stream,
                    priority,
                    fragment,
                    original: frame,
                };
                self.end_block_if(flags, block);
            }
            (FRAME_CONTINUATION, Some(mut block)) => {
                if block.original.len() + frame.len() > MAX_BLOCK {
                    self.flooded = true;
                    self.raw.clear();
                    return;
                }
                block.fragment.extend_from_slice(&frame[9..]);
                block.original.extend_from_slice(&frame);
                self.end_block_if(flags, block);
            }
            (_, pending) => {
                // Anything else (or a malformed sequence) passes as it is and
                // is the HTTP/2 server's to judge.
                if let Some(block) = pending {
                    self.ready.extend_from_slice(&block.original);
                }
                self.ready.extend_from_slice(&frame);
            }
        }
    }

    fn end_block_if(&mut self, flags: u8, block: PendingBlock) {
        if flags & FLAG_END_HEADERS == 0 {
            self.block = Some(block);
            return;
        }
        match fix_block(&block.fragment) {
            None => self.ready.extend_from_slice(&block.original),
            Some(fixed) => {
                let mut payload = Vec::with_capacity(fixed.len() + 5);
                if let Some(p) = block.priority {
                    payload.extend_from_slice(&p);
                }
                payload.extend_from_slice(&fixed);
                let keep = block.flags & (FLAG_END_STREAM | FLAG_PRIORITY);
                let mut chunks = payload.chunks(MAX_FRAME).peekable();
                let mut first = true;
                if payload.is_empty() {
                    write_frame(
                        &mut self.ready,
                        FRAME_HEADERS,
                        keep | FLAG_END_HEADERS,
                        block.stream,
                        &[],
                    );
                }
                while let Some(chunk) = chunks.next() {
                    let last = chunks.peek().is_none();
                    let (kind, mut f) = if first {
                        (FRAME_HEADERS, keep)
                    } else {
                        (FRAME_CONTINUATION, 0)
                    };
                    if last {
                        f |= FLAG_END_HEADERS;
                    }
                    write_frame(&mut self.ready, kind, f, block.stream, chunk);
                    first = false;
                }
            }
        }
    }
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

impl AsyncRead for FixedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.flooded {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("HTTP/2 header block larger than {MAX_BLOCK} bytes"),
                )));
            }
            if this.ready_pos < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_pos);
                buf.put_slice(&this.ready[this.ready_pos..this.ready_pos + n]);
                this.ready_pos += n;
                if this.ready_pos == this.ready.len() {
                    this.ready.clear();
                    this.ready_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left unprocessed goes out as it is.
                if !this.raw.is_empty() || this.block.is_some() {
                    if let Some(block) = this.block.take() {
                        this.ready.extend_from_slice(&block.original);
                    }
                    this.ready.append(&mut this.raw);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passthrough && this.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.raw.extend_from_slice(rb.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl AsyncWrite for FixedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for FixedConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

// ---- HPACK, as far as needed to find and repair `:authority` ----

/// Reads an HPACK integer with an `n`-bit prefix at `pos`.
fn read_int(b: &[u8], pos: &mut usize, n: u8) -> Option<usize> {
    let mask = (1u16 << n) as usize - 1;
    let mut v = usize::from(*b.get(*pos)?) & mask;
    *pos += 1;
    if v < mask {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v = v.checked_add(usize::from(byte & 0x7f).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

fn write_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let mask = (1usize << n) - 1;
    if v < mask {
        out.push(first | v as u8);
        return;
    }
    out.push(first | mask as u8);
    v -= mask;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A string literal at `pos`: (huffman, bytes as sent).
fn read_str<'a>(b: &'a [u8], pos: &mut usize) -> Option<(bool, &'a [u8])> {
    let huffman = b.get(*pos)? & 0x80 != 0;
    let len = read_int(b, pos, 7)?;
    let s = b.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some((huffman, s))
}

/// The header block with every invalid `:authority` value repaired, or
/// `None` when nothing needed repair (or the block is not understood).
fn fix_block(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut changed = false;
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let first = b[pos];
        let (prefix, pattern) = if first & 0x80 != 0 {
            read_int(b, &mut pos, 7)?;
            out.extend_from_slice(&b[start..pos]);
            continue;
        } else if first & 0xc0 == 0x40 {
            (6, 0x40)
        } else if first & 0xe0 == 0x20 {
            read_int(b, &mut pos, 5)?;
            out.extend_from_slice(&b[start..pos]);
            continue;
        } else {
            (4, first & 0xf0)
        };
        let name_index = read_int(b, &mut pos, prefix)?;
        let name = if name_index == 0 {
            Some(read_str(b, &mut pos)?)
        } else {
            None
        };
        let value_start = pos;
        let (huffman, value) = read_str(b, &mut pos)?;
        let is_authority = match name {
            None => name_index == 1,
            Some((false, n)) => n == b":authority",
            Some((true, n)) => huffman_decode(n).as_deref() == Some(b":authority".as_slice()),
        };
        let repaired = if is_authority {
            let decoded = if huffman {
                huffman_decode(value)?
            } else {
                value.to_vec()
            };
            repair_authority(&decoded)
        } else {
            None
        };
        match repaired {
            None => out.extend_from_slice(&b[start..pos]),
            Some(fixed) => {
                changed = true;
                out.extend_from_slice(&b[start..value_start]);
                write_int(&mut out, 0, 7, fixed.len());
                out.extend_from_slice(&fixed);
            }
        }
        let _ = pattern;
    }
    changed.then_some(out)
}

/// An authority of the same length that `http::uri::Authority` accepts, if
/// `value` is not one: bytes that cannot appear in a host become `-`, except
/// the colon before a trailing port.
fn repair_authority(value: &[u8]) -> Option<Vec<u8>> {
    if axum::http::uri::Authority::try_from(value).is_ok() {
        return None;
    }
    let port_colon = value
        .iter()
        .rposition(|&c| c == b':')
        .filter(|&i| i + 1 < value.len() && value[i + 1..].iter().all(u8::is_ascii_digit));
    let fixed: Vec<u8> = value
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if Some(i) == port_colon || c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                c
            } else {
                b'-'
            }
        })
        .collect();
    axum::http::uri::Authority::try_from(fixed.as_slice())
        .is_ok()
        .then_some(fixed)
}

/// Code lengths of the HPACK Huffman code (RFC 7541, Appendix B) for bytes
/// 0..=255, as letters: `A` is 5 bits, `B` 6, and so on. The code is
/// canonical, so the lengths determine every code; EOS (30 ones) follows.
const HUFFMAN_LENGTHS: &[u8; 256] = b"ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWV";

/// The canonical code, per length: the first code, where its symbols start
/// in `symbols`, and how many there are.
struct Canonical {
    first_code: [u32; 31],
    first_index: [usize; 31],
    count: [usize; 31],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static TABLE: std::sync::OnceLock<Canonical> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let len = |s: u16| -> usize {
            if s == 256 {
                30
            } else {
                usize::from(HUFFMAN_LENGTHS[usize::from(s)] - b'A') + 5
            }
        };
        let mut symbols: Vec<u16> = (0..=256).collect();
        symbols.sort_by_key(|&s| (len(s), s));
        let mut t = Canonical {
            first_code: [0; 31],
            first_index: [0; 31],
            count: [0; 31],
            symbols,
        };
        let mut code = 0u32;
        let mut prev_len = len(t.symbols[0]);
        for (i, &s) in t.symbols.iter().enumerate() {
            let l = len(s);
            if i > 0 {
                code = (code + 1) << (l - prev_len);
            }
            if t.count[l] == 0 {
                t.first_code[l] = code;
                t.first_index[l] = i;
            }
            t.count[l] += 1;
            prev_len = l;
        }
        t
    })
}

/// Decodes an HPACK Huffman string; `None` if it is malformed.
fn huffman_decode(data: &[u8]) -> Option<Vec<u8>> {
    let t = canonical();
    let mut out = Vec::with_capacity(data.len() * 8 / 5);
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in data {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if len > 30 {
                return None;
            }
            if t.count[len] > 0 && code >= t.first_code[len] {
                let offset = (code - t.first_code[len]) as usize;
                if offset < t.count[len] {
                    let sym = t.symbols[t.first_index[len] + offset];
                    if sym == 256 {
                        return None;
                    }
                    out.push(sym as u8);
                    code = 0;
                    len = 0;
                }
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if len >= 8 || code != (1u32 << len) - 1 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_rfc_7541_huffman_examples() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        assert_eq!(
            huffman_decode(&hex("f1e3c2e5f23a6ba0ab90f4ff")).unwrap(),
            b"www.example.com"
        );
        assert_eq!(huffman_decode(&hex("a8eb10649cbf")).unwrap(), b"no-cache");
        assert_eq!(
            huffman_decode(&hex("d07abe941054d444a8200595040b8166e082a62d1bff")).unwrap(),
            b"Mon, 21 Oct 2013 20:13:21 GMT"
        );
    }

    #[test]
    fn repairs_a_url_in_authority_keeping_its_length() {
        let fixed = repair_authority(b"http://127.0.0.1:2379").unwrap();
        assert_eq!(fixed, b"http---127.0.0.1:2379");
        assert_eq!(repair_authority(b"127.0.0.1:2379"), None);
        // In a header block: literal with incremental indexing, name index 1.
        let mut block = vec![0x41];
        write_int(&mut block, 0, 7, 21);
        block.extend_from_slice(b"http://127.0.0.1:2379");
        block.push(0x83); // :method POST, indexed
        let out = fix_block(&block).unwrap();
        assert_eq!(&out[2..23], b"http---127.0.0.1:2379");
        assert_eq!(out.len(), block.len());
        assert_eq!(fix_block(&[0x82, 0x86]), None);
    }
}
