//! A login whose destination is proven: userauth data for the session of
//! a verified binding made for authentication.

use crate::bind::VerifiedBinding;
use crate::data;

/// A user-authentication request for the session of a verified,
/// non-forwarding binding, naming that binding's host key when it is
/// host-bound. Made only by [`VerifiedLogin::check`]: holding one means
/// the host key signed this session and the data logs in to it as
/// [`VerifiedLogin::user`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifiedLogin {
    host_key: Vec<u8>,
    host_key_fingerprint: String,
    user: String,
}

impl VerifiedLogin {
    /// The check, as OpenSSH's agent makes it: `data` is a userauth
    /// request for `binding`'s session, `binding` is not a forwarding
    /// one, and host-bound data names the binding's host key.
    pub fn check(binding: &VerifiedBinding, data: &[u8]) -> Option<VerifiedLogin> {
        let u = data::userauth(data)?;
        let matches = !binding.forwarded()
            && u.session_id == binding.session_id()
            && u.host_key
                .as_deref()
                .is_none_or(|h| h == binding.host_key());
        matches.then(|| VerifiedLogin {
            host_key: binding.host_key().to_vec(),
            host_key_fingerprint: binding.host_key_fingerprint(),
            user: u.user,
        })
    }

    /// The destination's host-key blob.
    pub fn host_key(&self) -> &[u8] {
        &self.host_key
    }

    /// `SHA256:…` of the destination's host key.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// The user logging in.
    pub fn user(&self) -> &str {
        &self.user
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{userauth, Host};

    #[test]
    fn only_a_login_for_the_bound_session_and_host_is_verified() {
        let host = Host::new();
        let b = host.binding(b"sid-1", false);
        let v = VerifiedLogin::check(&b, &userauth(b"sid-1", "git", Some(&host.blob))).unwrap();
        assert_eq!(v.user(), "git");
        assert_eq!(v.host_key(), host.blob);
        assert!(v.host_key_fingerprint().starts_with("SHA256:"));
        assert!(VerifiedLogin::check(&b, &userauth(b"sid-1", "git", None)).is_some());
        // Another session, another host key named, not userauth at all.
        assert!(VerifiedLogin::check(&b, &userauth(b"sid-2", "git", None)).is_none());
        let other = Host::new().blob;
        assert!(VerifiedLogin::check(&b, &userauth(b"sid-1", "git", Some(&other))).is_none());
        assert!(VerifiedLogin::check(&b, b"SSHSIG").is_none());
        // A forwarding binding never verifies a login.
        let fwd = host.binding(b"sid-1", true);
        assert!(VerifiedLogin::check(&fwd, &userauth(b"sid-1", "git", None)).is_none());
    }
}
