//! The vmux agent: an SSH agent that holds no private keys.
//!
//! # Brief overview
//!
//! The agent serves the OpenSSH agent protocol on a Unix socket (mode
//! 0600, owner only) and answers from a cache of public keys; it forwards
//! every signature to the paired signer that holds the key, over the
//! encrypted link of `vmux-link`, and verifies what comes back before an
//! SSH client sees it. It owns the socket, the client loop, the key cache
//! and the signer connections; it holds no private keys.
//!
//! - [`wire`]: the SSH agent protocol messages (no I/O).
//! - [`AgentSocket`]: creating the socket safely.
//! - [`AgentConfig`] and [`run`]: the running agent: an accept loop, one
//!   small loop per client whose permissions [`origin::trust`] decides,
//!   signing through signers, discovery of signers.
//! - [`AgentState`]: pinned signers (each with the CA it certifies with)
//!   and cached keys, on disk.
//! - pairing: a new signer is pinned only when the signer's person
//!   approved and this agent's user confirmed the same code; an agent with
//!   pinned signers pairs only when its user asks (`vmux agent pair`), and
//!   reaches a pinned signer only through its pinned key.
//! - [`IdentityStore`]: where the agent's device identity lives (a file,
//!   or the desktop secret service).
//! - session certificates: an ephemeral key in memory, certified by the
//!   signer's CA, signing locally until it expires.
//! - [`origin`]: who asks and for what (process, verified destination,
//!   forwarding), for the signer's prompt.
//! - [`wake`]: APNs and webhook pushes that wake a sleeping signer,
//!   coalesced to one per outage.
//! - [`control`]: `status`, `refresh`, `cert` and `pair` for a running agent,
//!   through its own socket.
#![deny(missing_docs)]

mod agent;
mod cert;
mod client;
mod config;
pub mod control;
mod discovery;
mod identity_store;
pub mod origin;
mod pairing;
mod shared;
mod sign;
mod socket;
mod state;
mod upstream;
mod verify;
pub mod wake;
pub mod wire;

pub use agent::run;
pub use cert::CERT_COMMENT;
pub use config::{
    AgentFileConfig, DEFAULT_CERT_RENEW_BEFORE_SECONDS, DEFAULT_CERT_VALIDITY_SECONDS,
    DEFAULT_SIGN_TIMEOUT_SECONDS,
};
pub use identity_store::{IdentityStore, IdentityStoreKind};
pub use shared::{AgentConfig, LinkStatus};
pub use socket::{AgentSocket, SocketError};
pub use state::{state_path, AgentState, CachedKey, PinnedSigner, StoredWake};
pub use upstream::SignFailure;
pub use verify::signature_is_valid;

/// Prints one stable, user-facing line on stderr (`vmux agent: …`),
/// whatever the log level, and logs it.
pub fn notice(line: &str) {
    eprintln!("vmux agent: {line}");
}
