//! The report, built from what the supervisor and the verifier found.

use std::time::Duration;

use crate::exit;
use crate::payload::Checkable;
use crate::record::{Class, Cpu};
use crate::supervisor::{Ending, Outcome};
use crate::verify::Verification;

use super::analysis::{starvation, stop_rates};
use super::*;

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
    let clients = client_rows(&config, names, outcome);
    let interrupted = matches!(outcome.ending, Ending::Interrupted(_));
    let checks = checks(&config, v, interrupted);
    let (throughput, latency_us) = rates(outcome, v);
    let exchange = outcome.released_at.map_or(Duration::ZERO, |t| {
        outcome.ended_at.saturating_duration_since(t)
    });

    let (ending, failure) = ending(&config, names, outcome, v);
    let violations_total = v.total_violations();
    let failure = failure.or_else(|| {
        (violations_total > 0)
            .then(|| format!("{violations_total} violation(s) of the relay's guarantees"))
    });
    let exit_code = match &outcome.ending {
        Ending::Finished | Ending::RelayKilled(_) if violations_total == 0 => exit::OK,
        Ending::Interrupted(sig) => exit::interrupted(*sig),
        Ending::StartFailed(_) | Ending::FaultFailed(_) => exit::ENV,
        _ => exit::FAIL,
    };
    let nemesis = config
        .nemesis
        .clone()
        .map(|what| nemesis_report(what, names, outcome));
    let inject = config.inject.clone().map(|fault| Injected {
        fault,
        fired: outcome.relay.as_ref().map(|r| r.injected),
    });
    Report {
        schema_version: SCHEMA_VERSION,
        verdict: if exit_code == exit::OK {
            Verdict::Pass
        } else {
            Verdict::Fail
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
            forks_ms: ms(outcome.forks),
            exchange_ms: ms(exchange),
            verify_ms: ms(verify_time),
        },
        nemesis,
        inject,
        cpu: cpu_use(outcome, v),
        memory: memory(outcome),
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

/// One row per client: what it sent, received and got back, and whether it finished.
fn client_rows(config: &RunConfig, names: &[String], outcome: &Outcome) -> Vec<ClientRow> {
    let n = config.clients;
    (0..n)
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
        .collect()
}

/// Each check: its violations, and whether the run's payload sizes could show them (and, for
/// a run a signal stopped, that it is not finished).
fn checks(config: &RunConfig, v: &Verification, interrupted: bool) -> Vec<Check> {
    // One check per class, in report order (misrouted and spoofed share "routing").
    let mut check_names: Vec<&str> = Class::ALL.iter().map(|c| c.check()).collect();
    check_names.dedup();
    check_names
        .iter()
        .map(|&name| {
            let k: u64 = Class::ALL
                .iter()
                .filter(|c| c.check() == name)
                .map(|&c| v.count(c))
                .sum();
            let can = config.sizes.checkable(name);
            let (status, note) = match can {
                _ if k > 0 => (CheckStatus::Failed, None),
                _ if interrupted => (
                    CheckStatus::NotFinished,
                    Some(
                        "the run was interrupted: every message that arrived was checked, \
                         not those still to come"
                            .to_string(),
                    ),
                ),
                Checkable::Yes => (CheckStatus::Ok, None),
                Checkable::Partly(why) => (CheckStatus::PartlyCheckable, Some(why)),
                Checkable::No(why) => (CheckStatus::NotCheckable, Some(why)),
            };
            Check {
                name,
                ok: matches!(status, CheckStatus::Ok | CheckStatus::PartlyCheckable),
                status,
                violations: k,
                note,
            }
        })
        .collect()
}

/// Throughput over the exchange phase, and latency, when there was one.
fn rates(outcome: &Outcome, v: &Verification) -> (Option<Throughput>, Option<Latency>) {
    let last_finish = outcome.last_finished_ns().unwrap_or(0);
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
    (throughput, latency_us)
}

/// How the run ended, and what went wrong in a sentence, when something did.
fn ending(
    config: &RunConfig,
    names: &[String],
    outcome: &Outcome,
    v: &Verification,
) -> (Ended, Option<String>) {
    match &outcome.ending {
        Ending::Finished => (Ended::Finished, None),
        Ending::TimedOut => (
            Ended::TimedOut,
            Some(format!(
                "timed out {:.1} s after the start barrier{}: {} of {} message(s) were sent{}",
                outcome.deadline.as_secs_f64(),
                if outcome.deadline.as_secs_f64() > config.timeout_s + 0.05 {
                    format!(
                        " (the deadline, {:.1} s, and the time partitions held TCP back)",
                        config.timeout_s
                    )
                } else {
                    String::new()
                },
                group(v.totals.sent),
                group(config.total_msgs),
                match v.count(Class::Lost) {
                    0 => "; every one sent arrived, the rest was never sent (--timeout sets the deadline)".to_string(),
                    k => format!(", and {} of them are missing", group(k)),
                }
            )),
        ),
        Ending::SetupTimedOut(registered, bound) => (
            Ended::TimedOut,
            Some(format!(
                "timed out while setting up: {} of {} client(s) registered within {:.1} s (the \
                 bound for forking and registering: 10 s plus 5 ms per client; the rows below \
                 show which clients never did)",
                group(*registered as u64),
                group(config.clients as u64),
                bound.as_secs_f64()
            )),
        ),
        Ending::Stalled(q) => (
            Ended::Stalled,
            Some(format!(
                "stalled: every client had sent everything, then nothing arrived for {:.1} s ({}; --quiet-period sets how long to wait)",
                q.as_secs_f64(),
                match v.count(Class::Lost) {
                    0 => "no message was found missing: see each client's error and the violations".to_string(),
                    k => format!("{} message(s) never arrived", group(k)),
                }
            )),
        ),
        Ending::Interrupted(sig) => (Ended::Interrupted, Some(format!("interrupted by {}", signal_name(*sig)))),
        Ending::RelayKilled(_) => (Ended::RelayKilled, None),
        Ending::RelayDied(st) => (
            Ended::RelayDied,
            Some(format!(
                "the relay exited before the clients were done ({st})"
            )),
        ),
        Ending::ClientDied(i, st) => (
            Ended::ClientDied,
            Some(format!(
                "client {} exited without reporting ({st})",
                names.get(*i).cloned().unwrap_or_else(|| format!("c{i}"))
            )),
        ),
        Ending::StartFailed(why) => (
            Ended::StartFailed,
            Some(format!("a process could not start: {why}")),
        ),
        Ending::FaultFailed(why) => (
            Ended::FaultFailed,
            Some(format!("the nemesis could not act on the network: {why}")),
        ),
    }
}

/// What the nemesis (or a script's faults) did, and what it did to delivery.
fn nemesis_report(what: String, names: &[String], outcome: &Outcome) -> NemesisReport {
    let (during, between) = stop_rates(outcome, names);
    let starved = starvation(outcome, names);
    NemesisReport {
        what,
        events: outcome.nemesis.clone(),
        relay_held_back_ms: outcome.relay.as_ref().map(|r| r.held_back_ms),
        relay_peer_timeouts: outcome.relay.as_ref().map(|r| r.peer_timeouts),
        others_msgs_per_s_during_stops: during,
        msgs_per_s_between_stops: between,
        others_starved_ms: starved.as_ref().map(|s| s.0),
        starved_during: starved.map(|s| (s.1, s.2)),
    }
}

/// CPU time per role, and per message delivered.
fn cpu_use(outcome: &Outcome, v: &Verification) -> CpuUse {
    let relay_cpu = outcome.relay.as_ref().map(|r| r.cpu);
    let clients = outcome
        .reports
        .iter()
        .flatten()
        .fold(Cpu::default(), |a, r| a + r.cpu);
    let per_msg =
        |c: Cpu| (v.totals.received > 0).then(|| c.total_us() as f64 / v.totals.received as f64);
    CpuUse {
        relay: relay_cpu,
        clients,
        supervisor: outcome.supervisor_cpu,
        relay_us_per_msg: relay_cpu.and_then(per_msg),
        clients_us_per_msg: per_msg(clients),
    }
}

/// Peak memory per role.
fn memory(outcome: &Outcome) -> Memory {
    Memory {
        supervisor_kib: outcome.supervisor_peak_rss_kib,
        relay_kib: outcome.relay.as_ref().map(|r| r.peak_rss_kib),
        client_max_kib: outcome
            .reports
            .iter()
            .flatten()
            .map(|r| r.peak_rss_kib)
            .max(),
    }
}
