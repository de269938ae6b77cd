//! `vmux agent …`

use std::process::ExitCode;
use std::time::Duration;

use vmux_agent::{AgentConfig, AgentFileConfig, AgentSocket, DEFAULT_SIGN_TIMEOUT_SECONDS};
use vmux_home::Home;

use crate::cli::AgentCommand;
use crate::Failure;

pub fn run(home: &Home, command: AgentCommand) -> Result<ExitCode, Failure> {
    let file: AgentFileConfig = vmux_home::load_toml(&home.config_file("agent.toml"))?;
    match command {
        AgentCommand::Run {
            socket,
            name,
            signer,
            no_discovery: _,
            sign_timeout,
        } => {
            let socket_path = socket
                .or(file.socket.clone())
                .unwrap_or_else(|| home.default_socket().to_owned());
            let timeout = sign_timeout
                .or(file.sign_timeout_seconds)
                .unwrap_or(DEFAULT_SIGN_TIMEOUT_SECONDS);
            if timeout == 0 {
                return Err(Failure("--sign-timeout must be at least 1 second".into()));
            }
            let config = AgentConfig {
                name: name.or(file.name).unwrap_or_else(host_name),
                signers: if signer.is_empty() {
                    file.signers
                } else {
                    signer
                },
                sign_timeout: Duration::from_secs(timeout),
                state_path: vmux_agent::state_path(home),
                identity_path: home.state_file("agent-identity"),
            };
            let rt = crate::runtime()?;
            rt.block_on(async {
                let socket = AgentSocket::bind(&socket_path)?;
                let result = tokio::select! {
                    r = vmux_agent::run(config, &socket) => r.map_err(Failure::from),
                    _ = crate::shutdown_signal() => Ok(()),
                };
                socket.remove();
                result
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Forget => {
            let path = vmux_agent::state_path(home);
            match std::fs::remove_file(&path) {
                Ok(()) => println!(
                    "Forgot all pinned signers and cached keys ({}).",
                    path.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("Nothing to forget.")
                }
                Err(e) => return Err(Failure(format!("cannot remove {}: {e}", path.display()))),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "vmux-agent".to_owned())
}
