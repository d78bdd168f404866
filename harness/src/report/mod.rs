//! Reports: one result ([`Report`]), built once from what the supervisor and the verifier
//! found, and rendered by reporters that only read it: the human text, JSON, JUnit XML and a
//! results folder's index.html. Reporters never touch a process or a socket.
//! docs/report.md describes the JSON.
//!
//! - model.rs: the report's types, serialized as the JSON says;
//! - build.rs: the report from an `Outcome` and a `Verification`;
//! - analysis.rs: what the nemesis did to delivery (rates during stops, starvation);
//! - human.rs, junit.rs, html.rs: the renderings (JSON is the model through serde).

mod analysis;
mod build;
mod html;
mod human;
mod junit;
mod model;

pub use build::build;
pub use html::html;
pub use human::{human, human_full, CLIENT_ROWS};
pub use junit::junit;
pub use model::*;

/// The JSON schema version; bump it when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;
/// Most violations listed in the JSON report (all are counted).
pub const JSON_VIOLATIONS: usize = 1000;
/// Most violations listed in the human report.
pub const HUMAN_VIOLATIONS: usize = 20;

/// The report as JSON (docs/report.md).
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default() + "\n"
}

/// A signal's name as a person knows it.
pub fn signal_name(sig: i32) -> String {
    match sig {
        2 => "SIGINT (Ctrl-C)".to_string(),
        15 => "SIGTERM".to_string(),
        n => format!("signal {n}"),
    }
}

pub(crate) use crate::plots::group;

/// Microseconds, or milliseconds from 1,000 us on.
pub(crate) fn us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2} ms", x / 1000.0)
    } else {
        format!("{x:.1} us")
    }
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
