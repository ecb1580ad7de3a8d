//! The `pgwarden` binary: parse the command line and hand over to `cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    pgwarden::cli::main(pgwarden::cli::Cli::parse())
}
