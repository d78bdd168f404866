//! The report as JUnit XML, for a CI job to archive and show.

use crate::exit;

use super::*;

/// The report as JUnit XML: one test case per check (completeness, duplicates, order,
/// integrity, routing, bounces), plus one for the run's ending and one for injected faults.
pub fn junit(r: &Report) -> String {
    use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("relay-sim");
    let fail = |msg: String, detail: String| {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(msg).set_description(detail);
        s
    };
    for c in &r.checks {
        let status = if matches!(
            c.status,
            CheckStatus::NotCheckable | CheckStatus::NotFinished
        ) {
            // Not run (in full): JUnit's word for a test that could not be made is "skipped".
            let mut s = TestCaseStatus::skipped();
            s.set_message(format!(
                "{}: {}",
                c.status.name().replace('_', " "),
                c.note.clone().unwrap_or_default()
            ));
            s
        } else if c.ok {
            TestCaseStatus::success()
        } else {
            let detail: Vec<String> = r
                .violations
                .iter()
                .filter(|v| v.class.check() == c.name)
                .take(HUMAN_VIOLATIONS)
                .map(|v| v.to_string())
                .collect();
            fail(format!("{} violation(s)", c.violations), detail.join("\n"))
        };
        let mut case = TestCase::new(c.name, status);
        if let (Some(note), CheckStatus::PartlyCheckable) = (&c.note, c.status) {
            case.set_system_out(format!("checked in part: {note}"));
        }
        suite.add_test_case(case);
    }
    let ending = if matches!(r.ending, Ended::Finished | Ended::RelayKilled) {
        TestCaseStatus::success()
    } else {
        fail(
            r.failure.clone().unwrap_or_default(),
            format!("replay: {}", r.replay),
        )
    };
    suite.add_test_case(TestCase::new("run ends by itself", ending));
    if let Some(i) = &r.inject {
        // A fault that fired must have been caught: that is what an injected run tests.
        let caught = r.exit_code != exit::OK || i.fired == Some(0);
        let status = if caught {
            TestCaseStatus::success()
        } else {
            fail(
                format!("{} fired but the verifier passed the run", i.fault),
                String::new(),
            )
        };
        suite.add_test_case(TestCase::new(
            format!("injected fault {} is caught", i.fault),
            status,
        ));
    }
    if let Some(n) = &r.nemesis {
        // One case per kind of process fault that struck: the promises held under it.
        let mut kinds: Vec<crate::supervisor::Action> = Vec::new();
        for e in &n.events {
            if !kinds.contains(&e.action) {
                kinds.push(e.action);
            }
        }
        for k in kinds {
            let count = n.events.iter().filter(|e| e.action == k).count();
            let status = if r.exit_code == exit::OK {
                TestCaseStatus::success()
            } else {
                fail(
                    r.failure.clone().unwrap_or_default(),
                    format!("replay: {}", r.replay),
                )
            };
            suite.add_test_case(TestCase::new(
                format!(
                    "nemesis {} ({count} time(s)): the guarantees held",
                    k.name()
                ),
                status,
            ));
        }
    }
    let mut report = JReport::new("relay-sim");
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}
