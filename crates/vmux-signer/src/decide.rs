//! Deciding on requests: the checks before anyone is asked, approval
//! windows, the approver, the audit record, and only then the key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vmux_link::Peer;
use vmux_proto::{CertRequest, ContextQuality, ErrorCode, IssuedCert, SignRequest};

use crate::approver::{Approver, Decision, DecisionKind, Verdict};
use crate::audit::Entry;
use crate::checks::now_ms;
use crate::server::Server;

/// What an approval window covers: this agent, key, process and
/// destination, nothing wider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    agent: String,
    key: String,
    process: String,
    dest_host: String,
    dest_user: String,
}

/// Approval windows: approvals a person extended to the same key, process
/// and verified destination for a while.
#[derive(Default)]
pub(crate) struct Windows {
    open: std::sync::Mutex<HashMap<WindowKey, Instant>>,
}

impl Windows {
    /// A window may cover only a signature whose destination was verified,
    /// not through a forwarded agent, from a known process.
    fn key_for(d: &Decision) -> Option<WindowKey> {
        let eligible = d.kind == Some(DecisionKind::Sign)
            && !d.forwarded
            && d.quality == ContextQuality::Verified
            && !d.dest_host.is_empty()
            && !d.process.is_empty();
        eligible.then(|| WindowKey {
            agent: d.source_id.clone(),
            key: d.key_fingerprint.clone(),
            process: d.process.clone(),
            dest_host: d.dest_host.clone(),
            dest_user: d.dest_user.clone(),
        })
    }

    fn covers(&self, k: &WindowKey) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        open.retain(|_, until| *until > now);
        open.contains_key(k)
    }

    fn open_for(&self, k: WindowKey, d: Duration) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, Instant::now() + d);
    }

    /// Closes every window (`vmux signer lock`).
    pub(crate) fn clear(&self) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// How a request was approved.
enum Approval {
    Asked,
    Window,
}

impl<A: Approver + 'static> Server<A> {
    fn audit(&self, d: &Decision, result: Result<&Approval, ErrorCode>) {
        if let Some(log) = &self.parts.audit {
            let (outcome, error) = match result {
                Ok(Approval::Asked) => ("approved", None),
                Ok(Approval::Window) => ("approved-by-window", None),
                Err(code) => ("refused", Some(code)),
            };
            log.record(Entry::new(d, outcome, error));
        }
    }

    /// Asks the approver (or finds an open window) for `d`.
    async fn approve(&self, d: &Decision, timeout: Duration) -> Result<Approval, ErrorCode> {
        let window = Windows::key_for(d).filter(|_| self.parts.window_max_seconds > 0);
        if let Some(k) = &window {
            if self.windows.covers(k) {
                return Ok(Approval::Window);
            }
        }
        let offer = Decision {
            window_max_seconds: if window.is_some() {
                self.parts.window_max_seconds
            } else {
                0
            },
            ..d.clone()
        };
        match self.parts.approver.decide(&offer, timeout).await {
            Verdict::Approve => Ok(Approval::Asked),
            Verdict::ApproveFor(t) => {
                if let Some(k) = window {
                    let t = t.min(Duration::from_secs(self.parts.window_max_seconds));
                    info!(key = %d.key_fingerprint, seconds = t.as_secs(), "approval window opened");
                    self.windows.open_for(k, t);
                }
                Ok(Approval::Asked)
            }
            Verdict::Deny => Err(ErrorCode::UserDenied),
            Verdict::TimedOut => Err(ErrorCode::ApprovalTimeout),
        }
    }

    /// Checks, asks (or finds a window), signs, and records the decision.
    /// Returns the signature blob or the error code.
    pub async fn sign(&self, agent: &Peer, req: &SignRequest) -> Result<Vec<u8>, ErrorCode> {
        let mut d = Decision {
            kind: Some(DecisionKind::Sign),
            source_name: agent.name.clone(),
            source_id: agent.id.clone(),
            dest_host: req.context.dest_host.clone(),
            dest_user: req.context.dest_user.clone(),
            quality: req.context.quality,
            process: req.context.process.clone(),
            namespace: req.context.namespace.clone(),
            forwarded: req.context.forwarded,
            ..Decision::default()
        };
        let outcome = self.sign_inner(agent, req, &mut d).await;
        self.audit(&d, outcome.as_ref().map(|(_, how)| how).map_err(|c| *c));
        let id: String = req.request_id.iter().map(|b| format!("{b:02x}")).collect();
        match &outcome {
            Ok(_) => info!(agent = %agent.id, request = %id, key = %d.key_fingerprint, "signed"),
            Err(code) => info!(agent = %agent.id, request = %id, %code, "refused"),
        }
        outcome.map(|(sig, _)| sig)
    }

    async fn sign_inner(
        &self,
        agent: &Peer,
        req: &SignRequest,
        d: &mut Decision,
    ) -> Result<(Vec<u8>, Approval), ErrorCode> {
        if !self.parts.paired.contains(&agent.static_key) {
            return Err(ErrorCode::PairingInvalid);
        }
        if self.locked.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ErrorCode::SignerLocked);
        }
        let now = now_ms();
        self.parts.freshness.check(req, now)?;
        self.replay
            .check_and_record(&req.nonce, req.expires_at_ms, now)?;
        let key = self
            .all_keys()
            .into_iter()
            .find(|k| k.blob == req.key_blob)
            .ok_or(ErrorCode::KeyNotFound)?;
        d.key_fingerprint = key.fingerprint();
        d.key_comment = key.public.comment().to_owned();
        if key.public.algorithm().is_rsa()
            && req.flags & (vmux_proto::SSH_AGENT_RSA_SHA2_256 | vmux_proto::SSH_AGENT_RSA_SHA2_512)
                == 0
        {
            // ssh-rsa (SHA-1): refused before anyone is asked.
            return Err(ErrorCode::PolicyDenied);
        }
        let remaining = Duration::from_millis(req.expires_at_ms.saturating_sub(now));
        let how = self
            .approve(d, self.parts.approval_timeout.min(remaining))
            .await?;
        if now_ms() > req.expires_at_ms {
            return Err(ErrorCode::RequestExpired);
        }
        for p in &self.parts.providers {
            match p.sign(&req.key_blob, &req.data, req.flags) {
                Ok(sig) => return Ok((sig, how)),
                Err(crate::provider::SignError::NotFound) => continue,
                Err(e) => {
                    warn!(key = %d.key_fingerprint, error = %e, "signing failed");
                    return Err(e.code());
                }
            }
        }
        Err(ErrorCode::KeyNotFound)
    }

    /// Checks policy, asks, issues a session certificate, and records the
    /// decision. Certificates never use approval windows.
    pub async fn certify(&self, agent: &Peer, req: &CertRequest) -> Result<IssuedCert, ErrorCode> {
        let p = &self.parts;
        let validity = p.cert_policy.validity_for(req.validity_seconds);
        let d = Decision {
            kind: Some(DecisionKind::Certificate),
            source_name: agent.name.clone(),
            source_id: agent.id.clone(),
            cert_validity_seconds: Some(validity),
            cert_principals: p.cert_policy.principals.clone(),
            ..Decision::default()
        };
        let outcome = async {
            if !p.paired.contains(&agent.static_key) {
                return Err(ErrorCode::PairingInvalid);
            }
            let ca = p.ca.as_ref().ok_or(ErrorCode::PolicyDenied)?;
            if req.automatic && !p.cert_policy.auto_issue {
                return Err(ErrorCode::PolicyDenied);
            }
            if ca.is_locked() || self.locked.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ErrorCode::SignerLocked);
            }
            match p.approver.decide(&d, p.approval_timeout).await {
                Verdict::Approve | Verdict::ApproveFor(_) => {}
                Verdict::Deny => return Err(ErrorCode::UserDenied),
                Verdict::TimedOut => return Err(ErrorCode::ApprovalTimeout),
            }
            let key_id = format!(
                "vmux agent {} ({})",
                vmux_proto::sanitize(&agent.name),
                agent.id
            );
            ca.issue(
                &req.public_key_blob,
                &key_id,
                validity,
                &p.cert_policy,
                now_ms() / 1000,
            )
        }
        .await;
        self.audit(
            &d,
            outcome.as_ref().map(|_| &Approval::Asked).map_err(|c| *c),
        );
        match &outcome {
            Ok(c) => info!(agent = %agent.id, valid_before = c.valid_before, "certificate issued"),
            Err(code) => info!(agent = %agent.id, %code, "certificate refused"),
        }
        outcome
    }
}
