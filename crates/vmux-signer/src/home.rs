//! The signer's files: what `init` creates and the offline commands read.

use std::path::PathBuf;

use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};
use vmux_home::{Home, HomeError};
use vmux_link::Identity;

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

    /// `signer.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.home.config_file("signer.toml")
    }

    /// Creates the identity, the CA key and the state. Refuses to
    /// overwrite an existing signer.
    pub fn init(&self, name: &str) -> Result<(Identity, PublicKey), SignerError> {
        let state_path = self.state_path();
        if vmux_home::read_optional(&state_path)?.is_some() {
            return Err(SignerError::AlreadyInitialised(state_path));
        }
        vmux_home::create_private_dir(self.home.state_dir())?;
        vmux_home::create_private_dir(&self.keys_dir())?;
        let identity = Identity::generate();
        identity.save(&self.identity_path())?;
        let mut ca = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
            .map_err(|e| SignerError::Key(e.to_string()))?;
        ca.set_comment(format!("vmux CA of {name}"));
        let pem = ca
            .to_openssh(LineEnding::LF)
            .map_err(|e| SignerError::Key(e.to_string()))?;
        vmux_home::write_private(&self.ca_path(), pem.as_bytes())?;
        SignerState {
            name: name.to_owned(),
            agents: Vec::new(),
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

    /// Loads the Noise identity.
    pub fn identity(&self) -> Result<Identity, SignerError> {
        self.state()?;
        Ok(Identity::load(&self.identity_path())?)
    }

    /// The CA's public key.
    pub fn ca_public(&self) -> Result<PublicKey, SignerError> {
        self.state()?;
        let path = self.ca_path();
        let pem = zeroize::Zeroizing::new(vmux_home::read(&path)?);
        let key = PrivateKey::from_openssh(&*pem).map_err(|e| HomeError::Config {
            path: path.clone(),
            message: format!("not an OpenSSH private key: {e}"),
        })?;
        Ok(key.public_key().clone())
    }

    /// The software key store.
    pub fn software_keys(&self) -> Result<SoftwareKeys, SignerError> {
        self.state()?;
        Ok(SoftwareKeys::open(&self.keys_dir())?)
    }
}
