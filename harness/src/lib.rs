//! relay-harness: the supervisor, scenarios, verifier and reports of relay-sim.
//!
//! It knows processes and message records, never sockets: the CLI in the root package gives
//! the supervisor the code that runs in the relay and client processes.

pub mod blackbox;
pub mod exit;
pub mod janitor;
pub mod netns;
pub mod payload;
pub mod peers;
pub mod plan;
pub mod plots;
pub mod record;
pub mod report;
pub mod scenario;
pub mod script;
pub mod supervisor;
pub mod trace;
pub mod verify;

/// Gives a fieldless enum the words it is known by: `name()` and `Display`, from one table
/// (`words!(Verdict { Pass => "pass", Fail => "fail" })`). The report and the run's spec use it
/// for the settings and results a person reads and a JSON document spells.
#[macro_export]
macro_rules! words {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// Its word, as the command line and the JSON report spell it.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
