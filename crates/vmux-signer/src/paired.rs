//! The agents this signer has paired with, persisted in
//! `signer-state.json` (mode 0600, written atomically) by one writer at a
//! time ([`PairedAgents`]).

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

/// Why the state could not be opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (a running signer, or another `vmux signer`
    /// command) holds the state's lock.
    #[error("another vmux process holds the signer state ({0} is locked); if `vmux signer run` is running here, ask it (e.g. `vmux signer unpair` does), or try again")]
    Busy(PathBuf),
    /// Reading or parsing failed.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// The signer's state and its one writer.
///
/// Only a `PairedAgents` writes `signer-state.json`, and only one exists
/// at a time across processes: [`PairedAgents::open`] takes an exclusive
/// lock (`flock`) on `signer-state.lock` beside it and holds it until
/// dropped. The running signer holds it for as long as it runs, so
/// `vmux signer unpair` asks the running signer (its control socket) and
/// edits the file itself only when no signer runs. The copy in memory is
/// therefore never stale, and no write can undo another.
pub struct PairedAgents {
    path: PathBuf,
    state: RwLock<SignerState>,
    _lock: vmux_home::WriterLock,
}

/// Seconds within which a repeated connection does not rewrite the
/// agent's last-seen time.
const LAST_SEEN_RESOLUTION: u64 = 60;

use vmux_home::time::now_s;

pub use vmux_home::lock_path;

impl PairedAgents {
    /// Opens the state at `path` (empty if there is no file yet) as its
    /// one writer, waiting at most `wait` for another writer to finish.
    pub fn open(path: PathBuf, wait: std::time::Duration) -> Result<PairedAgents, OpenError> {
        let lock = vmux_home::WriterLock::acquire(&path, wait).map_err(|e| match e {
            vmux_home::LockError::Busy(p) => OpenError::Busy(p),
            vmux_home::LockError::Home(h) => OpenError::Home(h),
        })?;
        let state = match vmux_home::read_optional(&path)? {
            Some(bytes) => SignerState::parse(&path, &bytes)?,
            None => SignerState::default(),
        };
        Ok(PairedAgents {
            path,
            state: RwLock::new(state),
            _lock: lock,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SignerState> {
        vmux_home::sync::read(&self.state)
    }

    /// Whether an agent with this static key is paired now.
    pub fn contains(&self, key: &StaticKey) -> bool {
        let k = B64.encode(key);
        self.read().agents.iter().any(|a| a.static_key == k)
    }

    /// Whether an agent with this static key was unpaired.
    pub fn is_revoked(&self, key: &StaticKey) -> bool {
        let k = B64.encode(key);
        self.read().revoked.contains(&k)
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

    /// Records that an agent connected (written at most once a minute per
    /// agent, so that reconnecting does not make a write each time).
    pub fn touch(&self, key: &StaticKey) -> Result<(), HomeError> {
        let k = B64.encode(key);
        let now = now_s();
        let fresh = self
            .read()
            .agents
            .iter()
            .filter(|a| a.static_key == k)
            .all(|a| now.saturating_sub(a.last_seen) < LAST_SEEN_RESOLUTION);
        if fresh {
            return Ok(());
        }
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
        self.read().clone()
    }

    /// Changes the state: in memory only once the file holds the change.
    fn update(&self, f: impl FnOnce(&mut SignerState)) -> Result<(), HomeError> {
        let mut l = vmux_home::sync::write(&self.state);
        let mut next = l.clone();
        f(&mut next);
        next.save(&self.path)?;
        *l = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_writer_at_a_time_and_every_change_is_kept() {
        let (_dir, path) = vmux_home::testing::temp_path("signer-state.json");
        let running = PairedAgents::open(path.clone(), Duration::ZERO).unwrap();
        running.add("aaaa1111", "laptop", &[1; 32]).unwrap();
        running.add("bbbb2222", "desk", &[2; 32]).unwrap();
        // A second writer (the CLI) cannot open the state while the
        // running signer holds it.
        assert!(matches!(
            PairedAgents::open(path.clone(), Duration::from_millis(50)),
            Err(OpenError::Busy(_))
        ));
        assert_eq!(
            running.remove("aaaa").unwrap().map(|a| a.name),
            Some("laptop".into())
        );
        assert!(running.remove("zzzz").unwrap().is_none());
        // A connection's touch after the unpair keeps it unpaired.
        running.touch(&[1; 32]).unwrap();
        running.touch(&[2; 32]).unwrap();
        assert!(!running.contains(&[1; 32]));
        assert!(running.is_revoked(&[1; 32]));
        // An ambiguous prefix removes nothing.
        running.add("bbbb3333", "other", &[3; 32]).unwrap();
        assert!(running.remove("bbbb").unwrap().is_none());
        drop(running);
        // Once it stops, the next writer sees exactly what it wrote.
        let cli = PairedAgents::open(path.clone(), Duration::ZERO).unwrap();
        let s = cli.snapshot();
        assert_eq!(s.agents.len(), 2);
        assert_eq!(s.revoked, vec![B64.encode([1u8; 32])]);
        assert_eq!(vmux_home::mode_of(&lock_path(&path)).unwrap(), 0o600);
    }
}
