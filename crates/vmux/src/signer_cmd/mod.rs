//! `vmux signer …`: one module per group of subcommands, each handed
//! only its own group's enum (see [`SignerCommand`]). Each parses nothing
//! itself (clap did) and calls into `vmux-signer`.

mod agents;
mod audit;
mod control;
mod keys;
mod phones;
mod serve;
mod service;

use std::path::Path;
use std::process::ExitCode;

use vmux_home::Home;
use vmux_signer::provider::SoftwareKeys;
use vmux_signer::SignerHome;
use zeroize::Zeroizing;

use crate::cli::SignerCommand;
use crate::{passphrase, Failure};

/// The signer's passphrase if it has one (checked against its CA key).
fn unlock_passphrase(
    signer: &SignerHome,
    file: Option<&Path>,
) -> Result<Option<Zeroizing<String>>, Failure> {
    if !signer.state()?.encrypted {
        return Ok(None);
    }
    let pass = passphrase::get(file, "Signer passphrase: ", false)?;
    signer.check_passphrase(&pass)?;
    Ok(Some(pass))
}

/// The key store, unlocked when the signer is encrypted.
fn open_keys(signer: &SignerHome, file: Option<&Path>) -> Result<SoftwareKeys, Failure> {
    let pass = unlock_passphrase(signer, file)?;
    Ok(signer.software_keys(pass.as_deref().map(String::as_str))?)
}

pub fn run(
    home: &Home,
    command: SignerCommand,
    home_flag: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let signer = SignerHome::new(home.clone());
    match command {
        SignerCommand::Keys(c) => keys::run(&signer, c),
        SignerCommand::Audit(c) => audit::run(&signer, c),
        SignerCommand::Control(c) => control::run(&signer, c),
        SignerCommand::Service(c) => service::run(home, home_flag, c),
        SignerCommand::Agents(c) => agents::run(&signer, c),
        SignerCommand::Phones(c) => phones::run(&signer, c),
        SignerCommand::Run(args) => serve::run(&signer, args),
    }
}
