//! The message encryption (RFC 8291, `aes128gcm`), the VAPID key (RFC
//! 8292: made when the page is first served, kept in the signer's home as
//! `push-vapid.key`, encrypted with the signer's passphrase like its other
//! keys) and the VAPID `Authorization` header.
//!
//! The encryption is RFC 8291's few steps (ECDH, two HKDFs, one AES-GCM
//! record) on the RustCrypto crates the signer already has (`p256`,
//! `hmac`, `sha2`, `aes-gcm`), checked byte for byte against the RFC's
//! example: the `ece` crate's only backend is OpenSSL, a second crypto
//! stack the binary otherwise does without.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::SecretKey;
use vmux_home::sync::lock;
use vmux_home::HomeError;

use crate::keyfile;

/// The signer's VAPID key: an OpenSSH private key file (ECDSA P-256,
/// mode 0600) encrypted with the signer's passphrase when the signer's
/// keys are, made when the page is first served. In memory only while
/// the signer is unlocked.
pub struct VapidKey {
    path: PathBuf,
    key: Mutex<Option<SecretKey>>,
    encrypted: Mutex<bool>,
}

/// Why the VAPID key is not there.
#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    /// The signer is locked (or the key was never unlocked).
    #[error("the signer is locked")]
    Locked,
    /// The file cannot be read, written or decrypted.
    #[error(transparent)]
    Home(#[from] HomeError),
}

impl VapidKey {
    /// The key kept at `path`, not read yet ([`VapidKey::unlock`]).
    pub fn at(path: PathBuf) -> VapidKey {
        VapidKey {
            path,
            key: Mutex::new(None),
            encrypted: Mutex::new(false),
        }
    }

    /// Reads the key (decrypting it with `passphrase`), or makes it and
    /// writes it (encrypted with `passphrase` if one is given). A key in
    /// the older unencrypted PKCS#8 file beside it (`push-vapid.pem`) is
    /// moved into the new file and the old file removed, so that the
    /// phones' subscriptions stay valid.
    pub fn unlock(&self, passphrase: Option<&str>) -> Result<(), HomeError> {
        let key = match vmux_home::read_optional(&self.path)? {
            Some(pem) => {
                let pem = zeroize::Zeroizing::new(pem);
                keyfile::decode(&pem, passphrase, &self.encrypted)
                    .map_err(|what| corrupt(&self.path, what))?
            }
            None => {
                let old = self.path.with_file_name("push-vapid.pem");
                let key = match read_old(&old)? {
                    Some(k) => k,
                    None => keyfile::random_key(),
                };
                self.write(&key, passphrase)?;
                if old.exists() {
                    std::fs::remove_file(&old).map_err(|e| HomeError::io(&old, e))?;
                }
                key
            }
        };
        *lock(&self.key) = Some(key);
        Ok(())
    }

    fn write(&self, key: &SecretKey, passphrase: Option<&str>) -> Result<(), HomeError> {
        let pem = keyfile::encode(key, "vmux Web Push (VAPID)", passphrase)
            .map_err(|_| corrupt(&self.path, "could not encode the new key"))?;
        *lock(&self.encrypted) = passphrase.is_some();
        vmux_home::write_private(&self.path, pem.as_bytes())
    }

    /// Forgets the key if its file is encrypted (the signer locked).
    pub fn lock(&self) {
        if *lock(&self.encrypted) {
            *lock(&self.key) = None;
        }
    }

    /// The key, while unlocked.
    pub fn key(&self) -> Result<SecretKey, VapidError> {
        lock(&self.key).clone().ok_or(VapidError::Locked)
    }

    /// The public key as the page's `applicationServerKey`: the
    /// uncompressed P-256 point, base64url.
    pub fn public_b64(&self) -> Result<String, VapidError> {
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

/// The key of an older signer's unencrypted PKCS#8 file, if there is one.
fn read_old(path: &Path) -> Result<Option<SecretKey>, HomeError> {
    use p256::pkcs8::DecodePrivateKey;
    let Some(bytes) = vmux_home::read_optional(path)? else {
        return Ok(None);
    };
    let bytes = zeroize::Zeroizing::new(bytes);
    let pem = std::str::from_utf8(&bytes).map_err(|_| corrupt(path, "not a PEM file"))?;
    SecretKey::from_pkcs8_pem(pem)
        .map(Some)
        .map_err(|_| corrupt(path, "not a PKCS#8 P-256 private key"))
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
    let key = keyfile::random_key();
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
    use ssh_key::PrivateKey;

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
    fn made_once_0600_encrypted_with_the_passphrase_and_the_same_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push-vapid.key");
        let a = VapidKey::at(path.clone());
        assert!(matches!(a.public_b64(), Err(VapidError::Locked)));
        assert!(!path.exists(), "not made before it is unlocked");
        a.unlock(Some("correct horse")).unwrap();
        let public = a.public_b64().unwrap();
        assert_eq!(B64URL.decode(&public).unwrap().len(), 65);
        assert_eq!(vmux_home::mode_of(&path).unwrap(), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(PrivateKey::from_openssh(&text).unwrap().is_encrypted());
        a.lock();
        assert!(
            matches!(a.key(), Err(VapidError::Locked)),
            "forgotten when locked"
        );
        let b = VapidKey::at(path.clone());
        assert!(b.unlock(None).is_err(), "needs the passphrase");
        assert!(b.unlock(Some("wrong")).is_err());
        b.unlock(Some("correct horse")).unwrap();
        assert_eq!(b.public_b64().unwrap(), public);

        // Unencrypted signer: a plain key file, kept while locked.
        let plain = VapidKey::at(dir.path().join("plain.key"));
        plain.unlock(None).unwrap();
        plain.lock();
        assert!(plain.key().is_ok());

        // An older signer's unencrypted push-vapid.pem moves into the new
        // file (encrypted now) and is removed: subscriptions stay valid.
        let d2 = tempfile::tempdir().unwrap();
        let old_key = SecretKey::from_slice(&[9u8; 32]).unwrap();
        use p256::pkcs8::EncodePrivateKey;
        let old_pem = old_key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
        std::fs::write(d2.path().join("push-vapid.pem"), old_pem.as_bytes()).unwrap();
        let moved = VapidKey::at(d2.path().join("push-vapid.key"));
        moved.unlock(Some("pw")).unwrap();
        assert_eq!(moved.key().unwrap(), old_key);
        assert!(!d2.path().join("push-vapid.pem").exists());
        std::fs::write(d2.path().join("push-vapid.key"), "junk").unwrap();
        assert!(VapidKey::at(d2.path().join("push-vapid.key"))
            .unlock(Some("pw"))
            .is_err());
    }
}
