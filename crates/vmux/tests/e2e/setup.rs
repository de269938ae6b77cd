//! `vmux agent setup`, the guided first run: on a terminal (a real
//! pseudo-terminal, typed into as a person would) it pairs with a signer
//! and prints the shell line; without one it says what it would do and
//! fails.

use crate::support::pty::OnTerminal;
use crate::support::*;

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
    assert_refused_without_a_terminal(
        &out,
        "agent setup",
        &[
            "agent doctor",
            "agent install",
            "pair with the signer at pi.local:7326",
            "agent env",
        ],
    );
    // It did nothing: no home, no units.
    assert!(!home.exists() && !config.exists());
}

#[test]
fn setup_on_a_terminal_pairs_with_the_signer_and_prints_the_shell_line() {
    let dir = test_dir();
    let (signer, key) = Signer::serving(dir.path(), "pi", "work");
    // The person confirms the code in setup, not the harness.
    let mut agent = Agent::unconfirmed(dir.path(), "laptop");

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
    let (signer, _) = Signer::serving(dir.path(), "pi", "work");
    let mut agent = Agent::unconfirmed(dir.path(), "laptop");
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
