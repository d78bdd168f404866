//! The supervisor: fork the relay and the clients, hold the start barrier, collect their
//! records, enforce the deadline, and reap every child on every path.
//!
//! ```text
//!   supervisor ──fork──> relay      (stop pipe: closing it stops the relay)
//!              ──fork──> c0..cN-1   (a barrier pipe per phase: closing it starts them all at once;
//!                                    stop pipe: closing it asks for their records now)
//!              <──────── one event pipe per child: Ready, Done(records), Failed
//! ```
//! A child's event pipe reaching end of file means the child has exited: the supervisor
//! learns of deaths from the pipes it already polls, and reaps with waitpid afterwards.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use rand::{Rng, SeedableRng};

use relay_trace::now_ns;

use crate::blackbox::BlackBox;
use crate::record::{ClientReport, Event, RelayReport};
use crate::script::{Fault, FaultLine};

/// Peak resident memory of this process so far, KiB (VmHWM).
///
/// Not getrusage's ru_maxrss: that survives exec, so it would include whatever process
/// forked and exec'd relay-sim (a shell, a test runner).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn send_event(fd: &OwnedFd, e: &Event) -> io::Result<()> {
    let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
    line.push(b'\n');
    std::fs::File::from(fd.try_clone()?).write_all(&line)
}

/// What the relay process gets.
pub struct RelayCtx {
    /// Becomes readable (end of file) when the supervisor wants the relay to stop.
    pub stop: OwnedFd,
    events: OwnedFd,
}

impl RelayCtx {
    /// Lets the event pipe survive an exec, so the supervisor sees the relay's exit (end of
    /// file) even when the relay is another program.
    pub fn keep_events_across_exec(&self) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        fcntl(&self.events, FcntlArg::F_SETFD(FdFlag::empty())).map_err(io::Error::from)?;
        Ok(())
    }

    /// Tells the supervisor the relay stopped, with its peak memory and how many injected
    /// faults it applied.
    pub fn done(
        &mut self,
        injected: u64,
        held_back_ms: u64,
        trace: Option<crate::trace::Trace>,
    ) -> io::Result<()> {
        send_event(
            &self.events,
            &Event::RelayDone(Box::new(RelayReport {
                peak_rss_kib: peak_rss_kib(),
                cpu: crate::record::Cpu::used(),
                injected,
                held_back_ms,
                trace,
            })),
        )
    }
}

/// Steps of a run, for a caller that narrates it (`-v`) or shows progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Milestone {
    /// A child was forked.
    Forked {
        /// relay, c0, ...
        role: String,
        /// Its pid.
        pid: i32,
    },
    /// A client registered and waits at the start barrier.
    Registered {
        /// c0, ...
        role: String,
    },
    /// Every client registered; the barrier is released.
    Released,
    /// Every client finished a phase; the next one starts.
    PhaseStarted(usize),
    /// A client reported its records.
    Reported {
        /// c0, ...
        role: String,
    },
    /// The run is ending early, and why.
    Stopping(Ending),
    /// The nemesis acted on a client or the relay.
    Nemesis {
        /// c0, ..., or relay.
        role: String,
        /// What it did.
        action: Action,
    },
    /// A child was reaped.
    Exited {
        /// relay, c0, ...
        role: String,
        /// How it ended.
        status: String,
    },
}

/// What a client process gets.
pub struct ClientCtx {
    /// The client's index.
    pub index: usize,
    events: OwnedFd,
    /// One barrier per phase, in order; each is taken when waited on.
    barriers: Vec<Option<OwnedFd>>,
    /// Becomes readable (end of file) when the supervisor wants the records now.
    pub stop: OwnedFd,
    /// 0 for the first process of this client; 1, 2, ... for restarts.
    pub incarnation: u32,
    /// The phase it starts at (a script's restarted process carries on at the next phase).
    pub start_phase: usize,
    /// `--trace`: how many events to keep.
    pub trace: Option<usize>,
    /// When a progress bar may be shown: where to count what this client received.
    pub tally: Option<Arc<crate::blackbox::Tally>>,
    /// Runs with deaths: the counters every process shares.
    pub blackbox: Option<Arc<BlackBox>>,
    /// Runs with deaths: becomes readable (end of file) once every client is done with its
    /// work and no process will die any more; the clients then send their end markers.
    drain: Option<OwnedFd>,
}

impl ClientCtx {
    /// Runs with deaths: becomes readable (end of file) once the drain starts.
    pub fn drain_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.drain.as_ref().map(|d| d.as_fd())
    }

    fn send(&mut self, e: &Event) -> io::Result<()> {
        send_event(&self.events, e)
    }

    /// Tells the supervisor this client is registered, then waits at the start barrier.
    pub fn ready_and_wait(&mut self) -> io::Result<()> {
        self.send(&Event::Ready)?;
        self.wait_barrier(0)
    }

    /// Tells the supervisor this client finished phase `p`, then waits for phase `p + 1`.
    pub fn phase_done_and_wait(&mut self, p: usize) -> io::Result<()> {
        self.send(&Event::PhaseDone(p))?;
        self.wait_barrier(p + 1)
    }

    /// Waits until phase `p` starts (a restarted process, after it reported Ready).
    pub fn wait_phase(&mut self, p: usize) -> io::Result<()> {
        self.wait_barrier(p)
    }

    fn wait_barrier(&mut self, p: usize) -> io::Result<()> {
        let Some(b) = self.barriers.get_mut(p).and_then(Option::take) else {
            return Ok(());
        };
        let mut f = std::fs::File::from(b);
        // The supervisor never writes to a barrier: it closes it, and every reader wakes.
        let mut byte = [0u8; 1];
        loop {
            match f.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Says this client's work is done. It should keep reading until `stop` becomes readable:
    /// a message that still arrives (a duplicate, a misrouted one) is then caught too.
    pub fn complete(&mut self) -> io::Result<()> {
        self.send(&Event::Complete(self.index))
    }

    /// Sends the records (adding this process's peak memory).
    pub fn done(&mut self, mut r: ClientReport) -> io::Result<()> {
        r.peak_rss_kib = peak_rss_kib();
        r.cpu = crate::record::Cpu::used();
        self.send(&Event::Done(Box::new(r)))
    }

    /// Says why this client could not start.
    pub fn failed(&mut self, why: String) -> io::Result<()> {
        self.send(&Event::Failed(why))
    }
}

/// Limits for one supervised run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Number of client processes.
    pub clients: usize,
    /// Number of phases (each ends at a global barrier).
    pub phases: usize,
    /// The clients' names, for milestones and statuses (`c{i}` where missing).
    pub names: Vec<String>,
    /// Descriptors the relay child keeps besides its own pipes (its listening socket).
    pub relay_fds: Vec<RawFd>,
    /// Process faults: every so often, stop, kill or restart a random client, or kill the relay.
    pub nemesis: Option<Nemesis>,
    /// Runs that kill clients: counters shared with every child, read by the verifier.
    pub blackbox: Option<Arc<BlackBox>>,
    /// A script's fault lines, each struck when every live client has finished its phase.
    pub script_faults: Vec<FaultLine>,
    /// `--trace`: events kept per process (None: no tracing).
    pub trace: Option<usize>,
    /// Traced events from before the supervisor started (the listening socket's creation).
    pub trace_prelude: Vec<(u64, String)>,
    /// A progress bar on stderr for runs longer than a second: the messages the clients are
    /// due to receive in all (None: never).
    pub progress: Option<u64>,
    /// Where the clients count what arrived and say when they have nothing left to write
    /// (the progress bar and the quiet rule read it).
    pub tally: Option<Arc<crate::blackbox::Tally>>,
    /// The quiet rule: once every client has written all it had to send, nothing arriving
    /// anywhere for this long ends the run as stalled (None: only the deadline ends it).
    pub quiet: Option<Duration>,
    /// The relay is another program (it cannot be asked to stop through its pipe: it gets
    /// SIGTERM at once when the run is over).
    pub foreign_relay: bool,
    /// From the first fork until every client has reported.
    pub deadline: Duration,
    /// How long stopped children get to report or exit before SIGTERM, and SIGTERM before SIGKILL.
    pub grace: Duration,
}

/// A process fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SIGSTOP a client, SIGCONT it later: a slow consumer.
    Stop,
    /// SIGCONT a stopped client.
    Cont,
    /// SIGKILL a client for good.
    Kill,
    /// SIGKILL a client, then start a new process under its name that carries on.
    Restart,
    /// The new process of a restarted client was forked.
    Restarted,
    /// SIGKILL the relay: the run ends.
    Relay,
}

impl Action {
    /// The word for it (`stop`, `kill`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Cont => "cont",
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Restarted => "restarted",
            Action::Relay => "relay",
        }
    }
}

/// The nemesis: every `interval` after the barrier, one action drawn from `kinds` on one client
/// (both drawn with a PRNG seeded by `seed`, so a seed replays the same faults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nemesis {
    /// What it may do: Stop, Kill, Restart, Relay.
    pub kinds: Vec<Action>,
    /// Time between two actions.
    pub interval: Duration,
    /// How long a client stays stopped, or dead before its restart.
    pub pause: Duration,
    /// Seed for picking actions and victims.
    pub seed: u64,
}

/// One nemesis action, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NemesisEvent {
    /// What it did.
    pub action: Action,
    /// The client, or `relay`.
    pub role: String,
    /// Milliseconds after the barrier.
    pub at_ms: u64,
    /// How long the client stayed stopped (or dead, before its restart), in milliseconds.
    pub for_ms: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every client reported its records.
    Finished,
    /// The deadline passed first.
    TimedOut,
    /// Every client had written all it had to send, and nothing arrived anywhere for this
    /// long (the quiet rule): what had not arrived was not coming.
    Stalled(Duration),
    /// SIGINT or SIGTERM (the number) reached the supervisor.
    Interrupted(i32),
    /// The relay exited before the clients were done.
    RelayDied(String),
    /// The nemesis killed the relay (its exit status).
    RelayKilled(String),
    /// A client exited without reporting.
    ClientDied(usize, String),
    /// A child could not start (connect or register failed).
    StartFailed(String),
}

/// Everything the supervisor learned.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// Each client's records, if it reported.
    pub reports: Vec<Option<ClientReport>>,
    /// Exit status of every child, as text, by role (`relay`, `c0`, ...).
    pub statuses: Vec<(String, String)>,
    /// From the first fork until all clients were registered.
    pub register: Duration,
    /// CLOCK_MONOTONIC ns at which the barrier was released (0 if never).
    pub released_ns: u64,
    /// Instant the barrier was released.
    pub released_at: Option<Instant>,
    /// Instant the last report arrived (or the run was cut short).
    pub ended_at: Instant,
    /// What the relay reported as it stopped (its trace moved into `timeline`), if it did.
    pub relay: Option<RelayReport>,
    /// The supervisor's own CPU time.
    pub supervisor_cpu: crate::record::Cpu,
    /// The supervisor's own peak memory, KiB.
    pub supervisor_peak_rss_kib: u64,
    /// What the nemesis did.
    pub nemesis: Vec<NemesisEvent>,
    /// `--trace`: every process's events, merged.
    pub timeline: Option<crate::trace::Timeline>,
}

struct Child {
    role: String,
    /// The client it runs (None for the relay).
    client: Option<usize>,
    /// The nemesis killed it: its end is no failure.
    killed: bool,
    /// When it said it was registered.
    ready_at: Option<Instant>,
    pid: Pid,
    events: Option<OwnedFd>,
    buf: Vec<u8>,
    status: Option<String>,
    /// The relay's last word (clients send theirs as events).
    relay: Option<RelayReport>,
}

impl Child {
    /// A child just forked: running, its event pipe open.
    fn new(role: String, client: Option<usize>, pid: Pid, events: OwnedFd) -> Child {
        Child {
            role,
            client,
            killed: false,
            ready_at: None,
            pid,
            events: Some(events),
            buf: Vec::new(),
            status: None,
            relay: None,
        }
    }
}

/// Reaps whatever is left if the supervisor returns early or panics.
struct Reaper {
    children: Vec<Child>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.children {
            if c.status.is_none() {
                signal_group(c.pid, Signal::SIGKILL);
                c.status = Some(describe(waitpid(c.pid, None)));
                crate::janitor::reaped(c.pid.as_raw());
            }
        }
    }
}

/// Signals a child's whole process group (it leads one: see `spawn`), so whatever it started
/// (a shell's child, a foreign relay's workers) gets the signal too.
fn signal_group(pid: Pid, sig: Signal) {
    if kill(Pid::from_raw(-pid.as_raw()), sig).is_err() {
        let _ = kill(pid, sig);
    }
}

fn role(limits: &Limits, i: usize) -> String {
    limits
        .names
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("c{i}"))
}

fn describe(w: nix::Result<WaitStatus>) -> String {
    match w {
        Ok(WaitStatus::Exited(_, code)) => format!("exited {code}"),
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Forks `body` into a child that keeps stdin, stdout, stderr and the fds in `keep`, and
/// closes every other descriptor it inherited.
///
/// Fork safety: the caller must be single-threaded (the relay-sim binary starts no thread
/// before its forks), so the child may run ordinary Rust code. The child never returns
/// into the caller's code: it leaves with `_exit`, running no destructor of the parent's.
fn spawn(keep: &[RawFd], body: impl FnOnce() -> i32) -> nix::Result<Pid> {
    // SAFETY: single-threaded at this point (see above).
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            // Also from this side, so the group exists before anyone could signal it.
            let _ = nix::unistd::setpgid(child, child);
            crate::janitor::group(child.as_raw());
            Ok(child)
        }
        ForkResult::Child => {
            // A process group of its own: a terminal's Ctrl-C reaches only the supervisor,
            // which then stops every child itself, in order, and reports what happened.
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            crate::janitor::announce_self(); // before the parent can: see there
                                             // The supervisor's SIGINT/SIGTERM handlers write to its self-pipe: not ours.
            for sig in [Signal::SIGINT, Signal::SIGTERM] {
                // SAFETY: restoring the default disposition installs no Rust handler.
                let _ = unsafe { signal(sig, SigHandler::SigDfl) };
            }
            close_all_but(keep);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
            // SAFETY: _exit ends the process at once; no parent destructor or test harness runs.
            unsafe { nix::libc::_exit(code) }
        }
    }
}

/// In a new child: closes every inherited fd above stderr that is not in `keep` (the other
/// children's pipe ends, the supervisor's own, the listener in a client). The OwnedFds that
/// held them are never dropped in the child, which leaves with `_exit`.
///
/// close_range(2) closes each gap between kept fds in one call, so forking N clients costs
/// O(N) system calls, not O(N) per child; /proc/self/fd is the fallback for older kernels.
fn close_all_but(keep: &[RawFd]) {
    let mut kept: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    kept.sort_unstable();
    kept.dedup();
    let mut from = 3u32;
    let mut ok = true;
    for &k in kept.iter().chain(std::iter::once(&u32::MAX)) {
        if from < k {
            // SAFETY: close_range only closes descriptors; none of them is used again here.
            let r = unsafe { nix::libc::syscall(nix::libc::SYS_close_range, from, k - 1, 0u32) };
            ok &= r == 0;
        }
        from = k.saturating_add(1);
    }
    if ok {
        return;
    }
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
}

fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC)
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Why supervision could not even start.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// pipe(2) or fork(2) failed.
    #[error(
        "{what} failed: {source}; check the process and open-file limits (ulimit -u, ulimit -n)"
    )]
    Sys {
        /// The call.
        what: &'static str,
        /// The cause.
        source: nix::Error,
    },
}

fn dup_err(e: io::Error) -> SuperviseError {
    SuperviseError::Sys {
        what: "dup",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
    }
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> SuperviseError {
    move |source| SuperviseError::Sys { what, source }
}

/// SIGINT and SIGTERM, caught from the moment a run is asked for: the self-pipe trick (a
/// handler writes a byte, the supervisor polls the read end with its event pipes), and which
/// signal came. Install it first thing, before anything a signal could leave behind (the run's
/// directory, its socket): from then on a signal ends the run through its cleanup, never
/// outright. Dropping it unregisters our actions, but signal-hook keeps its own handler: the
/// signals are then ignored, so keep it for as long as the process runs.
pub struct Signals {
    read: std::os::unix::net::UnixStream,
    which: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// Installs the handlers for SIGINT and SIGTERM.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let which = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut ids = Vec::new();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Which one first (so the exit code can be 128 + its number), then the wake-up.
            ids.push(signal_hook::flag::register_usize(
                sig,
                which.clone(),
                sig as usize,
            )?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        Ok(Signals { read, which, ids })
    }

    /// The signal caught so far (the last one, if several), if any.
    pub fn caught(&self) -> Option<i32> {
        match self.which.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            sig => Some(sig as i32),
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Runs one supervised run: forks the relay (running `relay`), then the clients (each running
/// `client`), and returns when every client has reported, or the deadline, a death or a signal
/// (caught by `signals`, installed by the caller before it made anything) ended the run. Every
/// child has been reaped when this returns. (A signal caught before the call ends the run at
/// the first wait, after the forks, through the same cleanup.)
pub fn supervise(
    limits: &Limits,
    signals: &Signals,
    relay: impl FnOnce(RelayCtx) -> i32,
    mut client: impl FnMut(ClientCtx) -> i32,
    on: &mut dyn FnMut(Milestone),
) -> Result<Outcome, SuperviseError> {
    let start = Instant::now();
    let n = limits.clients;
    let deadline = start + limits.deadline;
    run_children(limits, n, deadline, start, signals, relay, &mut client, on)
}

#[allow(clippy::too_many_arguments)]
fn run_children(
    limits: &Limits,
    n: usize,
    deadline: Instant,
    start: Instant,
    signals: &Signals,
    relay: impl FnOnce(RelayCtx) -> i32,
    client: &mut impl FnMut(ClientCtx) -> i32,
    on: &mut dyn FnMut(Milestone),
) -> Result<Outcome, SuperviseError> {
    // `--trace`: the supervisor's own events; every milestone is one.
    let mut tr = limits.trace.map(crate::trace::Tracer::new);
    if let Some(t) = tr.as_mut() {
        for (at, what) in &limits.trace_prelude {
            t.at(*at, what.clone());
        }
    }
    macro_rules! ms {
        ($m:expr) => {{
            let m = $m;
            if let Some(t) = tr.as_mut() {
                t.ev(|| milestone_text(&m));
            }
            on(m);
        }};
        // A milestone stamped with the time it happened (closing a barrier wakes every
        // client, and the supervisor may not run again for a while).
        ($m:expr, at $t:expr) => {{
            let m = $m;
            if let Some(tr) = tr.as_mut() {
                tr.at($t, milestone_text(&m));
            }
            on(m);
        }};
    }
    macro_rules! note {
        ($($arg:tt)*) => {
            if let Some(t) = tr.as_mut() {
                t.ev(|| format!($($arg)*));
            }
        };
    }
    // Every pipe is made before the first fork, so each child can close what is not its own.
    let phases = limits.phases.max(1);
    let mut barrier_r = Vec::with_capacity(phases);
    let mut barrier_w = Vec::with_capacity(phases);
    for _ in 0..phases {
        let (r, w) = pipe().map_err(sys("pipe"))?;
        barrier_r.push(r);
        barrier_w.push(Some(w));
    }
    let (cstop_r, cstop_w) = pipe().map_err(sys("pipe"))?;
    let (rstop_r, rstop_w) = pipe().map_err(sys("pipe"))?;
    let (rev_r, rev_w) = pipe().map_err(sys("pipe"))?;
    let mut ev: Vec<(OwnedFd, OwnedFd)> = Vec::with_capacity(n);
    for _ in 0..n {
        ev.push(pipe().map_err(sys("pipe"))?);
    }
    note!(
        "pipe() x {}: a start barrier per phase, a stop pipe for the clients, one for the relay, an event pipe per child",
        phases + 3 + n
    );
    let mut reaper = Reaper {
        children: Vec::new(),
    };
    let mut cstop_w = Some(cstop_w);

    // The relay first: the clients connect to it.
    let rctx = RelayCtx {
        stop: rstop_r.try_clone().map_err(dup_err)?,
        events: rev_w.try_clone().map_err(dup_err)?,
    };
    let keep = [rctx.stop.as_raw_fd(), rctx.events.as_raw_fd()];
    let mut keep = keep.to_vec();
    keep.extend(&limits.relay_fds);
    // Stamped before the fork: the child may run (and be traced) before the parent logs.
    let forked_at = now_ns();
    let pid = spawn(&keep, move || relay(rctx)).map_err(sys("fork"))?;
    ms!(Milestone::Forked {
        role: "relay".into(),
        pid: pid.as_raw(),
    }, at forked_at);
    // The parent's copy of the relay closure (and any listener in it) is dropped here.
    drop(rev_w);
    drop(rstop_r);
    note!("closed its copies of the relay's ends (the event pipe's write end, the stop pipe's read end) and of the listening socket");
    set_nonblocking(&rev_r).map_err(sys("fcntl"))?;
    reaper
        .children
        .push(Child::new("relay".into(), None, pid, rev_r));

    let mut ev_r: Vec<Option<OwnedFd>> = Vec::with_capacity(n);
    let mut ev_w: Vec<Option<OwnedFd>> = Vec::with_capacity(n);
    for (r, w) in ev {
        ev_r.push(Some(r));
        ev_w.push(Some(w));
    }
    // Runs with deaths end with a drain: every client, done and alive, sends end markers.
    let (drain_r, mut drain_w) = match &limits.blackbox {
        Some(_) => {
            let (r, w) = pipe().map_err(sys("pipe"))?;
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    // What a client process gets; also for a restart, later (the read ends stay open here).
    let fork_client = |i: usize,
                       incarnation: u32,
                       start_phase: usize,
                       events: OwnedFd,
                       client: &mut dyn FnMut(ClientCtx) -> i32|
     -> Result<Pid, SuperviseError> {
        let ctx = ClientCtx {
            index: i,
            events,
            barriers: barrier_r
                .iter()
                .map(|b| b.try_clone().map(Some))
                .collect::<Result<_, _>>()
                .map_err(dup_err)?,
            stop: cstop_r.try_clone().map_err(dup_err)?,
            incarnation,
            start_phase,
            trace: limits.trace,
            tally: limits.tally.clone(),
            blackbox: limits.blackbox.clone(),
            drain: drain_r
                .as_ref()
                .map(|d| d.try_clone())
                .transpose()
                .map_err(dup_err)?,
        };
        let mut keep = vec![ctx.events.as_raw_fd(), ctx.stop.as_raw_fd()];
        keep.extend(ctx.barriers.iter().flatten().map(|b| b.as_raw_fd()));
        keep.extend(ctx.drain.as_ref().map(|d| d.as_raw_fd()));
        spawn(&keep, || client(ctx)).map_err(sys("fork"))
    };
    for i in 0..n {
        let w = ev_w[i].take().expect("each event pipe is used once");
        let forked_at = now_ns();
        let pid = fork_client(i, 0, 0, w, client)?;
        ms!(Milestone::Forked {
            role: role(limits, i),
            pid: pid.as_raw(),
        }, at forked_at);
        let r = ev_r[i].take().expect("each event pipe is used once");
        set_nonblocking(&r).map_err(sys("fcntl"))?;
        reaper
            .children
            .push(Child::new(role(limits, i), Some(i), pid, r));
    }

    let mut reports: Vec<Option<ClientReport>> = vec![None; n];
    let mut ready = 0usize;
    let mut released_ns = 0;
    let mut released_at = None;
    let mut register = Duration::ZERO;
    let mut ending: Option<Ending> = None;
    let mut asked_to_stop_at: Option<Instant> = None;
    let mut announced = false;
    let mut stopped: Option<(usize, Instant)> = None;
    // Killed clients waiting for their restart: (client, when).
    let mut restarts: Vec<(usize, Instant)> = Vec::new();
    let mut incarnations = vec![0u32; n];
    let mut actions = 0u32;
    let mut relay_killed = false;
    // Clients killed for good: they will never report.
    let mut gone = 0usize;
    let mut nemesis_log: Vec<NemesisEvent> = Vec::new();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut nemesis_rng =
        rand_pcg::Pcg64Mcg::seed_from_u64(limits.nemesis.as_ref().map_or(0, |n| n.seed) ^ 0x4E3E);
    let mut phase_done = vec![0usize; phases];
    let mut quiet = Quiet {
        arrivals: 0,
        since: Instant::now(),
        next_sample: Instant::now(),
    };

    // Every event pipe and the signal pipe in one epoll set: a wait costs in proportion to
    // the pipes that are ready, not to the thousands that may be open. (Made after the last
    // fork, so no child holds it.) A pipe leaves the set when its fd is closed.
    note!(
        "epoll_create(): watches {} event pipes and the signal pipe; waits until one is readable",
        n + 1
    );
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create"))?;
    ep.add(
        signals.read.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, u64::MAX),
    )
    .map_err(sys("epoll_ctl"))?;
    for (k, c) in reaper.children.iter().enumerate() {
        if let Some(e) = &c.events {
            ep.add(e.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
                .map_err(sys("epoll_ctl"))?;
        }
    }
    let mut fired = vec![EpollEvent::empty(); 256];
    let mut reported = 0usize;
    let mut clients_open = n;
    // Clients that are done with their work (Complete) or have reported (Done). When all are,
    // the stop pipe closes and the lingering ones report.
    let mut settled = vec![false; n];
    let mut settled_count = 0usize;

    // Script faults: `stop` lines waiting for their SIGCONT (child, when); restarted processes
    // the next phase waits for (it starts once they have registered).
    let mut conts: Vec<(usize, Instant)> = Vec::new();
    // Clients a script stopped until a `cont` line (their children's indexes).
    let mut held: Vec<usize> = Vec::new();
    let mut awaiting_ready = 0usize;
    let mut release_after: Option<usize> = None;

    // A new process for client `i` (a restart), starting at phase `p`.
    // Fork safety: the supervisor is still single-threaded (see spawn).
    macro_rules! respawn {
        ($i:expr, $p:expr) => {{
            let i: usize = $i;
            incarnations[i] += 1;
            let (r, w) = pipe().map_err(sys("pipe"))?;
            let forked_at = now_ns();
            let pid = fork_client(i, incarnations[i], $p, w, client)?;
            set_nonblocking(&r).map_err(sys("fcntl"))?;
            let k = reaper.children.len();
            ep.add(r.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
                .map_err(sys("epoll_ctl"))?;
            let role = role(limits, i);
            ms!(Milestone::Forked {
                role: role.clone(),
                pid: pid.as_raw(),
            }, at forked_at);
            ms!(Milestone::Nemesis {
                role: role.clone(),
                action: Action::Restarted,
            });
            reaper.children.push(Child::new(role, Some(i), pid, r));
            clients_open += 1;
        }};
    }

    // The event loop: until every client has reported, or something ends the run.
    loop {
        if ending.is_none() && settled_count == n && reported + gone < n {
            if limits.blackbox.is_some() {
                drain_w = None; // everyone is done and nobody dies any more: send end markers
            } else if cstop_w.is_some() {
                note!("every client is done: closed the clients' stop pipe, so each reads 0 and reports");
                cstop_w = None; // everyone is done: the lingering clients may report now
            }
        }
        if ending.is_none() && reported + gone == n {
            // The clients may report (having seen their sockets close) before the relay's own
            // pipe says it died: a killed relay still ends the run as killed.
            ending = Some(if relay_killed {
                Ending::RelayKilled("killed by SIGKILL (the nemesis)".into())
            } else {
                Ending::Finished
            });
        }
        if let (Some(e), false) = (&ending, announced) {
            announced = true;
            if *e != Ending::Finished {
                ms!(Milestone::Stopping(e.clone()));
            }
        }
        if ending.is_some() && ending != Some(Ending::Finished) {
            // Clients still at the barrier go on to find the stop pipe closed.
            cstop_w = None;
            for b in &mut barrier_w {
                *b = None;
            }
        }
        if let Some(e) = &ending {
            // Stopping: wait for the clients' last reports or exits, within the grace time.
            if clients_open == 0 || *e == Ending::Finished {
                break;
            }
            let since = asked_to_stop_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= limits.grace {
                break;
            }
        }
        let mut wait_until = match (&ending, asked_to_stop_at) {
            (Some(_), Some(t)) => t + limits.grace,
            _ => deadline,
        };
        let now = Instant::now();
        // A script's stopped clients whose time is up.
        conts.retain(|&(k, until)| {
            if now < until {
                return true;
            }
            let c = &reaper.children[k];
            let _ = kill(c.pid, Signal::SIGCONT);
            ms!(Milestone::Nemesis {
                role: c.role.clone(),
                action: Action::Cont,
            });
            false
        });
        if let Some(&(_, until)) = conts.iter().min_by_key(|(_, u)| *u) {
            wait_until = wait_until.min(until);
        }
        // The nemesis: continue or restart whoever is due, then act again when it is time.
        if let (Some(nem), Some(t0), None) = (&limits.nemesis, released_at, &ending) {
            let at_ms = now.duration_since(t0).as_millis() as u64;
            if let Some((k, until)) = stopped {
                if now >= until {
                    let c = &reaper.children[k];
                    let _ = kill(c.pid, Signal::SIGCONT);
                    ms!(Milestone::Nemesis {
                        role: c.role.clone(),
                        action: Action::Cont,
                    });
                    stopped = None;
                }
            }
            while restarts.first().is_some_and(|&(_, at)| now >= at) {
                let (i, _) = restarts.remove(0);
                respawn!(i, 0);
            }
            let due = t0 + nem.interval * (actions + 1);
            // The nemesis rests in the second half of the deadline, so every process gets the
            // time to finish (restarts could otherwise go on until the deadline).
            let resting = now >= start + limits.deadline / 2;
            if stopped.is_none() && !relay_killed && !resting && now >= due && !nem.kinds.is_empty()
            {
                actions += 1;
                let action = nem.kinds[nemesis_rng.random_range(0..nem.kinds.len())];
                // Stop: any client process still running. Kill and restart: one still at work
                // (a client that is done only waits for the others) that has been registered
                // for an interval, so each process gets to do something before it dies; and
                // kill leaves two clients standing.
                let may_die = |c: &Child| {
                    c.ready_at
                        .is_some_and(|t| now.duration_since(t) >= nem.interval)
                        && (action != Action::Kill || n - gone > 2)
                };
                let victims: Vec<usize> = (1..reaper.children.len())
                    .filter(|&k| {
                        let c = &reaper.children[k];
                        let i = c.client.unwrap_or(0);
                        c.events.is_some()
                            && !c.killed
                            && reports[i].is_none()
                            && (action == Action::Stop || (!settled[i] && may_die(c)))
                    })
                    .collect();
                if action == Action::Relay {
                    let c = &mut reaper.children[0];
                    signal_group(c.pid, Signal::SIGKILL);
                    c.killed = true;
                    relay_killed = true;
                    ms!(Milestone::Nemesis {
                        role: c.role.clone(),
                        action,
                    });
                    nemesis_log.push(NemesisEvent {
                        action,
                        role: c.role.clone(),
                        at_ms,
                        for_ms: 0,
                    });
                } else if !victims.is_empty() {
                    // Drawn over all clients, then the next eligible one: the same seed picks
                    // the same victims whenever the same clients are still at work.
                    let pick = nemesis_rng.random_range(0..n);
                    let client_of = |k: usize| reaper.children[k].client.unwrap_or(0);
                    let k = victims
                        .iter()
                        .copied()
                        .min_by_key(|&k| (client_of(k) + n - pick) % n)
                        .unwrap_or(victims[0]);
                    let c = &mut reaper.children[k];
                    let i = c.client.unwrap_or(0);
                    let for_ms = nem.pause.as_millis() as u64;
                    match action {
                        Action::Stop => {
                            let _ = kill(c.pid, Signal::SIGSTOP);
                            stopped = Some((k, now + nem.pause));
                        }
                        _ => {
                            // Recorded before the signal: the relay may bounce a message for
                            // the dead client to another one within microseconds, and that one
                            // accepts the bounce only for a client that died.
                            let for_good = action == Action::Kill;
                            if let Some(bb) = &limits.blackbox {
                                bb.killed(i, for_good);
                            }
                            signal_group(c.pid, Signal::SIGKILL);
                            c.killed = true;
                            if for_good {
                                settled[i] = true;
                                settled_count += 1;
                                gone += 1;
                            } else {
                                restarts.push((i, now + nem.pause));
                            }
                        }
                    }
                    ms!(Milestone::Nemesis {
                        role: c.role.clone(),
                        action,
                    });
                    nemesis_log.push(NemesisEvent {
                        action,
                        role: c.role.clone(),
                        at_ms,
                        for_ms: if action == Action::Kill { 0 } else { for_ms },
                    });
                }
            }
            let mut next = t0 + nem.interval * (actions + 1);
            if let Some((_, u)) = stopped {
                next = u;
            }
            if let Some(&(_, at)) = restarts.first() {
                next = next.min(at);
            }
            wait_until = wait_until.min(next);
        }
        // The progress bar: shown once the exchange has run a second, redrawn every 100 ms.
        // indicatif draws from this thread when asked (no ticker thread), so later forks (a
        // restart) still happen in a single-threaded process.
        if let (Some(expected), Some(tally), Some(t0), None) =
            (limits.progress, &limits.tally, released_at, &ending)
        {
            let ran = now.duration_since(t0);
            if ran >= Duration::from_secs(1) {
                let bar = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::with_draw_target(
                        Some(expected),
                        indicatif::ProgressDrawTarget::stderr_with_hz(10),
                    );
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{bar:30} {human_pos}/{human_len} delivered, {msg}",
                    ) {
                        b.set_style(style);
                    }
                    b
                });
                let done = tally.total().min(expected);
                let rate = done as f64 / ran.as_secs_f64();
                let eta = (expected - done) as f64 / rate.max(1.0);
                bar.set_message(format!("{:.2}M msg/s, ETA {eta:.0} s", rate / 1e6));
                bar.set_position(done);
            }
            wait_until = wait_until.min(now + Duration::from_millis(100));
        }
        // The quiet rule: every client has written all it had to send, and nothing has
        // arrived anywhere for the quiet period: what has not arrived never will. Sampled a few
        // times a period; paused while a fault holds a process back (a stopped client, a
        // restart due, a phase waiting for a restarted process). Runs with deaths end with
        // their drain instead.
        // (Once every client is done, the run is only collecting reports: nothing to wait for.)
        if let (Some(q), Some(tally), Some(_), None, None, true) = (
            limits.quiet,
            &limits.tally,
            released_at,
            &ending,
            &limits.blackbox,
            settled_count < n,
        ) {
            if now >= quiet.next_sample {
                quiet.next_sample = now + q / 4;
                let paused = stopped.is_some()
                    || !conts.is_empty()
                    || !held.is_empty()
                    || !restarts.is_empty()
                    || release_after.is_some();
                let idle = (0..n).all(|i| settled[i] || tally.idle(i));
                let arrivals = tally.arrivals();
                if paused || !idle || arrivals != quiet.arrivals {
                    quiet.arrivals = arrivals;
                    quiet.since = now;
                } else if now >= quiet.since + q
                    && reaper
                        .children
                        .iter()
                        .any(|c| c.status.is_none() && is_runnable(c.pid))
                {
                    // Quiet, but a process of the run is waiting for a CPU (a loaded machine):
                    // what it holds may still arrive. A stalled relay and idle clients sleep.
                    quiet.since = now;
                } else if now >= quiet.since + q {
                    ending = Some(Ending::Stalled(q));
                    cstop_w = None; // ask every client for its records now
                    continue;
                }
            }
            wait_until = wait_until.min(quiet.next_sample);
        }
        if ending.is_none() && now >= deadline {
            ending = Some(Ending::TimedOut);
            cstop_w = None; // ask every client for its records now
            continue;
        }
        let timeout = wait_until.saturating_duration_since(now);
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let got = match ep.wait(
            &mut fired,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(got) => got,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                return Err(SuperviseError::Sys {
                    what: "epoll_wait",
                    source: e,
                })
            }
        };
        // The signal pipe (data u64::MAX) first: an interrupt outranks what arrived with it.
        let mut ready_idx: Vec<usize> = fired[..got]
            .iter()
            .map(|e| {
                if e.data() == u64::MAX {
                    usize::MAX
                } else {
                    e.data() as usize
                }
            })
            .collect();
        ready_idx.sort_unstable_by(|a, b| b.cmp(a));
        for k in ready_idx {
            if k == usize::MAX {
                let mut b = [0u8; 16];
                let _ = (&signals.read).read(&mut b);
                if ending.is_none() || ending == Some(Ending::TimedOut) {
                    ending = Some(Ending::Interrupted(
                        signals.caught().unwrap_or(signal_hook::consts::SIGINT),
                    ));
                }
                break;
            }
            let (events, eof) = read_events(&mut reaper.children[k]);
            for e in events {
                // A process the nemesis killed may have written its last words just before:
                // a Complete from it would count its client as done while the restarted one
                // still works (and the drain would start too early).
                if reaper.children[k].killed {
                    continue;
                }
                match e {
                    Event::Ready => {
                        reaper.children[k].ready_at = Some(Instant::now());
                        if k > n && awaiting_ready > 0 {
                            // A script's restarted process registered: its name is back.
                            awaiting_ready -= 1;
                            if let (0, Some(q)) = (awaiting_ready, release_after) {
                                release_after = None;
                                if let Some(b) = barrier_w.get_mut(q) {
                                    quiet.new_phase(limits.tally.as_deref());
                                    *b = None;
                                    ms!(Milestone::PhaseStarted(q));
                                }
                            }
                        }
                        ready += 1;
                        ms!(Milestone::Registered {
                            role: reaper.children[k].role.clone(),
                        });
                        if ready == n && barrier_w[0].is_some() {
                            register = start.elapsed();
                            released_ns = now_ns();
                            released_at = Some(Instant::now());
                            quiet.since = Instant::now();
                            barrier_w[0] = None; // closing the barrier starts every client at once
                            ms!(Milestone::Released, at released_ns);
                        }
                    }
                    Event::PhaseDone(p) => {
                        let done = phase_done.get_mut(p).map(|d| {
                            *d += 1;
                            *d
                        });
                        // Clients a script stopped until `cont` cannot finish a phase meanwhile.
                        if done == Some(n - gone - held.len())
                            && barrier_w.get(p + 1).is_some_and(Option::is_some)
                        {
                            // The script's fault lines after this phase strike now.
                            let at_ms = released_at.map_or(0, |t0| t0.elapsed().as_millis() as u64);
                            for f in limits.script_faults.iter().filter(|f| f.after_phase == p) {
                                let (action, who) = match f.fault {
                                    Fault::Stop(i, _) => (Action::Stop, Some(i)),
                                    Fault::Cont(i) => (Action::Cont, Some(i)),
                                    Fault::Kill(i) => (Action::Kill, Some(i)),
                                    Fault::Restart(i) => (Action::Restart, Some(i)),
                                    Fault::KillRelay => (Action::Relay, None),
                                };
                                let kc = match who {
                                    None => 0,
                                    Some(i) => match (1..reaper.children.len()).rev().find(|&c| {
                                        let c = &reaper.children[c];
                                        c.client == Some(i) && !c.killed && c.events.is_some()
                                    }) {
                                        Some(kc) => kc,
                                        None => continue,
                                    },
                                };
                                let c = &mut reaper.children[kc];
                                let mut for_ms = 0;
                                match f.fault {
                                    Fault::Stop(_, Some(d)) => {
                                        let _ = kill(c.pid, Signal::SIGSTOP);
                                        conts.push((kc, Instant::now() + d));
                                        for_ms = d.as_millis() as u64;
                                    }
                                    Fault::Stop(_, None) => {
                                        let _ = kill(c.pid, Signal::SIGSTOP);
                                        held.push(kc);
                                    }
                                    Fault::Cont(_) => {
                                        let _ = kill(c.pid, Signal::SIGCONT);
                                        held.retain(|&h| h != kc);
                                        // How long it was stopped, on its stop's line.
                                        if let Some(e) = nemesis_log
                                            .iter_mut()
                                            .rev()
                                            .find(|e| e.action == Action::Stop && e.role == c.role)
                                        {
                                            e.for_ms = at_ms.saturating_sub(e.at_ms);
                                        }
                                    }
                                    _ => {
                                        signal_group(c.pid, Signal::SIGKILL);
                                        c.killed = true;
                                    }
                                }
                                let role = c.role.clone();
                                ms!(Milestone::Nemesis {
                                    role: role.clone(),
                                    action,
                                });
                                nemesis_log.push(NemesisEvent {
                                    action,
                                    role,
                                    at_ms,
                                    for_ms,
                                });
                                match f.fault {
                                    Fault::Kill(i) => {
                                        gone += 1;
                                        if !settled[i] {
                                            settled[i] = true;
                                            settled_count += 1;
                                        }
                                    }
                                    Fault::Restart(i) => {
                                        respawn!(i, p + 1);
                                        awaiting_ready += 1;
                                    }
                                    Fault::KillRelay => relay_killed = true,
                                    Fault::Stop(..) | Fault::Cont(_) => {}
                                }
                            }
                            if awaiting_ready > 0 || relay_killed {
                                release_after = (!relay_killed).then_some(p + 1);
                            } else {
                                quiet.new_phase(limits.tally.as_deref());
                                barrier_w[p + 1] = None;
                                ms!(Milestone::PhaseStarted(p + 1));
                            }
                        }
                    }
                    Event::Complete(i) => {
                        if i < n && !settled[i] {
                            settled[i] = true;
                            settled_count += 1;
                        }
                    }
                    Event::Done(r) => {
                        let i = r.index;
                        if i < n && !settled[i] {
                            settled[i] = true;
                            settled_count += 1;
                        }
                        if i < n {
                            ms!(Milestone::Reported {
                                role: role(limits, i),
                            });
                            if reports[i].is_none() {
                                reported += 1;
                            }
                            reports[i] = Some(*r);
                        }
                    }
                    Event::RelayDone(_) => {}
                    Event::Failed(why) => {
                        if ending.is_none() {
                            ending = Some(Ending::StartFailed(format!(
                                "{}: {why}",
                                reaper.children[k].role
                            )));
                            cstop_w = None;
                        }
                    }
                }
            }
            if eof {
                let c = &mut reaper.children[k];
                c.events = None;
                if c.client.is_some() {
                    clients_open -= 1;
                }
                c.status = Some(describe(waitpid(c.pid, None)));
                crate::janitor::reaped(c.pid.as_raw());
                let status = c.status.clone().unwrap_or_default();
                if ending.is_none() {
                    match c.client {
                        None if c.killed => {
                            ending = Some(Ending::RelayKilled(status));
                            cstop_w = None;
                        }
                        None => {
                            ending = Some(Ending::RelayDied(status));
                            cstop_w = None;
                        }
                        Some(i) if !c.killed && reports[i].is_none() => {
                            ending = Some(Ending::ClientDied(i, status));
                            cstop_w = None;
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if matches!(ending, Some(Ending::Interrupted(_))) {
            break;
        }
    }
    let ended_at = Instant::now();
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    if let Some((k, _)) = stopped {
        // Nobody stays stopped past the run: a stopped child cannot even die of SIGTERM.
        let _ = kill(reaper.children[k].pid, Signal::SIGCONT);
        if let Some(e) = nemesis_log
            .iter_mut()
            .rev()
            .find(|e| e.action == Action::Stop)
        {
            let end_ms = released_at.map_or(0, |t0| ended_at.duration_since(t0).as_millis() as u64);
            e.for_ms = end_ms.saturating_sub(e.at_ms);
        }
    }
    for k in conts.into_iter().map(|(k, _)| k).chain(held) {
        let _ = kill(reaper.children[k].pid, Signal::SIGCONT);
    }
    drop(drain_w);
    drop(cstop_w);
    drop(barrier_w);

    // Stop the relay by closing its stop pipe, then make sure everyone is gone.
    note!("closed the relay's stop pipe: its select() sees it readable, and it shuts down");
    drop(rstop_w);
    let interrupted = matches!(ending, Some(Ending::Interrupted(_)));
    stop_all(
        &mut reaper.children,
        limits.grace,
        interrupted || limits.foreign_relay,
    );
    if limits.foreign_relay {
        // Anything the relay command started and left behind in its group.
        let _ = kill(
            Pid::from_raw(-reaper.children[0].pid.as_raw()),
            Signal::SIGKILL,
        );
    }
    for c in &reaper.children {
        ms!(Milestone::Exited {
            role: c.role.clone(),
            status: c.status.clone().unwrap_or_default(),
        });
    }

    let timeline = tr.map(|mut t| {
        let cap = limits.trace.unwrap_or(0);
        let mut traces = vec![("supervisor".to_string(), t.take())];
        if let Some(r) = reaper.children[0]
            .relay
            .as_mut()
            .and_then(|r| r.trace.take())
        {
            traces.push(("relay".to_string(), r));
        }
        for (i, r) in reports.iter_mut().enumerate() {
            if let Some(tr) = r.as_mut().and_then(|r| r.trace.take()) {
                traces.push((role(limits, i), tr));
            }
        }
        crate::trace::merge(traces, cap)
    });
    Ok(Outcome {
        timeline,
        ending: ending.unwrap_or(Ending::Finished),
        reports,
        statuses: reaper
            .children
            .iter()
            .map(|c| (c.role.clone(), c.status.clone().unwrap_or_default()))
            .collect(),
        register,
        released_ns,
        released_at,
        ended_at,
        relay: reaper.children[0].relay.take(),
        supervisor_cpu: crate::record::Cpu::used(),
        supervisor_peak_rss_kib: peak_rss_kib(),
        nemesis: nemesis_log,
    })
}

/// Whether a process is running or waiting for a CPU (state R in /proc/PID/stat; D, a
/// disk wait, counts too). False when it cannot be read (it is gone).
fn is_runnable(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the name may hold spaces and parentheses; the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("R" | "D"))
}

/// The quiet rule's clock: what had arrived in all when last sampled, and since when.
struct Quiet {
    arrivals: u64,
    since: Instant,
    next_sample: Instant,
}

impl Quiet {
    /// A phase starts: every client has work again, and the clock starts over.
    fn new_phase(&mut self, tally: Option<&crate::blackbox::Tally>) {
        if let Some(t) = tally {
            t.clear_idle();
        }
        self.since = Instant::now();
    }
}

/// A milestone as a line of the trace.
fn milestone_text(m: &Milestone) -> String {
    match m {
        Milestone::Forked { role, pid } => format!("fork() -> {role} is pid {pid}"),
        Milestone::Registered { role } => {
            format!("{role} is registered (a line on its event pipe)")
        }
        Milestone::Released => {
            "closed barrier 0's write end: every client blocked in read() on it gets 0 at once"
                .into()
        }
        Milestone::PhaseStarted(p) => {
            format!("closed barrier {p}'s write end: phase {p} starts everywhere at once")
        }
        Milestone::Reported { role } => format!("{role} sent its records"),
        Milestone::Stopping(e) => format!("ending the run early: {e:?}"),
        Milestone::Nemesis { role, action } => format!("nemesis: {} {role}", action.name()),
        Milestone::Exited { role, status } => format!("waitpid(): {role} {status}"),
    }
}

/// Reads what a child's event pipe holds; returns the whole events and whether it hit EOF.
fn read_events(c: &mut Child) -> (Vec<Event>, bool) {
    let mut out = Vec::new();
    let mut eof = false;
    if let Some(fd) = &c.events {
        let mut f = std::fs::File::from(fd.try_clone().expect("dup of an event pipe"));
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match f.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => c.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock: all read for now
            }
        }
    }
    let mut from = 0;
    while let Some(n) = c.buf[from..].iter().position(|&b| b == b'\n') {
        match serde_json::from_slice::<Event>(&c.buf[from..from + n]) {
            Ok(Event::RelayDone(r)) => c.relay = Some(*r),
            Ok(e) => out.push(e),
            Err(_) => {}
        }
        from += n + 1;
    }
    c.buf.drain(..from);
    if c.buf.is_empty() && c.buf.capacity() > 64 * 1024 {
        // A report is the one large event: do not keep its buffer for the rest of the run.
        c.buf = Vec::new();
    }
    (out, eof)
}

/// Ends every child still running: wait `grace` for exits (the relay's stop pipe is already
/// closed), then SIGTERM, `grace` again, then SIGKILL; reaps all.
fn stop_all(children: &mut [Child], grace: Duration, no_waiting: bool) {
    let mut phases: Vec<Option<Signal>> = vec![None, Some(Signal::SIGTERM), Some(Signal::SIGKILL)];
    if no_waiting {
        phases.remove(0);
    }
    for sig in phases {
        if children.iter().all(|c| c.status.is_some()) {
            return;
        }
        if let Some(sig) = sig {
            for c in children.iter().filter(|c| c.status.is_none()) {
                signal_group(c.pid, sig);
                if sig == Signal::SIGTERM {
                    signal_group(c.pid, Signal::SIGCONT); // a stopped child must wake to die
                }
            }
        }
        if sig == Some(Signal::SIGKILL) {
            for c in children.iter_mut().filter(|c| c.status.is_none()) {
                c.status = Some(describe(waitpid(c.pid, None)));
                crate::janitor::reaped(c.pid.as_raw());
                c.events = None;
            }
            return;
        }
        wait_exits(children, grace);
    }
}

/// Waits up to `grace` for children to exit (their event pipes reach EOF), reaping them.
fn wait_exits(children: &mut [Child], grace: Duration) {
    let until = Instant::now() + grace;
    loop {
        for c in children.iter_mut().filter(|c| c.status.is_none()) {
            // A child whose pipe is gone has exited or is about to; reap when it has.
            if c.events.is_none() {
                if let Ok(st) = waitpid(c.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    if st != WaitStatus::StillAlive {
                        c.status = Some(describe(Ok(st)));
                        crate::janitor::reaped(c.pid.as_raw());
                    }
                }
            }
        }
        let open: Vec<usize> = (0..children.len())
            .filter(|&k| children[k].status.is_none() && children[k].events.is_some())
            .collect();
        let pending = children.iter().any(|c| c.status.is_none());
        let left = until.saturating_duration_since(Instant::now());
        if !pending || left.is_zero() {
            return;
        }
        if open.is_empty() {
            // Only pipe-less children remain: they are exiting; block on the first.
            if let Some(c) = children.iter_mut().find(|c| c.status.is_none()) {
                c.status = Some(describe(waitpid(c.pid, None)));
                crate::janitor::reaped(c.pid.as_raw());
            }
            continue;
        }
        let mut fds: Vec<PollFd> = open
            .iter()
            .filter_map(|&k| children[k].events.as_ref())
            .map(|e| PollFd::new(e.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        drop(fds);
        for k in open {
            let (_, eof) = read_events(&mut children[k]);
            if eof {
                let c = &mut children[k];
                c.events = None;
                c.status = Some(describe(waitpid(c.pid, None)));
                crate::janitor::reaped(c.pid.as_raw());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_is_runnable_and_a_sleeping_one_is_not() {
        // This thread is running while it reads its own state (/proc/TID/stat).
        assert!(is_runnable(nix::unistd::gettid()));
        // A child blocked reading a pipe nobody writes goes to sleep (bounded wait for it).
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let until = Instant::now() + Duration::from_secs(10);
        while is_runnable(pid) && Instant::now() < until {
            std::thread::yield_now();
        }
        assert!(!is_runnable(pid), "cat never blocked in read()");
        drop(child.stdin.take());
        child.wait().unwrap();
        // A reaped process cannot be read: not runnable.
        assert!(!is_runnable(pid));
    }
}
