//! The janitor: a small process that cleans up after a supervisor that cannot (SIGKILL).
//!
//! No code of a process runs after SIGKILL, so the run's leftovers (its temporary directory
//! and socket, a relay command that would go on listening) must be removed by a survivor. The
//! janitor is forked first, before anything it must clean exists, and reads a pipe from the
//! supervisor: each process group the run starts and each directory it makes is written there
//! as it appears. When the supervisor finishes normally it cleans up itself, says so, and
//! closes the pipe; the janitor then exits having done nothing. If the pipe closes without
//! that word (the supervisor was killed), the janitor SIGKILLs every group it was told of and
//! removes every directory, then exits.
//!
//! One janitor per process, started with [`start`]; the supervisor's hooks ([`group`],
//! [`dir`]) do nothing when none was started (library use, tests).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

/// The write end of the janitor's pipe, and its pid.
static JANITOR: Mutex<Option<(File, Pid)>> = Mutex::new(None);

/// The same write end as a bare fd (-1 when none), for [`announce_self`] in a forked child,
/// where taking a lock or allocating is not safe.
static JANITOR_FD: AtomicI32 = AtomicI32::new(-1);

/// Forks the janitor. Call it while the process is single-threaded (fork safety: the child
/// runs ordinary Rust code), before the run makes anything. Fails only if pipe or fork does.
pub fn start() -> io::Result<()> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: the caller is single-threaded (see above); the child leaves with _exit.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => {
            drop(r);
            if let Ok(mut j) = JANITOR.lock() {
                JANITOR_FD.store(w.as_raw_fd(), Ordering::SeqCst);
                *j = Some((File::from(w), child));
            }
            Ok(())
        }
        ForkResult::Child => {
            drop(w);
            let code = janitor(r);
            // SAFETY: _exit ends the process at once; no parent destructor runs.
            unsafe { nix::libc::_exit(code) }
        }
    }
}

/// The janitor's life: remember what it is told, clean it up if the pipe closes without "done".
fn janitor(r: OwnedFd) -> i32 {
    // Its own process group, and deaf to the signals a terminal or a test sends the
    // supervisor's group: it must outlive the supervisor, then it leaves by itself.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: ignoring a signal installs no Rust handler.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // Nothing else the supervisor had open stays open here (a socket, a pipe end).
    let keep = r.as_raw_fd() as u32;
    let mut closed = true;
    for (from, to) in [(3, keep.saturating_sub(1)), (keep + 1, u32::MAX)] {
        if from <= to {
            // SAFETY: close_range only closes descriptors, none of which is used here again.
            let rc = unsafe { nix::libc::syscall(nix::libc::SYS_close_range, from, to, 0u32) };
            closed &= rc == 0;
        }
    }
    if !closed {
        // An older kernel (before 5.9): one close per descriptor still open.
        let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for fd in open.into_iter().filter(|&fd| fd > 2 && fd as u32 != keep) {
            let _ = nix::unistd::close(fd);
        }
    }
    // A set: ten thousand clients are twenty thousand lines (each group is told by the
    // parent and by the child) and ten thousand reaps; a list's retain made that quadratic.
    let (mut groups, mut dirs) = (std::collections::HashSet::new(), Vec::new());
    let mut done = false;
    // SAFETY: `r` is an open fd this process owns; the File takes it over.
    let file = unsafe { File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(r)) };
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        match line.split_once(' ') {
            Some(("group", pid)) => groups.extend(pid.parse::<i32>().ok()),
            // Reaped: its pid (and group id) may be reused by anyone now.
            Some(("reaped", pid)) => {
                if let Ok(pid) = pid.parse::<i32>() {
                    groups.remove(&pid);
                }
            }
            Some(("dir", path)) => dirs.push(PathBuf::from(path)),
            _ if line == "done" => done = true,
            _ => {}
        }
    }
    if done {
        return 0;
    }
    for g in groups {
        let _ = kill(Pid::from_raw(-g), Signal::SIGKILL);
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    0
}

/// Writes one line to the janitor in one write(2): under PIPE_BUF bytes, so it is atomic, and a
/// child's [`announce_self`] can never land in the middle of it (write_fmt would write each
/// piece of the line separately; the suite saw "group group 13950\n13950" and a relay left running).
fn tell(what: std::fmt::Arguments<'_>) {
    let line = what.to_string();
    if let Ok(mut j) = JANITOR.lock() {
        if let Some((w, _)) = j.as_mut() {
            let _ = w.write_all(line.as_bytes());
        }
    }
}

/// The janitor's pid, once started.
pub fn pid() -> Option<i32> {
    JANITOR
        .lock()
        .ok()
        .and_then(|j| j.as_ref().map(|(_, p)| p.as_raw()))
}

/// Tells the janitor of a process group the run started (its leader's pid).
pub fn group(pid: i32) {
    tell(format_args!("group {pid}\n"));
}

/// In a child just forked, after it made its own process group and before it runs anything
/// else (execs, or closes what it inherited): tells the janitor of that group itself.
///
/// The parent also calls [`group`], but only after fork returns; a SIGKILL in between would
/// leave the child unknown to the janitor (seen in CI: a relay command that had already
/// started, orphaned for good). The janitor sees its pipe close only once every child has
/// closed its inherited copy, so it reads this line first. Async-signal-safe: no lock, no
/// allocation, one write(2) of under PIPE_BUF bytes (atomic beside the parent's writes).
pub fn announce_self() {
    let fd = JANITOR_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut line = *b"group                     ";
    let mut digits = [0u8; 12];
    // SAFETY: getpid cannot fail.
    let mut pid = unsafe { nix::libc::getpid() } as u32;
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let mut len = 6;
    for &d in digits[..n].iter().rev() {
        line[len] = d;
        len += 1;
    }
    line[len] = b'\n';
    len += 1;
    // SAFETY: writes `len` bytes of a live stack buffer to an fd we hold open.
    let _ = unsafe { nix::libc::write(fd, line.as_ptr().cast(), len) };
}

/// Tells the janitor that a group's leader was reaped: its id is no longer the run's to kill.
pub fn reaped(pid: i32) {
    tell(format_args!("reaped {pid}\n"));
}

/// Tells the janitor of a directory the run made (removed with everything in it).
pub fn dir(path: &Path) {
    // A path with a newline cannot be told; tempfile's names have none.
    if let Some(p) = path.to_str().filter(|p| !p.contains('\n')) {
        tell(format_args!("dir {p}\n"));
    }
}

/// Says [`done`] when dropped: hold one for as long as the run's things exist, so every
/// return path tells the janitor (declare it before them: it drops after them).
pub struct Done;

impl Drop for Done {
    fn drop(&mut self) {
        done();
    }
}

/// The supervisor has cleaned up itself: the janitor exits without doing anything. Waits for
/// it, so no process of the run outlives this call.
pub fn done() {
    let taken = JANITOR.lock().ok().and_then(|mut j| j.take());
    JANITOR_FD.store(-1, Ordering::SeqCst);
    if let Some((mut w, pid)) = taken {
        let _ = w.write_all(b"done\n");
        drop(w);
        let _ = waitpid(pid, None);
    }
}
