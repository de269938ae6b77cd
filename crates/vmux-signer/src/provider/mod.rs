//! Key providers: where identities live and how they sign.
//!
//! A [`KeyProvider`] lists its identities and signs with one. The signer
//! asks every provider it has; the first that holds the key signs. Today
//! there are two: [`SoftwareKeys`] (OpenSSH private-key files under the
//! signer's home, encrypted at rest) and [`pkcs11::Pkcs11Keys`] (hardware
//! tokens).

mod passkey;
pub mod pkcs11;
mod software;

pub use passkey::{passkey_keys_in, PasskeyKeys};

pub use software::{pem_is_encrypted, KeyType, SoftwareKeys, StoreError};

use ssh_key::PublicKey;
use vmux_proto::{ErrorCode, ProviderKind};

/// One identity a provider holds.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// The public key (with its comment).
    pub public: PublicKey,
    /// The OpenSSH public-key blob.
    pub blob: Vec<u8>,
    /// Where the private half lives.
    pub kind: ProviderKind,
}

impl KeyInfo {
    /// `SHA256:…` fingerprint, as `ssh-add -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.public
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()
    }

    /// One line as `ssh-add -l` prints it: bits, fingerprint, comment, type.
    pub fn list_line(&self) -> String {
        use ssh_key::public::KeyData;
        let (bits, kind) = match self.public.key_data() {
            KeyData::Ed25519(_) => (256, "ED25519"),
            KeyData::Ecdsa(e) => (
                match e.curve() {
                    ssh_key::EcdsaCurve::NistP256 => 256,
                    ssh_key::EcdsaCurve::NistP384 => 384,
                    ssh_key::EcdsaCurve::NistP521 => 521,
                },
                "ECDSA",
            ),
            KeyData::Rsa(r) => (
                r.n.as_positive_bytes()
                    .and_then(|b| {
                        let first = *b.first()?;
                        Some((b.len() as u32 - 1) * 8 + (8 - first.leading_zeros()))
                    })
                    .unwrap_or(0),
                "RSA",
            ),
            KeyData::SkEcdsaSha2NistP256(_) => (256, "ECDSA-SK"),
            _ => (0, "UNKNOWN"),
        };
        format!(
            "{bits} {} {} ({kind})",
            self.fingerprint(),
            self.public.comment()
        )
    }
}

/// Why a provider could not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The provider does not hold this key.
    #[error("no such key")]
    NotFound,
    /// The request asks for something the key cannot or may not do.
    #[error("{0}")]
    Refused(&'static str),
    /// The key is encrypted and the signer is locked.
    #[error("the signer is locked")]
    Locked,
    /// The provider failed.
    #[error("signing failed: {0}")]
    Failed(String),
}

impl SignError {
    /// The protocol error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            SignError::NotFound => ErrorCode::KeyNotFound,
            SignError::Refused(_) => ErrorCode::PolicyDenied,
            SignError::Locked => ErrorCode::SignerLocked,
            SignError::Failed(_) => ErrorCode::Internal,
        }
    }
}

/// A source of identities that can sign.
pub trait KeyProvider: Send + Sync {
    /// Every identity this provider holds now.
    fn keys(&self) -> Vec<KeyInfo>;

    /// Signs `data` with the identity whose blob is `blob`, honouring the
    /// SSH agent `flags`; returns the SSH signature blob.
    fn sign(&self, blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, SignError>;

    /// Forgets decrypted secrets (`vmux signer lock`). Providers without
    /// secrets of their own do nothing.
    fn lock(&self) {}

    /// Why this provider cannot sign now (a token unplugged), if so.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Whether some key cannot sign until the signer is unlocked.
    fn is_locked(&self) -> bool {
        false
    }

    /// Decrypts secrets with the signer's passphrase (`vmux signer unlock`).
    fn unlock(&self, _passphrase: &str) -> Result<(), SignError> {
        Ok(())
    }
}
