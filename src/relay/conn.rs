//! One client connection as the relay sees it: socket, input and output buffers, name.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use super::backend::Interest;
use crate::protocol::{Decoder, OutBuf};
use crate::sys::Stream;

/// A connection's slot in the relay's table. Not a file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub usize);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and routing.
    Open,
    /// The client's input ended (end of stream, or a read error): route what is buffered.
    Draining,
    /// All its input is routed and its name is free: write what is queued for it, then close
    /// (a client that only shut down its sending side still gets everything sent to it).
    Closing,
    /// Sent ERROR: flush it, discard input, close on the client's EOF or the deadline.
    Lingering,
}

/// What a connection's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No HELLO yet: registered by then, or closed.
    Hello,
    /// A frame has started: complete by then, or closed.
    Frame,
    /// ERROR sent: closed by then whatever the client does.
    Linger,
    /// The client is gone (a read or write failed): what it sent is routed by then, or what is
    /// still held back behind a full receiver is dropped and the connection closed, so a dead
    /// client cannot keep its name for good.
    Gone,
}

/// One client connection.
pub struct Conn {
    pub stream: Stream,
    pub fd: RawFd,
    pub phase: Phase,
    /// Registered name, once HELLO is accepted; kept after the name is freed, to describe the
    /// connection (the relay's `names` table says who holds a name).
    pub name: Option<Box<[u8]>>,
    /// Bytes read and not yet routed.
    pub input: Decoder,
    /// Frames queued for this client.
    pub out: OutBuf,
    /// A write found the client gone: nothing more is queued or written for it (sends to it
    /// bounce), but what it sent before it went is still read and routed.
    pub gone: bool,
    /// Its peer fell silent (ETIMEDOUT): counted once in the relay's stats.
    pub timed_out: bool,
    /// The receiver whose full buffer holds this sender back.
    pub blocked_on: Option<ConnId>,
    /// Since when this sender is held back (meaningful while `blocked_on` is set).
    pub blocked_since: Instant,
    /// Senders held back until this connection's output drains.
    pub waiters: Vec<ConnId>,
    /// What the backend currently watches for this fd.
    pub interest: Interest,
    /// Queued in the relay's dirty list (output to flush).
    pub dirty: bool,
    /// Queued in the relay's touched list (interest to recompute).
    pub touched: bool,
    /// The one timer this connection may have running, and when it fires.
    pub deadline: Option<(Instant, Timer)>,
    /// When this connection's live entry in the relay's timer heap comes due (at most one;
    /// at or before `deadline`).
    pub timer_entry: Option<Instant>,
    /// Unique per connection ever accepted (a slot is reused; a serial is not).
    pub serial: u64,
    /// Serial of the connection that sent the last frame queued in `out` (the `reorder`
    /// fault swaps a frame in front of it only within one pair, where FIFO is promised).
    pub last_from: u64,
}

impl Conn {
    pub fn new(stream: Stream, fd: RawFd, max_frame: u32, serial: u64) -> Conn {
        Conn {
            stream,
            fd,
            phase: Phase::Open,
            name: None,
            input: Decoder::new(max_frame),
            out: OutBuf::new(),
            gone: false,
            timed_out: false,
            blocked_on: None,
            blocked_since: Instant::now(),
            waiters: Vec::new(),
            interest: Interest::READ,
            dirty: false,
            touched: false,
            deadline: None,
            timer_entry: None,
            serial,
            last_from: u64::MAX,
        }
    }

    /// Output bytes not yet written.
    pub fn out_len(&self) -> usize {
        self.out.len()
    }

    /// What to watch: writable while output waits; readable unless held back or done reading.
    pub fn wanted_interest(&self) -> Interest {
        let read = match self.phase {
            Phase::Open => self.blocked_on.is_none(),
            Phase::Draining | Phase::Closing => false,
            Phase::Lingering => true,
        };
        Interest {
            read,
            write: self.out_len() > 0,
        }
    }

    /// Writes until the buffer is empty or the kernel would block.
    pub fn write_out(&mut self) -> io::Result<()> {
        self.out.write_to(&mut self.stream)
    }
}
