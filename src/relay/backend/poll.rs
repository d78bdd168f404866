//! The poll(2) backend: no FD_SETSIZE ceiling, but still a scan of every fd per wait.
//!
//! One `pollfd` per watched fd, kept between waits (poll writes only `revents`, so there is
//! nothing to copy back as with select). An fd that wants nothing is taken out of the array:
//! with events = 0, poll would still report its hang-up, again and again.

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

use super::{Backend, Event, Interest, Token};
use crate::sys::poll_timeout;

/// Reported as readable: data, a hang-up or an error (the read says which).
const READABLE: PollFlags = PollFlags::POLLIN
    .union(PollFlags::POLLHUP)
    .union(PollFlags::POLLERR);
/// Reported as writable: room, or an error (the write says which).
const WRITABLE: PollFlags = PollFlags::POLLOUT.union(PollFlags::POLLERR);

/// poll(2) over a persistent array of pollfds.
#[derive(Default)]
pub struct Poll {
    fds: Vec<PollFd<'static>>,
    /// Per slot of `fds`: its fd and token.
    slots: Vec<(RawFd, Token)>,
    /// fd -> slot.
    index: HashMap<RawFd, usize>,
}

/// An fd as nix's PollFd wants it.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the relay removes an fd from this backend before closing it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn flags(i: Interest) -> PollFlags {
    let mut f = PollFlags::empty();
    if i.read {
        f |= PollFlags::POLLIN;
    }
    if i.write {
        f |= PollFlags::POLLOUT;
    }
    f
}

impl Poll {
    /// An empty backend.
    pub fn new() -> Poll {
        Poll::default()
    }
}

impl Backend for Poll {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn max_fd(&self) -> Option<RawFd> {
        None
    }

    fn set(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if interest == Interest::NONE {
            self.remove(fd);
            return Ok(());
        }
        let entry = PollFd::new(borrow(fd), flags(interest));
        match self.index.get(&fd) {
            Some(&slot) => {
                self.fds[slot] = entry;
                self.slots[slot] = (fd, token);
            }
            None => {
                self.index.insert(fd, self.fds.len());
                self.fds.push(entry);
                self.slots.push((fd, token));
            }
        }
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) {
        let Some(slot) = self.index.remove(&fd) else {
            return;
        };
        self.fds.swap_remove(slot);
        self.slots.swap_remove(slot);
        if let Some(&(moved, _)) = self.slots.get(slot) {
            self.index.insert(moved, slot);
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        match poll(&mut self.fds, poll_timeout(timeout)) {
            Ok(0) | Err(Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        for (p, &(_, token)) in self.fds.iter().zip(&self.slots) {
            let r = p.revents().unwrap_or(PollFlags::empty());
            let (readable, writable) = (r.intersects(READABLE), r.intersects(WRITABLE));
            if readable || writable {
                events.push(Event {
                    token,
                    readable,
                    writable,
                });
            }
        }
        Ok(())
    }
}
