//! Attacks on pairing and pinning (issue 13, finding 2), each of which
//! succeeded before pairing needed the agent user's confirmation and
//! pinned signers were reached only through their pinned keys.

use std::process::Command;

use crate::support::netns::Netns;
use crate::support::*;

/// An impostor: a real vmux signer that approves everything.
fn impostor(dir: &std::path::Path, name: &str) -> (Signer, String) {
    let mut s = Signer::init(dir, name);
    let line = s.keygen("ed25519", &format!("{name}-key"));
    s.start_approving("127.0.0.1:0", "allow-all", &[]);
    (s, line)
}

fn pinned(agent: &Agent) -> String {
    ok(&mut agent.cmd(&["signers"]))
}

/// Asserts that `agent` pins no signer and never connected to one.
fn assert_never_paired(agent: &Agent) {
    assert!(pinned(agent).contains("No pinned signers"));
    assert_eq!(
        agent.daemon().count(|l| l.contains("connected to signer")),
        0
    );
}

/// The signers' names in `vmux agent signers` output, in routing order.
fn routing_order(signers: &str) -> Vec<&str> {
    signers
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect()
}

fn listed(agent: &Agent) -> String {
    String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// First contact with a fake signer at the `--signer` address: it
/// approves its own pairing at once, but nobody confirmed the code on the
/// agent, so nothing is pinned, no key is listed and no login reaches it;
/// refused here, the agent does not pair with it again by itself.
#[test]
fn a_first_contact_impostor_is_not_pinned_without_confirmation_on_the_agent() {
    let dir = test_dir();
    let (imp, imp_key) = impostor(dir.path(), "evil");
    let sshd = Sshd::start(dir.path(), &format!("{imp_key}\n"), &[]);
    let mut agent = Agent::unconfirmed(dir.path(), "laptop");
    agent.start(&["--signer", &imp.addr]);
    let line = agent
        .daemon()
        .wait_line(WAIT, |l| l.starts_with("vmux agent: pairing code "));
    let code = pairing_code_of(&line).expect("a code in the notice");
    assert!(
        line.contains(&format!("vmux agent pair --confirm {code}")),
        "the notice says how to confirm: {line}"
    );
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("the signer approved pairing code"));

    // The signer said yes; the agent's user has not.
    let status = agent.status();
    let link = &status["signers"][0];
    assert_eq!(link["pairing_code"], code.as_str(), "{status}");
    assert_eq!(link["pairing_signer_approved"], true, "{status}");
    assert_eq!(link["connected"], false, "{status}");
    let shown = ok(&mut agent.cmd(&["status"]));
    assert!(
        shown.contains(&format!("vmux agent pair --confirm {code}")),
        "{shown}"
    );
    assert!(pinned(&agent).contains("No pinned signers"));
    assert!(listed(&agent).contains("no identities") || listed(&agent).is_empty());
    assert!(
        !sshd.ssh(&agent, &[], "true").status.success(),
        "a login through the impostor"
    );
    assert_eq!(sshd.accepted(), 0);

    // Refused here: dropped, nothing pinned, and not paired again by
    // itself (it asks for `vmux agent pair --signer`).
    let out = ok(&mut agent.cmd(&["pair", "--deny"]));
    assert!(out.contains("Refused 1"), "{out}");
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("refused") && l.contains("not confirmed")
    });
    agent.daemon().wait_line(WAIT, |l| {
        l.contains(&format!("vmux agent pair --signer {}", imp.addr))
            && l.contains("no pinned signer answers")
    });
    assert_eq!(
        agent
            .daemon()
            .count(|l| l.starts_with("vmux agent: pairing code ")),
        1,
        "no second pairing by itself"
    );
    assert_never_paired(&agent);
}

/// The agent's user typed a code other than the one this pairing shows:
/// the pairing is refused even though the signer approved it.
#[test]
fn a_wrong_code_confirmed_on_the_agent_refuses_the_pairing() {
    let dir = test_dir();
    let (imp, _) = impostor(dir.path(), "evil");
    let mut agent = Agent::unconfirmed(dir.path(), "laptop");
    agent.start(&["--signer", &imp.addr]);
    let code = agent.wait_pairing_code();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let out = agent.confirm(wrong);
    assert!(!out.status.success(), "a wrong code is not accepted");
    assert!(
        stderr(&out).contains("no pairing waiting here has the code"),
        "{}",
        stderr(&out)
    );
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("refused") && l.contains("not this pairing's code")
    });
    assert!(pinned(&agent).contains("No pinned signers"));
    // The real code, too late, confirms nothing.
    assert!(!agent.confirm(&code).status.success());
    assert_never_paired(&agent);
}

/// An agent paired with one signer, restarted with `--signer` pointing at
/// another (unknown) one, never pairs with it by itself: it only tries the
/// pinned key there. Pairing it is the user's explicit `vmux agent pair
/// --signer`, and the new signer goes after the first in routing order.
#[test]
fn a_pinned_agent_does_not_pair_with_an_unknown_signer_until_asked() {
    let dir = test_dir();
    let (first, k1) = Signer::serving(dir.path(), "first", "k1");
    let mut agent = Agent::paired_with(dir.path(), "laptop", &first);
    agent.stop();

    let (other, k2) = Signer::serving(dir.path(), "other", "k2");
    agent.start(&["--signer", &other.addr]);
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("no pinned signer answers") && l.contains(&other.addr)
    });
    assert!(
        other.approvals_of("pair").is_empty(),
        "the unknown signer was not asked to pair"
    );
    assert_eq!(
        agent
            .daemon()
            .count(|l| l.starts_with("vmux agent: pairing code ")),
        0
    );

    // Explicitly: paired (the harness confirms the code), listed second.
    ok(&mut agent.cmd(&["pair", "--signer", &other.addr]));
    agent.wait_connected(1);
    assert_eq!(other.approvals_of("pair").len(), 1);
    let signers = pinned(&agent);
    let order = routing_order(&signers);
    assert_eq!(order, ["first", "other"], "{signers}");
    let keys = listed(&agent);
    assert!(
        keys.contains(k2.split_whitespace().nth(1).unwrap()),
        "{keys}"
    );
    assert!(
        keys.contains(k1.split_whitespace().nth(1).unwrap()),
        "{keys}"
    );
}

/// Not a test on its own: run by the test below inside a namespace, it
/// advertises over mDNS whatever id and port it is told to, as an
/// impostor on the LAN would, until it is killed (at most two minutes).
#[test]
#[ignore = "helper process for an_mdns_announcer_of_the_pinned_id_never_gets_a_session"]
fn mdns_announcer_helper() {
    let Ok(spec) = std::env::var("VMUX_TEST_ANNOUNCE") else {
        return;
    };
    let mut parts = spec.splitn(3, ' ');
    let (id, port, name) = (
        parts.next().expect("id"),
        parts.next().expect("port").parse::<u16>().expect("port"),
        parts.next().expect("name"),
    );
    let _ad = vmux_link::mdns::Advertiser::start(name, id, port).expect("advertise");
    println!("announcing {id} on port {port}");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// A LAN impostor advertises the *pinned* signer's id at another address
/// (a real signer that approves everything behind it). The agent reaches
/// that address only with the pinned key, so the impostor never gets a
/// session; after the real signer reconnects, the pins and their order are
/// unchanged and logins work.
#[test]
fn an_mdns_announcer_of_the_pinned_id_never_gets_a_session() {
    let net = Netns::new();
    let dir = test_dir();
    let (mut signer, line) = Signer::serving_in(dir.path(), &net.b, "kitchen-pi", "real-key");
    let real_port = signer.addr.rsplit(':').next().unwrap().to_owned();

    let mut agent = Agent::in_namespace(dir.path(), &net.a, "laptop");
    agent.start(&[]);
    let connected = agent.wait_connected(1);
    let real_id = connected
        .rsplit('(')
        .next()
        .and_then(|s| s.split(')').next())
        .expect("signer id")
        .to_owned();
    let sshd = Sshd::start(dir.path(), &format!("{line}\n"), &[]);
    sshd.assert_login(&agent, "the first login");

    // The impostor: a real signer approving everything, not advertising
    // itself, and an announcer of the pinned id pointing at it.
    let imp_home = dir.path().join("signer-impostor");
    ok(vmux().arg("--home").arg(&imp_home).args([
        "signer",
        "init",
        "--name",
        "kitchen-pi",
        "--no-passphrase",
    ]));
    ok(vmux().arg("--home").arg(&imp_home).args([
        "signer",
        "keygen",
        "--type",
        "ed25519",
        "--comment",
        "evil",
    ]));
    let imp = Daemon::spawn(
        "impostor",
        Command::new("ip")
            .args(["netns", "exec", &net.b, env!("CARGO_BIN_EXE_vmux")])
            .arg("--home")
            .arg(&imp_home)
            .args([
                "signer",
                "run",
                "--listen",
                "0.0.0.0:0",
                "--approve",
                "allow-all",
                "--no-advertise",
            ])
            .env("RUST_LOG", "info"),
    );
    let imp_port = imp
        .wait_line(WAIT, |l| l.starts_with("listening on "))
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let _announcer = Daemon::spawn(
        "announcer",
        Command::new("ip")
            .args(["netns", "exec", &net.b])
            .arg(std::env::current_exe().expect("test binary"))
            .args([
                "attack_pairing::mdns_announcer_helper",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(
                "VMUX_TEST_ANNOUNCE",
                format!("{real_id} {imp_port} kitchen-pi-2"),
            ),
    );
    let imp_addr = format!("{}:{imp_port}", net.b_ip);
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("discovered signer") && l.contains(&imp_addr)
    });
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("no pinned signer answers") && l.contains(&imp_addr)
    });

    // The real signer drops and comes back at its address.
    signer.kill();
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer kitchen-pi"));
    signer.start_on(&format!("0.0.0.0:{real_port}"), &[]);
    agent.wait_connected(2);

    assert_eq!(
        imp.count(|l| l.contains("agent connected")),
        0,
        "the impostor never had a session:\n{}",
        imp.output()
    );
    let signers = pinned(&agent);
    let ids: Vec<&str> = signers
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, [real_id.as_str()], "{signers}");
    assert!(!listed(&agent).contains("evil"));
    sshd.assert_login(&agent, "a login after the real signer reconnected");
    assert_eq!(
        agent
            .daemon()
            .count(|l| l.starts_with("vmux agent: pairing code ")),
        1,
        "only the first, confirmed pairing"
    );
}

/// The CA a pinned signer's first certificate was signed by is pinned: a
/// certificate from another CA key (the signer's CA replaced) is refused,
/// so it never logs in where only the new CA is trusted.
#[test]
fn a_certificate_from_another_ca_key_is_refused() {
    let dir = test_dir();
    let (mut signer, _) = Signer::serving(dir.path(), "pi", "plain");
    let agent = Agent::paired_with(dir.path(), "laptop", &signer);
    agent.wait_certificate_installed(1);

    // Another CA key takes the signer's place.
    let other = Signer::init(dir.path(), "other");
    let ca_new = ok(&mut other.cmd(&["ca"]));
    let ca_file = dir.path().join("ca-new.pub");
    std::fs::write(&ca_file, &ca_new).unwrap();
    signer.kill();
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer"));
    std::fs::copy(other.home.join("ca.key"), signer.home.join("ca.key")).unwrap();
    let addr = signer.addr.clone();
    signer.start_on(&addr, &[]);
    agent.wait_connected(2);
    let out = agent.cmd(&["cert"]).output().unwrap();
    assert!(!out.status.success(), "a certificate from the new CA");
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("but CA") && l.contains("is pinned for it")
    });
    let sshd = Sshd::start(
        dir.path(),
        "",
        &[&format!("TrustedUserCAKeys {}", ca_file.display())],
    );
    assert!(
        !sshd.ssh(&agent, &[], "true").status.success(),
        "a login with a certificate from another CA"
    );
    assert_eq!(sshd.accepted(), 0);
}

/// Two pinned signers offer the same key; the user paired `first` first.
/// Reconnects used to move a signer to the end of the list, so after
/// `first` dropped and came back, `second` (any pinned signer, or an
/// impostor that got pinned) took its logins. Now the order is the user's
/// and stays so across reconnects.
#[test]
fn routing_order_is_the_pairing_order_across_reconnects() {
    let dir = test_dir();
    let key = dir.path().join("shared_key");
    ok(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "shared"])
        .arg("-f")
        .arg(&key));
    let line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut first = Signer::init(dir.path(), "first");
    let mut second = Signer::init(dir.path(), "second");
    for s in [&first, &second] {
        ok(s.cmd(&["import"]).arg(&key));
    }
    first.start();
    second.start();
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start(&["--signer", &first.addr]);
    agent.wait_connected(1);
    ok(&mut agent.cmd(&["pair", "--signer", &second.addr]));
    agent.wait_connected(2);
    let sshd = Sshd::start(dir.path(), &line, &[]);
    sshd.assert_login(&agent, "the first login");
    assert_eq!(first.approvals_of("sign").len(), 1, "signed by first");

    let addr = first.addr.clone();
    first.kill();
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer first"));
    first.start_on(&addr, &[]);
    agent.wait_connected(3);
    sshd.assert_login(&agent, "a login after first reconnected");
    assert_eq!(
        first.approvals_of("sign").len(),
        2,
        "still signed by first, the user's first signer"
    );
    assert!(second.approvals_of("sign").is_empty(), "second never asked");
    let signers = pinned(&agent);
    let order = routing_order(&signers);
    assert_eq!(order, ["first", "second"], "{signers}");
}

/// On the agent's terminal, the user confirms by typing the code (here a
/// pseudo-terminal made by util-linux `script`); the notice says so.
#[test]
fn the_code_typed_on_the_agents_terminal_confirms_the_pairing() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;

    let dir = test_dir();
    let (signer, _) = Signer::serving(dir.path(), "pi", "k");
    let agent = Agent::new(dir.path(), "laptop");
    let run = format!(
        "'{}' --home '{}' agent run --name laptop --no-discovery --signer {}",
        env!("CARGO_BIN_EXE_vmux"),
        agent.home.display(),
        signer.addr
    );
    let mut child = Command::new("script")
        .args(["-qfec", &run, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux)");
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l.trim_end_matches('\r').to_owned()).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&str) -> bool| -> String {
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!("timed out; the agent printed:\n{}", seen.join("\n")),
            }
        }
    };
    let line = wait_for(&|l| l.contains("vmux agent: pairing code "));
    assert!(line.contains("type it here"), "{line}");
    let code = pairing_code_of(&line).expect("code");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{code}").unwrap();
    wait_for(&|l| l.contains("confirmed here"));
    wait_for(&|l| l.contains("vmux agent: connected to signer pi"));
    assert!(pinned(&agent).contains(" pi "));
    let _ = child.kill();
    let _ = child.wait();
}
