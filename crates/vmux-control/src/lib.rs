//! The control protocols of a running vmux agent and signer, typed.
//!
//! # Brief overview
//!
//! A running agent is controlled through its own socket (the
//! agent-protocol extension `control@vmux`), a running signer through an
//! owner-only socket beside its state (`signer.sock`). This crate owns
//! what is said on both: one serde-tagged `Request` and one `Reply` per
//! socket, the types the replies hold, and a blocking `Client` each
//! with one method per request, used alike by the CLI, `vmux setup` and
//! the tray.
//!
//! - [`agent`]: [`agent::Request`], [`agent::Reply`], the status types
//!   ([`agent::Status`] and what it holds) and [`agent::Client`] (its
//!   methods also list the agent's public keys, with the agent
//!   protocol's own request-identities).
//! - [`signer`]: [`signer::Request`] (the passphrase of `Unlock` is
//!   [`Zeroizing`](zeroize::Zeroizing), wiped after use and never in
//!   `Debug`), [`signer::Reply`] and [`signer::Client`].
//! - [`ControlError`]: why a request got no answer (nothing runs there,
//!   something that is not vmux answered, the socket failed) or was
//!   refused, with the peer's sentence.
//!
//! It serves nothing and decides nothing: the servers live in the agent
//! and the signer, which keep every check of who may ask what. It needs
//! no async runtime (std's `UnixStream`, each request on a connection of
//! its own with a bounded wait), and pulls in no SSH or crypto crate, so
//! a desktop companion can read an agent's status without depending on
//! the agent.
//!
//! ```no_run
//! let agent = vmux_control::agent::Client::new("/run/user/1000/vmux-agent.sock");
//! let status = agent.status()?;
//! println!("{} signer(s), {} key(s)", status.signers.len(), status.keys.len());
//! # Ok::<(), vmux_control::ControlError>(())
//! ```
#![deny(missing_docs)]

/// A closure that takes a reply's value when the reply is `$variant`.
macro_rules! pick {
    ($variant:path) => {
        |reply| match reply {
            $variant(value) => Some(value),
            _ => None,
        }
    };
}

/// A client's typed methods, one a request: each sends its request with
/// the client's `request` and takes the reply's value when the reply is
/// the variant named ([`Socket::take`](socket::Socket::take): a refusal
/// as [`ControlError::Refused`], any other reply as
/// [`ControlError::NotVmux`]).
macro_rules! calls {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty = $request:expr => $variant:path;
    )*) => {$(
        $(#[$doc])*
        pub fn $name(&self, $($arg: $ty),*) -> Result<$out, ControlError> {
            self.socket.take(self.request(&$request), pick!($variant))
        }
    )*};
}

pub mod agent;
mod error;
pub mod signer;
mod socket;

pub use error::{ControlError, Peer};
