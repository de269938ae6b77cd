//! `session-bind@openssh.com`: which server a client connection is
//! authenticating to, proven by the server's signature over the session
//! id. Kept per client connection with OpenSSH's limits.

use signature::Verifier;
use ssh_key::{PublicKey, Signature};

use crate::wire::Fields;

/// Most bindings one connection may record (OpenSSH: 16).
pub const MAX_BINDINGS: usize = 16;
/// Longest session id (OpenSSH: 128 bytes).
pub const MAX_SESSION_ID: usize = 128;

/// One verified binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The server's host-key blob.
    pub host_key: Vec<u8>,
    /// The SSH session id.
    pub session_id: Vec<u8>,
    /// The connection is an agent forwarded to that server.
    pub forwarded: bool,
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

/// The bindings of one client connection.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    list: Vec<Binding>,
}

/// Parses and verifies the extension's contents (after its name).
pub fn parse(contents: &[u8]) -> Result<Binding, BindError> {
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
    if session_id.len() > MAX_SESSION_ID {
        return Err(BindError::SessionIdTooLong);
    }
    let key = PublicKey::from_bytes(host_key).map_err(|_| BindError::BadSignature)?;
    // Only canonical blobs: ssh-key tolerates some inner length fields
    // longer than their contents, and a blob that is not the key's own
    // encoding would never match known_hosts anyway.
    if key.to_bytes().ok().as_deref() != Some(host_key) {
        return Err(BindError::BadSignature);
    }
    let sig = Signature::try_from(sig).map_err(|_| BindError::BadSignature)?;
    Verifier::verify(&key, session_id, &sig).map_err(|_| BindError::BadSignature)?;
    Ok(Binding {
        host_key: host_key.to_vec(),
        session_id: session_id.to_vec(),
        forwarded,
    })
}

impl Bindings {
    /// Records a verified binding, with OpenSSH's rules: a repeat of the
    /// same binding is accepted, the same session id with another key or
    /// direction is not, nothing may follow a binding for authentication
    /// (not forwarded), and at most 16.
    pub fn add(&mut self, b: Binding) -> Result<(), BindError> {
        if let Some(same) = self.list.iter().find(|x| x.session_id == b.session_id) {
            return if *same == b {
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
    pub fn find(&self, session_id: &[u8]) -> Option<&Binding> {
        self.list.iter().find(|b| b.session_id == session_id)
    }

    /// The last binding: the one a login on this connection authenticates
    /// to (earlier ones are the hops of a forwarded agent).
    pub fn last(&self) -> Option<&Binding> {
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
pub(crate) mod tests {
    use super::*;
    use ssh_key::{Algorithm, PrivateKey};

    fn put(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// A session-bind message body signed by `host` over `sid`.
    pub(crate) fn message(host: &PrivateKey, sid: &[u8], fwd: bool) -> Vec<u8> {
        use signature::Signer;
        let sig: Signature = host.try_sign(sid).unwrap();
        let mut m = Vec::new();
        put(&mut m, &host.public_key().to_bytes().unwrap());
        put(&mut m, sid);
        put(&mut m, &Vec::<u8>::try_from(sig).unwrap());
        m.push(u8::from(fwd));
        m
    }

    pub(crate) fn host_key() -> PrivateKey {
        PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap()
    }

    #[test]
    fn verifies_and_applies_openssh_rules() {
        let host = host_key();
        let b = parse(&message(&host, b"session-1", false)).unwrap();
        assert!(!b.forwarded);
        // A bad signature: the session id signed is not the one sent.
        let mut bad = message(&host, b"session-1", false);
        let pos = bad.windows(9).position(|w| w == b"session-1").unwrap();
        bad[pos] = b'S';
        assert_eq!(parse(&bad), Err(BindError::BadSignature));
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
        let mut conflict = b.clone();
        conflict.forwarded = true;
        assert_eq!(bs.add(conflict), Err(BindError::Conflict));
        let mut many = Bindings::default();
        for i in 0..16u8 {
            many.add(Binding {
                host_key: vec![1],
                session_id: vec![i],
                forwarded: true,
            })
            .unwrap();
        }
        assert_eq!(
            many.add(Binding {
                host_key: vec![1],
                session_id: vec![99],
                forwarded: true
            }),
            Err(BindError::TooMany)
        );
    }
}
