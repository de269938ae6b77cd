//! Reconnect, many agents and many signers, and managing pairings.

use std::process::Command;
use std::time::Instant;

use crate::support::*;

#[test]
fn a_signature_asked_while_the_signer_is_down_completes_when_it_is_back() {
    let mut w = World::with("ed25519", &["--sign-timeout", "40"], &[]);
    let addr = w.signer.addr.clone();
    w.signer.kill();
    w.agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer"));
    std::thread::scope(|s| {
        let login = s.spawn(|| w.sshd.ssh(&w.agent, &[], "echo back"));
        // The login is waiting in the agent for a signer.
        w.agent
            .daemon()
            .wait_line(WAIT, |l| l.contains("waiting for signer"));
        w.signer.start_on(&addr, &[]);
        let up = Instant::now();
        w.agent.wait_connected(2);
        let reconnect = up.elapsed();
        let out = login.join().unwrap();
        let done = up.elapsed();
        assert_success(&out, "the login across the restart");
        println!(
            "reconnect after the signer was back: {reconnect:?}; waiting login done after {done:?}"
        );
        assert!(reconnect.as_millis() < 3000, "reconnect took {reconnect:?}");
    });
}

#[test]
fn two_agents_sign_at_once_and_prompts_name_each() {
    let dir = test_dir();
    let (signer, line) = Signer::serving(dir.path(), "pi", "shared");
    let mut a = Agent::new(dir.path(), "desk");
    let mut b = Agent::new(dir.path(), "laptop");
    a.start_with(&signer, &[]);
    b.start_with(&signer, &[]);
    let sshd = Sshd::start(dir.path(), &format!("{line}\n"), &[]);
    std::thread::scope(|s| {
        let ra = s.spawn(|| sshd.ssh(&a, &[], "true"));
        let rb = s.spawn(|| sshd.ssh(&b, &[], "true"));
        assert!(ra.join().unwrap().status.success());
        assert!(rb.join().unwrap().status.success());
    });
    let signs = signer.approvals_of("sign");
    assert_eq!(signs.len(), 2);
    assert!(
        signs.iter().any(|l| l.contains("src=desk "))
            && signs.iter().any(|l| l.contains("src=laptop ")),
        "{signs:?}"
    );
    let agents = ok(&mut signer.cmd(&["agents"]));
    assert!(
        agents.contains("desk") && agents.contains("laptop"),
        "{agents}"
    );
}

#[test]
fn one_agent_routes_each_key_to_the_signer_that_holds_it() {
    let dir = test_dir();
    let mut one = Signer::init(dir.path(), "one");
    let mut two = Signer::init(dir.path(), "two");
    let k1 = one.keygen("ed25519", "key-one");
    let k2 = two.keygen("ecdsa", "key-two");
    one.start();
    two.start();
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start(&["--signer", &one.addr, "--signer", &two.addr]);
    agent.wait_connected(2);
    let s1 = Sshd::start(dir.path(), &format!("{k1}\n"), &[]);
    let s2 = Sshd::start(dir.path(), &format!("{k2}\n"), &[]);
    s1.assert_login(&agent, "a login with signer one's key");
    s2.assert_login(&agent, "a login with signer two's key");
    assert_eq!(
        one.approvals_of("sign").len(),
        1,
        "key-one went to signer one"
    );
    assert_eq!(
        two.approvals_of("sign").len(),
        1,
        "key-two went to signer two"
    );
    let signers = ok(&mut agent.cmd(&["signers"]));
    assert!(
        signers.contains("one") && signers.contains("two"),
        "{signers}"
    );
    // With signer two gone, its key is still listed from the cache.
    two.kill();
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer two"));
    let listed = String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned();
    assert!(
        listed.contains(k2.split_whitespace().nth(1).unwrap()),
        "{listed}"
    );
    s1.assert_login(&agent, "signer one still signs");
}

#[test]
fn an_unpaired_agent_is_refused_and_forget_pairs_afresh() {
    let dir = test_dir();
    let (signer, line) = Signer::serving(dir.path(), "pi", "k");
    let mut agent = Agent::paired_with(dir.path(), "laptop", &signer);
    let sshd = Sshd::start(dir.path(), &format!("{line}\n"), &[]);
    let agents = ok(&mut signer.cmd(&["agents"]));
    let id = agents.split_whitespace().next().unwrap().to_owned();
    let out = ok(&mut signer.cmd(&["unpair", &id[..8]]));
    assert!(out.contains("Unpaired laptop"), "{out}");
    // The open session's requests are refused; a new connection too,
    // without asking anyone.
    assert!(!sshd.ssh(&agent, &[], "true").status.success());
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("pairingInvalid"));
    agent.stop();
    let pairs_before = signer.approvals_of("pair").len();
    agent.start(&[]);
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("refused") && l.contains("pairingInvalid")
    });
    assert_eq!(
        signer.approvals_of("pair").len(),
        pairs_before,
        "nobody was asked"
    );
    agent.stop();
    // Forgetting everything gives the agent a new identity: it pairs anew.
    let out = ok(&mut agent.cmd(&["forget"]));
    assert!(out.contains("Forgot"), "{out}");
    agent.start(&["--signer", &signer.addr]);
    agent.wait_connected(1);
    sshd.assert_login(&agent, "a login after pairing afresh");
    // Forget one signer by id on the agent side.
    agent.stop();
    let signers = ok(&mut agent.cmd(&["signers"]));
    let sid = signers.split_whitespace().next().unwrap().to_owned();
    ok(&mut agent.cmd(&["forget", &sid]));
    assert!(ok(&mut agent.cmd(&["signers"])).contains("No pinned signers"));
    let _ = Command::new("true").status();
}
