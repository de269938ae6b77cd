//! Assertion (`navigator.credentials.get`, WebAuthn §7.2).

use crate::{authdata, check_user, client_data, Credential, Error, Flags};
use crate::{RelyingParty, UserVerification};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// What the page sends back after `navigator.credentials.get`. Its
/// `Debug` names lengths only, never the signed bytes or the signature.
#[derive(Clone, Copy)]
pub struct AssertionResponse<'a> {
    /// `rawId`.
    pub credential_id: &'a [u8],
    /// `response.authenticatorData`.
    pub authenticator_data: &'a [u8],
    /// `response.clientDataJSON`.
    pub client_data_json: &'a [u8],
    /// `response.signature`: DER ECDSA.
    pub signature: &'a [u8],
}

/// An assertion that verified: made only by [`verify_assertion`]. It
/// carries what the OpenSSH conversion needs. Its `Debug` shows flags and
/// counter, never the challenge or the signature.
#[derive(Clone)]
pub struct VerifiedAssertion {
    credential_id: Vec<u8>,
    public_key: VerifyingKey,
    rp_id: String,
    origin: String,
    challenge: Vec<u8>,
    flags: Flags,
    counter: u32,
    authenticator_data: Vec<u8>,
    client_data_json: Vec<u8>,
    signature: Signature,
}

impl std::fmt::Debug for AssertionResponse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionResponse")
            .field("credential_id_len", &self.credential_id.len())
            .field("authenticator_data_len", &self.authenticator_data.len())
            .field("client_data_json_len", &self.client_data_json.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

impl std::fmt::Debug for VerifiedAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedAssertion")
            .field("rp_id", &self.rp_id)
            .field("flags", &self.flags)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl VerifiedAssertion {
    /// The credential that signed.
    pub fn credential_id(&self) -> &[u8] {
        &self.credential_id
    }
    /// Its public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }
    /// The relying-party id it was checked for.
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }
    /// The origin it was checked for.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// The challenge it signed.
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }
    /// The authenticator's flags.
    pub fn flags(&self) -> Flags {
        self.flags
    }
    /// The signature counter.
    pub fn counter(&self) -> u32 {
        self.counter
    }
    /// The raw authenticator data.
    pub fn authenticator_data(&self) -> &[u8] {
        &self.authenticator_data
    }
    /// The raw `clientDataJSON`.
    pub fn client_data_json(&self) -> &[u8] {
        &self.client_data_json
    }
    /// The ECDSA signature over `authenticatorData ‖ SHA-256(clientDataJSON)`.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
}

/// Checks an assertion by `credential` for `rp` over `challenge`, in the
/// order of WebAuthn §7.2: credential, client data (type
/// `webauthn.get`, challenge, origin, not cross-origin), rpIdHash, UP (and
/// UV when required), no attested data, the ES256 signature over
/// `authenticatorData ‖ SHA-256(clientDataJSON)`, then the counter: when
/// either the stored or the received counter is non-zero, the received one
/// must be greater, else [`Error::CounterNotIncreasing`] (a cloned
/// authenticator). The caller then stores the new counter
/// ([`Credential::record`]).
pub fn verify_assertion(
    rp: &RelyingParty,
    credential: &Credential,
    challenge: &[u8],
    response: &AssertionResponse<'_>,
    uv: UserVerification,
) -> Result<VerifiedAssertion, Error> {
    if response.credential_id != credential.id() {
        return Err(Error::WrongCredential);
    }
    client_data::check(response.client_data_json, "webauthn.get", challenge, rp)?;
    let parsed = authdata::parse(response.authenticator_data)?;
    if parsed.rp_id_hash != rp.id_hash() {
        return Err(Error::WrongRpIdHash);
    }
    check_user(parsed.flags, uv)?;
    if parsed.attested.is_some() {
        return Err(Error::UnexpectedAttestedCredential);
    }
    let signature =
        Signature::from_der(response.signature).map_err(|_| Error::SignatureMalformed)?;
    let mut signed = response.authenticator_data.to_vec();
    signed.extend_from_slice(&Sha256::digest(response.client_data_json));
    credential
        .public_key()
        .verify(&signed, &signature)
        .map_err(|_| Error::BadSignature)?;
    let (stored, received) = (credential.counter(), parsed.counter);
    if (stored != 0 || received != 0) && received <= stored {
        return Err(Error::CounterNotIncreasing { stored, received });
    }
    Ok(VerifiedAssertion {
        credential_id: credential.id().to_vec(),
        public_key: *credential.public_key(),
        rp_id: rp.id().to_owned(),
        origin: rp.origin().to_owned(),
        challenge: challenge.to_vec(),
        flags: parsed.flags,
        counter: received,
        authenticator_data: response.authenticator_data.to_vec(),
        client_data_json: response.client_data_json.to_vec(),
        signature,
    })
}
