//! `vmux signer run`: reads the flags and configuration, asks for the
//! passphrase, and hands over to `vmux-signer`, which assembles and serves
//! the signer.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use vmux_home::PrivateSocket;
use vmux_proto::WakeEndpoint;
use vmux_signer::approver::AnyApprover;
use vmux_signer::config::SignerConfig;
use vmux_signer::SignerHome;

use super::unlock_passphrase;
use crate::cli::SignerCommand;
use crate::Failure;

pub(super) fn run(signer: &SignerHome, command: SignerCommand) -> Result<ExitCode, Failure> {
    match command {
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
                signer,
                config,
                listen,
                approve,
                passphrase_file.as_deref(),
                wake,
                !no_advertise,
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

fn serve(
    signer: &SignerHome,
    config: SignerConfig,
    listen: Option<String>,
    approve: Option<String>,
    passphrase_file: Option<&Path>,
    wake: WakeEndpoint,
    advertise: bool,
) -> Result<ExitCode, Failure> {
    let approver =
        AnyApprover::parse(approve.as_deref().unwrap_or(&config.approve)).map_err(Failure)?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let pass = unlock_passphrase(signer, passphrase_file)?;
    let server =
        Arc::new(signer.assemble(&config, pass.as_deref().map(String::as_str), approver, wake)?);
    drop(pass);
    let rt = crate::runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {listen}: {e}")))?;
        let control_socket = PrivateSocket::bind(&signer.control_path())?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        vmux_signer::serve(
            server,
            listener,
            &control_socket,
            advertise,
            crate::shutdown_signal(),
        )
        .await;
        Ok::<_, Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
