//! Control of a running agent through its own socket: the agent-protocol
//! extension `control@vmux` carries one typed request
//! ([`vmux_control::agent::Request`]: status, watch, refresh, cert,
//! pair-confirm, pair-deny, pair-signer) and is answered with
//! `SSH_AGENT_SUCCESS` followed by a string holding one typed reply's
//! JSON ([`vmux_control::agent::Reply`]). The socket's owner-only checks
//! apply to it as to everything else; no forwarded connection gets here
//! ([`LocalControl`]), and the requests that start, confirm or refuse a
//! pairing or have a certificate issued are only for the vmux program
//! itself ([`OwnProgram`]), never for another client of the socket (a
//! relayed socket, or a forwarded agent through an `ssh` that does not
//! say so). The client is [`vmux_control::agent::Client`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use vmux_control::agent::{Reply, Request};

use crate::cert_slot::CertStatus;
use crate::origin::trust::{LocalControl, OwnProgram};
use crate::shared::Shared;
use crate::state::AgentState;
use vmux_home::sync::lock;
use vmux_home::time::now_s;

pub use vmux_control::agent::{
    CertStatusOwned, KeyStatus, PasskeyStatus, SignerStatus, Status, EXTENSION, WATCH_WAIT,
};

// A client reads at most what the agent may write.
const _: () = assert!(vmux_control::agent::MAX_ANSWER == crate::wire::MAX_AGENT_MESSAGE);

/// Which clients can use a passkey key, in a sentence.
pub const PASSKEY_CLIENTS: &str = "passkey keys are offered to ssh-keygen (any version), OpenSSH ssh 10.3 and later, and other clients (e.g. asyncssh); not to OpenSSH ssh before 10.3, which refuses their signatures (it logs in with another key or the session certificate)";

/// The status of the agent whose links, state, certificate and waiting
/// requests these are (the rest is [`status`]'s).
fn new_status(
    name: &str,
    id: &str,
    links: &BTreeMap<String, SignerStatus>,
    state: &AgentState,
    cert: CertStatus,
    pending_requests: usize,
    last_wake: Option<(u64, String)>,
) -> Status {
    let signers = links
        .iter()
        .map(|(address, l)| SignerStatus {
            name: l
                .name
                .clone()
                .or_else(|| state.pinned_at(address).map(|p| p.name.clone())),
            wake: l
                .id
                .as_ref()
                .and_then(|id| state.signers.iter().find(|p| &p.id == id))
                .or_else(|| state.pinned_at(address))
                .and_then(|p| p.wake.as_ref())
                .map(|w| w.describe()),
            ..l.clone()
        })
        .collect();
    let keys = state
        .signers
        .iter()
        .flat_map(|s| s.keys.iter().map(move |k| (s, k)))
        .map(|(s, k)| {
            let public = ssh_key::PublicKey::from_bytes(&k.blob).ok();
            let fingerprint = public
                .as_ref()
                .map(|p| p.fingerprint(ssh_key::HashAlg::Sha256).to_string())
                .unwrap_or_default();
            KeyStatus {
                line: format!(
                    "{fingerprint} {} ({}, {} on {})",
                    k.comment, k.algorithm, k.provider_kind, s.name
                ),
                comment: k.comment.clone(),
                fingerprint,
                algorithm: k.algorithm.clone(),
                provider_kind: k.provider_kind.clone(),
                signer: s.name.clone(),
            }
        })
        .collect();
    Status {
        name: name.to_owned(),
        id: id.to_owned(),
        signers,
        certificate: CertStatusOwned {
            state: cert.state.to_owned(),
            line: cert.line,
            valid_until: cert.valid_until,
            serial: cert.serial,
            principals: cert.principals,
        },
        keys,
        pending_requests,
        last_wake,
        passkeys: PasskeyStatus::default(),
        waiting: Vec::new(),
        finished: Vec::new(),
        generation: 0,
    }
}

/// What `vmux agent status` shows.
pub(crate) fn status(shared: &Shared) -> Status {
    // Read first: a change while the status is taken makes the next
    // `watch` answer at once.
    let generation = *shared.board.subscribe().borrow();
    let now = now_s();
    let links = lock(&shared.links).clone();
    let state = shared.state();
    let mut s = new_status(
        &shared.config.name,
        &shared.identity.id(),
        &links,
        &state,
        shared.cert.status(now),
        shared.pending.load(Ordering::Relaxed),
        shared.last_wake(),
    );
    s.passkeys = PasskeyStatus {
        clients: shared.clients.seen(),
        counter_alarms: shared.counters.alarms(),
    };
    (s.waiting, s.finished) = shared.board.snapshot();
    s.generation = generation;
    s
}

/// Whether only the vmux program itself may send `request`: it starts,
/// confirms or refuses a pairing, or has a certificate issued.
pub(crate) fn needs_own_program(request: &Request) -> bool {
    !matches!(
        request,
        Request::Status | Request::Watch { .. } | Request::Refresh
    )
}

/// The answer to a request that only the vmux program may send, from
/// another client.
const NOT_OWN_PROGRAM: &str = "refused: only the vmux program on this machine may pair signers or ask for a certificate (run `vmux agent pair` or `vmux agent cert`); this client is another program, or a relayed or forwarded connection";

/// The status as a reply. Which hosts are being logged into, as whom
/// and by which process (the waiting and ended requests) only for the
/// vmux program: a connection the agent cannot tell is forwarded (an
/// `ssh -A` older than OpenSSH 8.9 binds no session) sees the rest.
fn status_reply(shared: &Shared, own: Option<&OwnProgram>) -> Reply {
    let mut s = status(shared);
    if own.is_none() {
        s.waiting.clear();
        s.finished.clear();
    }
    Reply::Status(Box::new(s))
}

/// Answers one control request (framed); only connections that are not
/// forwarded get here (the proof says so), and the requests that
/// [need the vmux program](needs_own_program) are answered only with the
/// proof that the client is that program.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request,
    _local: &LocalControl,
    own: Option<&OwnProgram>,
) -> Vec<u8> {
    let reply = match (request, own) {
        (Request::Status, _) => status_reply(shared, own),
        (Request::Watch { generation }, _) => {
            // Bounded: the client's connection waits here, nothing else.
            let mut changes = shared.board.subscribe();
            let _ = tokio::time::timeout(WATCH_WAIT, changes.wait_for(|g| *g != generation)).await;
            status_reply(shared, own)
        }
        (Request::Refresh, _) => Reply::Refreshed(shared.refresh().await),
        (_, None) => Reply::Error(NOT_OWN_PROGRAM.into()),
        (Request::Cert, Some(own)) => certificate(shared, own).await,
        (Request::PairDeny, Some(own)) => deny(shared, own),
        (Request::PairConfirm { code }, Some(own)) => confirm(shared, &code, own),
        (Request::PairSigner { address }, Some(own)) => pair_signer(shared, &address, own),
    };
    reply.to_answer()
}

async fn certificate(shared: &Shared, _own: &OwnProgram) -> Reply {
    match crate::cert::request(shared, false).await {
        Ok(valid_until) => Reply::ValidUntil(valid_until),
        Err(e) => Reply::Error(e.to_string()),
    }
}

fn deny(shared: &Shared, _own: &OwnProgram) -> Reply {
    Reply::Denied(shared.pairings.deny())
}

fn confirm(shared: &Shared, code: &str, _own: &OwnProgram) -> Reply {
    use crate::pairing::Confirmed;
    match shared.pairings.confirm(code) {
        Confirmed::Matched(address) => Reply::Confirmed(address),
        Confirmed::Mismatch(n) => Reply::Error(format!(
            "no pairing waiting here has the code {}; refused {n} waiting pairing(s), nothing pinned",
            vmux_proto::sanitize(code)
        )),
        Confirmed::NoneWaiting => Reply::Error("no pairing is waiting for confirmation".into()),
    }
}

/// `HOST:PORT` with a port, or an error sentence.
fn valid_address(address: &str) -> Result<(), String> {
    match address.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p != 0)
                && !address.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{:?} is not a signer address (HOST:PORT)",
            vmux_proto::sanitize(address)
        )),
    }
}

/// The user asks to pair with the signer at `address` (even while other
/// signers are pinned).
fn pair_signer(shared: &Shared, address: &str, _own: &OwnProgram) -> Reply {
    if let Err(e) = valid_address(address) {
        return Reply::Error(e);
    }
    let Some(me) = shared.me.get().and_then(std::sync::Weak::upgrade) else {
        return Reply::Error("the agent is shutting down".into());
    };
    shared.pairings.ask(address);
    crate::discovery::maintain(&me, address.to_owned());
    Reply::Pairing(address.to_owned())
}
