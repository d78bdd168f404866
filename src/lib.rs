//! relay-sim: a select() relay, its wire protocol, its client library, and the CLI that
//! joins them to the harness.

pub mod cli;
pub mod client;
pub mod conform;
pub mod driver;
pub mod protocol;
pub mod relay;
pub mod run;
pub mod spec;
pub mod sys;
