//! relay-trace: the clock and the per-process event trace that relay-sim's relay, clients
//! and supervisor all use.
//!
//! A leaf: it imports nothing of relay-sim, so the relay (src/relay/) records its trace
//! without depending on the test harness, and the harness merges the traces of every process
//! into one timeline (relay_harness::trace). Nothing is recorded, formatted or sent when
//! tracing is off: every call site is behind `if let Some(tracer)`.

use serde::{Deserialize, Serialize};

/// CLOCK_MONOTONIC in ns: comparable across the processes of one machine.
pub fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// One process's events, as it hands them over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Its pid.
    pub pid: i32,
    /// Events: (CLOCK_MONOTONIC ns, what happened).
    pub events: Vec<(u64, String)>,
    /// Events past the cap, counted but not kept.
    pub cut: u64,
}

/// Records one process's events, up to a cap.
#[derive(Debug, Clone)]
pub struct Tracer {
    trace: Trace,
    cap: usize,
}

impl Tracer {
    /// A tracer for this process that keeps its first `cap` events.
    pub fn new(cap: usize) -> Tracer {
        Tracer {
            trace: Trace {
                pid: std::process::id() as i32,
                events: Vec::new(),
                cut: 0,
            },
            cap,
        }
    }

    /// True while events are still kept (callers may skip building costly text otherwise).
    pub fn room(&self) -> bool {
        self.trace.events.len() < self.cap
    }

    /// Records an event now.
    pub fn ev(&mut self, what: impl FnOnce() -> String) {
        if self.room() {
            self.trace.events.push((now_ns(), what()));
        } else {
            self.trace.cut += 1;
        }
    }

    /// Records a rare event that marks the whole run (a fault), past the cap too: a reader
    /// of a long run's trace still sees when each partition began and healed.
    pub fn always(&mut self, what: String) {
        self.trace.events.push((now_ns(), what));
    }

    /// Records an event that happened at `t_ns`.
    pub fn at(&mut self, t_ns: u64, what: String) {
        if self.room() {
            self.trace.events.push((t_ns, what));
        } else {
            self.trace.cut += 1;
        }
    }

    /// The events so far, leaving the tracer empty.
    pub fn take(&mut self) -> Trace {
        let pid = self.trace.pid;
        std::mem::replace(
            &mut self.trace,
            Trace {
                pid,
                events: Vec::new(),
                cut: 0,
            },
        )
    }
}
