//! `vmux agent setup`, the guided first run: on a terminal (a real
//! pseudo-terminal, typed into as a person would) it pairs with a signer
//! and prints the shell line; without one it says what it would do and
//! fails.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// A program on a pseudo-terminal: what it printed so far, and the
/// keyboard.
struct OnTerminal {
    keyboard: File,
    screen: Arc<(Mutex<(String, bool)>, Condvar)>,
    child: Child,
}

impl OnTerminal {
    /// Starts `cmd` with stdin, stdout and stderr on a new pty.
    fn spawn(mut cmd: Command) -> OnTerminal {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: both out-pointers point at live `c_int`s; the name,
        // termios and winsize pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both are open descriptors that
        // nothing else owns.
        let (master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
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
    fn wait_for(&self, text: &str) -> String {
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

    fn type_line(&mut self, line: &str) {
        self.keyboard
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Waits (bounded) for the program to exit; its status and screen.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
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

/// The pairing code setup shows on `screen`.
fn code_on(screen: &str) -> String {
    screen
        .split("Pairing code ")
        .nth(1)
        .and_then(|r| r.get(..6))
        .expect("a pairing code on the screen")
        .to_owned()
}

#[test]
fn setup_without_a_terminal_says_what_it_would_do_and_fails() {
    let dir = test_dir();
    let home = dir.path().join("agent-home");
    let config = dir.path().join("config");
    let out = run(vmux()
        .arg("--home")
        .arg(&home)
        .args(["agent", "setup", "--signer", "pi.local:7326"])
        .env("XDG_CONFIG_HOME", &config));
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "vmux: agent setup asks questions and needs a terminal: run it in one, or do the steps above yourself"
    );
    for step in [
        "agent doctor",
        "agent install",
        "pair with the signer at pi.local:7326",
        "agent env",
    ] {
        assert!(stdout.contains(step), "{step:?} not in:\n{stdout}");
    }
    // It did nothing: no home, no units.
    assert!(!home.exists() && !config.exists());
}

#[test]
fn setup_on_a_terminal_pairs_with_the_signer_and_prints_the_shell_line() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let key = signer.keygen("ed25519", "work");
    signer.start();
    let mut agent = Agent::new(dir.path(), "laptop");
    // The person confirms the code in setup, not the harness.
    agent.confirm_pairings = false;

    let mut cmd = vmux();
    cmd.arg("--home")
        .arg(&agent.home)
        .args(["agent", "setup"])
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("SHELL", "/bin/zsh")
        .env_remove("SSH_AUTH_SOCK");
    let mut term = OnTerminal::spawn(cmd);

    // The doctor's checks first: nothing runs yet.
    term.wait_for("no agent socket at");
    term.wait_for("[Y/n]");
    term.type_line("n");
    term.wait_for("Start the agent in another terminal");
    agent.start(&[]);
    term.wait_for("Address of the signer");
    term.type_line(&signer.addr);
    let screen = term.wait_for("Type the code the signer shows");
    let code = code_on(&screen);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    term.type_line(&code);
    term.wait_for("Paired with the signer pi: 1 key(s) cached.");
    let (status, screen) = term.finish();
    assert!(status.success(), "{screen}");
    // The line for zsh, and the checks pass with it.
    assert!(
        screen.contains(&format!(
            "Add this line to ~/.zshrc so that ssh, git and the others use the agent:\r\n\r\n    export SSH_AUTH_SOCK='{}'",
            agent.sock.display()
        )),
        "{screen}"
    );
    let (before, after) = screen.split_once("== Done").expect("the closing checks");
    assert!(before.contains("fail  no agent socket"), "{screen}");
    assert!(
        after.contains("ok    signer pi is connected") && !after.contains("fail  "),
        "{screen}"
    );
    // The signer's person saw the same code, and the agent serves the key.
    assert!(
        signer
            .approvals_of("pair")
            .iter()
            .any(|l| l.contains(&format!("code={code} "))),
        "{:?}",
        signer.approvals()
    );
    let listed = agent.ssh_add(&["-L"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(key.split_whitespace().nth(1).unwrap()),
        "{listed:?}"
    );
    // Nothing was installed: the person said no.
    assert!(!dir.path().join("config/systemd").exists());
}

#[test]
fn setup_with_a_code_other_than_the_agents_pins_nothing() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    signer.keygen("ed25519", "work");
    signer.start();
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.confirm_pairings = false;
    agent.start(&[]);

    let mut cmd = vmux();
    cmd.arg("--home")
        .arg(&agent.home)
        .args(["agent", "setup", "--signer", &signer.addr])
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("SSH_AUTH_SOCK");
    let mut term = OnTerminal::spawn(cmd);
    let screen = term.wait_for("Type the code the signer shows");
    let code = code_on(&screen);
    // The person (or someone in the middle) types another code.
    let other: String = code
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect();
    term.type_line(&other);
    let (status, screen) = term.finish();
    assert!(!status.success(), "{screen}");
    assert!(screen.contains("nothing pinned"), "{screen}");
    assert_eq!(
        agent.status()["signers"][0]["connected"],
        false,
        "{}",
        agent.status()
    );
    assert_eq!(
        ok(&mut agent.cmd(&["signers"])).trim(),
        "No pinned signers.",
        "the signer was pinned"
    );
}
