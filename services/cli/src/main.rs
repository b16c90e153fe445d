//! `cii`: the one command of CII Exchange. It runs the network's processes
//! (`cii gateway`, `cii node`, `cii consent`) and the operators', DPOs' and
//! jurists' tools; everything is in the library (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    cii_cli::run()
}
