//! `session-bind@openssh.com`: which server a client connection is
//! authenticating to, proven by the server's signature over the session
//! id. [`verify`] (and [`parse`], which calls it) is the only way to make
//! a [`VerifiedBinding`]; [`Bindings`] keeps one connection's bindings
//! with OpenSSH's limits.

use signature::Verifier;
use ssh_key::{PublicKey, Signature};

use crate::Fields;

/// Most bindings one connection may record (OpenSSH: 16).
pub const MAX_BINDINGS: usize = 16;
/// Longest session id (OpenSSH: 128 bytes).
pub const MAX_SESSION_ID: usize = 128;

/// A binding whose signature was checked: the host key signed the session
/// id. Whether the connection is forwarded is the client's word (the
/// signature does not cover it). Made only by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBinding {
    host_key: Vec<u8>,
    session_id: Vec<u8>,
    signature: Vec<u8>,
    forwarded: bool,
}

impl VerifiedBinding {
    /// The server's host-key blob (canonical).
    pub fn host_key(&self) -> &[u8] {
        &self.host_key
    }

    /// The SSH session id.
    pub fn session_id(&self) -> &[u8] {
        &self.session_id
    }

    /// The host key's signature over the session id (an SSH signature
    /// blob): the proof, for a signer to check again.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The client says the connection is an agent forwarded to that
    /// server.
    pub fn forwarded(&self) -> bool {
        self.forwarded
    }

    /// `SHA256:…` of the host key.
    pub fn host_key_fingerprint(&self) -> String {
        crate::fingerprint(&self.host_key).unwrap_or_default()
    }
}

/// Why a bind was refused (answered with `SSH_AGENT_FAILURE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The message does not parse.
    #[error("malformed session-bind")]
    Malformed,
    /// The session id is longer than 128 bytes.
    #[error("session id too long")]
    SessionIdTooLong,
    /// The host key or signature does not parse, or the signature does not
    /// verify.
    #[error("session-bind signature does not verify")]
    BadSignature,
    /// The connection is already bound for authentication.
    #[error("connection already bound for authentication")]
    AlreadyBound,
    /// The same session id was bound to another key or direction.
    #[error("session id already bound differently")]
    Conflict,
    /// More than 16 bindings.
    #[error("too many session bindings")]
    TooMany,
}

/// Checks that `signature` is `host_key`'s signature over `session_id`.
/// Only canonical host-key blobs are accepted: ssh-key tolerates some
/// inner length fields longer than their contents, and a blob that is not
/// the key's own encoding would never match known_hosts anyway.
pub fn verify(
    host_key: &[u8],
    session_id: &[u8],
    signature: &[u8],
    forwarded: bool,
) -> Result<VerifiedBinding, BindError> {
    if session_id.len() > MAX_SESSION_ID {
        return Err(BindError::SessionIdTooLong);
    }
    let key = PublicKey::from_bytes(host_key).map_err(|_| BindError::BadSignature)?;
    if key.to_bytes().ok().as_deref() != Some(host_key) {
        return Err(BindError::BadSignature);
    }
    let sig = Signature::try_from(signature).map_err(|_| BindError::BadSignature)?;
    Verifier::verify(&key, session_id, &sig).map_err(|_| BindError::BadSignature)?;
    Ok(VerifiedBinding {
        host_key: host_key.to_vec(),
        session_id: session_id.to_vec(),
        signature: signature.to_vec(),
        forwarded,
    })
}

/// Parses and verifies the extension's contents (after its name).
pub fn parse(contents: &[u8]) -> Result<VerifiedBinding, BindError> {
    let mut f = Fields(contents);
    let host_key = f.string().ok_or(BindError::Malformed)?;
    let session_id = f.string().ok_or(BindError::Malformed)?;
    let sig = f.string().ok_or(BindError::Malformed)?;
    let forwarded = match f.u8() {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(BindError::Malformed),
    };
    if !f.is_empty() {
        return Err(BindError::Malformed);
    }
    verify(host_key, session_id, sig, forwarded)
}

/// The bindings of one client connection.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    list: Vec<VerifiedBinding>,
}

impl Bindings {
    /// Records a verified binding, with OpenSSH's rules: a repeat of the
    /// same binding is accepted, the same session id with another key or
    /// direction is not, nothing may follow a binding for authentication
    /// (not forwarded), and at most 16.
    pub fn add(&mut self, b: VerifiedBinding) -> Result<(), BindError> {
        if let Some(same) = self.list.iter().find(|x| x.session_id == b.session_id) {
            return if same.host_key == b.host_key && same.forwarded == b.forwarded {
                Ok(())
            } else {
                Err(BindError::Conflict)
            };
        }
        if self.list.last().is_some_and(|last| !last.forwarded) {
            return Err(BindError::AlreadyBound);
        }
        if self.list.len() >= MAX_BINDINGS {
            return Err(BindError::TooMany);
        }
        self.list.push(b);
        Ok(())
    }

    /// The binding for `session_id`, if any.
    pub fn find(&self, session_id: &[u8]) -> Option<&VerifiedBinding> {
        self.list.iter().find(|b| b.session_id == session_id)
    }

    /// The last binding: the one a login on this connection authenticates
    /// to (earlier ones are the hops of a forwarded agent).
    pub fn last(&self) -> Option<&VerifiedBinding> {
        self.list.last()
    }

    /// Whether the connection comes through a forwarded agent.
    pub fn forwarded(&self) -> bool {
        self.list.iter().any(|b| b.forwarded)
    }

    /// Whether anything is bound.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{bind_message as message, host_key};

    #[test]
    fn verifies_and_applies_openssh_rules() {
        let host = host_key();
        let b = parse(&message(&host, b"session-1", false)).unwrap();
        assert!(!b.forwarded());
        assert_eq!(b.session_id(), b"session-1");
        assert_eq!(b.host_key(), host.public_key().to_bytes().unwrap());
        // The proof it carries verifies again.
        assert_eq!(
            verify(b.host_key(), b.session_id(), b.signature(), false),
            Ok(b.clone())
        );
        // A bad signature: the session id signed is not the one sent.
        let mut bad = message(&host, b"session-1", false);
        let pos = bad.windows(9).position(|w| w == b"session-1").unwrap();
        bad[pos] = b'S';
        assert_eq!(parse(&bad), Err(BindError::BadSignature));
        // Another host's signature over the same session id.
        let other = host_key();
        let theirs = parse(&message(&other, b"session-1", false)).unwrap();
        assert_eq!(
            verify(b.host_key(), b"session-1", theirs.signature(), false),
            Err(BindError::BadSignature)
        );
        // Every truncation is malformed or refused, never a panic.
        let good = message(&host, b"session-1", true);
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err());
        }
        assert_eq!(
            parse(&message(&host, &[7; 129], false)),
            Err(BindError::SessionIdTooLong)
        );

        let mut bs = Bindings::default();
        let fwd = parse(&message(&host, b"hop-1", true)).unwrap();
        bs.add(fwd.clone()).unwrap();
        bs.add(fwd).unwrap();
        bs.add(b.clone()).unwrap();
        assert!(bs.forwarded());
        assert_eq!(
            bs.add(parse(&message(&host, b"later", false)).unwrap()),
            Err(BindError::AlreadyBound)
        );
        let conflict = parse(&message(&host, b"session-1", true)).unwrap();
        assert_eq!(bs.add(conflict), Err(BindError::Conflict));
        let mut many = Bindings::default();
        for i in 0..16u8 {
            many.add(parse(&message(&host, &[i], true)).unwrap())
                .unwrap();
        }
        assert_eq!(
            many.add(parse(&message(&host, &[99], true)).unwrap()),
            Err(BindError::TooMany)
        );
    }
}
