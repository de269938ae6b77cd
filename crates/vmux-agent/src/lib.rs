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
//! - [`AgentConfig`] and [`run`]: the running agent ([`AgentConfig::resolve`]
//!   merges `vmux agent run`'s flags, `agent.toml` and the defaults, in
//!   that order of precedence): an accept loop, one
//!   small loop per client whose permissions [`origin::trust`] decides,
//!   signing through signers, discovery of signers.
//! - [`AgentState`]: pinned signers (each with the CA it certifies with)
//!   and cached keys, on disk, written by one writer thread off the async
//!   runtime, and only when they changed. A signer's key list is taken
//!   only in answer to the agent's request, and bounded on arrival
//!   ([`MAX_KEYS_PER_SIGNER`], [`MAX_KEY_COMMENT`]); the identities answer
//!   stays within what OpenSSH's clients accept.
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
//!   through its own socket (`cert` and `pair` only for the vmux program
//!   itself); the requests, replies and status types, and the client, are
//!   `vmux-control`'s.
//!
//! - [`board`]: the requests waiting for a signer's person now, how the
//!   last ones ended, and the change counter the `watch` control request
//!   waits on (for the tray, `vmux agent tray`).
//!
//! The state all of these share (`shared`) is a leaf: it imports only
//! leaf modules, never one of those that act on it.
#![deny(missing_docs)]

mod agent;
pub mod board;
mod cert;
mod cert_slot;
mod client;
mod config;
pub mod control;
mod discovery;
mod failure;
mod identity_store;
pub mod origin;
mod pairing;
mod persist;
mod shared;
mod sign;
mod signer_conn;
mod socket;
mod state;
mod upstream;
mod verify;
pub mod wake;
pub mod wire;

pub use agent::{run, run_until};
pub use cert::CERT_COMMENT;
pub use config::{
    AgentFileConfig, AgentFlags, ConfigError, Machine, TrayFileConfig,
    DEFAULT_CERT_RENEW_BEFORE_SECONDS, DEFAULT_CERT_VALIDITY_SECONDS, DEFAULT_NOTIFY_AFTER_MS,
    DEFAULT_SIGN_TIMEOUT_SECONDS,
};
pub use failure::SignFailure;
pub use identity_store::{IdentityStore, IdentityStoreKind};
pub use shared::AgentConfig;
pub use socket::{AgentSocket, SocketError};
pub use state::{
    state_path, AgentState, CachedKey, PinnedSigner, StoredWake, MAX_KEYS_PER_SIGNER,
    MAX_KEY_COMMENT,
};
pub use verify::{check_signature, signature_is_valid, Checked, CounterAlarm, Counters, Refusal};

/// Prints one stable, user-facing line on stderr (`vmux agent: …`),
/// whatever the log level, and logs it.
pub fn notice(line: &str) {
    eprintln!("vmux agent: {line}");
}
