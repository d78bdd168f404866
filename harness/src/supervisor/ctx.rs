//! What each child process gets from the supervisor: its ends of the run's pipes, and the
//! calls that tell the supervisor how it is doing.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::blackbox::BlackBox;
use crate::record::{ChildEvent, ClientReport, RelayReport};

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

pub(super) fn send_event(fd: &OwnedFd, e: &ChildEvent) -> io::Result<()> {
    let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
    line.push(b'\n');
    std::fs::File::from(fd.try_clone()?).write_all(&line)
}

/// What the relay process gets.
pub struct RelayCtx {
    /// Becomes readable (end of file) when the supervisor wants the relay to stop.
    pub stop: OwnedFd,
    pub(super) events: OwnedFd,
}

impl RelayCtx {
    /// Lets the event pipe survive an exec, so the supervisor sees the relay's exit (end of
    /// file) even when the relay is another program.
    pub fn keep_events_across_exec(&self) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        fcntl(&self.events, FcntlArg::F_SETFD(FdFlag::empty())).map_err(io::Error::from)?;
        Ok(())
    }

    /// Tells the supervisor the relay stopped, with its peak memory and what it counted
    /// (`peer_timeouts`, `injected`, `held_back_ms`: see [`RelayReport`]).
    pub fn done(
        &mut self,
        (injected, held_back_ms, peer_timeouts): (u64, u64, u64),
        trace: Option<crate::trace::Trace>,
    ) -> io::Result<()> {
        send_event(
            &self.events,
            &ChildEvent::RelayDone(Box::new(RelayReport {
                peak_rss_kib: peak_rss_kib(),
                cpu: crate::record::Cpu::used(),
                injected,
                held_back_ms,
                peer_timeouts,
                trace,
            })),
        )
    }
}

/// What a client process gets.
pub struct ClientCtx {
    /// The client's index.
    pub index: usize,
    pub(super) events: OwnedFd,
    /// One barrier per phase, in order; each is taken when waited on.
    pub(super) barriers: Vec<Option<OwnedFd>>,
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
    pub(super) drain: Option<OwnedFd>,
}

impl ClientCtx {
    /// Runs with deaths: becomes readable (end of file) once the drain starts.
    pub fn drain_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.drain.as_ref().map(|d| d.as_fd())
    }

    fn send(&mut self, e: &ChildEvent) -> io::Result<()> {
        send_event(&self.events, e)
    }

    /// Tells the supervisor this client is registered, then waits at the start barrier.
    pub fn ready_and_wait(&mut self) -> io::Result<()> {
        self.send(&ChildEvent::Ready)?;
        self.wait_barrier(0)
    }

    /// Tells the supervisor this client finished phase `p`, then waits for phase `p + 1`.
    pub fn phase_done_and_wait(&mut self, p: usize) -> io::Result<()> {
        self.send(&ChildEvent::PhaseDone(p))?;
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
        self.send(&ChildEvent::Complete(self.index))
    }

    /// Sends the records (adding this process's peak memory).
    pub fn done(&mut self, mut r: ClientReport) -> io::Result<()> {
        r.peak_rss_kib = peak_rss_kib();
        r.cpu = crate::record::Cpu::used();
        self.send(&ChildEvent::Done(Box::new(r)))
    }

    /// Says why this client could not start.
    pub fn failed(&mut self, why: String) -> io::Result<()> {
        self.send(&ChildEvent::Failed(why))
    }
}
