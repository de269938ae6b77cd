//! Web Push: the signer's VAPID key (RFC 8292), made at first use and kept
//! in the signer's home (`push-vapid.pem`, PKCS#8, mode 0600, not
//! encrypted: see SECURITY.md).

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

#[cfg(test)]
mod tests {
    use super::*;

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
