//! Builders of SSH bytes for tests (feature `testing`): session-bind
//! messages, host keys, userauth data. They panic on failure, as tests do.

use ssh_key::{Algorithm, PrivateKey, Signature};

use crate::put_string as put;

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
