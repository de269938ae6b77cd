//! Who is at the page: one-time enrolment links, sessions, and the rate
//! of failed attempts (sign-in challenges are `limits::Tickets`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use sha2::{Digest, Sha256};
use vmux_home::sync::lock;
use zeroize::Zeroizing;

/// How long an enrolment link works.
pub const ENROL_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long a sign-in or enrolment challenge works.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(2 * 60);
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Open sessions and enrolment links, at most (the oldest goes first).
const MAX_OPEN: usize = 64;
/// Failed sign-ins and enrolments allowed per minute from one source.
pub const MAX_FAILURES_PER_MINUTE: usize = 10;

/// The SHA-256 of a secret: what is kept, so a memory dump holds no
/// usable token.
fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// A fresh random secret, base64url.
fn secret() -> Zeroizing<String> {
    Zeroizing::new(B64URL.encode(rand::random::<[u8; 32]>()))
}

/// Keeps at most `MAX_OPEN` entries, dropping expired ones and then the
/// oldest.
fn bound<V>(map: &mut HashMap<[u8; 32], V>, expiry: impl Fn(&V) -> Instant) {
    let now = Instant::now();
    map.retain(|_, v| expiry(v) > now);
    while map.len() >= MAX_OPEN {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| expiry(v)).map(|(k, _)| *k) else {
            break;
        };
        map.remove(&oldest);
    }
}

/// A pending enrolment: the phone's name and, once the page began, the
/// registration challenge.
#[derive(Clone)]
struct Enrolment {
    name: String,
    expires: Instant,
    challenge: Option<[u8; 32]>,
    user_id: [u8; 16],
}

/// One-time enrolment links.
#[derive(Default)]
pub struct Enrolments {
    open: Mutex<HashMap<[u8; 32], Enrolment>>,
}

/// What the page needs to create a passkey.
pub struct EnrolBegin {
    /// The phone's name.
    pub name: String,
    /// The registration challenge.
    pub challenge: [u8; 32],
    /// The WebAuthn user handle.
    pub user_id: [u8; 16],
}

impl Enrolments {
    /// A new link secret for `name`, good for [`ENROL_LIFETIME`], once.
    pub fn issue(&self, name: &str) -> Zeroizing<String> {
        let token = secret();
        let mut open = lock(&self.open);
        bound(&mut open, |e| e.expires);
        open.insert(
            digest(token.as_bytes()),
            Enrolment {
                name: name.to_owned(),
                expires: Instant::now() + ENROL_LIFETIME,
                challenge: None,
                user_id: rand::random(),
            },
        );
        token
    }

    /// The page opened the link: a fresh challenge for it.
    pub fn begin(&self, token: &str) -> Option<EnrolBegin> {
        let mut open = lock(&self.open);
        let e = open.get_mut(&digest(token.as_bytes()))?;
        if e.expires <= Instant::now() {
            return None;
        }
        let challenge: [u8; 32] = rand::random();
        e.challenge = Some(challenge);
        Some(EnrolBegin {
            name: e.name.clone(),
            challenge,
            user_id: e.user_id,
        })
    }

    /// The name and challenge of a begun enrolment, still unused.
    pub fn pending(&self, token: &str) -> Option<(String, [u8; 32])> {
        let open = lock(&self.open);
        let e = open.get(&digest(token.as_bytes()))?;
        if e.expires <= Instant::now() {
            return None;
        }
        Some((e.name.clone(), e.challenge?))
    }

    /// Uses the link up. False if it was used (or expired) meanwhile.
    pub fn consume(&self, token: &str) -> bool {
        lock(&self.open)
            .remove(&digest(token.as_bytes()))
            .is_some_and(|e| e.expires > Instant::now())
    }

    /// Forgets the links for `name` (the phone was removed or enrolled).
    pub fn forget(&self, name: &str) {
        lock(&self.open).retain(|_, e| e.name != name);
    }
}

/// Signed-in phones: session cookie digest → phone name and expiry.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Sessions {
    /// A new session for `phone`; returns the cookie value.
    pub fn open(&self, phone: &str) -> Zeroizing<String> {
        let token = secret();
        let mut open = lock(&self.open);
        bound(&mut open, |(_, t)| *t);
        open.insert(
            digest(token.as_bytes()),
            (phone.to_owned(), Instant::now() + SESSION_LIFETIME),
        );
        token
    }

    /// The phone signed in with this cookie value, if the session lives.
    pub fn phone(&self, token: &str) -> Option<String> {
        let open = lock(&self.open);
        let (phone, expires) = open.get(&digest(token.as_bytes()))?;
        (*expires > Instant::now()).then(|| phone.clone())
    }

    /// Ends one session.
    pub fn close(&self, token: &str) {
        lock(&self.open).remove(&digest(token.as_bytes()));
    }

    /// Ends every session of `phone`.
    pub fn revoke(&self, phone: &str) {
        lock(&self.open).retain(|_, (p, _)| p != phone);
    }
}

/// Failed sign-in and enrolment attempts in the last minute: past
/// [`MAX_FAILURES_PER_MINUTE`] from one source (an IPv6 source counts as
/// its /64), or [`MAX_FAILURES_PER_MINUTE_TOTAL`] from everyone, failing
/// requests are refused before any work. A request that proves itself (a
/// live enrolment link; a fresh challenge of this signer's and an
/// enrolled credential, whose assertion is then checked) is never refused
/// by these limits: others' failures cannot lock the owner out.
pub struct Failures(crate::limits::PerMinute);

impl Default for Failures {
    fn default() -> Self {
        Failures(crate::limits::PerMinute::new(
            MAX_FAILURES_PER_MINUTE,
            MAX_FAILURES_PER_MINUTE_TOTAL,
        ))
    }
}

/// Failed attempts from everyone allowed per minute.
pub const MAX_FAILURES_PER_MINUTE_TOTAL: usize = 100;

impl Failures {
    /// Whether another failing attempt from `ip` may be told why it
    /// failed (else it gets 429).
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.0.allowed(ip)
    }

    /// Counts a failed attempt from `ip`.
    pub fn record(&self, ip: IpAddr) {
        self.0.record(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_links_are_single_use_and_sessions_revocable() {
        let e = Enrolments::default();
        let t = e.issue("pixel");
        assert!(e.pending(&t).is_none(), "not begun");
        let b = e.begin(&t).unwrap();
        assert_eq!(b.name, "pixel");
        assert_eq!(e.pending(&t).unwrap().1, b.challenge);
        assert!(e.consume(&t));
        assert!(!e.consume(&t));
        assert!(e.begin(&t).is_none());
        assert!(e.begin("not-a-token").is_none());

        let s = Sessions::default();
        let a = s.open("pixel");
        let b = s.open("iphone");
        assert_eq!(s.phone(&a).as_deref(), Some("pixel"));
        s.revoke("pixel");
        assert!(s.phone(&a).is_none());
        assert_eq!(s.phone(&b).as_deref(), Some("iphone"));

        let f = Failures::default();
        let (stranger, owner): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        for _ in 0..MAX_FAILURES_PER_MINUTE {
            assert!(f.allowed(stranger));
            f.record(stranger);
        }
        assert!(!f.allowed(stranger));
        assert!(
            f.allowed(owner),
            "a stranger's failures do not lock the owner out"
        );
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_MINUTE {
            f.record(v6a);
        }
        assert!(!f.allowed(v6b), "one /64 is one source");
    }

    #[test]
    fn open_entries_are_bounded() {
        let s = Sessions::default();
        let first = s.open("a");
        for _ in 0..MAX_OPEN {
            s.open("b");
        }
        assert!(s.phone(&first).is_none());
        assert!(lock(&s.open).len() <= MAX_OPEN);
    }
}
