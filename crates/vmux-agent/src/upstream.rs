//! Connections to signers: connect, open a session (pairing or pinned),
//! keep the key cache fresh, carry sign requests, reconnect when the link
//! drops.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use vmux_link::{
    open_as_agent, AgentSession, Channel, ChannelReader, ChannelWriter, Expect, LinkError, Opened,
    Peer, PendingPairing, StaticKey,
};
use vmux_proto::{IssuedCert, Message, RequestId};

use crate::failure::SignFailure;
use crate::notice;
use crate::shared::Shared;
use crate::signer_conn::{Outgoing, SignerConn, Slot};
use crate::state::{CachedKey, PinnedSigner, StoredWake};
use vmux_home::sync::lock;
use vmux_home::time::now_s;

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between keep-alive pings on an idle link.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which a link is considered dead; also the longest one
/// message may take to be written (a signer that reads nothing for this
/// long is dead too).
const LINK_SILENCE: Duration = Duration::from_secs(45);
/// Pongs that may wait for the link's writer. A signer sends no pings
/// (PROTOCOL.md §6.5) and answers each of ours, so an honest one never
/// comes near this; one whose pings fill the queue sends faster than it
/// reads, and its link is dropped rather than left to block the reading
/// of everything else it sends.
const PONG_QUEUE: usize = 64;
/// Reconnect back-off: first delay and cap (with ±25 % jitter), so a
/// signer that comes back is found within about a second.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_millis(800);
/// Cap where no pinned signer answers and pairing is not permitted (only
/// a pinned signer that moved there could answer).
const BACKOFF_NOT_PAIRED: Duration = Duration::from_secs(5);

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

/// Requests sent and not yet answered, each with its slot.
type Pending = Arc<Mutex<HashMap<RequestId, (Waiter, Slot)>>>;

/// Key list requests sent and not yet answered, in order, each with the
/// refresh that waits for its answer (none for the first, sent when the
/// session opens). A key list is accepted only as the answer to one.
type KeyListsAsked = Arc<Mutex<VecDeque<Option<oneshot::Sender<()>>>>>;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum LinkDown {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("nothing arrived from the signer for {}s", LINK_SILENCE.as_secs())]
    Silent,
    #[error("the signer read nothing for {}s", LINK_SILENCE.as_secs())]
    NotReading,
    #[error("the signer sends pings faster than it reads the answers")]
    PingFlood,
}

/// Sends `msg`, failing if the signer does not take it within
/// [`LINK_SILENCE`].
async fn send_within(writer: &mut ChannelWriter, msg: &Message) -> Result<(), LinkDown> {
    tokio::time::timeout(LINK_SILENCE, writer.send(msg))
        .await
        .map_err(|_| LinkDown::NotReading)?
        .map_err(LinkDown::Link)
}

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

/// Serves one open session until it ends: the key list, sign and
/// certificate requests, wake endpoints, keep-alive. It ends when the
/// link closes or fails, when nothing arrives for [`LINK_SILENCE`]
/// (checked over the whole loop, whatever the loop is doing), when a
/// message cannot be written within [`LINK_SILENCE`], or when the signer
/// floods pings it does not read the answers to; then every waiting
/// request fails and [`maintain`] reconnects.
async fn run_session(
    shared: &Arc<Shared>,
    address: &str,
    session: AgentSession,
) -> Result<(), LinkError> {
    let (channel, signer, paired_with_code) = session.into_parts();
    if !pin(shared, address, &signer, paired_with_code.is_some()).await {
        // Forgotten while connecting: nothing to serve.
        return Ok(());
    }
    info!(signer = %signer.name, id = %signer.id, %address, "signer connected");
    shared.outage_over(&signer.id);
    shared.set_link(address, |l| {
        l.id = Some(signer.id.clone());
        l.name = Some(signer.name.clone());
        l.connected = true;
        l.since = now_s();
        l.last_error = None;
        l.pairing_code = None;
    });
    let Channel {
        reader, mut writer, ..
    } = channel;
    let key_lists: KeyListsAsked = Arc::default();
    lock(&key_lists).push_back(None);
    tokio::time::timeout(LINK_SILENCE, writer.send(&Message::KeyListRequest))
        .await
        .map_err(|_| LinkError::Timeout)??;

    let (tx, rx) = mpsc::channel::<(Outgoing, Slot)>(256);
    let pending: Pending = Arc::default();
    shared.set_connected(&signer.id, Some(SignerConn::new(tx)));
    let (pong_tx, pong_rx) = mpsc::channel::<Message>(PONG_QUEUE);
    let heard = Heard::new();
    let mut link = SignerLink {
        shared,
        signer,
        pending: pending.clone(),
        key_lists: key_lists.clone(),
        pong_tx,
        first_list: true,
        warned_unasked: false,
    };
    let result = tokio::select! {
        r = write_loop(writer, rx, pong_rx, pending.clone(), key_lists) => r,
        r = link.read_loop(reader, &heard) => r,
        r = heard.silence() => r,
    };
    let signer = link.signer;
    shared.set_connected(&signer.id, None);
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
        Err(LinkDown::Link(LinkError::Closed)) | Ok(()) => Ok(()),
        Err(e) => {
            warn!(signer = %signer.id, error = %e, "link to signer lost");
            Ok(())
        }
    }
}

/// Records the signer of an open session in the state: a pinned signer
/// keeps its place in the user's order and only its address and name
/// follow it; a signer that just paired (`paired`) replaces any pin at
/// its address and goes last. False when the signer is not pinned after
/// all (forgotten while connecting).
async fn pin(shared: &Arc<Shared>, address: &str, signer: &Peer, paired: bool) -> bool {
    shared
        .update_state(|s| {
            if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer.id) {
                p.address = address.to_owned();
                p.name = signer.name.clone();
                return;
            }
            if !paired {
                return;
            }
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
        })
        .saved()
        .await;
    shared.state().signers.iter().any(|p| p.id == signer.id)
}

/// The session's writer: requests from clients (each recorded as waiting
/// before it is sent, so its answer cannot come first), pongs, and a ping
/// every [`PING_INTERVAL`]; each message written within [`LINK_SILENCE`].
async fn write_loop(
    mut writer: ChannelWriter,
    mut rx: mpsc::Receiver<(Outgoing, Slot)>,
    mut pong_rx: mpsc::Receiver<Message>,
    pending: Pending,
    key_lists: KeyListsAsked,
) -> Result<(), LinkDown> {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut n = 0u64;
    loop {
        let msg = tokio::select! {
            out = rx.recv() => {
                let Some((out, slot)) = out else { return Ok(()) };
                match out {
                    Outgoing::Sign { request, reply } => {
                        lock(&pending).insert(request.request_id, (Waiter::Sign(reply), slot));
                        Message::SignRequest(request)
                    }
                    Outgoing::Cert { request, reply } => {
                        lock(&pending).insert(request.request_id, (Waiter::Cert(reply), slot));
                        Message::CertRequest(request)
                    }
                    Outgoing::RefreshKeys { reply } => {
                        // A key list is not counted by the signer.
                        drop(slot);
                        lock(&key_lists).push_back(Some(reply));
                        Message::KeyListRequest
                    }
                }
            }
            pong = pong_rx.recv() => {
                let Some(pong) = pong else { return Ok(()) };
                pong
            }
            _ = ping.tick() => {
                n += 1;
                Message::Ping(n)
            }
        };
        send_within(&mut writer, &msg).await?;
    }
}

/// When the last message of a session arrived, for its silence watchdog.
struct Heard {
    opened: Instant,
    /// Milliseconds from `opened` to the last message.
    last_ms: AtomicU64,
}

impl Heard {
    fn new() -> Heard {
        Heard {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        self.last_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Ends once nothing arrived for [`LINK_SILENCE`].
    async fn silence(&self) -> Result<(), LinkDown> {
        loop {
            let deadline = self.opened
                + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
                + LINK_SILENCE;
            if Instant::now() >= deadline {
                return Err(LinkDown::Silent);
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One open session's reading side: what the signer sends, matched to
/// what the agent asked.
struct SignerLink<'a> {
    shared: &'a Arc<Shared>,
    signer: Peer,
    pending: Pending,
    key_lists: KeyListsAsked,
    pong_tx: mpsc::Sender<Message>,
    first_list: bool,
    warned_unasked: bool,
}

/// What reading a message says about the session.
enum Flow {
    Continue,
    /// The writer is gone: the session ends without an error.
    End,
}

impl SignerLink<'_> {
    async fn read_loop(
        &mut self,
        mut reader: ChannelReader,
        heard: &Heard,
    ) -> Result<(), LinkDown> {
        loop {
            let msg = reader.recv().await?;
            heard.now();
            if let Flow::End = self.on_message(msg)? {
                return Ok(());
            }
        }
    }

    fn on_message(&mut self, msg: Message) -> Result<Flow, LinkDown> {
        let signer_id = &self.signer.id;
        match msg {
            Message::KeyList(keys) => self.on_key_list(&keys),
            Message::SignResponse(r) => match self.take(&r.request_id) {
                Some(Waiter::Sign(w)) => drop(w.send(r.result.map_err(SignFailure::Signer))),
                Some(other) => other.fail(SignFailure::LinkLost),
                None => warn!(signer = %signer_id, "response for an unknown request; ignored"),
            },
            Message::CertResponse(r) => match self.take(&r.request_id) {
                Some(Waiter::Cert(w)) => drop(w.send(r.result.map_err(SignFailure::Signer))),
                Some(other) => other.fail(SignFailure::LinkLost),
                None => warn!(signer = %signer_id, "certificate for an unknown request; ignored"),
            },
            Message::WakeEndpoint(w) => {
                // Written only when it changed.
                let wake = StoredWake::from_wire(&w);
                self.shared.update_state(|s| {
                    if let Some(p) = s.signers.iter_mut().find(|p| &p.id == signer_id) {
                        if p.wake != wake {
                            info!(signer = %signer_id, wake = ?wake.as_ref().map(StoredWake::describe), "wake endpoint updated");
                            p.wake = wake;
                        }
                    }
                });
            }
            // Never waits for the writer: a signer that sends pings and
            // does not read the pongs cannot stop the reading of
            // everything else.
            Message::Ping(n) => match self.pong_tx.try_send(Message::Pong(n)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(LinkDown::PingFlood),
                Err(TrySendError::Closed(_)) => return Ok(Flow::End),
            },
            Message::Pong(_) => {}
            other => {
                return Err(LinkDown::Link(LinkError::Unexpected {
                    expected: "a response",
                    got: other.name(),
                }))
            }
        }
        Ok(Flow::Continue)
    }

    /// The request `id` waits no more.
    fn take(&self, id: &RequestId) -> Option<Waiter> {
        lock(&self.pending).remove(id).map(|(w, _slot)| w)
    }

    /// A key list, accepted only as the answer to one the agent asked for.
    fn on_key_list(&mut self, keys: &[vmux_proto::KeyRecord]) {
        let signer_id = &self.signer.id;
        let Some(waiter) = lock(&self.key_lists).pop_front() else {
            if !self.warned_unasked {
                warn!(signer = %signer_id, "the signer sent a key list nobody asked for; ignored");
                self.warned_unasked = true;
            }
            return;
        };
        let (cached, dropped) = CachedKey::from_key_list(keys);
        if dropped > 0 {
            warn!(
                signer = %signer_id,
                listed = keys.len(),
                dropped,
                "kept {} of the signer's keys (at most {} keys, each an SSH public key of at most {} bytes, listed once)",
                cached.len(),
                crate::state::MAX_KEYS_PER_SIGNER,
                crate::state::MAX_KEY_BLOB,
            );
        }
        let count = cached.len();
        self.shared.update_state(|s| {
            if let Some(p) = s.signers.iter_mut().find(|p| &p.id == signer_id) {
                p.keys = cached;
            }
        });
        if let Some(w) = waiter {
            let _ = w.send(());
        }
        if self.first_list {
            notice(&format!(
                "connected to signer {} ({}), {count} keys",
                vmux_proto::sanitize(&self.signer.name),
                signer_id
            ));
            self.first_list = false;
        } else {
            info!(signer = %signer_id, count, "key list refreshed");
        }
    }
}
