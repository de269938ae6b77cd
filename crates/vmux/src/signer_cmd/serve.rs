//! `vmux signer run`: reads the flags and configuration, asks for the
//! passphrase, and hands over to `vmux-signer`, which assembles and serves
//! the signer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vmux_home::PrivateSocket;
use vmux_phone::{Phones, TlsFiles};
use vmux_proto::WakeEndpoint;
use vmux_signer::approver::AnyApprover;
use vmux_signer::config::SignerConfig;
use vmux_signer::{SignerHome, WebListener};

use super::unlock_passphrase;
use crate::cli::SignerCommand;
use crate::Failure;

pub(super) fn run(signer: &SignerHome, command: SignerCommand) -> Result<ExitCode, Failure> {
    match command {
        SignerCommand::Run {
            listen,
            approve,
            ca,
            no_advertise,
            passphrase_file,
            wake_url,
            apns_token,
            apns_topic,
            apns_sandbox,
            web_listen,
            web_origin,
            tls_cert,
            tls_key,
        } => {
            let mut config: SignerConfig = vmux_home::load_toml(&signer.config_path())?;
            if ca.is_some() {
                config.ca = ca;
            }
            let wake = wake_endpoint(
                wake_url.or(config.wake_url.clone()),
                apns_token.or(config.apns_token.clone()),
                apns_topic.or(config.apns_topic.clone()),
                apns_sandbox || config.apns_sandbox,
            )?;
            let page = match (web_listen, web_origin) {
                (Some(listen), Some(origin)) => Some(PageFlags {
                    listen,
                    origin,
                    tls: tls_cert.zip(tls_key),
                }),
                _ => None,
            };
            serve(
                signer,
                config,
                listen,
                approve,
                passphrase_file.as_deref(),
                wake,
                !no_advertise,
                page,
            )
        }
        other => Err(super::misrouted(&other)),
    }
}

/// The wake endpoint from flags and configuration, checked.
fn wake_endpoint(
    url: Option<String>,
    token: Option<String>,
    topic: Option<String>,
    sandbox: bool,
) -> Result<WakeEndpoint, Failure> {
    match (url, token, topic) {
        (Some(_), Some(_), _) => Err(Failure(
            "give either a wake URL or an APNs token, not both".into(),
        )),
        (Some(url), None, _) => {
            if !url.starts_with("https://") || url.len() <= "https://".len() {
                return Err(Failure(format!("wake URL {url:?} must be an https:// URL")));
            }
            Ok(WakeEndpoint::Webhook { url })
        }
        (None, Some(token), Some(topic)) => {
            if token.is_empty()
                || token.len() > 200
                || !token.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(Failure("the APNs device token must be hex".into()));
            }
            if topic.is_empty() {
                return Err(Failure("the APNs topic must not be empty".into()));
            }
            Ok(WakeEndpoint::Apns {
                device_token: token.to_ascii_lowercase(),
                topic,
                sandbox,
            })
        }
        (None, Some(_), None) => Err(Failure("an APNs token needs --apns-topic".into())),
        (None, None, _) => Ok(WakeEndpoint::None),
    }
}

/// `--web-listen`, `--web-origin`, `--tls-cert`, `--tls-key`.
struct PageFlags {
    listen: String,
    origin: String,
    tls: Option<(PathBuf, PathBuf)>,
}

/// The phone page's parts, checked before anything starts: its origin,
/// the phone book (this process becomes its writer) and the TLS files.
fn open_page(
    signer: &SignerHome,
    config: &SignerConfig,
    flags: &PageFlags,
) -> Result<(Arc<Phones>, Option<Arc<TlsFiles>>), Failure> {
    let rp = vmux_phone::relying_party(&flags.origin)?;
    if config.web_proxy.trust_forwarded_for && flags.tls.is_some() {
        return Err(Failure(
            "[web_proxy] trust_forwarded_for is for a phone page behind a reverse proxy (without --tls-cert and --tls-key); a page that serves TLS itself sees each client's address".into(),
        ));
    }
    let tls = match &flags.tls {
        Some((cert, key)) => Some(TlsFiles::load(cert, key)?),
        None => {
            if !is_loopback(&flags.listen) {
                return Err(Failure(format!(
                    "without --tls-cert and --tls-key the phone page listens only on a loopback address (behind a reverse proxy that terminates TLS), not {}",
                    flags.listen
                )));
            }
            None
        }
    };
    let push = vmux_phone::push::PushSettings {
        subject: config.web_push.subject.clone(),
        extra_ca_file: config.web_push.extra_ca_file.clone(),
    };
    let phones = Phones::open(rp, signer.phones_path(), Duration::from_secs(5), &push)
        .map_err(|e| Failure(e.to_string()))?
        .with_forwarded_for(config.web_proxy.trust_forwarded_for);
    Ok((Arc::new(phones), tls))
}

/// Whether HOST:PORT names a loopback host.
fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[allow(clippy::too_many_arguments)]
fn serve(
    signer: &SignerHome,
    config: SignerConfig,
    listen: Option<String>,
    approve: Option<String>,
    passphrase_file: Option<&Path>,
    wake: WakeEndpoint,
    advertise: bool,
    page: Option<PageFlags>,
) -> Result<ExitCode, Failure> {
    let web = page
        .as_ref()
        .map(|f| open_page(signer, &config, f))
        .transpose()?;
    let approver = AnyApprover::parse(
        approve.as_deref().unwrap_or(&config.approve),
        web.as_ref().map(|(p, _)| p.desk().clone()),
    )
    .map_err(Failure)?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let pass = unlock_passphrase(signer, passphrase_file)?;
    let phones = web.as_ref().map(|(p, _)| p.clone());
    if let Some(p) = &phones {
        p.unlock_push(pass.as_deref().map(String::as_str))
            .map_err(|e| Failure(format!("the Web Push key: {e}")))?;
    }
    let server = Arc::new(signer.assemble(
        &config,
        pass.as_deref().map(String::as_str),
        approver,
        wake,
        phones,
    )?);
    drop(pass);
    let rt = crate::runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {listen}: {e}")))?;
        let control_socket = PrivateSocket::bind(&signer.control_path())?;
        let addr = listener.local_addr()?;
        let web_listener = match (&page, web) {
            (Some(flags), Some((phones, tls))) => {
                let l = tokio::net::TcpListener::bind(&flags.listen)
                    .await
                    .map_err(|e| Failure(format!("cannot serve the phone page on {}: {e}", flags.listen)))?;
                tracing::info!(address = %l.local_addr()?, origin = %phones.origin(), "serving the phone page");
                Some((WebListener { listener: l, tls }, phones.origin().to_owned()))
            }
            _ => None,
        };
        let mut out = std::io::stdout().lock();
        if let Some((_, origin)) = &web_listener {
            writeln!(out, "phone page at {origin}")?;
        }
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        vmux_signer::serve(
            server,
            listener,
            &control_socket,
            web_listener.map(|(w, _)| w),
            advertise,
            crate::shutdown_signal(),
        )
        .await;
        Ok::<_, Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
