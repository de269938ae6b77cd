//! Registration (`navigator.credentials.create`, WebAuthn §7.1).

use crate::authdata::{self, MAX_CREDENTIAL_ID};
use crate::{check_user, client_data, Error, RelyingParty, UserVerification};
use minicbor::data::Type;
use minicbor::Decoder;

/// What the page sends back after `navigator.credentials.create`.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationResponse<'a> {
    /// `rawId`.
    pub credential_id: &'a [u8],
    /// `response.attestationObject` (CBOR).
    pub attestation_object: &'a [u8],
    /// `response.clientDataJSON`.
    pub client_data_json: &'a [u8],
}

/// An enrolled passkey: its id, P-256 public key and last seen signature
/// counter. Made by [`verify_registration`], or rebuilt from storage with
/// [`Credential::from_stored`] (it holds no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    id: Vec<u8>,
    public_key: p256::ecdsa::VerifyingKey,
    counter: u32,
}

impl Credential {
    /// A credential from what was stored after registration: its id, the
    /// SEC1 encoding of its public key ([`Credential::public_key_sec1`]),
    /// and its counter.
    pub fn from_stored(id: &[u8], public_key_sec1: &[u8], counter: u32) -> Result<Self, Error> {
        if id.is_empty() || id.len() > MAX_CREDENTIAL_ID {
            return Err(Error::BadCredentialId);
        }
        let public_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key_sec1)
            .map_err(|_| Error::UnsupportedKey)?;
        Ok(Credential {
            id: id.to_vec(),
            public_key,
            counter,
        })
    }

    /// The credential id.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// The public key.
    pub fn public_key(&self) -> &p256::ecdsa::VerifyingKey {
        &self.public_key
    }

    /// The public key, SEC1 uncompressed (65 bytes), for storage.
    pub fn public_key_sec1(&self) -> Vec<u8> {
        self.public_key.to_encoded_point(false).as_bytes().to_vec()
    }

    /// The last counter seen.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// Records a verified assertion of this credential: the stored counter
    /// becomes its counter. The caller stores the credential again before
    /// acting on the assertion. Returns `false` (and changes nothing) for
    /// an assertion of another credential.
    pub fn record(&mut self, assertion: &crate::VerifiedAssertion) -> bool {
        if assertion.credential_id() != self.id.as_slice() {
            return false;
        }
        self.counter = assertion.counter();
        true
    }

    pub(crate) fn new(id: Vec<u8>, public_key: p256::ecdsa::VerifyingKey, counter: u32) -> Self {
        Credential {
            id,
            public_key,
            counter,
        }
    }
}

/// Checks a registration for `rp` over `challenge` and returns the
/// credential. Attestation `none` (an empty statement) and `packed` are
/// accepted; neither statement is trusted or checked, so the result says
/// nothing about the authenticator's make.
pub fn verify_registration(
    rp: &RelyingParty,
    challenge: &[u8],
    response: &RegistrationResponse<'_>,
    uv: UserVerification,
) -> Result<Credential, Error> {
    client_data::check(response.client_data_json, "webauthn.create", challenge, rp)?;
    let auth_data = attestation_auth_data(response.attestation_object)?;
    let parsed = authdata::parse(auth_data)?;
    if parsed.rp_id_hash != rp.id_hash() {
        return Err(Error::WrongRpIdHash);
    }
    check_user(parsed.flags, uv)?;
    let attested = parsed.attested.ok_or(Error::NoAttestedCredential)?;
    if attested.credential_id != response.credential_id {
        return Err(Error::WrongCredential);
    }
    Ok(Credential::new(
        attested.credential_id.to_vec(),
        attested.public_key,
        parsed.counter,
    ))
}

/// The `authData` of an attestation object `{fmt, attStmt, authData}`.
fn attestation_auth_data(object: &[u8]) -> Result<&[u8], Error> {
    let bad = |_| Error::AttestationMalformed;
    let mut d = Decoder::new(object);
    let n = d.map().map_err(bad)?.ok_or(Error::AttestationMalformed)?;
    let (mut fmt, mut stmt_empty, mut auth_data) = (None, None, None);
    for _ in 0..n {
        if d.datatype().map_err(bad)? != Type::String {
            return Err(Error::AttestationMalformed);
        }
        match d.str().map_err(bad)? {
            "fmt" if fmt.is_none() => fmt = Some(d.str().map_err(bad)?),
            "attStmt" if stmt_empty.is_none() => {
                if d.datatype().map_err(bad)? != Type::Map {
                    return Err(Error::AttestationMalformed);
                }
                let mut probe = d.clone();
                stmt_empty = Some(probe.map().map_err(bad)? == Some(0));
                d.skip().map_err(bad)?;
            }
            "authData" if auth_data.is_none() => auth_data = Some(d.bytes().map_err(bad)?),
            "fmt" | "attStmt" | "authData" => return Err(Error::AttestationMalformed),
            _ => d.skip().map_err(bad)?,
        }
    }
    if d.position() != object.len() {
        return Err(Error::AttestationMalformed);
    }
    let (Some(fmt), Some(stmt_empty), Some(auth_data)) = (fmt, stmt_empty, auth_data) else {
        return Err(Error::AttestationMalformed);
    };
    match fmt {
        "none" if stmt_empty => Ok(auth_data),
        "none" => Err(Error::AttestationMalformed),
        "packed" => Ok(auth_data),
        other => Err(Error::UnsupportedAttestation(
            other.chars().take(32).collect(),
        )),
    }
}
