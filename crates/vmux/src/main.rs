//! `vmux`: the command-line interface. A thin layer: it parses arguments,
//! resolves the home directory, and calls into `vmux-agent` and
//! `vmux-signer`.

mod agent_cmd;
mod cli;
mod passphrase;
mod signer_cmd;

use std::process::ExitCode;

use clap::Parser;

/// An error for the user: printed as one sentence, exit status 1.
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
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
        cli::Command::Signer { command } => signer_cmd::run(&home, command),
        cli::Command::Agent { command } => agent_cmd::run(&home, command),
    };
    match result {
        Ok(code) => code,
        Err(Failure(msg)) => {
            eprintln!("vmux: {msg}");
            ExitCode::FAILURE
        }
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
