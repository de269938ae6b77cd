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
}

/// Default bounded wait for a signature.
pub const DEFAULT_SIGN_TIMEOUT_SECONDS: u64 = 60;
