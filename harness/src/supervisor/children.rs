//! The child table: every process the run forked, by role, and how each is signalled,
//! heard from and reaped.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::record::{ChildEvent, RelayReport};

/// What a child process is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The relay (always the first child).
    Relay,
    /// A client process: its index, and 0 for the first process of that client, 1, 2, ...
    /// for the ones started after a restart.
    Client { index: usize, incarnation: u32 },
}

/// One child process.
pub(super) struct Child {
    pub role: Role,
    /// `relay`, or the client's name.
    pub name: String,
    /// A fault killed it on purpose: its end is no failure.
    pub killed: bool,
    /// When it said it was registered.
    pub ready_at: Option<Instant>,
    pub pid: Pid,
    /// Its event pipe's read end, until end of file (the child has exited).
    pub events: Option<OwnedFd>,
    /// Bytes read from the event pipe that do not yet end a line.
    buf: Vec<u8>,
    /// How it ended, once reaped.
    pub status: Option<String>,
    /// The relay's last word (clients send theirs as events).
    pub relay: Option<Box<RelayReport>>,
}

impl Child {
    /// A child just forked: running, its event pipe open.
    pub fn new(role: Role, name: String, pid: Pid, events: Option<OwnedFd>) -> Child {
        Child {
            role,
            name,
            killed: false,
            ready_at: None,
            pid,
            events,
            buf: Vec::new(),
            status: None,
            relay: None,
        }
    }

    /// The relay's place when it runs elsewhere (`--relay-addr`): no process, already "ended"
    /// so that nothing waits for it, signals it or reaps it. (Its pid is past any pid_max, so
    /// even a stray signal reaches nobody.)
    pub fn elsewhere(addr: &str) -> Child {
        let mut c = Child::new(Role::Relay, "relay".into(), Pid::from_raw(i32::MAX), None);
        c.status = Some(format!(
            "not started by this run: it runs elsewhere, at {addr}"
        ));
        c
    }

    /// The client this process runs (None for the relay).
    pub fn client(&self) -> Option<usize> {
        match self.role {
            Role::Relay => None,
            Role::Client { index, .. } => Some(index),
        }
    }

    /// A process started after a restart.
    pub fn is_restart(&self) -> bool {
        matches!(self.role, Role::Client { incarnation, .. } if incarnation > 0)
    }

    /// Running: not reaped, its event pipe still open.
    pub fn is_open(&self) -> bool {
        self.events.is_some()
    }

    /// Reaps it (blocking) and tells the janitor its group is no longer the run's.
    pub fn reap(&mut self) {
        self.status = Some(describe(waitpid(self.pid, None)));
        crate::janitor::reaped(self.pid.as_raw());
    }
}

/// Every child of the run, in the order forked: the relay first, then the clients, then the
/// processes of restarted clients. A child's place in it is its token in the epoll set. Reaps
/// whatever is left when dropped (the supervisor returned early, or panicked).
pub(super) struct Children(pub Vec<Child>);

impl Children {
    /// The relay.
    pub fn relay(&mut self) -> &mut Child {
        &mut self.0[0]
    }

    /// The live process of client `i` (the newest one still running), as its place.
    pub fn live_process_of(&self, i: usize) -> Option<usize> {
        (1..self.0.len())
            .rev()
            .find(|&k| self.0[k].client() == Some(i) && !self.0[k].killed && self.0[k].is_open())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if c.status.is_none() {
                signal_group(c.pid, Signal::SIGKILL);
                c.reap();
            }
        }
    }
}

/// Signals a child's whole process group (it leads one: see `spawn`), so whatever it started
/// (a shell's child, a foreign relay's workers) gets the signal too.
pub(super) fn signal_group(pid: Pid, sig: Signal) {
    if kill(Pid::from_raw(-pid.as_raw()), sig).is_err() {
        let _ = kill(pid, sig);
    }
}

fn describe(w: nix::Result<WaitStatus>) -> String {
    match w {
        Ok(WaitStatus::Exited(_, code)) => format!("exited {code}"),
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Whether a process is running or waiting for a CPU (state R in /proc/PID/stat; D, a
/// disk wait, counts too). False when it cannot be read (it is gone).
pub(super) fn is_runnable(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the name may hold spaces and parentheses; the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("R" | "D"))
}

/// Reads what a child's event pipe holds; returns the whole events and whether it hit EOF.
pub(super) fn read_events(c: &mut Child) -> (Vec<ChildEvent>, bool) {
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
        match serde_json::from_slice::<ChildEvent>(&c.buf[from..from + n]) {
            Ok(ChildEvent::RelayDone(r)) => c.relay = Some(r),
            Ok(e) => out.push(e),
            Err(_) => {}
        }
        from += n + 1;
    }
    c.buf.drain(..from);
    if c.buf.is_empty() && c.buf.capacity() > 4096 {
        // A report is the one large event: do not keep its buffer for the rest of the run
        // (over 4 KiB: ten thousand kept buffers were a fifth of the supervisor's memory).
        c.buf = Vec::new();
    }
    (out, eof)
}

/// Ends every child still running: wait `grace` for exits (the relay's stop pipe is already
/// closed), then SIGTERM, `grace` again, then SIGKILL; reaps all.
pub(super) fn stop_all(children: &mut [Child], grace: Duration, no_waiting: bool) {
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
                c.reap();
                c.events = None;
            }
            return;
        }
        wait_exits(children, grace);
    }
}

/// Waits up to `grace` for children to exit (their event pipes reach EOF), reaping them.
pub(super) fn wait_exits(children: &mut [Child], grace: Duration) {
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
                c.reap();
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
                c.reap();
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
