//! The signer's files: what `init` creates and the offline commands read.

use std::path::PathBuf;

use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};
use vmux_home::{Home, HomeError};
use vmux_link::Identity;

use crate::ca::Ca;
use crate::paired::SignerState;
use crate::provider::pkcs11::{Pkcs11Keys, TokenConfig};
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
    /// The state is held by another writer.
    #[error(transparent)]
    State(#[from] crate::paired::OpenError),
}

/// A registered PKCS#11 token (`tokens.json`, mode 0600).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Its name in vmux.
    pub name: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Slot index among slots with a token.
    pub slot: Option<u64>,
    /// The PIN, sealed with the signer's passphrase.
    pub pin_sealed: String,
}

/// The signer's files under a [`Home`].
pub struct SignerHome {
    home: Home,
}

/// The path methods of [`SignerHome`], one per file in the state
/// directory: `name => "file"`.
macro_rules! state_files {
    ($($(#[$doc:meta])* $name:ident => $file:literal,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self) -> PathBuf {
                self.home.state_file($file)
            }
        )*
    };
}

impl SignerHome {
    /// The signer files of `home`.
    pub fn new(home: Home) -> SignerHome {
        SignerHome { home }
    }

    state_files! {
        /// The Noise identity file.
        identity_path => "signer-identity",
        /// The state file (name, paired agents).
        state_path => "signer-state.json",
        /// The CA private key (OpenSSH format).
        ca_path => "ca.key",
        /// The directory of software identities.
        keys_dir => "keys",
        /// The control socket of a running signer.
        control_path => "signer.sock",
        /// The audit log.
        audit_path => "audit.jsonl",
        /// The enrolled phones.
        phones_path => "phones.json",
        /// Registered PKCS#11 tokens.
        tokens_path => "tokens.json",
    }

    /// The registered tokens.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, SignerError> {
        let path = self.tokens_path();
        match vmux_home::read_optional(&path)? {
            None => Ok(Vec::new()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| {
                SignerError::Home(HomeError::Config {
                    path,
                    message: format!("corrupt token list: {e}"),
                })
            }),
        }
    }

    /// Registers a token (replacing one of the same name); its PIN is
    /// sealed with the signer's passphrase.
    pub fn add_token(
        &self,
        name: &str,
        module: &std::path::Path,
        slot: Option<u64>,
        pin: &str,
        passphrase: &str,
    ) -> Result<(), SignerError> {
        let sealed = vmux_link::seal(passphrase.as_bytes(), pin.as_bytes())
            .ok_or_else(|| SignerError::Key("cannot encrypt the PIN".into()))?;
        let mut all = self.tokens()?;
        all.retain(|t| t.name != name);
        all.push(TokenRecord {
            name: name.to_owned(),
            module: module.to_owned(),
            slot,
            pin_sealed: sealed,
        });
        let json = serde_json::to_vec_pretty(&all).map_err(|e| SignerError::Key(e.to_string()))?;
        Ok(vmux_home::write_private(&self.tokens_path(), &json)?)
    }

    /// Opens every registered token (absent ones are reported
    /// unavailable, not fatal; a wrong PIN is an error).
    pub fn open_tokens(&self, passphrase: Option<&str>) -> Result<Vec<Pkcs11Keys>, SignerError> {
        let mut out = Vec::new();
        for t in self.tokens()? {
            let pass = passphrase.ok_or_else(|| {
                SignerError::Key(format!(
                    "token {}: its PIN needs the signer's passphrase",
                    t.name
                ))
            })?;
            let pin = vmux_link::open_sealed(&t.pin_sealed, pass.as_bytes()).ok_or_else(|| {
                SignerError::Key(format!("token {}: wrong passphrase for its PIN", t.name))
            })?;
            let pin = zeroize::Zeroizing::new(String::from_utf8_lossy(&pin).into_owned());
            let cfg = TokenConfig {
                name: t.name.clone(),
                module: t.module.clone(),
                slot: t.slot,
                pin,
            };
            out.push(Pkcs11Keys::open_lazily(cfg).map_err(|e| SignerError::Key(e.to_string()))?);
        }
        Ok(out)
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
