//! The desk: decisions waiting for a phone. The signer puts an [`Ask`] on
//! it and waits; every signed-in page sees it as a card; it leaves the
//! desk when a phone decides, when its time is up, or when the signer
//! stops waiting (the agent gave up). Only a [`PhoneApproval`], which
//! only [`check_approval`] makes, approves.

use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use vmux_home::sync::lock;
use vmux_proto::DecisionKind;
use vmux_webauthn::{
    burst_challenge, verify_assertion, ApprovalRequest, AssertionResponse, RelyingParty,
    UserVerification, VerifiedAssertion,
};

use crate::book::PhoneBook;
use crate::session::SignedIn;

/// Decisions waiting at once; more are refused (the signer's own bounds
/// keep far fewer in flight).
pub const MAX_PENDING: usize = 512;

/// An approval window a phone may grant with its approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowOffer {
    /// How long, seconds.
    pub seconds: u64,
    /// What the person reads next to the checkbox.
    pub label: String,
}

impl WindowOffer {
    /// The window's canonical text in the approval challenge.
    fn canonical(&self) -> String {
        format!(
            "same-host-key,same-user,same-key,same-executable,{}",
            self.seconds
        )
    }
}

/// The first lines of a card, built by the signer from the decision's
/// structured fields (never by parsing its summary), every peer-chosen
/// part stripped of control characters: what a person reads at a glance,
/// and what a notification says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Headline {
    /// The sentence: "laptop wants to log in to devbox as root".
    pub text: String,
    /// The same as a question, a notification's title: "Log in to devbox
    /// as root?".
    pub question: String,
    /// The asking agent's name ("laptop").
    pub agent: String,
    /// The key's name ("work"); empty when none.
    pub key: String,
    /// The requesting program's name ("ssh"), never its command line;
    /// empty when unknown.
    pub program: String,
    /// What must stand out (a forwarded agent, an unverified host, a
    /// verified one), each shown in its colour and in its words.
    pub marks: Vec<Mark>,
}

/// A word on a card that stands out, by colour and by what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    /// How it is shown.
    pub level: MarkLevel,
    /// What it says.
    pub text: String,
}

/// How a [`Mark`] is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkLevel {
    /// A fact that reassures (a verified host key).
    Ok,
    /// Something to look at twice (an unverified host).
    Warn,
    /// Something to approve only if expected (a forwarded agent).
    Danger,
    /// What approving does (signs with this phone's passkey).
    Info,
}

impl Mark {
    /// A mark of `level` saying `text`.
    pub fn new(level: MarkLevel, text: impl Into<String>) -> Mark {
        Mark {
            level,
            text: text.into(),
        }
    }
}

/// What a phone's passkey signs to approve a card.
#[derive(Clone, PartialEq, Eq)]
pub enum ChallengeKind {
    /// The approval challenge (`vmux_webauthn::ApprovalRequest`) of the
    /// card: 32 bytes under a fixed label, which approve the decision.
    Approval,
    /// Exactly these bytes (the data an SSH signature is asked for, by
    /// the phone's own passkey key): the assertion *is* the signature, so
    /// no window is ever offered with it. Never shown or logged.
    Data(Vec<u8>),
}

impl std::fmt::Debug for ChallengeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChallengeKind::Approval => f.write_str("Approval"),
            ChallengeKind::Data(d) => write!(f, "Data({} bytes)", d.len()),
        }
    }
}

/// A decision the signer asks the phones to take. Text is shown as text
/// (the page never renders it as HTML); the signer strips control and
/// invisible characters before it gets here.
#[derive(Clone)]
pub struct Ask {
    /// Its kind.
    pub kind: DecisionKind,
    /// The asking agent's id.
    pub agent_id: String,
    /// The card's title.
    pub title: String,
    /// What the card says first, and the notification says.
    pub headline: Headline,
    /// One line saying all of it.
    pub summary: String,
    /// Labelled facts, in order.
    pub facts: Vec<(String, String)>,
    /// The request came through a forwarded agent.
    pub forwarded: bool,
    /// The pairing code, for a pairing.
    pub code: Option<String>,
    /// The key's fingerprint (empty when none).
    pub key_fingerprint: String,
    /// The data to sign, or the certificate's or pairing's body: bound
    /// into the approval challenge, never shown or logged.
    pub body: Vec<u8>,
    /// The approval window a phone may grant, if the signer offers one
    /// (never with [`ChallengeKind::Data`]).
    pub window: Option<WindowOffer>,
    /// What the passkey signs to approve.
    pub challenge: ChallengeKind,
    /// Only this phone sees, approves or denies the card (a request for
    /// its own passkey key); `None`: every signed-in phone.
    pub only_phone: Option<String>,
}

impl std::fmt::Debug for Ask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ask")
            .field("kind", &self.kind)
            .field("agent_id", &self.agent_id)
            .field("summary", &self.summary)
            .field("body_len", &self.body.len())
            .field("challenge", &self.challenge)
            .field("only_phone", &self.only_phone)
            .finish_non_exhaustive()
    }
}

/// How a decision ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A phone approved with a passkey assertion over this request.
    Approved {
        /// The phone that approved.
        phone: String,
        /// The approval window it granted, seconds.
        window: Option<u64>,
        /// For a [`ChallengeKind::Data`] card: the verified assertion over
        /// exactly that data, which the signer turns into the SSH
        /// signature.
        signature: Option<DataAssertion>,
    },
    /// A signed-in phone denied.
    Denied {
        /// The phone that denied.
        phone: String,
    },
    /// Nobody decided in time.
    TimedOut,
    /// The desk was full.
    Refused,
}

/// A phone's verified assertion over exactly the data of a
/// [`ChallengeKind::Data`] card (the phone that made it is in
/// [`Answer::Approved`]). Made only by [`check_approval`]; its `Debug`
/// shows no bytes.
#[derive(Debug, Clone)]
pub struct DataAssertion(Box<VerifiedAssertion>);

impl DataAssertion {
    /// The assertion: its challenge is the card's data.
    pub fn assertion(&self) -> &VerifiedAssertion {
        &self.0
    }
}

impl PartialEq for DataAssertion {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.credential_id() == b.credential_id()
            && a.authenticator_data() == b.authenticator_data()
            && a.client_data_json() == b.client_data_json()
            && a.signature() == b.signature()
    }
}

impl Eq for DataAssertion {}

/// A phone's approval of several pending requests of one agent with one
/// assertion ("Approve all N"): made only by [`check_burst`], after the
/// assertion over [`vmux_webauthn::burst_challenge`] of exactly these
/// requests, in this order, verified.
#[derive(Debug)]
pub struct BurstApproval {
    requests: Vec<String>,
    phone: String,
}

/// A phone's approval of one pending request: made only by
/// [`check_approval`], after the assertion verified.
#[derive(Debug)]
pub struct PhoneApproval {
    request: String,
    phone: String,
    window: bool,
    signature: Option<DataAssertion>,
}

struct Pending {
    id: String,
    ask: Ask,
    expires_at_ms: u64,
    challenge: Vec<u8>,
    window_challenge: Option<[u8; 32]>,
    answer: oneshot::Sender<Answer>,
}

impl Pending {
    /// Whether `phone` may see and decide it.
    fn for_phone(&self, phone: &str) -> bool {
        self.ask.only_phone.as_deref().is_none_or(|p| p == phone)
    }

    /// Its once-only approval challenge, for a card approved by one
    /// (not a passkey's own signature).
    fn approval(&self) -> Option<[u8; 32]> {
        match self.ask.challenge {
            ChallengeKind::Approval => self.challenge.as_slice().try_into().ok(),
            ChallengeKind::Data(_) => None,
        }
    }

    /// Whether a burst may hold it: a sign or certificate request, approved
    /// by an approval challenge, not through a forwarded agent (a remote
    /// host could slip one into a burst of the person's own logins: each
    /// is tapped on its own), not expired.
    fn burstable(&self, now_ms: u64) -> bool {
        self.ask.kind != DecisionKind::Pair
            && !self.ask.forwarded
            && self.approval().is_some()
            && self.expires_at_ms > now_ms
    }
}

/// Decisions waiting for a phone.
pub struct Desk {
    pending: Mutex<Vec<Pending>>,
    changed: watch::Sender<u64>,
}

impl Default for Desk {
    fn default() -> Self {
        Desk {
            pending: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
        }
    }
}

/// Takes a decision off the desk when its asker stops waiting.
struct Leave<'a> {
    desk: &'a Desk,
    id: String,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.desk.take(&self.id);
    }
}

impl Desk {
    /// Puts `ask` on the desk and waits at most `timeout` for a phone.
    /// Dropping the future takes the card away.
    pub async fn ask(&self, ask: Ask, timeout: Duration) -> Answer {
        let id = B64URL.encode(rand::random::<[u8; 16]>());
        let (tx, rx) = oneshot::channel();
        let (challenge, window_challenge) = match &ask.challenge {
            ChallengeKind::Approval => (
                challenge(&ask, &id, None).to_vec(),
                ask.window
                    .as_ref()
                    .map(|w| self::challenge(&ask, &id, Some(w))),
            ),
            ChallengeKind::Data(data) => (data.clone(), None),
        };
        let kind = ask.kind.as_str();
        let waiting = {
            let mut p = lock(&self.pending);
            if p.len() >= MAX_PENDING {
                return Answer::Refused;
            }
            p.push(Pending {
                id: id.clone(),
                expires_at_ms: vmux_home::time::now_ms().saturating_add(timeout.as_millis() as u64),
                ask,
                challenge,
                window_challenge,
                answer: tx,
            });
            p.len()
        };
        tracing::info!(kind, waiting, "a request waits for a phone");
        self.changed.send_modify(|v| *v += 1);
        let _leave = Leave { desk: self, id };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            _ => Answer::TimedOut,
        }
    }

    /// Removes a pending decision; returns its answer channel.
    fn take(&self, id: &str) -> Option<Pending> {
        let taken = {
            let mut p = lock(&self.pending);
            let i = p.iter().position(|x| x.id == id)?;
            p.remove(i)
        };
        self.changed.send_modify(|v| *v += 1);
        Some(taken)
    }

    /// Approves a pending decision. False when it is no longer pending.
    pub fn approve(&self, approval: PhoneApproval) -> bool {
        let Some(p) = self.take(&approval.request) else {
            return false;
        };
        let window = if approval.window {
            p.ask.window.as_ref().map(|w| w.seconds)
        } else {
            None
        };
        p.answer
            .send(Answer::Approved {
                phone: approval.phone,
                window,
                signature: approval.signature,
            })
            .is_ok()
    }

    /// Approves every request of a burst that is still pending; how many.
    pub fn approve_burst(&self, approval: BurstApproval) -> usize {
        let mut n = 0;
        for id in &approval.requests {
            let Some(p) = self.take(id) else { continue };
            let sent = p.answer.send(Answer::Approved {
                phone: approval.phone.clone(),
                window: None,
                signature: None,
            });
            n += usize::from(sent.is_ok());
        }
        n
    }

    /// Denies a pending decision on behalf of a signed-in `phone`. False
    /// when it is no longer pending, or not this phone's to decide.
    pub fn deny(&self, id: &str, phone: &str) -> bool {
        let mine = lock(&self.pending)
            .iter()
            .any(|p| p.id == id && p.for_phone(phone));
        if !mine {
            return false;
        }
        match self.take(id) {
            Some(p) => p
                .answer
                .send(Answer::Denied {
                    phone: phone.to_owned(),
                })
                .is_ok(),
            None => false,
        }
    }

    /// How many decisions wait.
    pub fn len(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that changes whenever a card comes or goes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// What waits, oldest first, as Web Push sees it: no challenge, no
    /// body, no facts, no summary.
    pub(crate) fn waiting(&self) -> Vec<Waiting> {
        lock(&self.pending)
            .iter()
            .map(|p| Waiting {
                id: p.id.clone(),
                agent_id: p.ask.agent_id.clone(),
                headline: p.ask.headline.clone(),
                title: p.ask.title.clone(),
                expires_at_ms: p.expires_at_ms,
                only_phone: p.ask.only_phone.clone(),
            })
            .collect()
    }

    /// The cards `phone`'s page shows, oldest first: those for every
    /// phone and those for it alone. `credential` (base64url) is the
    /// phone's passkey, named on cards only its passkey can approve.
    ///
    /// The oldest card of each agent that has two or more requests a
    /// burst may hold ([`Pending::burstable`]) carries that list and its
    /// challenge ([`CardBurst`]), so the page has both before it shows
    /// **Approve all N**; a request that joins later makes a new list.
    pub fn cards(&self, phone: &str, credential: Option<&str>) -> Vec<Card> {
        let now = vmux_home::time::now_ms();
        let pending = lock(&self.pending);
        let mine: Vec<&Pending> = pending.iter().filter(|p| p.for_phone(phone)).collect();
        let mut cards: Vec<Card> = mine
            .iter()
            .map(|p| Card {
                id: p.id.clone(),
                kind: p.ask.kind,
                title: p.ask.title.clone(),
                headline: p.ask.headline.clone(),
                summary: p.ask.summary.clone(),
                facts: p
                    .ask
                    .facts
                    .iter()
                    .map(|(label, value)| Fact {
                        label: label.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                forwarded: p.ask.forwarded,
                code: p.ask.code.clone(),
                expires_at_ms: p.expires_at_ms,
                challenge: B64URL.encode(&p.challenge),
                credential: match p.ask.challenge {
                    ChallengeKind::Data(_) => credential.map(str::to_owned),
                    ChallengeKind::Approval => None,
                },
                window: match (&p.ask.window, &p.window_challenge) {
                    (Some(w), Some(c)) => Some(CardWindow {
                        label: w.label.clone(),
                        seconds: w.seconds,
                        challenge: B64URL.encode(c),
                    }),
                    _ => None,
                },
                burst: None,
            })
            .collect();
        let mut agents: Vec<&str> = Vec::new();
        for (i, p) in mine.iter().enumerate() {
            if !p.burstable(now) || agents.contains(&p.ask.agent_id.as_str()) {
                continue;
            }
            agents.push(&p.ask.agent_id);
            let group: Vec<&&Pending> = mine[i..]
                .iter()
                .filter(|q| q.burstable(now) && q.ask.agent_id == p.ask.agent_id)
                .collect();
            if group.len() < 2 {
                continue;
            }
            let challenges: Vec<[u8; 32]> = group.iter().filter_map(|q| q.approval()).collect();
            cards[i].burst = Some(CardBurst {
                ids: group.iter().map(|q| q.id.clone()).collect(),
                challenge: B64URL.encode(burst_challenge(&challenges)),
            });
        }
        cards
    }

    /// The challenge `phone` must sign to approve the requests `ids`
    /// together, in this order: each still pending and not expired, one
    /// this phone may decide, a sign or certificate request whose
    /// approval is an approval challenge (never a pairing, whose code the
    /// person compares, a forwarded request, nor a passkey's own
    /// signature), all from one
    /// agent, each once, at least two.
    fn burst_challenge_of(&self, ids: &[String], phone: &str) -> Result<[u8; 32], ApproveError> {
        // No burst is longer than the desk (and the checks below stay small).
        if ids.len() < 2 || ids.len() > MAX_PENDING {
            return Err(ApproveError::NotABurst);
        }
        let now = vmux_home::time::now_ms();
        let pending = lock(&self.pending);
        let mut agent: Option<&str> = None;
        let mut challenges = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(ApproveError::NotABurst);
            }
            let p = pending
                .iter()
                .find(|p| &p.id == id)
                .filter(|p| p.expires_at_ms > now)
                .ok_or(ApproveError::NotPending)?;
            if !p.for_phone(phone) {
                return Err(ApproveError::NotThisPhones);
            }
            let c = p
                .burstable(now)
                .then(|| p.approval())
                .flatten()
                .ok_or(ApproveError::NotABurst)?;
            if *agent.get_or_insert(&p.ask.agent_id) != p.ask.agent_id {
                return Err(ApproveError::NotABurst);
            }
            challenges.push(c);
        }
        Ok(burst_challenge(&challenges))
    }

    /// The challenge `phone` must sign to approve `id` (with its window
    /// or not), and whether it is a data card.
    fn challenge_of(
        &self,
        id: &str,
        phone: &str,
        window: bool,
    ) -> Result<(Vec<u8>, bool), ApproveError> {
        let p = lock(&self.pending);
        let p = p
            .iter()
            .find(|p| p.id == id)
            .ok_or(ApproveError::NotPending)?;
        if !p.for_phone(phone) {
            return Err(ApproveError::NotThisPhones);
        }
        let data = matches!(p.ask.challenge, ChallengeKind::Data(_));
        if window {
            p.window_challenge
                .map(|c| (c.to_vec(), data))
                .ok_or(ApproveError::NoWindowOffered)
        } else {
            Ok((p.challenge.clone(), data))
        }
    }
}

/// The challenge a phone signs to approve `ask` (request `id`), once or
/// with the window offered: `vmux_webauthn::ApprovalRequest` over the
/// card's kind, id, agent, key, body and the window's canonical text.
fn challenge(ask: &Ask, id: &str, window: Option<&WindowOffer>) -> [u8; 32] {
    ApprovalRequest {
        kind: ask.kind.as_str(),
        request_id: id,
        agent_id: &ask.agent_id,
        key_fingerprint: &ask.key_fingerprint,
        body: &ask.body,
        window: &window.map(WindowOffer::canonical).unwrap_or_default(),
    }
    .challenge()
}

/// A waiting decision as a push announces it.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub id: String,
    pub agent_id: String,
    pub headline: Headline,
    pub title: String,
    pub expires_at_ms: u64,
    pub only_phone: Option<String>,
}

impl Waiting {
    /// Whether `phone` may see and decide it.
    pub fn for_phone(&self, phone: &str) -> bool {
        self.only_phone.as_deref().is_none_or(|p| p == phone)
    }
}

/// A card as the page receives it.
#[derive(Debug, Clone, Serialize)]
pub struct Card {
    /// The request's id on this signer.
    pub id: String,
    /// Its kind.
    pub kind: DecisionKind,
    /// Title.
    pub title: String,
    /// What the card says first.
    pub headline: Headline,
    /// Summary line.
    pub summary: String,
    /// Labelled facts.
    pub facts: Vec<Fact>,
    /// Through a forwarded agent.
    pub forwarded: bool,
    /// Pairing code.
    pub code: Option<String>,
    /// When the signer stops waiting, Unix milliseconds.
    pub expires_at_ms: u64,
    /// The challenge to approve this request once (base64url): the
    /// approval challenge, or for a request for the phone's own passkey
    /// key the exact data to sign.
    pub challenge: String,
    /// The passkey that must sign (base64url credential id), on a card
    /// only one phone's passkey can approve; else `None`.
    pub credential: Option<String>,
    /// The window offer, with its own challenge.
    pub window: Option<CardWindow>,
    /// On the oldest card of an agent with several requests waiting: the
    /// list **Approve all N** approves, and its challenge.
    pub burst: Option<CardBurst>,
}

/// Several waiting requests of one agent that one assertion approves.
#[derive(Debug, Clone, Serialize)]
pub struct CardBurst {
    /// The requests' ids, oldest first: the order the challenge binds.
    pub ids: Vec<String>,
    /// [`vmux_webauthn::burst_challenge`] of their approval challenges
    /// (base64url).
    pub challenge: String,
}

/// A labelled fact on a card.
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    /// Label.
    pub label: String,
    /// Value.
    pub value: String,
}

/// A window offer on a card.
#[derive(Debug, Clone, Serialize)]
pub struct CardWindow {
    /// What the person reads.
    pub label: String,
    /// How long.
    pub seconds: u64,
    /// The challenge that approves with this window (base64url).
    pub challenge: String,
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    /// The request is no longer pending (decided, expired, withdrawn).
    #[error("this request is no longer waiting (decided elsewhere, expired, or withdrawn)")]
    NotPending,
    /// A window was asked for where none is offered.
    #[error("no approval window is offered for this request")]
    NoWindowOffered,
    /// The credential is not an enrolled phone's, or not this session's.
    #[error("that passkey is not this signed-in phone's")]
    WrongPhone,
    /// The request is for another phone's passkey key: only that phone
    /// decides it.
    #[error("this request is another phone's to decide")]
    NotThisPhones,
    /// The assertion did not verify.
    #[error("the passkey assertion was refused: {0}")]
    Assertion(#[from] vmux_webauthn::Error),
    /// The list is not a burst one assertion may approve.
    #[error("these requests cannot be approved together (at least two sign or certificate requests of one agent, none forwarded, each once)")]
    NotABurst,
    /// The phone book could not record the counter.
    #[error("the phone book could not be written")]
    Book,
    /// Another assertion of this passkey with a higher counter was
    /// recorded meanwhile.
    #[error("this passkey's signature counter went backwards; try again")]
    CounterWentBack,
}

/// Checks a phone's assertion over the pending request `id` (with or
/// without its window): the request is one this phone may decide (a card
/// for one phone only is that phone's), the credential is the signed-in
/// phone's, the challenge is that request's (for a data card: exactly the
/// data), the origin and relying party are ours, the user was verified,
/// the counter moved on; the new counter is on disk before the approval
/// exists. The only way to make a [`PhoneApproval`]; for a data card it
/// carries the verified assertion ([`DataAssertion`]).
pub fn check_approval(
    rp: &RelyingParty,
    book: &PhoneBook,
    desk: &Desk,
    signed: &SignedIn,
    id: &str,
    window: bool,
    response: &AssertionResponse<'_>,
) -> Result<PhoneApproval, ApproveError> {
    let (challenge, data) = desk.challenge_of(id, signed.phone(), window)?;
    let assertion = verify_phone(rp, book, signed, &challenge, response)?;
    Ok(PhoneApproval {
        request: id.to_owned(),
        phone: signed.phone().to_owned(),
        window,
        signature: data.then(|| DataAssertion(Box::new(assertion))),
    })
}

/// Checks a phone's assertion over a burst: the requests `ids`, in this
/// order, are a burst this phone may approve (see
/// [`Desk::cards`]: one agent's sign and certificate requests, each still
/// waiting), and the assertion is over their [`burst_challenge`] and
/// passes every check of a single approval ([`check_approval`]: the
/// signed-in phone's credential, origin, relying party, user verified,
/// counter moved on and stored first). The only way to make a
/// [`BurstApproval`].
pub fn check_burst(
    rp: &RelyingParty,
    book: &PhoneBook,
    desk: &Desk,
    signed: &SignedIn,
    ids: &[String],
    response: &AssertionResponse<'_>,
) -> Result<BurstApproval, ApproveError> {
    let challenge = desk.burst_challenge_of(ids, signed.phone())?;
    verify_phone(rp, book, signed, &challenge, response)?;
    Ok(BurstApproval {
        requests: ids.to_vec(),
        phone: signed.phone().to_owned(),
    })
}

/// Verifies an assertion by the signed-in phone's passkey over
/// `challenge` (UV required) and records its counter.
pub(crate) fn verify_phone(
    rp: &RelyingParty,
    book: &PhoneBook,
    signed: &SignedIn,
    challenge: &[u8],
    response: &AssertionResponse<'_>,
) -> Result<VerifiedAssertion, ApproveError> {
    let phone = signed.phone();
    let record = book
        .by_credential(response.credential_id)
        .filter(|r| r.name == phone)
        .ok_or(ApproveError::WrongPhone)?;
    let credential = record.credential().ok_or(ApproveError::WrongPhone)?;
    let assertion = verify_assertion(
        rp,
        &credential,
        challenge,
        response,
        UserVerification::Required,
    )?;
    book.record_use(phone, &assertion, vmux_home::time::now_s())
        .map_err(|e| match e {
            crate::book::BookError::CounterWentBack => ApproveError::CounterWentBack,
            _ => ApproveError::Book,
        })?;
    Ok(assertion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::testing::{enrol, phone as new_phone};
    use crate::session::testing::signed_in;
    use vmux_webauthn::testing::Assertion;

    /// `a` checked as the approval of `id` by `phone`, signed in.
    fn check_as(
        rp: &RelyingParty,
        book: &PhoneBook,
        desk: &Desk,
        phone: &str,
        id: &str,
        window: bool,
        a: &Assertion,
    ) -> Result<PhoneApproval, ApproveError> {
        check_approval(rp, book, desk, &signed_in(phone), id, window, &a.response())
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn ask() -> Ask {
        Ask {
            kind: DecisionKind::Sign,
            agent_id: "0123456789abcdef".into(),
            title: String::new(),
            headline: Headline::default(),
            summary: String::new(),
            facts: Vec::new(),
            forwarded: false,
            code: None,
            key_fingerprint: "SHA256:xyz".into(),
            body: [&12u32.to_be_bytes()[..], b"data to sign"].concat(),
            window: Some(WindowOffer {
                seconds: 3600,
                label: String::new(),
            }),
            challenge: ChallengeKind::Approval,
            only_phone: None,
        }
    }

    #[test]
    fn card_challenge_test_vectors() {
        // docs/PROTOCOL.md section 12, computed independently (Python).
        let a = ask();
        let id = "AAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            hex(&challenge(&a, id, None)),
            "fdf32da7c4b396f8d7c235a0a1fb8604bd9276864be7b1f6f3110a2332979a4a"
        );
        assert_eq!(
            hex(&challenge(&a, id, a.window.as_ref())),
            "02cbb80805c81123e98149a18842a9a5e1388834145f45c05179aec4ce8bd2e2"
        );
    }

    #[tokio::test]
    async fn only_the_signed_in_phones_verified_assertion_over_this_request_approves() {
        let rp = crate::book::testing::rp();
        let (_dir, _, book) = crate::book::testing::book();
        let mut phone = enrol(&book, "pixel");
        let desk = std::sync::Arc::new(Desk::default());
        let d = desk.clone();
        let waiting = tokio::spawn(async move { d.ask(ask(), Duration::from_secs(30)).await });
        desk.subscribe()
            .wait_for(|_| desk.len() == 1)
            .await
            .unwrap();
        let card = desk.cards("pixel", None)[0].clone();
        let challenge = B64URL.decode(&card.challenge).unwrap();
        let check = |a: &Assertion, session: &str, window: bool| {
            check_as(&rp, &book, &desk, session, &card.id, window, a)
        };
        // Another phone's session, an unenrolled passkey, no UV, another
        // challenge, a stranger's id: all refused.
        assert_eq!(
            check(&phone.get(&challenge), "iphone", false).unwrap_err(),
            ApproveError::WrongPhone
        );
        let mut stranger = new_phone();
        assert_eq!(
            check(&stranger.get(&challenge), "pixel", false).unwrap_err(),
            ApproveError::WrongPhone
        );
        let mut no_uv = phone.clone();
        no_uv.flags = vmux_webauthn::Flags::UP;
        assert!(matches!(
            check(&no_uv.get(&challenge), "pixel", false),
            Err(ApproveError::Assertion(
                vmux_webauthn::Error::UserNotVerified
            ))
        ));
        assert!(matches!(
            check(&phone.get(b"not this request"), "pixel", false),
            Err(ApproveError::Assertion(_))
        ));
        // The window's challenge does not approve without the window.
        let window_challenge = B64URL
            .decode(&card.window.as_ref().unwrap().challenge)
            .unwrap();
        assert!(check(&phone.get(&window_challenge), "pixel", false).is_err());
        // The right one approves, with the window it signed for.
        let good = phone.get(&window_challenge);
        let approval = check(&good, "pixel", true).unwrap();
        // Replaying it (same counter) is refused even for the same card.
        assert!(matches!(
            check(&good, "pixel", true),
            Err(ApproveError::Assertion(
                vmux_webauthn::Error::CounterNotIncreasing { .. }
            ))
        ));
        assert!(desk.approve(approval));
        assert_eq!(
            waiting.await.unwrap(),
            Answer::Approved {
                phone: "pixel".into(),
                window: Some(3600),
                signature: None,
            }
        );
    }

    #[tokio::test]
    async fn a_data_card_is_one_phones_and_its_approval_carries_the_assertion_over_the_data() {
        let rp = crate::book::testing::rp();
        let (_dir, _, book) = crate::book::testing::book();
        let mut pixel = enrol(&book, "pixel");
        let mut iphone = enrol(&book, "iphone");
        let data = b"\0\0\0\x20session id and a userauth request".to_vec();
        let desk = std::sync::Arc::new(Desk::default());
        let d = desk.clone();
        let a = Ask {
            challenge: ChallengeKind::Data(data.clone()),
            only_phone: Some("pixel".into()),
            window: None,
            ..ask()
        };
        let waiting = tokio::spawn(async move { d.ask(a, Duration::from_secs(30)).await });
        desk.subscribe()
            .wait_for(|_| desk.len() == 1)
            .await
            .unwrap();
        // The other phone does not see it, cannot deny it, cannot approve it.
        assert!(desk.cards("iphone", None).is_empty());
        let card = desk.cards("pixel", Some("cred")).remove(0);
        assert_eq!(card.credential.as_deref(), Some("cred"));
        assert!(card.window.is_none());
        assert_eq!(B64URL.decode(&card.challenge).unwrap(), data);
        assert!(!desk.deny(&card.id, "iphone"));
        let check = |a: &Assertion, session: &str, window: bool| {
            check_as(&rp, &book, &desk, session, &card.id, window, a)
        };
        assert_eq!(
            check(&iphone.get(&data), "iphone", false).unwrap_err(),
            ApproveError::NotThisPhones
        );
        // Its approval challenge is no approval here: only the data is.
        let approval_challenge = challenge(&ask(), &card.id, None);
        assert!(matches!(
            check(&pixel.get(&approval_challenge), "pixel", false),
            Err(ApproveError::Assertion(_))
        ));
        assert_eq!(
            check(&pixel.get(&data), "pixel", true).unwrap_err(),
            ApproveError::NoWindowOffered
        );
        let approval = check(&pixel.get(&data), "pixel", false).unwrap();
        assert!(desk.approve(approval));
        let Answer::Approved {
            phone,
            window: None,
            signature: Some(sig),
        } = waiting.await.unwrap()
        else {
            panic!("not approved with an assertion");
        };
        assert_eq!(phone, "pixel");
        assert_eq!(sig.assertion().challenge(), &data[..]);
        let ssh = vmux_webauthn::openssh::webauthn_signature(sig.assertion(), &data).unwrap();
        assert!(ssh.starts_with(b"\0\0\0\x2bwebauthn-sk-ecdsa"));
    }

    #[tokio::test]
    async fn a_card_leaves_when_decided_when_its_asker_gives_up_and_on_timeout() {
        let desk = std::sync::Arc::new(Desk::default());
        // Denied by a phone.
        let d = desk.clone();
        let waiting = tokio::spawn(async move { d.ask(ask(), Duration::from_secs(30)).await });
        let mut changes = desk.subscribe();
        changes.wait_for(|_| desk.len() == 1).await.unwrap();
        let id = desk.cards("pixel", None)[0].id.clone();
        assert!(desk.deny(&id, "pixel"));
        assert!(!desk.deny(&id, "pixel"), "decided once");
        assert_eq!(
            waiting.await.unwrap(),
            Answer::Denied {
                phone: "pixel".into()
            }
        );
        assert!(desk.is_empty());
        // The asker gives up (the agent went away): the card goes.
        let d = desk.clone();
        let waiting = tokio::spawn(async move { d.ask(ask(), Duration::from_secs(30)).await });
        changes.wait_for(|_| desk.len() == 1).await.unwrap();
        waiting.abort();
        let _ = waiting.await;
        assert!(desk.is_empty());
        // Nobody answers.
        assert_eq!(
            desk.ask(ask(), Duration::from_millis(20)).await,
            Answer::TimedOut
        );
        assert!(desk.is_empty());
    }

    /// A desk with `asks` waiting (each for 30 s) and `pixel` enrolled.
    struct Burst {
        rp: RelyingParty,
        book: PhoneBook,
        desk: std::sync::Arc<Desk>,
        phone: vmux_webauthn::testing::SoftAuthenticator,
        waits: Vec<tokio::task::JoinHandle<Answer>>,
        _dir: tempfile::TempDir,
    }

    impl Burst {
        async fn new() -> Burst {
            let (dir, _, book) = crate::book::testing::book();
            let phone = enrol(&book, "pixel");
            Burst {
                rp: crate::book::testing::rp(),
                book,
                desk: std::sync::Arc::new(Desk::default()),
                phone,
                waits: Vec::new(),
                _dir: dir,
            }
        }

        async fn put(&mut self, a: Ask) -> String {
            let n = self.desk.len();
            let d = self.desk.clone();
            self.waits.push(tokio::spawn(async move {
                d.ask(a, Duration::from_secs(30)).await
            }));
            self.desk
                .subscribe()
                .wait_for(|_| self.desk.len() == n + 1)
                .await
                .unwrap();
            self.desk.cards("pixel", None).last().unwrap().id.clone()
        }

        fn check(&self, ids: &[&String], a: &Assertion) -> Result<BurstApproval, ApproveError> {
            let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            check_burst(
                &self.rp,
                &self.book,
                &self.desk,
                &signed_in("pixel"),
                &ids,
                &a.response(),
            )
        }

        /// The burst challenge of `ids` as the page would compute it from
        /// the cards' own challenges.
        fn challenge(&self, ids: &[&String]) -> [u8; 32] {
            let cards = self.desk.cards("pixel", None);
            let cs: Vec<[u8; 32]> = ids
                .iter()
                .map(|id| {
                    let c = cards.iter().find(|c| &&c.id == id).unwrap();
                    B64URL.decode(&c.challenge).unwrap().try_into().unwrap()
                })
                .collect();
            burst_challenge(&cs)
        }
    }

    fn sign_from(agent: &str, data: &[u8]) -> Ask {
        Ask {
            agent_id: agent.into(),
            body: [&(data.len() as u32).to_be_bytes()[..], data].concat(),
            ..ask()
        }
    }

    #[tokio::test]
    async fn one_assertion_approves_exactly_the_burst_it_was_made_for() {
        let mut b = Burst::new().await;
        let r1 = b.put(sign_from("laptop", b"one")).await;
        let r2 = b.put(sign_from("laptop", b"two")).await;
        let other = b.put(sign_from("desktop", b"elsewhere")).await;
        let pair = b
            .put(Ask {
                kind: DecisionKind::Pair,
                code: Some("123456".into()),
                window: None,
                ..sign_from("laptop", b"pair")
            })
            .await;
        let forwarded = b
            .put(Ask {
                forwarded: true,
                window: None,
                ..sign_from("laptop", b"through a forwarded agent")
            })
            .await;
        let r3 = b.put(sign_from("laptop", b"three")).await;
        // The page gets the list and its challenge on the oldest card of
        // the agent, before it shows Approve all 3; no burst of one.
        let cards = b.desk.cards("pixel", None);
        let burst = cards[0].burst.clone().expect("a burst on the oldest card");
        assert_eq!(burst.ids, vec![r1.clone(), r2.clone(), r3.clone()]);
        assert!(cards[1..].iter().all(|c| c.burst.is_none()));
        let listed = B64URL.decode(&burst.challenge).unwrap();
        assert_eq!(listed, b.challenge(&[&r1, &r2, &r3]));

        let mut phone = b.phone.clone();
        let good = phone.get(&listed);
        // Replayed for N+1, reordered, one swapped, one left out: refused,
        // the assertion verifying over another challenge.
        for ids in [
            vec![&r1, &r2, &r3, &other],
            vec![&r2, &r1, &r3],
            vec![&r1, &r2, &other],
            vec![&r1, &r3],
        ] {
            let e = b.check(&ids, &good).unwrap_err();
            assert!(
                matches!(e, ApproveError::Assertion(_) | ApproveError::NotABurst),
                "{ids:?}: {e:?}"
            );
        }
        // Lists that are no burst, whatever was signed: another agent's
        // request, a pairing (its code is compared one by one), a request
        // twice, a single request.
        for ids in [
            vec![&r1, &other],
            vec![&r1, &pair],
            vec![&r1, &forwarded],
            vec![&r1, &r1],
            vec![&r1],
        ] {
            let a = phone.get(&b.challenge(&ids));
            assert_eq!(
                b.check(&ids, &a).unwrap_err(),
                ApproveError::NotABurst,
                "{ids:?}"
            );
        }
        // The burst challenge of two is neither request's approval.
        let two = phone.get(&b.challenge(&[&r1, &r2]));
        assert!(check_as(&b.rp, &b.book, &b.desk, "pixel", &r1, false, &two).is_err());
        // Without user verification, or another phone's session: refused.
        let mut no_uv = phone.clone();
        no_uv.flags = vmux_webauthn::Flags::UP;
        assert!(matches!(
            b.check(&[&r1, &r2, &r3], &no_uv.get(&listed)),
            Err(ApproveError::Assertion(
                vmux_webauthn::Error::UserNotVerified
            ))
        ));
        let ids: Vec<String> = vec![r1.clone(), r2.clone(), r3.clone()];
        assert_eq!(
            check_burst(
                &b.rp,
                &b.book,
                &b.desk,
                &signed_in("iphone"),
                &ids,
                &phone.get(&listed).response()
            )
            .unwrap_err(),
            ApproveError::WrongPhone
        );
        // Nothing above approved anything.
        assert_eq!(b.desk.len(), 6);

        // The list as shown, signed now (the counter moved on): approves
        // those three and nothing else.
        let approval = b.check(&[&r1, &r2, &r3], &phone.get(&listed)).unwrap();
        assert_eq!(b.desk.approve_burst(approval), 3);
        let mut waits = std::mem::take(&mut b.waits);
        let third = waits.remove(5);
        let (first, second) = (waits.remove(0), waits.remove(0));
        for w in [first, second, third] {
            assert_eq!(
                w.await.unwrap(),
                Answer::Approved {
                    phone: "pixel".into(),
                    window: None,
                    signature: None
                }
            );
        }
        let left: Vec<String> = b
            .desk
            .cards("pixel", None)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left, vec![other, pair, forwarded]);
        // Replayed once the requests are gone: nothing left to approve.
        assert_eq!(
            b.check(&[&r1, &r2, &r3], &good).unwrap_err(),
            ApproveError::NotPending
        );
    }

    #[tokio::test]
    async fn a_request_that_joins_after_the_list_was_shown_is_not_covered() {
        let mut b = Burst::new().await;
        let r1 = b.put(sign_from("laptop", b"one")).await;
        let r2 = b.put(sign_from("laptop", b"two")).await;
        let shown = b.desk.cards("pixel", None)[0].burst.clone().unwrap();
        let mut phone = b.phone.clone();
        let a = phone.get(&B64URL.decode(&shown.challenge).unwrap());
        // A third joins while the person looks at "Approve all 2".
        let r3 = b.put(sign_from("laptop", b"joined later")).await;
        let now = b.desk.cards("pixel", None)[0].burst.clone().unwrap();
        assert_eq!(now.ids, vec![r1.clone(), r2.clone(), r3.clone()]);
        assert_ne!(now.challenge, shown.challenge);
        // The assertion made for the list shown does not stretch to it...
        assert!(b.check(&[&r1, &r2, &r3], &a).is_err());
        // ...and approves the two it was made for, not the third.
        let approval = b.check(&[&r1, &r2], &a).unwrap();
        assert_eq!(b.desk.approve_burst(approval), 2);
        let ids: Vec<String> = b
            .desk
            .cards("pixel", None)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, vec![r3]);
        assert!(
            b.desk.cards("pixel", None)[0].burst.is_none(),
            "one is no burst"
        );
    }
}
