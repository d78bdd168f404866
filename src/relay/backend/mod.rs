//! Event loop backends: each turns the kernel's readiness into a list of fired events.
//!
//! The contract every backend meets (and the only thing the relay relies on):
//! - `set(fd, token, interest)` starts or changes watching `fd`; `Interest::NONE` keeps the
//!   fd known but watches nothing. `remove(fd)` forgets it, and is called before the fd closes.
//! - `wait` blocks until at least one watched fd is ready, the timeout passes, or a signal
//!   interrupts it (then it returns with no events), and appends one [`Event`] per ready fd.
//! - Readiness is level-triggered: an fd that stays readable is reported again next time.
//! - A backend holds no policy: what to read first, buffers and routing live in the relay.
//!
//! One small file per backend, as in Redis's ae_select.c / ae_epoll.c.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub mod epoll;
pub mod poll;
pub mod select;

/// Which directions the relay wants to hear about for one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Wake when the fd is readable (or has hung up).
    pub read: bool,
    /// Wake when the fd is writable.
    pub write: bool,
}

impl Interest {
    /// Nothing.
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    /// Readable only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
}

/// What the relay attached to an fd; handed back with its events. Not a file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub usize);

/// One fd that is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token given to `set`.
    pub token: Token,
    /// Ready to read (data, end of stream, or an error to collect by reading).
    pub readable: bool,
    /// Ready to write.
    pub writable: bool,
}

/// A readiness backend: select(2), and later poll(2) and epoll(7).
pub trait Backend {
    /// The name printed in logs and reports.
    fn name(&self) -> &'static str;
    /// The largest fd this backend can watch, if it has such a limit (select: FD_SETSIZE - 1).
    fn max_fd(&self) -> Option<RawFd>;
    /// Watches `fd` for `interest`, tagging its events with `token`.
    fn set(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;
    /// Stops watching `fd`. Call before closing it.
    fn remove(&mut self, fd: RawFd);
    /// Waits for readiness (`None` = no timeout) and appends fired events to `events`.
    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()>;
}

/// The backends this build has, by name; select is the default and the one the docs teach.
pub const NAMES: &[&str] = &["select", "poll", "epoll"];

/// Makes the backend called `name` (None for an unknown name or an epoll that failed to open).
pub fn by_name(name: &str) -> Option<Box<dyn Backend>> {
    match name {
        "select" => Some(Box::new(select::Select::new())),
        "poll" => Some(Box::new(poll::Poll::new())),
        "epoll" => epoll::Epoll::new()
            .ok()
            .map(|e| Box::new(e) as Box<dyn Backend>),
        _ => None,
    }
}
