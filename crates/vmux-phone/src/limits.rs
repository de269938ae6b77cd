//! What keeps the page available to its owner while strangers reach its
//! port: challenges that nobody else's requests can displace
//! ([`Tickets`]), per-source budgets ([`PerMinute`]), the client's address
//! behind a trusted proxy ([`client_ip`]) and the connection slots
//! ([`Slots`]).
//!
//! The rule throughout: a request that proves what it claims (a valid
//! assertion of an enrolled passkey, a live enrolment link, a signed-in
//! session) is never refused by limits that other people's requests
//! filled.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vmux_home::sync::lock;
use zeroize::Zeroizing;

/// How long a sign-in or action challenge works.
pub const TICKET_LIFETIME: Duration = crate::auth::CHALLENGE_LIFETIME;
/// Random bytes of a challenge.
const NONCE: usize = 16;
/// Bytes of its MAC (HMAC-SHA256, truncated).
const MAC: usize = 16;
/// A challenge: nonce ‖ expiry (ms since the signer started, big-endian)
/// ‖ MAC.
const TICKET_LEN: usize = NONCE + 8 + MAC;
/// Used challenges remembered (until they expire) so each works once.
/// Only a verified assertion of an enrolled passkey adds one, so
/// strangers cannot fill it; when full, a use is refused (never is one
/// forgotten early, which would allow a replay).
pub const MAX_SPENT: usize = 4096;

/// What a challenge is for: the MAC covers it, so a challenge for one
/// purpose (signing in; unpairing agent X) is refused for any other.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose<'a> {
    /// Signing in.
    SignIn,
    /// A change made from the page by a signed-in phone: `action` on
    /// `target` (e.g. `unpair` of an agent id).
    Action {
        phone: &'a str,
        action: &'a str,
        target: &'a str,
    },
}

impl Purpose<'_> {
    fn fields(&self) -> Vec<&[u8]> {
        match self {
            Purpose::SignIn => vec![b"vmux page sign-in v1"],
            Purpose::Action {
                phone,
                action,
                target,
            } => vec![
                b"vmux page action v1",
                phone.as_bytes(),
                action.as_bytes(),
                target.as_bytes(),
            ],
        }
    }
}

/// A challenge that [`Tickets::check`] found genuine, fresh and unused.
/// Only `check` makes one; [`Tickets::spend`] uses it up.
#[derive(Debug)]
pub(crate) struct Ticket {
    nonce: [u8; NONCE],
    expires: Instant,
}

/// Challenges that keep no state until used: each is a random nonce and
/// an expiry under a MAC with the signer's key (made at start, in memory
/// only), so any number of others' requests cannot evict the owner's.
pub(crate) struct Tickets {
    key: Zeroizing<[u8; 32]>,
    epoch: Instant,
    spent: Mutex<HashMap<[u8; NONCE], Instant>>,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets {
            key: Zeroizing::new(rand::random()),
            epoch: Instant::now(),
            spent: Mutex::new(HashMap::new()),
        }
    }
}

impl Tickets {
    fn mac(&self, purpose: &Purpose<'_>, nonce: &[u8], expiry: &[u8]) -> Hmac<Sha256> {
        // A 32-byte key is always a valid HMAC key.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for field in purpose.fields().into_iter().chain([nonce, expiry]) {
            // Fields are short (names, ids, URLs of at most a few KiB).
            m.update(&(field.len() as u32).to_be_bytes());
            m.update(field);
        }
        m
    }

    /// A new challenge for `purpose`, good for [`TICKET_LIFETIME`].
    pub fn issue(&self, purpose: &Purpose<'_>) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let expiry = (self.epoch.elapsed() + TICKET_LIFETIME).as_millis() as u64;
        let expiry = expiry.to_be_bytes();
        let tag = self.mac(purpose, &nonce, &expiry).finalize().into_bytes();
        let mut t = Vec::with_capacity(TICKET_LEN);
        t.extend_from_slice(&nonce);
        t.extend_from_slice(&expiry);
        t.extend_from_slice(&tag[..MAC]);
        t
    }

    /// The challenge `bytes`, if this signer issued it for `purpose`, it
    /// has not expired and it was not used.
    pub fn check(&self, purpose: &Purpose<'_>, bytes: &[u8]) -> Option<Ticket> {
        if bytes.len() != TICKET_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE);
        let (expiry, tag) = rest.split_at(8);
        self.mac(purpose, nonce, expiry)
            .verify_truncated_left(tag)
            .ok()?;
        let ms = u64::from_be_bytes(expiry.try_into().ok()?);
        let expires = self.epoch + Duration::from_millis(ms);
        if expires <= Instant::now() {
            return None;
        }
        let nonce: [u8; NONCE] = nonce.try_into().ok()?;
        if lock(&self.spent).contains_key(&nonce) {
            return None;
        }
        Some(Ticket { nonce, expires })
    }

    /// Uses a checked challenge up (after the assertion over it
    /// verified): false if it was used meanwhile, or too many are in use.
    pub fn spend(&self, t: Ticket) -> bool {
        let mut spent = lock(&self.spent);
        let now = Instant::now();
        spent.retain(|_, e| *e > now);
        if spent.len() >= MAX_SPENT || spent.contains_key(&t.nonce) {
            return false;
        }
        spent.insert(t.nonce, t.expires);
        true
    }
}

/// Sign-in begins allowed a minute from one source, where the source is
/// known (not behind a proxy whose header is not trusted). A begin keeps
/// no state, so this only bounds the work; the owner's page asks once in
/// about two minutes.
pub const MAX_BEGINS_PER_MINUTE: usize = 600;
/// Begins remembered for that count, at most.
pub const MAX_BEGINS_RECORDED: usize = 60_000;

/// The unit a source is counted as: its address, an IPv6 one as its /64.
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

/// Events in the last minute, per source and in all.
pub(crate) struct PerMinute {
    per_source: usize,
    total: Option<usize>,
    keep: usize,
    recent: Mutex<VecDeque<(IpAddr, Instant)>>,
}

impl PerMinute {
    /// At most `per_source` a minute from one source and `total` from
    /// everyone.
    pub const fn new(per_source: usize, total: usize) -> PerMinute {
        PerMinute {
            per_source,
            total: Some(total),
            keep: total,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// At most `per_source` a minute from one source, with no limit for
    /// everyone; at most `keep` events are remembered.
    pub const fn per_source(per_source: usize, keep: usize) -> PerMinute {
        PerMinute {
            per_source,
            total: None,
            keep,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn prune(recent: &mut VecDeque<(IpAddr, Instant)>) {
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) >= Duration::from_secs(60))
        {
            recent.pop_front();
        }
    }

    /// Whether another one from `ip` is within the budget.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let mut r = lock(&self.recent);
        Self::prune(&mut r);
        let src = source_of(ip);
        self.total.is_none_or(|t| r.len() < t)
            && r.iter().filter(|(s, _)| *s == src).count() < self.per_source
    }

    /// Counts one from `ip` (the record is bounded: past what is kept the
    /// oldest are dropped, which never makes anyone's budget smaller).
    pub fn record(&self, ip: IpAddr) {
        let mut r = lock(&self.recent);
        Self::prune(&mut r);
        r.push_back((source_of(ip), Instant::now()));
        while r.len() > self.keep {
            r.pop_front();
        }
    }
}

/// The client's address, and whether it is known to be the client's: a
/// direct connection's (`direct`: the page serves TLS itself), or behind
/// a reverse proxy that the signer is told to trust (`[web]
/// trust_forwarded_for`), the last address in `X-Forwarded-For` (the one
/// the proxy itself appended: whatever a client put before it is its own
/// say). Else the proxy's address, not known to be the client's.
pub(crate) fn client_addr(
    peer: IpAddr,
    headers: &HeaderMap,
    direct: bool,
    trust_forwarded: bool,
) -> (IpAddr, bool) {
    if direct {
        return (peer, true);
    }
    if !trust_forwarded {
        return (peer, false);
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .map_or((peer, false), |ip| (ip, true))
}

/// Connections served at once, in all.
pub const MAX_CONNECTIONS: usize = 128;
/// Of those, kept for requests with a signed-in phone's session cookie:
/// when strangers hold all the others, a signed-in phone still gets in.
pub const RESERVED_CONNECTIONS: usize = 16;
/// Connections from one source at once (its address; an IPv6 /64): room
/// for a few phones behind one NAT (a browser opens up to 6 to a host),
/// while one source cannot hold the general pool. Not applied behind a proxy (every connection
/// comes from the proxy).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 32;

/// The connection slots: a general pool, a reserve for signed-in phones,
/// and a count per source.
pub(crate) struct Slots {
    general: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            general: Arc::new(Semaphore::new(MAX_CONNECTIONS - RESERVED_CONNECTIONS)),
            reserved: Arc::new(Semaphore::new(RESERVED_CONNECTIONS)),
            per_source: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// A connection let in; its slot is free again when this is dropped.
pub(crate) struct Admission {
    /// Whether it holds a reserved slot: then each of its requests must
    /// carry a live session cookie.
    pub reserved: bool,
    _permit: OwnedSemaphorePermit,
    _source: Option<SourceCount>,
}

/// One connection counted against its source.
struct SourceCount {
    source: IpAddr,
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for SourceCount {
    fn drop(&mut self) {
        let mut m = lock(&self.map);
        if let Some(n) = m.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.source);
            }
        }
    }
}

impl Slots {
    /// A slot for a connection from `peer` (counted per source when
    /// `per_source`), or `None`: its source has its share, or every slot
    /// is taken.
    pub fn admit(&self, peer: IpAddr, per_source: bool) -> Option<Admission> {
        let source = if per_source {
            let source = source_of(peer);
            let mut m = lock(&self.per_source);
            let n = m.entry(source).or_default();
            if *n >= MAX_CONNECTIONS_PER_SOURCE {
                return None;
            }
            *n += 1;
            Some(SourceCount {
                source,
                map: self.per_source.clone(),
            })
        } else {
            None
        };
        // On `None` here the source's count is given back as it drops.
        let (permit, reserved) = match self.general.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => (self.reserved.clone().try_acquire_owned().ok()?, true),
        };
        Some(Admission {
            reserved,
            _permit: permit,
            _source: source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once_for_its_purpose_and_others_cannot_displace_it() {
        let t = Tickets::default();
        let mine = t.issue(&Purpose::SignIn);
        // Any number of others' challenges change nothing about it.
        for _ in 0..10_000 {
            t.issue(&Purpose::SignIn);
        }
        let unpair = Purpose::Action {
            phone: "pixel",
            action: "unpair",
            target: "agent1",
        };
        assert!(t.check(&unpair, &mine).is_none(), "another purpose");
        let mut forged = mine.clone();
        forged[NONCE] ^= 1; // a later expiry
        assert!(t.check(&Purpose::SignIn, &forged).is_none());
        assert!(t.check(&Purpose::SignIn, &mine[..10]).is_none());
        let ticket = t.check(&Purpose::SignIn, &mine).unwrap();
        assert!(t.spend(ticket));
        assert!(t.check(&Purpose::SignIn, &mine).is_none(), "used");
        let other = Purpose::Action {
            phone: "pixel",
            action: "unpair",
            target: "agent2",
        };
        let a = t.issue(&unpair);
        assert!(t.check(&other, &a).is_none(), "another target");
        assert!(t.check(&unpair, &a).is_some());
        // Two checks of one challenge before either spends: one wins.
        let (x, y) = (t.check(&unpair, &a).unwrap(), t.check(&unpair, &a).unwrap());
        assert!(t.spend(x));
        assert!(!t.spend(y));
    }

    #[test]
    fn budgets_per_source_and_forwarded_addresses() {
        let b = PerMinute::new(3, 5);
        let (a, c): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(b.allowed(a));
            b.record(a);
        }
        assert!(!b.allowed(a));
        assert!(b.allowed(c));
        b.record(c);
        b.record(c);
        assert!(!b.allowed(c), "the total");

        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4".parse().unwrap(),
        );
        assert_eq!(client_addr(peer, &h, true, true), (peer, true), "direct");
        assert_eq!(
            client_addr(peer, &h, false, false),
            (peer, false),
            "not trusted"
        );
        assert_eq!(
            client_addr(peer, &h, false, true),
            ("198.51.100.4".parse::<IpAddr>().unwrap(), true),
            "the address the proxy appended"
        );
        h.insert("x-forwarded-for", "nonsense".parse().unwrap());
        assert_eq!(client_addr(peer, &h, false, true), (peer, false));
    }

    #[test]
    fn slots_per_source_and_a_reserve() {
        let s = Slots::default();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_SOURCE)
            .map(|_| s.admit(stranger, true).unwrap())
            .collect();
        assert!(s.admit(stranger, true).is_none(), "one source's share");
        drop(held);
        let mut held = Vec::new();
        for i in 0..(MAX_CONNECTIONS - RESERVED_CONNECTIONS) {
            let ip: IpAddr = format!("10.0.{}.{}", i / 200, i % 200 + 1).parse().unwrap();
            held.push(s.admit(ip, true).unwrap());
        }
        assert!(held.iter().all(|a| !a.reserved));
        let owner: IpAddr = "192.0.2.200".parse().unwrap();
        let r = s.admit(owner, true).unwrap();
        assert!(r.reserved, "past the general pool, a reserved slot");
        let rest: Vec<_> = (1..RESERVED_CONNECTIONS)
            .map(|i| {
                s.admit(format!("10.9.0.{i}").parse().unwrap(), true)
                    .unwrap()
            })
            .collect();
        assert!(s.admit(owner, true).is_none(), "every slot taken");
        drop((r, rest));
        assert!(s.admit(owner, true).is_some());
    }
}
