//! The signer's own P-256 keys in this crate (the page CA's
//! `page-ca.key`, the VAPID key's `push-vapid.key`) as OpenSSH private
//! key files, encrypted with the signer's passphrase when it has one:
//! making a key, writing one, reading one back.

use std::sync::Mutex;

use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::SecretKey;
use ssh_key::private::{EcdsaKeypair, KeypairData};
use ssh_key::{LineEnding, PrivateKey};
use vmux_home::sync::lock;
use zeroize::Zeroizing;

/// A new random P-256 key, from the operating system's generator.
pub(crate) fn random_key() -> SecretKey {
    SecretKey::random(&mut rand_core::OsRng)
}

/// `key` as an OpenSSH private key file with `comment`, encrypted with
/// `passphrase` if one is given.
pub(crate) fn encode(
    key: &SecretKey,
    comment: impl Into<String>,
    passphrase: Option<&str>,
) -> Result<Zeroizing<String>, ssh_key::Error> {
    let keypair = EcdsaKeypair::NistP256 {
        public: key.public_key().to_encoded_point(false),
        private: key.clone().into(),
    };
    let mut file = PrivateKey::new(KeypairData::Ecdsa(keypair), comment)?;
    if let Some(p) = passphrase {
        file = file.encrypt(&mut rand_core::OsRng, p)?;
    }
    file.to_openssh(LineEnding::LF)
}

/// The P-256 key in the OpenSSH private key file `pem`, decrypted with
/// `passphrase` when the file is encrypted; once `pem` is such a file,
/// `encrypted` says whether it is (also when it then does not decrypt).
/// The error is what is wrong with the file, in a phrase.
pub(crate) fn decode(
    pem: &[u8],
    passphrase: Option<&str>,
    encrypted: &Mutex<bool>,
) -> Result<SecretKey, &'static str> {
    let file = PrivateKey::from_openssh(pem).map_err(|_| "not an OpenSSH private key")?;
    *lock(encrypted) = file.is_encrypted();
    let file = if file.is_encrypted() {
        let pass = passphrase.ok_or("the key is encrypted and no passphrase was given")?;
        file.decrypt(pass)
            .map_err(|_| "the passphrase does not decrypt it")?
    } else {
        file
    };
    match file.key_data() {
        KeypairData::Ecdsa(EcdsaKeypair::NistP256 { private, .. }) => {
            SecretKey::from_slice(private.as_ref()).map_err(|_| "not a P-256 private key")
        }
        _ => Err("not an ECDSA P-256 key"),
    }
}
