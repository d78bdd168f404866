//! The report's types: what a run was, what happened, and what was found.

use serde::Serialize;

use crate::record::{Cpu, Violation};
use crate::verify::Totals;

use super::group;

/// How the run was configured (what the CLI knows and the harness does not).
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Number of clients.
    pub clients: usize,
    /// Messages each client sends.
    pub msgs_per_client: u64,
    /// All messages.
    pub total_msgs: u64,
    /// Payload size or range, bytes.
    pub payload: String,
    /// `unix` or `tcp`.
    pub transport: String,
    /// The relay's backend.
    pub backend: String,
    /// The built-in relay's busy-poll policy (`auto`, `off` or a duration).
    pub relay_spin: String,
    /// The built-in relay's `--max-buffer`, bytes (None for a foreign relay).
    pub relay_max_buffer: Option<usize>,
    /// The seed.
    pub seed: u64,
    /// The script, for scripted runs.
    pub scenario: Option<String>,
    /// Phases (scripts separate them with `barrier`).
    pub phases: usize,
    /// A fault the relay was told to inject (`KIND:RATE`), if any.
    pub inject: Option<String>,
    /// The relay program, when it is not the built-in relay.
    pub relay_cmd: Option<String>,
    /// The address of a relay already running elsewhere (`--relay-addr`): the run started none.
    pub relay_addr: Option<String>,
    /// `--hosts`: the client hosts (the relay has one more of its own), when the run had them.
    pub hosts: Option<usize>,
    /// `--link-rate`, `--link-delay`, `--link-loss`, in words, when the links were shaped.
    pub links: Option<String>,
    /// The nemesis, when one ran (e.g. `stop every 200ms`).
    pub nemesis: Option<String>,
    /// `mesh`, `pingpong` or `script`.
    pub pattern: String,
    /// The payload sizes messages can have (what the checks can prove follows from them).
    pub sizes: crate::payload::Sizes,
    /// The deadline, seconds.
    pub timeout_s: f64,
    /// `--duration`: how long clients sent, seconds (the counts above are then what they sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// One client's row.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    /// Name.
    pub name: String,
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Messages bounced back to it.
    pub bounced: u64,
    /// False if it did not report, or was stopped before it was done.
    pub complete: bool,
    /// Why it stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The run's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed and the run ended by itself.
    Pass,
    /// Something failed: a violation, a timeout, a process that died.
    Fail,
}

/// How the run ended, as the report names it (the supervisor's `Ending`, without its data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Every client reported.
    Finished,
    /// The deadline passed first.
    TimedOut,
    /// The quiet rule: nothing arrived for the quiet period after every client had sent all.
    Stalled,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The relay exited before the clients were done.
    RelayDied,
    /// The nemesis killed the relay.
    RelayKilled,
    /// A client exited without reporting.
    ClientDied,
    /// A process could not start.
    StartFailed,
    /// A network fault could not be made or healed.
    FaultFailed,
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// No violation.
    Ok,
    /// At least one violation.
    Failed,
    /// No violation; some payloads were too short to show this kind.
    PartlyCheckable,
    /// No payload of the run could show it.
    NotCheckable,
    /// No violation in what arrived, but a signal stopped the run before the check could be
    /// made for every message.
    NotFinished,
}

crate::words!(Verdict { Pass => "pass", Fail => "fail" });
crate::words!(Ended {
    Finished => "finished",
    TimedOut => "timed_out",
    Stalled => "stalled",
    Interrupted => "interrupted",
    RelayDied => "relay_died",
    RelayKilled => "relay_killed",
    ClientDied => "client_died",
    StartFailed => "start_failed",
    FaultFailed => "fault_failed"
});
crate::words!(CheckStatus {
    Ok => "ok",
    Failed => "failed",
    PartlyCheckable => "partly_checkable",
    NotCheckable => "not_checkable",
    NotFinished => "not_finished"
});

/// One check and how many violations it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// completeness, duplicates, order, integrity, routing, bounces.
    pub name: &'static str,
    /// No violation, and the check could be made, at least for some payloads.
    pub ok: bool,
    /// `ok`, `failed`, `partly_checkable` (no violation; some payloads were too short to
    /// show this kind) or `not_checkable` (no payload of the run could show it).
    pub status: CheckStatus,
    /// Violations found.
    pub violations: u64,
    /// Why the check could not be made, or not for every message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Check {
    /// The check as one short phrase: `order ok`, `order FAILED (3)`, `order not checkable`.
    pub fn phrase(&self) -> String {
        match self.status {
            CheckStatus::Failed => format!("{} FAILED ({})", self.name, group(self.violations)),
            CheckStatus::NotCheckable => format!("{} not checkable", self.name),
            CheckStatus::PartlyCheckable => format!("{} ok in part", self.name),
            CheckStatus::NotFinished => format!("{} not finished", self.name),
            CheckStatus::Ok => format!("{} ok", self.name),
        }
    }
}

/// Rates over the exchange phase.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Barrier release to the last client finishing, seconds.
    pub exchange_s: f64,
    /// Messages delivered per second.
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6) delivered per second.
    pub mb_per_s: f64,
}

/// Send-to-delivery latency, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Messages measured (payloads of at least 32 bytes carry a send time).
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Time per phase, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    /// First fork until every client registered.
    pub fork_register_ms: f64,
    /// Of that, first fork until the last client was forked (the rest is registering: most
    /// clients register after the last fork).
    pub forks_ms: f64,
    /// Barrier release until the last report.
    pub exchange_ms: f64,
    /// Verification.
    pub verify_ms: f64,
}

/// What the nemesis did.
#[derive(Debug, Clone, Serialize)]
pub struct NemesisReport {
    /// As configured, e.g. `stop every 200ms`.
    pub what: String,
    /// Each action: what, on whom, milliseconds after the barrier, and for how long.
    pub events: Vec<crate::supervisor::NemesisEvent>,
    /// Milliseconds the relay held senders back, summed over senders (built-in relay only).
    pub relay_held_back_ms: Option<u64>,
    /// Connections the relay ended because the peer fell silent (`--peer-timeout`; built-in
    /// relay only).
    pub relay_peer_timeouts: Option<u64>,
    /// Messages per second the other clients received while a client was stopped.
    pub others_msgs_per_s_during_stops: Option<f64>,
    /// Messages per second all clients received the rest of the time.
    pub msgs_per_s_between_stops: Option<f64>,
    /// The longest time, during a stop, in which no other client received anything although
    /// some still had messages due: how long the relay froze (10 ms resolution).
    pub others_starved_ms: Option<u64>,
    /// The stop it happened in: the stopped client, and how long it was stopped (ms).
    pub starved_during: Option<(String, u64)>,
}

/// Faults the relay injected on purpose.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// `KIND:RATE` as given.
    pub fault: String,
    /// Times the relay applied it (None if the relay never said).
    pub fired: Option<u64>,
}

/// Peak resident memory per role, KiB.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// The supervisor (this process).
    pub supervisor_kib: u64,
    /// The relay, if it reported.
    pub relay_kib: Option<u64>,
    /// The largest of the clients that reported.
    pub client_max_kib: Option<u64>,
}

/// CPU time per role, from each process's getrusage when it finished.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    /// The relay, if it reported (a foreign relay does not).
    pub relay: Option<Cpu>,
    /// The clients that reported, summed.
    pub clients: Cpu,
    /// The supervisor, up to the end of the run (forks, pipes, reading the reports).
    pub supervisor: Cpu,
    /// The relay's CPU time per message received, microseconds.
    pub relay_us_per_msg: Option<f64>,
    /// The clients' CPU time per message received (sending and checking it), microseconds.
    pub clients_us_per_msg: Option<f64>,
}

/// A process and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// relay, c0, c1, ...
    pub role: String,
    /// How it exited.
    pub status: String,
}

/// The harness report (human and JSON are two renderings of it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// JSON schema version.
    pub schema_version: u32,
    /// `pass` or `fail`.
    pub verdict: Verdict,
    /// finished, timed_out, interrupted, relay_died, relay_killed (by the nemesis),
    /// client_died, start_failed.
    pub ending: Ended,
    /// What went wrong, in a sentence, when something did.
    pub failure: Option<String>,
    /// The exit code relay-sim exits with.
    pub exit_code: i32,
    /// The command that replays this run.
    pub replay: String,
    /// Configuration.
    pub config: RunConfig,
    /// Per client.
    pub clients: Vec<ClientRow>,
    /// Totals.
    pub totals: Totals,
    /// Per check.
    pub checks: Vec<Check>,
    /// Violations in detail (at most [`JSON_VIOLATIONS`]).
    pub violations: Vec<Violation>,
    /// All violations, counted.
    pub violations_total: u64,
    /// Over the exchange phase; absent if the exchange never started.
    pub throughput: Option<Throughput>,
    /// Absent when no payload carried a send time.
    pub latency_us: Option<Latency>,
    /// Time per phase.
    pub phases: Phases,
    /// Peak memory per role.
    pub memory: Memory,
    /// CPU time per role: where the time went.
    pub cpu: CpuUse,
    /// Faults injected on purpose, when `--inject` was given (the run is meant to fail).
    pub inject: Option<Injected>,
    /// What the nemesis did, when one ran.
    pub nemesis: Option<NemesisReport>,
    /// A foreign relay's log file.
    pub relay_log: Option<String>,
    /// Its last lines, when the run failed.
    pub relay_log_tail: Option<String>,
    /// Every child process and its exit.
    pub processes: Vec<Process>,
    /// `--trace`: the merged timeline of every process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::Timeline>,
}
