//! The messages agents and signers exchange once the link is encrypted.

use crate::codec::{Reader, Writer};
use crate::pairing::PAIR_NONCE_LEN;
use crate::{DecodeError, ErrorCode};

/// Protocol version spoken by this build. Carried in [`Hello`] and
/// [`Welcome`]; a peer with another major version is refused. Version 2
/// added the binding proof and the executable to [`SignContext`].
pub const PROTOCOL_VERSION: u32 = 2;

/// Length of request ids and request nonces.
pub const REQUEST_ID_LEN: usize = 16;

/// A request id: random, unique per request, echoed in the response.
pub type RequestId = [u8; REQUEST_ID_LEN];

/// Message type bytes (the first byte of every message).
mod kind {
    pub const HELLO: u8 = 1;
    pub const PAIR_START: u8 = 2;
    pub const PAIR_COMMIT: u8 = 3;
    pub const PAIR_NONCE: u8 = 4;
    pub const PAIR_REVEAL: u8 = 5;
    pub const WELCOME: u8 = 6;
    pub const REFUSED: u8 = 7;
    pub const KEY_LIST_REQUEST: u8 = 10;
    pub const KEY_LIST: u8 = 11;
    pub const SIGN_REQUEST: u8 = 12;
    pub const SIGN_RESPONSE: u8 = 13;
    pub const CERT_REQUEST: u8 = 14;
    pub const CERT_RESPONSE: u8 = 15;
    pub const WAKE_ENDPOINT: u8 = 16;
    pub const PING: u8 = 30;
    pub const PONG: u8 = 31;
}

/// Agent → signer, first message on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the agent.
    pub version: u32,
    /// The agent's display name (e.g. the workstation's host name).
    pub name: String,
    /// The agent has no pin for this signer and asks to pair (with a code)
    /// even if the signer knows the agent.
    pub want_pairing: bool,
}

/// Signer → agent: the agent is paired; the session is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// [`PROTOCOL_VERSION`] of the signer.
    pub version: u32,
    /// The signer's display name.
    pub name: String,
}

/// Signer → agent: the connection is refused and will be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why, as a shared error code.
    pub code: ErrorCode,
    /// One human-readable sentence.
    pub message: String,
}

/// Where a key's private half lives (the brief's `providerKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Not known.
    Unknown,
    /// A phone's secure enclave.
    SecureEnclave,
    /// A hardware token reached through PKCS#11.
    HardwareToken,
    /// A software key file on the signer.
    Software,
    /// A phone's passkey (WebAuthn), decided and signed on that phone.
    Passkey,
}

impl ProviderKind {
    /// The name used on the wire and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Unknown => "unknown",
            ProviderKind::SecureEnclave => "secureEnclave",
            ProviderKind::HardwareToken => "hardwareToken",
            ProviderKind::Software => "software",
            ProviderKind::Passkey => "passkey",
        }
    }

    /// Parses a wire name; names from newer peers become `Unknown`.
    pub fn parse(s: &str) -> ProviderKind {
        match s {
            "secureEnclave" => ProviderKind::SecureEnclave,
            "hardwareToken" => ProviderKind::HardwareToken,
            "software" => ProviderKind::Software,
            "passkey" => ProviderKind::Passkey,
            _ => ProviderKind::Unknown,
        }
    }
}

/// One public identity the signer offers (the brief's
/// `RemoteSignerPublicKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// SSH algorithm name, e.g. `ecdsa-sha2-nistp256`.
    pub algorithm: String,
    /// The OpenSSH public-key blob.
    pub public_key_blob: Vec<u8>,
    /// The key's comment.
    pub comment: String,
    /// Where the private key lives.
    pub provider_kind: ProviderKind,
    /// Optional friendly name (on the wire, the empty string when unset;
    /// so never `Some("")`).
    pub display_name: Option<String>,
}

/// How much the agent knows about where a signature will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContextQuality {
    /// Nothing is known.
    #[default]
    Unknown,
    /// Parsed from the data to sign, not bound to a verified host key.
    Claimed,
    /// Parsed and bound to a host key whose signature the agent checked.
    Verified,
}

impl ContextQuality {
    /// Every quality, least sure first.
    pub const ALL: [ContextQuality; 3] = [
        ContextQuality::Unknown,
        ContextQuality::Claimed,
        ContextQuality::Verified,
    ];

    /// The quality named `s` (as [`ContextQuality::as_str`] spells it),
    /// if any.
    pub fn parse(s: &str) -> Option<ContextQuality> {
        ContextQuality::ALL.into_iter().find(|q| q.as_str() == s)
    }

    /// The name used on the wire and for `VMUX_CONTEXT_QUALITY`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextQuality::Unknown => "unknown",
            ContextQuality::Claimed => "claimed",
            ContextQuality::Verified => "verified",
        }
    }

    fn from_wire(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(ContextQuality::Unknown),
            1 => Ok(ContextQuality::Claimed),
            2 => Ok(ContextQuality::Verified),
            _ => Err(DecodeError::BadValue("context quality")),
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            ContextQuality::Unknown => 0,
            ContextQuality::Claimed => 1,
            ContextQuality::Verified => 2,
        }
    }
}

/// The proof of a `session-bind@openssh.com` binding, as the agent got it
/// from the SSH client: the server's host key signed the session id. The
/// signer verifies it itself; unverified bytes here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindingProof {
    /// The server's host-key blob.
    pub host_key: Vec<u8>,
    /// The SSH session id.
    pub session_id: Vec<u8>,
    /// The host key's signature over the session id (an SSH signature
    /// blob).
    pub signature: Vec<u8>,
}

/// What the agent knows about a sign request's purpose. Every string is
/// `None` when unknown (on the wire, the empty string; so never
/// `Some("")`). The signer treats all of it as the agent's claim and
/// checks what it can itself (the binding proof against the data).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignContext {
    /// How sure the agent is of `dest_host` and `dest_user`.
    pub quality: ContextQuality,
    /// Destination host name(s).
    pub dest_host: Option<String>,
    /// Destination user.
    pub dest_user: Option<String>,
    /// The requesting process on the workstation (e.g. `ssh ← bash`).
    pub process: Option<String>,
    /// `ssh-keygen -Y` namespace when the data is an SSHSIG.
    pub namespace: Option<String>,
    /// The request came through a forwarded agent connection.
    pub forwarded: bool,
    /// The requesting process's executable, as the kernel names it
    /// (`/proc/PID/exe`).
    pub executable: Option<String>,
    /// The binding the login is for, when the client made one for this
    /// session (the connection's last binding, not a forwarding one).
    pub binding: Option<BindingProof>,
}

/// Agent → signer: sign `data` with the key whose blob is `key_blob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    /// Random id, echoed in the response.
    pub request_id: RequestId,
    /// The identity's OpenSSH public-key blob.
    pub key_blob: Vec<u8>,
    /// The bytes to sign, exactly as the SSH client sent them.
    pub data: Vec<u8>,
    /// The SSH agent protocol's sign flags (`SSH_AGENT_RSA_SHA2_256` = 2,
    /// `SSH_AGENT_RSA_SHA2_512` = 4).
    pub flags: u32,
    /// Random, never reused: the signer refuses a nonce it has seen.
    pub nonce: [u8; REQUEST_ID_LEN],
    /// When the agent made the request, Unix milliseconds.
    pub issued_at_ms: u64,
    /// When the request stops being valid, Unix milliseconds.
    pub expires_at_ms: u64,
    /// What the agent knows about the request.
    pub context: SignContext,
}

/// Signer → agent: the answer to a [`SignRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignResponse {
    /// The request's id.
    pub request_id: RequestId,
    /// The SSH signature blob (string algorithm, string signature), or why
    /// there is none.
    pub result: Result<Vec<u8>, ErrorCode>,
}

/// Agent → signer: issue a session certificate for an ephemeral key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// Random id, echoed in the response.
    pub request_id: RequestId,
    /// The ephemeral public key's OpenSSH blob (the agent keeps the
    /// private half in memory only).
    pub public_key_blob: Vec<u8>,
    /// Validity the agent asks for, seconds (the signer may shorten it).
    pub validity_seconds: u64,
    /// The agent asks on its own (on connecting or renewing), not because a
    /// person ran `vmux agent cert`. Refused when the signer's policy turns
    /// automatic issue off.
    pub automatic: bool,
}

/// A certificate the signer's CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The OpenSSH certificate blob.
    pub certificate: Vec<u8>,
    /// The CA's public-key blob.
    pub ca_public_key: Vec<u8>,
    /// Start of validity, Unix seconds.
    pub valid_after: u64,
    /// End of validity, Unix seconds.
    pub valid_before: u64,
}

/// Signer → agent: the answer to a [`CertRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertResponse {
    /// The request's id.
    pub request_id: RequestId,
    /// The certificate, or why there is none.
    pub result: Result<IssuedCert, ErrorCode>,
}

/// How to wake a signer that is asleep (the brief's device-token update).
/// Nothing in it authorises anything: it only says where to send a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeEndpoint {
    /// The signer cannot be woken; forget any earlier endpoint.
    None,
    /// An Apple Push Notification service device token.
    Apns {
        /// The device token, hex.
        device_token: String,
        /// The app's bundle id (`apns-topic`).
        topic: String,
        /// The sandbox (development) environment rather than production.
        sandbox: bool,
    },
    /// An HTTPS webhook (UnifiedPush / ntfy style).
    Webhook {
        /// The `https://` URL to POST to.
        url: String,
    },
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
// A message lives for one send or one receive: boxing the sign request
// would only add an allocation on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// Agent → signer, first message after the handshake.
    Hello(Hello),
    /// Signer → agent: the agent is not paired; pairing starts.
    PairStart,
    /// Agent → signer: commitment to the agent's pairing nonce.
    PairCommit([u8; 32]),
    /// Signer → agent: the signer's pairing nonce.
    PairNonce([u8; PAIR_NONCE_LEN]),
    /// Agent → signer: the agent's pairing nonce, opening the commitment.
    PairReveal([u8; PAIR_NONCE_LEN]),
    /// Signer → agent: the session is open.
    Welcome(Welcome),
    /// Signer → agent: the connection is refused.
    Refused(Refused),
    /// Agent → signer: send the key list.
    KeyListRequest,
    /// Signer → agent: the identities the signer offers.
    KeyList(Vec<KeyRecord>),
    /// Agent → signer: sign something.
    SignRequest(SignRequest),
    /// Signer → agent: a signature or an error.
    SignResponse(SignResponse),
    /// Agent → signer: issue a session certificate.
    CertRequest(CertRequest),
    /// Signer → agent: a certificate or an error.
    CertResponse(CertResponse),
    /// Signer → agent: where to send wake pushes, sent after the session
    /// opens and whenever it changes.
    WakeEndpoint(WakeEndpoint),
    /// Either way: are you there?
    Ping(u64),
    /// Either way: the answer to [`Message::Ping`].
    Pong(u64),
}

impl Message {
    /// A short name for logs (never the contents).
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::PairStart => "PairStart",
            Message::PairCommit(_) => "PairCommit",
            Message::PairNonce(_) => "PairNonce",
            Message::PairReveal(_) => "PairReveal",
            Message::Welcome(_) => "Welcome",
            Message::Refused(_) => "Refused",
            Message::KeyListRequest => "KeyListRequest",
            Message::KeyList(_) => "KeyList",
            Message::SignRequest(_) => "SignRequest",
            Message::SignResponse(_) => "SignResponse",
            Message::CertRequest(_) => "CertRequest",
            Message::CertResponse(_) => "CertResponse",
            Message::WakeEndpoint(_) => "WakeEndpoint",
            Message::Ping(_) => "Ping",
            Message::Pong(_) => "Pong",
        }
    }

    /// Encodes the message: its type byte, then its fields.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Hello(h) => Writer::new(kind::HELLO)
                .u32(h.version)
                .str(&h.name)
                .bool(h.want_pairing)
                .finish(),
            Message::PairStart => Writer::new(kind::PAIR_START).finish(),
            Message::PairCommit(c) => Writer::new(kind::PAIR_COMMIT).fixed(c).finish(),
            Message::PairNonce(n) => Writer::new(kind::PAIR_NONCE).fixed(n).finish(),
            Message::PairReveal(n) => Writer::new(kind::PAIR_REVEAL).fixed(n).finish(),
            Message::Welcome(w) => Writer::new(kind::WELCOME)
                .u32(w.version)
                .str(&w.name)
                .finish(),
            Message::Refused(r) => Writer::new(kind::REFUSED)
                .u32(r.code.to_wire())
                .str(&r.message)
                .finish(),
            Message::KeyListRequest => Writer::new(kind::KEY_LIST_REQUEST).finish(),
            Message::KeyList(keys) => {
                let mut w = Writer::new(kind::KEY_LIST);
                w.u32(keys.len() as u32);
                for k in keys {
                    w.str(&k.algorithm)
                        .bytes(&k.public_key_blob)
                        .str(&k.comment)
                        .str(k.provider_kind.as_str())
                        .opt_str(k.display_name.as_deref());
                }
                w.finish()
            }
            Message::SignRequest(r) => {
                let mut w = Writer::new(kind::SIGN_REQUEST);
                w.fixed(&r.request_id)
                    .bytes(&r.key_blob)
                    .bytes(&r.data)
                    .u32(r.flags)
                    .fixed(&r.nonce)
                    .u64(r.issued_at_ms)
                    .u64(r.expires_at_ms)
                    .u8(r.context.quality.to_wire())
                    .opt_str(r.context.dest_host.as_deref())
                    .opt_str(r.context.dest_user.as_deref())
                    .opt_str(r.context.process.as_deref())
                    .opt_str(r.context.namespace.as_deref())
                    .bool(r.context.forwarded)
                    .opt_str(r.context.executable.as_deref());
                match &r.context.binding {
                    None => w.bool(false),
                    Some(b) => w
                        .bool(true)
                        .bytes(&b.host_key)
                        .bytes(&b.session_id)
                        .bytes(&b.signature),
                };
                w.finish()
            }
            Message::SignResponse(r) => {
                let mut w = Writer::new(kind::SIGN_RESPONSE);
                w.fixed(&r.request_id);
                match &r.result {
                    Ok(sig) => w.u32(0).bytes(sig),
                    Err(code) => w.u32(code.to_wire()),
                };
                w.finish()
            }
            Message::CertRequest(r) => Writer::new(kind::CERT_REQUEST)
                .fixed(&r.request_id)
                .bytes(&r.public_key_blob)
                .u64(r.validity_seconds)
                .bool(r.automatic)
                .finish(),
            Message::CertResponse(r) => {
                let mut w = Writer::new(kind::CERT_RESPONSE);
                w.fixed(&r.request_id);
                match &r.result {
                    Ok(c) => w
                        .u32(0)
                        .bytes(&c.certificate)
                        .bytes(&c.ca_public_key)
                        .u64(c.valid_after)
                        .u64(c.valid_before),
                    Err(code) => w.u32(code.to_wire()),
                };
                w.finish()
            }
            Message::WakeEndpoint(w) => {
                let mut m = Writer::new(kind::WAKE_ENDPOINT);
                match w {
                    WakeEndpoint::None => m.u8(0),
                    WakeEndpoint::Apns {
                        device_token,
                        topic,
                        sandbox,
                    } => m.u8(1).str(device_token).str(topic).bool(*sandbox),
                    WakeEndpoint::Webhook { url } => m.u8(2).str(url),
                };
                m.finish()
            }
            Message::Ping(n) => Writer::new(kind::PING).u64(*n).finish(),
            Message::Pong(n) => Writer::new(kind::PONG).u64(*n).finish(),
        }
    }

    /// Decodes one whole message. Every malformed input is an error; the
    /// decoder never allocates more than the input's length.
    pub fn decode(input: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(input);
        if r.is_empty() {
            return Err(DecodeError::Empty);
        }
        let msg = match r.u8()? {
            kind::HELLO => Message::Hello(Hello {
                version: r.u32()?,
                name: r.string()?,
                want_pairing: r.bool()?,
            }),
            kind::PAIR_START => Message::PairStart,
            kind::PAIR_COMMIT => Message::PairCommit(r.fixed()?),
            kind::PAIR_NONCE => Message::PairNonce(r.fixed()?),
            kind::PAIR_REVEAL => Message::PairReveal(r.fixed()?),
            kind::WELCOME => Message::Welcome(Welcome {
                version: r.u32()?,
                name: r.string()?,
            }),
            kind::REFUSED => Message::Refused(Refused {
                code: ErrorCode::from_wire(r.u32()?),
                message: r.string()?,
            }),
            kind::KEY_LIST_REQUEST => Message::KeyListRequest,
            kind::KEY_LIST => {
                let n = r.u32()?;
                let mut keys = Vec::new();
                for _ in 0..n {
                    keys.push(KeyRecord {
                        algorithm: r.string()?,
                        public_key_blob: r.bytes()?.to_vec(),
                        comment: r.string()?,
                        provider_kind: ProviderKind::parse(&r.string()?),
                        display_name: r.opt_string()?,
                    });
                }
                Message::KeyList(keys)
            }
            kind::SIGN_REQUEST => Message::SignRequest(SignRequest {
                request_id: r.fixed()?,
                key_blob: r.bytes()?.to_vec(),
                data: r.bytes()?.to_vec(),
                flags: r.u32()?,
                nonce: r.fixed()?,
                issued_at_ms: r.u64()?,
                expires_at_ms: r.u64()?,
                context: SignContext {
                    quality: ContextQuality::from_wire(r.u8()?)?,
                    dest_host: r.opt_string()?,
                    dest_user: r.opt_string()?,
                    process: r.opt_string()?,
                    namespace: r.opt_string()?,
                    forwarded: r.bool()?,
                    executable: r.opt_string()?,
                    binding: if r.bool()? {
                        Some(BindingProof {
                            host_key: r.bytes()?.to_vec(),
                            session_id: r.bytes()?.to_vec(),
                            signature: r.bytes()?.to_vec(),
                        })
                    } else {
                        None
                    },
                },
            }),
            kind::SIGN_RESPONSE => {
                let request_id = r.fixed()?;
                let result = match r.u32()? {
                    0 => Ok(r.bytes()?.to_vec()),
                    code => Err(ErrorCode::from_wire(code)),
                };
                Message::SignResponse(SignResponse { request_id, result })
            }
            kind::CERT_REQUEST => Message::CertRequest(CertRequest {
                request_id: r.fixed()?,
                public_key_blob: r.bytes()?.to_vec(),
                validity_seconds: r.u64()?,
                automatic: r.bool()?,
            }),
            kind::CERT_RESPONSE => {
                let request_id = r.fixed()?;
                let result = match r.u32()? {
                    0 => Ok(IssuedCert {
                        certificate: r.bytes()?.to_vec(),
                        ca_public_key: r.bytes()?.to_vec(),
                        valid_after: r.u64()?,
                        valid_before: r.u64()?,
                    }),
                    code => Err(ErrorCode::from_wire(code)),
                };
                Message::CertResponse(CertResponse { request_id, result })
            }
            kind::WAKE_ENDPOINT => Message::WakeEndpoint(match r.u8()? {
                0 => WakeEndpoint::None,
                1 => WakeEndpoint::Apns {
                    device_token: r.string()?,
                    topic: r.string()?,
                    sandbox: r.bool()?,
                },
                2 => WakeEndpoint::Webhook { url: r.string()? },
                _ => return Err(DecodeError::BadValue("wake endpoint kind")),
            }),
            kind::PING => Message::Ping(r.u64()?),
            kind::PONG => Message::Pong(r.u64()?),
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.end()?;
        Ok(msg)
    }
}
