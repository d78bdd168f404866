//! Forking a child of the run, and the pipes between them.

use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::SuperviseError;

/// Forks `body` into a child that keeps stdin, stdout, stderr and the fds in `keep`, and
/// closes every other descriptor it inherited.
///
/// # Safety
/// Fork safety: the caller must be single-threaded (`supervise`'s contract), so the child
/// may run ordinary Rust code. The child never returns into the caller's code: it leaves with
/// `_exit`, running no destructor of the parent's.
pub(super) unsafe fn spawn(keep: &[RawFd], body: impl FnOnce() -> i32) -> nix::Result<Pid> {
    // SAFETY: the caller is single-threaded (this function's contract).
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
            // Tell the janitor of this group before the parent can (see announce_self).
            crate::janitor::announce_self();
            // The supervisor's SIGINT/SIGTERM handlers write to its self-pipe: not ours.
            for sig in [Signal::SIGINT, Signal::SIGTERM] {
                // SAFETY: restoring the default disposition installs no Rust handler.
                let _ = unsafe { signal(sig, SigHandler::SigDfl) };
            }
            close_all_but(keep);
            // A panic is the exit code Rust gives one (101), never an unwind into the parent's code.
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

/// A pipe whose ends are closed on exec.
pub(super) fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC)
}

/// Reads from `fd` return at once (WouldBlock) when nothing is there.
pub(super) fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

pub(super) fn dup_err(e: io::Error) -> SuperviseError {
    SuperviseError::Sys {
        what: "dup",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
    }
}

pub(super) fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> SuperviseError {
    move |source| SuperviseError::Sys { what, source }
}
