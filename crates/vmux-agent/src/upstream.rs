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
    open_as_agent, AgentSession, Channel, ChannelWriter, Expect, LinkError, Opened, PendingPairing,
    StaticKey,
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
    let signer_id = signer.id.clone();
    shared
        .update_state(|s| {
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
        })
        .saved()
        .await;
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
    let key_lists: KeyListsAsked = Arc::default();
    lock(&key_lists).push_back(None);
    tokio::time::timeout(LINK_SILENCE, writer.send(&Message::KeyListRequest))
        .await
        .map_err(|_| LinkError::Timeout)??;

    let (tx, mut rx) = mpsc::channel::<(Outgoing, Slot)>(256);
    let pending: Pending = Arc::default();
    shared.set_connected(&signer_id, Some(SignerConn::new(tx)));

    let (pong_tx, mut pong_rx) = mpsc::channel::<Message>(PONG_QUEUE);
    let writer_pending = pending.clone();
    let writer_key_lists = key_lists.clone();
    let write = async move {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut n = 0u64;
        loop {
            let msg = tokio::select! {
                out = rx.recv() => {
                    let Some((out, slot)) = out else { return Ok(()) };
                    match out {
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
                            // Asked before it is sent: the answer cannot
                            // come first.
                            lock(&writer_key_lists).push_back(Some(reply));
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
    };
    // When the last message arrived, in milliseconds since `opened`.
    let opened = Instant::now();
    let heard = AtomicU64::new(0);
    let silence = async {
        loop {
            let deadline =
                opened + Duration::from_millis(heard.load(Ordering::Relaxed)) + LINK_SILENCE;
            if Instant::now() >= deadline {
                return Err::<(), _>(LinkDown::Silent);
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let mut first_list = true;
    let mut warned_unasked = false;
    let read = async {
        loop {
            let msg = reader.recv().await?;
            heard.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
            match msg {
                Message::KeyList(keys) => {
                    let Some(waiter) = lock(&key_lists).pop_front() else {
                        if !warned_unasked {
                            warn!(signer = %signer.id, "the signer sent a key list nobody asked for; ignored");
                            warned_unasked = true;
                        }
                        continue;
                    };
                    let (cached, dropped) = CachedKey::from_key_list(&keys);
                    if dropped > 0 {
                        warn!(
                            signer = %signer.id,
                            listed = keys.len(),
                            dropped,
                            "kept {} of the signer's keys (at most {} keys, each an SSH public key of at most {} bytes, listed once)",
                            cached.len(),
                            crate::state::MAX_KEYS_PER_SIGNER,
                            crate::state::MAX_KEY_BLOB,
                        );
                    }
                    let count = cached.len();
                    shared.update_state(|s| {
                        if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer_id) {
                            p.keys = cached;
                        }
                    });
                    if let Some(w) = waiter {
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
                    // Written only when it changed.
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
                // Never waits for the writer: a signer that sends pings
                // and does not read the pongs cannot stop the reading of
                // everything else.
                Message::Ping(n) => match pong_tx.try_send(Message::Pong(n)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => return Err(LinkDown::PingFlood),
                    Err(TrySendError::Closed(_)) => return Ok(()),
                },
                Message::Pong(_) => {}
                other => {
                    return Err(LinkDown::Link(LinkError::Unexpected {
                        expected: "a response",
                        got: other.name(),
                    }))
                }
            }
        }
    };
    let result = tokio::select! {
        r = write => r,
        r = read => r,
        r = silence => r,
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
        Err(LinkDown::Link(LinkError::Closed)) | Ok(()) => Ok(()),
        Err(e) => {
            warn!(signer = %signer.id, error = %e, "link to signer lost");
            Ok(())
        }
    }
}
