//! The test and demo kit of vmux: a real headless Chromium driven over
//! the Chrome DevTools Protocol, with virtual WebAuthn authenticators
//! standing in for a phone's platform authenticator ([`browser`]), and a
//! throwaway PKI whose CA that browser trusts ([`pki`]); and with them
//! the phone in the headless browser standing in for the phone
//! ([`standin`], also the binary `vmux-phone-standin`), which enrols
//! through a link and approves every card; and a push service of the
//! tests' own with a subscriber's side of Web Push ([`push_service`]).
//! A real headless Firefox driven over Marionette ([`firefox`]) is the
//! second engine; [`engine`] lets one test drive either.
//!
//! For the processes around them: a command run within a bound and a
//! daemon whose output lines a test waits on ([`process`]); a
//! pseudo-terminal to type into ([`pty`]); vmux's own
//! daemons' readiness lines and pairing codes ([`vmux`]); and a client of
//! the SSH agent protocol ([`agent`]).
//!
//! The end-to-end tests, `./scripts/demo --phone` and the benchmark use
//! it; the vmux binary never does.

use std::time::Duration;

pub mod agent;
pub mod browser;
pub mod engine;
pub mod firefox;
mod launch;
pub mod pki;
pub mod process;
pub mod pty;
pub mod push_service;
pub mod standin;
pub mod vmux;

pub use process::{ok, run_within, Daemon};

/// Default bound for every wait (a page to load, a button to appear).
pub const WAIT: Duration = Duration::from_secs(60);
