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
use vmux_proto::{ErrorCode, KeyRecord, Message, SignRequest, SignResponse};

use crate::approver::{Approver, Decision, DecisionKind, Verdict};
use crate::checks::{now_ms, ReplayGuard, Window};
use crate::paired::PairedAgents;
use crate::provider::{KeyInfo, KeyProvider};

/// Requests one connection may have in flight at once.
const MAX_IN_FLIGHT: usize = 64;

/// Everything a running signer needs.
pub struct Server<A> {
    name: String,
    identity: Identity,
    providers: Vec<Box<dyn KeyProvider>>,
    approver: A,
    paired: PairedAgents,
    window: Window,
    replay: ReplayGuard,
    approval_timeout: Duration,
}

impl<A: Approver + 'static> Server<A> {
    /// A signer named `name` with these parts.
    pub fn new(
        name: String,
        identity: Identity,
        providers: Vec<Box<dyn KeyProvider>>,
        approver: A,
        paired: PairedAgents,
        window: Window,
        approval_timeout: Duration,
    ) -> Server<A> {
        Server {
            name,
            identity,
            providers,
            approver,
            paired,
            window,
            replay: ReplayGuard::new(1 << 16),
            approval_timeout,
        }
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
        let channel = Channel::accept(stream, &self.identity).await?;
        let gate = Gate { server: &self };
        let SignerSession { channel, agent } = open_as_signer(channel, &self.name, &gate).await?;
        info!(agent = %agent.name, id = %agent.id, "agent connected");
        if let Err(e) = self.paired.touch(&agent.static_key) {
            warn!(error = %e, "cannot record last-seen time");
        }
        let Channel {
            mut reader, writer, ..
        } = channel;
        let writer = Arc::new(Mutex::new(writer));
        let agent = Arc::new(agent);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let msg = reader.recv().await?;
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
        self.providers.iter().flat_map(|p| p.keys()).collect()
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
        if !self.paired.contains(&agent.static_key) {
            return Err(ErrorCode::PairingInvalid);
        }
        let now = now_ms();
        self.window.check(req, now)?;
        self.replay
            .check_and_record(&req.nonce, req.expires_at_ms, now)?;
        let key = self
            .all_keys()
            .into_iter()
            .find(|k| k.blob == req.key_blob)
            .ok_or(ErrorCode::KeyNotFound)?;
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
            .approver
            .decide(&decision, self.approval_timeout.min(remaining))
            .await
        {
            Verdict::Approve => {}
            Verdict::Deny => return Err(ErrorCode::UserDenied),
            Verdict::TimedOut => return Err(ErrorCode::ApprovalTimeout),
        }
        if now_ms() > req.expires_at_ms {
            return Err(ErrorCode::RequestExpired);
        }
        for p in &self.providers {
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The signer's [`PairingGate`]: the paired-agents file and the approver.
struct Gate<'a, A> {
    server: &'a Server<A>,
}

impl<A: Approver> PairingGate for Gate<'_, A> {
    fn is_paired(&self, agent: &StaticKey) -> bool {
        self.server.paired.contains(agent)
    }

    async fn approve(&self, request: PairingRequest) -> Result<(), ErrorCode> {
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
            .approver
            .decide(&decision, self.server.approval_timeout)
            .await
        {
            Verdict::Approve => {
                self.server
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
