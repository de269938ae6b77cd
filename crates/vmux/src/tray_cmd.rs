//! `vmux agent tray`, and the XDG autostart entry `vmux agent install`
//! writes for it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use vmux_agent::AgentFileConfig;
use vmux_home::Home;

use crate::Failure;

/// Runs the tray until Quit or a signal.
pub fn run(
    home: &Home,
    file: &AgentFileConfig,
    socket: PathBuf,
    no_notifications: bool,
) -> Result<ExitCode, Failure> {
    let config = vmux_tray::TrayConfig {
        socket,
        notifications: file.tray.notifications && !no_notifications,
        notify_after: Duration::from_millis(file.tray.notify_after_ms),
        keys_file: home.state_file("public-keys.txt"),
    };
    crate::runtime()?
        .block_on(vmux_tray::run(config, crate::shutdown_signal()))
        .map_err(|e| Failure(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// Where the autostart entry goes: `$XDG_CONFIG_HOME/autostart/`.
pub fn autostart_path(unit_dir: &Path) -> PathBuf {
    // The unit directory is CONFIG/systemd/user.
    unit_dir
        .ancestors()
        .nth(2)
        .unwrap_or(unit_dir)
        .join("autostart/vmux-tray.desktop")
}

/// The system-wide autostart entries' directories (`$XDG_CONFIG_DIRS`,
/// default `/etc/xdg`), each with `autostart/vmux-tray.desktop`.
fn system_entries() -> Vec<PathBuf> {
    let dirs = std::env::var("XDG_CONFIG_DIRS")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/etc/xdg".to_owned());
    dirs.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join("autostart/vmux-tray.desktop"))
        .collect()
}

/// After `vmux agent uninstall` removed the user's entry: if a package
/// installed the tray's entry system-wide, a user entry with `Hidden=true`
/// at `user_entry` keeps it from starting the tray for this user.
pub fn hide_system_entry(user_entry: &Path) -> Result<(), Failure> {
    let Some(system) = system_entries().into_iter().find(|p| p.exists()) else {
        return Ok(());
    };
    if let Some(dir) = user_entry.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
    }
    vmux_home::write_private(
        user_entry,
        b"[Desktop Entry]
Type=Application
Name=vmux tray
Hidden=true
",
    )
    .map_err(|e| Failure(e.to_string()))?;
    println!(
        "{} hides {} for this user.",
        user_entry.display(),
        system.display()
    );
    Ok(())
}

/// One argument of a desktop entry's `Exec` key: quoted when it needs it
/// (Desktop Entry Specification, "The Exec key"), `%` doubled, and the
/// string-level escaping of backslashes applied on top.
fn exec_arg(s: &str) -> String {
    let s = s.replace('%', "%%");
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,=".contains(&b))
    {
        return s;
    }
    let mut quoted = String::from("\"");
    for c in s.chars() {
        match c {
            // `\` and `"` `` ` `` `$` are escaped for the Exec parser with
            // a backslash, and that backslash for the string parser.
            '\\' => quoted.push_str("\\\\\\\\"),
            '"' | '`' | '$' => {
                quoted.push_str("\\\\");
                quoted.push(c);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The XDG autostart entry: the tray starts with every graphical
/// session (systemd turns it into a unit bound to the session).
pub fn autostart_entry(exe: &Path, home: Option<&Path>) -> String {
    let mut exec = exec_arg(&exe.display().to_string());
    if let Some(h) = home {
        exec.push_str(&format!(" --home {}", exec_arg(&h.display().to_string())));
    }
    format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Name=vmux tray\n\
         Comment=The vmux SSH agent's status, and a notification while a signature waits\n\
         Exec={exec} agent tray\n\
         Icon=security-high\n\
         Terminal=false\n\
         NoDisplay=true\n\
         X-GNOME-Autostart-enabled=true\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_autostart_entry_runs_the_tray_with_the_home() {
        let e = autostart_entry(
            Path::new("/usr/bin/vmux"),
            Some(Path::new("/home/a b/v%\"x")),
        );
        assert!(
            e.contains("Exec=/usr/bin/vmux --home \"/home/a b/v%%\\\\\"x\" agent tray\n"),
            "{e}"
        );
        assert!(autostart_entry(Path::new("/usr/bin/vmux"), None)
            .contains("Exec=/usr/bin/vmux agent tray\n"));
        assert_eq!(
            autostart_path(Path::new("/home/a/.config/systemd/user")),
            Path::new("/home/a/.config/autostart/vmux-tray.desktop")
        );
    }
}
