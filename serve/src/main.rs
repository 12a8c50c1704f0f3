//! `preba`: see `preba --help`.
#![forbid(unsafe_code)]
use clap::Parser;
use preba_host::Error;
use preba_host::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Preprocess(a) => preba_host::cli::preprocess(a),
        Command::Card(c) => preba_host::cli::card(c),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e @ Error::Usage(_)) => {
            eprintln!("preba: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("preba: {e}");
            ExitCode::from(1)
        }
    }
}
