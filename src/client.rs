//! The client library: connect, register, send and receive at the same time.
//!
//! A client that only writes while its peer only writes back can deadlock once the relay
//! holds both back (backpressure). So every blocking call here keeps reading while it waits
//! to write: [`Client::pump`] is one round of "wait until the socket is ready, write what the
//! kernel takes, read one chunk, hand out every whole frame", and the rest is built on it.
//! The harness and the interactive client share this code.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};

use crate::protocol::{
    self, Decoder, ErrorCode, OutBuf, ProtocolError, RelayFrame, DEFAULT_MAX_FRAME,
};
use crate::sys::{poll_timeout, Addr, Stream};

/// The largest frame a client accepts from a relay (bounds what a broken relay can make it allocate).
pub const CLIENT_MAX_FRAME: u32 = 256 * DEFAULT_MAX_FRAME;

/// How long `connect` waits for WELCOME by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket call failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The relay sent bytes that break protocol v1.
    #[error("the relay broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The relay answered with ERROR.
    #[error("the relay said {}: {text}", code_name(*.code))]
    Refused {
        /// The ERROR code.
        code: u16,
        /// Its text.
        text: String,
    },
    /// The relay closed the connection.
    #[error("the relay closed the connection")]
    Closed,
    /// Nothing came in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// `NAME_TAKEN` for 1, and so on; the number for unknown codes.
pub fn code_name(code: u16) -> String {
    ErrorCode::from_u16(code)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| format!("error code {code}"))
}

impl ClientError {
    /// The ERROR code, if the relay refused something.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A frame from the relay, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// DELIVER: `payload` from the registered client `src`.
    Deliver {
        /// Sender's registered name.
        src: String,
        /// Payload.
        payload: Vec<u8>,
    },
    /// BOUNCE: our own SEND to `dst` came back; nobody has that name.
    Bounce {
        /// The unregistered name.
        dst: String,
        /// Our payload.
        payload: Vec<u8>,
    },
    /// ERROR: the relay closes the connection after it.
    Error {
        /// The code.
        code: u16,
        /// The text.
        text: String,
    },
    /// WELCOME (only seen by code that sends HELLO itself).
    Welcome(String),
}

impl From<RelayFrame<'_>> for Message {
    fn from(f: RelayFrame<'_>) -> Message {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match f {
            RelayFrame::Welcome(n) => Message::Welcome(s(n)),
            RelayFrame::Deliver { src, payload } => Message::Deliver {
                src: s(src),
                payload: payload.to_vec(),
            },
            RelayFrame::Bounce { dst, payload } => Message::Bounce {
                dst: s(dst),
                payload: payload.to_vec(),
            },
            RelayFrame::Error { code, text } => Message::Error {
                code,
                text: s(text),
            },
        }
    }
}

/// What one non-blocking read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Read this many bytes.
    Read(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The relay closed the connection.
    Eof,
}

/// A registered connection to a relay.
pub struct Client {
    stream: Stream,
    name: String,
    input: Decoder,
    out: OutBuf,
    /// Frames read while a blocking call waited to write, kept for `recv`.
    backlog: VecDeque<Message>,
    eof: bool,
}

impl Client {
    /// Connects to `addr` and registers `name`; fails with `Refused` if the relay says no.
    pub fn connect(addr: &Addr, name: &str) -> Result<Client, ClientError> {
        let stream = Stream::connect(addr)?;
        Client::register(stream, name, HANDSHAKE_TIMEOUT)
    }

    /// Sends HELLO on a connected stream and waits (at most `timeout`) for WELCOME.
    pub fn register(stream: Stream, name: &str, timeout: Duration) -> Result<Client, ClientError> {
        stream.set_nonblocking(true)?;
        let mut c = Client {
            stream,
            name: name.to_string(),
            input: Decoder::new(CLIENT_MAX_FRAME),
            out: OutBuf::new(),
            backlog: VecDeque::new(),
            eof: false,
        };
        protocol::put_hello(c.out.back(), name.as_bytes());
        match c.recv(Some(timeout))? {
            Message::Welcome(_) => Ok(c),
            Message::Error { code, text } => Err(ClientError::Refused { code, text }),
            other => Err(ClientError::Protocol(ProtocolError {
                code: ErrorCode::BadFrame,
                text: format!("expected WELCOME or ERROR after HELLO, got {other:?}"),
            })),
        }
    }

    /// The registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues a SEND; nothing is written until a pump, flush or recv.
    pub fn queue(&mut self, dst: &str, payload: &[u8]) {
        protocol::put_send(self.out.back(), dst.as_bytes(), payload);
    }

    /// Appends raw bytes to the output (for tests of the relay's decoder).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.back().extend_from_slice(bytes);
    }

    /// Output bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// True once the relay has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.eof
    }

    /// Writes what the kernel takes now, without blocking.
    pub fn write_some(&mut self) -> io::Result<()> {
        self.out.write_to(&mut self.stream)
    }

    /// One write() of at most `limit` bytes (tests use it to split frames across writes).
    pub fn write_at_most(&mut self, limit: usize) -> io::Result<()> {
        self.out.write_some_to(&mut self.stream, limit)
    }

    /// One round: wait up to `timeout` for the socket, write what it takes, read one chunk
    /// and give every whole frame to `on_frame`. Returns false once the relay has closed.
    pub fn pump(
        &mut self,
        timeout: Option<Duration>,
        mut on_frame: impl FnMut(RelayFrame<'_>),
    ) -> Result<bool, ClientError> {
        if self.eof {
            return Ok(false);
        }
        let want_write = self.pending() > 0;
        let (readable, writable) = wait_fd(&self.stream, true, want_write, timeout)?;
        if writable {
            self.write_some()?;
        }
        if readable && self.read_some(&mut on_frame)? == Progress::Eof {
            return Ok(false);
        }
        Ok(true)
    }

    /// One non-blocking read: hands every whole frame to `on_frame`.
    pub fn read_some(
        &mut self,
        mut on_frame: impl FnMut(RelayFrame<'_>),
    ) -> Result<Progress, ClientError> {
        let n = match self.input.read_from(&mut self.stream) {
            Ok(n) => n,
            Err(e) if crate::sys::retry_later(&e) => return Ok(Progress::WouldBlock),
            // A reset right after an ERROR still counts as the relay closing.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e.into()),
        };
        while let Some(f) = self.input.next_frame()? {
            on_frame(f.relay()?);
        }
        if n == 0 {
            self.eof = true;
            return Ok(Progress::Eof);
        }
        Ok(Progress::Read(n))
    }

    fn pump_to_backlog(&mut self, timeout: Option<Duration>) -> Result<bool, ClientError> {
        let mut got = Vec::new();
        let open = self.pump(timeout, |f| got.push(Message::from(f)))?;
        self.backlog.extend(got);
        Ok(open)
    }

    /// Writes everything queued, keeping incoming frames for `recv`. Blocks at most `timeout`.
    pub fn flush(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        while self.pending() > 0 {
            let left = remaining(deadline, timeout)?;
            if !self.pump_to_backlog(left)? {
                return Err(ClientError::Closed);
            }
        }
        Ok(())
    }

    /// Leaves without losing anything in flight: writes everything queued, shuts down the
    /// sending side, and reads until the relay closes, giving every frame to `on_frame`. The
    /// relay then routes all we sent before it closes. (Closing a socket with unread input
    /// instead sends a TCP reset, and the kernel discards what it had not yet sent.) Blocks at
    /// most `timeout`; frames kept for `recv` stay there.
    pub fn leave(
        &mut self,
        timeout: Option<Duration>,
        mut on_frame: impl FnMut(RelayFrame<'_>),
    ) -> Result<(), ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        while self.pending() > 0 {
            let left = remaining(deadline, timeout)?;
            if !self.pump(left, &mut on_frame)? {
                return Err(ClientError::Closed);
            }
        }
        if !self.eof {
            match self.stream.shutdown(std::net::Shutdown::Write) {
                Ok(()) => {}
                // The connection was reset: what the relay sent before is still to be read.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e.into()),
            }
        }
        while !self.eof {
            let left = remaining(deadline, timeout)?;
            if wait_fd(&self.stream, true, false, left)?.0 {
                self.read_some(&mut on_frame)?;
            }
        }
        Ok(())
    }

    /// The next frame from the relay, writing queued output meanwhile. Blocks at most `timeout`.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Message, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(m) = self.backlog.pop_front() {
                return Ok(m);
            }
            let left = remaining(deadline, timeout)?;
            if !self.pump_to_backlog(left)? && self.backlog.is_empty() {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Queues and flushes one SEND.
    pub fn send(&mut self, dst: &str, payload: &[u8]) -> Result<(), ClientError> {
        self.queue(dst, payload);
        self.flush(Some(HANDSHAKE_TIMEOUT))
    }

    /// Frames already read and kept by `flush`.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }
}

/// The socket, to poll it beside other fds.
impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Time left before `deadline`, or `Timeout` when it has passed.
fn remaining(
    deadline: Option<Instant>,
    timeout: Option<Duration>,
) -> Result<Option<Duration>, ClientError> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(ClientError::Timeout(timeout.unwrap_or_default()))
            } else {
                Ok(Some(left))
            }
        }
    }
}

/// poll(2) on one fd; returns (readable-or-hung-up, writable).
pub fn wait_fd(
    fd: &impl AsFd,
    read: bool,
    write: bool,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let mut flags = PollFlags::empty();
    if read {
        flags |= PollFlags::POLLIN;
    }
    if write {
        flags |= PollFlags::POLLOUT;
    }
    let mut fds = [PollFd::new(fd.as_fd(), flags)];
    match poll(&mut fds, poll_timeout(timeout)) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok((false, false)),
        Err(e) => return Err(e.into()),
    }
    let r = fds[0].revents().unwrap_or(PollFlags::empty());
    let readable = r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
    Ok((readable, r.contains(PollFlags::POLLOUT)))
}
