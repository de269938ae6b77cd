//! The signer's own certificate authority for the phone page, used when no
//! `--tls-cert/--tls-key` are given: a CA whose critical X.509 name
//! constraints permit only the page's DNS name (and names under it) and
//! exclude every IP address, and a leaf for that name signed by it.
//!
//! Files in the signer's state directory:
//! - `page-ca.key`: the CA's ECDSA P-256 key, an OpenSSH private key file
//!   (mode 0600) encrypted with the signer's passphrase when it has one,
//!   like `push-vapid.key`. It is kept, not discarded, so that the leaf is
//!   renewed before it expires without a new trust step on the phone.
//! - `page-ca.pem`: the CA certificate (public), its first line naming
//!   the page name it was made for.
//!
//! The leaf and its key live in memory only: a fresh one at every start
//! and at every renewal (when a third of its lifetime is left). Each
//! leaf is checked against the stored CA with rustls's WebPKI verifier
//! for the page's name before it is served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p256::pkcs8::EncodePrivateKey;
use p256::SecretKey;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints,
    SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::RootCertStore;
use tracing::{info, warn};
use vmux_home::sync::lock;

use crate::keyfile;

/// How long a page certificate lasts by default (30 days); it is renewed
/// when a third of that is left.
pub const DEFAULT_LEAF_SECONDS: u64 = 30 * 24 * 3600;

/// How long the CA certificate lasts (20 years): the phone trusts it once.
const CA_SECONDS: u64 = 20 * 365 * 24 * 3600;

/// A leaf's notBefore is this far in the past (clocks of phones drift).
const BACKDATE: u64 = 3600;

/// The first line of `page-ca.pem`, before the name.
const NAME_LINE: &str = "vmux phone page CA for ";

/// Why the page's own CA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PageCaError {
    /// Not a DNS name the CA can be constrained to.
    #[error("--web-name {0:?} is not a DNS name (lower-case letters, digits and hyphens in dot-separated labels, such as signer.example or myhost.local); an IP address cannot carry a passkey")]
    BadName(String),
    /// The stored CA was made for another name.
    #[error("the phone page's CA ({path}) vouches only for {made_for}, not for {name}; run the signer with --web-name {made_for}, or remove {path} and {key} to start over with a new CA (each phone must then trust the new one)")]
    OtherName {
        /// `page-ca.pem`.
        path: PathBuf,
        /// `page-ca.key`.
        key: PathBuf,
        /// The name the stored CA permits.
        made_for: String,
        /// The name asked for now.
        name: String,
    },
    /// A file is unreadable, half there, or does not go with the other.
    #[error("the phone page's CA cannot be used: {0}; remove page-ca.pem and page-ca.key in the signer's state directory to start over with a new CA (each phone must then trust the new one)")]
    Broken(String),
    /// The files cannot be read or written.
    #[error(transparent)]
    Home(#[from] vmux_home::HomeError),
}

/// Whether `name` is a DNS name a page can be served under: lower-case
/// letters, digits and hyphens, labels of 1 to 63 characters not starting
/// or ending with a hyphen, at least two labels, not all digits (never an
/// IP address).
pub fn valid_page_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && name.parse::<std::net::IpAddr>().is_err()
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        && labels.iter().all(|l| vmux_webauthn::is_dns_label(l))
}

/// The signer's own CA for the page named `name`, and the leaf it serves.
pub struct PageCa {
    name: String,
    key_path: PathBuf,
    cert_path: PathBuf,
    leaf_seconds: u64,
    /// The CA key while unlocked.
    key: Mutex<Option<SecretKey>>,
    encrypted: Mutex<bool>,
    /// The CA certificate, once made or read.
    ca_der: RwLock<Option<CertificateDer<'static>>>,
    /// The leaf served now, and when it expires (Unix seconds).
    leaf: RwLock<Option<(Arc<CertifiedKey>, u64)>>,
    unlocked: tokio::sync::Notify,
}

impl std::fmt::Debug for PageCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCa").field("name", &self.name).finish()
    }
}

fn broken(path: &Path, what: &str) -> PageCaError {
    PageCaError::Broken(format!("{}: {what}", path.display()))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn time_of(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX / 2))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl PageCa {
    /// The CA for `name` kept in `dir` (not unlocked yet), each leaf
    /// lasting `leaf_seconds`. Checks the name and, when a CA is stored,
    /// that it was made for this name; writes nothing.
    pub fn open(dir: &Path, name: &str, leaf_seconds: u64) -> Result<Arc<PageCa>, PageCaError> {
        if !valid_page_name(name) {
            return Err(PageCaError::BadName(name.to_owned()));
        }
        let ca = PageCa {
            name: name.to_owned(),
            key_path: dir.join("page-ca.key"),
            cert_path: dir.join("page-ca.pem"),
            leaf_seconds: leaf_seconds.max(2),
            key: Mutex::new(None),
            encrypted: Mutex::new(false),
            ca_der: RwLock::new(None),
            leaf: RwLock::new(None),
            unlocked: tokio::sync::Notify::new(),
        };
        vmux_home::remove_stale_temps(&ca.key_path);
        vmux_home::remove_stale_temps(&ca.cert_path);
        let cert = vmux_home::read_optional(&ca.cert_path)?;
        let key_there = ca.key_path.exists();
        match (cert, key_there) {
            (None, false) => {}
            (None, true) => return Err(broken(&ca.cert_path, "missing beside page-ca.key")),
            (Some(_), false) => return Err(broken(&ca.key_path, "missing beside page-ca.pem")),
            (Some(pem), true) => {
                let text = String::from_utf8(pem).map_err(|_| broken(&ca.cert_path, "not text"))?;
                let made_for = text
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix(NAME_LINE))
                    .map(str::trim)
                    .ok_or_else(|| broken(&ca.cert_path, "not a vmux page CA"))?;
                if made_for != name {
                    return Err(PageCaError::OtherName {
                        path: ca.cert_path.clone(),
                        key: ca.key_path.clone(),
                        made_for: made_for.to_owned(),
                        name: name.to_owned(),
                    });
                }
                let der = CertificateDer::from_pem_slice(text.as_bytes())
                    .map_err(|_| broken(&ca.cert_path, "holds no PEM certificate"))?;
                *vmux_home::sync::write(&ca.ca_der) = Some(der);
            }
        }
        Ok(Arc::new(ca))
    }

    /// The page's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the CA key (decrypting it with `passphrase`), or makes the
    /// CA at first (its key encrypted with `passphrase` if one is given);
    /// then makes a leaf if none is served or the one served is due for
    /// renewal.
    pub fn unlock(&self, passphrase: Option<&str>) -> Result<(), PageCaError> {
        let have_ca = vmux_home::sync::read(&self.ca_der).is_some();
        let key = if have_ca {
            self.read_key(passphrase)?
        } else {
            self.make_ca(passphrase)?
        };
        *lock(&self.key) = Some(key);
        if self.renew_due() {
            self.renew()?;
        }
        self.unlocked.notify_waiters();
        Ok(())
    }

    /// Forgets the CA key if its file is encrypted (the signer locked);
    /// the leaf is still served, and renewed once the signer is unlocked.
    pub fn lock(&self) {
        if *lock(&self.encrypted) {
            *lock(&self.key) = None;
        }
    }

    /// The CA certificate (DER), once unlocked or read.
    pub fn ca_der(&self) -> Option<Vec<u8>> {
        vmux_home::sync::read(&self.ca_der)
            .as_ref()
            .map(|d| d.to_vec())
    }

    /// The CA certificate's SHA-256 fingerprint, upper-case hex pairs
    /// joined by colons (as phones show it).
    pub fn fingerprint(&self) -> Option<String> {
        self.ca_der().map(|d| fingerprint(&d))
    }

    /// The leaf served now.
    pub(crate) fn current(&self) -> Option<Arc<CertifiedKey>> {
        vmux_home::sync::read(&self.leaf)
            .as_ref()
            .map(|(k, _)| k.clone())
    }

    fn renew_at(&self) -> Option<u64> {
        vmux_home::sync::read(&self.leaf)
            .as_ref()
            .map(|(_, not_after)| not_after.saturating_sub(self.leaf_seconds / 3))
    }

    fn renew_due(&self) -> bool {
        self.renew_at().is_none_or(|t| now_s() >= t)
    }

    /// Renews the leaf whenever it is due, for as long as the future runs.
    pub(crate) async fn keep_renewed(self: Arc<Self>) {
        loop {
            let wait = self
                .renew_at()
                .map_or(0, |t| t.saturating_sub(now_s()))
                .min(3600);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            if !self.renew_due() {
                continue;
            }
            let notified = self.unlocked.notified();
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.renew()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "the phone page's certificate is due for renewal and cannot be renewed now");
                    let _ = tokio::time::timeout(Duration::from_secs(60), notified).await;
                }
                Err(_) => return,
            }
        }
    }

    /// Signs a fresh leaf for the page's name with the CA key, checks it
    /// with the WebPKI verifier against the stored CA, and serves it.
    fn renew(&self) -> Result<(), PageCaError> {
        let ca_key = lock(&self.key)
            .clone()
            .ok_or_else(|| PageCaError::Broken("the signer is locked".into()))?;
        let ca_der = vmux_home::sync::read(&self.ca_der)
            .clone()
            .ok_or_else(|| PageCaError::Broken("no CA certificate".into()))?;
        let now = now_s();
        let not_after = now + self.leaf_seconds;
        let (leaf_der, leaf_key) = issue_leaf(&ca_key, &self.name, now, not_after)
            .map_err(|e| PageCaError::Broken(format!("cannot sign the page's certificate: {e}")))?;
        verify(&ca_der, &leaf_der, &self.name).map_err(|e| {
            PageCaError::Broken(format!(
                "{} does not vouch for a certificate signed with {} ({e})",
                self.cert_path.display(),
                self.key_path.display()
            ))
        })?;
        let signing = default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(leaf_key))
            .map_err(|e| PageCaError::Broken(e.to_string()))?;
        let certified = Arc::new(CertifiedKey::new(vec![leaf_der, ca_der], signing));
        *vmux_home::sync::write(&self.leaf) = Some((certified, not_after));
        info!(name = %self.name, not_after = %vmux_home::time::utc(not_after), "phone page certificate issued by the signer's own CA");
        Ok(())
    }

    fn read_key(&self, passphrase: Option<&str>) -> Result<SecretKey, PageCaError> {
        let pem = zeroize::Zeroizing::new(vmux_home::read(&self.key_path)?);
        keyfile::decode(&pem, passphrase, &self.encrypted)
            .map_err(|what| broken(&self.key_path, what))
    }

    /// Makes the CA: its key, then its certificate; a failure in between
    /// removes the key again, so that nothing is left half-made.
    fn make_ca(&self, passphrase: Option<&str>) -> Result<SecretKey, PageCaError> {
        let key = keyfile::random_key();
        let now = now_s();
        let der = ca_certificate(
            &key,
            &self.name,
            now.saturating_sub(BACKDATE),
            now + CA_SECONDS,
        )
        .map_err(|e| PageCaError::Broken(format!("cannot make the CA certificate: {e}")))?;
        let pem = keyfile::encode(
            &key,
            format!("vmux phone page CA for {}", self.name),
            passphrase,
        )
        .map_err(|_| broken(&self.key_path, "could not encode the new key"))?;
        vmux_home::write_private(&self.key_path, pem.as_bytes())?;
        let cert_pem = format!(
            "{NAME_LINE}{}\n{}",
            self.name,
            pem_of("CERTIFICATE", der.as_ref())
        );
        if let Err(e) = vmux_home::write_private(&self.cert_path, cert_pem.as_bytes()) {
            let _ = std::fs::remove_file(&self.key_path);
            return Err(e.into());
        }
        *lock(&self.encrypted) = passphrase.is_some();
        info!(name = %self.name, fingerprint = %fingerprint(der.as_ref()), "made the phone page's own CA");
        *vmux_home::sync::write(&self.ca_der) = Some(der);
        Ok(key)
    }
}

/// SHA-256 of `der`, upper-case hex pairs joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn pem_of(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `key` as an rcgen key pair (through PKCS#8, zeroized after).
fn key_pair(key: &SecretKey) -> Result<KeyPair, rcgen::Error> {
    let der = key
        .to_pkcs8_der()
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.as_bytes()),
        &PKCS_ECDSA_P256_SHA256,
    )
}

/// The CA's parameters: everything its leaves' issuer field and key
/// identifier are made from is fixed by the name, so the issuer can be
/// rebuilt from the key and the name alone.
fn ca_params(
    name: &str,
    not_before: u64,
    not_after: u64,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vmux");
    dn.push(DnType::CommonName, format!("vmux phone page CA for {name}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(name.to_owned())],
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    });
    p.not_before = time_of(not_before);
    p.not_after = time_of(not_after);
    p.serial_number = Some(SerialNumber::from_slice(&serial()));
    Ok(p)
}

fn serial() -> [u8; 16] {
    let mut s: [u8; 16] = rand::random();
    s[0] &= 0x7f;
    s[0] |= 0x01;
    s
}

/// A self-signed CA certificate for `name` with `key`.
pub(crate) fn ca_certificate(
    key: &SecretKey,
    name: &str,
    not_before: u64,
    not_after: u64,
) -> Result<CertificateDer<'static>, rcgen::Error> {
    let kp = key_pair(key)?;
    Ok(ca_params(name, not_before, not_after)?
        .self_signed(&kp)?
        .der()
        .clone())
}

/// A leaf for `name` signed by the CA key `ca_key` (the CA's issuer data
/// rebuilt from the name), with a fresh key.
fn issue_leaf(
    ca_key: &SecretKey,
    name: &str,
    now: u64,
    not_after: u64,
) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), rcgen::Error> {
    let ca_kp = key_pair(ca_key)?;
    let issuer = ca_params(name, now, now + 1)?.self_signed(&ca_kp)?;
    let leaf_kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(vec![name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = time_of(now.saturating_sub(BACKDATE));
    p.not_after = time_of(not_after);
    p.serial_number = Some(SerialNumber::from_slice(&serial()));
    let cert = p.signed_by(&leaf_kp, &issuer, &ca_kp)?;
    let key = PrivatePkcs8KeyDer::from(leaf_kp.serialize_der());
    Ok((cert.der().clone(), key))
}

/// Whether `leaf` for `name` chains to `ca` as a browser checks it (the
/// WebPKI verifier, name constraints included).
pub fn verify(ca: &[u8], leaf: &[u8], name: &str) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.to_vec()))
        .map_err(|e| e.to_string())?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
            .build()
            .map_err(|e| e.to_string())?;
    let server = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.to_vec()),
            &[],
            &server,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::PrivateKey;

    /// A CA for signer.vmux.test made in a new directory, its key
    /// encrypted with "pass", unlocked: leaves last 60 s.
    fn unlocked_ca() -> (tempfile::TempDir, Arc<PageCa>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = PageCa::open(dir.path(), "signer.vmux.test", 60).unwrap();
        ca.unlock(Some("pass")).unwrap();
        (dir, ca)
    }

    #[test]
    fn page_names() {
        for good in [
            "signer.vmux.test",
            "myhost.local",
            "a-b.c1.example",
            "pi.tail12.ts.net",
        ] {
            assert!(valid_page_name(good), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "10.0.0.2",
            "::1",
            "[::1]",
            "localhost",
            "Signer.Test",
            "-a.test",
            "a-.test",
            "a..test",
            ".a.test",
            "a.test.",
            "sig ner.test",
            "signer.test:8443",
            "https://signer.test",
            "a_b.test",
            "1.2.3.4.5",
            "",
        ] {
            assert!(!valid_page_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_ca_vouches_for_its_name_only() {
        let (_dir, ca) = unlocked_ca();
        let ca_der = ca.ca_der().unwrap();
        let served = ca.current().unwrap();
        assert_eq!(served.cert.len(), 2);
        verify(&ca_der, &served.cert[0], "signer.vmux.test").unwrap();
        assert!(verify(&ca_der, &served.cert[0], "other.vmux.test").is_err());
        // The CA key signs a leaf for another name: the name constraints
        // make it worthless.
        let key = lock(&ca.key).clone().unwrap();
        let now = now_s();
        let ca_kp = key_pair(&key).unwrap();
        let issuer = ca_params("signer.vmux.test", now, now + 1)
            .unwrap()
            .self_signed(&ca_kp)
            .unwrap();
        for other in ["evil.test", "vmux.test", "google.com"] {
            let leaf_kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = CertificateParams::new(vec![other.to_owned()]).unwrap();
            p.use_authority_key_identifier_extension = true;
            p.not_before = time_of(now - 60);
            p.not_after = time_of(now + 600);
            let leaf = p.signed_by(&leaf_kp, &issuer, &ca_kp).unwrap();
            let e = verify(&ca_der, leaf.der(), other).unwrap_err();
            assert!(
                e.contains("NameConstraint") || e.contains("name constraint"),
                "{other}: {e}"
            );
        }
        // A leaf for an IP address: excluded.
        let leaf_kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["192.168.1.5".to_owned()]).unwrap();
        p.not_before = time_of(now - 60);
        p.not_after = time_of(now + 600);
        let leaf = p.signed_by(&leaf_kp, &issuer, &ca_kp).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der.clone())).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(default_provider()),
        )
        .build()
        .unwrap();
        let ip = ServerName::try_from("192.168.1.5").unwrap();
        assert!(verifier
            .verify_server_cert(leaf.der(), &[], &ip, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn a_restart_keeps_the_ca_and_another_name_is_refused() {
        let (dir, ca) = unlocked_ca();
        let fp = ca.fingerprint().unwrap();
        let first_leaf = ca.current().unwrap().cert[0].to_vec();
        let text = std::fs::read_to_string(dir.path().join("page-ca.key")).unwrap();
        assert!(text.contains("BEGIN OPENSSH PRIVATE KEY"));
        assert!(PrivateKey::from_openssh(&text).unwrap().is_encrypted());
        assert_eq!(
            vmux_home::mode_of(&dir.path().join("page-ca.key")).unwrap() & 0o777,
            0o600
        );

        let again = PageCa::open(dir.path(), "signer.vmux.test", 60).unwrap();
        assert_eq!(again.fingerprint().unwrap(), fp, "read before unlocking");
        assert!(matches!(
            again.unlock(Some("wrong")),
            Err(PageCaError::Broken(_))
        ));
        again.unlock(Some("pass")).unwrap();
        assert_eq!(again.fingerprint().unwrap(), fp);
        assert_ne!(again.current().unwrap().cert[0].to_vec(), first_leaf);

        let e = PageCa::open(dir.path(), "other.vmux.test", 60).unwrap_err();
        assert!(matches!(e, PageCaError::OtherName { .. }), "{e}");
        assert!(e.to_string().contains("signer.vmux.test"));
        std::fs::remove_file(dir.path().join("page-ca.key")).unwrap();
        assert!(matches!(
            PageCa::open(dir.path(), "signer.vmux.test", 60),
            Err(PageCaError::Broken(_))
        ));
    }
}
