//! One client's part of a run, random or scripted: what it sends, phase by phase, and what
//! it must receive and get bounced before each phase ends.

use std::collections::HashMap;
use std::sync::Arc;

use crate::peers::PerPeer;

use crate::payload::PayloadSize;
use crate::payload::{self, Spec};
use crate::scenario::{client_index, client_name, Destinations, Scenario};
use crate::script::{Body, Script};

/// The names of a run: clients first, then names nobody holds (scripted bounces).
#[derive(Debug, Clone)]
pub struct Names {
    list: Vec<String>,
    clients: usize,
    /// Empty when the names are the default `c0..`, which parse faster than they hash.
    index: HashMap<Vec<u8>, usize>,
}

impl Names {
    /// `c0..c{n-1}`.
    pub fn numbered(n: usize) -> Names {
        Names {
            list: (0..n).map(client_name).collect(),
            clients: n,
            index: HashMap::new(),
        }
    }

    /// Given names; the first `clients` are clients.
    pub fn given(list: Vec<String>, clients: usize) -> Names {
        let index = list
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_bytes().to_vec(), i))
            .collect();
        Names {
            list,
            clients,
            index,
        }
    }

    /// Every name.
    pub fn all(&self) -> &[String] {
        &self.list
    }

    /// How many are clients.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// The name at `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.list[i]
    }

    /// The index of a name, if it is one of ours.
    pub fn index(&self, name: &[u8]) -> Option<usize> {
        if self.index.is_empty() {
            client_index(name).filter(|&i| i < self.list.len())
        } else {
            self.index.get(name).copied()
        }
    }
}

/// `count` messages with one body, to or from one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The peer's index in the names.
    pub peer: usize,
    /// Index into the bodies.
    pub body: usize,
    /// How many.
    pub count: u64,
}

/// Where a client's messages come from.
#[derive(Debug, Clone)]
pub enum Work {
    /// Seeded random destinations, one phase.
    Random(Scenario),
    /// Ping-pong: one message in flight per pair; the initiator times each round trip.
    PingPong {
        /// The other client of the pair.
        partner: usize,
        /// Round trips.
        rounds: u64,
        /// Sends first, and measures.
        initiator: bool,
        /// Payload size.
        size: PayloadSize,
    },
    /// A script.
    Script {
        /// Sends of this client, per phase.
        sends: Vec<Vec<Run>>,
        /// Messages to this client, per sender, over all phases in order.
        incoming: Vec<Vec<Run>>,
        /// Per phase p, per sender: messages to this client in the phases before p (where a
        /// restarted process picks up).
        incoming_upto: Vec<Vec<u64>>,
        /// Payloads.
        bodies: Arc<Vec<Body>>,
    },
}

/// One client's part.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Its index.
    pub me: usize,
    /// The run's names.
    pub names: Arc<Names>,
    /// The run's seed (sized payloads are derived from it).
    pub seed: u64,
    /// What it sends and expects.
    pub work: Work,
    /// Messages it must have received by the end of each phase (cumulative).
    pub expect_in: Vec<u64>,
    /// Bounces it must have had by the end of each phase (cumulative).
    pub expect_bounces: Vec<u64>,
    /// Keep a transcript of what it sent and got (for `demo`; the first few hundred events).
    pub transcript: bool,
}

impl ClientPlan {
    /// Number of phases.
    pub fn phases(&self) -> usize {
        self.expect_in.len()
    }

    /// The spec for sized payloads of a size.
    pub fn spec(&self, size: PayloadSize) -> Spec {
        Spec {
            seed: self.seed,
            size,
        }
    }
}

/// Every client's plan for a random scenario (see [`Scenario::expected_in`]).
pub fn random_plans(sc: &Scenario) -> Vec<ClientPlan> {
    Plans::random(sc).to_vec()
}

/// Every client's plan for ping-pong: pairs (c0, c1), (c2, c3), ...; `msgs` round trips each.
pub fn pingpong_plans(sc: &Scenario) -> Vec<ClientPlan> {
    Plans::pingpong(sc).to_vec()
}

/// Every client's plan, made when asked for. A random or ping-pong run's are made from its
/// scenario and what each client receives: a table of ten thousand plans would be memory the
/// supervisor holds while it forks, and every fork copies the page tables of what it holds.
#[derive(Debug, Clone)]
pub struct Plans {
    kind: PlansKind,
    /// Every plan keeps a transcript (for `demo`).
    transcript: bool,
}

#[derive(Debug, Clone)]
enum PlansKind {
    /// Made in advance (a script's: few clients, each with its own runs).
    Listed(Vec<ClientPlan>),
    /// Made from a scenario: each client's messages in, and whether it is ping-pong.
    OnePhase {
        sc: Scenario,
        names: Arc<Names>,
        expected: Vec<u64>,
        pingpong: bool,
    },
}

impl Plans {
    /// Plans made in advance.
    pub fn listed(plans: Vec<ClientPlan>) -> Plans {
        Plans {
            kind: PlansKind::Listed(plans),
            transcript: false,
        }
    }

    /// A random scenario's plans.
    pub fn random(sc: &Scenario) -> Plans {
        // A run that sends for a while (--duration: msgs is unbounded) cannot know the counts
        // in advance; its end markers settle what arrives.
        let expected = if sc.msgs == u64::MAX {
            vec![0; sc.clients]
        } else {
            sc.expected_in()
        };
        Plans::one_phase(sc, expected, false)
    }

    /// Ping-pong's plans: pairs (c0, c1), (c2, c3), ...; `msgs` round trips each.
    pub fn pingpong(sc: &Scenario) -> Plans {
        Plans::one_phase(sc, vec![sc.msgs; sc.clients], true)
    }

    fn one_phase(sc: &Scenario, expected: Vec<u64>, pingpong: bool) -> Plans {
        Plans {
            kind: PlansKind::OnePhase {
                sc: *sc,
                names: Arc::new(Names::numbered(sc.clients)),
                expected,
                pingpong,
            },
            transcript: false,
        }
    }

    /// The same plans, keeping transcripts or not.
    pub fn with_transcripts(mut self, on: bool) -> Plans {
        self.transcript = on;
        self
    }

    /// How many clients.
    pub fn len(&self) -> usize {
        match &self.kind {
            PlansKind::Listed(v) => v.len(),
            PlansKind::OnePhase { expected, .. } => expected.len(),
        }
    }

    /// No client at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Client `i`'s plan (None past the last client).
    pub fn get(&self, i: usize) -> Option<ClientPlan> {
        let mut plan = match &self.kind {
            PlansKind::Listed(v) => v.get(i)?.clone(),
            PlansKind::OnePhase {
                sc,
                names,
                expected,
                pingpong,
            } => {
                let work = if *pingpong {
                    Work::PingPong {
                        partner: i ^ 1,
                        rounds: sc.msgs,
                        initiator: i.is_multiple_of(2),
                        size: sc.payload,
                    }
                } else {
                    Work::Random(*sc)
                };
                ClientPlan {
                    me: i,
                    names: names.clone(),
                    seed: sc.seed,
                    work,
                    expect_in: vec![*expected.get(i)?],
                    expect_bounces: vec![0],
                    transcript: false,
                }
            }
        };
        plan.transcript = self.transcript;
        Some(plan)
    }

    /// Every plan, made now.
    pub fn to_vec(&self) -> Vec<ClientPlan> {
        (0..self.len()).filter_map(|i| self.get(i)).collect()
    }

    /// The run's names.
    pub fn names(&self) -> Option<Arc<Names>> {
        match &self.kind {
            PlansKind::Listed(v) => v.first().map(|p| p.names.clone()),
            PlansKind::OnePhase { names, .. } => Some(names.clone()),
        }
    }

    /// The messages the clients are due to receive, in all.
    pub fn expected_total(&self) -> u64 {
        match &self.kind {
            PlansKind::Listed(v) => v
                .iter()
                .map(|p| p.expect_in.last().copied().unwrap_or(0))
                .sum(),
            PlansKind::OnePhase { expected, .. } => expected.iter().sum(),
        }
    }
}

/// Every client's plan for a script.
pub fn script_plans(s: &Script, seed: u64) -> Vec<ClientPlan> {
    let names = Arc::new(Names::given(s.names.clone(), s.clients));
    let bodies = Arc::new(s.bodies.clone());
    let phases = s.phases.len();
    (0..s.clients)
        .map(|me| {
            let mut sends = vec![Vec::new(); phases];
            let mut incoming: Vec<Vec<Run>> = vec![Vec::new(); s.clients];
            let mut upto = vec![0u64; s.clients];
            let mut incoming_upto = Vec::with_capacity(phases);
            let mut expect_in = Vec::with_capacity(phases);
            let mut expect_bounces = Vec::with_capacity(phases);
            let (mut got, mut bounced) = (0u64, 0u64);
            for (p, phase) in s.phases.iter().enumerate() {
                incoming_upto.push(upto.clone());
                for send in phase {
                    let run = |peer| Run {
                        peer,
                        body: send.body,
                        count: send.count,
                    };
                    if send.from == me {
                        sends[p].push(run(send.to));
                        if send.to >= s.clients {
                            bounced += send.count;
                        }
                    }
                    if send.to == me {
                        incoming[send.from].push(run(send.from));
                        upto[send.from] += send.count;
                        got += send.count;
                    }
                }
                expect_in.push(got);
                expect_bounces.push(bounced);
            }
            ClientPlan {
                me,
                names: names.clone(),
                seed,
                work: Work::Script {
                    sends,
                    incoming,
                    incoming_upto,
                    bodies: bodies.clone(),
                },
                expect_in,
                expect_bounces,
                transcript: false,
            }
        })
        .collect()
}

/// A body without copying a literal.
enum BodyRef<'b> {
    Literal(&'b [u8]),
    Sized(PayloadSize),
}

/// Produces one client's messages in order, phase by phase.
pub struct Outbox<'a> {
    plan: &'a ClientPlan,
    phase: usize,
    run: usize,
    left: u64,
    random: Option<(Destinations, u64)>,
    seq_to: PerPeer<u64>,
    /// A restarted sender: its first message to each receiver carries the restart flag
    /// ([`payload::RESTART`]); the receivers it has flagged one to.
    restart: Option<PerPeer<bool>>,
}

impl<'a> Outbox<'a> {
    /// The outbox of a plan, at phase 0.
    pub fn new(plan: &'a ClientPlan) -> Outbox<'a> {
        let random = match &plan.work {
            Work::Random(sc) => Some((sc.destinations(plan.me), sc.msgs)),
            Work::Script { .. } | Work::PingPong { .. } => None,
        };
        let mut o = Outbox {
            plan,
            phase: 0,
            run: 0,
            left: 0,
            random,
            seq_to: PerPeer::new(plan.names.all().len(), |_| 0),
            restart: None,
        };
        o.start_phase(0);
        o
    }

    /// A restarted sender, past what its predecessor queued: its first message to each
    /// receiver carries the restart flag.
    pub fn mark_restart(&mut self) {
        self.restart = Some(PerPeer::new(self.plan.names.all().len(), |_| false));
    }

    /// Moves to phase `p`.
    pub fn start_phase(&mut self, p: usize) {
        self.phase = p;
        self.run = 0;
        self.left = match &self.plan.work {
            Work::Script { sends, .. } => {
                sends.get(p).and_then(|r| r.first()).map_or(0, |r| r.count)
            }
            Work::Random(_) | Work::PingPong { .. } => 0,
        };
    }

    /// The next message of this phase: writes its payload into `out` and returns the
    /// receiver's index, or `None` when the phase's sends are done.
    pub fn next(&mut self, now_ns: u64, out: &mut Vec<u8>) -> Option<usize> {
        self.advance(now_ns, Some(out))
    }

    /// Passes over the next message without making its payload (a restart catching up with
    /// what its predecessor queued); returns its receiver.
    pub fn skip(&mut self) -> Option<usize> {
        self.advance(0, None)
    }

    fn advance(&mut self, now_ns: u64, out: Option<&mut Vec<u8>>) -> Option<usize> {
        let plan = self.plan;
        let (to, body) = match &plan.work {
            Work::Random(sc) => {
                let (dests, left) = self.random.as_mut()?;
                if *left == 0 || self.phase > 0 {
                    return None;
                }
                *left -= 1;
                (dests.next()?, BodyRef::Sized(sc.payload))
            }
            // The ping-pong driver makes its own messages: each waits for the last reply.
            Work::PingPong { .. } => return None,
            Work::Script { sends, bodies, .. } => {
                let runs = sends.get(self.phase)?;
                while self.left == 0 {
                    self.run += 1;
                    self.left = runs.get(self.run)?.count;
                }
                self.left -= 1;
                let r = &runs[self.run];
                let b = match &bodies[r.body] {
                    Body::Literal(t) => BodyRef::Literal(t),
                    Body::Sized(p) => BodyRef::Sized(*p),
                };
                (r.peer, b)
            }
        };
        let next = self.seq_to.at(to, |_| 0);
        let mut seq = *next;
        *next += 1;
        if let Some(flagged) = self.restart.as_mut().map(|r| r.at(to, |_| false)) {
            if !*flagged {
                *flagged = true;
                seq |= payload::RESTART;
            }
        }
        let Some(out) = out else { return Some(to) };
        match body {
            BodyRef::Literal(t) => {
                out.clear();
                out.extend_from_slice(t);
            }
            BodyRef::Sized(size) => {
                payload::encode(&plan.spec(size), plan.me, to, seq, now_ns, out)
            }
        }
        Some(to)
    }
}
