//! The phone page: the web app (PWA) a signer serves over HTTPS, where
//! the user's phones enrol a passkey, sign in with it, and approve each
//! decision with a passkey assertion (Face ID, fingerprint, PIN).
//!
//! # Brief overview
//!
//! - [`Phones`]: the phone side of a running signer: the [`PhoneBook`]
//!   (enrolled phones in `phones.json`, one writer), the [`Desk`],
//!   one-time enrolment links, sign-in challenges, sessions, and which
//!   phones have a page open.
//! - [`Desk`]: decisions waiting for a phone. The signer puts an [`Ask`]
//!   on it and awaits an [`Answer`]; pages see each as a card. Only a
//!   [`PhoneApproval`] approves, and only [`check_approval`] makes one,
//!   for a [`SignedIn`] phone (only a live session's cookie makes one):
//!   after that phone's passkey assertion over that exact request
//!   (the challenge of `vmux_webauthn::ApprovalRequest`) verified with
//!   user verification. A session cookie alone can read and deny, never
//!   approve.
//! - [`serve`]: the HTTP side (axum on hyper, TLS by rustls with
//!   certificate reload, [`TlsFiles`], or the signer's own CA,
//!   [`PageCa`]): the embedded page, its JSON API
//!   and its event stream; every state-changing request must carry the
//!   page's `Origin`; the page is bound by a strict Content-Security-Policy.
//!   What keeps it available to its owner while strangers reach the port
//!   (stateless sign-in challenges, per-source budgets, connection slots
//!   with a reserve for signed-in phones, whole requests bounded in time)
//!   is in one private module, `limits`; unpairing and push subscriptions
//!   need the passkey's confirmation, not only the session cookie.
//! - [`PageCa`]: the signer's own CA for the page (critical name
//!   constraints permitting only the page's name) and its leaf; the
//!   trust step's plain-HTTP page ([`TrustLink`]) hands its certificate
//!   to a phone.
//! - [`SignerInfo`]: what the page may read of, and do to, its signer;
//!   it unpairs only an agent a [`Confirmed`]`<`[`Unpair`]`>` names,
//!   which only the signed-in phone's passkey confirmation makes.
//! - [`push`]: Web Push (RFC 8030/8291/8292) to phones with no page open,
//!   one push per burst of waiting decisions, beside the page.
//!
//! This crate knows nothing of SSH or of the agent link: the signer
//! (`vmux-signer`) turns its decisions into [`Ask`]s and answers into
//! verdicts. The WebAuthn checks themselves are `vmux-webauthn`'s.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod assets;
mod auth;
pub mod book;
mod desk;
mod keyfile;
mod limits;
mod page_ca;
pub mod push;
mod service;
mod session;
mod tls;
mod trust;
mod web;

pub use book::{PhoneBook, PhoneRecord};
pub use desk::{
    check_approval, check_burst, Answer, ApproveError, Ask, BurstApproval, Card, CardBurst,
    ChallengeKind, DataAssertion, Desk, Headline, Mark, MarkLevel, PhoneApproval, WindowOffer,
};
pub use page_ca::{fingerprint, valid_page_name, PageCa, PageCaError, DEFAULT_LEAF_SECONDS};
pub use service::{relying_party, OriginError, PhoneError, PhoneView, Phones};
pub use session::SignedIn;
pub use tls::{PageTls, TlsError, TlsFiles};
pub use trust::{TrustError, TrustLink};
pub use web::{serve, AgentView, Confirmed, RecentView, SignerInfo, Unpair, CSP, SESSION_COOKIE};
