//! A software authenticator and browser for tests: it builds attestation
//! objects, assertions and OpenSSH signatures the way Chromium and a
//! platform authenticator do, and lets a test break any piece.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

/// An owned registration, as the page would send it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `rawId`.
    pub credential_id: Vec<u8>,
    /// `attestationObject`.
    pub attestation_object: Vec<u8>,
    /// `clientDataJSON`.
    pub client_data_json: Vec<u8>,
}

impl Registration {
    /// The borrowed form the checks take.
    pub fn response(&self) -> crate::RegistrationResponse<'_> {
        crate::RegistrationResponse {
            credential_id: &self.credential_id,
            attestation_object: &self.attestation_object,
            client_data_json: &self.client_data_json,
        }
    }
}

/// An owned assertion, as the page would send it.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// `rawId`.
    pub credential_id: Vec<u8>,
    /// `authenticatorData`.
    pub authenticator_data: Vec<u8>,
    /// `clientDataJSON`.
    pub client_data_json: Vec<u8>,
    /// DER signature.
    pub signature: Vec<u8>,
}

impl Assertion {
    /// The borrowed form the checks take.
    pub fn response(&self) -> crate::AssertionResponse<'_> {
        crate::AssertionResponse {
            credential_id: &self.credential_id,
            authenticator_data: &self.authenticator_data,
            client_data_json: &self.client_data_json,
            signature: &self.signature,
        }
    }
}

/// A passkey in software: one P-256 credential for one relying party.
#[derive(Debug, Clone)]
pub struct SoftAuthenticator {
    /// The private key.
    pub key: SigningKey,
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// The relying-party id whose hash goes into authenticator data.
    pub rp_id: String,
    /// The origin the "browser" puts into clientDataJSON.
    pub origin: String,
    /// The flags byte it reports (UP|UV by default).
    pub flags: u8,
    /// The counter; incremented before each assertion unless zero-only.
    pub counter: u32,
    /// Whether the counter stays 0 (a synced passkey).
    pub zero_counter: bool,
}

impl SoftAuthenticator {
    /// A new credential with a random key and id.
    pub fn new(rp_id: &str, origin: &str) -> SoftAuthenticator {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let mut credential_id = vec![0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut credential_id);
        SoftAuthenticator {
            key,
            credential_id,
            rp_id: rp_id.to_owned(),
            origin: origin.to_owned(),
            flags: crate::Flags::UP | crate::Flags::UV,
            counter: 0,
            zero_counter: false,
        }
    }

    /// Chromium's clientDataJSON for `ty` and `challenge`.
    pub fn client_data(&self, ty: &str, challenge: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"type":"{ty}","challenge":"{}","origin":"{}","crossOrigin":false}}"#,
            URL_SAFE_NO_PAD.encode(challenge),
            self.origin
        )
        .into_bytes()
    }

    /// `rpIdHash ‖ flags ‖ counter` (37 bytes).
    pub fn auth_data_head(&self, flags: u8, counter: u32) -> Vec<u8> {
        let mut a = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        a.push(flags);
        a.extend_from_slice(&counter.to_be_bytes());
        a
    }

    /// The COSE_Key of the public key.
    pub fn cose_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let (x, y) = (point.x().map(|x| x.to_vec()), point.y().map(|y| y.to_vec()));
        cose_key(2, -7, 1, &x.unwrap_or_default(), &y.unwrap_or_default())
    }

    /// `navigator.credentials.create` with attestation `none`.
    pub fn create(&self, challenge: &[u8]) -> Registration {
        let mut auth = self.auth_data_head(self.flags | crate::Flags::AT, self.counter);
        auth.extend_from_slice(&[0u8; 16]);
        auth.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth.extend_from_slice(&self.credential_id);
        auth.extend_from_slice(&self.cose_key());
        Registration {
            credential_id: self.credential_id.clone(),
            attestation_object: attestation_object("none", &auth),
            client_data_json: self.client_data("webauthn.create", challenge),
        }
    }

    /// `navigator.credentials.get` over `challenge`.
    pub fn get(&mut self, challenge: &[u8]) -> Assertion {
        if !self.zero_counter {
            self.counter += 1;
        }
        let authenticator_data = self.auth_data_head(self.flags, self.counter);
        let client_data_json = self.client_data("webauthn.get", challenge);
        self.assertion(authenticator_data, client_data_json)
    }

    /// An assertion signed over the given pieces as they are.
    pub fn assertion(&self, authenticator_data: Vec<u8>, client_data_json: Vec<u8>) -> Assertion {
        let signature = self.sign(&authenticator_data, &Sha256::digest(&client_data_json));
        Assertion {
            credential_id: self.credential_id.clone(),
            authenticator_data,
            client_data_json,
            signature: signature.to_der().as_bytes().to_vec(),
        }
    }

    /// ECDSA over `authenticatorData ‖ clientDataHash`.
    pub fn sign(&self, authenticator_data: &[u8], client_data_hash: &[u8]) -> Signature {
        let mut m = authenticator_data.to_vec();
        m.extend_from_slice(client_data_hash);
        self.key.sign(&m)
    }

    /// A plain `sk-ecdsa-sha2-nistp256@openssh.com` signature of `data`,
    /// as a CTAP authenticator makes it (clientDataHash = SHA-256(data)).
    pub fn plain_ssh_signature(&mut self, data: &[u8]) -> Vec<u8> {
        self.counter += 1;
        let head = self.auth_data_head(self.flags, self.counter);
        let sig = self.sign(&head, &Sha256::digest(data));
        let mut ecdsa = Vec::new();
        for scalar in [sig.r().to_bytes(), sig.s().to_bytes()] {
            let mut m = vec![0u8];
            m.extend_from_slice(&scalar);
            put_string(&mut ecdsa, &m);
        }
        let mut blob = Vec::new();
        put_string(&mut blob, crate::openssh::SK_ECDSA.as_bytes());
        put_string(&mut blob, &ecdsa);
        blob.push(self.flags);
        blob.extend_from_slice(&self.counter.to_be_bytes());
        blob
    }
}

pub use vmux_ssh::put_string;

/// A COSE_Key map `{1: kty, 3: alg, -1: crv, -2: x, -3: y}`.
pub fn cose_key(kty: i64, alg: i64, crv: i64, x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    let r: Result<_, minicbor::encode::Error<core::convert::Infallible>> = (|| {
        e.map(5)?
            .i8(1)?
            .i64(kty)?
            .i8(3)?
            .i64(alg)?
            .i8(-1)?
            .i64(crv)?
            .i8(-2)?
            .bytes(x)?
            .i8(-3)?
            .bytes(y)?;
        Ok(())
    })();
    r.expect("encoding into a Vec cannot fail");
    e.into_writer()
}

/// An attestation object `{fmt, attStmt: {}, authData}`.
pub fn attestation_object(fmt: &str, auth_data: &[u8]) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    let r: Result<_, minicbor::encode::Error<core::convert::Infallible>> = (|| {
        e.map(3)?
            .str("fmt")?
            .str(fmt)?
            .str("attStmt")?
            .map(0)?
            .str("authData")?
            .bytes(auth_data)?;
        Ok(())
    })();
    r.expect("encoding into a Vec cannot fail");
    e.into_writer()
}

/// A `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` signature blob from
/// its pieces: the ECDSA signature `sig` over the authenticator data
/// (`flags`, `counter`, extensions `ext`) and the hash of `client`, and
/// the `origin` it names.
pub fn webauthn_sk_signature(
    sig: &p256::ecdsa::Signature,
    flags: u8,
    counter: u32,
    origin: &str,
    client: &[u8],
    ext: &[u8],
) -> Vec<u8> {
    let mut ecdsa = Vec::new();
    for s in [sig.r().to_bytes(), sig.s().to_bytes()] {
        put_string(&mut ecdsa, &[&[0u8][..], &s].concat());
    }
    let mut b = Vec::new();
    put_string(&mut b, crate::openssh::WEBAUTHN_SK_ECDSA.as_bytes());
    put_string(&mut b, &ecdsa);
    b.push(flags);
    b.extend_from_slice(&counter.to_be_bytes());
    put_string(&mut b, origin.as_bytes());
    put_string(&mut b, client);
    put_string(&mut b, ext);
    b
}
