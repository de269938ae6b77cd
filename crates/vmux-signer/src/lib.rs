//! The vmux signer: the device that holds the keys.
//!
//! # Brief overview
//!
//! The signer accepts agents over the encrypted link, pairs new ones only
//! with a person's approval, and answers their requests: the key list, and
//! signatures after checks and approval. It owns keys, approvers, policy
//! and request checks; the link's handshake and pairing exchange live in
//! `vmux-link`, the message encoding in `vmux-proto`.
//!
//! - [`SignerHome`]: the signer's files (`init`, identity, CA, keys).
//! - [`provider`]: key providers ([`provider::KeyProvider`]); today
//!   [`provider::SoftwareKeys`], OpenSSH key files.
//! - [`approver`]: who says yes ([`approver::Approver`]): `tty`,
//!   `desktop`, `phone`, `command:PROGRAM` and `allow-all`.
//! - [`checks`]: request freshness ([`checks::Freshness`]) and the
//!   nonce-replay guard.
//! - [`ca`]: the certificate authority and its policy.
//! - [`audit`]: the hash-chained log of every decision.
//! - [`purpose`]: what the data to sign is for, read by the signer itself;
//!   a login's destination is verified only when the signer checked the
//!   agent's binding proof against the data (`vmux-ssh`).
//! - approval windows: a person may let the same key sign the same
//!   verified login (host key and user) from the same executable for a
//!   while; never forwarded requests, SSHSIG, unknown data, certificates
//!   or unverified destinations.
//! - pairing: who may ask the person to pair, and how often (at most one
//!   prompt open; a paired agent's request withdraws it).
//! - [`Server`]: the running signer, assembled from its home by
//!   [`SignerHome::assemble`] and run by [`serve`], with connections
//!   bounded per source, in total and in time, and requests in flight
//!   bounded per agent identity and in total; [`control`]: `status`,
//!   `lock`, `unlock` and `unpair` for it through an owner-only socket.
//! - [`paired`]: the paired agents, written by one writer at a time.
//! - the phone page (`vmux-phone`): with `--web-listen`, the signer
//!   serves it; [`approver::phone`] makes each decision a card there, and
//!   the page may read the signer's name, lock state, paired agents and
//!   recent decisions, and unpair an agent.
#![deny(missing_docs)]

pub mod approver;
mod assemble;
pub mod audit;
pub mod ca;
pub mod checks;
pub mod config;
pub mod control;
mod decide;
mod home;
mod page;
pub mod paired;
mod pairing;
pub mod provider;
pub mod purpose;
mod server;

pub use assemble::{serve, WebListener};
pub use home::{SignerError, SignerHome, TokenRecord};
pub use server::{Server, ServerParts};
