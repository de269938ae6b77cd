//! `vmux signer phone add | remove` and `vmux signer phones`. The running
//! signer is the one writer of the phone book; without one, `phones`
//! reads the file and `phone remove` edits it under its lock.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use vmux_control::signer::{Client, Phone};
use vmux_control::ControlError;
use vmux_phone::PhoneBook;
use vmux_signer::SignerHome;

use crate::cli::{PhoneCommand, PhonesCommand};
use crate::Failure;

pub(super) fn run(signer: &SignerHome, command: PhonesCommand) -> Result<ExitCode, Failure> {
    let socket = Client::new(signer.control_path());
    match command {
        PhonesCommand::Phone(PhoneCommand::Add { name }) => {
            let added = match socket.phone_add(&name) {
                Ok(added) => added,
                Err(ControlError::Refused(e)) => {
                    return Err(Failure(format!("cannot add the phone: {e}")))
                }
                Err(e) => return Err(e.into()),
            };
            let link = &added.link;
            println!("{link}");
            if let Some(t) = &added.trust {
                println!("trust: {}", t.url);
            }
            let terminal = std::io::stderr().is_terminal();
            if let Some(t) = &added.trust {
                let fp = &t.fingerprint;
                if terminal {
                    print_qr(&t.url);
                    eprintln!("First, on the phone, open the trust link above within 10 minutes (it works once) and install the signer's certificate authority.");
                }
                eprintln!("The CA's SHA-256 fingerprint, to compare with the one the trust page shows:\n  {}", vmux_proto::sanitize(fp));
            }
            if terminal {
                print_qr(link);
                eprintln!("Open the link on the phone within 10 minutes and tap Create passkey. It works once.");
            }
            Ok(ExitCode::SUCCESS)
        }
        PhonesCommand::Phone(PhoneCommand::Remove { name }) => {
            match socket.phone_remove(&name) {
                Ok(_) => {}
                Err(ControlError::Refused(e)) => {
                    return Err(Failure(format!("cannot remove the phone: {e}")));
                }
                Err(ControlError::NotRunning(..)) => {
                    PhoneBook::open(signer.phones_path(), Duration::from_secs(5))
                        .and_then(|b| b.remove(&name))
                        .map_err(|e| Failure(e.to_string()))?;
                }
                Err(e) => return Err(e.into()),
            }
            println!(
                "Removed phone {}: its passkey no longer signs in or approves.",
                vmux_proto::sanitize(&name)
            );
            Ok(ExitCode::SUCCESS)
        }
        PhonesCommand::Phones => {
            let (phones, running) = match socket.phones() {
                Ok(list) => (list.phones, true),
                Err(ControlError::Refused(e)) => return Err(Failure(e)),
                Err(ControlError::NotRunning(..)) => {
                    let list = vmux_phone::book::read_phones(&signer.phones_path())?;
                    let list = list
                        .into_iter()
                        .map(|p| Phone {
                            push: p.push.len(),
                            name: p.name,
                            added_at: p.added_at,
                            last_seen: p.last_seen,
                            online: false,
                            last_push: None,
                        })
                        .collect();
                    (list, false)
                }
                Err(e) => return Err(e.into()),
            };
            let none = "No phones enrolled; add one with `vmux signer phone add --name NAME`.";
            crate::print_list(&phones, none, |p| {
                let seen = p.last_seen.map_or("never".to_owned(), vmux_home::time::utc);
                let page = match (running, p.online) {
                    (false, _) => "signer not running",
                    (true, true) => "page open",
                    (true, false) => "no page open",
                };
                format!(
                    "{}  added {}  last seen {}  {}{}",
                    vmux_proto::sanitize(&p.name),
                    vmux_home::time::utc(p.added_at),
                    seen,
                    page,
                    wake_line(p)
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `text` as a QR code on stderr.
fn print_qr(text: &str) {
    if let Ok(code) = qrcode::QrCode::new(text.as_bytes()) {
        let qr = code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build();
        eprintln!("{qr}");
    }
}

/// Whether a phone can be woken by a push, and what became of its last
/// push since the signer started.
fn wake_line(p: &Phone) -> String {
    let mut line = match p.push {
        1 => "  can be woken (1 subscription)".to_owned(),
        n if n > 0 => format!("  can be woken ({n} subscriptions)"),
        _ => "  cannot be woken (notifications off)".to_owned(),
    };
    let Some(last) = &p.last_push else {
        return line;
    };
    if let Some(sent) = last.sent_at {
        line.push_str(&format!("; last push {}", vmux_home::time::utc(sent)));
        if let Some(r) = &last.result {
            line.push_str(&format!(": {}", vmux_proto::sanitize(r)));
        }
        match last.answered_at {
            Some(a) => line.push_str(&format!("; answered {}", vmux_home::time::utc(a))),
            None => line.push_str("; not answered yet"),
        }
    } else if let Some(r) = &last.result {
        line.push_str(&format!("; {}", vmux_proto::sanitize(r)));
    }
    line
}
