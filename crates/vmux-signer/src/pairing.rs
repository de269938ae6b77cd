//! Deciding on pairings: the signer's [`PairingGate`].
//!
//! Anyone who reaches the signer's port can ask to pair, so asking the
//! person is rationed: at most one pairing prompt is open at a time, and
//! at most [`MAX_PAIRING_PROMPTS`] start per [`PAIRING_PERIOD`]; both are
//! counted when a prompt *starts*, and an attempt over either limit is
//! refused at once, never queued. A paired agent's request withdraws an
//! open pairing prompt ([`PairingSlot::withdraw`]), so an unpaired
//! stranger can never make the owner's own requests wait for the
//! approver's turn. A prompt's deadline starts when its request arrives.
//!
//! The owner may also confirm the open prompt through the signer's
//! owner-only control socket ([`PairingSlot::confirm`], what `vmux setup`
//! does when agent and signer run on the same machine): only with the
//! code the prompt shows, so a confirmation meant for one agent never
//! pins another that asked meanwhile.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{info, warn};
use vmux_link::{PairingGate, PairingRequest, StaticKey};
use vmux_proto::ErrorCode;

use crate::approver::{Approver, Decision, PairDecision, Source, Verdict};
use crate::audit::{AuditLog, Entry, Outcome};
use crate::paired::PairedAgents;

/// Pairing prompts that may start per [`PAIRING_PERIOD`].
pub(crate) const MAX_PAIRING_PROMPTS: usize = 5;
/// The period over which started pairing prompts are counted.
pub(crate) const PAIRING_PERIOD: Duration = Duration::from_secs(60);

/// Why a pairing is refused before anyone is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Another pairing prompt is open.
    PromptOpen,
    /// [`MAX_PAIRING_PROMPTS`] started in the last [`PAIRING_PERIOD`].
    RateExceeded,
}

/// The pairing prompt that is open, as the control socket shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPairing {
    /// The agent's display name (its claim).
    pub agent_name: String,
    /// The agent's id, from its static key.
    pub agent_id: String,
    /// The 6-digit code both sides show.
    pub code: String,
}

/// One open prompt: what it asks, and its two signals.
struct OpenPrompt {
    /// A paired agent's request withdraws it.
    withdrawn: Arc<Notify>,
    /// The owner confirmed it at the control socket.
    confirmed: Arc<Notify>,
    pending: PendingPairing,
}

#[derive(Default)]
struct SlotState {
    /// The open prompt, if one is open.
    open: Option<OpenPrompt>,
    /// When recent prompts started.
    started: VecDeque<Instant>,
}

/// The one pairing prompt that may be open, and the rate of prompts.
#[derive(Default)]
pub(crate) struct PairingSlot {
    state: Mutex<SlotState>,
}

/// Holding this is having the one open pairing prompt; dropping it frees
/// the slot. Only [`PairingSlot::take`] makes one.
pub(crate) struct PromptTurn<'a> {
    slot: &'a PairingSlot,
    withdrawn: Arc<Notify>,
    confirmed: Arc<Notify>,
}

impl Drop for PromptTurn<'_> {
    fn drop(&mut self) {
        let mut s = self.slot.lock();
        if s.open
            .as_ref()
            .is_some_and(|o| Arc::ptr_eq(&o.withdrawn, &self.withdrawn))
        {
            s.open = None;
        }
    }
}

impl PairingSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        vmux_home::sync::lock(&self.state)
    }

    /// Takes the prompt slot now, counting the prompt as started, or says
    /// why not.
    fn take(&self, now: Instant, pending: PendingPairing) -> Result<PromptTurn<'_>, Busy> {
        let mut s = self.lock();
        if s.open.is_some() {
            return Err(Busy::PromptOpen);
        }
        while s
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= PAIRING_PERIOD)
        {
            s.started.pop_front();
        }
        if s.started.len() >= MAX_PAIRING_PROMPTS {
            return Err(Busy::RateExceeded);
        }
        s.started.push_back(now);
        let withdrawn = Arc::new(Notify::new());
        let confirmed = Arc::new(Notify::new());
        s.open = Some(OpenPrompt {
            withdrawn: withdrawn.clone(),
            confirmed: confirmed.clone(),
            pending,
        });
        Ok(PromptTurn {
            slot: self,
            withdrawn,
            confirmed,
        })
    }

    /// The open pairing prompt, if any.
    pub fn pending(&self) -> Option<PendingPairing> {
        self.lock().open.as_ref().map(|o| o.pending.clone())
    }

    /// The owner confirms the open prompt whose code is `code` (what the
    /// agent shows too): it is approved as if the person had approved it
    /// at the approver. False when no prompt is open or its code differs.
    pub fn confirm(&self, code: &str) -> bool {
        match &self.lock().open {
            Some(o) if o.pending.code == code => {
                // A permit, so a prompt not yet waiting sees it too.
                o.confirmed.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Withdraws the open pairing prompt, if any: a paired agent's request
    /// goes first.
    pub(crate) fn withdraw(&self) {
        if let Some(o) = &self.lock().open {
            // `notify_one` keeps a permit, so a prompt that has not yet
            // started waiting is withdrawn too.
            o.withdrawn.notify_one();
        }
    }
}

/// The signer's [`PairingGate`]: the paired-agents state and the
/// approver, with prompts rationed as the module says.
pub(crate) struct Gate<'a, A> {
    /// Who is paired; approved agents are added here.
    pub(crate) paired: &'a PairedAgents,
    /// Who decides.
    pub(crate) approver: &'a A,
    /// How long the person may take.
    pub(crate) approval_timeout: Duration,
    /// The one prompt and the rate.
    pub(crate) slot: &'a PairingSlot,
    /// Where pairing decisions are recorded.
    pub(crate) audit: Option<&'a AuditLog>,
}

impl<A: Approver + 'static> PairingGate for Gate<'_, A> {
    fn is_paired(&self, agent: &StaticKey) -> bool {
        self.paired.contains(agent)
    }

    async fn approve(&self, request: PairingRequest) -> Result<(), ErrorCode> {
        // The deadline starts now, when the request arrives.
        let arrived = Instant::now();
        let d = Decision::Pair(PairDecision {
            source: Source {
                name: request.agent.name.clone(),
                id: request.agent.id.clone(),
            },
            code: request.code.clone(),
        });
        if self.paired.is_revoked(&request.agent.static_key) {
            info!(agent = %request.agent.id, "an unpaired agent tried to pair again; refused without asking");
            self.record(&d, Err(ErrorCode::PairingInvalid), None);
            return Err(ErrorCode::PairingInvalid);
        }
        let pending = PendingPairing {
            agent_name: request.agent.name.clone(),
            agent_id: request.agent.id.clone(),
            code: request.code.clone(),
        };
        let turn = match self.slot.take(arrived, pending) {
            Ok(t) => t,
            Err(Busy::PromptOpen) => {
                warn!(agent = %request.agent.id, "another pairing prompt is open; refused without asking");
                return Err(ErrorCode::PairingInvalid);
            }
            Err(Busy::RateExceeded) => {
                warn!(agent = %request.agent.id, "too many pairing prompts in the last minute; refused without asking");
                return Err(ErrorCode::PairingInvalid);
            }
        };
        let (outcome, by) = self.ask(&request, &d, &turn, arrived).await;
        drop(turn);
        self.record(&d, outcome, by);
        outcome
    }
}

impl<A: Approver + 'static> Gate<'_, A> {
    fn record(&self, d: &Decision, outcome: Result<(), ErrorCode>, by: Option<String>) {
        if let Some(log) = self.audit {
            let entry = match outcome {
                Ok(()) => Entry::new(d, Outcome::Approved, None),
                Err(code) => Entry::new(d, Outcome::Refused, Some(code)),
            };
            log.record(entry.decided_by(by));
        }
    }

    async fn ask(
        &self,
        request: &PairingRequest,
        d: &Decision,
        turn: &PromptTurn<'_>,
        arrived: Instant,
    ) -> (Result<(), ErrorCode>, Option<String>) {
        info!(agent = %request.agent.name, id = %request.agent.id, code = %request.code, "pairing requested");
        let timeout = self.approval_timeout.saturating_sub(arrived.elapsed());
        let (verdict, by) = tokio::select! {
            v = self.approver.decide_attributed(d, timeout) => v,
            _ = turn.confirmed.notified() => {
                info!(agent = %request.agent.id, "pairing confirmed by the owner at the control socket");
                // No phone decided it: the audit log names none, as for
                // the terminal approver.
                (Verdict::Approve, None)
            }
            _ = turn.withdrawn.notified() => {
                info!(agent = %request.agent.id, "pairing prompt withdrawn: a paired agent's request goes first");
                return (Err(ErrorCode::ApprovalTimeout), None);
            }
        };
        (self.settle(request, verdict), by)
    }

    /// Pins the agent if the person approved.
    fn settle(&self, request: &PairingRequest, verdict: Verdict) -> Result<(), ErrorCode> {
        match verdict {
            Verdict::Approve | Verdict::ApproveFor(_) => {
                self.paired
                    .add(
                        &request.agent.id,
                        &request.agent.name,
                        &request.agent.static_key,
                    )
                    .map_err(|e| {
                        warn!(error = %e, "cannot save the pairing");
                        ErrorCode::Internal
                    })?;
                info!(agent = %request.agent.name, id = %request.agent.id, "agent paired");
                Ok(())
            }
            Verdict::Deny => {
                info!(agent = %request.agent.name, id = %request.agent.id, "pairing denied");
                Err(ErrorCode::UserDenied)
            }
            Verdict::TimedOut => Err(ErrorCode::ApprovalTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(code: &str) -> PendingPairing {
        PendingPairing {
            agent_name: "laptop".into(),
            agent_id: "id".into(),
            code: code.into(),
        }
    }

    #[tokio::test]
    async fn only_the_open_prompts_code_confirms_it() {
        let slot = PairingSlot::default();
        assert!(!slot.confirm("123456"), "no prompt is open");
        let turn = slot.take(Instant::now(), pending("123456")).unwrap();
        assert_eq!(slot.pending().map(|p| p.code), Some("123456".into()));
        assert!(!slot.confirm("654321"));
        assert!(!slot.confirm(""));
        assert!(slot.confirm("123456"));
        tokio::time::timeout(Duration::from_secs(5), turn.confirmed.notified())
            .await
            .expect("confirmed");
        drop(turn);
        assert_eq!(slot.pending(), None);
        assert!(!slot.confirm("123456"), "the prompt is closed");
    }

    #[test]
    fn one_prompt_at_a_time_counted_when_it_starts() {
        let slot = PairingSlot::default();
        let t0 = Instant::now();
        let first = slot.take(t0, pending("111111")).expect("first prompt");
        assert_eq!(slot.take(t0, pending("2")).err(), Some(Busy::PromptOpen));
        drop(first);
        for _ in 1..MAX_PAIRING_PROMPTS {
            drop(slot.take(t0, pending("3")).expect("within the rate"));
        }
        assert_eq!(slot.take(t0, pending("4")).err(), Some(Busy::RateExceeded));
        assert!(slot.take(t0 + PAIRING_PERIOD, pending("5")).is_ok());
    }

    #[tokio::test]
    async fn withdrawing_reaches_a_prompt_that_has_not_started_waiting() {
        let slot = PairingSlot::default();
        let turn = slot.take(Instant::now(), pending("123456")).unwrap();
        slot.withdraw();
        tokio::time::timeout(Duration::from_secs(5), turn.withdrawn.notified())
            .await
            .expect("withdrawn");
    }
}
