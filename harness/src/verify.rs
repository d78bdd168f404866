//! The verifier: a streaming check at each receiver, and the final count over all records.
//!
//! FIFO per pair means a receiver can check each arrival against the next sequence it
//! expects from that sender, so checking needs memory in proportion to clients², never to
//! messages. The only other state is a small, capped set of sequences skipped by an
//! out-of-order arrival: one that arrives later was overtaken ("order"); one that never does
//! was lost, and the final count finds it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::blackbox::{BlackBox, Entry, Field};
use crate::payload::{self, Claim, Damage, Spec};
use crate::peers::PerPeer;
use crate::plan::{ClientPlan, Names, Work};
use crate::record::{Class, ClientReport, PeerCounts, Violation, VIOLATIONS_KEPT};
use crate::script::Body;

/// Width of a delivery-rate bucket at the start of a run.
pub const RATE_BUCKET_NS: u64 = 10_000_000;
/// Most buckets a receiver keeps (5.12 s at 10 ms): a run that outgrows them doubles their width,
/// merging neighbours, so its memory and its report stay the same size however long it runs.
const RATE_BUCKETS: u64 = 512;

/// Most skipped sequences a receiver remembers.
const GAPS_KEPT: usize = 4096;

/// A latency histogram in ns, 1 ns to 100 s, 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// What one receiving client checks as messages arrive.
pub struct Receiver {
    plan: ClientPlan,
    /// What it knows of each peer it has met (all of them, in a small run).
    peers: PerPeer<Peer>,
    /// A restarted process: a sender's first arrival may skip what died with its
    /// predecessor (each peer starts `fresh`).
    restarted: bool,
    gaps: HashSet<(usize, u64)>,
    /// More gaps than GAPS_KEPT: a late arrival outside the set is then called late, not a
    /// duplicate.
    gaps_overflowed: bool,
    report: ClientReport,
    counts: [u64; Class::ALL.len()],
    received_total: u64,
    /// Frames from the relay, whatever they were.
    arrivals: u64,
    /// Deliveries per bucket of `bucket_ns` since `clock0`.
    rate: Vec<u32>,
    /// Per bucket: timed deliveries, their latency sum and max (ns).
    lat: Vec<(u32, u64, u64)>,
    /// The buckets' width: 10 ms, doubled each time the run outgrows [`RATE_BUCKETS`].
    bucket_ns: u64,
    clock0: u64,
    bounced_total: u64,
    hist: Histogram<u64>,
    /// Runs with deaths: the shared counters, kept up to date as messages go.
    bb: Option<Arc<BlackBox>>,
    /// Runs with deaths, in the drain: end-of-run markers still awaited.
    fins_owed: usize,
}

/// What a receiver knows of one peer: as the sender of what arrives, and as the receiver of
/// what this client sends.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// Messages this client sent it, received from it, and had bounced on their way to it.
    sent: u64,
    received: u64,
    bounced: u64,
    /// The next sequence expected from it (random) or its messages so far (script).
    next: u64,
    /// Scripts only: the run of its messages here that holds the next expected one, and that
    /// run's first sequence.
    cursor: (usize, u64),
    /// How many messages it sends here in all (a payload naming a later sequence names no
    /// message at all).
    limit: u64,
    /// The last arrival from it, if it was late (filled a gap).
    last_late: Option<u64>,
    /// Arrivals that carried no sequence (empty payloads), taken as the next.
    unsequenced: u64,
    /// For a restarted receiver: nothing has arrived from it yet in this incarnation (the
    /// first arrival may skip what was in flight to the dead one).
    fresh: bool,
    /// Its end-of-run marker arrived.
    fin: bool,
    /// Runs with deaths: the drain waits for its end-of-run marker (it sent here).
    owes_fin: bool,
    /// Runs with deaths: where the black box counts this client's messages to it, and its
    /// messages to this client (found once, then kept).
    out_entry: Option<Entry>,
    in_entry: Option<Entry>,
}

/// What a sender should have sent as one message.
enum Expect {
    /// A script's literal text.
    Literal(Vec<u8>),
    /// A sized payload made to this spec.
    Sized(Spec),
    /// Nothing: the sender sends no message with that sequence here.
    Nothing,
}

/// How many messages sender `s` sends to the client of `plan` in all, or an upper bound.
fn sends_here(plan: &ClientPlan, s: usize) -> u64 {
    match &plan.work {
        // Each sender sends `msgs` in all, to whoever its draws pick.
        Work::Random(sc) => sc.msgs,
        &Work::PingPong {
            partner, rounds, ..
        } => {
            if s == partner {
                rounds
            } else {
                0
            }
        }
        Work::Script { incoming, .. } => incoming
            .get(s)
            .map_or(0, |runs| runs.iter().map(|r| r.count).sum()),
    }
}

/// The end-of-run marker of runs with deaths (real payloads there are at least 16 bytes).
pub const FIN: &[u8] = b"FIN";

/// Shortens a payload for a violation's text.
fn show(p: &[u8]) -> String {
    let t = String::from_utf8_lossy(&p[..p.len().min(40)]).into_owned();
    if p.len() > 40 {
        format!("{t:?}... ({} bytes)", p.len())
    } else {
        format!("{t:?}")
    }
}

impl Receiver {
    /// The checker for the client of `plan`.
    pub fn new(plan: ClientPlan) -> Receiver {
        let n = plan.names.all().len();
        let me = plan.me;
        let peers = PerPeer::new(n, |s| Peer {
            limit: sends_here(&plan, s),
            ..Peer::default()
        });
        Receiver {
            plan,
            peers,
            restarted: false,
            gaps: HashSet::new(),
            gaps_overflowed: false,
            report: ClientReport {
                index: me,
                ..ClientReport::default()
            },
            counts: [0; Class::ALL.len()],
            received_total: 0,
            arrivals: 0,
            rate: Vec::new(),
            lat: Vec::new(),
            bucket_ns: RATE_BUCKET_NS,
            clock0: 0,
            bounced_total: 0,
            hist: latency_histogram(),
            bb: None,
            fins_owed: 0,
        }
    }

    /// Peer `s`'s record (made when first met).
    fn peer(&mut self, s: usize) -> &mut Peer {
        let (plan, fresh) = (&self.plan, self.restarted);
        self.peers.at(s, |s| Peer {
            limit: sends_here(plan, s),
            fresh,
            ..Peer::default()
        })
    }

    /// The checker for a run with deaths: it keeps the black box up to date. A restarted
    /// incarnation (`restarted`) picks up where the dead one's counters stopped.
    pub fn with_blackbox(plan: ClientPlan, bb: Arc<BlackBox>, restarted: bool) -> Receiver {
        let mut rx = Receiver::new(plan);
        if restarted {
            let me = rx.plan.me;
            rx.restarted = true;
            // (A peer without an entry starts fresh when first met: `peer` sees `restarted`.)
            for s in bb.senders_to(me) {
                let next = bb.get(s, me, Field::Next);
                let p = rx.peer(s);
                p.next = next;
                p.fresh = true;
            }
        }
        rx.bb = Some(bb);
        rx
    }

    /// A script's restarted process: takes what reached its predecessor in the phases before
    /// `p` as received (each phase ended only when all of it had arrived).
    pub fn skip_to_phase(&mut self, p: usize) {
        let Work::Script { incoming_upto, .. } = &self.plan.work else {
            return;
        };
        let Some(upto) = incoming_upto.get(p) else {
            return;
        };
        // (The cursor stays at the first run: the first lookup walks forward from there.)
        for (s, k) in upto.clone().into_iter().enumerate().filter(|&(_, k)| k > 0) {
            let peer = self.peer(s);
            peer.next = k;
            peer.received += k;
        }
        let before = p.checked_sub(1);
        self.received_total = before.map_or(0, |q| self.plan.expect_in[q]);
    }

    /// A script's restarted process: a send of its predecessor's to an absent name, which
    /// bounced before its phase ended.
    pub fn bounced_earlier(&mut self, d: usize) {
        if d < self.plan.names.all().len() {
            self.peer(d).bounced += 1;
            self.bounced_total += 1;
        }
    }

    /// The drain starts (no process will die or send any more): from now on it awaits an
    /// end-of-run marker from each live client that sent here, and no other, so the drain is
    /// linear in the pairs that carried traffic, not in clients².
    pub fn await_fins(&mut self) {
        let Some(bb) = self.bb.clone() else { return };
        let me = self.plan.me;
        for s in bb.senders_to(me) {
            if s != me && bb.alive(s) && bb.get(s, me, Field::Queued) > 0 {
                let p = self.peer(s);
                if !p.owes_fin && !p.fin {
                    p.owes_fin = true;
                    self.fins_owed += 1;
                }
            }
        }
    }

    /// The live clients that sent here and whose end-of-run marker has not arrived (as of
    /// [`Receiver::await_fins`]).
    pub fn missing_fins(&self) -> Vec<String> {
        let mut left: Vec<usize> = match &self.bb {
            Some(bb) => bb
                .senders_to(self.plan.me)
                .filter(|&s| self.peers.get(s).is_some_and(|p| p.owes_fin && !p.fin))
                .collect(),
            None => Vec::new(),
        };
        left.sort_unstable();
        left.into_iter().map(|s| self.name(s)).collect()
    }

    /// True when every marker [`Receiver::await_fins`] asked for has arrived.
    pub fn all_fins(&self) -> bool {
        self.fins_owed == 0
    }

    /// Starts the delivery-rate clock (when the exchange starts).
    pub fn start_clock(&mut self, now_ns: u64) {
        self.clock0 = now_ns;
    }

    /// Messages received in good order or late (not duplicates, not misrouted).
    pub fn received_total(&self) -> u64 {
        self.received_total
    }

    /// Valid bounces received.
    pub fn bounced_total(&self) -> u64 {
        self.bounced_total
    }

    /// True when everything phase `p` requires has arrived.
    pub fn phase_complete(&self, p: usize) -> bool {
        self.received_total >= self.plan.expect_in.get(p).copied().unwrap_or(0)
            && self.bounced_total >= self.plan.expect_bounces.get(p).copied().unwrap_or(0)
    }

    /// Notes a message this client sent (for matching bounces and the final count).
    pub fn sent(&mut self, receiver: usize) {
        let me = self.plan.me;
        let peer = self.peer(receiver);
        peer.sent += 1;
        let kept = peer.out_entry;
        if let Some(bb) = &self.bb {
            let e = kept.or_else(|| bb.entry(me, receiver));
            if let Some(e) = e {
                bb.add(e, Field::Queued);
            }
            if kept.is_none() {
                self.peer(receiver).out_entry = e;
            }
        }
    }

    fn name(&self, i: usize) -> String {
        self.plan.names.name(i).to_string()
    }

    fn violation(
        &mut self,
        class: Class,
        sender: String,
        seq: Option<u64>,
        expected: String,
        got: String,
    ) {
        self.counts[class as usize] += 1;
        if self.report.violations.len() < VIOLATIONS_KEPT {
            let receiver = self.name(self.plan.me);
            self.report.violations.push(Violation {
                class,
                sender,
                receiver,
                seq,
                expected,
                got,
            });
        }
    }

    /// Frames from the relay so far (deliveries of every kind, bounces).
    pub fn arrivals(&self) -> u64 {
        self.arrivals
    }

    /// Checks a DELIVER that arrived at `now_ns`.
    pub fn deliver(&mut self, src: &[u8], p: &[u8], now_ns: u64) {
        self.arrivals += 1;
        let mut bucket = None;
        if self.clock0 > 0 {
            let b = self.bucket(now_ns);
            if self.rate.len() <= b {
                self.rate.resize(b + 1, 0);
            }
            self.rate[b] += 1;
            bucket = Some(b);
        }
        let clients = self.plan.names.clients();
        let Some(s) = self.plan.names.index(src).filter(|&s| s < clients) else {
            let got = format!("src {:?}", String::from_utf8_lossy(src));
            self.violation(
                Class::Spoofed,
                got.clone(),
                None,
                "a DELIVER from one of the clients".into(),
                got,
            );
            return;
        };
        if self.bb.is_some() && p == FIN {
            let peer = self.peer(s);
            let owed = peer.owes_fin && !peer.fin;
            peer.fin = true;
            self.fins_owed -= usize::from(owed);
            return;
        }
        let checked = match &self.plan.work {
            Work::Random(_) => self.check_sequenced(s, p),
            Work::Script { .. } => self.check_scripted(s, p),
            &Work::PingPong { initiator, .. } => {
                // Only the initiator times: a pong carries its ping's send time (a round trip).
                self.check_sequenced(s, p).map(|timed| timed && initiator)
            }
        };
        let Some(timed) = checked else { return };
        let me = self.plan.me;
        let peer = self.peer(s);
        peer.received += 1;
        let (next, kept) = (peer.next, peer.in_entry);
        if let Some(bb) = &self.bb {
            // (Its sender made the entry before it sent: a receiver only looks it up.)
            let e = kept.or_else(|| bb.find(s, me));
            if let Some(e) = e {
                bb.add(e, Field::Received);
                bb.put(e, Field::Next, next);
            }
            if kept.is_none() {
                self.peer(s).in_entry = e;
            }
        }
        self.report.bytes_received += p.len() as u64;
        self.received_total += 1;
        if timed {
            // (0: the message carried no send time, as a pong answering a ping too short for one.)
            if let Some(t) = payload::send_ns(p).filter(|&t| t > 0) {
                let lat = now_ns.saturating_sub(t).max(1);
                // Past the histogram's 100 s bound it counts as 100 s, not as nothing.
                self.hist.saturating_record(lat);
                if let Some(b) = bucket {
                    if self.lat.len() <= b {
                        self.lat.resize(b + 1, (0, 0, 0));
                    }
                    let e = &mut self.lat[b];
                    *e = (e.0.saturating_add(1), e.1.saturating_add(lat), e.2.max(lat));
                }
            }
        }
    }

    /// The bucket `now_ns` falls in, widening the buckets until it fits in [`RATE_BUCKETS`].
    fn bucket(&mut self, now_ns: u64) -> usize {
        let since = now_ns.saturating_sub(self.clock0);
        while since / self.bucket_ns >= RATE_BUCKETS {
            self.bucket_ns = self.bucket_ns.saturating_mul(2);
            let half = |len: usize| len.div_ceil(2);
            for i in 0..half(self.rate.len()) {
                let pair =
                    self.rate[2 * i].saturating_add(self.rate.get(2 * i + 1).copied().unwrap_or(0));
                self.rate[i] = pair;
            }
            self.rate.truncate(half(self.rate.len()));
            for i in 0..half(self.lat.len()) {
                let (a, b) = (
                    self.lat[2 * i],
                    self.lat.get(2 * i + 1).copied().unwrap_or((0, 0, 0)),
                );
                self.lat[i] = (
                    a.0.saturating_add(b.0),
                    a.1.saturating_add(b.1),
                    a.2.max(b.2),
                );
            }
            self.lat.truncate(half(self.lat.len()));
        }
        (since / self.bucket_ns) as usize
    }

    /// A name for an index read from a payload: it may be any number at all.
    fn label(&self, i: u32) -> String {
        match self.plan.names.all().get(i as usize) {
            Some(n) => n.clone(),
            None => format!("#{i} (no such client)"),
        }
    }

    /// What the sender `s` should have sent here as message `seq`.
    fn expect_at(&mut self, s: usize, seq: u64) -> Expect {
        match &self.plan.work {
            Work::Random(sc) => Expect::Sized(sc.spec()),
            &Work::PingPong { size, .. } => Expect::Sized(self.plan.spec(size)),
            Work::Script {
                incoming, bodies, ..
            } => {
                let runs = &incoming[s];
                // Walk from the cursor (the run that holds the next expected sequence) when
                // `seq` is not behind it; from the start otherwise (a late message).
                let cursor = self.peers.get(s).map_or((0, 0), |p| p.cursor);
                let (mut run, mut start) = cursor;
                if seq < start {
                    (run, start) = (0, 0);
                }
                while let Some(r) = runs.get(run) {
                    let end = start.saturating_add(r.count);
                    if seq < end {
                        if start >= cursor.1 {
                            if let Some(p) = self.peers.get_mut(s) {
                                p.cursor = (run, start);
                            }
                        }
                        return match &bodies[r.body] {
                            Body::Literal(t) => Expect::Literal(t.clone()),
                            &Body::Sized(size) => Expect::Sized(self.plan.spec(size)),
                        };
                    }
                    (run, start) = (run + 1, end);
                }
                Expect::Nothing
            }
        }
    }

    /// Sized payloads: each arrival against the next sequence expected from its sender. The
    /// payload is checked against itself before anything is read from it. Returns None when it
    /// does not count as received (misrouted, spoofed, a duplicate: already reported), else
    /// whether its send time may be trusted (it was found whole).
    fn check_sequenced(&mut self, s: usize, p: &[u8]) -> Option<bool> {
        let next = self.peer(s).next;
        let (raw, sender, receiver) = match payload::claim(self.plan.seed, p, next) {
            Claim::Blank => {
                self.blank(s, next);
                return Some(false);
            }
            Claim::Damaged => {
                self.damaged(s, p, next);
                return Some(false);
            }
            Claim::Names {
                seq,
                sender,
                receiver,
            } => (seq, sender, receiver),
        };
        if !self.identity_holds(s, raw, sender, receiver) {
            return None;
        }
        // Runs with deaths: a restarted sender flags its first message to each receiver.
        let restarted = self.bb.is_some() && raw & payload::RESTART != 0;
        let seq = if restarted {
            raw & !payload::RESTART
        } else {
            raw
        };
        if seq >= self.peer(s).limit {
            self.never_sent(s, next, seq);
            return Some(false);
        }
        if !self.place(s, seq, next, restarted) {
            return None;
        }
        // Its length (and, under 17 bytes, every byte) against the message it names; the
        // payload was made from the sequence as sent, flag and all.
        match self.expect_at(s, seq) {
            Expect::Sized(spec) => self.integrity(spec, s, seq, raw, p),
            Expect::Literal(t) => {
                let name = self.name(s);
                self.violation(Class::Integrity, name, Some(seq), show(&t), show(p));
            }
            Expect::Nothing => {}
        }
        Some(true)
    }

    /// A payload with nothing in it that tells one message from another: FIFO says it is
    /// the next, and its length cannot be checked against that one (a loss before it would
    /// make a loss look like damage). Only where no message may be empty is it damage.
    fn blank(&mut self, s: usize, next: u64) {
        let may_be_empty =
            matches!(self.expect_at(s, next), Expect::Sized(spec) if spec.size.min == 0);
        // (Past the sender's last message, it is one too many: the count says so.)
        if !may_be_empty && next < self.peer(s).limit {
            self.next_is_damaged(s, next, "an empty payload".into());
        } else {
            self.peer(s).unsequenced += 1;
        }
        self.advance(s, next);
    }

    /// A payload that fails its own check: its identity cannot be trusted either. FIFO says
    /// it was the next one.
    fn damaged(&mut self, s: usize, p: &[u8], next: u64) {
        let how = if p.len() >= payload::HEADER {
            "checksum mismatch"
        } else {
            "its filler is not that of the message it names"
        };
        self.next_is_damaged(s, next, format!("different bytes ({how})"));
        self.advance(s, next);
    }

    /// The message FIFO says came next from `s` arrived as `got`, not the bytes sent.
    fn next_is_damaged(&mut self, s: usize, next: u64, got: String) {
        let name = self.name(s);
        self.violation(
            Class::Integrity,
            name,
            Some(next),
            "the bytes sent".into(),
            got,
        );
    }

    /// Whether the payload was meant for this client and came from the sender the relay
    /// names; a violation (misrouted, spoofed) when not.
    fn identity_holds(
        &mut self,
        s: usize,
        raw: u64,
        sender: Option<u32>,
        receiver: Option<u32>,
    ) -> bool {
        let me = self.plan.me;
        if let Some(r) = receiver.filter(|&r| r as usize != me) {
            let (from, to) = (self.label(sender.unwrap_or(s as u32)), self.label(r));
            self.violation(
                Class::Misrouted,
                from,
                Some(raw & !payload::RESTART),
                format!("delivery to {to}"),
                format!("delivered to {}", self.name(me)),
            );
            return false;
        }
        if let Some(x) = sender.filter(|&x| x as usize != s) {
            let from = self.label(x);
            self.violation(
                Class::Spoofed,
                from.clone(),
                Some(raw & !payload::RESTART),
                format!("src {from}"),
                format!("src {}", self.name(s)),
            );
            return false;
        }
        true
    }

    /// A payload naming a sequence its sender never sent: damage its size could not show as
    /// damage.
    fn never_sent(&mut self, s: usize, next: u64, seq: u64) {
        let (name, limit) = (self.name(s), self.peer(s).limit);
        self.violation(
            Class::Integrity,
            name.clone(),
            Some(next),
            format!(
                "seq {next} ({name} sends {} at most {limit})",
                self.name(self.plan.me)
            ),
            format!("a payload naming seq {seq}"),
        );
        self.advance(s, next);
    }

    /// Places message `seq` from `s` in its stream (next expected: `next`): late, a
    /// duplicate, the next one, or ahead (the ones skipped are late or lost). False for a
    /// duplicate, which is not checked further.
    fn place(&mut self, s: usize, seq: u64, next: u64, restarted: bool) -> bool {
        let after_late = self.peer(s).last_late.take();
        if seq < next {
            let late = self.gaps.remove(&(s, seq)) || self.gaps_overflowed;
            if !late {
                self.violation(
                    Class::Duplicate,
                    self.name(s),
                    Some(seq),
                    format!("seq {next} (seq {seq} already arrived)"),
                    format!("seq {seq} again"),
                );
                return false;
            }
            // It was skipped over when a later one arrived: overtaken, not lost. The ones
            // right behind it, late in turn, were overtaken by the same message: one
            // violation (a sequence damaged to read as a later one would otherwise make
            // every message up to it a violation of its own).
            self.peer(s).last_late = Some(seq);
            let behind_the_last = after_late.is_some() && after_late == seq.checked_sub(1);
            if !behind_the_last {
                self.violation(
                    Class::Order,
                    self.name(s),
                    Some(seq),
                    format!("seq {seq} before seq {}", next - 1),
                    format!("seq {seq} after it"),
                );
            }
        } else if !self.restart_skip(s, restarted) {
            // Skipped over (none when it is the next): late (an order violation, reported
            // when it comes) or lost (found by the final count). Only its arrival can tell.
            for missing in next..seq {
                if self.gaps.len() >= GAPS_KEPT {
                    self.gaps_overflowed = true;
                    break;
                }
                self.gaps.insert((s, missing));
            }
        }
        if seq >= next {
            self.advance(s, seq);
        }
        self.peer(s).fresh = false;
        true
    }

    /// Moves the next expected sequence from `s` past `seq`.
    fn advance(&mut self, s: usize, seq: u64) {
        self.peer(s).next = seq.saturating_add(1);
    }

    /// Runs with deaths: a skip over messages that died with a process is not a gap. A
    /// restarted sender flags its first message to each receiver (what its predecessor queued
    /// but never wrote is gone); a restarted receiver's first arrival from each sender may skip
    /// what was in flight to its predecessor.
    fn restart_skip(&mut self, s: usize, flagged: bool) -> bool {
        if self.bb.is_none() {
            return false;
        }
        flagged || self.peers.get(s).map_or(self.restarted, |p| p.fresh)
    }

    /// The length and bytes of message `seq` (sent as `raw`) from `s`, once its payload was
    /// found whole.
    fn integrity(&mut self, spec: Spec, s: usize, seq: u64, raw: u64, p: &[u8]) {
        if let Err(d) = payload::check_named(&spec, s, self.plan.me, raw, p) {
            let (expected, got) = match d {
                Damage::Length { expected, got } => {
                    (format!("{expected} bytes"), format!("{got} bytes"))
                }
                Damage::Bytes => ("the bytes sent".to_string(), "different bytes".to_string()),
            };
            self.violation(Class::Integrity, self.name(s), Some(seq), expected, got);
        }
    }

    /// Scripts: each arrival against the next message the script sends on this pair.
    fn check_scripted(&mut self, s: usize, p: &[u8]) -> Option<bool> {
        let seq = self.peer(s).next;
        match self.expect_at(s, seq) {
            Expect::Literal(t) => {
                self.peer(s).unsequenced += 1;
                if t != p {
                    self.violation(Class::Integrity, self.name(s), Some(seq), show(&t), show(p));
                }
                self.advance(s, seq);
                Some(false)
            }
            Expect::Sized(_) => self.check_sequenced(s, p),
            // Nothing more is due from this sender: a payload that can name its message says
            // which one it is (a late one, a duplicate, a misrouted one).
            Expect::Nothing if self.sized_from(s, p) => self.check_sequenced(s, p),
            Expect::Nothing => {
                self.violation(
                    Class::Duplicate,
                    self.name(s),
                    Some(seq),
                    format!("no more messages (all {seq} arrived)"),
                    format!("one more: {}", show(p)),
                );
                None
            }
        }
    }

    /// Scripts: whether an arrival from `s` past its last message should be read as a sized
    /// payload: its last message here was one, or it sends nothing here and the payload is
    /// long enough to name its message.
    fn sized_from(&self, s: usize, p: &[u8]) -> bool {
        let Work::Script {
            incoming, bodies, ..
        } = &self.plan.work
        else {
            return true;
        };
        match incoming[s].last() {
            Some(r) => matches!(bodies[r.body], Body::Sized(_)),
            None => p.len() >= payload::IDENT && bodies.iter().any(|b| matches!(b, Body::Sized(_))),
        }
    }

    /// Checks a BOUNCE: it must be a message this client really sent.
    pub fn bounce(&mut self, dst: &[u8], p: &[u8]) {
        self.arrivals += 1;
        let me = self.plan.me;
        let d = self.plan.names.index(dst);
        let id = payload::ident(p);
        // In random and ping-pong runs every name is a client's: a BOUNCE may only come for
        // one that died (and was not yet back). Otherwise the relay lost the message and said
        // nobody held the name. (Scripts bounce off absent names; their counts are checked.)
        let absent = |d: usize| match &self.plan.work {
            Work::Script { .. } => true,
            Work::Random(_) | Work::PingPong { .. } => {
                d >= self.plan.names.clients()
                    || self.bb.as_ref().is_some_and(|bb| bb.deaths(d) > 0)
            }
        };
        let real = match d {
            // (Its sequence is not checked: an incarnation's start where its predecessor's ended.)
            Some(d) if self.peers.get(d).is_some_and(|p| p.bounced < p.sent) && absent(d) => {
                match (&self.plan.work, id) {
                    (Work::Random(_), Some(id)) => {
                        id.sender as usize == me && id.receiver as usize == d
                    }
                    _ => true,
                }
            }
            _ => false,
        };
        match (real, d) {
            (true, Some(d)) => {
                self.peer(d).bounced += 1;
                self.bounced_total += 1;
                if let Some(bb) = &self.bb {
                    bb.bump(me, d, Field::Bounced);
                }
            }
            _ => self.violation(
                Class::Bounce,
                self.name(me),
                id.map(|i| i.seq),
                "a BOUNCE of a message this client sent".into(),
                format!("BOUNCE for {:?}", String::from_utf8_lossy(dst)),
            ),
        }
    }

    /// Adds a transcript line, if the plan keeps a transcript.
    pub fn note(&mut self, now_ns: u64, what: impl FnOnce() -> String) {
        if self.plan.transcript && self.report.transcript.len() < crate::record::TRANSCRIPT_KEPT {
            self.report.transcript.push((now_ns, what()));
        }
    }

    /// The client's report.
    pub fn finish(
        mut self,
        finished_ns: u64,
        complete: bool,
        error: Option<String>,
    ) -> ClientReport {
        self.report.violation_counts = Class::ALL
            .iter()
            .filter(|c| self.counts[**c as usize] > 0)
            .map(|&c| (c, self.counts[c as usize]))
            .collect();
        self.report.latency_ns = self
            .hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let mut holes: HashMap<usize, (u64, Option<u64>)> = HashMap::new();
        for &(s, seq) in &self.gaps {
            let h = holes.entry(s).or_default();
            h.0 += 1;
            h.1 = Some(h.1.map_or(seq, |f| f.min(seq)));
        }
        self.report.peers = self
            .peers
            .sorted()
            .into_iter()
            // (A hole is only ever left by a later arrival: a peer with one has received.)
            .filter(|(_, p)| p.sent + p.received + p.bounced > 0)
            .map(|(i, p)| {
                let (holes, first_hole) = holes.get(&i).copied().unwrap_or_default();
                PeerCounts {
                    peer: i,
                    sent: p.sent,
                    received: p.received,
                    bounced: p.bounced,
                    holes,
                    first_hole,
                    next: p.next,
                    unsequenced: p.unsequenced,
                }
            })
            .collect();
        self.report.rate_clock0_ns = self.clock0;
        self.report.bucket_ns = self.bucket_ns;
        self.report.rate = self
            .rate
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (i as u32, n))
            .collect();
        self.report.latency = self
            .lat
            .iter()
            .enumerate()
            .filter(|(_, l)| l.0 > 0)
            .map(|(i, &(n, sum, max))| (i as u32, n, sum, max))
            .collect();
        self.report.finished_ns = finished_ns;
        self.report.complete = complete;
        self.report.error = error;
        self.report
    }
}

/// Totals per check, over all clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Messages bounced.
    pub bounced: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
}

/// The verifier's result.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Violations by class.
    pub counts: Vec<(Class, u64)>,
    /// Violations in detail, lost messages first per pair, capped per client.
    pub violations: Vec<Violation>,
    /// Totals.
    pub totals: Totals,
    /// Merged latency (ns).
    pub latency: Option<Histogram<u64>>,
}

impl Verification {
    /// Number of violations of a class.
    pub fn count(&self, c: Class) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, n)| *n)
    }

    /// Total violations.
    pub fn total_violations(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// What process faults did that the final count must allow for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deaths<'a> {
    /// Runs with killed clients: the counters every process kept, the dead ones included.
    pub blackbox: Option<&'a BlackBox>,
    /// The relay was killed: whatever it held was lost with it.
    pub relay_killed: bool,
    /// Most messages that can be in flight on one pair when a process dies: the sender's
    /// unwritten batch, the relay's output buffer and the kernel's socket buffers, in frames.
    pub in_flight_cap: u64,
    /// A signal stopped the run: what was still in flight cannot be told from a loss, so no
    /// pair's count is compared (what arrived is still checked, message by message).
    pub interrupted: bool,
}

/// Compares every pair's sent count with its delivered count and gathers the receivers'
/// findings. `reports[i]` is `None` for a client that never reported.
pub fn verify(names: &Names, reports: &[Option<ClientReport>]) -> Verification {
    verify_with(names, reports, &Deaths::default())
}

/// [`verify`] for a run in which processes died. Between processes that lived, the count is
/// exact as ever. A pair with a death may have lost messages, but only at the death: every
/// receiver's stream must be a gap-free prefix (no holes), nothing may have been both
/// delivered and bounced, and no more may be missing than could have been in flight.
pub fn verify_with(
    names: &Names,
    reports: &[Option<ClientReport>],
    deaths: &Deaths<'_>,
) -> Verification {
    let mut c = Counted::gather(names, reports);
    // Completeness, per pair: what the sender sent and did not get back as a bounce must
    // have been delivered. Pairs that carried nothing are never visited.
    match deaths.blackbox {
        // With a black box, its counts replace the reports' own.
        Some(bb) => c.by_blackbox(bb, deaths),
        None if deaths.interrupted => {}
        None => c.by_reports(deaths),
    }
    if deaths.blackbox.is_none() && !deaths.relay_killed {
        c.excess();
    }
    if deaths.blackbox.is_some() || deaths.relay_killed {
        c.holes(deaths);
    }
    c.finish()
}

/// The verifier at work: what the reports said, and the findings so far.
struct Counted<'a> {
    names: &'a Names,
    reports: &'a [Option<ClientReport>],
    v: Verification,
    /// Violations per class, all counted (the details keep the first few).
    counts: [u64; Class::ALL.len()],
    hist: Histogram<u64>,
    /// (sender, receiver) -> what the receiver counted from the sender.
    delivered: HashMap<(usize, usize), PeerCounts>,
    /// (sender, receiver) -> messages sent and not bounced, from the senders' side.
    owed: HashMap<(usize, usize), u64>,
    /// The pairs' findings, before the receivers' own.
    details: Vec<Violation>,
}

impl<'a> Counted<'a> {
    /// Adds up what every report says: totals, counts, latency, and each pair's numbers.
    fn gather(names: &'a Names, reports: &'a [Option<ClientReport>]) -> Counted<'a> {
        let mut c = Counted {
            names,
            reports,
            v: Verification::default(),
            counts: [0u64; Class::ALL.len()],
            hist: latency_histogram(),
            delivered: HashMap::new(),
            owed: HashMap::new(),
            details: Vec::new(),
        };
        for r in reports.iter().flatten() {
            c.v.totals.sent += r.sent();
            c.v.totals.received += r.received();
            c.v.totals.bounced += r.bounced();
            c.v.totals.bytes_received += r.bytes_received;
            for &(class, k) in &r.violation_counts {
                c.counts[class as usize] += k;
            }
            for &(value, count) in &r.latency_ns {
                let _ = c.hist.record_n(value, count);
            }
            for p in &r.peers {
                c.delivered.insert((p.peer, r.index), *p);
                c.owed
                    .insert((r.index, p.peer), p.sent.saturating_sub(p.bounced));
            }
        }
        c
    }

    fn name(&self, i: usize) -> String {
        self.names.name(i).to_string()
    }

    /// One finding: `k` violations of its class, described by `v`.
    fn found(&mut self, v: Violation, k: u64) {
        self.counts[v.class as usize] += k;
        self.details.push(v);
    }

    /// A finding about the pair (sender `s`, receiver `r`) as a whole: `k` violations.
    fn found_on_pair(
        &mut self,
        (class, s, r, seq): (Class, usize, usize, Option<u64>),
        expected: String,
        got: String,
        k: u64,
    ) {
        let v = Violation {
            class,
            sender: self.name(s),
            receiver: self.name(r),
            seq,
            expected,
            got,
        };
        self.found(v, k);
    }

    /// Runs with deaths: every pair by the shared counters, which outlive a killed client.
    fn by_blackbox(&mut self, bb: &BlackBox, deaths: &Deaths<'_>) {
        self.v.totals = Totals {
            bytes_received: self.v.totals.bytes_received,
            ..Totals::default()
        };
        // (A pair without an entry carried nothing: every count 0, nothing to find.)
        for ((s, r), [q, b, g]) in bb.pairs() {
            self.v.totals.sent += q;
            self.v.totals.bounced += b;
            self.v.totals.received += g;
            if deaths.interrupted {
                continue; // counted, not compared: see Deaths::interrupted
            }
            if let Some((v, k)) = pair_check(
                || (self.name(s), self.name(r)),
                (q, b, g),
                bb.deaths(s) + bb.deaths(r) + u64::from(deaths.relay_killed),
                deaths.in_flight_cap,
            ) {
                self.found(v, k);
            }
        }
    }

    /// Every pair by the reports: sends to a name nobody holds must have bounced; the rest
    /// must have arrived (all of it, or, when the relay was killed, a prefix).
    fn by_reports(&mut self, deaths: &Deaths<'_>) {
        let (n, reports) = (self.names.clients(), self.reports);
        for (s, sr) in reports.iter().enumerate().take(n) {
            let Some(sr) = sr else { continue };
            for p in sr.peers.iter().filter(|p| p.sent > 0) {
                let r = p.peer;
                if r >= n {
                    self.unheld(s, p);
                } else if reports.get(r).is_none_or(Option::is_none) {
                    // The receiver never reported: the run's ending says why.
                } else if deaths.relay_killed {
                    let got = self.delivered.get(&(s, r)).map_or(0, |c| c.received);
                    if let Some((v, k)) = pair_check(
                        || (self.name(s), self.name(r)),
                        (p.sent, p.bounced, got),
                        1,
                        deaths.in_flight_cap,
                    ) {
                        self.found(v, k);
                    }
                } else {
                    self.lost(s, p);
                }
            }
        }
    }

    /// Sends to a name nobody holds: every one must have bounced.
    fn unheld(&mut self, s: usize, p: &PeerCounts) {
        let (r, sent, bounced) = (p.peer, p.sent, p.bounced);
        let missing = sent.saturating_sub(bounced);
        if missing > 0 {
            let expected = format!("{sent} BOUNCEs (nobody holds {})", self.name(r));
            let pair = (Class::Bounce, s, r, Some(bounced));
            self.found_on_pair(pair, expected, format!("{bounced}"), missing);
        }
    }

    /// A pair between two clients that reported: what was sent and not bounced must have
    /// arrived.
    fn lost(&mut self, s: usize, p: &PeerCounts) {
        let r = p.peer;
        let counted = self.delivered.get(&(s, r)).copied().unwrap_or_default();
        let got = counted.received;
        let due = p.sent.saturating_sub(p.bounced);
        // What is missing by count, or by the holes where they show more: an arrival that
        // named a later sequence than its own (damage a short payload cannot show) fills
        // the count but leaves its own hole. (Every counted arrival moves the next
        // expected sequence past itself or fills a hole, so the holes and where the stream
        // stopped add up to the count's shortfall whenever they do not exceed it.)
        let lost = due.saturating_sub(got).max(counted.holes);
        if lost == 0 {
            return;
        }
        let first = first_missing(&counted);
        let which = match first {
            Some(f) => format!("the first seq {f}"),
            None => "which ones cannot be told (payloads without a sequence)".into(),
        };
        self.found_on_pair(
            (Class::Lost, s, r, first),
            format!("{due} messages delivered"),
            format!("{got} delivered; {lost} missing, {which}"),
            lost,
        );
    }

    /// More delivered than sent on a pair: duplicates (or misrouted or spoofed messages)
    /// that the payloads could not show as such. Counted whatever the payload size.
    fn excess(&mut self) {
        let reports = self.reports;
        let mut excess: Vec<((usize, usize), u64, u64)> = self
            .delivered
            .iter()
            .filter(|((s, _), _)| reports.get(*s).is_some_and(Option::is_some))
            .filter_map(|(&(s, r), c)| {
                let sent = self.owed.get(&(s, r)).copied().unwrap_or(0);
                (c.received > sent).then_some(((s, r), sent, c.received))
            })
            .collect();
        excess.sort_unstable();
        for ((s, r), sent, got) in excess {
            self.found_on_pair(
                (Class::Duplicate, s, r, None),
                format!("at most {sent} delivered (as many as were sent)"),
                format!("{got} delivered"),
                got - sent,
            );
        }
    }

    /// Runs with deaths: any stream with a hole lost a message in the middle, which no death
    /// explains. (Pairs without a death were counted exactly; a hole there is already in
    /// that count.)
    fn holes(&mut self, deaths: &Deaths<'_>) {
        let slack = |s: usize, r: usize| {
            deaths.relay_killed
                || deaths
                    .blackbox
                    .is_some_and(|bb| bb.deaths(s) + bb.deaths(r) > 0)
        };
        let holed: Vec<(usize, usize, u64)> = self
            .reports
            .iter()
            .flatten()
            .flat_map(|r| r.peers.iter().map(move |p| (p.peer, r.index, p.holes)))
            .filter(|&(s, r, holes)| holes > 0 && slack(s, r))
            .collect();
        for (s, r, holes) in holed {
            self.found_on_pair(
                (Class::Lost, s, r, None),
                "a gap-free stream".into(),
                format!("{holes} sequence(s) skipped and never delivered"),
                holes,
            );
        }
    }

    /// The verification: the pairs' findings, then each receiver's own.
    fn finish(self) -> Verification {
        let mut v = self.v;
        v.violations = self.details;
        for r in self.reports.iter().flatten() {
            v.violations.extend(r.violations.iter().cloned());
        }
        v.counts = Class::ALL
            .iter()
            .filter(|c| self.counts[**c as usize] > 0)
            .map(|&c| (c, self.counts[c as usize]))
            .collect();
        v.latency = (!self.hist.is_empty()).then_some(self.hist);
        v
    }
}

/// The first message of a pair that never arrived, when the receiver can name it: the first
/// hole in its stream (every hole lies before the next expected sequence), or else where its
/// stream stopped short.
fn first_missing(c: &PeerCounts) -> Option<u64> {
    (c.unsequenced == 0).then_some(c.first_hole.unwrap_or(c.next))
}

/// One pair's count in a run with deaths: `(queued, bounced, received)`; `deaths` of the
/// sender, the receiver or the relay, each of which may take up to `cap` messages with it.
fn pair_check(
    names: impl FnOnce() -> (String, String),
    (q, b, g): (u64, u64, u64),
    deaths: u64,
    cap: u64,
) -> Option<(Violation, u64)> {
    if b + g <= q && q - b - g <= deaths.saturating_mul(cap) {
        return None; // (the names are made only for a finding: millions of pairs at C10K)
    }
    let (s, r) = names();
    if b + g > q {
        let extra = b + g - q;
        return Some((
            Violation {
                class: Class::Duplicate,
                sender: s,
                receiver: r,
                seq: None,
                expected: format!("at most {q} delivered or bounced (as many as were sent)"),
                got: format!("{g} delivered and {b} bounced"),
            },
            extra,
        ));
    }
    let missing = q - b - g;
    let allowed = deaths.saturating_mul(cap);
    (missing > allowed).then(|| {
        (
            Violation {
                class: Class::Lost,
                sender: s,
                receiver: r,
                seq: Some(g),
                expected: if deaths == 0 {
                    format!("{} delivered", q - b)
                } else {
                    format!("at most {allowed} in flight at {deaths} death(s)")
                },
                got: format!("{missing} sent and neither delivered nor bounced"),
            },
            missing,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::encode;
    use crate::payload::PayloadSize;
    use crate::plan::random_plans;
    use crate::scenario::Scenario;

    fn sc() -> Scenario {
        Scenario {
            clients: 3,
            msgs: 10,
            payload: PayloadSize { min: 40, max: 40 },
            seed: 1,
        }
    }

    /// A script's plans (seed 5) and names.
    fn script(text: &str) -> (Vec<ClientPlan>, Names) {
        let s = crate::script::Script::parse("t.scn", text).unwrap();
        (
            crate::plan::script_plans(&s, 5),
            Names::given(s.names.clone(), s.clients),
        )
    }

    fn msg(s: usize, r: usize, seq: u64) -> Vec<u8> {
        let mut p = Vec::new();
        encode(&sc().spec(), s, r, seq, 10, &mut p);
        p
    }

    /// The same checks whether a receiver keeps a table per peer (a small run) or a map of the
    /// peers it met (past DENSE_PEERS names).
    #[test]
    fn in_order_passes_and_each_fault_gets_its_class() {
        for clients in [3, crate::peers::DENSE_PEERS + 100] {
            each_fault_gets_its_class(Scenario { clients, ..sc() });
        }
    }

    fn each_fault_gets_its_class(sc: Scenario) {
        let mut rx = Receiver::new(random_plans(&sc).remove(2));
        assert_eq!(
            matches!(rx.peers, PerPeer::Sparse(_)),
            sc.clients > crate::peers::DENSE_PEERS
        );
        rx.deliver(b"c0", &msg(0, 2, 0), 20);
        rx.deliver(b"c0", &msg(0, 2, 1), 20);
        assert_eq!(rx.received_total(), 2);
        rx.deliver(b"c0", &msg(0, 2, 1), 20); // duplicate
        rx.deliver(b"c0", &msg(0, 2, 3), 20); // overtakes 2
        rx.deliver(b"c0", &msg(0, 2, 2), 20); // late: an order violation
        rx.deliver(b"c1", &msg(0, 2, 4), 20); // spoofed src
        rx.deliver(b"c0", &msg(0, 1, 0), 20); // misrouted
        let mut bad = msg(1, 2, 0);
        bad[39] ^= 1;
        rx.deliver(b"c1", &bad, 20); // corrupt
        rx.bounce(b"c1", &msg(2, 1, 0)); // never sent
        let r = rx.finish(0, true, None);
        let counts: std::collections::HashMap<_, _> = r.violation_counts.iter().copied().collect();
        assert_eq!(counts[&Class::Duplicate], 1);
        assert_eq!(counts[&Class::Order], 1);
        assert_eq!(counts[&Class::Spoofed], 1);
        assert_eq!(counts[&Class::Misrouted], 1);
        assert_eq!(counts[&Class::Integrity], 1);
        assert_eq!(counts[&Class::Bounce], 1);
        assert_eq!(
            r.peers.iter().find(|p| p.peer == 0).map(|p| p.received),
            Some(4)
        );
    }

    #[test]
    fn lost_is_counted_per_pair() {
        let mut plans = random_plans(&sc());
        let mut a = Receiver::new(plans.remove(0));
        a.sent(1);
        a.sent(1);
        let mut b = Receiver::new(plans.remove(0));
        b.deliver(b"c0", &msg(0, 1, 0), 1);
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            None,
        ];
        let v = verify(&Names::numbered(3), &reports);
        assert_eq!(v.count(Class::Lost), 1);
        assert_eq!(v.violations[0].class, Class::Lost);
        assert_eq!(v.totals.sent, 2);
        assert_eq!(v.totals.received, 1);
    }

    #[test]
    fn across_a_death_only_the_restart_skip_is_accepted() {
        let bb = Arc::new(BlackBox::new(3, 9).unwrap());
        let plans = random_plans(&sc());
        // c0 queued 5 to c2 and died (0..3 were written); its restart flags seq 5, its first.
        for _ in 0..5 {
            bb.bump(0, 2, Field::Queued);
        }
        bb.killed(0, false);
        let mut rx = Receiver::with_blackbox(plans[2].clone(), bb.clone(), false);
        for seq in [0, 1, 2, 5 | payload::RESTART, 6] {
            rx.deliver(b"c0", &msg(0, 2, seq), 20);
        }
        // c1 queues three (a sender counts before it writes), two arrive, with a gap.
        for _ in 0..3 {
            bb.bump(1, 2, Field::Queued);
        }
        rx.deliver(b"c1", &msg(1, 2, 0), 20);
        rx.deliver(b"c1", &msg(1, 2, 2), 20); // a real gap: c1 never died
        let r = rx.finish(0, true, None);
        assert!(r.violation_counts.is_empty(), "{:?}", r.violation_counts);
        let holes: Vec<_> = r.peers.iter().map(|p| (p.peer, p.holes)).collect();
        assert_eq!(holes, vec![(0, 0), (1, 1)]);
        let deaths = Deaths {
            blackbox: Some(&bb),
            relay_killed: false,
            in_flight_cap: 100,
            interrupted: false,
        };
        let v = verify_with(&Names::numbered(3), &[None, None, Some(r)], &deaths);
        // 3 sent by c1, 2 received: exact, as c1 and c2 never died (the hole is that one).
        assert_eq!(v.count(Class::Lost), 1, "{:?}", v.violations);
        // c0 -> c2: 5 + 2 queued, 5 received, c0 died once: within what was in flight.
        assert!(
            v.violations.iter().all(|x| x.sender == "c1"),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_pair_may_not_deliver_and_bounce_more_than_was_sent() {
        let x = pair_check(|| ("a".into(), "b".into()), (3, 2, 2), 1, 100).unwrap();
        assert_eq!(x.0.class, Class::Duplicate);
        assert!(pair_check(|| ("a".into(), "b".into()), (10, 2, 2), 1, 6).is_none());
        let x = pair_check(|| ("a".into(), "b".into()), (10, 2, 2), 1, 5).unwrap();
        assert_eq!((x.0.class, x.1), (Class::Lost, 6));
        let x = pair_check(|| ("a".into(), "b".into()), (10, 2, 7), 0, 100).unwrap();
        assert_eq!((x.0.class, x.1), (Class::Lost, 1));
    }

    #[test]
    fn scripts_check_literals_in_order_and_expected_bounces() {
        let (mut plans, _) =
            script("clients a b\nabsent ghost\na -> b \"1\"\na -> b \"2\"\na -> ghost \"?\"\n");
        let mut b = Receiver::new(plans.remove(1));
        b.deliver(b"a", b"1", 0);
        assert!(!b.phase_complete(0));
        b.deliver(b"a", b"x", 0); // wrong text
        assert!(b.phase_complete(0));
        b.deliver(b"a", b"3", 0); // one too many
        b.deliver(b"a", &[b'y'; 50], 0); // and one more, long
        b.deliver(b"a", &[b'z'; 40], 0); // and one at the longest shown whole
        let r = b.finish(0, true, None);
        let counts: std::collections::HashMap<_, _> = r.violation_counts.iter().copied().collect();
        assert_eq!(counts[&Class::Integrity], 1);
        assert_eq!(counts[&Class::Duplicate], 3);
        let texts: Vec<_> = r
            .violations
            .iter()
            .map(|v| (v.expected.as_str(), v.got.as_str()))
            .collect();
        let long = format!("{:?}... (50 bytes)", "y".repeat(40));
        assert_eq!(
            texts,
            vec![
                ("\"2\"", "\"x\""),
                ("no more messages (all 2 arrived)", "one more: \"3\""),
                (
                    "no more messages (all 2 arrived)",
                    &format!("one more: {long}")
                ),
                (
                    "no more messages (all 2 arrived)",
                    &format!("one more: {:?}", "z".repeat(40))
                ),
            ]
        );

        let mut a = Receiver::new(plans.remove(0));
        a.sent(1);
        a.sent(1);
        a.sent(2);
        assert!(!a.phase_complete(0), "the bounce is still due");
        a.bounce(b"ghost", b"?");
        assert!(a.phase_complete(0));
    }

    /// The report's counts per 10 ms bucket: deliveries, and latency (count, sum, max).
    #[test]
    fn rates_and_latency_are_kept_per_bucket_from_the_clock() {
        let mut rx = Receiver::new(random_plans(&sc()).remove(2));
        rx.deliver(b"c0", &msg(0, 2, 0), 5); // before the clock starts: no bucket
        let t0 = 5_000_000_000; // CLOCK_MONOTONIC reads seconds since boot
        rx.start_clock(t0);
        rx.deliver(b"c0", &msg(0, 2, 1), t0 + 25_000_000);
        rx.deliver(b"c0", &msg(0, 2, 2), t0 + 29_000_000);
        rx.deliver(b"c1", &msg(1, 2, 0), t0 + 31_000_000);
        // Eleven minutes in: the buckets have widened to 2.56 s (512 of them span 21.8 min),
        // merging the first ones; nothing is lost.
        rx.deliver(b"c1", &msg(1, 2, 1), t0 + 11 * 60 * 1_000_000_000);
        assert_eq!((rx.arrivals(), rx.received_total()), (5, 5));
        let r = rx.finish(7, true, None);
        assert_eq!(r.rate_clock0_ns, t0);
        assert_eq!(r.bucket_ns, 2_560_000_000);
        assert_eq!(r.rate, vec![(0, 3), (257, 1)]);
        // msg() stamps a send time of 10 ns.
        let late = t0 + 11 * 60 * 1_000_000_000 - 10;
        let (a, b, c) = (
            t0 + 25_000_000 - 10,
            t0 + 29_000_000 - 10,
            t0 + 31_000_000 - 10,
        );
        assert_eq!(
            r.latency,
            vec![(0, 3, a + b + c, c), (257, 1, late, late)],
            "{:?}",
            r.latency
        );
        assert_eq!(r.latency_ns.iter().map(|&(_, n)| n).sum::<u64>(), 5);
        assert_eq!(r.bytes_received, 5 * 40);
        assert_eq!((r.finished_ns, r.complete), (7, true));
    }

    #[test]
    fn every_violation_is_counted_and_the_first_thousand_kept() {
        let mut rx = Receiver::new(random_plans(&sc()).remove(2));
        rx.deliver(b"c0", &msg(0, 2, 0), 20);
        for _ in 0..VIOLATIONS_KEPT + 5 {
            rx.deliver(b"c0", &msg(0, 2, 0), 20);
        }
        let r = rx.finish(0, true, None);
        assert_eq!(r.violations.len(), VIOLATIONS_KEPT);
        assert_eq!(
            r.violation_counts,
            vec![(Class::Duplicate, VIOLATIONS_KEPT as u64 + 5)]
        );
    }

    /// What a violation says is what a person acts on: each names the message exactly.
    #[test]
    fn violations_name_their_message_and_numbers_read_from_payloads_are_not_trusted() {
        let mut rx = Receiver::new(random_plans(&sc()).remove(2));
        rx.deliver(b"stranger", &msg(0, 2, 0), 20);
        // Misrouted, from a restarted sender: the flag is not part of the sequence shown.
        rx.deliver(b"c0", &msg(0, 1, 3 | payload::RESTART), 20);
        // Names a receiver and a sender no client has.
        rx.deliver(b"c0", &msg(0, 99, 0), 20);
        rx.deliver(b"c1", &msg(77, 2, 4 | payload::RESTART), 20);
        let mut bad = msg(1, 2, 0);
        bad[39] ^= 1;
        rx.deliver(b"c1", &bad, 20);
        let r = rx.finish(0, true, None);
        let v: Vec<_> = r
            .violations
            .iter()
            .map(|v| {
                format!(
                    "{} {} -> {} {:?}: {} / {}",
                    v.class.name(),
                    v.sender,
                    v.receiver,
                    v.seq,
                    v.expected,
                    v.got
                )
            })
            .collect();
        assert_eq!(
            v,
            vec![
                "spoofed src \"stranger\" -> c2 None: a DELIVER from one of the clients / src \"stranger\"",
                "misrouted c0 -> c2 Some(3): delivery to c1 / delivered to c2",
                "misrouted c0 -> c2 Some(0): delivery to #99 (no such client) / delivered to c2",
                "spoofed #77 (no such client) -> c2 Some(4): src #77 (no such client) / src c1",
                "integrity c1 -> c2 Some(0): the bytes sent / different bytes (checksum mismatch)",
            ]
        );
        // 17-31 bytes carry no checksum: the filler is what shows the damage.
        let small = Scenario {
            payload: PayloadSize { min: 20, max: 20 },
            ..sc()
        };
        let mut rx = Receiver::new(random_plans(&small).remove(2));
        let mut p = Vec::new();
        encode(&small.spec(), 0, 2, 0, 0, &mut p);
        p[19] ^= 4;
        rx.deliver(b"c0", &p, 1);
        let r = rx.finish(0, true, None);
        assert_eq!(
            r.violations[0].got,
            "different bytes (its filler is not that of the message it names)"
        );
    }

    #[test]
    fn late_arrivals_behind_one_early_message_are_one_order_violation() {
        let mut rx = Receiver::new(random_plans(&sc()).remove(2));
        // 5 jumps ahead (a damaged sequence would): 1..4 then arrive late, one after another.
        for seq in [0, 5, 1, 2, 3, 4, 6] {
            rx.deliver(b"c0", &msg(0, 2, seq), 20);
        }
        // Two separate swaps: two violations.
        for seq in [1, 0, 3, 2] {
            rx.deliver(b"c1", &msg(1, 2, seq), 20);
        }
        let r = rx.finish(0, true, None);
        assert_eq!(r.violation_counts, vec![(Class::Order, 3)]);
        let seqs: Vec<_> = r
            .violations
            .iter()
            .map(|v| (v.sender.clone(), v.seq))
            .collect();
        assert_eq!(
            seqs,
            vec![
                ("c0".to_string(), Some(1)),
                ("c1".to_string(), Some(0)),
                ("c1".to_string(), Some(2))
            ]
        );
    }

    #[test]
    fn an_empty_payload_is_damage_only_where_no_message_may_be_empty() {
        let fixed = Scenario {
            payload: PayloadSize { min: 8, max: 8 },
            ..sc()
        };
        let mut rx = Receiver::new(random_plans(&fixed).remove(2));
        rx.deliver(b"c0", b"", 1);
        let r = rx.finish(0, true, None);
        assert_eq!(r.violation_counts, vec![(Class::Integrity, 1)]);
        assert_eq!(r.violations[0].got, "an empty payload");
        // Past the sender's last message (it sends 10 in all), an empty one is one too many.
        let mut rx = Receiver::new(random_plans(&fixed).remove(2));
        let mut p = Vec::new();
        for seq in 0..10 {
            encode(&fixed.spec(), 0, 2, seq, 0, &mut p);
            rx.deliver(b"c0", &p, 1);
        }
        rx.deliver(b"c0", b"", 1);
        let r = rx.finish(0, true, None);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.peers[0].received, r.peers[0].unsequenced), (11, 1));

        // Where messages may be empty, an empty one is taken as the next; a loss among them
        // cannot be named.
        let range = Scenario {
            payload: PayloadSize { min: 0, max: 0 },
            ..sc()
        };
        let mut plans = random_plans(&range);
        let mut a = Receiver::new(plans.remove(0));
        for _ in 0..3 {
            a.sent(2);
        }
        let mut c = Receiver::new(plans.remove(1));
        c.deliver(b"c0", b"", 1);
        c.deliver(b"c0", b"", 1);
        let reports = vec![
            Some(a.finish(0, true, None)),
            None,
            Some(c.finish(0, true, None)),
        ];
        assert!(reports[2].as_ref().unwrap().violations.is_empty());
        let v = verify(&Names::numbered(3), &reports);
        assert_eq!(v.count(Class::Lost), 1);
        assert_eq!(v.violations[0].seq, None);
        assert_eq!(
            v.violations[0].got,
            "2 delivered; 1 missing, which ones cannot be told (payloads without a sequence)"
        );
    }

    #[test]
    fn more_delivered_than_sent_on_a_pair_is_a_duplicate_at_any_size() {
        let blank = Scenario {
            payload: PayloadSize { min: 0, max: 0 },
            ..sc()
        };
        let mut plans = random_plans(&blank);
        let mut a = Receiver::new(plans.remove(0));
        a.sent(1);
        a.sent(1);
        let mut b = Receiver::new(plans.remove(0));
        for _ in 0..5 {
            b.deliver(b"c0", b"", 1);
        }
        b.deliver(b"c2", b"", 1); // c2 sent nothing to c1
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            Some(Receiver::new(plans.remove(0)).finish(0, true, None)),
        ];
        let v = verify(&Names::numbered(3), &reports);
        assert_eq!(v.count(Class::Duplicate), 4, "{:?}", v.violations);
        let lines: Vec<_> = v
            .violations
            .iter()
            .map(|x| format!("{} -> {}: {} / {}", x.sender, x.receiver, x.expected, x.got))
            .collect();
        assert_eq!(
            lines,
            vec![
                "c0 -> c1: at most 2 delivered (as many as were sent) / 5 delivered",
                "c2 -> c1: at most 0 delivered (as many as were sent) / 1 delivered",
            ]
        );
    }

    #[test]
    fn ping_pong_partners_are_checked_against_the_rounds() {
        let pp = Scenario {
            clients: 2,
            msgs: 3,
            ..sc()
        };
        let plans = crate::plan::pingpong_plans(&pp);
        let mut rx = Receiver::new(plans[0].clone());
        let mut p = Vec::new();
        for seq in 0..3 {
            encode(&pp.spec(), 1, 0, seq, 10, &mut p);
            rx.deliver(b"c1", &p, 20);
        }
        encode(&pp.spec(), 1, 0, 3, 10, &mut p);
        rx.deliver(b"c1", &p, 20); // a fourth round was never played
        let r = rx.finish(0, true, None);
        assert_eq!(r.violation_counts, vec![(Class::Integrity, 1)]);
        assert_eq!(r.violations[0].expected, "seq 3 (c1 sends c0 at most 3)");
        // The initiator times round trips; a pong answering a ping with no send time (too
        // short to carry one) carries 0, and times nothing.
        assert_eq!(r.latency_ns.iter().map(|&(_, n)| n).sum::<u64>(), 3);
        let mut rx = Receiver::new(plans[0].clone());
        encode(&pp.spec(), 1, 0, 0, 0, &mut p);
        rx.deliver(b"c1", &p, 20);
        let r = rx.finish(0, true, None);
        assert!(r.violations.is_empty() && r.latency_ns.is_empty(), "{r:?}");
    }

    #[test]
    fn a_script_checks_each_message_against_the_body_of_its_own_sequence() {
        let (plans, _) =
            script("clients a b\na -> b 20 bytes x3\na -> b 40 bytes x3\na -> b \"end\"\n");
        let spec = |n| Spec {
            seed: 5,
            size: PayloadSize { min: n, max: n },
        };
        let mut rx = Receiver::new(plans[1].clone());
        let mut p = Vec::new();
        // 3 (of the 40-byte run) overtakes 2 (of the 20-byte run); each is its own size.
        for (seq, n) in [(0, 20), (1, 20), (3, 40), (4, 40), (2, 20), (5, 40)] {
            encode(&spec(n), 0, 1, seq, 0, &mut p);
            rx.deliver(b"a", &p, 1);
        }
        assert!(!rx.phase_complete(0));
        rx.deliver(b"a", b"end", 1);
        assert!(rx.phase_complete(0));
        let r = rx.finish(0, true, None);
        assert_eq!(
            r.violation_counts,
            vec![(Class::Order, 1)],
            "{:?}",
            r.violations
        );
        assert_eq!(r.peers[0].received, 7);
    }

    #[test]
    fn a_restarted_script_process_picks_up_at_its_phase() {
        let (plans, _) = script("clients a b\nabsent ghost\na -> b 20 bytes x2\na -> b \"x\"\nb -> ghost \"?\"\nrestart b\na -> b 30 bytes x2\na -> b 50 bytes x2\n");
        let mut b = Receiver::new(plans[1].clone());
        b.skip_to_phase(1);
        assert_eq!(b.received_total(), 3);
        b.sent(2);
        b.bounced_earlier(2);
        assert_eq!(b.bounced_total(), 1);
        let mut p = Vec::new();
        for (seq, n) in [(3, 30), (4, 30), (5, 50), (6, 50)] {
            let spec = Spec {
                seed: 5,
                size: PayloadSize { min: n, max: n },
            };
            encode(&spec, 0, 1, seq, 0, &mut p);
            b.deliver(b"a", &p, 1);
        }
        assert!(b.phase_complete(1));
        // Not a client: a name nobody holds cannot send.
        b.deliver(b"ghost", &p, 1);
        let r = b.finish(0, true, None);
        assert_eq!(r.violation_counts, vec![(Class::Spoofed, 1)]);
        let a_row = r.peers.iter().find(|p| p.peer == 0).unwrap();
        assert_eq!((a_row.received, a_row.next), (7, 7));
        let ghost = r.peers.iter().find(|p| p.peer == 2).unwrap();
        assert_eq!((ghost.sent, ghost.bounced), (1, 1));
    }

    #[test]
    fn end_markers_are_awaited_from_every_live_client_that_sent_here() {
        let bb = Arc::new(BlackBox::new(4, 16).unwrap());
        let mut rx = Receiver::with_blackbox(random_plans(&sc()).remove(2), bb.clone(), false);
        rx.await_fins();
        assert!(rx.all_fins(), "nobody sent here: nothing to wait for");
        bb.bump(0, 2, Field::Queued);
        bb.bump(1, 2, Field::Queued);
        bb.bump(3, 1, Field::Queued); // not to c2: no marker owed to it
        rx.await_fins();
        assert!(!rx.all_fins());
        assert_eq!(rx.missing_fins(), vec!["c0".to_string(), "c1".to_string()]);
        rx.deliver(b"c0", FIN, 1);
        rx.deliver(b"c0", FIN, 1); // a second marker from c0 stands for nobody else's
        assert_eq!(rx.missing_fins(), vec!["c1".to_string()]);
        assert!(!rx.all_fins());
        rx.deliver(b"c1", FIN, 1);
        assert!(rx.missing_fins().is_empty());
        assert!(rx.all_fins());
        // A sender gone for good owes nothing.
        bb.killed(1, true);
        let mut rx = Receiver::with_blackbox(random_plans(&sc()).remove(2), bb.clone(), false);
        rx.await_fins();
        assert_eq!(rx.missing_fins(), vec!["c0".to_string()]);
        // Without a black box there is no drain.
        let plain = Receiver::new(random_plans(&sc()).remove(2));
        assert!(plain.all_fins() && plain.missing_fins().is_empty());
    }

    #[test]
    fn short_payloads_are_compared_byte_for_byte_and_by_length() {
        let short = Scenario {
            payload: PayloadSize { min: 12, max: 12 },
            ..sc()
        };
        let mut rx = Receiver::new(random_plans(&short).remove(2));
        let mut p = Vec::new();
        encode(&short.spec(), 0, 2, 0, 0, &mut p);
        p[10] ^= 1; // in the sender's bytes: the sequence still reads true
        rx.deliver(b"c0", &p, 1);
        encode(&short.spec(), 0, 2, 1, 0, &mut p);
        rx.deliver(b"c0", &p[..10], 1);
        let r = rx.finish(0, true, None);
        let got: Vec<_> = r
            .violations
            .iter()
            .map(|v| (v.class, v.seq, v.expected.as_str(), v.got.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Class::Integrity,
                    Some(0),
                    "the bytes sent",
                    "different bytes"
                ),
                (Class::Integrity, Some(1), "12 bytes", "10 bytes"),
            ]
        );
    }

    #[test]
    fn a_bounce_must_be_of_a_message_this_client_sent_to_a_client_that_died() {
        // Every name of a random run is a live client's: any BOUNCE is a message lost.
        let mut rx = Receiver::new(random_plans(&sc()).remove(2));
        rx.sent(1);
        rx.bounce(b"c1", &msg(2, 1, 0));
        rx.bounce(b"ghost", &msg(2, 1, 0)); // no such name
        assert_eq!((rx.bounced_total(), rx.arrivals()), (0, 2));
        let r = rx.finish(0, true, None);
        assert_eq!(r.violation_counts, vec![(Class::Bounce, 2)]);
        assert_eq!(r.violations[0].seq, Some(0));
        assert_eq!(r.violations[1].got, "BOUNCE for \"ghost\"");

        // With deaths, a client that died may not hold its name when a message comes for it.
        let bb = Arc::new(BlackBox::new(3, 9).unwrap());
        bb.killed(1, false);
        let mut rx = Receiver::with_blackbox(random_plans(&sc()).remove(2), bb.clone(), false);
        for _ in 0..5 {
            rx.sent(1);
        }
        rx.sent(0);
        rx.bounce(b"c1", &msg(2, 1, 7)); // sequences carry on across incarnations
        assert_eq!(bb.get(2, 1, Field::Bounced), 1);
        rx.bounce(b"c1", &msg(0, 1, 1)); // c0's message, not ours
        rx.bounce(b"c1", &msg(2, 0, 1)); // to c0, not c1
        rx.bounce(b"c0", &msg(2, 0, 0)); // c0 never died
        for seq in 8..13 {
            rx.bounce(b"c1", &msg(2, 1, seq)); // the fifth is one more than was sent
        }
        assert_eq!(rx.bounced_total(), 5);
        let r = rx.finish(0, true, None);
        assert_eq!(r.violation_counts, vec![(Class::Bounce, 4)]);
        let which: Vec<_> = r.violations.iter().map(|v| v.seq).collect();
        assert_eq!(which, vec![Some(1), Some(1), Some(0), Some(12)]);
        let c1 = r.peers.iter().find(|p| p.peer == 1).unwrap();
        assert_eq!((c1.sent, c1.bounced), (5, 5));
    }

    #[test]
    fn a_transcript_keeps_the_first_events_when_asked() {
        let mut plan = random_plans(&sc()).remove(0);
        let mut quiet = Receiver::new(plan.clone());
        quiet.note(1, || "x".into());
        assert!(quiet.finish(0, true, None).transcript.is_empty());
        plan.transcript = true;
        let mut rx = Receiver::new(plan);
        for i in 0..crate::record::TRANSCRIPT_KEPT as u64 + 3 {
            rx.note(i, || format!("event {i}"));
        }
        let t = rx.finish(0, true, None).transcript;
        assert_eq!(t.len(), crate::record::TRANSCRIPT_KEPT);
        assert_eq!(t[1], (1, "event 1".to_string()));
    }

    #[test]
    fn totals_and_latency_add_up_over_every_report() {
        let mut plans = random_plans(&sc());
        let mut a = Receiver::new(plans.remove(0));
        a.sent(1);
        a.sent(1);
        a.sent(2);
        a.deliver(b"c1", &msg(1, 0, 0), 30);
        let mut b = Receiver::new(plans.remove(0));
        b.deliver(b"c0", &msg(0, 1, 0), 30);
        b.deliver(b"c0", &msg(0, 1, 1), 40);
        b.sent(0);
        let mut c = Receiver::new(plans.remove(0));
        c.deliver(b"c0", &msg(0, 2, 0), 50);
        c.deliver(b"c0", &msg(0, 2, 0), 50); // a duplicate
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            Some(c.finish(0, true, None)),
        ];
        let v = verify(&Names::numbered(3), &reports);
        assert_eq!(
            v.totals,
            Totals {
                sent: 4,
                received: 4,
                bounced: 0,
                bytes_received: 4 * 40,
            }
        );
        assert_eq!(v.latency.as_ref().map(|h| h.len()), Some(4));
        assert_eq!(v.counts, vec![(Class::Duplicate, 1)]);
        assert_eq!((v.count(Class::Duplicate), v.total_violations()), (1, 1));
    }

    #[test]
    fn with_deaths_the_black_box_counts_and_a_hole_is_lost_wherever_it_is() {
        let bb = BlackBox::new(3, 9).unwrap();
        for _ in 0..4 {
            bb.bump(0, 1, Field::Queued);
        }
        for _ in 0..3 {
            bb.bump(0, 1, Field::Received);
        }
        bb.bump(2, 1, Field::Queued);
        bb.bump(2, 1, Field::Bounced);
        bb.killed(0, false);
        let mut c1 = Receiver::new(random_plans(&sc()).remove(1));
        c1.deliver(b"c0", &msg(0, 1, 0), 1);
        c1.deliver(b"c0", &msg(0, 1, 2), 1); // seq 1 skipped, never delivered
        let reports = vec![None, Some(c1.finish(0, true, None)), None];
        let deaths = Deaths {
            blackbox: Some(&bb),
            relay_killed: false,
            in_flight_cap: 10,
            interrupted: false,
        };
        let v = verify_with(&Names::numbered(3), &reports, &deaths);
        assert_eq!(
            v.totals,
            Totals {
                sent: 5,
                received: 3,
                bounced: 1,
                bytes_received: 80,
            }
        );
        // One missing at c0's death is allowed; the hole in the middle is not.
        assert_eq!(v.counts, vec![(Class::Lost, 1)], "{:?}", v.violations);
        assert_eq!(
            v.violations[0].got,
            "1 sequence(s) skipped and never delivered"
        );

        // The relay killed: each pair may lose what was in flight at that one death.
        let mut plans = random_plans(&sc());
        let mut a = Receiver::new(plans.remove(0));
        for _ in 0..5 {
            a.sent(1);
        }
        let mut b = Receiver::new(plans.remove(0));
        b.deliver(b"c0", &msg(0, 1, 0), 1);
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            None,
        ];
        let killed = |cap| Deaths {
            blackbox: None,
            relay_killed: true,
            in_flight_cap: cap,
            interrupted: false,
        };
        let v = verify_with(&Names::numbered(3), &reports, &killed(4));
        assert_eq!(v.total_violations(), 0, "{:?}", v.violations);
        let v = verify_with(&Names::numbered(3), &reports, &killed(3));
        assert_eq!(v.counts, vec![(Class::Lost, 4)]);
        assert_eq!(
            v.violations[0].expected,
            "at most 3 in flight at 1 death(s)"
        );
    }

    #[test]
    fn a_loss_names_where_the_stream_has_its_first_gap_or_stopped() {
        let mut plans = random_plans(&sc());
        let mut a = Receiver::new(plans.remove(0));
        for _ in 0..6 {
            a.sent(1);
        }
        let mut b = Receiver::new(plans.remove(0));
        for seq in [0, 1, 3] {
            b.deliver(b"c0", &msg(0, 1, seq), 1);
        }
        let names = Names::numbered(3);
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            None,
        ];
        let v = verify(&names, &reports);
        assert_eq!(v.count(Class::Lost), 3);
        let l = &v.violations[0];
        assert_eq!(
            (l.seq, l.expected.as_str()),
            (Some(2), "6 messages delivered")
        );
        assert_eq!(l.got, "3 delivered; 3 missing, the first seq 2");
        // Only the end missing: the first is where the stream stopped.
        let mut plans = random_plans(&sc());
        let mut a = Receiver::new(plans.remove(0));
        for _ in 0..4 {
            a.sent(1);
        }
        let mut b = Receiver::new(plans.remove(0));
        for seq in [0, 1] {
            b.deliver(b"c0", &msg(0, 1, seq), 1);
        }
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            None,
        ];
        let v = verify(&names, &reports);
        assert_eq!(v.violations[0].seq, Some(2));
        assert_eq!(
            v.violations[0].got,
            "2 delivered; 2 missing, the first seq 2"
        );
    }

    #[test]
    fn a_literal_loss_cannot_name_its_message_and_a_stray_short_payload_is_one_too_many() {
        let (plans, names) =
            script("clients a b c\na -> b \"1\"\na -> b \"2\"\nc -> a 20 bytes x1\n");
        let mut a = Receiver::new(plans[0].clone());
        a.sent(1);
        a.sent(1);
        let mut b = Receiver::new(plans[1].clone());
        b.deliver(b"a", b"1", 1);
        b.deliver(b"c", b"zz", 1); // c sends b nothing, and this is too short to name itself
        let rb = b.finish(0, true, None);
        assert_eq!(rb.violation_counts, vec![(Class::Duplicate, 1)]);
        assert_eq!(rb.violations[0].got, "one more: \"zz\"");
        // Listed: every peer it has a count with, and only those.
        let peers: Vec<_> = rb.peers.iter().map(|p| (p.peer, p.received)).collect();
        assert_eq!(peers, vec![(0, 1)]);
        let reports = vec![Some(a.finish(0, true, None)), Some(rb), None];
        let v = verify(&names, &reports);
        let lost = v
            .violations
            .iter()
            .find(|x| x.class == Class::Lost)
            .unwrap();
        assert_eq!(lost.seq, None);
        assert!(lost
            .got
            .ends_with("which ones cannot be told (payloads without a sequence)"));
    }

    #[test]
    fn bounces_count_in_the_totals_and_a_relay_death_allows_its_in_flight_even_with_a_black_box() {
        let (plans, names) =
            script("clients a b\nabsent ghost\na -> ghost \"?\"\na -> ghost \"?\"\n");
        let mut a = Receiver::new(plans[0].clone());
        a.sent(2);
        a.sent(2);
        a.bounce(b"ghost", b"?");
        let r = a.finish(0, true, None);
        let ghost = r.peers.iter().find(|p| p.peer == 2).copied().unwrap();
        assert_eq!((ghost.sent, ghost.bounced), (2, 1));
        let v = verify(&names, &[Some(r), None]);
        assert_eq!((v.totals.sent, v.totals.bounced), (2, 1));
        assert_eq!(v.counts, vec![(Class::Bounce, 1)]);
        assert_eq!(v.violations[0].expected, "2 BOUNCEs (nobody holds ghost)");

        let bb = BlackBox::new(2, 4).unwrap();
        for _ in 0..5 {
            bb.bump(0, 1, Field::Queued);
        }
        bb.bump(0, 1, Field::Received);
        let with = |relay_killed, cap| Deaths {
            blackbox: Some(&bb),
            relay_killed,
            in_flight_cap: cap,
            interrupted: false,
        };
        let v = verify_with(&Names::numbered(2), &[None, None], &with(true, 4));
        assert_eq!(v.total_violations(), 0, "{:?}", v.violations);
        let v = verify_with(&Names::numbered(2), &[None, None], &with(false, 4));
        assert_eq!(v.counts, vec![(Class::Lost, 4)]);
    }

    #[test]
    fn edges_of_the_final_count() {
        // A phantom from a sender that sent this receiver nothing: one too many, and its
        // holes are not losses of a pair that carried nothing.
        let mut plans = random_plans(&sc());
        let mut a = Receiver::new(plans.remove(0));
        a.deliver(b"c1", &msg(1, 0, 0), 1); // c0 has a row for c1, with nothing sent
        let mut b = Receiver::new(plans.remove(0));
        b.sent(0);
        b.deliver(b"c0", &msg(0, 1, 3), 1);
        let names = Names::numbered(3);
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            None,
        ];
        let v = verify(&names, &reports);
        assert_eq!(v.counts, vec![(Class::Duplicate, 1)], "{:?}", v.violations);

        // Every send to an absent name bounced: nothing to report.
        let (plans, gnames) = script("clients a b\nabsent ghost\na -> ghost \"?\"\n");
        let mut a = Receiver::new(plans[0].clone());
        a.sent(2);
        a.bounce(b"ghost", b"?");
        let v = verify(&gnames, &[Some(a.finish(0, true, None)), None]);
        assert!(v.violations.is_empty(), "{:?}", v.violations);

        // The relay killed: one too many on a pair is counted once.
        let mut plans = random_plans(&Scenario {
            payload: PayloadSize { min: 0, max: 0 },
            ..sc()
        });
        let mut a = Receiver::new(plans.remove(0));
        a.sent(1);
        let mut b = Receiver::new(plans.remove(0));
        b.deliver(b"c0", b"", 1);
        b.deliver(b"c0", b"", 1);
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            None,
        ];
        let killed = Deaths {
            blackbox: None,
            relay_killed: true,
            in_flight_cap: 5,
            interrupted: false,
        };
        let v = verify_with(&names, &reports, &killed);
        assert_eq!(v.counts, vec![(Class::Duplicate, 1)], "{:?}", v.violations);

        // A restarted receiver's hole, from a sender that never died, is still a loss.
        let bb = BlackBox::new(3, 9).unwrap();
        bb.killed(1, false);
        for _ in 0..3 {
            bb.bump(0, 1, Field::Queued);
            bb.bump(0, 1, Field::Received);
        }
        let mut c1 = Receiver::new(random_plans(&sc()).remove(1));
        c1.deliver(b"c0", &msg(0, 1, 0), 1);
        c1.deliver(b"c0", &msg(0, 1, 2), 1);
        let deaths = Deaths {
            blackbox: Some(&bb),
            relay_killed: false,
            in_flight_cap: 10,
            interrupted: false,
        };
        let v = verify_with(
            &names,
            &[None, Some(c1.finish(0, true, None)), None],
            &deaths,
        );
        assert_eq!(v.counts, vec![(Class::Lost, 1)], "{:?}", v.violations);
    }
}
