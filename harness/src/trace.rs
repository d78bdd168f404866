//! `--trace`: what each process did, with a CLOCK_MONOTONIC timestamp, merged by the
//! supervisor into one timeline.
//!
//! Each process keeps its first events in memory with a [`Tracer`] (from the relay-trace leaf
//! crate; a cap per process, so a large run shows its beginning and says what it cut) and
//! hands them over with its last word: the relay in RelayDone, a client in its report. This
//! module merges them into the timeline `--trace` prints.

use serde::Serialize;

pub use relay_trace::{Trace, Tracer};

/// One line of the merged timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Microseconds since the first event of the run.
    pub t_us: u64,
    /// The process.
    pub pid: i32,
    /// supervisor, relay, c0, ...
    pub role: String,
    /// What happened.
    pub what: String,
}

/// The merged timeline of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// Events of every process, in time order.
    pub lines: Vec<Line>,
    /// Roles in lane order: supervisor, relay, then the clients.
    pub lanes: Vec<String>,
    /// Per role: events cut past the cap.
    pub cut: Vec<(String, u64)>,
    /// The cap per process.
    pub cap: usize,
}

/// Events kept per process: the whole story of a small run, the beginning of a large one
/// (about a screenful or two in all).
pub fn cap_for(processes: usize) -> usize {
    (240 / processes.max(1)).max(16)
}

/// Merges each process's trace (role, trace) into one timeline, in lane order as given.
pub fn merge(traces: Vec<(String, Trace)>, cap: usize) -> Timeline {
    let t0 = traces
        .iter()
        .flat_map(|(_, t)| t.events.iter().map(|e| e.0))
        .min()
        .unwrap_or(0);
    let mut lanes: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    let mut cut = Vec::new();
    for (role, t) in traces {
        if !lanes.contains(&role) {
            lanes.push(role.clone());
        }
        if t.cut > 0 {
            cut.push((role.clone(), t.cut));
        }
        for (ns, what) in t.events {
            lines.push(Line {
                t_us: ns.saturating_sub(t0) / 1000,
                pid: t.pid,
                role: role.clone(),
                what,
            });
        }
    }
    // Stable: events of one process keep their order when timestamps tie.
    lines.sort_by_key(|l| l.t_us);
    Timeline {
        lines,
        lanes,
        cut,
        cap,
    }
}

impl Timeline {
    /// The timeline as text: one line per event, each process in a lane of its own
    /// (indented by its lane), then what was cut.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "trace:      time (ms)     pid  process   what happened");
        for l in &self.lines {
            let lane = self.lanes.iter().position(|r| *r == l.role).unwrap_or(0);
            let indent = "  ".repeat(lane.min(6));
            let _ = writeln!(
                o,
                "  {:>10.3}  {:>7}  {indent}{:<9} {}",
                l.t_us as f64 / 1000.0,
                l.pid,
                l.role,
                l.what
            );
        }
        if !self.cut.is_empty() {
            let each: Vec<String> = self
                .cut
                .iter()
                .take(8)
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let more = if self.cut.len() > 8 { ", ..." } else { "" };
            let _ = writeln!(
                o,
                "  (kept the first {} events of each process; cut: {}{more})",
                self.cap,
                each.join(", ")
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_time_order_and_says_what_it_cut() {
        let mut a = Tracer::new(2);
        a.at(100_000, "first".into());
        a.at(300_000, "third".into());
        a.at(400_000, "cut".into());
        let mut b = Tracer::new(2);
        b.at(200_000, "second".into());
        let t = merge(vec![("relay".into(), a.take()), ("c0".into(), b.take())], 2);
        let whats: Vec<&str> = t.lines.iter().map(|l| l.what.as_str()).collect();
        assert_eq!(whats, ["first", "second", "third"]);
        assert_eq!(t.lines[1].t_us, 100);
        assert_eq!(t.cut, vec![("relay".to_string(), 1)]);
        let text = t.render();
        assert!(text.contains("cut: relay 1"), "{text}");
        assert!(text.contains("    c0        second"), "{text}");
    }
}
