//! agent-sensor binary: parses the command line and hands over to the library.

mod cli;

use std::process::ExitCode;

use agent_sensor::{daemon, loader::LoadOptions, probe};
use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&cli.log_level))
        .format_target(false)
        .init();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One sentence (with its causes), never a backtrace.
            eprintln!("agent-sensor: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Probe { json } => {
            let report = probe::run()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Run(args) => {
            let options = daemon::RunOptions {
                load: LoadOptions {
                    ring_bytes: args.ring_bytes,
                },
                events: args.events,
                track_pids: args.track_pids,
                track_cgroups: args.track_cgroups,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(daemon::run(options))?;
            Ok(())
        }
    }
}
