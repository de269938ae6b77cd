//! Why a WebAuthn or OpenSSH check failed: one variant per reason.

/// Why a check refused its input. Every message is one sentence that
/// names no key material, challenge or signature bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relying-party id is not a DNS name (WebAuthn forbids IP
    /// addresses; OpenSSH forbids a `"` in it).
    #[error("the relying-party id must be a DNS name")]
    BadRpId,
    /// The origin is not `https://HOST[:PORT]` with HOST the relying-party
    /// id or a name under it.
    #[error("the origin must be https:// on the relying-party id or a name under it")]
    BadOrigin,
    /// `clientDataJSON` is not JSON with the members WebAuthn requires.
    #[error("clientDataJSON is not valid WebAuthn client data")]
    ClientDataMalformed,
    /// `clientDataJSON.type` is not the one the ceremony needs.
    #[error("clientDataJSON has the wrong type (expected {expected})")]
    WrongType {
        /// `webauthn.create` or `webauthn.get`.
        expected: &'static str,
    },
    /// The challenge is not the one this request expects.
    #[error("the challenge is not the one this request expects")]
    WrongChallenge,
    /// The origin is not the expected one.
    #[error("the origin is not the expected one")]
    WrongOrigin,
    /// The page was embedded in another origin's frame.
    #[error("the ceremony ran in a cross-origin frame")]
    CrossOrigin,
    /// The attestation object is not the CBOR WebAuthn defines.
    #[error("the attestation object is malformed")]
    AttestationMalformed,
    /// An attestation format other than `none` or `packed`.
    #[error("attestation format {0:?} is not supported")]
    UnsupportedAttestation(String),
    /// The authenticator data is truncated or has trailing bytes.
    #[error("the authenticator data is malformed")]
    AuthDataMalformed,
    /// The authenticator data is for another relying party.
    #[error("the authenticator data is for another relying party")]
    WrongRpIdHash,
    /// The user-present flag is not set.
    #[error("the authenticator did not report user presence")]
    UserNotPresent,
    /// User verification was required and the flag is not set.
    #[error("the authenticator did not report user verification")]
    UserNotVerified,
    /// A registration without attested credential data.
    #[error("the registration carries no attested credential data")]
    NoAttestedCredential,
    /// An assertion with attested credential data (never sent by a real
    /// authenticator; OpenSSH refuses it).
    #[error("the assertion carries attested credential data")]
    UnexpectedAttestedCredential,
    /// The credential public key is not an ES256 (alg -7) EC2 P-256 key.
    #[error("the credential key is not an ES256 P-256 key")]
    UnsupportedKey,
    /// A stored credential id that is empty or longer than WebAuthn's
    /// 1023 bytes.
    #[error("the credential id is empty or longer than 1023 bytes")]
    BadCredentialId,
    /// An OpenSSH certificate that is truncated, has trailing bytes or a
    /// type other than the ones read.
    #[error("the OpenSSH certificate is malformed")]
    CertificateMalformed,
    /// Encoding an OpenSSH key failed (never expected for a valid key).
    #[error("the OpenSSH key could not be encoded")]
    SshEncoding,
    /// The response names another credential than the one checked against.
    #[error("the response is for another credential")]
    WrongCredential,
    /// The signature is not a well-formed ECDSA P-256 signature.
    #[error("the signature is malformed")]
    SignatureMalformed,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// A non-zero signature counter that did not increase: the
    /// authenticator may have been cloned.
    #[error(
        "the signature counter went from {stored} to {received}: the authenticator may be cloned"
    )]
    CounterNotIncreasing {
        /// The counter stored for the credential.
        stored: u32,
        /// The counter in this assertion.
        received: u32,
    },
    /// The SSH key is not an `sk-ecdsa-sha2-nistp256@openssh.com` key.
    #[error("the key is not an sk-ecdsa-sha2-nistp256@openssh.com key")]
    NotSkEcdsaKey,
    /// The SSH signature blob is truncated, has trailing bytes or bad
    /// integers.
    #[error("the SSH signature is malformed")]
    SshSignatureMalformed,
    /// An SSH signature type other than the two sk-ecdsa ones.
    #[error("SSH signature type {0:?} is not an sk-ecdsa one")]
    SshSignatureType(String),
    /// The WebAuthn signature's flags or extensions are what OpenSSH
    /// refuses (attested data present, extension flag inconsistent).
    #[error("the signature's flags or extensions are not what OpenSSH accepts")]
    SshFlags,
    /// `clientDataJSON` does not begin with the exact prefix OpenSSH
    /// requires for this data and origin.
    #[error("clientDataJSON does not begin as OpenSSH requires for this data")]
    ClientDataPrefix,
}
