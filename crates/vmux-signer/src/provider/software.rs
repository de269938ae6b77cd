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
use zeroize::Zeroizing;

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

/// A decrypted key, ready to sign: the algorithm's own signing key is
/// built once (ssh-key would rebuild it, public point included, for every
/// signature).
struct Unlocked {
    key: PrivateKey,
    signer: FastSigner,
}

enum FastSigner {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    Rsa(rsa::RsaPrivateKey),
}

impl Unlocked {
    fn new(key: PrivateKey) -> Result<Unlocked, String> {
        let signer = match key.key_data() {
            KeypairData::Rsa(k) => FastSigner::Rsa(rsa_private_key(k)?),
            KeypairData::Ed25519(k) => FastSigner::Ed25519(
                ed25519_dalek::SigningKey::try_from(k).map_err(|e| e.to_string())?,
            ),
            KeypairData::Ecdsa(ssh_key::private::EcdsaKeypair::NistP256 { private, .. }) => {
                FastSigner::P256(
                    p256::ecdsa::SigningKey::from_slice(private.as_ref())
                        .map_err(|e| e.to_string())?,
                )
            }
            _ => return Err("unsupported key type (ECDSA P-256, Ed25519 and RSA are)".into()),
        };
        Ok(Unlocked { key, signer })
    }
}

/// One key file.
struct Entry {
    path: PathBuf,
    info: KeyInfo,
    encrypted: bool,
    unlocked: Option<Unlocked>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Vec<u8>, Entry>,
    /// Held while unlocked, to decrypt key files added while running and
    /// to encrypt new ones; zeroized when dropped.
    passphrase: Option<Zeroizing<String>>,
}

/// Why a key-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file problem.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The passphrase does not decrypt the keys.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The keys are encrypted and the store is locked.
    #[error("the signer is locked; unlock it first")]
    Locked,
    /// No key has that fingerprint.
    #[error("no key has the fingerprint {0}")]
    NoSuchKey(String),
    /// A key operation failed.
    #[error("{0}")]
    Key(String),
}

/// Software keys in one directory. Encrypted keys (OpenSSH format,
/// bcrypt-pbkdf + aes256-ctr) are listed always and sign only while the
/// store is unlocked.
pub struct SoftwareKeys {
    dir: PathBuf,
    encrypt: bool,
    inner: RwLock<Inner>,
}

fn file_stem(blob: &[u8]) -> String {
    let d = Sha256::digest(blob);
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn config_err(path: &Path, message: impl Into<String>) -> HomeError {
    HomeError::Config {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Reads one key file, decrypting it when a passphrase is given.
fn read_entry(path: &Path, passphrase: Option<&str>) -> Result<Entry, StoreError> {
    let bytes = Zeroizing::new(vmux_home::read(path)?);
    let file = PrivateKey::from_openssh(&*bytes)
        .map_err(|e| config_err(path, format!("not an OpenSSH private key: {e}")))?;
    let encrypted = file.is_encrypted();
    let unlocked = match (encrypted, passphrase) {
        (false, _) => Some(file.clone()),
        (true, Some(pass)) => Some(
            file.decrypt(pass)
                .map_err(|_| StoreError::WrongPassphrase)?,
        ),
        (true, None) => None,
    }
    .map(Unlocked::new)
    .transpose()
    .map_err(|m| config_err(path, m))?;
    // An encrypted file keeps its comment inside the encrypted part: take
    // it from the decrypted key, or else from the public-key file beside.
    let public = match &unlocked {
        Some(u) => u.key.public_key().clone(),
        None => {
            let mut p = file.public_key().clone();
            if let Some(c) = std::fs::read_to_string(path.with_extension("pub"))
                .ok()
                .and_then(|line| ssh_key::PublicKey::from_openssh(line.trim()).ok())
                .filter(|pubkey| pubkey.key_data() == p.key_data())
            {
                p.set_comment(c.comment());
            }
            p
        }
    };
    let blob = public
        .to_bytes()
        .map_err(|e| config_err(path, e.to_string()))?;
    Ok(Entry {
        path: path.to_owned(),
        info: KeyInfo {
            public,
            blob,
            kind: ProviderKind::Software,
        },
        encrypted,
        unlocked,
    })
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

/// Whether an OpenSSH private-key file is encrypted (`None`: not a key).
pub fn pem_is_encrypted(pem: &[u8]) -> Option<bool> {
    PrivateKey::from_openssh(pem).ok().map(|k| k.is_encrypted())
}

impl SoftwareKeys {
    /// Loads every `*.key` file in `dir` (which need not exist yet). With
    /// a passphrase, encrypted keys are decrypted (a wrong passphrase is an
    /// error); without, they are listed but locked. `encrypt` says whether
    /// new keys are stored encrypted.
    pub fn open(
        dir: &Path,
        encrypt: bool,
        passphrase: Option<&str>,
    ) -> Result<SoftwareKeys, StoreError> {
        let store = SoftwareKeys {
            dir: dir.to_owned(),
            encrypt,
            inner: RwLock::new(Inner {
                passphrase: passphrase.map(|p| Zeroizing::new(p.to_owned())),
                ..Inner::default()
            }),
        };
        store.rescan()?;
        Ok(store)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        vmux_home::sync::read(&self.inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        vmux_home::sync::write(&self.inner)
    }

    /// Picks up key files added or removed since the last scan (e.g. by
    /// `vmux signer keygen` while the signer runs). A directory listing is
    /// cheap beside a signature, and unlike mtimes it misses nothing.
    fn rescan(&self) -> Result<(), StoreError> {
        let paths: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "key"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(HomeError::io(&self.dir, e).into()),
        };
        {
            let inner = self.read();
            if inner.entries.len() == paths.len()
                && inner.entries.values().all(|e| paths.contains(&e.path))
            {
                return Ok(());
            }
        }
        let mut inner = self.write();
        inner.entries.retain(|_, e| paths.contains(&e.path));
        for path in paths {
            if inner.entries.values().any(|e| e.path == path) {
                continue;
            }
            let pass = inner.passphrase.as_ref().map(|p| p.as_str());
            let entry = read_entry(&path, pass)?;
            inner.entries.insert(entry.info.blob.clone(), entry);
        }
        Ok(())
    }

    /// Whether new keys are encrypted (the signer has a passphrase).
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// Whether the key with this blob is stored unencrypted.
    pub fn is_unencrypted(&self, blob: &[u8]) -> bool {
        self.read().entries.get(blob).is_some_and(|e| !e.encrypted)
    }

    /// Whether some encrypted key cannot sign now.
    pub fn is_locked(&self) -> bool {
        self.read()
            .entries
            .values()
            .any(|e| e.encrypted && e.unlocked.is_none())
    }

    /// Forgets every decrypted key and the passphrase.
    pub fn lock(&self) {
        let mut inner = self.write();
        inner.passphrase = None;
        for e in inner.entries.values_mut().filter(|e| e.encrypted) {
            e.unlocked = None;
        }
    }

    /// Decrypts every encrypted key with `passphrase`; all or nothing.
    pub fn unlock(&self, passphrase: &str) -> Result<(), StoreError> {
        self.rescan()?;
        let mut inner = self.write();
        let mut opened = Vec::new();
        for (blob, e) in inner.entries.iter().filter(|(_, e)| e.encrypted) {
            let again = read_entry(&e.path, Some(passphrase))?;
            opened.push((blob.clone(), again.unlocked));
        }
        for (blob, u) in opened {
            if let Some(e) = inner.entries.get_mut(&blob) {
                e.unlocked = u;
            }
        }
        inner.passphrase = Some(Zeroizing::new(passphrase.to_owned()));
        Ok(())
    }

    /// Writes `key` into the store (encrypted if the store encrypts) and
    /// loads it.
    fn store(&self, key: PrivateKey) -> Result<KeyInfo, StoreError> {
        let key_err = |e: ssh_key::Error| StoreError::Key(e.to_string());
        let blob = key.public_key().to_bytes().map_err(key_err)?;
        let stem = file_stem(&blob);
        let on_disk = if self.encrypt {
            let inner = self.read();
            let pass = inner.passphrase.as_ref().ok_or(StoreError::Locked)?;
            key.encrypt(&mut rand_core::OsRng, pass.as_bytes())
                .map_err(key_err)?
        } else {
            key.clone()
        };
        let pem = on_disk.to_openssh(LineEnding::LF).map_err(key_err)?;
        let path = self.dir.join(format!("{stem}.key"));
        vmux_home::write_private(&path, pem.as_bytes())?;
        let line = key.public_key().to_openssh().map_err(key_err)?;
        vmux_home::write_private(
            &self.dir.join(format!("{stem}.pub")),
            format!("{line}\n").as_bytes(),
        )?;
        let info = KeyInfo {
            public: key.public_key().clone(),
            blob: blob.clone(),
            kind: ProviderKind::Software,
        };
        let unlocked = Unlocked::new(key).map_err(StoreError::Key)?;
        let mut inner = self.write();
        inner.entries.insert(
            blob,
            Entry {
                path,
                info: info.clone(),
                encrypted: self.encrypt,
                unlocked: Some(unlocked),
            },
        );
        Ok(info)
    }

    /// Makes a new identity, writes it (private key mode 0600, encrypted
    /// when the signer has a passphrase; public key beside it) and returns
    /// its public key.
    pub fn generate(&self, kind: KeyType, comment: &str) -> Result<KeyInfo, StoreError> {
        let mut rng = rand_core::OsRng;
        let key_err = |e: ssh_key::Error| StoreError::Key(e.to_string());
        if self.encrypt && self.read().passphrase.is_none() {
            return Err(StoreError::Locked);
        }
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
        .map_err(key_err)?;
        key.set_comment(comment);
        self.store(key)
    }

    /// Takes an existing OpenSSH private key (decrypting it with
    /// `file_passphrase` if needed) and stores it like a generated one.
    pub fn import(&self, pem: &[u8], file_passphrase: Option<&str>) -> Result<KeyInfo, StoreError> {
        let key = PrivateKey::from_openssh(pem)
            .map_err(|e| StoreError::Key(format!("not an OpenSSH private key: {e}")))?;
        let key = if key.is_encrypted() {
            let pass = file_passphrase.ok_or(StoreError::WrongPassphrase)?;
            key.decrypt(pass).map_err(|_| StoreError::WrongPassphrase)?
        } else {
            key
        };
        Unlocked::new(key.clone()).map_err(StoreError::Key)?;
        self.store(key)
    }

    fn find(&self, fingerprint: &str) -> Result<Vec<u8>, StoreError> {
        self.rescan()?;
        self.read()
            .entries
            .iter()
            .find(|(_, e)| e.info.fingerprint() == fingerprint)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| StoreError::NoSuchKey(fingerprint.to_owned()))
    }

    /// Removes the key with this fingerprint (both files).
    pub fn delete(&self, fingerprint: &str) -> Result<KeyInfo, StoreError> {
        let blob = self.find(fingerprint)?;
        let mut inner = self.write();
        let Some(entry) = inner.entries.remove(&blob) else {
            return Err(StoreError::NoSuchKey(fingerprint.to_owned()));
        };
        std::fs::remove_file(&entry.path).map_err(|e| HomeError::io(&entry.path, e))?;
        let _ = std::fs::remove_file(entry.path.with_extension("pub"));
        Ok(entry.info)
    }

    /// Sets the comment of the key with this fingerprint (rewriting its
    /// file; an encrypted key must be unlocked).
    pub fn rename(&self, fingerprint: &str, comment: &str) -> Result<KeyInfo, StoreError> {
        let blob = self.find(fingerprint)?;
        let mut key = {
            let inner = self.read();
            let entry = inner
                .entries
                .get(&blob)
                .ok_or_else(|| StoreError::NoSuchKey(fingerprint.to_owned()))?;
            entry
                .unlocked
                .as_ref()
                .ok_or(StoreError::Locked)?
                .key
                .clone()
        };
        key.set_comment(comment);
        self.store(key)
    }
}

impl KeyProvider for SoftwareKeys {
    fn keys(&self) -> Vec<KeyInfo> {
        if let Err(e) = self.rescan() {
            tracing::warn!(error = %e, "cannot rescan the key directory");
        }
        let inner = self.read();
        let mut v: Vec<KeyInfo> = inner.entries.values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| {
            a.public
                .comment()
                .cmp(b.public.comment())
                .then(a.blob.cmp(&b.blob))
        });
        v
    }

    fn sign(&self, blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, SignError> {
        let inner = self.read();
        let entry = inner.entries.get(blob).ok_or(SignError::NotFound)?;
        let l = entry.unlocked.as_ref().ok_or(SignError::Locked)?;
        let failed = |e: ssh_key::Error| SignError::Failed(e.to_string());
        let sig: Signature = match &l.signer {
            FastSigner::Rsa(rsa) if flags & SSH_AGENT_RSA_SHA2_512 != 0 => {
                rsa_sign(rsa, HashAlg::Sha512, data)?
            }
            FastSigner::Rsa(rsa) if flags & SSH_AGENT_RSA_SHA2_256 != 0 => {
                rsa_sign(rsa, HashAlg::Sha256, data)?
            }
            FastSigner::Rsa(_) => return Err(SignError::Refused(
                "ssh-rsa (SHA-1) signatures are not supported; use rsa-sha2-256 or rsa-sha2-512",
            )),
            FastSigner::Ed25519(k) => {
                Signature::new(Algorithm::Ed25519, k.sign(data).to_bytes().to_vec())
                    .map_err(failed)?
            }
            FastSigner::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(data);
                Signature::try_from(s).map_err(failed)?
            }
        };
        Vec::<u8>::try_from(sig).map_err(|e| SignError::Failed(e.to_string()))
    }

    fn lock(&self) {
        SoftwareKeys::lock(self)
    }

    fn is_locked(&self) -> bool {
        SoftwareKeys::is_locked(self)
    }

    fn unlock(&self, passphrase: &str) -> Result<(), SignError> {
        SoftwareKeys::unlock(self, passphrase).map_err(|e| match e {
            StoreError::WrongPassphrase => SignError::Refused("wrong passphrase"),
            other => SignError::Failed(other.to_string()),
        })
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
        let store = SoftwareKeys::open(dir.path(), false, None).unwrap();
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
        assert_eq!(
            SoftwareKeys::open(dir.path(), false, None)
                .unwrap()
                .keys()
                .len(),
            3
        );
        assert!(store.is_unencrypted(&rsa.blob));
    }

    #[test]
    fn encrypted_keys_sign_only_while_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeys::open(dir.path(), true, Some("pw")).unwrap();
        let info = store.generate(KeyType::Ed25519, "enc").unwrap();
        let pem =
            std::fs::read_to_string(dir.path().join(format!("{}.key", file_stem(&info.blob))))
                .unwrap();
        assert!(PrivateKey::from_openssh(&pem).unwrap().is_encrypted());
        assert!(store.sign(&info.blob, b"d", 0).is_ok());
        store.lock();
        assert!(store.is_locked());
        assert!(matches!(
            store.sign(&info.blob, b"d", 0),
            Err(SignError::Locked)
        ));
        assert_eq!(store.keys().len(), 1, "locked keys are still listed");
        let relisted = SoftwareKeys::open(dir.path(), true, None).unwrap().keys();
        assert_eq!(relisted[0].public.comment(), "enc", "with its comment");
        assert!(matches!(
            store.unlock("nope"),
            Err(StoreError::WrongPassphrase)
        ));
        assert!(store.is_locked());
        store.unlock("pw").unwrap();
        assert!(store.sign(&info.blob, b"d", 0).is_ok());
        // Opening with a wrong passphrase is refused; without one, locked.
        assert!(matches!(
            SoftwareKeys::open(dir.path(), true, Some("x")),
            Err(StoreError::WrongPassphrase)
        ));
        assert!(SoftwareKeys::open(dir.path(), true, None)
            .unwrap()
            .is_locked());
        // A key added by another process is picked up while running.
        let other = SoftwareKeys::open(dir.path(), true, Some("pw")).unwrap();
        let added = other.generate(KeyType::Ecdsa, "added").unwrap();
        assert!(store.keys().iter().any(|k| k.blob == added.blob));
        assert!(store.sign(&added.blob, b"d", 0).is_ok());
        // Rename and delete.
        store.rename(&added.fingerprint(), "renamed").unwrap();
        assert!(store.keys().iter().any(|k| k.public.comment() == "renamed"));
        store.delete(&added.fingerprint()).unwrap();
        assert_eq!(store.keys().len(), 1);
    }
}
