//! The running signer: accepts agents, opens sessions, and answers their
//! requests after checks and approval.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, info, warn};
use vmux_link::{open_as_signer, Channel, ChannelWriter, Identity, SignerSession};
use vmux_proto::{CertResponse, ErrorCode, KeyRecord, Message, SignResponse};

use crate::audit::AuditLog;
use crate::ca::{Ca, CertPolicy};
use crate::decide::{Gate, Windows};

use crate::approver::Approver;
use crate::checks::{ReplayGuard, Window};
use crate::paired::PairedAgents;
use crate::provider::{KeyInfo, KeyProvider};

/// Silence after which an agent's link is considered dead.
const AGENT_SILENCE: Duration = Duration::from_secs(60);

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
    /// Longest approval window a person may grant, seconds (0: none).
    pub window_max_seconds: u64,
    /// Where decisions are recorded.
    pub audit: Option<AuditLog>,
    /// How agents can wake this signer, told to each on connecting.
    pub wake: vmux_proto::WakeEndpoint,
}

/// A running signer.
pub struct Server<A> {
    pub(crate) parts: ServerParts<A>,
    pub(crate) replay: ReplayGuard,
    pub(crate) pairing_failures: std::sync::Mutex<std::collections::VecDeque<std::time::Instant>>,
    pub(crate) windows: Windows,
    /// Set by `vmux signer lock`, cleared by `unlock`: nothing is signed
    /// or certified in between, encrypted keys or not. Decisions waiting
    /// for a person watch it and end when it is set.
    pub(crate) locked: tokio::sync::watch::Sender<bool>,
}

impl<A: Approver + 'static> Server<A> {
    /// A signer made of `parts`.
    pub fn new(parts: ServerParts<A>) -> Server<A> {
        Server {
            parts,
            replay: ReplayGuard::new(1 << 18),
            pairing_failures: Default::default(),
            windows: Windows::default(),
            locked: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Forgets every decrypted secret: signing and certificates fail with
    /// `signerLocked` until [`Server::unlock`]. Every decision still
    /// waiting for a person ends at once with `signerLocked` (its client
    /// is told so), and nothing approved before is signed after.
    pub fn lock(&self) {
        self.locked.send_replace(true);
        for p in &self.parts.providers {
            p.lock();
        }
        if let Some(ca) = &self.parts.ca {
            ca.lock();
        }
        self.windows.clear();
        info!("signer locked; pending decisions cancelled, approval windows closed");
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
        self.locked.send_replace(false);
        info!("signer unlocked");
        Ok(())
    }

    /// Whether some key or the CA is locked.
    pub fn is_locked(&self) -> bool {
        *self.locked.borrow()
            || self.parts.providers.iter().any(|p| p.is_locked())
            || self.parts.ca.as_ref().is_some_and(Ca::is_locked)
    }

    /// The signer's name.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// The signer's device id.
    pub fn id(&self) -> String {
        self.parts.identity.id()
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
            mut reader,
            mut writer,
            ..
        } = channel;
        writer
            .send(&Message::WakeEndpoint(self.parts.wake.clone()))
            .await?;
        let writer = Arc::new(Mutex::new(writer));
        let agent = Arc::new(agent);
        let in_flight = Arc::new(Semaphore::new(vmux_proto::MAX_IN_FLIGHT));
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
                    let (me, who, id) = (self.clone(), agent.clone(), req.request_id);
                    let work = async move { me.sign(&who, &req).await };
                    let answer = move |result| {
                        Message::SignResponse(SignResponse {
                            request_id: id,
                            result,
                        })
                    };
                    dispatch(&in_flight, &writer, &agent.id, work, answer).await?;
                }
                Message::CertRequest(req) => {
                    let (me, who, id) = (self.clone(), agent.clone(), req.request_id);
                    let work = async move { me.certify(&who, &req).await };
                    let answer = move |result| {
                        Message::CertResponse(CertResponse {
                            request_id: id,
                            result,
                        })
                    };
                    dispatch(&in_flight, &writer, &agent.id, work, answer).await?;
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

    pub(crate) fn all_keys(&self) -> Vec<KeyInfo> {
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
}

/// Admits one sign or certificate request and answers it on its own task.
///
/// At most [`vmux_proto::MAX_IN_FLIGHT`] requests of one link are worked on
/// at once; one over that is refused at once with `policyDenied`. A request
/// gives its slot back once it holds the writer and *before* its answer is
/// written, so an agent that counts a slot free when the answer arrives
/// (as ours does) never finds it still taken. Waiting for the writer keeps
/// the slot, so a peer that stops reading cannot pile up answers.
async fn dispatch<T, F>(
    in_flight: &Arc<Semaphore>,
    writer: &Arc<Mutex<ChannelWriter>>,
    agent: &str,
    work: F,
    answer: impl FnOnce(Result<T, ErrorCode>) -> Message + Send + 'static,
) -> Result<(), vmux_link::LinkError>
where
    F: std::future::Future<Output = Result<T, ErrorCode>> + Send + 'static,
{
    let Ok(slot) = in_flight.clone().try_acquire_owned() else {
        warn!(agent, "too many requests in flight; refusing");
        let refusal = answer(Err(ErrorCode::PolicyDenied));
        return writer.lock().await.send(&refusal).await;
    };
    let writer = writer.clone();
    tokio::spawn(async move {
        let msg = answer(work.await);
        let mut writer = writer.lock().await;
        drop(slot);
        if let Err(e) = writer.send(&msg).await {
            debug!(error = %e, "could not deliver an answer");
        }
    });
    Ok(())
}
