//! What a signature is for, as the signer reads the data to sign itself.
//!
//! The agent's summary (host names, quality, process) is a claim; what the
//! signer shows as fact and keys approval windows on comes from here: the
//! kind of data, the user it logs in as, and, only when the signer itself
//! verified the agent's binding proof against the data, the host key the
//! login is for ([`Purpose::VerifiedLogin`]).

use vmux_proto::{BindingProof, ContextQuality};
use vmux_ssh::{bind, data, VerifiedLogin};

/// The signer's own reading of the data to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A userauth request for a session the host key signed (checked here):
    /// a login to that host key as that user.
    VerifiedLogin(VerifiedLogin),
    /// A userauth request whose destination is not proven.
    Login {
        /// The user it logs in as.
        user: String,
    },
    /// An `ssh-keygen -Y sign` signature (git commits, files).
    Sshsig {
        /// Its namespace (e.g. `git`, `file`).
        namespace: String,
    },
    /// Anything else.
    Unknown,
}

impl Purpose {
    /// Reads `data`, verifying `proof` against it when there is one.
    pub fn of(data: &[u8], proof: Option<&BindingProof>) -> Purpose {
        if let Some(namespace) = data::sshsig_namespace(data) {
            return Purpose::Sshsig { namespace };
        }
        let Some(u) = data::userauth(data) else {
            return Purpose::Unknown;
        };
        // The proof is of a binding made for authentication (the agent
        // sends no other); whether the agent was forwarded further up is
        // its claim, shown and never covered by a window.
        let verified = proof
            .and_then(|p| bind::verify(&p.host_key, &p.session_id, &p.signature, false).ok())
            .and_then(|b| VerifiedLogin::check(&b, data));
        match verified {
            Some(v) => Purpose::VerifiedLogin(v),
            None => Purpose::Login { user: u.user },
        }
    }

    /// How sure the signer is of the destination.
    pub fn quality(&self) -> ContextQuality {
        match self {
            Purpose::VerifiedLogin(_) => ContextQuality::Verified,
            Purpose::Login { .. } => ContextQuality::Claimed,
            Purpose::Sshsig { .. } | Purpose::Unknown => ContextQuality::Unknown,
        }
    }

    /// The user a login is for (empty otherwise).
    pub fn user(&self) -> &str {
        match self {
            Purpose::VerifiedLogin(v) => v.user(),
            Purpose::Login { user } => user,
            _ => "",
        }
    }

    /// The verified host key's `SHA256:…` (empty unless verified).
    pub fn host_key_fingerprint(&self) -> &str {
        match self {
            Purpose::VerifiedLogin(v) => v.host_key_fingerprint(),
            _ => "",
        }
    }

    /// The SSHSIG namespace (empty otherwise).
    pub fn namespace(&self) -> &str {
        match self {
            Purpose::Sshsig { namespace } => namespace,
            _ => "",
        }
    }

    /// `verified` when a session binding the signer checked itself covers
    /// the data (a verified login), else `none` (`VMUX_BINDING`).
    pub fn binding(&self) -> &'static str {
        match self {
            Purpose::VerifiedLogin(_) => "verified",
            _ => "none",
        }
    }

    /// Whether nobody can say if the request came through a forwarded
    /// agent: the agent says not (`forwarded` is its claim), but no
    /// session binding covers the request. The agent knows a connection
    /// is forwarded only from the binding `ssh` 8.9+ makes before relaying
    /// anything; a client that binds nothing (an older `ssh`, other SSH
    /// clients, a relayed agent socket, and `ssh-keygen -Y`, which has no
    /// session) looks the same local or forwarded. The agent sends a
    /// binding only with a login for the session it bound, so this is
    /// every request except a verified login or a forwarded one.
    pub fn forwarding_unknown(&self, forwarded: bool) -> bool {
        !forwarded && !matches!(self, Purpose::VerifiedLogin(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::{Algorithm, PrivateKey, Signature};
    use vmux_ssh::put_string as put;

    fn login(sid: &[u8], user: &str) -> Vec<u8> {
        vmux_ssh::testing::userauth(sid, user, None)
    }

    fn proof(host: &PrivateKey, sid: &[u8]) -> BindingProof {
        use signature::Signer;
        let sig: Signature = host.try_sign(sid).unwrap();
        BindingProof {
            host_key: host.public_key().to_bytes().unwrap(),
            session_id: sid.to_vec(),
            signature: Vec::<u8>::try_from(sig).unwrap(),
        }
    }

    #[test]
    fn verified_only_when_the_proof_checks_and_matches_the_data() {
        let host = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let p = proof(&host, b"sid-1");
        let v = Purpose::of(&login(b"sid-1", "git"), Some(&p));
        assert_eq!(v.quality(), ContextQuality::Verified);
        assert_eq!(v.user(), "git");
        assert_eq!(
            v.host_key_fingerprint(),
            host.public_key()
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string()
        );
        // No proof, a proof for another session, a forged signature.
        assert_eq!(
            Purpose::of(&login(b"sid-1", "git"), None),
            Purpose::Login { user: "git".into() }
        );
        assert_eq!(
            Purpose::of(&login(b"sid-2", "git"), Some(&p)).quality(),
            ContextQuality::Claimed
        );
        let mut forged = p.clone();
        forged.session_id = b"sid-2".to_vec();
        assert_eq!(
            Purpose::of(&login(b"sid-2", "git"), Some(&forged)).quality(),
            ContextQuality::Claimed
        );
        // An SSHSIG or other data is never a login, whatever the proof.
        let mut sig = b"SSHSIG".to_vec();
        put(&mut sig, b"git");
        put(&mut sig, b"");
        put(&mut sig, b"sha512");
        put(&mut sig, &[1; 64]);
        assert_eq!(
            Purpose::of(&sig, Some(&p)),
            Purpose::Sshsig {
                namespace: "git".into()
            }
        );
        assert_eq!(Purpose::of(b"sid-1", Some(&p)), Purpose::Unknown);
    }

    #[test]
    fn forwarding_is_unknown_unless_forwarded_or_a_verified_login() {
        let host = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let verified = Purpose::of(&login(b"sid-1", "git"), Some(&proof(&host, b"sid-1")));
        assert_eq!(verified.binding(), "verified");
        assert!(!verified.forwarding_unknown(false));
        assert!(!verified.forwarding_unknown(true));
        // A login from a client that never bound, an SSHSIG, other data.
        let unbound = [
            Purpose::of(&login(b"sid-1", "git"), None),
            Purpose::Sshsig {
                namespace: "git".into(),
            },
            Purpose::Unknown,
        ];
        for p in unbound {
            assert_eq!(p.binding(), "none");
            assert!(p.forwarding_unknown(false), "{p:?}");
            // The agent saw a forwarding binding: known, and marked so.
            assert!(!p.forwarding_unknown(true), "{p:?}");
        }
    }
}
