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
use vmux_webauthn::{
    verify_assertion, ApprovalRequest, AssertionResponse, RelyingParty, UserVerification,
    VerifiedAssertion,
};

use crate::book::PhoneBook;

/// Decisions waiting at once; more are refused (the signer's own bounds
/// keep far fewer in flight).
pub const MAX_PENDING: usize = 512;

/// What kind of decision a card asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CardKind {
    /// A new agent wants to pair.
    Pair,
    /// A paired agent wants a signature.
    Sign,
    /// A paired agent wants a session certificate.
    Certificate,
}

impl CardKind {
    /// The kind's name, as bound into the approval challenge.
    pub fn as_str(self) -> &'static str {
        match self {
            CardKind::Pair => "pair",
            CardKind::Sign => "sign",
            CardKind::Certificate => "certificate",
        }
    }
}

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
    pub kind: CardKind,
    /// The asking agent's id.
    pub agent_id: String,
    /// The card's title.
    pub title: String,
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
    /// body, no facts.
    pub(crate) fn waiting(&self) -> Vec<Waiting> {
        lock(&self.pending)
            .iter()
            .map(|p| Waiting {
                id: p.id.clone(),
                title: p.ask.title.clone(),
                summary: p.ask.summary.clone(),
                expires_at_ms: p.expires_at_ms,
                only_phone: p.ask.only_phone.clone(),
            })
            .collect()
    }

    /// The cards `phone`'s page shows, oldest first: those for every
    /// phone and those for it alone. `credential` (base64url) is the
    /// phone's passkey, named on cards only its passkey can approve.
    pub fn cards(&self, phone: &str, credential: Option<&str>) -> Vec<Card> {
        lock(&self.pending)
            .iter()
            .filter(|p| p.for_phone(phone))
            .map(|p| Card {
                id: p.id.clone(),
                kind: p.ask.kind,
                title: p.ask.title.clone(),
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
            })
            .collect()
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
    pub title: String,
    pub summary: String,
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
    pub kind: CardKind,
    /// Title.
    pub title: String,
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
    session_phone: &str,
    id: &str,
    window: bool,
    response: &AssertionResponse<'_>,
) -> Result<PhoneApproval, ApproveError> {
    let (challenge, data) = desk.challenge_of(id, session_phone, window)?;
    let assertion = verify_phone(rp, book, session_phone, &challenge, response)?;
    Ok(PhoneApproval {
        request: id.to_owned(),
        phone: session_phone.to_owned(),
        window,
        signature: data.then(|| DataAssertion(Box::new(assertion))),
    })
}

/// Verifies an assertion by `phone`'s passkey over `challenge` (UV
/// required) and records its counter.
pub(crate) fn verify_phone(
    rp: &RelyingParty,
    book: &PhoneBook,
    phone: &str,
    challenge: &[u8],
    response: &AssertionResponse<'_>,
) -> Result<VerifiedAssertion, ApproveError> {
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

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn ask() -> Ask {
        Ask {
            kind: CardKind::Sign,
            agent_id: "0123456789abcdef".into(),
            title: String::new(),
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
        use vmux_webauthn::testing::SoftAuthenticator;
        let origin = "https://signer.vmux.test";
        let rp = RelyingParty::new("signer.vmux.test", origin).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let book = PhoneBook::open(dir.path().join("phones.json"), Duration::ZERO).unwrap();
        let mut phone = SoftAuthenticator::new("signer.vmux.test", origin);
        let reg = phone.create(b"enrol");
        let cred = vmux_webauthn::verify_registration(
            &rp,
            b"enrol",
            &reg.response(),
            UserVerification::Required,
        )
        .unwrap();
        book.add("pixel", &cred, "signer.vmux.test", 1).unwrap();
        let desk = std::sync::Arc::new(Desk::default());
        let d = desk.clone();
        let waiting = tokio::spawn(async move { d.ask(ask(), Duration::from_secs(30)).await });
        desk.subscribe()
            .wait_for(|_| desk.len() == 1)
            .await
            .unwrap();
        let card = desk.cards("pixel", None)[0].clone();
        let challenge = B64URL.decode(&card.challenge).unwrap();
        let check = |a: &vmux_webauthn::testing::Assertion, session: &str, window: bool| {
            check_approval(&rp, &book, &desk, session, &card.id, window, &a.response())
        };
        // Another phone's session, an unenrolled passkey, no UV, another
        // challenge, a stranger's id: all refused.
        assert_eq!(
            check(&phone.get(&challenge), "iphone", false).unwrap_err(),
            ApproveError::WrongPhone
        );
        let mut stranger = SoftAuthenticator::new("signer.vmux.test", origin);
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
        use vmux_webauthn::testing::SoftAuthenticator;
        let origin = "https://signer.vmux.test";
        let rp = RelyingParty::new("signer.vmux.test", origin).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let book = PhoneBook::open(dir.path().join("phones.json"), Duration::ZERO).unwrap();
        let enrol = |name: &str| {
            let phone = SoftAuthenticator::new("signer.vmux.test", origin);
            let reg = phone.create(b"enrol");
            let cred = vmux_webauthn::verify_registration(
                &rp,
                b"enrol",
                &reg.response(),
                UserVerification::Required,
            )
            .unwrap();
            book.add(name, &cred, "signer.vmux.test", 1).unwrap();
            phone
        };
        let mut pixel = enrol("pixel");
        let mut iphone = enrol("iphone");
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
        let check = |a: &vmux_webauthn::testing::Assertion, session: &str, window: bool| {
            check_approval(&rp, &book, &desk, session, &card.id, window, &a.response())
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
}
