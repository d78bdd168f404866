//! The client side of a harness run: what each forked client process does.
//!
//! Connect and register, report Ready, wait at the barrier, then send and receive at the same
//! time: queue up to [`BATCH`] bytes of SEND frames, write what the kernel takes, read and check
//! whatever arrived, and only when neither made progress, sleep in poll() on the socket and the
//! supervisor's stop pipe. Memory is flat in the message count: nothing per message is kept.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use relay_harness::payload;
use relay_harness::record::ClientReport;
use relay_harness::scenario::{client_name, mix, PayloadSize, Scenario};
use relay_harness::supervisor::{now_ns, ClientCtx};
use relay_harness::verify::Receiver;

use crate::client::{code_name, Client, Progress};
use crate::protocol::RelayFrame;
use crate::sys::Addr;

/// Bytes of SEND frames a client queues before it must write.
pub const BATCH: usize = 256 * 1024;

/// Runs client `ctx.index` of the scenario; returns its exit code (0 when it did all its work).
pub fn client_main(
    addr: &Addr,
    sc: &Scenario,
    expected_in: u64,
    chunks: Option<PayloadSize>,
    mut ctx: ClientCtx,
) -> i32 {
    let name = client_name(ctx.index);
    let mut client = match Client::connect(addr, &name) {
        Ok(c) => c,
        Err(e) => {
            let _ = ctx.failed(format!("{name} could not register at {addr}: {e}"));
            return 3;
        }
    };
    if ctx.ready_and_wait().is_err() {
        return 3;
    }
    let report = exchange(
        &mut client,
        sc,
        ctx.index,
        expected_in,
        chunks,
        ctx.stop.as_fd(),
    );
    let code = if report.complete { 0 } else { 1 };
    let _ = ctx.done(report);
    code
}

/// The exchange loop. Returns the client's records, complete or not.
pub fn exchange(
    client: &mut Client,
    sc: &Scenario,
    me: usize,
    expected_in: u64,
    chunks: Option<PayloadSize>,
    stop: BorrowedFd<'_>,
) -> ClientReport {
    let n = sc.clients;
    let names: Vec<String> = (0..n).map(client_name).collect();
    let mut rx = Receiver::new(*sc, me);
    let mut dests = sc.destinations(me);
    let mut seq_to = vec![0u64; n];
    let mut sent = 0u64;
    let mut scratch = Vec::new();
    let mut relay_error: Option<String> = None;
    let mut spins = 0u32;
    let mut chunk_rng = Pcg64Mcg::seed_from_u64(mix(sc.seed ^ 0xC4u64 ^ mix(me as u64)));
    let error = loop {
        // Queue a batch: many frames per write.
        while client.pending() < BATCH && sent < sc.msgs {
            let Some(d) = dests.next() else { break };
            payload::encode(sc, me, d, seq_to[d], now_ns(), &mut scratch);
            seq_to[d] += 1;
            rx.sent(d);
            sent += 1;
            client.queue(&names[d], &scratch);
        }
        let mut progress = false;
        if client.pending() > 0 {
            let before = client.pending();
            let written = match chunks {
                None => client.write_some(),
                Some(c) => {
                    client.write_at_most(chunk_rng.random_range(c.min.max(1)..=c.max.max(1)))
                }
            };
            if let Err(e) = written {
                break Some(format!("write to the relay failed: {e}"));
            }
            progress |= client.pending() != before;
        }
        let read = client.read_some(|f| match f {
            RelayFrame::Deliver { src, payload } => rx.deliver(src, payload, now_ns()),
            RelayFrame::Bounce { dst, payload } => rx.bounce(dst, payload),
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
        match read {
            Ok(Progress::Read(_)) => progress = true,
            Ok(Progress::WouldBlock) => {}
            Ok(Progress::Eof) => {
                break Some(
                    relay_error
                        .take()
                        .unwrap_or_else(|| "the relay closed the connection".into()),
                )
            }
            Err(e) => break Some(format!("reading from the relay failed: {e}")),
        }
        if let Some(e) = relay_error.take() {
            break Some(e);
        }
        if sent == sc.msgs && client.pending() == 0 && rx.received_total() >= expected_in {
            break None;
        }
        spins = spins.wrapping_add(1);
        // Sleep only when nothing moved; glance at the stop pipe now and then regardless.
        if !progress || spins.is_multiple_of(1024) {
            match wait(
                client,
                stop,
                if progress {
                    PollTimeout::ZERO
                } else {
                    PollTimeout::NONE
                },
            ) {
                Ok(false) => {}
                Ok(true) => break Some("stopped by the supervisor before it was done".into()),
                Err(e) => break Some(format!("poll failed: {e}")),
            }
        }
    };
    let complete = error.is_none();
    rx.finish(now_ns(), complete, error)
}

/// Waits for the socket (readable, or writable while output waits) or the stop pipe.
/// Returns true when the supervisor asked us to stop.
fn wait(client: &Client, stop: BorrowedFd<'_>, timeout: PollTimeout) -> nix::Result<bool> {
    let mut flags = PollFlags::POLLIN;
    if client.pending() > 0 {
        flags |= PollFlags::POLLOUT;
    }
    // SAFETY: the client owns this fd and outlives this call.
    let sock = unsafe { BorrowedFd::borrow_raw(client.fd()) };
    let mut fds = [
        PollFd::new(sock, flags),
        PollFd::new(stop, PollFlags::POLLIN),
    ];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e),
    }
    let _ = stop.as_raw_fd();
    Ok(fds[1].revents().is_some_and(|r| !r.is_empty()))
}
