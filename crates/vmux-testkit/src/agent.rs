//! A client of the SSH agent protocol (draft-miller-ssh-agent), as `ssh`
//! and `ssh-add` speak it: one connection to an agent's socket
//! ([`AgentClient`]) that lists identities, asks for signatures and binds
//! itself to a login session, and the request bodies it sends
//! ([`sign_request`], [`bind_request`], over the data of a login,
//! [`login_data`], written with [`put_string`]) for a test that sends
//! them as it likes. It talks to vmux's agent and to OpenSSH's ssh-agent
//! alike.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub use vmux_ssh::put_string;
use vmux_ssh::Fields;

/// `SSH_AGENT_FAILURE`
pub const FAILURE: u8 = 5;
/// `SSH_AGENT_SUCCESS`
pub const SUCCESS: u8 = 6;
/// `SSH_AGENTC_REQUEST_IDENTITIES`
pub const REQUEST_IDENTITIES: u8 = 11;
/// `SSH_AGENT_IDENTITIES_ANSWER`
pub const IDENTITIES_ANSWER: u8 = 12;
/// `SSH_AGENTC_SIGN_REQUEST`
pub const SIGN_REQUEST: u8 = 13;
/// `SSH_AGENT_SIGN_RESPONSE`
pub const SIGN_RESPONSE: u8 = 14;
/// `SSH_AGENTC_EXTENSION`
pub const EXTENSION: u8 = 27;

/// What went wrong talking to an agent.
#[derive(Debug)]
pub enum AgentError {
    /// The socket failed (connecting, writing or reading).
    Io(std::io::Error),
    /// The agent answered with bytes that are not the expected message.
    Malformed(&'static str),
    /// The agent answered a request with another message (a failure).
    Refused {
        /// The request refused, e.g. "sign".
        request: &'static str,
        /// The type of the message it answered with.
        answer: Option<u8>,
    },
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Io(e) => write!(f, "the agent's socket failed: {e}"),
            AgentError::Malformed(what) => write!(f, "the agent's answer is malformed: {what}"),
            AgentError::Refused { request, answer } => {
                write!(
                    f,
                    "the agent refused the {request} request (answer {answer:?})"
                )
            }
        }
    }
}

impl std::error::Error for AgentError {}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        AgentError::Io(e)
    }
}

/// One identity an agent lists: its public key blob and comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The public key (or certificate) in SSH wire encoding.
    pub blob: Vec<u8>,
    /// Its comment.
    pub comment: String,
}

impl Identity {
    /// The key's algorithm name as the blob starts with it, e.g.
    /// `ssh-ed25519`.
    pub fn key_type(&self) -> &[u8] {
        Fields(&self.blob).string().unwrap_or_default()
    }
}

/// One connection to an agent's socket.
pub struct AgentClient {
    stream: UnixStream,
}

impl AgentClient {
    /// Connects to the agent listening on `sock`.
    pub fn connect(sock: &Path) -> Result<AgentClient, AgentError> {
        Ok(AgentClient {
            stream: UnixStream::connect(sock)?,
        })
    }

    /// The socket (e.g. to set a read timeout).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one message `body` (its type byte first) and returns the
    /// answer's body.
    pub fn call(&mut self, body: &[u8]) -> Result<Vec<u8>, AgentError> {
        self.stream.write_all(&frame(body))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut answer)?;
        Ok(answer)
    }

    /// The identities the agent lists.
    pub fn identities(&mut self) -> Result<Vec<Identity>, AgentError> {
        let answer = self.call(&[REQUEST_IDENTITIES])?;
        let mut r = Fields(&answer);
        let kind = r.u8().ok_or(AgentError::Malformed("an empty answer"))?;
        if kind != IDENTITIES_ANSWER {
            return Err(AgentError::Refused {
                request: "identities",
                answer: Some(kind),
            });
        }
        let n = r.u32().ok_or(AgentError::Malformed("no identity count"))?;
        (0..n)
            .map(|_| {
                let blob = r
                    .string()
                    .ok_or(AgentError::Malformed("a short key blob"))?;
                let comment = r.string().ok_or(AgentError::Malformed("a short comment"))?;
                Ok(Identity {
                    blob: blob.to_vec(),
                    comment: String::from_utf8_lossy(comment).into_owned(),
                })
            })
            .collect()
    }

    /// Asks the agent to sign `data` with the key `blob` (no flags);
    /// returns the signature blob.
    pub fn sign(&mut self, blob: &[u8], data: &[u8]) -> Result<Vec<u8>, AgentError> {
        let answer = self.call(&sign_request(blob, data, 0))?;
        match answer.split_first() {
            Some((&SIGN_RESPONSE, r)) => Fields(r)
                .string()
                .map(<[u8]>::to_vec)
                .ok_or(AgentError::Malformed("a short signature")),
            other => Err(AgentError::Refused {
                request: "sign",
                answer: other.map(|(k, _)| *k),
            }),
        }
    }

    /// Binds this connection to the login session `session_id` with the
    /// host key `host`, as `ssh` does (`session-bind@openssh.com`),
    /// marked as forwarding when `forwarding`.
    pub fn bind(
        &mut self,
        host: &ssh_key::PrivateKey,
        session_id: &[u8],
        forwarding: bool,
    ) -> Result<(), AgentError> {
        match self
            .call(&bind_request(host, session_id, forwarding))?
            .first()
        {
            Some(&SUCCESS) => Ok(()),
            other => Err(AgentError::Refused {
                request: "session-bind",
                answer: other.copied(),
            }),
        }
    }
}

/// `body` with its length in front, as it goes on the socket.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut m = (body.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

/// The body of a sign request for the key `blob` over `data`.
pub fn sign_request(blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
    let mut b = vec![SIGN_REQUEST];
    put_string(&mut b, blob);
    put_string(&mut b, data);
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// The data `ssh` has the agent sign to log in as `user` with a public
/// key (RFC 4252 §7): the session id, the user, the service and method,
/// and the key's algorithm `key_type` and `blob`.
pub fn login_data(session_id: &[u8], user: &str, key_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    put_string(&mut data, session_id);
    data.push(50);
    put_string(&mut data, user.as_bytes());
    put_string(&mut data, b"ssh-connection");
    put_string(&mut data, b"publickey");
    data.push(1);
    put_string(&mut data, key_type.as_bytes());
    put_string(&mut data, blob);
    data
}

/// The body of a `session-bind@openssh.com` request: `host`'s public key,
/// the session id, `host`'s signature over it, and the forwarding flag.
/// Panics if `host` cannot sign, as a test's own key always can.
pub fn bind_request(host: &ssh_key::PrivateKey, session_id: &[u8], forwarding: bool) -> Vec<u8> {
    bind_request_signing(host, session_id, session_id, forwarding)
}

/// [`bind_request`] with the signature over `signed` instead of the
/// session id: a bind an agent must refuse when they differ.
pub fn bind_request_signing(
    host: &ssh_key::PrivateKey,
    session_id: &[u8],
    signed: &[u8],
    forwarding: bool,
) -> Vec<u8> {
    use signature::Signer as _;
    let sig: ssh_key::Signature = host.try_sign(signed).expect("the host key signs");
    let mut b = vec![EXTENSION];
    put_string(&mut b, b"session-bind@openssh.com");
    put_string(&mut b, &host.public_key().to_bytes().expect("a host key"));
    put_string(&mut b, session_id);
    put_string(&mut b, &Vec::<u8>::try_from(sig).expect("a signature"));
    b.push(u8::from(forwarding));
    b
}

/// The key blob of an OpenSSH public-key line (`TYPE BASE64 COMMENT`);
/// panics if the line has none.
pub fn key_blob(line: &str) -> Vec<u8> {
    use base64::Engine;
    line.split_whitespace()
        .nth(1)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| panic!("no key blob in {line:?}"))
}
