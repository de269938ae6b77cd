//! `vmux signer audit [--verify]`: shows the audit log; `--verify` checks
//! its keyed chain with the key derived from the signer's identity.

use std::process::ExitCode;

use vmux_signer::audit;
use vmux_signer::SignerHome;

use super::unlock_passphrase;
use crate::cli::AuditCommand;
use crate::Failure;

pub(super) fn run(signer: &SignerHome, command: AuditCommand) -> Result<ExitCode, Failure> {
    match command {
        AuditCommand::Audit {
            verify,
            since,
            passphrase_file,
        } => {
            let contents = vmux_home::read_optional(&signer.audit_path())?.unwrap_or_default();
            let since = since
                .as_deref()
                .map(|s| {
                    vmux_home::time::parse_since(s).ok_or_else(|| {
                        Failure(format!(
                            "--since {s:?}: use Unix seconds, YYYY-MM-DD, or a duration like 90m, 2h, 3d"
                        ))
                    })
                })
                .transpose()?;
            let show = |e: &audit::Entry| {
                if since.is_none_or(|s| e.time >= s) {
                    println!("{}", audit::render(e));
                }
            };
            if verify {
                let pass = unlock_passphrase(signer, passphrase_file.as_deref())?;
                let key = signer.audit_key(pass.as_deref().map(String::as_str))?;
                let entries = audit::verify(&contents, &key)
                    .map_err(|e| Failure(format!("the audit log does not verify: {e}")))?;
                entries.iter().for_each(show);
                println!(
                    "Audit log verified: {} entries, chain intact.",
                    entries.len()
                );
            } else {
                for e in audit::read(&contents) {
                    match e {
                        Ok(e) => show(&e),
                        Err(line) => println!("(line {line} is not a valid entry)"),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
