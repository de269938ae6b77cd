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

    /// Loads the identity at `path`.
    pub fn load(path: &Path) -> Result<Identity, HomeError> {
        let bytes = Zeroizing::new(vmux_home::read(path)?);
        let bad = || HomeError::Config {
            path: path.to_owned(),
            message: "not a vmux device identity file".into(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad());
        }
        let private = Zeroizing::new(
            B64.decode(lines.next().ok_or_else(bad)?.trim())
                .map_err(|_| bad())?,
        );
        let public = B64
            .decode(lines.next().ok_or_else(bad)?.trim())
            .map_err(|_| bad())?;
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

    /// Writes the identity to `path` (mode 0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), HomeError> {
        let text = Zeroizing::new(format!(
            "{HEADER}\n{}\n{}\n",
            B64.encode(&self.private[..]),
            B64.encode(self.public)
        ));
        vmux_home::write_private(path, text.as_bytes())
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
}

/// A device's id: the first 10 bytes of SHA-256 of its static public key,
/// as 20 lowercase hex digits. Short enough to read aloud, long enough
/// that nobody can make a key with a chosen id.
pub fn device_id(public: &[u8]) -> String {
    let d = Sha256::digest(public);
    d[..10].iter().map(|b| format!("{b:02x}")).collect()
}
