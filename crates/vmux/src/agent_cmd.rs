//! `vmux agent …`: [`run`] hands each subcommand to a function of its
//! own; `vmux agent run` takes its settings from
//! [`AgentConfig::resolve`] (flag, else agent.toml, else the default).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use vmux_agent::{AgentConfig, AgentFileConfig, AgentFlags, AgentSocket, Machine};
use vmux_control::agent::{Client, ClientKind, Status};
use vmux_control::ControlError;
use vmux_home::Home;

use crate::cli::{AgentCommand, ShellKind};
use crate::service::{self, ServiceSpec};
use crate::Failure;

pub fn run(
    home: &Home,
    command: AgentCommand,
    home_flag: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let file: AgentFileConfig = vmux_home::load_toml(&home.config_file("agent.toml"))?;
    let socket_of = |flag: Option<PathBuf>| file.socket(flag, home);
    match command {
        AgentCommand::Run {
            socket,
            name,
            signer,
            no_discovery,
            sign_timeout,
            cert_validity,
            cert_renew_before,
        } => {
            let flags = AgentFlags {
                name,
                signers: signer,
                no_discovery,
                sign_timeout_seconds: sign_timeout,
                cert_validity_seconds: cert_validity,
                cert_renew_before_seconds: cert_renew_before,
            };
            run_agent(home, &file, &socket_of(socket), flags)
        }
        AgentCommand::Status { json, socket } => status(&socket_of(socket), json),
        AgentCommand::Refresh { socket } => refresh(&socket_of(socket)),
        AgentCommand::Cert { socket } => cert(&socket_of(socket)),
        AgentCommand::Pair {
            signer,
            confirm,
            deny,
            socket,
        } => pair(&socket_of(socket), signer, confirm, deny),
        AgentCommand::Env { shell, socket } => env(shell, &socket_of(socket)),
        AgentCommand::Setup { signer, socket } => crate::setup::run(&crate::setup::Setup {
            home_flag,
            socket_flag: socket.as_deref(),
            socket: socket_of(socket.clone()),
            signer,
        }),
        AgentCommand::Doctor { socket } => doctor(&socket_of(socket)),
        AgentCommand::Install { print, launchd } => {
            install(home_flag, &socket_of(None), print, launchd)
        }
        AgentCommand::Uninstall => uninstall(),
        AgentCommand::Tray {
            socket,
            no_notifications,
            if_set_up,
        } => tray(home, &file, socket_of(socket), no_notifications, if_set_up),
        AgentCommand::Signers => signers(home),
        AgentCommand::Forget { id: None } => forget_all(home, &file),
        AgentCommand::Forget { id: Some(id) } => forget_signer(home, id),
    }
}

/// `vmux agent run`: the agent on `socket_path` (or on the socket systemd
/// hands over), until SIGINT or SIGTERM.
fn run_agent(
    home: &Home,
    file: &AgentFileConfig,
    socket_path: &Path,
    flags: AgentFlags,
) -> Result<ExitCode, Failure> {
    let machine = Machine {
        home,
        host_name: host_name(),
        user_home: std::env::var_os("HOME").map(PathBuf::from),
    };
    let config = AgentConfig::resolve(flags, file, &machine)?;
    let rt = crate::runtime()?;
    rt.block_on(async {
        let socket = match AgentSocket::inherited()? {
            Some(s) => s,
            None => AgentSocket::bind(socket_path)?,
        };
        let result = vmux_agent::run_until(config, &socket, crate::shutdown_signal())
            .await
            .map_err(Failure::from);
        socket.remove();
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent status [--json]`.
fn status(socket: &Path, json: bool) -> Result<ExitCode, Failure> {
    let status = Client::new(socket).status()?;
    if json {
        println!("{:#}", serde_json::to_value(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_status(&status);
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent refresh`.
fn refresh(socket: &Path) -> Result<ExitCode, Failure> {
    let n = Client::new(socket).refresh()?;
    if n == 0 {
        return Err(Failure(
            "no signer is connected; the cached keys are unchanged".into(),
        ));
    }
    println!("Refreshed the key list from {n} signer(s).");
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent cert`.
fn cert(socket: &Path) -> Result<ExitCode, Failure> {
    match Client::new(socket).cert() {
        Ok(t) => {
            println!("Certificate valid until {}", vmux_home::time::utc(t));
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::Refused(e)) => Err(Failure(format!("no certificate: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// `vmux agent env`.
fn env(shell: Option<ShellKind>, path: &Path) -> Result<ExitCode, Failure> {
    println!("{}", env_line(shell.unwrap_or_else(shell_from_env), path));
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent doctor`: exit status 1 when a check fails.
fn doctor(socket: &Path) -> Result<ExitCode, Failure> {
    let findings = crate::doctor::check(socket, std::env::var("SSH_AUTH_SOCK").ok().as_deref());
    for f in &findings {
        println!("{:<4}  {}", f.level, f.text);
    }
    Ok(if findings.iter().any(|f| f.level == "fail") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `vmux agent install [--print | --launchd]`.
fn install(
    home_flag: Option<&Path>,
    socket: &Path,
    print: bool,
    launchd: bool,
) -> Result<ExitCode, Failure> {
    if launchd {
        print!(
            "{}",
            service::launchd_plist(&service_spec(home_flag, socket)?)
        );
        return Ok(ExitCode::SUCCESS);
    }
    install_units(home_flag, socket, print)?;
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent uninstall`.
fn uninstall() -> Result<ExitCode, Failure> {
    let dir = service::user_unit_dir()?;
    service::uninstall(
        &["vmux-agent.socket", "vmux-agent.service"],
        &[
            dir.join("vmux-agent.socket"),
            dir.join("vmux-agent.service"),
            service::environment_d_path()?,
            crate::tray_cmd::autostart_path(&dir),
        ],
    )?;
    crate::tray_cmd::hide_system_entry(&crate::tray_cmd::autostart_path(&dir))?;
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent tray`.
fn tray(
    home: &Home,
    file: &AgentFileConfig,
    socket: PathBuf,
    no_notifications: bool,
    if_set_up: bool,
) -> Result<ExitCode, Failure> {
    if if_set_up && !vmux_agent::state_path(home).exists() {
        return Ok(ExitCode::SUCCESS);
    }
    crate::tray_cmd::run(home, file, socket, no_notifications)
}

/// `vmux agent signers`.
fn signers(home: &Home) -> Result<ExitCode, Failure> {
    let state = vmux_agent::AgentState::load(&vmux_agent::state_path(home))?;
    crate::print_list(&state.signers, "No pinned signers.", |p| {
        format!(
            "{}  {}  at {}  paired {}  {} keys",
            p.id,
            vmux_proto::sanitize(&p.name),
            p.address,
            vmux_home::time::utc(p.paired_at),
            p.keys.len()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent forget` without an id: all of the agent's state.
fn forget_all(home: &Home, file: &AgentFileConfig) -> Result<ExitCode, Failure> {
    // All state: pins, cached keys, and this agent's own identity,
    // so that it pairs afresh as a new device.
    let mut gone = 0;
    let state = vmux_agent::state_path(home);
    match std::fs::remove_file(&state) {
        Ok(()) => gone += 1,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure(format!("cannot remove {}: {e}", state.display()))),
    }
    let store = file.identity_store(home);
    if crate::runtime()?.block_on(store.forget())? {
        gone += 1;
    }
    if gone == 0 {
        println!("Nothing to forget.");
    } else {
        println!("Forgot all pinned signers, cached keys and this agent's identity; restart the agent to pair afresh.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `vmux agent forget ID`: one pinned signer.
fn forget_signer(home: &Home, id: String) -> Result<ExitCode, Failure> {
    let path = vmux_agent::state_path(home);
    let mut state = vmux_agent::AgentState::load(&path)?;
    let hits: Vec<usize> = state
        .signers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.id == id || (!id.is_empty() && p.id.starts_with(&id)))
        .map(|(i, _)| i)
        .collect();
    let [i] = hits[..] else {
        return Err(Failure(format!(
            "no pinned signer has the id {id:?} (or it is ambiguous); see `vmux agent signers`"
        )));
    };
    let gone = state.signers.remove(i);
    state.save(&path)?;
    println!(
        "Forgot signer {} ({}) and its cached keys. Restart the agent if it is running.",
        vmux_proto::sanitize(&gone.name),
        gone.id
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn confirm_code(socket: &std::path::Path, code: &str) -> Result<ExitCode, Failure> {
    let code = code.trim();
    if code.is_empty() || code.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Failure("a pairing code is six digits".into()));
    }
    let address = Client::new(socket).pair_confirm(code)?;
    println!(
        "Confirmed pairing code {code} with the signer at {address}; it is pinned once the signer approves too."
    );
    Ok(ExitCode::SUCCESS)
}

fn pair(
    socket: &std::path::Path,
    signer: Option<String>,
    confirm: Option<String>,
    deny: bool,
) -> Result<ExitCode, Failure> {
    if let Some(code) = confirm {
        return confirm_code(socket, &code);
    }
    if deny {
        let n = Client::new(socket).pair_deny()?;
        if n == 0 {
            return Err(Failure("no pairing is waiting for confirmation".into()));
        }
        println!("Refused {n} pairing(s); nothing was pinned.");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(address) = signer else {
        return Err(Failure("say --signer, --confirm or --deny".into()));
    };
    let agent = Client::new(socket);
    agent.pair_signer(&address)?;
    // Wait (bounded) for the code, and show it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        let status = agent.status()?;
        let link = status.signers.iter().find(|g| g.address == address);
        if let Some(code) = link.and_then(|g| g.pairing_code.clone()) {
            break code;
        }
        // Confirmed and approved already (or a pinned signer is there).
        if let Some(g) = link.filter(|g| g.connected) {
            println!(
                "Paired with signer {} ({}) at {address}.",
                vmux_proto::sanitize(g.name.as_deref().unwrap_or("?")),
                g.id.as_deref().unwrap_or("?")
            );
            return Ok(ExitCode::SUCCESS);
        }
        if std::time::Instant::now() >= deadline {
            let why = link
                .and_then(|g| g.last_error.clone())
                .unwrap_or_else(|| "no answer yet".into());
            return Err(Failure(format!(
                "no pairing code from the signer at {address} within 30 s ({why}); see `vmux agent status`"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("Pairing with the signer at {address}: code {code}.");
    println!("Check that the signer shows the same code and approve it there.");
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("Type the code the signer shows to confirm (empty to refuse): ");
        let mut typed = String::new();
        std::io::stdin()
            .read_line(&mut typed)
            .map_err(Failure::from)?;
        if typed.trim().is_empty() {
            agent.pair_deny()?;
            println!("Refused; nothing was pinned.");
            return Ok(ExitCode::FAILURE);
        }
        return confirm_code(socket, &typed);
    }
    println!("Then confirm here: vmux agent pair --confirm {code}");
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &Status) {
    println!("Agent {} ({})", s.name, s.id);
    if s.signers.is_empty() {
        println!("No signer configured or paired");
    }
    for g in &s.signers {
        let who = match (&g.name, &g.id) {
            (Some(n), Some(id)) => format!("{n} ({id})"),
            (Some(n), None) => n.clone(),
            _ => "signer".to_owned(),
        };
        let state = if g.connected {
            "Connected"
        } else {
            "Disconnected"
        };
        println!(
            "{who} at {}: {state} since {}",
            g.address,
            vmux_home::time::utc(g.since)
        );
        if let Some(w) = &g.wake {
            println!("  Wake: {w}");
        }
        if let Some(code) = &g.pairing_code {
            if g.pairing_signer_approved {
                println!("  Pairing: code {code}, approved on the signer, waiting for confirmation here: `vmux agent pair --confirm {code}`");
            } else {
                println!("  Pairing: code {code}, waiting for approval on the signer and confirmation here: `vmux agent pair --confirm {code}`");
            }
        } else if let (false, Some(e)) = (g.connected, &g.last_error) {
            println!("  Last error: {e}");
        }
    }
    println!("{}", s.certificate.line);
    if let Some((t, outcome)) = &s.last_wake {
        println!("Last wake push {}: {outcome}", vmux_home::time::utc(*t));
    }
    if s.pending_requests > 0 {
        println!("{} request(s) waiting for a signer", s.pending_requests);
    }
    if s.keys.is_empty() {
        println!("No keys cached");
    } else {
        println!("Keys:");
        for k in &s.keys {
            println!("  {}", k.line);
        }
    }
    if s.keys.iter().any(|k| k.provider_kind == "passkey") {
        println!("Passkey keys: {}", vmux_agent::control::PASSKEY_CLIENTS);
        for c in &s.passkeys.clients {
            match &c.kind {
                ClientKind::OldOpenSsh { version } => println!(
                    "  {} ({version}): passkey keys not offered",
                    vmux_proto::sanitize(&c.executable)
                ),
                ClientKind::Capable => println!(
                    "  {}: passkey keys offered",
                    vmux_proto::sanitize(&c.executable)
                ),
            }
        }
    }
    for a in &s.passkeys.counter_alarms {
        println!(
            "WARNING: the signature counter of key {} went from {} to {} at {}: a cloned authenticator? The signature was refused.",
            a.key,
            a.stored,
            a.received,
            vmux_home::time::utc(a.at)
        );
    }
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "vmux-agent".to_owned())
}

/// The `ServiceSpec` for this binary, home and socket.
fn service_spec(
    home_flag: Option<&std::path::Path>,
    socket: &std::path::Path,
) -> Result<ServiceSpec, Failure> {
    Ok(ServiceSpec {
        exe: crate::current_exe()?,
        home: home_flag.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned())),
        socket: std::path::absolute(socket).map_err(Failure::from)?,
    })
}

/// `vmux agent install [--print]`: the user units, the environment.d file
/// and the tray's autostart entry,
/// written, reloaded and enabled (or only printed).
pub(crate) fn install_units(
    home_flag: Option<&std::path::Path>,
    socket: &std::path::Path,
    print: bool,
) -> Result<(), Failure> {
    let spec = service_spec(home_flag, socket)?;
    let dir = service::user_unit_dir()?;
    let files = vec![
        (
            dir.join("vmux-agent.socket"),
            service::agent_socket_unit(&spec),
        ),
        (
            dir.join("vmux-agent.service"),
            service::agent_service_unit(&spec),
        ),
        (
            service::environment_d_path()?,
            service::environment_d(&spec),
        ),
        (
            crate::tray_cmd::autostart_path(&dir),
            crate::tray_cmd::autostart_entry(&spec.exe, spec.home.as_deref()),
        ),
    ];
    if print {
        for (path, contents) in &files {
            println!("# {}\n{contents}", path.display());
        }
        return Ok(());
    }
    service::install(&files, "vmux-agent.socket")
}

/// The user's shell, from `$SHELL` (bash when unknown).
pub(crate) fn shell_from_env() -> ShellKind {
    match std::env::var("SHELL")
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or("")
    {
        "fish" => ShellKind::Fish,
        "zsh" => ShellKind::Zsh,
        _ => ShellKind::Bash,
    }
}

/// The line that points `shell` at the agent's socket `path`.
pub(crate) fn env_line(shell: ShellKind, path: &std::path::Path) -> String {
    let quoted = format!("'{}'", path.display().to_string().replace('\'', "'\\''"));
    match shell {
        ShellKind::Bash | ShellKind::Zsh => format!("export SSH_AUTH_SOCK={quoted}"),
        ShellKind::Fish => format!("set -gx SSH_AUTH_SOCK {quoted}"),
    }
}

/// Where `shell` reads that line from.
pub(crate) fn startup_file(shell: ShellKind) -> &'static str {
    match shell {
        ShellKind::Bash => "~/.bashrc (and ~/.bash_profile for login shells)",
        ShellKind::Zsh => "~/.zshrc",
        ShellKind::Fish => "~/.config/fish/config.fish",
    }
}
