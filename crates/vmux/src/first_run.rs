//! `vmux setup`: the whole laptop-and-phone setup on the workstation.
//!
//! On a terminal it creates the signer here if there is none (one
//! ECDSA key), runs the signer and the agent as user services (or, with
//! no systemd user manager, in the background with logs under the state
//! directory, and says so), pairs them (it reads the code from both
//! sides, compares it itself and asks the person once), enrols the phone
//! (the trust QR code, then the enrolment QR code, printed by `vmux signer
//! phone add`) and waits until the phone was added, turns on `approve =
//! "phone"` and `ca = "phone:NAME"` in `signer.toml` and restarts the
//! signer, prints the lines for servers, and ends with a check: a login
//! into a throwaway sshd on loopback with the certificate the phone
//! signed. With a tailnet (MagicDNS and HTTPS certificates on) it offers
//! the tailnet name and `tailscale cert` instead of the signer's own CA.
//! Its own machine time, the person's time aside, is printed at the end.
//!
//! Without a terminal it prints its plan and fails, as `vmux agent
//! setup` does. A set-up machine is left as it is unless the person says
//! otherwise.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use vmux_control::agent::Client as AgentClient;
use vmux_control::signer::{self as signer_control, Client as SignerClient};
use vmux_control::ControlError;
use vmux_home::Home;
use vmux_proto::DecisionKind;
use vmux_signer::config::SignerConfig;
use vmux_signer::SignerHome;

use crate::detached::Detached;
use crate::setup::{ask_yes, heading, shell_quote, status};
use crate::Failure;

/// How long a service may take to answer once started.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long the enrolment link lives (the signer's own limit).
const ENROL_WAIT: Duration = Duration::from_secs(600);
/// How long the person may take to approve the certificate on the phone.
const APPROVE_WAIT: Duration = Duration::from_secs(300);

/// What `vmux setup` was asked to do.
pub struct Options {
    /// `--home DIR`, as given.
    pub home_flag: Option<PathBuf>,
    /// The home both the signer and the agent live in.
    pub home: Home,
    /// `--phone NAME` (else asked).
    pub phone: Option<String>,
    /// `--yes`: take every default without asking.
    pub yes: bool,
    /// Where the signer listens for agents.
    pub listen: String,
    /// Where the phone page listens.
    pub web_listen: String,
    /// `--web-name NAME`, passed to the signer.
    pub web_name: Option<String>,
    /// `--tailnet` (true), `--no-tailnet` (false), or ask (None).
    pub tailnet: Option<bool>,
    /// `--no-advertise`, passed to the signer.
    pub no_advertise: bool,
    /// `--passphrase-file FILE`: the signer's keys encrypted with it.
    pub passphrase_file: Option<PathBuf>,
}

/// The person's time, kept apart from the machine's.
struct Clock {
    start: Instant,
    person: Duration,
}

impl Clock {
    /// Runs `f` (a question, a wait for the phone) as the person's time.
    fn person<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.person += t.elapsed();
        r
    }

    fn machine(&self) -> Duration {
        self.start.elapsed().saturating_sub(self.person)
    }
}

/// How the services run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// systemd user units.
    Systemd,
    /// Background processes started by setup.
    Detached,
}

/// What is there already.
struct Survey {
    signer: bool,
    config: SignerConfig,
    phones: Vec<String>,
    paired: bool,
}

impl Survey {
    fn take(signer: &SignerHome, home: &Home) -> Result<Survey, Failure> {
        let exists = signer.state().is_ok();
        let config: SignerConfig = vmux_home::load_toml(&signer.config_path())?;
        let phones = vmux_phone::book::read_phones(&signer.phones_path())
            .map(|l| l.into_iter().map(|p| p.name).collect())
            .unwrap_or_default();
        let agent = vmux_agent::state_path(home);
        let paired = vmux_agent::AgentState::load(&agent)
            .map(|s| !s.signers.is_empty())
            .unwrap_or(false);
        Ok(Survey {
            signer: exists,
            config,
            phones,
            paired,
        })
    }

    /// The phone that is the CA, when `signer.toml` names an enrolled one.
    fn ca_phone(&self) -> Option<&str> {
        let ca = self.config.ca.as_deref()?.strip_prefix("phone:")?;
        let first = ca.split(',').next()?.trim();
        self.phones.iter().find(|p| *p == first).map(String::as_str)
    }

    fn done(&self) -> bool {
        self.signer && self.config.approve == "phone" && self.ca_phone().is_some() && self.paired
    }
}

/// Runs `vmux setup`.
pub fn run(opts: &Options) -> Result<ExitCode, Failure> {
    if !std::io::stdin().is_terminal() {
        print_plan(opts);
        return Err(Failure(
            "setup asks questions and needs a terminal: run it in one, or do the steps above yourself".into(),
        ));
    }
    let mut clock = Clock {
        start: Instant::now(),
        person: Duration::ZERO,
    };
    let result = walk(opts, &mut clock);
    if result.is_ok() {
        println!(
            "\nvmux setup's own time: {:.1} s (your time aside: {:.0} s).",
            clock.machine().as_secs_f64(),
            clock.person.as_secs_f64()
        );
    }
    result
}

impl Options {
    /// `vmux [--home DIR] REST` as the person would type it.
    fn command(&self, rest: &str) -> String {
        match &self.home_flag {
            Some(h) => format!(
                "vmux --home {} {rest}",
                shell_quote(&h.display().to_string())
            ),
            None => format!("vmux {rest}"),
        }
    }

    /// `--home DIR` for a child vmux, if given.
    fn home_args(&self) -> Vec<String> {
        match &self.home_flag {
            Some(h) => vec![
                "--home".into(),
                std::path::absolute(h)
                    .unwrap_or_else(|_| h.clone())
                    .display()
                    .to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// Where the agent reaches the signer: its listen address, with a
    /// wildcard host made loopback.
    fn signer_address(&self) -> String {
        match self.listen.rsplit_once(':') {
            Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
            Some(("[::]", port)) => format!("[::1]:{port}"),
            _ => self.listen.clone(),
        }
    }
}

fn print_plan(opts: &Options) {
    println!("vmux setup would, on a terminal:");
    println!(
        "  1. create the signer in {} if there is none, with one ECDSA key (`{}`, `{}`)",
        opts.home.state_dir().display(),
        opts.command("signer init --name NAME"),
        opts.command("signer keygen --comment USER@HOST")
    );
    println!(
        "  2. if `tailscale status --json` shows MagicDNS with HTTPS certificates, offer the tailnet name and `tailscale cert`; else the signer's own CA for the phone page"
    );
    println!(
        "  3. run the signer (agents on {}, the phone page on {}) and the agent as systemd user services, or in the background where there is no user manager",
        opts.listen, opts.web_listen
    );
    println!("  4. pair the agent with the signer: show the 6-digit code both show, and ask once");
    println!(
        "  5. enrol your phone: a QR code to trust the page's certificate, one to open the page and tap Create passkey (`{}`)",
        opts.command("signer phone add --name NAME")
    );
    println!(
        "  6. set approve = \"phone\" and ca = \"phone:NAME\" in {} and restart the signer",
        SignerHome::new(opts.home.clone()).config_path().display()
    );
    println!("  7. print the authorized_keys line and the sshd lines for the phone CA");
    println!("  8. check: a login into a throwaway sshd on 127.0.0.1 through the agent, approved on the phone");
}

fn walk(opts: &Options, clock: &mut Clock) -> Result<ExitCode, Failure> {
    let signer = SignerHome::new(opts.home.clone());
    let sock = opts.home.default_socket().to_owned();
    println!("vmux setup: this machine's signer and agent, and your phone as the approver.");
    let survey = Survey::take(&signer, &opts.home)?;
    let runner = if crate::service::user_manager_available() {
        Runner::Systemd
    } else {
        Runner::Detached
    };
    let running = signer_status(&signer).is_some() && status(&sock).is_some();
    // A service has no terminal to ask for a passphrase on: say so before
    // anything changes.
    if signer.state().is_ok_and(|s| s.encrypted) && opts.passphrase_file.is_none() && !running {
        return Err(Failure(format!(
            "the signer in {} has a passphrase, and its service cannot ask for it: run setup with --passphrase-file FILE (mode 0600)",
            opts.home.state_dir().display()
        )));
    }

    if survey.done() {
        let phone = survey.ca_phone().unwrap_or_default().to_owned();
        println!(
            "\nThis machine is set up: the signer in {}, the phone {} approves and is the CA, the agent is paired.",
            opts.home.state_dir().display(),
            vmux_proto::sanitize(&phone)
        );
        if running {
            println!("The signer and the agent run. Nothing changed.");
            println!(
                "To enrol another phone: `{}`; to see the agent: `{}`.",
                opts.command("signer phone add --name NAME"),
                opts.command("agent status")
            );
            return Ok(ExitCode::SUCCESS);
        }
        let start = opts.yes
            || clock.person(|| ask_yes("The signer or the agent is not running. Start them?"))?;
        if !start {
            println!("Nothing changed.");
            return Ok(ExitCode::SUCCESS);
        }
    } else if survey.signer || survey.paired || !survey.phones.is_empty() {
        // Something is here already: say what will change, and ask.
        println!(
            "\nFound an earlier setup in {} (signer: {}, agent paired: {}, phones: {}); setup goes on from there and keeps what is there.",
            opts.home.state_dir().display(),
            if survey.signer { "yes" } else { "no" },
            if survey.paired { "yes" } else { "no" },
            survey.phones.len()
        );
        if !opts.yes && !clock.person(|| ask_yes("Go on?"))? {
            println!("Nothing changed.");
            return Ok(ExitCode::SUCCESS);
        }
    }

    heading("1. The signer");
    if survey.signer {
        println!(
            "The signer in {} is there already.",
            opts.home.state_dir().display()
        );
    } else {
        create_signer(opts, &signer)?;
    }

    heading("2. The phone page's name");
    let page = choose_page(opts, clock)?;

    heading("3. The signer and the agent as services");
    let phone = phone_name(opts, &survey)?;
    // The phone approves and is the CA from the start: the CA's phone
    // signs nothing until it is enrolled, and no restart after the
    // enrolment signs the page out.
    let ca = format!("phone:{phone}");
    let changed = set_config(&signer, &[("approve", "phone"), ("ca", &ca)])?;
    if changed {
        println!(
            "Set approve = \"phone\" and ca = {ca:?} in {}.",
            signer.config_path().display()
        );
    }
    let services = Services::new(opts, runner, &page);
    services.start_signer(opts, &signer, changed)?;
    services.start_agent(opts, &sock)?;

    heading("4. Pairing the agent with the signer");
    let st = status(&sock).ok_or_else(|| Failure("the agent stopped answering".into()))?;
    if let Some(g) = st
        .signers
        .iter()
        .find(|g| g.id.is_some() && g.pairing_code.is_none())
    {
        println!(
            "The agent is paired with the signer {} already.",
            crate::setup::signer_name(g)
        );
    } else {
        pair(opts, &signer, &sock, clock)?;
    }

    heading("5. Your phone");
    enrol(opts, &signer, &phone, clock)?;
    wait_connected(&sock)?;

    heading("6. Your servers");
    let phone_line = phone_key_line(&signer, &phone)?;
    print_server_lines(&signer, &phone_line)?;

    heading("7. Check: a login through the agent, approved on your phone");
    check_login(&sock, &phone_line, clock)?;

    heading("Your shell");
    let shell = crate::agent_cmd::shell_from_env();
    println!(
        "Add this line to {} so that ssh, git and the others use the agent:\n\n    {}\n",
        crate::agent_cmd::startup_file(shell),
        crate::agent_cmd::env_line(shell, &sock)
    );
    if runner == Runner::Detached {
        println!(
            "There is no systemd user manager here, so the signer and the agent run in the background (logs in {}); after a reboot run `{}` again to start them.",
            opts.home.state_dir().display(),
            opts.command("setup")
        );
    }
    println!("Done: each new certificate (every 8 hours) is one Approve on your phone; logins in between need nothing.");
    Ok(ExitCode::SUCCESS)
}

fn create_signer(opts: &Options, signer: &SignerHome) -> Result<(), Failure> {
    let host = crate::agent_cmd::host_name();
    let pass = match &opts.passphrase_file {
        Some(f) => Some(crate::passphrase::get(Some(f), "", false)?),
        None => None,
    };
    let (identity, _) = signer.init(&host, pass.as_deref().map(String::as_str))?;
    let keys = signer.software_keys(pass.as_deref().map(String::as_str))?;
    let user = vmux_signer::ca::login_name();
    let key = keys.generate(
        vmux_signer::provider::KeyType::Ecdsa,
        &format!("{user}@{host}"),
    )?;
    println!(
        "Created the signer {host} (id {}) in {} with one key:\n    {}",
        identity.id(),
        opts.home.state_dir().display(),
        key.public.to_openssh()?
    );
    if pass.is_none() {
        println!("Its keys are stored unencrypted (mode 0600), so that it starts at login without a passphrase; every signature still needs your phone's Approve. For encrypted keys run setup with --passphrase-file FILE.");
    }
    Ok(())
}

/// How the phone page is served: the signer's own CA under a name, or a
/// tailnet name with tailscale's certificate.
enum Page {
    OwnCa,
    Tailnet {
        name: String,
        cert: PathBuf,
        key: PathBuf,
    },
}

fn choose_page(opts: &Options, clock: &mut Clock) -> Result<Page, Failure> {
    let offer = match opts.tailnet {
        Some(false) => None,
        _ => crate::tailnet::offer(),
    };
    if opts.tailnet == Some(true) && offer.is_none() {
        return Err(Failure(
            "--tailnet: `tailscale status --json` shows no tailnet with MagicDNS and HTTPS certificates on".into(),
        ));
    }
    if let Some(o) = offer {
        println!(
            "This machine is on a tailnet as {} with HTTPS certificates on: the page can use that name with a publicly trusted certificate (no trust step on the phone, and it works away from home).",
            o.name
        );
        let take = opts.yes
            || opts.tailnet == Some(true)
            || clock.person(|| ask_yes(&format!("Use {} and `tailscale cert`?", o.name)))?;
        if take {
            let (cert, key) = crate::tailnet::files(opts.home.state_dir(), &o.name);
            crate::tailnet::fetch_cert(&o.name, &cert, &key)?;
            println!("tailscale wrote {} and {}.", cert.display(), key.display());
            return Ok(Page::Tailnet {
                name: o.name,
                cert,
                key,
            });
        }
    }
    match &opts.web_name {
        Some(n) => println!("The page's name is {n}, with a certificate from the signer's own CA (limited to that name)."),
        None => println!("The page's name is this machine's HOSTNAME.local, with a certificate from the signer's own CA (limited to that name)."),
    }
    Ok(Page::OwnCa)
}

/// The services and the signer's arguments.
struct Services {
    runner: Runner,
    signer_args: Vec<String>,
    renew: Option<Vec<String>>,
}

impl Services {
    fn new(opts: &Options, runner: Runner, page: &Page) -> Services {
        let mut args = vec![
            "--listen".to_owned(),
            opts.listen.clone(),
            "--web-listen".into(),
            opts.web_listen.clone(),
        ];
        let mut renew = None;
        match page {
            Page::OwnCa => {
                if let Some(n) = &opts.web_name {
                    args.extend(["--web-name".into(), n.clone()]);
                }
            }
            Page::Tailnet { name, cert, key } => {
                let port = opts.web_listen.rsplit_once(':').map_or("8443", |(_, p)| p);
                args.extend([
                    "--web-origin".into(),
                    format!("https://{name}:{port}"),
                    "--tls-cert".into(),
                    cert.display().to_string(),
                    "--tls-key".into(),
                    key.display().to_string(),
                ]);
                renew = Some(crate::tailnet::cert_args(name, cert, key));
            }
        }
        if let Some(p) = &opts.passphrase_file {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            args.extend(["--passphrase-file".into(), p.display().to_string()]);
        }
        // A signer that listens on loopback only has nothing to offer
        // agents elsewhere; it still advertises while its page has a
        // .local name, as its mDNS responder answers that name for the
        // phone (unless avahi-daemon does).
        let host = opts.listen.rsplit_once(':').map_or("", |(h, _)| h);
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let local_name = match page {
            Page::OwnCa => opts.web_name.as_deref().is_none_or(|n| {
                n.to_ascii_lowercase()
                    .trim_end_matches('.')
                    .ends_with(".local")
            }),
            Page::Tailnet { .. } => false,
        };
        if opts.no_advertise || (loopback && !local_name) {
            args.push("--no-advertise".into());
        }
        Services {
            runner,
            signer_args: args,
            renew,
        }
    }

    /// Writes the signer's unit (or starts it in the background) and
    /// waits until it answers; `replace` restarts one that runs.
    fn start_signer(
        &self,
        opts: &Options,
        signer: &SignerHome,
        replace: bool,
    ) -> Result<(), Failure> {
        let exe = crate::current_exe()?;
        match self.runner {
            Runner::Systemd => {
                let spec = crate::service::ServiceSpec {
                    exe,
                    home: opts
                        .home_flag
                        .as_ref()
                        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
                    socket: opts.home.default_socket().to_owned(),
                };
                let dir = crate::service::user_unit_dir()?;
                let unit = crate::service::signer_service_unit_with(&spec, &self.signer_args);
                let mut files = vec![(dir.join("vmux-signer.service"), unit)];
                if let Some(args) = &self.renew {
                    let tailscale = which("tailscale").unwrap_or_else(|| "tailscale".into());
                    let (svc, timer) = crate::service::tailscale_cert_units(&tailscale, args);
                    files.push((dir.join("vmux-tailscale-cert.service"), svc));
                    files.push((dir.join("vmux-tailscale-cert.timer"), timer));
                }
                crate::service::install(&files, "vmux-signer.service")?;
                if self.renew.is_some() {
                    crate::service::install(&[], "vmux-tailscale-cert.timer")?;
                    println!("A daily user timer (vmux-tailscale-cert.timer) runs `tailscale cert` again, which renews the certificate near its end; the signer reloads it.");
                }
                if replace && signer_status(signer).is_some() {
                    crate::service::restart("vmux-signer.service");
                }
            }
            Runner::Detached => {
                println!("There is no systemd user manager here: starting the signer in the background instead.");
                let d = Detached::new(opts.home.state_dir(), "signer");
                if d.running().is_some() {
                    if !replace {
                        return wait_signer(signer, Some(&d));
                    }
                    d.stop()?;
                }
                let mut args = opts.home_args();
                args.extend(["signer".into(), "run".into()]);
                args.extend(self.signer_args.iter().cloned());
                let pid = d.start(&exe, &args)?;
                println!(
                    "Started the signer (pid {pid}); its log is {}.",
                    d.log.display()
                );
                if let Some(a) = &self.renew {
                    println!(
                        "Renew the tailscale certificate daily, e.g. with this crontab line (the signer reloads it):\n    0 4 * * * tailscale {}",
                        a.iter().map(|s| shell_quote(s)).collect::<Vec<_>>().join(" ")
                    );
                }
                return wait_signer(signer, Some(&d));
            }
        }
        wait_signer(signer, None)
    }

    fn start_agent(&self, opts: &Options, sock: &Path) -> Result<(), Failure> {
        if status(sock).is_some() {
            println!("The agent answers on {}.", sock.display());
            return Ok(());
        }
        match self.runner {
            Runner::Systemd => {
                crate::agent_cmd::install_units(opts.home_flag.as_deref(), sock, false)?;
            }
            Runner::Detached => {
                let d = Detached::new(opts.home.state_dir(), "agent");
                let mut args = opts.home_args();
                args.extend(["agent".into(), "run".into()]);
                let pid = d.start(&crate::current_exe()?, &args)?;
                println!(
                    "Started the agent (pid {pid}); its log is {}.",
                    d.log.display()
                );
            }
        }
        let deadline = Instant::now() + START_WAIT;
        while status(sock).is_none() {
            if Instant::now() >= deadline {
                let why = Detached::new(opts.home.state_dir(), "agent").last_line();
                return Err(Failure(format!(
                    "the agent did not answer on {} within {} s{}",
                    sock.display(),
                    START_WAIT.as_secs(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" (its log: {why})")
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("The agent answers on {}.", sock.display());
        Ok(())
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn signer_status(signer: &SignerHome) -> Option<signer_control::Status> {
    SignerClient::new(signer.control_path()).status().ok()
}

/// Waits until the signer answers on its control socket and serves the
/// page; a background one that exits is reported with its last log line.
fn wait_signer(signer: &SignerHome, detached: Option<&Detached>) -> Result<(), Failure> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        match SignerClient::new(signer.control_path()).phones() {
            Ok(list) => {
                println!("The signer runs; its phone page is at {}.", list.origin);
                return Ok(());
            }
            Err(ControlError::Refused(e)) => {
                return Err(Failure(format!(
                    "the signer runs without its phone page ({e})"
                )));
            }
            Err(_) => {}
        }
        let why = detached.map(|d| (d.running().is_none(), d.last_line()));
        if let Some((true, line)) = &why {
            return Err(Failure(format!(
                "the signer stopped: {}",
                line.strip_prefix("vmux: ").unwrap_or(line)
            )));
        }
        if Instant::now() >= deadline {
            return Err(Failure(format!(
                "the signer did not answer within {} s; see {}",
                START_WAIT.as_secs(),
                match detached {
                    Some(d) => d.log.display().to_string(),
                    None => "`journalctl --user -u vmux-signer`".into(),
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pairs the agent with the signer: the code from both sides, compared
/// here, shown once and confirmed once for both.
fn pair(
    opts: &Options,
    signer: &SignerHome,
    sock: &Path,
    clock: &mut Clock,
) -> Result<(), Failure> {
    let address = opts.signer_address();
    let (code, at) = crate::setup::request_code(sock, Some(&address))?;
    let deadline = Instant::now() + START_WAIT;
    let signer_socket = SignerClient::new(signer.control_path());
    let agent = AgentClient::new(sock);
    let pending = loop {
        if let Some(p) = signer_socket.pair_pending()? {
            break p;
        }
        if Instant::now() >= deadline {
            return Err(Failure(
                "the signer shows no pairing for the agent; see its log".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let theirs = &pending.code;
    if *theirs != code {
        let _ = agent.pair_deny();
        return Err(Failure(format!(
            "the agent shows code {code} but the signer {}: something else answered at {at}; nothing was pinned",
            vmux_proto::sanitize(theirs)
        )));
    }
    println!(
        "\nPairing code {code}: the agent {} and the signer show the same code.",
        vmux_proto::sanitize(&pending.agent)
    );
    if !opts.yes && !clock.person(|| ask_yes("Pair them?"))? {
        let _ = agent.pair_deny();
        return Err(Failure("pairing refused; nothing was pinned".into()));
    }
    crate::agent_cmd::confirm_code(sock, &code)?;
    match signer_socket.pair_confirm(&code) {
        Ok(_) => {}
        Err(ControlError::Refused(e)) => {
            return Err(Failure(format!(
                "the signer did not take the confirmation: {e}"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let g = crate::setup::wait_pinned(sock, &at, &opts.command("agent status"))?;
    println!("Paired with the signer {}.", crate::setup::signer_name(&g));
    Ok(())
}

/// The enrolled phones' names, from the running signer.
fn phone_names(signer: &SignerHome) -> Result<Vec<String>, Failure> {
    let list = SignerClient::new(signer.control_path()).phones()?;
    Ok(list.phones.into_iter().map(|p| p.name).collect())
}

/// The phone's name: `--phone`, else the CA's or the first enrolled,
/// else `phone`.
fn phone_name(opts: &Options, survey: &Survey) -> Result<String, Failure> {
    let default = survey
        .ca_phone()
        .map(str::to_owned)
        .or_else(|| survey.phones.first().cloned())
        .unwrap_or_else(|| "phone".into());
    // Not asked: one question fewer, and `--phone` names it.
    let name = opts.phone.clone().unwrap_or(default);
    if name.trim().is_empty() || name.contains(',') || name.chars().any(char::is_control) {
        return Err(Failure(format!(
            "{:?} is not a phone name: no commas, no control characters",
            vmux_proto::sanitize(&name)
        )));
    }
    Ok(name)
}

/// Enrols the phone `name` unless it is enrolled.
fn enrol(
    opts: &Options,
    signer: &SignerHome,
    name: &str,
    clock: &mut Clock,
) -> Result<(), Failure> {
    let names = phone_names(signer)?;
    let name = name.to_owned();
    if names.contains(&name) {
        println!(
            "The phone {} is enrolled already.",
            vmux_proto::sanitize(&name)
        );
        return Ok(());
    }
    let mut args = opts.home_args();
    args.extend([
        "signer".into(),
        "phone".into(),
        "add".into(),
        "--name".into(),
        name.clone(),
    ]);
    // Its QR codes (the trust link's first) and the CA's fingerprint go
    // to the terminal; its links come here.
    let out = Command::new(crate::current_exe()?)
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Failure(format!("cannot run vmux signer phone add: {e}")))?;
    if !out.status.success() {
        return Err(Failure("vmux signer phone add failed (see above)".into()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let link = lines
        .next()
        .filter(|l| l.starts_with("https://"))
        .ok_or_else(|| Failure("vmux signer phone add printed no enrolment link".into()))?;
    let trust = lines.find_map(|l| l.strip_prefix("trust: "));
    println!("On your phone:");
    match trust {
        Some(t) => {
            println!("  1. Scan the first QR code (or open {t}), compare the fingerprint with the one above, and install the certificate the page offers, as it says (on an iPhone also turn on full trust for it).");
            println!("  2. Scan the second QR code (or open {link}) and tap Create passkey.");
        }
        None => println!("  Scan the QR code (or open {link}) and tap Create passkey."),
    }
    println!(
        "Trust link: {}",
        trust.unwrap_or("none (the page's certificate is publicly trusted)")
    );
    println!("Enrolment link: {link}");
    println!("Waiting for the phone (the links work for 10 minutes)…");
    let deadline = Instant::now() + ENROL_WAIT;
    clock.person(|| loop {
        if phone_names(signer)?.contains(&name) {
            println!("The phone {} was added.", vmux_proto::sanitize(&name));
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure(format!(
                "the phone was not added within 10 minutes; run `{}` again",
                opts.command("setup")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    })
}

/// Sets top-level keys of `signer.toml`, keeping the rest (and its
/// comments) as they are; written atomically, mode 0600.
fn set_config(signer: &SignerHome, pairs: &[(&str, &str)]) -> Result<bool, Failure> {
    let path = signer.config_path();
    let text = match vmux_home::read_optional(&path)? {
        Some(b) => String::from_utf8(b)
            .map_err(|_| Failure(format!("{} is not UTF-8 text", path.display())))?,
        None => String::new(),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Failure(format!("{} does not parse: {e}", path.display())))?;
    let mut changed = false;
    for (k, v) in pairs {
        if doc.get(k).and_then(|i| i.as_str()) != Some(v) {
            doc[k] = toml_edit::value(*v);
            changed = true;
        }
    }
    if !changed {
        return Ok(false);
    }
    let new = doc.to_string();
    // What the signer will read must load.
    toml::from_str::<SignerConfig>(&new)
        .map_err(|e| Failure(format!("{} would not load: {e}", path.display())))?;
    if let Some(dir) = path.parent() {
        vmux_home::create_private_dir(dir)?;
    }
    vmux_home::write_private(&path, new.as_bytes())?;
    Ok(true)
}

/// Waits until the agent is connected to a signer again.
fn wait_connected(sock: &Path) -> Result<(), Failure> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        if status(sock).is_some_and(|s| s.signers.iter().any(|g| g.connected)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure(format!(
                "the agent did not reconnect to the signer within {} s",
                START_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The phone's passkey line (its key, and the CA's).
fn phone_key_line(signer: &SignerHome, phone: &str) -> Result<String, Failure> {
    let (keys, _) = vmux_signer::provider::passkey_keys_in(&signer.phones_path())?;
    let k = keys
        .iter()
        .find(|k| k.public.comment() == phone)
        .ok_or_else(|| Failure(format!("the phone {phone} has no passkey on record")))?;
    Ok(k.public.to_openssh()?)
}

fn print_server_lines(signer: &SignerHome, phone_line: &str) -> Result<(), Failure> {
    println!("To let a server accept the certificates your phone signs (a login needs no tap while the certificate lasts):");
    println!("  in /etc/ssh/vmux-ca.pub:\n    {phone_line}");
    println!("  in /etc/ssh/sshd_config:\n    TrustedUserCAKeys /etc/ssh/vmux-ca.pub");
    println!(
        "    {}   # sshd before OpenSSH 10.3",
        vmux_signer::ca::PHONE_CA_SSHD_LINE
    );
    let keys = signer.software_keys(None)?;
    use vmux_signer::provider::KeyProvider;
    let lines: Vec<String> = keys
        .keys()
        .iter()
        .filter_map(|k| k.public.to_openssh().ok())
        .collect();
    if !lines.is_empty() {
        println!("Or, for a server you cannot configure, the authorized_keys line (each login is one Approve on the phone):");
        for l in lines {
            println!("    {l}");
        }
    }
    Ok(())
}

/// The check: the certificate the phone signs, then a login with it into
/// a throwaway sshd on 127.0.0.1.
fn check_login(sock: &Path, phone_line: &str, clock: &mut Clock) -> Result<(), Failure> {
    let Some(sshd) = ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        println!(
            "No sshd on this machine: the check is skipped (install openssh-server to have it)."
        );
        return Ok(());
    };
    println!("Approve the certificate on your phone (a card says certificate)…");
    let deadline = Instant::now() + APPROVE_WAIT;
    let mut asked = false;
    clock.person(|| loop {
        let st = status(sock).ok_or_else(|| Failure("the agent stopped answering".into()))?;
        if st.certificate.state == "valid" {
            println!("{}", st.certificate.line);
            return Ok(());
        }
        // The agent asks by itself when it connects; if that attempt
        // ended (denied, timed out), ask once more.
        if !asked
            && st
                .waiting
                .iter()
                .all(|w| w.kind != DecisionKind::Certificate)
            && st.pending_requests == 0
        {
            asked = true;
            let agent = AgentClient::new(sock).with_timeout(Duration::from_secs(130));
            match agent.cert() {
                Ok(_) => {}
                Err(ControlError::Refused(e)) => {
                    return Err(Failure(format!(
                        "no certificate: {}",
                        vmux_proto::sanitize(&e)
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(Failure(
                "no certificate was approved on the phone within 5 minutes".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    })?;
    let dir = CheckDir::new()?;
    let result = login_once(&sshd, &dir.0, sock, phone_line);
    drop(dir);
    let (port, user) = result?;
    println!("ok: logged in to a throwaway sshd on 127.0.0.1:{port} as {user} through the agent, with the certificate your phone signed.");
    Ok(())
}

/// A private temporary directory, removed when dropped.
struct CheckDir(PathBuf);

impl CheckDir {
    fn new() -> Result<CheckDir, Failure> {
        let dir = std::env::temp_dir().join(format!("vmux-setup-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        vmux_home::create_private_dir(&dir)?;
        Ok(CheckDir(dir))
    }
}

impl Drop for CheckDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts sshd in `dir` (its own host key and config, trusting the phone
/// CA only), logs in once with `ssh … true`, stops it.
fn login_once(
    sshd: &Path,
    dir: &Path,
    sock: &Path,
    phone_line: &str,
) -> Result<(u16, String), Failure> {
    let key = dir.join("host_key");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| Failure(format!("cannot run ssh-keygen: {e}")))?;
    if !ok.success() {
        return Err(Failure(
            "ssh-keygen could not make the check's host key".into(),
        ));
    }
    let host_pub = std::fs::read_to_string(key.with_extension("pub"))?;
    let ca = dir.join("ca.pub");
    std::fs::write(&ca, format!("{phone_line}\n"))?;
    // sshd as root wants its privilege-separation directory.
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let user = vmux_signer::ca::login_name();
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile none\nTrustedUserCAKeys {}\n{}\nPermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile none\n",
                key.display(),
                ca.display(),
                vmux_signer::ca::PHONE_CA_SSHD_LINE
            ),
        )?;
        let mut child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure(format!("cannot start sshd: {e}")))?;
        let mut lines = std::io::BufReader::new(
            child
                .stderr
                .take()
                .ok_or_else(|| Failure("sshd's output".into()))?,
        )
        .lines();
        let mut listening = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("Server listening on 127.0.0.1") {
                listening = true;
                break;
            }
            if line.contains("Bind to port") || line.contains("Cannot bind") {
                break;
            }
        }
        if !listening {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        // Drain sshd's log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let known = dir.join("known_hosts");
        std::fs::write(&known, format!("[127.0.0.1]:{port} {}", host_pub.trim()))?;
        let out = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args(["-o", "ConnectTimeout=10", "-p", &port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg("true")
            .env("SSH_AUTH_SOCK", sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let _ = child.kill();
        let _ = child.wait();
        let out = out.map_err(|e| Failure(format!("cannot run ssh: {e}")))?;
        if out.status.success() {
            return Ok((port, user));
        }
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(Failure(format!(
            "the check's login failed: {}",
            vmux_proto::sanitize(
                why.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("ssh failed")
            )
        )));
    }
    Err(Failure(
        "the check's sshd could not bind a port on 127.0.0.1".into(),
    ))
}
