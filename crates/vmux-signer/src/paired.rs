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
    /// Whether the signer's keys, CA and identity are encrypted with a
    /// passphrase (`init` without `--no-passphrase`).
    #[serde(default)]
    pub encrypted: bool,
    /// Paired agents.
    #[serde(default)]
    pub agents: Vec<PairedAgent>,
    /// Static keys (base64) of agents that were unpaired: refused without
    /// asking anyone until they pair with a new identity.
    #[serde(default)]
    pub revoked: Vec<String>,
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

/// The signer's state, shared by its connections and kept in step with
/// the file: `vmux signer unpair` edits the file while the signer runs,
/// and the running signer sees the change at the next check.
pub struct PairedAgents {
    path: PathBuf,
    state: RwLock<Loaded>,
}

struct Loaded {
    state: SignerState,
    stamp: Option<Stamp>,
}

/// What identifies one version of the file.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: std::time::SystemTime,
    len: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: m.ino(),
        modified: m.modified().ok()?,
        len: m.len(),
    })
}

fn now_s() -> u64 {
    crate::checks::now_ms() / 1000
}

impl PairedAgents {
    /// Wraps loaded state that lives at `path`.
    pub fn new(path: PathBuf, state: SignerState) -> PairedAgents {
        let stamp = stamp(&path);
        PairedAgents {
            path,
            state: RwLock::new(Loaded { state, stamp }),
        }
    }

    /// Re-reads the file if it changed since it was last read. A file that
    /// cannot be read or parsed leaves the state in memory as it was.
    fn reload(&self) {
        let now = stamp(&self.path);
        if now.is_none() || self.read().stamp == now {
            return;
        }
        let parsed = vmux_home::read(&self.path).and_then(|b| SignerState::parse(&self.path, &b));
        let mut l = self.state.write().unwrap_or_else(|e| e.into_inner());
        match parsed {
            Ok(state) => *l = Loaded { state, stamp: now },
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the signer state; keeping the loaded one")
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an agent with this static key is paired now.
    pub fn contains(&self, key: &StaticKey) -> bool {
        self.reload();
        let k = B64.encode(key);
        self.read().state.agents.iter().any(|a| a.static_key == k)
    }

    /// Whether an agent with this static key was unpaired.
    pub fn is_revoked(&self, key: &StaticKey) -> bool {
        self.reload();
        let k = B64.encode(key);
        self.read().state.revoked.contains(&k)
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

    /// Revokes the agent whose id is `id` (or starts with it, if that is
    /// unambiguous). Returns the removed agent.
    pub fn remove(&self, id: &str) -> Result<Option<PairedAgent>, HomeError> {
        let mut removed = None;
        self.update(|s| {
            let matches: Vec<usize> = s
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.id == id || (!id.is_empty() && a.id.starts_with(id)))
                .map(|(i, _)| i)
                .collect();
            if let [i] = matches[..] {
                let a = s.agents.remove(i);
                if !s.revoked.contains(&a.static_key) {
                    s.revoked.push(a.static_key.clone());
                }
                removed = Some(a);
            }
        })?;
        Ok(removed)
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> SignerState {
        self.reload();
        self.read().state.clone()
    }

    fn update(&self, f: impl FnOnce(&mut SignerState)) -> Result<(), HomeError> {
        self.reload();
        let mut l = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut next = l.state.clone();
        f(&mut next);
        next.save(&self.path)?;
        *l = Loaded {
            state: next,
            stamp: stamp(&self.path),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_of_the_file_is_seen_by_the_running_signer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer-state.json");
        let running = PairedAgents::new(path.clone(), SignerState::default());
        running.add("aaaa1111", "laptop", &[1; 32]).unwrap();
        running.add("bbbb2222", "desk", &[2; 32]).unwrap();
        assert!(running.contains(&[1; 32]));
        // Another process (the CLI) loads the file and unpairs one agent.
        let state = SignerState::parse(&path, &std::fs::read(&path).unwrap()).unwrap();
        let cli = PairedAgents::new(path.clone(), state);
        assert_eq!(
            cli.remove("aaaa").unwrap().map(|a| a.name),
            Some("laptop".into())
        );
        assert!(cli.remove("zzzz").unwrap().is_none());
        assert!(!running.contains(&[1; 32]));
        assert!(running.contains(&[2; 32]));
        // An ambiguous prefix removes nothing.
        running.add("bbbb3333", "other", &[3; 32]).unwrap();
        assert!(cli.remove("bbbb").unwrap().is_none());
        assert_eq!(running.snapshot().agents.len(), 2);
    }
}
