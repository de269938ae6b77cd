//! The vmux agent–signer protocol: messages and their encoding.
//!
//! # Brief overview
//!
//! This crate owns the bytes that travel inside the encrypted link between
//! a vmux agent (on the workstation) and a vmux signer (the device that
//! holds the keys). It encodes and decodes; it does no I/O, no cryptography
//! beyond hashing for the pairing code, and knows nothing about sockets,
//! Noise or SSH agents. `docs/PROTOCOL.md` is its specification.
//!
//! - [`Message`] is every message of the protocol, with
//!   [`Message::encode`] and [`Message::decode`]. The decoder returns a
//!   [`DecodeError`] for every malformed input and never allocates more
//!   than its input's length.
//! - [`ErrorCode`] is the one list of error codes both ends share.
//! - [`DecisionKind`] is the one list of the decisions a person makes
//!   (pair, sign, certificate), shared by the signer's approvers, the
//!   phone page and the audit log.
//! - [`pairing_commitment`] and [`pairing_code`] compute the commitment and
//!   the 6-digit code that make pairing verifiable by a person.
//!
//! ```
//! use vmux_proto::{Message, Hello, PROTOCOL_VERSION};
//! let hello = Message::Hello(Hello { version: PROTOCOL_VERSION, name: "laptop".into(), want_pairing: false });
//! assert_eq!(Message::decode(&hello.encode()).unwrap(), hello);
//! ```
#![deny(missing_docs)]

mod codec;
mod error;
mod kind;
mod message;
mod pairing;
mod text;

pub use error::{DecodeError, ErrorCode};
pub use kind::DecisionKind;
pub use message::{
    BindingProof, CertRequest, CertResponse, ContextQuality, Hello, IssuedCert, KeyRecord, Message,
    ProviderKind, Refused, RequestId, SignContext, SignRequest, SignResponse, WakeEndpoint,
    Welcome, PROTOCOL_VERSION, REQUEST_ID_LEN,
};
pub use pairing::{pairing_code, pairing_commitment, PAIR_NONCE_LEN};
pub use text::sanitize;

/// Sign and certificate requests one agent may have in flight on one link;
/// the signer refuses more with `policyDenied`, so agents queue beyond it.
pub const MAX_IN_FLIGHT: usize = 64;

/// SSH agent sign flag: RSA signature with SHA-256 (`rsa-sha2-256`).
pub const SSH_AGENT_RSA_SHA2_256: u32 = 0x02;
/// SSH agent sign flag: RSA signature with SHA-512 (`rsa-sha2-512`).
pub const SSH_AGENT_RSA_SHA2_512: u32 = 0x04;

#[cfg(test)]
mod tests;
