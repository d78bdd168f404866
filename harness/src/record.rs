//! Records: what each client did, as it tells the supervisor at the end. No sockets here.

use serde::{Deserialize, Serialize};

/// The classes of broken promise the verifier reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A message sent to a registered receiver never arrived.
    Lost,
    /// A message arrived twice (or an older one arrived after a newer one).
    Duplicate,
    /// A message arrived ahead of one sent before it on the same pair.
    Order,
    /// A payload's length or bytes differ from what was sent.
    Integrity,
    /// A message reached a client it was not addressed to.
    Misrouted,
    /// A DELIVER's `src` is not the client that sent it.
    Spoofed,
    /// A BOUNCE that matches no message the client sent, or a bounce where none may happen.
    Bounce,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 7] = [
        Class::Lost,
        Class::Duplicate,
        Class::Order,
        Class::Integrity,
        Class::Misrouted,
        Class::Spoofed,
        Class::Bounce,
    ];

    /// The check a class belongs to in the report.
    pub fn check(self) -> &'static str {
        match self {
            Class::Lost => "completeness",
            Class::Duplicate => "duplicates",
            Class::Order => "order",
            Class::Integrity => "integrity",
            Class::Misrouted | Class::Spoofed => "routing",
            Class::Bounce => "bounces",
        }
    }

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Class::Lost => "lost",
            Class::Duplicate => "duplicate",
            Class::Order => "order",
            Class::Integrity => "integrity",
            Class::Misrouted => "misrouted",
            Class::Spoofed => "spoofed",
            Class::Bounce => "bounce",
        }
    }
}

/// One broken promise, about one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Its class.
    pub class: Class,
    /// The sender's name (as the message or DELIVER says, when they disagree: the true one).
    pub sender: String,
    /// The receiver's name (the intended one).
    pub receiver: String,
    /// The per-pair sequence concerned, when known.
    pub seq: Option<u64>,
    /// What should have happened.
    pub expected: String,
    /// What happened.
    pub got: String,
}

/// One line: `order c0 -> c3 seq 17: expected seq 17, got seq 18`. With a width
/// (`{v:10}`), the class is padded to it, so the lines of a list align.
impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = f.width().unwrap_or(0);
        write!(
            f,
            "{:<width$} {} -> {}",
            self.class.name(),
            self.sender,
            self.receiver
        )?;
        if let Some(s) = self.seq {
            write!(f, " seq {s}")?;
        }
        write!(f, ": expected {}, got {}", self.expected, self.got)
    }
}

/// Most violations a client keeps in detail (all are counted).
pub const VIOLATIONS_KEPT: usize = 1000;

/// One client's counts with one peer (only peers with a count above zero are listed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounts {
    /// The peer's index in the run's names.
    pub peer: usize,
    /// Messages sent to the peer.
    pub sent: u64,
    /// Messages received from the peer (not duplicates, not misrouted).
    pub received: u64,
    /// Messages to the peer that came back as BOUNCE.
    pub bounced: u64,
    /// Sequences from the peer that were skipped and never arrived (holes in its stream).
    #[serde(default)]
    pub holes: u64,
    /// The first of those holes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_hole: Option<u64>,
    /// The next sequence expected from the peer (one past the last in-order arrival).
    #[serde(default)]
    pub next: u64,
    /// Arrivals from the peer that carried no sequence (empty payloads): which messages of its
    /// stream are missing cannot be named.
    #[serde(default)]
    pub unsequenced: u64,
}

/// What one client did, sent up its event pipe when it finishes (or is told to stop).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientReport {
    /// Client index.
    pub index: usize,
    /// Counts per peer, sparse: a client of thousands talks to few, and the supervisor keeps
    /// every report.
    pub peers: Vec<PeerCounts>,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Violations seen, in detail (at most [`VIOLATIONS_KEPT`]).
    pub violations: Vec<Violation>,
    /// Violations seen, counted by class.
    pub violation_counts: Vec<(Class, u64)>,
    /// Latency histogram (send to delivery, ns) as (value, count) pairs.
    pub latency_ns: Vec<(u64, u64)>,
    /// CLOCK_MONOTONIC ns when it had sent and received everything (or stopped).
    pub finished_ns: u64,
    /// False when it was stopped before it was done.
    pub complete: bool,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
    /// Its peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// CPU time it used.
    #[serde(default)]
    pub cpu: Cpu,
    /// Deliveries per bucket of `bucket_ns` since `rate_clock0_ns`, sparse: (bucket, count).
    pub rate: Vec<(u32, u32)>,
    /// CLOCK_MONOTONIC ns when its exchange started (its delivery-rate clock).
    pub rate_clock0_ns: u64,
    /// The width of `rate` and `latency` buckets: 10 ms, doubled as often as a long run
    /// needed to keep at most 512 of them.
    pub bucket_ns: u64,
    /// Latency per bucket, sparse: (bucket, timed deliveries, sum ns, max ns).
    #[serde(default)]
    pub latency: Vec<(u32, u32, u64, u64)>,
    /// What it did, when asked to keep a transcript: (CLOCK_MONOTONIC ns, what happened).
    pub transcript: Vec<(u64, String)>,
    /// `--trace`: its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::Trace>,
}

impl ClientReport {
    /// Messages sent.
    pub fn sent(&self) -> u64 {
        self.peers.iter().map(|p| p.sent).sum()
    }

    /// Messages received.
    pub fn received(&self) -> u64 {
        self.peers.iter().map(|p| p.received).sum()
    }

    /// Messages bounced.
    pub fn bounced(&self) -> u64 {
        self.peers.iter().map(|p| p.bounced).sum()
    }
}

/// CPU time a process used (getrusage), microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// In user space.
    pub user_us: u64,
    /// In the kernel on its behalf (system calls, copying, scheduling).
    pub sys_us: u64,
}

impl Cpu {
    /// What this process has used so far (zero if getrusage fails).
    pub fn used() -> Cpu {
        use nix::sys::resource::{getrusage, UsageWho};
        let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
        getrusage(UsageWho::RUSAGE_SELF).map_or(Cpu::default(), |r| Cpu {
            user_us: us(r.user_time()),
            sys_us: us(r.system_time()),
        })
    }

    /// User plus system.
    pub fn total_us(&self) -> u64 {
        self.user_us + self.sys_us
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu {
            user_us: self.user_us + o.user_us,
            sys_us: self.sys_us + o.sys_us,
        }
    }
}

/// Most transcript lines a client keeps.
pub const TRANSCRIPT_KEPT: usize = 500;

/// What a child tells the supervisor, one JSON line each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChildEvent {
    /// Connected and registered; waiting at the start barrier.
    Ready,
    /// Done with its work (the client index); it keeps reading, and checking what still comes,
    /// until the supervisor closes the stop pipe, then sends Done.
    Complete(usize),
    /// Finished a phase (all but the last); waiting at the next barrier.
    PhaseDone(usize),
    /// Finished (or stopped); its records.
    Done(Box<ClientReport>),
    /// Could not start (connect or register failed).
    Failed(String),
    /// The relay stopped; what it did.
    RelayDone(Box<RelayReport>),
}

/// The relay's last word to the supervisor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayReport {
    /// Its peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// CPU time it used.
    pub cpu: Cpu,
    /// Times it applied an injected fault.
    pub injected: u64,
    /// Milliseconds it held senders back, summed over senders.
    pub held_back_ms: u64,
    /// Connections it ended because the peer fell silent (`--peer-timeout`).
    pub peer_timeouts: u64,
    /// `--trace`: its events.
    pub trace: Option<crate::trace::Trace>,
}
