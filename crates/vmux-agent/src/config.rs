//! `agent.toml`: optional settings; command-line flags override them.

use serde::Deserialize;

/// The agent's configuration file. Every key is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentFileConfig {
    /// The name the signer shows for this agent (`--name`). Default: the
    /// host name.
    pub name: Option<String>,
    /// Socket path (`--socket`).
    pub socket: Option<std::path::PathBuf>,
    /// Signer addresses (`--signer`), `HOST:PORT`.
    #[serde(default)]
    pub signers: Vec<String>,
    /// Longest wait for a signature, seconds (`--sign-timeout`). Default 60.
    pub sign_timeout_seconds: Option<u64>,
    /// Session-certificate validity to ask for, seconds
    /// (`--cert-validity`). Default 28800 (8 h); the signer may shorten it.
    pub cert_validity_seconds: Option<u64>,
    /// Renew the session certificate while fewer than this many seconds
    /// remain (`--cert-renew-before`). Default 3600.
    pub cert_renew_before_seconds: Option<u64>,
    /// Where the agent keeps its device identity: `file` (default) or
    /// `secret-service` (the desktop keyring).
    #[serde(default)]
    pub identity_store: crate::identity_store::IdentityStoreKind,
    /// Wake providers (`[wake.apns]`, `[wake.webhook]`, `interval_seconds`).
    #[serde(default)]
    pub wake: crate::wake::WakeFileConfig,
    /// The tray and workstation notifications (`[tray]`), read by `vmux
    /// agent tray`.
    #[serde(default)]
    pub tray: TrayFileConfig,
}

/// `[tray]` in agent.toml: what `vmux agent tray` does besides the icon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrayFileConfig {
    /// Workstation notifications ("Approve on NAME: …", the pairing
    /// code). Default true.
    #[serde(default = "yes")]
    pub notifications: bool,
    /// How long a request waits on a signer before the notification
    /// shows, milliseconds. Default 1000.
    #[serde(default = "default_notify_after")]
    pub notify_after_ms: u64,
}

impl Default for TrayFileConfig {
    fn default() -> Self {
        TrayFileConfig {
            notifications: true,
            notify_after_ms: DEFAULT_NOTIFY_AFTER_MS,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_notify_after() -> u64 {
    DEFAULT_NOTIFY_AFTER_MS
}

/// Default wait before a notification says a request waits on a signer.
pub const DEFAULT_NOTIFY_AFTER_MS: u64 = 1000;

/// Default bounded wait for a signature.
pub const DEFAULT_SIGN_TIMEOUT_SECONDS: u64 = 60;
/// Default session-certificate validity (the brief's 8 hours).
pub const DEFAULT_CERT_VALIDITY_SECONDS: u64 = 28_800;
/// Default renewal threshold (the brief's 60 minutes).
pub const DEFAULT_CERT_RENEW_BEFORE_SECONDS: u64 = 3_600;
