//! The SSH wire formats vmux reads, in one place for the agent and the
//! signer.
//!
//! # Brief overview
//!
//! This crate owns the parsing and checking of SSH bytes that a trust
//! decision rests on. It does no I/O and keeps no state beyond one
//! connection's bindings.
//!
//! - [`Fields`]: the reader for SSH `string`s and integers, and
//!   [`put_string`] / [`put_u32`] their writers.
//! - [`bind`]: `session-bind@openssh.com`; [`bind::verify`] is the only way
//!   to make a [`VerifiedBinding`] (a host key's signature over a session
//!   id, checked), and [`bind::Bindings`] applies OpenSSH's rules per client
//!   connection.
//! - [`data`]: what the bytes to sign are: a userauth request
//!   ([`data::userauth`]) or an `ssh-keygen -Y` signature
//!   ([`data::sshsig_namespace`]).
//! - [`VerifiedLogin`]: a userauth request for the session of a verified,
//!   non-forwarding binding (and, when host-bound, naming the same host
//!   key); only [`VerifiedLogin::check`] makes one. The agent uses it to
//!   say "verified"; the signer re-checks it itself and keys approval
//!   windows on it.
#![deny(missing_docs)]

pub mod bind;
pub mod data;
mod fields;
mod login;
mod writer;

pub use bind::{BindError, VerifiedBinding};
pub use fields::Fields;
pub use login::VerifiedLogin;
pub use writer::{put_string, put_u32};

/// `SHA256:…` fingerprint of an OpenSSH public-key blob, if it parses.
pub fn fingerprint(blob: &[u8]) -> Option<String> {
    ssh_key::PublicKey::from_bytes(blob)
        .ok()
        .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
