//! The short authentication string that makes pairing verifiable.
//!
//! After the Noise XX handshake both ends hold the same handshake hash `h`
//! exactly when no one is in the middle. The agent commits to a random
//! nonce `na` before it sees the signer's nonce `ns`; then both derive a
//! 6-digit code from `h`, `na` and `ns`. A relay that terminates both sides
//! holds two different hashes and must fix its nonce on one side before it
//! learns the other side's, so it makes the two codes match with
//! probability 10⁻⁶ per attempt.

use sha2::{Digest, Sha256};

/// Length of the pairing nonces and commitment.
pub const PAIR_NONCE_LEN: usize = 32;

const COMMIT_LABEL: &[u8] = b"vmux pairing commitment v1";
const CODE_LABEL: &[u8] = b"vmux pairing code v1";

/// The agent's commitment: `SHA-256(label ‖ len(h) ‖ h ‖ na)`.
pub fn pairing_commitment(handshake_hash: &[u8], agent_nonce: &[u8; PAIR_NONCE_LEN]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update(COMMIT_LABEL);
    d.update((handshake_hash.len() as u32).to_be_bytes());
    d.update(handshake_hash);
    d.update(agent_nonce);
    d.finalize().into()
}

/// The 6-digit code both sides show: the first four bytes of
/// `SHA-256(label ‖ len(h) ‖ h ‖ na ‖ ns)` as a big-endian integer, mod 10⁶,
/// zero-padded.
pub fn pairing_code(
    handshake_hash: &[u8],
    agent_nonce: &[u8; PAIR_NONCE_LEN],
    signer_nonce: &[u8; PAIR_NONCE_LEN],
) -> String {
    let mut d = Sha256::new();
    d.update(CODE_LABEL);
    d.update((handshake_hash.len() as u32).to_be_bytes());
    d.update(handshake_hash);
    d.update(agent_nonce);
    d.update(signer_nonce);
    let out = d.finalize();
    let n = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) % 1_000_000;
    format!("{n:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The test vector printed in docs/PROTOCOL.md.
    #[test]
    fn vector() {
        let h = [0x11u8; 32];
        let na = [0x22u8; 32];
        let ns = [0x33u8; 32];
        assert_eq!(
            hex(&pairing_commitment(&h, &na)),
            "b66c6c97f863c16146116f2760421c2431a6a99ae02640a42f04b0232ade20ab"
        );
        assert_eq!(pairing_code(&h, &na, &ns), "528776");
    }

    #[test]
    fn code_depends_on_every_input() {
        let h = [1u8; 32];
        let na = [2u8; 32];
        let ns = [3u8; 32];
        let c = pairing_code(&h, &na, &ns);
        assert_eq!(c.len(), 6);
        assert_ne!(c, pairing_code(&[9u8; 32], &na, &ns));
        assert_ne!(c, pairing_code(&h, &[9u8; 32], &ns));
        assert_ne!(c, pairing_code(&h, &na, &[9u8; 32]));
    }
}
