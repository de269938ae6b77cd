//! `signer.toml`: optional settings; command-line flags override them.

use serde::Deserialize;

use crate::ca::CertPolicy;

/// Default address `vmux signer run` listens on.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7326";

/// The signer's configuration file. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignerConfig {
    /// Address to listen on (`--listen`). Default `0.0.0.0:7326`.
    pub listen: String,
    /// Approval mode (`--approve`): `tty` or `command:PROGRAM`. Default `tty`.
    pub approve: String,
    /// How long the approver may take, in seconds, before the request is
    /// denied with `approvalTimeout`. Default 60 (a sign request's window
    /// bounds it further).
    pub approval_timeout_seconds: u64,
    /// Session-certificate policy.
    pub certificates: CertPolicy,
}

impl Default for SignerConfig {
    fn default() -> Self {
        SignerConfig {
            listen: DEFAULT_LISTEN.to_owned(),
            approve: "tty".to_owned(),
            approval_timeout_seconds: 60,
            certificates: CertPolicy::default(),
        }
    }
}
