//! The epoll(7) backend: the kernel keeps the interest list, and a wait costs in proportion to
//! the fds that are ready, not to all that are watched.
//!
//! Level-triggered, like select and poll. An fd that wants nothing is taken out of the epoll
//! set: epoll reports a hang-up even to an fd registered for no events, so leaving it in
//! would wake every wait.

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll as Sys, EpollCreateFlags, EpollEvent, EpollFlags};

use super::{Backend, Event, Interest, Token};
use crate::sys::poll_timeout;

/// epoll with a token per fd in the event's data.
pub struct Epoll {
    ep: Sys,
    /// fd -> the interest it is registered with (absent: not in the epoll set).
    registered: HashMap<RawFd, Interest>,
    buf: Vec<EpollEvent>,
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the relay removes an fd from this backend before it closes it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Watched for a connection that wants to read: data, and the peer's end of stream.
const WANT_READ: EpollFlags = EpollFlags::EPOLLIN.union(EpollFlags::EPOLLRDHUP);
/// Reported as readable: data, end of stream, a hang-up or an error (the read says which).
const READABLE: EpollFlags = WANT_READ
    .union(EpollFlags::EPOLLHUP)
    .union(EpollFlags::EPOLLERR);
/// Reported as writable: room, or an error (the write says which).
const WRITABLE: EpollFlags = EpollFlags::EPOLLOUT.union(EpollFlags::EPOLLERR);

fn event(token: Token, i: Interest) -> EpollEvent {
    let mut f = EpollFlags::empty();
    if i.read {
        f |= WANT_READ;
    }
    if i.write {
        f |= EpollFlags::EPOLLOUT;
    }
    EpollEvent::new(f, token.0 as u64)
}

impl Epoll {
    /// A new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll {
            ep: Sys::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            registered: HashMap::new(),
            buf: vec![EpollEvent::empty(); 1024],
        })
    }
}

impl Backend for Epoll {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn max_fd(&self) -> Option<RawFd> {
        None
    }

    fn set(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let was = self.registered.get(&fd).copied();
        match (was, interest == Interest::NONE) {
            (None, true) => {}
            (Some(_), true) => {
                self.ep.delete(borrow(fd))?;
                self.registered.remove(&fd);
            }
            (None, false) => {
                self.ep.add(borrow(fd), event(token, interest))?;
                self.registered.insert(fd, interest);
            }
            (Some(old), false) => {
                // The token may change even when the interest does not (a reused slot).
                let _ = old;
                self.ep.modify(borrow(fd), &mut event(token, interest))?;
                self.registered.insert(fd, interest);
            }
        }
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) {
        if self.registered.remove(&fd).is_some() {
            let _ = self.ep.delete(borrow(fd));
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        let n = match self.ep.wait(&mut self.buf, poll_timeout(timeout)) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for e in &self.buf[..n] {
            let f = e.events();
            let (readable, writable) = (f.intersects(READABLE), f.intersects(WRITABLE));
            events.push(Event {
                token: Token(e.data() as usize),
                readable,
                writable,
            });
        }
        // A full buffer means more may be ready: grow it for the next wait.
        if n == self.buf.len() {
            self.buf.resize(n * 2, EpollEvent::empty());
        }
        Ok(())
    }
}
