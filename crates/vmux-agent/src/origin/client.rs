//! Which clients can use a passkey key: OpenSSH's `ssh` before 10.3
//! refuses a `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` signature from
//! an agent ("incorrect signature type") and retries once, which would
//! cost two phone prompts that cannot succeed. So the agent finds the
//! requesting executable (`/proc/PID/exe`) and, when it is named `ssh`,
//! asks it its version (`EXE -V`, once per path and modification time,
//! bounded in time, off the runtime): an OpenSSH `ssh` older than 10.3 is
//! not offered passkey keys and is refused a signature with one at once.
//! `ssh-keygen` (any version), `ssh` 10.3 and later and every other client
//! (asyncssh, …) get them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The first OpenSSH release whose `ssh` accepts WebAuthn signatures from
/// an agent.
pub const FIRST_WEBAUTHN_SSH: (u32, u32) = (10, 3);
/// Longest `EXE -V` may take; past that the client is taken for an old
/// `ssh`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Executables remembered (bounded; cleared when full).
const MAX_REMEMBERED: usize = 256;

/// What a client executable can take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientKind {
    /// OpenSSH's `ssh` older than 10.3 (or an `ssh` whose version could
    /// not be read): no passkey keys.
    OldOpenSsh {
        /// What `-V` said (`OpenSSH_9.2p1`), or why it said nothing.
        version: String,
    },
    /// Anything else: passkey keys are offered.
    Capable,
}

impl ClientKind {
    /// Whether passkey keys are offered to it.
    pub fn takes_passkeys(&self) -> bool {
        matches!(self, ClientKind::Capable)
    }
}

/// One executable the agent has classified, as `vmux agent status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenClient {
    /// Its path.
    pub executable: String,
    /// What it can take.
    pub kind: ClientKind,
}

/// The classifications, by executable path and modification time.
#[derive(Default)]
pub struct ClientKinds {
    seen: Mutex<HashMap<(String, Option<SystemTime>), ClientKind>>,
}

impl ClientKinds {
    /// What the executable `exe` (as `/proc/PID/exe` names it; `None`
    /// when unknown) can take. Runs `exe -V` at most once per path and
    /// modification time, and only for an executable named `ssh`.
    pub async fn classify(&self, exe: Option<&str>) -> ClientKind {
        let Some(exe) = exe else {
            return ClientKind::Capable;
        };
        let path = exe.strip_suffix(" (deleted)").unwrap_or(exe).to_owned();
        let name = std::path::Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name != "ssh" {
            return ClientKind::Capable;
        }
        let meta_path = path.clone();
        let mtime = tokio::task::spawn_blocking(move || {
            std::fs::metadata(meta_path).and_then(|m| m.modified()).ok()
        })
        .await
        .ok()
        .flatten();
        let key = (path.clone(), mtime);
        if let Some(k) = vmux_home::sync::lock(&self.seen).get(&key) {
            return k.clone();
        }
        let kind = if mtime.is_none() {
            // Replaced or removed since it started: not run, not trusted.
            ClientKind::OldOpenSsh {
                version: "unknown (the executable is gone)".into(),
            }
        } else {
            ask_version(&path).await
        };
        tracing::info!(executable = %vmux_proto::sanitize(&path), ?kind, "client classified for passkey keys");
        let mut seen = vmux_home::sync::lock(&self.seen);
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        seen.insert(key, kind.clone());
        kind
    }

    /// The executables classified so far.
    pub fn seen(&self) -> Vec<SeenClient> {
        let mut v: Vec<SeenClient> = vmux_home::sync::lock(&self.seen)
            .iter()
            .map(|((path, _), kind)| SeenClient {
                executable: path.clone(),
                kind: kind.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.executable.cmp(&b.executable));
        v.dedup_by(|a, b| a.executable == b.executable);
        v
    }
}

/// Runs `path -V` (bounded) and reads OpenSSH's version from it.
async fn ask_version(path: &str) -> ClientKind {
    let run = tokio::process::Command::new(path)
        .arg("-V")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_clear()
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(VERSION_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return ClientKind::OldOpenSsh {
                version: format!("unknown ({e})"),
            }
        }
        Err(_) => {
            return ClientKind::OldOpenSsh {
                version: "unknown (-V did not answer within 2 s)".into(),
            }
        }
    };
    let text = String::from_utf8_lossy(if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    })
    .into_owned();
    kind_of_version(&text)
}

/// The kind of an `ssh` whose `-V` said `text`.
pub fn kind_of_version(text: &str) -> ClientKind {
    let word = text.split_whitespace().next().unwrap_or_default();
    let word: String = vmux_proto::sanitize(word).chars().take(64).collect();
    match openssh_version(text) {
        Some(v) if v >= FIRST_WEBAUTHN_SSH => ClientKind::Capable,
        Some(_) => ClientKind::OldOpenSsh {
            version: word.trim_end_matches(',').to_owned(),
        },
        None => ClientKind::OldOpenSsh {
            version: format!("unknown ({:?})", word),
        },
    }
}

/// `(major, minor)` from `OpenSSH_9.2p1 …`.
pub fn openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.trim_start().strip_prefix("OpenSSH_")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            openssh_version("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024"),
            Some((9, 2))
        );
        assert_eq!(openssh_version("OpenSSH_10.3p1, LibreSSL"), Some((10, 3)));
        assert_eq!(openssh_version("OpenSSH_10.10"), Some((10, 10)));
        assert_eq!(openssh_version("Dropbear v2022.83"), None);
        assert_eq!(
            kind_of_version("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15"),
            ClientKind::OldOpenSsh {
                version: "OpenSSH_9.2p1".into()
            }
        );
        assert!(!kind_of_version("OpenSSH_10.2p1, OpenSSL").takes_passkeys());
        assert!(kind_of_version("OpenSSH_10.3p1, OpenSSL").takes_passkeys());
        assert!(kind_of_version("OpenSSH_11.0").takes_passkeys());
        assert!(!kind_of_version("something else").takes_passkeys());
    }

    #[tokio::test]
    async fn only_an_executable_named_ssh_is_asked_and_each_once() {
        let k = ClientKinds::default();
        assert_eq!(k.classify(None).await, ClientKind::Capable);
        assert_eq!(
            k.classify(Some("/usr/bin/ssh-keygen")).await,
            ClientKind::Capable
        );
        assert_eq!(
            k.classify(Some("/usr/bin/python3")).await,
            ClientKind::Capable
        );
        // A fake `ssh` that says it is 9.2 (and counts its runs).
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("ssh");
        let runs = dir.path().join("runs");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\necho x >> {}\necho 'OpenSSH_9.2p1 Debian-2, OpenSSL 3.0' >&2\n",
                runs.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = ssh.to_str().unwrap();
        for _ in 0..3 {
            assert_eq!(
                k.classify(Some(p)).await,
                ClientKind::OldOpenSsh {
                    version: "OpenSSH_9.2p1".into()
                }
            );
        }
        assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
        assert_eq!(k.seen().len(), 1);
        // Gone: not run, not offered.
        assert!(!k
            .classify(Some("/nonexistent/ssh (deleted)"))
            .await
            .takes_passkeys());
    }
}
