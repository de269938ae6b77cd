//! The challenge a phone signs to approve one decision.

use sha2::{Digest, Sha256};

/// The domain-separation label of [`ApprovalRequest::challenge`].
pub const APPROVAL_LABEL: &str = "vmux phone approval v1";

/// The facts of one pending decision that an approval binds. Every field
/// is hashed length-prefixed, so no two different requests share a
/// challenge; the label keeps it apart from any SSH data a passkey signs.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalRequest<'a> {
    /// The decision's kind (e.g. `sign`, `pair`, `cert`).
    pub kind: &'a str,
    /// The signer's id of this pending request.
    pub request_id: &'a str,
    /// The asking agent's id.
    pub agent_id: &'a str,
    /// The key's `SHA256:…` fingerprint (empty when none).
    pub key_fingerprint: &'a str,
    /// The data to sign or the certificate body (hashed here).
    pub body: &'a [u8],
    /// The approval window chosen, in the signer's canonical text (empty
    /// for "this request only").
    pub window: &'a str,
}

impl ApprovalRequest<'_> {
    /// `SHA-256(string(label) ‖ string(kind) ‖ string(request_id) ‖
    /// string(agent_id) ‖ string(key_fingerprint) ‖ string(SHA-256(body))
    /// ‖ string(window))`, where `string(x)` is SSH's: `uint32` big-endian
    /// length, then the bytes.
    pub fn challenge(&self) -> [u8; 32] {
        let body_hash: [u8; 32] = Sha256::digest(self.body).into();
        let mut h = Sha256::new();
        for field in [
            APPROVAL_LABEL.as_bytes(),
            self.kind.as_bytes(),
            self.request_id.as_bytes(),
            self.agent_id.as_bytes(),
            self.key_fingerprint.as_bytes(),
            &body_hash,
            self.window.as_bytes(),
        ] {
            // Fields are bounded by the signer's request size, far below 4 GiB.
            h.update((field.len() as u32).to_be_bytes());
            h.update(field);
        }
        h.finalize().into()
    }
}

/// The domain-separation label of [`burst_challenge`].
pub const BURST_LABEL: &str = "vmux phone burst approval v1";

/// The challenge a phone signs to approve several pending decisions with
/// one assertion ("Approve all N"): `SHA-256(string(label) ‖ uint32(N) ‖
/// string(c1) ‖ … ‖ string(cN))`, where `c1…cN` are the requests' own
/// once-only approval challenges ([`ApprovalRequest::challenge`]) in the
/// order the page listed them. A different count, order or member is a
/// different challenge; the label keeps it apart from a single approval's.
pub fn burst_challenge(challenges: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((BURST_LABEL.len() as u32).to_be_bytes());
    h.update(BURST_LABEL.as_bytes());
    // A burst is bounded by the signer's pending requests, far below 4 G.
    h.update((challenges.len() as u32).to_be_bytes());
    for c in challenges {
        h.update((c.len() as u32).to_be_bytes());
        h.update(c);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> ApprovalRequest<'static> {
        ApprovalRequest {
            kind: "sign",
            request_id: "42",
            agent_id: "laptop",
            key_fingerprint: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            body: b"data to sign",
            window: "host,process,3600",
        }
    }

    #[test]
    fn approval_challenge_test_vector() {
        let hex: String = example()
            .challenge()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Computed independently (Python hashlib) from the layout in the docs.
        assert_eq!(
            hex,
            "1dc7325f3cb1da1f1d21fbd5ee24529d0d3431d42565aa640cd1b6d515bff491"
        );
    }

    #[test]
    fn every_field_changes_the_challenge() {
        let base = example().challenge();
        let variants = [
            ApprovalRequest {
                kind: "cert",
                ..example()
            },
            ApprovalRequest {
                request_id: "43",
                ..example()
            },
            ApprovalRequest {
                agent_id: "laptop2",
                ..example()
            },
            ApprovalRequest {
                key_fingerprint: "SHA256:B",
                ..example()
            },
            ApprovalRequest {
                body: b"data to sigN",
                ..example()
            },
            ApprovalRequest {
                window: "",
                ..example()
            },
            // Moving a byte between fields is a different request.
            ApprovalRequest {
                kind: "sign4",
                request_id: "2",
                ..example()
            },
        ];
        for v in variants {
            assert_ne!(v.challenge(), base, "{v:?}");
        }
    }

    #[test]
    fn burst_challenge_test_vector() {
        let hex: String = burst_challenge(&[[1; 32], [2; 32], [3; 32]])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // docs/PROTOCOL.md section 11, computed independently (Python hashlib).
        assert_eq!(
            hex,
            "80766c26d7d4b04b2883e5c0cf886b0db3ab0bc17412180653935ef0c2de816c"
        );
    }

    #[test]
    fn a_burst_binds_its_count_order_and_members() {
        let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
        let base = burst_challenge(&[a, b]);
        for other in [
            burst_challenge(&[a, b, c]),
            burst_challenge(&[b, a]),
            burst_challenge(&[a, c]),
            burst_challenge(&[a]),
            burst_challenge(&[]),
        ] {
            assert_ne!(other, base);
        }
        // Never a single request's own challenge.
        assert_ne!(burst_challenge(&[a]), a);
    }
}
