//! The human report: what a person reads at the end of a run.

use std::fmt::Write as _;

use crate::exit;
use crate::record::Cpu;

use super::*;

/// The human report: the run's settings, a table per client, the checks and what they
/// found, rates, faults, resources, and the verdict with the command that replays it. Past
/// [`CLIENT_ROWS`] clients, the table shows the ones that stand out.
pub fn human(r: &Report) -> String {
    human_with(r, false)
}

/// [`human`] with every client's row, however many (report.txt, `--all-clients`).
pub fn human_full(r: &Report) -> String {
    human_with(r, true)
}

fn human_with(r: &Report, all_clients: bool) -> String {
    let mut o = String::new();
    settings(&mut o, r);
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
    clients(&mut o, r, all_clients);
    let _ = writeln!(o);
    checks(&mut o, r);
    rates(&mut o, r);
    if let Some(n) = &r.nemesis {
        nemesis(&mut o, n, r.phases.exchange_ms);
    }
    resources(&mut o, r);
    if let Some(l) = &loud {
        let _ = writeln!(o, "{l}");
    }
    verdict(&mut o, r);
    o
}

/// The first line: what ran.
fn settings(o: &mut String, r: &Report) {
    let c = &r.config;
    let backend = match (&c.relay_addr, c.hosts) {
        (Some(addr), _) => format!("the relay at {addr}"),
        (None, Some(h)) => format!(
            "backend {}, the relay and {h} client host(s) on a private switch{}",
            c.backend,
            c.links
                .as_ref()
                .map_or(String::new(), |l| format!(" (each link {l})"))
        ),
        (None, None) => format!("backend {}", c.backend),
    };
    match &c.scenario {
        None if c.duration_s.is_some() => {
            let _ = writeln!(
                o,
                "relay-sim: {} clients sending for {:.1} s: {} messages, payload {} B, {} socket, {backend}, seed {}",
                c.clients,
                c.duration_s.unwrap_or_default(),
                group(c.total_msgs),
                c.payload,
                c.transport,
                c.seed
            );
        }
        None => {
            let _ = writeln!(
                o,
                "relay-sim: {} clients x {} messages = {} messages, payload {} B, {} socket, {backend}, seed {}",
                c.clients,
                group(c.msgs_per_client),
                group(c.total_msgs),
                c.payload,
                c.transport,
                c.seed
            );
        }
        Some(file) => {
            let _ = writeln!(
                o,
                "relay-sim: scenario {file}: {} clients, {} messages in {} phase(s), {} socket, {backend}, seed {}",
                c.clients,
                group(c.total_msgs),
                c.phases,
                c.transport,
                c.seed
            );
        }
    }
}

/// Sent, received and bounced, per client and in all.
/// Client rows shown in full up to this many clients; past it, a summary and the rows that
/// stand out (the full table: `human_full`, report.txt, and the JSON).
pub const CLIENT_ROWS: usize = 32;

fn clients(o: &mut String, r: &Report, all: bool) {
    let _ = writeln!(
        o,
        "  {:<8} {:>12} {:>12} {:>8}",
        "client", "sent", "received", "bounced"
    );
    let row_line = |o: &mut String, row: &ClientRow| {
        // (With the relay killed on purpose, no client can finish: that is the run's design.)
        let mark = if row.complete || r.ending == Ended::RelayKilled {
            ""
        } else {
            "  (incomplete)"
        };
        let _ = writeln!(
            o,
            "  {:<8} {:>12} {:>12} {:>8}{mark}",
            row.name,
            group(row.sent),
            group(row.received),
            group(row.bounced)
        );
    };
    if all || r.clients.len() <= CLIENT_ROWS {
        for row in &r.clients {
            row_line(o, row);
        }
    } else {
        standouts(o, r, &row_line);
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
}

/// Past [`CLIENT_ROWS`] clients: what received looks like across them, then the rows that
/// stand out: every incomplete one (up to 10), and the three that received least and most.
fn standouts(o: &mut String, r: &Report, row_line: &dyn Fn(&mut String, &ClientRow)) {
    let mut by_received: Vec<&ClientRow> = r.clients.iter().collect();
    by_received.sort_by_key(|c| c.received);
    let median = by_received[by_received.len() / 2].received;
    let (least, most) = (
        by_received[0].received,
        by_received[by_received.len() - 1].received,
    );
    let _ = writeln!(
        o,
        "  ({} clients, received min {} / median {} / max {}; these stand out, and \
         --all-clients or the JSON lists every one)",
        group(r.clients.len() as u64),
        group(least),
        group(median),
        group(most)
    );
    let mut shown: Vec<&ClientRow> = r.clients.iter().filter(|c| !c.complete).take(10).collect();
    let n = by_received.len();
    for c in by_received[..3].iter().chain(&by_received[n - 3..]) {
        if !shown.iter().any(|s| s.name == c.name) {
            shown.push(c);
        }
    }
    shown.sort_by_key(|c| c.received);
    for row in shown {
        row_line(o, row);
    }
}

/// Each check in a phrase, why one could not be made in full, and the first violations.
fn checks(o: &mut String, r: &Report) {
    let checks: Vec<String> = r.checks.iter().map(Check::phrase).collect();
    let _ = writeln!(o, "checks:     {}", checks.join(", "));
    for k in &r.checks {
        if let (
            Some(note),
            CheckStatus::NotCheckable | CheckStatus::PartlyCheckable | CheckStatus::NotFinished,
        ) = (&k.note, k.status)
        {
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
            let _ = writeln!(o, "  {v:10}");
        }
    }
}

/// Throughput, latency, and the time of each phase.
fn rates(o: &mut String, r: &Report) {
    let c = &r.config;
    match &r.throughput {
        Some(tp) => {
            let _ = writeln!(
                o,
                "throughput: {} msg/s, {:.1} MB/s from the start barrier to the last client done ({:.1} ms)",
                group(tp.msgs_per_s as u64),
                tp.mb_per_s,
                tp.exchange_s * 1000.0
            );
        }
        None if r.phases.exchange_ms > 0.0 => {
            let _ = writeln!(
                o,
                "throughput: not measured (no client reported when it finished)"
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
                "latency:    p50 {}, p90 {}, p99 {}, p99.9 {}, max {} ({}, {} messages{})",
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
                group(l.count),
                // Why not all: a payload under 32 bytes has no room for its send time.
                if l.count < r.totals.received && c.sizes.min < 32 {
                    format!(
                        "; the other {} were under 32 bytes, with no room for a send time",
                        group(r.totals.received - l.count)
                    )
                } else {
                    String::new()
                }
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
        "phases:     fork+register {:.1} ms (the forks {:.1} ms), exchange {:.1} ms (to the last report), verify {:.1} ms",
        p.fork_register_ms, p.forks_ms, p.exchange_ms, p.verify_ms
    );
}

/// What the nemesis (or a script's fault lines) did, and what it did to delivery.
fn nemesis(o: &mut String, n: &NemesisReport, exchange_ms: f64) {
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
            Action::Partition => {
                format!("cut {} off at {} ms for {} ms", e.role, e.at_ms, e.for_ms)
            }
            Action::PartitionRelay => format!(
                "cut the relay's host off at {} ms for {} ms",
                e.at_ms, e.for_ms
            ),
            a => format!("{} {} at {} ms", a.name(), e.role, e.at_ms),
        })
        .collect();
    let more = if n.events.len() > 6 { ", ..." } else { "" };
    let mut held = n.relay_held_back_ms.map_or(String::new(), |h| {
        format!("; the relay held senders back {} ms in all", group(h))
    });
    if let Some(t) = n.relay_peer_timeouts.filter(|&t| t > 0) {
        held.push_str(&format!(
            "; it ended {t} connection(s) whose peer fell silent (--peer-timeout)"
        ));
    }
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
    if n.events.is_empty() && n.what.contains(" every ") {
        // Say why, or the reader takes the run for one that survived its faults.
        let _ = writeln!(
            o,
            "nemesis:    {}: it did not act: the exchange took {exchange_ms:.0} ms, and at none of its \
             turns (one an interval, from the start barrier, in the first half of --timeout) was there a \
             client to strike (still at work; for kill and restart, registered an interval before); \
             give more --msgs or a shorter --nemesis-interval",
            n.what
        );
        return;
    }
    let _ = writeln!(
        o,
        "nemesis:    {}: {} action(s) ({}{more}){held}{rates}",
        n.what,
        n.events.len(),
        first.join(", ")
    );
}

/// Peak memory and CPU per role; on a failed run, every process that did not exit 0.
fn resources(o: &mut String, r: &Report) {
    // A process that did not report its figures: say why, where it can be told.
    let unreported = if r.ending == Ended::RelayKilled {
        "not reported (killed)".to_string()
    } else if r.config.relay_addr.is_some() {
        "not measured (it runs elsewhere)".to_string()
    } else {
        "?".to_string()
    };
    let m = &r.memory;
    let kib = |k: Option<u64>| {
        k.map_or(unreported.clone(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    let _ = writeln!(
        o,
        "memory:     peak RSS supervisor {}, relay {}, largest client {}",
        kib(Some(m.supervisor_kib)),
        kib(m.relay_kib),
        kib(m.client_max_kib)
    );
    let c = &r.cpu;
    let secs = |c: &Cpu| format!("{:.2} s", c.total_us() as f64 / 1e6);
    let relay = c.relay.as_ref().map_or(unreported.clone(), |rc| {
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
}

/// PASS, or FAIL with why, the relay's last log lines, and the replay command.
fn verdict(o: &mut String, r: &Report) {
    match &r.failure {
        None if r.ending == Ended::RelayKilled => {
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
}
