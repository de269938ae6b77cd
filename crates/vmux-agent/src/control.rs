//! Control of a running agent through its own socket: the agent-protocol
//! extension `control@vmux` carries one command (`status`, `watch N`,
//! `refresh`, `cert`, `pair-confirm CODE`, `pair-deny`, `pair-signer
//! HOST:PORT`) and
//! is answered with `SSH_AGENT_SUCCESS` followed by a string
//! holding JSON. The socket's owner-only checks apply to it as to
//! everything else; no forwarded connection gets here
//! ([`LocalControl`]), and the commands that start, confirm or refuse a
//! pairing or have a certificate issued are only for the vmux program
//! itself ([`OwnProgram`]), never for another client of the socket (a
//! relayed socket, or a forwarded agent through an `ssh` that does not
//! say so).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cert_slot::CertStatus;
use crate::origin::trust::{LocalControl, OwnProgram};
use crate::shared::{LinkStatus, Shared};
use crate::state::AgentState;
use crate::wire::{self, Fields, FAILURE, SUCCESS};
use vmux_home::sync::lock;
use vmux_home::time::now_s;

/// The extension's name.
pub const EXTENSION: &str = "control@vmux";

/// One listed key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyStatus {
    /// Comment.
    pub comment: String,
    /// `SHA256:…`
    pub fingerprint: String,
    /// SSH algorithm.
    pub algorithm: String,
    /// Where the private key lives (`software`, `hardwareToken`, …).
    pub provider_kind: String,
    /// The signer that holds it.
    pub signer: String,
    /// `ssh-add -l` style line.
    pub line: String,
}

/// One signer, as the agent sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignerStatus {
    /// Address.
    pub address: String,
    /// Id, once known.
    pub id: Option<String>,
    /// Name, once known.
    pub name: Option<String>,
    /// Connected now.
    pub connected: bool,
    /// Since when connected or disconnected, Unix seconds.
    pub since: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// A pairing code waiting for approval on the signer and
    /// confirmation on this agent (`vmux agent pair --confirm CODE`).
    pub pairing_code: Option<String>,
    /// Whether the signer already approved that pairing.
    #[serde(default)]
    pub pairing_signer_approved: bool,
    /// How it can be woken.
    pub wake: Option<String>,
}

/// Everything `vmux agent status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The agent's name.
    pub name: String,
    /// The agent's id.
    pub id: String,
    /// Signers.
    pub signers: Vec<SignerStatus>,
    /// The certificate.
    pub certificate: CertStatusOwned,
    /// Keys.
    pub keys: Vec<KeyStatus>,
    /// Sign requests waiting for a signer now.
    pub pending_requests: usize,
    /// The last wake push: time and outcome.
    #[serde(default)]
    pub last_wake: Option<(u64, String)>,
    /// Passkey keys: which clients can use them, and counters that went
    /// backwards.
    #[serde(default)]
    pub passkeys: PasskeyStatus,
    /// The first requests waiting for a signer now (at most
    /// [`crate::board::MAX_LISTED_WAITING`]), oldest first.
    #[serde(default)]
    pub waiting: Vec<crate::board::WaitingRequest>,
    /// How the last requests ended.
    #[serde(default)]
    pub finished: Vec<crate::board::Finished>,
    /// The agent's change counter when this status was taken: `watch N`
    /// answers once it is no longer N.
    #[serde(default)]
    pub generation: u64,
}

/// What `vmux agent status` says of passkey keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PasskeyStatus {
    /// The client executables classified so far.
    pub clients: Vec<crate::origin::client::SeenClient>,
    /// Signature counters that did not move on (a cloned authenticator?).
    pub counter_alarms: Vec<crate::verify::CounterAlarm>,
}

/// Which clients can use a passkey key, in a sentence.
pub const PASSKEY_CLIENTS: &str = "passkey keys are offered to ssh-keygen (any version), OpenSSH ssh 10.3 and later, and other clients (e.g. asyncssh); not to OpenSSH ssh before 10.3, which refuses their signatures (it logs in with another key or the session certificate)";

/// [`CertStatus`] in a form that deserializes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertStatusOwned {
    /// `valid`, `expired` or `none`.
    pub state: String,
    /// The status line.
    pub line: String,
    /// End of validity.
    pub valid_until: Option<u64>,
    /// Serial.
    pub serial: Option<u64>,
    /// Principals.
    pub principals: Vec<String>,
}

impl Status {
    pub(crate) fn new(
        name: &str,
        id: &str,
        links: &BTreeMap<String, LinkStatus>,
        state: &AgentState,
        cert: CertStatus,
        pending_requests: usize,
        last_wake: Option<(u64, String)>,
    ) -> Status {
        let signers = links
            .iter()
            .map(|(address, l)| SignerStatus {
                address: address.clone(),
                id: l.signer_id.clone(),
                name: l
                    .signer_name
                    .clone()
                    .or_else(|| state.pinned_at(address).map(|p| p.name.clone())),
                connected: l.connected,
                since: l.since,
                last_error: l.last_error.clone(),
                pairing_code: l.pairing_code.clone(),
                pairing_signer_approved: l.pairing_signer_approved,
                wake: l
                    .signer_id
                    .as_ref()
                    .and_then(|id| state.signers.iter().find(|p| &p.id == id))
                    .or_else(|| state.pinned_at(address))
                    .and_then(|p| p.wake.as_ref())
                    .map(|w| w.describe()),
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
}

/// What `vmux agent status` shows.
pub(crate) fn status(shared: &Shared) -> Status {
    // Read first: a change while the status is taken makes the next
    // `watch` answer at once.
    let generation = *shared.board.subscribe().borrow();
    let now = now_s();
    let links = lock(&shared.links).clone();
    let state = shared.state();
    let mut s = Status::new(
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

/// Longest a `watch` waits for a change before it answers anyway.
pub const WATCH_WAIT: Duration = Duration::from_secs(25);

/// One control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    Status,
    /// The status once the change counter is no longer this (at once if
    /// it is not), or after [`WATCH_WAIT`].
    Watch(u64),
    Refresh,
    Cert,
    PairDeny,
    PairConfirm(&'a str),
    PairSigner(&'a str),
}

impl<'a> Command<'a> {
    /// The command in an extension's contents.
    pub(crate) fn parse(contents: &'a [u8]) -> Option<Command<'a>> {
        let mut f = Fields(contents);
        let command = std::str::from_utf8(f.string()?).ok()?;
        Some(match command {
            "status" => Command::Status,
            "refresh" => Command::Refresh,
            "cert" => Command::Cert,
            "pair-deny" => Command::PairDeny,
            _ => match command.split_once(' ')? {
                ("pair-confirm", code) => Command::PairConfirm(code),
                ("pair-signer", address) => Command::PairSigner(address),
                ("watch", seen) => Command::Watch(seen.parse().ok()?),
                _ => return None,
            },
        })
    }

    /// Whether only the vmux program itself may send it: it starts,
    /// confirms or refuses a pairing, or has a certificate issued.
    pub(crate) fn needs_own_program(self) -> bool {
        !matches!(self, Command::Status | Command::Watch(_) | Command::Refresh)
    }
}

/// The answer to a command that only the vmux program may send, from
/// another client.
const NOT_OWN_PROGRAM: &str = "refused: only the vmux program on this machine may pair signers or ask for a certificate (run `vmux agent pair` or `vmux agent cert`); this client is another program, or a relayed or forwarded connection";

fn reply(value: serde_json::Value) -> Vec<u8> {
    let json = value.to_string();
    let mut body = vec![SUCCESS];
    body.extend_from_slice(&(json.len() as u32).to_be_bytes());
    body.extend_from_slice(json.as_bytes());
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// The status as an answer. Which hosts are being logged into, as whom
/// and by which process (the waiting and ended requests) only for the
/// vmux program: a connection the agent cannot tell is forwarded (an
/// `ssh -A` older than OpenSSH 8.9 binds no session) sees the rest.
fn status_reply(shared: &Shared, own: Option<&OwnProgram>) -> Vec<u8> {
    let mut s = status(shared);
    if own.is_none() {
        s.waiting.clear();
        s.finished.clear();
    }
    match serde_json::to_value(s) {
        Ok(v) => reply(v),
        Err(_) => wire::status(FAILURE),
    }
}

/// Answers one control command; only connections that are not forwarded
/// get here (the proof says so), and the commands that
/// [need the vmux program](Command::needs_own_program) are answered only
/// with the proof that the client is that program.
pub(crate) async fn handle(
    shared: &Shared,
    command: Command<'_>,
    _local: &LocalControl,
    own: Option<&OwnProgram>,
) -> Vec<u8> {
    match (command, own) {
        (Command::Status, _) => status_reply(shared, own),
        (Command::Watch(seen), _) => {
            // Bounded: the client's connection waits here, nothing else.
            let mut changes = shared.board.subscribe();
            let _ = tokio::time::timeout(WATCH_WAIT, changes.wait_for(|g| *g != seen)).await;
            status_reply(shared, own)
        }
        (Command::Refresh, _) => {
            let n = shared.refresh().await;
            reply(json!({ "refreshed": n }))
        }
        (_, None) => reply(json!({ "error": NOT_OWN_PROGRAM })),
        (Command::Cert, Some(own)) => reply(certificate(shared, own).await),
        (Command::PairDeny, Some(own)) => reply(deny(shared, own)),
        (Command::PairConfirm(code), Some(own)) => reply(confirm(shared, code, own)),
        (Command::PairSigner(address), Some(own)) => reply(pair_signer(shared, address, own)),
    }
}

async fn certificate(shared: &Shared, _own: &OwnProgram) -> serde_json::Value {
    match crate::cert::request(shared, false).await {
        Ok(valid_until) => json!({ "valid_until": valid_until }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn deny(shared: &Shared, _own: &OwnProgram) -> serde_json::Value {
    json!({ "refused": shared.pairings.deny() })
}

fn confirm(shared: &Shared, code: &str, _own: &OwnProgram) -> serde_json::Value {
    use crate::pairing::Confirmed;
    match shared.pairings.confirm(code) {
        Confirmed::Matched(address) => json!({ "confirmed": address }),
        Confirmed::Mismatch(n) => json!({
            "error": format!("no pairing waiting here has the code {}; refused {n} waiting pairing(s), nothing pinned", vmux_proto::sanitize(code)),
        }),
        Confirmed::NoneWaiting => json!({ "error": "no pairing is waiting for confirmation" }),
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
fn pair_signer(shared: &Shared, address: &str, _own: &OwnProgram) -> serde_json::Value {
    if let Err(e) = valid_address(address) {
        return json!({ "error": e });
    }
    let Some(me) = shared.me.get().and_then(std::sync::Weak::upgrade) else {
        return json!({ "error": "the agent is shutting down" });
    };
    shared.pairings.ask(address);
    crate::discovery::maintain(&me, address.to_owned());
    json!({ "pairing": address })
}

/// Why a control command could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket.
    #[error("no agent is running on {0} (start one with `vmux agent run`)")]
    NotRunning(String),
    /// The agent answered something else.
    #[error("the agent on {0} did not understand the request (is it a vmux agent?)")]
    NotVmux(String),
    /// Reading or writing failed.
    #[error("talking to the agent on {0} failed: {1}")]
    Io(String, std::io::Error),
}

/// Sends `command` to the agent on `socket` and returns its JSON answer.
pub fn query(
    socket: &Path,
    command: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let mut body = vec![27u8];
    for part in [EXTENSION.as_bytes(), command.as_bytes()] {
        body.extend_from_slice(&(part.len() as u32).to_be_bytes());
        body.extend_from_slice(part);
    }
    let not_vmux = || ControlError::NotVmux(socket.display().to_string());
    let answer = exchange(socket, &body, timeout)?;
    let mut f = Fields(&answer);
    if f.u8() != Some(SUCCESS) {
        return Err(not_vmux());
    }
    f.string()
        .and_then(|j| serde_json::from_slice(j).ok())
        .ok_or_else(not_vmux)
}

/// One agent-protocol exchange on a new connection to `socket`: sends
/// `body` as a message, returns the answer's body (at most
/// [`wire::MAX_AGENT_MESSAGE`] bytes).
fn exchange(socket: &Path, body: &[u8], timeout: Duration) -> Result<Vec<u8>, ControlError> {
    let shown = socket.display().to_string();
    let mut s = UnixStream::connect(socket).map_err(|_| ControlError::NotRunning(shown.clone()))?;
    let io = |e| ControlError::Io(shown.clone(), e);
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(body);
    s.write_all(&msg).map_err(io)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > wire::MAX_AGENT_MESSAGE {
        return Err(ControlError::NotVmux(shown));
    }
    let mut answer = vec![0u8; len];
    s.read_exact(&mut answer).map_err(io)?;
    Ok(answer)
}

/// The keys the agent on `socket` lists, as OpenSSH public-key lines
/// (what `ssh-add -L` prints), asked with the agent protocol's own
/// request-identities.
pub fn public_keys(socket: &Path, timeout: Duration) -> Result<Vec<String>, ControlError> {
    let shown = socket.display().to_string();
    let answer = exchange(socket, &[11], timeout)?;
    let mut f = Fields(&answer);
    let (Some(12), Some(n)) = (f.u8(), f.u32()) else {
        return Err(ControlError::NotVmux(shown));
    };
    let mut lines = Vec::new();
    for _ in 0..n {
        let (Some(blob), Some(comment)) = (f.string(), f.string()) else {
            return Err(ControlError::NotVmux(shown));
        };
        let comment = String::from_utf8_lossy(comment);
        let line = ssh_key::PublicKey::from_bytes(blob)
            .ok()
            .and_then(|mut k| {
                k.set_comment(comment.as_ref());
                k.to_openssh().ok()
            })
            .or_else(|| {
                ssh_key::Certificate::from_bytes(blob)
                    .ok()
                    .and_then(|c| c.to_openssh().ok())
                    .map(|l| {
                        let mut parts = l.split_whitespace();
                        let (kind, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                        format!("{kind} {body} {comment}")
                    })
            });
        lines.extend(line);
    }
    Ok(lines)
}
