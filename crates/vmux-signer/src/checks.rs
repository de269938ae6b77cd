//! Request checks done before any person is asked: the request's
//! freshness (its timestamps) and its nonce. ("Window" in vmux means an
//! approval window, see `decide`; request freshness is [`Freshness`].)

use std::collections::HashMap;
use std::sync::Mutex;

use vmux_proto::{ErrorCode, SignRequest, REQUEST_ID_LEN};

/// How fresh a request must be: the longest life a request may have, and
/// the most it may claim to come from the future (clock skew between the
/// devices).
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// Maximum `expires_at - issued_at`, and maximum age, in ms (60 000).
    pub max_ms: u64,
    /// Tolerated clock skew for `issued_at` in the future, in ms.
    pub skew_ms: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            max_ms: 60_000,
            skew_ms: 5_000,
        }
    }
}

impl Freshness {
    /// Checks a request's timestamps against `now_ms`.
    pub fn check(&self, req: &SignRequest, now_ms: u64) -> Result<(), ErrorCode> {
        let valid = req.expires_at_ms > req.issued_at_ms
            && req.expires_at_ms - req.issued_at_ms <= self.max_ms
            && req.issued_at_ms <= now_ms.saturating_add(self.skew_ms)
            && now_ms <= req.expires_at_ms
            && now_ms.saturating_sub(req.issued_at_ms) <= self.max_ms;
        if valid {
            Ok(())
        } else {
            Err(ErrorCode::RequestExpired)
        }
    }
}

/// Remembers nonces until their request expires; a nonce seen twice is a
/// replay. Bounded: when full, new requests are refused rather than
/// forgetting nonces that are still live.
pub struct ReplayGuard {
    seen: Mutex<HashMap<[u8; REQUEST_ID_LEN], u64>>,
    capacity: usize,
}

impl ReplayGuard {
    /// A guard holding at most `capacity` live nonces.
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Records `nonce` (live until `expires_at_ms`); errors if it was seen.
    pub fn check_and_record(
        &self,
        nonce: &[u8; REQUEST_ID_LEN],
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), ErrorCode> {
        let mut seen = vmux_home::sync::lock(&self.seen);
        if seen.contains_key(nonce) {
            return Err(ErrorCode::ReplayDetected);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, exp| *exp >= now_ms);
            if seen.len() >= self.capacity {
                return Err(ErrorCode::Internal);
            }
        }
        seen.insert(*nonce, expires_at_ms);
        Ok(())
    }
}

pub use vmux_home::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use vmux_proto::SignContext;

    fn req(issued: u64, expires: u64) -> SignRequest {
        SignRequest {
            request_id: [0; 16],
            key_blob: vec![],
            data: vec![],
            flags: 0,
            nonce: [1; 16],
            issued_at_ms: issued,
            expires_at_ms: expires,
            context: SignContext::default(),
        }
    }

    #[test]
    fn freshness() {
        let w = Freshness::default();
        let now = 1_000_000;
        assert!(w.check(&req(now, now + 60_000), now).is_ok());
        assert!(w.check(&req(now - 30_000, now + 30_000), now).is_ok());
        // Expired.
        assert_eq!(
            w.check(&req(now - 61_000, now - 1_000), now),
            Err(ErrorCode::RequestExpired)
        );
        // A life longer than 60 s.
        assert_eq!(
            w.check(&req(now, now + 60_001), now),
            Err(ErrorCode::RequestExpired)
        );
        // From the future beyond the skew.
        assert_eq!(
            w.check(&req(now + 6_000, now + 10_000), now),
            Err(ErrorCode::RequestExpired)
        );
        // Inverted.
        assert_eq!(
            w.check(&req(now, now - 1), now),
            Err(ErrorCode::RequestExpired)
        );
        // Overflow-safe.
        assert!(w.check(&req(u64::MAX - 1, u64::MAX), now).is_err());
    }

    #[test]
    fn replay() {
        let g = ReplayGuard::new(2);
        assert!(g.check_and_record(&[1; 16], 100, 0).is_ok());
        assert_eq!(
            g.check_and_record(&[1; 16], 100, 0),
            Err(ErrorCode::ReplayDetected)
        );
        assert!(g.check_and_record(&[2; 16], 100, 0).is_ok());
        // Full of live nonces: refuse rather than forget.
        assert_eq!(
            g.check_and_record(&[3; 16], 100, 50),
            Err(ErrorCode::Internal)
        );
        // Once they expire there is room again.
        assert!(g.check_and_record(&[3; 16], 300, 200).is_ok());
    }
}
