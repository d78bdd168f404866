//! Seeded random scenarios: who sends what to whom, reproducible from a seed.
//!
//! Each client draws its destinations from its own PRNG stream (seeded from the run's seed
//! and its index), so a client needs no plan in memory and the supervisor can replay the
//! draws to know, before anything runs, how many messages each pair will carry. A message's
//! payload length and filler are derived from (seed, sender, receiver, per-pair sequence), so
//! the receiver can recompute what it should get without ever seeing the sender's state.

use rand::{Rng, RngCore, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

/// Payload sizes: fixed or a uniform range (inclusive).
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

/// The random scenario of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// Number of clients, named c0..c{n-1}.
    pub clients: usize,
    /// Messages each client sends.
    pub msgs: u64,
    /// Payload sizes.
    pub payload: PayloadSize,
    /// The seed everything is drawn from.
    pub seed: u64,
}

/// A mixing function for deriving independent seeds (SplitMix64's finaliser).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The name of client `i`.
pub fn client_name(i: usize) -> String {
    format!("c{i}")
}

/// The index in a name `c{i}`, if it is one.
pub fn client_index(name: &[u8]) -> Option<usize> {
    let digits = name.strip_prefix(b"c")?;
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    // Digit by digit: this runs once per message received.
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))
            .flatten()
    })
}

/// One client's stream of destinations.
pub struct Destinations {
    rng: Pcg64Mcg,
    me: usize,
    others: usize,
}

impl Iterator for Destinations {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.others == 0 {
            return Some(self.me);
        }
        // Uniform over the other clients: draw from n-1 and skip over ourselves.
        let d = self.rng.random_range(0..self.others);
        Some(if d >= self.me { d + 1 } else { d })
    }
}

impl Scenario {
    /// Total messages in the run.
    pub fn total(&self) -> u64 {
        self.msgs.saturating_mul(self.clients as u64)
    }

    /// Client `i`'s destinations, in send order.
    pub fn destinations(&self, i: usize) -> Destinations {
        Destinations {
            rng: Pcg64Mcg::seed_from_u64(mix(self.seed ^ mix(i as u64 + 1))),
            me: i,
            others: self.clients.saturating_sub(1),
        }
    }

    /// How many messages each client will receive. Replays every sender's draws once: time in
    /// proportion to the messages, memory in proportion to the clients.
    pub fn expected_in(&self) -> Vec<u64> {
        let mut got = vec![0u64; self.clients];
        for s in 0..self.clients {
            for d in self.destinations(s).take(self.msgs as usize) {
                got[d] += 1;
            }
        }
        got
    }

    /// How this scenario's payloads are made.
    pub fn spec(&self) -> crate::payload::Spec {
        crate::payload::Spec {
            seed: self.seed,
            size: self.payload,
        }
    }
}

/// Bytes in the block fillers are cut from.
const FILL_BLOCK: usize = 64 * 1024;

/// Fills `out` with the filler for a message key: the block of pseudo-random bytes every
/// process makes alike, read cyclically from an offset the key picks. (Seeding a generator per
/// message, as before, was a tenth of a client's instructions.)
pub fn fill(key: u64, out: &mut [u8]) {
    static BLOCK: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        let mut b = vec![0u8; FILL_BLOCK];
        Pcg64Mcg::seed_from_u64(0x0f11_b10c).fill_bytes(&mut b);
        b.into_boxed_slice()
    });
    let mut at = (mix(key) % FILL_BLOCK as u64) as usize;
    for chunk in out.chunks_mut(FILL_BLOCK) {
        let len = chunk.len();
        let first = len.min(FILL_BLOCK - at);
        chunk[..first].copy_from_slice(&block[at..at + first]);
        chunk[first..].copy_from_slice(&block[..len - first]);
        at = (at + len) % FILL_BLOCK;
    }
}

/// A fresh random seed, for runs that were given none.
pub fn fresh_seed() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn same_seed_same_scenario() {
        let s = Scenario {
            clients: 5,
            msgs: 1000,
            payload: PayloadSize { min: 0, max: 100 },
            seed: 42,
        };
        let draws = |sc: &Scenario, i: usize| sc.destinations(i).take(1000).collect::<Vec<_>>();
        assert_eq!(draws(&s, 2), draws(&s, 2));
        let t = Scenario { seed: 43, ..s };
        assert_ne!(draws(&s, 2), draws(&t, 2));
        assert_eq!(s.expected_in(), s.expected_in());
        assert_eq!(s.expected_in().iter().sum::<u64>(), 5000);
        for i in 0..5 {
            assert!(
                draws(&s, i).iter().all(|&d| d != i && d < 5),
                "nobody sends to itself"
            );
        }
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

    #[test]
    fn names() {
        assert_eq!(client_index(b"c0"), Some(0));
        assert_eq!(client_index(b"c17"), Some(17));
        assert_eq!(client_index(b"c01"), None);
        assert_eq!(client_index(b"x1"), None);
        assert_eq!(client_index(b"c"), None);
        assert_eq!(client_index(b"c1x"), None);
        assert_eq!(client_index(b"c+1"), None);
        assert_eq!(client_index(b"c99999999999999999999999"), None);
        assert_eq!(client_index(b"c4000"), Some(4000));
        assert_eq!(client_name(3), "c3");
    }
}
