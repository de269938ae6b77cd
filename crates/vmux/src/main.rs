//! `vmux`: the command-line interface. A thin layer: it parses arguments,
//! resolves the home directory, and calls into `vmux-agent` and
//! `vmux-signer`.

mod agent_cmd;
mod cli;
mod detached;
mod doctor;
mod first_run;
mod passphrase;
mod service;
mod setup;
mod signer_cmd;
mod tailnet;
mod tray_cmd;

use std::process::ExitCode;

use clap::Parser;

/// An error for the user: printed as one sentence, exit status 1.
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// Logs to stderr, filtered by `RUST_LOG`: a level (`info`, the default;
/// `debug`, `trace`) and/or `crate=level` pairs, comma-separated. A value
/// that does not parse is reported and `info` used.
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = || Targets::new().with_default(LevelFilter::INFO);
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("vmux: RUST_LOG={v:?} is not a log filter ({e}); logging at info");
            default()
        }),
        _ => default(),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                // Colour only for a person at a terminal: not in journald,
                // log files or pipes.
                .with_ansi(
                    std::io::IsTerminal::is_terminal(&std::io::stderr())
                        && std::env::var_os("NO_COLOR").is_none(),
                ),
        )
        .with(filter)
        .init();
}

/// Short-lived commands die quietly on a closed pipe (`vmux … | head`),
/// as C tools do, instead of panicking in `println!`. The daemons keep
/// Rust's default (SIGPIPE ignored): a client that hangs up must not kill
/// them.
fn die_on_sigpipe() {
    // SAFETY: called first thing in `main`, before any other thread
    // exists; `signal` with SIG_DFL installs no handler code, so no
    // async-signal-safety question arises.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let daemon = matches!(
        args.command,
        cli::Command::Agent {
            command: cli::AgentCommand::Run { .. } | cli::AgentCommand::Tray { .. }
        } | cli::Command::Signer {
            command: cli::SignerCommand::Run(_)
        }
    );
    if !daemon {
        die_on_sigpipe();
    }
    init_logging();
    let home = match &args.home {
        Some(dir) => vmux_home::Home::in_dir(dir),
        None => match vmux_home::Home::for_user() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("vmux: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = match args.command {
        cli::Command::Signer { command } => signer_cmd::run(&home, command, args.home.as_deref()),
        cli::Command::Agent { command } => agent_cmd::run(&home, command, args.home.as_deref()),
        cli::Command::Setup {
            phone,
            yes,
            listen,
            web_listen,
            web_name,
            tailnet,
            no_tailnet,
            no_advertise,
            passphrase_file,
        } => first_run::run(&first_run::Options {
            home_flag: args.home.clone(),
            home: home.clone(),
            phone,
            yes,
            listen,
            web_listen,
            web_name,
            tailnet: match (tailnet, no_tailnet) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            no_advertise,
            passphrase_file,
        }),
        cli::Command::Completions { shell } => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vmux", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Man { dir } => man(dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(Failure(msg)) => {
            eprintln!("vmux: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn man(dir: Option<&std::path::Path>) -> Result<ExitCode, Failure> {
    let cmd = <cli::Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)?;
    println!("wrote man pages to {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// This program, for service files.
pub fn current_exe() -> Result<std::path::PathBuf, Failure> {
    std::env::current_exe().map_err(|e| Failure(format!("cannot find the vmux binary: {e}")))
}

/// Prints a line per item of a list command (`row` makes it), or `none`
/// when the list is empty.
pub fn print_list<T>(items: &[T], none: &str, row: impl Fn(&T) -> String) {
    if items.is_empty() {
        println!("{none}");
    }
    for item in items {
        println!("{}", row(item));
    }
}

/// A multi-threaded runtime for the daemons.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}")))
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
