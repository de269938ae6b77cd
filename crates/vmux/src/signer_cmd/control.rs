//! `vmux signer lock | unlock`: asks the running signer.

use std::process::ExitCode;

use vmux_signer::control::{self, Request};
use vmux_signer::SignerHome;
use zeroize::Zeroizing;

use crate::cli::ControlCommand;
use crate::{passphrase, Failure};

pub(super) fn run(signer: &SignerHome, command: ControlCommand) -> Result<ExitCode, Failure> {
    match command {
        ControlCommand::Lock => {
            let v = control::query(&signer.control_path(), &Request::Lock)?;
            if v["locked"].as_bool() == Some(true) {
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
            let v = control::query(
                &signer.control_path(),
                &Request::Unlock {
                    passphrase: pass.to_string(),
                },
            )?;
            match v["error"].as_str() {
                None => {
                    println!("Signer unlocked.");
                    Ok(ExitCode::SUCCESS)
                }
                Some(e) => Err(Failure(format!("cannot unlock: {e}"))),
            }
        }
    }
}
