//! Where the signer's passphrase comes from: `--passphrase-file FILE`
//! (mode 0600), the `VMUX_SIGNER_PASSPHRASE` environment variable (for
//! unattended devices), or a prompt on the terminal.

use std::path::Path;

use zeroize::Zeroizing;

use crate::Failure;

/// The environment variable an unattended signer reads its passphrase from.
pub const ENV: &str = "VMUX_SIGNER_PASSPHRASE";

fn from_file(path: &Path) -> Result<Zeroizing<String>, Failure> {
    let mode = vmux_home::mode_of(path)?;
    if mode & 0o077 != 0 {
        return Err(Failure(format!(
            "{} is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        )));
    }
    let bytes = Zeroizing::new(vmux_home::read(path)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Failure(format!("{} is not UTF-8 text", path.display())))?;
    let pass = text.strip_suffix('\n').unwrap_or(text);
    let pass = pass.strip_suffix('\r').unwrap_or(pass);
    if pass.is_empty() {
        return Err(Failure(format!("{} is empty", path.display())));
    }
    Ok(Zeroizing::new(pass.to_owned()))
}

fn has_tty() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// The passphrase, from the file, the environment or the terminal;
/// `confirm` asks twice on a terminal (for a new passphrase).
pub fn get(file: Option<&Path>, prompt: &str, confirm: bool) -> Result<Zeroizing<String>, Failure> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Ok(p) = std::env::var(ENV) {
        if !p.is_empty() {
            return Ok(Zeroizing::new(p));
        }
    }
    if !has_tty() {
        return Err(Failure(format!(
            "the signer needs a passphrase and there is no terminal to ask on; use --passphrase-file FILE or set {ENV}"
        )));
    }
    let first = Zeroizing::new(rpassword::prompt_password(prompt)?);
    if first.is_empty() {
        return Err(Failure(
            "an empty passphrase is not allowed (use --no-passphrase on init for none)".into(),
        ));
    }
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Same passphrase again: ")?);
        if *again != *first {
            return Err(Failure("the two passphrases differ".into()));
        }
    }
    Ok(first)
}

/// Asks a yes/no question on the terminal; no terminal means no.
pub fn confirm(question: &str) -> bool {
    use std::io::{BufRead, Write};
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return false;
    };
    let Ok(mut out) = tty.try_clone() else {
        return false;
    };
    let _ = write!(out, "{question} [y/N] ");
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::BufReader::new(tty).read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}
