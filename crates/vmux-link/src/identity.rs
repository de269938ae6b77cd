use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use vmux_home::HomeError;
use zeroize::Zeroizing;

use crate::channel::NOISE_PARAMS;

/// Length of a device's static public key (X25519).
pub const STATIC_KEY_LEN: usize = 32;

/// A device's static public key, as pinned by its peers.
pub type StaticKey = [u8; STATIC_KEY_LEN];

const HEADER: &str = "vmux-device-identity-v1";
const KDF_ROUNDS: u32 = 16;

fn derive(pass: &[u8], salt: &[u8], rounds: u32) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    bcrypt_pbkdf::bcrypt_pbkdf(pass, salt, rounds, &mut key[..]).ok()?;
    Some(key)
}

/// `encrypted bcrypt-pbkdf <rounds> <salt> chacha20-poly1305 <nonce>` and
/// the sealed secret on the next line.
/// Encrypts `secret` under `pass` (bcrypt-pbkdf, 16 rounds, then
/// ChaCha20-Poly1305): two lines, `encrypted bcrypt-pbkdf ROUNDS SALT
/// chacha20-poly1305 NONCE` and the sealed bytes, base64. Used for the
/// signer's identity and for token PINs.
pub fn seal(pass: &[u8], secret: &[u8]) -> Option<String> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    use rand::RngCore;
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive(pass, &salt, KDF_ROUNDS)?;
    let sealed = chacha20poly1305::ChaCha20Poly1305::new((&*key).into())
        .encrypt((&nonce).into(), secret)
        .ok()?;
    Some(format!(
        "encrypted bcrypt-pbkdf {KDF_ROUNDS} {} chacha20-poly1305 {}\n{}",
        B64.encode(salt),
        B64.encode(nonce),
        B64.encode(sealed)
    ))
}

/// Opens what [`seal`] made; `None` for a wrong passphrase or a malformed
/// text.
pub fn open(text: &str, pass: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (first, second) = text.trim().split_once('\n')?;
    let params = first.strip_prefix("encrypted ")?;
    let sealed = B64.decode(second.trim()).ok()?;
    open_sealed(params, pass, &sealed).map(Zeroizing::new)
}

fn open_sealed(params: &str, pass: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let f: Vec<&str> = params.split(' ').collect();
    let ["bcrypt-pbkdf", rounds, salt, "chacha20-poly1305", nonce] = f[..] else {
        return None;
    };
    let rounds: u32 = rounds.parse().ok().filter(|r| (1..=1024).contains(r))?;
    let salt = B64.decode(salt).ok()?;
    let nonce: [u8; 12] = B64.decode(nonce).ok()?.try_into().ok()?;
    let key = derive(pass, &salt, rounds)?;
    chacha20poly1305::ChaCha20Poly1305::new((&*key).into())
        .decrypt((&nonce).into(), sealed)
        .ok()
}

/// A device's long-term Noise static key pair. The private half is
/// zeroized when dropped and never leaves this type except into the
/// Noise handshake.
pub struct Identity {
    private: Zeroizing<Vec<u8>>,
    public: StaticKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &device_id(&self.public))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Identity {
        let params = NOISE_PARAMS
            .parse()
            .expect("static Noise parameters are valid");
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .expect("the default resolver provides X25519");
        let mut public = [0u8; STATIC_KEY_LEN];
        public.copy_from_slice(&kp.public);
        Identity {
            private: Zeroizing::new(kp.private),
            public,
        }
    }

    /// Loads an unencrypted identity from `path`.
    pub fn load(path: &Path) -> Result<Identity, HomeError> {
        Identity::load_with(path, None)
    }

    /// Loads the identity at `path`, decrypting it with `passphrase` if it
    /// is encrypted. An encrypted file without a passphrase, or with a
    /// wrong one, is an error that says so.
    pub fn load_with(path: &Path, passphrase: Option<&[u8]>) -> Result<Identity, HomeError> {
        let bytes = Zeroizing::new(vmux_home::read(path)?);
        Identity::parse(path, &bytes, passphrase)
    }

    /// Parses an identity in the file format (`to_text`); `origin` names
    /// where it came from in errors.
    pub fn parse(
        origin: &Path,
        bytes: &[u8],
        passphrase: Option<&[u8]>,
    ) -> Result<Identity, HomeError> {
        let err = |message: &str| HomeError::Config {
            path: origin.to_owned(),
            message: message.to_owned(),
        };
        let bad = || err("not a vmux device identity file");
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad());
        }
        let next_b64 = |lines: &mut std::str::Lines<'_>| -> Result<Zeroizing<Vec<u8>>, HomeError> {
            Ok(Zeroizing::new(
                B64.decode(lines.next().ok_or_else(bad)?.trim())
                    .map_err(|_| bad())?,
            ))
        };
        let second = lines.next().ok_or_else(bad)?;
        let private = if let Some(params) = second.strip_prefix("encrypted ") {
            let sealed = next_b64(&mut lines)?;
            let Some(pass) = passphrase else {
                return Err(err("the identity is encrypted; a passphrase is needed"));
            };
            Zeroizing::new(
                open_sealed(params, pass, &sealed).ok_or_else(|| err("wrong passphrase"))?,
            )
        } else {
            Zeroizing::new(B64.decode(second.trim()).map_err(|_| bad())?)
        };
        let public = next_b64(&mut lines)?;
        if private.len() != STATIC_KEY_LEN || public.len() != STATIC_KEY_LEN {
            return Err(bad());
        }
        let mut p = [0u8; STATIC_KEY_LEN];
        p.copy_from_slice(&public);
        Ok(Identity {
            private: Zeroizing::new(private.to_vec()),
            public: p,
        })
    }

    /// Writes the identity to `path` unencrypted (mode 0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), HomeError> {
        self.save_with(path, None)
    }

    /// Writes the identity to `path` (mode 0600, atomically), encrypted
    /// with `passphrase` when given: bcrypt-pbkdf (16 rounds, 16-byte salt)
    /// derives a ChaCha20-Poly1305 key, as OpenSSH derives its key-file
    /// keys.
    pub fn save_with(&self, path: &Path, passphrase: Option<&[u8]>) -> Result<(), HomeError> {
        let secret = match passphrase {
            None => Zeroizing::new(B64.encode(&self.private[..])),
            Some(pass) => {
                Zeroizing::new(seal(pass, &self.private).ok_or_else(|| HomeError::Config {
                    path: path.to_owned(),
                    message: "cannot encrypt the identity".into(),
                })?)
            }
        };
        let text = self.text_with(&secret);
        vmux_home::write_private(path, text.as_bytes())
    }

    /// The identity in the file format, unencrypted, for a store that
    /// protects it itself (a desktop secret service).
    pub fn to_text(&self) -> Zeroizing<String> {
        self.text_with(&Zeroizing::new(B64.encode(&self.private[..])))
    }

    fn text_with(&self, secret: &str) -> Zeroizing<String> {
        Zeroizing::new(format!("{HEADER}\n{secret}\n{}\n", B64.encode(self.public)))
    }

    /// Loads the identity at `path`, creating and saving a new one if the
    /// file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Identity, HomeError> {
        match vmux_home::read_optional(path)? {
            Some(_) => Identity::load(path),
            None => {
                let id = Identity::generate();
                id.save(path)?;
                Ok(id)
            }
        }
    }

    /// The static public key.
    pub fn public(&self) -> &StaticKey {
        &self.public
    }

    /// The device id derived from the public key.
    pub fn id(&self) -> String {
        device_id(&self.public)
    }

    pub(crate) fn private(&self) -> &[u8] {
        &self.private
    }

    /// A 32-byte secret for `purpose`, derived from the private key
    /// (SHA-256 over a fixed label, the purpose and the key): a key for
    /// things only this device may produce, such as the signer's audit
    /// chain. Nothing about the private key can be learnt from it.
    pub fn derive_secret(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(b"vmux identity derived secret v1\0");
        h.update((purpose.len() as u64).to_be_bytes());
        h.update(purpose.as_bytes());
        h.update(&self.private[..]);
        Zeroizing::new(h.finalize().into())
    }
}

/// A device's id: the first 10 bytes of SHA-256 of its static public key,
/// as 20 lowercase hex digits. Short enough to read aloud, long enough
/// that nobody can make a key with a chosen id.
pub fn device_id(public: &[u8]) -> String {
    let d = Sha256::digest(public);
    d[..10].iter().map(|b| format!("{b:02x}")).collect()
}
