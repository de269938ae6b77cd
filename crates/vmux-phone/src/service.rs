//! [`Phones`]: everything the signer keeps about phones while it runs (the
//! phone book, the desk, links, challenges, sessions, who has a page
//! open), and what the signer's commands ask of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use serde::Serialize;
use vmux_home::sync::lock;
use vmux_webauthn::RelyingParty;

use crate::auth::{Enrolments, Failures, Sessions};
use crate::book::{valid_name, BookError, PhoneBook, PhoneRecord};
use crate::desk::Desk;
use crate::limits::{PerMinute, Slots, Tickets};
use crate::push::{PushSettings, PushSetupError, PushStatus};

/// The phone side of a running signer.
pub struct Phones {
    pub(crate) rp: RelyingParty,
    pub(crate) book: PhoneBook,
    pub(crate) desk: Arc<Desk>,
    pub(crate) enrolments: Enrolments,
    /// Sign-in and page-action challenges.
    pub(crate) tickets: Tickets,
    /// Sign-in begins per source.
    pub(crate) begins: PerMinute,
    /// Connection slots.
    pub(crate) slots: Slots,
    /// Whether the client's address is taken from `X-Forwarded-For`
    /// (behind a trusted reverse proxy).
    pub(crate) trust_forwarded_for: bool,
    pub(crate) sessions: Sessions,
    pub(crate) failures: Failures,
    online: Mutex<HashMap<String, usize>>,
    online_changed: watch::Sender<u64>,
    pub(crate) vapid: crate::push::VapidKey,
    pub(crate) push: crate::push::Sender,
    /// The trust step, when the page's certificate is the signer's own.
    trust: Option<Arc<crate::trust::TrustDesk>>,
}

/// A phone as `vmux signer phones` and the page list it.
#[derive(Debug, Clone, Serialize)]
pub struct PhoneView {
    /// Its name.
    pub name: String,
    /// When it was enrolled, Unix seconds.
    pub added_at: u64,
    /// When it last signed in or decided.
    pub last_seen: Option<u64>,
    /// Whether it has a page open now.
    pub online: bool,
    /// How many Web Push subscriptions it has (it can be woken if any).
    pub push: usize,
    /// What became of its last push since the signer started.
    pub last_push: Option<PushStatus>,
}

/// Why the page's origin cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Not `https://NAME[:PORT]`.
    #[error("the phone page's origin must look like https://NAME or https://NAME:PORT (no path), got {0:?}")]
    Shape(String),
    /// An IP address.
    #[error("the phone page's origin {0:?} names an IP address; WebAuthn needs a DNS name (e.g. a tailnet name, or a name mapped to this host)")]
    IpAddress(String),
    /// Not a lower-case DNS name.
    #[error("the phone page's origin {0:?} does not name a lower-case DNS host")]
    NotDns(String),
}

/// The relying party for `origin` (`https://NAME[:PORT]`): its id is NAME.
pub fn relying_party(origin: &str) -> Result<RelyingParty, OriginError> {
    let host_port = origin
        .strip_prefix("https://")
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .ok_or_else(|| OriginError::Shape(origin.to_owned()))?;
    let host = if host_port.starts_with('[') {
        return Err(OriginError::IpAddress(origin.to_owned()));
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(OriginError::IpAddress(origin.to_owned()));
    }
    RelyingParty::new(host, origin).map_err(|_| OriginError::NotDns(origin.to_owned()))
}

/// Why a phone command failed.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// The name is not acceptable.
    #[error(
        "a phone's name must be 1 to 64 printable characters without leading or trailing spaces"
    )]
    BadName,
    /// The phone book refused.
    #[error(transparent)]
    Book(#[from] BookError),
    /// Web Push cannot be set up.
    #[error(transparent)]
    Push(#[from] PushSetupError),
}

impl Phones {
    /// The phone side for the page at `rp`, with the phone book at
    /// `book_path` (this process becomes its one writer), pushing as
    /// `push` says.
    pub fn open(
        rp: RelyingParty,
        book_path: PathBuf,
        wait: Duration,
        push: &PushSettings,
    ) -> Result<Phones, PhoneError> {
        let vapid = crate::push::VapidKey::at(book_path.with_file_name("push-vapid.key"));
        let sender = crate::push::Sender::new(push, rp.origin())?;
        let book = PhoneBook::open(book_path, wait)?;
        book.fill_rp_id(rp.id())?;
        Ok(Phones {
            rp,
            book,
            desk: Arc::new(Desk::default()),
            enrolments: Enrolments::default(),
            tickets: Tickets::default(),
            begins: PerMinute::per_source(
                crate::limits::MAX_BEGINS_PER_MINUTE,
                crate::limits::MAX_BEGINS_RECORDED,
            ),
            slots: Slots::default(),
            trust_forwarded_for: false,
            sessions: Sessions::default(),
            failures: Failures::default(),
            online: Mutex::new(HashMap::new()),
            online_changed: watch::Sender::new(0),
            vapid,
            push: sender,
            trust: None,
        })
    }

    /// The page's certificate is `ca`'s, and the page listens on `host`:
    /// [`Phones::trust_link`] hands the CA to phones over plain HTTP on
    /// that address (this machine's LAN address when `host` is 0.0.0.0
    /// or ::).
    pub fn with_own_ca(mut self, ca: Arc<crate::PageCa>, host: std::net::IpAddr) -> Phones {
        self.trust = Some(crate::trust::TrustDesk::new(ca, host));
        self
    }

    /// The signer's own CA for the page, if the page's certificate is its.
    pub fn own_ca(&self) -> Option<&Arc<crate::PageCa>> {
        self.trust.as_ref().map(|t| t.ca())
    }

    /// A one-time trust link (10 minutes; spent by one download) when the
    /// page's certificate is the signer's own, else `None`. Opens the
    /// plain-HTTP trust listener if it is not open. Call it inside the
    /// Tokio runtime.
    pub fn trust_link(&self) -> Result<Option<crate::TrustLink>, crate::TrustError> {
        self.trust.as_ref().map(|t| t.issue()).transpose()
    }

    /// Takes each client's address from the last `X-Forwarded-For` entry
    /// (for the per-source limits): only for a page served on loopback
    /// behind a reverse proxy that sets it (`[web_proxy] trust_forwarded_for`).
    pub fn with_forwarded_for(mut self, trust: bool) -> Phones {
        self.trust_forwarded_for = trust;
        self
    }

    /// The page's origin.
    pub fn origin(&self) -> &str {
        self.rp.origin()
    }

    /// The relying party.
    pub fn relying_party(&self) -> &RelyingParty {
        &self.rp
    }

    /// The decisions waiting for a phone.
    pub fn desk(&self) -> &Arc<Desk> {
        &self.desk
    }

    /// A one-time enrolment link for a new phone called `name`: the page's
    /// origin with the secret in the fragment (never sent to a server).
    pub fn enrol_link(&self, name: &str) -> Result<String, PhoneError> {
        if !valid_name(name) {
            return Err(PhoneError::BadName);
        }
        if self.book.contains(name) {
            return Err(BookError::NameTaken(name.to_owned()).into());
        }
        let token = self.enrolments.issue(name);
        Ok(format!("{}/#enrol={}", self.rp.origin(), token.as_str()))
    }

    /// The enrolled phones.
    pub fn list(&self) -> Vec<PhoneView> {
        let online = lock(&self.online);
        self.book
            .list()
            .into_iter()
            .map(|p| PhoneView {
                online: online.get(&p.name).is_some_and(|n| *n > 0),
                last_push: self.push.status(&p.name),
                name: p.name,
                added_at: p.added_at,
                last_seen: p.last_seen,
                push: p.push.len(),
            })
            .collect()
    }

    /// Revokes a phone: its passkey, its sessions, its links.
    pub fn remove(&self, name: &str) -> Result<PhoneRecord, PhoneError> {
        let removed = self.book.remove(name)?;
        self.sessions.revoke(name);
        self.enrolments.forget(name);
        self.push.forget(name);
        tracing::info!(phone = %name, "phone removed");
        Ok(removed)
    }

    /// The phones' passkeys as SSH keys (`sk-ecdsa-sha2-nistp256@openssh.com`,
    /// application = this page's relying-party id, comment = the phone's
    /// name), in enrolment order. A phone enrolled for another relying
    /// party (the page's origin changed since) has no key here: its
    /// passkey cannot sign at this origin.
    pub fn passkey_keys(&self) -> Vec<(PhoneRecord, ssh_key::PublicKey)> {
        self.book
            .list()
            .into_iter()
            .filter(|p| p.rp_id.is_empty() || p.rp_id == self.rp.id())
            .filter_map(|p| {
                let key = p.ssh_key(self.rp.id())?;
                Some((p, key))
            })
            .collect()
    }

    /// The enrolled phone whose passkey is the SSH key `blob`.
    pub fn phone_of_key(&self, blob: &[u8]) -> Option<PhoneRecord> {
        self.passkey_keys()
            .into_iter()
            .find(|(_, k)| k.to_bytes().is_ok_and(|b| b == blob))
            .map(|(p, _)| p)
    }

    /// Whether any phone has a page open now.
    pub fn any_online(&self) -> bool {
        lock(&self.online).values().any(|n| *n > 0)
    }

    /// Reads (or makes, at first) the Web Push key and the page's own CA
    /// key, decrypting (or encrypting) them with the signer's
    /// `passphrase` when it has one.
    pub fn unlock_keys(&self, passphrase: Option<&str>) -> Result<(), String> {
        self.vapid
            .unlock(passphrase)
            .map_err(|e| format!("the Web Push key: {e}"))?;
        if let Some(ca) = self.own_ca() {
            ca.unlock(passphrase).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Forgets the Web Push key and the page CA's key when they are
    /// encrypted (the signer locks).
    pub fn lock_keys(&self) {
        self.vapid.lock();
        if let Some(ca) = self.own_ca() {
            ca.lock();
        }
    }

    /// Whether `phone` has a page open now.
    pub(crate) fn is_online(&self, phone: &str) -> bool {
        lock(&self.online).get(phone).is_some_and(|n| *n > 0)
    }

    /// A receiver that changes whenever a page opens or closes.
    pub(crate) fn online_changes(&self) -> watch::Receiver<u64> {
        self.online_changed.subscribe()
    }

    /// Counts an open page of `phone` for as long as the guard lives.
    pub(crate) fn present(self: &Arc<Self>, phone: &str) -> Presence {
        *lock(&self.online).entry(phone.to_owned()).or_default() += 1;
        self.online_changed.send_modify(|v| *v += 1);
        self.push.answered(phone);
        tracing::info!(%phone, "phone page open");
        Presence {
            phones: self.clone(),
            phone: phone.to_owned(),
        }
    }
}

/// An open page of one phone (its event stream).
pub(crate) struct Presence {
    phones: Arc<Phones>,
    phone: String,
}

impl Drop for Presence {
    fn drop(&mut self) {
        tracing::info!(phone = %self.phone, "phone page closed");
        let mut online = lock(&self.phones.online);
        if let Some(n) = online.get_mut(&self.phone) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                online.remove(&self.phone);
            }
        }
        drop(online);
        self.phones.online_changed.send_modify(|v| *v += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let rp = relying_party("https://signer.vmux.test:8443").unwrap();
        assert_eq!(rp.id(), "signer.vmux.test");
        assert!(relying_party("https://pi.tail1234.ts.net").is_ok());
        // Each refused with its own error, naming the origin it was given.
        type Refusal = fn(String) -> OriginError;
        let cases: [(&str, Refusal); 8] = [
            ("https://127.0.0.1:8443", OriginError::IpAddress),
            ("https://[::1]:8443", OriginError::IpAddress),
            ("https://10.0.0.2", OriginError::IpAddress),
            ("http://signer.test", OriginError::Shape),
            ("https://signer.test/x", OriginError::Shape),
            ("signer.test", OriginError::Shape),
            ("https://", OriginError::Shape),
            ("https://Signer.Test", OriginError::NotDns),
        ];
        for (bad, error) in cases {
            let got = relying_party(bad).err().map(|e| e.to_string());
            assert_eq!(got, Some(error(bad.to_owned()).to_string()), "{bad}");
        }
    }
}
