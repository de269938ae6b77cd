//! Which workstation notifications to show, replace and close, decided
//! from the agent's status and the clock. No I/O: `notify`
//! carries the [`Effect`]s out.
//!
//! - A **burst** is a stretch of time during which at least one request
//!   waits on the same signer. Once its oldest request has waited
//!   `after`, one notification says "Approve on NAME" (the first
//!   request's summary as its body); more requests in the same burst add
//!   nothing. When the burst ends, the notification is closed if every
//!   request was answered, and replaced by "Denied on NAME", "NAME did
//!   not answer" or "Request on NAME failed" otherwise. A burst that ends
//!   before `after` shows nothing.
//! - A waiting **pairing** shows its code, with Confirm and Deny, until
//!   it is no longer waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use vmux_control::agent::{Outcome, Status};

use crate::model::summary;

/// What a shown notification belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// The burst of requests waiting on this signer.
    Burst(String),
    /// The pairing with the signer at this address, with this code.
    Pairing(String, String),
}

/// One thing to do on the notification server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Show a notification; report its id with [`Notes::shown`].
    Show {
        /// What it is for.
        key: Key,
        /// Its summary (title).
        title: String,
        /// Its body.
        body: String,
        /// Action keys and labels.
        actions: Vec<(&'static str, &'static str)>,
    },
    /// Replace notification `id` with a short-lived one.
    Replace {
        /// The notification.
        id: u32,
        /// New title.
        title: String,
        /// New body.
        body: String,
    },
    /// Close notification `id`.
    Close {
        /// The notification.
        id: u32,
    },
}

impl Effect {
    /// The notification of a pairing waiting with `code` for the signer at
    /// `address`, with its Confirm and Deny buttons.
    pub fn pairing(address: &str, code: &str) -> Effect {
        Effect::Show {
            title: format!("Pairing code {code}"),
            body: format!("The signer at {address} wants to pair. Confirm only if the signer shows the same code, and approve it there too."),
            key: Key::Pairing(address.to_owned(), code.to_owned()),
            actions: vec![("confirm", "Same code: confirm"), ("deny", "Deny")],
        }
    }
}

#[derive(Debug)]
struct Burst {
    since_ms: u64,
    ids: BTreeSet<u64>,
    summary: String,
    shown: Option<u32>,
}

/// The notifications' state.
#[derive(Debug)]
pub struct Notes {
    after: Duration,
    bursts: BTreeMap<String, Burst>,
    pairings: BTreeMap<Key, Option<u32>>,
}

impl Notes {
    /// Notifications for requests that wait longer than `after`.
    pub fn new(after: Duration) -> Notes {
        Notes {
            after,
            bursts: BTreeMap::new(),
            pairings: BTreeMap::new(),
        }
    }

    /// The agent's status changed (or the agent went away: `None`).
    pub fn update(&mut self, status: Option<&Status>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let empty = Vec::new();
        let waiting = status.map_or(&empty, |s| &s.waiting);
        for w in waiting {
            let b = self
                .bursts
                .entry(w.signer.clone())
                .or_insert_with(|| Burst {
                    since_ms: w.since_ms,
                    ids: BTreeSet::new(),
                    summary: summary(w),
                    shown: None,
                });
            b.ids.insert(w.id);
            b.since_ms = b.since_ms.min(w.since_ms);
        }
        let ended: Vec<String> = self
            .bursts
            .keys()
            .filter(|signer| !waiting.iter().any(|w| &&w.signer == signer))
            .cloned()
            .collect();
        for signer in ended {
            let Some(b) = self.bursts.remove(&signer) else {
                continue;
            };
            // Not shown (or the server never answered with an id):
            // nothing to close or replace.
            let Some(id) = b.shown.filter(|id| *id != 0) else {
                continue;
            };
            let outcomes: Vec<(Outcome, &str)> = status
                .map(|s| {
                    s.finished
                        .iter()
                        .filter(|f| b.ids.contains(&f.id))
                        .map(|f| (f.outcome, f.reason.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            let worst = [Outcome::Denied, Outcome::Unanswered, Outcome::Failed]
                .into_iter()
                .find_map(|o| outcomes.iter().find(|(x, _)| *x == o));
            effects.push(match worst {
                None if status.is_some() => Effect::Close { id },
                None => Effect::Replace {
                    id,
                    title: format!("Request on {signer} ended"),
                    body: "the agent stopped".into(),
                },
                Some((Outcome::Denied, _)) => Effect::Replace {
                    id,
                    title: format!("Denied on {signer}"),
                    body: b.summary,
                },
                Some((Outcome::Unanswered, _)) => Effect::Replace {
                    id,
                    title: format!("{signer} did not answer"),
                    body: b.summary,
                },
                Some((_, reason)) => Effect::Replace {
                    id,
                    title: format!("Request on {signer} failed"),
                    body: (*reason).to_owned(),
                },
            });
        }
        // Pairings.
        let now: BTreeSet<Key> = status
            .into_iter()
            .flat_map(|s| &s.signers)
            .filter_map(|s| {
                s.pairing_code
                    .as_ref()
                    .map(|c| Key::Pairing(s.address.clone(), c.clone()))
            })
            .collect();
        let gone: Vec<Key> = self
            .pairings
            .keys()
            .filter(|k| !now.contains(k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(Some(id)) = self.pairings.remove(&k) {
                effects.push(Effect::Close { id });
            }
        }
        for k in now {
            if self.pairings.contains_key(&k) {
                continue;
            }
            self.pairings.insert(k.clone(), None);
            if let Key::Pairing(address, code) = &k {
                effects.push(Effect::pairing(address, code));
            }
        }
        effects
    }

    /// The notifications that are due at `now_ms` (Unix milliseconds),
    /// and when the next one will be.
    pub fn due(&mut self, now_ms: u64) -> (Vec<Effect>, Option<u64>) {
        let after = self.after.as_millis() as u64;
        let mut effects = Vec::new();
        let mut next: Option<u64> = None;
        for (signer, b) in &mut self.bursts {
            if b.shown.is_some() {
                continue;
            }
            let at = b.since_ms.saturating_add(after);
            if at <= now_ms {
                // Marked at once (id 0 until the server answers), so that
                // it is shown once.
                b.shown = Some(0);
                effects.push(Effect::Show {
                    key: Key::Burst(signer.clone()),
                    title: format!("Approve on {signer}"),
                    body: b.summary.clone(),
                    actions: Vec::new(),
                });
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        (effects, next)
    }

    /// The notification for `key` was shown with `id` (`None`: it could
    /// not be shown).
    pub fn shown(&mut self, key: &Key, id: Option<u32>) {
        match key {
            Key::Burst(signer) => {
                if let Some(b) = self.bursts.get_mut(signer) {
                    b.shown = id.or(Some(0));
                }
            }
            Key::Pairing(..) => {
                if let Some(slot) = self.pairings.get_mut(key) {
                    *slot = id;
                }
            }
        }
    }

    /// The pairing whose notification is `id`, if any.
    pub fn pairing_of(&self, id: u32) -> Option<&Key> {
        self.pairings
            .iter()
            .find(|(_, v)| **v == Some(id))
            .map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(waiting: serde_json::Value, finished: serde_json::Value) -> Status {
        serde_json::from_value(serde_json::json!({
            "name": "laptop", "id": "ab", "signers": [],
            "certificate": {"state": "none", "line": "No session certificate",
                             "valid_until": null, "serial": null, "principals": []},
            "keys": [], "pending_requests": 0,
            "waiting": waiting, "finished": finished,
        }))
        .unwrap()
    }

    fn waiting(id: u64, since_ms: u64) -> serde_json::Value {
        serde_json::json!({"id": id, "kind": "sign", "signer": "pi", "key": "work",
            "host": "example.org", "user": "anna", "process": "ssh", "namespace": "", "since_ms": since_ms})
    }

    #[test]
    fn one_notification_per_burst_closed_when_answered() {
        let mut n = Notes::new(Duration::from_millis(1000));
        assert!(n
            .update(Some(&status(
                serde_json::json!([waiting(1, 10_000)]),
                serde_json::json!([])
            )))
            .is_empty());
        let (e, next) = n.due(10_500);
        assert!(e.is_empty());
        assert_eq!(next, Some(11_000));
        n.update(Some(&status(
            serde_json::json!([waiting(1, 10_000), waiting(2, 10_600)]),
            serde_json::json!([]),
        )));
        let (e, next) = n.due(11_000);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            matches!(&e[0], Effect::Show { title, body, .. } if title == "Approve on pi" && body.contains("example.org"))
        );
        assert_eq!(next, None);
        n.shown(&Key::Burst("pi".into()), Some(7));
        assert!(n.due(20_000).0.is_empty(), "once per burst");
        let done = serde_json::json!([
            {"id": 1, "signer": "pi", "outcome": "answered", "reason": ""},
            {"id": 2, "signer": "pi", "outcome": "answered", "reason": ""}]);
        assert_eq!(
            n.update(Some(&status(serde_json::json!([]), done))),
            [Effect::Close { id: 7 }]
        );
    }

    #[test]
    fn a_denied_burst_says_so_and_a_quick_one_shows_nothing() {
        let mut n = Notes::new(Duration::from_millis(1000));
        n.update(Some(&status(
            serde_json::json!([waiting(1, 0)]),
            serde_json::json!([]),
        )));
        let quick =
            serde_json::json!([{"id": 1, "signer": "pi", "outcome": "answered", "reason": ""}]);
        assert!(n
            .update(Some(&status(serde_json::json!([]), quick)))
            .is_empty());
        assert!(n.due(5_000).0.is_empty());
        n.update(Some(&status(
            serde_json::json!([waiting(2, 0)]),
            serde_json::json!([]),
        )));
        n.due(1_000);
        n.shown(&Key::Burst("pi".into()), Some(3));
        let denied = serde_json::json!([{"id": 2, "signer": "pi", "outcome": "denied", "reason": "signer refused: userDenied"}]);
        let e = n.update(Some(&status(serde_json::json!([]), denied)));
        assert!(
            matches!(&e[..], [Effect::Replace { id: 3, title, .. }] if title == "Denied on pi"),
            "{e:?}"
        );
    }
}
