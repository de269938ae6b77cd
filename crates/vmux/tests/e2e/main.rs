//! The end-to-end tests of vmux: one test binary (as ripgrep has one), a
//! module per user story, all on the one harness in [`support`], which
//! drives the real `vmux` binary, OpenSSH, browsers and buses.

mod support;

mod attack_agent;
mod attack_pairing;
mod attack_phone;
mod attack_signer;
mod attack_windows;
mod browser_harness;
mod certificates;
mod context;
mod desktop;
mod discovery;
mod everyday;
mod first_run;
mod fuzz;
mod harness;
mod identity_store;
mod keys_at_rest;
mod load;
mod package;
mod page_ca;
mod passkeys;
mod phone;
mod pkcs11;
mod push;
mod remote_signing;
mod setup;
mod topology;
mod tray;
mod wake;
