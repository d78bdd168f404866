//! Reports: one result, read by two consumers (human text and JSON). Reporters only read
//! the result; they never touch a process or a socket. docs/report.md describes the JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::exit;
use crate::payload::Checkable;
use crate::record::{Class, Cpu, Violation};
use crate::supervisor::{Ending, Outcome};
use crate::verify::{Totals, Verification};

/// The JSON schema version; bump it when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;
/// Most violations listed in the JSON report (all are counted).
pub const JSON_VIOLATIONS: usize = 1000;
/// Most violations listed in the human report.
pub const HUMAN_VIOLATIONS: usize = 20;

/// A signal's name as a person knows it.
pub fn signal_name(sig: i32) -> String {
    match sig {
        2 => "SIGINT (Ctrl-C)".to_string(),
        15 => "SIGTERM".to_string(),
        n => format!("signal {n}"),
    }
}

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

/// One check and how many violations it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// completeness, duplicates, order, integrity, routing, bounces.
    pub name: &'static str,
    /// No violation, and the check could be made, at least for some payloads.
    pub ok: bool,
    /// `ok`, `failed`, `partly_checkable` (no violation; some payloads were too short to
    /// show this kind) or `not_checkable` (no payload of the run could show it).
    pub status: &'static str,
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
            "failed" => format!("{} FAILED ({})", self.name, group(self.violations)),
            "not_checkable" => format!("{} not checkable", self.name),
            "partly_checkable" => format!("{} ok in part", self.name),
            _ => format!("{} ok", self.name),
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
    pub verdict: &'static str,
    /// finished, timed_out, interrupted, relay_died, relay_killed (by the nemesis),
    /// client_died, start_failed.
    pub ending: &'static str,
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Builds the report from what the supervisor and verifier found.
pub fn build(
    config: RunConfig,
    names: &[String],
    replay: String,
    outcome: &Outcome,
    v: &Verification,
    verify_time: Duration,
) -> Report {
    let n = config.clients;
    let inject = config.inject.clone();
    let nemesis_what = config.nemesis.clone();
    let clients = (0..n)
        .map(|i| {
            let r = outcome.reports.get(i).and_then(Option::as_ref);
            ClientRow {
                name: names.get(i).cloned().unwrap_or_else(|| format!("c{i}")),
                sent: r.map_or(0, |r| r.sent()),
                received: r.map_or(0, |r| r.received()),
                bounced: r.map_or(0, |r| r.bounced()),
                complete: r.is_some_and(|r| r.complete),
                error: r.and_then(|r| r.error.clone()),
            }
        })
        .collect();
    let check_names = [
        "completeness",
        "duplicates",
        "order",
        "integrity",
        "routing",
        "bounces",
    ];
    let checks = check_names
        .iter()
        .map(|&name| {
            let k: u64 = Class::ALL
                .iter()
                .filter(|c| c.check() == name)
                .map(|&c| v.count(c))
                .sum();
            let can = config.sizes.checkable(name);
            let (status, note) = match can {
                _ if k > 0 => ("failed", None),
                Checkable::Yes => ("ok", None),
                Checkable::Partly(why) => ("partly_checkable", Some(why)),
                Checkable::No(why) => ("not_checkable", Some(why)),
            };
            Check {
                name,
                ok: status == "ok" || status == "partly_checkable",
                status,
                violations: k,
                note,
            }
        })
        .collect();

    let last_finish = outcome
        .reports
        .iter()
        .flatten()
        .map(|r| r.finished_ns)
        .max()
        .unwrap_or(0);
    let throughput = (outcome.released_ns > 0 && last_finish > outcome.released_ns).then(|| {
        let s = (last_finish - outcome.released_ns) as f64 / 1e9;
        Throughput {
            exchange_s: s,
            msgs_per_s: v.totals.received as f64 / s,
            mb_per_s: v.totals.bytes_received as f64 / s / 1e6,
        }
    });
    let latency_us = v.latency.as_ref().map(|h| Latency {
        count: h.len(),
        p50: h.value_at_quantile(0.50) as f64 / 1e3,
        p90: h.value_at_quantile(0.90) as f64 / 1e3,
        p99: h.value_at_quantile(0.99) as f64 / 1e3,
        p999: h.value_at_quantile(0.999) as f64 / 1e3,
        max: h.max() as f64 / 1e3,
    });
    let exchange = outcome.released_at.map_or(Duration::ZERO, |t| {
        outcome.ended_at.saturating_duration_since(t)
    });

    let (ending, failure) = match &outcome.ending {
        Ending::Finished => ("finished", None),
        Ending::TimedOut => (
            "timed_out",
            Some(format!(
                "timed out after {:.1} s: {} of {} message(s) were sent{}",
                config.timeout_s,
                group(v.totals.sent),
                group(config.total_msgs),
                match v.count(Class::Lost) {
                    0 => "; every one sent arrived, the rest was never sent (--timeout sets the deadline)".to_string(),
                    k => format!(", and {} of them are missing", group(k)),
                }
            )),
        ),
        Ending::Stalled(q) => (
            "stalled",
            Some(format!(
                "stalled: every client had sent everything, then nothing arrived for {:.1} s ({}; --quiet-period sets how long to wait)",
                q.as_secs_f64(),
                match v.count(Class::Lost) {
                    0 => "no message was found missing: see each client's error and the violations".to_string(),
                    k => format!("{} message(s) never arrived", group(k)),
                }
            )),
        ),
        Ending::Interrupted(sig) => ("interrupted", Some(format!("interrupted by {}", signal_name(*sig)))),
        Ending::RelayKilled(_) => ("relay_killed", None),
        Ending::RelayDied(st) => (
            "relay_died",
            Some(format!(
                "the relay exited before the clients were done ({st})"
            )),
        ),
        Ending::ClientDied(i, st) => (
            "client_died",
            Some(format!(
                "client {} exited without reporting ({st})",
                names.get(*i).cloned().unwrap_or_else(|| format!("c{i}"))
            )),
        ),
        Ending::StartFailed(why) => (
            "start_failed",
            Some(format!("a process could not start: {why}")),
        ),
    };
    let violations_total = v.total_violations();
    let failure = failure.or_else(|| {
        (violations_total > 0)
            .then(|| format!("{violations_total} violation(s) of the relay's guarantees"))
    });
    let exit_code = match &outcome.ending {
        Ending::Finished | Ending::RelayKilled(_) if violations_total == 0 => exit::OK,
        Ending::Interrupted(sig) => exit::interrupted(*sig),
        Ending::StartFailed(_) => exit::ENV,
        _ => exit::FAIL,
    };
    Report {
        schema_version: SCHEMA_VERSION,
        verdict: if exit_code == exit::OK {
            "pass"
        } else {
            "fail"
        },
        ending,
        failure,
        exit_code,
        replay,
        config,
        clients,
        totals: v.totals.clone(),
        checks,
        violations: v.violations.iter().take(JSON_VIOLATIONS).cloned().collect(),
        violations_total,
        throughput,
        latency_us,
        phases: Phases {
            fork_register_ms: ms(outcome.register),
            exchange_ms: ms(exchange),
            verify_ms: ms(verify_time),
        },
        nemesis: nemesis_what.map(|what| {
            let (during, between) = stop_rates(outcome, names);
            let starved = starvation(outcome, names);
            NemesisReport {
                what,
                events: outcome.nemesis.clone(),
                relay_held_back_ms: outcome.relay.as_ref().map(|r| r.held_back_ms),
                others_msgs_per_s_during_stops: during,
                msgs_per_s_between_stops: between,
                others_starved_ms: starved.as_ref().map(|s| s.0),
                starved_during: starved.map(|s| (s.1, s.2)),
            }
        }),
        inject: inject.map(|fault| Injected {
            fault,
            fired: outcome.relay.as_ref().map(|r| r.injected),
        }),
        cpu: {
            let relay_cpu = outcome.relay.as_ref().map(|r| r.cpu);
            let clients = outcome
                .reports
                .iter()
                .flatten()
                .fold(Cpu::default(), |a, r| a + r.cpu);
            let per_msg = |c: Cpu| {
                (v.totals.received > 0).then(|| c.total_us() as f64 / v.totals.received as f64)
            };
            CpuUse {
                relay: relay_cpu,
                clients,
                supervisor: outcome.supervisor_cpu,
                relay_us_per_msg: relay_cpu.and_then(per_msg),
                clients_us_per_msg: per_msg(clients),
            }
        },
        memory: Memory {
            supervisor_kib: outcome.supervisor_peak_rss_kib,
            relay_kib: outcome.relay.as_ref().map(|r| r.peak_rss_kib),
            client_max_kib: outcome
                .reports
                .iter()
                .flatten()
                .map(|r| r.peak_rss_kib)
                .max(),
        },
        relay_log: None,
        relay_log_tail: None,
        processes: outcome
            .statuses
            .iter()
            .map(|(role, status)| Process {
                role: role.clone(),
                status: status.clone(),
            })
            .collect(),
        trace: None,
    }
}

/// Delivery rates while a client was stopped (to the other clients) and between stops (to
/// all), from the clients' 10 ms delivery counts; the difference shows a relay that freezes.
fn stop_rates(outcome: &Outcome, names: &[String]) -> (Option<f64>, Option<f64>) {
    let t0 = outcome.released_ns;
    let windows: Vec<(&str, u64, u64)> = outcome
        .nemesis
        .iter()
        .filter(|e| e.action == crate::supervisor::Action::Stop)
        .map(|e| {
            (
                e.role.as_str(),
                t0 + e.at_ms * 1_000_000,
                t0 + (e.at_ms + e.for_ms) * 1_000_000,
            )
        })
        .collect();
    if windows.is_empty() || t0 == 0 {
        return (None, None);
    }
    let end = outcome
        .reports
        .iter()
        .flatten()
        .map(|r| r.finished_ns)
        .max()
        .unwrap_or(t0);
    let (mut during, mut between) = (0u64, 0u64);
    for (i, r) in outcome.reports.iter().enumerate() {
        let Some(r) = r else { continue };
        let me = names.get(i).map(String::as_str).unwrap_or("");
        for &(b, n) in &r.rate {
            let at = r.rate_clock0_ns + u64::from(b) * r.bucket_ns + r.bucket_ns / 2;
            match windows.iter().find(|(_, from, to)| at >= *from && at < *to) {
                Some((who, _, _)) if *who != me => during += u64::from(n),
                Some(_) => {}
                None => between += u64::from(n),
            }
        }
    }
    let stopped_ns: u64 = windows
        .iter()
        .map(|(_, a, b)| b.min(&end).saturating_sub(*a))
        .sum();
    let total_ns = end.saturating_sub(t0);
    let rate = |n: u64, ns: u64| (ns > 0).then(|| n as f64 / (ns as f64 / 1e9));
    (
        rate(during, stopped_ns),
        rate(between, total_ns.saturating_sub(stopped_ns)),
    )
}

/// The longest stretch of a stop in which none of the other clients received anything while
/// at least one of them still had messages to come: (ms, stopped client, stop length ms).
fn starvation(outcome: &Outcome, names: &[String]) -> Option<(u64, String, u64)> {
    let t0 = outcome.released_ns;
    if t0 == 0 {
        return None;
    }
    // 10 ms, or wider in a long run (the resolution of what this can see).
    let width = crate::plots::bucket_width(&outcome.reports);
    // Per client: the run's buckets in which it received something, and its last one.
    let mut got: Vec<(usize, std::collections::HashSet<u64>, u64)> = Vec::new();
    for (i, r) in outcome.reports.iter().enumerate() {
        let Some(r) = r else { continue };
        let set: std::collections::HashSet<u64> = r
            .rate
            .iter()
            .map(|&(b, _)| {
                (r.rate_clock0_ns + u64::from(b) * r.bucket_ns).saturating_sub(t0) / width
            })
            .collect();
        let last = set.iter().copied().max().unwrap_or(0);
        got.push((i, set, last));
    }
    let mut worst: Option<(u64, String, u64)> = None;
    for e in outcome
        .nemesis
        .iter()
        .filter(|e| e.action == crate::supervisor::Action::Stop)
    {
        let who = names.iter().position(|n| *n == e.role);
        let ms_per = width / 1_000_000;
        let (from, to) = (e.at_ms / ms_per, (e.at_ms + e.for_ms) / ms_per);
        let (mut run, mut longest) = (0u64, 0u64);
        for k in from..to {
            let others = got.iter().filter(|(i, _, _)| Some(*i) != who);
            let due = others.clone().any(|(_, _, last)| *last > k);
            let moved = others.clone().any(|(_, set, _)| set.contains(&k));
            if due && !moved {
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        let ms = longest * ms_per;
        if worst.as_ref().is_none_or(|w| ms > w.0) {
            worst = Some((ms, e.role.clone(), e.for_ms));
        }
    }
    worst
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2} ms", x / 1000.0)
    } else {
        format!("{x:.1} us")
    }
}

/// The human report.
pub fn human(r: &Report) -> String {
    let c = &r.config;
    let mut o = String::new();
    match &c.scenario {
        None if c.duration_s.is_some() => {
            let _ = writeln!(
                o,
                "relay-sim: {} clients sending for {:.1} s: {} messages, payload {} B, {} socket, backend {}, seed {}",
                c.clients,
                c.duration_s.unwrap_or_default(),
                group(c.total_msgs),
                c.payload,
                c.transport,
                c.backend,
                c.seed
            );
        }
        None => {
            let _ = writeln!(
                o,
                "relay-sim: {} clients x {} messages = {} messages, payload {} B, {} socket, backend {}, seed {}",
                c.clients,
                group(c.msgs_per_client),
                group(c.total_msgs),
                c.payload,
                c.transport,
                c.backend,
                c.seed
            );
        }
        Some(file) => {
            let _ = writeln!(
                o,
                "relay-sim: scenario {file}: {} clients, {} messages in {} phase(s), {} socket, backend {}, seed {}",
                c.clients,
                group(c.total_msgs),
                c.phases,
                c.transport,
                c.backend,
                c.seed
            );
        }
    }
    let loud = r.inject.as_ref().map(|i| {
        format!(
            "!!! FAULTS INJECTED ON PURPOSE: {} (applied {} times): this run tests the verifier and is meant to fail",
            i.fault,
            i.fired.map_or("?".to_string(), |f| f.to_string())
        )
    });
    if let Some(l) = &loud {
        let _ = writeln!(o, "{l}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:<8} {:>12} {:>12} {:>8}",
        "client", "sent", "received", "bounced"
    );
    for row in &r.clients {
        let mark = if row.complete { "" } else { "  (incomplete)" };
        let _ = writeln!(
            o,
            "  {:<8} {:>12} {:>12} {:>8}{mark}",
            row.name,
            group(row.sent),
            group(row.received),
            group(row.bounced)
        );
    }
    let t = &r.totals;
    let _ = writeln!(
        o,
        "  {:<8} {:>12} {:>12} {:>8}",
        "total",
        group(t.sent),
        group(t.received),
        group(t.bounced)
    );
    let _ = writeln!(o);
    let checks: Vec<String> = r.checks.iter().map(Check::phrase).collect();
    let _ = writeln!(o, "checks:     {}", checks.join(", "));
    for k in &r.checks {
        if let (Some(note), "not_checkable" | "partly_checkable") = (&k.note, k.status) {
            let _ = writeln!(o, "            {}: {note}", k.phrase());
        }
    }
    if r.violations_total > 0 {
        let shown = r.violations.len().min(HUMAN_VIOLATIONS);
        let _ = writeln!(
            o,
            "violations: {} (first {shown}):",
            group(r.violations_total)
        );
        for v in r.violations.iter().take(HUMAN_VIOLATIONS) {
            let seq = v.seq.map_or(String::new(), |s| format!(" seq {s}"));
            let _ = writeln!(
                o,
                "  {:<10} {} -> {}{seq}: expected {}, got {}",
                v.class.name(),
                v.sender,
                v.receiver,
                v.expected,
                v.got
            );
        }
    }
    match &r.throughput {
        Some(tp) => {
            let _ = writeln!(
                o,
                "throughput: {} msg/s, {:.1} MB/s over the exchange phase ({:.1} ms)",
                group(tp.msgs_per_s as u64),
                tp.mb_per_s,
                tp.exchange_s * 1000.0
            );
        }
        None => {
            let _ = writeln!(o, "throughput: no exchange phase");
        }
    }
    match &r.latency_us {
        Some(l) => {
            let _ = writeln!(
                o,
                "latency:    p50 {}, p90 {}, p99 {}, p99.9 {}, max {} ({}, {} messages)",
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max),
                if c.pattern == "pingpong" {
                    "round trip"
                } else {
                    "send to delivery"
                },
                group(l.count)
            );
        }
        None => {
            let _ = writeln!(
                o,
                "latency:    not measured (payloads under 32 bytes carry no send time)"
            );
        }
    }
    let p = &r.phases;
    let _ = writeln!(
        o,
        "phases:     fork+register {:.1} ms, exchange {:.1} ms, verify {:.1} ms",
        p.fork_register_ms, p.exchange_ms, p.verify_ms
    );
    if let Some(n) = &r.nemesis {
        use crate::supervisor::Action;
        let first: Vec<String> = n
            .events
            .iter()
            .take(6)
            .map(|e| match e.action {
                Action::Stop => format!("stop {} at {} ms for {} ms", e.role, e.at_ms, e.for_ms),
                Action::Restart => format!(
                    "restart {} at {} ms (dead {} ms)",
                    e.role, e.at_ms, e.for_ms
                ),
                Action::Relay => format!("killed the relay at {} ms", e.at_ms),
                a => format!("{} {} at {} ms", a.name(), e.role, e.at_ms),
            })
            .collect();
        let more = if n.events.len() > 6 { ", ..." } else { "" };
        let held = n.relay_held_back_ms.map_or(String::new(), |h| {
            format!("; the relay held senders back {} ms in all", group(h))
        });
        let rates = match (n.others_msgs_per_s_during_stops, n.msgs_per_s_between_stops) {
            (Some(d), Some(b)) => format!(
                "\n            while a client was stopped the others received {} msg/s; between stops, {} msg/s",
                group(d as u64),
                group(b as u64)
            ),
            _ => String::new(),
        };
        let rates = match (n.others_starved_ms, &n.starved_during) {
            (Some(ms), Some((who, len))) if ms > 0 => format!(
                "{rates}\n            longest time no other client received anything, with messages still due: {ms} ms (while {who} was stopped for {len} ms){}",
                if ms * 10 >= len * 8 { ": the relay froze" } else { "" }
            ),
            _ => rates,
        };
        let _ = writeln!(
            o,
            "nemesis:    {}: {} action(s) ({}{more}){held}{rates}",
            n.what,
            n.events.len(),
            first.join(", ")
        );
    }
    let m = &r.memory;
    let kib =
        |k: Option<u64>| k.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let _ = writeln!(
        o,
        "memory:     peak RSS supervisor {}, relay {}, largest client {}",
        kib(Some(m.supervisor_kib)),
        kib(m.relay_kib),
        kib(m.client_max_kib)
    );
    let c = &r.cpu;
    let secs = |c: &Cpu| format!("{:.2} s", c.total_us() as f64 / 1e6);
    let relay = c.relay.as_ref().map_or("?".to_string(), |rc| {
        format!(
            "{} (user {:.2}, system {:.2}{})",
            secs(rc),
            rc.user_us as f64 / 1e6,
            rc.sys_us as f64 / 1e6,
            c.relay_us_per_msg
                .map_or(String::new(), |u| format!(": {u:.2} us per message"))
        )
    });
    let _ = writeln!(
        o,
        "cpu:        relay {relay}; clients {}{}; supervisor {}",
        secs(&c.clients),
        c.clients_us_per_msg
            .map_or(String::new(), |u| format!(" ({u:.2} us per message)")),
        secs(&c.supervisor)
    );
    if r.exit_code != exit::OK {
        for pr in r.processes.iter().filter(|p| p.status != "exited 0") {
            let _ = writeln!(o, "process:    {} {}", pr.role, pr.status);
        }
    }
    if let Some(l) = &loud {
        let _ = writeln!(o, "{l}");
    }
    match &r.failure {
        None if r.ending == "relay_killed" => {
            let _ = writeln!(
                o,
                "verdict:    PASS: the nemesis killed the relay and the run ended there; what \
                 arrived before is intact, in order, and a gap-free prefix of what was sent"
            );
        }
        None => {
            let _ = writeln!(o, "verdict:    PASS");
        }
        Some(f) => {
            if let Some(tail) = &r.relay_log_tail {
                let _ = writeln!(
                    o,
                    "relay log:  {}(last lines):",
                    r.relay_log
                        .as_deref()
                        .map_or(String::new(), |p| format!("{p} "))
                );
                for line in tail.lines() {
                    let _ = writeln!(o, "  | {line}");
                }
            }
            let _ = writeln!(o, "verdict:    FAIL: {f}");
            let _ = writeln!(o, "replay:     {}", r.replay);
        }
    }
    o
}

/// The report as JUnit XML: one test case per check (completeness, duplicates, order,
/// integrity, routing, bounces), plus one for the run's ending and one for injected faults.
pub fn junit(r: &Report) -> String {
    use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("relay-sim");
    let fail = |msg: String, detail: String| {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(msg).set_description(detail);
        s
    };
    for c in &r.checks {
        let status = if c.status == "not_checkable" {
            // Not run: JUnit's word for a test that could not be made is "skipped".
            let mut s = TestCaseStatus::skipped();
            s.set_message(format!(
                "not checkable: {}",
                c.note.clone().unwrap_or_default()
            ));
            s
        } else if c.ok {
            TestCaseStatus::success()
        } else {
            let detail: Vec<String> = r
                .violations
                .iter()
                .filter(|v| v.class.check() == c.name)
                .take(HUMAN_VIOLATIONS)
                .map(|v| {
                    let seq = v.seq.map_or(String::new(), |s| format!(" seq {s}"));
                    format!(
                        "{} {} -> {}{seq}: expected {}, got {}",
                        v.class.name(),
                        v.sender,
                        v.receiver,
                        v.expected,
                        v.got
                    )
                })
                .collect();
            fail(format!("{} violation(s)", c.violations), detail.join("\n"))
        };
        let mut case = TestCase::new(c.name, status);
        if let (Some(note), "partly_checkable") = (&c.note, c.status) {
            case.set_system_out(format!("checked in part: {note}"));
        }
        suite.add_test_case(case);
    }
    let ending = if r.ending == "finished" || r.ending == "relay_killed" {
        TestCaseStatus::success()
    } else {
        fail(
            r.failure.clone().unwrap_or_default(),
            format!("replay: {}", r.replay),
        )
    };
    suite.add_test_case(TestCase::new("run ends by itself", ending));
    if let Some(i) = &r.inject {
        // A fault that fired must have been caught: that is what an injected run tests.
        let caught = r.exit_code != exit::OK || i.fired == Some(0);
        let status = if caught {
            TestCaseStatus::success()
        } else {
            fail(
                format!("{} fired but the verifier passed the run", i.fault),
                String::new(),
            )
        };
        suite.add_test_case(TestCase::new(
            format!("injected fault {} is caught", i.fault),
            status,
        ));
    }
    if let Some(n) = &r.nemesis {
        // One case per kind of process fault that struck: the promises held under it.
        let mut kinds: Vec<crate::supervisor::Action> = Vec::new();
        for e in &n.events {
            if !kinds.contains(&e.action) {
                kinds.push(e.action);
            }
        }
        for k in kinds {
            let count = n.events.iter().filter(|e| e.action == k).count();
            let status = if r.exit_code == exit::OK {
                TestCaseStatus::success()
            } else {
                fail(
                    r.failure.clone().unwrap_or_default(),
                    format!("replay: {}", r.replay),
                )
            };
            suite.add_test_case(TestCase::new(
                format!(
                    "nemesis {} ({count} time(s)): the guarantees held",
                    k.name()
                ),
                status,
            ));
        }
    }
    let mut report = JReport::new("relay-sim");
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}

/// index.html of a results folder: the configuration, seed and verdict, every check, and the
/// pictures (given as file name and title) on one page.
pub fn html(r: &Report, pictures: &[(&str, &str)], has_trace: bool) -> String {
    use crate::plots::escape;
    let c = &r.config;
    let mut o = String::new();
    let verdict_color = if r.exit_code == exit::OK {
        "#1a7f37"
    } else {
        "#cf222e"
    };
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>relay-sim: {} ({})</title>\
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse}}td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}\
.verdict{{font-size:1.4em;font-weight:bold;color:{verdict_color}}}img{{max-width:100%;border:1px solid #ddd;margin:.5em 0}}\
pre{{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:.85em}}</style></head><body>\n",
        r.verdict,
        escape(&r.replay)
    );
    let _ = writeln!(o, "<h1>relay-sim results</h1>");
    let _ = writeln!(
        o,
        "<p class=\"verdict\">{}{}</p>",
        r.verdict.to_uppercase(),
        r.failure
            .as_ref()
            .map_or(String::new(), |f| format!(": {}", escape(f)))
    );
    let _ = writeln!(o, "<h2>Configuration</h2><table>");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    };
    row("clients", c.clients.to_string());
    row(
        "messages",
        format!("{} ({} per client)", c.total_msgs, c.msgs_per_client),
    );
    row("payload", format!("{} bytes", c.payload));
    row("pattern", c.pattern.clone());
    row("transport", c.transport.clone());
    row("backend", c.backend.clone());
    row("relay busy-poll", c.relay_spin.clone());
    if let Some(b) = c.relay_max_buffer {
        row("relay output bound", format!("{b} bytes per receiver"));
    }
    row("seed", c.seed.to_string());
    if let Some(s) = &c.scenario {
        row("scenario", s.clone());
    }
    if let Some(n) = &c.nemesis {
        row("nemesis", n.clone());
    }
    if let Some(i) = &c.inject {
        row("injected fault", format!("{i} (on purpose)"));
    }
    row("ending", r.ending.to_string());
    row("replay", r.replay.clone());
    let _ = writeln!(o, "</table>");
    let _ = writeln!(
        o,
        "<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>violations</th></tr>"
    );
    for ch in &r.checks {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ch.name,
            match (&ch.note, ch.status) {
                (_, "failed") => "FAILED".to_string(),
                (Some(n), "not_checkable") => format!("not checkable: {}", crate::plots::escape(n)),
                (Some(n), "partly_checkable") => format!("ok in part: {}", crate::plots::escape(n)),
                _ => "ok".to_string(),
            },
            ch.violations
        );
    }
    let _ = writeln!(o, "</table>");
    if let Some(t) = &r.throughput {
        let _ = writeln!(
            o,
            "<p>Throughput: {} messages/s, {:.1} MB/s over the exchange ({:.1} ms).</p>",
            group(t.msgs_per_s as u64),
            t.mb_per_s,
            t.exchange_s * 1000.0
        );
    }
    if let Some(l) = &r.latency_us {
        let _ = writeln!(
            o,
            "<p>Latency (send to delivery): p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs.</p>",
            l.p50, l.p99, l.p999, l.max
        );
    }
    for (file, title) in pictures {
        let _ = writeln!(
            o,
            "<h2>{}</h2><a href=\"{file}\"><img src=\"{file}\" alt=\"{}\"></a>",
            escape(title),
            escape(title)
        );
    }
    let _ = writeln!(
        o,
        "<h2>Files</h2><ul><li><a href=\"report.json\">report.json</a> (schema {})</li>\
<li><a href=\"report.txt\">report.txt</a></li><li><a href=\"junit.xml\">junit.xml</a></li>{}</ul>",
        r.schema_version,
        if has_trace {
            "<li><a href=\"trace.txt\">trace.txt</a>: every process's events, merged</li>"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "<h2>Report</h2><pre>{}</pre>", escape(&human(r)));
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
