//! Where the agent keeps its device identity (its Noise static key, what
//! a signer knows it by): a file in its state directory (the default,
//! mode 0600, unencrypted so the agent can start unattended), or the
//! desktop's Secret Service (`org.freedesktop.secrets`: GNOME Keyring,
//! KWallet, KeePassXC), which keeps it encrypted under the user's login
//! keyring, so that a copy of the disk does not carry a usable identity.
//!
//! With the Secret Service the store never falls back to a file: if the
//! service is missing or its collection locked, the agent does not start
//! and says why. An identity file found there is moved into the service
//! (and the file removed) the first time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vmux_home::HomeError;
use vmux_link::Identity;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zeroize::Zeroizing;

/// `identity_store` in agent.toml.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityStoreKind {
    /// `agent-identity` in the state directory.
    #[default]
    File,
    /// The desktop Secret Service.
    SecretService,
}

/// Where this agent's identity lives.
#[derive(Debug, Clone)]
pub enum IdentityStore {
    /// A file, mode 0600.
    File(PathBuf),
    /// The Secret Service's default collection, one item per agent home
    /// (`file` is where a file identity would be: moved in, and the
    /// item's scope).
    SecretService {
        /// The identity file this item replaces.
        file: PathBuf,
    },
}

const DEST: &str = "org.freedesktop.secrets";
const SERVICE_PATH: &str = "/org/freedesktop/secrets";
const SERVICE: &str = "org.freedesktop.Secret.Service";
const COLLECTION: &str = "org.freedesktop.Secret.Collection";
const ITEM: &str = "org.freedesktop.Secret.Item";
const DEFAULT_COLLECTION: &str = "/org/freedesktop/secrets/aliases/default";
/// Longest the agent waits for one Secret Service call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl IdentityStore {
    /// The store of `kind` for the identity file `file`.
    pub fn new(kind: IdentityStoreKind, file: PathBuf) -> IdentityStore {
        match kind {
            IdentityStoreKind::File => IdentityStore::File(file),
            IdentityStoreKind::SecretService => IdentityStore::SecretService { file },
        }
    }

    /// One line for status output.
    pub fn describe(&self) -> String {
        match self {
            IdentityStore::File(p) => format!("file {}", p.display()),
            IdentityStore::SecretService { .. } => "the desktop secret service".into(),
        }
    }

    /// The identity, made and stored on first use.
    pub async fn load_or_create(&self) -> Result<Identity, HomeError> {
        match self {
            IdentityStore::File(p) => Identity::load_or_create(p),
            IdentityStore::SecretService { file } => {
                let ss = SecretService::connect(file).await?;
                if let Some(id) = ss.load().await? {
                    return Ok(id);
                }
                let (id, migrated) = match vmux_home::read_optional(file)? {
                    Some(_) => (Identity::load(file)?, true),
                    None => (Identity::generate(), false),
                };
                ss.store(&id).await?;
                // Stored only if it reads back the same.
                if ss.load().await?.map(|s| *s.public()) != Some(*id.public()) {
                    return Err(ss.error("the identity did not read back from it"));
                }
                if migrated {
                    std::fs::remove_file(file).map_err(|e| HomeError::io(file, e))?;
                    crate::notice("moved the agent identity from its file into the secret service");
                }
                Ok(id)
            }
        }
    }

    /// Deletes the identity; whether there was one.
    pub async fn forget(&self) -> Result<bool, HomeError> {
        let file_gone = |p: &Path| match std::fs::remove_file(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(HomeError::io(p, e)),
        };
        match self {
            IdentityStore::File(p) => file_gone(p),
            IdentityStore::SecretService { file } => {
                let ss = SecretService::connect(file).await?;
                let item = ss.delete().await?;
                Ok(file_gone(file)? || item)
            }
        }
    }
}

/// A connection to the Secret Service with a plain transfer session
/// (the bus is local to the user's session).
struct SecretService {
    conn: zbus::Connection,
    session: OwnedObjectPath,
    scope: String,
}

/// The wire form of `org.freedesktop.Secret.Secret`.
type WireSecret = (OwnedObjectPath, Vec<u8>, Vec<u8>, String);

impl SecretService {
    async fn connect(file: &Path) -> Result<SecretService, HomeError> {
        let scope = file.display().to_string();
        let fail = |what: &str, e: &dyn std::fmt::Display| HomeError::Config {
            path: "agent.toml identity_store".into(),
            message: format!("the desktop secret service is not available ({what}: {e})"),
        };
        let conn = within(zbus::Connection::session())
            .await
            .map_err(|e| fail("session bus", &e))?;
        let reply = within(conn.call_method(
            Some(DEST),
            SERVICE_PATH,
            Some(SERVICE),
            "OpenSession",
            &("plain", Value::from("")),
        ))
        .await
        .map_err(|e| fail("OpenSession", &e))?;
        let (_, session): (OwnedValue, OwnedObjectPath) = reply
            .body()
            .deserialize()
            .map_err(|e| fail("OpenSession", &e))?;
        Ok(SecretService {
            conn,
            session,
            scope,
        })
    }

    fn error(&self, message: &str) -> HomeError {
        HomeError::Config {
            path: "agent.toml identity_store".into(),
            message: format!("secret service: {message}"),
        }
    }

    fn attributes(&self) -> HashMap<&str, &str> {
        HashMap::from([
            ("application", "vmux"),
            ("vmux-kind", "agent-identity"),
            ("vmux-identity-file", self.scope.as_str()),
        ])
    }

    async fn call<B, R>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> Result<R, HomeError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let reply = within(
            self.conn
                .call_method(Some(DEST), path, Some(interface), method, body),
        )
        .await
        .map_err(|e| self.error(&format!("{method} failed: {e}")))?;
        reply
            .body()
            .deserialize()
            .map_err(|e| self.error(&format!("{method} answered oddly: {e}")))
    }

    /// The items holding this agent's identity, unlocked.
    async fn items(&self) -> Result<Vec<OwnedObjectPath>, HomeError> {
        let (unlocked, locked): (Vec<OwnedObjectPath>, Vec<OwnedObjectPath>) = self
            .call(SERVICE_PATH, SERVICE, "SearchItems", &(self.attributes(),))
            .await?;
        if locked.is_empty() {
            return Ok(unlocked);
        }
        let (_, prompt): (Vec<OwnedObjectPath>, OwnedObjectPath) = self
            .call(SERVICE_PATH, SERVICE, "Unlock", &(locked,))
            .await?;
        if prompt.as_str() != "/" {
            return Err(self.error(
                "the keyring holding the agent identity is locked; unlock it (log in to the desktop) and start the agent again",
            ));
        }
        self.call::<_, (Vec<OwnedObjectPath>, Vec<OwnedObjectPath>)>(
            SERVICE_PATH,
            SERVICE,
            "SearchItems",
            &(self.attributes(),),
        )
        .await
        .map(|(unlocked, _)| unlocked)
    }

    async fn load(&self) -> Result<Option<Identity>, HomeError> {
        let Some(item) = self.items().await?.into_iter().next() else {
            return Ok(None);
        };
        let (_, _, value, _): WireSecret = self
            .call(item.as_str(), ITEM, "GetSecret", &(&self.session,))
            .await?;
        let value = Zeroizing::new(value);
        Identity::parse(Path::new("secret service item"), &value, None).map(Some)
    }

    async fn store(&self, id: &Identity) -> Result<(), HomeError> {
        let text = id.to_text();
        let props: HashMap<&str, Value<'_>> = HashMap::from([
            (
                "org.freedesktop.Secret.Item.Label",
                Value::from(format!("vmux agent identity ({})", self.scope)),
            ),
            (
                "org.freedesktop.Secret.Item.Attributes",
                Value::from(self.attributes()),
            ),
        ]);
        let secret = (
            &self.session,
            Vec::<u8>::new(),
            text.as_bytes(),
            "text/plain",
        );
        let (_, prompt): (OwnedObjectPath, OwnedObjectPath) = self
            .call(
                DEFAULT_COLLECTION,
                COLLECTION,
                "CreateItem",
                &(props, secret, true),
            )
            .await?;
        if prompt.as_str() != "/" {
            return Err(self.error(
                "the default keyring is locked; unlock it (log in to the desktop) and start the agent again",
            ));
        }
        Ok(())
    }

    /// Deletes this agent's items; whether there were any.
    async fn delete(&self) -> Result<bool, HomeError> {
        let items = self.items().await?;
        for item in &items {
            let _prompt: OwnedObjectPath = self.call(item.as_str(), ITEM, "Delete", &()).await?;
        }
        Ok(!items.is_empty())
    }
}

/// Bounds one D-Bus step in time.
async fn within<T>(f: impl std::future::Future<Output = zbus::Result<T>>) -> zbus::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(zbus::Error::Failure("no answer in time".into())))
}
