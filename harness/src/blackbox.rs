//! The black box: per-pair message counters in memory that every process of a run shares, so
//! what a client had sent and received survives its SIGKILL.
//!
//! The supervisor maps it (anonymous, `MAP_SHARED`) before the first fork; every child
//! inherits the same pages. Clients add to their counters as they go (a relaxed atomic add per
//! message); the verifier reads them at the end, whoever died on the way. Only runs with the
//! `kill` or `restart` nemesis, or a `--duration`, make one: a run without deaths has every
//! client's own report.
//!
//! It is sparse, so it fits any client count the run accepts (C10K): each sender has a small
//! hash table of its own, with an entry only for each receiver it dealt with, sized from the
//! run's bound on a sender's receivers (10,000 clients sending 20 messages each touch at most
//! 200,000 of the 10⁸ pairs). A sender's entries sit together, as in a row of a clients x
//! clients table; each entry is also on its receiver's list, so a client finds its senders
//! without looking at every client: what keeps the end-of-run drain linear in the traffic.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// One counter of an ordered pair (sender, receiver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Messages the sender queued for the receiver, over all its incarnations (the next
    /// sequence it would use).
    Queued = 1,
    /// Of those, how many came back as BOUNCE (counted by the sender).
    Bounced = 2,
    /// Messages the receiver took in, over all its incarnations.
    Received = 3,
    /// The next sequence the receiver expects from the sender.
    Next = 4,
}

/// An entry's words: its receiver (`r + 1`; 0 while the slot is free), the four fields, and
/// its link on the receiver's list: 0 until it is listed, then [`LISTED`] with the next entry
/// (slot + 1; 0 ends the list). Six words, 48 bytes.
const KEY: usize = 0;
const NEXT_OF_RECEIVER: usize = 5;
/// In a link: the entry has been claimed for its receiver's list (one process lists it).
const LISTED: u64 = 1 << 63;
const ENTRY: usize = 6;

/// Per client: 1 while it is meant to be alive at the end (0 once killed for good).
const ALIVE: usize = 0;
/// Per client: how many times it was killed.
const DEATHS: usize = 1;
/// Per client: the first entry (slot + 1) of the pairs it received on.
const RECEIVED_HEAD: usize = 2;
/// Per client: entries in its own table (as sender).
const USED: usize = 3;
const PER_CLIENT: usize = 4;

/// After the clients' words: whether an entry could not be made, and when sending stops in a
/// run with a duration (0 until set).
const OVERFLOW: usize = 0;
const SEND_UNTIL: usize = 1;
const GLOBAL: usize = 2;

/// Most clients a `--duration` run takes: with no message count to bound a sender's
/// receivers, its tables keep room for every pair (clients² x 48 bytes of address space,
/// 768 MiB at 4,096).
pub const DURATION_CLIENTS: usize = 4096;

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

/// Reads a word of the table with a compare-and-swap that changes nothing (a locked cmpxchg
/// always writes), so a process's first touch of a page is a write fault. A read fault maps the
/// 15 pages around it too (fault-around), and thousands of processes each mapping, and at exit
/// unmapping, pages they never use cost more than the run's messages (2,000 clients with
/// kill,restart: 1.6x the CPU). (A `fetch_or(0)` would not do: the compiler makes it a load.)
fn peek(w: &AtomicU64) -> u64 {
    let (Ok(v) | Err(v)) = w.compare_exchange(0, 0, Ordering::AcqRel, Ordering::Acquire);
    v
}

/// Each sender's row for `pairs` pairs in all: its slots, and how many receivers it takes.
fn layout(clients: usize, pairs: usize) -> (usize, usize) {
    let each = pairs.div_ceil(clients.max(1)).clamp(1, clients.max(1));
    let hashed = (each + each / 3 + 1).next_power_of_two();
    // A row that would hold most clients anyway holds them all, each at its own index: no
    // hashing, no probing, and less room than the hash table's.
    if hashed >= clients {
        (clients.max(1), clients.max(1))
    } else {
        (hashed, (hashed / 4 * 3).max(each))
    }
}

/// Bytes of shared address space a black box for `clients` and `pairs` maps (the verifier
/// reads all of it at the end, so all of it becomes memory then).
pub fn bytes_for(clients: usize, pairs: usize) -> usize {
    let (slots, _) = layout(clients, pairs);
    clients
        .saturating_mul(slots)
        .saturating_mul(ENTRY * 8)
        .saturating_add(clients * PER_CLIENT * 8)
}

/// Most bytes a black box may map: 2 GiB (10,000 clients x 1,000 messages each take 0.9 GiB).
pub const MAX_BYTES: usize = 2 << 30;

/// Where one pair's counters are, in the [`BlackBox`] it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(usize);

/// The shared counters of one run.
pub struct BlackBox {
    mem: Words,
    clients: usize,
    /// Slots in each sender's table: a power of two, or the clients (a full row).
    slots: usize,
    /// Most entries a sender's table takes (three quarters of its slots: probes stay short).
    limit: usize,
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
                // NORESERVE: a table sized for the bound on pairs is mostly never touched.
                MapFlags::MAP_SHARED | MapFlags::MAP_NORESERVE,
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
    /// Maps a zeroed black box for `clients` clients, all alive, with room for `pairs` pairs
    /// that carry traffic in all, spread evenly over the senders (a sender that needs more is
    /// refused and makes [`BlackBox::overflowed`] true).
    pub fn new(clients: usize, pairs: usize) -> nix::Result<BlackBox> {
        let (slots, limit) = layout(clients, pairs);
        let b = BlackBox {
            mem: Words::new(clients * slots * ENTRY + clients * PER_CLIENT + GLOBAL)?,
            clients,
            slots,
            limit,
        };
        for i in 0..clients {
            b.client(i, ALIVE).store(1, Ordering::Relaxed);
        }
        Ok(b)
    }

    fn word(&self, k: usize) -> &AtomicU64 {
        self.mem.word(k)
    }

    fn client(&self, i: usize, k: usize) -> &AtomicU64 {
        self.word(self.clients * self.slots * ENTRY + i * PER_CLIENT + k)
    }

    fn global(&self, k: usize) -> &AtomicU64 {
        self.word(self.clients * self.slots * ENTRY + self.clients * PER_CLIENT + k)
    }

    /// Word `k` of the entry in `slot` (numbered over all senders' tables).
    fn at(&self, slot: usize, k: usize) -> &AtomicU64 {
        self.word(slot * ENTRY + k)
    }

    /// The slot of a pair's entry, if it has one; with `make`, one is made when there is none
    /// (None only when the sender's table is full).
    fn slot(&self, s: usize, r: usize, make: bool) -> Option<usize> {
        if s >= self.clients || r >= self.clients {
            return None;
        }
        let key = r as u64 + 1;
        // Fibonacci hashing: the key's high bits after a multiply spread consecutive
        // receivers. (A full row has every receiver at its own index.)
        let start = if self.slots == self.clients {
            r
        } else {
            (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
        };
        for i in 0..self.slots {
            let slot = s * self.slots + (start + i) % self.slots;
            let k = self.at(slot, KEY);
            match peek(k) {
                found if found == key => return Some(slot),
                0 if !make => return None,
                0 => {
                    let used = self.client(s, USED);
                    if used.load(Ordering::Relaxed) >= self.limit as u64 {
                        // Full, or filled since the look above: by this pair's own entry,
                        // made by another process meanwhile (then it is ours too), or by
                        // another pair's (look further).
                        match peek(k) {
                            found if found == key => return Some(slot),
                            0 => {
                                self.global(OVERFLOW).store(1, Ordering::Relaxed);
                                return None;
                            }
                            _ => continue,
                        }
                    }
                    match k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => {
                            used.fetch_add(1, Ordering::Relaxed);
                            self.list(r, slot);
                            return Some(slot);
                        }
                        Err(won) if won == key => return Some(slot), // another process made it
                        Err(_) => {}                                 // taken by another pair
                    }
                }
                _ => {}
            }
        }
        self.global(OVERFLOW).store(1, Ordering::Relaxed);
        None
    }

    /// Puts the entry in `slot` at the front of receiver `r`'s list, unless another process
    /// has claimed it for that (others may push at the same time: a CAS loop).
    fn list(&self, r: usize, slot: usize) {
        let (head, link) = (
            self.client(r, RECEIVED_HEAD),
            self.at(slot, NEXT_OF_RECEIVER),
        );
        let first = head.load(Ordering::Acquire);
        if link
            .compare_exchange(0, LISTED | first, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.push(head, slot, first);
        }
    }

    /// The push itself: `first` is the head its link already holds.
    fn push(&self, head: &AtomicU64, slot: usize, mut first: u64) {
        let link = self.at(slot, NEXT_OF_RECEIVER);
        loop {
            match head.compare_exchange_weak(
                first,
                slot as u64 + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => {
                    first = now;
                    link.store(LISTED | first, Ordering::Release);
                }
            }
        }
    }

    /// Lists every entry that is on no list: one made by a process that was killed before it
    /// could list it (between its two steps). Returns how many. Only for when no process makes
    /// entries any more (the supervisor, as the drain starts).
    pub fn relist(&self) -> usize {
        let total = self.clients * self.slots;
        let mut on_a_list = vec![false; total];
        for r in 0..self.clients {
            let mut next = self.client(r, RECEIVED_HEAD).load(Ordering::Acquire);
            while let Some(slot) = next.checked_sub(1).map(|s| s as usize) {
                if slot >= total || on_a_list[slot] {
                    break; // (cannot happen: a guard against a cycle)
                }
                on_a_list[slot] = true;
                next = self.at(slot, NEXT_OF_RECEIVER).load(Ordering::Acquire) & !LISTED;
            }
        }
        let mut fixed = 0;
        for (slot, listed) in on_a_list.into_iter().enumerate() {
            let key = self.at(slot, KEY).load(Ordering::Acquire);
            if key != 0 && !listed {
                let head = self.client(key as usize - 1, RECEIVED_HEAD);
                let first = head.load(Ordering::Acquire);
                self.at(slot, NEXT_OF_RECEIVER)
                    .store(LISTED | first, Ordering::Release);
                self.push(head, slot, first);
                fixed += 1;
            }
        }
        fixed
    }

    /// The (sender, receiver) of the pair in `slot`.
    fn pair_at(&self, slot: usize) -> (usize, usize) {
        let r = peek(self.at(slot, KEY)).saturating_sub(1) as usize;
        (slot / self.slots, r)
    }

    /// The used slots of sender `s`'s table.
    fn row(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        let slots = if s < self.clients {
            s * self.slots..(s + 1) * self.slots
        } else {
            0..0
        };
        slots.filter(|&slot| peek(self.at(slot, KEY)) != 0)
    }

    /// A pair's entry, made if it has none (None when its sender's table is full): a handle
    /// a client keeps, so each message costs an atomic add and no lookup. Only a sender makes
    /// entries (before its first message on the pair), so none is made once the senders are
    /// done: what lets the drain's [`BlackBox::relist`] run alone.
    pub fn entry(&self, s: usize, r: usize) -> Option<Entry> {
        self.slot(s, r, true).map(Entry)
    }

    /// A pair's entry if its sender made one (a receiver's side: it never makes one).
    pub fn find(&self, s: usize, r: usize) -> Option<Entry> {
        self.slot(s, r, false).map(Entry)
    }

    /// Adds one to a counter of the entry `e`.
    pub fn add(&self, e: Entry, f: Field) {
        self.at(e.0, f as usize).fetch_add(1, Ordering::Relaxed);
    }

    /// Sets a counter of the entry `e`.
    pub fn put(&self, e: Entry, f: Field, v: u64) {
        self.at(e.0, f as usize).store(v, Ordering::Relaxed);
    }

    /// Number of clients.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// A pair's counter (0 for a pair that never carried traffic).
    pub fn get(&self, s: usize, r: usize, f: Field) -> u64 {
        self.slot(s, r, false)
            .map_or(0, |slot| self.at(slot, f as usize).load(Ordering::Relaxed))
    }

    /// Adds one to a pair's counter.
    pub fn bump(&self, s: usize, r: usize, f: Field) {
        if let Some(slot) = self.slot(s, r, true) {
            self.at(slot, f as usize).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets a pair's counter.
    pub fn set(&self, s: usize, r: usize, f: Field, v: u64) {
        if let Some(slot) = self.slot(s, r, true) {
            self.at(slot, f as usize).store(v, Ordering::Relaxed);
        }
    }

    /// The clients `s` sent to (or that were counted as receiving from it), in no set order.
    pub fn receivers_of(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        self.row(s).map(move |slot| self.pair_at(slot).1)
    }

    /// The clients that sent to `r` (or were counted as its senders), in no set order.
    pub fn senders_to(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        let mut next = if r < self.clients {
            self.client(r, RECEIVED_HEAD).load(Ordering::Acquire)
        } else {
            0
        };
        // (At most one step per sender: a guard, should a list ever hold an entry twice.)
        let mut steps = 0;
        std::iter::from_fn(move || {
            let slot = usize::try_from(next.checked_sub(1)?).ok()?;
            steps += 1;
            if slot >= self.clients * self.slots || steps > self.clients {
                return None;
            }
            next = peek(self.at(slot, NEXT_OF_RECEIVER)) & !LISTED;
            Some(self.pair_at(slot).0)
        })
    }

    /// Every pair with an entry, in order of (sender, receiver), with its counters (queued,
    /// bounced, received): what the verifier reads, once, at the end. (Plain loads: one process
    /// reads it all, and mapping the pages around each fault helps it.)
    pub fn pairs(&self) -> Vec<((usize, usize), [u64; 3])> {
        let mut all = Vec::new();
        for s in 0..self.clients {
            let row = all.len();
            for slot in s * self.slots..(s + 1) * self.slots {
                let key = self.at(slot, KEY).load(Ordering::Acquire);
                if key != 0 {
                    let f = |f: Field| self.at(slot, f as usize).load(Ordering::Relaxed);
                    let counts = [f(Field::Queued), f(Field::Bounced), f(Field::Received)];
                    all.push(((s, key as usize - 1), counts));
                }
            }
            all[row..].sort_unstable();
        }
        all
    }

    /// Whether a pair found its sender's table full (its counts are then missing: the verdict
    /// cannot stand on them). Only a relay that invents traffic gets here.
    pub fn overflowed(&self) -> bool {
        self.global(OVERFLOW).load(Ordering::Relaxed) != 0
    }

    /// How many receivers each sender has room for.
    pub fn capacity(&self) -> usize {
        self.limit
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
        let w = self.global(SEND_UNTIL);
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
        let b = BlackBox::new(3, 9).unwrap();
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
        let b = BlackBox::new(n, n * n).unwrap();
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
        let b = BlackBox::new(100, 10_000).unwrap(); // 1 MiB of counters: many pages
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

    /// C10K: at 10,000 clients the tables have room for the pairs that carry traffic, not for
    /// 10⁸; each client finds its peers, and the verifier every pair in order.
    #[test]
    fn a_sparse_table_lists_each_clients_peers_and_refuses_past_its_room() {
        let n = 10_000;
        let b = BlackBox::new(n, 3 * n).unwrap();
        assert!(b.capacity() >= 3, "{}", b.capacity());
        assert!(
            b.mem.len * 8 < 8 << 20,
            "room for 3 receivers a sender, not clients²: {} bytes",
            b.mem.len * 8
        );
        // Senders 0..3,000 each send to 3 receivers spread over all clients.
        let sent: Vec<(usize, usize)> = (0..3 * 3_000)
            .map(|k| (k / 3, (k * 7919 + 1) % n))
            .collect();
        for &(s, r) in &sent {
            b.bump(s, r, Field::Queued);
            b.bump(s, r, Field::Queued);
            b.set(s, r, Field::Next, 2);
        }
        b.bump(9_999, 0, Field::Received);
        let mut want: Vec<(usize, usize)> = sent.clone();
        want.push((9_999, 0));
        want.sort_unstable();
        let pairs: Vec<(usize, usize)> = b.pairs().into_iter().map(|p| p.0).collect();
        assert_eq!(pairs, want, "every pair with an entry, in order");
        assert_eq!(b.pairs()[0].1, [2, 0, 0], "queued, bounced, received");
        for &(s, r) in &sent {
            assert_eq!(b.get(s, r, Field::Queued), 2);
            assert!(
                b.receivers_of(s).any(|x| x == r),
                "{r} among {s}'s receivers"
            );
            assert!(b.senders_to(r).any(|x| x == s), "{s} on {r}'s list");
        }
        let mut to0: Vec<usize> = b.senders_to(0).collect();
        to0.sort_unstable();
        let want0: Vec<usize> = want.iter().filter(|p| p.1 == 0).map(|p| p.0).collect();
        assert_eq!(to0, want0, "each sender once");
        assert_eq!(
            b.get(1, 2, Field::Queued),
            0,
            "a pair without traffic reads as zero"
        );
        assert!(b.receivers_of(5_000).next().is_none() && b.receivers_of(n).next().is_none());
        assert!(!b.overflowed());
        // Past a sender's room: refused, said, and nothing else is disturbed.
        for r in 0..b.capacity() {
            b.bump(5_000, r, Field::Queued);
        }
        assert!(!b.overflowed(), "its room is all there");
        b.bump(5_000, 9_000, Field::Queued);
        assert!(b.overflowed(), "more pairs than room must be said");
        assert_eq!(b.get(5_000, 9_000, Field::Queued), 0);
        assert_eq!(b.get(sent[0].0, sent[0].1, Field::Next), 2);
        assert_eq!(b.receivers_of(5_000).count(), b.capacity());
    }

    /// One message per sender: a row of two slots with room for one receiver (its limit was
    /// 0 once, and every run with `--msgs 1` and deaths ended in "no verdict").
    #[test]
    fn a_sender_of_one_message_has_room_for_its_receiver() {
        let b = BlackBox::new(5, 5).unwrap();
        for s in 0..5 {
            b.bump(s, (s + 1) % 5, Field::Queued);
        }
        assert!(!b.overflowed());
        assert!((0..5).all(|s| b.get(s, (s + 1) % 5, Field::Queued) == 1));
    }

    /// A process killed between making a pair's entry and listing it (or between claiming
    /// it for the list and pushing it) leaves it on no list; the drain's `relist` puts it
    /// there, once.
    #[test]
    fn entries_a_killed_process_left_unlisted_are_listed_at_the_drain() {
        let n = 4;
        let b = BlackBox::new(n, n * n).unwrap();
        // Made and listed; then sender 1's, made and never listed (the key only).
        b.bump(0, 3, Field::Queued);
        let made = b.slots + 3;
        b.at(made, KEY).store(4, Ordering::Release);
        b.at(made, Field::Queued as usize)
            .store(7, Ordering::Relaxed);
        // Claimed for the list, never pushed.
        let claimed = 2 * b.slots + 3;
        b.at(claimed, KEY).store(4, Ordering::Release);
        b.at(claimed, NEXT_OF_RECEIVER)
            .store(LISTED, Ordering::Release);
        let mut senders: Vec<usize> = b.senders_to(3).collect();
        assert_eq!(senders, vec![0], "only the listed one, before");
        assert_eq!(b.relist(), 2);
        senders = b.senders_to(3).collect();
        senders.sort_unstable();
        assert_eq!(senders, vec![0, 1, 2]);
        assert_eq!(b.relist(), 0, "nothing twice");
        assert_eq!(b.get(1, 3, Field::Queued), 7);
    }

    /// Processes that make the same pair's entry at once share one entry, and every entry is
    /// on its lists once.
    #[test]
    fn concurrent_processes_share_one_entry_per_pair() {
        let n = 64;
        let b = BlackBox::new(n, n * n).unwrap();
        let children: Vec<_> = (0..4)
            .map(|_| {
                // Fork safety: as above, the child only touches the mapping and leaves with _exit.
                // SAFETY: the child does atomic work on the mapping and _exits.
                match unsafe { nix::unistd::fork() }.unwrap() {
                    nix::unistd::ForkResult::Child => {
                        for s in 0..n {
                            for r in 0..n {
                                b.bump(s, r, Field::Queued);
                            }
                        }
                        // SAFETY: ends the child at once.
                        unsafe { nix::libc::_exit(0) }
                    }
                    nix::unistd::ForkResult::Parent { child } => child,
                }
            })
            .collect();
        for c in children {
            nix::sys::wait::waitpid(c, None).unwrap();
        }
        assert_eq!(b.pairs().len(), n * n);
        for s in 0..n {
            assert_eq!(b.receivers_of(s).count(), n, "{s}'s list");
            assert_eq!(b.senders_to(s).count(), n);
            for r in 0..n {
                assert_eq!(b.get(s, r, Field::Queued), 4);
            }
        }
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
