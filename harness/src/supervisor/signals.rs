//! SIGINT and SIGTERM for the supervisor: the self-pipe trick.

use std::io;

/// SIGINT and SIGTERM, caught from the moment a run is asked for: the self-pipe trick (a
/// handler writes a byte, the supervisor polls the read end with its event pipes), and which
/// signal came. Install it first thing, before anything a signal could leave behind (the run's
/// directory, its socket): from then on a signal ends the run through its cleanup, never
/// outright. Dropping it unregisters our actions, but signal-hook keeps its own handler: the
/// signals are then ignored, so keep it for as long as the process runs.
pub struct Signals {
    pub(super) read: std::os::unix::net::UnixStream,
    which: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// Installs the handlers for SIGINT and SIGTERM.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let which = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut ids = Vec::new();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Which one first (so the exit code can be 128 + its number), then the wake-up.
            ids.push(signal_hook::flag::register_usize(
                sig,
                which.clone(),
                sig as usize,
            )?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        Ok(Signals { read, which, ids })
    }

    /// The signal caught so far (the last one, if several), if any.
    pub fn caught(&self) -> Option<i32> {
        match self.which.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            sig => Some(sig as i32),
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
