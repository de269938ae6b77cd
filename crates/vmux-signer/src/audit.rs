//! The audit log: one JSON line per decision, appended to `audit.jsonl`
//! (mode 0600) and flushed to disk (fsync) before the next, each line
//! keyed to this signer and chained to the line before it.
//!
//! What it records: time, agent, kind, key, process, destination, context
//! quality, forwarded, outcome and error code. Never data to sign or
//! signatures.
//!
//! The chain is keyed: every line carries `mac`, an HMAC-SHA256 over the
//! line (with `mac` empty) under a key derived from the signer's identity
//! secret ([`AuditKey`]), and `prev`, the `mac` of the line before it (or
//! [`GENESIS`]). Editing, inserting, reordering or deleting a line breaks
//! the chain at that line or the next, and nobody without the identity
//! secret (encrypted at rest when the signer has a passphrase) can
//! compute a chain that verifies. Deleting lines from the *end* cannot be
//! told from a log that ended there.
//!
//! A crash while appending can leave a torn last line (no newline). The
//! next [`AuditLog::open`] removes it and records that as an entry of its
//! own (kind `audit`, outcome `repaired`, with the size and SHA-256 of the
//! bytes removed), so the chain goes on and says what happened.
//!
//! `kind`, `outcome`, `quality` and `error` are enums ([`EntryKind`],
//! [`Outcome`], [`Quality`], [`Refusal`]) written as the same strings the
//! log always had. A value this vmux does not know (a newer vmux wrote
//! it) is kept as read, in an `Other` variant, not refused: the MAC is
//! checked over the entry serialized again, and `Other` serializes to
//! exactly the name read, so such a genuine line still verifies rather
//! than being reported as altered. Nothing decides on an `Other`; it is
//! only shown, sanitised. An unknown *field* is refused instead
//! (`deny_unknown_fields`): dropped, it could not be serialized again.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vmux_home::HomeError;
use vmux_link::Identity;
use zeroize::Zeroizing;

use vmux_proto::{ContextQuality, DecisionKind, ErrorCode};

use crate::approver::Decision;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A field of an entry that is one of a few names, written as that name;
/// a name this vmux does not know is kept as read (see the module's doc:
/// so that the line still verifies).
trait Word: Sized {
    /// Its name in the log.
    fn as_str(&self) -> &str;
    /// The value named `s`.
    fn from_word(s: String) -> Self;
}

/// Serde for a [`Word`]: the name as a JSON string.
macro_rules! word_serde {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(<$t>::from_word)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

/// What an entry is about (`kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A decision: `pair`, `sign` or `certificate`.
    Decision(DecisionKind),
    /// The log itself (`audit`): a repair or a restart.
    Audit,
    /// A kind this vmux does not know (kept as read: see the
    /// module's doc).
    Other(String),
}

impl Word for EntryKind {
    fn as_str(&self) -> &str {
        match self {
            EntryKind::Decision(k) => k.as_str(),
            EntryKind::Audit => "audit",
            EntryKind::Other(s) => s,
        }
    }

    fn from_word(s: String) -> Self {
        match DecisionKind::parse(&s) {
            Some(k) => EntryKind::Decision(k),
            None if s == "audit" => EntryKind::Audit,
            None => EntryKind::Other(s),
        }
    }
}

/// How it ended (`outcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `approved`: the person (or `allow-all`) approved.
    Approved,
    /// `approved-by-window`: an approval window the person opened covered
    /// it.
    ApprovedByWindow,
    /// `refused`, with the error code.
    Refused,
    /// `repaired`: a torn last line was removed (about the log).
    Repaired,
    /// `restarted`: an unkeyed log was moved aside (about the log).
    Restarted,
    /// An outcome this vmux does not know (kept as read: see the
    /// module's doc).
    Other(String),
}

impl Outcome {
    /// Every outcome this vmux writes.
    pub const KNOWN: [Outcome; 5] = [
        Outcome::Approved,
        Outcome::ApprovedByWindow,
        Outcome::Refused,
        Outcome::Repaired,
        Outcome::Restarted,
    ];
}

impl Word for Outcome {
    fn as_str(&self) -> &str {
        match self {
            Outcome::Approved => "approved",
            Outcome::ApprovedByWindow => "approved-by-window",
            Outcome::Refused => "refused",
            Outcome::Repaired => "repaired",
            Outcome::Restarted => "restarted",
            Outcome::Other(s) => s,
        }
    }

    fn from_word(s: String) -> Self {
        Outcome::KNOWN
            .into_iter()
            .find(|o| o.as_str() == s)
            .unwrap_or(Outcome::Other(s))
    }
}

/// How sure the signer was of the destination (`quality`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Quality {
    /// Written as an empty string: entries about the log have none.
    #[default]
    Absent,
    /// `unknown`, `claimed` or `verified`.
    Of(ContextQuality),
    /// A quality this vmux does not know (kept as read: see the
    /// module's doc).
    Other(String),
}

impl Word for Quality {
    fn as_str(&self) -> &str {
        match self {
            Quality::Absent => "",
            Quality::Of(q) => q.as_str(),
            Quality::Other(s) => s,
        }
    }

    fn from_word(s: String) -> Self {
        match ContextQuality::parse(&s) {
            Some(q) => Quality::Of(q),
            None if s.is_empty() => Quality::Absent,
            None => Quality::Other(s),
        }
    }
}

/// Why a decision was refused (`error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// One of the shared error codes (`userDenied`, …).
    Code(ErrorCode),
    /// A code this vmux does not know (kept as read: see the
    /// module's doc).
    Other(String),
}

impl Word for Refusal {
    fn as_str(&self) -> &str {
        match self {
            Refusal::Code(c) => c.as_str(),
            Refusal::Other(s) => s,
        }
    }

    fn from_word(s: String) -> Self {
        ErrorCode::parse(&s).map_or(Refusal::Other(s), Refusal::Code)
    }
}

word_serde!(EntryKind, Outcome, Quality, Refusal);

/// The key of the chain, derived from the signer's identity secret.
pub struct AuditKey(Zeroizing<[u8; 32]>);

impl AuditKey {
    /// The audit key of the signer whose identity is `identity`.
    pub fn from_identity(identity: &Identity) -> AuditKey {
        AuditKey(identity.derive_secret("vmux signer audit chain"))
    }

    /// The hex MAC of `entry` (its `mac` ignored).
    fn mac(&self, entry: &Entry) -> String {
        let mut bare = entry.clone();
        bare.mac = String::new();
        let json = serde_json::to_vec(&bare).unwrap_or_default();
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..])
            .expect("HMAC takes a key of any length");
        m.update(b"vmux audit v2\n");
        m.update(&json);
        hex(&m.finalize().into_bytes())
    }
}

/// One decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Unix seconds.
    pub time: u64,
    /// `pair`, `sign`, `certificate`, or `audit` (about the log itself).
    pub kind: EntryKind,
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
    pub quality: Quality,
    /// Through a forwarded agent.
    #[serde(default)]
    pub forwarded: bool,
    /// `approved`, `approved-by-window` or `refused`; `repaired` or
    /// `restarted` for entries about the log.
    pub outcome: Outcome,
    /// The error code when refused.
    #[serde(default)]
    pub error: Option<Refusal>,
    /// The phone that approved or denied, when a phone decided.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decided_by: String,
    /// What an entry about the log says.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// The `mac` of the previous line, or [`GENESIS`].
    pub prev: String,
    /// HMAC-SHA256 (hex) of this line with `mac` empty, under the
    /// [`AuditKey`].
    #[serde(default)]
    pub mac: String,
}

impl Entry {
    /// An entry for `decision` with its outcome (`prev` and `mac` are
    /// filled in when it is appended).
    pub fn new(decision: &Decision, outcome: Outcome, error: Option<ErrorCode>) -> Entry {
        let source = decision.source();
        let mut e = Entry {
            agent_id: source.id.clone(),
            agent_name: source.name.clone(),
            quality: Quality::Of(ContextQuality::Unknown),
            error: error.map(Refusal::Code),
            ..Entry::now(EntryKind::Decision(decision.kind()), outcome)
        };
        if let Decision::Sign(d) = decision {
            e.key = d.key_fingerprint.clone();
            e.process = d.claims.process.clone().unwrap_or_default();
            e.dest_host = d.claims.dest_host.clone().unwrap_or_default();
            e.host_key = d.purpose.host_key_fingerprint().to_owned();
            e.dest_user = d.purpose.user().to_owned();
            e.executable = d.claims.executable.clone().unwrap_or_default();
            e.quality = Quality::Of(d.purpose.quality());
            e.forwarded = d.claims.forwarded;
        }
        e
    }

    /// The same entry, naming the phone that decided (if any).
    pub fn decided_by(mut self, by: Option<String>) -> Entry {
        self.decided_by = by.unwrap_or_default();
        self
    }

    /// An entry about the log itself.
    fn about_the_log(outcome: Outcome, note: String) -> Entry {
        Entry {
            note,
            ..Entry::now(EntryKind::Audit, outcome)
        }
    }

    /// An entry of `kind` and `outcome` made now, every other field empty.
    fn now(kind: EntryKind, outcome: Outcome) -> Entry {
        Entry {
            time: crate::checks::now_ms() / 1000,
            kind,
            agent_id: String::new(),
            agent_name: String::new(),
            key: String::new(),
            process: String::new(),
            dest_host: String::new(),
            host_key: String::new(),
            dest_user: String::new(),
            executable: String::new(),
            quality: Quality::Absent,
            forwarded: false,
            outcome,
            error: None,
            decided_by: String::new(),
            note: String::new(),
            prev: String::new(),
            mac: String::new(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The open log.
pub struct AuditLog {
    path: PathBuf,
    key: AuditKey,
    tail: Mutex<Tail>,
}

/// The end of the log, held while one line is appended.
struct Tail {
    /// The `mac` of the last line written.
    last: String,
    /// The file, opened for appending at the first write.
    file: Option<std::fs::File>,
}

impl AuditLog {
    /// Opens (or starts) the log at `path`, keyed with `key`. A torn last
    /// line is removed and the removal recorded; a log written by an
    /// older vmux without keys is moved aside (to `audit.jsonl.unkeyed`)
    /// and a new chain starts, saying so in its first entry.
    pub fn open(path: &Path, key: AuditKey) -> Result<AuditLog, HomeError> {
        let mut contents = vmux_home::read_optional(path)?.unwrap_or_default();
        let mut notes = Vec::new();
        let first_is_unkeyed = contents
            .split(|&b| b == b'\n')
            .find(|l| !l.is_empty())
            .and_then(|l| serde_json::from_slice::<Entry>(l).ok())
            .is_some_and(|e| e.mac.is_empty());
        if first_is_unkeyed {
            let aside = path.with_extension("jsonl.unkeyed");
            std::fs::rename(path, &aside).map_err(|e| HomeError::io(path, e))?;
            notes.push((
                Outcome::Restarted,
                format!(
                    "the earlier log had no keyed chain (an older vmux wrote it); it was moved to {}",
                    aside.display()
                ),
            ));
            contents.clear();
        }
        let complete = contents
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if complete < contents.len() {
            let torn = &contents[complete..];
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| HomeError::io(path, e))?;
            f.set_len(complete as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| HomeError::io(path, e))?;
            tracing::warn!(
                path = %path.display(),
                bytes = torn.len(),
                "the audit log ended in a torn line (a crash while writing it); removed, and recorded"
            );
            notes.push((
                Outcome::Repaired,
                format!(
                    "a torn last line (the signer stopped while writing it) was removed at start: {} bytes, SHA-256 {}",
                    torn.len(),
                    hex(&Sha256::digest(torn))
                ),
            ));
            contents.truncate(complete);
        }
        let last = contents
            .split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .map(|l| match serde_json::from_slice::<Entry>(l) {
                Ok(e) => e.mac,
                // Not an entry: `--verify` names that line; go on after it.
                Err(_) => hex(&Sha256::digest(l)),
            })
            .unwrap_or_else(|| GENESIS.to_owned());
        let log = AuditLog {
            path: path.to_owned(),
            key,
            tail: Mutex::new(Tail { last, file: None }),
        };
        for (outcome, note) in notes {
            log.append(Entry::about_the_log(outcome, note))
                .map_err(|e| HomeError::io(path, e))?;
        }
        Ok(log)
    }

    /// The last `n` entries, newest first (read from the file's last
    /// 256 KiB; for display, the chain is not checked here).
    pub fn recent(&self, n: usize) -> Vec<Entry> {
        use std::io::{Read, Seek, SeekFrom};
        const TAIL: u64 = 256 * 1024;
        let mut buf = Vec::new();
        let loaded = std::fs::File::open(&self.path).and_then(|mut f| {
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
            f.take(TAIL).read_to_end(&mut buf)
        });
        if loaded.is_err() {
            return Vec::new();
        }
        read(&buf)
            .into_iter()
            .rev()
            .filter_map(Result::ok)
            .filter(|e| e.kind != EntryKind::Audit)
            .take(n)
            .collect()
    }

    /// Appends one entry. Failure is logged, never fatal: the decision has
    /// been made either way.
    pub fn record(&self, entry: Entry) {
        if let Err(e) = self.append(entry) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot append to the audit log");
        }
    }

    /// Appends one line with one write, then flushes it to disk. Lines are
    /// written in chain order under the lock; the flush runs after it, so
    /// that concurrent decisions share the disk's flushes.
    fn append(&self, mut entry: Entry) -> std::io::Result<()> {
        let synced = {
            let mut tail = vmux_home::sync::lock(&self.tail);
            entry.prev = tail.last.clone();
            entry.mac = self.key.mac(&entry);
            let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let file = match &mut tail.file {
                Some(f) => f,
                empty => empty.insert(
                    OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o600)
                        .open(&self.path)?,
                ),
            };
            let before = file.metadata()?.len();
            if let Err(e) = file.write_all(&line) {
                // Take back a partial line (a full disk), so that the next
                // one does not join it.
                let _ = file.set_len(before);
                tail.file = None;
                return Err(e);
            }
            let synced = file.try_clone()?;
            tail.last = entry.mac;
            synced
        };
        synced.sync_data()
    }
}

/// Why the chain does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A line is not a valid entry.
    #[error("line {0} is not a valid audit entry")]
    Malformed(usize),
    /// The last line has no end: the signer stopped while writing it.
    #[error("line {0} is incomplete (the signer stopped while writing it); the signer's next start repairs it")]
    Torn(usize),
    /// A line's MAC is wrong: it was altered, or not written by this
    /// signer.
    #[error("line {0} was altered, or was not written by this signer (its MAC does not match)")]
    BadMac(usize),
    /// A line's `prev` does not match the line before it.
    #[error("line {0} does not follow line {prev}: a line was edited, inserted or deleted there", prev = .0 - 1)]
    Broken(usize),
    /// The first line does not start the chain.
    #[error("line 1 does not start the chain: lines were deleted from the start")]
    BadStart,
}

/// Parses every line of a log and checks its keyed chain. Returns the
/// entries.
pub fn verify(contents: &[u8], key: &AuditKey) -> Result<Vec<Entry>, VerifyError> {
    let mut prev = GENESIS.to_owned();
    let mut out = Vec::new();
    let lines: Vec<&[u8]> = contents.split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        if i + 1 == lines.len() {
            // Bytes after the last newline.
            return Err(VerifyError::Torn(n));
        }
        let entry: Entry = serde_json::from_slice(line).map_err(|_| VerifyError::Malformed(n))?;
        if entry.mac.is_empty() || key.mac(&entry) != entry.mac {
            return Err(VerifyError::BadMac(n));
        }
        if entry.prev != prev {
            return Err(if n == 1 {
                VerifyError::BadStart
            } else {
                VerifyError::Broken(n)
            });
        }
        prev = entry.mac.clone();
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

/// One entry as `vmux signer audit` shows it: one line, every string the
/// agent supplied sanitised; `time` formats Unix seconds.
pub fn render(e: &Entry) -> String {
    use vmux_home::time::utc as time;
    use vmux_proto::sanitize;
    if e.kind == EntryKind::Audit {
        return format!(
            "{}  {:<11} {:<18} {}",
            time(e.time),
            e.kind.as_str(),
            sanitize(e.outcome.as_str()),
            sanitize(&e.note)
        );
    }
    // What was verified is the host key; a name is the agent's.
    let host = match (e.host_key.as_str(), e.dest_host.as_str()) {
        ("", h) => sanitize(h),
        (k, "") => format!("host key {}", sanitize(k)),
        (k, h) => format!(
            "host key {} (named {} by the agent)",
            sanitize(k),
            sanitize(h)
        ),
    };
    let dest = match (e.dest_user.as_str(), host.as_str()) {
        ("", "") => String::new(),
        ("", h) => format!(" → {h} [{}]", sanitize(e.quality.as_str())),
        (u, h) => format!(" → {}@{h} [{}]", sanitize(u), sanitize(e.quality.as_str())),
    };
    format!(
        "{}  {:<11} {:<18} {} {}{}{}{}{}{}",
        time(e.time),
        sanitize(e.kind.as_str()),
        sanitize(e.outcome.as_str()),
        sanitize(&e.agent_name),
        sanitize(&e.key),
        dest,
        if e.process.is_empty() {
            String::new()
        } else {
            format!(" from {}", sanitize(&e.process))
        },
        if e.forwarded { " (forwarded)" } else { "" },
        e.error
            .as_ref()
            .map(|c| format!(" ({})", sanitize(c.as_str())))
            .unwrap_or_default(),
        if e.decided_by.is_empty() {
            String::new()
        } else {
            format!(" on phone {}", sanitize(&e.decided_by))
        },
    )
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
            data: Default::default(),
        })
    }

    fn key(identity: &Identity) -> AuditKey {
        AuditKey::from_identity(identity)
    }

    /// A new log in a new directory (kept while it lives), keyed to a new
    /// identity.
    fn new_log() -> (tempfile::TempDir, PathBuf, Identity, AuditLog) {
        let (dir, path) = vmux_home::testing::temp_path("audit.jsonl");
        let id = Identity::generate();
        let log = AuditLog::open(&path, key(&id)).unwrap();
        (dir, path, id, log)
    }

    /// A log vmux wrote before these fields were enums (kind, outcome,
    /// quality and error as strings), with the test identity it was keyed
    /// with: every kind, outcome, quality and a few error codes, a repair
    /// and a restart.
    const OLD_LOG: &str = include_str!("testdata/audit.jsonl");
    const OLD_IDENTITY: &str = include_str!("testdata/audit-identity");

    #[test]
    fn a_log_written_with_string_fields_still_verifies_byte_for_byte() {
        let id = Identity::parse(Path::new("testdata"), OLD_IDENTITY.as_bytes(), None).unwrap();
        let entries = verify(OLD_LOG.as_bytes(), &key(&id)).unwrap();
        assert_eq!(entries.len(), 8);
        for (e, line) in entries.iter().zip(OLD_LOG.lines()) {
            assert_eq!(serde_json::to_string(e).unwrap(), line);
        }
        let kinds: Vec<String> = entries.iter().map(|e| e.kind.to_string()).collect();
        assert_eq!(
            kinds,
            [
                "audit",
                "sign",
                "sign",
                "sign",
                "pair",
                "certificate",
                "certificate",
                "audit"
            ]
        );
        assert_eq!(entries[1].kind, EntryKind::Decision(DecisionKind::Sign));
        assert_eq!(entries[2].outcome, Outcome::ApprovedByWindow);
        assert_eq!(entries[2].quality, Quality::Of(ContextQuality::Verified));
        assert_eq!(entries[3].error, Some(Refusal::Code(ErrorCode::UserDenied)));
        assert_eq!(entries[0].quality, Quality::Absent);
        assert_eq!(entries[7].outcome, Outcome::Repaired);
        // Nothing in it is a value this vmux does not know.
        let rendered: String = entries.iter().map(render).collect();
        for e in &entries {
            assert!(!matches!(e.kind, EntryKind::Other(_)), "{e:?}");
            assert!(!matches!(e.outcome, Outcome::Other(_)), "{e:?}");
            assert!(!matches!(e.quality, Quality::Other(_)), "{e:?}");
            assert!(!matches!(e.error, Some(Refusal::Other(_))), "{e:?}");
        }
        assert!(rendered.contains("[verified]") && rendered.contains("(userDenied)"));
    }

    #[test]
    fn each_value_serializes_to_the_string_the_log_always_had() {
        fn json<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap()
        }
        for (k, s) in [
            (EntryKind::Decision(DecisionKind::Pair), "pair"),
            (EntryKind::Decision(DecisionKind::Sign), "sign"),
            (
                EntryKind::Decision(DecisionKind::Certificate),
                "certificate",
            ),
            (EntryKind::Audit, "audit"),
        ] {
            assert_eq!(json(&k), format!("\"{s}\""));
            assert_eq!(EntryKind::from_word(s.into()), k);
        }
        let outcomes = [
            "approved",
            "approved-by-window",
            "refused",
            "repaired",
            "restarted",
        ];
        for (o, s) in Outcome::KNOWN.iter().zip(outcomes) {
            assert_eq!(json(o), format!("\"{s}\""));
            assert_eq!(&Outcome::from_word(s.into()), o);
        }
        for (q, s) in [
            (Quality::Absent, ""),
            (Quality::Of(ContextQuality::Unknown), "unknown"),
            (Quality::Of(ContextQuality::Claimed), "claimed"),
            (Quality::Of(ContextQuality::Verified), "verified"),
        ] {
            assert_eq!(json(&q), format!("\"{s}\""));
            assert_eq!(Quality::from_word(s.into()), q);
        }
        for c in ErrorCode::ALL {
            assert_eq!(json(&Refusal::Code(c)), format!("\"{}\"", c.as_str()));
            assert_eq!(Refusal::from_word(c.as_str().into()), Refusal::Code(c));
        }
        assert_eq!(json(&None::<Refusal>), "null");
    }

    /// A value a newer vmux may write is kept as it was read: the line
    /// still verifies and is shown, sanitised.
    #[test]
    fn an_unknown_value_is_kept_and_its_line_still_verifies() {
        let (_dir, path, id, log) = new_log();
        let mut e = Entry::new(&decision(0), Outcome::Refused, None);
        e.kind = EntryKind::Other("rotate\u{1b}[2J".into());
        e.outcome = Outcome::Other("quarantined".into());
        e.quality = Quality::Other("attested".into());
        e.error = Some(Refusal::Other("newCode".into()));
        log.record(e);
        let text = std::fs::read(&path).unwrap();
        let entries = verify(&text, &key(&id)).unwrap();
        assert_eq!(entries[0].kind, EntryKind::Other("rotate\u{1b}[2J".into()));
        assert_eq!(entries[0].outcome, Outcome::Other("quarantined".into()));
        assert_eq!(entries[0].error, Some(Refusal::Other("newCode".into())));
        let shown = render(&entries[0]);
        assert!(
            shown.contains("quarantined") && shown.contains("(newCode)"),
            "{shown}"
        );
        assert!(!shown.contains('\u{1b}'), "{shown}");
        // Read as literal JSON, too.
        let line = br#"{"time":1,"kind":"sign","agent_id":"a","agent_name":"b","quality":"attested","outcome":"escrowed","error":"newCode","prev":"","mac":""}"#;
        let read = read(&[&line[..], b"\n"].concat());
        let e = read[0].as_ref().unwrap();
        assert_eq!(e.outcome, Outcome::Other("escrowed".into()));
        assert_eq!(e.quality, Quality::Other("attested".into()));
    }

    #[test]
    fn chain_detects_edits_and_deletions() {
        let (_dir, path, id, log) = new_log();
        for n in 0..3 {
            log.record(Entry::new(&decision(n), Outcome::Approved, None));
        }
        // Reopening continues the chain.
        AuditLog::open(&path, key(&id)).unwrap().record(Entry::new(
            &decision(3),
            Outcome::Refused,
            Some(vmux_proto::ErrorCode::UserDenied),
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(verify(text.as_bytes(), &key(&id)).unwrap().len(), 4);
        assert_eq!(vmux_home::mode_of(&path).unwrap(), 0o600);
        assert!(!text.contains("data"), "no data to sign");

        let k = key(&id);
        let lines: Vec<&str> = text.lines().collect();
        let edited = text.replacen("id1", "id9", 1);
        assert_eq!(verify(edited.as_bytes(), &k), Err(VerifyError::BadMac(2)));
        let last_edited = text.replacen("userDenied", "approved", 1);
        assert_eq!(
            verify(last_edited.as_bytes(), &k),
            Err(VerifyError::BadMac(4))
        );
        let deleted: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert_eq!(verify(deleted.as_bytes(), &k), Err(VerifyError::Broken(2)));
        let head_cut: String = lines[1..].iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(verify(head_cut.as_bytes(), &k), Err(VerifyError::BadStart));
        assert_eq!(verify(b"{not json\n", &k), Err(VerifyError::Malformed(1)));
        // Another signer's key does not verify this log.
        assert_eq!(
            verify(text.as_bytes(), &key(&Identity::generate())),
            Err(VerifyError::BadMac(1))
        );
    }

    /// The attack on the unkeyed chain: edit a line, then recompute every
    /// later line's hash, as anyone with the disk could.
    #[test]
    fn a_rewritten_history_does_not_verify_without_the_key() {
        let (_dir, path, id, log) = new_log();
        for n in 0..3 {
            log.record(Entry::new(&decision(n), Outcome::Approved, None));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut prev = GENESIS.to_owned();
        let mut forged = String::new();
        for line in text.lines() {
            let mut e: Entry = serde_json::from_str(line).unwrap();
            e.agent_id = "someone-else".into();
            e.prev = prev;
            e.mac = hex(&Sha256::digest(line.as_bytes()));
            let l = serde_json::to_string(&e).unwrap();
            prev = e.mac.clone();
            forged.push_str(&l);
            forged.push('\n');
        }
        assert_eq!(
            verify(forged.as_bytes(), &key(&id)),
            Err(VerifyError::BadMac(1))
        );
    }

    #[test]
    fn a_torn_last_line_is_repaired_at_open_and_recorded() {
        let (_dir, path, id, log) = new_log();
        log.record(Entry::new(&decision(0), Outcome::Approved, None));
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"time":1,"kind":"sign","agent_"#).unwrap();
        drop(f);
        let torn = std::fs::read(&path).unwrap();
        assert_eq!(verify(&torn, &key(&id)), Err(VerifyError::Torn(2)));

        let log = AuditLog::open(&path, key(&id)).unwrap();
        log.record(Entry::new(&decision(1), Outcome::Approved, None));
        let entries = verify(&std::fs::read(&path).unwrap(), &key(&id)).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].kind, EntryKind::Audit);
        assert_eq!(entries[1].outcome, Outcome::Repaired);
        assert!(entries[1].note.contains("31 bytes"), "{}", entries[1].note);
        assert_eq!(entries[2].agent_id, "id1");
    }

    #[test]
    fn an_unkeyed_log_is_moved_aside_and_a_new_chain_says_so() {
        let (_dir, path) = vmux_home::testing::temp_path("audit.jsonl");
        let old = r#"{"time":1,"kind":"sign","agent_id":"a","agent_name":"b","outcome":"approved","prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let id = Identity::generate();
        drop(AuditLog::open(&path, key(&id)).unwrap());
        let entries = verify(&std::fs::read(&path).unwrap(), &key(&id)).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].outcome, Outcome::Restarted);
        assert_eq!(
            std::fs::read_to_string(path.with_extension("jsonl.unkeyed")).unwrap(),
            format!("{old}\n")
        );
    }
}
