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
use relay_harness::blackbox::Field;
use relay_harness::exit;
use relay_harness::payload;
use relay_harness::payload::{mix, PayloadSize};
use relay_harness::plan::{ClientPlan, Outbox, Work};
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
    let mut tr = ctx.trace.map(Tracer::new);
    if let Some(t) = tr.as_mut() {
        t.ev(|| {
            "started: kept its event pipe, the stop pipe and the barrier pipes; closed every other fd it inherited".into()
        });
    }
    let bb = ctx.blackbox.clone();
    let restarted = ctx.incarnation > 0;
    let mut outbox = Outbox::new(plan);
    if let (Some(bb), true) = (&bb, restarted) {
        // A restart carries on where the dead process stopped: past what it had queued (what it
        // queued but never wrote died with it). Its first message to each receiver carries the
        // restart flag, so the receiver takes the skip for a restart rather than a gap.
        let me = plan.me;
        let n = plan.names.clients();
        let done: u64 = (0..n).map(|r| bb.get(me, r, Field::Queued)).sum();
        for _ in 0..done {
            if outbox.skip().is_none() {
                break;
            }
        }
        outbox.mark_restart();
    }
    // A restarted process may register before the relay is done with its predecessor (it
    // keeps the name until it has routed everything the dead process sent, which can take
    // seconds behind slow receivers): it retries NAME_TAKEN, as a real client coming back
    // would, until the supervisor stops it (the run's deadline bounds that).
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
    let mut client = match connect(addr, &name, connect_wait, taken_wait, &stopped) {
        Ok(c) => c,
        Err(e) => {
            let _ = ctx.failed(format!("{name} could not register at {addr}: {e}"));
            return exit::ENV;
        }
    };
    if let Some(t) = tr.as_mut() {
        let fd = client.as_fd().as_raw_fd();
        t.ev(|| {
            format!(
                "socket() + connect({addr}) -> fd {fd}; sent HELLO {name:?}, got WELCOME {name:?}"
            )
        });
        t.ev(|| "wrote \"registered\" to its event pipe; blocks in read() on barrier 0".into());
    }
    if ctx.ready_and_wait().is_err() {
        return exit::ENV;
    }
    if let Some(t) = tr.as_mut() {
        t.ev(|| "barrier 0: read() returned 0 (its write end was closed): start".into());
    }
    let mut rx = match &bb {
        Some(bb) => Receiver::with_blackbox(plan.clone(), bb.clone(), restarted),
        None => Receiver::new(plan.clone()),
    };
    rx.start_clock(now_ns());
    // The same instant for every client, a restarted one too (the first past the barrier
    // sets it in the shared counters; runs with a duration always have them).
    let send_until = match (send_for, &bb) {
        (Some(d), Some(bb)) => {
            Some(bb.send_until(now_ns().saturating_add(d.as_nanos().min(u64::MAX as u128) as u64)))
        }
        _ => None,
    };
    let first_phase = ctx.start_phase.min(plan.phases());
    if first_phase > 0 {
        // A script's restarted process: what its predecessor sent and got in the phases
        // before this one is done (each phase ended only when all of it had arrived).
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
        if let Err(e) = ctx.wait_phase(first_phase) {
            let _ = ctx.failed(format!("{name} lost the supervisor after its restart: {e}"));
            return exit::ENV;
        }
    }
    let mut writer = Writer {
        chunks,
        rng: Pcg64Mcg::seed_from_u64(mix(plan.seed ^ 0xC4 ^ mix(plan.me as u64))),
    };
    let mut error = None;
    if let Work::PingPong {
        partner,
        rounds,
        initiator,
        size,
    } = plan.work
    {
        let spec = plan.spec(size);
        if let Err(e) = pingpong(
            &mut client,
            plan,
            &mut rx,
            partner,
            rounds,
            initiator,
            spec,
            ctx.stop.as_fd(),
            ctx.tally.as_deref(),
        ) {
            error = Some(e);
        }
        let complete = error.is_none();
        let done_at = now_ns();
        if complete {
            linger(&mut client, &mut rx, &mut ctx);
        }
        leave(&mut client, &mut rx, complete);
        let _ = ctx.done(rx.finish(done_at, complete, error));
        return if complete { 0 } else { 1 };
    }
    for p in first_phase..plan.phases() {
        if p > first_phase {
            if let Err(e) = ctx.phase_done_and_wait(p - 1) {
                error = Some(format!("lost the supervisor between phases: {e}"));
                break;
            }
            outbox.start_phase(p);
        }
        if let Err(e) = exchange(
            &mut client,
            plan,
            &mut outbox,
            &mut rx,
            p,
            &mut writer,
            ctx.stop.as_fd(),
            bb.is_some(),
            send_until,
            &mut tr,
            ctx.tally.as_deref(),
        ) {
            error = Some(e);
            break;
        }
    }
    let mut complete = error.is_none();
    let done_at = now_ns();
    if complete && bb.is_some() {
        if let Err(e) = drain(&mut client, plan, &mut rx, &mut ctx) {
            complete = false;
            error = Some(e);
        }
    } else if complete {
        linger(&mut client, &mut rx, &mut ctx);
    }
    leave(&mut client, &mut rx, complete);
    if let Some(t) = tr.as_mut() {
        t.ev(|| {
            "shutdown(SHUT_WR) after its last frame; read until the relay closed (so nothing it wrote is lost to a reset)".into()
        });
    }
    let mut report = rx.finish(done_at, complete, error);
    if let Some(t) = tr.as_mut() {
        let (sent, got) = (report.sent(), report.received());
        t.ev(|| {
            format!("sends its records up its event pipe (sent {sent}, received {got}) and exits")
        });
    }
    report.trace = tr.map(|mut t| t.take());
    let _ = ctx.done(report);
    if complete {
        exit::OK
    } else {
        exit::FAIL
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
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < until =>
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
    let mut check = |f: RelayFrame<'_>| match f {
        RelayFrame::Deliver { src, payload } => rx.deliver(src, payload, now_ns()),
        RelayFrame::Bounce { dst, payload } => rx.bounce(dst, payload),
        RelayFrame::Error { .. } | RelayFrame::Welcome(_) => {}
    };
    while let Ok(false) = wait(client, ctx.stop.as_fd(), PollTimeout::NONE) {
        if !matches!(
            client.read_some(&mut check),
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
/// live client and reads until one has come from each. FIFO per pair: when a sender's marker
/// arrives, everything it sent here before has arrived too.
fn drain(
    client: &mut Client,
    plan: &ClientPlan,
    rx: &mut Receiver,
    ctx: &mut ClientCtx,
) -> Result<(), String> {
    ctx.complete()
        .map_err(|e| format!("lost the supervisor: {e}"))?;
    let stopped = || "stopped by the supervisor before the drain".to_string();
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
            Err(e) => return Err(format!("poll failed: {e}")),
        }
        let ready = |k: usize| fds[k].revents().is_some_and(|r| !r.is_empty());
        let (drained, stop) = (ready(1), ready(2));
        match client.read_some(|f| check(rx, f)) {
            Ok(Progress::Read(_) | Progress::WouldBlock) => {}
            Ok(Progress::Eof) => return Err("the relay closed the connection".into()),
            Err(e) => return Err(format!("reading from the relay failed: {e}")),
        }
        if stop {
            return Err(stopped());
        }
        if drained {
            break;
        }
    }
    if let Some(bb) = &ctx.blackbox {
        let clients = plan.names.clients();
        for (r, name) in plan.names.all().iter().enumerate().take(clients) {
            if r != plan.me && bb.alive(r) {
                client.queue(name, relay_harness::verify::FIN);
            }
        }
    }
    loop {
        if client.pending() > 0 {
            client
                .write_some()
                .map_err(|e| format!("write to the relay failed: {e}"))?;
        }
        match client.read_some(|f| check(rx, f)) {
            Ok(Progress::Read(_) | Progress::WouldBlock) => {}
            Ok(Progress::Eof) => return Err("the relay closed the connection".into()),
            Err(e) => return Err(format!("reading from the relay failed: {e}")),
        }
        if client.pending() == 0 && rx.all_fins() {
            return Ok(());
        }
        match wait(client, ctx.stop.as_fd(), PollTimeout::NONE) {
            Ok(false) => {}
            Ok(true) => {
                return Err(format!(
                    "stopped before every end marker arrived (none from {})",
                    rx.missing_fins().join(", ")
                ))
            }
            Err(e) => return Err(format!("poll failed: {e}")),
        }
    }
}

/// Checks one frame that arrived after the client's own work.
fn check(rx: &mut Receiver, f: RelayFrame<'_>) {
    match f {
        RelayFrame::Deliver { src, payload } => rx.deliver(src, payload, now_ns()),
        RelayFrame::Bounce { dst, payload } => rx.bounce(dst, payload),
        RelayFrame::Error { .. } | RelayFrame::Welcome(_) => {}
    }
}

/// Ping-pong: one message in flight per pair. The initiator sends ping r and waits for pong r;
/// the responder waits for ping r and answers with pong r carrying the ping's send time, so the
/// initiator's latency is the round trip.
#[allow(clippy::too_many_arguments)]
fn pingpong(
    client: &mut Client,
    plan: &ClientPlan,
    rx: &mut Receiver,
    partner: usize,
    rounds: u64,
    initiator: bool,
    spec: relay_harness::payload::Spec,
    stop: BorrowedFd<'_>,
    tally: Option<&relay_harness::blackbox::Tally>,
) -> Result<(), String> {
    let to = plan.names.name(partner).to_string();
    let mut buf = Vec::new();
    let mut ping_sent_at = 0u64;
    for r in 0..rounds {
        if initiator {
            payload::encode(&spec, plan.me, partner, r, now_ns(), &mut buf);
            rx.sent(partner);
            client.queue(&to, &buf);
            if let Some(t) = tally {
                t.set_idle(plan.me, false);
            }
        }
        // Wait for message r from the partner, writing what is queued meanwhile.
        while rx.received_total() < r + 1 {
            if client.pending() > 0 {
                client
                    .write_some()
                    .map_err(|e| format!("write to the relay failed: {e}"))?;
            }
            if let Some(t) = tally {
                // Written out, it waits for its partner: only an arrival changes anything.
                t.arrived(plan.me, rx.arrivals());
                t.set_idle(plan.me, client.pending() == 0);
            }
            match wait(client, stop, PollTimeout::NONE) {
                Ok(false) => {}
                Ok(true) => return Err("stopped by the supervisor before it was done".into()),
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            let mut relay_error = None;
            let read = client.read_some(|f| match f {
                RelayFrame::Deliver { src, payload } => {
                    ping_sent_at = payload::send_ns(payload).unwrap_or(0);
                    rx.deliver(src, payload, now_ns());
                }
                RelayFrame::Bounce { dst, payload } => rx.bounce(dst, payload),
                RelayFrame::Error { code, text } => {
                    relay_error = Some(format!(
                        "the relay sent ERROR {}: {}",
                        code_name(code),
                        String::from_utf8_lossy(text)
                    ));
                }
                RelayFrame::Welcome(_) => {
                    relay_error = Some("the relay sent a second WELCOME".into())
                }
            });
            match read {
                Ok(Progress::Eof) => return Err("the relay closed the connection".into()),
                Err(e) => return Err(format!("reading from the relay failed: {e}")),
                Ok(_) => {}
            }
            if let Some(e) = relay_error {
                return Err(e);
            }
        }
        if !initiator {
            payload::encode(&spec, plan.me, partner, r, ping_sent_at, &mut buf);
            rx.sent(partner);
            client.queue(&to, &buf);
            if let Some(t) = tally {
                t.set_idle(plan.me, false); // until the pong is written
            }
        }
    }
    client
        .flush(Some(Duration::from_secs(10)))
        .map_err(|e| format!("flushing the last pong: {e}"))
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

/// One phase: send this phase's messages and receive everything the phase owes this client.
#[allow(clippy::too_many_arguments)]
fn exchange(
    client: &mut Client,
    plan: &ClientPlan,
    outbox: &mut Outbox<'_>,
    rx: &mut Receiver,
    phase: usize,
    writer: &mut Writer,
    stop: BorrowedFd<'_>,
    deaths: bool,
    send_until: Option<u64>,
    tr: &mut Option<Tracer>,
    tally: Option<&relay_harness::blackbox::Tally>,
) -> Result<(), String> {
    let names = plan.names.all();
    let mut scratch = Vec::new();
    let mut relay_error: Option<String> = None;
    let mut spins = 0u32;
    let mut sending = true;
    let mut idle = false;
    loop {
        // Queue a batch: many frames per write.
        while sending && client.pending() < BATCH {
            let now = now_ns();
            if send_until.is_some_and(|t| now >= t) {
                sending = false; // --duration: the time is up
                break;
            }
            let Some(d) = outbox.next(now, &mut scratch) else {
                sending = false;
                break;
            };
            rx.sent(d);
            rx.note(now, || format!("sent {} to {}", show(&scratch), names[d]));
            if let Some(t) = tr.as_mut() {
                t.ev(|| {
                    format!(
                        "SEND to {} {}: into its write buffer",
                        names[d],
                        show(&scratch)
                    )
                });
            }
            client.queue(&names[d], &scratch);
        }
        let mut progress = false;
        if client.pending() > 0 {
            let before = client.pending();
            writer
                .write(client)
                .map_err(|e| format!("write to the relay failed: {e}"))?;
            progress |= client.pending() != before;
            if let Some(t) = tr.as_mut() {
                let (n, left) = (before - client.pending(), client.pending());
                t.ev(|| format!("write() -> {n} bytes to the relay ({left} still buffered)"));
            }
        }
        // Every frame of one read() arrived at the same moment: one clock reading serves them all.
        let mut read_at = None;
        let read = client.read_some(|f| match f {
            RelayFrame::Deliver { src, payload } => {
                let now = *read_at.get_or_insert_with(now_ns);
                rx.note(now, || {
                    format!(
                        "got {} from {}",
                        show(payload),
                        String::from_utf8_lossy(src)
                    )
                });
                if let Some(t) = tr.as_mut() {
                    t.ev(|| {
                        format!(
                            "DELIVER from {} {}: checked",
                            String::from_utf8_lossy(src),
                            show(payload)
                        )
                    });
                }
                rx.deliver(src, payload, now);
            }
            RelayFrame::Bounce { dst, payload } => {
                rx.note(now_ns(), || {
                    format!(
                        "got back {}: no client named {}",
                        show(payload),
                        String::from_utf8_lossy(dst)
                    )
                });
                rx.bounce(dst, payload);
            }
            RelayFrame::Error { code, text } => {
                relay_error = Some(format!(
                    "the relay sent ERROR {}: {}",
                    code_name(code),
                    String::from_utf8_lossy(text)
                ));
            }
            RelayFrame::Welcome(_) => {
                relay_error = Some("the relay sent a second WELCOME".into());
            }
        });
        if let (Some(t), Ok(Progress::Read(_))) = (tally, &read) {
            t.set(plan.me, rx.received_total());
            t.arrived(plan.me, rx.arrivals());
        }
        match read {
            Ok(Progress::Read(_)) => progress = true,
            Ok(Progress::WouldBlock) => {}
            Ok(Progress::Eof) => {
                return Err(relay_error
                    .take()
                    .unwrap_or_else(|| "the relay closed the connection".into()))
            }
            Err(e) => return Err(format!("reading from the relay failed: {e}")),
        }
        if let Some(e) = relay_error.take() {
            return Err(e);
        }
        if !sending && client.pending() == 0 {
            if let (Some(t), false) = (tally, idle) {
                // All written: from now on only arrivals can change anything (the quiet rule).
                idle = true;
                t.set_idle(plan.me, true);
            }
            // With deaths, nobody can know what will still arrive: the drain settles that.
            if deaths || rx.phase_complete(phase) {
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
            match wait(client, stop, timeout) {
                Ok(false) => {}
                Ok(true) => return Err("stopped by the supervisor before it was done".into()),
                Err(e) => return Err(format!("poll failed: {e}")),
            }
        }
    }
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
