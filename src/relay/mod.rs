//! The relay: one process, one loop, every socket non-blocking.
//!
//! ```text
//! loop:
//!     wait until some socket is ready            (backend: select by default)
//!     listener ready  -> accept every waiting client
//!     client readable -> read a chunk, route every whole frame in it
//!     client writable -> write as much of its output buffer as the kernel takes
//!     then: flush what routing queued, resume senders that were held back
//! ```
//!
//! What the textbook select loop leaves out, and this one does:
//! - a frame may arrive split over many reads, or many frames in one read: each connection
//!   keeps an input buffer ([`Decoder`]) and frames are cut from it;
//! - a write may take only part of a buffer: each connection keeps an output buffer, and the
//!   relay asks for writability only while that buffer holds something;
//! - a receiver that does not read must not make the relay grow or stall: once its output
//!   passes `max_buffer`, the relay stops reading from any sender whose next frame targets it
//!   (backpressure) and drops nothing. Other pairs keep flowing.

pub mod backend;
mod conn;
pub mod inject;
pub mod spin;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::protocol::{self, check_name, ClientFrame, ErrorCode, ProtocolError, DEFAULT_MAX_FRAME};
use crate::sys::{Listener, Stream};
use backend::{Backend, Event, Interest, Token};
use conn::{Conn, ConnId, Phase, Timer};
pub use spin::Spin;

/// `--max-buffer`'s default: 64 KiB per receiver keeps the relay's memory the same in a
/// ten-second run and a ten-hour one (docs/performance.md measures what it costs).
pub const DEFAULT_MAX_BUFFER: usize = 64 << 10;

/// Relay limits and choices.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame `len` accepted from a client.
    pub max_frame: u32,
    /// Output bytes buffered for one receiver before its senders are held back.
    pub max_buffer: usize,
    /// Most connections held at once; more get RELAY_FULL.
    pub max_clients: usize,
    /// Readiness backend name (see [`backend::NAMES`]).
    pub backend: String,
    /// Log connects, registrations, errors and disconnects to stderr.
    pub log: bool,
    /// A connection must send HELLO within this long, or it is closed.
    pub hello_timeout: Duration,
    /// A frame must be complete this long after its first byte arrived, or the connection is
    /// closed (the clock stops while the relay itself holds the sender back).
    pub frame_timeout: Duration,
    /// Break a promise on purpose (tests of the verifier); None in normal use.
    pub inject: Option<inject::Inject>,
    /// When to keep polling (a zero-timeout wait) after activity instead of blocking: it saves
    /// the relay a wake-up per message at low load, at the cost of a busy core (see [`spin`]).
    pub spin: Spin,
    /// `--trace`: keep the first this-many events (accepts, registrations, each wait, each
    /// routed frame, errors, closes) with their times.
    pub trace: Option<usize>,
    /// TCP: give up on a peer that stops answering within about this long (`--peer-timeout`,
    /// see [`crate::sys::Stream::set_peer_timeout`]); None keeps the kernel's defaults (a dead
    /// peer can be held for 15 minutes or, idle, forever).
    pub peer_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: DEFAULT_MAX_FRAME,
            max_buffer: DEFAULT_MAX_BUFFER,
            max_clients: 1000,
            backend: "select".into(),
            log: true,
            hello_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            inject: None,
            spin: Spin::Off,
            trace: None,
            peer_timeout: None,
        }
    }
}

/// What a relay did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections turned away with RELAY_FULL.
    pub refused: u64,
    /// DELIVER frames queued.
    pub delivered: u64,
    /// BOUNCE frames queued.
    pub bounced: u64,
    /// ERROR frames sent (each closes a connection).
    pub errors: u64,
    /// Times a sender was held back by a full receiver.
    pub held_back: u64,
    /// Most connections open at once.
    pub peak_connections: usize,
    /// Times an injected fault was applied.
    pub injected: u64,
    /// Time senders spent held back, summed over senders (nanoseconds).
    pub held_back_ns: u64,
    /// Connections ended because the peer fell silent (ETIMEDOUT: `peer_timeout`, or TCP's
    /// own retransmission give-up).
    pub peer_timeouts: u64,
    /// What the relay did, when traced.
    pub trace: Option<relay_trace::Trace>,
}

/// Whether `t` can be a peer timeout: keepalive counts whole seconds, and its idle time is at
/// most 32,767 s (half of 18 h).
pub fn check_peer_timeout(t: Duration) -> Result<(), String> {
    if t < Duration::from_secs(2) || t > Duration::from_secs(18 * 3600) {
        return Err("--peer-timeout: must be from 2s to 18h (keepalive counts whole seconds, up to 32,767 of them before its first probe)".into());
    }
    Ok(())
}

/// Why the relay stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// `--backend` named no backend of this build.
    #[error("unknown backend {0:?}; this build has: {names}", names = backend::NAMES.join(", "))]
    UnknownBackend(String),
    /// The backend's wait failed.
    #[error("{backend} wait failed: {source}")]
    Wait {
        /// Backend name.
        backend: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The listening socket or stop fd could not be watched.
    #[error("cannot watch the listening socket: {0}")]
    Setup(io::Error),
}

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);
const FIRST_CONN_TOKEN: usize = 2;

/// How long a connection closed for an error may linger to deliver its ERROR.
const ERROR_LINGER: Duration = Duration::from_secs(2);

fn token_of(id: ConnId) -> Token {
    Token(id.0 + FIRST_CONN_TOKEN)
}

/// The relay's state between two waits.
pub struct Relay {
    cfg: Config,
    backend: Box<dyn Backend>,
    /// None for a relay whose connections are handed to it ([`Relay::adopt`]), as in fuzzing.
    listener: Option<Listener>,
    /// Readable (a byte or end of file) when the relay should stop.
    stop: Option<OwnedFd>,
    /// Connections by slot; a closed slot is reused.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    /// The registration table: name -> connection.
    names: HashMap<Box<[u8]>, ConnId, foldhash::fast::RandomState>,
    /// Connections whose output buffer got bytes since the last flush.
    dirty: Vec<ConnId>,
    /// Held-back senders whose receiver drained: route their buffered frames.
    woken: Vec<ConnId>,
    /// Connections whose wanted interest may have changed.
    touched: Vec<ConnId>,
    /// An empty list kept for swapping with `dirty` or `touched`, so no turn allocates.
    spare: Vec<ConnId>,
    /// Deadlines: (when, slot, serial), earliest first; at most one live entry per connection
    /// (its `timer_entry`). A deadline moved later keeps its entry, which re-queues itself at
    /// the new time when it comes due; entries of closed connections or replaced by an earlier
    /// one are stale and skipped (cheaper than removing them from the heap).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Serial of the next accepted connection.
    next_serial: u64,
    /// The time after the last wait; what deadlines are set from.
    now: Instant,
    /// The backend's fired events, kept to reuse the allocation.
    events: Vec<Event>,
    /// Every name registered, when recording (see [`Relay::record_registrations`]).
    registrations: Option<Vec<(u64, Box<[u8]>)>>,
    /// Fault injection, when asked for.
    injector: Option<inject::Injector>,
    /// An fd kept open to give back when accept() hits the fd limit (EMFILE).
    reserve_fd: Option<File>,
    stopping: bool,
    stats: Stats,
    /// The busy-poll policy and its state.
    spinner: spin::Spinner,
    /// Busy-polls that found nothing since the last traced wait.
    empty_polls: u64,
    /// `--trace`. In a RefCell because `log` takes `&self` (its messages borrow the relay);
    /// the loop is single-threaded, so a borrow never fails.
    trace: std::cell::RefCell<Option<relay_trace::Tracer>>,
}

/// Runs the relay on `listener` until `stop` becomes readable (a byte or end of file).
///
/// The caller makes `stop` readable from a signal handler (see the `relay` command) or by
/// closing the other end of a pipe. Every connection is closed and the listener dropped (which
/// removes a Unix socket file) before this returns.
pub fn run(listener: Listener, stop: Option<OwnedFd>, cfg: Config) -> Result<Stats, RelayError> {
    let mut relay = Relay::new(Some(listener), stop, cfg)?;
    let result = relay.serve();
    relay.shutdown();
    let mut stats = relay.stats.clone();
    stats.trace = relay.take_trace();
    result.map(|()| stats)
}

impl Relay {
    /// A relay on `listener` (if any), stopping when `stop` (if any) becomes readable.
    pub fn new(
        listener: Option<Listener>,
        stop: Option<OwnedFd>,
        cfg: Config,
    ) -> Result<Relay, RelayError> {
        let backend = backend::by_name(&cfg.backend)
            .ok_or_else(|| RelayError::UnknownBackend(cfg.backend.clone()))?;
        let spinner = spin::Spinner::new(cfg.spin);
        let mut relay = Relay {
            cfg,
            backend,
            listener,
            stop,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            // foldhash: a lookup per SEND, so a fast hash; randomly seeded per process, so a
            // client cannot pick names that collide (SipHash, the default, is slower per name).
            names: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            dirty: Vec::new(),
            woken: Vec::new(),
            touched: Vec::new(),
            spare: Vec::new(),
            timers: BinaryHeap::new(),
            next_serial: 0,
            now: Instant::now(),
            events: Vec::with_capacity(256),
            registrations: None,
            injector: None,
            reserve_fd: File::open("/dev/null").ok(),
            stopping: false,
            stats: Stats::default(),
            spinner,
            empty_polls: 0,
            trace: std::cell::RefCell::new(None),
        };
        *relay.trace.get_mut() = relay.cfg.trace.map(relay_trace::Tracer::new);
        relay.injector = relay.cfg.inject.map(inject::Injector::new);
        if let Some(i) = &relay.cfg.inject {
            relay.log(format_args!(
                "INJECTING FAULTS: {i} (this relay breaks its promises on purpose)"
            ));
        }
        if let Some(l) = &relay.listener {
            let lfd = l.as_fd_raw();
            relay
                .backend
                .set(lfd, LISTENER, Interest::READ)
                .map_err(RelayError::Setup)?;
        }
        if let Some(s) = &relay.stop {
            let sfd = s.as_raw_fd();
            relay
                .backend
                .set(sfd, STOP, Interest::READ)
                .map_err(RelayError::Setup)?;
        }
        let addr = relay
            .listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "no listener".to_string(), |a| a.to_string());
        relay.log(format_args!(
            "listening on {addr} (backend {}, max-frame {}, max-buffer {}, max-clients {})",
            relay.backend.name(),
            relay.cfg.max_frame,
            relay.cfg.max_buffer,
            relay.cfg.max_clients
        ));
        Ok(relay)
    }

    /// Takes a connected stream as if it had been accepted (tests and fuzzing use this).
    /// Returns the connection's serial (as in [`Relay::take_registrations`]), or None when the
    /// relay turned it away.
    pub fn adopt(&mut self, stream: Stream) -> std::io::Result<Option<u64>> {
        stream.set_nonblocking(true)?;
        let serial = self.next_serial;
        let before = self.stats.accepted;
        self.admit(stream);
        self.settle();
        Ok((self.stats.accepted > before).then_some(serial))
    }

    /// What the relay has done so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The trace kept so far (with `Config::trace`), leaving an empty one to go on with.
    pub fn take_trace(&mut self) -> Option<relay_trace::Trace> {
        self.trace.get_mut().as_mut().map(|t| t.take())
    }

    /// Output bytes queued for the client registered under `name` and not yet written (None
    /// when nobody holds the name): what holds its senders back at `max_buffer`.
    pub fn queued(&self, name: &[u8]) -> Option<usize> {
        let id = self.names.get(name)?;
        self.conns.get(id.0)?.as_ref().map(Conn::out_len)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.open
    }

    /// Starts keeping every name the relay registers, for [`Relay::take_registrations`]
    /// (the fuzz target checks that a DELIVER's `src` was really registered).
    pub fn record_registrations(&mut self) {
        self.registrations = Some(Vec::new());
    }

    /// The (connection serial, name) pairs registered since the last call (when recording).
    pub fn take_registrations(&mut self) -> Vec<(u64, Box<[u8]>)> {
        self.registrations
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Bytes allocated for connection buffers, input and output (for memory bounds).
    pub fn buffered_bytes(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .map(|c| c.input.capacity() + c.out.capacity())
            .sum()
    }
}

impl Listener {
    fn as_fd_raw(&self) -> i32 {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

impl Relay {
    fn log(&self, args: std::fmt::Arguments<'_>) {
        if self.cfg.log {
            eprintln!("relay: {args}");
        }
        if let Ok(mut t) = self.trace.try_borrow_mut() {
            if let Some(t) = t.as_mut() {
                t.ev(|| args.to_string());
            }
        }
    }

    /// Records a trace event (only built when tracing, and while there is room).
    fn trace(&mut self, what: impl FnOnce(&Relay) -> String) {
        if self.trace.get_mut().as_ref().is_some_and(|t| t.room()) {
            let text = what(self);
            if let Some(t) = self.trace.get_mut() {
                t.ev(|| text);
            }
        } else if let Some(t) = self.trace.get_mut() {
            t.ev(String::new); // counted as cut
        }
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        slot(&mut self.conns, id)
    }

    /// The loop: steps until asked to stop.
    pub fn serve(&mut self) -> Result<(), RelayError> {
        while !self.stopping {
            self.step(None)?;
        }
        Ok(())
    }

    /// One turn of the loop: wait (at most `limit`, and never past the next deadline), handle
    /// what is ready, flush, and act on deadlines that passed.
    pub fn step(&mut self, limit: Option<Duration>) -> Result<(), RelayError> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let until_deadline = self
            .timers
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()));
        let mut timeout = match (until_deadline, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Idle time counts from the end of the last wait: no extra clock reading per turn.
        let polling = self.spinner.poll_now(self.now);
        if polling {
            timeout = Some(Duration::ZERO); // busy-poll: the next frame is likely on its way
        }
        let before = self.trace.get_mut().is_some().then(Instant::now);
        let waited = self.backend.wait(timeout, &mut events);
        self.now = Instant::now();
        if !events.is_empty() {
            self.spinner.active(self.now);
        }
        if let Some(t0) = before {
            if polling && events.is_empty() {
                // An empty busy-poll: counted, not traced one by one (they would crowd out
                // everything else the relay keeps).
                self.empty_polls += 1;
            } else {
                let slept = self.now.duration_since(t0);
                let ready = events.len();
                let polls = std::mem::take(&mut self.empty_polls);
                self.trace(|r| {
                    let spun = match polls {
                        0 => String::new(),
                        n => format!(" (busy-polled {n} times before it)"),
                    };
                    format!(
                        "{}() watching {} fds (listener, stop pipe, {} clients): {ready} ready after {:.3} ms{spun}",
                        r.backend.name(),
                        r.open + 2,
                        r.open,
                        slept.as_secs_f64() * 1000.0
                    )
                });
            }
        }
        if let Err(source) = waited {
            self.events = events;
            return Err(RelayError::Wait {
                backend: self.backend.name(),
                source,
            });
        }
        for ev in &events {
            match ev.token {
                LISTENER => self.accept_all(),
                STOP => self.stopping = true,
                Token(t) => {
                    let id = ConnId(t - FIRST_CONN_TOKEN);
                    if ev.readable {
                        self.read_once(id);
                    }
                    if ev.writable {
                        self.flush(id);
                    }
                }
            }
        }
        self.events = events;
        self.settle();
        self.expire_timers();
        Ok(())
    }

    /// Accepts every waiting connection; turns away those beyond capacity with RELAY_FULL.
    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let stream = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error().is_some_and(is_fd_limit) => {
                    // Out of fds: the pending client would make select() fire forever. Free the
                    // reserve fd, accept and turn the client away, then take the reserve back.
                    self.reserve_fd = None;
                    if let Some(Ok(s)) = self.listener.as_ref().map(Listener::accept) {
                        self.refuse(s, "the relay is out of file descriptors");
                    }
                    self.reserve_fd = File::open("/dev/null").ok();
                    self.log(format_args!(
                        "accept: {e}; raise the open-files limit (ulimit -n)"
                    ));
                    return;
                }
                Err(e) => {
                    self.log(format_args!("accept failed: {e}"));
                    return;
                }
            };
            self.admit(stream);
        }
    }

    /// Takes a new connection into the table, or turns it away when the relay is full.
    fn admit(&mut self, stream: Stream) {
        let fd = stream.as_raw_fd();
        if self.open >= self.cfg.max_clients {
            let why = format!(
                "the relay holds its maximum of {} connections",
                self.cfg.max_clients
            );
            self.refuse(stream, &why);
            return;
        }
        if let Some(max) = self.backend.max_fd() {
            if fd > max {
                let why = format!(
                    "fd {fd} is beyond what the {} backend can watch (max {max})",
                    self.backend.name()
                );
                self.refuse(stream, &why);
                return;
            }
        }
        if let Some(t) = self.cfg.peer_timeout {
            if let Err(e) = stream.set_peer_timeout(t) {
                self.log(format_args!("fd {fd}: cannot set --peer-timeout: {e}"));
            }
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let id = ConnId(slot);
        if let Err(e) = self.backend.set(fd, token_of(id), Interest::READ) {
            self.free.push(slot);
            self.refuse(stream, &format!("cannot watch fd {fd}: {e}"));
            return;
        }
        self.conns[slot] = Some(Conn::new(stream, fd, self.cfg.max_frame, self.next_serial));
        self.next_serial += 1;
        self.arm(id, Timer::Hello, self.cfg.hello_timeout);
        self.open += 1;
        self.stats.accepted += 1;
        self.stats.peak_connections = self.stats.peak_connections.max(self.open);
        self.log(format_args!(
            "accept() -> fd {fd}: a new connection (conn {slot})"
        ));
    }

    /// Sends RELAY_FULL to a connection that is not kept, and closes it.
    fn refuse(&mut self, mut stream: Stream, why: &str) {
        use std::io::Write;
        let mut out = Vec::new();
        protocol::put_error(&mut out, ErrorCode::RelayFull, why);
        // A fresh socket's send buffer is empty: this small write completes or fails at once.
        let _ = stream.write(&out);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Read what the client already sent, so closing does not reset a TCP connection
        // (an RST could destroy the ERROR before the client reads it).
        let _ = stream.read(&mut [0u8; 1024]);
        self.stats.refused += 1;
        self.log(format_args!(
            "refused fd {}: RELAY_FULL: {why}",
            stream.as_raw_fd()
        ));
    }

    /// Reads one chunk from a readable connection and routes what it completes.
    fn read_once(&mut self, id: ConnId) {
        let Some(c) = self.conn(id) else { return };
        if c.phase == Phase::Lingering {
            // Discard until the client closes, so the ERROR we sent is not lost to a reset.
            match c.stream.read(&mut [0u8; 4096]) {
                Ok(0) => self.close(id, "closed after error"),
                Ok(_) => {}
                Err(e) if crate::sys::retry_later(&e) => {}
                Err(_) => self.close(id, "closed after error"),
            }
            return;
        }
        if c.blocked_on.is_some() || c.phase != Phase::Open {
            return;
        }
        match c.input.read_from(&mut c.stream) {
            Ok(0) => self.end_of_input(id, None),
            Ok(_) => self.route_input(id),
            Err(e) if crate::sys::retry_later(&e) => {}
            // A reset comes after the data that preceded it: what was read is still routed.
            Err(e) => self.end_of_input(id, Some(e)),
        }
    }

    /// A client's input has ended: route what is buffered (as far as its receivers take it;
    /// a held-back sender resumes when woken), then close. Whatever ends the connection, what
    /// the client sent before is routed (guarantee 2).
    fn end_of_input(&mut self, id: ConnId, error: Option<io::Error>) {
        let Some(c) = self.conn(id) else { return };
        c.phase = Phase::Draining;
        if let Some(e) = error {
            self.count_timeout(id, &e);
            let desc = self.describe(id);
            self.log(format_args!(
                "{desc}: read failed: {e}; routing what it sent"
            ));
            self.arm(id, Timer::Gone, self.cfg.frame_timeout);
        }
        self.touch(id);
        self.route_input(id);
    }

    /// Counts a connection that failed because its peer fell silent (once per connection).
    fn count_timeout(&mut self, id: ConnId, e: &io::Error) {
        if e.kind() != io::ErrorKind::TimedOut {
            return;
        }
        if let Some(c) = self.conn(id) {
            if !c.timed_out {
                c.timed_out = true;
                self.stats.peer_timeouts += 1;
            }
        }
    }

    /// A write found the client gone: its output is dropped and sends to it now bounce, but
    /// what it sent before it went is still read and routed, also when a full receiver holds
    /// it back; then it is closed. Its name stays taken until then, so a client that comes back
    /// under the name cannot overtake what its predecessor sent.
    fn vanish(&mut self, id: ConnId, e: &io::Error) {
        self.count_timeout(id, e);
        let desc = self.describe(id);
        self.log(format_args!(
            "{desc}: write failed: {e}; routing what it sent before it went"
        ));
        let Some(c) = self.conn(id) else { return };
        c.gone = true;
        c.out.clear();
        // Senders held back on its full buffer resume: their frames now bounce.
        let waiters = std::mem::take(&mut c.waiters);
        let phase = c.phase;
        self.wake(id, waiters);
        self.touch(id);
        if matches!(phase, Phase::Open | Phase::Draining) {
            self.arm(id, Timer::Gone, self.cfg.frame_timeout);
        }
        match phase {
            // One read now; the rest as the backend reports it readable (one client never
            // holds the loop: guarantee 3).
            Phase::Open => {
                self.read_once(id);
            }
            // Its input already ended and is being routed: close follows from there.
            Phase::Draining => {}
            Phase::Closing | Phase::Lingering => self.close(id, &format!("write failed: {e}")),
        }
    }

    /// Routes every whole frame in a connection's input buffer, until it is empty, or the
    /// next frame's receiver is full (the sender is held back), or the client broke the protocol.
    fn route_input(&mut self, id: ConnId) {
        let Some(c) = self.conn(id) else { return };
        let mut input = std::mem::replace(&mut c.input, protocol::Decoder::new(0));
        let mut routed = false;
        let outcome = loop {
            let frame = match input.peek_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(v) => break Err(v),
            };
            let body_len = frame.body.len();
            match self.route_frame(id, frame.client()) {
                Routed::Done => {
                    input.consume(body_len);
                    routed = true;
                }
                Routed::HeldBack => break Ok(()),
                Routed::Failed(v) => break Err(v),
            }
        };
        let Some(c) = slot(&mut self.conns, id) else {
            return;
        };
        match outcome {
            Ok(()) => {
                c.input = input;
                // A registered client's partial frame must complete in time, unless we are the
                // ones holding it back. (An unregistered one is bounded by its HELLO timer.)
                let waiting = c.name.is_some() && c.input.buffered() > 0 && c.blocked_on.is_none();
                match c.deadline {
                    Some((_, Timer::Frame)) if !waiting => c.deadline = None,
                    // A new frame has begun: its time starts now. (Moved, not re-armed: the
                    // connection's heap entry re-queues itself when it comes due.)
                    Some((_, Timer::Frame)) if routed => {
                        c.deadline = Some((self.now + self.cfg.frame_timeout, Timer::Frame));
                    }
                    None if waiting => self.arm(id, Timer::Frame, self.cfg.frame_timeout),
                    _ => {}
                }
                let Some(c) = self.conn(id) else { return };
                if c.phase == Phase::Draining && c.blocked_on.is_none() {
                    let leftover = c.input.buffered();
                    let why = if leftover > 0 {
                        format!("closed by client mid-frame ({leftover} bytes of a truncated frame discarded)")
                    } else {
                        "closed by client".to_string()
                    };
                    self.finish(id, &why);
                }
            }
            Err(v) => self.fail(id, v),
        }
    }

    /// Handles one parsed frame from connection `id`.
    fn route_frame(&mut self, id: ConnId, frame: Result<ClientFrame<'_>, ProtocolError>) -> Routed {
        let frame = match frame {
            Ok(f) => f,
            Err(v) => return Routed::Failed(v),
        };
        let registered = self.conn(id).is_some_and(|c| c.name.is_some());
        match frame {
            ClientFrame::Hello(_) if registered => Routed::Failed(violation(
                ErrorCode::NotRegistered,
                "second HELLO on a registered connection",
            )),
            ClientFrame::Hello(name) => self.register(id, name),
            ClientFrame::Send { .. } if !registered => Routed::Failed(violation(
                ErrorCode::NotRegistered,
                "SEND before HELLO; the first frame must be HELLO",
            )),
            ClientFrame::Send { dst, payload } => {
                // A registered receiver gets a DELIVER; otherwise the sender gets a BOUNCE.
                // A vanished client keeps its name until its input is routed, but takes nothing.
                let receiver = self.names.get(dst).copied().filter(|&r| {
                    let c = self.conns.get(r.0).and_then(Option::as_ref);
                    c.is_some_and(|c| !c.gone)
                });
                let target = receiver.unwrap_or(id);
                let max_buffer = self.cfg.max_buffer;
                let Some(t) = self.conn(target) else {
                    return Routed::Failed(violation(
                        ErrorCode::BadFrame,
                        "internal: receiver vanished",
                    ));
                };
                if t.out_len() >= max_buffer {
                    t.waiters.push(id);
                    let now = self.now;
                    if let Some(c) = self.conn(id) {
                        c.blocked_on = Some(target);
                        c.blocked_since = now;
                    }
                    self.stats.held_back += 1;
                    self.touch(id);
                    return Routed::HeldBack;
                }
                if receiver.is_none() {
                    if self.trace.get_mut().is_some() {
                        let n = payload.len();
                        let d = String::from_utf8_lossy(dst).into_owned();
                        self.trace(|r| {
                            format!("SEND from {} to {d:?}: nobody holds that name -> BOUNCE ({n} bytes)", r.describe(id))
                        });
                    }
                    let Some(c) = slot(&mut self.conns, id) else {
                        return Routed::Done;
                    };
                    protocol::put_bounce(c.out.back(), dst, payload);
                    self.stats.bounced += 1;
                    self.mark_dirty(id);
                    return Routed::Done;
                }
                if self.injector.as_mut().is_some_and(inject::Injector::roll)
                    && self.deliver_faulty(id, target, payload)
                {
                    self.stats.injected += 1;
                    return Routed::Done;
                }
                if self.trace.get_mut().is_some() {
                    let n = payload.len();
                    self.trace(|r| {
                        format!(
                            "SEND from {} -> DELIVER to {} ({n} bytes)",
                            r.describe(id),
                            r.describe(target)
                        )
                    });
                }
                self.deliver(id, None, target, payload);
                Routed::Done
            }
        }
    }

    /// Queues a DELIVER of `payload` from `from` (or under the name `src_as`) to `to`.
    fn deliver(&mut self, from: ConnId, src_as: Option<&[u8]>, to: ConnId, payload: &[u8]) {
        if from == to || src_as.is_some() {
            let name: Vec<u8> = match src_as {
                Some(n) => n.to_vec(),
                None => self
                    .conn(from)
                    .and_then(|c| c.name.as_deref().map(<[u8]>::to_vec))
                    .unwrap_or_default(),
            };
            let from_serial = self.conn(from).map_or(u64::MAX, |c| c.serial);
            let Some(t) = self.conn(to) else { return };
            t.last_from = from_serial;
            protocol::put_deliver(t.out.frame(), &name, payload);
        } else if let Ok([c, t]) = self.conns.get_disjoint_mut([from.0, to.0]) {
            let (Some(c), Some(t)) = (c.as_ref(), t.as_mut()) else {
                return;
            };
            let src = c.name.as_deref().unwrap_or_default();
            t.last_from = c.serial;
            protocol::put_deliver(t.out.frame(), src, payload);
        } else {
            return;
        }
        self.stats.delivered += 1;
        self.mark_dirty(to);
    }

    /// Breaks a promise on purpose (see [`inject`]). Returns false when this DELIVER offers
    /// no way to apply the fault (then it is delivered normally and nothing is counted).
    fn deliver_faulty(&mut self, from: ConnId, to: ConnId, payload: &[u8]) -> bool {
        let Some(fault) = self.injector.as_ref().map(|i| i.what.fault) else {
            return false;
        };
        match fault {
            inject::Fault::Drop => true,
            inject::Fault::Duplicate => {
                self.deliver(from, None, to, payload);
                self.deliver(from, None, to, payload);
                true
            }
            inject::Fault::Reorder => {
                let from_serial = self.conn(from).map_or(u64::MAX, |c| c.serial);
                let Some(t) = self.conn(to) else { return false };
                if t.last_from != from_serial {
                    return false; // the last frame queued is another pair's
                }
                // None once a write has reached into it: no frame of this pair still waits.
                let Some(previous) = t.out.take_last_frame() else {
                    return false;
                };
                self.deliver(from, None, to, payload);
                let Some(t) = self.conn(to) else { return false };
                t.last_from = from_serial;
                t.out.frame().extend_from_slice(&previous);
                true
            }
            inject::Fault::Corrupt => {
                if payload.is_empty() {
                    return false;
                }
                let bit = self
                    .injector
                    .as_mut()
                    .map_or(0, |i| i.pick(payload.len() * 8));
                let mut bad = payload.to_vec();
                bad[bit / 8] ^= 1 << (bit % 8);
                self.deliver(from, None, to, &bad);
                true
            }
            inject::Fault::Misroute | inject::Fault::Spoof => {
                let me = self.conn(from).and_then(|c| c.name.clone());
                let target_name = self.conn(to).and_then(|c| c.name.clone());
                let avoid = if fault == inject::Fault::Misroute {
                    &target_name
                } else {
                    &me
                };
                let mut others: Vec<(&[u8], ConnId)> = self
                    .names
                    .iter()
                    .filter(|(n, _)| Some(&***n) != avoid.as_deref())
                    .map(|(n, &c)| (&**n, c))
                    .collect();
                if others.is_empty() {
                    return false;
                }
                others.sort_unstable_by(|a, b| a.0.cmp(b.0)); // HashMap order is random: keep a seed's faults reproducible
                let k = self.injector.as_mut().map_or(0, |i| i.pick(others.len()));
                let (name, conn) = (others[k].0.to_vec(), others[k].1);
                if fault == inject::Fault::Misroute {
                    self.deliver(from, None, conn, payload);
                } else {
                    self.deliver(from, Some(&name), to, payload);
                }
                true
            }
            inject::Fault::Delay => {
                let Some(serial) = self.conn(to).map(|c| c.serial) else {
                    return false;
                };
                let Some(inj) = self.injector.as_mut() else {
                    return false;
                };
                if inj.held.len() >= 10_000 {
                    return false;
                }
                let mut frame = Vec::new();
                protocol::put_deliver(&mut frame, b"", payload);
                inj.held.push((serial, frame));
                true
            }
        }
    }

    /// HELLO: checks the name and enters it in the registration table.
    fn register(&mut self, id: ConnId, name: &[u8]) -> Routed {
        if let Err(v) = check_name(name) {
            return Routed::Failed(v);
        }
        if self.names.contains_key(name) {
            return Routed::Failed(violation(
                ErrorCode::NameTaken,
                &format!(
                    "name {:?} is registered by another client",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        self.names.insert(name.into(), id);
        if let Some(log) = &mut self.registrations {
            let serial = self
                .conns
                .get(id.0)
                .and_then(Option::as_ref)
                .map_or(u64::MAX, |c| c.serial);
            log.push((serial, name.into()));
        }
        let Some(c) = self.conn(id) else {
            return Routed::Done;
        };
        c.name = Some(name.into());
        c.deadline = None; // the HELLO timer: registered in time
        protocol::put_welcome(c.out.back(), name);
        let fd = c.fd;
        self.mark_dirty(id);
        self.log(format_args!(
            "register: conn {} (fd {fd}) is {}",
            id.0,
            String::from_utf8_lossy(name)
        ));
        Routed::Done
    }

    /// Everything a client sent is routed: free its name, then close once what is queued for
    /// it is written (it may still be reading: a client that leaves shuts down its sending
    /// side and reads until we close).
    fn finish(&mut self, id: ConnId, why: &str) {
        self.unregister(id);
        let Some(c) = self.conn(id) else { return };
        if c.out_len() == 0 || c.gone {
            self.close(id, why);
        } else {
            c.phase = Phase::Closing;
            c.input = protocol::Decoder::new(0);
            c.deadline = None;
            self.touch(id);
        }
    }

    /// A protocol violation: send ERROR, free the name, and close after the ERROR is out.
    fn fail(&mut self, id: ConnId, v: ProtocolError) {
        self.stats.errors += 1;
        self.log(format_args!(
            "error: {}: {v}; closing it",
            self.describe(id)
        ));
        self.unregister(id);
        let Some(c) = self.conn(id) else { return };
        protocol::put_error(c.out.back(), v.code, &v.text);
        c.phase = Phase::Lingering;
        c.input = protocol::Decoder::new(0);
        c.blocked_on = None;
        self.arm(id, Timer::Linger, ERROR_LINGER);
        self.mark_dirty(id);
        self.touch(id);
    }

    /// Frees a connection's name in the table and resumes senders that were waiting on it
    /// (their frames now bounce). The connection keeps the name, to be described by it.
    fn unregister(&mut self, id: ConnId) {
        let Some(c) = slot(&mut self.conns, id) else {
            return;
        };
        // The table may already hold a newer connection under this name: leave that one.
        if let Some(name) = &c.name {
            if self.names.get(name) == Some(&id) {
                self.names.remove(name);
            }
        }
        let waiters = std::mem::take(&mut c.waiters);
        self.wake(id, waiters);
    }

    fn wake(&mut self, target: ConnId, waiters: Vec<ConnId>) {
        let now = self.now;
        for w in waiters {
            if let Some(c) = slot(&mut self.conns, w) {
                if c.blocked_on == Some(target) {
                    c.blocked_on = None;
                    let held = now.saturating_duration_since(c.blocked_since);
                    self.stats.held_back_ns += held.as_nanos() as u64;
                    self.woken.push(w);
                    self.touch(w);
                }
            }
        }
    }

    /// Closes a connection now: its name is freed and unsent output is dropped.
    fn close(&mut self, id: ConnId, why: &str) {
        let desc = self.describe(id);
        self.unregister(id);
        let Some(slot) = self.conns.get_mut(id.0) else {
            return;
        };
        let Some(c) = slot.take() else { return };
        self.backend.remove(c.fd);
        drop(c);
        self.free.push(id.0);
        self.open -= 1;
        self.log(format_args!("disconnect: {desc}: {why}"));
    }

    fn describe(&self, id: ConnId) -> String {
        match self.conns.get(id.0).and_then(Option::as_ref) {
            Some(c) => match &c.name {
                Some(n) => format!(
                    "{} (conn {}, fd {})",
                    String::from_utf8_lossy(n),
                    id.0,
                    c.fd
                ),
                None => format!("conn {} (fd {}, unregistered)", id.0, c.fd),
            },
            None => format!("conn {}", id.0),
        }
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conn(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn touch(&mut self, id: ConnId) {
        if let Some(c) = self.conn(id) {
            if !c.touched {
                c.touched = true;
                self.touched.push(id);
            }
        }
    }

    /// Writes as much queued output as the kernel takes. A drained receiver resumes the
    /// senders that were held back on it.
    fn flush(&mut self, id: ConnId) {
        let low_water = self.cfg.max_buffer / 2;
        let Some(c) = self.conn(id) else { return };
        c.dirty = false;
        if c.gone {
            // Nobody reads any more: a BOUNCE for what it sent is dropped with it. It may have
            // been held back behind its own full buffer of them: resume it.
            c.out.clear();
            let waiters = std::mem::take(&mut c.waiters);
            self.wake(id, waiters);
            return;
        }
        if let Err(e) = c.write_out() {
            self.vanish(id, &e);
            return;
        }
        let Some(c) = self.conn(id) else { return };
        if c.out_len() == 0 {
            match c.phase {
                Phase::Lingering => {
                    let _ = c.stream.shutdown(std::net::Shutdown::Write);
                }
                Phase::Closing => {
                    self.close(id, "closed by client");
                    return;
                }
                _ => {}
            }
        }
        if c.out_len() <= low_water && !c.waiters.is_empty() {
            let waiters = std::mem::take(&mut c.waiters);
            self.wake(id, waiters);
        }
        self.touch(id);
    }

    /// After a batch of events: route what woken senders hold, flush what routing queued,
    /// repeat until nothing changes, then tell the backend what each touched fd now wants.
    fn settle(&mut self) {
        loop {
            while let Some(id) = self.woken.pop() {
                self.route_input(id);
            }
            if self.dirty.is_empty() {
                break;
            }
            // Swap in the spare list (not take: that would free and re-grow a list every turn).
            let mut batch = std::mem::replace(&mut self.dirty, std::mem::take(&mut self.spare));
            for &id in &batch {
                self.flush(id);
            }
            batch.clear();
            self.spare = batch;
        }
        let mut batch = std::mem::replace(&mut self.touched, std::mem::take(&mut self.spare));
        for &id in &batch {
            let Some(c) = self.conn(id) else { continue };
            c.touched = false;
            let want = c.wanted_interest();
            if want != c.interest {
                c.interest = want;
                let fd = c.fd;
                if let Err(e) = self.backend.set(fd, token_of(id), want) {
                    self.close(id, &format!("cannot watch fd {fd}: {e}"));
                }
            }
        }
        batch.clear();
        self.spare = batch;
    }

    /// Starts a connection's timer (replacing any other it had).
    fn arm(&mut self, id: ConnId, timer: Timer, after: Duration) {
        let at = self.now + after;
        let Some(c) = self.conn(id) else { return };
        c.deadline = Some((at, timer));
        // A live entry due no later wakes us in time: it re-queues itself at `at`.
        if c.timer_entry.is_none_or(|due| at < due) {
            c.timer_entry = Some(at);
            let serial = c.serial;
            self.timers.push(Reverse((at, id.0, serial)));
        }
    }

    /// Acts on every deadline that has passed: a missing HELLO, a frame left incomplete, an
    /// ERROR'd connection that would not close.
    fn expire_timers(&mut self) {
        // The time this turn's wait ended, as for the deadlines set in it: a relay held up
        // between its wait and here (preempted on a busy machine) does not blame a client
        // whose bytes it had already read.
        let now = self.now;
        let mut fired = false;
        while let Some(&Reverse((at, slot, serial))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = ConnId(slot);
            let Some(c) = self.conn(id) else { continue };
            if c.serial != serial || c.timer_entry != Some(at) {
                continue; // stale: that connection is gone, or an earlier entry replaced this one
            }
            c.timer_entry = None;
            let timer = match c.deadline {
                Some((d, timer)) if d <= now => timer,
                // Moved later since this entry was queued (a frame timer renewed): wait on.
                Some((d, _)) => {
                    c.timer_entry = Some(d);
                    self.timers.push(Reverse((d, slot, serial)));
                    continue;
                }
                None => continue, // stopped
            };
            c.deadline = None;
            fired = true;
            match timer {
                Timer::Hello => {
                    let t = self.cfg.hello_timeout;
                    self.fail(
                        id,
                        violation(ErrorCode::NotRegistered, &format!("no HELLO within {t:?}")),
                    );
                }
                Timer::Frame => {
                    let t = self.cfg.frame_timeout;
                    self.fail(
                        id,
                        violation(
                            ErrorCode::BadFrame,
                            &format!("a frame stayed incomplete for {t:?}"),
                        ),
                    );
                }
                Timer::Linger => self.close(id, "closed after error (linger time over)"),
                Timer::Gone => {
                    let t = self.cfg.frame_timeout;
                    let held = self.conn(id).map_or(0, |c| c.input.buffered());
                    self.close(
                        id,
                        &format!("gone, and still held back after {t:?}: {held} bytes it sent were not routed"),
                    );
                }
            }
        }
        // What fail() queued (the ERRORs) goes out now, not after the next wait.
        if fired {
            self.settle();
        }
    }

    /// Stop: one last non-blocking flush for everyone, then close all.
    pub fn shutdown(&mut self) {
        for slot in 0..self.conns.len() {
            if let Some(c) = self.conns[slot].as_mut() {
                let _ = c.write_out();
            }
            self.close(ConnId(slot), "relay stopping");
        }
        let s = &self.stats;
        self.log(format_args!(
            "stopped: {} connections ({} refused), {} delivered, {} bounced, {} errors, held back {} times",
            s.accepted, s.refused, s.delivered, s.bounced, s.errors, s.held_back
        ));
    }
}

/// The result of routing one frame.
enum Routed {
    Done,
    HeldBack,
    Failed(ProtocolError),
}

/// The live connection in a slot (a free function so other fields of the relay stay borrowable).
fn slot(conns: &mut [Option<Conn>], id: ConnId) -> Option<&mut Conn> {
    conns.get_mut(id.0).and_then(Option::as_mut)
}

fn violation(code: ErrorCode, text: &str) -> ProtocolError {
    ProtocolError {
        code,
        text: text.to_string(),
    }
}

fn is_fd_limit(errno: i32) -> bool {
    errno == nix::errno::Errno::EMFILE as i32 || errno == nix::errno::Errno::ENFILE as i32
}

#[cfg(test)]
mod tests {
    use super::is_fd_limit;
    use nix::errno::Errno;

    /// Only running out of fds (the process's or the system's) makes the relay spend its
    /// reserve fd to turn a newcomer away; other accept errors skip the one connection.
    /// (ENFILE and ECONNABORTED cannot be provoked on a test machine; EMFILE is tested whole.)
    #[test]
    fn only_the_fd_limits_count_as_out_of_fds() {
        assert!(is_fd_limit(Errno::EMFILE as i32));
        assert!(is_fd_limit(Errno::ENFILE as i32));
        for other in [
            Errno::ECONNABORTED,
            Errno::ENOBUFS,
            Errno::EPERM,
            Errno::EAGAIN,
        ] {
            assert!(!is_fd_limit(other as i32), "{other}");
        }
    }
}

#[cfg(test)]
mod peer_timeout_tests {
    use super::{Config, Relay};
    use crate::sys::{Addr, Stream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// `--peer-timeout`: every TCP connection the relay takes gets it (read back from the
    /// relay's own socket, which it holds in its table).
    #[test]
    fn the_relay_gives_each_tcp_connection_its_peer_timeout() {
        use nix::sys::socket::{getsockopt, sockopt};
        let cfg = Config {
            log: false,
            peer_timeout: Some(Duration::from_secs(4)),
            ..Config::default()
        };
        let mut relay = Relay::new(None, None, cfg).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = Stream::connect(&Addr::Tcp(l.local_addr().unwrap())).unwrap();
        let (taken, _) = l.accept().unwrap();
        let fd = taken.as_raw_fd();
        relay.adopt(Stream::Tcp(taken)).unwrap().expect("admitted");
        let held = relay
            .conns
            .iter()
            .flatten()
            .find(|c| c.stream.as_raw_fd() == fd)
            .expect("in the table");
        let Stream::Tcp(s) = &held.stream else {
            panic!("a TCP stream")
        };
        assert_eq!(getsockopt(s, sockopt::TcpUserTimeout).unwrap(), 4_000);
        assert!(getsockopt(s, sockopt::KeepAlive).unwrap());
    }
}
