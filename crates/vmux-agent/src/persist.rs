//! Writing the agent's state file, never on the async runtime: one writer
//! thread writes (atomically, with fsync) the latest snapshot it was
//! handed, so a burst of changes costs one write and a slow disk holds up
//! no client and no signer link. A caller that needs a change on disk
//! before it goes on waits for it with [`Saved::saved`], without blocking
//! a runtime thread. A leaf: it knows the state's format, nothing else.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;
use tracing::warn;

use crate::state::AgentState;
use vmux_home::sync::lock;

#[derive(Default)]
struct Pending {
    /// The newest snapshot not yet written, with its generation.
    next: Option<(u64, AgentState)>,
    /// No more snapshots will come: write what is pending, then stop.
    closed: bool,
}

struct Inner {
    path: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The generation last written (or given up on after an error).
    written: watch::Sender<u64>,
    /// The newest generation handed to the writer.
    submitted: std::sync::atomic::AtomicU64,
}

/// The agent's one state-file writer.
pub(crate) struct StateWriter {
    inner: Arc<Inner>,
}

/// A change handed to the writer; [`Saved::saved`] waits until it (or a
/// later snapshot) has been written.
pub(crate) struct Saved {
    generation: Option<u64>,
    written: watch::Receiver<u64>,
}

impl Saved {
    /// Resolves once the change is on disk (or its write failed, which
    /// is logged); at once when nothing changed.
    pub(crate) async fn saved(mut self) {
        if let Some(g) = self.generation {
            let _ = self.written.wait_for(|w| *w >= g).await;
        }
    }
}

impl StateWriter {
    /// Starts the writer thread for the state file at `path`.
    pub(crate) fn start(path: PathBuf) -> std::io::Result<StateWriter> {
        let inner = Arc::new(Inner {
            path,
            pending: Mutex::default(),
            wake: Condvar::new(),
            written: watch::Sender::new(0),
            submitted: std::sync::atomic::AtomicU64::new(0),
        });
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("agent-state".into())
            .spawn(move || worker.run())?;
        Ok(StateWriter { inner })
    }

    /// Hands `snapshot`, the state as of `generation` (which grows with
    /// every change), to the writer; an older snapshot still waiting is
    /// superseded.
    pub(crate) fn submit(&self, generation: u64, snapshot: AgentState) -> Saved {
        lock(&self.inner.pending).next = Some((generation, snapshot));
        self.inner
            .submitted
            .fetch_max(generation, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
        Saved {
            generation: Some(generation),
            written: self.inner.written.subscribe(),
        }
    }

    /// Resolves once everything handed to the writer so far is on disk
    /// (or failed, which is logged): what the agent waits for before it
    /// exits, so a stop never loses a change it made.
    pub(crate) async fn flushed(&self) {
        let g = self
            .inner
            .submitted
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut written = self.inner.written.subscribe();
        let _ = written.wait_for(|w| *w >= g).await;
    }

    /// Nothing changed: nothing to write or wait for.
    pub(crate) fn unchanged(&self) -> Saved {
        Saved {
            generation: None,
            written: self.inner.written.subscribe(),
        }
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        lock(&self.inner.pending).closed = true;
        self.inner.wake.notify_one();
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let (generation, state) = {
                let mut p = lock(&self.pending);
                loop {
                    if let Some(next) = p.next.take() {
                        break next;
                    }
                    if p.closed {
                        return;
                    }
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
            };
            if let Err(e) = state.save(&self.path) {
                warn!(error = %e, "cannot write the agent state; keeping it in memory");
            }
            self.written.send_replace(generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_the_latest_snapshot_off_the_runtime() {
        let (_dir, path) = crate::state::temp_state_path();
        let w = StateWriter::start(path.clone()).unwrap();
        w.unchanged().saved().await;
        assert!(!path.exists(), "nothing changed, nothing written");
        let mut s = AgentState::default();
        for g in 1..=20 {
            s.version = g as u32;
            let saved = w.submit(g, s.clone());
            if g == 20 {
                saved.saved().await;
            }
        }
        assert_eq!(AgentState::load(&path).unwrap().version, 20);
    }
}
