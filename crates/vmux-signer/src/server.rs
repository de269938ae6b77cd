//! The running signer: accepts agents, opens sessions, and answers their
//! requests after checks and approval.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, info, warn};
use vmux_link::{
    open_as_signer, Channel, Identity, PairingGate, PairingRequest, Peer, SignerSession, StaticKey,
};
use vmux_proto::{
    CertRequest, CertResponse, ErrorCode, IssuedCert, KeyRecord, Message, SignRequest, SignResponse,
};

use crate::ca::{Ca, CertPolicy};

use crate::approver::{Approver, Decision, DecisionKind, Verdict};
use crate::checks::{now_ms, ReplayGuard, Window};
use crate::paired::PairedAgents;
use crate::provider::{KeyInfo, KeyProvider};

/// Silence after which an agent's link is considered dead.
const AGENT_SILENCE: Duration = Duration::from_secs(60);

/// Requests one connection may have in flight at once.
const MAX_IN_FLIGHT: usize = 64;

/// The parts a running signer is made of.
pub struct ServerParts<A> {
    /// The signer's display name.
    pub name: String,
    /// Its device identity.
    pub identity: Identity,
    /// Where its keys live.
    pub providers: Vec<Box<dyn KeyProvider>>,
    /// Who decides.
    pub approver: A,
    /// Paired agents.
    pub paired: PairedAgents,
    /// Request window.
    pub window: Window,
    /// How long the approver may take.
    pub approval_timeout: Duration,
    /// The CA, if certificates may be issued.
    pub ca: Option<Ca>,
    /// Certificate policy.
    pub cert_policy: CertPolicy,
}

/// Failed pairings tolerated per [`PAIRING_PENALTY`] before new pairings
/// are refused without asking anyone.
const MAX_PAIRING_FAILURES: usize = 5;
/// The window over which failed pairings are counted.
const PAIRING_PENALTY: Duration = Duration::from_secs(60);

/// A running signer.
pub struct Server<A> {
    parts: ServerParts<A>,
    replay: ReplayGuard,
    pairing_failures: std::sync::Mutex<std::collections::VecDeque<std::time::Instant>>,
}

impl<A: Approver + 'static> Server<A> {
    /// A signer made of `parts`.
    pub fn new(parts: ServerParts<A>) -> Server<A> {
        Server {
            parts,
            replay: ReplayGuard::new(1 << 16),
            pairing_failures: Default::default(),
        }
    }

    /// Forgets every decrypted secret: signing and certificates fail with
    /// `signerLocked` until [`Server::unlock`].
    pub fn lock(&self) {
        for p in &self.parts.providers {
            p.lock();
        }
        if let Some(ca) = &self.parts.ca {
            ca.lock();
        }
        info!("signer locked");
    }

    /// Decrypts the keys and the CA with `passphrase`.
    pub fn unlock(&self, passphrase: &str) -> Result<(), String> {
        if let Some(ca) = &self.parts.ca {
            ca.unlock(passphrase).map_err(|e| match e {
                vmux_home::HomeError::Config { message, .. } => message,
                other => other.to_string(),
            })?;
        }
        for p in &self.parts.providers {
            p.unlock(passphrase).map_err(|e| e.to_string())?;
        }
        info!("signer unlocked");
        Ok(())
    }

    /// Whether some key or the CA is locked.
    pub fn is_locked(&self) -> bool {
        self.parts.providers.iter().any(|p| p.is_locked())
            || self.parts.ca.as_ref().is_some_and(Ca::is_locked)
    }

    /// The signer's name.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// Serves agents on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.connection(stream).await {
                            info!(peer = %addr, error = %e, "agent connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) -> Result<(), vmux_link::LinkError> {
        let channel = Channel::accept(stream, &self.parts.identity).await?;
        let gate = Gate { server: &self };
        let SignerSession { channel, agent } =
            open_as_signer(channel, &self.parts.name, &gate).await?;
        info!(agent = %agent.name, id = %agent.id, "agent connected");
        if let Err(e) = self.parts.paired.touch(&agent.static_key) {
            warn!(error = %e, "cannot record last-seen time");
        }
        let Channel {
            mut reader, writer, ..
        } = channel;
        let writer = Arc::new(Mutex::new(writer));
        let agent = Arc::new(agent);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            // Agents ping every 15 s; a minute of silence is a dead link.
            let msg = reader.recv_within(AGENT_SILENCE).await?;
            match msg {
                Message::KeyListRequest => {
                    let keys = self.key_records();
                    debug!(agent = %agent.id, count = keys.len(), "sending key list");
                    writer.lock().await.send(&Message::KeyList(keys)).await?;
                }
                Message::SignRequest(req) => {
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        let resp = SignResponse {
                            request_id: req.request_id,
                            result: Err(ErrorCode::PolicyDenied),
                        };
                        warn!(agent = %agent.id, "too many requests in flight; refusing");
                        writer
                            .lock()
                            .await
                            .send(&Message::SignResponse(resp))
                            .await?;
                        continue;
                    };
                    let (me, writer, agent) = (self.clone(), writer.clone(), agent.clone());
                    tokio::spawn(async move {
                        let result = me.sign(&agent, &req).await;
                        let resp = SignResponse {
                            request_id: req.request_id,
                            result,
                        };
                        if let Err(e) = writer.lock().await.send(&Message::SignResponse(resp)).await
                        {
                            debug!(error = %e, "could not deliver a sign response");
                        }
                        drop(permit);
                    });
                }
                Message::CertRequest(req) => {
                    let (me, writer, agent) = (self.clone(), writer.clone(), agent.clone());
                    tokio::spawn(async move {
                        let result = me.certify(&agent, &req).await;
                        let resp = CertResponse {
                            request_id: req.request_id,
                            result,
                        };
                        if let Err(e) = writer.lock().await.send(&Message::CertResponse(resp)).await
                        {
                            debug!(error = %e, "could not deliver a certificate");
                        }
                    });
                }
                Message::Ping(n) => writer.lock().await.send(&Message::Pong(n)).await?,
                Message::Pong(_) => {}
                other => {
                    return Err(vmux_link::LinkError::Unexpected {
                        expected: "a request",
                        got: other.name(),
                    })
                }
            }
        }
    }

    fn all_keys(&self) -> Vec<KeyInfo> {
        self.parts.providers.iter().flat_map(|p| p.keys()).collect()
    }

    fn key_records(&self) -> Vec<KeyRecord> {
        self.all_keys()
            .into_iter()
            .map(|k| KeyRecord {
                algorithm: k.public.algorithm().as_str().to_owned(),
                comment: k.public.comment().to_owned(),
                public_key_blob: k.blob,
                provider_kind: k.kind,
                display_name: String::new(),
            })
            .collect()
    }

    /// Checks, asks, signs. Returns the signature blob or the error code.
    pub async fn sign(&self, agent: &Peer, req: &SignRequest) -> Result<Vec<u8>, ErrorCode> {
        let outcome = self.sign_inner(agent, req).await;
        match &outcome {
            Ok(_) => info!(agent = %agent.id, request = %hex(&req.request_id), "signed"),
            Err(code) => {
                info!(agent = %agent.id, request = %hex(&req.request_id), %code, "refused")
            }
        }
        outcome
    }

    async fn sign_inner(&self, agent: &Peer, req: &SignRequest) -> Result<Vec<u8>, ErrorCode> {
        if !self.parts.paired.contains(&agent.static_key) {
            return Err(ErrorCode::PairingInvalid);
        }
        let now = now_ms();
        self.parts.window.check(req, now)?;
        self.replay
            .check_and_record(&req.nonce, req.expires_at_ms, now)?;
        let key = self
            .all_keys()
            .into_iter()
            .find(|k| k.blob == req.key_blob)
            .ok_or(ErrorCode::KeyNotFound)?;
        if key.public.algorithm().is_rsa()
            && req.flags & (vmux_proto::SSH_AGENT_RSA_SHA2_256 | vmux_proto::SSH_AGENT_RSA_SHA2_512)
                == 0
        {
            // ssh-rsa (SHA-1): refused before anyone is asked.
            return Err(ErrorCode::PolicyDenied);
        }
        let decision = Decision {
            kind: Some(DecisionKind::Sign),
            source_name: agent.name.clone(),
            source_id: agent.id.clone(),
            key_fingerprint: key.fingerprint(),
            key_comment: key.public.comment().to_owned(),
            dest_host: req.context.dest_host.clone(),
            dest_user: req.context.dest_user.clone(),
            quality: req.context.quality,
            process: req.context.process.clone(),
            namespace: req.context.namespace.clone(),
            forwarded: req.context.forwarded,
            ..Decision::default()
        };
        let remaining = Duration::from_millis(req.expires_at_ms.saturating_sub(now));
        match self
            .parts
            .approver
            .decide(&decision, self.parts.approval_timeout.min(remaining))
            .await
        {
            Verdict::Approve => {}
            Verdict::Deny => return Err(ErrorCode::UserDenied),
            Verdict::TimedOut => return Err(ErrorCode::ApprovalTimeout),
        }
        if now_ms() > req.expires_at_ms {
            return Err(ErrorCode::RequestExpired);
        }
        for p in &self.parts.providers {
            match p.sign(&req.key_blob, &req.data, req.flags) {
                Ok(sig) => return Ok(sig),
                Err(crate::provider::SignError::NotFound) => continue,
                Err(e) => {
                    warn!(key = %key.fingerprint(), error = %e, "signing failed");
                    return Err(e.code());
                }
            }
        }
        Err(ErrorCode::KeyNotFound)
    }
}

impl<A: Approver + 'static> Server<A> {
    /// Checks policy, asks, and issues a session certificate.
    pub async fn certify(&self, agent: &Peer, req: &CertRequest) -> Result<IssuedCert, ErrorCode> {
        let outcome = self.certify_inner(agent, req).await;
        match &outcome {
            Ok(c) => info!(agent = %agent.id, valid_before = c.valid_before, "certificate issued"),
            Err(code) => info!(agent = %agent.id, %code, "certificate refused"),
        }
        outcome
    }

    async fn certify_inner(
        &self,
        agent: &Peer,
        req: &CertRequest,
    ) -> Result<IssuedCert, ErrorCode> {
        let p = &self.parts;
        if !p.paired.contains(&agent.static_key) {
            return Err(ErrorCode::PairingInvalid);
        }
        let ca = p.ca.as_ref().ok_or(ErrorCode::PolicyDenied)?;
        if req.automatic && !p.cert_policy.auto_issue {
            return Err(ErrorCode::PolicyDenied);
        }
        let validity = p.cert_policy.validity_for(req.validity_seconds);
        let decision = Decision {
            kind: Some(DecisionKind::Certificate),
            source_name: agent.name.clone(),
            source_id: agent.id.clone(),
            cert_validity_seconds: Some(validity),
            cert_principals: p.cert_policy.principals.clone(),
            ..Decision::default()
        };
        match p.approver.decide(&decision, p.approval_timeout).await {
            Verdict::Approve => {}
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
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The signer's [`PairingGate`]: the paired-agents file and the approver.
struct Gate<'a, A> {
    server: &'a Server<A>,
}

impl<A: Approver> PairingGate for Gate<'_, A> {
    fn is_paired(&self, agent: &StaticKey) -> bool {
        self.server.parts.paired.contains(agent)
    }

    async fn approve(&self, request: PairingRequest) -> Result<(), ErrorCode> {
        let recent = {
            let mut f = self
                .server
                .pairing_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            while f.front().is_some_and(|t| t.elapsed() > PAIRING_PENALTY) {
                f.pop_front();
            }
            f.len()
        };
        if recent >= MAX_PAIRING_FAILURES {
            warn!(agent = %request.agent.id, "too many failed pairings in the last minute; refusing without asking");
            return Err(ErrorCode::PairingInvalid);
        }
        let outcome = self.ask_pairing(&request).await;
        if outcome.is_err() {
            self.server
                .pairing_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(std::time::Instant::now());
        }
        outcome
    }
}

impl<A: Approver> Gate<'_, A> {
    async fn ask_pairing(&self, request: &PairingRequest) -> Result<(), ErrorCode> {
        let decision = Decision {
            kind: Some(DecisionKind::Pair),
            source_name: request.agent.name.clone(),
            source_id: request.agent.id.clone(),
            pairing_code: request.code.clone(),
            ..Decision::default()
        };
        info!(agent = %request.agent.name, id = %request.agent.id, code = %request.code, "pairing requested");
        match self
            .server
            .parts
            .approver
            .decide(&decision, self.server.parts.approval_timeout)
            .await
        {
            Verdict::Approve => {
                self.server
                    .parts
                    .paired
                    .add(
                        &request.agent.id,
                        &request.agent.name,
                        &request.agent.static_key,
                    )
                    .map_err(|e| {
                        warn!(error = %e, "cannot save the pairing");
                        ErrorCode::Internal
                    })?;
                info!(agent = %request.agent.name, id = %request.agent.id, "agent paired");
                Ok(())
            }
            Verdict::Deny => {
                info!(agent = %request.agent.name, id = %request.agent.id, "pairing denied");
                Err(ErrorCode::UserDenied)
            }
            Verdict::TimedOut => Err(ErrorCode::ApprovalTimeout),
        }
    }
}
