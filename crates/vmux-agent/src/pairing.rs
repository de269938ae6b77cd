//! Pairing is accepted on the agent's side too: which addresses the agent
//! may pair with ([`PairingPermit`]s come only from [`Pairings::permit`]),
//! and the pairings that wait for this agent's user to confirm the code
//! (on the agent's terminal or with `vmux agent pair --confirm CODE`).
//! A pairing nobody confirms within [`CONFIRM_TIMEOUT`] is refused and
//! nothing is pinned.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use vmux_link::{AgentAnswer, PairingPermit};

use vmux_home::sync::lock;

/// How long a pairing waits for this agent's user to confirm its code.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(300);

struct Waiting {
    ticket: u64,
    address: String,
    code: String,
    signer_approved: bool,
    answer: Option<oneshot::Sender<AgentAnswer>>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    waiting: Vec<Waiting>,
    /// Addresses the user asked to pair with (`--signer` before anything
    /// was pinned, `vmux agent pair --signer`).
    asked: HashSet<String>,
    /// Addresses whose pairing this agent's user refused (or let time
    /// out): not paired again until asked.
    refused: HashSet<String>,
}

/// The agent's pairing permissions and pending confirmations.
#[derive(Default)]
pub(crate) struct Pairings {
    inner: Mutex<Inner>,
    terminal: std::sync::atomic::AtomicBool,
}

/// A pairing that waits for confirmation; dropping it withdraws it.
pub(crate) struct Ticket<'a> {
    pairings: &'a Pairings,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        lock(&self.pairings.inner)
            .waiting
            .retain(|w| w.ticket != self.id);
    }
}

impl Ticket<'_> {
    /// The signer's person approved; only this agent's user is awaited.
    pub(crate) fn signer_approved(&self) {
        if let Some(w) = lock(&self.pairings.inner)
            .waiting
            .iter_mut()
            .find(|w| w.ticket == self.id)
        {
            w.signer_approved = true;
        }
    }
}

/// What `vmux agent pair --confirm CODE` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// The pairing at this address has this code and is confirmed.
    Matched(String),
    /// No waiting pairing has this code; the waiting ones were refused.
    Mismatch(usize),
    /// No pairing is waiting.
    NoneWaiting,
}

impl Pairings {
    /// This agent's user can type codes on its terminal.
    pub(crate) fn set_terminal(&self) {
        self.terminal
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether codes can be typed on the agent's terminal.
    pub(crate) fn terminal(&self) -> bool {
        self.terminal.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The user asked to pair with the signer at `address`.
    pub(crate) fn ask(&self, address: &str) {
        let mut i = lock(&self.inner);
        i.asked.insert(address.to_owned());
        i.refused.remove(address);
    }

    /// Whether the user asked to pair with `address`.
    pub(crate) fn asked(&self, address: &str) -> bool {
        lock(&self.inner).asked.contains(address)
    }

    /// Whether the agent may pair with an unpinned signer at `address`,
    /// given how many signers are pinned: never by itself once one is
    /// pinned, and never again at an address whose pairing its user
    /// refused, until asked.
    pub(crate) fn permit(&self, address: &str, pinned: usize) -> Option<PairingPermit> {
        let i = lock(&self.inner);
        let asked = i.asked.contains(address);
        if i.refused.contains(address) && !asked {
            return None;
        }
        PairingPermit::check(pinned, asked)
    }

    /// The pairing at `address` pinned a signer: the user's request is
    /// used up.
    pub(crate) fn paired(&self, address: &str) {
        let mut i = lock(&self.inner);
        i.asked.remove(address);
        i.refused.remove(address);
    }

    /// This agent's user refused the pairing at `address` (or did not
    /// answer): not again until asked.
    pub(crate) fn refused_here(&self, address: &str) {
        let mut i = lock(&self.inner);
        i.asked.remove(address);
        i.refused.insert(address.to_owned());
    }

    /// Registers a pairing showing `code`; the future resolves with the
    /// user's answer, or [`AgentAnswer::Refused`] after
    /// [`CONFIRM_TIMEOUT`].
    pub(crate) fn begin(
        &self,
        address: &str,
        code: &str,
    ) -> (Ticket<'_>, impl Future<Output = AgentAnswer> + 'static) {
        let (tx, rx) = oneshot::channel();
        let mut i = lock(&self.inner);
        i.next += 1;
        let id = i.next;
        i.waiting.push(Waiting {
            ticket: id,
            address: address.to_owned(),
            code: code.to_owned(),
            signer_approved: false,
            answer: Some(tx),
        });
        let answer = async move {
            match tokio::time::timeout(CONFIRM_TIMEOUT, rx).await {
                Ok(Ok(a)) => a,
                _ => AgentAnswer::Refused,
            }
        };
        (Ticket { pairings: self, id }, answer)
    }

    /// The user typed `typed`: it confirms the waiting pairing with that
    /// code; if none has it, every waiting pairing is refused (one of them
    /// may be an impostor's, and retrying is cheap).
    pub(crate) fn confirm(&self, typed: &str) -> Confirmed {
        let typed = typed.trim();
        let mut i = lock(&self.inner);
        let open: Vec<&mut Waiting> = i
            .waiting
            .iter_mut()
            .filter(|w| w.answer.is_some())
            .collect();
        if open.is_empty() {
            return Confirmed::NoneWaiting;
        }
        let n = open.len();
        for w in open {
            if w.code == typed {
                if let Some(tx) = w.answer.take() {
                    let _ = tx.send(AgentAnswer::Typed(typed.to_owned()));
                }
                return Confirmed::Matched(w.address.clone());
            }
        }
        for w in i.waiting.iter_mut() {
            if let Some(tx) = w.answer.take() {
                let _ = tx.send(AgentAnswer::Typed(typed.to_owned()));
            }
        }
        Confirmed::Mismatch(n)
    }

    /// The user refused every waiting pairing; returns how many.
    pub(crate) fn deny(&self) -> usize {
        let mut i = lock(&self.inner);
        let mut n = 0;
        for w in i.waiting.iter_mut() {
            if let Some(tx) = w.answer.take() {
                let _ = tx.send(AgentAnswer::Refused);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_follow_pins_requests_and_refusals() {
        let p = Pairings::default();
        assert!(p.permit("a:1", 0).is_some(), "nothing pinned: may pair");
        assert!(p.permit("a:1", 1).is_none(), "pinned: never by itself");
        p.ask("a:1");
        assert!(p.permit("a:1", 1).is_some(), "asked by the user");
        p.refused_here("a:1");
        assert!(p.permit("a:1", 0).is_none(), "refused here: not again");
        p.ask("a:1");
        assert!(p.permit("a:1", 3).is_some());
        p.paired("a:1");
        assert!(p.permit("a:1", 1).is_none(), "a request is used once");
    }

    #[tokio::test]
    async fn a_wrong_code_refuses_and_the_right_one_confirms() {
        let p = Pairings::default();
        assert_eq!(p.confirm("123456"), Confirmed::NoneWaiting);
        let (_t, answer) = p.begin("a:1", "123456");
        assert_eq!(p.confirm("000000"), Confirmed::Mismatch(1));
        assert_eq!(answer.await, AgentAnswer::Typed("000000".into()));
        let (_t2, answer) = p.begin("b:2", "654321");
        assert_eq!(p.confirm(" 654321\n"), Confirmed::Matched("b:2".into()));
        assert_eq!(answer.await, AgentAnswer::Typed("654321".into()));
        let (t3, answer) = p.begin("c:3", "111111");
        assert_eq!(p.deny(), 1);
        assert_eq!(answer.await, AgentAnswer::Refused);
        drop(t3);
        assert_eq!(p.confirm("111111"), Confirmed::NoneWaiting);
    }
}
