//! Wire protocol v1: frames, names, error codes, and an incremental decoder.
//!
//! ```text
//! frame := len:u32 | type:u8 | body      len = 1 + |body|, 1 <= len <= max_frame
//! name  := 1..=32 bytes of [A-Za-z0-9_.-]
//! ```
//!
//! All integers are big-endian. docs/protocol.md is the prose version of this file.

use std::fmt;
use std::io::{self, Read, Write};

/// Bytes in the length prefix.
pub const LEN_BYTES: usize = 4;
/// Bytes before the body: length prefix and type byte.
pub const HEADER_BYTES: usize = LEN_BYTES + 1;
/// The default largest `len` a relay accepts (1 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;
/// Longest valid name, in bytes.
pub const MAX_NAME: usize = 32;

/// Frame types (the `type` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// client -> relay: register a name.
    Hello = 1,
    /// relay -> client: registration accepted.
    Welcome = 2,
    /// client -> relay: route a payload to a name.
    Send = 3,
    /// relay -> client: a payload from a registered sender.
    Deliver = 4,
    /// relay -> client: the sender's own SEND, returned because dst is not registered.
    Bounce = 5,
    /// relay -> client: fatal error; the relay closes the connection after it.
    Error = 6,
}

impl Kind {
    /// The kind for a type byte, if it is one of the six.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Send,
            4 => Kind::Deliver,
            5 => Kind::Bounce,
            6 => Kind::Error,
            _ => return None,
        })
    }
}

/// ERROR codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// HELLO with a name another connection holds.
    NameTaken = 1,
    /// HELLO with an empty, too long or badly formed name.
    BadName = 2,
    /// Anything before HELLO, or a second HELLO.
    NotRegistered = 3,
    /// A length prefix above the relay's max frame.
    FrameTooLarge = 4,
    /// len 0, unknown type, a relay->client type from a client, or dst_len past the body.
    BadFrame = 5,
    /// The relay has no room for another connection.
    RelayFull = 6,
}

impl ErrorCode {
    /// The code for a wire value, if known.
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        Some(match v {
            1 => ErrorCode::NameTaken,
            2 => ErrorCode::BadName,
            3 => ErrorCode::NotRegistered,
            4 => ErrorCode::FrameTooLarge,
            5 => ErrorCode::BadFrame,
            6 => ErrorCode::RelayFull,
            _ => return None,
        })
    }

    /// The name used in docs and logs, e.g. `NAME_TAKEN`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NameTaken => "NAME_TAKEN",
            ErrorCode::BadName => "BAD_NAME",
            ErrorCode::NotRegistered => "NOT_REGISTERED",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::RelayFull => "RELAY_FULL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol violation found while decoding: the ERROR code to answer it with and a text that
/// says what was wrong. (The verifier's findings about a relay are `record::Violation`.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {text}")]
pub struct ProtocolError {
    /// The ERROR code that answers it.
    pub code: ErrorCode,
    /// What was wrong, for the ERROR text and the logs.
    pub text: String,
}

impl ProtocolError {
    fn new(code: ErrorCode, text: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            text: text.into(),
        }
    }
}

/// True if `name` is 1..=32 bytes of `[A-Za-z0-9_.-]`.
pub fn is_valid_name(name: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Checks a name, saying what is wrong with it.
pub fn check_name(name: &[u8]) -> Result<(), ProtocolError> {
    if name.is_empty() {
        Err(ProtocolError::new(ErrorCode::BadName, "name is empty"))
    } else if name.len() > MAX_NAME {
        Err(ProtocolError::new(
            ErrorCode::BadName,
            format!("name is {} bytes; at most {MAX_NAME}", name.len()),
        ))
    } else if !is_valid_name(name) {
        Err(ProtocolError::new(
            ErrorCode::BadName,
            "name may hold only A-Z a-z 0-9 _ . -",
        ))
    } else {
        Ok(())
    }
}

/// One undecoded frame, borrowed from a decoder's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The type byte (not yet checked against [`Kind`]).
    pub kind: u8,
    /// The body: everything after the type byte.
    pub body: &'a [u8],
}

/// A frame a client sends, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// HELLO name (the name is not yet validated).
    Hello(&'a [u8]),
    /// SEND dst payload.
    Send {
        /// The receiver's name as the client wrote it.
        dst: &'a [u8],
        /// Opaque payload.
        payload: &'a [u8],
    },
}

/// A frame the relay sends, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFrame<'a> {
    /// WELCOME name.
    Welcome(&'a [u8]),
    /// DELIVER src payload.
    Deliver {
        /// The sender's registered name.
        src: &'a [u8],
        /// Opaque payload.
        payload: &'a [u8],
    },
    /// BOUNCE dst payload.
    Bounce {
        /// The name that was not registered.
        dst: &'a [u8],
        /// The payload that came back.
        payload: &'a [u8],
    },
    /// ERROR code text.
    Error {
        /// The code; an unknown code is kept as its number.
        code: u16,
        /// UTF-8 text (lossily decoded by readers).
        text: &'a [u8],
    },
}

/// Splits `name_len:u8 | name | rest`.
fn split_named<'a>(body: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8]), ProtocolError> {
    let (&n, rest) = body
        .split_first()
        .ok_or_else(|| ProtocolError::new(ErrorCode::BadFrame, format!("{what} body is empty")))?;
    let n = usize::from(n);
    if n > rest.len() {
        return Err(ProtocolError::new(
            ErrorCode::BadFrame,
            format!(
                "{what} name length {n} runs past the body ({} bytes left)",
                rest.len()
            ),
        ));
    }
    Ok(rest.split_at(n))
}

impl<'a> RawFrame<'a> {
    /// Parses a frame a client sent to the relay.
    pub fn client(self) -> Result<ClientFrame<'a>, ProtocolError> {
        match Kind::from_u8(self.kind) {
            Some(Kind::Hello) => Ok(ClientFrame::Hello(self.body)),
            Some(Kind::Send) => {
                let (dst, payload) = split_named(self.body, "SEND")?;
                Ok(ClientFrame::Send { dst, payload })
            }
            Some(k) => Err(ProtocolError::new(
                ErrorCode::BadFrame,
                format!(
                    "type {} ({k:?}) is sent by the relay, not by clients",
                    self.kind
                ),
            )),
            None => Err(ProtocolError::new(
                ErrorCode::BadFrame,
                format!("unknown frame type {}", self.kind),
            )),
        }
    }

    /// Parses a frame the relay sent to a client.
    pub fn relay(self) -> Result<RelayFrame<'a>, ProtocolError> {
        match Kind::from_u8(self.kind) {
            Some(Kind::Welcome) => Ok(RelayFrame::Welcome(self.body)),
            Some(Kind::Deliver) => {
                let (src, payload) = split_named(self.body, "DELIVER")?;
                Ok(RelayFrame::Deliver { src, payload })
            }
            Some(Kind::Bounce) => {
                let (dst, payload) = split_named(self.body, "BOUNCE")?;
                Ok(RelayFrame::Bounce { dst, payload })
            }
            Some(Kind::Error) => {
                if self.body.len() < 2 {
                    return Err(ProtocolError::new(
                        ErrorCode::BadFrame,
                        "ERROR body shorter than its code",
                    ));
                }
                let code = u16::from_be_bytes([self.body[0], self.body[1]]);
                Ok(RelayFrame::Error {
                    code,
                    text: &self.body[2..],
                })
            }
            Some(k) => Err(ProtocolError::new(
                ErrorCode::BadFrame,
                format!(
                    "type {} ({k:?}) is sent by clients, not by the relay",
                    self.kind
                ),
            )),
            None => Err(ProtocolError::new(
                ErrorCode::BadFrame,
                format!("unknown frame type {}", self.kind),
            )),
        }
    }
}

// ---- encoding: every function appends one whole frame to `out` ----

fn put_header(out: &mut Vec<u8>, kind: Kind, body_len: usize) {
    // Callers keep bodies far below 4 GiB (names are <= 32 bytes, payloads <= max_frame).
    let len = u32::try_from(body_len + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind as u8);
}

fn put_named(out: &mut Vec<u8>, kind: Kind, name: &[u8], payload: &[u8]) {
    // A name longer than 255 bytes cannot be framed; clip so the frame stays self-consistent.
    let name = &name[..name.len().min(255)];
    let body_len = 1 + name.len() + payload.len();
    let len = u32::try_from(body_len + 1).unwrap_or(u32::MAX);
    // Every frame routed passes here (twice): one reservation and three copies, not five.
    out.reserve(4 + 1 + body_len);
    let [a, b, c, d] = len.to_be_bytes();
    out.extend_from_slice(&[a, b, c, d, kind as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
}

/// Appends HELLO name.
pub fn put_hello(out: &mut Vec<u8>, name: &[u8]) {
    put_header(out, Kind::Hello, name.len());
    out.extend_from_slice(name);
}

/// Appends WELCOME name.
pub fn put_welcome(out: &mut Vec<u8>, name: &[u8]) {
    put_header(out, Kind::Welcome, name.len());
    out.extend_from_slice(name);
}

/// Appends SEND dst payload.
pub fn put_send(out: &mut Vec<u8>, dst: &[u8], payload: &[u8]) {
    put_named(out, Kind::Send, dst, payload);
}

/// Appends DELIVER src payload.
pub fn put_deliver(out: &mut Vec<u8>, src: &[u8], payload: &[u8]) {
    put_named(out, Kind::Deliver, src, payload);
}

/// Appends BOUNCE dst payload.
pub fn put_bounce(out: &mut Vec<u8>, dst: &[u8], payload: &[u8]) {
    put_named(out, Kind::Bounce, dst, payload);
}

/// Appends ERROR code text.
pub fn put_error(out: &mut Vec<u8>, code: ErrorCode, text: &str) {
    put_header(out, Kind::Error, 2 + text.len());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Size on the wire of a SEND (or DELIVER, or BOUNCE) with this name and payload length.
pub fn named_frame_len(name_len: usize, payload_len: usize) -> usize {
    HEADER_BYTES + 1 + name_len + payload_len
}

// ---- decoding ----

/// Where read bytes wait until they make whole frames.
///
/// Bytes live in `buf[start..end]`. Whole frames are handed out in place (no copy); the
/// unread tail moves to the front only when more room is needed. The buffer grows to fit
/// one frame of at most `max_frame`, and shrinks back once it is empty again, so memory
/// per connection is bounded by `max_frame`, never by traffic.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: u32,
    /// Bytes asked for per read: doubles (up to READ_CHUNK) whenever a read fills it.
    chunk: usize,
}

/// Most bytes a decoder asks the kernel for per read.
pub const READ_CHUNK: usize = 64 * 1024;
/// What a decoder asks for at first: an idle or chatty-but-small connection never needs more,
/// and a relay with thousands of them should not hold 64 KiB each.
pub const FIRST_CHUNK: usize = 4 * 1024;

impl Decoder {
    /// A decoder that refuses frames whose `len` exceeds `max_frame`.
    pub fn new(max_frame: u32) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame,
            chunk: FIRST_CHUNK,
        }
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes allocated (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends bytes (for callers that read by other means, and for tests).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// One `read` from `src` into free space; returns what `read` returned (0 = end of stream).
    pub fn read_from(&mut self, src: &mut impl Read) -> io::Result<usize> {
        self.make_room(self.chunk);
        let free = self.buf.len() - self.end;
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        if n == free && self.chunk < READ_CHUNK {
            self.chunk *= 2; // the kernel had more: ask for more next time
        }
        Ok(n)
    }

    /// Ensures `want` free bytes after `end` (more if the next frame needs it, up to its size).
    fn make_room(&mut self, want: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_CHUNK && want <= READ_CHUNK {
                self.buf = vec![0; READ_CHUNK];
            }
        }
        // Room for the whole of a partly received frame, so a big frame needs few reads.
        let frame_need = self.pending_frame_size().unwrap_or(0);
        let want = want.max(frame_need.saturating_sub(self.buffered()));
        if self.buf.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want.max(self.chunk), 0);
        }
    }

    /// The size (header included) of the frame at the front, if its length is known and legal.
    fn pending_frame_size(&self) -> Option<usize> {
        let b = &self.buf[self.start..self.end];
        if b.len() < LEN_BYTES {
            return None;
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (len >= 1 && len <= self.max_frame).then(|| LEN_BYTES + len as usize)
    }

    /// The next whole frame without consuming it (see [`Decoder::consume`]), `Ok(None)` if more
    /// bytes are needed, or the violation that makes the stream unusable. An oversized length
    /// is refused from the 4-byte prefix alone, before anything is allocated for it.
    pub fn peek_frame(&self) -> Result<Option<RawFrame<'_>>, ProtocolError> {
        let b = &self.buf[self.start..self.end];
        if b.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if len == 0 {
            return Err(ProtocolError::new(ErrorCode::BadFrame, "frame length is 0"));
        }
        if len > self.max_frame {
            return Err(ProtocolError::new(
                ErrorCode::FrameTooLarge,
                format!("frame length {len} exceeds the limit of {}", self.max_frame),
            ));
        }
        let total = LEN_BYTES + len as usize;
        if b.len() < total {
            return Ok(None);
        }
        Ok(Some(RawFrame {
            kind: b[LEN_BYTES],
            body: &b[HEADER_BYTES..total],
        }))
    }

    /// Drops the frame that [`Decoder::peek_frame`] returned.
    pub fn consume(&mut self, frame_body_len: usize) {
        self.start = (self.start + HEADER_BYTES + frame_body_len).min(self.end);
    }

    /// The next whole frame, consumed; otherwise as [`Decoder::peek_frame`].
    pub fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>, ProtocolError> {
        let body_len = match self.peek_frame()? {
            Some(f) => f.body.len(),
            None => return Ok(None),
        };
        let at = self.start;
        self.consume(body_len);
        let b = &self.buf[at..at + HEADER_BYTES + body_len];
        Ok(Some(RawFrame {
            kind: b[LEN_BYTES],
            body: &b[HEADER_BYTES..],
        }))
    }
}

/// Bytes queued for a socket: frames are appended at the back and written from the front as
/// the kernel takes them, without blocking. The relay keeps one per connection and a client
/// one for its socket.
///
/// Written bytes are dropped all at once when everything is out, or the written front once it
/// is most of the buffer (a queue that never empties must not creep), and a buffer that grew
/// for a burst is given back. It can also remember where its newest frame starts while none
/// of that frame is written: the relay's `reorder` fault swaps a frame in front of it.
#[derive(Debug, Default)]
pub struct OutBuf {
    bytes: Vec<u8>,
    /// `bytes[..written]` is written already.
    written: usize,
    /// Where the frame last queued with [`OutBuf::frame`] starts, while the kernel has taken
    /// none of it.
    last_frame: Option<usize>,
}

impl OutBuf {
    /// An empty queue.
    pub fn new() -> OutBuf {
        OutBuf::default()
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory held.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Where to append bytes (the `put_*` functions above write a frame into it).
    pub fn back(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Where to append a frame that [`OutBuf::take_last_frame`] may later take back.
    pub fn frame(&mut self) -> &mut Vec<u8> {
        self.last_frame = Some(self.bytes.len());
        &mut self.bytes
    }

    /// Removes the frame last queued with [`OutBuf::frame`] and what follows it, if the
    /// kernel has taken none of it yet; put it back with `frame().extend_from_slice`.
    pub fn take_last_frame(&mut self) -> Option<Vec<u8>> {
        let at = self.last_frame.take().filter(|&at| at < self.bytes.len())?;
        Some(self.bytes.split_off(at))
    }

    /// Drops everything queued, written or not.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.written = 0;
        self.last_frame = None;
    }

    /// Writes until the queue is empty or the kernel would block (retrying EINTR). A write of
    /// 0 bytes is an error (WriteZero): the peer can take no more.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        while self.written < self.bytes.len() {
            match w.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.compact();
        Ok(())
    }

    /// One write() of at most `limit` bytes (tests split frames across writes with it); a
    /// write the kernel would block or that a signal interrupts writes nothing.
    pub fn write_some_to(&mut self, w: &mut impl Write, limit: usize) -> io::Result<()> {
        let end = self.bytes.len().min(self.written + limit);
        match w.write(&self.bytes[self.written..end]) {
            Ok(n) => self.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.compact();
        Ok(())
    }

    /// Forgets a last frame the kernel has begun to take, and drops written bytes.
    fn compact(&mut self) {
        if self.last_frame.is_some_and(|at| self.written > at) || self.is_empty() {
            self.last_frame = None;
        }
        if self.is_empty() {
            self.bytes.clear();
            self.written = 0;
            // Give back a buffer that grew for a burst; keep a small one for the next.
            if self.bytes.capacity() > 4 * READ_CHUNK {
                self.bytes = Vec::with_capacity(READ_CHUNK);
            }
        } else if self.written > READ_CHUNK && self.written * 2 > self.bytes.len() {
            // Most of the buffer is written: move the rest to the front so it cannot creep.
            self.bytes.drain(..self.written);
            self.last_frame = self.last_frame.map(|at| at - self.written);
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name(b"ClientA"));
        assert!(is_valid_name(b"a.b-c_9"));
        assert!(is_valid_name(&[b'x'; 32]));
        assert!(!is_valid_name(&[b'x'; 33]));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b"a b"));
        assert!(!is_valid_name("é".as_bytes()));
        assert!(!is_valid_name(b"a/b"));
    }

    #[test]
    fn error_codes_round_trip() {
        for v in 1..=6 {
            let c = ErrorCode::from_u16(v).unwrap();
            assert_eq!(c as u16, v);
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(7), None);
    }

    #[test]
    fn error_codes_have_their_documented_names() {
        let names: Vec<String> = (1..=6)
            .filter_map(ErrorCode::from_u16)
            .map(|c| format!("{} {c}", c.name()))
            .collect();
        assert_eq!(
            names,
            [
                "NAME_TAKEN NAME_TAKEN",
                "BAD_NAME BAD_NAME",
                "NOT_REGISTERED NOT_REGISTERED",
                "FRAME_TOO_LARGE FRAME_TOO_LARGE",
                "BAD_FRAME BAD_FRAME",
                "RELAY_FULL RELAY_FULL",
            ]
        );
    }

    #[test]
    fn a_bad_name_is_told_what_is_wrong_with_it() {
        let why = |n: &[u8]| check_name(n).map_err(|v| v.to_string());
        assert_eq!(why(b""), Err("BAD_NAME: name is empty".into()));
        assert_eq!(
            why(&[b'x'; 33]),
            Err("BAD_NAME: name is 33 bytes; at most 32".into())
        );
        assert_eq!(
            why(b"a b"),
            Err("BAD_NAME: name may hold only A-Z a-z 0-9 _ . -".into())
        );
        assert_eq!(why(&[b'x'; 32]), Ok(()));
        assert_eq!(why(b"c0"), Ok(()));
    }

    #[test]
    fn a_named_frame_is_as_long_as_named_frame_len_says() {
        for (name, payload) in [
            (&b""[..], &b""[..]),
            (b"c1", b"hello"),
            (&[b'n'; 32], &[7u8; 300]),
        ] {
            for put in [put_send, put_deliver, put_bounce] {
                let mut out = Vec::new();
                put(&mut out, name, payload);
                assert_eq!(out.len(), named_frame_len(name.len(), payload.len()));
            }
        }
    }

    /// Reads ask for 4 KiB at first and double, up to 64 KiB, each time the kernel fills them.
    #[test]
    fn the_decoder_reads_in_chunks_that_grow_while_reads_come_back_full() {
        let mut d = Decoder::new(1 << 20);
        assert_eq!((d.buffered(), d.capacity()), (0, 0));
        let data = vec![0u8; 1 << 20];
        let mut src = &data[..];
        let mut sizes = Vec::new();
        for _ in 0..7 {
            sizes.push(d.read_from(&mut src).unwrap());
        }
        assert_eq!(
            sizes,
            [4096, 8192, 16384, 32768, 65536, 65536, 65536],
            "each read fills what was asked"
        );
        assert_eq!(d.buffered(), sizes.iter().sum::<usize>());
        assert!(d.capacity() >= d.buffered());
        // A short read does not grow the next one.
        let mut d = Decoder::new(1 << 20);
        let mut short = &data[..100];
        assert_eq!(d.read_from(&mut short).unwrap(), 100);
        let mut src = &data[..];
        assert_eq!(d.read_from(&mut src).unwrap(), 4096, "not 8192");
        assert_eq!(d.read_from(&mut src).unwrap(), 8192);
        let mut empty = &data[..0];
        assert_eq!(d.read_from(&mut empty).unwrap(), 0, "end of stream");
        assert_eq!(d.buffered(), 100 + 4096 + 8192);
    }

    /// Memory per connection is bounded by the largest frame, never by traffic: the buffer
    /// makes room by moving what is left to the front, takes a partly received frame whole in
    /// the next read, and shrinks back after a big frame.
    #[test]
    fn the_decoders_memory_follows_the_largest_frame_not_the_traffic() {
        let mut d = Decoder::new(1 << 20);
        // 100,000 frames of 100 bytes, fed in reads that split them anywhere.
        let mut stream = Vec::new();
        for i in 0..100_000u32 {
            put_send(&mut stream, b"c1", &[i as u8; 95]);
        }
        let mut src = &stream[..];
        let mut frames = 0;
        let mut peak = 0;
        while d.read_from(&mut src).unwrap() > 0 {
            while let Ok(Some(_)) = d.next_frame() {
                frames += 1;
            }
            peak = peak.max(d.capacity());
        }
        assert_eq!(frames, 100_000);
        assert!(peak <= 2 * READ_CHUNK, "grew to {peak} bytes with traffic");

        // A 200 KB frame: once its length is known, the next read takes all the rest of it.
        let mut d = Decoder::new(1 << 20);
        let mut big = Vec::new();
        put_send(&mut big, b"c1", &vec![7u8; 200_000]);
        let mut head = &big[..LEN_BYTES];
        d.read_from(&mut head).unwrap();
        let mut rest = &big[LEN_BYTES..];
        assert_eq!(d.read_from(&mut rest).unwrap(), big.len() - LEN_BYTES);
        assert!(d.capacity() < big.len() + READ_CHUNK);
        assert_eq!(d.next_frame().unwrap().map(|f| f.body.len()), Some(200_003));
        // Empty again: the next small read shrinks the buffer back to one chunk.
        let small = [0u8; 10];
        let mut s = &small[..];
        d.read_from(&mut s).unwrap();
        assert_eq!(d.capacity(), READ_CHUNK);
        // A length it refuses is never allocated for.
        let mut d = Decoder::new(1000);
        d.extend(&u32::MAX.to_be_bytes());
        let mut s = &small[..];
        d.read_from(&mut s).unwrap();
        assert!(d.capacity() <= FIRST_CHUNK * 2, "{}", d.capacity());
    }

    /// A writer that takes at most `room` bytes, then would block.
    struct Slow {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_out_buffer_writes_in_order_and_forgets_a_frame_once_it_is_begun() {
        let frame = |text: &[u8]| {
            let mut f = Vec::new();
            put_deliver(&mut f, b"a", text);
            f
        };
        let mut out = OutBuf::new();
        out.frame().extend_from_slice(&frame(b"first"));
        out.frame().extend_from_slice(&frame(b"second"));
        let mut w = Slow {
            got: Vec::new(),
            room: frame(b"first").len(),
        };
        out.write_to(&mut w).unwrap();
        // Nothing of "second" is written: it can be taken back and put after "third".
        let second = out.take_last_frame().expect("not begun");
        assert_eq!(second, frame(b"second"));
        out.frame().extend_from_slice(&frame(b"third"));
        out.frame().extend_from_slice(&second);
        // A write that reaches one byte into "second": begun, it stays where it is.
        w.room = frame(b"third").len() + 1;
        out.write_to(&mut w).unwrap();
        assert_eq!(out.take_last_frame(), None);
        w.room = usize::MAX;
        out.write_to(&mut w).unwrap();
        assert!(out.is_empty());
        let expect = [frame(b"first"), frame(b"third"), frame(b"second")].concat();
        assert_eq!(w.got, expect);
    }

    #[test]
    fn an_out_buffer_that_never_empties_does_not_creep() {
        let mut out = OutBuf::new();
        let mut w = Slow {
            got: Vec::new(),
            room: 0,
        };
        for _ in 0..100 {
            out.back().extend_from_slice(&[7u8; 10_000]);
            w.room = 9_000; // always a little behind
            out.write_to(&mut w).unwrap();
            // Written bytes are dropped once they are most of the buffer: it holds at most
            // about twice what waits (or a read chunk), and a vector's doubling on top.
            let bound = 2 * (2 * out.len().max(READ_CHUNK) + 10_000);
            assert!(out.capacity() <= bound, "{} > {bound}", out.capacity());
        }
        assert_eq!(out.len(), 100 * 1_000);
        assert!(w.got.iter().all(|&b| b == 7) && w.got.len() == 900_000);
        out.clear();
        assert!(out.is_empty());
    }

    #[test]
    fn an_out_buffer_gives_back_a_burst_and_a_zero_write_is_an_error() {
        let mut out = OutBuf::new();
        out.back().extend_from_slice(&vec![1u8; 8 * READ_CHUNK]);
        let mut sink = Vec::new();
        out.write_to(&mut sink).unwrap();
        assert!(
            out.is_empty() && out.capacity() <= READ_CHUNK,
            "{}",
            out.capacity()
        );
        out.back().push(1);
        let mut full: &mut [u8] = &mut [];
        let e = out.write_to(&mut full).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        out.write_some_to(&mut sink, 1).unwrap();
        assert!(out.is_empty());
    }
}
