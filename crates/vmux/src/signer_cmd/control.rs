//! `vmux signer lock | unlock`: asks the running signer.

use std::process::ExitCode;

use vmux_control::signer::Client;
use vmux_control::ControlError;
use vmux_signer::SignerHome;
use zeroize::Zeroizing;

use crate::cli::ControlCommand;
use crate::{passphrase, Failure};

pub(super) fn run(signer: &SignerHome, command: ControlCommand) -> Result<ExitCode, Failure> {
    match command {
        ControlCommand::Lock => {
            if Client::new(signer.control_path()).lock()? {
                println!("Signer locked.");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Failure(
                    "the signer did not confirm that it is locked".into(),
                ))
            }
        }
        ControlCommand::Unlock { passphrase_file } => {
            let pass = if signer.state()?.encrypted {
                passphrase::get(passphrase_file.as_deref(), "Signer passphrase: ", false)?
            } else {
                Zeroizing::new(String::new())
            };
            match Client::new(signer.control_path()).unlock(&pass) {
                Ok(()) => {
                    println!("Signer unlocked.");
                    Ok(ExitCode::SUCCESS)
                }
                Err(ControlError::Refused(e)) => Err(Failure(format!("cannot unlock: {e}"))),
                Err(e) => Err(e.into()),
            }
        }
    }
}
