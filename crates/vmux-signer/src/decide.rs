//! Deciding on requests: the checks before anyone is asked, approval
//! windows, the approver, the audit record, and only then the key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vmux_link::Peer;
use vmux_proto::{CertRequest, ErrorCode, IssuedCert, SignRequest};
use vmux_ssh::VerifiedLogin;

use crate::approver::{Approver, CertDecision, Claims, Decision, SignDecision, Source, Verdict};
use crate::audit::{Entry, Outcome};
use crate::checks::now_ms;
use crate::purpose::Purpose;
use crate::server::Server;

/// What an approval window covers: this agent (its authenticated id), this
/// key, a login the signer verified (host key and user), from this
/// executable; nothing wider. Made only by [`WindowKey::for_sign`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    agent: String,
    key: String,
    login: VerifiedLogin,
    executable: String,
}

impl WindowKey {
    /// A window may cover only a login whose host key the signer verified,
    /// not through a forwarded agent, from a known executable: never an
    /// SSHSIG, never unknown data.
    fn for_sign(d: &SignDecision) -> Option<WindowKey> {
        let Purpose::VerifiedLogin(login) = &d.purpose else {
            return None;
        };
        if d.claims.forwarded {
            return None;
        }
        Some(WindowKey {
            agent: d.source.id.clone(),
            key: d.key_fingerprint.clone(),
            login: login.clone(),
            executable: d.claims.executable.clone()?,
        })
    }
}

/// Approval windows: approvals a person extended to the same key,
/// executable and verified login for a while.
#[derive(Default)]
pub(crate) struct Windows {
    open: std::sync::Mutex<HashMap<WindowKey, Instant>>,
}

impl Windows {
    fn covers(&self, k: &WindowKey) -> bool {
        let mut open = vmux_home::sync::lock(&self.open);
        let now = Instant::now();
        open.retain(|_, until| *until > now);
        open.contains_key(k)
    }

    fn open_for(&self, k: WindowKey, d: Duration) {
        vmux_home::sync::lock(&self.open).insert(k, Instant::now() + d);
    }

    /// Closes every window (`vmux signer lock`).
    pub(crate) fn clear(&self) {
        vmux_home::sync::lock(&self.open).clear();
    }
}

/// How a request was approved.
enum Approval {
    Asked,
    Window,
}

impl<A: Approver + 'static> Server<A> {
    fn audit(&self, d: &Decision, result: Result<&Approval, ErrorCode>, by: Option<String>) {
        if let Some(log) = &self.parts.audit {
            let (outcome, error) = match result {
                Ok(Approval::Asked) => (Outcome::Approved, None),
                Ok(Approval::Window) => (Outcome::ApprovedByWindow, None),
                Err(code) => (Outcome::Refused, Some(code)),
            };
            log.record(Entry::new(d, outcome, error).decided_by(by));
        }
    }

    /// Asks the approver, unless the signer is or becomes locked first:
    /// `vmux signer lock` ends every decision still waiting, at once,
    /// with `signerLocked`.
    /// Also says who answered, when the approver knows (a phone's name).
    pub(crate) async fn ask(
        &self,
        d: &Decision,
        timeout: Duration,
    ) -> Result<(Verdict, Option<String>), ErrorCode> {
        let mut locked = self.locked.subscribe();
        tokio::select! {
            biased;
            _ = locked.wait_for(|l| *l) => Err(ErrorCode::SignerLocked),
            v = self.parts.approver.decide_attributed(d, timeout) => Ok(v),
        }
    }

    /// `signerLocked` if the signer is locked now.
    fn check_unlocked(&self) -> Result<(), ErrorCode> {
        if *self.locked.borrow() {
            Err(ErrorCode::SignerLocked)
        } else {
            Ok(())
        }
    }

    /// Asks the approver (or finds an open window) for `d`.
    async fn approve(
        &self,
        d: &mut SignDecision,
        timeout: Duration,
        by: &mut Option<String>,
    ) -> Result<Approval, ErrorCode> {
        let window = WindowKey::for_sign(d).filter(|_| self.parts.window_max_seconds > 0);
        if let Some(k) = &window {
            if self.windows.covers(k) {
                return Ok(Approval::Window);
            }
        }
        if window.is_some() {
            d.window_max_seconds = self.parts.window_max_seconds;
        }
        let offer = Decision::Sign(d.clone());
        d.window_max_seconds = 0;
        let (verdict, who) = self.ask(&offer, timeout).await?;
        *by = who;
        match verdict {
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
        let c = &req.context;
        let mut d = SignDecision {
            source: source(agent),
            key_fingerprint: String::new(),
            key_comment: String::new(),
            // The signer's own reading of the data, not the agent's.
            purpose: Purpose::of(&req.data, c.binding.as_ref()),
            claims: Claims {
                dest_host: c.dest_host.clone(),
                quality: c.quality,
                process: c.process.clone(),
                executable: c.executable.clone(),
                forwarded: c.forwarded,
            },
            window_max_seconds: 0,
            data: crate::approver::SignedData(req.data.clone()),
        };
        let mut by = None;
        let outcome = self.sign_inner(agent, req, &mut d, &mut by).await;
        let id: String = req.request_id.iter().map(|b| format!("{b:02x}")).collect();
        match &outcome {
            Ok(_) => info!(agent = %agent.id, request = %id, key = %d.key_fingerprint, "signed"),
            Err(code) => info!(agent = %agent.id, request = %id, %code, "refused"),
        }
        self.audit(
            &Decision::Sign(d),
            outcome.as_ref().map(|(_, how)| how).map_err(|c| *c),
            by,
        );
        outcome.map(|(sig, _)| sig)
    }

    async fn sign_inner(
        &self,
        agent: &Peer,
        req: &SignRequest,
        d: &mut SignDecision,
        by: &mut Option<String>,
    ) -> Result<(Vec<u8>, Approval), ErrorCode> {
        if !self.parts.paired.contains(&agent.static_key) {
            return Err(ErrorCode::PairingInvalid);
        }
        self.check_unlocked()?;
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
        if key.kind == vmux_proto::ProviderKind::Passkey {
            // Decided and signed on that phone, whatever `--approve` says.
            return self
                .sign_on_phone(req, d, by)
                .await
                .map(|s| (s, Approval::Asked));
        }
        if key.public.algorithm().is_rsa()
            && req.flags & (vmux_proto::SSH_AGENT_RSA_SHA2_256 | vmux_proto::SSH_AGENT_RSA_SHA2_512)
                == 0
        {
            // ssh-rsa (SHA-1): refused before anyone is asked.
            return Err(ErrorCode::PolicyDenied);
        }
        let remaining = Duration::from_millis(req.expires_at_ms.saturating_sub(now));
        let how = self
            .approve(d, self.parts.approval_timeout.min(remaining), by)
            .await?;
        if now_ms() > req.expires_at_ms {
            return Err(ErrorCode::RequestExpired);
        }
        // Locked while the person was deciding, or since: nothing signs,
        // whichever provider holds the key.
        self.check_unlocked()?;
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

    /// A request for a phone's passkey key: a card for that phone alone
    /// whose Approve is a passkey assertion over exactly `req.data` (user
    /// verification required); the verified assertion becomes the
    /// `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` signature, checked
    /// again against the key asked for before it leaves. No approval window
    /// ever covers it: the assertion is the signature.
    async fn sign_on_phone(
        &self,
        req: &SignRequest,
        d: &mut SignDecision,
        by: &mut Option<String>,
    ) -> Result<Vec<u8>, ErrorCode> {
        let Some(phones) = self.parts.phones.as_ref() else {
            warn!(key = %d.key_fingerprint, "a passkey key signs only on its phone, and this signer does not serve the phone page");
            return Err(ErrorCode::KeyNotFound);
        };
        if matches!(d.purpose, Purpose::Unknown) {
            // Only a login or an ssh-keygen signature: never data that
            // could stand for a sign-in or approval challenge of the page.
            warn!(key = %d.key_fingerprint, "a passkey key signs only SSH logins and ssh-keygen signatures; refused data that is neither, without asking the phone");
            return Err(ErrorCode::PolicyDenied);
        }
        let Some(phone) = phones.phone_of_key(&req.key_blob) else {
            info!(key = %d.key_fingerprint, "no enrolled phone holds this passkey key (removed?)");
            return Err(ErrorCode::KeyNotFound);
        };
        let now = now_ms();
        let remaining = Duration::from_millis(req.expires_at_ms.saturating_sub(now));
        let mut ask = crate::approver::phone::ask_of(&Decision::Sign(d.clone()));
        ask.title = format!("Sign with this phone's passkey ({})", ask.title);
        let ask = crate::approver::phone::passkey_card(
            ask,
            &phone.name,
            req.data.clone(),
            "approving signs with this phone's passkey",
            (
                "Signs with",
                "this phone's passkey: approving makes the signature",
            ),
        );
        info!(key = %d.key_fingerprint, phone = %phone.name, "asking the phone to sign with its passkey");
        let mut locked = self.locked.subscribe();
        let answer = tokio::select! {
            biased;
            _ = locked.wait_for(|l| *l) => return Err(ErrorCode::SignerLocked),
            a = phones.desk().ask(ask, self.parts.approval_timeout.min(remaining)) => a,
        };
        let assertion = match answer {
            vmux_phone::Answer::Approved {
                phone: who,
                signature,
                ..
            } => {
                *by = Some(who);
                signature.ok_or(ErrorCode::Internal)?
            }
            vmux_phone::Answer::Denied { phone: who } => {
                *by = Some(who);
                return Err(ErrorCode::UserDenied);
            }
            vmux_phone::Answer::TimedOut | vmux_phone::Answer::Refused => {
                return Err(ErrorCode::ApprovalTimeout)
            }
        };
        if now_ms() > req.expires_at_ms {
            return Err(ErrorCode::RequestExpired);
        }
        self.check_unlocked()?;
        let sig = vmux_webauthn::openssh::webauthn_signature(assertion.assertion(), &req.data)
            .and_then(|sig| {
                vmux_webauthn::openssh::verify_signature(
                    &req.key_blob,
                    &req.data,
                    &sig,
                    vmux_webauthn::UserVerification::Required,
                )
                .map(|_| sig)
            })
            .map_err(|e| {
                warn!(key = %d.key_fingerprint, error = %e, "the phone's assertion did not make a valid signature by this key");
                ErrorCode::Internal
            })?;
        Ok(sig)
    }

    /// Checks policy, asks, issues a session certificate, and records the
    /// decision. Certificates never use approval windows.
    pub async fn certify(&self, agent: &Peer, req: &CertRequest) -> Result<IssuedCert, ErrorCode> {
        let p = &self.parts;
        let validity = p.cert_policy.validity_for(req.validity_seconds);
        let cert = CertDecision {
            source: source(agent),
            validity_seconds: validity,
            principals: p.cert_policy.principals.clone(),
            public_key_blob: req.public_key_blob.clone(),
        };
        let d = Decision::Certificate(cert.clone());
        let mut by = None;
        let outcome = async {
            if !p.paired.contains(&agent.static_key) {
                return Err(ErrorCode::PairingInvalid);
            }
            let on_phones = !p.phone_ca.is_empty();
            let ca = if on_phones {
                None
            } else {
                Some(p.ca.as_ref().ok_or(ErrorCode::PolicyDenied)?)
            };
            if req.automatic && !p.cert_policy.auto_issue {
                return Err(ErrorCode::PolicyDenied);
            }
            if ca.is_some_and(|ca| ca.is_locked()) {
                return Err(ErrorCode::SignerLocked);
            }
            self.check_unlocked()?;
            let key_id = format!(
                "vmux agent {} ({})",
                vmux_proto::sanitize(&agent.name),
                agent.id
            );
            let Some(ca) = ca else {
                // The phone's assertion is the approval and the signature.
                return self
                    .certify_on_phones(&cert, req, &key_id, validity, &mut by)
                    .await;
            };
            let (verdict, who) = self.ask(&d, p.approval_timeout).await?;
            by = who;
            match verdict {
                Verdict::Approve | Verdict::ApproveFor(_) => {}
                Verdict::Deny => return Err(ErrorCode::UserDenied),
                Verdict::TimedOut => return Err(ErrorCode::ApprovalTimeout),
            }
            // Locked while the person was deciding: nothing is issued.
            self.check_unlocked()?;
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
            by,
        );
        match &outcome {
            Ok(c) => info!(agent = %agent.id, valid_before = c.valid_before, "certificate issued"),
            Err(code) => info!(agent = %agent.id, %code, "certificate refused"),
        }
        outcome
    }

    /// A certificate whose CA is a phone's passkey (`--ca phone:NAME,…`):
    /// for each such phone still enrolled, the certificate's to-be-signed
    /// bytes (signature key = that phone's passkey) become the challenge
    /// of a card on that phone alone. The first phone to answer decides;
    /// the other cards are withdrawn. Its assertion *is* the approval and
    /// the CA signature: it becomes the `webauthn-sk` signature appended
    /// to the certificate, which is checked before it leaves.
    async fn certify_on_phones(
        &self,
        cert: &CertDecision,
        req: &CertRequest,
        key_id: &str,
        validity: u64,
        by: &mut Option<String>,
    ) -> Result<IssuedCert, ErrorCode> {
        let p = &self.parts;
        let Some(phones) = p.phones.as_ref() else {
            warn!("the CA is a phone's passkey, and this signer does not serve the phone page (--web-listen)");
            return Err(ErrorCode::PolicyDenied);
        };
        let now = now_ms() / 1000;
        let enrolled = phones.passkey_keys();
        let mut drafts = Vec::new();
        let mut set = tokio::task::JoinSet::new();
        for name in &p.phone_ca {
            let Some((_, key)) = enrolled.iter().find(|(r, _)| &r.name == name) else {
                info!(phone = %name, "not enrolled (removed?), so not a CA");
                continue;
            };
            let draft = crate::ca::PhoneDraft::new(
                &req.public_key_blob,
                key_id,
                validity,
                &p.cert_policy,
                now,
                key,
            )?;
            let mut ask = crate::approver::phone::ask_of(&Decision::Certificate(cert.clone()));
            ask.title = format!(
                "Certificate for {}, valid {}, principals {}: sign it with this phone's passkey",
                crate::approver::sanitize(&cert.source.name),
                crate::approver::phone::duration_text(cert.validity_seconds),
                crate::approver::sanitize(&cert.principals.join(", "))
            );
            let ask = crate::approver::phone::passkey_card(
                ask,
                name,
                draft.tbs.clone(),
                "approving makes the certificate with this phone's passkey (the CA)",
                (
                    "Signed by",
                    "this phone's passkey, the CA: approving makes the certificate",
                ),
            );
            let desk = phones.desk().clone();
            let timeout = p.approval_timeout;
            let i = drafts.len();
            set.spawn(async move { (i, desk.ask(ask, timeout).await) });
            drafts.push((name.clone(), draft));
        }
        if drafts.is_empty() {
            warn!("none of the CA's phones is enrolled; no certificate");
            return Err(ErrorCode::PolicyDenied);
        }
        info!(
            phones = drafts.len(),
            "asking the CA's phones to sign a certificate"
        );
        let mut locked = self.locked.subscribe();
        let answer = loop {
            let next = tokio::select! {
                biased;
                _ = locked.wait_for(|l| *l) => return Err(ErrorCode::SignerLocked),
                n = set.join_next() => n,
            };
            match next {
                None => break None,
                Some(Ok((_, vmux_phone::Answer::TimedOut | vmux_phone::Answer::Refused))) => {}
                Some(Ok(a)) => break Some(a),
                Some(Err(e)) => warn!(error = %e, "a phone's card ended abnormally"),
            }
        };
        // The other phones' cards go away.
        set.abort_all();
        let Some((i, answer)) = answer else {
            return Err(ErrorCode::ApprovalTimeout);
        };
        let (assertion, phone) = match answer {
            vmux_phone::Answer::Approved {
                phone, signature, ..
            } => (signature.ok_or(ErrorCode::Internal)?, phone),
            vmux_phone::Answer::Denied { phone } => {
                *by = Some(phone);
                return Err(ErrorCode::UserDenied);
            }
            vmux_phone::Answer::TimedOut | vmux_phone::Answer::Refused => {
                return Err(ErrorCode::ApprovalTimeout)
            }
        };
        *by = Some(phone);
        let (name, draft) = drafts.swap_remove(i);
        self.check_unlocked()?;
        // Removed while it was deciding: no longer a CA.
        if !phones.passkey_keys().iter().any(|(r, _)| r.name == name) {
            info!(phone = %name, "removed while deciding; no certificate");
            return Err(ErrorCode::PolicyDenied);
        }
        vmux_webauthn::openssh::webauthn_signature(assertion.assertion(), &draft.tbs)
            .and_then(|sig| draft.finish(&sig))
            .map_err(|e| {
                warn!(phone = %name, error = %e, "the phone's assertion did not make a valid certificate signature by its passkey");
                ErrorCode::Internal
            })
    }
}

/// The agent as the link authenticated it.
fn source(agent: &Peer) -> Source {
    Source {
        name: agent.name.clone(),
        id: agent.id.clone(),
    }
}
