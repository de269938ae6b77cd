//! TLS for the phone page: the certificate and key from PEM files,
//! reloaded when the files change (tailnet and ACME certificates rotate),
//! or a leaf of the signer's own CA ([`PageCa`]), renewed in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::page_ca::PageCa;

/// Where the page's certificate comes from.
#[derive(Debug, Clone)]
pub enum PageTls {
    /// `--tls-cert` and `--tls-key`, reloaded when they change.
    Files(Arc<TlsFiles>),
    /// The signer's own CA: a leaf for the page's name, renewed before
    /// it expires.
    Own(Arc<PageCa>),
}

impl PageTls {
    /// A TLS acceptor that always presents the latest certificate, and a
    /// task (to spawn) that keeps it current.
    pub fn acceptor(
        &self,
    ) -> (
        TlsAcceptor,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) {
        match self {
            PageTls::Files(f) => {
                let (a, w) = f.acceptor();
                (a, Box::pin(w))
            }
            PageTls::Own(ca) => (
                acceptor(Arc::new(OwnResolver(ca.clone()))),
                Box::pin(ca.clone().keep_renewed()),
            ),
        }
    }
}

fn acceptor(resolver: Arc<dyn ResolvesServerCert>) -> TlsAcceptor {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth())
        .expect("ring supports the default TLS versions")
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

#[derive(Debug)]
struct OwnResolver(Arc<PageCa>);

impl ResolvesServerCert for OwnResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }
}

/// How often the files are looked at for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why the certificate files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// No certificate in the file.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    /// No usable key in the file.
    #[error("{0} holds no PEM private key that rustls can use (PKCS#8, SEC1 or PKCS#1)")]
    BadKey(PathBuf),
    /// The key does not belong to the certificate, or rustls refused it.
    #[error("the TLS certificate and key do not go together: {0}")]
    Mismatch(String),
}

/// The certificate and key files, and what was last loaded from them.
#[derive(Debug)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read(cert.to_owned(), e))?;
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read(key).map_err(|e| TlsError::Read(key.to_owned(), e))?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::BadKey(key.to_owned()))?;
    let provider = default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| TlsError::BadKey(key.to_owned()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(certified))
}

impl TlsFiles {
    /// Loads `cert` (PEM chain) and `key` (PEM private key).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<TlsFiles>, TlsError> {
        let loaded = load(cert, key)?;
        let stamp = modified(cert).max(modified(key));
        Ok(Arc::new(TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((loaded, stamp)),
        }))
    }

    /// Reloads the files if they changed since the last load. A change
    /// that does not load (half-written, mismatched) keeps the old
    /// certificate and is logged.
    pub fn reload_if_changed(&self) {
        let stamp = modified(&self.cert).max(modified(&self.key));
        if stamp == vmux_home::sync::read(&self.current).1 {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(k) => {
                *vmux_home::sync::write(&self.current) = (k, stamp);
                info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                warn!(error = %e, "TLS certificate changed but does not load; keeping the old one")
            }
        }
    }

    /// A TLS acceptor that always presents the latest certificate, and a
    /// task (to spawn) that watches the files.
    pub fn acceptor(
        self: &Arc<Self>,
    ) -> (TlsAcceptor, impl std::future::Future<Output = ()> + Send) {
        let acceptor = acceptor(Arc::new(Resolver(self.clone())));
        let me = self.clone();
        let watch = async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
            }
        };
        (acceptor, watch)
    }
}

#[derive(Debug)]
struct Resolver(Arc<TlsFiles>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(vmux_home::sync::read(&self.0.current).0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> Vec<u8> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
        c.cert.der().to_vec()
    }

    fn served(files: &TlsFiles) -> Vec<u8> {
        vmux_home::sync::read(&files.current).0.cert[0].to_vec()
    }

    #[test]
    fn a_rotated_certificate_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_cert(dir.path(), "signer.vmux.test");
        let files =
            TlsFiles::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        assert_eq!(served(&files), first);
        files.reload_if_changed();
        assert_eq!(served(&files), first);
        let second = write_cert(dir.path(), "signer.vmux.test");
        files.reload_if_changed();
        assert_eq!(served(&files), second, "the rotated certificate");
        // Half-written: the key does not match, keep the one that works.
        let other = rcgen::generate_simple_self_signed(vec!["x.test".to_owned()]).unwrap();
        std::fs::write(dir.path().join("key.pem"), other.key_pair.serialize_pem()).unwrap();
        files.reload_if_changed();
        assert_eq!(served(&files), second);
        assert!(matches!(
            TlsFiles::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")),
            Err(TlsError::Mismatch(_))
        ));
        std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
        assert!(matches!(
            TlsFiles::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")),
            Err(TlsError::NoCertificate(_))
        ));
    }
}
