//! Approvers: the person behind the signer, asked once per decision.
//!
//! An [`Approver`] gets a [`Decision`] (what is asked, by whom, for what)
//! and answers [`Verdict::Approve`] or [`Verdict::Deny`] within a timeout;
//! silence is a denial. Each approver is one file: [`tty`] prompts on the
//! controlling terminal, [`desktop`] shows a notification with Approve /
//! Deny actions, [`command`] runs a program (exit 0 approves).

pub mod command;
pub mod desktop;
pub mod tty;

use std::time::Duration;

use vmux_proto::ContextQuality;

/// What kind of decision is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// A new agent wants to pair.
    Pair,
    /// A paired agent wants a signature.
    Sign,
    /// A paired agent wants a session certificate.
    Certificate,
}

impl DecisionKind {
    /// The value of `VMUX_REQUEST_KIND`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Pair => "pair",
            DecisionKind::Sign => "sign",
            DecisionKind::Certificate => "certificate",
        }
    }
}

/// Everything an approver is told. Strings are empty when unknown; all of
/// it except the source id is the agent's claim and is sanitised before
/// it is shown.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// The kind of request (`None` only in `Default`).
    pub kind: Option<DecisionKind>,
    /// The asking agent's name.
    pub source_name: String,
    /// The asking agent's id (from its authenticated static key).
    pub source_id: String,
    /// Fingerprint of the identity asked for.
    pub key_fingerprint: String,
    /// Comment of the identity asked for.
    pub key_comment: String,
    /// Destination host, when known.
    pub dest_host: String,
    /// Destination user, when known.
    pub dest_user: String,
    /// How sure the agent is of the destination.
    pub quality: ContextQuality,
    /// The requesting process, when known.
    pub process: String,
    /// Signature namespace (`ssh-keygen -Y`), when known.
    pub namespace: String,
    /// The request came through a forwarded agent.
    pub forwarded: bool,
    /// The 6-digit code, for `pair`.
    pub pairing_code: String,
    /// Requested certificate validity, for `certificate`.
    pub cert_validity_seconds: Option<u64>,
    /// Certificate principals, for `certificate`.
    pub cert_principals: Vec<String>,
    /// When non-zero, the approver may approve this key for this process
    /// and destination for up to this many seconds (an approval window).
    pub window_max_seconds: u64,
}

pub use vmux_proto::sanitize;

impl Decision {
    /// The value of `VMUX_REQUEST_KIND`.
    pub fn kind_str(&self) -> &'static str {
        self.kind.map(DecisionKind::as_str).unwrap_or("")
    }

    /// One human-readable line saying all of it (`VMUX_SUMMARY`).
    pub fn summary(&self) -> String {
        let source = format!(
            "{} ({})",
            sanitize(&self.source_name),
            sanitize(&self.source_id)
        );
        let mut s = match self.kind {
            Some(DecisionKind::Pair) => format!(
                "Pair new agent {source}? Code {}",
                sanitize(&self.pairing_code)
            ),
            Some(DecisionKind::Certificate) => format!(
                "Issue a session certificate to {source} for {} s, principals {}",
                self.cert_validity_seconds.unwrap_or(0),
                sanitize(&self.cert_principals.join(","))
            ),
            Some(DecisionKind::Sign) | None => format!(
                "{source} asks to sign with {} {}",
                sanitize(&self.key_comment),
                sanitize(&self.key_fingerprint)
            ),
        };
        if self.kind == Some(DecisionKind::Sign) {
            if !self.dest_host.is_empty() || !self.dest_user.is_empty() {
                let user = if self.dest_user.is_empty() {
                    String::new()
                } else {
                    format!("{}@", sanitize(&self.dest_user))
                };
                s.push_str(&format!(
                    " for {user}{} [{}]",
                    sanitize(&self.dest_host),
                    self.quality.as_str()
                ));
            }
            if !self.namespace.is_empty() {
                s.push_str(&format!(" (namespace {})", sanitize(&self.namespace)));
            }
            if !self.process.is_empty() {
                s.push_str(&format!(" from {}", sanitize(&self.process)));
            }
            if self.forwarded {
                s.push_str(" via a FORWARDED agent");
            }
        }
        s
    }
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead, this once.
    Approve,
    /// Go ahead, and let the same key, process and destination through
    /// without asking for this long (capped by policy; only offered when
    /// [`Decision::window_max_seconds`] is non-zero).
    ApproveFor(Duration),
    /// Refuse.
    Deny,
    /// No answer in time: refuse.
    TimedOut,
}

/// A way to ask the person.
pub trait Approver: Send + Sync {
    /// Asks, and waits at most `timeout` for the answer.
    fn decide(
        &self,
        decision: &Decision,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Verdict> + Send;
}

impl<A: Approver> Approver for std::sync::Arc<A> {
    async fn decide(&self, decision: &Decision, timeout: Duration) -> Verdict {
        (**self).decide(decision, timeout).await
    }
}

/// The approvers `vmux signer run --approve` can select.
pub enum AnyApprover {
    /// `tty`
    Tty(tty::TtyApprover),
    /// `command:PROGRAM`
    Command(command::CommandApprover),
    /// `desktop`
    Desktop(desktop::DesktopApprover),
    /// `allow-all`: approves everything without asking anyone, as an
    /// ssh-agent without `-c` does. For benchmarks and unattended labs; the
    /// signer warns at start and the audit log records every decision.
    AllowAll,
}

impl AnyApprover {
    /// Parses `tty` or `command:PROGRAM`.
    pub fn parse(mode: &str) -> Result<AnyApprover, String> {
        if mode == "tty" {
            Ok(AnyApprover::Tty(tty::TtyApprover::new()))
        } else if mode == "desktop" {
            Ok(AnyApprover::Desktop(desktop::DesktopApprover::new()))
        } else if mode == "allow-all" {
            tracing::warn!("--approve allow-all: every pairing, signature and certificate is approved without asking anyone");
            Ok(AnyApprover::AllowAll)
        } else if let Some(program) = mode.strip_prefix("command:") {
            if program.is_empty() {
                return Err(
                    "--approve command: needs a program, e.g. command:/usr/local/bin/approve"
                        .into(),
                );
            }
            Ok(AnyApprover::Command(command::CommandApprover::new(program)))
        } else {
            Err(format!(
                "unknown approval mode {mode:?}; use tty, desktop, command:PROGRAM or allow-all"
            ))
        }
    }
}

impl Approver for AnyApprover {
    async fn decide(&self, decision: &Decision, timeout: Duration) -> Verdict {
        match self {
            AnyApprover::Tty(a) => a.decide(decision, timeout).await,
            AnyApprover::Command(a) => a.decide(decision, timeout).await,
            AnyApprover::Desktop(a) => a.decide(decision, timeout).await,
            AnyApprover::AllowAll => Verdict::Approve,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_source_key_and_destination() {
        let d = Decision {
            kind: Some(DecisionKind::Sign),
            source_name: "laptop".into(),
            source_id: "abcd".into(),
            key_fingerprint: "SHA256:xyz".into(),
            key_comment: "work".into(),
            dest_host: "example.org".into(),
            dest_user: "git".into(),
            quality: ContextQuality::Verified,
            forwarded: true,
            ..Decision::default()
        };
        let s = d.summary();
        assert_eq!(
            s,
            "laptop (abcd) asks to sign with work SHA256:xyz for git@example.org [verified] via a FORWARDED agent"
        );
    }
}
