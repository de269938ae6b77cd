//! A passkey as an OpenSSH security-key ECDSA key (PROTOCOL.u2f): its
//! public key, its signatures, and sshd's check of them.
//!
//! The key is `sk-ecdsa-sha2-nistp256@openssh.com` with *application* =
//! the relying-party id. A WebAuthn assertion whose challenge is exactly
//! the data to sign becomes a `webauthn-sk-ecdsa-sha2-nistp256@openssh.com`
//! signature:
//!
//! ```text
//! string  "webauthn-sk-ecdsa-sha2-nistp256@openssh.com"
//! string  ecdsa_signature: mpint r, mpint s
//! byte    flags            (authenticator data byte 32)
//! uint32  counter          (authenticator data bytes 33..37)
//! string  origin
//! string  clientDataJSON
//! string  extensions       (authenticator data after byte 37; empty
//!                           unless the ED flag is set)
//! ```
//!
//! The plain `sk-ecdsa-sha2-nistp256@openssh.com` signature has the first
//! four fields only. sshd verifies ECDSA over `SHA-256(application) ‖ flags
//! ‖ counter ‖ extensions ‖ H` where H is SHA-256(data) for the plain
//! format and SHA-256(clientDataJSON) for the WebAuthn one (which is
//! exactly the authenticator's `authenticatorData ‖ clientDataHash`).

use crate::{check_user, Credential, Error, Flags, UserVerification, VerifiedAssertion};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use ssh_key::public::{KeyData, SkEcdsaSha2NistP256};
use vmux_ssh::{put_string, Fields};

/// The key type (and plain signature type).
pub const SK_ECDSA: &str = "sk-ecdsa-sha2-nistp256@openssh.com";
/// The WebAuthn signature type.
pub const WEBAUTHN_SK_ECDSA: &str = "webauthn-sk-ecdsa-sha2-nistp256@openssh.com";

/// The credential's OpenSSH public key, with `application` = the
/// relying-party id.
pub fn public_key(credential: &Credential, application: &str) -> ssh_key::PublicKey {
    let point = credential.public_key().to_encoded_point(false);
    let key = SkEcdsaSha2NistP256::new(point, application);
    ssh_key::PublicKey::new(KeyData::SkEcdsaSha2NistP256(key), "")
}

/// The credential's `authorized_keys` line
/// (`sk-ecdsa-sha2-nistp256@openssh.com AAAA… COMMENT`).
pub fn authorized_keys_line(
    credential: &Credential,
    application: &str,
    comment: &str,
) -> Result<String, Error> {
    let mut key = public_key(credential, application);
    key.set_comment(comment);
    key.to_openssh().map_err(|_| Error::SshEncoding)
}

/// The `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` signature of `data`
/// from an assertion whose challenge was exactly `data`. The result is
/// checked with [`verify_signature`] before it is returned, so it is one
/// sshd accepts (UP set; UV as the assertion had it).
pub fn webauthn_signature(assertion: &VerifiedAssertion, data: &[u8]) -> Result<Vec<u8>, Error> {
    if assertion.challenge() != data {
        return Err(Error::WrongChallenge);
    }
    let auth = assertion.authenticator_data();
    let extensions = auth.get(37..).ok_or(Error::AuthDataMalformed)?;
    let mut ecdsa = Vec::new();
    put_mpint(&mut ecdsa, &assertion.signature().r().to_bytes());
    put_mpint(&mut ecdsa, &assertion.signature().s().to_bytes());
    let mut blob = Vec::new();
    put_string(&mut blob, WEBAUTHN_SK_ECDSA.as_bytes());
    put_string(&mut blob, &ecdsa);
    blob.push(assertion.flags().bits());
    blob.extend_from_slice(&assertion.counter().to_be_bytes());
    put_string(&mut blob, assertion.origin().as_bytes());
    put_string(&mut blob, assertion.client_data_json());
    put_string(&mut blob, extensions);
    let key = SkEcdsaSha2NistP256::new(
        assertion.public_key().to_encoded_point(false),
        assertion.rp_id(),
    );
    let key_blob = ssh_key::PublicKey::new(KeyData::SkEcdsaSha2NistP256(key), "")
        .to_bytes()
        .map_err(|_| Error::SshEncoding)?;
    let uv = if assertion.flags().user_verified() {
        UserVerification::Required
    } else {
        UserVerification::PresenceOnly
    };
    verify_signature(&key_blob, data, &blob, uv)?;
    Ok(blob)
}

/// Which of the two sk-ecdsa signature formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkFormat {
    /// `sk-ecdsa-sha2-nistp256@openssh.com` (CTAP, e.g. a YubiKey).
    Plain,
    /// `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` (a browser).
    Webauthn,
}

/// An sk-ecdsa signature that verified as sshd verifies it: made only by
/// [`verify_signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSkSignature {
    format: SkFormat,
    flags: Flags,
    counter: u32,
    origin: Option<String>,
}

impl VerifiedSkSignature {
    /// The format.
    pub fn format(&self) -> SkFormat {
        self.format
    }
    /// The authenticator's flags.
    pub fn flags(&self) -> Flags {
        self.flags
    }
    /// The signature counter.
    pub fn counter(&self) -> u32 {
        self.counter
    }
    /// The WebAuthn origin (sshd does not check it; a caller may).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

/// Checks `signature` (an SSH signature blob of either sk-ecdsa format)
/// over `data` by `key_blob` (an `sk-ecdsa-sha2-nistp256@openssh.com`
/// public-key blob), as OpenSSH's `ssh_ecdsa_sk_verify` does, then requires
/// user presence (sshd's default) and, when asked, user verification (the
/// `verify-required` option).
///
/// For the WebAuthn format: the origin holds no `"`; the AT flag is unset;
/// the ED flag is set exactly when extensions are present; and
/// clientDataJSON begins with exactly
/// `{"type":"webauthn.get","challenge":"<base64url(data), no padding>","origin":"<origin>"`.
pub fn verify_signature(
    key_blob: &[u8],
    data: &[u8],
    signature: &[u8],
    uv: UserVerification,
) -> Result<VerifiedSkSignature, Error> {
    let key = ssh_key::PublicKey::from_bytes(key_blob).map_err(|_| Error::NotSkEcdsaKey)?;
    let KeyData::SkEcdsaSha2NistP256(sk) = key.key_data() else {
        return Err(Error::NotSkEcdsaKey);
    };
    let verifying_key = VerifyingKey::from_sec1_bytes(sk.ec_point().as_bytes())
        .map_err(|_| Error::NotSkEcdsaKey)?;

    let bad = || Error::SshSignatureMalformed;
    let mut f = Fields(signature);
    let ty = f.string().ok_or_else(bad)?;
    let format = match ty {
        t if t == WEBAUTHN_SK_ECDSA.as_bytes() => SkFormat::Webauthn,
        t if t == SK_ECDSA.as_bytes() => SkFormat::Plain,
        t => {
            return Err(Error::SshSignatureType(
                String::from_utf8_lossy(t).chars().take(64).collect(),
            ))
        }
    };
    let ecdsa = f.string().ok_or_else(bad)?;
    let flags = Flags::from_bits(f.u8().ok_or_else(bad)?);
    let counter = f.u32().ok_or_else(bad)?;
    let (origin, wrapper, extensions) = match format {
        SkFormat::Webauthn => {
            let origin = f.string().ok_or_else(bad)?;
            let wrapper = f.string().ok_or_else(bad)?;
            let extensions = f.string().ok_or_else(bad)?;
            (Some(origin), Some(wrapper), extensions)
        }
        SkFormat::Plain => (None, None, &[][..]),
    };
    if !f.is_empty() {
        return Err(bad());
    }
    let mut e = Fields(ecdsa);
    let r = mpint32(e.string().ok_or_else(bad)?).ok_or_else(bad)?;
    let s = mpint32(e.string().ok_or_else(bad)?).ok_or_else(bad)?;
    if !e.is_empty() {
        return Err(bad());
    }
    // A zero or out-of-range scalar never verifies.
    let sig = Signature::from_scalars(r, s).map_err(|_| Error::BadSignature)?;

    let (msg_hash, origin) = match (origin, wrapper) {
        (Some(origin), Some(wrapper)) => {
            // sshd reads the origin as a C string.
            let origin = std::str::from_utf8(origin).map_err(|_| bad())?;
            if origin.contains('"') || origin.contains('\0') {
                return Err(bad());
            }
            if flags.bits() & Flags::AT != 0
                || (flags.bits() & Flags::ED == 0) != extensions.is_empty()
            {
                return Err(Error::SshFlags);
            }
            let mut prefix = Vec::with_capacity(
                (data.len() / 3 + 1)
                    .saturating_mul(4)
                    .saturating_add(64 + origin.len()),
            );
            prefix.extend_from_slice(br#"{"type":"webauthn.get","challenge":""#);
            prefix.extend_from_slice(URL_SAFE_NO_PAD.encode(data).as_bytes());
            prefix.extend_from_slice(br#"","origin":""#);
            prefix.extend_from_slice(origin.as_bytes());
            prefix.push(b'"');
            if !wrapper.starts_with(&prefix) {
                return Err(Error::ClientDataPrefix);
            }
            (Sha256::digest(wrapper), Some(origin.to_owned()))
        }
        _ => (Sha256::digest(data), None),
    };
    let mut signed = Vec::with_capacity(69 + extensions.len());
    signed.extend_from_slice(&Sha256::digest(sk.application().as_bytes()));
    signed.push(flags.bits());
    signed.extend_from_slice(&counter.to_be_bytes());
    signed.extend_from_slice(extensions);
    signed.extend_from_slice(&msg_hash);
    verifying_key
        .verify(&signed, &sig)
        .map_err(|_| Error::BadSignature)?;
    check_user(flags, uv)?;
    Ok(VerifiedSkSignature {
        format,
        flags,
        counter,
        origin,
    })
}

/// An OpenSSH certificate (PROTOCOL.certkeys) cut into what its CA signs
/// and the CA's signature: made by [`certificate_parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateParts<'a> {
    /// The to-be-signed bytes: the certificate from its type string up to
    /// and including the signature key.
    pub tbs: &'a [u8],
    /// The CA's public-key blob (the last field of `tbs`).
    pub signature_key: &'a [u8],
    /// The CA's signature blob (the certificate's last field).
    pub signature: &'a [u8],
}

/// The certificate types [`certificate_parts`] reads, with the number of
/// `string` fields of the subject key after the nonce.
const CERT_TYPES: [(&str, usize); 2] = [
    ("ecdsa-sha2-nistp256-cert-v01@openssh.com", 2),
    ("ssh-ed25519-cert-v01@openssh.com", 1),
];

/// Cuts a certificate blob whose subject is an `ecdsa-sha2-nistp256` key
/// (what vmux certifies) or an `ssh-ed25519` key into its parts; refuses
/// any other type, a truncated blob or trailing bytes.
pub fn certificate_parts(blob: &[u8]) -> Result<CertificateParts<'_>, Error> {
    let bad = || Error::CertificateMalformed;
    let mut f = Fields(blob);
    let ty = f.string().ok_or_else(bad)?;
    let key_fields = CERT_TYPES
        .iter()
        .find(|(t, _)| t.as_bytes() == ty)
        .map(|(_, n)| *n)
        .ok_or_else(bad)?;
    // nonce, then the subject key's fields.
    for _ in 0..1 + key_fields {
        f.string().ok_or_else(bad)?;
    }
    // serial (uint64), type (uint32)
    for _ in 0..3 {
        f.u32().ok_or_else(bad)?;
    }
    // key id, valid principals
    for _ in 0..2 {
        f.string().ok_or_else(bad)?;
    }
    // valid after, valid before (uint64 each)
    for _ in 0..4 {
        f.u32().ok_or_else(bad)?;
    }
    // critical options, extensions, reserved
    for _ in 0..3 {
        f.string().ok_or_else(bad)?;
    }
    let signature_key = f.string().ok_or_else(bad)?;
    let tbs = &blob[..blob.len() - f.rest().len()];
    let signature = f.string().ok_or_else(bad)?;
    if !f.is_empty() {
        return Err(bad());
    }
    Ok(CertificateParts {
        tbs,
        signature_key,
        signature,
    })
}

/// Checks a certificate whose CA key is an sk-ecdsa key (a phone's
/// passkey) as sshd does ([`verify_signature`] of its signature over its
/// to-be-signed bytes by its own signature key), requiring `uv`.
pub fn verify_sk_certificate(
    blob: &[u8],
    uv: UserVerification,
) -> Result<(CertificateParts<'_>, VerifiedSkSignature), Error> {
    let parts = certificate_parts(blob)?;
    let verified = verify_signature(parts.signature_key, parts.tbs, parts.signature, uv)?;
    Ok((parts, verified))
}

/// The certificate's fields as `ssh_key` reads them, whatever its
/// signature format: `ssh_key` does not read a
/// `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` signature, so the
/// signature is replaced by a placeholder one. The result's own
/// `verify_signature` therefore fails: check the signature with
/// [`verify_sk_certificate`] first.
pub fn certificate_fields(parts: &CertificateParts<'_>) -> Result<ssh_key::Certificate, Error> {
    let mut ecdsa = Vec::new();
    put_string(&mut ecdsa, &[1]);
    put_string(&mut ecdsa, &[1]);
    let mut placeholder = Vec::new();
    put_string(&mut placeholder, SK_ECDSA.as_bytes());
    put_string(&mut placeholder, &ecdsa);
    placeholder.extend_from_slice(&[0; 5]);
    let mut blob = parts.tbs.to_vec();
    put_string(&mut blob, &placeholder);
    ssh_key::Certificate::from_bytes(&blob).map_err(|_| Error::CertificateMalformed)
}

/// The certificate made of its to-be-signed bytes and the CA's signature.
pub fn certificate_with_signature(tbs: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(tbs.len() + 4 + signature.len());
    blob.extend_from_slice(tbs);
    put_string(&mut blob, signature);
    blob
}

/// An unsigned big-endian integer as an SSH `mpint`.
fn put_mpint(out: &mut Vec<u8>, be: &[u8]) {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    let mut m = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|b| b & 0x80 != 0) {
        m.push(0);
    }
    m.extend_from_slice(digits);
    put_string(out, &m);
}

/// An `mpint` as OpenSSH's `sshbuf_get_bignum2` reads it (non-negative,
/// leading zeros allowed), left-padded to 32 bytes; `None` if negative or
/// longer.
fn mpint32(m: &[u8]) -> Option<[u8; 32]> {
    if m.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let start = m.iter().position(|&b| b != 0).unwrap_or(m.len());
    let digits = &m[start..];
    if digits.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - digits.len()..].copy_from_slice(digits);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpints_round_trip_and_refuse_negative_or_long() {
        let mut v = Vec::new();
        let mut high = [0u8; 32];
        high[0] = 0x80;
        put_mpint(&mut v, &high);
        assert_eq!(&v[..5], &[0, 0, 0, 33, 0]);
        assert_eq!(mpint32(&v[4..]), Some(high));
        let mut low = [0u8; 32];
        low[31] = 7;
        let mut w = Vec::new();
        put_mpint(&mut w, &low);
        assert_eq!(w, vec![0, 0, 0, 1, 7]);
        assert_eq!(mpint32(&[0x80]), None);
        assert_eq!(mpint32(&[1; 33]), None);
        assert_eq!(mpint32(&[0, 0, 7]), Some(low));
        assert_eq!(mpint32(&[]), Some([0; 32]));
    }

    #[test]
    fn certificates_are_cut_into_tbs_signature_key_and_signature() {
        use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};
        let p256 = || {
            PrivateKey::random(
                &mut rand_core::OsRng,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
            )
            .unwrap()
        };
        let (subject, ca) = (p256(), p256());
        let mut b = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut rand_core::OsRng,
            subject.public_key().key_data().clone(),
            1_000_000,
            2_000_000_000,
        )
        .unwrap();
        b.valid_principal("alice").unwrap();
        let cert = b.sign(&ca).unwrap();
        let blob = cert.to_bytes().unwrap();
        let parts = certificate_parts(&blob).unwrap();
        assert_eq!(parts.signature_key, ca.public_key().to_bytes().unwrap());
        assert!(parts.tbs.ends_with(parts.signature_key));
        assert_eq!(certificate_with_signature(parts.tbs, parts.signature), blob);
        assert_eq!(
            parts.signature,
            Vec::<u8>::try_from(cert.signature().clone()).unwrap()
        );
        let fields = certificate_fields(&parts).unwrap();
        assert_eq!(fields.valid_principals(), ["alice".to_owned()]);
        assert_eq!(fields.public_key(), subject.public_key().key_data());
        // Truncated, trailing bytes, another type: refused.
        for bad in [
            &blob[..blob.len() - 1],
            &[&blob[..], &[0]][..].concat()[..],
            &blob[4..],
        ] {
            assert_eq!(certificate_parts(bad), Err(Error::CertificateMalformed));
        }
        // A software CA's certificate is no sk certificate.
        assert!(verify_sk_certificate(&blob, UserVerification::Required).is_err());
    }
}
