//! Running the signer and the agent where there is no systemd user
//! manager (a container, a CI job as root, a desktop without user
//! units): `vmux setup` starts them in the background itself, each in a
//! session of its own with no controlling terminal (a Ctrl-C or a closed
//! terminal does not reach them, and they hold no terminal open),
//! with their output appended to a log file under the state directory
//! and their process id in a file beside it. Nothing restarts them after
//! a reboot; setup says so.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Failure;

/// One background service: its name, its log and its pid file.
pub struct Detached {
    /// `signer` or `agent`.
    pub name: &'static str,
    /// `STATE/NAME.log`.
    pub log: PathBuf,
    /// `STATE/NAME.pid`.
    pub pid_file: PathBuf,
}

impl Detached {
    /// The service `name` with its files in `state_dir`.
    pub fn new(state_dir: &Path, name: &'static str) -> Detached {
        Detached {
            name,
            log: state_dir.join(format!("{name}.log")),
            pid_file: state_dir.join(format!("{name}.pid")),
        }
    }

    /// Starts `exe args…` in the background and records its pid.
    pub fn start(&self, exe: &Path, args: &[String]) -> Result<u32, Failure> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(|e| Failure(format!("cannot open {}: {e}", self.log.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| Failure(format!("cannot open {}: {e}", self.log.display())))?;
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(err);
        // SAFETY: runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed; setsid(2) is one, touches
        // no memory of the parent, and fails only for a process group
        // leader, which a freshly forked child is not.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Failure(format!("cannot start the {}: {e}", self.name)))?;
        let pid = child.id();
        // The child outlives this process; it is not waited for here.
        drop(child);
        vmux_home::write_private(&self.pid_file, format!("{pid}\n").as_bytes())?;
        Ok(pid)
    }

    /// The recorded process, if it still runs and is this service (a pid
    /// reused by another program is not ours to stop).
    pub fn running(&self) -> Option<u32> {
        let text = std::fs::read_to_string(&self.pid_file).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args.windows(2).any(|w| w == [self.name.as_bytes(), b"run"]);
        ours.then_some(pid)
    }

    /// Stops the recorded process (SIGTERM, then waits up to 10 s).
    pub fn stop(&self) -> Result<(), Failure> {
        let Some(pid) = self.running() else {
            return Ok(());
        };
        let Ok(pid_t) = libc::pid_t::try_from(pid) else {
            return Ok(());
        };
        // SAFETY: kill(2) with a pid read back and checked to be our own
        // service's process; no memory is involved.
        unsafe {
            libc::kill(pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running().is_some() {
            if Instant::now() >= deadline {
                return Err(Failure(format!(
                    "the {} (pid {pid}) did not stop within 10 s",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The last non-empty line of the log: why a start failed.
    pub fn last_line(&self) -> String {
        std::fs::read_to_string(&self.log)
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }
}
