//! Proving the verifier end to end: for each kind of injected relay fault, at payload sizes from
//! 0 to 300 bytes (and ranges of them), every run in which the fault fired fails with a check
//! that size can show it by (docs/guarantees.md), ends by itself (finished, or stalled by the
//! quiet rule when messages were lost: never at the deadline), and every run in which it did
//! not fire passes. harness/tests/faulty_relay.rs runs thousands more in one process.

use proptest::prelude::*;
use serde_json::Value;

/// (fault, whether it loses messages, so the run ends by the quiet rule).
const KINDS: [(&str, bool); 7] = [
    ("drop", true),
    ("duplicate", false),
    ("reorder", false),
    ("corrupt", false),
    ("misroute", true),
    ("spoof", true),
    ("delay", true),
];

fn run(kind: &str, clients: usize, msgs: u64, rate: f64, seed: u64, payload: &str) -> Value {
    let out = assert_cmd::Command::cargo_bin("relay-sim")
        .unwrap()
        .args([
            "--clients",
            &clients.to_string(),
            "--msgs",
            &msgs.to_string(),
        ])
        .args(["--payload", payload, "--seed", &seed.to_string()])
        .args(["--inject", &format!("{kind}:{rate}")])
        .args(["--json"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        out.status.code(),
        Some(r["exit_code"].as_i64().unwrap() as i32)
    );
    r
}

/// The checks a fault that fired `fired` times may fail when payloads have at least `min`
/// bytes: (at least one of these, and none outside these).
fn checks(kind: &str, min: usize, fired: u64) -> (Vec<&'static str>, Vec<&'static str>) {
    let any = vec![
        "completeness",
        "duplicates",
        "order",
        "integrity",
        "routing",
    ];
    match kind {
        "drop" | "delay" => (vec!["completeness"], vec!["completeness"]),
        "duplicate" => (vec!["duplicates"], vec!["duplicates"]),
        // Empty payloads carry no sequence: a swap of two cannot be seen.
        "reorder" if min == 0 => (vec![], vec!["order", "completeness", "duplicates"]),
        "reorder" => (vec!["order"], vec!["order"]),
        "corrupt" if min >= 32 => (vec!["integrity"], vec!["integrity"]),
        "corrupt" => (any.clone(), any),
        "misroute" | "spoof" if min >= 16 => (vec!["routing"], vec!["routing", "completeness"]),
        // Two that swap same-sequence payloads between pairs balance each other's counts.
        _ if fired == 1 => (vec!["completeness"], any),
        _ => (vec![], any),
    }
}

fn check(kind: &str, min: usize, r: &Value) -> Result<u64, TestCaseError> {
    let fired = r["inject"]["fired"]
        .as_u64()
        .expect("the relay says how often it fired");
    let failed: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let ending = r["ending"].as_str().unwrap_or_default();
    prop_assert!(
        ending == "finished" || ending == "stalled",
        "{} ended {:?}: {:?}",
        kind,
        ending,
        r["failure"]
    );
    if fired == 0 {
        prop_assert_eq!(
            &r["verdict"],
            "pass",
            "{} did not fire, yet: {:?}",
            kind,
            failed
        );
        prop_assert_eq!(ending, "finished");
        return Ok(0);
    }
    let (must, allowed) = checks(kind, min, fired);
    prop_assert!(
        must.is_empty() || must.iter().any(|c| failed.contains(c)),
        "{} fired {} times at {} bytes and up; failed checks {:?}, wanted one of {:?}",
        kind,
        fired,
        min,
        failed,
        must
    );
    prop_assert!(
        failed.iter().all(|c| allowed.contains(c)),
        "{} at {} bytes and up failed {:?}; only {:?} may",
        kind,
        min,
        failed,
        allowed
    );
    if !failed.is_empty() {
        prop_assert_eq!(&r["verdict"], "fail");
        prop_assert!(
            r["violations"].as_array().is_some_and(|v| !v.is_empty()),
            "the violations are listed"
        );
    }
    Ok(fired)
}

fn cases(loses: bool) -> u32 {
    if loses {
        6
    } else {
        12
    }
}

/// A payload size or range between 0 and 300 bytes, as `--payload` takes it, and its minimum.
fn payload() -> impl Strategy<Value = (String, usize)> {
    prop_oneof![
        (0usize..=300).prop_map(|s| (s.to_string(), s)),
        (0usize..=300, 0usize..=300).prop_map(|(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            (format!("{lo}..{hi}"), lo)
        }),
    ]
}

macro_rules! fault_property {
    ($name:ident, $i:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: cases(KINDS[$i].1), ..ProptestConfig::default() })]
            #[test]
            fn $name(
                clients in 2usize..=6,
                msgs in 20u64..=400,
                rate in prop::sample::select(vec![0.0005, 0.005, 0.05]),
                seed in any::<u64>(),
                (size, min) in payload(),
            ) {
                let (kind, _) = KINDS[$i];
                let r = run(kind, clients, msgs, rate, seed, &size);
                check(kind, min, &r)?;
            }
        }
    };
}

fault_property!(drop_is_caught_as_lost, 0);
fault_property!(duplicate_is_caught_as_duplicate, 1);
fault_property!(reorder_is_caught_as_order, 2);
fault_property!(corrupt_is_caught_as_integrity, 3);
fault_property!(misroute_is_caught_as_routing, 4);
fault_property!(spoof_is_caught_as_routing, 5);
fault_property!(delay_is_caught_as_lost, 6);

#[test]
fn the_human_report_announces_injection_loudly() {
    let out = assert_cmd::Command::cargo_bin("relay-sim")
        .unwrap()
        .args([
            "--clients",
            "3",
            "--msgs",
            "300",
            "--seed",
            "1",
            "--inject",
            "duplicate:0.05",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("!!! FAULTS INJECTED ON PURPOSE: duplicate:0.05")
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("replay:") && text.contains("--inject duplicate:0.05"),
        "{text}"
    );
    assert!(text.contains("duplicates FAILED"), "{text}");
}
