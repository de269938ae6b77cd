//! Software identities: OpenSSH private-key files in `keys/` under the
//! signer's home, mode 0600, readable by `ssh-keygen -y -f`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use sha2::{Digest, Sha256};
use signature::{SignatureEncoding, Signer};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, Signature};
use vmux_home::HomeError;
use vmux_proto::{ProviderKind, SSH_AGENT_RSA_SHA2_256, SSH_AGENT_RSA_SHA2_512};

use super::{KeyInfo, KeyProvider, SignError};

/// RSA modulus size for new keys.
pub const RSA_BITS: usize = 3072;

/// The key types `keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 (`ecdsa-sha2-nistp256`), the default.
    Ecdsa,
    /// Ed25519.
    Ed25519,
    /// RSA, 3072 bits.
    Rsa,
}

struct Loaded {
    key: PrivateKey,
    rsa: Option<rsa::RsaPrivateKey>,
    info: KeyInfo,
}

/// Software keys in one directory, loaded into memory.
pub struct SoftwareKeys {
    dir: PathBuf,
    keys: RwLock<HashMap<Vec<u8>, Loaded>>,
}

fn file_stem(blob: &[u8]) -> String {
    let d = Sha256::digest(blob);
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn load_one(path: &Path) -> Result<Loaded, HomeError> {
    let bytes = zeroize::Zeroizing::new(vmux_home::read(path)?);
    let key = PrivateKey::from_openssh(&*bytes).map_err(|e| HomeError::Config {
        path: path.to_owned(),
        message: format!("not an OpenSSH private key: {e}"),
    })?;
    if key.is_encrypted() {
        return Err(HomeError::Config {
            path: path.to_owned(),
            message: "the key is encrypted; encrypted keys need a passphrase".into(),
        });
    }
    Loaded::new(key).map_err(|message| HomeError::Config {
        path: path.to_owned(),
        message,
    })
}

impl Loaded {
    fn new(key: PrivateKey) -> Result<Loaded, String> {
        let public = key.public_key().clone();
        let blob = public.to_bytes().map_err(|e| e.to_string())?;
        let rsa = match key.key_data() {
            KeypairData::Rsa(k) => Some(rsa_private_key(k)?),
            _ => None,
        };
        Ok(Loaded {
            key,
            rsa,
            info: KeyInfo {
                public,
                blob,
                kind: ProviderKind::Software,
            },
        })
    }
}

/// Converts an OpenSSH RSA key pair for the `rsa` crate. (ssh-key 0.6.7's
/// own conversion passes `p` twice instead of `p` and `q`, which the `rsa`
/// crate rightly rejects, so its RSA signing cannot be used.)
fn rsa_private_key(k: &RsaKeypair) -> Result<rsa::RsaPrivateKey, String> {
    let int = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| "malformed RSA key".to_owned())
    };
    let key = rsa::RsaPrivateKey::from_components(
        int(&k.public.n)?,
        int(&k.public.e)?,
        int(&k.private.d)?,
        vec![int(&k.private.p)?, int(&k.private.q)?],
    )
    .map_err(|e| format!("invalid RSA key: {e}"))?;
    key.validate()
        .map_err(|e| format!("invalid RSA key: {e}"))?;
    Ok(key)
}

impl SoftwareKeys {
    /// Loads every `*.key` file in `dir` (which need not exist yet).
    pub fn open(dir: &Path) -> Result<SoftwareKeys, HomeError> {
        let mut keys = HashMap::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry.map_err(|e| HomeError::io(dir, e))?.path();
                    if path.extension().is_some_and(|e| e == "key") {
                        let l = load_one(&path)?;
                        keys.insert(l.info.blob.clone(), l);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HomeError::io(dir, e)),
        }
        Ok(SoftwareKeys {
            dir: dir.to_owned(),
            keys: RwLock::new(keys),
        })
    }

    /// Makes a new identity, writes it (private key mode 0600, public key
    /// beside it) and returns its public key.
    pub fn generate(&self, kind: KeyType, comment: &str) -> Result<KeyInfo, HomeError> {
        let mut rng = rand_core::OsRng;
        let gen_err =
            |e: ssh_key::Error| HomeError::io(&self.dir, std::io::Error::other(e.to_string()));
        let mut key = match kind {
            KeyType::Ecdsa => PrivateKey::random(
                &mut rng,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
            ),
            KeyType::Ed25519 => PrivateKey::random(&mut rng, Algorithm::Ed25519),
            KeyType::Rsa => RsaKeypair::random(&mut rng, RSA_BITS)
                .and_then(|k| PrivateKey::new(KeypairData::from(k), comment)),
        }
        .map_err(gen_err)?;
        key.set_comment(comment);
        let loaded =
            Loaded::new(key).map_err(|m| HomeError::io(&self.dir, std::io::Error::other(m)))?;
        let stem = file_stem(&loaded.info.blob);
        let pem = loaded.key.to_openssh(LineEnding::LF).map_err(gen_err)?;
        vmux_home::write_private(&self.dir.join(format!("{stem}.key")), pem.as_bytes())?;
        let line = loaded.info.public.to_openssh().map_err(gen_err)?;
        vmux_home::write_private(
            &self.dir.join(format!("{stem}.pub")),
            format!("{line}\n").as_bytes(),
        )?;
        let info = loaded.info.clone();
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.blob.clone(), loaded);
        Ok(info)
    }
}

impl KeyProvider for SoftwareKeys {
    fn keys(&self) -> Vec<KeyInfo> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<KeyInfo> = keys.values().map(|l| l.info.clone()).collect();
        v.sort_by(|a, b| {
            a.public
                .comment()
                .cmp(b.public.comment())
                .then(a.blob.cmp(&b.blob))
        });
        v
    }

    fn sign(&self, blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, SignError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let l = keys.get(blob).ok_or(SignError::NotFound)?;
        let sig: Signature = match (&l.rsa, flags) {
            (Some(rsa), f) if f & SSH_AGENT_RSA_SHA2_512 != 0 => {
                rsa_sign(rsa, HashAlg::Sha512, data)?
            }
            (Some(rsa), f) if f & SSH_AGENT_RSA_SHA2_256 != 0 => {
                rsa_sign(rsa, HashAlg::Sha256, data)?
            }
            (Some(_), _) => return Err(SignError::Refused(
                "ssh-rsa (SHA-1) signatures are not supported; use rsa-sha2-256 or rsa-sha2-512",
            )),
            (None, _) => l
                .key
                .try_sign(data)
                .map_err(|e| SignError::Failed(e.to_string()))?,
        };
        Vec::<u8>::try_from(sig).map_err(|e| SignError::Failed(e.to_string()))
    }
}

fn rsa_sign(key: &rsa::RsaPrivateKey, hash: HashAlg, data: &[u8]) -> Result<Signature, SignError> {
    let failed = |e: signature::Error| SignError::Failed(e.to_string());
    let bytes = match hash {
        HashAlg::Sha256 => RsaSigningKey::<Sha256>::new(key.clone())
            .try_sign(data)
            .map_err(failed)?
            .to_vec(),
        HashAlg::Sha512 => RsaSigningKey::<sha2::Sha512>::new(key.clone())
            .try_sign(data)
            .map_err(failed)?
            .to_vec(),
        _ => return Err(SignError::Refused("unsupported RSA hash")),
    };
    Signature::new(Algorithm::Rsa { hash: Some(hash) }, bytes)
        .map_err(|e| SignError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;

    #[test]
    fn every_key_type_generates_reloads_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeys::open(dir.path()).unwrap();
        for (kind, flags) in [
            (KeyType::Ecdsa, 0),
            (KeyType::Ed25519, 0),
            (KeyType::Rsa, SSH_AGENT_RSA_SHA2_256),
        ] {
            let info = store.generate(kind, "c").unwrap();
            let sig = store.sign(&info.blob, b"data", flags).unwrap();
            let sig = Signature::try_from(sig.as_slice()).unwrap();
            Verifier::verify(&info.public, b"data", &sig).unwrap();
        }
        let rsa = store
            .keys()
            .into_iter()
            .find(|k| k.public.algorithm().is_rsa())
            .unwrap();
        let sig = store
            .sign(&rsa.blob, b"data", SSH_AGENT_RSA_SHA2_512)
            .unwrap();
        let sig = Signature::try_from(sig.as_slice()).unwrap();
        assert_eq!(
            sig.algorithm(),
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512)
            }
        );
        assert!(matches!(
            store.sign(&rsa.blob, b"data", 0),
            Err(SignError::Refused(_))
        ));
        assert!(matches!(
            store.sign(b"nope", b"data", 0),
            Err(SignError::NotFound)
        ));
        // A fresh store loads the same three keys from disk.
        assert_eq!(SoftwareKeys::open(dir.path()).unwrap().keys().len(), 3);
    }
}
