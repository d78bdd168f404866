//! Proving the verifier: for each kind of injected relay fault, every run in which the fault
//! fired fails with the matching violation class, and every run in which it did not fire passes.

use proptest::prelude::*;
use serde_json::Value;

/// (fault, the check that must fail, whether the fault also loses messages, so the run can
/// only end at its deadline).
const KINDS: [(&str, &str, bool); 7] = [
    ("drop", "completeness", true),
    ("duplicate", "duplicates", false),
    ("reorder", "order", false),
    ("corrupt", "integrity", false),
    ("misroute", "routing", true),
    ("spoof", "routing", true),
    ("delay", "completeness", true),
];

fn run(kind: &str, clients: usize, msgs: u64, rate: f64, seed: u64, loses: bool) -> Value {
    let out = assert_cmd::Command::cargo_bin("relay-sim")
        .unwrap()
        .args([
            "--clients",
            &clients.to_string(),
            "--msgs",
            &msgs.to_string(),
        ])
        .args(["--payload", "32..200", "--seed", &seed.to_string()])
        .args(["--inject", &format!("{kind}:{rate}")])
        .args(["--timeout", if loses { "1s" } else { "30s" }, "--json"])
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

fn check(kind: &str, must_fail: &str, r: &Value) -> Result<u64, TestCaseError> {
    let fired = r["inject"]["fired"]
        .as_u64()
        .expect("the relay says how often it fired");
    let failed: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    if fired == 0 {
        prop_assert_eq!(
            &r["verdict"],
            "pass",
            "{} did not fire, yet: {:?}",
            kind,
            failed
        );
    } else {
        prop_assert_eq!(&r["verdict"], "fail");
        prop_assert!(
            failed.contains(&must_fail),
            "{} fired {} times; failed checks {:?}",
            kind,
            fired,
            failed
        );
        prop_assert!(
            r["violations"].as_array().is_some_and(|v| !v.is_empty()),
            "the violations are listed"
        );
    }
    Ok(fired)
}

fn cases(loses: bool) -> u32 {
    if loses {
        4
    } else {
        12
    }
}

macro_rules! fault_property {
    ($name:ident, $i:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: cases(KINDS[$i].2), ..ProptestConfig::default() })]
            #[test]
            fn $name(
                clients in 2usize..=6,
                msgs in 20u64..=400,
                rate in prop::sample::select(vec![0.0005, 0.005, 0.05]),
                seed in any::<u64>(),
            ) {
                let (kind, must_fail, loses) = KINDS[$i];
                let r = run(kind, clients, msgs, rate, seed, loses);
                check(kind, must_fail, &r)?;
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
