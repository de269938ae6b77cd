//! vmux's own daemons as a test or the bench starts them: the line a
//! signer prints once it listens ([`listening_addr`]), the pairing code
//! an agent prints ([`pairing_code_of`]), and its user's confirming every
//! such code on the agent's side ([`confirm_pairings`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_within, Daemon, WAIT};

/// Waits (at most [`WAIT`]) for `signer run`'s "listening on ADDR" line
/// and returns ADDR.
pub fn listening_addr(signer: &Daemon) -> String {
    let line = signer.wait_line(WAIT, |l| l.starts_with("listening on "));
    line["listening on ".len()..].to_owned()
}

/// The code in an agent's "pairing code NNNNNN: …" line.
pub fn pairing_code_of(line: &str) -> Option<String> {
    let rest = &line[line.find("pairing code ")? + "pairing code ".len()..];
    let code = rest.split(':').next()?;
    (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())).then(|| code.to_owned())
}

/// Confirms on the agent's side every pairing code `agent` prints, as
/// its user would after comparing it with the signer's: `vmux --home
/// HOME agent pair --confirm CODE` with the binary `vmux`.
pub fn confirm_pairings(agent: &Daemon, vmux: &Path, home: &Path) {
    let (vmux, home): (PathBuf, PathBuf) = (vmux.to_owned(), home.to_owned());
    agent.on_lines(
        |l| l.starts_with("vmux agent: pairing code "),
        move |l| {
            if let Some(code) = pairing_code_of(l) {
                // The pairing may be gone already (signer refused).
                let _ = run_within(
                    Command::new(&vmux).arg("--home").arg(&home).args([
                        "agent",
                        "pair",
                        "--confirm",
                        &code,
                    ]),
                    WAIT,
                );
            }
        },
    );
}
