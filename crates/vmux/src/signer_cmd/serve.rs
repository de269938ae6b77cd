//! `vmux signer run`: reads the flags and configuration, asks for the
//! passphrase, and hands over to `vmux-signer`, which assembles and serves
//! the signer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vmux_home::PrivateSocket;
use vmux_phone::{PageTls, Phones, TlsFiles};
use vmux_proto::WakeEndpoint;
use vmux_signer::approver::AnyApprover;
use vmux_signer::config::SignerConfig;
use vmux_signer::{SignerHome, WebListener};

use super::unlock_passphrase;
use crate::cli::RunArgs;
use crate::Failure;

pub(super) fn run(signer: &SignerHome, args: RunArgs) -> Result<ExitCode, Failure> {
    let RunArgs {
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
        web_name,
        web_origin,
        tls_cert,
        tls_key,
    } = args;
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
    let page = web_listen.map(|listen| PageFlags {
        listen,
        name: web_name,
        origin: web_origin,
        tls: tls_cert.zip(tls_key),
    });
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

/// `--web-listen`, `--web-name`, `--web-origin`, `--tls-cert`, `--tls-key`.
struct PageFlags {
    listen: String,
    name: Option<String>,
    origin: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
}

/// The phone page's parts, checked before anything starts: its listener
/// (bound here, so that a port in use fails first), its origin, the phone
/// book (this process becomes its writer) and its certificate.
///
/// Which certificate: `--tls-cert/--tls-key` when given; none (plain HTTP
/// behind a reverse proxy) on a loopback address with `--web-origin` and
/// no `--web-name`; otherwise the signer's own CA for the page's name:
/// `--web-name`, else the host of `--web-origin`, else `HOSTNAME.local`.
/// The origin, unless given, follows from the name and the port.
fn open_page(
    signer: &SignerHome,
    config: &SignerConfig,
    flags: &PageFlags,
) -> Result<(Arc<Phones>, Option<PageTls>, std::net::TcpListener), Failure> {
    let proxy = flags.tls.is_none()
        && flags.name.is_none()
        && flags.origin.is_some()
        && is_loopback(&flags.listen);
    let own_ca = flags.tls.is_none() && !proxy;
    if config.web_proxy.trust_forwarded_for && !proxy {
        return Err(Failure(
            "[web_proxy] trust_forwarded_for is for a phone page behind a reverse proxy (on a loopback address, with --web-origin and without --tls-cert, --tls-key or --web-name); a page that serves TLS itself sees each client's address".into(),
        ));
    }
    // The origin as given, checked before anything is bound or written.
    let given = flags
        .origin
        .as_deref()
        .map(vmux_phone::relying_party)
        .transpose()?;
    let name = match (&flags.name, &given) {
        (Some(n), _) => Some(n.to_owned()),
        (None, Some(rp)) => Some(rp.id().to_owned()),
        (None, None) if own_ca => Some(format!("{}.local", host_name())),
        (None, None) => None,
    };
    if let Some(n) = &name {
        // The CA's constraint and --web-name need a DNS name of two labels
        // or more; an origin given for TLS files or a proxy keeps the
        // relying party's own check, as before.
        if (own_ca || flags.name.is_some()) && !vmux_phone::valid_page_name(n) {
            return Err(Failure(
                vmux_phone::PageCaError::BadName(n.clone()).to_string(),
            ));
        }
        if let (Some(o), Some(rp)) = (&flags.origin, &given) {
            if rp.id() != n {
                return Err(Failure(format!(
                    "--web-origin {o} does not name --web-name {n}; give one of them, or the same name in both"
                )));
            }
        }
    }
    let Some(name) = name else {
        return Err(Failure(
            "with --tls-cert, give the page's name as --web-name NAME or its origin as --web-origin https://NAME[:PORT]".into(),
        ));
    };
    let listener = std::net::TcpListener::bind(&flags.listen).map_err(|e| {
        Failure(format!(
            "cannot serve the phone page on {}: {e}",
            flags.listen
        ))
    })?;
    let local = listener.local_addr()?;
    let origin = match &flags.origin {
        Some(o) => o.clone(),
        None if local.port() == 443 => format!("https://{name}"),
        None => format!("https://{name}:{}", local.port()),
    };
    let rp = vmux_phone::relying_party(&origin)?;
    let (tls, ca) = match &flags.tls {
        Some((cert, key)) => (Some(PageTls::Files(TlsFiles::load(cert, key)?)), None),
        None if proxy => (None, None),
        None => {
            let book = signer.phones_path();
            let ca = vmux_phone::PageCa::open(
                book.parent().unwrap_or(Path::new(".")),
                &name,
                config.page_certificate_seconds,
            )
            .map_err(|e| Failure(e.to_string()))?;
            (Some(PageTls::Own(ca.clone())), Some(ca))
        }
    };
    let push = vmux_phone::push::PushSettings {
        subject: config.web_push.subject.clone(),
        extra_ca_file: config.web_push.extra_ca_file.clone(),
    };
    let mut phones = Phones::open(rp, signer.phones_path(), Duration::from_secs(5), &push)
        .map_err(|e| Failure(e.to_string()))?
        .with_forwarded_for(config.web_proxy.trust_forwarded_for);
    if let Some(ca) = ca {
        phones = phones.with_own_ca(ca, local.ip());
    }
    Ok((Arc::new(phones), tls, listener))
}

/// Whether something else on this machine answers `name` over mDNS:
/// avahi-daemon (running: its socket is there) answers `HOSTNAME.local`.
/// The signer then does not announce the name itself, which avahi would
/// take as a conflict if the two gave different addresses.
fn answered_here(name: &str) -> bool {
    name == format!("{}.local", host_name()) && Path::new("/run/avahi-daemon/socket").exists()
}

/// This machine's host name, for the page's default name: lower case.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
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
    let web = page.map(|f| open_page(signer, &config, &f)).transpose()?;
    let approver = AnyApprover::parse(
        approve.as_deref().unwrap_or(&config.approve),
        web.as_ref().map(|(p, _, _)| p.desk().clone()),
    )
    .map_err(Failure)?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let pass = unlock_passphrase(signer, passphrase_file)?;
    let phones = web.as_ref().map(|(p, _, _)| p.clone());
    if let Some(p) = &phones {
        p.unlock_keys(pass.as_deref().map(String::as_str))
            .map_err(Failure)?;
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
        let web_listener = match web {
            Some((phones, tls, l)) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                tracing::info!(address = %l.local_addr()?, origin = %phones.origin(), "serving the phone page");
                let announce = phones
                    .own_ca()
                    .map(|ca| ca.name().to_owned())
                    .filter(|n| n.ends_with(".local") && !answered_here(n));
                Some((
                    WebListener {
                        listener: l,
                        tls,
                        announce,
                    },
                    phones.origin().to_owned(),
                ))
            }
            None => None,
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
