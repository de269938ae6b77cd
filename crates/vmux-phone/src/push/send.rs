//! Sending Web Push (RFC 8030): while a decision waits and a phone that
//! can decide it has no page open, one push per *burst* to each of that
//! phone's subscriptions. A burst is the set of requests waiting for the
//! phone when its push went out; the next burst starts only once all of
//! those were answered or expired. Sending never sits on a decision's
//! path: each request to a push service runs in its own task with a
//! timeout, and a service that hangs, refuses or is busy only holds up
//! further pushes to itself.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use vmux_home::sync::lock;
use vmux_home::time::{now_ms, now_s};

use crate::book::PushSubscription;
use crate::desk::Waiting;
use crate::service::Phones;

/// The `Topic` of every push: a newer push replaces an older one still
/// queued at the push service.
pub const TOPIC: &str = "vmux-request";
/// The notification tag: one notification per burst on the phone.
const TAG: &str = "vmux-request";
/// How long one request to a push service may take, connecting included.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A VAPID JWT's lifetime (RFC 8292 allows at most 24 h).
const JWT_LIFETIME: u64 = 12 * 3600;
/// A cached JWT is made again when less than this is left of it.
const JWT_RENEW_BEFORE: u64 = 3600;
/// The first and longest back-off after a push service was busy or down.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// The longest title or body a push carries (characters): what a lock
/// screen shows in one glance.
const MAX_BODY: usize = 120;
/// Push services remembered (JWTs, back-offs): more than the phones'
/// subscriptions can name at once; beyond it the oldest state is dropped,
/// so a phone cycling through endpoints cannot grow the signer's memory.
const MAX_SERVICES: usize = 64;

/// `[web_push]` in `signer.toml`.
#[derive(Debug, Clone, Default)]
pub struct PushSettings {
    /// The VAPID `sub` claim: `mailto:ADDRESS` or an `https://` URL
    /// (default: the page's origin).
    pub subject: Option<String>,
    /// A CA certificate (PEM) trusted for push services besides the web
    /// PKI's roots.
    pub extra_ca_file: Option<PathBuf>,
}

/// Why Web Push cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushSetupError {
    /// The VAPID subject is not a contact.
    #[error("the Web Push subject must be mailto:ADDRESS or an https:// URL, got {0:?}")]
    Subject(String),
    /// The extra CA file cannot be used.
    #[error("{0}")]
    Ca(String),
    /// The HTTPS client could not be built.
    #[error("cannot build the HTTPS client for Web Push: {0}")]
    Client(String),
}

/// What became of a phone's last push, as `vmux signer phones` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PushStatus {
    /// When the last push was sent, Unix seconds.
    pub sent_at: Option<u64>,
    /// What the push service said, in words.
    pub result: Option<String>,
    /// When the phone's page opened or it decided after that push.
    pub answered_at: Option<u64>,
}

#[derive(Default)]
struct Backoff {
    until: Option<Instant>,
    step: Duration,
}

/// The sending side: the HTTPS client, VAPID JWTs per push service, and
/// what happened to each phone's pushes.
pub(crate) struct Sender {
    client: reqwest::Client,
    subject: String,
    jwts: Mutex<HashMap<String, (String, u64)>>,
    backoff: Mutex<HashMap<String, Backoff>>,
    status: Mutex<HashMap<String, PushStatus>>,
    /// Pushes to send again once their service's back-off ends.
    retry: Mutex<Vec<(String, String)>>,
    /// Endpoints with a request under way.
    in_flight: Mutex<HashSet<String>>,
    poke: Notify,
}

impl Sender {
    /// The sender for the page at `origin`.
    pub(crate) fn new(settings: &PushSettings, origin: &str) -> Result<Sender, PushSetupError> {
        let subject = settings
            .subject
            .clone()
            .unwrap_or_else(|| origin.to_owned());
        let contact = subject
            .strip_prefix("mailto:")
            .or_else(|| subject.strip_prefix("https://"))
            .is_some_and(|rest| {
                !rest.is_empty() && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
            });
        if !contact {
            return Err(PushSetupError::Subject(subject));
        }
        let mut b = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .connect_timeout(SEND_TIMEOUT)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vmux-signer/", env!("CARGO_PKG_VERSION")));
        if let Some(f) = &settings.extra_ca_file {
            let pem = std::fs::read(f)
                .map_err(|e| PushSetupError::Ca(format!("{}: {e}", f.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                PushSetupError::Ca(format!("{}: not a PEM certificate: {e}", f.display()))
            })?;
            b = b.add_root_certificate(cert);
        }
        let client = b
            .build()
            .map_err(|e| PushSetupError::Client(e.to_string()))?;
        Ok(Sender {
            client,
            subject,
            jwts: Mutex::default(),
            backoff: Mutex::default(),
            status: Mutex::default(),
            retry: Mutex::default(),
            in_flight: Mutex::default(),
            poke: Notify::new(),
        })
    }

    /// The phone's push status.
    pub(crate) fn status(&self, phone: &str) -> Option<PushStatus> {
        lock(&self.status).get(phone).cloned()
    }

    /// The phone opened its page or decided: its last push was answered.
    pub(crate) fn answered(&self, phone: &str) {
        if let Some(s) = lock(&self.status).get_mut(phone) {
            if s.sent_at.is_some() && s.answered_at < s.sent_at {
                s.answered_at = Some(now_s());
            }
        }
    }

    /// Forgets a removed phone.
    pub(crate) fn forget(&self, phone: &str) {
        lock(&self.status).remove(phone);
    }

    fn set_result(&self, phone: &str, result: String) {
        lock(&self.status)
            .entry(phone.to_owned())
            .or_default()
            .result = Some(result);
    }

    /// The `Authorization` header for push service `aud`, cached until
    /// near its expiry.
    fn authorization(&self, vapid: &crate::push::VapidKey, aud: &str) -> Option<String> {
        let now = now_s();
        if let Some((h, exp)) = lock(&self.jwts).get(aud) {
            if *exp > now + JWT_RENEW_BEFORE {
                return Some(h.clone());
            }
        }
        let key = match vapid.key() {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "no Web Push key: cannot push");
                return None;
            }
        };
        let exp = now + JWT_LIFETIME;
        let h = crate::push::vapid_authorization(&key, aud, exp, &self.subject);
        let mut jwts = lock(&self.jwts);
        if jwts.len() >= MAX_SERVICES {
            jwts.clear();
        }
        jwts.insert(aud.to_owned(), (h.clone(), exp));
        Some(h)
    }

    /// When the back-off for `aud` ends, if it is on.
    fn backing_off(&self, aud: &str) -> Option<Instant> {
        let b = lock(&self.backoff);
        b.get(aud)
            .and_then(|b| b.until)
            .filter(|t| *t > Instant::now())
    }

    fn back_off(&self, aud: &str, retry_after: Option<Duration>) -> Instant {
        let mut all = lock(&self.backoff);
        if all.len() >= MAX_SERVICES && !all.contains_key(aud) {
            let now = Instant::now();
            all.retain(|_, b| b.until.is_some_and(|t| t > now));
        }
        let b = all.entry(aud.to_owned()).or_default();
        b.step = (b.step * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
        let wait = retry_after
            .map(|d| d.clamp(Duration::from_secs(1), BACKOFF_MAX))
            .unwrap_or(b.step);
        let until = Instant::now() + wait;
        b.until = Some(until);
        until
    }

    fn recovered(&self, aud: &str) {
        lock(&self.backoff).remove(aud);
    }
}

/// A push service's origin (the JWT's `aud`), for an `https://` endpoint.
fn audience(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// What one burst announces, and to whom it is still to go.
struct Burst {
    ids: HashSet<String>,
    message: Vec<u8>,
    expires_at_ms: u64,
    todo: Vec<String>,
}

/// The push payload: the newest request's headline as a question (the
/// title) and who asks with which key from which program (the body, at
/// most [`MAX_BODY`] characters), or for several waiting how many from
/// whom; and its id. Never a fingerprint, command line, challenge, body or
/// signature. Its text is shortened until it fits one record
/// ([`crate::push::MAX_PAYLOAD`]), however it escapes.
fn message(mine: &[&Waiting]) -> Vec<u8> {
    let Some(newest) = mine.last() else {
        return Vec::new();
    };
    let h = &newest.headline;
    let question = if h.question.is_empty() {
        newest.title.clone()
    } else {
        h.question.clone()
    };
    let one_agent = mine.iter().all(|w| w.agent_id == newest.agent_id);
    let (title, body) = match mine.len() {
        1 => {
            let mut parts = vec![h.agent.clone()];
            if !h.key.is_empty() {
                parts.push(format!("key {}", h.key));
            }
            if !h.program.is_empty() {
                parts.push(h.program.clone());
            }
            (question, parts.join(" · "))
        }
        n if one_agent => (format!("{n} waiting from {}", h.agent), question),
        n => (
            format!("{n} requests waiting"),
            format!("{}: {question}", h.agent),
        ),
    };
    let mut room = MAX_BODY;
    loop {
        let out = serde_json::json!({
            "title": shorten(&title, room),
            "body": shorten(&body, room),
            "tag": TAG,
            "id": newest.id,
            "url": format!("/#request={}", newest.id),
            "waiting": mine.len(),
        })
        .to_string()
        .into_bytes();
        if out.len() <= crate::push::MAX_PAYLOAD || room == 0 {
            return out;
        }
        room /= 2;
    }
}

/// `text` in at most `max` characters, ending in `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// Sends pushes as decisions come and go and pages open and close, until
/// the desk is gone.
pub(crate) async fn run(phones: Arc<Phones>) {
    let mut desk = phones.desk.subscribe();
    let mut online = phones.online_changes();
    let mut bursts: HashMap<String, Burst> = HashMap::new();
    loop {
        let next = step(&phones, &mut bursts);
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = desk.changed() => if r.is_err() { return },
            r = online.changed() => if r.is_err() { return },
            _ = phones.push.poke.notified() => {}
            _ = sleep => {}
        }
    }
}

/// One look at the desk: ends the bursts that were answered, starts new
/// ones, sends what is due. Returns when to look again for a back-off.
fn step(phones: &Arc<Phones>, bursts: &mut HashMap<String, Burst>) -> Option<Instant> {
    let waiting = phones.desk.waiting();
    let retries = std::mem::take(&mut *lock(&phones.push.retry));
    let book = phones.book.list();
    bursts.retain(|name, _| book.iter().any(|p| &p.name == name));
    let mut next: Option<Instant> = None;
    for phone in &book {
        let mine: Vec<&Waiting> = waiting
            .iter()
            .filter(|w| w.for_phone(&phone.name))
            .collect();
        if let Some(b) = bursts.get(&phone.name) {
            if !mine.iter().any(|w| b.ids.contains(&w.id)) {
                bursts.remove(&phone.name);
            }
        }
        if phones.is_online(&phone.name) {
            // Its page shows the cards: nothing to wake.
            if let Some(b) = bursts.get_mut(&phone.name) {
                b.todo.clear();
            }
            continue;
        }
        if mine.is_empty() || phone.push.is_empty() {
            continue;
        }
        let b = bursts.entry(phone.name.clone()).or_insert_with(|| Burst {
            ids: mine.iter().map(|w| w.id.clone()).collect(),
            message: message(&mine),
            expires_at_ms: mine.iter().map(|w| w.expires_at_ms).max().unwrap_or(0),
            todo: phone.push.iter().map(|s| s.endpoint.clone()).collect(),
        });
        for (p, endpoint) in &retries {
            if p == &phone.name && !b.todo.contains(endpoint) {
                b.todo.push(endpoint.clone());
            }
        }
        let ttl = b.expires_at_ms.saturating_sub(now_ms()) / 1000;
        if ttl == 0 {
            b.todo.clear();
            continue;
        }
        let message = b.message.clone();
        b.todo.retain(|endpoint| {
            let Some(sub) = phone.push.iter().find(|s| &s.endpoint == endpoint) else {
                return false; // unsubscribed meanwhile
            };
            match send(phones, &phone.name, sub, &message, ttl) {
                Sent::Started | Sent::Dropped => false,
                Sent::Busy => true,
                Sent::Later(t) => {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    true
                }
            }
        });
    }
    next
}

enum Sent {
    /// A request is under way.
    Started,
    /// Nothing can be sent to this subscription (logged).
    Dropped,
    /// A request to this endpoint is still under way.
    Busy,
    /// Its push service is backing off until then.
    Later(Instant),
}

/// Starts one push request in its own task.
fn send(
    phones: &Arc<Phones>,
    phone: &str,
    sub: &PushSubscription,
    message: &[u8],
    ttl: u64,
) -> Sent {
    let s = &phones.push;
    let Some(aud) = audience(&sub.endpoint) else {
        return Sent::Dropped;
    };
    if let Some(until) = s.backing_off(&aud) {
        return Sent::Later(until);
    }
    let keys = (base64_decode(&sub.p256dh), base64_decode(&sub.auth));
    let (Some(p256dh), Some(auth)) = keys else {
        return Sent::Dropped;
    };
    let body = match crate::push::encrypt(&p256dh, &auth, message) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%phone, error = %e, "cannot encrypt a push for this subscription");
            return Sent::Dropped;
        }
    };
    let Some(authorization) = s.authorization(&phones.vapid, &aud) else {
        return Sent::Dropped;
    };
    if !lock(&s.in_flight).insert(sub.endpoint.clone()) {
        return Sent::Busy;
    }
    {
        let mut st = lock(&s.status);
        let e = st.entry(phone.to_owned()).or_default();
        e.sent_at = Some(now_s());
        e.result = Some("sending".into());
    }
    let request = s
        .client
        .post(&sub.endpoint)
        .header("TTL", ttl.to_string())
        .header("Urgency", "high")
        .header("Topic", TOPIC)
        .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::AUTHORIZATION, authorization)
        .body(body);
    let phones = phones.clone();
    let phone = phone.to_owned();
    let endpoint = sub.endpoint.clone();
    tracing::debug!(%phone, service = %aud, "sending a push");
    tokio::spawn(async move {
        let outcome = request.send().await;
        settle(&phones, &phone, &endpoint, &aud, outcome).await;
        lock(&phones.push.in_flight).remove(&endpoint);
        phones.push.poke.notify_one();
    });
    Sent::Started
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Records what the push service said, and acts on it: a gone
/// subscription is dropped, a busy or unreachable service backed off.
async fn settle(
    phones: &Arc<Phones>,
    phone: &str,
    endpoint: &str,
    aud: &str,
    outcome: Result<reqwest::Response, reqwest::Error>,
) {
    let s = &phones.push;
    let retry = |result: String, retry_after: Option<Duration>| {
        let until = s.back_off(aud, retry_after);
        let wait = until.saturating_duration_since(Instant::now()).as_secs();
        tracing::warn!(%phone, service = %aud, %result, "push not delivered; trying again in {wait} s");
        s.set_result(phone, format!("{result}; trying again in {wait} s"));
        lock(&s.retry).push((phone.to_owned(), endpoint.to_owned()));
    };
    let response = match outcome {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                "the push service did not answer in time".to_owned()
            } else if e.is_connect() {
                "cannot reach the push service".to_owned()
            } else {
                "the push request failed".to_owned()
            };
            retry(why, None);
            return;
        }
    };
    // The body is never read: only the status matters.
    let status = response.status();
    let code = status.as_u16();
    if status.is_success() {
        s.recovered(aud);
        tracing::info!(%phone, service = %aud, "push delivered to the push service");
        s.set_result(phone, format!("accepted by {aud}"));
    } else if code == 404 || code == 410 {
        tracing::info!(%phone, service = %aud, status = code, "the push subscription is gone: dropped");
        s.set_result(
            phone,
            format!("subscription gone (HTTP {code}) and dropped; opening the page on the phone subscribes again"),
        );
        let p = phones.clone();
        let endpoint = endpoint.to_owned();
        let removed =
            tokio::task::spawn_blocking(move || p.book.unsubscribe(None, &endpoint)).await;
        if !matches!(removed, Ok(Ok(_))) {
            tracing::warn!(%phone, "could not drop the gone push subscription");
        }
    } else if code == 429 || status.is_server_error() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        retry(format!("push service busy (HTTP {code})"), retry_after);
    } else {
        tracing::warn!(%phone, service = %aud, status = code, "the push service refused the push");
        s.set_result(phone, format!("refused by {aud} (HTTP {code})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_https_origins() {
        assert_eq!(
            audience("https://fcm.googleapis.com/fcm/send/abc").as_deref(),
            Some("https://fcm.googleapis.com")
        );
        assert_eq!(
            audience("https://push.test:8443/x?y").as_deref(),
            Some("https://push.test:8443")
        );
        assert_eq!(audience("http://push.test/x"), None);
        assert_eq!(audience("not a url"), None);
    }

    #[test]
    fn subjects_are_contacts() {
        let ok = |s: &str| {
            Sender::new(
                &PushSettings {
                    subject: Some(s.into()),
                    extra_ca_file: None,
                },
                "https://signer.test",
            )
            .is_ok()
        };
        assert!(ok("mailto:me@example.com"));
        assert!(ok("https://signer.test"));
        assert!(!ok("me@example.com"));
        assert!(!ok("mailto:"));
        assert!(!ok("mailto:a b"));
        assert!(Sender::new(&PushSettings::default(), "https://signer.test").is_ok());
    }

    #[test]
    fn the_payload_is_the_headline_as_a_question_and_who_asks_in_120_characters() {
        let w = |id: &str, agent_id: &str, host: &str| Waiting {
            id: id.into(),
            agent_id: agent_id.into(),
            headline: crate::desk::Headline {
                text: format!("laptop wants to log in to {host} as root"),
                question: format!("Log in to {host} as root?"),
                agent: "laptop".into(),
                key: "work".into(),
                program: "ssh".into(),
                marks: Vec::new(),
            },
            title: "SSH signature requested".into(),
            expires_at_ms: 1,
            only_phone: None,
        };
        let json = |m: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&m).unwrap();
        let a = w("a", "36da", "devbox");
        let m = json(message(&[&a]));
        assert_eq!(m["title"], "Log in to devbox as root?");
        assert_eq!(m["body"], "laptop · key work · ssh");
        assert_eq!(m["id"], "a");
        assert_eq!(m["url"], "/#request=a");
        assert_eq!(m["tag"], TAG);
        assert_eq!(m["waiting"], 1);
        // A burst of one agent: how many, from whom; the newest's id.
        let b = w("b", "36da", "prod");
        let m = json(message(&[&a, &b]));
        assert_eq!(m["title"], "2 waiting from laptop");
        assert_eq!(m["body"], "Log in to prod as root?");
        assert_eq!(m["id"], "b");
        let c = w("c", "77ee", "prod");
        assert_eq!(json(message(&[&a, &c]))["title"], "2 requests waiting");
        // Never the summary's fingerprints or command line; at most 120
        // characters however long the names are.
        let mut long = w("d", "36da", &"h".repeat(5000));
        long.headline.agent = "x".repeat(5000);
        let m = json(message(&[&long]));
        for field in ["title", "body"] {
            let t = m[field].as_str().unwrap();
            assert!(t.chars().count() <= MAX_BODY, "{field}: {t}");
            assert!(!t.contains("SHA256") && !t.contains("-F"), "{t}");
        }
        assert!(m["title"].as_str().unwrap().ends_with('…'));
        // Text that escapes to six bytes a character still fits.
        let mut escaping = w("e", "36da", &"\u{1}".repeat(400));
        escaping.headline.agent = "\u{2}".repeat(400);
        let m = message(&[&escaping]);
        assert!(m.len() <= crate::push::MAX_PAYLOAD, "{}", m.len());
        assert_eq!(json(m)["id"], "e");
    }

    #[tokio::test]
    async fn back_off_doubles_and_honours_retry_after_within_bounds() {
        let s = Sender::new(&PushSettings::default(), "https://signer.test").unwrap();
        let t0 = Instant::now();
        let a = s.back_off("https://p.test", None);
        assert!(a >= t0 + BACKOFF_FIRST && a < t0 + BACKOFF_FIRST * 2);
        let b = s.back_off("https://p.test", None);
        assert!(b >= t0 + BACKOFF_FIRST * 2);
        let c = s.back_off("https://p.test", Some(Duration::from_secs(100_000)));
        assert!(c <= Instant::now() + BACKOFF_MAX);
        assert!(s.backing_off("https://p.test").is_some());
        assert!(s.backing_off("https://other.test").is_none());
        s.recovered("https://p.test");
        assert!(s.backing_off("https://p.test").is_none());
    }
}
