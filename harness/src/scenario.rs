//! Seeded random scenarios: who sends what to whom, reproducible from a seed.
//!
//! Each client draws its destinations from its own PRNG stream (seeded from the run's seed
//! and its index), so a client needs no plan in memory and the supervisor can replay the
//! draws to know, before anything runs, how many messages each pair will carry. A message's
//! payload length and filler are derived from (seed, sender, receiver, per-pair sequence), so
//! the receiver can recompute what it should get without ever seeing the sender's state.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::payload::{mix, PayloadSize};

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

/// A fresh random seed, for runs that were given none.
pub fn fresh_seed() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

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
