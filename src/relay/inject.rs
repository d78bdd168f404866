//! Fault injection: the relay breaks its own promises on purpose, at a seeded rate, so that the
//! verifier can be shown to catch every kind of broken promise. Off unless asked for; a run
//! with it on says so loudly in its report.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// The kinds of broken promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Do not deliver the message at all.
    Drop,
    /// Deliver it twice.
    Duplicate,
    /// Swap it with the previous message of the same pair, if that one is still queued.
    Reorder,
    /// Flip one bit of its payload.
    Corrupt,
    /// Deliver it to another registered client.
    Misroute,
    /// Deliver it with another registered client's name as `src`.
    Spoof,
    /// Hold it until the relay stops (past any run's deadline).
    Delay,
}

impl Fault {
    /// Every kind, by name.
    pub const ALL: [(&'static str, Fault); 7] = [
        ("drop", Fault::Drop),
        ("duplicate", Fault::Duplicate),
        ("reorder", Fault::Reorder),
        ("corrupt", Fault::Corrupt),
        ("misroute", Fault::Misroute),
        ("spoof", Fault::Spoof),
        ("delay", Fault::Delay),
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        Fault::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }
}

/// What to inject: a fault, how often (per DELIVER), and the seed of the dice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inject {
    /// The fault.
    pub fault: Fault,
    /// Probability per DELIVER, in (0, 1].
    pub rate: f64,
    /// Seed for the dice (a run passes its own seed, so a seed replays the same faults).
    pub seed: u64,
}

impl Inject {
    /// Parses `KIND` or `KIND:RATE` (default rate 0.01).
    pub fn parse(s: &str) -> Result<Inject, String> {
        let (kind, rate) = match s.split_once(':') {
            Some((k, r)) => (
                k,
                r.parse::<f64>()
                    .map_err(|_| format!("{r:?} is not a rate; use e.g. 0.01"))?,
            ),
            None => (s, 0.01),
        };
        let fault = Fault::ALL
            .iter()
            .find(|(n, _)| *n == kind)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown fault {kind:?}; one of {}", names.join(", "))
            })?;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(format!("rate {rate} is outside (0, 1]"));
        }
        Ok(Inject {
            fault,
            rate,
            seed: 0,
        })
    }
}

impl fmt::Display for Inject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.fault.name(), self.rate)
    }
}

/// The dice and the tally.
pub struct Injector {
    /// What to inject.
    pub what: Inject,
    rng: Pcg64Mcg,
    /// Times the fault was applied.
    pub fired: u64,
    /// Frames held back by `delay`: (receiver's serial, frame); never sent.
    pub held: Vec<(u64, Vec<u8>)>,
}

impl Injector {
    /// Dice seeded from the run's seed.
    pub fn new(what: Inject) -> Injector {
        Injector {
            what,
            rng: Pcg64Mcg::seed_from_u64(what.seed ^ 0x1AEC7),
            fired: 0,
            held: Vec::new(),
        }
    }

    /// Whether this DELIVER gets the fault.
    pub fn roll(&mut self) -> bool {
        self.rng.random::<f64>() < self.what.rate
    }

    /// A number in `0..n` (n > 0), for picking a victim or a bit.
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds_and_rates_and_says_what_is_wrong() {
        for (name, fault) in Fault::ALL {
            assert_eq!(fault.name(), name);
            let i = Inject::parse(name).expect("a kind alone");
            assert_eq!((i.fault, i.rate, i.seed), (fault, 0.01, 0));
            assert_eq!(i.to_string(), format!("{name}:0.01"));
        }
        let i = Inject::parse("corrupt:0.5").expect("kind:rate");
        assert_eq!((i.fault, i.rate), (Fault::Corrupt, 0.5));
        assert_eq!(Inject::parse("drop:1").map(|i| i.rate), Ok(1.0));
        for (bad, says) in [
            ("drop:0", "rate 0 is outside (0, 1]"),
            ("drop:1.5", "rate 1.5 is outside (0, 1]"),
            ("drop:-0.1", "rate -0.1 is outside (0, 1]"),
            ("drop:NaN", "rate NaN is outside (0, 1]"),
            ("drop:often", "\"often\" is not a rate; use e.g. 0.01"),
            (
                "lose",
                "unknown fault \"lose\"; one of drop, duplicate, reorder, corrupt, misroute, spoof, delay",
            ),
        ] {
            assert_eq!(Inject::parse(bad), Err(says.to_string()), "{bad}");
        }
    }

    #[test]
    fn the_dice_fire_at_the_rate_and_replay_by_seed() {
        let what = |rate, seed| Inject {
            fault: Fault::Drop,
            rate,
            seed,
        };
        let fired = |rate, seed| {
            let mut i = Injector::new(what(rate, seed));
            (0..10_000).filter(|_| i.roll()).count()
        };
        let at_tenth = fired(0.1, 7);
        assert!(
            (800..1200).contains(&at_tenth),
            "{at_tenth} of 10,000 at 0.1"
        );
        assert_eq!(fired(1.0, 7), 10_000);
        assert_eq!(fired(0.1, 7), at_tenth, "a seed replays its faults");
        let mut i = Injector::new(what(1.0, 7));
        let picks: Vec<usize> = (0..1000).map(|_| i.pick(3)).collect();
        assert!((0..3).all(|k| picks.contains(&k)) && picks.iter().all(|&k| k < 3));
    }
}
