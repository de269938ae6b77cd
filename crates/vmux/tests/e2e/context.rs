//! Who asks and for what: verified destinations, the requesting process,
//! forwarded agents, namespaces, approval windows, the audit log, status.

use std::process::Command;

use crate::support::*;

/// A world whose agent reads `known_hosts` from its own HOME, where the
/// sshd's host key is recorded under `name` (hashed with `ssh-keygen -H`
/// when `hashed`).
fn world(
    name_entry: impl Fn(&Sshd) -> String,
    hashed: bool,
    signer_toml: &str,
) -> (tempfile::TempDir, Signer, Agent, Sshd, String) {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let key_line = signer.keygen("ed25519", "ctx-key");
    signer.config(&format!(
        "{signer_toml}\n[certificates]\nauto_issue = false\n"
    ));
    signer.start();
    let sshd = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
    let entries = format!("{} {}\n", name_entry(&sshd), sshd.host_pub);
    let (mut agent, kh) = Agent::with_known_hosts(dir.path(), "laptop", &entries);
    if hashed {
        ok(Command::new("ssh-keygen").arg("-H").arg("-f").arg(&kh));
        assert!(std::fs::read_to_string(&kh).unwrap().starts_with("|1|"));
    }
    agent.start_with(&signer, &[]);
    (dir, signer, agent, sshd, key_line)
}

#[test]
fn the_prompt_names_the_verified_host_user_and_process() {
    let (_d, signer, agent, sshd, _) = world(|_| "myserver.test".into(), false, "");
    sshd.assert_login(&agent, "login");
    let s = signer.approvals_of("sign");
    assert_eq!(s.len(), 1);
    let line = &s[0];
    assert!(
        line.contains("host=") && line.contains("myserver.test user="),
        "the name from known_hosts: {line}"
    );
    assert!(line.contains(&format!("user={} ", login_user())), "{line}");
    assert!(line.contains("quality=verified "), "{line}");
    assert!(line.contains("fwd=0 binding=verified "), "{line}");
    assert!(
        line.contains("process=ssh "),
        "the process is named: {line}"
    );
}

#[test]
fn a_hashed_known_hosts_entry_is_matched_through_the_ssh_command_line() {
    let (_d, signer, agent, sshd, _) = world(|s| format!("[127.0.0.1]:{}", s.port), true, "");
    sshd.assert_login(&agent, "login");
    let line = &signer.approvals_of("sign")[0];
    assert!(
        line.contains(&format!("host=127.0.0.1:{} ", sshd.port)),
        "{line}"
    );
    assert!(line.contains("quality=verified "), "{line}");
}

#[test]
fn a_signature_through_a_forwarded_agent_is_marked_forwarded() {
    let (d, signer, agent, first, key_line) = world(|_| "bastion.test".into(), false, "");
    let second = Sshd::start(d.path(), &format!("{key_line}\n"), &[]);
    // ssh -A to the first server, and from there to the second.
    let inner = format!(
        "ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={} -p {} {}@127.0.0.1 echo second-hop-ok",
        second.known_hosts.display(),
        second.port,
        login_user()
    );
    let out = first.ssh(&agent, &["-A"], &inner);
    assert_success(&out, "the login through ssh -A");
    assert!(String::from_utf8_lossy(&out.stdout).contains("second-hop-ok"));
    let signs = signer.approvals_of("sign");
    assert_eq!(signs.len(), 2, "{signs:?}");
    assert!(
        signs[0].contains("fwd=0 ") && signs[0].contains("bastion.test user="),
        "{signs:?}"
    );
    assert!(
        signs[1].contains("fwd=1 "),
        "the second hop is forwarded: {signs:?}"
    );
    let audit = signer.audit();
    assert!(audit.contains("(forwarded)"), "{audit}");
}

#[test]
fn a_bad_session_bind_or_a_mismatched_session_id_is_never_verified() {
    let (_d, signer, agent, _sshd, key_line) = world(|_| "x.test".into(), false, "");
    let key_blob = key_blob(&key_line);
    let host =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let bind = |sid: &[u8], signed: &[u8]| bind_request_signing(&host, sid, signed, false);
    let sign = |sid: &[u8]| {
        sign_request(
            &key_blob,
            &login_data(sid, "mallory", "ssh-ed25519", &key_blob),
            0,
        )
    };
    // A bind whose signature is over another session id: refused.
    let mut s = agent.client();
    assert_eq!(s.call(&bind(b"sid-A", b"sid-B")).unwrap(), [5]);
    assert_eq!(s.call(&sign(b"sid-A")).unwrap()[0], 14);
    // A good bind, but data naming another session id.
    let mut s = agent.client();
    assert_eq!(s.call(&bind(b"sid-C", b"sid-C")).unwrap(), [6]);
    assert_eq!(s.call(&sign(b"sid-D")).unwrap()[0], 14);
    let signs = signer.approvals_of("sign");
    assert_eq!(signs.len(), 2);
    for l in &signs {
        assert!(
            l.contains("quality=claimed ") && l.contains("user=mallory "),
            "{l}"
        );
    }
    // A client that never binds (an old ssh, a relayed socket): nobody
    // can tell whether it is forwarded, and the approver is told so.
    let mut s = agent.client();
    assert_eq!(s.call(&sign(b"sid-E")).unwrap()[0], 14);
    let signs = signer.approvals_of("sign");
    assert_eq!(signs.len(), 3);
    assert!(
        signs[2].contains("quality=claimed ") && signs[2].contains("fwd=0 binding=none "),
        "{}",
        signs[2]
    );
}

#[test]
fn an_ssh_keygen_signature_shows_its_namespace() {
    let (d, signer, agent, _sshd, key_line) = world(|_| "x.test".into(), false, "");
    let msg = d.path().join("commit.txt");
    ok(&mut ssh_keygen_sign(
        &agent,
        &key_line,
        "git",
        &msg,
        "tree abc\n",
    ));
    let line = &signer.approvals_of("sign")[0];
    assert!(line.contains("ns=git "), "{line}");
    assert!(line.contains("quality=unknown "), "{line}");
    assert!(line.contains("fwd=0 binding=none "), "{line}");
}

#[test]
fn an_approval_window_lets_the_same_login_through_but_not_another_host() {
    let (d, signer, agent, sshd, key_line) = world(
        |s| format!("[127.0.0.1]:{}", s.port),
        false,
        "max_approval_window_seconds = 600\n",
    );
    signer.grant_windows(300);
    for _ in 0..3 {
        sshd.assert_login(&agent, "login");
    }
    assert_eq!(
        signer.approvals_of("sign").len(),
        1,
        "one prompt, then the window: {:?}",
        signer.approvals()
    );
    let audit = signer.audit();
    assert_eq!(audit.matches("approved-by-window").count(), 2, "{audit}");
    // Another host is asked.
    let other = Sshd::start(d.path(), &format!("{key_line}\n"), &[]);
    let out = other.ssh(&agent, &[], "true");
    assert!(out.status.success());
    assert_eq!(signer.approvals_of("sign").len(), 2);
    // Locking closes the windows.
    ok(&mut signer.cmd(&["lock"]));
    let locked = sshd.ssh(&agent, &[], "true");
    assert!(
        !locked.status.success(),
        "a locked signer signs nothing, even unencrypted keys"
    );
    ok(&mut signer.cmd(&["unlock"]));
    sshd.assert_login(&agent, "a login after unlock");
    assert_eq!(signer.approvals_of("sign").len(), 3);
}

#[test]
fn the_audit_log_has_a_line_per_decision_and_detects_edits() {
    let (_d, signer, agent, sshd, _) = world(|_| "a.test".into(), false, "");
    sshd.assert_login(&agent, "the approved login");
    signer.deny("sign", true);
    assert!(!sshd.ssh(&agent, &[], "true").status.success());
    let verified = ok(&mut signer.cmd(&["audit", "--verify"]));
    // Pairing, the refused automatic certificate, the approved and the
    // denied signature.
    assert!(
        verified.contains("Audit log verified: 4 entries"),
        "{verified}"
    );
    assert!(
        verified.contains("certificate refused") && verified.contains("(policyDenied)"),
        "{verified}"
    );
    assert!(verified.contains("userDenied"), "{verified}");
    let log = signer.home.join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("signature"),
        "no signatures in the audit log"
    );
    // Someone turns the approved signature (line 3) into a refusal.
    signer.edit_audit_line(2, "\"outcome\":\"approved\"", "\"outcome\":\"refused\"");
    let out = run(&mut signer.cmd(&["audit", "--verify"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The keyed chain names the edited line itself.
    assert!(err.contains("line 3 was altered"), "{err}");
}

#[test]
fn status_reflects_connect_disconnect_and_refresh() {
    let (_d, mut signer, agent, _sshd, _) = world(|_| "a.test".into(), false, "");
    let s = agent.status();
    assert_eq!(s["signers"][0]["connected"], true);
    assert_eq!(s["signers"][0]["name"], "pi");
    assert_eq!(s["keys"].as_array().unwrap().len(), 1);
    // A key made on the running signer shows after a refresh.
    signer.keygen("ecdsa", "added-later");
    let refreshed = ok(&mut agent.cmd(&["refresh"]));
    assert!(refreshed.contains("Refreshed"), "{refreshed}");
    let s = agent.status();
    assert_eq!(s["keys"].as_array().unwrap().len(), 2, "{s}");
    let addr = signer.addr.clone();
    signer.kill();
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer"));
    let s = agent.status();
    assert_eq!(s["signers"][0]["connected"], false);
    let text = ok(&mut agent.cmd(&["status"]));
    assert!(text.contains("Disconnected since"), "{text}");
    signer.start_on(&addr, &[]);
    agent.wait_connected(2);
    assert_eq!(agent.status()["signers"][0]["connected"], true);
}
