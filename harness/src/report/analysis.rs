//! What the nemesis did to delivery, from the clients' 10 ms delivery counts.

use crate::supervisor::Outcome;

/// Delivery rates while a client was stopped (to the other clients) and between stops (to
/// all), from the clients' 10 ms delivery counts; the difference shows a relay that freezes.
pub(super) fn stop_rates(outcome: &Outcome, names: &[String]) -> (Option<f64>, Option<f64>) {
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
    let end = outcome.last_finished_ns().unwrap_or(t0);
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
pub(super) fn starvation(outcome: &Outcome, names: &[String]) -> Option<(u64, String, u64)> {
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
