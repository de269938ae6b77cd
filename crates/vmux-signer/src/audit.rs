//! The audit log: one JSON line per decision, appended to `audit.jsonl`
//! (mode 0600), each line carrying the SHA-256 of the line before it, so
//! that editing or deleting a line breaks the chain at the next one.
//!
//! What it records: time, agent, kind, key, process, destination, context
//! quality, forwarded, outcome and error code. Never data to sign or
//! signatures.
//!
//! The chain has no secret: it detects edits by anyone who does not
//! rewrite every later line, and cannot tell a truncated tail from a log
//! that ended there.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vmux_home::HomeError;

use crate::approver::Decision;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Unix seconds.
    pub time: u64,
    /// `pair`, `sign` or `certificate`.
    pub kind: String,
    /// The agent's id.
    pub agent_id: String,
    /// The agent's name.
    pub agent_name: String,
    /// Key fingerprint (sign).
    #[serde(default)]
    pub key: String,
    /// Requesting process, as the agent reported it.
    #[serde(default)]
    pub process: String,
    /// Destination host name(s), as the agent names it (its claim).
    #[serde(default)]
    pub dest_host: String,
    /// The destination's host key (`SHA256:…`), when the signer verified
    /// the login is for it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_key: String,
    /// Destination user, from the data signed.
    #[serde(default)]
    pub dest_user: String,
    /// The requesting executable, as the agent reported it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub executable: String,
    /// `unknown`, `claimed` or `verified`, as the signer checked it.
    #[serde(default)]
    pub quality: String,
    /// Through a forwarded agent.
    #[serde(default)]
    pub forwarded: bool,
    /// `approved`, `approved-by-window` or `refused`.
    pub outcome: String,
    /// The error code when refused.
    #[serde(default)]
    pub error: Option<String>,
    /// SHA-256 (hex) of the previous line, or [`GENESIS`].
    pub prev: String,
}

impl Entry {
    /// An entry for `decision` with its outcome (`prev` is filled in when
    /// it is appended).
    pub fn new(decision: &Decision, outcome: &str, error: Option<vmux_proto::ErrorCode>) -> Entry {
        let source = decision.source();
        let mut e = Entry {
            time: crate::checks::now_ms() / 1000,
            kind: decision.kind_str().to_owned(),
            agent_id: source.id.clone(),
            agent_name: source.name.clone(),
            key: String::new(),
            process: String::new(),
            dest_host: String::new(),
            host_key: String::new(),
            dest_user: String::new(),
            executable: String::new(),
            quality: vmux_proto::ContextQuality::Unknown.as_str().to_owned(),
            forwarded: false,
            outcome: outcome.to_owned(),
            error: error.map(|c| c.as_str().to_owned()),
            prev: String::new(),
        };
        if let Decision::Sign(d) = decision {
            e.key = d.key_fingerprint.clone();
            e.process = d.claims.process.clone();
            e.dest_host = d.claims.dest_host.clone();
            e.host_key = d.purpose.host_key_fingerprint().to_owned();
            e.dest_user = d.purpose.user().to_owned();
            e.executable = d.claims.executable.clone();
            e.quality = d.purpose.quality().as_str().to_owned();
            e.forwarded = d.claims.forwarded;
        }
        e
    }
}

fn hash_line(line: &[u8]) -> String {
    Sha256::digest(line)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The open log.
pub struct AuditLog {
    path: PathBuf,
    last: Mutex<String>,
}

impl AuditLog {
    /// Opens (or starts) the log at `path`.
    pub fn open(path: &Path) -> Result<AuditLog, HomeError> {
        let last = match vmux_home::read_optional(path)? {
            Some(bytes) => bytes
                .split(|&b| b == b'\n')
                .rfind(|l| !l.is_empty())
                .map(hash_line)
                .unwrap_or_else(|| GENESIS.to_owned()),
            None => GENESIS.to_owned(),
        };
        Ok(AuditLog {
            path: path.to_owned(),
            last: Mutex::new(last),
        })
    }

    /// Appends one entry. Failure is logged, never fatal: the decision has
    /// been made either way.
    pub fn record(&self, mut entry: Entry) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        entry.prev = last.clone();
        let Ok(line) = serde_json::to_string(&entry) else {
            return;
        };
        let written = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        match written {
            Ok(()) => *last = hash_line(line.as_bytes()),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot append to the audit log")
            }
        }
    }
}

/// Why the chain does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A line is not a valid entry.
    #[error("line {0} is not a valid audit entry")]
    Malformed(usize),
    /// A line's `prev` does not match the line before it.
    #[error("line {0} does not follow line {prev}: a line was edited, inserted or deleted there", prev = .0 - 1)]
    Broken(usize),
    /// The first line does not start the chain.
    #[error("line 1 does not start the chain: lines were deleted from the start")]
    BadStart,
}

/// Parses every line of a log and checks the chain. Returns the entries.
pub fn verify(contents: &[u8]) -> Result<Vec<Entry>, VerifyError> {
    let mut prev = GENESIS.to_owned();
    let mut out = Vec::new();
    for (i, line) in contents.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let entry: Entry = serde_json::from_slice(line).map_err(|_| VerifyError::Malformed(n))?;
        if entry.prev != prev {
            return Err(if n == 1 {
                VerifyError::BadStart
            } else {
                VerifyError::Broken(n)
            });
        }
        prev = hash_line(line);
        out.push(entry);
    }
    Ok(out)
}

/// Parses every line without checking the chain (for display).
pub fn read(contents: &[u8]) -> Vec<Result<Entry, usize>> {
    contents
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| serde_json::from_slice(l).map_err(|_| i + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approver::{Claims, SignDecision, Source};
    use crate::purpose::Purpose;

    fn decision(n: usize) -> Decision {
        Decision::Sign(SignDecision {
            source: Source {
                name: "laptop".into(),
                id: format!("id{n}"),
            },
            key_fingerprint: "SHA256:x".into(),
            key_comment: String::new(),
            purpose: Purpose::Unknown,
            claims: Claims::default(),
            window_max_seconds: 0,
        })
    }

    #[test]
    fn chain_detects_edits_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for n in 0..3 {
            log.record(Entry::new(&decision(n), "approved", None));
        }
        // Reopening continues the chain.
        AuditLog::open(&path).unwrap().record(Entry::new(
            &decision(3),
            "refused",
            Some(vmux_proto::ErrorCode::UserDenied),
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(verify(text.as_bytes()).unwrap().len(), 4);
        assert_eq!(vmux_home::mode_of(&path).unwrap(), 0o600);
        assert!(!text.contains("data"), "no data to sign");

        let lines: Vec<&str> = text.lines().collect();
        let edited = text.replacen("id1", "id9", 1);
        assert_eq!(verify(edited.as_bytes()), Err(VerifyError::Broken(3)));
        let deleted: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert_eq!(verify(deleted.as_bytes()), Err(VerifyError::Broken(2)));
        let head_cut: String = lines[1..].iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(verify(head_cut.as_bytes()), Err(VerifyError::BadStart));
        assert_eq!(verify(b"{not json\n"), Err(VerifyError::Malformed(1)));
    }
}
