//! The enrolled phones, persisted in `phones.json` (mode 0600, written
//! atomically) by one writer at a time: the running signer, or a `vmux
//! signer phone …` command while no signer runs.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::{Deserialize, Serialize};
use vmux_home::{HomeError, LockError, WriterLock};
use vmux_webauthn::{Credential, VerifiedAssertion};

/// One enrolled phone: its name and its passkey's public half.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PhoneRecord {
    /// The name given at `vmux signer phone add --name`.
    pub name: String,
    /// The passkey's credential id, base64url.
    pub credential_id: String,
    /// Its P-256 public key, SEC1 uncompressed, base64url.
    pub public_key: String,
    /// The last signature counter seen.
    pub counter: u32,
    /// When it was enrolled, Unix seconds.
    pub added_at: u64,
    /// When it last signed in or decided, Unix seconds.
    #[serde(default)]
    pub last_seen: Option<u64>,
    /// The relying-party id the passkey was made for: the *application*
    /// of its SSH key (empty in files written before it was stored).
    #[serde(default)]
    pub rp_id: String,
    /// Its pages' Web Push subscriptions (none in older files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push: Vec<PushSubscription>,
}

/// One Web Push subscription of a phone's page (RFC 8030/8291): where to
/// post and the keys to encrypt for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PushSubscription {
    /// The push service's URL for this subscription (https).
    pub endpoint: String,
    /// The page's P-256 public key, SEC1 uncompressed, base64url.
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
    /// When it was stored, Unix seconds.
    pub added_at: u64,
}

/// The most subscriptions one phone keeps (the oldest go first).
pub const MAX_PUSH_PER_PHONE: usize = 4;

/// The longest endpoint URL accepted.
const MAX_ENDPOINT_LEN: usize = 1024;

impl PushSubscription {
    /// A subscription as the page sends it, checked: an `https://` URL
    /// without spaces or controls, a 65-byte uncompressed point on P-256 and a
    /// 16-byte secret. `None` if any part is malformed.
    pub fn checked(endpoint: &str, p256dh: &str, auth: &str, now: u64) -> Option<PushSubscription> {
        let host = endpoint.strip_prefix("https://")?;
        if endpoint.len() > MAX_ENDPOINT_LEN
            || host.is_empty()
            || host.starts_with('/')
            || endpoint
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return None;
        }
        let key = B64URL.decode(p256dh.trim_end_matches('=')).ok()?;
        if key.len() != 65 || key[0] != 4 {
            return None;
        }
        // On the curve, or no push could ever be encrypted for it.
        p256::PublicKey::from_sec1_bytes(&key).ok()?;
        let secret = B64URL.decode(auth.trim_end_matches('=')).ok()?;
        if secret.len() != 16 {
            return None;
        }
        Some(PushSubscription {
            endpoint: endpoint.to_owned(),
            p256dh: B64URL.encode(key),
            auth: B64URL.encode(secret),
            added_at: now,
        })
    }
}

impl PhoneRecord {
    /// The stored credential, for checking an assertion.
    pub fn credential(&self) -> Option<Credential> {
        let id = B64URL.decode(&self.credential_id).ok()?;
        let key = B64URL.decode(&self.public_key).ok()?;
        Credential::from_stored(&id, &key, self.counter).ok()
    }

    /// The passkey as an OpenSSH `sk-ecdsa-sha2-nistp256@openssh.com`
    /// key (application = `rp_id`, comment = the phone's name), or `None`
    /// if the record is unreadable or has no relying-party id.
    pub fn ssh_key(&self, rp_id: &str) -> Option<ssh_key::PublicKey> {
        if rp_id.is_empty() {
            return None;
        }
        let mut key = vmux_webauthn::openssh::public_key(&self.credential()?, rp_id);
        key.set_comment(&self.name);
        Some(key)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookFile {
    #[serde(default)]
    phones: Vec<PhoneRecord>,
}

impl BookFile {
    /// The phone named `name`, to change.
    fn phone_mut(&mut self, name: &str) -> Result<&mut PhoneRecord, BookError> {
        self.phones
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| BookError::NoSuchPhone(name.to_owned()))
    }
}

/// Why the phone book refused a change.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// Another process writes the phone book.
    #[error("another vmux process holds the phone book ({0} is locked); if `vmux signer run` is running here, ask it, or try again")]
    Busy(PathBuf),
    /// A phone of that name exists.
    #[error("a phone named {0:?} is enrolled already; remove it first or choose another name")]
    NameTaken(String),
    /// No phone of that name.
    #[error("no phone named {0:?} is enrolled")]
    NoSuchPhone(String),
    /// The passkey's credential id is another phone's already (WebAuthn
    /// L3 7.1 step 26).
    #[error("this passkey is enrolled already; each phone enrols a passkey of its own")]
    CredentialTaken(String),
    /// The assertion's counter did not move on past the stored one (two
    /// assertions raced, or a cloned authenticator).
    #[error("this passkey's signature counter went backwards; the assertion was refused")]
    CounterWentBack,
    /// The file could not be read, parsed or written.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// The enrolled phones and their one writer.
pub struct PhoneBook {
    path: PathBuf,
    state: RwLock<BookFile>,
    _lock: WriterLock,
}

/// Seconds within which a repeated use does not rewrite `last_seen`.
const LAST_SEEN_RESOLUTION: u64 = 60;

impl PhoneBook {
    /// Opens the phone book at `path` (empty if there is no file yet) as
    /// its one writer, waiting at most `wait` for another writer.
    pub fn open(path: PathBuf, wait: Duration) -> Result<PhoneBook, BookError> {
        let lock = WriterLock::acquire(&path, wait).map_err(|e| match e {
            LockError::Busy(p) => BookError::Busy(p),
            LockError::Home(h) => BookError::Home(h),
        })?;
        vmux_home::remove_stale_temps(&path);
        let state = read_file(&path)?;
        Ok(PhoneBook {
            path,
            state: RwLock::new(state),
            _lock: lock,
        })
    }

    /// The phones, in enrolment order.
    pub fn list(&self) -> Vec<PhoneRecord> {
        vmux_home::sync::read(&self.state).phones.clone()
    }

    /// The phone whose passkey has this credential id.
    pub fn by_credential(&self, credential_id: &[u8]) -> Option<PhoneRecord> {
        let id = B64URL.encode(credential_id);
        vmux_home::sync::read(&self.state)
            .phones
            .iter()
            .find(|p| p.credential_id == id)
            .cloned()
    }

    /// Whether a phone of this name is enrolled.
    pub fn contains(&self, name: &str) -> bool {
        vmux_home::sync::read(&self.state)
            .phones
            .iter()
            .any(|p| p.name == name)
    }

    /// Enrols a phone with its verified passkey, made for the relying
    /// party `rp_id`.
    pub fn add(
        &self,
        name: &str,
        credential: &Credential,
        rp_id: &str,
        now: u64,
    ) -> Result<(), BookError> {
        let record = PhoneRecord {
            rp_id: rp_id.to_owned(),
            name: name.to_owned(),
            credential_id: B64URL.encode(credential.id()),
            public_key: B64URL.encode(credential.public_key_sec1()),
            counter: credential.counter(),
            added_at: now,
            last_seen: Some(now),
            push: Vec::new(),
        };
        self.update(|f| {
            if f.phones.iter().any(|p| p.name == name) {
                return Err(BookError::NameTaken(name.to_owned()));
            }
            if let Some(p) = f
                .phones
                .iter()
                .find(|p| p.credential_id == record.credential_id)
            {
                return Err(BookError::CredentialTaken(p.name.clone()));
            }
            f.phones.push(record);
            Ok(())
        })
    }

    /// Records a verified assertion of `name`'s passkey: its counter and
    /// the time. The file holds the new counter before this returns, so a
    /// replayed assertion is refused even after a restart. The counter is
    /// checked again here, under the write lock: of two assertions
    /// verified against the same stored counter, the one recorded second
    /// is refused unless its counter is higher still (a passkey that
    /// always says 0 keeps 0), so the stored counter never moves back.
    pub fn record_use(
        &self,
        name: &str,
        assertion: &VerifiedAssertion,
        now: u64,
    ) -> Result<(), BookError> {
        self.update(|f| {
            let p = f.phone_mut(name)?;
            let next = assertion.counter();
            if (next != 0 || p.counter != 0) && next <= p.counter {
                return Err(BookError::CounterWentBack);
            }
            p.counter = next;
            p.last_seen = Some(now);
            Ok(())
        })
    }

    /// Notes that `name` was seen (signed in), at most once a minute.
    pub fn touch(&self, name: &str, now: u64) -> Result<(), BookError> {
        let fresh = vmux_home::sync::read(&self.state)
            .phones
            .iter()
            .filter(|p| p.name == name)
            .all(|p| {
                p.last_seen
                    .is_some_and(|t| now.saturating_sub(t) < LAST_SEEN_RESOLUTION)
            });
        if fresh {
            return Ok(());
        }
        self.update(|f| {
            for p in f.phones.iter_mut().filter(|p| p.name == name) {
                p.last_seen = Some(now);
            }
            Ok(())
        })
    }

    /// Stores `rp_id` in the records written before the relying-party id
    /// was stored (so `vmux signer keys` can list their keys while no
    /// signer runs).
    pub fn fill_rp_id(&self, rp_id: &str) -> Result<(), BookError> {
        if self.list().iter().all(|p| !p.rp_id.is_empty()) {
            return Ok(());
        }
        self.update(|f| {
            for p in f.phones.iter_mut().filter(|p| p.rp_id.is_empty()) {
                p.rp_id = rp_id.to_owned();
            }
            Ok(())
        })
    }

    /// Stores a Web Push subscription for `name`'s page (replacing one
    /// with the same endpoint; the oldest dropped beyond
    /// [`MAX_PUSH_PER_PHONE`]).
    pub fn subscribe(&self, name: &str, sub: PushSubscription) -> Result<(), BookError> {
        self.update(|f| {
            let p = f.phone_mut(name)?;
            p.push.retain(|s| s.endpoint != sub.endpoint);
            p.push.push(sub);
            let extra = p.push.len().saturating_sub(MAX_PUSH_PER_PHONE);
            p.push.drain(..extra);
            Ok(())
        })
    }

    /// Removes the subscription with this endpoint from `name` (or from
    /// every phone if `name` is `None`); whether one was removed.
    pub fn unsubscribe(&self, name: Option<&str>, endpoint: &str) -> Result<bool, BookError> {
        let mine = |p: &PhoneRecord| name.is_none_or(|n| p.name == n);
        let has = |p: &PhoneRecord| mine(p) && p.push.iter().any(|s| s.endpoint == endpoint);
        if !self.list().iter().any(has) {
            return Ok(false);
        }
        self.update(|f| {
            for p in f.phones.iter_mut().filter(|p| mine(p)) {
                p.push.retain(|s| s.endpoint != endpoint);
            }
            Ok(())
        })?;
        Ok(true)
    }

    /// Removes a phone; returns its record.
    pub fn remove(&self, name: &str) -> Result<PhoneRecord, BookError> {
        let mut removed = None;
        self.update(|f| {
            let i = f
                .phones
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| BookError::NoSuchPhone(name.to_owned()))?;
            removed = Some(f.phones.remove(i));
            Ok(())
        })?;
        removed.ok_or_else(|| BookError::NoSuchPhone(name.to_owned()))
    }

    /// Changes the book: in memory only once the file holds the change.
    fn update(
        &self,
        f: impl FnOnce(&mut BookFile) -> Result<(), BookError>,
    ) -> Result<(), BookError> {
        let mut l = vmux_home::sync::write(&self.state);
        let mut next = l.clone();
        f(&mut next)?;
        let json = serde_json::to_vec_pretty(&next)
            .map_err(|e| HomeError::io(&self.path, std::io::Error::other(e)))?;
        vmux_home::write_private(&self.path, &json)?;
        *l = next;
        Ok(())
    }
}

/// Reads the phone book without becoming its writer (for listings while a
/// signer runs).
pub fn read_phones(path: &Path) -> Result<Vec<PhoneRecord>, HomeError> {
    Ok(read_file(path)?.phones)
}

fn read_file(path: &Path) -> Result<BookFile, HomeError> {
    match vmux_home::read_optional(path)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| HomeError::Config {
            path: path.to_owned(),
            message: format!("corrupt phone book: {e}"),
        }),
        None => Ok(BookFile::default()),
    }
}

/// Whether `name` is acceptable as a phone's name: 1–64 characters, no
/// control or invisible characters, no surrounding spaces.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=64).contains(&n)
        && name.trim() == name
        && !name.is_empty()
        && name == vmux_proto::sanitize(name)
}

/// Phones and a phone book for the crate's tests: one page at
/// `https://signer.vmux.test`.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;
    use std::time::Duration;

    use vmux_webauthn::testing::SoftAuthenticator;
    use vmux_webauthn::{Credential, RelyingParty, UserVerification};

    use super::PhoneBook;

    /// The test page's origin.
    pub(crate) const ORIGIN: &str = "https://signer.vmux.test";
    /// The test page's relying-party id.
    pub(crate) const RP_ID: &str = "signer.vmux.test";

    /// The test page's relying party.
    pub(crate) fn rp() -> RelyingParty {
        RelyingParty::new(RP_ID, ORIGIN).unwrap()
    }

    /// A new phone, for the test page.
    pub(crate) fn phone() -> SoftAuthenticator {
        SoftAuthenticator::new(RP_ID, ORIGIN)
    }

    /// `auth`'s passkey, registered as the page would (user verified).
    pub(crate) fn register(auth: &SoftAuthenticator) -> Credential {
        vmux_webauthn::verify_registration(
            &rp(),
            b"enrol",
            &auth.create(b"enrol").response(),
            UserVerification::Required,
        )
        .unwrap()
    }

    /// A new phone, enrolled in `book` as `name`.
    pub(crate) fn enrol(book: &PhoneBook, name: &str) -> SoftAuthenticator {
        let p = phone();
        book.add(name, &register(&p), RP_ID, 1).unwrap();
        p
    }

    /// An empty phone book in a new directory (kept while it lives).
    pub(crate) fn book() -> (tempfile::TempDir, PathBuf, PhoneBook) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phones.json");
        let book = PhoneBook::open(path.clone(), Duration::ZERO).unwrap();
        (dir, path, book)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{phone, register, rp};
    use super::*;

    #[test]
    fn one_writer_names_unique_counter_kept_across_reopen() {
        let (_dir, path, book) = testing::book();
        assert!(matches!(
            PhoneBook::open(path.clone(), Duration::from_millis(30)),
            Err(BookError::Busy(_))
        ));
        let cred = register(&phone());
        book.add("pixel", &cred, "signer.vmux.test", 100).unwrap();
        assert!(matches!(
            book.add("pixel", &cred, "signer.vmux.test", 101),
            Err(BookError::NameTaken(_))
        ));
        let found = book.by_credential(cred.id()).unwrap();
        assert_eq!(found.name, "pixel");
        assert_eq!(found.credential().unwrap(), cred);
        drop(book);
        assert_eq!(vmux_home::mode_of(&path).unwrap(), 0o600);
        let book = PhoneBook::open(path.clone(), Duration::ZERO).unwrap();
        assert_eq!(book.list().len(), 1);
        assert_eq!(book.remove("pixel").unwrap().name, "pixel");
        assert!(matches!(
            book.remove("pixel"),
            Err(BookError::NoSuchPhone(_))
        ));
        assert!(read_phones(&path).unwrap().is_empty());
    }

    /// A passkey enrolled for signer.vmux.test, as the page would.
    fn enrolled() -> Credential {
        register(&phone())
    }

    #[test]
    fn a_record_without_rp_id_reads_and_gets_the_signers_and_its_ssh_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phones.json");
        let cred = enrolled();
        // A phone book written before the rp id was stored.
        let old = serde_json::json!({"phones": [{
            "name": "pixel",
            "credential_id": B64URL.encode(cred.id()),
            "public_key": B64URL.encode(cred.public_key_sec1()),
            "counter": 0, "added_at": 1, "last_seen": null,
        }]});
        std::fs::write(&path, old.to_string()).unwrap();
        let old = read_phones(&path).unwrap();
        assert_eq!(old[0].rp_id, "");
        assert!(old[0].ssh_key(&old[0].rp_id).is_none());
        let book = PhoneBook::open(path.clone(), Duration::ZERO).unwrap();
        book.fill_rp_id("signer.vmux.test").unwrap();
        drop(book);
        let filled = read_phones(&path).unwrap();
        let key = filled[0].ssh_key(&filled[0].rp_id).unwrap();
        assert_eq!(key.comment(), "pixel");
        assert_eq!(
            key.to_openssh().unwrap(),
            vmux_webauthn::openssh::authorized_keys_line(&cred, "signer.vmux.test", "pixel")
                .unwrap()
        );
    }

    #[test]
    fn push_subscriptions_checked_stored_bounded_and_gone_with_the_phone() {
        let (_dir, path, book) = testing::book();
        let cred = enrolled();
        book.add("pixel", &cred, "signer.vmux.test", 1).unwrap();
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key()
            .to_encoded_point(false);
        let key = B64URL.encode(point.as_bytes());
        let mut off_curve = point.as_bytes().to_vec();
        off_curve[64] ^= 1;
        let secret = B64URL.encode([9u8; 16]);
        let sub = |e: &str| PushSubscription::checked(e, &key, &secret, 2);
        assert!(sub("http://push.test/x").is_none());
        assert!(sub("https://").is_none());
        assert!(sub("https://push.test/a b").is_none());
        assert!(PushSubscription::checked("https://p.test/x", &secret, &secret, 2).is_none());
        assert!(PushSubscription::checked("https://p.test/x", &key, &key, 2).is_none());
        let off_curve = B64URL.encode(&off_curve);
        assert!(PushSubscription::checked("https://p.test/x", &off_curve, &secret, 2).is_none());
        assert!(sub(&format!("https://p.test/{}", "x".repeat(1100))).is_none());
        for i in 0..6 {
            book.subscribe("pixel", sub(&format!("https://p.test/{i}")).unwrap())
                .unwrap();
        }
        book.subscribe("pixel", sub("https://p.test/5").unwrap())
            .unwrap();
        assert!(matches!(
            book.subscribe("nokia", sub("https://p.test/9").unwrap()),
            Err(BookError::NoSuchPhone(_))
        ));
        drop(book);
        let phones = read_phones(&path).unwrap();
        let ends: Vec<_> = phones[0].push.iter().map(|s| s.endpoint.as_str()).collect();
        assert_eq!(
            ends,
            [
                "https://p.test/2",
                "https://p.test/3",
                "https://p.test/4",
                "https://p.test/5"
            ]
        );
        let book = PhoneBook::open(path.clone(), Duration::ZERO).unwrap();
        assert!(book.unsubscribe(Some("pixel"), "https://p.test/3").unwrap());
        assert!(!book.unsubscribe(Some("pixel"), "https://p.test/3").unwrap());
        assert!(!book.unsubscribe(Some("nokia"), "https://p.test/4").unwrap());
        assert!(book.unsubscribe(None, "https://p.test/4").unwrap());
        assert_eq!(book.list()[0].push.len(), 2);
        book.remove("pixel").unwrap();
        assert!(read_phones(&path).unwrap().is_empty());
    }

    #[test]
    fn a_credential_id_enrols_once_and_racing_assertions_never_move_the_counter_back() {
        let (_dir, path, book) = testing::book();
        let rp = rp();
        let mut auth = phone();
        let cred = register(&auth);
        book.add("pixel", &cred, "signer.vmux.test", 1).unwrap();
        // Another key under the same credential id.
        let mut thief = phone();
        thief.credential_id = auth.credential_id.clone();
        assert!(matches!(
            book.add("thief", &register(&thief), "signer.vmux.test", 2),
            Err(BookError::CredentialTaken(n)) if n == "pixel"
        ));
        assert_eq!(book.list().len(), 1);

        // Two assertions both verified against the stored counter 0 (as
        // two requests at once do), then recorded in the other order.
        let stored = book.by_credential(cred.id()).unwrap().credential().unwrap();
        let verify = |a: &vmux_webauthn::testing::Assertion| {
            vmux_webauthn::verify_assertion(
                &rp,
                &stored,
                b"x",
                &a.response(),
                vmux_webauthn::UserVerification::Required,
            )
            .unwrap()
        };
        let low = verify(&auth.get(b"x"));
        let high = verify(&auth.get(b"x"));
        assert!(high.counter() > low.counter());
        book.record_use("pixel", &high, 3).unwrap();
        assert!(matches!(
            book.record_use("pixel", &low, 4),
            Err(BookError::CounterWentBack)
        ));
        assert!(matches!(
            book.record_use("pixel", &high, 4),
            Err(BookError::CounterWentBack)
        ));
        drop(book);
        assert_eq!(read_phones(&path).unwrap()[0].counter, high.counter());
    }

    #[test]
    fn names() {
        assert!(valid_name("Anna's iPhone"));
        assert!(!valid_name(""));
        assert!(!valid_name(" x"));
        assert!(!valid_name("a\u{202e}b"));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
