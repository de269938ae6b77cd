//! Session certificates: one approval, then local signing for the
//! certificate's lifetime, renewal, expiry and policy.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A signer with one key, an agent, and an sshd that trusts only the
/// signer's CA (no authorized_keys).
struct CaWorld {
    dir: tempfile::TempDir,
    signer: Signer,
    agent: Agent,
    sshd: Sshd,
    key_line: String,
}

fn ca_world(signer_toml: &str, agent_args: &[&str]) -> CaWorld {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let key_line = signer.keygen("ed25519", "plain");
    signer.config(signer_toml);
    signer.start();
    let ca = ok(&mut signer.cmd(&["ca"]));
    let sshd = Sshd::trusting_ca(dir.path(), &ca, &[]);
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start_with(&signer, agent_args);
    CaWorld {
        dir,
        signer,
        agent,
        sshd,
        key_line,
    }
}

fn wait_cert(agent: &Agent, n: usize) {
    agent.wait_certificate_installed(n);
}

fn cert_line(agent: &Agent) -> String {
    let out = String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned();
    out.lines()
        .find(|l| l.ends_with(" vmux-session-cert"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no session certificate listed: {out}"))
}

#[test]
fn one_approval_then_twenty_logins_signed_locally() {
    let w = ca_world("", &[]);
    wait_cert(&w.agent, 1);
    let line = cert_line(&w.agent);
    assert!(
        line.starts_with("ecdsa-sha2-nistp256-cert-v01@openssh.com "),
        "{line}"
    );
    for i in 0..20 {
        w.sshd.assert_login(&w.agent, &format!("login {i}"));
    }
    assert_eq!(
        w.sshd
            .daemon
            .count(|l| l.contains("Accepted publickey") && l.contains("ECDSA-CERT")),
        20
    );
    assert_eq!(
        w.signer.approvals_of("certificate").len(),
        1,
        "{:?}",
        w.signer.approvals()
    );
    assert!(
        w.signer.approvals_of("sign").is_empty(),
        "no remote signature was needed"
    );
    let status = w.agent.status();
    assert_eq!(status["certificate"]["state"], "valid");
    let text = ok(&mut w.agent.cmd(&["status"]));
    assert!(text.contains("Certificate valid until "), "{text}");
}

#[test]
fn the_certificate_carries_the_policys_principals_extensions_and_validity() {
    let user = login_user();
    let w = ca_world(
        &format!(
            "[certificates]\nprincipals = [\"{user}\", \"deploy\"]\nextensions = [\"permit-pty\", \"permit-port-forwarding\"]\nmax_validity_seconds = 600\n"
        ),
        &["--cert-validity", "100000"],
    );
    wait_cert(&w.agent, 1);
    let approvals = w.signer.approvals_of("certificate");
    assert!(
        approvals[0].contains("validity=600 "),
        "shortened to the maximum: {approvals:?}"
    );
    assert!(
        approvals[0].contains(&format!("principals={user},deploy ")),
        "{approvals:?}"
    );
    let f = w.dir.path().join("cert.pub");
    std::fs::write(&f, format!("{}\n", cert_line(&w.agent))).unwrap();
    let shown = ok(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&f));
    assert!(shown.contains("user certificate"), "{shown}");
    assert!(
        shown.contains(&format!("                {user}\n"))
            && shown.contains("                deploy\n"),
        "{shown}"
    );
    assert!(
        shown.contains("permit-pty") && shown.contains("permit-port-forwarding"),
        "{shown}"
    );
    assert!(!shown.contains("permit-X11-forwarding"), "{shown}");
    assert!(shown.contains("Key ID: \"vmux agent laptop"), "{shown}");
    // Validity: 600 s from now, valid-after backdated 5 minutes.
    let status = w.agent.status();
    let until = status["certificate"]["valid_until"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(until > now + 540 && until <= now + 600, "{until} vs {now}");
    w.sshd.assert_login(&w.agent, "login");
}

#[test]
fn renewed_before_expiry_then_expired_with_the_signer_down_then_back() {
    let mut w = ca_world(
        "",
        &[
            "--cert-validity",
            "8",
            "--cert-renew-before",
            "5",
            "--sign-timeout",
            "20",
        ],
    );
    wait_cert(&w.agent, 1);
    let first = w.agent.status()["certificate"]["serial"].as_u64().unwrap();
    wait_cert(&w.agent, 2);
    let second = w.agent.status()["certificate"]["serial"].as_u64().unwrap();
    assert_ne!(first, second, "renewal makes a new certificate");
    w.sshd.assert_login(&w.agent, "logins keep working");

    // The signer goes away: the certificate expires and is dropped.
    let addr = w.signer.addr.clone();
    w.signer.kill();
    w.agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("session certificate expired"));
    let status = w.agent.status();
    assert_eq!(status["certificate"]["state"], "expired");
    let text = ok(&mut w.agent.cmd(&["status"]));
    assert!(
        text.contains("Certificate expired — connect signer to renew"),
        "{text}"
    );
    let t = Instant::now();
    let out = w.sshd.ssh(&w.agent, &[], "true");
    assert!(
        !out.status.success(),
        "a CA-only server cannot be reached without a certificate"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "and it fails fast: {:?}",
        t.elapsed()
    );

    // A server with the plain key works through the signer once it is back.
    let plain = Sshd::start(w.dir.path(), &format!("{}\n", w.key_line), &[]);
    w.signer.start_on(&addr, &[]);
    w.agent.wait_connected(2);
    plain.assert_login(&w.agent, "login");
}

#[test]
fn no_certificate_when_policy_or_approver_says_no_and_plain_keys_still_work() {
    for (toml, deny) in [("[certificates]\nauto_issue = false\n", false), ("", true)] {
        let dir = test_dir();
        let mut signer = Signer::init(dir.path(), "pi");
        let key_line = signer.keygen("ed25519", "plain");
        signer.config(toml);
        signer.deny("certificate", deny);
        signer.start();
        let agent = Agent::paired_with(dir.path(), "laptop", &signer);
        let sshd = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
        sshd.assert_login(&agent, "login");
        let status = agent.status();
        assert_eq!(status["certificate"]["state"], "none", "{toml} deny={deny}");
        let text = ok(&mut agent.cmd(&["status"]));
        assert!(text.contains("No session certificate"), "{text}");
        let listed = String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned();
        assert!(!listed.contains("vmux-session-cert"), "{listed}");
        if deny {
            assert_eq!(
                signer.approvals_of("certificate").len(),
                1,
                "asked once, not again and again"
            );
        } else {
            assert!(
                signer.approvals_of("certificate").is_empty(),
                "auto-issue off asks nobody"
            );
            // On demand (`vmux agent cert`) still asks, and gets one.
            let got = ok(&mut agent.cmd(&["cert"]));
            assert!(got.starts_with("Certificate valid until "), "{got}");
            assert_eq!(signer.approvals_of("certificate").len(), 1);
        }
    }
}

#[test]
fn the_ephemeral_key_is_never_on_disk() {
    let w = ca_world("", &[]);
    wait_cert(&w.agent, 1);
    let cert = cert_line(&w.agent);
    let blob = cert.split_whitespace().nth(1).unwrap().to_owned();
    for entry in walk(&w.agent.home) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key",
            entry.display()
        );
        assert!(
            !text.contains(&blob[..60]),
            "{} holds the certificate",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// `vmux signer ca` prints the CA the running signer issues certificates
/// with, not the one signer.toml names: with `ca = "phone:pixel"` there
/// and `--ca software` on `vmux signer run`'s command line, it prints the
/// software CA's line, and an sshd trusting that line lets the agent's
/// certificate in. With no signer running it reads signer.toml; stderr
/// says which, and flags a `--ca` other than the running signer's.
#[test]
fn signer_ca_prints_the_ca_of_the_running_signer_not_of_its_config() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    signer.keygen("ed25519", "plain");
    signer.config("ca = \"phone:pixel\"\n");
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    signer.start_on("127.0.0.1:0", &["--ca", "software"]);
    let asked = run(&mut signer.cmd(&["ca"]));
    assert!(asked.status.success(), "{}", stderr(&asked));
    assert_eq!(
        stderr(&asked),
        "# the CA the running signer uses (software)\n"
    );
    let line = String::from_utf8_lossy(&asked.stdout).into_owned();
    assert_eq!(line.lines().count(), 1, "{line}");
    let named = run(&mut signer.cmd(&["ca", "--ca", "software"]));
    assert_eq!(String::from_utf8_lossy(&named.stdout), line);
    assert_eq!(
        stderr(&named),
        "# the CA --ca names (software), the one the running signer uses\n"
    );
    let other = run(&mut signer.cmd(&["ca", "--ca", "phone:pixel"]));
    assert!(!other.status.success());
    assert!(
        stderr(&other).starts_with(
            "# the CA --ca names (phone:pixel), NOT the one the running signer uses (software)"
        ),
        "{}",
        stderr(&other)
    );

    // The line is the one that matters: sshd trusting it admits the
    // certificate the running signer issued.
    let sshd = Sshd::trusting_ca(dir.path(), &line, &[]);
    let agent = Agent::paired_with(dir.path(), "laptop", &signer);
    wait_cert(&agent, 1);
    sshd.assert_login(&agent, "login with the running signer's certificate");
    assert_eq!(
        sshd.daemon
            .count(|l| l.contains("Accepted publickey") && l.contains("ECDSA-CERT")),
        1
    );

    // Stopped: signer.toml's CA again, a phone that is not enrolled.
    signer.kill();
    let after = run(&mut signer.cmd(&["ca"]));
    assert!(!after.status.success());
    assert!(after.stdout.is_empty());
    assert!(
        stderr(&after)
            .starts_with("# no signer runs here: the CA signer.toml names (phone:pixel)\n")
            && stderr(&after).contains("phone pixel is not enrolled"),
        "{}",
        stderr(&after)
    );
}
