//! The session certificate: an ephemeral P-256 key that lives only in this
//! process's memory ([`crate::cert_slot`]), certified by a signer's CA for
//! a bounded time, used to sign locally with no round trip and no prompt.
//! This module obtains, checks, renews and expires it.

use std::sync::Arc;
use std::time::Duration;

use ssh_key::{Algorithm, Certificate, EcdsaCurve, PrivateKey, PublicKey};
use tracing::{info, warn};
use vmux_proto::{CertRequest, IssuedCert};

use crate::cert_slot::SessionCert;
use crate::failure::SignFailure;
use crate::shared::Shared;
use vmux_home::time::now_s;

/// The comment the certificate is listed under.
pub const CERT_COMMENT: &str = "vmux-session-cert";

/// Longest wait for a certificate (the signer's person may be asked).
const CERT_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes a new ephemeral key, asks a connected signer's CA to certify it,
/// checks the answer and installs it.
pub async fn request(shared: &Shared, automatic: bool) -> Result<u64, SignFailure> {
    let (signer_id, conn) = shared.any_connected().ok_or(SignFailure::NoSigner)?;
    let key = PrivateKey::random(
        &mut rand_core::OsRng,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
    )
    .map_err(|_| SignFailure::BadSignature)?;
    let plain_blob = key
        .public_key()
        .to_bytes()
        .map_err(|_| SignFailure::BadSignature)?;
    let mut request_id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut request_id);
    let request = CertRequest {
        request_id,
        public_key_blob: plain_blob.clone(),
        validity_seconds: shared.config.cert_validity.as_secs(),
        automatic,
    };
    let issued = tokio::time::timeout(CERT_TIMEOUT, conn.certificate(request))
        .await
        .map_err(|_| SignFailure::TimedOut)??;
    let cert = check(&key, &issued)?;
    pin_ca(shared, &signer_id, &issued.ca_public_key).await?;
    let now = now_s();
    let valid_before = cert.valid_before();
    let serial = cert.serial();
    let renew_before = shared.config.cert_renew_before.as_secs();
    let renewable = valid_before.saturating_sub(now) > renew_before;
    if !renewable {
        warn!(
            valid_before,
            renew_before, "the certificate is shorter than the renewal threshold; it will not be renewed before it expires"
        );
    }
    let key = match key.key_data() {
        ssh_key::private::KeypairData::Ecdsa(ssh_key::private::EcdsaKeypair::NistP256 {
            private,
            ..
        }) => p256::ecdsa::SigningKey::from_slice(private.as_ref())
            .map_err(|_| SignFailure::BadSignature)?,
        _ => return Err(SignFailure::BadSignature),
    };
    shared.cert.install(SessionCert::new(
        key,
        issued.certificate,
        plain_blob,
        serial,
        valid_before,
        cert.valid_principals().to_vec(),
        renewable,
    ));
    info!(serial, valid_before, "session certificate installed");
    Ok(valid_before)
}

/// A certificate is accepted only if it certifies our key, is signed by
/// the CA key it names, and is valid now.
fn check(key: &PrivateKey, issued: &IssuedCert) -> Result<Certificate, SignFailure> {
    let cert =
        Certificate::from_bytes(&issued.certificate).map_err(|_| SignFailure::BadSignature)?;
    let ca = PublicKey::from_bytes(&issued.ca_public_key).map_err(|_| SignFailure::BadSignature)?;
    let now = now_s();
    let ok = cert.public_key() == key.public_key().key_data()
        && cert.signature_key() == ca.key_data()
        && cert.verify_signature().is_ok()
        && cert.valid_after() <= now
        && now < cert.valid_before()
        && !cert.valid_principals().is_empty();
    if ok {
        Ok(cert)
    } else {
        warn!("the signer returned a certificate that does not check out; discarded");
        Err(SignFailure::BadSignature)
    }
}

/// The first certificate from a pinned signer pins the CA key it was
/// signed by; a certificate from another CA key is refused afterwards
/// (`vmux agent forget` clears the pin with the signer's). A new pin is
/// on disk before the certificate is used.
async fn pin_ca(shared: &Shared, signer_id: &str, ca: &[u8]) -> Result<(), SignFailure> {
    let fp = |blob: &[u8]| {
        PublicKey::from_bytes(blob)
            .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
            .unwrap_or_else(|_| "an unreadable key".into())
    };
    let pinned = shared
        .state()
        .signers
        .iter()
        .find(|p| p.id == signer_id)
        .map(|p| p.ca_key.clone());
    match pinned {
        None => Err(SignFailure::LinkLost),
        Some(Some(k)) if k == ca => Ok(()),
        Some(Some(k)) => {
            let (got, want) = (fp(ca), fp(&k));
            warn!(signer = %signer_id, ca = %got, pinned = %want, "certificate from another CA key; discarded");
            crate::notice(&format!(
                "signer {signer_id} sent a certificate signed by CA {got}, but CA {want} is pinned for it; discarded (run `vmux agent forget {signer_id}` and pair again to accept a new CA)"
            ));
            Err(SignFailure::CaNotPinned)
        }
        Some(None) => {
            info!(signer = %signer_id, ca = %fp(ca), "pinned the signer's CA key");
            shared
                .update_state(|s| {
                    if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer_id) {
                        p.ca_key = Some(ca.to_vec());
                    }
                })
                .saved()
                .await;
            Ok(())
        }
    }
}

/// Keeps a certificate while signers are reachable: asks on every new
/// connection when there is none, renews once while fewer than
/// `cert_renew_before` seconds remain, drops it at expiry. An automatic
/// request that fails is not repeated until the next connection, so a
/// signer that says no is not asked again and again.
pub async fn maintain(shared: Arc<Shared>) {
    let mut sessions = shared.sessions();
    let mut tried: Option<(u64, Option<u64>)> = None;
    loop {
        let now = now_s();
        if shared.cert.expire_if_due(now) {
            crate::notice("session certificate expired; signing falls back to the signer");
        }
        let generation = *sessions.borrow_and_update();
        let current = shared.cert.current(now);
        let renew_before = shared.config.cert_renew_before.as_secs();
        let needed = match &current {
            None => true,
            Some(c) => c.renewable && c.valid_before.saturating_sub(now) <= renew_before,
        };
        let attempt = (generation, current.as_ref().map(|c| c.serial));
        if needed && shared.any_connected().is_some() && tried != Some(attempt) {
            tried = Some(attempt);
            match request(&shared, true).await {
                Ok(until) => info!(valid_before = until, "session certificate obtained"),
                Err(e) => info!(reason = %e, "no session certificate"),
            }
            continue;
        }
        let next = current.map(|c| {
            let renew_at = c.valid_before.saturating_sub(renew_before);
            if c.renewable && renew_at > now {
                renew_at
            } else {
                c.valid_before
            }
        });
        let sleep = next
            .map(|t| Duration::from_secs(t.saturating_sub(now).max(1)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            r = sessions.changed() => if r.is_err() { return },
        }
    }
}
