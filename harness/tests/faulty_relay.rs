//! The checker against a model of a faulty relay, in one process: every payload size from 0 to
//! 300 bytes (and ranges of them), random and scripted traffic, each kind of broken promise
//! the built-in relay can inject. Every run in which the fault struck fails with a class that
//! size can show (docs/guarantees.md has the table), none panics, and the same traffic without
//! a fault passes. A few thousand runs take about a second; tests/inject.rs does the same
//! end to end, through real processes.

use proptest::prelude::*;
use relay_harness::payload::PayloadSize;
use relay_harness::plan::{random_plans, script_plans, ClientPlan, Names, Outbox};
use relay_harness::record::Class;
use relay_harness::scenario::Scenario;
use relay_harness::script::Script;
use relay_harness::verify::{verify, Receiver, Verification};

/// The broken promises of `--inject`, as src/relay/inject.rs applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Drop,
    Duplicate,
    /// Swap with the previous message of the same pair.
    Reorder,
    /// Flip bit `pick % bits`.
    Corrupt,
    /// Deliver to another client.
    Misroute,
    /// Deliver with another client's name as src.
    Spoof,
}

const FAULTS: [Fault; 6] = [
    Fault::Drop,
    Fault::Duplicate,
    Fault::Reorder,
    Fault::Corrupt,
    Fault::Misroute,
    Fault::Spoof,
];

/// One delivery: (src index, receiver index, payload).
type Delivery = (usize, usize, Vec<u8>);

/// Runs every plan's traffic through a relay that applies `fault` to the messages whose place
/// in the send order is in `hits`; returns the verification and how often the fault struck.
fn run(
    plans: &[ClientPlan],
    names: &Names,
    fault: Fault,
    hits: &[usize],
    pick: u64,
) -> (Verification, u64) {
    let n = plans.len();
    let mut rx: Vec<Receiver> = plans.iter().cloned().map(Receiver::new).collect();
    // Every client's sends, interleaved round-robin (FIFO per pair is all that counts).
    let mut outs: Vec<Vec<(usize, Vec<u8>)>> = Vec::new();
    for plan in plans {
        let mut out = Vec::new();
        for p in 0..plan.phases() {
            let mut o = Outbox::new(plan);
            o.start_phase(p);
            let mut buf = Vec::new();
            while let Some(to) = o.next(1, &mut buf) {
                out.push((to, buf.clone()));
            }
        }
        outs.push(out);
    }
    let mut sends: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let longest = outs.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for (s, out) in outs.iter().enumerate() {
            if let Some((to, p)) = out.get(k) {
                sends.push((s, *to, p.clone()));
            }
        }
    }
    let mut queue: Vec<Delivery> = Vec::new();
    let mut fired = 0u64;
    for (i, (s, to, p)) in sends.into_iter().enumerate() {
        rx[s].sent(to);
        if to >= n {
            rx[s].bounce(names.name(to).as_bytes(), &p);
            continue;
        }
        if !hits.contains(&i) {
            queue.push((s, to, p));
            continue;
        }
        let other = |x: usize| (x + 1 + (pick as usize % (n - 1))) % n;
        let struck = match fault {
            Fault::Drop => true,
            Fault::Duplicate => {
                queue.push((s, to, p.clone()));
                queue.push((s, to, p));
                true
            }
            Fault::Reorder => {
                let prev = queue.iter().rposition(|(a, b, _)| (*a, *b) == (s, to));
                queue.push((s, to, p));
                if let Some(j) = prev {
                    let last = queue.len() - 1;
                    queue.swap(j, last);
                }
                prev.is_some()
            }
            Fault::Corrupt if p.is_empty() => {
                queue.push((s, to, p));
                false
            }
            Fault::Corrupt => {
                let mut bad = p;
                let bit = (pick % (bad.len() as u64 * 8)) as usize;
                bad[bit / 8] ^= 1 << (bit % 8);
                queue.push((s, to, bad));
                true
            }
            Fault::Misroute => {
                queue.push((s, other(to), p));
                true
            }
            Fault::Spoof => {
                queue.push((other(s), to, p));
                true
            }
        };
        fired += u64::from(struck);
    }
    for (src, to, p) in &queue {
        rx[*to].deliver(names.name(*src).as_bytes(), p, 2);
    }
    let reports: Vec<_> = rx
        .into_iter()
        .map(|r| Some(r.finish(3, true, None)))
        .collect();
    (verify(names, &reports), fired)
}

/// The classes a fault that struck `fired` times may show as when payloads have at least `min`
/// bytes: (at least one of these, and nothing outside these).
fn classes(fault: Fault, min: usize, fired: u64) -> (Vec<Class>, Vec<Class>) {
    use Class::*;
    let anything = vec![Lost, Duplicate, Order, Integrity, Misrouted, Spoofed];
    match fault {
        Fault::Drop => (vec![Lost], vec![Lost]),
        Fault::Duplicate => (vec![Duplicate], vec![Duplicate]),
        // Empty payloads carry no sequence: a swap of two is invisible.
        Fault::Reorder if min == 0 => (vec![], vec![Order, Lost, Duplicate]),
        Fault::Reorder => (vec![Order], vec![Order]),
        Fault::Corrupt if min >= 32 => (vec![Integrity], vec![Integrity]),
        Fault::Corrupt => (anything.clone(), anything),
        Fault::Misroute if min >= 16 => (vec![Misrouted], vec![Misrouted, Lost]),
        Fault::Spoof if min >= 16 => (vec![Spoofed], vec![Spoofed, Lost]),
        // One misrouted message leaves its own pair short. Two that swap payloads with the
        // same sequence between two pairs balance each other, and a payload without an
        // identity cannot tell.
        Fault::Misroute | Fault::Spoof if fired == 1 => (vec![Lost], anything),
        Fault::Misroute | Fault::Spoof => (vec![], anything),
    }
}

fn judge(fault: Fault, min: usize, (v, fired): (Verification, u64)) -> Result<(), TestCaseError> {
    let found: Vec<Class> = v.counts.iter().map(|(c, _)| *c).collect();
    if fired == 0 {
        prop_assert!(found.is_empty(), "no fault struck, yet {:?}", v.violations);
        return Ok(());
    }
    let (must, allowed) = classes(fault, min, fired);
    prop_assert!(
        must.is_empty() || found.iter().any(|c| must.contains(c)),
        "{fault:?} struck {fired} time(s) at min {min} bytes; found {found:?}, wanted one of {must:?}: {:?}",
        v.violations
    );
    prop_assert!(
        found.iter().all(|c| allowed.contains(c)),
        "{fault:?} at min {min} bytes showed as {found:?}, only {allowed:?} may: {:?}",
        v.violations
    );
    Ok(())
}

fn sizes() -> impl Strategy<Value = PayloadSize> {
    prop_oneof![
        (0usize..=300).prop_map(|s| PayloadSize { min: s, max: s }),
        (0usize..=300, 0usize..=300).prop_map(|(a, b)| PayloadSize {
            min: a.min(b),
            max: a.max(b)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_traffic_every_size_every_fault(
        clients in 2usize..=4,
        msgs in 1u64..=40,
        size in sizes(),
        seed in any::<u64>(),
        fault in prop::sample::select(FAULTS.to_vec()),
        hits in prop::collection::vec(0usize..160, 0..4),
        pick in any::<u64>(),
    ) {
        let sc = Scenario { clients, msgs, payload: size, seed };
        let plans = random_plans(&sc);
        let names = Names::numbered(clients);
        judge(fault, size.min, run(&plans, &names, fault, &hits, pick))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn scripted_sized_payloads_every_size_every_fault(
        size in sizes(),
        count in 1u64..=30,
        seed in any::<u64>(),
        fault in prop::sample::select(FAULTS.to_vec()),
        hits in prop::collection::vec(0usize..90, 1..3),
        pick in any::<u64>(),
    ) {
        let sz = if size.min == size.max {
            format!("{} bytes", size.min)
        } else {
            format!("{}..{} bytes", size.min, size.max)
        };
        let text = format!(
            "clients a b c\na -> b {sz} x{count}\nb -> c {sz} x{count}\nc -> a {sz} x{count}\n"
        );
        let s = Script::parse("t.scn", &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let plans = script_plans(&s, seed);
        let names = Names::given(s.names.clone(), s.clients);
        judge(fault, size.min, run(&plans, &names, fault, &hits, pick))?;
    }
}

/// A dropped message is named exactly: the first one missing on its pair, by sequence.
#[test]
fn a_loss_names_the_first_missing_message_of_its_pair() {
    for len in [1usize, 7, 8, 16, 31, 64] {
        let sc = Scenario {
            clients: 2,
            msgs: 300,
            payload: PayloadSize { min: len, max: len },
            seed: 9,
        };
        let plans = random_plans(&sc);
        let names = Names::numbered(2);
        // c0's and c1's sends interleave: c0's message k is at place 2k; drop c0 -> c1 #117,
        // #177 and #261, as the relay did.
        let (v, fired) = run(&plans, &names, Fault::Drop, &[234, 354, 522], 0);
        assert_eq!(fired, 3);
        assert_eq!(v.count(Class::Lost), 3, "len {len}: {:?}", v.violations);
        let lost = &v.violations[0];
        assert_eq!(
            (lost.sender.as_str(), lost.receiver.as_str(), lost.seq),
            ("c0", "c1", Some(117)),
            "len {len}: {lost:?}"
        );
        assert!(
            lost.got.contains("3 missing, the first seq 117"),
            "{lost:?}"
        );
    }
}

/// A relay that overwrites a payload's sequence with 0xff bytes fails the run at every size
/// that carries a sequence (it used to wrap the expected sequence to 0 and pass).
#[test]
fn an_overwritten_sequence_never_passes() {
    for len in [8usize, 9, 15, 16, 17, 31, 32, 64] {
        let sc = Scenario {
            clients: 3,
            msgs: 50,
            payload: PayloadSize { min: len, max: len },
            seed: 3,
        };
        let plans = random_plans(&sc);
        let names = Names::numbered(3);
        let mut rx: Vec<Receiver> = plans.iter().cloned().map(Receiver::new).collect();
        for (s, plan) in plans.iter().enumerate() {
            let mut o = Outbox::new(plan);
            let mut buf = Vec::new();
            let mut k = 0;
            while let Some(to) = o.next(1, &mut buf) {
                rx[s].sent(to);
                if k % 7 == 3 {
                    buf[..8].fill(0xff);
                }
                k += 1;
                rx[to].deliver(names.name(s).as_bytes(), &buf, 2);
            }
        }
        let reports: Vec<_> = rx
            .into_iter()
            .map(|r| Some(r.finish(3, true, None)))
            .collect();
        let v = verify(&names, &reports);
        assert!(v.total_violations() > 0, "len {len}: passed");
        assert!(
            v.count(Class::Integrity) > 0,
            "len {len}: {:?}",
            v.violations
        );
    }
}
