//! The select(2) backend: the one the docs teach.
//!
//! Two master sets (read, write) hold what the relay wants; each wait copies them, because
//! select() overwrites the sets it is given with the subset that is ready.
//! select() can only watch fds below FD_SETSIZE (1024 on Linux): putting a larger fd in an
//! fd_set writes past its end, so `set` refuses such an fd and the relay turns the client away.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::time::{TimeVal, TimeValLike};

use super::{Backend, Event, Interest, Token};

/// select(2) with master fd sets and a token per fd.
pub struct Select {
    read: FdSet<'static>,
    write: FdSet<'static>,
    /// Token of each watched fd, indexed by fd.
    tokens: Vec<Option<Token>>,
    /// Highest fd in `tokens`, or -1.
    max_fd: RawFd,
}

/// An fd as nix's FdSet wants it.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the set only records the fd's number; the relay removes an fd from this
    // backend before it closes it, so no closed fd is ever passed to select().
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Select {
    /// An empty backend.
    pub fn new() -> Select {
        Select {
            read: FdSet::new(),
            write: FdSet::new(),
            tokens: Vec::new(),
            max_fd: -1,
        }
    }
}

impl Default for Select {
    fn default() -> Self {
        Select::new()
    }
}

impl Backend for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn max_fd(&self) -> Option<RawFd> {
        Some(FD_SETSIZE as RawFd - 1)
    }

    fn set(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if fd < 0 || fd as usize >= FD_SETSIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} is outside select()'s range 0..{FD_SETSIZE}"),
            ));
        }
        let i = fd as usize;
        if self.tokens.len() <= i {
            self.tokens.resize(i + 1, None);
        }
        self.tokens[i] = Some(token);
        self.max_fd = self.max_fd.max(fd);
        let b = borrow(fd);
        if interest.read {
            self.read.insert(b);
        } else {
            self.read.remove(b);
        }
        if interest.write {
            self.write.insert(b);
        } else {
            self.write.remove(b);
        }
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) {
        let Some(slot) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.tokens.get_mut(i))
        else {
            return;
        };
        *slot = None;
        self.read.remove(borrow(fd));
        self.write.remove(borrow(fd));
        while self.max_fd >= 0 && self.tokens[self.max_fd as usize].is_none() {
            self.max_fd -= 1;
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        // select() overwrites its sets: hand it copies and keep the masters.
        let mut read = self.read;
        let mut write = self.write;
        let mut tv =
            timeout.map(|d| TimeVal::microseconds(d.as_micros().min(i64::MAX as u128) as i64));
        match select(self.max_fd + 1, &mut read, &mut write, None, tv.as_mut()) {
            Ok(0) | Err(Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        for fd in 0..=self.max_fd {
            let Some(token) = self.tokens[fd as usize] else {
                continue;
            };
            let readable = read.contains(borrow(fd));
            let writable = write.contains(borrow(fd));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_fds_0_to_1023_and_refuses_the_rest() {
        let mut s = Select::new();
        let both = Interest {
            read: true,
            write: true,
        };
        // Only the fd number is checked here: fd 0 is as watchable as any.
        assert!(s.set(0, Token(0), both).is_ok());
        assert!(s.set(1023, Token(1), both).is_ok());
        for fd in [-1, 1024, 5000] {
            let e = s.set(fd, Token(2), both).expect_err("outside FD_SETSIZE");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(
                e.to_string(),
                format!("fd {fd} is outside select()'s range 0..1024")
            );
        }
    }
}
