//! Waking a sleeping signer: when a signature waits for a signer that is
//! not connected, the agent sends one push to the wake endpoint the signer
//! gave it (an APNs device token, or an HTTPS webhook), and at most one
//! more per interval while the outage lasts. The push carries nothing that
//! authorises anything: it only asks the device to reconnect.

mod apns;
mod webhook;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::state::StoredWake;

pub use apns::{default_key_files, jwt, ApnsConfig, PRODUCTION, SANDBOX};
pub use webhook::WebhookConfig;

/// `[wake]` in `agent.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeFileConfig {
    /// APNs provider settings (`[wake.apns]`).
    pub apns: Option<ApnsConfig>,
    /// Webhook settings (`[wake.webhook]`).
    pub webhook: Option<WebhookConfig>,
    /// While an outage lasts, push again at most this often. Default 60.
    pub interval_seconds: Option<u64>,
}

/// How a push went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the push service.
    Delivered,
    /// The device token is no longer valid: forget it.
    DropEndpoint(String),
    /// The service is overloaded or failing: wait this long.
    Backoff(Duration, String),
    /// Refused for another reason.
    Failed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Delivered => f.write_str("delivered"),
            Outcome::DropEndpoint(r) => write!(f, "device token unregistered ({r}); dropped"),
            Outcome::Backoff(d, r) => write!(f, "{r}; backing off {} s", d.as_secs()),
            Outcome::Failed(r) => write!(f, "failed: {r}"),
        }
    }
}

/// Why the wake providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The `.p8` key or a CA file cannot be read or parsed.
    #[error("{0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
}

#[derive(Default)]
struct SignerWake {
    last_push: Option<Instant>,
    backoff_until: Option<Instant>,
    backoff: Duration,
}

/// The agent's wake providers and their coalescing state.
pub struct Waker {
    apns: Option<apns::Apns>,
    webhook: webhook::Webhook,
    interval: Duration,
    signers: Mutex<HashMap<String, SignerWake>>,
    last: Mutex<Option<(u64, String)>>,
}

/// Builds an HTTPS client trusting the web PKI, plus `extra_ca` if given.
fn client(extra_ca: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, WakeError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .https_only(true);
    if let Some(f) = extra_ca {
        let pem =
            std::fs::read(f).map_err(|e| WakeError::Config(format!("{}: {e}", f.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            WakeError::Config(format!("{}: not a PEM certificate: {e}", f.display()))
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| WakeError::Client(e.to_string()))
}

const BACKOFF_FIRST: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(600);

impl Waker {
    /// Sets up the providers from `[wake]`. `default_p8` are the key files
    /// tried when `key_file` is not set.
    pub fn new(cfg: &WakeFileConfig, default_p8: &[PathBuf]) -> Result<Waker, WakeError> {
        let apns = match &cfg.apns {
            Some(a) => Some(apns::Apns::new(a, default_p8)?),
            None => None,
        };
        let webhook =
            webhook::Webhook::new(cfg.webhook.as_ref().unwrap_or(&WebhookConfig::default()))?;
        Ok(Waker {
            apns,
            webhook,
            interval: Duration::from_secs(cfg.interval_seconds.unwrap_or(60).max(1)),
            signers: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
        })
    }

    /// Whether to push to `signer` now: the first request of an outage, or
    /// the interval has passed since the last push; never while backing
    /// off. Records the push when it says yes.
    pub fn should_push(&self, signer: &str) -> bool {
        let mut all = vmux_home::sync::lock(&self.signers);
        let s = all.entry(signer.to_owned()).or_default();
        let now = Instant::now();
        if s.backoff_until.is_some_and(|t| t > now) {
            return false;
        }
        if s.last_push
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            return false;
        }
        s.last_push = Some(now);
        true
    }

    /// The signer is back: the next outage starts afresh.
    pub fn outage_over(&self, signer: &str) {
        if let Some(s) = vmux_home::sync::lock(&self.signers).get_mut(signer) {
            s.last_push = None;
        }
    }

    /// Sends one wake push and records its outcome.
    pub async fn push(
        &self,
        signer: &str,
        endpoint: &StoredWake,
        agent: &str,
        waiting: usize,
    ) -> Outcome {
        let outcome = match endpoint {
            StoredWake::Apns {
                device_token,
                topic,
                sandbox,
            } => match &self.apns {
                Some(a) => a.push(device_token, topic, *sandbox, agent, waiting).await,
                None => Outcome::Failed(
                    "the signer wants APNs, but agent.toml has no [wake.apns]".into(),
                ),
            },
            StoredWake::Webhook { url } => self.webhook.push(url, agent, waiting).await,
        };
        {
            let mut all = vmux_home::sync::lock(&self.signers);
            let s = all.entry(signer.to_owned()).or_default();
            match &outcome {
                Outcome::Backoff(d, _) => {
                    s.backoff = (s.backoff * 2).clamp(BACKOFF_FIRST.max(*d), BACKOFF_MAX);
                    s.backoff_until = Some(Instant::now() + s.backoff);
                }
                Outcome::Delivered => {
                    s.backoff = Duration::ZERO;
                    s.backoff_until = None;
                }
                _ => {}
            }
        }
        let now = vmux_home::time::now_s();
        *vmux_home::sync::lock(&self.last) = Some((now, outcome.to_string()));
        outcome
    }

    /// The last push's time and outcome, for `status`.
    pub fn last(&self) -> Option<(u64, String)> {
        vmux_home::sync::lock(&self.last).clone()
    }

    /// The back-off now in force for `signer` (for tests and status).
    pub fn backoff(&self, signer: &str) -> Duration {
        vmux_home::sync::lock(&self.signers)
            .get(signer)
            .map(|s| s.backoff)
            .unwrap_or_default()
    }
}

/// The JSON a wake push carries: who is waiting and how many, nothing
/// more.
fn wake_text(agent: &str, waiting: usize) -> String {
    let agent = vmux_proto::sanitize(agent);
    if waiting == 1 {
        format!("{agent} is waiting for a signature")
    } else {
        format!("{agent} is waiting for {waiting} signatures")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_one_push_per_outage_and_interval() {
        let w = Waker::new(
            &WakeFileConfig {
                interval_seconds: Some(3600),
                ..WakeFileConfig::default()
            },
            &[],
        )
        .unwrap();
        assert!(w.should_push("s"));
        for _ in 0..30 {
            assert!(!w.should_push("s"), "one push per outage");
        }
        assert!(w.should_push("other"), "per signer");
        w.outage_over("s");
        assert!(w.should_push("s"), "a new outage pushes again");
    }
}
