//! Proof that a request comes from a signed-in phone: a [`SignedIn`],
//! which only a live session's cookie yields (`SignedIn::of`). The
//! page's handlers get one from the request (its extractor is in the
//! web module); the desk's checks of an approval take one, so an
//! approval cannot be checked for a phone that is not signed in.

use crate::auth::Sessions;

/// A signed-in phone: the session named by a cookie is open. Made only
/// inside this crate, from an open session (`SignedIn::of`).
#[derive(Debug)]
pub struct SignedIn {
    phone: String,
    token: String,
}

impl SignedIn {
    /// The phone signed in with session `token`, if that session is open.
    pub(crate) fn of(sessions: &Sessions, token: &str) -> Option<SignedIn> {
        sessions.phone(token).map(|phone| SignedIn {
            phone,
            token: token.to_owned(),
        })
    }

    /// The phone's name.
    pub fn phone(&self) -> &str {
        &self.phone
    }

    /// The session's token (the cookie's value).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// `phone`, signed in with a session of its own.
    pub(crate) fn signed_in(phone: &str) -> SignedIn {
        let sessions = Sessions::default();
        let token = sessions.open(phone);
        SignedIn::of(&sessions, &token).expect("a session just opened is open")
    }
}
