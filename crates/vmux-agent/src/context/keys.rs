//! Key blobs as the agent sees them (a plain OpenSSH public key, or an
//! OpenSSH certificate): the key they hold, whether two blobs name the
//! same key, and fingerprints for display.

use ssh_key::public::KeyData;
use ssh_key::{Certificate, HashAlg, PublicKey};

use super::reader::Reader;

/// Suffix of every OpenSSH certificate algorithm name (PROTOCOL.certkeys).
const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// The algorithm name a key blob starts with (`ssh-ed25519`, …).
pub fn algorithm_name(blob: &[u8]) -> Option<&str> {
    Reader::new(blob).text()
}

/// Whether the blob is an OpenSSH certificate (by its algorithm name).
pub fn is_certificate(blob: &[u8]) -> bool {
    algorithm_name(blob).is_some_and(|n| n.ends_with(CERT_SUFFIX))
}

/// The public key a blob holds: the key itself, or a certificate's key.
/// `None` when the blob parses as neither.
pub fn key_data(blob: &[u8]) -> Option<KeyData> {
    if is_certificate(blob) {
        Certificate::from_bytes(blob)
            .ok()
            .map(|c| c.public_key().clone())
    } else {
        PublicKey::from_bytes(blob)
            .ok()
            .map(|k| k.key_data().clone())
    }
}

/// The plain public-key blob under a blob (itself for a plain key; the
/// certified key for a certificate).
pub fn plain_blob(blob: &[u8]) -> Option<Vec<u8>> {
    if is_certificate(blob) {
        PublicKey::from(key_data(blob)?).to_bytes().ok()
    } else {
        key_data(blob).map(|_| blob.to_vec())
    }
}

/// Whether two blobs hold the same public key, a certificate and its plain
/// key counting as the same (clients 8.9–10.2 send the plain key in sign
/// requests made for a certificate).
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return key_data(a).is_some();
    }
    match (key_data(a), key_data(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// `SHA256:…` of the key a blob holds.
pub fn fingerprint(blob: &[u8]) -> Option<String> {
    key_data(blob).map(|k| k.fingerprint(HashAlg::Sha256).to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ssh_key::certificate::{Builder, CertType};
    use ssh_key::{Algorithm, PrivateKey};

    pub(crate) fn ed25519() -> PrivateKey {
        PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).expect("keygen")
    }

    pub(crate) fn blob(key: &PrivateKey) -> Vec<u8> {
        key.public_key().to_bytes().expect("encode")
    }

    /// A host certificate for `key`, signed by a fresh CA.
    pub(crate) fn host_certificate(key: &PrivateKey) -> Vec<u8> {
        let ca = ed25519();
        let mut b = Builder::new_with_random_nonce(
            &mut rand_core::OsRng,
            key.public_key().key_data().clone(),
            0,
            u64::from(u32::MAX),
        )
        .expect("builder");
        b.cert_type(CertType::Host).expect("type");
        b.valid_principal("host.example").expect("principal");
        b.sign(&ca).expect("sign").to_bytes().expect("encode")
    }

    #[test]
    fn plain_keys_and_certificates() {
        let k = ed25519();
        let plain = blob(&k);
        let cert = host_certificate(&k);
        assert_eq!(algorithm_name(&plain), Some("ssh-ed25519"));
        assert!(!is_certificate(&plain));
        assert!(is_certificate(&cert));
        assert_eq!(key_data(&cert), key_data(&plain));
        assert_eq!(plain_blob(&cert).as_deref(), Some(plain.as_slice()));
        assert_eq!(plain_blob(&plain).as_deref(), Some(plain.as_slice()));
        assert!(same_key(&plain, &cert) && same_key(&cert, &plain) && same_key(&cert, &cert));
        assert!(!same_key(&plain, &blob(&ed25519())));
        let fp = fingerprint(&cert).expect("fingerprint");
        assert!(fp.starts_with("SHA256:"));
        assert_eq!(fingerprint(&plain), Some(fp));
    }

    #[test]
    fn garbage_is_no_key() {
        let k = blob(&ed25519());
        for cut in 0..k.len() {
            assert!(key_data(&k[..cut]).is_none(), "cut {cut}");
            assert!(!same_key(&k[..cut], &k[..cut]));
        }
        let mut long = k.clone();
        long.push(0);
        assert!(key_data(&long).is_none());
        assert!(fingerprint(b"").is_none());
        assert!(plain_blob(b"\0\0\0\x01x").is_none());
        // A certificate name on a blob that is not a certificate.
        let mut fake = Vec::new();
        crate::context::reader::put_string(&mut fake, b"ssh-ed25519-cert-v01@openssh.com");
        crate::context::reader::put_string(&mut fake, &[0; 32]);
        assert!(is_certificate(&fake) && key_data(&fake).is_none());
        assert!(!same_key(&fake, &fake));
    }
}
