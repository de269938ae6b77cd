//! The agent's one session certificate: an ephemeral P-256 key that lives
//! only in this process's memory, with the certificate a signer's CA
//! issued for it. A leaf: obtaining and renewing it is [`crate::cert`]'s.

use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::failure::SignFailure;
use crate::origin::trust::LocalLogin;
use crate::verify::ClientSignature;

/// A certificate and its ephemeral private key. The key is never written
/// anywhere; it is zeroized when this is dropped.
pub struct SessionCert {
    key: p256::ecdsa::SigningKey,
    cert_blob: Vec<u8>,
    plain_blob: Vec<u8>,
    pub(crate) serial: u64,
    pub(crate) valid_before: u64,
    principals: Vec<String>,
    pub(crate) renewable: bool,
}

impl SessionCert {
    /// A certificate checked by [`crate::cert`], with its key.
    pub(crate) fn new(
        key: p256::ecdsa::SigningKey,
        cert_blob: Vec<u8>,
        plain_blob: Vec<u8>,
        serial: u64,
        valid_before: u64,
        principals: Vec<String>,
        renewable: bool,
    ) -> SessionCert {
        SessionCert {
            key,
            cert_blob,
            plain_blob,
            serial,
            valid_before,
            principals,
            renewable,
        }
    }

    /// Whether `blob` names this certificate: its own blob, or the plain
    /// public key (OpenSSH 8.9–10.2 clients send that when signing with a
    /// certificate).
    pub fn matches(&self, blob: &[u8]) -> bool {
        blob == self.cert_blob || blob == self.plain_blob
    }

    /// The certificate blob, as listed to clients.
    pub fn blob(&self) -> &[u8] {
        &self.cert_blob
    }

    /// Signs locally with the ephemeral key (ecdsa-sha2-nistp256), for a
    /// login that [`crate::origin::trust::local_login`] vouched for.
    pub(crate) fn sign(
        &self,
        data: &[u8],
        login: &LocalLogin,
    ) -> Result<ClientSignature, SignFailure> {
        use signature::Signer;
        let sig: p256::ecdsa::Signature = self.key.sign(data);
        ssh_key::Signature::try_from(sig)
            .and_then(|sig| ClientSignature::local(sig, login))
            .map_err(|_| SignFailure::BadSignature)
    }
}

/// What `status` says about the certificate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertStatus {
    /// `valid`, `expired` or `none`.
    pub state: &'static str,
    /// The brief's status line.
    pub line: String,
    /// End of validity, Unix seconds, when there is or was one.
    pub valid_until: Option<u64>,
    /// Serial of the current certificate.
    pub serial: Option<u64>,
    /// Principals of the current certificate.
    pub principals: Vec<String>,
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<SessionCert>>,
    expired_at: Option<u64>,
}

/// The agent's one certificate slot.
#[derive(Default)]
pub struct CertSlot {
    slot: RwLock<Slot>,
}

impl CertSlot {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Slot> {
        vmux_home::sync::read(&self.slot)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slot> {
        vmux_home::sync::write(&self.slot)
    }

    /// The valid certificate, if any, at `now`.
    pub fn current(&self, now: u64) -> Option<Arc<SessionCert>> {
        self.read()
            .current
            .as_ref()
            .filter(|c| now < c.valid_before)
            .cloned()
    }

    /// Drops the certificate and its key once expired. Returns whether it
    /// did.
    pub fn expire_if_due(&self, now: u64) -> bool {
        let mut s = self.write();
        match &s.current {
            Some(c) if now >= c.valid_before => {
                let until = c.valid_before;
                s.current = None;
                s.expired_at = Some(until);
                true
            }
            _ => false,
        }
    }

    /// Makes `cert` the current certificate.
    pub(crate) fn install(&self, cert: SessionCert) {
        let mut s = self.write();
        s.current = Some(Arc::new(cert));
        s.expired_at = None;
    }

    /// The status line and fields.
    pub fn status(&self, now: u64) -> CertStatus {
        self.expire_if_due(now);
        let s = self.read();
        match (&s.current, s.expired_at) {
            (Some(c), _) => CertStatus {
                state: "valid",
                line: format!(
                    "Certificate valid until {}",
                    vmux_home::time::utc(c.valid_before)
                ),
                valid_until: Some(c.valid_before),
                serial: Some(c.serial),
                principals: c.principals.clone(),
            },
            (None, Some(t)) => CertStatus {
                state: "expired",
                line: "Certificate expired — connect signer to renew".into(),
                valid_until: Some(t),
                serial: None,
                principals: Vec::new(),
            },
            (None, None) => CertStatus {
                state: "none",
                line: "No session certificate".into(),
                valid_until: None,
                serial: None,
                principals: Vec::new(),
            },
        }
    }
}
