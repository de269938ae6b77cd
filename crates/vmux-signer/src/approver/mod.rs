//! Approvers: the person behind the signer, asked once per decision.
//!
//! An [`Approver`] gets a [`Decision`] (what is asked, by whom, for what)
//! and answers [`Verdict::Approve`] or [`Verdict::Deny`] within a timeout;
//! silence is a denial. Each approver is one file: [`tty`] prompts on the
//! controlling terminal, [`desktop`] shows a notification with Approve /
//! Deny actions, [`command`] runs a program (exit 0 approves).

pub mod command;
pub mod desktop;
pub mod phone;
pub mod tty;

use std::time::Duration;

use vmux_proto::ContextQuality;

use crate::purpose::Purpose;

pub use vmux_proto::DecisionKind;

/// The agent that asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// Its display name (its claim).
    pub name: String,
    /// Its id, from its static key as the link authenticated it.
    pub id: String,
}

/// A new agent wants to pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairDecision {
    /// The agent.
    pub source: Source,
    /// The 6-digit code the agent shows too.
    pub code: String,
}

/// What the agent says about a sign request: shown as its word, never
/// trusted for a decision. `None` when the agent does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// The destination's name(s), from the workstation's known_hosts.
    pub dest_host: Option<String>,
    /// How sure the agent says it is.
    pub quality: ContextQuality,
    /// The requesting process chain.
    pub process: Option<String>,
    /// The requesting executable, as the workstation's kernel names it.
    pub executable: Option<String>,
    /// The request came through a forwarded agent.
    pub forwarded: bool,
}

/// A paired agent wants a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignDecision {
    /// The agent.
    pub source: Source,
    /// Fingerprint of the identity asked for.
    pub key_fingerprint: String,
    /// Comment of the identity asked for.
    pub key_comment: String,
    /// What the data is for, as the signer read and checked it.
    pub purpose: Purpose,
    /// What the agent says.
    pub claims: Claims,
    /// When non-zero, the approver may let this key sign the same verified
    /// login from the same executable for up to this many seconds (an
    /// approval window).
    pub window_max_seconds: u64,
    /// The exact bytes to sign: bound into a phone's approval, never
    /// shown or logged.
    pub data: SignedData,
}

/// The bytes a signature is asked for. Its `Debug` names the length only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SignedData(pub Vec<u8>);

impl std::fmt::Debug for SignedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedData({} bytes)", self.0.len())
    }
}

/// A paired agent wants a session certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDecision {
    /// The agent.
    pub source: Source,
    /// The validity it would get, seconds.
    pub validity_seconds: u64,
    /// Its principals.
    pub principals: Vec<String>,
    /// The session key it would certify (OpenSSH public-key blob).
    pub public_key_blob: Vec<u8>,
}

/// Everything an approver is told, by kind. Text from the agent is
/// sanitised before it is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new agent wants to pair.
    Pair(PairDecision),
    /// A paired agent wants a signature.
    Sign(SignDecision),
    /// A paired agent wants a session certificate.
    Certificate(CertDecision),
}

pub use vmux_proto::sanitize;

impl Decision {
    /// Its kind.
    pub fn kind(&self) -> DecisionKind {
        match self {
            Decision::Pair(_) => DecisionKind::Pair,
            Decision::Sign(_) => DecisionKind::Sign,
            Decision::Certificate(_) => DecisionKind::Certificate,
        }
    }

    /// The asking agent.
    pub fn source(&self) -> &Source {
        match self {
            Decision::Pair(d) => &d.source,
            Decision::Sign(d) => &d.source,
            Decision::Certificate(d) => &d.source,
        }
    }

    /// Whether the agent says the request came through a forwarded agent.
    pub fn forwarded(&self) -> bool {
        matches!(self, Decision::Sign(d) if d.claims.forwarded)
    }

    /// The longest approval window the approver may grant (0: none).
    pub fn window_max_seconds(&self) -> u64 {
        match self {
            Decision::Sign(d) => d.window_max_seconds,
            _ => 0,
        }
    }

    /// What an approval of this decision binds besides its kind, agent and
    /// key: the data to sign; the certified key, validity and principals;
    /// the pairing code. SSH-style strings, so no two decisions share it.
    pub fn approval_body(&self) -> Vec<u8> {
        // Bounded by the link's message size, far below 4 GiB.
        use vmux_ssh::put_string as put;
        let mut out = Vec::new();
        match self {
            Decision::Pair(p) => put(&mut out, p.code.as_bytes()),
            Decision::Sign(d) => put(&mut out, &d.data.0),
            Decision::Certificate(c) => {
                put(&mut out, &c.public_key_blob);
                put(&mut out, &c.validity_seconds.to_be_bytes());
                for p in &c.principals {
                    put(&mut out, p.as_bytes());
                }
            }
        }
        out
    }

    /// One human-readable line saying all of it (`VMUX_SUMMARY`).
    pub fn summary(&self) -> String {
        let src = self.source();
        let source = format!("{} ({})", sanitize(&src.name), sanitize(&src.id));
        match self {
            Decision::Pair(p) => format!("Pair new agent {source}? Code {}", sanitize(&p.code)),
            Decision::Certificate(c) => format!(
                "Issue a session certificate to {source} for {} s, principals {}",
                c.validity_seconds,
                sanitize(&c.principals.join(","))
            ),
            Decision::Sign(d) => d.summary(&source),
        }
    }
}

impl SignDecision {
    fn summary(&self, source: &str) -> String {
        // The forwarded mark first, where no long peer-chosen string
        // before it can push it out of sight; so is the mark of a request
        // no session binding covers, which could be forwarded unseen.
        let forwarded = if self.claims.forwarded {
            "Through a FORWARDED agent: "
        } else if self.purpose.forwarding_unknown(self.claims.forwarded) {
            "Forwarding unknown (the client did not bind its session): "
        } else {
            ""
        };
        let mut s = format!(
            "{forwarded}{source} asks to sign with {} {}",
            sanitize(&self.key_comment),
            sanitize(&self.key_fingerprint)
        );
        let named = self
            .claims
            .dest_host
            .as_deref()
            .map(|h| format!(", which the agent names {}", sanitize(h)))
            .unwrap_or_default();
        match &self.purpose {
            Purpose::VerifiedLogin(v) => s.push_str(&format!(
                " to log in as {} to host key {} [verified]{named}",
                sanitize(v.user()),
                v.host_key_fingerprint()
            )),
            Purpose::Login { user } => s.push_str(&format!(
                " to log in as {} to a host not proven [claimed]{named}",
                sanitize(user)
            )),
            Purpose::Sshsig { namespace } => s.push_str(&format!(
                " for an ssh-keygen signature (namespace {}), not a login",
                sanitize(namespace)
            )),
            Purpose::Unknown => s.push_str(
                " for data that is neither a login nor an ssh-keygen signature [unknown]",
            ),
        }
        if self.claims.quality != self.purpose.quality() {
            s.push_str(&format!(
                " (the agent says {})",
                self.claims.quality.as_str()
            ));
        }
        if let Some(p) = &self.claims.process {
            s.push_str(&format!(" from {}", sanitize(p)));
        }
        if let Some(e) = &self.claims.executable {
            s.push_str(&format!(" ({})", sanitize(e)));
        }
        s
    }
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead, this once.
    Approve,
    /// Go ahead, and let the same key, executable and verified login
    /// through without asking for this long (capped by policy; only
    /// offered when [`Decision::window_max_seconds`] is non-zero).
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

    /// Asks, and also says who answered (a phone's name), for the audit
    /// log. Approvers that know no more than "the person" keep this.
    fn decide_attributed(
        &self,
        decision: &Decision,
        timeout: Duration,
    ) -> impl std::future::Future<Output = (Verdict, Option<String>)> + Send {
        async move { (self.decide(decision, timeout).await, None) }
    }
}

impl<A: Approver> Approver for std::sync::Arc<A> {
    async fn decide(&self, decision: &Decision, timeout: Duration) -> Verdict {
        (**self).decide(decision, timeout).await
    }

    async fn decide_attributed(
        &self,
        decision: &Decision,
        timeout: Duration,
    ) -> (Verdict, Option<String>) {
        (**self).decide_attributed(decision, timeout).await
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
    /// `phone`: the phone page; a passkey assertion approves.
    Phone(phone::PhoneApprover),
}

impl AnyApprover {
    /// Parses `tty`, `desktop`, `command:PROGRAM`, `allow-all` or
    /// `phone` (which needs the phone page's desk).
    pub fn parse(
        mode: &str,
        desk: Option<std::sync::Arc<vmux_phone::Desk>>,
    ) -> Result<AnyApprover, String> {
        if mode == "phone" {
            return desk
                .map(|d| AnyApprover::Phone(phone::PhoneApprover::new(d)))
                .ok_or_else(|| {
                    "--approve phone needs the phone page: give --web-listen and --web-origin"
                        .to_owned()
                });
        }
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
                "unknown approval mode {mode:?}; use tty, desktop, phone, command:PROGRAM or allow-all"
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
            AnyApprover::Phone(a) => a.decide(decision, timeout).await,
        }
    }

    async fn decide_attributed(
        &self,
        decision: &Decision,
        timeout: Duration,
    ) -> (Verdict, Option<String>) {
        match self {
            AnyApprover::Phone(a) => a.decide_attributed(decision, timeout).await,
            other => (other.decide(decision, timeout).await, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_source_key_and_purpose_and_marks_claims() {
        let d = Decision::Sign(SignDecision {
            source: Source {
                name: "laptop".into(),
                id: "abcd".into(),
            },
            key_fingerprint: "SHA256:xyz".into(),
            key_comment: "work".into(),
            purpose: Purpose::Login { user: "git".into() },
            claims: Claims {
                dest_host: Some("example.org".into()),
                quality: ContextQuality::Verified,
                process: Some("ssh example.org".into()),
                executable: Some("/usr/bin/ssh".into()),
                forwarded: true,
            },
            window_max_seconds: 0,
            data: SignedData(b"secret".to_vec()),
        });
        assert!(!format!("{d:?}").contains("secret"));
        assert_eq!(
            d.summary(),
            "Through a FORWARDED agent: laptop (abcd) asks to sign with work SHA256:xyz to log in as git to a host not proven [claimed], which the agent names example.org (the agent says verified) from ssh example.org (/usr/bin/ssh)"
        );
        assert_eq!(d.kind(), DecisionKind::Sign);
    }
}
