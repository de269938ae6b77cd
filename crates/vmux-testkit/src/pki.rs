//! A throwaway certificate authority and one server certificate signed by
//! it, for HTTPS on loopback that a real browser trusts (through its NSS
//! database, see [`crate::browser`]) rather than one told to ignore
//! certificate errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A test CA and a server certificate for some DNS names, as PEM files in
/// a directory (and as DER in memory, for a rustls server in the test).
pub struct TestPki {
    ca_pem: PathBuf,
    cert_pem: PathBuf,
    key_pem: PathBuf,
    cert_der: Vec<u8>,
    ca_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestPki {
    /// Makes a CA ("vmux test CA", ECDSA P-256) and a server certificate
    /// for `names` (DNS names such as `signer.vmux.test`, or IP addresses)
    /// signed by it, valid from a day ago for 90 days, and writes
    /// `ca.pem`, `server.pem` (the leaf, then the CA) and `server-key.pem`
    /// (PKCS#8) into `dir` (created if missing).
    pub fn new(dir: &Path, names: &[&str]) -> TestPki {
        assert!(!names.is_empty(), "TestPki::new needs at least one name");
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // Now, in the `time` type rcgen wants, without depending on `time`.
        let now = rcgen::date_time_ymd(1970, 1, 1)
            + SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970");
        let not_before = now - Duration::from_secs(86_400);
        let not_after = now + Duration::from_secs(90 * 86_400);

        let ca_key = KeyPair::generate().expect("generate the test CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "vmux test CA");
        ca.distinguished_name
            .push(DnType::OrganizationName, "vmux tests");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the test CA");

        let key = KeyPair::generate().expect("generate the server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut leaf = CertificateParams::new(names.clone())
            .unwrap_or_else(|e| panic!("bad certificate names {names:?}: {e}"));
        leaf.distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = not_before;
        leaf.not_after = not_after;
        let cert = leaf
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("sign the server certificate");

        let pki = TestPki {
            ca_pem: dir.join("ca.pem"),
            cert_pem: dir.join("server.pem"),
            key_pem: dir.join("server-key.pem"),
            cert_der: cert.der().to_vec(),
            ca_der: ca_cert.der().to_vec(),
            key_der: key.serialize_der(),
        };
        let write = |path: &Path, text: String| {
            std::fs::write(path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        };
        write(&pki.ca_pem, ca_cert.pem());
        write(&pki.cert_pem, format!("{}{}", cert.pem(), ca_cert.pem()));
        write(&pki.key_pem, key.serialize_pem());
        pki
    }

    /// The CA certificate (PEM), to be trusted by the browser.
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// The server's certificate chain (PEM: the leaf, then the CA).
    pub fn cert_pem(&self) -> &Path {
        &self.cert_pem
    }

    /// The server's private key (PEM, PKCS#8).
    pub fn key_pem(&self) -> &Path {
        &self.key_pem
    }

    /// The server's certificate chain as DER (the leaf, then the CA).
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        vec![self.cert_der.clone(), self.ca_der.clone()]
    }

    /// The server's private key as PKCS#8 DER.
    pub fn key_der(&self) -> Vec<u8> {
        self.key_der.clone()
    }

    /// A rustls server configuration serving this certificate, offering
    /// `alpn` (e.g. `[b"h2"]`, or empty for none).
    pub fn rustls_server_config(&self, alpn: &[&[u8]]) -> rustls::ServerConfig {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let chain = self
            .chain_der()
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der()));
        let provider = rustls::crypto::ring::default_provider();
        let mut config = rustls::ServerConfig::builder_with_provider(provider.into())
            .with_safe_default_protocol_versions()
            .expect("rustls protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("rustls accepts the test certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}
