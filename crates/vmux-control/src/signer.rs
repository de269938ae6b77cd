//! The signer's control protocol: one [`Request`] line of JSON on the
//! signer's owner-only control socket (`signer.sock` beside its state),
//! answered with one [`Reply`] line of JSON. The running signer is the
//! one writer of its state; its person (the same user) asks it here.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::socket::{ControlReply, Socket};
use crate::{ControlError, Peer};

/// Longest request line the signer reads.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Longest answer line a client reads.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// How long a client waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A control request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Is it running, is it locked? [`Reply::Status`].
    Status,
    /// Forget decrypted secrets: [`Reply::Locked`].
    Lock,
    /// Decrypt with this passphrase: [`Reply::Locked`] (`false`).
    Unlock {
        /// The signer's passphrase; wiped when the request is dropped,
        /// never shown by `Debug`.
        passphrase: Zeroizing<String>,
    },
    /// Unpair an agent: [`Reply::Unpaired`].
    Unpair {
        /// The agent's id or an unambiguous prefix of it.
        id: String,
    },
    /// A one-time enrolment link for a new phone: [`Reply::PhoneLink`].
    PhoneAdd {
        /// The phone's name.
        name: String,
    },
    /// The enrolled phones: [`Reply::Phones`].
    Phones,
    /// Revokes a phone: [`Reply::Removed`].
    PhoneRemove {
        /// The phone's name.
        name: String,
    },
    /// The open pairing prompt: [`Reply::Pairing`].
    PairPending,
    /// Approves the open pairing prompt if its code is `code`:
    /// [`Reply::Confirmed`], or an error when no prompt with that code is
    /// open.
    PairConfirm {
        /// The 6-digit code the agent shows.
        code: String,
    },
    /// The CA it issues session certificates with: [`Reply::Ca`].
    Ca,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Status => f.write_str("Status"),
            Request::Lock => f.write_str("Lock"),
            Request::Unlock { .. } => f.write_str("Unlock { passphrase: <hidden> }"),
            Request::Unpair { id } => f.debug_struct("Unpair").field("id", id).finish(),
            Request::PhoneAdd { name } => f.debug_struct("PhoneAdd").field("name", name).finish(),
            Request::Phones => f.write_str("Phones"),
            Request::PhoneRemove { name } => {
                f.debug_struct("PhoneRemove").field("name", name).finish()
            }
            Request::PairPending => f.write_str("PairPending"),
            Request::PairConfirm { code } => {
                f.debug_struct("PairConfirm").field("code", code).finish()
            }
            Request::Ca => f.write_str("Ca"),
        }
    }
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// To [`Request::Status`].
    Status(Status),
    /// To [`Request::Lock`] and [`Request::Unlock`]: whether it is locked
    /// now.
    Locked(bool),
    /// To [`Request::Unpair`]: the agent unpaired; `None` when no agent
    /// (or more than one) matches.
    Unpaired(Option<AgentRef>),
    /// To [`Request::PhoneAdd`].
    PhoneLink(PhoneLink),
    /// To [`Request::Phones`].
    Phones(PhoneList),
    /// To [`Request::PhoneRemove`]: the phone's name.
    Removed(String),
    /// To [`Request::PairPending`]: the open prompt, `None` when none is
    /// open.
    Pairing(Option<PendingPairing>),
    /// To [`Request::PairConfirm`]: the agent whose pairing was approved.
    Confirmed(PairingAgent),
    /// To [`Request::Ca`].
    Ca(CaLines),
    /// The request was refused, or failed: why, in a sentence.
    Error(String),
}

/// What [`Request::Status`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The signer's name.
    pub name: String,
    /// Whether its secrets are locked away.
    pub locked: bool,
}

/// A paired (or pairing) agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The pairing prompt open on the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPairing {
    /// The agent's name (its claim).
    pub agent: String,
    /// The agent's id, from its static key.
    pub id: String,
    /// The code both sides show.
    pub code: String,
}

/// The agent of a pairing the signer's owner approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingAgent {
    /// The agent's name (its claim).
    pub agent: String,
    /// The agent's id, from its static key.
    pub id: String,
}

/// A new phone's enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneLink {
    /// The one-time enrolment link.
    pub link: String,
    /// When the page's certificate is the signer's own: the one-time
    /// plain-HTTP link that installs its CA on the phone.
    pub trust: Option<TrustLink>,
}

/// A one-time link to the signer's CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustLink {
    /// `http://IP:PORT/TOKEN`.
    pub url: String,
    /// The CA's SHA-256 fingerprint, to compare with the trust page's.
    pub fingerprint: String,
}

/// The enrolled phones, and where their page is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneList {
    /// The phones.
    pub phones: Vec<Phone>,
    /// The page's origin.
    pub origin: String,
}

/// A phone as `vmux signer phones` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    /// Its name.
    pub name: String,
    /// When it was enrolled, Unix seconds.
    pub added_at: u64,
    /// When it last signed in or decided.
    pub last_seen: Option<u64>,
    /// Whether it has a page open now.
    pub online: bool,
    /// How many Web Push subscriptions it has (it can be woken if any).
    pub push: usize,
    /// What became of its last push since the signer started.
    pub last_push: Option<LastPush>,
}

/// What became of a phone's last push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPush {
    /// When it was sent, Unix seconds.
    pub sent_at: Option<u64>,
    /// What the push service said, in words.
    pub result: Option<String>,
    /// When the phone's page opened or it decided after that push.
    pub answered_at: Option<u64>,
}

/// A CA as `vmux signer ca` prints it: what sshd is to trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaLines {
    /// The CA, as `--ca` takes it.
    pub ca: String,
    /// The public-key lines for sshd's `TrustedUserCAKeys`: the software
    /// CA's, or each enrolled CA phone's passkey line.
    pub lines: Vec<String>,
    /// The CA phones not enrolled (removed?), which sign nothing.
    pub missing: Vec<String>,
    /// The `sshd_config` lines a server before OpenSSH 10.3 also needs.
    pub sshd: Vec<String>,
}

impl Request {
    /// The request in one line (without its newline): `None` for
    /// anything that is not exactly one request.
    pub fn from_line(line: &str) -> Option<Request> {
        serde_json::from_str(line).ok()
    }
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
    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        // Serializing these types cannot fail (no maps, no foreign types).
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// A client of the signer's control socket: each request on a
/// connection of its own, blocking, with a bounded wait.
#[derive(Debug, Clone)]
pub struct Client {
    socket: Socket,
}

impl Client {
    /// A client of the signer whose control socket is `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: Socket::new(Peer::Signer, socket.into()),
        }
    }

    calls! {
        /// Whether it runs and is locked.
        fn status() -> Status = Request::Status => Reply::Status;

        /// Forgets its decrypted secrets: whether it says it is locked now.
        fn lock() -> bool = Request::Lock => Reply::Locked;

        /// Unpairs the agent whose id (or unambiguous prefix) is `id`: the
        /// agent, `None` when no agent (or more than one) matches.
        fn unpair(id: &str) -> Option<AgentRef> =
            Request::Unpair { id: id.to_owned() } => Reply::Unpaired;

        /// A one-time enrolment link for a new phone called `name`.
        fn phone_add(name: &str) -> PhoneLink =
            Request::PhoneAdd { name: name.to_owned() } => Reply::PhoneLink;

        /// The enrolled phones.
        fn phones() -> PhoneList = Request::Phones => Reply::Phones;

        /// Revokes the phone called `name`: its name.
        fn phone_remove(name: &str) -> String =
            Request::PhoneRemove { name: name.to_owned() } => Reply::Removed;

        /// The open pairing prompt, if any.
        fn pair_pending() -> Option<PendingPairing> = Request::PairPending => Reply::Pairing;

        /// Approves the open pairing prompt if its code is `code`: the agent.
        fn pair_confirm(code: &str) -> PairingAgent =
            Request::PairConfirm { code: code.to_owned() } => Reply::Confirmed;

        /// The CA it issues session certificates with.
        fn ca() -> CaLines = Request::Ca => Reply::Ca;
    }

    /// Decrypts its secrets with `passphrase`.
    pub fn unlock(&self, passphrase: &Zeroizing<String>) -> Result<(), ControlError> {
        let request = Request::Unlock {
            passphrase: passphrase.clone(),
        };
        self.socket.take(self.request(&request), |r| match r {
            Reply::Locked(false) => Some(()),
            _ => None,
        })
    }

    /// Sends `request` and returns the signer's reply, whatever it is (an
    /// [`Reply::Error`] included).
    pub fn request(&self, request: &Request) -> Result<Reply, ControlError> {
        let mut s = self.socket.connect(TIMEOUT)?;
        // The line holds the passphrase of an unlock: wiped once sent.
        let mut line =
            Zeroizing::new(serde_json::to_string(request).map_err(|_| self.socket.not_vmux())?);
        line.push('\n');
        // A signer that went away just now is one that does not run.
        s.write_all(line.as_bytes())
            .map_err(|_| self.socket.not_running())?;
        let mut answer = String::new();
        let read = BufReader::new(s.take(MAX_ANSWER as u64 + 1)).read_line(&mut answer);
        match read {
            Ok(_) if answer.ends_with('\n') => {
                serde_json::from_str(&answer).map_err(|_| self.socket.not_vmux())
            }
            // Cut (closed early or longer than MAX_ANSWER), not text, or
            // no answer in time.
            _ => Err(self.socket.not_vmux()),
        }
    }
}

#[cfg(test)]
mod tests;
