//! What a payload carries so the receiver can verify it without asking anyone, and how its
//! size and filler are drawn from the run's seed.
//!
//! ```text
//! len >= 32:  seq:u64 | sender:u32 | receiver:u32 | checksum:u64 | send_ns:u64 | filler
//! 16..=31:    seq:u64 | sender:u32 | receiver:u32 | filler
//! 8..=15:     seq:u64 | the first len-8 bytes of sender:u32 | receiver:u32
//! 1..=7:      the low len bytes of seq
//! 0:          nothing
//! ```
//! `seq` counts messages per (sender, receiver) pair from 0. The checksum covers every other
//! byte (identity, send time and filler). Filler is seeded data, derived from the message's key,
//! so a payload under 32 bytes is fully predictable: from 17 bytes its filler is compared with
//! the one of the message its identity names, and under 17 every byte is compared. All
//! big-endian. What each size can prove is [`proves`] (docs/guarantees.md has the table).
//!
//! Nothing read from a delivered payload is trusted: a receiver first checks the payload
//! against itself (checksum, or filler against the identity it names), and only then reads
//! its identity ([`claim`]); a sequence read from it is only ever compared, never used as an
//! index.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use rand::{RngCore, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

/// Payload sizes: fixed, or a range (inclusive) drawn uniformly with both edges pinned now and
/// then (see [`Spec::len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadSize {
    /// Smallest payload, bytes.
    pub min: usize,
    /// Largest payload, bytes.
    pub max: usize,
}

impl PayloadSize {
    /// Parses `SIZE` or `MIN..MAX` (bytes).
    pub fn parse(s: &str) -> Result<PayloadSize, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("{t:?} is not a number of bytes"))
        };
        let (min, max) = match s.split_once("..") {
            Some((a, b)) => (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("{s:?}: MIN is larger than MAX"));
        }
        Ok(PayloadSize { min, max })
    }
}

impl std::fmt::Display for PayloadSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

/// A mixing function for deriving independent seeds (SplitMix64's finaliser).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes in the block fillers are cut from.
const FILL_BLOCK: usize = 64 * 1024;

/// Fills `out` with the filler for a message key: the block of pseudo-random bytes every
/// process makes alike, read cyclically from an offset the key picks. (Seeding a generator per
/// message, as before, was a tenth of a client's instructions.)
pub fn fill(key: u64, out: &mut [u8]) {
    let block = fill_block();
    let mut at = (mix(key) % FILL_BLOCK as u64) as usize;
    for chunk in out.chunks_mut(FILL_BLOCK) {
        let len = chunk.len();
        let first = len.min(FILL_BLOCK - at);
        chunk[..first].copy_from_slice(&block[at..at + first]);
        chunk[first..].copy_from_slice(&block[..len - first]);
        at = (at + len) % FILL_BLOCK;
    }
}

/// The block fillers are cut from, made on first use.
fn fill_block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut b = vec![0u8; FILL_BLOCK];
        Pcg64Mcg::seed_from_u64(0x0f11_b10c).fill_bytes(&mut b);
        b.into_boxed_slice()
    })
}

/// Makes the filler block now, in a process about to fork its clients: they share its pages
/// rather than each making its own (64 KiB zeroed and filled per client was 5% of a
/// 10,000-client run's CPU).
pub fn warm() {
    fill_block();
}

/// How sized payloads are made: the run's seed and the size or range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The run's seed.
    pub seed: u64,
    /// Payload size or range.
    pub size: PayloadSize,
}

/// The seed of message `seq` from `sender` to `receiver` in a run seeded `seed`: it picks the
/// message's length (within the size range) and its filler.
pub fn key(seed: u64, sender: u64, receiver: u64, seq: u64) -> u64 {
    mix(seed ^ mix(sender << 32 | receiver) ^ mix(seq))
}

impl Spec {
    /// The seed of message `seq` from `sender` to `receiver`.
    pub fn key(&self, sender: usize, receiver: usize, seq: u64) -> u64 {
        key(self.seed, sender as u64, receiver as u64, seq)
    }

    /// The payload length for a message key.
    pub fn len(&self, key: u64) -> usize {
        let PayloadSize { min, max } = self.size;
        if min == max {
            return min;
        }
        // Pin the edges now and then so the smallest and largest sizes always occur.
        match key % 16 {
            0 => min,
            1 => max,
            _ => min + (mix(key) % (max - min + 1) as u64) as usize,
        }
    }
}

/// A flag in `seq`: the first message a restarted sender sends to this receiver. What its dead
/// predecessor queued but never wrote is gone, so the receiver's next expected sequence may be
/// skipped over, once, here (runs with `--nemesis kill/restart` only).
pub const RESTART: u64 = 1 << 63;

/// Bytes of the full header.
pub const HEADER: usize = 32;
/// Bytes that identify a message (seq, sender, receiver).
pub const IDENT: usize = 16;
/// Bytes of the sequence.
pub const SEQ: usize = 8;

/// What a payload of some length lets its receiver prove (docs/guarantees.md has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proves {
    /// It carries its sequence (under 8 bytes, the sequence's low bytes): order and
    /// duplicates are seen as such.
    pub sequence: bool,
    /// It names its sender and receiver: misrouted and spoofed messages are seen as such.
    pub identity: bool,
    /// Every byte is checked against itself (a checksum, or filler derived from the identity
    /// it names): damage is seen as damage, not as some other fault.
    pub integrity: bool,
    /// It carries its send time: latency is measured.
    pub send_time: bool,
}

/// The smallest payload that carries a sequence.
pub const MIN_SEQUENCE: usize = 1;
/// The smallest payload that names its sender and receiver.
pub const MIN_IDENTITY: usize = IDENT;
/// The smallest payload whose every byte can be checked against the message it names.
pub const MIN_INTEGRITY: usize = IDENT + 1;

/// What a payload of `len` bytes proves.
pub fn proves(len: usize) -> Proves {
    Proves {
        sequence: len >= MIN_SEQUENCE,
        identity: len >= MIN_IDENTITY,
        integrity: len >= MIN_INTEGRITY,
        send_time: len >= HEADER,
    }
}

/// The payload sizes a run's messages can have: what its checks can prove follows from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    /// Some messages are sized payloads (seeded, with a header), of `min..=max` bytes.
    pub sized: bool,
    /// Smallest sized payload, bytes.
    pub min: usize,
    /// Largest sized payload, bytes.
    pub max: usize,
    /// Some messages are a script's literal text (compared as text, with no sequence).
    pub literal: bool,
}

/// How far a check can be made at a run's payload sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkable {
    /// For every message.
    Yes,
    /// For some messages; why not for the others.
    Partly(String),
    /// For none; why not.
    No(String),
}

impl Sizes {
    /// Sized payloads of `size` only.
    pub fn of(size: PayloadSize) -> Sizes {
        Sizes {
            sized: true,
            min: size.min,
            max: size.max,
            literal: false,
        }
    }

    /// How far the report's check `check` (completeness, duplicates, order, integrity,
    /// routing, bounces) can be made at these sizes.
    pub fn checkable(&self, check: &str) -> Checkable {
        let (need, why) = match check {
            "order" => (
                MIN_SEQUENCE,
                "payloads of 0 bytes carry no sequence",
            ),
            "integrity" => (
                MIN_INTEGRITY,
                "under 17 bytes a changed byte reads as another message (order, duplicates, lost), not as damage",
            ),
            "routing" => (
                MIN_IDENTITY,
                "under 16 bytes a payload names no sender or receiver: misrouting shows as lost and one too many",
            ),
            // Counted per pair, whatever the size; but where messages are alike (empty
            // payloads, a script's literal texts), a loss and a duplicate on one pair cancel.
            "completeness" | "duplicates" => {
                return if (self.sized && self.min == 0) || self.literal {
                    Checkable::Partly("a loss and a duplicate of identical payloads (0 bytes, or the same literal text) on one pair cancel in the count".into())
                } else {
                    Checkable::Yes
                };
            }
            _ => return Checkable::Yes,
        };
        // A script's literal text is compared as text: damage shows, order and identity do not.
        let literal_can = check == "integrity";
        let literal_why = if check == "order" {
            "a script's literal texts carry no sequence: one out of order shows as a text mismatch (integrity)"
        } else {
            "a script's literal texts name no sender or receiver: a misrouted one shows as lost and one too many"
        };
        let sized_all = !self.sized || self.min >= need;
        let sized_none = !self.sized || self.max < need;
        let literal_all = !self.literal || literal_can;
        let literal_none = !self.literal || !literal_can;
        let why = if sized_all { literal_why } else { why };
        if sized_all && literal_all {
            Checkable::Yes
        } else if sized_none && literal_none {
            Checkable::No(why.into())
        } else {
            Checkable::Partly(why.into())
        }
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[8 - n..].copy_from_slice(&b[..n]);
    u64::from_be_bytes(w)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    let n = b.len().min(4);
    w[4 - n..].copy_from_slice(&b[..n]);
    u32::from_be_bytes(w)
}

/// The send time in a full payload (CLOCK_MONOTONIC, ns).
pub fn send_ns(p: &[u8]) -> Option<u64> {
    (p.len() >= HEADER).then(|| be_u64(&p[24..32]))
}

/// The checksum of a full payload: every byte but the checksum field itself, so a flipped bit
/// anywhere (identity included) shows as damage, not as some other fault.
fn checksum(p: &[u8]) -> u64 {
    // XXH3: a fast non-cryptographic 64-bit hash made for checksums, the same everywhere (it
    // replaced SipHash, which was a third of a client's instructions). The identity's hash
    // seeds the hash of the rest.
    xxh3_64_with_seed(&p[24..], xxh3_64(&p[..16]))
}

/// For a payload of at least 32 bytes: whether its checksum holds (None when it is shorter).
pub fn intact(p: &[u8]) -> Option<bool> {
    (p.len() >= HEADER).then(|| be_u64(&p[16..24]) == checksum(p))
}

/// The sequence nearest `expected` whose low `bits` bits are `low` (serial-number arithmetic,
/// as RFC 1982 reads a sequence that wraps): up to half the range ahead, or behind.
fn near(expected: u64, low: u64, bits: u32) -> u64 {
    let range = 1u64 << bits;
    let ahead = low.wrapping_sub(expected) & (range - 1);
    let (fwd, back) = (
        expected.checked_add(ahead),
        expected.checked_sub(range - ahead),
    );
    // Behind the start of the stream (or past u64) is no sequence at all: then the other one.
    let nearest = if ahead < range / 2 {
        fwd.or(back)
    } else {
        back.or(fwd)
    };
    nearest.unwrap_or(expected)
}

/// What a delivered payload says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Empty: it carries nothing to check.
    Blank,
    /// It does not match itself (its checksum, or its filler against the identity it names):
    /// damaged on the way, so nothing in it can be believed.
    Damaged,
    /// The message it names.
    Names {
        /// Its sequence as sent, restart flag and all (under 8 bytes: the sequence nearest
        /// the expected one with the low bytes it carries).
        seq: u64,
        /// The sender it names (16 bytes and more).
        sender: Option<u32>,
        /// The receiver it names (16 bytes and more).
        receiver: Option<u32>,
    },
}

/// Reads a delivered payload of a run seeded `seed`, checking it against itself first.
/// `expected` is the sequence the receiver expects next on this pair (a payload under 8 bytes
/// carries only its sequence's low bytes).
pub fn claim(seed: u64, p: &[u8], expected: u64) -> Claim {
    let n = p.len();
    if n == 0 {
        return Claim::Blank;
    }
    if n < SEQ {
        return Claim::Names {
            seq: near(expected, be_u64(p), 8 * n as u32),
            sender: None,
            receiver: None,
        };
    }
    let Some(Ident {
        seq,
        sender,
        receiver,
    }) = ident(p)
    else {
        return Claim::Names {
            seq: be_u64(&p[..SEQ]),
            sender: None,
            receiver: None,
        };
    };
    let whole = if n >= HEADER {
        intact(p) == Some(true)
    } else {
        // 17..31 bytes: the filler is the one the named message has.
        let mut want = [0u8; HEADER];
        let want = &mut want[..n - IDENT];
        fill(key(seed, sender.into(), receiver.into(), seq), want);
        want == &p[IDENT..]
    };
    if !whole {
        return Claim::Damaged;
    }
    Claim::Names {
        seq,
        sender: Some(sender),
        receiver: Some(receiver),
    }
}

/// The identity fields of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    /// Per-pair sequence.
    pub seq: u64,
    /// Sender index.
    pub sender: u32,
    /// Receiver index.
    pub receiver: u32,
}

/// Reads the identity fields, if the payload is long enough to hold them (unchecked: for a
/// payload this process made, such as a BOUNCE of its own message; a delivered one goes
/// through [`claim`]).
pub fn ident(p: &[u8]) -> Option<Ident> {
    (p.len() >= IDENT).then(|| Ident {
        seq: be_u64(&p[0..8]),
        sender: be_u32(&p[8..12]),
        receiver: be_u32(&p[12..16]),
    })
}

/// Writes the payload of message `seq` from `sender` to `receiver` into `out` (replacing it).
pub fn encode(sc: &Spec, sender: usize, receiver: usize, seq: u64, now_ns: u64, out: &mut Vec<u8>) {
    let key = sc.key(sender, receiver, seq);
    let len = sc.len(key);
    out.clear();
    if len < SEQ {
        out.extend_from_slice(&seq.to_be_bytes()[SEQ - len..]);
        return;
    }
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(sender as u32).to_be_bytes());
    out.extend_from_slice(&(receiver as u32).to_be_bytes());
    if len >= HEADER {
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&now_ns.to_be_bytes());
        out.resize(len, 0);
        fill(key, &mut out[HEADER..]);
        let sum = checksum(out);
        out[16..24].copy_from_slice(&sum.to_be_bytes());
    } else {
        out.resize(len.max(IDENT), 0);
        fill(key, &mut out[IDENT..]);
        out.truncate(len);
    }
}

/// Why a payload is not the message it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Its length is not the length that was sent.
    Length {
        /// Length sent.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// Its bytes are not the bytes that were sent.
    Bytes,
}

/// Checks a payload that [`claim`] found whole against message `seq` of the pair: its length,
/// and under 17 bytes every byte (above, the checksum or filler already covered them).
pub fn check_named(
    sc: &Spec,
    sender: usize,
    receiver: usize,
    seq: u64,
    p: &[u8],
) -> Result<(), Damage> {
    let key = sc.key(sender, receiver, seq);
    let len = sc.len(key);
    if p.len() != len {
        return Err(Damage::Length {
            expected: len,
            got: p.len(),
        });
    }
    if len < MIN_INTEGRITY {
        let mut want = Vec::with_capacity(IDENT);
        encode(sc, sender, receiver, seq, 0, &mut want);
        if want != p {
            return Err(Damage::Bytes);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(min: usize, max: usize) -> Spec {
        Spec {
            seed: 7,
            size: PayloadSize { min, max },
        }
    }

    #[test]
    fn a_payload_names_its_own_message_at_every_size_and_damage_never_passes_as_whole() {
        for len in 0..=64 {
            let s = sc(len, len);
            for seq in [0u64, 1, 5, 255, 256, 70_000] {
                let mut p = Vec::new();
                encode(&s, 1, 2, seq, 123, &mut p);
                let c = claim(s.seed, &p, seq.saturating_sub(3));
                let want = match len {
                    0 => Claim::Blank,
                    1..=15 => Claim::Names {
                        seq,
                        sender: None,
                        receiver: None,
                    },
                    _ => Claim::Names {
                        seq,
                        sender: Some(1),
                        receiver: Some(2),
                    },
                };
                // One byte cannot tell 255 apart from 255 + 256k: it reads as the nearest.
                if len == 1 && seq.abs_diff(seq.saturating_sub(3)) > 127 {
                    continue;
                }
                assert_eq!(c, want, "len {len} seq {seq}");
                assert_eq!(check_named(&s, 1, 2, seq, &p), Ok(()));
                for bit in 0..p.len() * 8 {
                    let mut q = p.clone();
                    q[bit / 8] ^= 1 << (bit % 8);
                    let c = claim(s.seed, &q, seq);
                    let caught =
                        c == Claim::Damaged || c != want || check_named(&s, 1, 2, seq, &q).is_err();
                    assert!(caught, "len {len}: flipped bit {bit} passed as whole");
                    if len >= HEADER {
                        assert_eq!(c, Claim::Damaged, "len {len} bit {bit}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_short_sequence_reads_as_the_nearest_with_its_low_bytes() {
        assert_eq!(near(0, 0, 8), 0);
        assert_eq!(near(10, 12, 8), 12);
        assert_eq!(near(10, 9, 8), 9); // a duplicate: one behind
        assert_eq!(near(250, 3, 8), 259); // wrapped ahead
        assert_eq!(near(260, 250, 8), 250); // behind across the wrap
        assert_eq!(near(0, 255, 8), 255); // no sequence before the first: ahead
        assert_eq!(near(1000, (1000 + 128) % 256, 8), 872); // half way: behind
        assert_eq!(near(1000, (1000 + 127) % 256, 8), 1127);
        assert_eq!(near(u64::MAX, 0, 8), u64::MAX - 255);
        assert_eq!(near(1 << 40, 7, 56), (1 << 40) + 7 - (1 << 40));
    }

    #[test]
    fn what_each_size_proves_and_what_a_run_can_check() {
        let p = |n| {
            let x = proves(n);
            (x.sequence, x.identity, x.integrity, x.send_time)
        };
        assert_eq!(p(0), (false, false, false, false));
        assert_eq!(p(1), (true, false, false, false));
        assert_eq!(p(15), (true, false, false, false));
        assert_eq!(p(16), (true, true, false, false));
        assert_eq!(p(17), (true, true, true, false));
        assert_eq!(p(31), (true, true, true, false));
        assert_eq!(p(32), (true, true, true, true));
        let sized = |min, max| Sizes::of(PayloadSize { min, max });
        let kind = |z: Sizes, check| match z.checkable(check) {
            Checkable::Yes => "yes",
            Checkable::Partly(_) => "partly",
            Checkable::No(_) => "no",
        };
        assert_eq!(kind(sized(0, 0), "bounces"), "yes");
        for check in ["completeness", "duplicates"] {
            assert_eq!(kind(sized(0, 0), check), "partly");
            assert_eq!(kind(sized(0, 9), check), "partly");
            assert_eq!(kind(sized(1, 9), check), "yes");
        }
        let table = [
            ("order", [(0, 0, "no"), (0, 1, "partly"), (1, 1, "yes")]),
            (
                "routing",
                [(15, 15, "no"), (15, 16, "partly"), (16, 16, "yes")],
            ),
            (
                "integrity",
                [(16, 16, "no"), (16, 17, "partly"), (17, 300, "yes")],
            ),
        ];
        for (check, rows) in table {
            for (min, max, want) in rows {
                assert_eq!(
                    kind(sized(min, max), check),
                    want,
                    "{check} at {min}..{max}"
                );
            }
        }
        // A script's literal texts: compared as text, with no sequence or identity.
        let literal = Sizes {
            literal: true,
            ..Sizes::default()
        };
        assert_eq!(kind(literal, "integrity"), "yes");
        assert_eq!(kind(literal, "order"), "no");
        assert_eq!(kind(literal, "routing"), "no");
        let both = Sizes {
            literal: true,
            ..sized(64, 64)
        };
        assert_eq!(kind(both, "order"), "partly");
        assert_eq!(kind(both, "integrity"), "yes");
        let Checkable::Partly(why) = both.checkable("order") else {
            unreachable!()
        };
        assert!(why.contains("literal texts carry no sequence"), "{why}");
        let Checkable::Partly(why) = sized(0, 64).checkable("order") else {
            unreachable!()
        };
        assert_eq!(why, "payloads of 0 bytes carry no sequence");
    }

    #[test]
    fn every_message_has_a_key_of_its_own_and_a_length_in_its_range() {
        let base = key(1, 2, 3, 4);
        let others = [
            key(9, 2, 3, 4),
            key(1, 9, 3, 4),
            key(1, 2, 9, 4),
            key(1, 2, 3, 9),
            key(1, 3, 2, 4), // sender and receiver swapped
            key(1, 2 << 32, 3, 4),
        ];
        for k in others {
            assert_ne!(k, base);
        }
        assert_eq!(key(1, 2, 3, 4), base);
        assert_eq!(sc(0, 0).key(2, 3, 4), key(7, 2, 3, 4));
        // A range: every length within it, both edges pinned now and then.
        let s = sc(10, 20);
        let lens: Vec<usize> = (0..2000).map(|k| s.len(k)).collect();
        assert!(lens.iter().all(|l| (10..=20).contains(l)));
        assert_eq!((s.len(16 * 7), s.len(16 * 7 + 1)), (10, 20));
        for l in 10..=20 {
            assert!(lens.contains(&l), "length {l} never drawn");
        }
        // The edges come pinned (1 in 16 each) and drawn like any other length.
        for edge in [10, 20] {
            assert!(lens.iter().filter(|&&l| l == edge).count() > 2000 / 16 + 60);
        }
        assert_eq!(sc(5, 5).len(12345), 5);
        // An identity changed in a 17-31-byte payload: its filler gives it away.
        for len in 17..32 {
            let s = sc(len, len);
            let mut p = Vec::new();
            encode(&s, 1, 2, 5, 0, &mut p);
            for bit in 0..IDENT * 8 {
                let mut q = p.clone();
                q[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(claim(s.seed, &q, 5), Claim::Damaged, "len {len} bit {bit}");
            }
        }
    }

    #[test]
    fn filler_is_not_zeros() {
        let s = sc(64, 64);
        let mut p = Vec::new();
        encode(&s, 0, 1, 0, 0, &mut p);
        assert!(p[HEADER..].iter().any(|&b| b != 0));
    }

    #[test]
    fn filler_is_the_same_everywhere_differs_per_key_and_wraps() {
        let (mut a, mut b) = (vec![0u8; 48], vec![0u8; 48]);
        fill(7, &mut a);
        fill(7, &mut b);
        assert_eq!(a, b);
        fill(8, &mut b);
        assert_ne!(a, b);
        // Longer than the block: one cyclic read, so a short fill is the start of a long one.
        let mut long = vec![0u8; 3 * FILL_BLOCK + 100];
        fill(9, &mut long);
        let mut short = vec![0u8; 100];
        fill(9, &mut short);
        assert_eq!(&long[..100], &short[..]);
        assert_eq!(&long[..100], &long[FILL_BLOCK..FILL_BLOCK + 100]);
        assert!(long.iter().any(|&x| x != 0));
    }

    #[test]
    fn payload_sizes_parse() {
        assert_eq!(
            PayloadSize::parse("64"),
            Ok(PayloadSize { min: 64, max: 64 })
        );
        assert_eq!(
            PayloadSize::parse("0..100"),
            Ok(PayloadSize { min: 0, max: 100 })
        );
        assert_eq!(
            PayloadSize::parse("1..=9"),
            Ok(PayloadSize { min: 1, max: 9 })
        );
        assert!(PayloadSize::parse("9..1").is_err());
        assert!(PayloadSize::parse("x").is_err());
    }
}
