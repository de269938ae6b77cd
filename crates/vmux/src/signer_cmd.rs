//! `vmux signer …`

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vmux_home::Home;
use vmux_signer::approver::AnyApprover;
use vmux_signer::ca::Ca;
use vmux_signer::checks::Window;
use vmux_signer::config::SignerConfig;
use vmux_signer::paired::PairedAgents;
use vmux_signer::provider::{KeyProvider, KeyType};
use vmux_signer::{Server, ServerParts, SignerHome};

use crate::cli::{KeyTypeArg, SignerCommand};
use crate::Failure;

pub fn run(home: &Home, command: SignerCommand) -> Result<ExitCode, Failure> {
    let signer = SignerHome::new(home.clone());
    match command {
        SignerCommand::Init { name } => {
            if name.trim().is_empty() {
                return Err(Failure("--name must not be empty".into()));
            }
            let (identity, ca) = signer.init(&name)?;
            println!("Signer {name:?} created; id {}", identity.id());
            println!("CA key for TrustedUserCAKeys: {}", ca.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Keygen { comment, key_type } => {
            let kind = match key_type {
                KeyTypeArg::Ecdsa => KeyType::Ecdsa,
                KeyTypeArg::Ed25519 => KeyType::Ed25519,
                KeyTypeArg::Rsa => KeyType::Rsa,
            };
            let key = signer.software_keys()?.generate(kind, &comment)?;
            println!("{}", key.public.to_openssh()?);
            Ok(ExitCode::SUCCESS)
        }
        SignerCommand::Keys { public_lines } => {
            let keys = signer.software_keys()?.keys();
            if keys.is_empty() {
                println!("The signer has no identities.");
                return Ok(ExitCode::FAILURE);
            }
            for k in &keys {
                if public_lines {
                    println!("{}", k.public.to_openssh()?);
                } else {
                    println!("{}", k.list_line());
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
                    println!("Unpaired {} ({}); its next connection is refused.", vmux_proto::sanitize(&a.name), a.id);
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(Failure(format!(
                    "no paired agent has the id {id:?} (or it is ambiguous); see `vmux signer agents`"
                ))),
            }
        }
        SignerCommand::Run {
            listen,
            approve,
            no_advertise: _,
        } => serve(&signer, listen, approve),
    }
}

fn serve(
    signer: &SignerHome,
    listen: Option<String>,
    approve: Option<String>,
) -> Result<ExitCode, Failure> {
    let config: SignerConfig = vmux_home::load_toml(&signer.config_path())?;
    let state = signer.state()?;
    let identity = signer.identity()?;
    let keys = signer.software_keys()?;
    let approver =
        AnyApprover::parse(approve.as_deref().unwrap_or(&config.approve)).map_err(Failure)?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let providers: Vec<Box<dyn KeyProvider>> = vec![Box::new(keys)];
    let server = Arc::new(Server::new(ServerParts {
        name: state.name.clone(),
        identity,
        providers,
        approver,
        paired: PairedAgents::new(signer.state_path(), state),
        window: Window::default(),
        approval_timeout: Duration::from_secs(config.approval_timeout_seconds),
        ca: Some(Ca::load(&signer.ca_path())?),
        cert_policy: config.certificates.clone(),
    }));
    let rt = crate::runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = server.serve(listener) => {}
            _ = crate::shutdown_signal() => {}
        }
        Ok::<_, Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
