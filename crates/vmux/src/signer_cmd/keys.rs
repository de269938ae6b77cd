//! `vmux signer init | keygen | token | import | delete | rename | keys | ca`:
//! the signer's identity, CA and keys.

use std::process::ExitCode;

use vmux_signer::provider::pkcs11::{Pkcs11Keys, TokenConfig, TokenKeyType};
use vmux_signer::provider::{pem_is_encrypted, KeyProvider, KeyType};
use vmux_signer::SignerHome;
use zeroize::Zeroizing;

use super::{open_keys, unlock_passphrase};
use crate::cli::{KeyTypeArg, KeysCommand, TokenCommand};
use crate::{passphrase, Failure};

pub(super) fn run(signer: &SignerHome, command: KeysCommand) -> Result<ExitCode, Failure> {
    match command {
        KeysCommand::Init {
            name,
            no_passphrase,
            passphrase_file,
        } => {
            if name.trim().is_empty() {
                return Err(Failure("--name must not be empty".into()));
            }
            let pass = if no_passphrase {
                None
            } else {
                Some(passphrase::get(
                    passphrase_file.as_deref(),
                    "New signer passphrase: ",
                    true,
                )?)
            };
            let (identity, ca) = signer.init(&name, pass.as_deref().map(String::as_str))?;
            println!("Signer {name:?} created; id {}", identity.id());
            if pass.is_none() {
                println!("Keys are stored UNENCRYPTED (--no-passphrase).");
            }
            println!("CA key for TrustedUserCAKeys: {}", ca.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Keygen {
            comment,
            key_type,
            passphrase_file,
            token: Some(token),
        } => {
            let kind = match key_type {
                KeyTypeArg::Ecdsa => TokenKeyType::P256,
                KeyTypeArg::Rsa => TokenKeyType::Rsa(3072),
                KeyTypeArg::Ed25519 => TokenKeyType::Ed25519,
            };
            let pass = unlock_passphrase(signer, passphrase_file.as_deref())?;
            let tokens = signer.open_tokens(pass.as_deref().map(String::as_str))?;
            let t = tokens.iter().find(|t| t.name() == token).ok_or_else(|| {
                Failure(format!(
                    "no token named {token:?}; see `vmux signer token list`"
                ))
            })?;
            let key = t.generate(kind, &comment)?;
            println!("{}", key.public.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Keygen {
            comment,
            key_type,
            passphrase_file,
            token: None,
        } => {
            let kind = match key_type {
                KeyTypeArg::Ecdsa => KeyType::Ecdsa,
                KeyTypeArg::Ed25519 => KeyType::Ed25519,
                KeyTypeArg::Rsa => KeyType::Rsa,
            };
            let key = open_keys(signer, passphrase_file.as_deref())?.generate(kind, &comment)?;
            println!("{}", key.public.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Token(TokenCommand::Add {
            module,
            slot,
            pin_file,
            name,
            passphrase_file,
        }) => {
            if !signer.state()?.encrypted {
                return Err(Failure(
                    "a token's PIN is stored only encrypted, and this signer has no passphrase (it was made with --no-passphrase)"
                        .into(),
                ));
            }
            let pass = unlock_passphrase(signer, passphrase_file.as_deref())?.unwrap_or_default();
            let pin = passphrase::get(
                pin_file.as_deref(),
                &format!("PIN of token {name}: "),
                false,
            )?;
            let keys = Pkcs11Keys::open(TokenConfig {
                name: name.clone(),
                module: module.clone(),
                slot,
                pin: pin.clone(),
            })?;
            signer.add_token(&name, &module, slot, &pin, &pass)?;
            println!(
                "Token {name:?} registered; {} keys on it:",
                keys.keys().len()
            );
            for k in keys.keys() {
                println!("{}", k.list_line());
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Token(TokenCommand::List) => {
            let tokens = signer.tokens()?;
            crate::print_list(&tokens, "No tokens registered.", |t| {
                format!(
                    "{}  {}  slot {}",
                    t.name,
                    t.module.display(),
                    t.slot.unwrap_or(0)
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Import {
            file,
            passphrase_file,
            key_passphrase_file,
        } => {
            let pem = Zeroizing::new(vmux_home::read(&file)?);
            let encrypted = pem_is_encrypted(&pem).ok_or_else(|| {
                Failure(format!("{} is not an OpenSSH private key", file.display()))
            })?;
            let key_pass = if encrypted {
                Some(match &key_passphrase_file {
                    Some(f) => passphrase::get(Some(f), "", false)?,
                    None => passphrase::get(
                        None,
                        &format!("Passphrase for {}: ", file.display()),
                        false,
                    )?,
                })
            } else {
                None
            };
            let keys = open_keys(signer, passphrase_file.as_deref())?;
            let key = keys.import(&pem, key_pass.as_deref().map(String::as_str))?;
            println!("{}", key.public.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Delete { fingerprint, yes } => {
            let keys = signer.software_keys(None)?;
            if !yes
                && !passphrase::confirm(&format!(
                    "Delete the key {fingerprint}? This cannot be undone."
                ))
            {
                return Err(Failure(
                    "not deleted (confirm on a terminal, or pass --yes)".into(),
                ));
            }
            let gone = keys.delete(&fingerprint)?;
            println!("Deleted {}", gone.list_line());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rename {
            fingerprint,
            comment,
            passphrase_file,
        } => {
            let key =
                open_keys(signer, passphrase_file.as_deref())?.rename(&fingerprint, &comment)?;
            println!("{}", key.list_line());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Keys {
            public_lines,
            passphrase_file,
        } => {
            let store = signer.software_keys(None)?;
            let mut keys = store.keys();
            let tokens = if signer.tokens()?.is_empty() {
                Vec::new()
            } else if passphrase_file.is_some() || std::env::var_os(passphrase::ENV).is_some() {
                let pass = unlock_passphrase(signer, passphrase_file.as_deref())?;
                signer.open_tokens(pass.as_deref().map(String::as_str))?
            } else {
                eprintln!(
                    "(token keys are listed with the signer's passphrase: --passphrase-file FILE)"
                );
                Vec::new()
            };
            for t in &tokens {
                if let Some(why) = t.unavailable() {
                    eprintln!("token {}: UNAVAILABLE: {why}", t.name());
                }
                keys.extend(t.keys());
            }
            let (passkeys, unknown) =
                vmux_signer::provider::passkey_keys_in(&signer.phones_path())?;
            keys.extend(passkeys);
            for name in unknown {
                eprintln!(
                    "phone {name:?}: its passkey key is listed once the signer has served the phone page with it (enrolled before its relying-party id was stored)"
                );
            }
            if keys.is_empty() {
                println!("The signer has no identities.");
                return Ok(ExitCode::FAILURE);
            }
            for k in &keys {
                if public_lines {
                    println!("{}", k.public.to_openssh()?);
                } else if store.is_unencrypted(&k.blob) {
                    println!("{} [{}, UNENCRYPTED]", k.list_line(), k.kind.as_str());
                } else {
                    println!("{} [{}]", k.list_line(), k.kind.as_str());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Ca { ca } => print_ca(signer, ca),
    }
}

/// `vmux signer ca`: the CA the running signer issues certificates with
/// (asked on its control socket); only when none runs (or `--ca` names
/// one) the CA signer.toml or `--ca` names, from the files. One line on
/// stderr says which.
fn print_ca(signer: &SignerHome, flag: Option<String>) -> Result<ExitCode, Failure> {
    use vmux_control::ControlError;
    use vmux_signer::ca::{CaChoice, CaLines};
    let running: Result<CaLines, String> =
        match vmux_control::signer::Client::new(signer.control_path()).ca() {
            Ok(ca) => Ok(ca),
            Err(ControlError::Refused(_)) => Err(
                "the running signer does not say which CA it uses (an older vmux? restart it)"
                    .to_owned(),
            ),
            Err(ControlError::NotRunning(..)) => Err("no signer runs here".to_owned()),
            Err(e) => Err(e.to_string()),
        };
    let ca = match (flag, running) {
        (None, Ok(running)) => {
            eprintln!("# the CA the running signer uses ({})", running.ca);
            running
        }
        (None, Err(why)) => {
            let config: vmux_signer::config::SignerConfig =
                vmux_home::load_toml(&signer.config_path())?;
            let choice =
                CaChoice::parse(config.ca.as_deref().unwrap_or_default()).map_err(Failure)?;
            eprintln!("# {why}: the CA signer.toml names ({})", choice.spec());
            ca_from_files(signer, &choice)?
        }
        (Some(flag), running) => {
            let choice = CaChoice::parse(&flag).map_err(Failure)?;
            match running {
                Ok(r) if r.ca != choice.spec() => eprintln!(
                    "# the CA --ca names ({}), NOT the one the running signer uses ({}): sshd trusting these lines refuses its certificates",
                    choice.spec(),
                    r.ca
                ),
                Ok(_) => eprintln!(
                    "# the CA --ca names ({}), the one the running signer uses",
                    choice.spec()
                ),
                Err(why) => eprintln!("# the CA --ca names ({}); {why}", choice.spec()),
            }
            ca_from_files(signer, &choice)?
        }
    };
    for name in &ca.missing {
        eprintln!("phone {name} is not enrolled (removed?): it is not a CA");
    }
    if ca.lines.is_empty() {
        return Err(Failure("no phone of the CA is enrolled".into()));
    }
    for line in &ca.lines {
        println!("{line}");
    }
    if !ca.sshd.is_empty() {
        eprintln!("# sshd before OpenSSH 10.3 also needs, in sshd_config:");
        for line in &ca.sshd {
            eprintln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The CA `choice` as the signer's files hold it.
fn ca_from_files(
    signer: &SignerHome,
    choice: &vmux_signer::ca::CaChoice,
) -> Result<vmux_signer::ca::CaLines, Failure> {
    let software = signer.ca_public()?;
    let (keys, _) = vmux_signer::provider::passkey_keys_in(&signer.phones_path())?;
    Ok(vmux_signer::ca::lines_of(choice, &software, |name| {
        keys.iter()
            .find(|k| k.public.comment() == name)
            .map(|k| k.public.clone())
    }))
}
