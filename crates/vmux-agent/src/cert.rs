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
    let signer = shared.state().name_of(&signer_id);
    // Listed for the tray while the signer's person is asked.
    let entry = shared.board.begin(crate::board::WaitingRequest {
        id: 0,
        kind: vmux_proto::DecisionKind::Certificate,
        signer,
        key: "session certificate".into(),
        host: String::new(),
        user: String::new(),
        process: String::new(),
        namespace: String::new(),
        since_ms: 0,
    });
    let result = obtain(shared, automatic, signer_id, conn).await;
    entry.finish(&result);
    result
}

/// Asks `conn`'s CA, checks the answer, installs the certificate.
async fn obtain(
    shared: &Shared,
    automatic: bool,
    signer_id: String,
    conn: crate::signer_conn::SignerConn,
) -> Result<u64, SignFailure> {
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
    let phone_ca = matches!(
        PublicKey::from_bytes(&issued.ca_public_key).map(|k| k.algorithm()),
        Ok(Algorithm::SkEcdsaSha2NistP256)
    );
    if phone_ca {
        accept_phone_ca(shared, &conn, &signer_id, &issued.ca_public_key).await?;
    } else {
        pin_ca(shared, &signer_id, &issued.ca_public_key).await?;
    }
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
/// the CA key it names, and is valid now. A CA key that is a phone's
/// passkey (`sk-ecdsa`) signs in the WebAuthn format: that signature is
/// checked as sshd checks it, with user verification required.
fn check(key: &PrivateKey, issued: &IssuedCert) -> Result<Certificate, SignFailure> {
    let ca = PublicKey::from_bytes(&issued.ca_public_key).map_err(|_| SignFailure::BadSignature)?;
    let cert = if matches!(
        ca.key_data(),
        ssh_key::public::KeyData::SkEcdsaSha2NistP256(_)
    ) {
        use vmux_webauthn::openssh;
        match openssh::verify_sk_certificate(
            &issued.certificate,
            vmux_webauthn::UserVerification::Required,
        ) {
            Ok((parts, _)) => openssh::certificate_fields(&parts).ok(),
            Err(e) => {
                warn!(error = %e, "the certificate's passkey (phone CA) signature does not verify");
                None
            }
        }
    } else {
        Certificate::from_bytes(&issued.certificate)
            .ok()
            .filter(|c| c.verify_signature().is_ok())
    };
    let now = now_s();
    let ok = cert.as_ref().is_some_and(|cert| {
        cert.public_key() == key.public_key().key_data()
            && cert.signature_key() == ca.key_data()
            && cert.valid_after() <= now
            && now < cert.valid_before()
            && !cert.valid_principals().is_empty()
    });
    match cert {
        Some(cert) if ok => Ok(cert),
        _ => {
            warn!("the signer returned a certificate that does not check out; discarded");
            Err(SignFailure::BadSignature)
        }
    }
}

/// Whether `signer_id`'s key list, as last fetched, has `ca` as a phone's
/// passkey key.
fn lists_passkey(shared: &Shared, signer_id: &str, ca: &[u8]) -> bool {
    shared
        .state()
        .signers
        .iter()
        .find(|p| p.id == signer_id)
        .is_some_and(|p| p.keys.iter().any(|k| k.is_passkey() && k.blob == ca))
}

/// A certificate signed by a phone's passkey (`vmux signer run --ca
/// phone:NAME`) is accepted while its signer lists that passkey as a key
/// of an enrolled phone: every enrolled CA phone is a valid pin, and a
/// removed phone's key leaves the signer's list (fetched again here when
/// it is missing), and its CA with it. Nothing is written: the pin of a
/// software CA key stays as it is.
async fn accept_phone_ca(
    shared: &Shared,
    conn: &crate::signer_conn::SignerConn,
    signer_id: &str,
    ca: &[u8],
) -> Result<(), SignFailure> {
    if lists_passkey(shared, signer_id, ca) {
        return Ok(());
    }
    let _ = conn.refresh().await;
    if lists_passkey(shared, signer_id, ca) {
        return Ok(());
    }
    let fp = PublicKey::from_bytes(ca)
        .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
        .unwrap_or_else(|_| "an unreadable key".into());
    warn!(signer = %signer_id, ca = %fp, "certificate signed by a passkey the signer does not list (a removed phone?); discarded");
    Err(SignFailure::CaNotPinned)
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
            shared.board.touch();
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

#[cfg(test)]
mod tests {
    use super::*;
    use vmux_webauthn::testing::{put_string, SoftAuthenticator};
    use vmux_webauthn::{openssh, verify_assertion, verify_registration, RelyingParty};

    const RP: &str = "signer.vmux.test";
    const ORIGIN: &str = "https://signer.vmux.test:8443";
    const UV: vmux_webauthn::UserVerification = vmux_webauthn::UserVerification::Required;

    fn p256() -> PrivateKey {
        PrivateKey::random(
            &mut rand_core::OsRng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        )
        .unwrap()
    }

    /// A certificate for `subject` as a signer with `--ca phone:…` makes
    /// it: laid out by ssh-key, its signature key the passkey's, signed by
    /// the phone (the assertion over the to-be-signed bytes).
    fn phone_signed(subject: &PrivateKey) -> IssuedCert {
        let rp = RelyingParty::new(RP, ORIGIN).unwrap();
        let mut phone = SoftAuthenticator::new(RP, ORIGIN);
        let cred =
            verify_registration(&rp, b"enrol", &phone.create(b"enrol").response(), UV).unwrap();
        let ca = openssh::public_key(&cred, RP).to_bytes().unwrap();
        let now = now_s();
        let mut b = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut rand_core::OsRng,
            subject.public_key().key_data().clone(),
            now - 60,
            now + 3600,
        )
        .unwrap();
        b.valid_principal("alice").unwrap();
        let laid_out = b.sign(&p256()).unwrap().to_bytes().unwrap();
        let parts = openssh::certificate_parts(&laid_out).unwrap();
        let mut tbs = parts.tbs[..parts.tbs.len() - 4 - parts.signature_key.len()].to_vec();
        put_string(&mut tbs, &ca);
        let got = phone.get(&tbs);
        let v = verify_assertion(&rp, &cred, &tbs, &got.response(), UV).unwrap();
        let sig = openssh::webauthn_signature(&v, &tbs).unwrap();
        IssuedCert {
            certificate: openssh::certificate_with_signature(&tbs, &sig),
            ca_public_key: ca,
            valid_after: now - 60,
            valid_before: now + 3600,
        }
    }

    #[test]
    fn a_phone_signed_certificate_is_used_only_if_its_passkey_signature_verifies() {
        let subject = p256();
        let good = phone_signed(&subject);
        let cert = check(&subject, &good).expect("the phone-signed certificate checks out");
        assert_eq!(cert.valid_principals(), ["alice".to_owned()]);

        // Any byte of the signature changed: refused (the tail holds the
        // clientDataJSON, the middle the ECDSA signature).
        let n = good.certificate.len();
        let sig_at = n - openssh::certificate_parts(&good.certificate)
            .unwrap()
            .signature
            .len();
        for at in [sig_at + 60, sig_at + 100, n - 10] {
            let mut bad = good.clone();
            bad.certificate[at] ^= 1;
            assert!(
                check(&subject, &bad).is_err(),
                "signature byte {at} changed"
            );
        }
        // A changed principal (to-be-signed bytes): refused.
        let mut bad = good.clone();
        let at = bad
            .certificate
            .windows(5)
            .position(|w| w == b"alice")
            .unwrap();
        bad.certificate[at] = b'm';
        assert!(check(&subject, &bad).is_err());
        // Another phone's signature over the same body: refused.
        let other = phone_signed(&subject);
        let mut swapped = good.clone();
        let good_parts = openssh::certificate_parts(&good.certificate).unwrap();
        let other_parts = openssh::certificate_parts(&other.certificate).unwrap();
        swapped.certificate =
            openssh::certificate_with_signature(good_parts.tbs, other_parts.signature);
        assert!(check(&subject, &swapped).is_err());
        // Named CA not the one that signed: refused.
        let mut renamed = good.clone();
        renamed.ca_public_key = other.ca_public_key.clone();
        assert!(check(&subject, &renamed).is_err());
        // Not our key: refused.
        assert!(check(&p256(), &good).is_err());
    }
}
