//! The link between a vmux agent and a vmux signer.
//!
//! # Brief overview
//!
//! This crate owns everything between a TCP connection and a trusted
//! session: the Noise XX handshake (X25519, ChaChaPoly, BLAKE2s), framing
//! and chunking of [`vmux_proto::Message`]s, device identities, and the
//! pairing exchange whose 6-digit code a person compares on both devices.
//! It does not decide anything: the signer's [`PairingGate`] says who is
//! paired and asks the person; the agent says which key it has pinned.
//!
//! - [`Identity`]: a device's static key pair, stored mode 0600.
//! - [`Channel`]: an encrypted, authenticated message channel, split into
//!   [`ChannelReader`] and [`ChannelWriter`].
//! - [`open_as_agent`] / [`open_as_signer`]: hello, pairing and pinning,
//!   giving an [`AgentSession`] or a [`SignerSession`]; nothing else can
//!   make one.
//! - [`LinkError`]: what went wrong, by kind.
#![deny(missing_docs)]

mod channel;
mod error;
mod identity;
pub mod mdns;
mod session;
#[cfg(feature = "testing")]
pub mod testing;

pub use channel::{
    Channel, ChannelReader, ChannelWriter, HANDSHAKE_TIMEOUT, MAX_MESSAGE, NOISE_PARAMS,
    NOISE_PARAMS_IK, PREAMBLE, PREAMBLE_IK,
};
pub use error::LinkError;
pub use identity::{device_id, open as open_sealed, seal, Identity, StaticKey, STATIC_KEY_LEN};
pub use session::{
    open_as_agent, open_as_signer, AgentAnswer, AgentSession, Expect, Opened, PairingGate,
    PairingPermit, PairingRequest, Peer, PendingPairing, SignerSession, PAIRING_VERDICT_TIMEOUT,
    STEP_TIMEOUT,
};

#[cfg(test)]
mod tests;
