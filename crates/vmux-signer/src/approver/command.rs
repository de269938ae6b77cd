//! `--approve command:PROGRAM`: runs PROGRAM once per decision with the
//! `VMUX_*` environment of DESIGN.md; exit status 0 approves.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use vmux_proto::ContextQuality;

use super::{sanitize, Approver, Decision, SignDecision, Verdict};

/// Runs a program per decision.
pub struct CommandApprover {
    program: String,
}

impl CommandApprover {
    /// An approver that runs `program` (a path or a name on `PATH`).
    pub fn new(program: &str) -> CommandApprover {
        CommandApprover {
            program: program.to_owned(),
        }
    }

    fn command(&self, d: &Decision) -> Command {
        let mut c = Command::new(&self.program);
        let src = d.source();
        c.env("VMUX_REQUEST_KIND", d.kind().as_str())
            .env("VMUX_SOURCE_NAME", sanitize(&src.name))
            .env("VMUX_SOURCE_ID", sanitize(&src.id))
            .env("VMUX_SUMMARY", d.summary())
            .env(
                "VMUX_APPROVAL_WINDOW_MAX",
                d.window_max_seconds().to_string(),
            );
        // Every variable is set, empty when it does not apply.
        let sign = match d {
            Decision::Sign(s) => Some(s),
            _ => None,
        };
        let of_sign = |f: fn(&SignDecision) -> String| sign.map(f).unwrap_or_default();
        let claim = |c: &Option<String>| c.as_deref().map(sanitize).unwrap_or_default();
        let (code, validity, principals) = match d {
            Decision::Pair(p) => (sanitize(&p.code), String::new(), String::new()),
            Decision::Certificate(cd) => (
                String::new(),
                cd.validity_seconds.to_string(),
                sanitize(&cd.principals.join(",")),
            ),
            Decision::Sign(_) => Default::default(),
        };
        let quality = sign.map_or(ContextQuality::Unknown, |s| s.purpose.quality());
        let forwarded = sign.is_some_and(|s| s.claims.forwarded);
        c.env(
            "VMUX_KEY_FINGERPRINT",
            of_sign(|s| s.key_fingerprint.clone()),
        )
        .env("VMUX_KEY_COMMENT", of_sign(|s| sanitize(&s.key_comment)))
        .env(
            "VMUX_DEST_HOST",
            sign.map(|s| claim(&s.claims.dest_host)).unwrap_or_default(),
        )
        .env(
            "VMUX_DEST_HOST_KEY",
            of_sign(|s| s.purpose.host_key_fingerprint().to_owned()),
        )
        .env("VMUX_DEST_USER", of_sign(|s| sanitize(s.purpose.user())))
        .env("VMUX_CONTEXT_QUALITY", quality.as_str())
        .env(
            "VMUX_PROCESS",
            sign.map(|s| claim(&s.claims.process)).unwrap_or_default(),
        )
        .env(
            "VMUX_EXECUTABLE",
            sign.map(|s| claim(&s.claims.executable))
                .unwrap_or_default(),
        )
        .env(
            "VMUX_NAMESPACE",
            of_sign(|s| sanitize(s.purpose.namespace())),
        )
        .env("VMUX_FORWARDED", if forwarded { "1" } else { "0" })
        // `0` with `none` here: forwarding unknown (see
        // `Purpose::forwarding_unknown`).
        .env("VMUX_BINDING", of_sign(|s| s.purpose.binding().to_owned()))
        .env("VMUX_PAIRING_CODE", code)
        .env("VMUX_CERT_VALIDITY_SECONDS", validity)
        .env("VMUX_CERT_PRINCIPALS", principals)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
        c
    }
}

/// Reads at most 4 KiB of the program's stdout and finds
/// `VMUX_APPROVE_FOR=SECONDS`.
async fn approve_for(stdout: Option<tokio::process::ChildStdout>) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    stdout?.take(4096).read_to_end(&mut out).await.ok()?;
    String::from_utf8_lossy(&out).lines().find_map(|l| {
        l.trim()
            .strip_prefix("VMUX_APPROVE_FOR=")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .map(Duration::from_secs)
    })
}

impl Approver for CommandApprover {
    async fn decide(&self, decision: &Decision, timeout: Duration) -> Verdict {
        if timeout.is_zero() {
            // The request expired before its turn: nobody is asked.
            return Verdict::TimedOut;
        }
        let mut child = match self.command(decision).spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(program = %self.program, error = %e, "cannot run the approval command; denying");
                return Verdict::Deny;
            }
        };
        let stdout = child.stdout.take();
        let finished = async {
            let (status, window) = tokio::join!(child.wait(), approve_for(stdout));
            status.map(|s| (s, window))
        };
        match tokio::time::timeout(timeout, finished).await {
            Ok(Ok((status, Some(window))))
                if status.success() && decision.window_max_seconds() > 0 =>
            {
                Verdict::ApproveFor(window)
            }
            Ok(Ok((status, _))) if status.success() => Verdict::Approve,
            Ok(Ok((status, _))) => {
                tracing::debug!(%status, "approval command denied");
                Verdict::Deny
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "waiting for the approval command failed; denying");
                Verdict::Deny
            }
            Err(_) => {
                let _ = child.kill().await;
                Verdict::TimedOut
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Claims, SignDecision, Source};
    use super::*;
    use crate::purpose::Purpose;

    fn env(d: &Decision) -> std::collections::HashMap<String, String> {
        CommandApprover::new("approve")
            .command(d)
            .as_std()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect()
    }

    fn sign(purpose: Purpose, forwarded: bool) -> Decision {
        Decision::Sign(SignDecision {
            source: Source {
                name: "laptop".into(),
                id: "abcd".into(),
            },
            key_fingerprint: "SHA256:xyz".into(),
            key_comment: "work".into(),
            purpose,
            claims: Claims {
                forwarded,
                ..Claims::default()
            },
            window_max_seconds: 0,
            data: Default::default(),
        })
    }

    #[test]
    fn a_request_no_binding_covers_is_marked_forwarding_unknown() {
        // A login from a client that never sent session-bind.
        let e = env(&sign(Purpose::Login { user: "git".into() }, false));
        assert_eq!(
            (e["VMUX_FORWARDED"].as_str(), e["VMUX_BINDING"].as_str()),
            ("0", "none")
        );
        assert!(
            e["VMUX_SUMMARY"].starts_with(
                "Forwarding unknown (the client did not bind its session): laptop (abcd) asks"
            ),
            "{}",
            e["VMUX_SUMMARY"]
        );
        // An ssh-keygen signature binds no session either.
        let sshsig = Purpose::Sshsig {
            namespace: "git".into(),
        };
        let e = env(&sign(sshsig.clone(), false));
        assert_eq!(e["VMUX_BINDING"], "none");
        assert!(e["VMUX_SUMMARY"].starts_with("Forwarding unknown"));
        // Forwarded is known, and says so instead.
        let e = env(&sign(sshsig, true));
        assert_eq!(
            (e["VMUX_FORWARDED"].as_str(), e["VMUX_BINDING"].as_str()),
            ("1", "none")
        );
        assert!(e["VMUX_SUMMARY"].starts_with("Through a FORWARDED agent: "));
        assert!(!e["VMUX_SUMMARY"].contains("Forwarding unknown"));
        // A login the signer verified: bound, no mark.
        let host = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
        let sig: ssh_key::Signature = signature::Signer::try_sign(&host, b"sid").unwrap();
        let proof = vmux_proto::BindingProof {
            host_key: host.public_key().to_bytes().unwrap(),
            session_id: b"sid".to_vec(),
            signature: Vec::<u8>::try_from(sig).unwrap(),
        };
        let login = vmux_ssh::testing::userauth(b"sid", "git", None);
        let e = env(&sign(Purpose::of(&login, Some(&proof)), false));
        assert_eq!(
            (e["VMUX_FORWARDED"].as_str(), e["VMUX_BINDING"].as_str()),
            ("0", "verified")
        );
        assert!(
            e["VMUX_SUMMARY"].starts_with("laptop (abcd) asks"),
            "{}",
            e["VMUX_SUMMARY"]
        );
        // Not a signature: set, and empty.
        let e = env(&Decision::Pair(super::super::PairDecision {
            source: Source::default(),
            code: "123456".into(),
        }));
        assert_eq!(e["VMUX_BINDING"], "");
    }
}
