//! Checking a signer's signature before it reaches an SSH client.
//!
//! Every signature is verified against the key the client asked for, in
//! the algorithm it asked for. A security-key ECDSA key (a phone's
//! passkey, `sk-ecdsa-sha2-nistp256@openssh.com`) is checked as sshd
//! checks it ([`vmux_webauthn::openssh::verify_signature`]): rpIdHash =
//! SHA-256(application), clientDataJSON's exact prefix (type, challenge =
//! base64url of the data asked for, origin), UP set, ECDSA over
//! authenticatorData ‖ SHA-256(clientDataJSON); for the WebAuthn format
//! also UV set and an origin on the application's name. [`Counters`]
//! keeps each such key's signature counter and refuses (and flags) one
//! that does not move on: a cloned authenticator.

use std::collections::HashMap;
use std::sync::Mutex;

use signature::Verifier;
use ssh_key::{Algorithm, HashAlg, PublicKey, Signature};
use vmux_proto::{SSH_AGENT_RSA_SHA2_256, SSH_AGENT_RSA_SHA2_512};
use vmux_webauthn::openssh::{verify_signature, SkFormat};
use vmux_webauthn::{RelyingParty, UserVerification};

/// Why a signature was refused: which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key blob does not parse.
    #[error("the key does not parse")]
    BadKey,
    /// An RSA key without a SHA-2 flag (`ssh-rsa`, SHA-1).
    #[error("ssh-rsa (SHA-1) signatures are never used")]
    RsaSha1,
    /// The signature blob does not parse.
    #[error("the signature does not parse")]
    Unparseable,
    /// Another algorithm than the one the client asked for.
    #[error("the signature is {found}, not the {expected} asked for")]
    WrongAlgorithm {
        /// What was asked for.
        expected: String,
        /// What came.
        found: String,
    },
    /// The signature does not verify over the data.
    #[error("the signature does not verify over the data")]
    BadSignature,
    /// A security-key signature failed sshd's check.
    #[error("security-key signature refused: {0}")]
    Sk(vmux_webauthn::Error),
    /// A WebAuthn signature from a page that is not on the key's
    /// relying party.
    #[error("the WebAuthn origin is not on the key's relying party")]
    ForeignOrigin,
    /// The key's counter did not move on.
    #[error("the signature counter went from {stored} to {received}: a cloned authenticator?")]
    CounterBackwards {
        /// The last counter seen for the key.
        stored: u32,
        /// The counter of this signature.
        received: u32,
    },
}

/// What a signature that verified says of the authenticator, for a
/// security key: its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The signature counter of a security-key signature.
    pub sk_counter: Option<u32>,
}

/// A signature an SSH client may be given: one that verified against the
/// key, data and algorithm the client asked for ([`ClientSignature::check`]),
/// or one the session certificate's key made here for a login that
/// [`crate::origin::trust::local_login`] vouched for
/// ([`ClientSignature::local`]). Nothing else makes one, and the reply
/// writer ([`crate::wire::sign_response`]) takes nothing else, so a
/// signer's answer cannot reach a client unchecked.
pub(crate) struct ClientSignature {
    blob: Vec<u8>,
    sk_counter: Option<u32>,
}

impl ClientSignature {
    /// `sig_blob`, if it is a valid signature by `key_blob` over `data`
    /// for the `flags` the client sent.
    pub(crate) fn check(
        key_blob: &[u8],
        data: &[u8],
        flags: u32,
        sig_blob: Vec<u8>,
    ) -> Result<ClientSignature, Refusal> {
        let checked = check_signature(key_blob, data, flags, &sig_blob)?;
        Ok(ClientSignature {
            blob: sig_blob,
            sk_counter: checked.sk_counter,
        })
    }

    /// A signature the agent's own session-certificate key made, for a
    /// login it may serve.
    pub(crate) fn local(
        sig: Signature,
        _login: &crate::origin::trust::LocalLogin,
    ) -> Result<ClientSignature, ssh_key::Error> {
        Ok(ClientSignature {
            blob: Vec::<u8>::try_from(sig)?,
            sk_counter: None,
        })
    }

    /// The security-key counter of a checked passkey signature.
    pub(crate) fn sk_counter(&self) -> Option<u32> {
        self.sk_counter
    }

    /// The signature as the SSH agent protocol carries it.
    pub(crate) fn blob(&self) -> &[u8] {
        &self.blob
    }
}

/// Whether `sig_blob` is a valid signature by the key `key_blob` over
/// `data`, in the algorithm the client asked for with `flags`.
pub fn signature_is_valid(key_blob: &[u8], data: &[u8], flags: u32, sig_blob: &[u8]) -> bool {
    check_signature(key_blob, data, flags, sig_blob).is_ok()
}

/// Checks `sig_blob` by `key_blob` over `data` for the `flags` the client
/// sent; says which check failed.
pub fn check_signature(
    key_blob: &[u8],
    data: &[u8],
    flags: u32,
    sig_blob: &[u8],
) -> Result<Checked, Refusal> {
    let key = PublicKey::from_bytes(key_blob).map_err(|_| Refusal::BadKey)?;
    if let ssh_key::public::KeyData::SkEcdsaSha2NistP256(sk) = key.key_data() {
        return check_sk(sk.application(), key_blob, data, sig_blob);
    }
    let expected = match key.algorithm() {
        Algorithm::Rsa { .. } if flags & SSH_AGENT_RSA_SHA2_512 != 0 => Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa { .. } if flags & SSH_AGENT_RSA_SHA2_256 != 0 => Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
        Algorithm::Rsa { .. } => return Err(Refusal::RsaSha1),
        other => other,
    };
    let sig = Signature::try_from(sig_blob).map_err(|_| Refusal::Unparseable)?;
    if sig.algorithm() != expected {
        return Err(Refusal::WrongAlgorithm {
            expected: expected.as_str().to_owned(),
            found: sig.algorithm().as_str().to_owned(),
        });
    }
    Verifier::verify(&key, data, &sig).map_err(|_| Refusal::BadSignature)?;
    Ok(Checked { sk_counter: None })
}

/// sshd's check of either sk-ecdsa format (UP required), then for the
/// WebAuthn format (a phone's passkey) UV and an origin on the key's
/// relying party (its application).
fn check_sk(
    application: &str,
    key_blob: &[u8],
    data: &[u8],
    sig_blob: &[u8],
) -> Result<Checked, Refusal> {
    let v = verify_signature(key_blob, data, sig_blob, UserVerification::PresenceOnly)
        .map_err(Refusal::Sk)?;
    if v.format() == SkFormat::Webauthn {
        if !v.flags().user_verified() {
            return Err(Refusal::Sk(vmux_webauthn::Error::UserNotVerified));
        }
        let origin = v.origin().unwrap_or_default();
        if RelyingParty::new(application, origin).is_err() {
            return Err(Refusal::ForeignOrigin);
        }
    }
    Ok(Checked {
        sk_counter: Some(v.counter()),
    })
}

pub use vmux_control::agent::CounterAlarm;

/// Most alarms kept for the status.
const MAX_ALARMS: usize = 16;

/// The last signature counter seen per security key, in memory, and the
/// counters that went backwards.
#[derive(Default)]
pub struct Counters {
    last: Mutex<HashMap<Vec<u8>, u32>>,
    alarms: Mutex<Vec<CounterAlarm>>,
}

impl Counters {
    /// Records `received` for the key `key_blob`: refused when the stored
    /// or the received counter is non-zero and the received one is not
    /// greater (counters of 0 throughout are synced passkeys'), and then
    /// kept as an alarm.
    pub fn record(&self, key_blob: &[u8], fingerprint: &str, received: u32) -> Result<(), Refusal> {
        let mut last = vmux_home::sync::lock(&self.last);
        let stored = last.get(key_blob).copied().unwrap_or(0);
        if (stored != 0 || received != 0) && received <= stored {
            drop(last);
            let mut alarms = vmux_home::sync::lock(&self.alarms);
            if alarms.len() >= MAX_ALARMS {
                alarms.remove(0);
            }
            alarms.push(CounterAlarm {
                key: fingerprint.to_owned(),
                stored,
                received,
                at: vmux_home::time::now_s(),
            });
            return Err(Refusal::CounterBackwards { stored, received });
        }
        // Bounded by the keys the signers list (at most 256 per signer).
        if last.len() >= 4096 && !last.contains_key(key_blob) {
            last.clear();
        }
        last.insert(key_blob.to_vec(), received);
        Ok(())
    }

    /// The counters that did not move on, oldest first.
    pub fn alarms(&self) -> Vec<CounterAlarm> {
        vmux_home::sync::lock(&self.alarms).clone()
    }
}

#[cfg(test)]
mod tests;
