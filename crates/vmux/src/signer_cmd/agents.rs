//! `vmux signer agents | unpair`: the paired agents. Unpairing goes
//! through the running signer, the one writer of its state, when it runs.

use std::process::ExitCode;
use std::time::Duration;

use vmux_control::signer::Client;
use vmux_control::ControlError;
use vmux_signer::paired::PairedAgents;
use vmux_signer::SignerHome;

use crate::cli::AgentsCommand;
use crate::Failure;

pub(super) fn run(signer: &SignerHome, command: AgentsCommand) -> Result<ExitCode, Failure> {
    match command {
        AgentsCommand::Agents => {
            let state = signer.state()?;
            crate::print_list(&state.agents, "No paired agents.", |a| {
                format!(
                    "{}  {}  paired {}  last seen {}",
                    a.id,
                    vmux_proto::sanitize(&a.name),
                    vmux_home::time::utc(a.paired_at),
                    vmux_home::time::utc(a.last_seen)
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Unpair { id } => {
            // One writer: the running signer if there is one, else this
            // command under the state's lock.
            let removed = match Client::new(signer.control_path()).unpair(&id) {
                Ok(a) => a.map(|a| (a.id, a.name)),
                Err(ControlError::Refused(e)) => {
                    return Err(Failure(format!("the signer could not unpair: {e}")));
                }
                Err(ControlError::NotRunning(..)) => {
                    PairedAgents::open(signer.state_path(), Duration::from_secs(5))?
                        .remove(&id)?
                        .map(|a| (a.id, a.name))
                }
                Err(e) => return Err(e.into()),
            };
            match removed {
                Some((agent_id, name)) => {
                    println!(
                        "Unpaired {} ({}); its next connection is refused.",
                        vmux_proto::sanitize(&name),
                        agent_id
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(Failure(format!(
                    "no paired agent has the id {id:?} (or it is ambiguous); see `vmux signer agents`"
                ))),
            }
        }
    }
}
