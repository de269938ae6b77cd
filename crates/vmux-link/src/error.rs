use std::io;

use vmux_proto::{DecodeError, ErrorCode};

/// Everything that can go wrong on the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The TCP connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer did not answer in time.
    #[error("the peer did not answer in time")]
    Timeout,
    /// The Noise handshake or decryption failed (wrong key, tampering).
    #[error("encryption handshake failed: {0}")]
    Noise(#[from] snow::Error),
    /// The peer does not speak the vmux link protocol.
    #[error("the peer does not speak the vmux link protocol")]
    BadPreamble,
    /// A frame or message is larger than the protocol allows.
    #[error("the peer sent an oversized message")]
    TooLarge,
    /// A message could not be decoded.
    #[error("the peer sent a malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// A message arrived that is not allowed at this point.
    #[error("the peer sent {got} where {expected} was expected")]
    Unexpected {
        /// What the protocol allows here.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// The peer speaks another protocol version.
    #[error("the peer speaks protocol version {0}, this build speaks {1}")]
    Version(u32, u32),
    /// The signer presented a different static key than the one pinned.
    #[error("signer presented key {got}, but {expected} is pinned for it; refusing (to pair with the signer there, run `vmux agent pair --signer HOST:PORT`)")]
    PinMismatch {
        /// The pinned signer's id.
        expected: String,
        /// The id of the key presented.
        got: String,
    },
    /// The signer at a pinned signer's address failed the IK handshake:
    /// it does not hold the pinned key.
    #[error("the signer there could not prove it holds the pinned key {expected}; refusing (to pair with the signer there, run `vmux agent pair --signer HOST:PORT`)")]
    PinUnproven {
        /// The pinned signer's id.
        expected: String,
    },
    /// The pairing commitment did not open: someone tampered with pairing.
    #[error("pairing commitment did not match; pairing aborted")]
    BadCommitment,
    /// The agent's user typed a code other than this pairing's.
    #[error("the code confirmed on this agent is not this pairing's code; pairing refused, nothing pinned")]
    CodeMismatch,
    /// The agent's user refused the pairing or did not confirm it in time.
    #[error("the pairing was not confirmed on this agent; nothing pinned")]
    NotConfirmed,
    /// No pinned key is proven at this address, and the agent may not
    /// pair there by itself (it has pinned signers, or its user refused).
    #[error("no pinned signer answers at {0}, and this agent pairs with a new signer only when its user asks; to pair with the signer there run `vmux agent pair --signer {0}`")]
    NotPaired(String),
    /// The signer refused the connection.
    #[error("signer refused: {message} ({code})")]
    Refused {
        /// The shared error code.
        code: ErrorCode,
        /// The signer's sentence.
        message: String,
    },
}
