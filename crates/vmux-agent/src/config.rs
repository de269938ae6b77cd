//! `agent.toml`: optional settings; command-line flags override them.
//!
//! [`AgentConfig::resolve`] makes the running agent's configuration from
//! the flags of `vmux agent run` ([`AgentFlags`]), the file
//! ([`AgentFileConfig`]) and the defaults, in that order of precedence:
//! a flag given wins over the file, a setting in the file over the
//! default. [`AgentFileConfig::socket`] does the same for the socket
//! every `vmux agent` subcommand takes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vmux_home::Home;

use crate::{AgentConfig, IdentityStore};

/// The agent's configuration file. Every key is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentFileConfig {
    /// The name the signer shows for this agent (`--name`). Default: the
    /// host name.
    pub name: Option<String>,
    /// Socket path (`--socket`).
    pub socket: Option<std::path::PathBuf>,
    /// Signer addresses (`--signer`), `HOST:PORT`.
    #[serde(default)]
    pub signers: Vec<String>,
    /// Longest wait for a signature, seconds (`--sign-timeout`). Default 60.
    pub sign_timeout_seconds: Option<u64>,
    /// Session-certificate validity to ask for, seconds
    /// (`--cert-validity`). Default 28800 (8 h); the signer may shorten it.
    pub cert_validity_seconds: Option<u64>,
    /// Renew the session certificate while fewer than this many seconds
    /// remain (`--cert-renew-before`). Default 3600.
    pub cert_renew_before_seconds: Option<u64>,
    /// Where the agent keeps its device identity: `file` (default) or
    /// `secret-service` (the desktop keyring).
    #[serde(default)]
    pub identity_store: crate::identity_store::IdentityStoreKind,
    /// Wake providers (`[wake.apns]`, `[wake.webhook]`, `interval_seconds`).
    #[serde(default)]
    pub wake: crate::wake::WakeFileConfig,
    /// The tray and workstation notifications (`[tray]`), read by `vmux
    /// agent tray`.
    #[serde(default)]
    pub tray: TrayFileConfig,
}

/// `[tray]` in agent.toml: what `vmux agent tray` does besides the icon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrayFileConfig {
    /// Workstation notifications ("Approve on NAME: …", the pairing
    /// code). Default true.
    #[serde(default = "yes")]
    pub notifications: bool,
    /// How long a request waits on a signer before the notification
    /// shows, milliseconds. Default 1000.
    #[serde(default = "default_notify_after")]
    pub notify_after_ms: u64,
}

impl Default for TrayFileConfig {
    fn default() -> Self {
        TrayFileConfig {
            notifications: true,
            notify_after_ms: DEFAULT_NOTIFY_AFTER_MS,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_notify_after() -> u64 {
    DEFAULT_NOTIFY_AFTER_MS
}

/// Default wait before a notification says a request waits on a signer.
pub const DEFAULT_NOTIFY_AFTER_MS: u64 = 1000;

/// Default bounded wait for a signature.
pub const DEFAULT_SIGN_TIMEOUT_SECONDS: u64 = 60;
/// Default session-certificate validity (the brief's 8 hours).
pub const DEFAULT_CERT_VALIDITY_SECONDS: u64 = 28_800;
/// Default renewal threshold (the brief's 60 minutes).
pub const DEFAULT_CERT_RENEW_BEFORE_SECONDS: u64 = 3_600;

/// What `vmux agent run` was given on its command line; `None` (or no
/// `--signer`) where a flag was not given.
#[derive(Debug, Clone, Default)]
pub struct AgentFlags {
    /// `--name`.
    pub name: Option<String>,
    /// `--signer`, each address in the order given.
    pub signers: Vec<String>,
    /// `--no-discovery`.
    pub no_discovery: bool,
    /// `--sign-timeout`, seconds.
    pub sign_timeout_seconds: Option<u64>,
    /// `--cert-validity`, seconds.
    pub cert_validity_seconds: Option<u64>,
    /// `--cert-renew-before`, seconds.
    pub cert_renew_before_seconds: Option<u64>,
}

/// Where the agent runs: what the defaults that are not constants come
/// from.
#[derive(Debug, Clone)]
pub struct Machine<'a> {
    /// The vmux home: the state files, the configuration directory, the
    /// default socket.
    pub home: &'a Home,
    /// This host's name, the agent's name unless `--name` or `name` give
    /// one.
    pub host_name: String,
    /// The user's home directory (`$HOME`), where an APNs key file is
    /// looked for when `[wake.apns]` names none.
    pub user_home: Option<PathBuf>,
}

/// A setting the agent cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A sign timeout of 0 (`--sign-timeout` or `sign_timeout_seconds`).
    #[error("--sign-timeout must be at least 1 second")]
    ZeroSignTimeout,
    /// A certificate validity of 0 (`--cert-validity` or
    /// `cert_validity_seconds`).
    #[error("--cert-validity must be at least 1 second")]
    ZeroCertValidity,
}

impl AgentFileConfig {
    /// The agent's socket: `--socket` (`flag`), else `socket` in the file,
    /// else the home's default.
    pub fn socket(&self, flag: Option<PathBuf>, home: &Home) -> PathBuf {
        first_of(flag, self.socket.clone(), home.default_socket().to_owned())
    }

    /// Where this home's agent identity lives (`identity_store` in the
    /// file, the identity file in the home's state directory).
    pub fn identity_store(&self, home: &Home) -> IdentityStore {
        IdentityStore::new(self.identity_store, home.state_file("agent-identity"))
    }
}

impl AgentConfig {
    /// The running agent's configuration: each setting from its flag if
    /// given, else from the file, else its default; wake providers only
    /// from the file, discovery only from the flags. Fails on a setting
    /// that is zero where the agent needs at least a second.
    pub fn resolve(
        flags: AgentFlags,
        file: &AgentFileConfig,
        machine: &Machine<'_>,
    ) -> Result<AgentConfig, ConfigError> {
        let sign_timeout = first_of(
            flags.sign_timeout_seconds,
            file.sign_timeout_seconds,
            DEFAULT_SIGN_TIMEOUT_SECONDS,
        );
        if sign_timeout == 0 {
            return Err(ConfigError::ZeroSignTimeout);
        }
        let cert_validity = first_of(
            flags.cert_validity_seconds,
            file.cert_validity_seconds,
            DEFAULT_CERT_VALIDITY_SECONDS,
        );
        if cert_validity == 0 {
            return Err(ConfigError::ZeroCertValidity);
        }
        let cert_renew_before = first_of(
            flags.cert_renew_before_seconds,
            file.cert_renew_before_seconds,
            DEFAULT_CERT_RENEW_BEFORE_SECONDS,
        );
        Ok(AgentConfig {
            name: first_of(flags.name, file.name.clone(), machine.host_name.clone()),
            signers: if flags.signers.is_empty() {
                file.signers.clone()
            } else {
                flags.signers
            },
            sign_timeout: Duration::from_secs(sign_timeout),
            cert_validity: Duration::from_secs(cert_validity),
            cert_renew_before: Duration::from_secs(cert_renew_before),
            state_path: crate::state_path(machine.home),
            identity: file.identity_store(machine.home),
            discovery: !flags.no_discovery,
            wake: file.wake.clone(),
            apns_key_files: crate::wake::default_key_files(
                machine.user_home.as_deref(),
                machine.home.config_dir(),
            ),
        })
    }
}

/// The flag's value if given, else the file's, else the default.
fn first_of<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityStoreKind;

    fn home() -> Home {
        Home::in_dir("/vmux-home")
    }

    fn machine(home: &Home) -> Machine<'_> {
        Machine {
            home,
            host_name: "host".into(),
            user_home: Some("/home/u".into()),
        }
    }

    fn file(toml: &str) -> AgentFileConfig {
        match toml::from_str(toml) {
            Ok(f) => f,
            Err(e) => panic!("{toml:?} does not parse: {e}"),
        }
    }

    const FILE: &str = r#"
        name = "from-file"
        socket = "/file/agent.sock"
        signers = ["file:1"]
        sign_timeout_seconds = 20
        cert_validity_seconds = 600
        cert_renew_before_seconds = 60
    "#;

    fn all_flags() -> AgentFlags {
        AgentFlags {
            name: Some("from-flag".into()),
            signers: vec!["flag:1".into(), "flag:2".into()],
            no_discovery: true,
            sign_timeout_seconds: Some(5),
            cert_validity_seconds: Some(300),
            cert_renew_before_seconds: Some(30),
        }
    }

    fn resolve(flags: AgentFlags, file: &AgentFileConfig) -> Result<AgentConfig, ConfigError> {
        let home = home();
        AgentConfig::resolve(flags, file, &machine(&home))
    }

    #[test]
    fn flags_win_over_the_file() -> Result<(), ConfigError> {
        let c = resolve(all_flags(), &file(FILE))?;
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.signers, ["flag:1", "flag:2"]);
        assert!(!c.discovery);
        assert_eq!(c.sign_timeout, Duration::from_secs(5));
        assert_eq!(c.cert_validity, Duration::from_secs(300));
        assert_eq!(c.cert_renew_before, Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn the_file_wins_over_the_defaults() -> Result<(), ConfigError> {
        let c = resolve(AgentFlags::default(), &file(FILE))?;
        assert_eq!(c.name, "from-file");
        assert_eq!(c.signers, ["file:1"]);
        assert!(c.discovery);
        assert_eq!(c.sign_timeout, Duration::from_secs(20));
        assert_eq!(c.cert_validity, Duration::from_secs(600));
        assert_eq!(c.cert_renew_before, Duration::from_secs(60));
        Ok(())
    }

    #[test]
    fn without_flags_or_file_the_defaults_hold() -> Result<(), ConfigError> {
        let c = resolve(AgentFlags::default(), &AgentFileConfig::default())?;
        assert_eq!(c.name, "host");
        assert!(c.signers.is_empty());
        assert!(c.discovery);
        assert_eq!(c.sign_timeout, Duration::from_secs(60));
        assert_eq!(c.cert_validity, Duration::from_secs(8 * 3600));
        assert_eq!(c.cert_renew_before, Duration::from_secs(3600));
        assert_eq!(c.state_path, PathBuf::from("/vmux-home/agent-state.json"));
        assert!(matches!(
            &c.identity,
            IdentityStore::File(f) if f == &PathBuf::from("/vmux-home/agent-identity")
        ));
        assert_eq!(
            c.apns_key_files,
            [
                PathBuf::from("/home/u/.ssh/vmux-apns.p8"),
                PathBuf::from("/vmux-home/apns-key.p8")
            ]
        );
        Ok(())
    }

    #[test]
    fn each_flag_overrides_only_its_own_setting() -> Result<(), ConfigError> {
        let flags = AgentFlags {
            cert_validity_seconds: Some(300),
            ..AgentFlags::default()
        };
        let c = resolve(flags, &file(FILE))?;
        assert_eq!(c.cert_validity, Duration::from_secs(300));
        assert_eq!(c.name, "from-file");
        assert_eq!(c.signers, ["file:1"]);
        assert_eq!(c.sign_timeout, Duration::from_secs(20));
        assert_eq!(c.cert_renew_before, Duration::from_secs(60));
        Ok(())
    }

    #[test]
    fn the_identity_store_and_the_wake_providers_come_from_the_file() -> Result<(), ConfigError> {
        let f = file(
            r#"
            identity_store = "secret-service"
            [wake]
            interval_seconds = 7
        "#,
        );
        assert_eq!(f.identity_store, IdentityStoreKind::SecretService);
        let c = resolve(all_flags(), &f)?;
        assert!(matches!(
            &c.identity,
            IdentityStore::SecretService { file } if file == &PathBuf::from("/vmux-home/agent-identity")
        ));
        assert_eq!(format!("{:?}", c.wake), format!("{:?}", f.wake));
        Ok(())
    }

    #[test]
    fn a_zero_sign_timeout_is_refused_from_the_flag_or_the_file() {
        let flag = AgentFlags {
            sign_timeout_seconds: Some(0),
            ..AgentFlags::default()
        };
        let refused = resolve(flag, &file(FILE)).map(|_| ());
        assert_eq!(refused, Err(ConfigError::ZeroSignTimeout));
        let refused = resolve(AgentFlags::default(), &file("sign_timeout_seconds = 0")).map(|_| ());
        assert_eq!(refused, Err(ConfigError::ZeroSignTimeout));
        assert_eq!(
            ConfigError::ZeroSignTimeout.to_string(),
            "--sign-timeout must be at least 1 second"
        );
    }

    #[test]
    fn a_zero_cert_validity_is_refused_from_the_flag_or_the_file() {
        let flag = AgentFlags {
            cert_validity_seconds: Some(0),
            ..AgentFlags::default()
        };
        let refused = resolve(flag, &file(FILE)).map(|_| ());
        assert_eq!(refused, Err(ConfigError::ZeroCertValidity));
        let refused =
            resolve(AgentFlags::default(), &file("cert_validity_seconds = 0")).map(|_| ());
        assert_eq!(refused, Err(ConfigError::ZeroCertValidity));
        assert_eq!(
            ConfigError::ZeroCertValidity.to_string(),
            "--cert-validity must be at least 1 second"
        );
    }

    #[test]
    fn a_flag_replaces_a_bad_setting_in_the_file() -> Result<(), ConfigError> {
        let f = file("sign_timeout_seconds = 0\ncert_validity_seconds = 0");
        let c = resolve(all_flags(), &f)?;
        assert_eq!(c.sign_timeout, Duration::from_secs(5));
        assert_eq!(c.cert_validity, Duration::from_secs(300));
        Ok(())
    }

    #[test]
    fn the_sign_timeout_is_checked_first() {
        let f = file("sign_timeout_seconds = 0\ncert_validity_seconds = 0");
        let refused = resolve(AgentFlags::default(), &f).map(|_| ());
        assert_eq!(refused, Err(ConfigError::ZeroSignTimeout));
    }

    #[test]
    fn the_socket_is_the_flag_else_the_file_else_the_homes_default() {
        let home = home();
        let f = file(FILE);
        let flag = Some(PathBuf::from("/flag/agent.sock"));
        assert_eq!(
            f.socket(flag.clone(), &home),
            PathBuf::from("/flag/agent.sock")
        );
        assert_eq!(f.socket(None, &home), PathBuf::from("/file/agent.sock"));
        assert_eq!(
            AgentFileConfig::default().socket(None, &home),
            PathBuf::from("/vmux-home/vmux-agent.sock")
        );
        assert_eq!(
            AgentFileConfig::default().socket(flag, &home),
            PathBuf::from("/flag/agent.sock")
        );
    }
}
