//! The webhook provider: an HTTPS POST of a small JSON body (UnifiedPush /
//! ntfy style).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{client, wake_text, Outcome, WakeError};

/// `[wake.webhook]` in `agent.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// One more CA to trust (tests, private servers).
    pub extra_ca_file: Option<PathBuf>,
}

pub(super) struct Webhook {
    client: reqwest::Client,
}

impl Webhook {
    pub(super) fn new(cfg: &WebhookConfig) -> Result<Webhook, WakeError> {
        Ok(Webhook {
            client: client(cfg.extra_ca_file.as_deref(), Duration::from_secs(10))?,
        })
    }

    pub(super) async fn push(&self, url: &str, agent: &str, waiting: usize) -> Outcome {
        let body = serde_json::json!({
            "event": "wake",
            "agent": vmux_proto::sanitize(agent),
            "waiting": waiting,
            "message": wake_text(agent, waiting),
        });
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Delivered,
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                Outcome::Backoff(
                    super::BACKOFF_FIRST,
                    format!("webhook answered {}", r.status()),
                )
            }
            Ok(r) => Outcome::Failed(format!("webhook answered {}", r.status())),
            Err(e) => Outcome::Backoff(
                super::BACKOFF_FIRST,
                format!("webhook unreachable: {}", error_chain(&e)),
            ),
        }
    }
}

/// An error with its causes, for one log line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
