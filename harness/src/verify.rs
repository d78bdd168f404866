//! The verifier: a streaming check at each receiver, and the final count over all records.
//!
//! FIFO per pair means a receiver can check each arrival against the next sequence it
//! expects from that sender, so checking needs memory in proportion to clients², never to
//! messages. The only other state is a small, capped set of sequences skipped by an
//! out-of-order arrival, so a late one is called "order" rather than "duplicate".

use std::collections::HashSet;

use hdrhistogram::Histogram;

use crate::payload::{self, Damage};
use crate::record::{Class, ClientReport, Violation, VIOLATIONS_KEPT};
use crate::scenario::{client_index, client_name, Scenario};

/// Most skipped sequences a receiver remembers.
const GAPS_KEPT: usize = 4096;

/// A latency histogram in ns, 1 ns to 100 s, 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// What one receiving client checks as messages arrive.
pub struct Receiver {
    sc: Scenario,
    me: usize,
    next: Vec<u64>,
    gaps: HashSet<(usize, u64)>,
    report: ClientReport,
    counts: [u64; Class::ALL.len()],
    received_total: u64,
    hist: Histogram<u64>,
}

impl Receiver {
    /// The checker for client `me` of scenario `sc`.
    pub fn new(sc: Scenario, me: usize) -> Receiver {
        let n = sc.clients;
        Receiver {
            sc,
            me,
            next: vec![0; n],
            gaps: HashSet::new(),
            report: ClientReport {
                index: me,
                sent: vec![0; n],
                received: vec![0; n],
                bounced: vec![0; n],
                ..ClientReport::default()
            },
            counts: [0; Class::ALL.len()],
            received_total: 0,
            hist: latency_histogram(),
        }
    }

    /// Messages received in good order or late (not duplicates, not misrouted).
    pub fn received_total(&self) -> u64 {
        self.received_total
    }

    /// Notes a message this client sent (for matching bounces and the final count).
    pub fn sent(&mut self, receiver: usize) {
        self.report.sent[receiver] += 1;
    }

    fn violation(
        &mut self,
        class: Class,
        sender: String,
        seq: Option<u64>,
        expected: String,
        got: String,
    ) {
        self.counts[class as usize] += 1;
        if self.report.violations.len() < VIOLATIONS_KEPT {
            self.report.violations.push(Violation {
                class,
                sender,
                receiver: client_name(self.me),
                seq,
                expected,
                got,
            });
        }
    }

    /// Checks a DELIVER that arrived at `now_ns`.
    pub fn deliver(&mut self, src: &[u8], p: &[u8], now_ns: u64) {
        let n = self.sc.clients;
        let Some(s) = client_index(src).filter(|&s| s < n) else {
            let got = format!("src {:?}", String::from_utf8_lossy(src));
            self.violation(
                Class::Spoofed,
                got.clone(),
                None,
                format!("a DELIVER from one of c0..c{}", n - 1),
                got,
            );
            return;
        };
        let seq = match payload::ident(p) {
            Some(id) => {
                if id.receiver as usize != self.me {
                    let to = client_name(id.receiver as usize);
                    self.violation(
                        Class::Misrouted,
                        client_name(id.sender as usize),
                        Some(id.seq),
                        format!("delivery to {to}"),
                        format!("delivered to {}", client_name(self.me)),
                    );
                    return;
                }
                if id.sender as usize != s {
                    let from = client_name(id.sender as usize);
                    self.violation(
                        Class::Spoofed,
                        from.clone(),
                        Some(id.seq),
                        format!("src {from}"),
                        format!("src {}", client_name(s)),
                    );
                    return;
                }
                let next = self.next[s];
                if id.seq < next {
                    if !self.gaps.remove(&(s, id.seq)) {
                        self.violation(
                            Class::Duplicate,
                            client_name(s),
                            Some(id.seq),
                            format!("seq {next} (seq {} already arrived)", id.seq),
                            format!("seq {} again", id.seq),
                        );
                        return;
                    }
                    // A late arrival: its overtaking was already reported as an order violation.
                } else {
                    if id.seq > next {
                        self.violation(
                            Class::Order,
                            client_name(s),
                            Some(id.seq),
                            format!("seq {next}"),
                            format!("seq {}", id.seq),
                        );
                        for missing in next..id.seq {
                            if self.gaps.len() >= GAPS_KEPT {
                                break;
                            }
                            self.gaps.insert((s, missing));
                        }
                    }
                    self.next[s] = id.seq + 1;
                }
                id.seq
            }
            None => {
                // Too short to carry its sequence: it must be the next one.
                let seq = self.next[s];
                self.next[s] += 1;
                seq
            }
        };
        if let Err(d) = payload::check(&self.sc, s, self.me, seq, p) {
            let (expected, got) = match d {
                Damage::Length { expected, got } => {
                    (format!("{expected} bytes"), format!("{got} bytes"))
                }
                Damage::Bytes => (
                    "the bytes sent".to_string(),
                    "different bytes (checksum mismatch)".to_string(),
                ),
            };
            self.violation(Class::Integrity, client_name(s), Some(seq), expected, got);
        }
        self.report.received[s] += 1;
        self.report.bytes_received += p.len() as u64;
        self.received_total += 1;
        if let Some(t) = payload::send_ns(p) {
            let _ = self.hist.record(now_ns.saturating_sub(t).max(1));
        }
    }

    /// Checks a BOUNCE: it must be a message this client really sent.
    pub fn bounce(&mut self, dst: &[u8], p: &[u8]) {
        let d = client_index(dst).filter(|&d| d < self.sc.clients);
        let id = payload::ident(p);
        let real = match (d, id) {
            (Some(d), Some(id)) => {
                id.sender as usize == self.me
                    && id.receiver as usize == d
                    && id.seq < self.report.sent[d]
            }
            (Some(d), None) => self.report.bounced[d] < self.report.sent[d],
            _ => false,
        };
        match (real, d) {
            (true, Some(d)) => self.report.bounced[d] += 1,
            _ => self.violation(
                Class::Bounce,
                client_name(self.me),
                id.map(|i| i.seq),
                "a BOUNCE of a message this client sent".into(),
                format!("BOUNCE for {:?}", String::from_utf8_lossy(dst)),
            ),
        }
    }

    /// The client's report.
    pub fn finish(
        mut self,
        finished_ns: u64,
        complete: bool,
        error: Option<String>,
    ) -> ClientReport {
        self.report.violation_counts = Class::ALL
            .iter()
            .filter(|c| self.counts[**c as usize] > 0)
            .map(|&c| (c, self.counts[c as usize]))
            .collect();
        self.report.latency_ns = self
            .hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        self.report.finished_ns = finished_ns;
        self.report.complete = complete;
        self.report.error = error;
        self.report
    }
}

/// Totals per check, over all clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Messages bounced.
    pub bounced: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
}

/// The verifier's result.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Violations by class.
    pub counts: Vec<(Class, u64)>,
    /// Violations in detail, lost messages first per pair, capped per client.
    pub violations: Vec<Violation>,
    /// Totals.
    pub totals: Totals,
    /// Merged latency (ns).
    pub latency: Option<Histogram<u64>>,
}

impl Verification {
    /// Number of violations of a class.
    pub fn count(&self, c: Class) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, n)| *n)
    }

    /// Total violations.
    pub fn total_violations(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// Compares every pair's sent count with its delivered count and gathers the receivers'
/// findings. `reports[i]` is `None` for a client that never reported.
pub fn verify(n: usize, reports: &[Option<ClientReport>]) -> Verification {
    let mut v = Verification::default();
    let mut counts = [0u64; Class::ALL.len()];
    let mut hist = latency_histogram();
    for r in reports.iter().flatten() {
        v.totals.sent += r.sent.iter().sum::<u64>();
        v.totals.received += r.received.iter().sum::<u64>();
        v.totals.bounced += r.bounced.iter().sum::<u64>();
        v.totals.bytes_received += r.bytes_received;
        for &(c, k) in &r.violation_counts {
            counts[c as usize] += k;
        }
        for &(value, count) in &r.latency_ns {
            let _ = hist.record_n(value, count);
        }
    }
    // Completeness, per pair: what the sender sent and did not get back as a bounce must
    // have been delivered.
    let mut lost_details = Vec::new();
    for s in 0..n {
        let Some(sr) = reports.get(s).and_then(Option::as_ref) else {
            continue;
        };
        for r in 0..n {
            let Some(rr) = reports.get(r).and_then(Option::as_ref) else {
                continue;
            };
            let sent = sr.sent.get(r).copied().unwrap_or(0);
            let bounced = sr.bounced.get(r).copied().unwrap_or(0);
            let got = rr.received.get(s).copied().unwrap_or(0);
            let lost = sent.saturating_sub(bounced).saturating_sub(got);
            if lost > 0 {
                counts[Class::Lost as usize] += lost;
                lost_details.push(Violation {
                    class: Class::Lost,
                    sender: client_name(s),
                    receiver: client_name(r),
                    seq: Some(got),
                    expected: format!("{} messages delivered", sent - bounced),
                    got: format!("{got} delivered, {lost} missing from seq {got} on"),
                });
            }
        }
    }
    v.violations = lost_details;
    for r in reports.iter().flatten() {
        v.violations.extend(r.violations.iter().cloned());
    }
    v.counts = Class::ALL
        .iter()
        .filter(|c| counts[**c as usize] > 0)
        .map(|&c| (c, counts[c as usize]))
        .collect();
    v.latency = (!hist.is_empty()).then_some(hist);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::encode;
    use crate::scenario::PayloadSize;

    fn sc() -> Scenario {
        Scenario {
            clients: 3,
            msgs: 5,
            payload: PayloadSize { min: 40, max: 40 },
            seed: 1,
        }
    }

    fn msg(s: usize, r: usize, seq: u64) -> Vec<u8> {
        let mut p = Vec::new();
        encode(&sc(), s, r, seq, 10, &mut p);
        p
    }

    #[test]
    fn in_order_passes_and_each_fault_gets_its_class() {
        let mut rx = Receiver::new(sc(), 2);
        rx.deliver(b"c0", &msg(0, 2, 0), 20);
        rx.deliver(b"c0", &msg(0, 2, 1), 20);
        assert_eq!(rx.received_total(), 2);
        rx.deliver(b"c0", &msg(0, 2, 1), 20); // duplicate
        rx.deliver(b"c0", &msg(0, 2, 3), 20); // overtakes 2
        rx.deliver(b"c0", &msg(0, 2, 2), 20); // late: order already counted
        rx.deliver(b"c1", &msg(0, 2, 4), 20); // spoofed src
        rx.deliver(b"c0", &msg(0, 1, 0), 20); // misrouted
        let mut bad = msg(1, 2, 0);
        bad[39] ^= 1;
        rx.deliver(b"c1", &bad, 20); // corrupt
        rx.bounce(b"c1", &msg(2, 1, 0)); // never sent
        let r = rx.finish(0, true, None);
        let counts: std::collections::HashMap<_, _> = r.violation_counts.iter().copied().collect();
        assert_eq!(counts[&Class::Duplicate], 1);
        assert_eq!(counts[&Class::Order], 1);
        assert_eq!(counts[&Class::Spoofed], 1);
        assert_eq!(counts[&Class::Misrouted], 1);
        assert_eq!(counts[&Class::Integrity], 1);
        assert_eq!(counts[&Class::Bounce], 1);
        assert_eq!(r.received[0], 4);
    }

    #[test]
    fn lost_is_counted_per_pair() {
        let mut a = Receiver::new(sc(), 0);
        a.sent(1);
        a.sent(1);
        let mut b = Receiver::new(sc(), 1);
        b.deliver(b"c0", &msg(0, 1, 0), 1);
        let reports = vec![
            Some(a.finish(0, true, None)),
            Some(b.finish(0, true, None)),
            None,
        ];
        let v = verify(3, &reports);
        assert_eq!(v.count(Class::Lost), 1);
        assert_eq!(v.violations[0].class, Class::Lost);
        assert_eq!(v.totals.sent, 2);
        assert_eq!(v.totals.received, 1);
    }
}
