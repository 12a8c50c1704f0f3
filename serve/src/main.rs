//! `preba`: see `preba --help`.
#![forbid(unsafe_code)]
use clap::{Parser, Subcommand};
use preba_host::cli::{CardCommand, PreprocessArgs};
use preba_serve::ServeError;
use preba_serve::server::ServeArgs;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "preba",
    version,
    about = "Preprocessing for MIG inference servers: images and audio on the preba card, batched per MIG slice"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Preprocess JPEG images into a tensor (.npy) or WAV audio into log-Mel features (.npz).
    Preprocess(PreprocessArgs),
    /// Inspect a card.
    #[command(subcommand)]
    Card(CardCommand),
    /// Serve models over KServe v2 HTTP (Triton's protocol), preprocessing on the card, batching per slice.
    Serve(ServeArgs),
    /// Open-loop load generator against a KServe v2 server (`preba bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure a model's latency and throughput per batch size on each slice type; writes a profile table (`preba profile --help`).
    #[command(disable_help_flag = true)]
    Profile {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Discrete-event simulation of a serving set-up with the server's own batching code (`preba sim --help`).
    #[command(disable_help_flag = true)]
    Sim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// One slice's worker process (started by `preba serve`).
    #[command(hide = true, disable_help_flag = true)]
    Worker {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Preprocess(a) => preba_host::cli::preprocess(a).map_err(ServeError::from),
        Command::Card(c) => preba_host::cli::card(c).map_err(ServeError::from),
        Command::Serve(a) => preba_serve::server::serve(a),
        Command::Bench { args } => return ExitCode::from(preba_loadgen::main(args) as u8),
        Command::Profile { args } => return ExitCode::from(preba_profiler::main(args) as u8),
        Command::Sim { args } => return ExitCode::from(preba_sim::main(args) as u8),
        Command::Worker { args } => return ExitCode::from(preba_slice::worker_main(args) as u8),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e @ (ServeError::Usage(_) | ServeError::Host(preba_host::Error::Usage(_)))) => {
            eprintln!("preba: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("preba: {e}");
            ExitCode::from(1)
        }
    }
}
