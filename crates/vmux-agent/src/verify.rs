//! Checking a signer's signature before it reaches an SSH client.

use signature::Verifier;
use ssh_key::{Algorithm, HashAlg, PublicKey, Signature};
use vmux_proto::{SSH_AGENT_RSA_SHA2_256, SSH_AGENT_RSA_SHA2_512};

/// Whether `sig_blob` is a valid signature by the key `key_blob` over
/// `data`, in the algorithm the client asked for with `flags`.
pub fn signature_is_valid(key_blob: &[u8], data: &[u8], flags: u32, sig_blob: &[u8]) -> bool {
    let Ok(key) = PublicKey::from_bytes(key_blob) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(sig_blob) else {
        return false;
    };
    let expected = match key.algorithm() {
        Algorithm::Rsa { .. } if flags & SSH_AGENT_RSA_SHA2_512 != 0 => Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa { .. } if flags & SSH_AGENT_RSA_SHA2_256 != 0 => Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
        Algorithm::Rsa { .. } => return false,
        other => other,
    };
    sig.algorithm() == expected && Verifier::verify(&key, data, &sig).is_ok()
}
