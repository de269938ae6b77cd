//! `vmux signer run`: reads the flags and configuration (`Settings`: each
//! flag given over its setting in signer.toml), asks for the
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
    let file: SignerConfig = vmux_home::load_toml(&signer.config_path())?;
    serve(signer, Settings::resolve(args, file)?)
}

/// What `vmux signer run` serves with: signer.toml (whose defaults fill
/// what it does not set) with each flag given in place of its setting.
struct Settings {
    /// signer.toml, its `listen`, `approve`, `ca` and wake settings
    /// replaced by the flags given.
    config: SignerConfig,
    passphrase_file: Option<PathBuf>,
    /// The wake endpoint of the merged wake settings, checked.
    wake: WakeEndpoint,
    advertise: bool,
    /// The phone page, with `--web-listen`.
    page: Option<PageFlags>,
}

impl Settings {
    /// `flags` over `config`, flag > file > default; fails on wake
    /// settings that do not make an endpoint.
    fn resolve(flags: RunArgs, mut config: SignerConfig) -> Result<Settings, Failure> {
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
        } = flags;
        if let Some(listen) = listen {
            config.listen = listen;
        }
        if let Some(approve) = approve {
            config.approve = approve;
        }
        config.ca = ca.or(config.ca);
        config.wake_url = wake_url.or(config.wake_url);
        config.apns_token = apns_token.or(config.apns_token);
        config.apns_topic = apns_topic.or(config.apns_topic);
        config.apns_sandbox |= apns_sandbox;
        let wake = wake_endpoint(
            config.wake_url.clone(),
            config.apns_token.clone(),
            config.apns_topic.clone(),
            config.apns_sandbox,
        )?;
        let page = web_listen.map(|listen| PageFlags {
            listen,
            name: web_name,
            origin: web_origin,
            tls: tls_cert.zip(tls_key),
        });
        Ok(Settings {
            config,
            passphrase_file,
            wake,
            advertise: !no_advertise,
            page,
        })
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

fn serve(signer: &SignerHome, settings: Settings) -> Result<ExitCode, Failure> {
    let Settings {
        config,
        passphrase_file,
        wake,
        advertise,
        page,
    } = settings;
    let web = page.map(|f| open_page(signer, &config, &f)).transpose()?;
    let approver = AnyApprover::parse(
        &config.approve,
        web.as_ref().map(|(p, _, _)| p.desk().clone()),
    )
    .map_err(Failure)?;
    let listen = config.listen.clone();
    let pass = unlock_passphrase(signer, passphrase_file.as_deref())?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, SignerCommand};

    /// `vmux signer run ARGS` as clap parses it.
    fn flags(args: &[&str]) -> RunArgs {
        let argv = ["vmux", "signer", "run"].iter().chain(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command:
                    Command::Signer {
                        command: SignerCommand::Run(flags),
                    },
                ..
            }) => flags,
            Ok(other) => panic!("{args:?} parsed as {other:?}"),
            Err(e) => panic!("{args:?} does not parse: {e}"),
        }
    }

    /// signer.toml from its text.
    fn file(text: &str) -> SignerConfig {
        match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => panic!("{text:?} does not parse: {e}"),
        }
    }

    fn resolve(args: &[&str], text: &str) -> Result<Settings, String> {
        Settings::resolve(flags(args), file(text)).map_err(|Failure(e)| e)
    }

    const FILE: &str = r#"
        listen = "127.0.0.1:1"
        approve = "desktop"
        ca = "phone:file"
        wake_url = "https://file.example/wake"
    "#;

    #[test]
    fn without_flags_or_file_the_defaults_hold() -> Result<(), String> {
        let s = resolve(&[], "")?;
        assert_eq!(s.config.listen, "0.0.0.0:7326");
        assert_eq!(s.config.approve, "tty");
        assert_eq!(s.config.ca, None);
        assert_eq!(s.wake, WakeEndpoint::None);
        assert!(s.advertise);
        assert!(s.page.is_none());
        assert!(s.passphrase_file.is_none());
        Ok(())
    }

    #[test]
    fn the_file_wins_over_the_defaults() -> Result<(), String> {
        let s = resolve(&[], FILE)?;
        assert_eq!(s.config.listen, "127.0.0.1:1");
        assert_eq!(s.config.approve, "desktop");
        assert_eq!(s.config.ca.as_deref(), Some("phone:file"));
        assert_eq!(
            s.wake,
            WakeEndpoint::Webhook {
                url: "https://file.example/wake".into()
            }
        );
        Ok(())
    }

    #[test]
    fn flags_win_over_the_file() -> Result<(), String> {
        let s = resolve(
            &[
                "--listen",
                "127.0.0.1:2",
                "--approve",
                "allow-all",
                "--ca",
                "software",
                "--wake-url",
                "https://flag.example/wake",
                "--no-advertise",
                "--passphrase-file",
                "/p",
            ],
            FILE,
        )?;
        assert_eq!(s.config.listen, "127.0.0.1:2");
        assert_eq!(s.config.approve, "allow-all");
        assert_eq!(s.config.ca.as_deref(), Some("software"));
        assert_eq!(
            s.wake,
            WakeEndpoint::Webhook {
                url: "https://flag.example/wake".into()
            }
        );
        assert!(!s.advertise);
        assert_eq!(s.passphrase_file, Some(PathBuf::from("/p")));
        Ok(())
    }

    #[test]
    fn each_wake_setting_comes_from_its_flag_or_the_file() -> Result<(), String> {
        let s = resolve(
            &["--apns-token", "ABCD", "--apns-topic", "org.example.app"],
            "apns_sandbox = true",
        )?;
        assert_eq!(
            s.wake,
            WakeEndpoint::Apns {
                device_token: "abcd".into(),
                topic: "org.example.app".into(),
                sandbox: true,
            }
        );
        let s = resolve(
            &["--apns-sandbox"],
            "apns_token = \"ab\"\napns_topic = \"t\"",
        )?;
        assert_eq!(
            s.wake,
            WakeEndpoint::Apns {
                device_token: "ab".into(),
                topic: "t".into(),
                sandbox: true,
            }
        );
        Ok(())
    }

    #[test]
    fn wake_settings_that_make_no_endpoint_are_refused() {
        let refused = |args: &[&str], text: &str| resolve(args, text).err();
        assert_eq!(
            refused(&["--apns-token", "ab", "--apns-topic", "t"], FILE).as_deref(),
            Some("give either a wake URL or an APNs token, not both")
        );
        assert_eq!(
            refused(&["--wake-url", "http://x"], "").as_deref(),
            Some("wake URL \"http://x\" must be an https:// URL")
        );
        assert_eq!(
            refused(&["--wake-url", "https://"], "").as_deref(),
            Some("wake URL \"https://\" must be an https:// URL")
        );
        assert_eq!(
            refused(&["--apns-token", "xyz", "--apns-topic", "t"], "").as_deref(),
            Some("the APNs device token must be hex")
        );
        assert_eq!(
            refused(&["--apns-token", "ab", "--apns-topic", ""], "").as_deref(),
            Some("the APNs topic must not be empty")
        );
        assert_eq!(
            refused(&[], "apns_token = \"ab\"").as_deref(),
            Some("an APNs token needs --apns-topic")
        );
    }

    #[test]
    fn the_page_flags_go_together() -> Result<(), String> {
        let s = resolve(
            &[
                "--web-listen",
                "127.0.0.1:8443",
                "--web-origin",
                "https://vmux.example",
                "--tls-cert",
                "/c",
                "--tls-key",
                "/k",
            ],
            "",
        )?;
        let Some(page) = s.page else {
            return Err("no page".into());
        };
        assert_eq!(page.listen, "127.0.0.1:8443");
        assert_eq!(page.name, None);
        assert_eq!(page.origin.as_deref(), Some("https://vmux.example"));
        assert_eq!(page.tls, Some((PathBuf::from("/c"), PathBuf::from("/k"))));
        Ok(())
    }
}
