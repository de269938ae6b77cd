//! The signer's files: what `init` creates and the offline commands read.

use std::path::PathBuf;

use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};
use vmux_home::{Home, HomeError};
use vmux_link::Identity;

use crate::ca::Ca;
use crate::paired::SignerState;
use crate::provider::SoftwareKeys;

/// Why the signer cannot start or a command cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// A file problem.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// `init` has not been run.
    #[error("no signer here ({0} is missing); run `vmux signer init --name NAME` first")]
    NotInitialised(PathBuf),
    /// `init` was already run.
    #[error("a signer already exists here ({0}); remove the directory to start over")]
    AlreadyInitialised(PathBuf),
    /// A key operation failed.
    #[error("{0}")]
    Key(String),
    /// A key-store operation failed.
    #[error(transparent)]
    Store(#[from] crate::provider::StoreError),
}

/// The signer's files under a [`Home`].
pub struct SignerHome {
    home: Home,
}

impl SignerHome {
    /// The signer files of `home`.
    pub fn new(home: Home) -> SignerHome {
        SignerHome { home }
    }

    /// The Noise identity file.
    pub fn identity_path(&self) -> PathBuf {
        self.home.state_file("signer-identity")
    }

    /// The state file (name, paired agents).
    pub fn state_path(&self) -> PathBuf {
        self.home.state_file("signer-state.json")
    }

    /// The CA private key (OpenSSH format).
    pub fn ca_path(&self) -> PathBuf {
        self.home.state_file("ca.key")
    }

    /// The directory of software identities.
    pub fn keys_dir(&self) -> PathBuf {
        self.home.state_file("keys")
    }

    /// The control socket of a running signer.
    pub fn control_path(&self) -> PathBuf {
        self.home.state_file("signer.sock")
    }

    /// The audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.home.state_file("audit.jsonl")
    }

    /// `signer.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.home.config_file("signer.toml")
    }

    /// Creates the identity, the CA key and the state, encrypted with
    /// `passphrase` when given. Refuses to overwrite an existing signer.
    pub fn init(
        &self,
        name: &str,
        passphrase: Option<&str>,
    ) -> Result<(Identity, PublicKey), SignerError> {
        let state_path = self.state_path();
        if vmux_home::read_optional(&state_path)?.is_some() {
            return Err(SignerError::AlreadyInitialised(state_path));
        }
        vmux_home::create_private_dir(self.home.state_dir())?;
        vmux_home::create_private_dir(&self.keys_dir())?;
        let identity = Identity::generate();
        identity.save_with(&self.identity_path(), passphrase.map(str::as_bytes))?;
        let mut ca = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
            .map_err(|e| SignerError::Key(e.to_string()))?;
        ca.set_comment(format!("vmux CA of {name}"));
        let key_err = |e: ssh_key::Error| SignerError::Key(e.to_string());
        let on_disk = match passphrase {
            Some(p) => ca.encrypt(&mut rand_core::OsRng, p).map_err(key_err)?,
            None => ca.clone(),
        };
        let pem = on_disk.to_openssh(LineEnding::LF).map_err(key_err)?;
        vmux_home::write_private(&self.ca_path(), pem.as_bytes())?;
        SignerState {
            name: name.to_owned(),
            encrypted: passphrase.is_some(),
            agents: Vec::new(),
            revoked: Vec::new(),
        }
        .save(&state_path)?;
        Ok((identity, ca.public_key().clone()))
    }

    /// Loads the state, failing clearly if `init` was not run.
    pub fn state(&self) -> Result<SignerState, SignerError> {
        let path = self.state_path();
        match vmux_home::read_optional(&path)? {
            Some(b) => Ok(SignerState::parse(&path, &b)?),
            None => Err(SignerError::NotInitialised(path)),
        }
    }

    /// Loads the Noise identity (decrypting it with `passphrase`).
    pub fn identity(&self, passphrase: Option<&str>) -> Result<Identity, SignerError> {
        self.state()?;
        Ok(Identity::load_with(
            &self.identity_path(),
            passphrase.map(str::as_bytes),
        )?)
    }

    /// The CA's public key (readable without the passphrase).
    pub fn ca_public(&self) -> Result<PublicKey, SignerError> {
        self.state()?;
        Ok(Ca::load(&self.ca_path(), None)?.public().clone())
    }

    /// The software key store, unlocked with `passphrase` when given.
    pub fn software_keys(&self, passphrase: Option<&str>) -> Result<SoftwareKeys, SignerError> {
        let state = self.state()?;
        Ok(SoftwareKeys::open(
            &self.keys_dir(),
            state.encrypted,
            passphrase,
        )?)
    }

    /// Checks `passphrase` against the signer's CA key (every encrypted
    /// signer has one), so that a mistyped passphrase is caught before it
    /// encrypts a new key.
    pub fn check_passphrase(&self, passphrase: &str) -> Result<(), SignerError> {
        Ca::load(&self.ca_path(), None)?.unlock(passphrase)?;
        Ok(())
    }
}
