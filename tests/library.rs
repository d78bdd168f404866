//! A run driven through the library entry, as a Rust program would: build a `RunSpec`, call
//! `relay_sim::run::run`, read the report. No CLI, no binary.
//!
//! `run` forks, so it needs a single-threaded process: this test has its own `main`
//! (`harness = false` in Cargo.toml) instead of the test runner's threads. Each check prints
//! one line; a failed one panics, and the test fails with exit code 101.

use std::time::Duration;

use relay_harness::exit;
use relay_harness::payload::PayloadSize;
use relay_harness::report::Verdict;
use relay_harness::supervisor::{Milestone, Signals};
use relay_sim::relay::inject::Inject;
use relay_sim::run::{self, Options};
use relay_sim::spec::{Amount, Backend, Pattern, RunSpec, Traffic, Transport};

fn main() {
    let signals = Signals::install().expect("signal handlers");

    // A clean run on poll over TCP: every message verified, the milestones in order.
    let spec = RunSpec {
        traffic: Traffic::Random {
            clients: 4,
            amount: Amount::Msgs(2_000),
            payload: PayloadSize { min: 16, max: 300 },
            pattern: Pattern::Mesh,
        },
        transport: Transport::Tcp,
        backend: Backend::Poll,
        ..RunSpec::new(7)
    };
    let mut seen = Vec::new();
    // SAFETY: this test's main thread is its only thread (harness = false).
    let ran = unsafe { run::run(&spec, &signals, &Options::default(), &mut |m| seen.push(m)) }
        .expect("the run starts");
    let r = &ran.report;
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failure);
    assert_eq!(r.exit_code, exit::OK);
    assert_eq!(r.totals.sent, 8_000);
    assert_eq!(r.totals.received, 8_000);
    assert_eq!(ran.names, ["c0", "c1", "c2", "c3"]);
    assert_eq!(
        r.replay,
        "relay-sim run --clients 4 --msgs 2000 --seed 7 --payload 16..300 --transport tcp --backend poll --timeout 11s"
    );
    let forks = seen
        .iter()
        .filter(|m| matches!(m, Milestone::Forked { .. }))
        .count();
    let released = seen.iter().position(|m| *m == Milestone::Released);
    let first_report = seen
        .iter()
        .position(|m| matches!(m, Milestone::Reported { .. }));
    assert_eq!(forks, 5, "the relay and four clients: {seen:?}");
    assert!(
        released < first_report,
        "released before any report: {seen:?}"
    );
    println!("library: a clean run passes, with its milestones in order");

    // The same library call catches a relay that breaks its promise.
    let spec = RunSpec {
        inject: Some(Inject::parse("duplicate:0.05").expect("an inject flag")),
        timeout: Some(Duration::from_secs(20)),
        ..spec
    };
    // SAFETY: as above.
    let ran = unsafe { run::run(&spec, &signals, &Options::default(), &mut |_| {}) }
        .expect("the run starts");
    assert_eq!(ran.report.verdict, Verdict::Fail);
    assert_eq!(ran.report.exit_code, exit::FAIL);
    let dups = ran.report.checks.iter().find(|c| c.name == "duplicates");
    assert!(dups.is_some_and(|c| !c.ok && c.violations > 0), "{dups:?}");
    println!("library: an injected duplicate fails the run, in the duplicates check");

    // A spec the checks refuse never forks anything, and says why with its exit code.
    let spec = RunSpec {
        traffic: Traffic::Random {
            clients: 3,
            amount: Amount::Msgs(10),
            payload: PayloadSize { min: 64, max: 64 },
            pattern: Pattern::PingPong,
        },
        ..RunSpec::new(1)
    };
    // SAFETY: as above.
    let refused = unsafe { run::run(&spec, &signals, &Options::default(), &mut |_| {}) };
    let Err(e) = refused else {
        panic!("a ping-pong run of 3 clients was not refused");
    };
    assert_eq!(e.code, exit::USAGE);
    assert!(e.message.contains("must be even"), "{}", e.message);
    println!("library: a spec it cannot run is refused with exit code 2 and why");
}
