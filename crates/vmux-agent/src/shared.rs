//! State shared by the accept loop, the client connections, the signer
//! links and the certificate task. It imports nothing that imports it:
//! only leaf modules (the state file and its writer, the certificate
//! slot, a signer session's handle, pairing permissions, wake pushes),
//! and the modules that act on it (agent, client, sign, upstream, cert,
//! control, discovery) take it as an argument.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};
use vmux_link::Identity;

use crate::cert_slot::CertSlot;
use crate::persist::{Saved, StateWriter};
use crate::signer_conn::SignerConn;
use crate::state::AgentState;
use vmux_control::agent::SignerStatus;
use vmux_home::sync::{lock, read, write};
use vmux_home::time::now_s;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's display name, shown on the signer.
    pub name: String,
    /// Signer addresses to keep connected (`--signer`); when empty, the
    /// last addresses of pinned signers.
    pub signers: Vec<String>,
    /// Bounded wait for a signature, from the client's request to the
    /// answer.
    pub sign_timeout: Duration,
    /// Validity to ask for session certificates.
    pub cert_validity: Duration,
    /// Renew the certificate while less than this remains.
    pub cert_renew_before: Duration,
    /// The state file.
    pub state_path: PathBuf,
    /// Where the agent's device identity lives.
    pub identity: crate::identity_store::IdentityStore,
    /// Look for signers on the local network when none is configured.
    pub discovery: bool,
    /// Wake providers (`[wake]` in agent.toml).
    pub wake: crate::wake::WakeFileConfig,
    /// `.p8` files tried when `[wake.apns]` names none.
    pub apns_key_files: Vec<PathBuf>,
}

/// State shared by the accept loop, client handlers and signer links.
pub(crate) struct Shared {
    pub(crate) config: AgentConfig,
    pub(crate) identity: Identity,
    /// The state; change it only with [`Shared::update_state`].
    state: RwLock<AgentState>,
    /// How many changes the state has seen (counted under its write
    /// lock); each is handed to `writer`, which writes it off the runtime.
    generation: AtomicU64,
    writer: StateWriter,
    pub(crate) connected: watch::Sender<HashMap<String, SignerConn>>,
    pub(crate) sessions: watch::Sender<u64>,
    /// What the agent knows about each signer address, as its status
    /// shows it (the name and wake of a pinned signer are the state's,
    /// added when the status is taken).
    pub(crate) links: Mutex<BTreeMap<String, SignerStatus>>,
    pub(crate) cert: CertSlot,
    pub(crate) pending: AtomicUsize,
    pub(crate) started: u64,
    pub(crate) waker: crate::wake::Waker,
    /// Pairing permissions and pairings waiting for confirmation here.
    pub(crate) pairings: crate::pairing::Pairings,
    /// Addresses kept connected (each by one task).
    pub(crate) maintained: Mutex<std::collections::HashSet<String>>,
    /// Security keys' signature counters, and those that went backwards.
    pub(crate) counters: crate::verify::Counters,
    /// Which clients' executables are OpenSSH `ssh` too old for passkey
    /// signatures (by path and mtime).
    pub(crate) clients: crate::origin::client::ClientKinds,
    /// This value's own `Arc`, for tasks it spawns.
    pub(crate) me: std::sync::OnceLock<std::sync::Weak<Shared>>,
    /// Requests waiting now, how the last ones ended, and the counter of
    /// changes a `watch` control request waits on.
    pub(crate) board: crate::board::Board,
}

/// Counts a request as pending for as long as it lives.
pub(crate) struct PendingGuard<'a>(&'a AtomicUsize);

impl<'a> PendingGuard<'a> {
    pub(crate) fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        PendingGuard(n)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Loads the state for `config`; the agent is `identity`.
    pub(crate) fn open(
        config: AgentConfig,
        identity: Identity,
    ) -> Result<Shared, vmux_home::HomeError> {
        let waker = crate::wake::Waker::new(&config.wake, &config.apns_key_files).map_err(|e| {
            vmux_home::HomeError::Config {
                path: "agent.toml [wake]".into(),
                message: e.to_string(),
            }
        })?;
        vmux_home::remove_stale_temps(&config.state_path);
        let state = AgentState::load(&config.state_path)?;
        let writer = StateWriter::start(config.state_path.clone())
            .map_err(|e| vmux_home::HomeError::io(&config.state_path, e))?;
        Ok(Shared {
            config,
            identity,
            state: RwLock::new(state),
            generation: AtomicU64::new(0),
            writer,
            connected: watch::Sender::new(HashMap::new()),
            sessions: watch::Sender::new(0),
            links: Mutex::new(BTreeMap::new()),
            cert: CertSlot::default(),
            pending: AtomicUsize::new(0),
            started: now_s(),
            waker,
            pairings: crate::pairing::Pairings::default(),
            maintained: Mutex::default(),
            counters: crate::verify::Counters::default(),
            clients: crate::origin::client::ClientKinds::default(),
            me: std::sync::OnceLock::new(),
            board: crate::board::Board::default(),
        })
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// A receiver that changes whenever a new signer session opens.
    pub(crate) fn sessions(&self) -> watch::Receiver<u64> {
        self.sessions.subscribe()
    }

    /// The current state (read lock; do not hold across awaits).
    pub(crate) fn state(&self) -> RwLockReadGuard<'_, AgentState> {
        read(&self.state)
    }

    /// Changes the state in memory (at once, under the lock, so every
    /// reader sees it) and, if it did change, hands a snapshot to the
    /// state file's writer, off the runtime: nothing is written, or
    /// waited for, under the lock. Await the returned [`Saved`] for the
    /// change to be on disk; a failed write is logged and the agent keeps
    /// serving from memory.
    pub(crate) fn update_state(&self, f: impl FnOnce(&mut AgentState)) -> Saved {
        let mut state = write(&self.state);
        let before = state.clone();
        f(&mut state);
        if *state == before {
            return self.writer.unchanged();
        }
        // Counted and handed over under the lock, so snapshots reach the
        // writer in the order of the changes.
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let saved = self.writer.submit(generation, state.clone());
        drop(state);
        self.board.touch();
        saved
    }

    /// Resolves once every change handed to the state file's writer is on
    /// disk.
    pub(crate) async fn state_flushed(&self) {
        self.writer.flushed().await
    }

    pub(crate) fn set_connected(&self, signer_id: &str, conn: Option<SignerConn>) {
        let opened = conn.is_some();
        self.connected.send_modify(|m| {
            match conn {
                Some(c) => m.insert(signer_id.to_owned(), c),
                None => m.remove(signer_id),
            };
        });
        if opened {
            self.sessions.send_modify(|n| *n += 1);
        }
        self.board.touch();
    }

    pub(crate) fn set_link(&self, address: &str, f: impl FnOnce(&mut SignerStatus)) {
        let mut links = lock(&self.links);
        let l = links
            .entry(address.to_owned())
            .or_insert_with(|| SignerStatus {
                address: address.to_owned(),
                since: self.started,
                ..SignerStatus::default()
            });
        f(l);
        drop(links);
        self.board.touch();
    }

    /// Every connected signer.
    pub(crate) fn all_connected(&self) -> Vec<SignerConn> {
        self.connected.borrow().values().cloned().collect()
    }

    /// The first connected signer in the user's order (pairing order),
    /// with its id, if any.
    pub(crate) fn any_connected(&self) -> Option<(String, SignerConn)> {
        let connected = self.connected.borrow();
        self.state()
            .signers
            .iter()
            .find_map(|p| connected.get(&p.id).map(|c| (p.id.clone(), c.clone())))
    }

    /// Sends a wake push to `signer` if it has a wake endpoint and the
    /// coalescing rules allow one now (one per outage, then one per
    /// interval). The push runs on its own; nobody waits for it.
    pub(crate) fn wake(self: &Shared, signer: &str) {
        let Some(endpoint) = self
            .state()
            .signers
            .iter()
            .find(|p| p.id == signer)
            .and_then(|p| p.wake.clone())
        else {
            return;
        };
        if !self.waker.should_push(signer) {
            return;
        }
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let signer = signer.to_owned();
        tokio::spawn(async move {
            let waiting = me.pending.load(Ordering::Relaxed).max(1);
            let outcome = me
                .waker
                .push(&signer, &endpoint, &me.config.name, waiting)
                .await;
            info!(%signer, %outcome, "wake push");
            me.board.touch();
            if let crate::wake::Outcome::DropEndpoint(reason) = &outcome {
                warn!(%signer, %reason, "the signer's device token is unregistered; dropping it");
                me.update_state(|s| {
                    if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer) {
                        p.wake = None;
                    }
                })
                .saved()
                .await;
            }
        });
    }

    /// The signer is connected again: its next outage pushes afresh.
    pub(crate) fn outage_over(&self, signer: &str) {
        self.waker.outage_over(signer);
    }

    /// The last wake push's time and outcome.
    pub(crate) fn last_wake(&self) -> Option<(u64, String)> {
        self.waker.last()
    }

    /// Re-pulls the key list from every connected signer; resolves when
    /// all have answered (bounded).
    pub(crate) async fn refresh(&self) -> usize {
        let conns = self.all_connected();
        let all = async {
            for c in &conns {
                let _ = c.refresh().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), all).await;
        conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PinnedSigner;

    #[tokio::test]
    async fn the_state_file_is_written_off_the_lock_and_only_when_it_changed() {
        let (dir, path) = crate::state::temp_state_path();
        let config = AgentConfig {
            name: "test".into(),
            signers: Vec::new(),
            sign_timeout: Duration::from_secs(1),
            cert_validity: Duration::from_secs(60),
            cert_renew_before: Duration::from_secs(10),
            state_path: path.clone(),
            identity: crate::IdentityStore::File(dir.path().join("agent-identity")),
            discovery: false,
            wake: Default::default(),
            apns_key_files: Vec::new(),
        };
        let shared = Shared::open(config, Identity::generate()).unwrap();
        shared.update_state(|_| {}).saved().await;
        assert!(!path.exists(), "nothing changed, nothing written");
        let signer = PinnedSigner {
            id: "a".into(),
            name: "pi".into(),
            static_key: vec![1; 32],
            address: "127.0.0.1:1".into(),
            paired_at: 1,
            keys: Vec::new(),
            wake: None,
            ca_key: None,
        };
        shared
            .update_state(|s| s.signers.push(signer.clone()))
            .saved()
            .await;
        assert_eq!(AgentState::load(&path).unwrap().signers, [signer]);
        // The same wake endpoint again (as a signer sends on every
        // connection): not written again.
        std::fs::remove_file(&path).unwrap();
        shared
            .update_state(|s| s.signers[0].wake = None)
            .saved()
            .await;
        assert!(!path.exists(), "an unchanged state was written again");
    }
}
