//! Builders of SSH bytes for tests (feature `testing`): session-bind
//! messages, host keys (and a [`Host`] that signs bindings), userauth
//! data. They panic on failure, as tests do.

use ssh_key::{Algorithm, PrivateKey, Signature};

use crate::put_string as put;
use crate::VerifiedBinding;

/// A session-bind message body signed by `host` over `sid`.
pub fn bind_message(host: &PrivateKey, sid: &[u8], fwd: bool) -> Vec<u8> {
    use signature::Signer;
    let sig: Signature = host.try_sign(sid).unwrap();
    let mut m = Vec::new();
    put(&mut m, &host.public_key().to_bytes().unwrap());
    put(&mut m, sid);
    put(&mut m, &Vec::<u8>::try_from(sig).unwrap());
    m.push(u8::from(fwd));
    m
}

/// A fresh Ed25519 host key.
pub fn host_key() -> PrivateKey {
    PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap()
}

/// A destination host of a test: a fresh host key, its public-key blob,
/// and the session bindings it signs.
pub struct Host {
    /// The host key.
    pub key: PrivateKey,
    /// Its public-key blob, as userauth data and bindings name it.
    pub blob: Vec<u8>,
}

impl Host {
    /// A host with a fresh Ed25519 key.
    pub fn new() -> Host {
        let key = host_key();
        let blob = key.public_key().to_bytes().unwrap();
        Host { key, blob }
    }

    /// The verified binding of session `sid` to this host (`fwd`: made
    /// for a forwarded agent).
    pub fn binding(&self, sid: &[u8], fwd: bool) -> VerifiedBinding {
        crate::bind::parse(&bind_message(&self.key, sid, fwd)).unwrap()
    }
}

impl Default for Host {
    fn default() -> Host {
        Host::new()
    }
}

/// Userauth sign data (host-bound when `host_key` is given).
pub fn userauth(sid: &[u8], user: &str, host_key: Option<&[u8]>) -> Vec<u8> {
    let mut d = Vec::new();
    put(&mut d, sid);
    d.push(50);
    put(&mut d, user.as_bytes());
    put(&mut d, b"ssh-connection");
    put(
        &mut d,
        if host_key.is_some() {
            b"publickey-hostbound-v00@openssh.com"
        } else {
            b"publickey"
        },
    );
    d.push(1);
    put(&mut d, b"ssh-ed25519");
    put(&mut d, b"keyblob");
    if let Some(h) = host_key {
        put(&mut d, h);
    }
    d
}
