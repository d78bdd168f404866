//! Scenario properties: each case is a full forked run of the binary, and must verify clean.
//!
//! Why through the binary: `cargo test` runs tests on many threads, and fork() in a
//! multi-threaded process may leave the child holding locks (the allocator's among them) that
//! no thread will ever release. The binary forks while it is single-threaded, so every case
//! runs there, and this test process only spawns and reads it (assert_cmd).

use proptest::prelude::*;
use serde_json::Value;

/// The largest payload that fits a default frame with a client name (see `relay-sim --help`).
const MAX_PAYLOAD: usize = 1_048_576 - 2 - 32;

/// Payload size ranges, with the edges that matter: 0, 1, the verification header (16, 32),
/// the relay's 64 KiB read chunk, its 1 MiB output bound, and the frame limit.
fn payload() -> impl Strategy<Value = (usize, usize)> {
    let edge = prop_oneof![
        Just(0usize),
        Just(1),
        Just(15),
        Just(16),
        Just(31),
        Just(32),
        Just(65_535),
        Just(65_536),
        Just(MAX_PAYLOAD),
        0usize..300,
        0usize..=MAX_PAYLOAD,
    ];
    (edge.clone(), edge).prop_map(|(a, b)| (a.min(b), a.max(b)))
}

/// Message counts small enough that large payloads stay quick.
fn msgs_for(max_payload: usize) -> impl Strategy<Value = u64> {
    if max_payload > 100_000 {
        (0u64..=6).boxed()
    } else if max_payload > 1000 {
        (0u64..=60).boxed()
    } else {
        (0u64..=400).boxed()
    }
}

/// One random run: clients, messages each, payload range, write chunking, seed, TCP or not.
type Case = (
    usize,
    u64,
    (usize, usize),
    Option<(usize, usize)>,
    u64,
    bool,
);

fn scenario() -> impl Strategy<Value = Case> {
    payload().prop_flat_map(|p| {
        (
            2usize..=16,
            msgs_for(p.1),
            Just(p),
            proptest::option::of((1usize..=64).prop_flat_map(|a| (Just(a), a..=70_000))),
            any::<u64>(),
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_random_scenario_verifies_clean(
        (clients, msgs, (pmin, pmax), chunks, seed, tcp) in scenario()
    ) {
        let mut args = vec![
            "--clients".to_string(), clients.to_string(),
            "--msgs".into(), msgs.to_string(),
            "--payload".into(), format!("{pmin}..{pmax}"),
            "--seed".into(), seed.to_string(),
            "--transport".into(), if tcp { "tcp" } else { "unix" }.into(),
            "--timeout".into(), "60s".into(),
            "--json".into(),
        ];
        if let Some((lo, hi)) = chunks {
            args.push("--write-chunks".into());
            args.push(format!("{lo}..{hi}"));
        }
        let out = assert_cmd::Command::cargo_bin("relay-sim").unwrap().args(&args).output().unwrap();
        let r: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        prop_assert_eq!(out.status.code(), Some(0), "{:#}", r);
        prop_assert_eq!(&r["verdict"], "pass");
        let total = clients as u64 * msgs;
        prop_assert_eq!(r["totals"]["sent"].as_u64(), Some(total));
        prop_assert_eq!(r["totals"]["received"].as_u64(), Some(total));
    }
}
