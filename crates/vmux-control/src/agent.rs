//! The agent's control protocol: one [`Request`] in the agent-protocol
//! extension `control@vmux` on the agent's own socket, answered with
//! `SSH_AGENT_SUCCESS` and one [`Reply`].
//!
//! On the wire a request is an `SSH_AGENTC_EXTENSION` message: the
//! string [`EXTENSION`], then a string holding the request's JSON
//! (`{"cmd":"watch","generation":7}`). The answer is `SSH_AGENT_SUCCESS`
//! followed by a string holding the reply's JSON (`{"refreshed":1}`,
//! `{"error":"…"}`), or `SSH_AGENT_FAILURE` for a request the agent does
//! not take at all (a forwarded connection, a malformed request). Who may
//! send what is the agent's to decide; see its `control` module.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::socket::{ControlReply, Socket};
use crate::{ControlError, Peer};

/// The extension's name.
pub const EXTENSION: &str = "control@vmux";

/// Longest a [`Request::Watch`] waits for a change before the agent
/// answers anyway.
pub const WATCH_WAIT: Duration = Duration::from_secs(25);

/// Largest answer read, as the agent's largest message and OpenSSH's
/// clients' (`MAX_AGENT_REPLY_LEN`, 256 KiB).
pub const MAX_ANSWER: usize = 256 * 1024;

/// `SSH_AGENT_FAILURE`
const FAILURE: u8 = 5;
/// `SSH_AGENT_SUCCESS`
const SUCCESS: u8 = 6;
/// `SSH_AGENTC_REQUEST_IDENTITIES`
const REQUEST_IDENTITIES: u8 = 11;
/// `SSH_AGENT_IDENTITIES_ANSWER`
const IDENTITIES_ANSWER: u8 = 12;
/// `SSH_AGENTC_EXTENSION`
const EXTENSION_REQUEST: u8 = 27;

/// One control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Everything `vmux agent status` shows: [`Reply::Status`].
    Status,
    /// The status once the agent's change counter is no longer
    /// `generation` (at once if it is not), or after [`WATCH_WAIT`]:
    /// [`Reply::Status`].
    Watch {
        /// The [`Status::generation`] last seen.
        generation: u64,
    },
    /// Asks every connected signer for its key list again:
    /// [`Reply::Refreshed`].
    Refresh,
    /// Asks for a session certificate now: [`Reply::ValidUntil`]. Only
    /// for the vmux program itself.
    Cert,
    /// Confirms the waiting pairing that shows `code`:
    /// [`Reply::Confirmed`]. Only for the vmux program itself.
    PairConfirm {
        /// The code the signer shows.
        code: String,
    },
    /// Refuses every waiting pairing: [`Reply::Denied`]. Only for the vmux
    /// program itself.
    PairDeny,
    /// Pairs with the signer at `address` (`HOST:PORT`), even while
    /// other signers are pinned: [`Reply::Pairing`]. Only for the vmux
    /// program itself.
    PairSigner {
        /// `HOST:PORT`.
        address: String,
    },
}

impl Request {
    /// The request in an `control@vmux` extension's contents (after the
    /// extension's name): one string holding its JSON, and nothing after
    /// it. `None` for anything else.
    pub fn from_contents(contents: &[u8]) -> Option<Request> {
        let mut rest = contents;
        let json = take_string(&mut rest)?;
        if !rest.is_empty() {
            return None;
        }
        serde_json::from_slice(json).ok()
    }

    /// The `SSH_AGENTC_EXTENSION` message body that carries it.
    pub fn to_message(&self) -> Vec<u8> {
        // Serializing these types cannot fail (no maps, no foreign types).
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut body = vec![EXTENSION_REQUEST];
        put_string(&mut body, EXTENSION.as_bytes());
        put_string(&mut body, &json);
        body
    }
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// To [`Request::Status`] and [`Request::Watch`].
    Status(Box<Status>),
    /// To [`Request::Refresh`]: how many signers were asked.
    Refreshed(usize),
    /// To [`Request::Cert`]: the new certificate's end of validity, Unix
    /// seconds.
    ValidUntil(u64),
    /// To [`Request::PairConfirm`]: the address of the signer whose
    /// pairing was confirmed.
    Confirmed(String),
    /// To [`Request::PairDeny`]: how many waiting pairings were refused.
    #[serde(rename = "refused")]
    Denied(usize),
    /// To [`Request::PairSigner`]: the address the agent now pairs with.
    Pairing(String),
    /// The request was refused, or failed: why, in a sentence.
    Error(String),
}

impl ControlReply for Reply {
    fn refusal(self) -> Result<String, Reply> {
        match self {
            Reply::Error(why) => Ok(why),
            reply => Err(reply),
        }
    }
}

impl Reply {
    /// The framed agent-protocol answer that carries it
    /// (`SSH_AGENT_SUCCESS`, a string holding its JSON), length first.
    pub fn to_answer(&self) -> Vec<u8> {
        let Ok(json) = serde_json::to_vec(self) else {
            return vec![0, 0, 0, 1, FAILURE];
        };
        let mut body = vec![SUCCESS];
        put_string(&mut body, &json);
        let mut out = Vec::with_capacity(4 + body.len());
        put_string(&mut out, &body);
        out
    }

    /// The reply in an answer's body (without its length): `None` for a
    /// failure or anything that is not one reply.
    pub fn from_answer(body: &[u8]) -> Option<Reply> {
        let mut rest = body.strip_prefix(&[SUCCESS])?;
        let json = take_string(&mut rest)?;
        if !rest.is_empty() {
            return None;
        }
        serde_json::from_slice(json).ok()
    }
}

/// One listed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The first requests waiting for a signer now (a bounded number),
    /// oldest first; empty for a client that is not the vmux program.
    #[serde(default)]
    pub waiting: Vec<WaitingRequest>,
    /// How the last requests ended; empty for a client that is not the
    /// vmux program.
    #[serde(default)]
    pub finished: Vec<Finished>,
    /// The agent's change counter when this status was taken:
    /// [`Request::Watch`] answers once it is no longer this.
    #[serde(default)]
    pub generation: u64,
}

/// What `vmux agent status` says of passkey keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyStatus {
    /// The client executables classified so far.
    pub clients: Vec<SeenClient>,
    /// Signature counters that did not move on (a cloned authenticator?).
    pub counter_alarms: Vec<CounterAlarm>,
}

/// The session certificate, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A request waiting for a signer (its link, or its person).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingRequest {
    /// The agent's number for it (not sent anywhere).
    pub id: u64,
    /// A signature or a session certificate (never a pairing).
    pub kind: vmux_proto::DecisionKind,
    /// The signer's name (or id when it has none).
    pub signer: String,
    /// The key's comment (`session certificate` for a certificate).
    pub key: String,
    /// The destination host as this workstation names it, when known.
    pub host: String,
    /// The destination user, when known.
    pub user: String,
    /// The requesting process chain, when known.
    pub process: String,
    /// The `ssh-keygen -Y` namespace, for an SSHSIG.
    pub namespace: String,
    /// When it started, Unix milliseconds.
    pub since_ms: u64,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Signed (or certified).
    Answered,
    /// The signer's person said no.
    Denied,
    /// Nobody answered in time (the signer's approval timeout, or the
    /// agent's sign timeout).
    Unanswered,
    /// Anything else (link lost, refused by policy, bad signature, …).
    Failed,
}

/// A request that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Its [`WaitingRequest::id`].
    pub id: u64,
    /// The signer's name.
    pub signer: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in words, when it failed.
    pub reason: String,
}

/// What a client executable can take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientKind {
    /// OpenSSH's `ssh` older than 10.3 (or an `ssh` whose version could
    /// not be read): no passkey keys.
    OldOpenSsh {
        /// The version its file carries (`OpenSSH_9.2p1`), or why none
        /// was read.
        version: String,
    },
    /// Anything else: passkey keys are offered.
    Capable,
}

impl ClientKind {
    /// Whether passkey keys are offered to it.
    pub fn takes_passkeys(&self) -> bool {
        matches!(self, ClientKind::Capable)
    }
}

/// One executable the agent has classified, as `vmux agent status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenClient {
    /// Its path.
    pub executable: String,
    /// What it can take.
    pub kind: ClientKind,
}

/// A counter that did not move on, as `vmux agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterAlarm {
    /// The key's `SHA256:…` fingerprint.
    pub key: String,
    /// The last counter seen.
    pub stored: u32,
    /// The counter that came.
    pub received: u32,
    /// When, Unix seconds.
    pub at: u64,
}

/// How long each request waits for its answer, unless the client says
/// otherwise ([`Client::with_timeout`]).
fn default_timeout(request: &Request) -> Duration {
    match request {
        Request::Status => Duration::from_secs(10),
        Request::Watch { .. } => WATCH_WAIT + Duration::from_secs(15),
        Request::Refresh => Duration::from_secs(30),
        Request::Cert => Duration::from_secs(180),
        Request::PairConfirm { .. } | Request::PairDeny | Request::PairSigner { .. } => {
            Duration::from_secs(10)
        }
    }
}

/// How long listing the public keys waits, unless the client says
/// otherwise.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the agent on one socket: each request on a connection of
/// its own, blocking, with a bounded wait.
#[derive(Debug, Clone)]
pub struct Client {
    socket: Socket,
    timeout: Option<Duration>,
}

impl Client {
    /// A client of the agent on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: Socket::new(Peer::Agent, socket.into()),
            timeout: None,
        }
    }

    /// The same client, every request of which waits at most `timeout`
    /// for its answer (instead of each request's own default).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        self.socket.path()
    }

    /// Everything `vmux agent status` shows.
    pub fn status(&self) -> Result<Status, ControlError> {
        self.status_for(&Request::Status)
    }

    /// The status once it differs from the one of `generation`, or after
    /// [`WATCH_WAIT`] anyway.
    pub fn watch(&self, generation: u64) -> Result<Status, ControlError> {
        self.status_for(&Request::Watch { generation })
    }

    calls! {
        /// Asks the connected signers for their key lists again: how many
        /// were asked (0: none is connected).
        fn refresh() -> usize = Request::Refresh => Reply::Refreshed;

        /// Has a session certificate issued now: its end of validity, Unix
        /// seconds.
        fn cert() -> u64 = Request::Cert => Reply::ValidUntil;

        /// Confirms the waiting pairing with `code`: the signer's address.
        fn pair_confirm(code: &str) -> String =
            Request::PairConfirm { code: code.to_owned() } => Reply::Confirmed;

        /// Refuses every waiting pairing: how many there were.
        fn pair_deny() -> usize = Request::PairDeny => Reply::Denied;

        /// Pairs with the signer at `address` (`HOST:PORT`): the address the
        /// agent now pairs with.
        fn pair_signer(address: &str) -> String =
            Request::PairSigner { address: address.to_owned() } => Reply::Pairing;
    }

    /// The keys the agent lists, as OpenSSH public-key lines (what
    /// `ssh-add -L` prints), asked with the agent protocol's own
    /// request-identities. Blobs that name no key type are left out.
    pub fn public_keys(&self) -> Result<Vec<String>, ControlError> {
        let answer = self.exchange(&[REQUEST_IDENTITIES], self.timeout.unwrap_or(LIST_TIMEOUT))?;
        let mut rest = &answer[..];
        if take_u8(&mut rest) != Some(IDENTITIES_ANSWER) {
            return Err(self.socket.not_vmux());
        }
        let n = take_u32(&mut rest).ok_or_else(|| self.socket.not_vmux())?;
        let mut lines = Vec::new();
        // Bounded by the answer: each entry takes at least 8 bytes.
        for _ in 0..n {
            let (Some(blob), Some(comment)) = (take_string(&mut rest), take_string(&mut rest))
            else {
                return Err(self.socket.not_vmux());
            };
            lines.extend(openssh_line(blob, &String::from_utf8_lossy(comment)));
        }
        Ok(lines)
    }

    /// Sends `request` and returns the agent's reply, whatever it is
    /// (an [`Reply::Error`] included).
    pub fn request(&self, request: &Request) -> Result<Reply, ControlError> {
        let timeout = self.timeout.unwrap_or_else(|| default_timeout(request));
        let answer = self.exchange(&request.to_message(), timeout)?;
        Reply::from_answer(&answer).ok_or_else(|| self.socket.not_vmux())
    }

    fn status_for(&self, request: &Request) -> Result<Status, ControlError> {
        let status = self
            .socket
            .take(self.request(request), pick!(Reply::Status))?;
        Ok(*status)
    }

    /// One agent-protocol exchange on a new connection: sends `body` as a
    /// message, returns the answer's body (at most [`MAX_ANSWER`] bytes).
    fn exchange(&self, body: &[u8], timeout: Duration) -> Result<Vec<u8>, ControlError> {
        let mut s = self.socket.connect(timeout)?;
        let io = |e| self.socket.io(e);
        let mut message = Vec::with_capacity(4 + body.len());
        put_string(&mut message, body);
        s.write_all(&message).map_err(io)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_ANSWER {
            return Err(self.socket.not_vmux());
        }
        let mut answer = vec![0u8; len];
        s.read_exact(&mut answer).map_err(io)?;
        Ok(answer)
    }
}

/// An OpenSSH public-key line (`TYPE BASE64 COMMENT`) of a key or
/// certificate blob, whose first string names its type; `None` when it
/// names none. As `ssh-add -L`: a key without a comment has no third
/// field, a certificate always has one.
fn openssh_line(blob: &[u8], comment: &str) -> Option<String> {
    use base64::Engine;
    let mut rest = blob;
    let kind = std::str::from_utf8(take_string(&mut rest)?).ok()?;
    if kind.is_empty() || !kind.bytes().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    let body = base64::engine::general_purpose::STANDARD.encode(blob);
    Some(
        if comment.is_empty() && !kind.ends_with("-cert-v01@openssh.com") {
            format!("{kind} {body}")
        } else {
            format!("{kind} {body} {comment}")
        },
    )
}

// The agent protocol's few fields, written and read here by hand: this
// crate stays free of the SSH crates (the agent's own reader is
// `vmux_ssh::Fields`).

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    // Every string here is bounded by MAX_ANSWER or the request's size.
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn take_u8(rest: &mut &[u8]) -> Option<u8> {
    let (&b, tail) = rest.split_first()?;
    *rest = tail;
    Some(b)
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_be_bytes(*head))
}

fn take_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(rest)? as usize;
    let s = rest.get(..len)?;
    *rest = &rest[len..];
    Some(s)
}

#[cfg(test)]
mod tests;
