//! Running vmux as a service: systemd user units (the agent
//! socket-activated, so the socket exists from login on), a launchd plist
//! for macOS, and `SSH_AUTH_SOCK` for GUI sessions (`environment.d`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Failure;

/// What a service runs.
pub struct ServiceSpec {
    /// The vmux binary.
    pub exe: PathBuf,
    /// `--home DIR`, if given.
    pub home: Option<PathBuf>,
    /// The agent's socket.
    pub socket: PathBuf,
}

fn home_arg(spec: &ServiceSpec) -> String {
    spec.home
        .as_ref()
        .map(|h| format!(" --home {}", systemd_quote(&h.display().to_string())))
        .unwrap_or_default()
}

/// Quotes a path for a systemd `Exec*=` line or a unit value.
fn systemd_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        s.to_owned()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
        )
    }
}

/// `vmux-agent.socket`: systemd creates the socket, mode 0600, at login.
pub fn agent_socket_unit(spec: &ServiceSpec) -> String {
    format!(
        "[Unit]\n\
         Description=vmux SSH agent socket\n\
         Documentation=man:vmux(1)\n\
         \n\
         [Socket]\n\
         ListenStream={}\n\
         SocketMode=0600\n\
         DirectoryMode=0700\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n",
        systemd_quote(&spec.socket.display().to_string())
    )
}

/// `vmux-agent.service`: started on the first connection to the socket.
pub fn agent_service_unit(spec: &ServiceSpec) -> String {
    simple_service_unit(
        spec,
        "vmux SSH agent (keys live on a paired signer)",
        "Requires=vmux-agent.socket\n\
         After=vmux-agent.socket\n",
        "agent run",
        "Also=vmux-agent.socket\n",
    )
}

/// `vmux-signer.service` for a headless signer (unattended: it reads its
/// passphrase from a file).
pub fn signer_service_unit(spec: &ServiceSpec, passphrase_file: Option<&Path>) -> String {
    let args: Vec<String> = passphrase_file
        .map(|p| vec!["--passphrase-file".into(), p.display().to_string()])
        .unwrap_or_default();
    signer_service_unit_with(spec, &args)
}

/// `vmux-signer.service` running `signer run ARGS…` (what `vmux setup`
/// chose: the page's address and name, the passphrase file).
pub fn signer_service_unit_with(spec: &ServiceSpec, args: &[String]) -> String {
    let args: String = args
        .iter()
        .map(|a| format!(" {}", systemd_quote(a)))
        .collect();
    simple_service_unit(
        spec,
        "vmux signer (holds SSH keys, signs after approval)",
        "After=network-online.target\n\
         Wants=network-online.target\n",
        &format!("signer run{args}"),
        "",
    )
}

/// A user service that runs `vmux [--home DIR] COMMAND` and is restarted
/// when it fails: `needs` are its `[Unit]` dependency lines, `install`
/// the `[Install]` lines before `WantedBy=default.target`.
fn simple_service_unit(
    spec: &ServiceSpec,
    description: &str,
    needs: &str,
    command: &str,
    install: &str,
) -> String {
    format!(
        "[Unit]\n\
         Description={description}\n\
         Documentation=man:vmux(1)\n\
         {needs}\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}{} {command}\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         {install}\
         WantedBy=default.target\n",
        systemd_quote(&spec.exe.display().to_string()),
        home_arg(spec)
    )
}

/// `vmux-tailscale-cert.service` and `.timer`: `tailscale ARGS…` daily
/// (it renews the certificate near its end; the signer reloads it).
pub fn tailscale_cert_units(tailscale: &Path, args: &[String]) -> (String, String) {
    let args: String = args
        .iter()
        .map(|a| format!(" {}", systemd_quote(a)))
        .collect();
    let service = format!(
        "[Unit]\n\
         Description=Renew the vmux phone page's tailscale certificate\n\
         Documentation=man:vmux(1)\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={}{args}\n",
        systemd_quote(&tailscale.display().to_string())
    );
    let timer = "[Unit]\n\
         Description=Renew the vmux phone page's tailscale certificate daily\n\
         \n\
         [Timer]\n\
         OnCalendar=daily\n\
         Persistent=true\n\
         RandomizedDelaySec=1h\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
        .to_owned();
    (service, timer)
}

/// Whether this user has a systemd user manager to talk to (none in
/// containers, CI jobs and sessions without `systemd --user`).
pub fn user_manager_available() -> bool {
    Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `systemctl --user restart UNIT`, reported.
pub fn restart(unit: &str) -> bool {
    systemctl(&["restart", unit])
}

/// `~/.config/environment.d/60-vmux.conf`: `SSH_AUTH_SOCK` for GUI apps.
pub fn environment_d(spec: &ServiceSpec) -> String {
    format!("SSH_AUTH_SOCK={}\n", spec.socket.display())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A launchd agent for macOS (`~/Library/LaunchAgents/app.vmux.agent.plist`).
pub fn launchd_plist(spec: &ServiceSpec) -> String {
    let mut args = vec![spec.exe.display().to_string()];
    if let Some(h) = &spec.home {
        args.push("--home".into());
        args.push(h.display().to_string());
    }
    args.extend(["agent".into(), "run".into()]);
    let args: String = args
        .iter()
        .map(|a| format!("        <string>{}</string>\n", xml_escape(a)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \x20   <key>Label</key>\n\
         \x20   <string>app.vmux.agent</string>\n\
         \x20   <key>ProgramArguments</key>\n\
         \x20   <array>\n\
         {args}\
         \x20   </array>\n\
         \x20   <key>RunAtLoad</key>\n\
         \x20   <true/>\n\
         \x20   <key>KeepAlive</key>\n\
         \x20   <true/>\n\
         </dict>\n\
         </plist>\n"
    )
}

/// Where a user's systemd units live.
pub fn user_unit_dir() -> Result<PathBuf, Failure> {
    config_home().map(|c| c.join("systemd/user"))
}

fn config_home() -> Result<PathBuf, Failure> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".config"))
        .ok_or_else(|| Failure("HOME is not set".into()))
}

/// Where `environment.d` lives.
pub fn environment_d_path() -> Result<PathBuf, Failure> {
    config_home().map(|c| c.join("environment.d/60-vmux.conf"))
}

pub fn write_file(path: &Path, contents: &str) -> Result<(), Failure> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("vmux-tmp");
    std::fs::write(&tmp, contents)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Runs `systemctl --user ARGS`, printing what it does; a failure (no user
/// manager, e.g. in a container) is reported, not fatal.
fn systemctl(args: &[&str]) -> bool {
    println!("running systemctl --user {}", args.join(" "));
    match Command::new("systemctl").arg("--user").args(args).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("vmux: systemctl --user {} failed ({s}); the files are in place, run it yourself once a user session is available", args.join(" "));
            false
        }
        Err(e) => {
            eprintln!("vmux: cannot run systemctl ({e}); the files are in place");
            false
        }
    }
}

/// Writes units (and the environment.d file), reloads and enables.
pub fn install(files: &[(PathBuf, String)], enable: &str) -> Result<(), Failure> {
    for (path, contents) in files {
        write_file(path, contents)?;
    }
    if systemctl(&["daemon-reload"]) {
        systemctl(&["enable", "--now", enable]);
    }
    Ok(())
}

/// Disables and removes units.
pub fn uninstall(units: &[&str], files: &[PathBuf]) -> Result<(), Failure> {
    systemctl(&[&["disable", "--now"][..], units].concat());
    for f in files {
        match std::fs::remove_file(f) {
            Ok(()) => println!("removed {}", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure(format!("cannot remove {}: {e}", f.display()))),
        }
    }
    systemctl(&["daemon-reload"]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            exe: "/usr/bin/vmux".into(),
            home: Some("/home/a b/vmux".into()),
            socket: "/home/a b/vmux/vmux-agent.sock".into(),
        }
    }

    #[test]
    fn units_name_the_socket_mode_and_command() {
        let s = agent_socket_unit(&spec());
        assert!(s.contains("ListenStream=\"/home/a b/vmux/vmux-agent.sock\"\n"));
        assert!(s.contains("SocketMode=0600\n"));
        let svc = agent_service_unit(&spec());
        assert!(svc.contains("ExecStart=/usr/bin/vmux --home \"/home/a b/vmux\" agent run\n"));
        assert!(svc.contains("Requires=vmux-agent.socket"));
        assert!(signer_service_unit(&spec(), Some(Path::new("/etc/pw")))
            .contains("signer run --passphrase-file /etc/pw\n"));
        assert_eq!(
            environment_d(&spec()),
            "SSH_AUTH_SOCK=/home/a b/vmux/vmux-agent.sock\n"
        );
    }

    #[test]
    fn service_units_are_these_files() {
        assert_eq!(
            agent_service_unit(&spec()),
            include_str!("testdata/vmux-agent.service")
        );
        assert_eq!(
            signer_service_unit(&spec(), Some(Path::new("/etc/pw"))),
            include_str!("testdata/vmux-signer.service")
        );
    }

    #[test]
    fn setup_units_quote_their_arguments() {
        let svc = signer_service_unit_with(
            &spec(),
            &[
                "--web-name".into(),
                "signer.local".into(),
                "--tls-cert".into(),
                "/home/a b/100%.crt".into(),
            ],
        );
        assert!(svc.contains(
            "ExecStart=/usr/bin/vmux --home \"/home/a b/vmux\" signer run --web-name signer.local --tls-cert \"/home/a b/100%%.crt\"\n"
        ));
        let (svc, timer) = tailscale_cert_units(
            Path::new("/usr/bin/tailscale"),
            &[
                "cert".into(),
                "--cert-file".into(),
                "/s/a.crt".into(),
                "laptop.ts.net".into(),
            ],
        );
        assert!(svc.contains(
            "Type=oneshot\nExecStart=/usr/bin/tailscale cert --cert-file /s/a.crt laptop.ts.net\n"
        ));
        assert!(timer.contains("OnCalendar=daily\n") && timer.contains("Persistent=true\n"));
    }

    #[test]
    fn launchd_plist_is_well_formed() {
        let p = launchd_plist(&ServiceSpec {
            exe: "/opt/vmux & co/vmux".into(),
            home: None,
            socket: "/Users/me/.ssh/vmux-agent.sock".into(),
        });
        assert!(p.starts_with("<?xml version=\"1.0\""));
        assert!(p.contains("<string>app.vmux.agent</string>"));
        assert!(p.contains("<string>/opt/vmux &amp; co/vmux</string>\n        <string>agent</string>\n        <string>run</string>"));
        assert!(p.contains("<key>RunAtLoad</key>\n    <true/>"));
        // Every opened element is closed.
        for tag in ["plist", "dict", "array"] {
            assert_eq!(
                p.matches(&format!("<{tag}")).count(),
                p.matches(&format!("</{tag}>")).count(),
                "{tag}"
            );
        }
    }
}
