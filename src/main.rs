//! The relay-sim binary: parse, run, exit with a documented code.

fn main() {
    std::process::exit(relay_sim::cli::main());
}
