//! The WebAuthn core of the phone signer: checks of what a browser
//! returns, and their OpenSSH `sk-ecdsa` form. Pure functions, no I/O,
//! no state: the caller stores credentials and counters.
//!
//! # Brief overview
//!
//! - [`RelyingParty`]: the relying-party id (a DNS name, also the OpenSSH
//!   *application*) and the page's origin, validated once.
//! - [`verify_registration`] checks a `navigator.credentials.create`
//!   result (attestation `none`, or `packed` without trusting its
//!   statement) and yields a [`Credential`]: id, P-256 key, counter.
//! - [`verify_assertion`] checks a `navigator.credentials.get` result
//!   against a [`Credential`], the expected challenge and the UV policy;
//!   it is the only way to make a [`VerifiedAssertion`].
//! - [`Credential::record`] applies a verified assertion's counter.
//! - [`ApprovalRequest::challenge`]: the domain-separated challenge a
//!   phone signs to approve one decision.
//! - [`openssh`]: the credential as an `sk-ecdsa-sha2-nistp256@openssh.com`
//!   key; a verified assertion over the data to sign as a
//!   `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` signature; and
//!   [`openssh::verify_signature`], sshd's check of either sk-ecdsa format,
//!   the only way to make an [`openssh::VerifiedSkSignature`].
//! - [`Error`]: why a check refused, one variant per reason.
//! - `testing` (feature `testing`): a software authenticator for tests.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod approval;
mod assertion;
#[cfg(test)]
mod attack_tests;
mod authdata;
mod client_data;
mod error;
pub mod openssh;
mod registration;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use approval::{burst_challenge, ApprovalRequest, APPROVAL_LABEL, BURST_LABEL};
pub use assertion::{verify_assertion, AssertionResponse, VerifiedAssertion};
pub use error::Error;
pub use registration::{verify_registration, Credential, RegistrationResponse};

use sha2::{Digest, Sha256};

/// The relying party: its id (a DNS name; the OpenSSH application of the
/// passkey's SSH key) and the origin of the page that talks to the
/// authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    id: String,
    origin: String,
}

impl RelyingParty {
    /// A relying party for `id` (e.g. `signer.example.net`) served at
    /// `origin` (`https://signer.example.net[:PORT]`). The origin's host
    /// must be the id or a name under it; the id must be a DNS name, not
    /// an IP address.
    pub fn new(id: &str, origin: &str) -> Result<RelyingParty, Error> {
        if !is_dns_name(id) {
            return Err(Error::BadRpId);
        }
        let host_port = origin.strip_prefix("https://").ok_or(Error::BadOrigin)?;
        let host = match host_port.rsplit_once(':') {
            Some((host, port)) => {
                if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::BadOrigin);
                }
                match port.parse::<u16>() {
                    Ok(p) if p != 0 => host,
                    _ => return Err(Error::BadOrigin),
                }
            }
            None => host_port,
        };
        let under = host
            .strip_suffix(id)
            .is_some_and(|head| head.is_empty() || head.ends_with('.'));
        if !is_dns_name(host) || !under {
            return Err(Error::BadOrigin);
        }
        Ok(RelyingParty {
            id: id.to_owned(),
            origin: origin.to_owned(),
        })
    }

    /// The relying-party id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// SHA-256 of the id: the `rpIdHash` of authenticator data.
    pub fn id_hash(&self) -> [u8; 32] {
        Sha256::digest(self.id.as_bytes()).into()
    }
}

/// Lower-case LDH labels with at least one letter in the last label (so
/// never an IPv4 address), no IPv6 (no `:`), no trailing dot.
fn is_dns_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = s.split('.').collect();
    let ok = labels.iter().all(|l| is_dns_label(l));
    let last_has_letter = labels
        .last()
        .is_some_and(|l| l.bytes().any(|b| b.is_ascii_lowercase()));
    ok && last_has_letter
}

/// Whether `label` is one label of a DNS name as a relying-party id (or
/// the phone page's name) is written: 1 to 63 lower-case letters, digits
/// and hyphens, not starting or ending with a hyphen.
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The flags byte of authenticator data (WebAuthn §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    /// User present.
    pub const UP: u8 = 0x01;
    /// User verified.
    pub const UV: u8 = 0x04;
    /// Backup eligible (a synced passkey).
    pub const BE: u8 = 0x08;
    /// Backed up.
    pub const BS: u8 = 0x10;
    /// Attested credential data included.
    pub const AT: u8 = 0x40;
    /// Extension data included.
    pub const ED: u8 = 0x80;

    /// Flags from their byte.
    pub fn from_bits(bits: u8) -> Flags {
        Flags(bits)
    }

    /// The byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the user-present bit is set.
    pub fn user_present(self) -> bool {
        self.0 & Self::UP != 0
    }

    /// Whether the user-verified bit is set.
    pub fn user_verified(self) -> bool {
        self.0 & Self::UV != 0
    }
}

/// Whether a check requires the authenticator's user verification
/// (biometrics or PIN), beyond presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserVerification {
    /// The UV flag must be set.
    Required,
    /// User presence is enough.
    PresenceOnly,
}

/// User presence is always required; UV when the policy says so.
fn check_user(flags: Flags, uv: UserVerification) -> Result<(), Error> {
    if !flags.user_present() {
        return Err(Error::UserNotPresent);
    }
    if uv == UserVerification::Required && !flags.user_verified() {
        return Err(Error::UserNotVerified);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_accepts_dns_names_and_refuses_the_rest() {
        let rp = RelyingParty::new("signer.vmux.test", "https://signer.vmux.test:8443").unwrap();
        assert_eq!(rp.id(), "signer.vmux.test");
        assert!(RelyingParty::new("vmux.test", "https://signer.vmux.test").is_ok());
        for (id, origin) in [
            ("127.0.0.1", "https://127.0.0.1"),
            ("::1", "https://[::1]"),
            ("", "https://x"),
            ("Signer.test", "https://Signer.test"),
            ("a\"b.test", "https://a\"b.test"),
        ] {
            assert_eq!(
                RelyingParty::new(id, origin),
                Err(Error::BadRpId),
                "{id} {origin}"
            );
        }
        for origin in [
            "http://signer.test",
            "https://evilsigner.test",
            "https://signer.test.evil",
            "https://signer.test:",
            "https://signer.test:0",
            "https://signer.test:99999",
            "https://signer.test/",
            "https://signer.test\"",
        ] {
            assert_eq!(
                RelyingParty::new("signer.test", origin),
                Err(Error::BadOrigin),
                "{origin}"
            );
        }
    }
}
