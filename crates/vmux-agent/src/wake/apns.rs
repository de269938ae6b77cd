//! The APNs provider API over HTTP/2: `POST /3/device/<token>` with an
//! ES256 provider token (JWT) made from the `.p8` key, reused for 50
//! minutes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use serde::Deserialize;

use super::webhook::error_chain;
use super::{client, wake_text, Outcome, WakeError};

/// Apple's production endpoint.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's sandbox endpoint.
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// How long a provider token is reused (Apple: at least 20, at most 60
/// minutes).
const JWT_REUSE: Duration = Duration::from_secs(50 * 60);

/// `[wake.apns]` in `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The Apple developer team id (the JWT's `iss`).
    pub team_id: String,
    /// The key id of the `.p8` key (the JWT's `kid`).
    pub key_id: String,
    /// The `.p8` key; default `~/.ssh/vmux-apns.p8`, else
    /// `~/.config/vmux/apns-key.p8`.
    pub key_file: Option<PathBuf>,
    /// The APNs endpoint; default production or sandbox as the signer says.
    pub endpoint: Option<String>,
    /// One more CA to trust (tests, proxies).
    pub extra_ca_file: Option<PathBuf>,
}

pub(super) struct Apns {
    team_id: String,
    key_id: String,
    key: SigningKey,
    endpoint: Option<String>,
    client: reqwest::Client,
    jwt: Mutex<Option<(String, Instant)>>,
}

fn load_key(cfg: &ApnsConfig, defaults: &[PathBuf]) -> Result<SigningKey, WakeError> {
    let candidates: Vec<PathBuf> = match &cfg.key_file {
        Some(f) => vec![f.clone()],
        None => defaults.to_vec(),
    };
    let path = candidates.iter().find(|p| p.exists()).ok_or_else(|| {
        WakeError::Config(format!(
            "no APNs key file: looked for {}",
            show(&candidates)
        ))
    })?;
    if let Ok(mode) = vmux_home::mode_of(path) {
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "the APNs key file is readable by others; chmod 600 it");
            crate::notice(&format!(
                "warning: {} has mode {mode:o}; chmod 600 it",
                path.display()
            ));
        }
    }
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| WakeError::Config(format!("{}: {e}", path.display())))?,
    );
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| WakeError::Config(format!("{}: not a PKCS#8 P-256 key: {e}", path.display())))
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Apns {
    pub(super) fn new(cfg: &ApnsConfig, defaults: &[PathBuf]) -> Result<Apns, WakeError> {
        Ok(Apns {
            team_id: cfg.team_id.clone(),
            key_id: cfg.key_id.clone(),
            key: load_key(cfg, defaults)?,
            endpoint: cfg.endpoint.clone(),
            client: client(cfg.extra_ca_file.as_deref(), Duration::from_secs(15))?,
            jwt: Mutex::new(None),
        })
    }

    /// The provider token: reused while younger than 50 minutes, or made
    /// anew (`fresh`).
    fn token(&self, fresh: bool) -> String {
        let mut cached = vmux_home::sync::lock(&self.jwt);
        if let Some((t, made)) = cached.as_ref() {
            if !fresh && made.elapsed() < JWT_REUSE {
                return t.clone();
            }
        }
        let t = jwt(
            &self.key,
            &self.key_id,
            &self.team_id,
            vmux_home::time::now_s(),
        );
        *cached = Some((t.clone(), Instant::now()));
        t
    }

    pub(super) async fn push(
        &self,
        token: &str,
        topic: &str,
        sandbox: bool,
        agent: &str,
        waiting: usize,
    ) -> Outcome {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Outcome::DropEndpoint("malformed device token".into());
        }
        let base = self
            .endpoint
            .clone()
            .unwrap_or_else(|| if sandbox { SANDBOX } else { PRODUCTION }.to_owned());
        let url = format!("{}/3/device/{token}", base.trim_end_matches('/'));
        let payload = serde_json::json!({
            "aps": {
                "alert": { "title": "SSH signature requested", "body": wake_text(agent, waiting) },
                "sound": "default",
                "thread-id": "vmux-wake"
            }
        })
        .to_string();
        let mut refreshed = false;
        loop {
            let expiration = vmux_home::time::now_s() + 60;
            let sent = self
                .client
                .post(&url)
                .header("authorization", format!("bearer {}", self.token(refreshed)))
                .header("apns-topic", topic)
                .header("apns-push-type", "alert")
                .header("apns-priority", "10")
                .header("apns-expiration", expiration.to_string())
                .header("apns-collapse-id", "vmux-wake")
                .header("content-type", "application/json")
                .body(payload.clone())
                .send()
                .await;
            let r = match sent {
                Ok(r) => r,
                Err(e) => {
                    return Outcome::Backoff(
                        super::BACKOFF_FIRST,
                        format!("APNs unreachable: {}", error_chain(&e)),
                    )
                }
            };
            let status = r.status().as_u16();
            let reason = r
                .text()
                .await
                .ok()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return match status {
                200 => Outcome::Delivered,
                400 | 403 if !refreshed => {
                    // A stale or rejected provider token: make a new one, once.
                    tracing::info!(status, %reason, "APNs refused; retrying once with a new provider token");
                    refreshed = true;
                    continue;
                }
                410 => Outcome::DropEndpoint(reason),
                429 | 500..=599 => Outcome::Backoff(
                    super::BACKOFF_FIRST,
                    format!("APNs answered {status} {reason}"),
                ),
                _ => Outcome::Failed(format!("APNs answered {status} {reason}")),
            };
        }
    }
}

/// An ES256 provider token: header `{"alg":"ES256","kid":…}`, claims
/// `{"iss":…,"iat":…}`, signature r‖s, all base64url without padding.
pub fn jwt(key: &SigningKey, key_id: &str, team_id: &str, iat: u64) -> String {
    use signature::Signer;
    let header = serde_json::json!({ "alg": "ES256", "kid": key_id }).to_string();
    let claims = serde_json::json!({ "iss": team_id, "iat": iat }).to_string();
    let input = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64URL.encode(sig.to_bytes()))
}

/// The key files tried when `key_file` is not set.
pub fn default_key_files(home: Option<&Path>, config_dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(h) = home {
        v.push(h.join(".ssh/vmux-apns.p8"));
    }
    v.push(config_dir.join("apns-key.p8"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;

    #[test]
    fn jwt_is_es256_over_header_and_claims() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let t = jwt(&key, "KEY1234567", "ABCDE12345", 1_700_000_000);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES256", "kid": "KEY1234567"})
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iss": "ABCDE12345", "iat": 1_700_000_000u64})
        );
        let sig = p256::ecdsa::Signature::from_slice(&B64URL.decode(parts[2]).unwrap()).unwrap();
        key.verifying_key()
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
    }
}
