//! A program on a real pseudo-terminal, typed into as a person would:
//! `vmux agent setup` and `vmux setup` ask questions only there.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::WAIT;

/// A program on a pseudo-terminal: what it printed so far, and the
/// keyboard.
pub struct OnTerminal {
    keyboard: File,
    screen: Arc<(Mutex<(String, bool)>, Condvar)>,
    child: Child,
}

impl OnTerminal {
    /// Starts `cmd` with stdin, stdout and stderr on a new pty.
    pub fn spawn(mut cmd: Command) -> OnTerminal {
        let vmux_testkit::pty::Pty { master, slave, .. } = vmux_testkit::pty::open();
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // As a terminal emulator does: the program leads a session of its
        // own whose controlling terminal is the pty, so /dev/tty is the
        // pty and Ctrl-C reaches it.
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only async-signal-safe calls:
        // setsid(2) and ioctl(2) on stdin, which is the pty's slave here.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on the pty");
        // The parent's copies of the slave go with `cmd`, so that reading
        // the master ends when the program exits.
        drop(cmd);
        let screen = Arc::new((Mutex::new((String::new(), false)), Condvar::new()));
        let mut reader = master.try_clone().unwrap();
        let shared = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = reader.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*shared;
                let mut s = lock.lock().unwrap();
                if n == 0 {
                    s.1 = true;
                    cv.notify_all();
                    return;
                }
                s.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                cv.notify_all();
            }
        });
        OnTerminal {
            keyboard: master,
            screen,
            child,
        }
    }

    /// Waits (bounded) until the screen shows `text`; returns the screen.
    pub fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let (lock, cv) = &*self.screen;
        let mut s = lock.lock().unwrap();
        while !s.0.contains(text) {
            let now = Instant::now();
            assert!(
                now < deadline && !s.1,
                "the terminal never showed {text:?}; it shows:\n{}",
                s.0
            );
            s = cv.wait_timeout(s, deadline - now).unwrap().0;
        }
        s.0.clone()
    }

    /// Presses Ctrl-C: the terminal sends SIGINT to its foreground
    /// process group.
    pub fn ctrl_c(&mut self) {
        self.keyboard.write_all(b"\x03").unwrap();
    }

    pub fn type_line(&mut self, line: &str) {
        self.keyboard
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Waits (bounded) for the program to exit; its status and screen.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let (lock, cv) = &*self.screen;
                let mut s = lock.lock().unwrap();
                // Everything it printed, up to the terminal's end.
                while !s.1 && Instant::now() < deadline {
                    s = cv
                        .wait_timeout(s, deadline.saturating_duration_since(Instant::now()))
                        .unwrap()
                        .0;
                }
                return (st, s.0.clone());
            }
            assert!(Instant::now() < deadline, "setup did not exit in time");
            let (lock, cv) = &*self.screen;
            let s = lock.lock().unwrap();
            // Wakes on output or at the terminal's end, which come with
            // the exit; bounded so a silent exit is seen too.
            let _ = cv.wait_timeout(s, Duration::from_millis(100)).unwrap();
        }
    }
}
