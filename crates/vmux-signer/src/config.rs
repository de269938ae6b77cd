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
    /// denied with `approvalTimeout`. Default 60 (a sign request's own
    /// lifetime, at most 60 s, bounds it further).
    pub approval_timeout_seconds: u64,
    /// Longest approval window a person may grant at a prompt, in
    /// seconds ("approve this key for this process and host for N
    /// minutes"); 0 turns windows off. Default 3600.
    pub max_approval_window_seconds: u64,
    /// Webhook agents POST to, to wake this signer (`--wake-url`),
    /// `https://` only.
    pub wake_url: Option<String>,
    /// APNs device token, hex (`--apns-token`): what a phone app sends.
    pub apns_token: Option<String>,
    /// APNs topic, the app's bundle id (`--apns-topic`).
    pub apns_topic: Option<String>,
    /// Use the APNs sandbox environment (`--apns-sandbox`). Default false.
    pub apns_sandbox: bool,
    /// Where the session certificates' CA key lives (`--ca`): `software`
    /// (the signer's `ca.key`, the default) or `phone:NAME[,phone:NAME…]`
    /// (those enrolled phones' passkeys; each certificate is signed on
    /// one of them).
    pub ca: Option<String>,
    /// Session-certificate policy.
    pub certificates: CertPolicy,
    /// Web Push to the phones' pages (`[web_push]`).
    pub web_push: WebPushConfig,
    /// How long each certificate the signer's own CA makes for the phone
    /// page lasts, in seconds; it is renewed when a third is left.
    /// Default 2592000 (30 days).
    pub page_certificate_seconds: u64,
    /// The reverse proxy in front of the phone page (`[web_proxy]`).
    pub web_proxy: WebProxyConfig,
}

/// `[web_proxy]`: the reverse proxy that serves the phone page's origin
/// (when the page listens on loopback without TLS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebProxyConfig {
    /// Take each client's address from the last `X-Forwarded-For` entry
    /// (the one the proxy appends), for the page's per-source limits.
    /// Only for a proxy that sets it; without it every client is the
    /// proxy. Default false.
    pub trust_forwarded_for: bool,
}

/// `[web_push]`: how the signer wakes phones with no page open.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebPushConfig {
    /// The contact push services see in each request's VAPID claim:
    /// `mailto:ADDRESS` or an `https://` URL. Default: the page's origin.
    pub subject: Option<String>,
    /// A CA certificate (PEM) to trust for push services besides the web
    /// PKI's roots (a self-hosted push service, tests).
    pub extra_ca_file: Option<std::path::PathBuf>,
}

impl Default for SignerConfig {
    fn default() -> Self {
        SignerConfig {
            listen: DEFAULT_LISTEN.to_owned(),
            approve: "tty".to_owned(),
            approval_timeout_seconds: 60,
            max_approval_window_seconds: 3600,
            wake_url: None,
            apns_token: None,
            apns_topic: None,
            apns_sandbox: false,
            ca: None,
            certificates: CertPolicy::default(),
            web_push: WebPushConfig::default(),
            page_certificate_seconds: 30 * 24 * 3600,
            web_proxy: WebProxyConfig::default(),
        }
    }
}
