//! The agents this signer has paired with, persisted in
//! `signer-state.json` (mode 0600, written atomically).

use std::path::PathBuf;
use std::sync::RwLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use vmux_home::HomeError;
use vmux_link::StaticKey;

/// One paired agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PairedAgent {
    /// Its id (derived from its static key).
    pub id: String,
    /// Its name when it paired.
    pub name: String,
    /// Its static key, base64.
    pub static_key: String,
    /// When it paired, Unix seconds.
    pub paired_at: u64,
    /// When it last connected, Unix seconds.
    pub last_seen: u64,
}

/// The signer's persistent state.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SignerState {
    /// The signer's display name (`init --name`).
    pub name: String,
    /// Paired agents.
    #[serde(default)]
    pub agents: Vec<PairedAgent>,
}

impl SignerState {
    /// Parses the state file's contents.
    pub fn parse(path: &std::path::Path, bytes: &[u8]) -> Result<SignerState, HomeError> {
        serde_json::from_slice(bytes).map_err(|e| HomeError::Config {
            path: path.to_owned(),
            message: format!("corrupt signer state: {e}"),
        })
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<(), HomeError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| HomeError::io(path, std::io::Error::other(e)))?;
        vmux_home::write_private(path, &json)
    }
}

/// The signer's state, shared by its connections.
pub struct PairedAgents {
    path: PathBuf,
    state: RwLock<SignerState>,
}

fn now_s() -> u64 {
    crate::checks::now_ms() / 1000
}

impl PairedAgents {
    /// Wraps loaded state that lives at `path`.
    pub fn new(path: PathBuf, state: SignerState) -> PairedAgents {
        PairedAgents {
            path,
            state: RwLock::new(state),
        }
    }

    /// Whether an agent with this static key is paired.
    pub fn contains(&self, key: &StaticKey) -> bool {
        let k = B64.encode(key);
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .agents
            .iter()
            .any(|a| a.static_key == k)
    }

    /// Pins a newly approved agent (replacing an entry with the same key).
    pub fn add(&self, id: &str, name: &str, key: &StaticKey) -> Result<(), HomeError> {
        let k = B64.encode(key);
        let now = now_s();
        self.update(|s| {
            s.agents.retain(|a| a.static_key != k);
            s.agents.push(PairedAgent {
                id: id.to_owned(),
                name: name.to_owned(),
                static_key: k,
                paired_at: now,
                last_seen: now,
            });
        })
    }

    /// Records that an agent connected.
    pub fn touch(&self, key: &StaticKey) -> Result<(), HomeError> {
        let k = B64.encode(key);
        let now = now_s();
        self.update(|s| {
            for a in s.agents.iter_mut().filter(|a| a.static_key == k) {
                a.last_seen = now;
            }
        })
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> SignerState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SignerState)) -> Result<(), HomeError> {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut next = s.clone();
        f(&mut next);
        next.save(&self.path)?;
        *s = next;
        Ok(())
    }
}
