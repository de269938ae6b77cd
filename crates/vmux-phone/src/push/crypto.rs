//! The message encryption (RFC 8291, `aes128gcm`), the VAPID key (RFC
//! 8292: made at first use, kept in the signer's home as `push-vapid.pem`,
//! PKCS#8, mode 0600, not encrypted: see SECURITY.md) and the VAPID
//! `Authorization` header.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use p256::SecretKey;
use vmux_home::sync::lock;
use vmux_home::HomeError;

/// The VAPID key's file, made when first needed.
pub struct VapidKey {
    path: PathBuf,
    key: Mutex<Option<SecretKey>>,
}

impl VapidKey {
    /// The key kept at `path` (read or made at first use).
    pub fn at(path: PathBuf) -> VapidKey {
        VapidKey {
            path,
            key: Mutex::new(None),
        }
    }

    /// The key, read from its file or made and written there (0600).
    pub fn key(&self) -> Result<SecretKey, HomeError> {
        let mut k = lock(&self.key);
        if let Some(key) = k.as_ref() {
            return Ok(key.clone());
        }
        let key = load_or_make(&self.path)?;
        *k = Some(key.clone());
        Ok(key)
    }

    /// The public key as the page's `applicationServerKey`: the
    /// uncompressed P-256 point, base64url.
    pub fn public_b64(&self) -> Result<String, HomeError> {
        let key = self.key()?;
        Ok(B64URL.encode(key.public_key().to_encoded_point(false).as_bytes()))
    }
}

fn corrupt(path: &Path, message: &str) -> HomeError {
    HomeError::Config {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn load_or_make(path: &Path) -> Result<SecretKey, HomeError> {
    if let Some(bytes) = vmux_home::read_optional(path)? {
        let pem = std::str::from_utf8(&bytes).map_err(|_| corrupt(path, "not a PEM file"))?;
        return SecretKey::from_pkcs8_pem(pem)
            .map_err(|_| corrupt(path, "not a PKCS#8 P-256 private key"));
    }
    let key = loop {
        let bytes: [u8; 32] = rand::random();
        if let Ok(k) = SecretKey::from_slice(&bytes) {
            break k;
        }
    };
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| corrupt(path, "could not encode the new key"))?;
    vmux_home::write_private(path, pem.as_bytes())?;
    Ok(key)
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC takes a key of any length.
    let mut m = <HmacSha256 as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The record size this signer writes (one record: payloads are small).
const RECORD_SIZE: u32 = 4096;

/// The largest payload [`encrypt`] takes (one record, less its tag and
/// delimiter, with room to spare under the 4096 bytes push services take).
pub const MAX_PAYLOAD: usize = 3000;

/// Why a message could not be encrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncryptError {
    /// The subscription's p256dh is not a P-256 point.
    #[error("the subscription's key is not a P-256 public key")]
    BadKey,
    /// The payload is too large for one record.
    #[error("the push message is too large")]
    TooLarge,
}

/// Encrypts `plaintext` for a subscription (RFC 8291 with RFC 8188
/// `aes128gcm`, one record): `ua_public` its p256dh (65 bytes), `auth` its
/// secret, with the sender's one-time key `as_private` and `salt`. Returns
/// the request body (header with salt, record size and sender key, then
/// the record).
pub fn encrypt_with(
    ua_public: &[u8],
    auth: &[u8],
    plaintext: &[u8],
    as_private: &SecretKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    use aes_gcm::aead::{Aead, KeyInit};
    if plaintext.len() > MAX_PAYLOAD {
        return Err(EncryptError::TooLarge);
    }
    let ua = p256::PublicKey::from_sec1_bytes(ua_public).map_err(|_| EncryptError::BadKey)?;
    let ua_point = ua.to_encoded_point(false);
    let as_point = as_private.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(as_private.to_nonzero_scalar(), ua.as_affine());
    // RFC 8291 §3.3/3.4: IKM from the ECDH secret and the auth secret.
    let prk_key = hmac(auth, &[shared.raw_secret_bytes().as_slice()]);
    let ikm = hmac(
        &prk_key,
        &[
            b"WebPush: info\0",
            ua_point.as_bytes(),
            as_point.as_bytes(),
            &[1],
        ],
    );
    let prk = hmac(salt, &[&ikm]);
    let cek = hmac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
    let nonce = hmac(&prk, &[b"Content-Encoding: nonce\0", &[1]]);
    let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek[..16])
        .unwrap_or_else(|_| unreachable!("16-byte key"));
    let mut record = zeroize::Zeroizing::new(Vec::with_capacity(plaintext.len() + 1));
    record.extend_from_slice(plaintext);
    record.push(2); // the last record's delimiter, no padding
    let sealed = cipher
        .encrypt(aes_gcm::Nonce::from_slice(&nonce[..12]), record.as_slice())
        .map_err(|_| EncryptError::TooLarge)?;
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_point.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// [`encrypt_with`] a fresh one-time key and salt.
pub fn encrypt(ua_public: &[u8], auth: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
    let key = loop {
        let bytes: [u8; 32] = rand::random();
        if let Ok(k) = SecretKey::from_slice(&bytes) {
            break k;
        }
    };
    encrypt_with(ua_public, auth, plaintext, &key, &rand::random())
}

/// The VAPID `Authorization` header value (RFC 8292): `vapid t=JWT,
/// k=KEY`, the JWT (ES256) claiming `aud` (the push service's origin),
/// `exp` (Unix seconds) and `sub` (a `mailto:` or `https:` contact).
pub fn vapid_authorization(key: &SecretKey, aud: &str, exp: u64, sub: &str) -> String {
    use p256::ecdsa::signature::Signer;
    let header = B64URL.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
    let claims =
        B64URL.encode(serde_json::json!({ "aud": aud, "exp": exp, "sub": sub }).to_string());
    let signing_input = format!("{header}.{claims}");
    let sig: p256::ecdsa::Signature =
        p256::ecdsa::SigningKey::from(key.clone()).sign(signing_input.as_bytes());
    let public = B64URL.encode(key.public_key().to_encoded_point(false).as_bytes());
    format!(
        "vapid t={signing_input}.{}, k={public}",
        B64URL.encode(sig.to_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Vec<u8> {
        B64URL.decode(s).unwrap()
    }

    /// RFC 8291 §5's example, byte for byte.
    #[test]
    fn encrypts_the_rfc_8291_example() {
        let as_private =
            SecretKey::from_slice(&d("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let ua_public = d("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let auth = d("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = d("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            &ua_public,
            &auth,
            b"When I grow up, I want to be a watermelon",
            &as_private,
            &salt,
        )
        .unwrap();
        assert_eq!(
            B64URL.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
        assert_eq!(
            encrypt(&ua_public[..64], &auth, b"x"),
            Err(EncryptError::BadKey)
        );
        assert_eq!(
            encrypt(&ua_public, &auth, &[0; MAX_PAYLOAD + 1]),
            Err(EncryptError::TooLarge)
        );
    }

    #[test]
    fn the_vapid_jwt_is_es256_over_its_claims_by_the_key_it_names() {
        use p256::ecdsa::signature::Verifier;
        let key = SecretKey::from_slice(&[3u8; 32]).unwrap();
        let h = vapid_authorization(&key, "https://push.example", 1_700_000_000, "mailto:a@b.c");
        let rest = h.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(d(k), key.public_key().to_encoded_point(false).as_bytes());
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let (_, claims) = input.split_once('.').unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&d(claims)).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"aud": "https://push.example", "exp": 1_700_000_000u64, "sub": "mailto:a@b.c"})
        );
        let sig = p256::ecdsa::Signature::from_slice(&d(sig)).unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&d(k)).unwrap();
        vk.verify(input.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn made_once_0600_and_the_same_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push-vapid.pem");
        let a = VapidKey::at(path.clone());
        assert!(!path.exists(), "not made before first use");
        let public = a.public_b64().unwrap();
        assert_eq!(B64URL.decode(&public).unwrap().len(), 65);
        assert_eq!(vmux_home::mode_of(&path).unwrap(), 0o600);
        assert_eq!(a.public_b64().unwrap(), public);
        let b = VapidKey::at(path.clone());
        assert_eq!(b.public_b64().unwrap(), public);
        std::fs::write(&path, "junk").unwrap();
        assert!(VapidKey::at(path).key().is_err());
    }
}
