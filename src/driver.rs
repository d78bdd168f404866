//! The client side of a harness run: what each forked client process does.
//!
//! Connect and register, report Ready, wait at the barrier, then for each phase send and
//! receive at the same time: queue up to [`BATCH`] bytes of SEND frames, write what the kernel
//! takes, read and check whatever arrived, and only when neither made progress, sleep in poll()
//! on the socket and the supervisor's stop pipe. Memory is flat in the message count: nothing
//! per message is kept.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use relay_harness::blackbox::{Field, Tally};
use relay_harness::exit;
use relay_harness::payload;
use relay_harness::payload::{mix, PayloadSize};
use relay_harness::plan::{ClientPlan, Outbox};
use relay_harness::supervisor::ClientCtx;
use relay_harness::verify::Receiver;
use relay_trace::now_ns;
use relay_trace::Tracer;

use std::time::Duration;

use crate::client::{code_name, Client, ClientError, Progress};
use crate::protocol::RelayFrame;
use crate::sys::Addr;

/// Bytes of SEND frames a client queues before it must write. Small enough that a client writes
/// (and reads) often while the relay works on what it wrote: 32 KiB beat 256 KiB by 5-8% in
/// throughput (8x10k, 8x100k, 64x1k, interleaved runs); 8 KiB was worse again.
pub const BATCH: usize = 32 * 1024;

/// Why a client could not finish its work; the text goes into its report.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Its event pipe to the supervisor failed.
    #[error("lost the supervisor: {0}")]
    LostSupervisor(std::io::Error),
    /// Between two phases of a script.
    #[error("lost the supervisor between phases: {0}")]
    LostBetweenPhases(std::io::Error),
    /// The supervisor closed the stop pipe first (the deadline, a signal, another's failure).
    #[error("stopped by the supervisor before it was done")]
    Stopped,
    /// Runs with deaths: stopped while it waited for the drain to start.
    #[error("stopped by the supervisor before the drain")]
    StoppedBeforeDrain,
    /// Runs with deaths: stopped before every live sender's end marker arrived.
    #[error("stopped before every end marker arrived (none from {0})")]
    MissingEndMarkers(String),
    /// The relay sent ERROR, or a second WELCOME.
    #[error("{0}")]
    Relay(String),
    /// The relay closed the connection.
    #[error("the relay closed the connection")]
    RelayClosed,
    /// A read from the relay failed.
    #[error("reading from the relay failed: {0}")]
    Read(ClientError),
    /// A write to the relay failed.
    #[error("write to the relay failed: {0}")]
    Write(std::io::Error),
    /// Ping-pong: the last pong could not be written.
    #[error("flushing the last pong: {0}")]
    LastPong(ClientError),
    /// poll(2) failed.
    #[error("poll failed: {0}")]
    Poll(nix::Error),
}

/// Runs the client of `plan`; returns its exit code (0 when it did all its work). With
/// `send_for` (`--duration`), it sends until that long after the start barrier, not a count.
pub fn client_main(
    addr: &Addr,
    plan: &ClientPlan,
    chunks: Option<PayloadSize>,
    connect_wait: Duration,
    send_for: Option<Duration>,
    mut ctx: ClientCtx,
) -> i32 {
    let name = plan.names.name(plan.me).to_string();
    let mut tracer = ctx.trace.map(Tracer::new);
    note(&mut tracer, || {
        "started: kept the stop pipe and the barrier pipes, closed every other fd it inherited; made its event pipe and sent the read end to the supervisor (sendmsg, SCM_RIGHTS)".into()
    });
    let blackbox = ctx.blackbox.clone();
    let restarted = ctx.incarnation > 0;
    let mut outbox = Outbox::new(plan);
    if let (Some(blackbox), true) = (&blackbox, restarted) {
        resume(&mut outbox, plan, blackbox);
    }
    let Some(mut client) = register(addr, &name, connect_wait, &mut ctx, &mut tracer) else {
        return exit::ENV;
    };
    let mut rx = match &blackbox {
        Some(blackbox) => Receiver::with_blackbox(plan.clone(), blackbox.clone(), restarted),
        None => Receiver::new(plan.clone()),
    };
    rx.start_clock(now_ns());
    // The same instant for every client, a restarted one too (the first past the barrier
    // sets it in the shared counters; runs with a duration always have them).
    let send_until = match (send_for, &blackbox) {
        (Some(d), Some(blackbox)) => Some(
            blackbox.send_until(now_ns().saturating_add(d.as_nanos().min(u64::MAX as u128) as u64)),
        ),
        _ => None,
    };
    let first_phase = ctx.start_phase.min(plan.phases());
    if first_phase > 0 {
        skip_done_phases(plan, &mut outbox, &mut rx, first_phase);
        if let Err(e) = ctx.wait_phase(first_phase) {
            let _ = ctx.failed(format!("{name} lost the supervisor after its restart: {e}"));
            return exit::ENV;
        }
    }
    let mut run = Run {
        client: &mut client,
        plan,
        rx: &mut rx,
        tally: ctx.tally.clone(),
        tracer: &mut tracer,
    };
    let mut result = match plan.work {
        relay_harness::plan::Work::PingPong {
            partner,
            rounds,
            initiator,
            size,
        } => run.pingpong(
            ctx.stop.as_fd(),
            partner,
            rounds,
            initiator,
            plan.spec(size),
        ),
        _ => {
            let mut writer = Writer {
                chunks,
                rng: Pcg64Mcg::seed_from_u64(mix(plan.seed ^ 0xC4 ^ mix(plan.me as u64))),
            };
            run.phases(
                &mut ctx,
                &mut outbox,
                first_phase,
                &mut writer,
                blackbox.is_some(),
                send_until,
            )
        }
    };
    let done_at = now_ns();
    if result.is_ok() && blackbox.is_some() {
        result = drain(&mut client, plan, &mut rx, &mut ctx);
    } else if result.is_ok() {
        linger(&mut client, &mut rx, &mut ctx);
    }
    let complete = result.is_ok();
    leave(&mut client, &mut rx, complete);
    note(&mut tracer, || {
        "shutdown(SHUT_WR) after its last frame; read until the relay closed (so nothing it wrote is lost to a reset)".into()
    });
    let mut report = rx.finish(done_at, complete, result.err().map(|e| e.to_string()));
    let (sent, got) = (report.sent(), report.received());
    note(&mut tracer, || {
        format!("sends its records up its event pipe (sent {sent}, received {got}) and exits")
    });
    report.trace = tracer.map(|mut t| t.take());
    let _ = ctx.done(report);
    if complete {
        exit::OK
    } else {
        exit::FAIL
    }
}

/// A line of this process's trace, when it is traced.
fn note(tracer: &mut Option<Tracer>, what: impl FnOnce() -> String) {
    if let Some(t) = tracer.as_mut() {
        t.ev(what);
    }
}

/// A restart carries on where the dead process stopped: past what it had queued (what it
/// queued but never wrote died with it). Its first message to each receiver carries the
/// restart flag, so the receiver takes the skip for a restart rather than a gap.
fn resume(
    outbox: &mut Outbox<'_>,
    plan: &ClientPlan,
    blackbox: &relay_harness::blackbox::BlackBox,
) {
    let me = plan.me;
    let done: u64 = blackbox
        .receivers_of(me)
        .map(|r| blackbox.get(me, r, Field::Queued))
        .sum();
    for _ in 0..done {
        if outbox.skip().is_none() {
            break;
        }
    }
    outbox.mark_restart();
}

/// Connects, registers, says so to the supervisor and waits at the start barrier. None when
/// it could not (the supervisor has been told why, if it can still be told).
fn register(
    addr: &Addr,
    name: &str,
    connect_wait: Duration,
    ctx: &mut ClientCtx,
    tracer: &mut Option<Tracer>,
) -> Option<Client> {
    // A restarted process may register before the relay is done with its predecessor (it
    // keeps the name until it has routed everything the dead process sent, which can take
    // seconds behind slow receivers): it retries NAME_TAKEN, as a real client coming back
    // would, until the supervisor stops it (the run's deadline bounds that). Likewise a host
    // unreachable just after a partition heals (its neighbour entry failed while cut off).
    let taken_wait = if ctx.incarnation > 0 {
        Duration::MAX
    } else {
        Duration::ZERO
    };
    let stop = ctx.stop.as_fd();
    let stopped = || {
        let mut fds = [PollFd::new(stop, PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    };
    let client = match connect(addr, name, connect_wait, taken_wait, &stopped) {
        Ok(c) => c,
        Err(e) => {
            let _ = ctx.failed(format!("{name} could not register at {addr}: {e}"));
            return None;
        }
    };
    let fd = client.as_fd().as_raw_fd();
    note(tracer, || {
        format!("socket() + connect({addr}) -> fd {fd}; sent HELLO {name:?}, got WELCOME {name:?}")
    });
    note(tracer, || {
        "wrote \"registered\" to its event pipe; blocks in read() on barrier 0".into()
    });
    ctx.ready_and_wait().ok()?;
    note(tracer, || {
        "barrier 0: read() returned 0 (its write end was closed): start".into()
    });
    Some(client)
}

/// A script's restarted process: what its predecessor sent and got in the phases before
/// `first_phase` is done (each phase ended only when all of it had arrived).
fn skip_done_phases(
    plan: &ClientPlan,
    outbox: &mut Outbox<'_>,
    rx: &mut Receiver,
    first_phase: usize,
) {
    let clients = plan.names.clients();
    for q in 0..first_phase {
        outbox.start_phase(q);
        while let Some(d) = outbox.skip() {
            rx.sent(d);
            if d >= clients {
                rx.bounced_earlier(d);
            }
        }
    }
    rx.skip_to_phase(first_phase);
    outbox.start_phase(first_phase);
}

/// One frame from the relay: a DELIVER or BOUNCE goes to the checks (a DELIVER as arrived at
/// `at_ns`); an ERROR or a second WELCOME is the relay's fault, returned.
fn take_frame(rx: &mut Receiver, f: RelayFrame<'_>, at_ns: u64) -> Option<DriverError> {
    match f {
        RelayFrame::Deliver { src, payload } => rx.deliver(src, payload, at_ns),
        RelayFrame::Bounce { dst, payload } => rx.bounce(dst, payload),
        RelayFrame::Error { code, text } => {
            return Some(DriverError::Relay(format!(
                "the relay sent ERROR {}: {}",
                code_name(code),
                String::from_utf8_lossy(text)
            )))
        }
        RelayFrame::Welcome(_) => {
            return Some(DriverError::Relay("the relay sent a second WELCOME".into()))
        }
    }
    None
}

/// What a read from the relay means for the run: whether it read anything, or why the run
/// cannot go on (the relay's own complaint first, if it made one before it closed).
fn after_read(
    read: Result<Progress, ClientError>,
    relay_error: &mut Option<DriverError>,
) -> Result<bool, DriverError> {
    let progress = match read {
        Ok(Progress::Read(_)) => true,
        Ok(Progress::WouldBlock) => false,
        Ok(Progress::Eof) => return Err(relay_error.take().unwrap_or(DriverError::RelayClosed)),
        Err(e) => return Err(DriverError::Read(e)),
    };
    match relay_error.take() {
        Some(e) => Err(e),
        None => Ok(progress),
    }
}

/// Connects and registers, retrying for up to `wait` while nobody listens yet (a foreign
/// relay starts listening when it is ready, and cannot say when; our own listens before any
/// client exists, and gets no retries).
fn connect(
    addr: &Addr,
    name: &str,
    wait: Duration,
    taken_wait: Duration,
    stopped: &dyn Fn() -> bool,
) -> Result<Client, ClientError> {
    let until = std::time::Instant::now() + wait;
    let taken_until = std::time::Instant::now().checked_add(taken_wait);
    loop {
        match Client::connect(addr, name) {
            Err(ClientError::Refused { code, .. })
                if code == crate::protocol::ErrorCode::NameTaken as u16
                    && taken_until.is_none_or(|t| std::time::Instant::now() < t)
                    && !stopped() =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(ClientError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                        | std::io::ErrorKind::TimedOut
                ) && taken_until.is_none_or(|t| std::time::Instant::now() < t)
                    && !stopped() =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(ClientError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < until
                    && !stopped() =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(ClientError::Io(e)) if wait > Duration::ZERO => {
                return Err(ClientError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (nothing listened there within {wait:?})"),
                )))
            }
            other => return other,
        }
    }
}

/// Done with its own work, a client keeps reading until every client is done (the supervisor
/// then closes the stop pipe): anything that still arrives is checked, so a misrouted or
/// duplicated message sent to a client that had finished is caught, not silently lost.
fn linger(client: &mut Client, rx: &mut Receiver, ctx: &mut ClientCtx) {
    if ctx.complete().is_err() {
        return;
    }
    while let Ok(false) = wait(client, ctx.stop.as_fd(), PollTimeout::NONE) {
        if !matches!(
            client.read_some(|f| check(rx, f)),
            Ok(Progress::Read(_) | Progress::WouldBlock)
        ) {
            return;
        }
    }
}

/// How long a client that has shut down its sending side waits for the relay to close. Ours
/// closes as soon as it has routed what the client sent; a relay that never closes a
/// half-closed connection costs this once per run.
const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// The leaving rule, on every path out of a client that still has its connection (see
/// `Client::leave`): nothing it wrote is lost to a TCP reset, and what still arrives is checked.
/// A failed run waits less: the supervisor is waiting for its report.
fn leave(client: &mut Client, rx: &mut Receiver, complete: bool) {
    let within = if complete { LEAVE_WAIT } else { LEAVE_WAIT / 4 };
    let _ = client.leave(Some(within), |f| check(rx, f));
}

/// Runs with deaths: done with its work, a client keeps reading until every client is done
/// and no process will die any more (the drain starts), then sends an end marker to every
/// live client it sent to and reads until one has come from each live client that sent to it.
/// FIFO per pair: when a sender's marker arrives, everything it sent here before has arrived too.
fn drain(
    client: &mut Client,
    plan: &ClientPlan,
    rx: &mut Receiver,
    ctx: &mut ClientCtx,
) -> Result<(), DriverError> {
    ctx.complete().map_err(DriverError::LostSupervisor)?;
    loop {
        let Some(drain_fd) = ctx.drain_fd() else {
            return Ok(());
        };
        let mut fds = [
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
            PollFd::new(drain_fd, PollFlags::POLLIN),
            PollFd::new(ctx.stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(DriverError::Poll(e)),
        }
        let ready = |k: usize| fds[k].revents().is_some_and(|r| !r.is_empty());
        let (drained, stop) = (ready(1), ready(2));
        after_read(client.read_some(|f| check(rx, f)), &mut None)?;
        if stop {
            return Err(DriverError::StoppedBeforeDrain);
        }
        if drained {
            break;
        }
    }
    rx.await_fins();
    if let Some(blackbox) = &ctx.blackbox {
        // Only to the live clients it sent to (they wait for it): linear in the traffic.
        let mut to: Vec<usize> = blackbox
            .receivers_of(plan.me)
            .filter(|&r| {
                r != plan.me && blackbox.alive(r) && blackbox.get(plan.me, r, Field::Queued) > 0
            })
            .collect();
        to.sort_unstable();
        for r in to {
            client.queue(plan.names.name(r), relay_harness::verify::FIN);
        }
    }
    loop {
        if client.pending() > 0 {
            client.write_some().map_err(DriverError::Write)?;
        }
        after_read(client.read_some(|f| check(rx, f)), &mut None)?;
        if client.pending() == 0 && rx.all_fins() {
            return Ok(());
        }
        match wait(client, ctx.stop.as_fd(), PollTimeout::NONE) {
            Ok(false) => {}
            Ok(true) => return Err(DriverError::MissingEndMarkers(rx.missing_fins().join(", "))),
            Err(e) => return Err(DriverError::Poll(e)),
        }
    }
}

/// Checks one frame that arrived after the client's own work (what the relay may still say
/// wrong then changes nothing: the work is done).
fn check(rx: &mut Receiver, f: RelayFrame<'_>) {
    let _ = take_frame(rx, f, now_ns());
}

/// How writes are cut: all the kernel takes, or seeded random chunks (`--write-chunks`).
struct Writer {
    chunks: Option<PayloadSize>,
    rng: Pcg64Mcg,
}

impl Writer {
    fn write(&mut self, client: &mut Client) -> std::io::Result<()> {
        match self.chunks {
            None => client.write_some(),
            Some(c) => client.write_at_most(self.rng.random_range(c.min.max(1)..=c.max.max(1))),
        }
    }
}

/// A client at work: its connection, its checks and what it reports on the way.
struct Run<'a> {
    client: &'a mut Client,
    plan: &'a ClientPlan,
    rx: &'a mut Receiver,
    /// Where it counts what arrived and says when it has nothing left to write.
    tally: Option<std::sync::Arc<Tally>>,
    tracer: &'a mut Option<Tracer>,
}

impl Run<'_> {
    /// Every phase from `first` on: at each boundary it tells the supervisor and waits for the
    /// next phase's barrier.
    fn phases(
        &mut self,
        ctx: &mut ClientCtx,
        outbox: &mut Outbox<'_>,
        first: usize,
        writer: &mut Writer,
        deaths: bool,
        send_until: Option<u64>,
    ) -> Result<(), DriverError> {
        for p in first..self.plan.phases() {
            if p > first {
                ctx.phase_done_and_wait(p - 1)
                    .map_err(DriverError::LostBetweenPhases)?;
                outbox.start_phase(p);
            }
            let work = Work {
                outbox: &mut *outbox,
                phase: p,
                deaths,
                send_until,
                scratch: Vec::new(),
            };
            self.exchange(work, writer, ctx.stop.as_fd())?;
        }
        Ok(())
    }

    /// Ping-pong: one message in flight per pair. The initiator sends ping r and waits for
    /// pong r; the responder waits for ping r and answers with pong r carrying the ping's send
    /// time, so the initiator's latency is the round trip.
    fn pingpong(
        &mut self,
        stop: BorrowedFd<'_>,
        partner: usize,
        rounds: u64,
        initiator: bool,
        spec: relay_harness::payload::Spec,
    ) -> Result<(), DriverError> {
        let me = self.plan.me;
        let to = self.plan.names.name(partner).to_string();
        let mut buf = Vec::new();
        let mut ping_sent_at = 0u64;
        for r in 0..rounds {
            if initiator {
                payload::encode(&spec, me, partner, r, now_ns(), &mut buf);
                self.rx.sent(partner);
                self.client.queue(&to, &buf);
                if let Some(t) = &self.tally {
                    t.set_idle(me, false);
                }
            }
            // Wait for message r from the partner, writing what is queued meanwhile.
            while self.rx.received_total() < r + 1 {
                if self.client.pending() > 0 {
                    self.client.write_some().map_err(DriverError::Write)?;
                }
                if let Some(t) = &self.tally {
                    // Written out, it waits for its partner: only an arrival changes anything.
                    t.arrived(me, self.rx.arrivals());
                    t.set_idle(me, self.client.pending() == 0);
                }
                if wait(self.client, stop, PollTimeout::NONE).map_err(DriverError::Poll)? {
                    return Err(DriverError::Stopped);
                }
                let mut relay_error = None;
                let rx = &mut *self.rx;
                let read = self.client.read_some(|f| {
                    if let RelayFrame::Deliver { payload, .. } = &f {
                        ping_sent_at = payload::send_ns(payload).unwrap_or(0);
                    }
                    if let Some(e) = take_frame(rx, f, now_ns()) {
                        relay_error = Some(e); // the last one, as before
                    }
                });
                after_read(read, &mut relay_error)?;
            }
            if !initiator {
                payload::encode(&spec, me, partner, r, ping_sent_at, &mut buf);
                self.rx.sent(partner);
                self.client.queue(&to, &buf);
                if let Some(t) = &self.tally {
                    t.set_idle(me, false); // until the pong is written
                }
            }
        }
        self.client
            .flush(Some(Duration::from_secs(10)))
            .map_err(DriverError::LastPong)
    }

    /// One phase: send this phase's messages and receive everything the phase owes this
    /// client, at the same time.
    fn exchange(
        &mut self,
        mut work: Work<'_, '_>,
        writer: &mut Writer,
        stop: BorrowedFd<'_>,
    ) -> Result<(), DriverError> {
        let mut spins = 0u32;
        let mut sending = true;
        let mut idle = false;
        loop {
            if sending {
                sending = self.queue_batch(&mut work);
            }
            let mut progress = self.write(writer)?;
            progress |= self.read()?;
            if !sending && self.client.pending() == 0 {
                if let (Some(t), false) = (&self.tally, idle) {
                    // All written: from now on only arrivals can change anything (the quiet rule).
                    idle = true;
                    t.set_idle(self.plan.me, true);
                }
                // With deaths, nobody can know what will still arrive: the drain settles that.
                if work.deaths || self.rx.phase_complete(work.phase) {
                    return Ok(());
                }
            }
            spins = spins.wrapping_add(1);
            // Sleep only when nothing moved; glance at the stop pipe now and then regardless.
            if !progress || spins.is_multiple_of(1024) {
                let timeout = if progress {
                    PollTimeout::ZERO
                } else {
                    PollTimeout::NONE
                };
                if wait(self.client, stop, timeout).map_err(DriverError::Poll)? {
                    return Err(DriverError::Stopped);
                }
            }
        }
    }

    /// Queues a batch of SEND frames (many frames per write). Returns false once there is
    /// nothing more to send (the phase's messages are all queued, or `--duration` is up).
    fn queue_batch(&mut self, work: &mut Work<'_, '_>) -> bool {
        let names = self.plan.names.all();
        let scratch = &mut work.scratch;
        while self.client.pending() < BATCH {
            let now = now_ns();
            if work.send_until.is_some_and(|t| now >= t) {
                return false; // --duration: the time is up
            }
            let Some(d) = work.outbox.next(now, scratch) else {
                return false;
            };
            self.rx.sent(d);
            self.rx
                .note(now, || format!("sent {} to {}", show(scratch), names[d]));
            note(self.tracer, || {
                format!(
                    "SEND to {} {}: into its write buffer",
                    names[d],
                    show(scratch)
                )
            });
            self.client.queue(&names[d], scratch);
        }
        true
    }

    /// Writes what the kernel takes of the queued frames. Returns whether it wrote anything.
    fn write(&mut self, writer: &mut Writer) -> Result<bool, DriverError> {
        if self.client.pending() == 0 {
            return Ok(false);
        }
        let before = self.client.pending();
        writer.write(self.client).map_err(DriverError::Write)?;
        let left = self.client.pending();
        let n = before - left;
        note(self.tracer, || {
            format!("write() -> {n} bytes to the relay ({left} still buffered)")
        });
        Ok(left != before)
    }

    /// Reads one chunk and checks every whole frame in it. Returns whether it read anything.
    fn read(&mut self) -> Result<bool, DriverError> {
        let (rx, tracer) = (&mut *self.rx, &mut *self.tracer);
        let mut relay_error = None;
        // Every frame of one read() arrived at the same moment: one clock reading serves them all.
        let mut read_at = None;
        let read = self.client.read_some(|f| {
            let at = *read_at.get_or_insert_with(now_ns);
            match &f {
                RelayFrame::Deliver { src, payload } => {
                    let src = String::from_utf8_lossy(src);
                    rx.note(at, || format!("got {} from {src}", show(payload)));
                    note(tracer, || {
                        format!("DELIVER from {src} {}: checked", show(payload))
                    });
                }
                RelayFrame::Bounce { dst, payload } => {
                    let dst = String::from_utf8_lossy(dst);
                    rx.note(now_ns(), || {
                        format!("got back {}: no client named {dst}", show(payload))
                    });
                }
                RelayFrame::Error { .. } | RelayFrame::Welcome(_) => {}
            }
            if let Some(e) = take_frame(rx, f, at) {
                relay_error = Some(e); // the last one, as before
            }
        });
        if let (Some(t), Ok(Progress::Read(_))) = (&self.tally, &read) {
            t.set(self.plan.me, self.rx.received_total());
            t.arrived(self.plan.me, self.rx.arrivals());
        }
        after_read(read, &mut relay_error)
    }
}

/// What one phase of a client's work is.
struct Work<'o, 'p> {
    outbox: &'o mut Outbox<'p>,
    phase: usize,
    /// Runs with deaths: the phase ends when everything is written (the drain does the rest).
    deaths: bool,
    /// `--duration`: when to stop sending (CLOCK_MONOTONIC ns).
    send_until: Option<u64>,
    /// The payload being made (one buffer for the whole phase).
    scratch: Vec<u8>,
}

/// A payload for a transcript line: text when it is text, its size when it is not.
fn show(p: &[u8]) -> String {
    match std::str::from_utf8(p) {
        Ok(t) if p.len() <= 40 && !t.chars().any(char::is_control) => format!("{t:?}"),
        _ => format!("{} bytes", p.len()),
    }
}

/// Waits for the socket (readable, or writable while output waits) or the stop pipe.
/// Returns true when the supervisor asked us to stop.
fn wait(client: &Client, stop: BorrowedFd<'_>, timeout: PollTimeout) -> nix::Result<bool> {
    let mut flags = PollFlags::POLLIN;
    if client.pending() > 0 {
        flags |= PollFlags::POLLOUT;
    }
    let mut fds = [
        PollFd::new(client.as_fd(), flags),
        PollFd::new(stop, PollFlags::POLLIN),
    ];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e),
    }
    Ok(fds[1].revents().is_some_and(|r| !r.is_empty()))
}
