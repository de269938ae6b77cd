//! The running signer: accepts agents, opens sessions, and answers their
//! requests after checks and approval.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};
use vmux_home::sync::lock;
use vmux_link::{open_as_signer, Channel, ChannelWriter, Identity, Peer, StaticKey};
use vmux_proto::{CertResponse, ErrorCode, KeyRecord, Message, SignResponse};

use crate::audit::AuditLog;
use crate::ca::{Ca, CertPolicy};
use crate::decide::Windows;
use crate::pairing::{Gate, PairingSlot};

use crate::approver::Approver;
use crate::checks::{Freshness, ReplayGuard};
use crate::paired::PairedAgents;
use crate::provider::{KeyInfo, KeyProvider};

/// Silence after which an agent's link is considered dead.
const AGENT_SILENCE: Duration = Duration::from_secs(60);

/// Connections not yet authenticated (handshake, hello, pairing) from one
/// source address at once; more are closed at once.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 8;
/// Connections not yet authenticated, from all sources, at once.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// Open sessions of paired agents, in total.
pub const MAX_SESSIONS: usize = 1024;
/// Requests of all agents worked on at once (each agent identity has
/// [`vmux_proto::MAX_IN_FLIGHT`], across all its links).
pub const MAX_IN_FLIGHT_TOTAL: usize = 256;
/// How long a connection may take from its first byte to an open session,
/// on top of the time the person has to decide on a pairing: the Noise
/// handshake, the hello and the pairing exchange all fit in it.
pub const UNAUTHENTICATED_TIME: Duration = Duration::from_secs(30);

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
    /// How fresh a request must be.
    pub freshness: Freshness,
    /// How long the approver may take.
    pub approval_timeout: Duration,
    /// The CA, if certificates may be issued.
    pub ca: Option<Ca>,
    /// Certificate policy.
    pub cert_policy: CertPolicy,
    /// The phones whose passkeys are the CA (`--ca phone:NAME,…`), in
    /// order; empty: the software CA above.
    pub phone_ca: Vec<String>,
    /// Longest approval window a person may grant, seconds (0: none).
    pub window_max_seconds: u64,
    /// Where decisions are recorded.
    pub audit: Option<AuditLog>,
    /// How agents can wake this signer, told to each on connecting.
    pub wake: vmux_proto::WakeEndpoint,
    /// The phone page's side, when the signer serves it.
    pub phones: Option<Arc<vmux_phone::Phones>>,
}

/// A running signer.
pub struct Server<A> {
    pub(crate) parts: ServerParts<A>,
    pub(crate) replay: ReplayGuard,
    pub(crate) pairing: PairingSlot,
    admission: Admission,
    in_flight: InFlight,
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
            pairing: PairingSlot::default(),
            admission: Admission::default(),
            in_flight: InFlight::new(),
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
        if let Some(phones) = &self.parts.phones {
            phones.lock_keys();
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
        if let Some(phones) = &self.parts.phones {
            phones.unlock_keys(Some(passphrase))?;
        }
        self.locked.send_replace(false);
        info!("signer unlocked");
        Ok(())
    }

    /// The CA this signer issues session certificates with, as `vmux
    /// signer ca` prints it: the software CA's line, or each CA phone
    /// enrolled now.
    pub fn ca_lines(&self) -> Option<crate::ca::CaLines> {
        let p = &self.parts;
        let ca = p.ca.as_ref()?;
        let choice = if p.phone_ca.is_empty() {
            crate::ca::CaChoice::Software
        } else {
            crate::ca::CaChoice::Phones(p.phone_ca.clone())
        };
        let enrolled = p
            .phones
            .as_ref()
            .map(|ph| ph.passkey_keys())
            .unwrap_or_default();
        Some(crate::ca::lines_of(&choice, ca.public(), |name| {
            enrolled
                .iter()
                .find(|(r, _)| r.name == name)
                .map(|(_, k)| k.clone())
        }))
    }

    /// Whether some key or the CA is locked.
    pub fn is_locked(&self) -> bool {
        *self.locked.borrow()
            || self.parts.providers.iter().any(|p| p.is_locked())
            || self.parts.ca.as_ref().is_some_and(Ca::is_locked)
    }

    /// Unpairs the agent whose id is `id` (or an unambiguous prefix of
    /// it): its next request and connection are refused.
    pub fn unpair(
        &self,
        id: &str,
    ) -> Result<Option<crate::paired::PairedAgent>, vmux_home::HomeError> {
        let removed = self.parts.paired.remove(id)?;
        if let Some(a) = &removed {
            info!(agent = %a.id, "agent unpaired");
        }
        Ok(removed)
    }

    /// The phone page's side, when the signer serves it.
    pub fn phones(&self) -> Option<&Arc<vmux_phone::Phones>> {
        self.parts.phones.as_ref()
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
                    let Some(ticket) = self.admission.admit(source_of(addr.ip())) else {
                        debug!(peer = %addr, "too many unauthenticated connections; closed");
                        drop(stream);
                        continue;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.connection(stream, ticket).await {
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

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        ticket: Ticket,
    ) -> Result<(), vmux_link::LinkError> {
        let opening = async {
            let channel = Channel::accept(stream, &self.parts.identity).await?;
            let gate = Gate {
                paired: &self.parts.paired,
                approver: &self.parts.approver,
                approval_timeout: self.parts.approval_timeout,
                slot: &self.pairing,
                audit: self.parts.audit.as_ref(),
            };
            open_as_signer(channel, &self.parts.name, &gate).await
        };
        let bound = UNAUTHENTICATED_TIME + self.parts.approval_timeout;
        let (channel, agent) = tokio::time::timeout(bound, opening)
            .await
            .map_err(|_| vmux_link::LinkError::Timeout)??
            .into_parts();
        let _session = ticket.into_session().ok_or_else(|| {
            warn!(agent = %agent.id, "too many open sessions; closing this one");
            vmux_link::LinkError::Closed
        })?;
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
        let link = Link {
            mine: self.in_flight.for_agent(&agent.static_key),
            total: self.in_flight.total.clone(),
            writer: Arc::new(Mutex::new(writer)),
            agent: Arc::new(agent),
        };
        loop {
            // Agents ping every 15 s; a minute of silence is a dead link.
            let msg = reader.recv_within(AGENT_SILENCE).await?;
            match msg {
                Message::KeyListRequest => {
                    let keys = self.key_records();
                    debug!(agent = %link.agent.id, count = keys.len(), "sending key list");
                    link.send(&Message::KeyList(keys)).await?;
                }
                Message::SignRequest(req) => {
                    self.pairing.withdraw();
                    let (me, who, id) = (self.clone(), link.agent.clone(), req.request_id);
                    let work = async move { me.sign(&who, &req).await };
                    link.dispatch(work, move |result| {
                        Message::SignResponse(SignResponse {
                            request_id: id,
                            result,
                        })
                    })
                    .await?;
                }
                Message::CertRequest(req) => {
                    if !req.automatic {
                        self.pairing.withdraw();
                    }
                    let (me, who, id) = (self.clone(), link.agent.clone(), req.request_id);
                    let work = async move { me.certify(&who, &req).await };
                    link.dispatch(work, move |result| {
                        Message::CertResponse(CertResponse {
                            request_id: id,
                            result,
                        })
                    })
                    .await?;
                }
                Message::Ping(n) => link.send(&Message::Pong(n)).await?,
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
                display_name: None,
            })
            .collect()
    }
}

/// The source a connection is counted against: its IPv4 address, or the
/// /64 network of an IPv6 address (one host can use a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// The connections admitted and not yet authenticated, per source address
/// and in total, and the open sessions.
#[derive(Default)]
struct Admission {
    state: Arc<std::sync::Mutex<AdmissionState>>,
}

#[derive(Default)]
struct AdmissionState {
    per_source: HashMap<IpAddr, usize>,
    unauthenticated: usize,
    sessions: usize,
}

impl Admission {
    /// Admits a new connection from `source`, or `None` when that source
    /// or all sources have too many connections still opening.
    fn admit(&self, source: IpAddr) -> Option<Ticket> {
        let mut s = lock(&self.state);
        let from_source = s.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= MAX_UNAUTHENTICATED_PER_SOURCE || s.unauthenticated >= MAX_UNAUTHENTICATED
        {
            return None;
        }
        *s.per_source.entry(source).or_insert(0) += 1;
        s.unauthenticated += 1;
        Some(Ticket {
            state: self.state.clone(),
            source,
        })
    }
}

/// An admitted connection that has not opened a session yet; dropping it
/// gives its place back.
struct Ticket {
    state: Arc<std::sync::Mutex<AdmissionState>>,
    source: IpAddr,
}

impl Ticket {
    /// The connection opened a session: it no longer counts as opening,
    /// and takes a session place (`None` when all are taken).
    fn into_session(self) -> Option<SessionPlace> {
        let state = self.state.clone();
        drop(self);
        let mut s = lock(&state);
        if s.sessions >= MAX_SESSIONS {
            return None;
        }
        s.sessions += 1;
        drop(s);
        Some(SessionPlace { state })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.unauthenticated = s.unauthenticated.saturating_sub(1);
        if let Some(n) = s.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_source.remove(&self.source);
            }
        }
    }
}

/// An open session's place; dropping it gives the place back.
struct SessionPlace {
    state: Arc<std::sync::Mutex<AdmissionState>>,
}

impl Drop for SessionPlace {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.sessions = s.sessions.saturating_sub(1);
    }
}

/// Requests being worked on: [`vmux_proto::MAX_IN_FLIGHT`] per agent
/// identity, however many links it opens, and [`MAX_IN_FLIGHT_TOTAL`] in
/// all.
struct InFlight {
    per_agent: std::sync::Mutex<HashMap<StaticKey, Arc<Semaphore>>>,
    total: Arc<Semaphore>,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            per_agent: Default::default(),
            total: Arc::new(Semaphore::new(MAX_IN_FLIGHT_TOTAL)),
        }
    }

    /// The slots of the agent with this static key, shared by all its
    /// links.
    fn for_agent(&self, agent: &StaticKey) -> Arc<Semaphore> {
        let mut map = lock(&self.per_agent);
        // Forget agents with no link and no request left (only the map
        // holds their semaphore).
        map.retain(|_, s| Arc::strong_count(s) > 1);
        map.entry(*agent)
            .or_insert_with(|| Arc::new(Semaphore::new(vmux_proto::MAX_IN_FLIGHT)))
            .clone()
    }
}

/// One open session's side of answering: the agent, its identity's
/// request slots, the signer's total, and the link's writer.
struct Link {
    agent: Arc<Peer>,
    mine: Arc<Semaphore>,
    total: Arc<Semaphore>,
    writer: Arc<Mutex<ChannelWriter>>,
}

impl Link {
    /// Sends `msg` at once, in turn with the answers of other requests.
    async fn send(&self, msg: &Message) -> Result<(), vmux_link::LinkError> {
        self.writer.lock().await.send(msg).await
    }

    /// Admits one sign or certificate request and answers it on its own
    /// task: `work`'s result, wrapped by `answer`.
    ///
    /// At most [`vmux_proto::MAX_IN_FLIGHT`] requests of one agent identity
    /// (across all its links), and [`MAX_IN_FLIGHT_TOTAL`] of all agents,
    /// are worked on at once; one over that is refused at once with
    /// `policyDenied`. A request gives its slots back once it holds the
    /// writer and *before* its answer is written, so an agent that counts a
    /// slot free when the answer arrives (as ours does) never finds it
    /// still taken. Waiting for the writer keeps the slots, so a peer that
    /// stops reading cannot pile up answers.
    async fn dispatch<T, F>(
        &self,
        work: F,
        answer: impl FnOnce(Result<T, ErrorCode>) -> Message + Send + 'static,
    ) -> Result<(), vmux_link::LinkError>
    where
        F: std::future::Future<Output = Result<T, ErrorCode>> + Send + 'static,
    {
        let slots: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> = self
            .mine
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|mine| Some((mine, self.total.clone().try_acquire_owned().ok()?)));
        let Some(slots) = slots else {
            warn!(agent = %self.agent.id, "too many requests in flight; refusing");
            return self.send(&answer(Err(ErrorCode::PolicyDenied))).await;
        };
        let writer = self.writer.clone();
        tokio::spawn(async move {
            let msg = answer(work.await);
            let mut writer = writer.lock().await;
            drop(slots);
            if let Err(e) = writer.send(&msg).await {
                debug!(error = %e, "could not deliver an answer");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_still_opening_are_bounded_per_source_and_in_total() {
        let a = Admission::default();
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<Ticket> = (0..MAX_UNAUTHENTICATED_PER_SOURCE)
            .map(|_| a.admit(one).expect("within the bound"))
            .collect();
        assert!(a.admit(one).is_none(), "one source over its bound");
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let session = a.admit(other).unwrap().into_session().unwrap();
        // A session no longer counts as opening.
        drop(held);
        let mut many = Vec::new();
        for n in 0..MAX_UNAUTHENTICATED {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n as u32));
            many.push(a.admit(ip).expect("within the total"));
        }
        assert!(a.admit(other).is_none(), "over the total");
        drop(many);
        assert!(a.admit(one).is_some());
        drop(session);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(source_of(x), source_of(y));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_of(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
