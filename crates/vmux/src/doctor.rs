//! `vmux agent doctor`: the brief's troubleshooting as checks. Each
//! finding is one line that says what is wrong and how to fix it.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use vmux_control::agent::{Client, Status};

/// One finding.
pub struct Finding {
    /// `ok`, `warn` or `fail`.
    pub level: &'static str,
    /// The line.
    pub text: String,
}

fn ok(text: impl Into<String>) -> Finding {
    Finding {
        level: "ok",
        text: text.into(),
    }
}

fn warn(text: impl Into<String>) -> Finding {
    Finding {
        level: "warn",
        text: text.into(),
    }
}

fn fail(text: impl Into<String>) -> Finding {
    Finding {
        level: "fail",
        text: text.into(),
    }
}

/// Runs every check for the agent socket `socket`, with the environment's
/// `SSH_AUTH_SOCK` value `auth_sock`.
pub fn check(socket: &Path, auth_sock: Option<&str>) -> Vec<Finding> {
    let mut out = Vec::new();
    let shown = socket.display();
    match auth_sock {
        None | Some("") => out.push(fail(format!(
            "SSH_AUTH_SOCK is not set: add `export SSH_AUTH_SOCK=\"{shown}\"` to your shell's startup file (see `vmux agent env`)"
        ))),
        Some(s) if Path::new(s) != socket => {
            if s.starts_with("/tmp/ssh-") {
                out.push(warn(format!(
                    "SSH_AUTH_SOCK is {s}, a forwarded agent from an ssh -A session, not this machine's vmux agent; that is expected inside ssh -A, otherwise set it to {shown}"
                )));
            } else {
                out.push(fail(format!(
                    "SSH_AUTH_SOCK points to {s}, not the vmux agent at {shown}: set SSH_AUTH_SOCK=\"{shown}\" (see `vmux agent env`)"
                )));
            }
        }
        Some(_) => out.push(ok(format!("SSH_AUTH_SOCK points to the vmux agent ({shown})"))),
    }
    match std::fs::symlink_metadata(socket) {
        Err(_) => {
            out.push(fail(format!(
                "no agent socket at {shown}: start the agent with `vmux agent run`, or `vmux agent install` to start it at login"
            )));
            return out;
        }
        Ok(m) if !m.file_type().is_socket() => {
            out.push(fail(format!(
                "{shown} exists but is not a socket: remove it and start the agent"
            )));
            return out;
        }
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode != 0o600 {
                out.push(fail(format!(
                    "{shown} has mode {mode:o}, not 600, so other users may reach it: restart the agent (it creates the socket 0600)"
                )));
            } else {
                out.push(ok("the socket is mode 600"));
            }
        }
    }
    let status: Status = match Client::new(socket)
        .with_timeout(Duration::from_secs(5))
        .status()
        .ok()
    {
        Some(s) => s,
        None => {
            out.push(fail(format!(
                "no vmux agent answers on {shown} (a stale socket): start it with `vmux agent run`"
            )));
            return out;
        }
    };
    out.push(ok(format!("the agent {} is running", status.name)));
    if status.signers.is_empty() {
        out.push(fail(
            "no signer is paired: run `vmux agent run --signer HOST:PORT` and approve the pairing on the signer (compare the codes)",
        ));
    }
    for s in &status.signers {
        let name = s.name.clone().unwrap_or_else(|| s.address.clone());
        if s.connected {
            out.push(ok(format!("signer {name} is connected")));
        } else if let Some(code) = &s.pairing_code {
            out.push(warn(format!(
                "pairing with {name} waits for approval on the signer: check it shows the code {code}"
            )));
        } else {
            out.push(fail(format!(
                "signer {name} at {} is unreachable ({}): start `vmux signer run` there, check the network and firewall; the agent reconnects by itself",
                s.address,
                s.last_error.as_deref().unwrap_or("not connected")
            )));
        }
    }
    match status.certificate.state.as_str() {
        "valid" => out.push(ok(status.certificate.line.clone())),
        "expired" => out.push(warn(
            "the session certificate expired: connect the signer to renew it, or run `vmux agent cert`",
        )),
        _ => out.push(ok("no session certificate (signatures go to the signer)")),
    }
    if status.keys.is_empty() {
        out.push(fail("no keys are cached: create one on the signer (`vmux signer keygen`) and run `vmux agent refresh`"));
    }
    if status.keys.iter().any(|k| k.provider_kind == "passkey") {
        out.push(ok(format!(
            "{} (`ssh -V` here: {})",
            vmux_agent::control::PASSKEY_CLIENTS,
            local_ssh_version()
        )));
    }
    for a in &status.passkeys.counter_alarms {
        out.push(fail(format!(
            "the signature counter of passkey key {} went backwards ({} after {}): a cloned authenticator? Its signature was refused; check the phone, and remove it (`vmux signer phone remove`) if in doubt",
            a.key, a.received, a.stored
        )));
    }
    out.push(ok(
        "hint: if `ssh -A` hops fail with \"agent refused operation\" or \"Agent admitted failure to sign\", the bastion may have AllowAgentForwarding no in its sshd_config",
    ));
    out
}

/// `ssh -V` of the `ssh` on PATH, bounded, or why not.
fn local_ssh_version() -> String {
    let mut child = match std::process::Command::new("ssh")
        .arg("-V")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return "no ssh on PATH".into(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.by_ref().take(4096).read_to_string(&mut text);
        }
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    match vmux_agent::origin::client::kind_of_version(&text) {
        vmux_agent::origin::client::ClientKind::Capable => {
            format!("{}, which can use them", text.trim())
        }
        vmux_agent::origin::client::ClientKind::OldOpenSsh { version } => {
            format!("{version}, which cannot")
        }
    }
}
