//! The `portcullis` binary: parse the command line and hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = portcullis::cli::Cli::parse();
    portcullis::cli::main(cli)
}
