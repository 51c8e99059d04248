//! agent-sensor binary: parses the command line and hands over to the library.

mod cli;
mod commands;
mod launch;

use std::process::ExitCode;

use agent_sensor::{control::Request, daemon, policy::Mode, probe};
use clap::Parser;

use crate::cli::{Cli, Command, ModeArg};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&cli.log_level))
        .format_target(false)
        .init();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One sentence (with its causes), never a backtrace.
            eprintln!("agent-sensor: {}", one_sentence(&err));
            match err.downcast_ref::<launch::CannotExecute>() {
                Some(cannot) => ExitCode::from(cannot.exit_status()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes, each said once: many library errors already quote their cause,
/// which `{:#}` would repeat ("Permission denied (os error 13): Permission denied …").
fn one_sentence(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Probe {
            hold_syscall_hooks: Some(seconds),
            hooks,
            ..
        } => Ok(probe::hold_syscall_hooks(
            &hooks,
            std::time::Duration::from_secs(seconds),
        )?),
        Command::Probe { json, .. } => {
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
                ring_bytes: args.ring_bytes,
                max_event_delay: args
                    .max_event_delay_us
                    .map(|us| std::time::Duration::from_micros(us.into())),
                report_missing_paths: args.report_missing_paths,
                repeat_window_ms: args.repeat_window_ms,
                priority_boost: args.priority_boost,
                events: args.events,
                alerts: args.alerts,
                policy: args.policy,
                mode: args.mode.map(|m| match m {
                    ModeArg::Monitor => Mode::Monitor,
                    ModeArg::Enforce => Mode::Enforce,
                }),
                state_dir: args.state_dir,
                control_socket: args.control_socket,
                alerts_format: args.alerts_format,
                metrics_addr: match args.metrics_addr.as_str() {
                    "none" => None,
                    addr => Some(addr.parse().map_err(|e| {
                        anyhow::anyhow!("--metrics-addr {addr}: {e} (use HOST:PORT or none)")
                    })?),
                },
                metrics_agent_labels: args.metrics_agent_labels,
                webhook_url: args.webhook_url,
                persist: args.persist,
                detach: args.detach,
                track_pids: args.track_pids,
                track_cgroups: args.track_cgroups,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(daemon::run(options))?;
            Ok(())
        }
        Command::Exec(args) => commands::exec(args),
        Command::Agents {
            json,
            control_socket,
        } => commands::agents(&control_socket, json),
        Command::CheckConfig { file } => commands::check_config(&file),
        Command::Uninstall { persist_dir } => {
            agent_sensor::system::require_root()?;
            // Held while the pins go: a daemon started meanwhile waits for none of it.
            let lock = agent_sensor::lock::DirLock::acquire(
                &agent_sensor::loader::persist::lock_file(&persist_dir),
                agent_sensor::lock::Claim {
                    what: "the pin directory",
                    dir: &persist_dir,
                    advice: "stop it first (uninstall removes what a stopped daemon left in the \
                             kernel)",
                },
            )?;
            let (links, maps) = agent_sensor::loader::persist::remove_all(&persist_dir);
            lock.remove();
            println!(
                "removed {links} pinned links and {maps} pinned maps from {}",
                persist_dir.display()
            );
            Ok(())
        }
        Command::Thaw {
            agent,
            control_socket,
        } => commands::steer(&control_socket, Request::Thaw { agent }),
        Command::Kill {
            agent,
            control_socket,
        } => commands::steer(&control_socket, Request::Kill { agent }),
    }
}

#[cfg(test)]
mod tests {
    use super::one_sentence;

    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let io = std::io::Error::from_raw_os_error(13);
        let quoted = anyhow::Error::new(io)
            .context("cannot read policy /x: Permission denied (os error 13)");
        assert_eq!(
            one_sentence(&quoted),
            "cannot read policy /x: Permission denied (os error 13)"
        );
        let io = std::io::Error::from_raw_os_error(13);
        let bare = anyhow::Error::new(io).context("cannot read policy /x");
        assert_eq!(
            one_sentence(&bare),
            "cannot read policy /x: Permission denied (os error 13)"
        );
    }
}
