//! The `corral` binary: `corral server` / `corral dev` run managers, `corral agent` runs
//! a node agent (and the hidden `corral agent-shim` supervises one of its replicas);
//! every other subcommand is a client of a running cluster's admin API.
// A program whose output is its report (the workspace lints keep stdout to such programs).
#![allow(clippy::print_stdout)]

mod cert;
mod cli;
mod dev;
mod exit;
mod output;
mod parse;
mod render;
mod requests;
mod run;
mod server_commands;
mod times;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    std::process::exit(run_main());
}

fn run_main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with code 0; usage errors to stderr with 2.
            let _ = error.print();
            return error.exit_code();
        }
    };
    let cli = match cli.command {
        // Before anything else: the shim must be the process's only thread.
        Command::AgentShim(args) => return server_commands::run_agent_shim(args),
        command => Cli { command, ..cli },
    };
    init_tracing(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Agent(args) => {
            runtime.block_on(server_commands::run_agent(&args.config, args.simulate))
        }
        command => runtime.block_on(run::run(command, cli.global)),
    };
    match result {
        Ok(()) => exit::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG; by default `info` for a server (openraft's
/// own chatter only from `warn`) and warnings only for client commands.
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Server(_) | Command::Dev(_) | Command::Agent(_) => "info,openraft=warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
