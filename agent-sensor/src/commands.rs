//! The client-side commands: they talk to the running daemon.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use agent_sensor::{
    agents::registry::{git_worktree_of, AgentSummary},
    control::{client::Client, Reply, Request},
    policy::Policy,
};
use anyhow::{bail, Context as _, Result};

use crate::{cli::ExecArgs, launch};

/// `agent-sensor exec`: never runs the command unwatched.
pub fn exec(args: ExecArgs) -> Result<()> {
    let worktree = match args.worktree {
        Some(dir) => std::fs::canonicalize(&dir)
            .with_context(|| format!("worktree {} does not exist", dir.display()))?,
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
            git_worktree_of(&cwd).with_context(|| {
                format!(
                    "{} is not inside a git worktree; pass --worktree DIR",
                    cwd.display()
                )
            })?
        }
    };
    let found = launch::find_command(&args.command)?;
    let mut client = Client::connect(&args.control_socket)?;
    let Reply::Registered { agent_id, cgroup } = client.call(&Request::Register {
        agent: args.agent.clone(),
        worktree: worktree.clone(),
        profile: args.profile,
    })?
    else {
        bail!("the daemon answered the registration with something else");
    };
    // Born in the agent's cgroup, held at a gate until the daemon confirms the kernel
    // tracks it (see `launch` for why not exec in place).
    let gated = match launch::Gated::spawn(&cgroup, &found) {
        Ok(gated) => gated,
        Err(e) => {
            abandon_registration(&mut client, agent_id);
            return Err(e);
        }
    };
    if let Err(e) = wait_until_tracked(&mut client, agent_id, gated.pid()) {
        gated.abandon();
        abandon_registration(&mut client, agent_id);
        return Err(e);
    }
    drop(client);
    let running = gated.open()?;
    launch::end_like(running.wait()?)
}

/// The kernel tracks the command as soon as it is in the cgroup; the daemon confirms it from
/// the kernel's own map. A short retry covers nothing but a slow daemon.
fn wait_until_tracked(client: &mut Client, agent_id: u64, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.call(&Request::Confirm { agent_id, pid }) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e)
                    .context("the kernel does not track this process; not running the command");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Tells the daemon the agent's command will not run, so that it does not list the agent as
/// running. The command's own error is what the user needs; this one is only logged.
fn abandon_registration(client: &mut Client, agent_id: u64) {
    if let Err(e) = client.call(&Request::Abandon { agent_id }) {
        log::warn!("the daemon kept the abandoned registration of agent {agent_id}: {e:#}");
    }
}

/// `agent-sensor agents`.
pub fn agents(socket: &Path, json: bool) -> Result<()> {
    let mut client = Client::connect(socket)?;
    let Reply::Agents { agents } = client.call(&Request::Agents {})? else {
        bail!("the daemon answered with something else");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
    } else {
        print!("{}", table(&agents));
    }
    Ok(())
}

fn table(agents: &[AgentSummary]) -> String {
    let mut out = format!(
        "{:<6} {:<20} {:<10} {:<8} {:>5} {:>6}  {:<40} {}\n",
        "ID", "NAME", "STATE", "ORIGIN", "PROCS", "ALERTS", "WORKTREE", "LAST RESPONSE"
    );
    for a in agents {
        let alerts: u64 = a.alerts.values().sum();
        let id = if a.id >> 63 == 1 {
            format!("d{}", a.id & 0xffff_ffff)
        } else {
            a.id.to_string()
        };
        let last = a
            .responses
            .last()
            .map(|r| format!("{} by {}: {}", r.action, r.by, r.outcome))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<6} {:<20} {:<10} {:<8} {:>5} {:>6}  {:<40} {}\n",
            id,
            a.name,
            format!("{:?}", a.state).to_lowercase(),
            format!("{:?}", a.origin).to_lowercase(),
            a.processes.len(),
            alerts,
            a.worktree.display(),
            last
        ));
    }
    out
}

/// `agent-sensor check-config FILE`: every error, each naming its line and key.
pub fn check_config(file: &Path) -> Result<()> {
    let policy = match Policy::check_file(file) {
        Ok(policy) => policy,
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            bail!("{}: {} error(s)", file.display(), errors.len());
        }
    };
    println!(
        "{}: valid ({} rules, {} profiles, {} agents)",
        file.display(),
        policy.file.rules.len(),
        policy.file.profiles.len(),
        policy.file.agents.len()
    );
    Ok(())
}

/// `agent-sensor thaw|kill NAME`.
pub fn steer(socket: &Path, request: Request) -> Result<()> {
    let mut client = Client::connect(socket)?;
    match client.call(&request)? {
        Reply::Done { message } => {
            println!("{message}");
            Ok(())
        }
        _ => bail!("the daemon answered with something else"),
    }
}
