//! The supervisor's event loop, in the manner of Redis's ae.c: fire the timers that are due,
//! wait (epoll) until the next one or a child's event, handle each (child, event) in turn,
//! and know when the run is over.
//!
//! ```text
//! start:  pipes; fork the relay; fork the clients; one epoll set of their event pipes
//! loop:   wind_down        every client done? the run over? (break once it is, and the
//!                          clients have reported or the grace time is up)
//!         fire_timers      script conts, the nemesis, progress, the quiet rule,
//!                          the deadline
//!         wait             epoll_wait until the earliest of them
//!         on_signal        SIGINT/SIGTERM: the run is interrupted
//!         on_child         Ready, PhaseDone, Complete, Done, Failed; end of file: it exited
//! finish: wake whatever is stopped, close every pipe, stop and reap all, merge the traces
//! ```

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use relay_trace::{now_ns, Tracer};

use super::children::{is_runnable, read_events, stop_all, wait_exits, Child, Children, Role};
use super::ctx::{peak_rss_kib, ClientCtx, RelayCtx};
use super::faults::Faults;
use super::spawn::{dup_err, pipe, set_nonblocking, spawn, sys};
use super::{milestone_text, Action, Ending, Limits, Milestone, Outcome, Signals, SuperviseError};
use crate::record::{ChildEvent, ClientReport};

/// How long an interrupted run waits for the clients' records.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);

/// The epoll token of the signal pipe (a child's token is its place in the child table).
const SIGNAL_TOKEN: u64 = u64::MAX;

/// Tells the caller (`on`) and the trace what the run is doing.
pub(super) struct Narrator<'a> {
    on: &'a mut dyn FnMut(Milestone),
    /// `--trace`: the supervisor's own events; every milestone is one.
    tracer: Option<Tracer>,
}

impl Narrator<'_> {
    /// A milestone, now.
    pub fn milestone(&mut self, m: Milestone) {
        if let Some(t) = self.tracer.as_mut() {
            match m {
                Milestone::Nemesis { .. } => t.always(milestone_text(&m)),
                _ => t.ev(|| milestone_text(&m)),
            }
        }
        (self.on)(m);
    }

    /// A milestone stamped with the time it happened (closing a barrier wakes every client,
    /// and the supervisor may not run again for a while).
    pub fn milestone_at(&mut self, m: Milestone, t_ns: u64) {
        if let Some(t) = self.tracer.as_mut() {
            t.at(t_ns, milestone_text(&m));
        }
        (self.on)(m);
    }

    /// A line of the trace that is no milestone.
    pub fn note(&mut self, what: impl FnOnce() -> String) {
        if let Some(t) = self.tracer.as_mut() {
            t.ev(what);
        }
    }
}

/// Forks client processes: at the start, and later for a restart. Holds the read ends every
/// client gets (the barriers, the stop pipe, the drain pipe) for as long as the run lasts.
pub(super) struct Forker<'a> {
    limits: &'a Limits,
    client: &'a mut dyn FnMut(ClientCtx) -> i32,
    barriers: Vec<OwnedFd>,
    stop: OwnedFd,
    drain: Option<OwnedFd>,
    /// While the first clients are forked: the children's end of the socket on which each
    /// sends back the read end of the event pipe it made (see `first`).
    send_back: Option<OwnedFd>,
}

/// Where a new client process's event pipe comes from.
pub(super) enum Events {
    /// The supervisor made it and keeps the read end (a restart: one fork).
    Given(OwnedFd),
    /// The child makes it and sends the read end back over the send-back socket (the first
    /// forks: the supervisor then holds no client's pipe while it forks the others).
    SendBack,
}

impl Forker<'_> {
    /// Forks a process of client `i` that writes its events to a pipe as `events` says.
    ///
    /// # Safety
    /// The process must be single-threaded (`supervise`'s contract).
    pub unsafe fn client(
        &mut self,
        i: usize,
        incarnation: u32,
        start_phase: usize,
        events: Events,
    ) -> Result<Pid, SuperviseError> {
        let barriers: Vec<Option<OwnedFd>> = self
            .barriers
            .iter()
            .map(|b| b.try_clone().map(Some))
            .collect::<Result<_, _>>()
            .map_err(dup_err)?;
        let stop = self.stop.try_clone().map_err(dup_err)?;
        let drain = self
            .drain
            .as_ref()
            .map(|d| d.try_clone())
            .transpose()
            .map_err(dup_err)?;
        let events_fd = match &events {
            Events::Given(w) => w.as_raw_fd(),
            Events::SendBack => {
                self.send_back
                    .as_ref()
                    .map(|s| s.as_raw_fd())
                    .ok_or(SuperviseError::Sys {
                        what: "socketpair",
                        source: nix::Error::EBADF,
                    })?
            }
        };
        let mut keep = vec![stop.as_raw_fd(), events_fd];
        keep.extend(barriers.iter().flatten().map(|b| b.as_raw_fd()));
        keep.extend(drain.as_ref().map(|d| d.as_raw_fd()));
        let limits = self.limits;
        let client = &mut *self.client;
        let body = move || {
            let events = match events {
                Events::Given(w) => w,
                Events::SendBack => match make_and_send_back(events_fd, i) {
                    Ok(w) => w,
                    Err(_) => return crate::exit::ENV,
                },
            };
            client(ClientCtx {
                index: i,
                events,
                barriers,
                stop,
                incarnation,
                start_phase,
                trace: limits.trace,
                tally: limits.tally.clone(),
                blackbox: limits.blackbox.clone(),
                drain,
            })
        };
        // SAFETY: single-threaded (this function's contract).
        unsafe { spawn(&keep, body) }.map_err(sys("fork"))
    }

    /// Forks the first process of client `i`; its event pipe's read end comes later, over
    /// the send-back socket (`collect_event_pipes`).
    ///
    /// # Safety
    /// The process must be single-threaded (`supervise`'s contract).
    unsafe fn first(&mut self, out: &mut Narrator<'_>, i: usize) -> Result<Child, SuperviseError> {
        let forked_at = now_ns();
        // SAFETY: single-threaded (this function's contract).
        let pid = unsafe { self.client(i, 0, 0, Events::SendBack) }?;
        let name = client_name(self.limits, i);
        out.milestone_at(
            Milestone::Forked {
                role: name.clone(),
                pid: pid.as_raw(),
            },
            forked_at,
        );
        let role = Role::Client {
            index: i,
            incarnation: 0,
        };
        Ok(Child::new(role, name, pid, None))
    }
}

/// Clients per send-back socket. A socket's send buffer (212,992 bytes by default) holds 278
/// messages with one fd; past that a client would block in `sendmsg` until the supervisor reads,
/// and every blocked client is woken each time room is made (not one: all of them), which at
/// 10,000 clients made the set-up quadratic. With a socket per 128, no client ever waits.
const SEND_BACK_GROUP: usize = 128;

/// In a new client process: makes its event pipe and sends the read end to the supervisor
/// (SCM_RIGHTS, with the client's index), keeping the write end. Had the supervisor made every
/// pipe, each fork would copy all the earlier clients' read ends and each child would close
/// them: quadratic in the clients (half the CPU of a 6,000-client run went to it).
fn make_and_send_back(sock: std::os::fd::RawFd, i: usize) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let (r, w) = pipe()?;
    let index = (i as u64).to_le_bytes();
    let iov = [std::io::IoSlice::new(&index)];
    let fds = [r.as_raw_fd()];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    drop(r);
    // SAFETY: the socket is this process's own copy, used by nothing else from here on.
    drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) });
    Ok(w)
}

/// Receives every first client's event pipe read end (see `make_and_send_back`), from each
/// group's send-back socket, until each client has sent one or exited (end of file on every
/// socket: every copy of the children's ends is closed), the set-up's bound passes, or a signal
/// comes (the event loop then sees it). A client that sent none is killed and gets a pipe
/// already at end of file: the run sees it exit, and ends as the bound or the signal says.
fn collect_event_pipes(
    children: &mut Children,
    mut socks: Vec<OwnedFd>,
    signals: &Signals,
    until: Instant,
) -> Result<(), SuperviseError> {
    use nix::poll::{PollFd, PollFlags};
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut index = [0u8; 8];
    // (The clients': a relay elsewhere has no pipe, and none is coming.)
    let awaited = |c: &Child| c.events.is_none() && c.client().is_some();
    let mut missing = children.0.iter().filter(|c| awaited(c)).count();
    while missing > 0 && !socks.is_empty() && Instant::now() < until {
        // (Rounded up, as the event loop's wait: the bound has passed when this returns 0.)
        let left = until.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut fds: Vec<PollFd> = socks
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(signals.read.as_fd(), PollFlags::POLLIN));
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => break,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys("poll")(e)),
        }
        if fds[socks.len()].any().unwrap_or(false) {
            break; // SIGINT or SIGTERM: the event loop ends the run
        }
        let ready: Vec<usize> = (0..socks.len())
            .filter(|&k| fds[k].any().unwrap_or(false))
            .collect();
        drop(fds);
        let mut ended = Vec::new();
        for k in ready {
            // Every message this socket holds now (its clients have all been forked).
            loop {
                let mut iov = [std::io::IoSliceMut::new(&mut index)];
                let msg = match recvmsg::<()>(
                    socks[k].as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(m) => m,
                    Err(nix::Error::EINTR) => continue,
                    Err(nix::Error::EAGAIN) => break,
                    Err(e) => return Err(sys("recvmsg")(e)),
                };
                if msg.bytes == 0 {
                    ended.push(k); // every child of this group has sent its pipe or exited
                    break;
                }
                let fd = msg
                    .cmsgs()
                    .ok()
                    .into_iter()
                    .flatten()
                    .find_map(|c| match c {
                        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    });
                // SAFETY: the kernel just installed this fd in this process for us alone.
                let fd =
                    fd.map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
                let i = u64::from_le_bytes(index) as usize;
                if let (Some(fd), Some(c)) = (fd, children.0.get_mut(i + 1)) {
                    set_nonblocking(&fd).map_err(sys("fcntl"))?;
                    if c.events.is_none() {
                        c.events = Some(fd);
                        missing -= 1;
                    }
                }
            }
        }
        for k in ended.into_iter().rev() {
            socks.swap_remove(k);
        }
    }
    for c in children.0.iter_mut().filter(|c| awaited(c)) {
        super::children::signal_group(c.pid, Signal::SIGKILL);
        let (r, _) = pipe().map_err(sys("pipe"))?;
        set_nonblocking(&r).map_err(sys("fcntl"))?;
        c.events = Some(r);
    }
    Ok(())
}

/// The name of client `i`.
pub(super) fn client_name(limits: &Limits, i: usize) -> String {
    limits
        .names
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("c{i}"))
}

/// Every pipe of the run, made before the first fork so each child can close what is not its
/// own. Each is (read end, write end); the supervisor keeps the write ends of the barriers and
/// stop pipes (closing one is the message) and the read ends of the event pipes.
struct Pipes {
    barriers: (Vec<OwnedFd>, Vec<Option<OwnedFd>>),
    clients_stop: (OwnedFd, OwnedFd),
    relay_stop: (OwnedFd, OwnedFd),
    relay_events: (OwnedFd, OwnedFd),
}

impl Pipes {
    fn new(phases: usize) -> Result<Pipes, SuperviseError> {
        let mut barriers = (Vec::with_capacity(phases), Vec::with_capacity(phases));
        for _ in 0..phases {
            let (r, w) = pipe().map_err(sys("pipe"))?;
            barriers.0.push(r);
            barriers.1.push(Some(w));
        }
        let clients_stop = pipe().map_err(sys("pipe"))?;
        let relay_stop = pipe().map_err(sys("pipe"))?;
        let relay_events = pipe().map_err(sys("pipe"))?;
        Ok(Pipes {
            barriers,
            clients_stop,
            relay_stop,
            relay_events,
        })
    }
}

/// Forks the relay: it gets the read end of its stop pipe and the write end of its event
/// pipe (and keeps `limits.relay_fds`, its listening socket).
///
/// # Safety
/// The process must be single-threaded (`supervise`'s contract).
unsafe fn fork_relay(
    out: &mut Narrator<'_>,
    limits: &Limits,
    relay: impl FnOnce(RelayCtx) -> i32,
    stop: OwnedFd,
    (events_r, events_w): (OwnedFd, OwnedFd),
) -> Result<Child, SuperviseError> {
    let rctx = RelayCtx {
        stop,
        events: events_w,
    };
    let mut keep = vec![rctx.stop.as_raw_fd(), rctx.events.as_raw_fd()];
    keep.extend(&limits.relay_fds);
    // Stamped before the fork: the child may run (and be traced) before the parent logs.
    let forked_at = now_ns();
    // SAFETY: single-threaded (this function's contract). The parent's copy of the closure
    // (the relay's pipe ends, and any listener in it) is dropped when spawn returns.
    let pid = unsafe { spawn(&keep, move || relay(rctx)) }.map_err(sys("fork"))?;
    out.milestone_at(
        Milestone::Forked {
            role: "relay".into(),
            pid: pid.as_raw(),
        },
        forked_at,
    );
    out.note(|| "closed its copies of the relay's ends (the event pipe's write end, the stop pipe's read end) and of the listening socket".into());
    set_nonblocking(&events_r).map_err(sys("fcntl"))?;
    Ok(Child::new(Role::Relay, "relay".into(), pid, Some(events_r)))
}

/// Every event pipe and the signal pipe in one epoll set: a wait costs in proportion to the
/// pipes that are ready, not to the thousands that may be open. (Every child closes it with
/// the other fds it does not own, restarted ones too.) A pipe leaves the set when its fd is closed.
fn watch(
    out: &mut Narrator<'_>,
    signals: &Signals,
    children: &Children,
) -> Result<Epoll, SuperviseError> {
    out.note(|| {
        format!(
            "epoll_create(): watches {} event pipes and the signal pipe; waits until one is readable",
            children.0.len()
        )
    });
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create"))?;
    ep.add(
        signals.read.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN),
    )
    .map_err(sys("epoll_ctl"))?;
    for (k, c) in children.0.iter().enumerate() {
        if let Some(e) = &c.events {
            ep.add(e.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
                .map_err(sys("epoll_ctl"))?;
        }
    }
    Ok(ep)
}

/// One supervised run, from the first fork to the last reap.
pub(super) struct Run<'a> {
    pub(super) limits: &'a Limits,
    signals: &'a Signals,
    pub(super) out: Narrator<'a>,
    forker: Forker<'a>,
    pub(super) children: Children,
    ep: Epoll,
    fired: Vec<EpollEvent>,
    pub(super) n: usize,
    pub(super) start: Instant,
    /// The work's deadline (a partition's heal moves it later: see `Faults`' heal).
    pub(super) deadline: Instant,

    // The supervisor's ends of the pipes: closing one is the message.
    /// Per phase: closing it starts the phase everywhere at once.
    pub(super) barriers: Vec<Option<OwnedFd>>,
    /// Closing it asks every client for its records now.
    clients_stop: Option<OwnedFd>,
    /// Closing it stops the relay.
    relay_stop: Option<OwnedFd>,
    /// Runs with deaths: closing it starts the drain (the clients send end markers).
    drain: Option<OwnedFd>,

    // What the clients have done.
    reports: Vec<Option<ClientReport>>,
    ready: usize,
    reported: usize,
    /// Clients that are done with their work (Complete) or have reported (Done). When all
    /// are, the stop pipe closes and the lingering ones report.
    settled: Vec<bool>,
    pub(super) settled_count: usize,
    /// Clients killed for good: they will never report.
    pub(super) gone: usize,
    /// Client processes whose event pipe is still open.
    clients_open: usize,
    phase_done: Vec<usize>,
    register: Duration,
    /// From the start until the last client was forked.
    forks: Duration,
    released_ns: u64,
    pub(super) released_at: Option<Instant>,

    // How it ends.
    pub(super) ending: Option<Ending>,
    announced: bool,
    asked_to_stop_at: Option<Instant>,

    pub(super) faults: Faults,
    pub(super) quiet: Quiet,
}

impl<'a> Run<'a> {
    /// Makes the pipes, forks the relay and then the clients, and watches their event pipes.
    ///
    /// # Safety
    /// The process must be single-threaded (`supervise`'s contract).
    pub unsafe fn start(
        limits: &'a Limits,
        signals: &'a Signals,
        relay: impl FnOnce(RelayCtx) -> i32,
        client: &'a mut dyn FnMut(ClientCtx) -> i32,
        on: &'a mut dyn FnMut(Milestone),
    ) -> Result<Run<'a>, SuperviseError> {
        let start = Instant::now();
        let n = limits.clients;
        let mut out = Narrator {
            on,
            tracer: limits.trace.map(Tracer::new),
        };
        if let Some(t) = out.tracer.as_mut() {
            for (at, what) in &limits.trace_prelude {
                t.at(*at, what.clone());
            }
        }
        let phases = limits.phases.max(1);
        let pipes = Pipes::new(phases)?;
        out.note(|| format!(
            "pipe() x {}: a start barrier per phase, a stop pipe for the clients, one for the relay, the relay's event pipe; socketpair() per 128 clients: each client sends back the read end of the event pipe it makes",
            phases + 3
        ));
        // The relay first: the clients connect to it.
        let relay = match &limits.relay_elsewhere {
            Some(addr) => {
                out.note(|| format!("the relay runs elsewhere ({addr}): nothing is forked for it"));
                Child::elsewhere(addr)
            }
            // SAFETY: single-threaded (this function's contract).
            None => unsafe {
                fork_relay(
                    &mut out,
                    limits,
                    relay,
                    pipes.relay_stop.0,
                    pipes.relay_events,
                )
            }?,
        };
        // Runs with deaths end with a drain: every client, done and alive, sends end markers.
        let (drain_r, drain_w) = match &limits.blackbox {
            Some(_) => {
                let (r, w) = pipe().map_err(sys("pipe"))?;
                (Some(r), Some(w))
            }
            None => (None, None),
        };
        let mut forker = Forker {
            limits,
            client,
            barriers: pipes.barriers.0,
            stop: pipes.clients_stop.0,
            drain: drain_r,
            send_back: None,
        };
        let mut backs = Vec::with_capacity(n.div_ceil(SEND_BACK_GROUP));
        let mut children = Children(Vec::with_capacity(n + 1));
        children.0.push(relay);
        for i in 0..n {
            if i % SEND_BACK_GROUP == 0 {
                let (back_r, back_w) = socketpair(
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    None,
                    SockFlag::SOCK_CLOEXEC,
                )
                .map_err(sys("socketpair"))?;
                backs.push(back_r);
                // (The group before's end is now only its children's: end of file once all
                // of them have sent.)
                forker.send_back = Some(back_w);
            }
            // SAFETY: single-threaded (this function's contract).
            children.0.push(unsafe { forker.first(&mut out, i) }?);
        }
        let forks = start.elapsed();
        forker.send_back = None;
        collect_event_pipes(&mut children, backs, signals, start + limits.setup)?;
        out.note(|| {
            format!("recvmsg() x {n}: each client's event pipe read end (SCM_RIGHTS), taken only after the last fork")
        });
        let ep = watch(&mut out, signals, &children)?;
        Ok(Run {
            limits,
            signals,
            out,
            forker,
            children,
            ep,
            fired: vec![EpollEvent::empty(); 256],
            n,
            start,
            deadline: start + limits.setup,
            barriers: pipes.barriers.1,
            clients_stop: Some(pipes.clients_stop.1),
            relay_stop: Some(pipes.relay_stop.1),
            drain: drain_w,
            reports: vec![None; n],
            ready: 0,
            reported: 0,
            settled: vec![false; n],
            settled_count: 0,
            gone: 0,
            clients_open: n,
            phase_done: vec![0; phases],
            register: Duration::ZERO,
            forks,
            released_ns: 0,
            released_at: None,
            ending: None,
            announced: false,
            asked_to_stop_at: None,
            faults: Faults::new(limits.nemesis.as_ref().map_or(0, |n| n.seed), n),
            quiet: Quiet::new(),
        })
    }

    /// The event loop: until every client has reported, or something ends the run.
    pub fn run(mut self) -> Result<Outcome, SuperviseError> {
        loop {
            if self.wind_down() {
                break;
            }
            let now = Instant::now();
            let wake = match self.fire_timers(now)? {
                Some(wake) => wake,
                None => continue, // a timer ended the run: wind down at once
            };
            for token in self.wait(now, wake)? {
                if token == SIGNAL_TOKEN {
                    self.on_signal();
                    break;
                }
                self.on_child(token as usize)?;
            }
        }
        Ok(self.finish())
    }

    /// Ends the run as `e` and asks every client for its records now. (Callers check that
    /// nothing has ended it yet: the first ending is the one reported.)
    pub(super) fn end(&mut self, e: Ending) {
        self.ending = Some(e);
        self.clients_stop = None;
    }

    /// How long a run that is ending waits for the clients' records: the grace, or at most a
    /// second after a signal (the person wants it to stop; what the clients counted by then
    /// still makes the report's numbers).
    fn stop_grace(&self) -> Duration {
        match self.ending {
            Some(Ending::Interrupted(_)) => self.limits.grace.min(INTERRUPT_GRACE),
            _ => self.limits.grace,
        }
    }

    /// Counts client `i` as done with its work.
    pub(super) fn settle(&mut self, i: usize) {
        if i < self.n && !self.settled[i] {
            self.settled[i] = true;
            self.settled_count += 1;
        }
    }

    /// Client `i` has work again (a new process will carry on for it).
    pub(super) fn unsettle(&mut self, i: usize) {
        if i < self.n && self.settled[i] {
            self.settled[i] = false;
            self.settled_count -= 1;
        }
    }

    /// Whether client `i` is done with its work or has reported.
    pub(super) fn is_settled(&self, i: usize) -> bool {
        self.settled[i]
    }

    /// Whether client `i` has reported.
    pub(super) fn has_reported(&self, i: usize) -> bool {
        self.reports[i].is_some()
    }

    /// What the state of the clients says: time to drain, to collect reports, or to leave.
    /// True when the loop should stop waiting.
    fn wind_down(&mut self) -> bool {
        let n = self.n;
        if self.ending.is_none() && self.settled_count == n && self.reported + self.gone < n {
            if let Some(bb) = &self.limits.blackbox {
                if self.drain.is_some() {
                    // A client killed between making a pair's entry and listing it left it off
                    // its receiver's list, which tells the receiver whose end markers to await.
                    let fixed = bb.relist();
                    if fixed > 0 {
                        self.out.note(|| format!("put {fixed} shared counter(s) a killed client had left unlisted on their receivers' lists"));
                    }
                    self.drain = None; // everyone is done and nobody dies any more: send end markers
                }
            } else if self.clients_stop.is_some() {
                self.out.note(|| {
                    "every client is done: closed the clients' stop pipe, so each reads 0 and reports".into()
                });
                self.clients_stop = None; // everyone is done: the lingering clients may report now
            }
        }
        if self.ending.is_none() && self.reported + self.gone == n {
            // The clients may report (having seen their sockets close) before the relay's own
            // pipe says it died: a killed relay still ends the run as killed.
            self.ending = Some(if self.faults.relay_killed {
                Ending::RelayKilled("killed by SIGKILL (the nemesis)".into())
            } else {
                Ending::Finished
            });
        }
        let Some(ending) = self.ending.clone() else {
            return false;
        };
        if !self.announced {
            self.announced = true;
            if ending != Ending::Finished {
                self.out.milestone(Milestone::Stopping(ending.clone()));
            }
        }
        if ending == Ending::Finished {
            return true;
        }
        // Clients still at the barrier go on to find the stop pipe closed.
        self.clients_stop = None;
        self.barriers.iter_mut().for_each(|b| *b = None);
        if matches!(ending, Ending::Interrupted(_)) && self.relay_stop.is_some() {
            // Stop the relay first: the clients then read its close and report what they
            // counted, and none leaves while the others still send to it (which would come
            // back as BOUNCEs for clients that were there a moment ago).
            self.out.note(|| {
                "interrupted: closed the relay's stop pipe, then the clients'; each reports what it counted".into()
            });
            self.relay_stop = None;
        }
        // Stopping: wait for the clients' last reports or exits, within the grace time.
        if self.clients_open == 0 {
            return true;
        }
        let since = *self.asked_to_stop_at.get_or_insert_with(Instant::now);
        since.elapsed() >= self.stop_grace()
    }

    /// Fires what is due: a script's stopped clients whose time is up, the nemesis, the
    /// progress milestones, the quiet rule and the deadline. Returns when to wake next, or None when
    /// one of them ended the run.
    fn fire_timers(&mut self, now: Instant) -> Result<Option<Instant>, SuperviseError> {
        let mut wake = match (&self.ending, self.asked_to_stop_at) {
            (Some(_), Some(t)) => t + self.stop_grace(),
            _ => self.deadline,
        };
        if let Some(next) = self.script_conts(now) {
            wake = wake.min(next);
        }
        if let Some(next) = self.nemesis(now)? {
            wake = wake.min(next);
        }
        if let Some(next) = self.progress(now) {
            wake = wake.min(next);
        }
        match self.quiet_rule(now) {
            QuietSays::Off => {}
            QuietSays::SampleAt(next) => wake = wake.min(next),
            QuietSays::Stalled => return Ok(None),
        }
        if self.ending.is_none() && now >= self.deadline {
            self.end(match self.released_at {
                Some(_) => Ending::TimedOut,
                None => Ending::SetupTimedOut(self.ready, self.limits.setup),
            });
            return Ok(None);
        }
        Ok(Some(wake))
    }

    /// Progress for a bar: once the exchange has run a second, a milestone every 100 ms.
    /// (The caller draws it, from this thread: a later fork still happens single-threaded.)
    fn progress(&mut self, now: Instant) -> Option<Instant> {
        let (Some(expected), Some(tally), Some(t0), None) = (
            self.limits.progress,
            &self.limits.tally,
            self.released_at,
            &self.ending,
        ) else {
            return None;
        };
        let elapsed = now.duration_since(t0);
        if elapsed >= Duration::from_secs(1) {
            let delivered = tally.total().min(expected);
            (self.out.on)(Milestone::Progress {
                delivered,
                expected,
                elapsed,
            });
        }
        Some(now + Duration::from_millis(100))
    }

    /// The quiet rule: every client has written all it had to send, and nothing has arrived
    /// anywhere for the quiet period: what has not arrived never will. Sampled a few times a
    /// period; paused while a fault holds a process back (a stopped client, a restart due, a
    /// phase waiting for a restarted process) or its messages (a partition, and TCP's
    /// retransmission after it). Runs with deaths end with their drain instead.
    /// (Once every client is done, the run is only collecting reports: nothing to wait for.)
    fn quiet_rule(&mut self, now: Instant) -> QuietSays {
        let (Some(q), Some(tally), Some(_), None, None, true) = (
            self.limits.quiet,
            &self.limits.tally,
            self.released_at,
            &self.ending,
            &self.limits.blackbox,
            self.settled_count < self.n,
        ) else {
            return QuietSays::Off;
        };
        if now >= self.quiet.next_sample {
            self.quiet.next_sample = now + q / 4;
            let paused = self.faults.holds_a_process_back(now)
                || self
                    .limits
                    .links
                    .as_ref()
                    .is_some_and(|l| l.retransmitting());
            let idle = (0..self.n).all(|i| self.settled[i] || tally.idle(i));
            let arrivals = tally.arrivals();
            if paused || !idle || arrivals != self.quiet.arrivals {
                self.quiet.arrivals = arrivals;
                self.quiet.since = now;
            } else if now >= self.quiet.since + q
                && self
                    .children
                    .0
                    .iter()
                    .any(|c| c.status.is_none() && is_runnable(c.pid))
            {
                // Quiet, but a process of the run is waiting for a CPU (a loaded machine):
                // what it holds may still arrive. A stalled relay and idle clients sleep.
                self.quiet.since = now;
            } else if now >= self.quiet.since + q {
                self.end(Ending::Stalled(q));
                return QuietSays::Stalled;
            }
        }
        QuietSays::SampleAt(self.quiet.next_sample)
    }

    /// Waits until `wake` for the event pipes and the signal pipe; returns the tokens that
    /// are ready, the signal pipe's (u64::MAX) first: an interrupt outranks what came with it.
    fn wait(&mut self, now: Instant, wake: Instant) -> Result<Vec<u64>, SuperviseError> {
        let timeout = wake.saturating_duration_since(now);
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let got = match self.ep.wait(&mut self.fired, timeout) {
            Ok(got) => got,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                return Err(SuperviseError::Sys {
                    what: "epoll_wait",
                    source: e,
                })
            }
        };
        let mut ready: Vec<u64> = self.fired[..got].iter().map(EpollEvent::data).collect();
        ready.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ready)
    }

    /// SIGINT or SIGTERM: the run is interrupted (unless it was already ending otherwise).
    fn on_signal(&mut self) {
        let mut b = [0u8; 16];
        let _ = std::io::Read::read(&mut &self.signals.read, &mut b);
        if matches!(
            self.ending,
            None | Some(Ending::TimedOut | Ending::SetupTimedOut(..))
        ) {
            self.ending = Some(Ending::Interrupted(
                self.signals.caught().unwrap_or(signal_hook::consts::SIGINT),
            ));
        }
    }

    /// Child `k`'s event pipe is readable: its events, then its exit if the pipe has ended.
    fn on_child(&mut self, k: usize) -> Result<(), SuperviseError> {
        let (events, eof) = read_events(&mut self.children.0[k]);
        for e in events {
            // A process the nemesis killed may have written its last words just before:
            // a Complete from it would count its client as done while the restarted one
            // still works (and the drain would start too early).
            if self.children.0[k].killed {
                continue;
            }
            self.on_event(k, e)?;
        }
        if eof {
            self.on_exit(k);
        }
        Ok(())
    }

    fn on_event(&mut self, k: usize, e: ChildEvent) -> Result<(), SuperviseError> {
        match e {
            ChildEvent::Ready => self.on_ready(k),
            ChildEvent::PhaseDone(p) => self.on_phase_done(p)?,
            ChildEvent::Complete(i) => self.settle(i),
            ChildEvent::Done(r) => {
                let i = r.index;
                self.settle(i);
                if i < self.n {
                    self.out.milestone(Milestone::Reported {
                        role: client_name(self.limits, i),
                    });
                    if self.reports[i].is_none() {
                        self.reported += 1;
                    }
                    self.reports[i] = Some(*r);
                }
            }
            ChildEvent::RelayDone(_) => {}
            ChildEvent::Failed(why) => {
                if self.ending.is_none() {
                    let name = &self.children.0[k].name;
                    self.end(Ending::StartFailed(format!("{name}: {why}")));
                }
            }
        }
        Ok(())
    }

    /// A process registered: when every client has, the start barrier opens.
    fn on_ready(&mut self, k: usize) {
        let c = &mut self.children.0[k];
        c.ready_at = Some(Instant::now());
        if c.is_restart() && self.faults.awaiting_ready > 0 {
            // A script's restarted process registered: its name is back.
            self.faults.awaiting_ready -= 1;
            if let (0, Some(q)) = (self.faults.awaiting_ready, self.faults.release_after) {
                self.faults.release_after = None;
                if q < self.barriers.len() {
                    self.start_phase(q);
                }
            }
        }
        self.ready += 1;
        let role = self.children.0[k].name.clone();
        self.out.milestone(Milestone::Registered { role });
        if self.ready == self.n && self.barriers[0].is_some() {
            self.register = self.start.elapsed();
            self.released_ns = now_ns();
            self.released_at = Some(Instant::now());
            // The work's deadline starts now: forks and registration had their own bound.
            self.deadline = Instant::now() + self.limits.deadline;
            self.quiet.since = Instant::now();
            self.barriers[0] = None; // closing the barrier starts every client at once
            self.out.milestone_at(Milestone::Released, self.released_ns);
        }
    }

    /// Phase `p` starts everywhere at once: its barrier closes.
    pub(super) fn start_phase(&mut self, p: usize) {
        self.quiet.new_phase(self.limits.tally.as_deref());
        self.barriers[p] = None;
        self.out.milestone(Milestone::PhaseStarted(p));
    }

    /// A client finished phase `p`: when every client at work has, the script's faults after
    /// it strike and the next phase starts.
    fn on_phase_done(&mut self, p: usize) -> Result<(), SuperviseError> {
        let done = self.phase_done.get_mut(p).map(|d| {
            *d += 1;
            *d
        });
        // Clients a script stopped until `cont` cannot finish a phase meanwhile.
        let at_work = self.n - self.gone - self.faults.held.len();
        if done == Some(at_work) && self.barriers.get(p + 1).is_some_and(Option::is_some) {
            self.strike_script_faults(p)?;
        }
        Ok(())
    }

    /// Child `k`'s event pipe ended: it exited. Reaps it; an exit nobody expected ends the run.
    fn on_exit(&mut self, k: usize) {
        let c = &mut self.children.0[k];
        c.events = None;
        if c.client().is_some() {
            self.clients_open -= 1;
        }
        c.reap();
        let status = c.status.clone().unwrap_or_default();
        let (client, killed) = (c.client(), c.killed);
        if self.ending.is_some() {
            return;
        }
        match client {
            None if killed => self.end(Ending::RelayKilled(status)),
            // Before every client could register: the relay could not start (a command that
            // does not exist, or exits at once), which is the environment's failure.
            None if self.released_at.is_none() => self.end(Ending::StartFailed(format!(
                "the relay exited before every client had registered ({status}); see its output"
            ))),
            None => self.end(Ending::RelayDied(status)),
            Some(i) if !killed && self.reports[i].is_none() => {
                self.end(Ending::ClientDied(i, status))
            }
            Some(_) => {}
        }
    }

    /// A new process for client `i` (a restart), starting at phase `p`.
    pub(super) fn respawn(&mut self, i: usize, p: usize) -> Result<(), SuperviseError> {
        // The contract holds for the whole run: a thread the caller started since is caught.
        let threads = super::threads();
        if threads > 1 {
            return Err(SuperviseError::Threads(threads));
        }
        let incarnation = self.faults.next_incarnation(i);
        let (r, w) = pipe().map_err(sys("pipe"))?;
        let forked_at = now_ns();
        // SAFETY: single-threaded: `supervise`'s contract holds for the whole run.
        let pid = unsafe { self.forker.client(i, incarnation, p, Events::Given(w)) }?;
        set_nonblocking(&r).map_err(sys("fcntl"))?;
        let k = self.children.0.len();
        self.ep
            .add(r.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
            .map_err(sys("epoll_ctl"))?;
        let name = client_name(self.limits, i);
        self.out.milestone_at(
            Milestone::Forked {
                role: name.clone(),
                pid: pid.as_raw(),
            },
            forked_at,
        );
        self.out.milestone(Milestone::Nemesis {
            role: name.clone(),
            action: Action::Restarted,
        });
        let role = Role::Client {
            index: i,
            incarnation,
        };
        self.children.0.push(Child::new(role, name, pid, Some(r)));
        self.clients_open += 1;
        Ok(())
    }

    /// Wakes whatever is stopped, closes every pipe, stops and reaps every child, and
    /// gathers what the run learned.
    fn finish(mut self) -> Outcome {
        let ended_at = Instant::now();
        let end_ms = self
            .released_at
            .map_or(0, |t0| ended_at.duration_since(t0).as_millis() as u64);
        // Nobody stays stopped past the run: a stopped child cannot even die of SIGTERM.
        for k in self.faults.still_stopped(end_ms) {
            let _ = kill(self.children.0[k].pid, Signal::SIGCONT);
        }
        self.drain = None;
        self.clients_stop = None;
        self.barriers.clear();

        // Stop the relay by closing its stop pipe, then make sure everyone is gone.
        if self.relay_stop.take().is_some() && self.limits.relay_elsewhere.is_none() {
            self.out.note(|| {
                "closed the relay's stop pipe: its select() sees it readable, and it shuts down"
                    .into()
            });
        }
        let interrupted = matches!(self.ending, Some(Ending::Interrupted(_)));
        if self.limits.foreign_relay && !interrupted {
            // Another relay gets SIGTERM at once (it has no stop pipe), but clients that are
            // done exit on their own: they get the grace first, and are never listed killed.
            wait_exits(&mut self.children.0[1..], self.limits.grace);
        }
        stop_all(
            &mut self.children.0,
            self.limits.grace,
            interrupted || self.limits.foreign_relay,
        );
        if self.limits.foreign_relay {
            // Anything the relay command started and left behind in its group.
            let relay = self.children.relay().pid;
            let _ = kill(Pid::from_raw(-relay.as_raw()), Signal::SIGKILL);
        }
        let statuses: Vec<(String, String)> = self
            .children
            .0
            .iter()
            .map(|c| (c.name.clone(), c.status.clone().unwrap_or_default()))
            .collect();
        for (role, status) in &statuses {
            self.out.milestone(Milestone::Exited {
                role: role.clone(),
                status: status.clone(),
            });
        }
        let relay = self.children.relay().relay.take().map(|r| *r);
        let (relay, timeline) = self.merge_traces(relay);
        Outcome {
            timeline,
            ending: self.ending.unwrap_or(Ending::Finished),
            reports: self.reports,
            statuses,
            register: self.register,
            forks: self.forks,
            released_ns: self.released_ns,
            released_at: self.released_at,
            ended_at,
            deadline: self.released_at.map_or(self.limits.deadline, |t0| {
                self.deadline.saturating_duration_since(t0)
            }),
            relay,
            supervisor_cpu: crate::record::Cpu::used(),
            supervisor_peak_rss_kib: peak_rss_kib(),
            nemesis: std::mem::take(&mut self.faults.log),
        }
    }

    /// `--trace`: every process's events (the supervisor's, the relay's from its report, each
    /// client's from its records), merged into one timeline.
    fn merge_traces(
        &mut self,
        mut relay: Option<crate::record::RelayReport>,
    ) -> (
        Option<crate::record::RelayReport>,
        Option<crate::trace::Timeline>,
    ) {
        let Some(mut t) = self.out.tracer.take() else {
            return (relay, None);
        };
        let cap = self.limits.trace.unwrap_or(0);
        let mut traces = vec![("supervisor".to_string(), t.take())];
        if let Some(r) = relay.as_mut().and_then(|r| r.trace.take()) {
            traces.push(("relay".to_string(), r));
        }
        for (i, r) in self.reports.iter_mut().enumerate() {
            if let Some(trace) = r.as_mut().and_then(|r| r.trace.take()) {
                traces.push((client_name(self.limits, i), trace));
            }
        }
        (relay, Some(crate::trace::merge(traces, cap)))
    }
}

/// What the quiet rule says at a turn of the loop.
enum QuietSays {
    /// It does not apply now.
    Off,
    /// Look again then.
    SampleAt(Instant),
    /// It held: the run ended as stalled.
    Stalled,
}

/// The quiet rule's clock: what had arrived in all when last sampled, and since when.
pub(super) struct Quiet {
    arrivals: u64,
    since: Instant,
    next_sample: Instant,
}

impl Quiet {
    /// The clock before the start barrier opens (it starts over there).
    fn new() -> Quiet {
        Quiet {
            arrivals: 0,
            since: Instant::now(),
            next_sample: Instant::now(),
        }
    }

    /// A phase starts: every client has work again, and the clock starts over.
    fn new_phase(&mut self, tally: Option<&crate::blackbox::Tally>) {
        if let Some(t) = tally {
            t.clear_idle();
        }
        self.since = Instant::now();
    }
}
