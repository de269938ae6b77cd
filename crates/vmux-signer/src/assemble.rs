//! Putting a running signer together from its home, and serving it: what
//! `vmux signer run` does once the command line is parsed and the
//! passphrase is known.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use vmux_home::PrivateSocket;
use vmux_proto::WakeEndpoint;

use crate::approver::{AnyApprover, Approver};
use crate::audit::{AuditKey, AuditLog};
use crate::ca::Ca;
use crate::checks::Freshness;
use crate::config::SignerConfig;
use crate::home::{SignerError, SignerHome};
use crate::paired::PairedAgents;
use crate::provider::KeyProvider;
use crate::server::{Server, ServerParts};

/// How long a starting signer waits for another writer of its state
/// (e.g. `vmux signer unpair` while it was stopped) to finish.
const STATE_LOCK_WAIT: Duration = Duration::from_secs(5);

impl SignerHome {
    /// The key of this signer's audit chain (from its identity, which
    /// `passphrase` decrypts when the signer has one).
    pub fn audit_key(&self, passphrase: Option<&str>) -> Result<AuditKey, SignerError> {
        Ok(AuditKey::from_identity(&self.identity(passphrase)?))
    }

    /// The running signer made of this home: it becomes the one writer of
    /// the state (see [`PairedAgents`]), opens its keys, tokens, CA and
    /// audit log with `passphrase`, and decides with `approver`; with
    /// `phones`, it serves the phone page too.
    pub fn assemble(
        &self,
        config: &SignerConfig,
        passphrase: Option<&str>,
        approver: AnyApprover,
        wake: WakeEndpoint,
        phones: Option<Arc<vmux_phone::Phones>>,
    ) -> Result<Server<AnyApprover>, SignerError> {
        self.state()?;
        let paired = PairedAgents::open(self.state_path(), STATE_LOCK_WAIT)?;
        vmux_home::remove_stale_temps(&self.state_path());
        let state = paired.snapshot();
        let identity = self.identity(passphrase)?;
        let audit = AuditLog::open(&self.audit_path(), AuditKey::from_identity(&identity))?;
        let mut providers: Vec<Box<dyn KeyProvider>> =
            vec![Box::new(self.software_keys(passphrase)?)];
        for t in self.open_tokens(passphrase)? {
            providers.push(Box::new(t));
        }
        match &phones {
            Some(p) => providers.push(Box::new(crate::provider::PasskeyKeys::new(p.clone()))),
            None => {
                let enrolled = vmux_phone::book::read_phones(&self.phones_path())
                    .map(|p| p.len())
                    .unwrap_or(0);
                if enrolled > 0 {
                    tracing::warn!(
                        phones = enrolled,
                        "the enrolled phones' passkey keys are not offered: this signer does not serve the phone page (--web-listen), and a passkey signs only there"
                    );
                }
            }
        }
        let ca_choice = crate::ca::CaChoice::parse(config.ca.as_deref().unwrap_or_default())
            .map_err(SignerError::Key)?;
        let phone_ca = ca_choice.phones().to_vec();
        if !phone_ca.is_empty() {
            let Some(p) = &phones else {
                return Err(SignerError::Key(
                    "a phone CA (--ca phone:NAME) signs certificates on the phone page: serve it with --web-listen and --web-origin".into(),
                ));
            };
            let enrolled = p.passkey_keys();
            for name in &phone_ca {
                if !enrolled.iter().any(|(r, _)| &r.name == name) {
                    tracing::warn!(phone = %name, "the CA names a phone that is not enrolled: it signs no certificate until it is");
                }
            }
        }
        Ok(Server::new(ServerParts {
            name: state.name,
            identity,
            providers,
            approver,
            paired,
            freshness: Freshness::default(),
            approval_timeout: Duration::from_secs(config.approval_timeout_seconds),
            ca: Some(Ca::load(&self.ca_path(), passphrase)?),
            cert_policy: config.certificates.clone(),
            phone_ca,
            window_max_seconds: config.max_approval_window_seconds,
            audit: Some(audit),
            wake,
            phones,
        }))
    }
}

/// The phone page's listener and TLS files (none behind a proxy).
pub struct WebListener {
    /// Where the page is served.
    pub listener: TcpListener,
    /// The certificate: files reloaded when they change, or the signer's
    /// own CA's leaf, renewed in place.
    pub tls: Option<vmux_phone::PageTls>,
    /// A `.local` name the signer answers over mDNS (with the page's
    /// address) while it advertises, when nothing else on this machine
    /// answers it.
    pub announce: Option<String>,
}

/// Serves agents on `listener` and control requests on `control`, and the
/// phone page on `web` when the signer has phones, advertising the signer
/// over mDNS when `advertise`, until `shutdown` resolves; then removes the
/// control socket.
pub async fn serve<A: Approver + 'static>(
    server: Arc<Server<A>>,
    listener: TcpListener,
    control: &PrivateSocket,
    web: Option<WebListener>,
    advertise: bool,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let page_addr = web
        .as_ref()
        .and_then(|w| Some((w.announce.clone()?, w.listener.local_addr().ok()?)));
    let _advertiser = if advertise {
        match vmux_link::mdns::Advertiser::start(server.name(), &server.id(), port) {
            Ok(mut a) => {
                if let Some((host, addr)) = page_addr {
                    match a.announce_page(server.name(), &host, addr.ip(), addr.port()) {
                        Ok(()) => {
                            tracing::info!(name = %host, "answering the phone page's name over mDNS")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, name = %host, "not answering the phone page's name over mDNS")
                        }
                    }
                }
                Some(a)
            }
            Err(e) => {
                tracing::warn!(error = %e, "not advertising on the local network");
                None
            }
        }
    } else {
        None
    };
    let page = async {
        match (web, server.phones()) {
            (Some(w), Some(phones)) => {
                let info: Arc<dyn vmux_phone::SignerInfo> = server.clone();
                vmux_phone::serve(w.listener, w.tls, phones.clone(), info).await
            }
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = server.clone().serve(listener) => {}
        _ = page => {}
        _ = crate::control::serve(server.clone(), control) => {}
        _ = shutdown => {}
    }
    control.remove();
}
