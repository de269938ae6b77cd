//! `vmux signer …`

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vmux_home::{Home, PrivateSocket};
use vmux_proto::WakeEndpoint;
use vmux_signer::approver::AnyApprover;
use vmux_signer::audit::{self, AuditLog};
use vmux_signer::ca::Ca;
use vmux_signer::checks::Freshness;
use vmux_signer::config::SignerConfig;
use vmux_signer::control::{self, Request};
use vmux_signer::paired::PairedAgents;
use vmux_signer::provider::pkcs11::{Pkcs11Keys, TokenConfig, TokenKeyType};
use vmux_signer::provider::{pem_is_encrypted, KeyProvider, KeyType, SoftwareKeys};
use vmux_signer::{Server, ServerParts, SignerHome};
use zeroize::Zeroizing;

use crate::cli::{KeyTypeArg, SignerCommand, TokenCommand};
use crate::{passphrase, Failure};

/// The signer's passphrase if it has one (checked against its CA key).
fn unlock_passphrase(
    signer: &SignerHome,
    file: Option<&Path>,
) -> Result<Option<Zeroizing<String>>, Failure> {
    if !signer.state()?.encrypted {
        return Ok(None);
    }
    let pass = passphrase::get(file, "Signer passphrase: ", false)?;
    signer.check_passphrase(&pass)?;
    Ok(Some(pass))
}

/// The key store, unlocked when the signer is encrypted.
fn open_keys(signer: &SignerHome, file: Option<&Path>) -> Result<SoftwareKeys, Failure> {
    let pass = unlock_passphrase(signer, file)?;
    Ok(signer.software_keys(pass.as_deref().map(String::as_str))?)
}

pub fn run(
    home: &Home,
    command: SignerCommand,
    home_flag: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let signer = SignerHome::new(home.clone());
    match command {
        SignerCommand::Init {
            name,
            no_passphrase,
            passphrase_file,
        } => {
            if name.trim().is_empty() {
                return Err(Failure("--name must not be empty".into()));
            }
            let pass = if no_passphrase {
                None
            } else {
                Some(passphrase::get(
                    passphrase_file.as_deref(),
                    "New signer passphrase: ",
                    true,
                )?)
            };
            let (identity, ca) = signer.init(&name, pass.as_deref().map(String::as_str))?;
            println!("Signer {name:?} created; id {}", identity.id());
            if pass.is_none() {
                println!("Keys are stored UNENCRYPTED (--no-passphrase).");
            }
            println!("CA key for TrustedUserCAKeys: {}", ca.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Keygen {
            comment,
            key_type,
            passphrase_file,
            token: Some(token),
        } => {
            let kind = match key_type {
                KeyTypeArg::Ecdsa => TokenKeyType::P256,
                KeyTypeArg::Rsa => TokenKeyType::Rsa(3072),
                KeyTypeArg::Ed25519 => TokenKeyType::Ed25519,
            };
            let pass = unlock_passphrase(&signer, passphrase_file.as_deref())?;
            let tokens = signer.open_tokens(pass.as_deref().map(String::as_str))?;
            let t = tokens.iter().find(|t| t.name() == token).ok_or_else(|| {
                Failure(format!(
                    "no token named {token:?}; see `vmux signer token list`"
                ))
            })?;
            let key = t.generate(kind, &comment)?;
            println!("{}", key.public.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Keygen {
            comment,
            key_type,
            passphrase_file,
            token: None,
        } => {
            let kind = match key_type {
                KeyTypeArg::Ecdsa => KeyType::Ecdsa,
                KeyTypeArg::Ed25519 => KeyType::Ed25519,
                KeyTypeArg::Rsa => KeyType::Rsa,
            };
            let key = open_keys(&signer, passphrase_file.as_deref())?.generate(kind, &comment)?;
            println!("{}", key.public.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Token {
            command:
                TokenCommand::Add {
                    module,
                    slot,
                    pin_file,
                    name,
                    passphrase_file,
                },
        } => {
            if !signer.state()?.encrypted {
                return Err(Failure(
                    "a token's PIN is stored only encrypted, and this signer has no passphrase (it was made with --no-passphrase)"
                        .into(),
                ));
            }
            let pass = unlock_passphrase(&signer, passphrase_file.as_deref())?.unwrap_or_default();
            let pin = passphrase::get(
                pin_file.as_deref(),
                &format!("PIN of token {name}: "),
                false,
            )?;
            let keys = Pkcs11Keys::open(TokenConfig {
                name: name.clone(),
                module: module.clone(),
                slot,
                pin: pin.clone(),
            })?;
            signer.add_token(&name, &module, slot, &pin, &pass)?;
            println!(
                "Token {name:?} registered; {} keys on it:",
                keys.keys().len()
            );
            for k in keys.keys() {
                println!("{}", k.list_line());
            }
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Token {
            command: TokenCommand::List,
        } => {
            let tokens = signer.tokens()?;
            if tokens.is_empty() {
                println!("No tokens registered.");
            }
            for t in tokens {
                println!(
                    "{}  {}  slot {}",
                    t.name,
                    t.module.display(),
                    t.slot.unwrap_or(0)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Import {
            file,
            passphrase_file,
            key_passphrase_file,
        } => {
            let pem = Zeroizing::new(vmux_home::read(&file)?);
            let encrypted = pem_is_encrypted(&pem).ok_or_else(|| {
                Failure(format!("{} is not an OpenSSH private key", file.display()))
            })?;
            let key_pass = if encrypted {
                Some(match &key_passphrase_file {
                    Some(f) => passphrase::get(Some(f), "", false)?,
                    None => passphrase::get(
                        None,
                        &format!("Passphrase for {}: ", file.display()),
                        false,
                    )?,
                })
            } else {
                None
            };
            let keys = open_keys(&signer, passphrase_file.as_deref())?;
            let key = keys.import(&pem, key_pass.as_deref().map(String::as_str))?;
            println!("{}", key.public.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Delete { fingerprint, yes } => {
            let keys = signer.software_keys(None)?;
            if !yes
                && !passphrase::confirm(&format!(
                    "Delete the key {fingerprint}? This cannot be undone."
                ))
            {
                return Err(Failure(
                    "not deleted (confirm on a terminal, or pass --yes)".into(),
                ));
            }
            let gone = keys.delete(&fingerprint)?;
            println!("Deleted {}", gone.list_line());
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Rename {
            fingerprint,
            comment,
            passphrase_file,
        } => {
            let key =
                open_keys(&signer, passphrase_file.as_deref())?.rename(&fingerprint, &comment)?;
            println!("{}", key.list_line());
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Keys {
            public_lines,
            passphrase_file,
        } => {
            let store = signer.software_keys(None)?;
            let mut keys = store.keys();
            let tokens = if signer.tokens()?.is_empty() {
                Vec::new()
            } else if passphrase_file.is_some() || std::env::var_os(passphrase::ENV).is_some() {
                let pass = unlock_passphrase(&signer, passphrase_file.as_deref())?;
                signer.open_tokens(pass.as_deref().map(String::as_str))?
            } else {
                eprintln!(
                    "(token keys are listed with the signer's passphrase: --passphrase-file FILE)"
                );
                Vec::new()
            };
            for t in &tokens {
                if let Some(why) = t.unavailable() {
                    eprintln!("token {}: UNAVAILABLE: {why}", t.name());
                }
                keys.extend(t.keys());
            }
            if keys.is_empty() {
                println!("The signer has no identities.");
                return Ok(ExitCode::FAILURE);
            }
            for k in &keys {
                if public_lines {
                    println!("{}", k.public.to_openssh()?);
                } else if store.is_unencrypted(&k.blob) {
                    println!("{} [{}, UNENCRYPTED]", k.list_line(), k.kind.as_str());
                } else {
                    println!("{} [{}]", k.list_line(), k.kind.as_str());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Ca => {
            println!("{}", signer.ca_public()?.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Agents => {
            let state = signer.state()?;
            if state.agents.is_empty() {
                println!("No paired agents.");
            }
            for a in &state.agents {
                println!(
                    "{}  {}  paired {}  last seen {}",
                    a.id,
                    vmux_proto::sanitize(&a.name),
                    vmux_agent::utc(a.paired_at),
                    vmux_agent::utc(a.last_seen)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Unpair { id } => {
            let paired = PairedAgents::new(signer.state_path(), signer.state()?);
            match paired.remove(&id)? {
                Some(a) => {
                    println!(
                        "Unpaired {} ({}); its next connection is refused.",
                        vmux_proto::sanitize(&a.name),
                        a.id
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(Failure(format!(
                    "no paired agent has the id {id:?} (or it is ambiguous); see `vmux signer agents`"
                ))),
            }
        }
        SignerCommand::Audit { verify, since } => {
            let contents = vmux_home::read_optional(&signer.audit_path())?.unwrap_or_default();
            let since = since
                .as_deref()
                .map(|s| {
                    vmux_agent::parse_since(s).ok_or_else(|| {
                        Failure(format!(
                            "--since {s:?}: use Unix seconds, YYYY-MM-DD, or a duration like 90m, 2h, 3d"
                        ))
                    })
                })
                .transpose()?;
            let show = |e: &audit::Entry| {
                if since.is_some_and(|s| e.time < s) {
                    return;
                }
                let dest = match (e.dest_user.as_str(), e.dest_host.as_str()) {
                    ("", "") => String::new(),
                    ("", h) => format!(" → {} [{}]", vmux_proto::sanitize(h), e.quality),
                    (u, h) => format!(
                        " → {}@{} [{}]",
                        vmux_proto::sanitize(u),
                        vmux_proto::sanitize(h),
                        e.quality
                    ),
                };
                println!(
                    "{}  {:<11} {:<18} {} {}{}{}{}{}",
                    vmux_agent::utc(e.time),
                    e.kind,
                    e.outcome,
                    vmux_proto::sanitize(&e.agent_name),
                    e.key,
                    dest,
                    if e.process.is_empty() {
                        String::new()
                    } else {
                        format!(" from {}", vmux_proto::sanitize(&e.process))
                    },
                    if e.forwarded { " (forwarded)" } else { "" },
                    e.error
                        .as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default(),
                );
            };
            if verify {
                let entries = audit::verify(&contents)
                    .map_err(|e| Failure(format!("the audit log does not verify: {e}")))?;
                entries.iter().for_each(show);
                println!(
                    "Audit log verified: {} entries, chain intact.",
                    entries.len()
                );
            } else {
                for e in audit::read(&contents) {
                    match e {
                        Ok(e) => show(&e),
                        Err(line) => println!("(line {line} is not a valid entry)"),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Install {
            print,
            passphrase_file,
        } => {
            let spec = crate::service::ServiceSpec {
                exe: crate::current_exe()?,
                home: home_flag.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned())),
                socket: home.default_socket().to_owned(),
            };
            let pass = passphrase_file.map(|p| std::path::absolute(&p).unwrap_or(p));
            let unit = crate::service::signer_service_unit(&spec, pass.as_deref());
            let path = crate::service::user_unit_dir()?.join("vmux-signer.service");
            if print {
                println!("# {}\n{unit}", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            crate::service::install(&[(path, unit)], "vmux-signer.service")?;
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Uninstall => {
            let path = crate::service::user_unit_dir()?.join("vmux-signer.service");
            crate::service::uninstall(&["vmux-signer.service"], &[path])?;
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Lock => {
            let v = control::query(&signer.control_path(), &Request::Lock)?;
            if v["locked"].as_bool() == Some(true) {
                println!("Signer locked.");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Failure(
                    "the signer did not confirm that it is locked".into(),
                ))
            }
        }
        SignerCommand::Unlock { passphrase_file } => {
            let pass = if signer.state()?.encrypted {
                passphrase::get(passphrase_file.as_deref(), "Signer passphrase: ", false)?
            } else {
                Zeroizing::new(String::new())
            };
            let v = control::query(
                &signer.control_path(),
                &Request::Unlock {
                    passphrase: pass.to_string(),
                },
            )?;
            match v["error"].as_str() {
                None => {
                    println!("Signer unlocked.");
                    Ok(ExitCode::SUCCESS)
                }
                Some(e) => Err(Failure(format!("cannot unlock: {e}"))),
            }
        }
        SignerCommand::Run {
            listen,
            approve,
            no_advertise,
            passphrase_file,
            wake_url,
            apns_token,
            apns_topic,
            apns_sandbox,
        } => {
            let config: SignerConfig = vmux_home::load_toml(&signer.config_path())?;
            let wake = wake_endpoint(
                wake_url.or(config.wake_url.clone()),
                apns_token.or(config.apns_token.clone()),
                apns_topic.or(config.apns_topic.clone()),
                apns_sandbox || config.apns_sandbox,
            )?;
            serve(
                &signer,
                config,
                listen,
                approve,
                passphrase_file.as_deref(),
                wake,
                !no_advertise,
            )
        }
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

fn serve(
    signer: &SignerHome,
    config: SignerConfig,
    listen: Option<String>,
    approve: Option<String>,
    passphrase_file: Option<&Path>,
    wake: WakeEndpoint,
    advertise: bool,
) -> Result<ExitCode, Failure> {
    let state = signer.state()?;
    vmux_home::remove_stale_temps(&signer.state_path());
    let pass = unlock_passphrase(signer, passphrase_file)?;
    let pass = pass.as_deref().map(String::as_str);
    let identity = signer.identity(pass)?;
    let keys = signer.software_keys(pass)?;
    let ca = Ca::load(&signer.ca_path(), pass)?;
    let approver =
        AnyApprover::parse(approve.as_deref().unwrap_or(&config.approve)).map_err(Failure)?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let mut providers: Vec<Box<dyn KeyProvider>> = vec![Box::new(keys)];
    for t in signer.open_tokens(pass)? {
        providers.push(Box::new(t));
    }
    let server = Arc::new(Server::new(ServerParts {
        name: state.name.clone(),
        identity,
        providers,
        approver,
        paired: PairedAgents::new(signer.state_path(), state),
        freshness: Freshness::default(),
        approval_timeout: Duration::from_secs(config.approval_timeout_seconds),
        ca: Some(ca),
        cert_policy: config.certificates.clone(),
        window_max_seconds: config.max_approval_window_seconds,
        audit: Some(AuditLog::open(&signer.audit_path())?),
        wake,
    }));
    let rt = crate::runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {listen}: {e}")))?;
        let control_socket = PrivateSocket::bind(&signer.control_path())?;
        let addr = listener.local_addr()?;
        let signer_id = server.id();
        let _advertiser = if advertise {
            match vmux_link::mdns::Advertiser::start(server.name(), &signer_id, addr.port()) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, "not advertising on the local network");
                    None
                }
            }
        } else {
            None
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = server.clone().serve(listener) => {}
            _ = control::serve(server.clone(), &control_socket) => {}
            _ = crate::shutdown_signal() => {}
        }
        control_socket.remove();
        Ok::<_, Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
