//! The command-line contract (DESIGN.md, "Command-line contract").

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// vmux: an SSH agent that holds no private keys, and the signer that
/// holds them.
#[derive(Debug, Parser)]
#[command(name = "vmux", version, about, propagate_version = true)]
pub struct Cli {
    /// Keep all state, configuration and the agent socket in DIR.
    #[arg(long, global = true, env = "VMUX_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The device that holds the keys.
    Signer {
        #[command(subcommand)]
        command: SignerCommand,
    },
    /// The SSH agent on the workstation.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Set up this machine and your phone, guided (on a terminal): the
    /// signer here (if there is none) with one key, the signer and the
    /// agent as user services, pairing them, enrolling the phone (scan
    /// the QR codes), the phone as approver and CA, the lines for your
    /// servers, and a check login into a throwaway sshd on loopback.
    /// Without a terminal it says what it would do and fails.
    Setup {
        /// Your phone's name, shown on cards and as its key's comment
        /// (default: the enrolled one, else `phone`).
        #[arg(long, value_name = "NAME")]
        phone: Option<String>,
        /// Take every default without asking (the pairing code is still
        /// compared, by setup itself).
        #[arg(long)]
        yes: bool,
        /// Where the signer listens for agents.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7326")]
        listen: String,
        /// Where the phone page listens.
        #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:8443")]
        web_listen: String,
        /// The phone page's DNS name with the signer's own CA (default:
        /// this machine's HOSTNAME.local).
        #[arg(long, value_name = "NAME")]
        web_name: Option<String>,
        /// Use the tailnet name and `tailscale cert` without asking.
        #[arg(long, conflicts_with = "no_tailnet")]
        tailnet: bool,
        /// Do not offer the tailnet.
        #[arg(long)]
        no_tailnet: bool,
        /// The signer does not advertise itself on the local network
        /// (without it, a signer on loopback advertises only while the
        /// page's name is a .local name, which its mDNS answers).
        #[arg(long)]
        no_advertise: bool,
        /// Encrypt a new signer's keys with the passphrase in FILE (mode
        /// 0600), which its service reads (default: unencrypted, so that it
        /// starts at login).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages to DIR (or print vmux(1) to stdout).
    Man {
        /// Directory for vmux.1 and one page per subcommand.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Shells `vmux agent env` knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShellKind {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// Key types `keygen` makes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyTypeArg {
    /// ECDSA on NIST P-256 (the default).
    Ecdsa,
    /// Ed25519.
    Ed25519,
    /// RSA, 3072 bits.
    Rsa,
}

/// `vmux signer …`: one group per file of `signer_cmd`, each group's
/// subcommands flattened into this one (the command line does not show
/// the groups).
#[derive(Debug, Subcommand)]
pub enum SignerCommand {
    #[command(flatten)]
    Keys(KeysCommand),
    #[command(flatten)]
    Audit(AuditCommand),
    #[command(flatten)]
    Control(ControlCommand),
    #[command(flatten)]
    Service(SignerServiceCommand),
    #[command(flatten)]
    Agents(AgentsCommand),
    #[command(flatten)]
    Phones(PhonesCommand),
    /// Serve agents.
    Run(RunArgs),
}

/// The signer's identity, CA and keys (`signer_cmd/keys.rs`).
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the signer: its device identity and its CA key, encrypted
    /// with a passphrase.
    Init {
        /// The name agents and approvers see.
        #[arg(long)]
        name: String,
        /// Store keys unencrypted (weaker: a copy of the home directory
        /// yields the keys).
        #[arg(long, conflicts_with = "passphrase_file")]
        no_passphrase: bool,
        /// Read the passphrase from FILE (mode 0600) instead of asking.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Make a new identity and print its OpenSSH public-key line.
    Keygen {
        /// The key's comment.
        #[arg(long)]
        comment: String,
        /// The key type.
        #[arg(long = "type", value_enum, default_value = "ecdsa")]
        key_type: KeyTypeArg,
        /// Read the signer's passphrase from FILE (mode 0600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Generate a non-extractable key on this registered token
        /// (`--type ecdsa` or `rsa`).
        #[arg(long, value_name = "NAME")]
        token: Option<String>,
    },
    /// Hardware tokens (PKCS#11).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Import an existing OpenSSH private key (re-encrypted with the
    /// signer's passphrase).
    Import {
        /// The private-key file.
        file: PathBuf,
        /// Read the signer's passphrase from FILE (mode 0600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Read the imported file's own passphrase from FILE (mode 0600).
        #[arg(long, value_name = "FILE")]
        key_passphrase_file: Option<PathBuf>,
    },
    /// Delete an identity.
    Delete {
        /// Its fingerprint (`SHA256:…`, as `vmux signer keys` prints).
        fingerprint: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Set an identity's comment (its display name).
    Rename {
        /// Its fingerprint.
        fingerprint: String,
        /// The new comment.
        comment: String,
        /// Read the signer's passphrase from FILE (mode 0600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List identities, like `ssh-add -l` (or `-L`).
    Keys {
        /// Print public-key lines, like `ssh-add -L`.
        #[arg(short = 'L')]
        public_lines: bool,
        /// The signer's passphrase (mode 0600), to list token keys too.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Print the CA public-key line(s) for sshd's TrustedUserCAKeys: the
    /// software CA's, or with a phone CA each enrolled CA phone's passkey
    /// line (and, on stderr, the sshd line servers before OpenSSH 10.3
    /// need).
    Ca {
        /// The CA to print, as `vmux signer run --ca` takes it (default:
        /// `ca` in signer.toml, else `software`).
        #[arg(long, value_name = "CA")]
        ca: Option<String>,
    },
}

/// The audit log (`signer_cmd/audit.rs`).
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the audit log of decisions.
    Audit {
        /// Check the keyed chain and name the first line that breaks it
        /// (needs the signer's passphrase when it has one).
        #[arg(long)]
        verify: bool,
        /// Only entries since: Unix seconds, YYYY-MM-DD, or a duration ago
        /// (90m, 2h, 3d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Read the signer's passphrase from FILE (mode 0600), for
        /// `--verify`.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

/// Asking the running signer to lock or unlock (`signer_cmd/control.rs`).
#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Lock the running signer: signatures fail with signerLocked until
    /// it is unlocked, and approval windows close.
    Lock,
    /// Unlock the running signer.
    Unlock {
        /// Read the passphrase from FILE (mode 0600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

/// The signer's systemd user unit (`signer_cmd/service.rs`).
#[derive(Debug, Subcommand)]
pub enum SignerServiceCommand {
    /// Install a systemd user unit for a headless signer.
    Install {
        /// Only print the unit.
        #[arg(long)]
        print: bool,
        /// The passphrase file the service reads (mode 0600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Remove the signer's unit.
    Uninstall,
}

/// Paired agents (`signer_cmd/agents.rs`).
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List paired agents.
    Agents,
    /// Revoke a paired agent: its next connection is refused.
    Unpair {
        /// The agent's id (or an unambiguous prefix), from `vmux signer agents`.
        id: String,
    },
}

/// Enrolled phones (`signer_cmd/phones.rs`).
#[derive(Debug, Subcommand)]
pub enum PhonesCommand {
    /// Enrol or remove a phone (the phone page's approvers and keys).
    #[command(subcommand)]
    Phone(PhoneCommand),
    /// List enrolled phones: added, last seen, whether a page is open now.
    Phones,
}

/// `vmux signer run`'s flags (`signer_cmd/serve.rs`).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on (default from signer.toml, else 0.0.0.0:7326).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// How to ask for approval: `tty`, `desktop`, `phone` (the phone
    /// page; needs --web-listen), `command:PROGRAM`, or
    /// `allow-all` (approves everything without asking: benchmarks and
    /// unattended labs only).
    #[arg(long, value_name = "MODE")]
    pub approve: Option<String>,
    /// Who signs session certificates: `software` (the signer's CA
    /// key, the default) or `phone:NAME[,phone:NAME…]` (those enrolled
    /// phones' passkeys, one approval on a phone per certificate;
    /// needs --web-listen).
    #[arg(long, value_name = "CA")]
    pub ca: Option<String>,
    /// Do not advertise on the local network (mDNS/DNS-SD
    /// `_vmuxsigner._tcp`).
    #[arg(long)]
    pub no_advertise: bool,
    /// Read the passphrase from FILE (mode 0600) instead of asking.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Agents wake this signer by POSTing to this https:// URL.
    #[arg(long, value_name = "URL", conflicts_with = "apns_token")]
    pub wake_url: Option<String>,
    /// Agents wake this signer with an APNs push to this device token (hex).
    #[arg(long, value_name = "HEX", requires = "apns_topic")]
    pub apns_token: Option<String>,
    /// The APNs topic (the signer app's bundle id).
    #[arg(long, value_name = "TOPIC")]
    pub apns_topic: Option<String>,
    /// Use the APNs sandbox environment.
    #[arg(long)]
    pub apns_sandbox: bool,
    /// Serve the phone page on this address. With --tls-cert and
    /// --tls-key: HTTPS with those files. Without them, on a loopback
    /// address with --web-origin and no --web-name: plain HTTP behind
    /// a reverse proxy that terminates TLS. Otherwise: HTTPS with a
    /// certificate of the signer's own CA (name constraints: only
    /// --web-name), which `vmux signer phone add` hands to the phone.
    #[arg(long, value_name = "HOST:PORT")]
    pub web_listen: Option<String>,
    /// The page's DNS name (never an IP address); default this
    /// machine's HOSTNAME.local. The origin is then
    /// https://NAME:PORT (PORT: the port the page listens on).
    #[arg(long, value_name = "NAME", requires = "web_listen")]
    pub web_name: Option<String>,
    /// The phone page's origin as the phone reaches it:
    /// https://NAME[:PORT], a DNS name (never an IP address); with
    /// --web-name, NAME must be that name.
    #[arg(long, value_name = "URL", requires = "web_listen")]
    pub web_origin: Option<String>,
    /// The page's TLS certificate chain (PEM); reloaded when it changes.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "web_listen"])]
    pub tls_cert: Option<PathBuf>,
    /// The page's TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PhoneCommand {
    /// Print a one-time enrolment link (10 minutes) for a new phone; open
    /// it on the phone and tap Create passkey. Asks the running signer.
    Add {
        /// The phone's name (shown on cards, in the audit log and as its
        /// key's comment).
        #[arg(long)]
        name: String,
    },
    /// Revoke a phone: its passkey, its sessions, its links.
    Remove {
        /// The phone's name, as `vmux signer phones` lists it.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Register a token: log in once to check the PIN, store the PIN
    /// encrypted with the signer's passphrase.
    Add {
        /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so,
        /// /usr/lib/x86_64-linux-gnu/libykcs11.so).
        #[arg(long, value_name = "PATH")]
        module: PathBuf,
        /// Slot index among slots with a token (default 0).
        #[arg(long, value_name = "N")]
        slot: Option<u64>,
        /// Read the PIN from FILE (mode 0600) instead of asking.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// The token's name in vmux (default `token`).
        #[arg(long, default_value = "token")]
        name: String,
        /// Read the signer's passphrase from FILE (mode 0600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List registered tokens.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the agent.
    Run {
        /// Socket path (default: HOME/vmux-agent.sock with --home, else
        /// ~/.ssh/vmux-agent.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The name the signer shows for this agent (default: host name).
        #[arg(long)]
        name: Option<String>,
        /// Signer address; may be repeated. Default: the pinned signers'
        /// last addresses.
        #[arg(long, value_name = "HOST:PORT")]
        signer: Vec<String>,
        /// Do not look for signers on the local network when no
        /// `--signer` is given.
        #[arg(long)]
        no_discovery: bool,
        /// Longest wait for a signature, in seconds (default 60).
        #[arg(long, value_name = "SECONDS")]
        sign_timeout: Option<u64>,
        /// Session-certificate validity to ask for, in seconds (default
        /// 28800; the signer may shorten it).
        #[arg(long, value_name = "SECONDS")]
        cert_validity: Option<u64>,
        /// Renew the certificate while fewer than this many seconds remain
        /// (default 3600).
        #[arg(long, value_name = "SECONDS")]
        cert_renew_before: Option<u64>,
    },
    /// Show connection, certificate and keys of the running agent.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Pull the key list from the connected signers now.
    Refresh {
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Request a session certificate now.
    Cert {
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Pair with a signer (also while others are pinned), or confirm or
    /// refuse a pairing the running agent shows a code for. A signer is
    /// pinned only when its person approved and the same code was
    /// confirmed here.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["signer", "confirm", "deny"])))]
    Pair {
        /// Pair with the signer at this address.
        #[arg(long, value_name = "HOST:PORT")]
        signer: Option<String>,
        /// Confirm the pairing that shows this code (the code the signer
        /// shows too).
        #[arg(long, value_name = "CODE")]
        confirm: Option<String>,
        /// Refuse every pairing waiting for confirmation.
        #[arg(long)]
        deny: bool,
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Show the agent in the desktop's tray (StatusNotifierItem) with its
    /// menu, and notify while a signature waits on a signer.
    Tray {
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// No notifications, only the icon (`[tray] notifications` in
        /// agent.toml).
        #[arg(long)]
        no_notifications: bool,
        /// Exit at once, quietly, unless this user has run the vmux agent
        /// (its state file exists): for the package's system-wide
        /// autostart entry, so that users who never set vmux up get no
        /// tray.
        #[arg(long)]
        if_set_up: bool,
    },
    /// List pinned signers.
    Signers,
    /// Print the lines that point a shell at the agent.
    Env {
        /// The shell (default: from $SHELL).
        #[arg(long, value_enum)]
        shell: Option<ShellKind>,
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Set this machine up, guided (on a terminal): the checks of
    /// `doctor`, the user units (`install`), pairing with a signer (compare
    /// the code), and the line for your shell. Without a terminal it says
    /// what it would do and fails.
    Setup {
        /// The signer's address (default: asked, or found on the local
        /// network).
        #[arg(long, value_name = "HOST:PORT")]
        signer: Option<String>,
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Check the setup and say how to fix what is wrong.
    Doctor {
        /// The agent's socket (default as for `run`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Install systemd user units (socket-activated agent) and set
    /// SSH_AUTH_SOCK for GUI sessions.
    Install {
        /// Only print the units.
        #[arg(long)]
        print: bool,
        /// Print a launchd plist for macOS instead.
        #[arg(long)]
        launchd: bool,
    },
    /// Remove what `install` wrote.
    Uninstall,
    /// Forget one pinned signer (by id or unambiguous prefix), or with no
    /// id wipe all of the agent's state.
    Forget {
        /// The signer's id.
        id: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the whole command line: among them, that no
    /// two flattened groups of `vmux signer` name the same subcommand.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
