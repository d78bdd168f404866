//! A client's receiving side and the final count, fed whatever a relay might deliver: arbitrary
//! `src` names and payloads, real payloads with bits flipped, bytes overwritten or cut short,
//! out of order, twice, to the wrong client, and BOUNCEs of anything, under random runs of
//! every payload size, scripts that mix literal and sized bodies, ping-pong, and runs with
//! deaths (the shared black box). Nothing delivered may make the checker panic or overflow,
//! and what it counts must add up: a client never counts more received than arrived.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay_harness::blackbox::BlackBox;
use relay_harness::payload::{self, PayloadSize, Spec};
use relay_harness::plan::{pingpong_plans, random_plans, script_plans, ClientPlan, Names};
use relay_harness::scenario::Scenario;
use relay_harness::script::Script;
use relay_harness::verify::{verify, Receiver, FIN};

#[derive(Arbitrary, Debug)]
enum Shape {
    Random {
        clients: u8,
        msgs: u16,
        min: u16,
        span: u16,
    },
    PingPong {
        pairs: u8,
        rounds: u16,
        size: u16,
    },
    Script {
        size: u16,
        count: u8,
        literal: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// Any bytes at all.
    Raw(Vec<u8>),
    /// A real payload of the run, maybe damaged.
    Real {
        sender: u8,
        receiver: u8,
        seq: u64,
        damage: Damage,
    },
    /// The end-of-run marker of runs with deaths.
    Fin,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    None,
    Flip(u16),
    Overwrite { at: u8, bytes: Vec<u8> },
    Cut(u16),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Deliver { to: u8, src: Src, body: Body },
    Bounce { to: u8, dst: Src, body: Body },
    Sent { from: u8, to: u8 },
}

#[derive(Arbitrary, Debug)]
enum Src {
    Client(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    shape: Shape,
    deaths: bool,
    restarted: bool,
    ops: Vec<Op>,
}

fn plans(input: &Input) -> Option<(Vec<ClientPlan>, Names, PayloadSize)> {
    match input.shape {
        Shape::Random {
            clients,
            msgs,
            min,
            span,
        } => {
            let size = PayloadSize {
                min: usize::from(min % 400),
                max: usize::from(min % 400) + usize::from(span % 400),
            };
            let sc = Scenario {
                clients: usize::from(clients % 5) + 1,
                msgs: u64::from(msgs % 500),
                payload: size,
                seed: input.seed,
            };
            Some((random_plans(&sc), Names::numbered(sc.clients), size))
        }
        Shape::PingPong {
            pairs,
            rounds,
            size,
        } => {
            let size = PayloadSize {
                min: usize::from(size % 400),
                max: usize::from(size % 400),
            };
            let sc = Scenario {
                clients: 2 * (usize::from(pairs % 3) + 1),
                msgs: u64::from(rounds % 500),
                payload: size,
                seed: input.seed,
            };
            Some((pingpong_plans(&sc), Names::numbered(sc.clients), size))
        }
        Shape::Script {
            size,
            count,
            literal,
        } => {
            let n = size % 400;
            let k = count % 50 + 1;
            let lit = if literal { "a -> b \"hello\"\n" } else { "" };
            let text = format!(
                "clients a b c\nabsent ghost\n{lit}a -> b {n} bytes x{k}\nb -> c {n}..{} bytes x{k}\nc -> ghost {n} bytes x2\nbarrier\nc -> a \"bye\"\n",
                n + 30
            );
            let s = Script::parse("fuzz.scn", &text).ok()?;
            let names = Names::given(s.names.clone(), s.clients);
            let size = PayloadSize {
                min: usize::from(n),
                max: usize::from(n),
            };
            Some((script_plans(&s, input.seed), names, size))
        }
    }
}

fn bytes(body: &Body, spec: &Spec, n: usize) -> Vec<u8> {
    match body {
        Body::Raw(b) => b.clone(),
        Body::Fin => FIN.to_vec(),
        Body::Real {
            sender,
            receiver,
            seq,
            damage,
        } => {
            let mut p = Vec::new();
            let (s, r) = (usize::from(*sender) % n, usize::from(*receiver) % n);
            payload::encode(spec, s, r, *seq, 1, &mut p);
            match damage {
                Damage::None => {}
                Damage::Flip(bit) if !p.is_empty() => {
                    let bit = usize::from(*bit) % (p.len() * 8);
                    p[bit / 8] ^= 1 << (bit % 8);
                }
                Damage::Flip(_) => {}
                Damage::Overwrite { at, bytes } => {
                    let at = usize::from(*at).min(p.len());
                    let end = (at + bytes.len()).min(p.len());
                    p[at..end].copy_from_slice(&bytes[..end - at]);
                }
                Damage::Cut(k) => p.truncate(usize::from(*k)),
            }
            p
        }
    }
}

fuzz_target!(|input: Input| {
    let Some((plans, names, size)) = plans(&input) else {
        return;
    };
    let n = plans.len();
    let spec = Spec {
        seed: input.seed,
        size,
    };
    let bb = if input.deaths {
        BlackBox::new(n, n * n).ok().map(Arc::new)
    } else {
        None
    };
    let mut rx: Vec<Receiver> = plans
        .iter()
        .cloned()
        .map(|p| match &bb {
            Some(bb) => Receiver::with_blackbox(p, bb.clone(), input.restarted),
            None => Receiver::new(p),
        })
        .collect();
    let mut arrivals = vec![0u64; n];
    for op in input.ops.iter().take(2000) {
        let name = |s: &Src| match s {
            Src::Client(i) => names
                .name(usize::from(*i) % names.all().len())
                .as_bytes()
                .to_vec(),
            Src::Raw(b) => b.clone(),
        };
        match op {
            Op::Deliver { to, src, body } => {
                let to = usize::from(*to) % n;
                rx[to].deliver(&name(src), &bytes(body, &spec, n), 7);
                arrivals[to] += 1;
            }
            Op::Bounce { to, dst, body } => {
                let to = usize::from(*to) % n;
                rx[to].bounce(&name(dst), &bytes(body, &spec, n));
                arrivals[to] += 1;
            }
            Op::Sent { from, to } => {
                let from = usize::from(*from) % n;
                rx[from].sent(usize::from(*to) % names.all().len());
            }
        }
    }
    for (r, a) in rx.iter().zip(&arrivals) {
        assert!(r.received_total() <= *a, "more received than arrived");
        assert_eq!(r.arrivals(), *a);
    }
    let reports: Vec<_> = rx
        .into_iter()
        .map(|r| Some(r.finish(9, true, None)))
        .collect();
    let v = verify(&names, &reports);
    assert!(v.totals.received <= arrivals.iter().sum::<u64>());
});
