//! What a desktop companion (the tray, `vmux agent tray`) needs beyond
//! the status: the requests waiting for a signer's person right now, how
//! the last ones ended, and a change counter that moves whenever anything
//! `vmux agent status` shows changed, so that a `watch` control request
//! can wait for the next change instead of polling. A leaf: it imports
//! nothing of the agent's state.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::failure::SignFailure;
use vmux_home::sync::lock;
use vmux_home::time::now_ms;

/// Waiting requests listed in a status answer (the count of all of them
/// is `pending_requests`); keeps the answer far below the 256 KiB cap.
pub const MAX_LISTED_WAITING: usize = 16;
/// How many ended requests are remembered.
pub const MAX_FINISHED: usize = 16;
/// Longest text kept per field of a waiting request.
const MAX_FIELD: usize = 120;

pub use vmux_control::agent::{Finished, Outcome, WaitingRequest};

/// The outcome of a signature or certificate request's result.
pub fn outcome_of<T>(result: &Result<T, SignFailure>) -> Outcome {
    use vmux_proto::ErrorCode;
    match result {
        Ok(_) => Outcome::Answered,
        Err(SignFailure::Signer(ErrorCode::UserDenied)) => Outcome::Denied,
        Err(SignFailure::Signer(ErrorCode::ApprovalTimeout) | SignFailure::TimedOut) => {
            Outcome::Unanswered
        }
        Err(_) => Outcome::Failed,
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    waiting: Vec<WaitingRequest>,
    finished: VecDeque<Finished>,
}

/// The waiting requests, the ended ones, and the change counter.
pub(crate) struct Board {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            inner: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }
}

/// `s` without control characters, cut to [`MAX_FIELD`] characters.
fn field(s: &str) -> String {
    vmux_proto::sanitize(s).chars().take(MAX_FIELD).collect()
}

impl Board {
    /// Something that `status` shows changed.
    pub(crate) fn touch(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The change counter, to wait on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Lists `request` as waiting until the returned entry is finished
    /// or dropped (dropped unfinished: it ended as
    /// [`Outcome::Failed`], e.g. its client went away).
    pub(crate) fn begin(&self, mut request: WaitingRequest) -> Entry<'_> {
        request.key = field(&request.key);
        request.signer = field(&request.signer);
        request.host = field(&request.host);
        request.user = field(&request.user);
        request.process = field(&request.process);
        request.namespace = field(&request.namespace);
        request.since_ms = now_ms();
        let id = {
            let mut inner = lock(&self.inner);
            inner.next_id += 1;
            request.id = inner.next_id;
            let id = request.id;
            inner.waiting.push(request);
            id
        };
        self.touch();
        Entry {
            board: self,
            id,
            done: false,
        }
    }

    fn end(&self, id: u64, outcome: Outcome, reason: String) {
        {
            let mut inner = lock(&self.inner);
            let Some(i) = inner.waiting.iter().position(|w| w.id == id) else {
                return;
            };
            let w = inner.waiting.remove(i);
            if inner.finished.len() == MAX_FINISHED {
                inner.finished.pop_front();
            }
            inner.finished.push_back(Finished {
                id,
                signer: w.signer,
                outcome,
                reason,
            });
        }
        self.touch();
    }

    /// The first [`MAX_LISTED_WAITING`] waiting requests (oldest first)
    /// and the last ended ones.
    pub(crate) fn snapshot(&self) -> (Vec<WaitingRequest>, Vec<Finished>) {
        let inner = lock(&self.inner);
        (
            inner
                .waiting
                .iter()
                .take(MAX_LISTED_WAITING)
                .cloned()
                .collect(),
            inner.finished.iter().cloned().collect(),
        )
    }
}

/// A request listed as waiting; finish it with its result.
pub(crate) struct Entry<'a> {
    board: &'a Board,
    id: u64,
    done: bool,
}

impl Entry<'_> {
    /// The request ended with `result`.
    pub(crate) fn finish<T>(mut self, result: &Result<T, SignFailure>) {
        self.done = true;
        let reason = match result {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        self.board.end(self.id, outcome_of(result), reason);
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.board
                .end(self.id, Outcome::Failed, "the client went away".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str) -> WaitingRequest {
        WaitingRequest {
            id: 0,
            kind: vmux_proto::DecisionKind::Sign,
            signer: "pi".into(),
            key: "work".into(),
            host: host.into(),
            user: "anna".into(),
            process: "ssh".into(),
            namespace: String::new(),
            since_ms: 0,
        }
    }

    #[test]
    fn entries_list_while_they_wait_and_record_how_they_ended() {
        let board = Board::default();
        let changes = board.subscribe();
        let a = board.begin(request("a\x1b[2J"));
        let b = board.begin(request("b"));
        let (waiting, finished) = board.snapshot();
        assert_eq!(waiting.len(), 2);
        assert_eq!(waiting[0].host, "a?[2J", "control characters replaced");
        assert!(finished.is_empty());
        a.finish::<()>(&Err(SignFailure::Signer(vmux_proto::ErrorCode::UserDenied)));
        drop(b);
        let (waiting, finished) = board.snapshot();
        assert!(waiting.is_empty());
        assert_eq!(
            finished.iter().map(|f| f.outcome).collect::<Vec<_>>(),
            [Outcome::Denied, Outcome::Failed]
        );
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow(), 4, "two begins, two ends");
    }

    #[test]
    fn only_the_last_ended_requests_are_kept() {
        let board = Board::default();
        for _ in 0..3 * MAX_FINISHED {
            board.begin(request("h")).finish(&Ok(()));
        }
        let (_, finished) = board.snapshot();
        assert_eq!(finished.len(), MAX_FINISHED);
        assert_eq!(finished.last().unwrap().id, 3 * MAX_FINISHED as u64);
        assert_eq!(
            outcome_of::<()>(&Err(SignFailure::TimedOut)),
            Outcome::Unanswered
        );
    }
}
