//! The black box: per-pair message counters in memory that every process of a run shares, so
//! what a client had sent and received survives its SIGKILL.
//!
//! The supervisor maps it (anonymous, `MAP_SHARED`) before the first fork; every child
//! inherits the same pages. Clients add to their counters as they go (a relaxed atomic add per
//! message); the verifier reads them at the end, whoever died on the way. Only runs with the
//! `kill` or `restart` nemesis make one: a run without deaths has every client's own report.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// One counter of an ordered pair (sender, receiver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Messages the sender queued for the receiver, over all its incarnations (the next
    /// sequence it would use).
    Queued = 0,
    /// Of those, how many came back as BOUNCE (counted by the sender).
    Bounced = 1,
    /// Messages the receiver took in, over all its incarnations.
    Received = 2,
    /// The next sequence the receiver expects from the sender.
    Next = 3,
}

const FIELDS: usize = 4;
/// Per client: 1 while it is meant to be alive at the end (0 once killed for good).
const ALIVE: usize = 0;
/// Per client: how many times it was killed.
const DEATHS: usize = 1;
const PER_CLIENT: usize = 2;

/// Most clients a black box is made for: its size grows with clients² (128 MiB of shared
/// address space at 2,048, of which only the pages of pairs that carried traffic are touched
/// while the run lasts; the verifier reads them all at the end).
pub const MAX_CLIENTS: usize = 2048;

/// Messages received so far, one counter per client (each on its own cache line), shared by
/// every process of the run: what the supervisor's progress bar reads.
pub struct Tally {
    mem: Words,
    clients: usize,
}

/// u64 words per client: one 64-byte cache line, so clients on different cores do not
/// contend for a line.
const TALLY_STRIDE: usize = 8;

impl Tally {
    /// A zeroed tally for `clients` clients.
    pub fn new(clients: usize) -> nix::Result<Tally> {
        Ok(Tally {
            mem: Words::new(clients.max(1) * TALLY_STRIDE)?,
            clients,
        })
    }

    fn slot(&self, i: usize) -> Option<&AtomicU64> {
        (i < self.clients).then(|| self.mem.word(i * TALLY_STRIDE))
    }

    /// Client `i` has received `n` messages so far.
    pub fn set(&self, i: usize, n: u64) {
        if let Some(s) = self.slot(i) {
            s.store(n, Ordering::Relaxed);
        }
    }

    fn word(&self, i: usize, k: usize) -> Option<&AtomicU64> {
        (i < self.clients).then(|| self.mem.word(i * TALLY_STRIDE + k))
    }

    /// Client `i` has had `n` frames from the relay so far (deliveries of any kind, bounces).
    pub fn arrived(&self, i: usize, n: u64) {
        if let Some(w) = self.word(i, 1) {
            w.store(n, Ordering::Relaxed);
        }
    }

    /// Frames from the relay to every client so far: when this stands still, nothing moves.
    pub fn arrivals(&self) -> u64 {
        (0..self.clients)
            .filter_map(|i| self.word(i, 1))
            .map(|w| w.load(Ordering::Relaxed))
            .sum()
    }

    /// Client `i` has written everything it has to send until something arrives (or the
    /// next phase starts): `true`; or it has more to write: `false`.
    pub fn set_idle(&self, i: usize, idle: bool) {
        if let Some(w) = self.word(i, 2) {
            w.store(u64::from(idle), Ordering::Relaxed);
        }
    }

    /// Whether client `i` said it has nothing more to write (see [`Tally::set_idle`]).
    pub fn idle(&self, i: usize) -> bool {
        self.word(i, 2)
            .is_some_and(|w| w.load(Ordering::Relaxed) != 0)
    }

    /// A new phase starts: every client has work again until it says otherwise.
    pub fn clear_idle(&self) {
        for i in 0..self.clients {
            self.set_idle(i, false);
        }
    }

    /// Messages received by all clients so far.
    pub fn total(&self) -> u64 {
        (0..self.clients)
            .filter_map(|i| self.slot(i))
            .map(|s| s.load(Ordering::Relaxed))
            .sum()
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tally({} clients)", self.clients)
    }
}

/// The shared counters of one run.
pub struct BlackBox {
    mem: Words,
    clients: usize,
}

/// Zeroed u64 words in an anonymous MAP_SHARED mapping: every process forked after it is made
/// sees the same words. Unmapped on drop.
struct Words {
    base: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomics.
unsafe impl Send for Words {}
// SAFETY: as above.
unsafe impl Sync for Words {}

impl Words {
    fn new(len: usize) -> nix::Result<Words> {
        let bytes = NonZeroUsize::new(len.max(1) * 8).ok_or(nix::errno::Errno::EINVAL)?;
        // SAFETY: a fresh anonymous mapping aliases nothing; it is zero-filled, and AtomicU64
        // has the layout of u64 (page alignment exceeds its alignment).
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        Ok(Words {
            base: ptr.cast(),
            len,
        })
    }

    fn word(&self, k: usize) -> &AtomicU64 {
        assert!(k < self.len, "shared counter index out of range");
        // SAFETY: k is in bounds of the mapping, which lives as long as self.
        unsafe { &*self.base.as_ptr().add(k) }
    }
}

impl Drop for Words {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in new() with this length and is not used after this.
        let _ = unsafe { munmap(self.base.cast(), self.len.max(1) * 8) };
    }
}

impl BlackBox {
    /// Maps a zeroed black box for `clients` clients, all alive.
    pub fn new(clients: usize) -> nix::Result<BlackBox> {
        let b = BlackBox {
            // The last word: when sending stops in a run with a duration (0 until set).
            mem: Words::new(clients * clients * FIELDS + clients * PER_CLIENT + 1)?,
            clients,
        };
        for i in 0..clients {
            b.word(clients * clients * FIELDS + i * PER_CLIENT + ALIVE)
                .store(1, Ordering::Relaxed);
        }
        Ok(b)
    }

    fn word(&self, k: usize) -> &AtomicU64 {
        self.mem.word(k)
    }

    fn pair(&self, s: usize, r: usize, f: Field) -> &AtomicU64 {
        self.word((s * self.clients + r) * FIELDS + f as usize)
    }

    fn client(&self, i: usize, k: usize) -> &AtomicU64 {
        self.word(self.clients * self.clients * FIELDS + i * PER_CLIENT + k)
    }

    /// Number of clients.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// A pair's counter.
    pub fn get(&self, s: usize, r: usize, f: Field) -> u64 {
        if s >= self.clients || r >= self.clients {
            return 0;
        }
        self.pair(s, r, f).load(Ordering::Relaxed)
    }

    /// Adds one to a pair's counter.
    pub fn bump(&self, s: usize, r: usize, f: Field) {
        if s < self.clients && r < self.clients {
            self.pair(s, r, f).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets a pair's counter.
    pub fn set(&self, s: usize, r: usize, f: Field, v: u64) {
        if s < self.clients && r < self.clients {
            self.pair(s, r, f).store(v, Ordering::Relaxed);
        }
    }

    /// Whether client `i` is meant to be alive at the end.
    pub fn alive(&self, i: usize) -> bool {
        i < self.clients && self.client(i, ALIVE).load(Ordering::Relaxed) == 1
    }

    /// Records that client `i` was killed (`for_good`: it will not be restarted).
    pub fn killed(&self, i: usize, for_good: bool) {
        if i < self.clients {
            self.client(i, DEATHS).fetch_add(1, Ordering::Relaxed);
            if for_good {
                self.client(i, ALIVE).store(0, Ordering::Relaxed);
            }
        }
    }

    /// `--duration`: when every client stops sending (CLOCK_MONOTONIC ns). The first client
    /// past the start barrier sets it to `candidate`; everyone (a restarted client too) gets
    /// that same instant.
    pub fn send_until(&self, candidate: u64) -> u64 {
        let w = self.word(self.clients * self.clients * FIELDS + self.clients * PER_CLIENT);
        match w.compare_exchange(0, candidate, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => candidate,
            Err(set) => set,
        }
    }

    /// How many times client `i` was killed.
    pub fn deaths(&self, i: usize) -> u64 {
        if i >= self.clients {
            return 0;
        }
        self.client(i, DEATHS).load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for BlackBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlackBox({} clients)", self.clients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_with_a_forked_child() {
        let b = BlackBox::new(3).unwrap();
        assert!(b.alive(2));
        b.bump(0, 2, Field::Queued);
        // A child process writes; the parent reads after reaping it. Fork safety: a test
        // runner has threads, but the child only does atomic stores and _exit.
        // SAFETY: the child touches nothing but the mapping and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                b.bump(0, 2, Field::Received);
                b.killed(1, true);
                // SAFETY: ends the child at once.
                unsafe { nix::libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(b.get(0, 2, Field::Queued), 1);
        assert_eq!(b.get(0, 2, Field::Received), 1);
        assert!(!b.alive(1));
        assert_eq!(b.deaths(1), 1);
        assert_eq!(b.get(5, 0, Field::Queued), 0, "out of range reads as zero");
    }

    #[test]
    fn every_pair_and_client_has_its_own_counters_and_out_of_range_is_ignored() {
        let n = 4;
        let b = BlackBox::new(n).unwrap();
        assert_eq!(b.clients(), n);
        let fields = [Field::Queued, Field::Bounced, Field::Received, Field::Next];
        // Out of range first: reads as zero or dead, writes go nowhere (none may land on
        // another counter, checked below).
        for &f in &fields {
            for (s, r) in [(n, 0), (0, n), (n, n), (n - 1, n), (n, n - 1)] {
                b.bump(s, r, f);
                b.set(s, r, f, 9);
            }
        }
        b.killed(n, true);
        // A distinct value in every counter: none may share a word with another.
        for s in 0..n {
            for r in 0..n {
                for (k, &f) in fields.iter().enumerate() {
                    b.set(s, r, f, (s * 100 + r * 10 + k) as u64 + 1);
                }
            }
        }
        b.bump(3, 2, Field::Received);
        b.killed(2, false);
        b.killed(2, false);
        b.killed(3, true);
        for s in 0..n {
            for r in 0..n {
                for (k, &f) in fields.iter().enumerate() {
                    let extra = u64::from((s, r, k) == (3, 2, 2));
                    assert_eq!(b.get(s, r, f), (s * 100 + r * 10 + k) as u64 + 1 + extra);
                }
            }
        }
        assert_eq!((b.deaths(0), b.deaths(2), b.deaths(3)), (0, 2, 1));
        assert!(b.alive(0) && b.alive(2) && !b.alive(3));
        assert!(b.alive(1));
        assert_eq!((b.get(n, 0, Field::Next), b.get(0, n, Field::Next)), (0, 0));
        assert_eq!(b.deaths(n), 0);
        assert!(!b.alive(n));
        assert_eq!(b.get(0, 0, Field::Queued), 1);
        assert_eq!(format!("{b:?}"), "BlackBox(4 clients)");
    }

    /// The mapping goes when the black box does: a run leaves no shared memory behind.
    #[test]
    fn dropping_the_black_box_unmaps_all_of_it() {
        let b = BlackBox::new(100).unwrap(); // 320 KiB of counters: many pages
        let start = b.mem.base.as_ptr() as usize;
        // /proc/self/maps: (start, inode) of each mapping. A shared anonymous mapping is a
        // file of its own, with an inode no other mapping has: what is left of ours, if
        // anything, still shows it (other tests map and unmap meanwhile, at any address).
        let maps = || -> Vec<(usize, String)> {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let lo = usize::from_str_radix(w.first()?.split_once('-')?.0, 16).ok()?;
                    Some((lo, w.get(4)?.to_string()))
                })
                .collect()
        };
        let inode = maps()
            .into_iter()
            .find(|m| m.0 == start)
            .map(|m| m.1)
            .expect("the black box is a mapping of its own");
        assert_ne!(inode, "0", "a shared mapping has a file behind it");
        drop(b);
        let left: Vec<_> = maps().into_iter().filter(|m| m.1 == inode).collect();
        assert!(
            left.is_empty(),
            "still mapped, in part, after drop: {left:?}"
        );
    }

    #[test]
    fn the_tally_counts_per_client_and_says_who_is_idle() {
        let t = Tally::new(3).unwrap();
        t.set(0, 5);
        t.set(2, 7);
        t.arrived(0, 6);
        t.arrived(1, 1);
        t.arrived(2, 9);
        t.set(3, 100); // out of range: ignored
        t.arrived(3, 100);
        assert_eq!((t.total(), t.arrivals()), (12, 16));
        assert!(!t.idle(0) && !t.idle(1));
        t.set_idle(1, true);
        t.set_idle(3, true);
        assert!(t.idle(1) && !t.idle(0) && !t.idle(2) && !t.idle(3));
        assert_eq!(
            (t.total(), t.arrivals()),
            (12, 16),
            "idle is a word of its own"
        );
        t.set_idle(0, true);
        t.set_idle(2, true);
        t.clear_idle();
        assert!((0..3).all(|i| !t.idle(i)));
        t.set_idle(2, true);
        t.set_idle(2, false);
        assert!(!t.idle(2));
        assert_eq!(format!("{t:?}"), "Tally(3 clients)");
    }
}
