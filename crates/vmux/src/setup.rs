//! `vmux agent setup`: the guided first run on a workstation. On a
//! terminal it checks what `vmux agent doctor` checks, offers to install
//! the user units (`vmux agent install`), pairs with a signer (showing the
//! code to compare), and prints the line for the shell's startup file.
//! Without a terminal it says what it would do and fails.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vmux_control::agent::{Client, SignerStatus, Status};

use crate::Failure;

/// How long a person may take to start the agent in another terminal.
const AGENT_START_WAIT: Duration = Duration::from_secs(600);
/// How long the agent may take to get a pairing code from the signer.
const CODE_WAIT: Duration = Duration::from_secs(60);
/// How long the signer's person may take to approve the pairing.
const APPROVAL_WAIT: Duration = Duration::from_secs(300);

/// What setup works on.
pub struct Setup<'a> {
    /// `--home DIR`, as given.
    pub home_flag: Option<&'a Path>,
    /// The agent's socket.
    pub socket: PathBuf,
    /// `--socket PATH`, as given.
    pub socket_flag: Option<&'a Path>,
    /// `--signer HOST:PORT`, if given (else asked).
    pub signer: Option<String>,
}

impl Setup<'_> {
    /// `vmux [--home DIR] agent … [--socket PATH]` as the user would type
    /// it (`install` takes no socket: its units use the default one).
    fn command(&self, rest: &str) -> String {
        let mut line = match self.home_flag {
            Some(h) => format!(
                "vmux --home {} agent {rest}",
                shell_quote(&h.display().to_string())
            ),
            None => format!("vmux agent {rest}"),
        };
        if let Some(sock) = self.socket_flag.filter(|_| rest != "install") {
            line.push_str(" --socket ");
            line.push_str(&shell_quote(&sock.display().to_string()));
        }
        line
    }
}

/// Runs setup: the walk on a terminal, the plan and a failure otherwise.
pub fn run(setup: &Setup) -> Result<ExitCode, Failure> {
    if !std::io::stdin().is_terminal() {
        print_plan(setup);
        return Err(Failure(
            "agent setup asks questions and needs a terminal: run it in one, or do the steps above yourself".into(),
        ));
    }
    walk(setup)
}

fn print_plan(setup: &Setup) {
    let sock = setup.socket.display();
    println!("vmux agent setup would, on a terminal:");
    println!(
        "  1. check what `{}` checks (SSH_AUTH_SOCK, the socket {sock}, the agent, the signer, the certificate)",
        setup.command("doctor")
    );
    println!(
        "  2. offer to install the systemd user units and the tray's autostart entry, so that the agent starts at login (`{}`)",
        setup.command("install")
    );
    match &setup.signer {
        Some(a) => println!(
            "  3. pair with the signer at {a} and ask you to compare the 6-digit code (`{}`)",
            setup.command(&format!("pair --signer {a}"))
        ),
        None => println!(
            "  3. ask for the signer's address (or look on the local network), pair with it and ask you to compare the 6-digit code (`{}`)",
            setup.command("pair --signer HOST:PORT")
        ),
    }
    println!(
        "  4. print the line for your shell's startup file (`{}`)",
        setup.command("env")
    );
}

fn walk(setup: &Setup) -> Result<ExitCode, Failure> {
    let sock = &setup.socket;
    println!(
        "vmux agent setup: this machine's agent, paired with the signer that holds your keys."
    );

    heading("1. Checking what `vmux agent doctor` checks");
    let auth_sock = std::env::var("SSH_AUTH_SOCK").ok();
    for f in crate::doctor::check(sock, auth_sock.as_deref()) {
        println!("   {:<4}  {}", f.level, f.text);
    }

    heading("2. The agent");
    if status(sock).is_none() {
        let installed = ask_yes(&format!(
            "Install the systemd user units, so that the agent starts at login, desktop apps get SSH_AUTH_SOCK and the tray starts with your desktop (`{}`)?",
            setup.command("install")
        ))?;
        if installed {
            crate::agent_cmd::install_units(setup.home_flag, sock, false)?;
        }
        // systemd starts the agent on the first connection to its socket.
        if !installed || wait_for_agent(sock, Duration::from_secs(10)).is_none() {
            println!(
                "Start the agent in another terminal and leave it running:\n\n    {}\n\nWaiting for it on {} (Ctrl-C to stop)…",
                setup.command("run"),
                sock.display()
            );
        }
    }
    let Some(st) = wait_for_agent(sock, AGENT_START_WAIT) else {
        return Err(Failure(format!(
            "no agent answered on {} within {} minutes; start it with `{}` and run setup again",
            sock.display(),
            AGENT_START_WAIT.as_secs() / 60,
            setup.command("run")
        )));
    };
    println!("The agent {} answers on {}.", st.name, sock.display());

    heading("3. Pairing with the signer");
    if let Some(g) = st.signers.iter().find(|g| g.connected) {
        println!(
            "Already paired with the signer {}, connected now.",
            signer_name(g)
        );
    } else {
        pair(setup, &st)?;
    }

    heading("4. Your shell");
    let shell = crate::agent_cmd::shell_from_env();
    let line = crate::agent_cmd::env_line(shell, sock);
    println!(
        "Add this line to {} so that ssh, git and the others use the agent:\n\n    {line}\n",
        crate::agent_cmd::startup_file(shell)
    );

    heading("Done: the checks again, with that line in your shell");
    let findings = crate::doctor::check(sock, Some(&sock.display().to_string()));
    for f in &findings {
        println!("   {:<4}  {}", f.level, f.text);
    }
    if findings.iter().any(|f| f.level == "fail") {
        return Err(Failure(format!(
            "setup is not complete: see the fail lines above, fix them and run `{}`",
            setup.command("doctor")
        )));
    }
    println!("\nIn a new shell, `ssh-add -l` lists the signer's keys and each signature asks on the signer.");
    Ok(ExitCode::SUCCESS)
}

/// Starts (or picks up) a pairing, shows the code, asks the person to
/// confirm it, and waits until the signer approved too.
fn pair(setup: &Setup, st: &Status) -> Result<(), Failure> {
    let sock = &setup.socket;
    let waiting = st.signers.iter().find(|g| g.pairing_code.is_some());
    let address = match (&setup.signer, waiting) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(g)) => {
            println!(
                "The agent found the signer at {} and waits to pair with it.",
                g.address
            );
            None
        }
        (None, None) => {
            let a = ask("Address of the signer (HOST:PORT where `vmux signer run` listens; empty to look on the local network):")?;
            (!a.is_empty()).then_some(a)
        }
    };
    if address.is_none() && waiting.is_none() {
        println!("Looking for a signer on the local network…");
    }
    let (code, at) = request_code(sock, address.as_deref())?;
    println!("\nPairing code {code} (signer at {at}).");
    println!("Check that the signer shows the same code, and approve it there only if it does.");
    let typed = ask("Type the code the signer shows to confirm (empty to refuse):")?;
    if typed.is_empty() {
        Client::new(sock).pair_deny()?;
        return Err(Failure("pairing refused; nothing was pinned".into()));
    }
    crate::agent_cmd::confirm_code(sock, &typed)?;
    println!("Waiting for the approval on the signer…");
    let g = wait_pinned(sock, &at, &setup.command("status"))?;
    let keys = status(sock).map_or(0, |s| s.keys.len());
    println!(
        "Paired with the signer {}: {keys} key(s) cached.",
        signer_name(&g)
    );
    Ok(())
}

/// Asks the agent to pair with the signer at `address` (or with the one
/// it found or waits for when `None`) and waits for the code it shows:
/// the code and the signer's address.
pub(crate) fn request_code(
    sock: &Path,
    address: Option<&str>,
) -> Result<(String, String), Failure> {
    if let Some(a) = address {
        Client::new(sock).pair_signer(a)?;
    }
    let deadline = Instant::now() + CODE_WAIT;
    loop {
        let st = status(sock).ok_or_else(|| Failure("the agent stopped answering".into()))?;
        let link = st
            .signers
            .iter()
            .find(|g| at_address(g, address) && g.pairing_code.is_some());
        if let Some(g) = link {
            return Ok((
                g.pairing_code.clone().unwrap_or_default(),
                g.address.clone(),
            ));
        }
        if Instant::now() >= deadline {
            let why = st
                .signers
                .iter()
                .find(|g| at_address(g, address))
                .and_then(|g| g.last_error.clone())
                .unwrap_or_else(|| "no signer answered".into());
            return Err(Failure(format!(
                "no pairing code within {} s ({why}); check that `vmux signer run` runs there and is reachable, then run setup again",
                CODE_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Once the code was confirmed here: waits until the signer at `at`
/// approved too and its key list arrived; `status_command` is what the
/// person may run to see why not.
pub(crate) fn wait_pinned(
    sock: &Path,
    at: &str,
    status_command: &str,
) -> Result<SignerStatus, Failure> {
    let deadline = Instant::now() + APPROVAL_WAIT;
    loop {
        let st = status(sock).ok_or_else(|| Failure("the agent stopped answering".into()))?;
        let link = st.signers.iter().find(|g| g.address == at);
        if let Some(g) = link.filter(|g| g.connected) {
            // The link is up before its key list arrives: ask for the
            // list and wait for it before counting.
            let _ = Client::new(sock).refresh();
            return Ok(g.clone());
        }
        // The attempt ended without a link: the signer refused, or the
        // codes differed.
        if let Some(why) = link
            .filter(|g| g.pairing_code.is_none())
            .and_then(|g| g.last_error.as_deref())
        {
            return Err(Failure(format!(
                "the signer at {at} did not pair: {}",
                vmux_proto::sanitize(why)
            )));
        }
        if Instant::now() >= deadline {
            return Err(Failure(format!(
                "the signer at {at} did not approve within {} minutes; see `{status_command}`",
                APPROVAL_WAIT.as_secs() / 60,
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `g` is the signer at `address` (any signer when none was given).
fn at_address(g: &SignerStatus, address: Option<&str>) -> bool {
    match address {
        Some(a) => g.address == a,
        None => true,
    }
}

pub(crate) fn signer_name(g: &SignerStatus) -> String {
    vmux_proto::sanitize(g.name.as_deref().unwrap_or(&g.address)).to_string()
}

pub(crate) fn status(sock: &Path) -> Option<Status> {
    Client::new(sock)
        .with_timeout(Duration::from_secs(5))
        .status()
        .ok()
}

/// Polls (a person is starting it, or systemd on the first connection)
/// until the agent answers, at most `limit`.
pub(crate) fn wait_for_agent(sock: &Path, limit: Duration) -> Option<Status> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = status(sock) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn heading(text: &str) {
    println!("\n== {text}");
}

/// One line from the person; stdin closing is an error.
pub(crate) fn ask(prompt: &str) -> Result<String, Failure> {
    print!("{prompt} ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        return Err(Failure("the terminal closed before an answer".into()));
    }
    Ok(line.trim().to_owned())
}

/// A yes/no question; yes is the default.
pub(crate) fn ask_yes(prompt: &str) -> Result<bool, Failure> {
    loop {
        match ask(&format!("{prompt} [Y/n]"))?
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "y" | "yes" => return Ok(true),
            "n" | "no" => return Ok(false),
            _ => println!("Answer y or n."),
        }
    }
}

/// Quotes for a POSIX shell when needed.
pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
