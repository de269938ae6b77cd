//! `vmux signer …`: one module per group of subcommands. Each parses
//! nothing itself (clap did) and calls into `vmux-signer`.

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

/// A subcommand handed to the wrong group (a bug in this file).
fn misrouted(command: &SignerCommand) -> Failure {
    Failure(format!(
        "internal error: {command:?} reached the wrong handler"
    ))
}

pub fn run(
    home: &Home,
    command: SignerCommand,
    home_flag: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let signer = SignerHome::new(home.clone());
    use SignerCommand as C;
    match command {
        c @ (C::Init { .. }
        | C::Keygen { .. }
        | C::Token { .. }
        | C::Import { .. }
        | C::Delete { .. }
        | C::Rename { .. }
        | C::Keys { .. }
        | C::Ca { .. }) => keys::run(&signer, c),
        c @ (C::Agents | C::Unpair { .. }) => agents::run(&signer, c),
        c @ C::Audit { .. } => audit::run(&signer, c),
        c @ (C::Install { .. } | C::Uninstall) => service::run(home, home_flag, c),
        c @ (C::Lock | C::Unlock { .. }) => control::run(&signer, c),
        c @ (C::Phone { .. } | C::Phones) => phones::run(&signer, c),
        c @ C::Run { .. } => serve::run(&signer, c),
    }
}
