//! Connections to signers: connect, open a session (pairing or pinned),
//! keep the key cache fresh, carry sign requests, reconnect when the link
//! drops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use vmux_link::{
    open_as_agent, AgentSession, Channel, Expect, LinkError, Opened, PendingPairing, StaticKey,
};
use vmux_proto::{CertRequest, ErrorCode, IssuedCert, Message, RequestId, SignRequest};

use crate::notice;
use crate::shared::Shared;
use crate::state::{CachedKey, PinnedSigner, StoredWake};
use vmux_home::sync::lock;
use vmux_home::time::now_s;

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between keep-alive pings on an idle link.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which a link is considered dead.
const LINK_SILENCE: Duration = Duration::from_secs(45);
/// Reconnect back-off: first delay and cap (with ±25 % jitter), so a
/// signer that comes back is found within about a second.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_millis(800);
/// Cap where no pinned signer answers and pairing is not permitted (only
/// a pinned signer that moved there could answer).
const BACKOFF_NOT_PAIRED: Duration = Duration::from_secs(5);

/// Why a forwarded sign produced no signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignFailure {
    /// The signer answered with an error code.
    Signer(ErrorCode),
    /// The link dropped before the answer.
    LinkLost,
    /// No signer answered within the bounded wait.
    TimedOut,
    /// No signer offers this key.
    UnknownKey,
    /// The signer's answer did not verify against the key.
    BadSignature,
    /// No signer is connected (certificate requests do not wait).
    NoSigner,
    /// The certificate was signed by another CA key than the one pinned
    /// for its signer.
    CaNotPinned,
    /// The session certificate signs only for a local login on the
    /// connection that bound its session; this request was not one.
    CertificateNotHere(crate::origin::trust::Reach),
}

impl std::fmt::Display for SignFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignFailure::Signer(c) => write!(f, "signer refused: {c}"),
            SignFailure::LinkLost => f.write_str("the link to the signer dropped"),
            SignFailure::TimedOut => f.write_str("no answer from a signer within the sign timeout"),
            SignFailure::UnknownKey => f.write_str("no paired signer offers this key"),
            SignFailure::BadSignature => {
                f.write_str("the signer's signature did not verify; discarded")
            }
            SignFailure::NoSigner => f.write_str("no signer is connected"),
            SignFailure::CaNotPinned => f.write_str(
                "the certificate is signed by another CA key than the one pinned for this signer; discarded",
            ),
            SignFailure::CertificateNotHere(reach) => match reach {
                crate::origin::trust::Reach::Forwarded => f.write_str(
                    "the session certificate never signs for a forwarded agent connection",
                ),
                _ => f.write_str(
                    "the session certificate signs only logins for the session this connection bound",
                ),
            },
        }
    }
}

/// Work for a signer link, with where to send the answer.
// Each lives for one trip through a channel; boxing the sign request
// would only add an allocation per signature.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outgoing {
    Sign {
        request: SignRequest,
        reply: oneshot::Sender<Result<Vec<u8>, SignFailure>>,
    },
    Cert {
        request: CertRequest,
        reply: oneshot::Sender<Result<IssuedCert, SignFailure>>,
    },
    RefreshKeys {
        reply: oneshot::Sender<()>,
    },
}

/// A live session with a signer, as seen by request handlers.
#[derive(Clone)]
pub struct SignerConn {
    tx: mpsc::Sender<(Outgoing, Slot)>,
    /// Requests in flight to this signer, at most
    /// [`vmux_proto::MAX_IN_FLIGHT`] (what the signer accepts); the rest
    /// wait here, within their deadline. A request's slot is freed when the
    /// signer answers it or the link drops, not when its client gives up:
    /// the signer is still working on it until then.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl SignerConn {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Outgoing,
    ) -> Result<T, SignFailure> {
        let slot = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SignFailure::LinkLost)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((make(reply), slot))
            .await
            .map_err(|_| SignFailure::LinkLost)?;
        answer.await.map_err(|_| SignFailure::LinkLost)
    }

    /// Sends a sign request; resolves with the signer's answer.
    pub(crate) async fn sign(&self, request: SignRequest) -> Result<Vec<u8>, SignFailure> {
        self.ask(|reply| Outgoing::Sign { request, reply }).await?
    }

    /// Sends a certificate request; resolves with the signer's answer.
    pub(crate) async fn certificate(
        &self,
        request: CertRequest,
    ) -> Result<IssuedCert, SignFailure> {
        self.ask(|reply| Outgoing::Cert { request, reply }).await?
    }

    /// Asks for the key list again; resolves when it has arrived.
    pub(crate) async fn refresh(&self) -> Result<(), SignFailure> {
        self.ask(|reply| Outgoing::RefreshKeys { reply }).await
    }
}

enum Waiter {
    Sign(oneshot::Sender<Result<Vec<u8>, SignFailure>>),
    Cert(oneshot::Sender<Result<IssuedCert, SignFailure>>),
}

impl Waiter {
    fn fail(self, why: SignFailure) {
        match self {
            Waiter::Sign(w) => drop(w.send(Err(why))),
            Waiter::Cert(w) => drop(w.send(Err(why))),
        }
    }
}

/// One of a link's [`vmux_proto::MAX_IN_FLIGHT`] request slots.
type Slot = tokio::sync::OwnedSemaphorePermit;

/// Requests sent and not yet answered, each with its slot.
type Pending = Arc<Mutex<HashMap<RequestId, (Waiter, Slot)>>>;

/// Keeps one signer address connected for as long as the agent runs.
pub async fn maintain(shared: Arc<Shared>, address: String) {
    let mut delay = BACKOFF_FIRST;
    let mut last_error = String::new();
    loop {
        let mut not_paired = false;
        match connect_once(&shared, &address).await {
            Ok(()) => {
                delay = BACKOFF_FIRST;
                last_error.clear();
            }
            Err(e) => {
                not_paired = matches!(
                    e,
                    LinkError::NotPaired(_) | LinkError::CodeMismatch | LinkError::NotConfirmed
                );
                let msg = e.to_string();
                shared.set_link(&address, |l| {
                    l.pairing_code = None;
                    l.last_error = Some(msg.clone());
                });
                if msg != last_error {
                    match &e {
                        LinkError::NotPaired(_) => {
                            notice(&msg);
                            warn!(signer = %address, "not a pinned signer; not pairing by itself");
                        }
                        LinkError::CodeMismatch | LinkError::NotConfirmed => {}
                        LinkError::PinMismatch { .. }
                        | LinkError::PinUnproven { .. }
                        | LinkError::Refused { .. }
                        | LinkError::BadCommitment => {
                            notice(&format!("signer at {address} refused: {msg}"));
                            warn!(signer = %address, error = %msg, "cannot use signer");
                        }
                        _ => info!(signer = %address, error = %msg, "signer unreachable"),
                    }
                    last_error = msg;
                } else {
                    debug!(signer = %address, error = %e, "signer still unreachable");
                }
            }
        }
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        tokio::time::sleep(delay.mul_f64(jitter)).await;
        // Where only a pinned signer that moved could answer, try less
        // often; a user's `vmux agent pair --signer` takes effect at the
        // next attempt.
        let cap = if not_paired && !shared.pairings.asked(&address) {
            BACKOFF_NOT_PAIRED
        } else {
            BACKOFF_CAP
        };
        delay = (delay * 2).min(cap);
    }
}

async fn tcp(address: &str) -> Result<TcpStream, LinkError> {
    Ok(
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| LinkError::Timeout)??,
    )
}

/// IK with `key`: only the holder of that key can complete it.
async fn connect_pinned(
    shared: &Shared,
    address: &str,
    key: &StaticKey,
) -> Result<Channel, LinkError> {
    Channel::connect_pinned(tcp(address).await?, shared.identity(), key)
        .await
        .map_err(|e| match e {
            LinkError::Noise(_) | LinkError::Closed => LinkError::PinUnproven {
                expected: vmux_link::device_id(key),
            },
            other => other,
        })
}

/// Opens the encrypted channel and says what to expect of the signer. A
/// pinned signer is reached only with IK and its pinned key, whatever
/// address or id anyone advertises; XX (which can pair) only with a
/// [`vmux_link::PairingPermit`].
async fn open_channel(shared: &Shared, address: &str) -> Result<(Channel, Expect), LinkError> {
    let (pinned_here, pinned) = {
        let state = shared.state();
        (
            state.pinned_at(address).and_then(PinnedSigner::static_key),
            state.pinned_keys(),
        )
    };
    // The user asked to pair whatever answers here: XX, then the pins
    // decide.
    if !shared.pairings.asked(address) {
        if let Some(k) = pinned_here {
            return Ok((
                connect_pinned(shared, address, &k).await?,
                Expect::Pinned(k),
            ));
        }
    }
    let Some(permit) = shared.pairings.permit(address, pinned.len()) else {
        // Not a pinned signer's address, and no permission to pair: try
        // the pinned keys (a pinned signer that moved proves its key);
        // anyone else cannot complete the handshake.
        for k in &pinned {
            match connect_pinned(shared, address, k).await {
                Ok(channel) => return Ok((channel, Expect::Pinned(*k))),
                Err(LinkError::PinUnproven { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        return Err(LinkError::NotPaired(address.to_owned()));
    };
    let channel = Channel::connect(tcp(address).await?, shared.identity()).await?;
    let expect = match shared
        .state()
        .by_key(channel.remote_static())
        .and_then(PinnedSigner::static_key)
    {
        Some(k) => Expect::Pinned(k),
        None => Expect::Pairing(permit),
    };
    Ok((channel, expect))
}

async fn connect_once(shared: &Arc<Shared>, address: &str) -> Result<(), LinkError> {
    let (channel, expect) = open_channel(shared, address).await?;
    let session = match open_as_agent(channel, shared.name(), expect).await? {
        Opened::Session(s) => {
            // A pinned signer answers here: nothing left to pair.
            shared.pairings.paired(address);
            s
        }
        Opened::Pairing(p) => confirm_pairing(shared, address, p).await?,
    };
    run_session(shared, address, session).await
}

/// Shows the code and waits for both people: the signer's (its Welcome)
/// and this agent's user (`vmux agent pair --confirm CODE`, or the code
/// typed on the agent's terminal). Nothing is pinned unless both accept.
async fn confirm_pairing(
    shared: &Arc<Shared>,
    address: &str,
    pairing: PendingPairing,
) -> Result<AgentSession, LinkError> {
    let code = pairing.code().to_owned();
    let signer_id = pairing.signer_id();
    let (ticket, answer) = shared.pairings.begin(address, &code);
    shared.set_link(address, |l| {
        l.pairing_code = Some(code.clone());
        l.pairing_signer_approved = false;
    });
    let typed_here = if shared.pairings.terminal() {
        "type it here, or "
    } else {
        ""
    };
    notice(&format!(
        "pairing code {code}: signer {signer_id} at {address} wants to pair; if the signer shows the same code, approve it there and confirm here: {typed_here}run `vmux agent pair --confirm {code}`"
    ));
    info!(signer = %address, id = %signer_id, %code, "pairing with a new signer");
    let result = pairing
        .finish(answer, || {
            ticket.signer_approved();
            shared.set_link(address, |l| l.pairing_signer_approved = true);
            notice(&format!(
                "the signer approved pairing code {code}; waiting for confirmation on this agent"
            ));
        })
        .await;
    drop(ticket);
    shared.set_link(address, |l| {
        l.pairing_code = None;
        l.pairing_signer_approved = false;
    });
    match &result {
        Ok(_) => shared.pairings.paired(address),
        Err(e @ (LinkError::CodeMismatch | LinkError::NotConfirmed)) => {
            shared.pairings.refused_here(address);
            notice(&format!(
                "pairing with signer {signer_id} at {address} refused: {e}; to pair again run `vmux agent pair --signer {address}`"
            ));
        }
        Err(_) => {}
    }
    result
}

async fn run_session(
    shared: &Arc<Shared>,
    address: &str,
    session: AgentSession,
) -> Result<(), LinkError> {
    let AgentSession {
        channel,
        signer,
        paired_with_code,
    } = session;
    let signer_id = signer.id.clone();
    shared.update_state(|s| {
        // A pinned signer keeps its place in the user's order; only its
        // address follows it.
        if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer.id) {
            p.address = address.to_owned();
            p.name = signer.name.clone();
            return;
        }
        if paired_with_code.is_none() {
            return;
        }
        // A new pairing at a pinned signer's address (asked for by the
        // user) replaces that pin; the new signer goes last.
        s.signers.retain(|p| p.address != address);
        s.signers.push(PinnedSigner {
            id: signer.id.clone(),
            name: signer.name.clone(),
            static_key: signer.static_key.to_vec(),
            address: address.to_owned(),
            paired_at: now_s(),
            wake: None,
            keys: Vec::new(),
            ca_key: None,
        });
    });
    if !shared.state().signers.iter().any(|p| p.id == signer.id) {
        // Forgotten while connecting: nothing to serve.
        return Ok(());
    }
    info!(signer = %signer.name, id = %signer.id, %address, "signer connected");
    shared.outage_over(&signer.id);
    shared.set_link(address, |l| {
        l.signer_id = Some(signer.id.clone());
        l.signer_name = Some(signer.name.clone());
        l.connected = true;
        l.since = now_s();
        l.last_error = None;
        l.pairing_code = None;
    });
    let Channel {
        mut reader,
        mut writer,
        ..
    } = channel;
    writer.send(&Message::KeyListRequest).await?;

    let (tx, mut rx) = mpsc::channel::<(Outgoing, Slot)>(256);
    let pending: Pending = Arc::default();
    shared.set_connected(
        &signer_id,
        Some(SignerConn {
            tx,
            in_flight: Arc::new(tokio::sync::Semaphore::new(vmux_proto::MAX_IN_FLIGHT)),
        }),
    );

    let (raw_tx, mut raw_rx) = mpsc::channel::<Message>(8);
    let writer_pending = pending.clone();
    let refreshes: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
    let writer_refreshes = refreshes.clone();
    let write = async move {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut n = 0u64;
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some((out, slot)) = out else { return Ok(()) };
                    let msg = match out {
                        Outgoing::Sign { request, reply } => {
                            lock(&writer_pending).insert(request.request_id, (Waiter::Sign(reply), slot));
                            Message::SignRequest(request)
                        }
                        Outgoing::Cert { request, reply } => {
                            lock(&writer_pending).insert(request.request_id, (Waiter::Cert(reply), slot));
                            Message::CertRequest(request)
                        }
                        Outgoing::RefreshKeys { reply } => {
                            // A key list is not counted by the signer.
                            drop(slot);
                            lock(&writer_refreshes).push(reply);
                            Message::KeyListRequest
                        }
                    };
                    writer.send(&msg).await?;
                }
                raw = raw_rx.recv() => {
                    let Some(m) = raw else { return Ok(()) };
                    writer.send(&m).await?;
                }
                _ = ping.tick() => {
                    n += 1;
                    writer.send(&Message::Ping(n)).await?;
                }
            }
        }
    };
    let mut first_list = true;
    let read = async {
        loop {
            let msg = tokio::time::timeout(LINK_SILENCE, reader.recv())
                .await
                .map_err(|_| LinkError::Timeout)??;
            match msg {
                Message::KeyList(keys) => {
                    let cached: Vec<CachedKey> = keys.iter().map(CachedKey::from).collect();
                    let count = cached.len();
                    shared.update_state(|s| {
                        if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer_id) {
                            p.keys = cached;
                        }
                    });
                    for w in lock(&refreshes).drain(..) {
                        let _ = w.send(());
                    }
                    if first_list {
                        notice(&format!(
                            "connected to signer {} ({}), {count} keys",
                            vmux_proto::sanitize(&signer.name),
                            signer.id
                        ));
                        first_list = false;
                    } else {
                        info!(signer = %signer.id, count, "key list refreshed");
                    }
                }
                Message::SignResponse(r) => match lock(&pending)
                    .remove(&r.request_id)
                    .map(|(w, _slot)| w)
                {
                    Some(Waiter::Sign(w)) => drop(w.send(r.result.map_err(SignFailure::Signer))),
                    Some(other) => other.fail(SignFailure::LinkLost),
                    None => warn!(signer = %signer.id, "response for an unknown request; ignored"),
                },
                Message::CertResponse(r) => match lock(&pending)
                    .remove(&r.request_id)
                    .map(|(w, _slot)| w)
                {
                    Some(Waiter::Cert(w)) => drop(w.send(r.result.map_err(SignFailure::Signer))),
                    Some(other) => other.fail(SignFailure::LinkLost),
                    None => {
                        warn!(signer = %signer.id, "certificate for an unknown request; ignored")
                    }
                },
                Message::WakeEndpoint(w) => {
                    let wake = StoredWake::from_wire(&w);
                    shared.update_state(|s| {
                        if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer_id) {
                            if p.wake != wake {
                                info!(signer = %signer_id, wake = ?wake.as_ref().map(StoredWake::describe), "wake endpoint updated");
                                p.wake = wake;
                            }
                        }
                    });
                }
                Message::Ping(n) => {
                    let _ = raw_tx.send(Message::Pong(n)).await;
                }
                Message::Pong(_) => {}
                other => {
                    return Err::<(), _>(LinkError::Unexpected {
                        expected: "a response",
                        got: other.name(),
                    })
                }
            }
        }
    };
    let result = tokio::select! {
        r = write => r,
        r = read => r,
    };
    shared.set_connected(&signer_id, None);
    shared.set_link(address, |l| {
        l.connected = false;
        l.since = now_s();
    });
    for (_, (w, _slot)) in lock(&pending).drain() {
        w.fail(SignFailure::LinkLost);
    }
    notice(&format!(
        "disconnected from signer {} ({})",
        vmux_proto::sanitize(&signer.name),
        signer.id
    ));
    match result {
        Err(LinkError::Closed) | Ok(()) => Ok(()),
        Err(e) => {
            warn!(signer = %signer.id, error = %e, "link to signer lost");
            Ok(())
        }
    }
}
