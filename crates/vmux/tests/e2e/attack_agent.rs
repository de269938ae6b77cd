//! The agent under attack, each test written as the attack of issue 13 it
//! closes: a host reached with `ssh -A` using the session certificate or
//! the control extension; thousands of local clients announcing huge
//! messages; a client whose command line points the agent at a FIFO; a
//! certificate request with no signer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

fn call(s: &mut UnixStream, body: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&frame(body)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut a = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut a).unwrap();
    a
}

/// A sign request for `key_blob` over userauth data for `sid`.
fn sign_login(key_blob: &[u8], sid: &[u8]) -> Vec<u8> {
    let data = login_data(
        sid,
        "root",
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        key_blob,
    );
    sign_request(key_blob, &data, 0)
}

/// A `control@vmux` request, as any client of the socket can write one:
/// the extension's name, then a string holding the request's JSON.
fn control(request: serde_json::Value) -> Vec<u8> {
    let mut b = vec![27];
    put_string(&mut b, b"control@vmux");
    put_string(&mut b, request.to_string().as_bytes());
    b
}

/// A signer with an auto-issuing CA (the defaults), an agent holding a
/// session certificate, a hop that trusts the plain key and a target that
/// trusts only the CA.
struct ForwardWorld {
    dir: tempfile::TempDir,
    signer: Signer,
    agent: Agent,
    hop: Sshd,
    target: Sshd,
}

fn forward_world() -> ForwardWorld {
    let dir = test_dir();
    let (signer, key_line) = Signer::serving(dir.path(), "pi", "plain");
    let ca_file = dir.path().join("ca.pub");
    std::fs::write(&ca_file, ok(&mut signer.cmd(&["ca"]))).unwrap();
    let hop = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
    let target = Sshd::start(
        dir.path(),
        "",
        &[&format!("TrustedUserCAKeys {}", ca_file.display())],
    );
    let agent = Agent::paired_with(dir.path(), "laptop", &signer);
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("session certificate installed"));
    ForwardWorld {
        dir,
        signer,
        agent,
        hop,
        target,
    }
}

/// `ssh -A hop`, and from the hop `ssh target` with the forwarded agent.
fn through_the_hop(w: &ForwardWorld) -> std::process::Output {
    let inner = format!(
        "ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={} -p {} {}@127.0.0.1 echo reached-target",
        w.target.known_hosts.display(),
        w.target.port,
        login_user()
    );
    w.hop.ssh(&w.agent, &["-A"], &inner)
}

#[test]
fn a_host_reached_with_ssh_a_cannot_log_in_with_the_session_certificate() {
    let w = forward_world();
    // The certificate works for the user's own logins, with no prompt.
    w.target
        .assert_login(&w.agent, "a local login with the certificate");
    assert_eq!(w.signer.approvals_of("sign").len(), 0);

    // The attack: from the hop, log in wherever the CA is trusted.
    let out = through_the_hop(&w);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("reached-target"),
        "the hop logged in to the target through the forwarded agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hop's own login was asked for and approved; the forwarded agent
    // offered the hop no certificate, so the target was never logged into.
    let signs = w.signer.approvals_of("sign");
    assert_eq!(signs.len(), 1, "{signs:?}");
    assert!(signs[0].contains("fwd=0 "), "{signs:?}");
    assert_eq!(
        w.target.accepted(),
        1,
        "only the local login reached the target"
    );
    let _ = &w.dir;
}

#[test]
fn a_forwarded_connection_gets_no_certificate_signature_and_no_control() {
    let w = forward_world();
    let cert_blob = key_blob(
        String::from_utf8_lossy(&w.agent.ssh_add(&["-L"]).stdout)
            .lines()
            .find(|l| l.ends_with(" vmux-session-cert"))
            .expect("certificate listed locally"),
    );
    let host =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();

    // A local connection bound for authentication: the certificate signs
    // a login for its session.
    let mut local = UnixStream::connect(&w.agent.sock).unwrap();
    assert_eq!(
        call(&mut local, &bind_request(&host, b"sid-local", false)),
        [6]
    );
    assert_eq!(
        call(&mut local, &sign_login(&cert_blob, b"sid-local"))[0],
        14
    );
    // ... but not for another session.
    assert_eq!(call(&mut local, &sign_login(&cert_blob, b"sid-other")), [5]);

    // What a hop's process sends: our ssh binds the forwarded connection
    // first, then the hop binds its own onward login.
    let mut fwd = UnixStream::connect(&w.agent.sock).unwrap();
    assert_eq!(call(&mut fwd, &bind_request(&host, b"sid-hop", true)), [6]);
    assert_eq!(
        call(&mut fwd, &bind_request(&host, b"sid-onward", false)),
        [6]
    );
    let ids = call(&mut fwd, &[11]);
    assert_eq!(ids[0], 12);
    assert!(
        !ids.windows(cert_blob.len())
            .any(|w| w == cert_blob.as_slice()),
        "the certificate is listed to a forwarded connection"
    );
    assert_eq!(
        call(&mut fwd, &sign_login(&cert_blob, b"sid-onward")),
        [5],
        "the certificate signed for a forwarded connection"
    );
    assert_eq!(
        call(&mut fwd, &control(serde_json::json!({"cmd": "status"}))),
        [5],
        "control@vmux answered a forwarded connection"
    );
    // A local connection with no binding (vmux agent status) still works.
    let status = w.agent.status();
    assert_eq!(status["certificate"]["state"], "valid", "{status}");
    assert_eq!(w.signer.approvals_of("sign").len(), 0);
}

/// Resident set size of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn raise_fd_limit() {
    ok(Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg("--nofile=8192:8192"));
}

/// The sockets `pid` holds open. Only sockets: the agent's other
/// descriptors come and go on their own (the state file it writes in the
/// background after connecting to the signer), and one that happened to be
/// open when the baseline was taken would keep the count from ever
/// reaching it plus the clients.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Opens `n` connections that each announce a 256 KiB message, send 4 KiB
/// of it and stall. The agent may close those over its client limit.
fn announcers(sock: &std::path::Path, n: usize) -> Vec<UnixStream> {
    let mut announced = (256u32 * 1024).to_be_bytes().to_vec();
    announced.push(13);
    announced.extend_from_slice(&[0u8; 4095]);
    (0..n)
        .map(|_| {
            let mut s = UnixStream::connect(sock).unwrap();
            let _ = s.write_all(&announced);
            s
        })
        .collect()
}

#[test]
fn three_thousand_clients_announcing_huge_messages_cost_little_memory() {
    raise_fd_limit();
    let w = World::new("ed25519");
    let pid = w.agent.daemon().pid();
    let (before, sockets_before) = (rss_kib(pid), sockets(pid));
    // A thousand stall mid-message: all of them are held (under the
    // client limit), and a client that comes after them is served.
    let mut attackers = announcers(&w.agent.sock, 1000);
    let t = Instant::now();
    while sockets(pid) < sockets_before + 1000 {
        assert!(t.elapsed() < WAIT, "the agent did not accept 1000 clients");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = w.agent.ssh_add(&["-l"]);
    assert!(out.status.success(), "a client was not served: {out:?}");
    let with_1000 = rss_kib(pid);
    // Two thousand more, past the limit.
    attackers.extend(announcers(&w.agent.sock, 2000));
    let _ = w.agent.ssh_add(&["-l"]);
    let with_3000 = rss_kib(pid);
    println!("agent RSS: {before} KiB before, {with_1000} KiB with 1000 announcers, {with_3000} KiB with 3000");
    for during in [with_1000, with_3000] {
        assert!(
            during < before + 16 * 1024,
            "RSS grew from {before} KiB to {during} KiB with stalled announcers"
        );
    }
    drop(attackers);
    // Afterwards everyone is served.
    let out = w.agent.ssh_add(&["-l"]);
    assert!(out.status.success(), "{out:?}");
    w.sshd.assert_login(&w.agent, "login after the attack");
}

#[test]
fn a_client_that_stalls_mid_message_is_dropped_and_an_idle_one_is_kept() {
    let w = World::new("ed25519");
    // Idle between messages: kept for as long as it likes.
    let mut idle = UnixStream::connect(&w.agent.sock).unwrap();
    assert_eq!(call(&mut idle, &[11])[0], 12);
    // Announces 256 bytes, sends one.
    let mut s = UnixStream::connect(&w.agent.sock).unwrap();
    s.write_all(&[0, 0, 1, 0, 11]).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1];
    match s.read(&mut buf) {
        Ok(0) => {}
        other => panic!("the stalled client was not closed: {other:?}"),
    }
    assert_eq!(call(&mut idle, &[11])[0], 12, "the idle client was dropped");
}

/// A process that calls itself `ssh` and names a `known_hosts` file as its
/// UserKnownHostsFile (perl: an interpreter that does not mind its
/// argv[0]), asks the agent for 100 signatures on one connection, and
/// prints how many it got.
const FAKE_SSH: &str = r#"
use IO::Socket::UNIX;
sub str { pack("N", length $_[0]) . $_[0] }
my $c = IO::Socket::UNIX->new(Peer => $ENV{SSH_AUTH_SOCK}) or die "connect: $!";
my $blob = pack("H*", $ENV{KEY_BLOB});
my $data = str("sid") . chr(50) . str("root") . str("ssh-connection") . str("publickey") . chr(1) . str("ssh-ed25519") . str($blob);
my $signed = 0;
for (1..100) {
    print $c str(chr(13) . str($blob) . str($data) . pack("N", 0));
    $c->flush;
    my ($len, $body) = ("", "");
    read($c, $len, 4) == 4 or last;
    read($c, $body, unpack("N", $len));
    $signed++ if ord($body) == 14;
}
print "signed $signed\n";
"#;

#[test]
fn a_known_hosts_symlink_flipped_to_a_fifo_freezes_no_client() {
    let w = World::new("ed25519");
    let dir = w.path().to_owned();
    let fifo = dir.join("fifo");
    ok(Command::new("mkfifo").arg(&fifo));
    let plain = dir.join("plain_known_hosts");
    std::fs::write(&plain, "").unwrap();
    let link = dir.join("known_hosts_link");
    std::os::unix::fs::symlink(&plain, &link).unwrap();
    // The attacker flips the link between a regular file and the FIFO, so
    // that a check of the path and the open that follows see different
    // files.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, link, dir) = (stop.clone(), link.clone(), dir.clone());
        std::thread::spawn(move || {
            let tmp = dir.join("flip.tmp");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let target = if n.is_multiple_of(2) { &fifo } else { &plain };
                let _ = std::fs::remove_file(&tmp);
                let _ = std::os::unix::fs::symlink(target, &tmp);
                let _ = std::fs::rename(&tmp, &link);
                n += 1;
            }
        })
    };
    let key_blob: String = key_blob(&w.key_line)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Two of them, one per runtime worker thread of the agent.
    let fakes: Vec<Daemon> = (0..2)
        .map(|i| {
            Daemon::spawn(
                &format!("fake ssh {i}"),
                Command::new("bash")
                    .arg("-c")
                    .arg(format!(
                        "exec -a ssh perl -e '{FAKE_SSH}' -- -o UserKnownHostsFile={} host.example",
                        link.display()
                    ))
                    .env("SSH_AUTH_SOCK", &w.agent.sock)
                    .env("KEY_BLOB", &key_blob),
            )
        })
        .collect();
    // Both get all their signatures (the approver approves) ...
    for f in &fakes {
        let line = f.wait_line(WAIT * 2, |l| l.starts_with("signed "));
        assert_eq!(line, "signed 100");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    // ... everyone else is served ...
    let out = run(Command::new("timeout")
        .arg("20")
        .arg("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &w.agent.sock));
    assert!(out.status.success(), "ssh-add -l: {out:?}");
    let signs = w.signer.approvals_of("sign");
    assert_eq!(signs.len(), 200);
    assert!(signs[0].contains("process=ssh -e "), "{}", signs[0]);
    // ... and the agent still stops when told to.
    let mut agent = w.agent;
    let t = Instant::now();
    agent.stop();
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_certificate_request_with_no_signer_connected_says_so() {
    let dir = test_dir();
    let mut agent = Agent::new(dir.path(), "laptop");
    // Nothing listens there, and nothing can start to while it is held.
    let nowhere = ClosedPort::reserve();
    agent.start(&["--signer", &nowhere.addr()]);
    let out = run(&mut agent.cmd(&["cert"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no signer is connected"), "{err}");
}

/// The JSON of a control answer, or `None` for `SSH_AGENT_FAILURE`.
fn control_answer(answer: &[u8]) -> Option<serde_json::Value> {
    if answer.first() != Some(&6) {
        return None;
    }
    let n = u32::from_be_bytes(answer.get(1..5)?.try_into().ok()?) as usize;
    serde_json::from_slice(answer.get(5..5 + n)?).ok()
}

/// Asserts that a control command was refused: a failure, or only an
/// error sentence.
fn assert_refused(answer: &[u8], what: &str) {
    if let Some(v) = control_answer(answer) {
        let fields: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert!(
            fields == ["error"] && v["error"].is_string(),
            "{what} was not refused: {v}"
        );
    }
}

/// What a forwarded agent through an `ssh` older than 8.9 (which never
/// sends session-bind), or a socket relayed to another host, looks like
/// to the agent: a client of the owner's uid that binds no session. Such
/// a client is not the vmux program; it must not start a pairing with
/// its own signer, confirm or refuse the code of a waiting pairing, or
/// get a certificate issued. The vmux program itself still does all of
/// that, and status answers everyone local.
#[test]
fn a_client_that_is_not_vmux_cannot_pair_confirm_or_get_a_certificate() {
    let dir = test_dir();
    let (signer, _) = Signer::serving(dir.path(), "pi", "plain");
    // The user confirms pairings by hand below.
    let mut agent = Agent::unconfirmed(dir.path(), "laptop");
    agent.start(&["--signer", &signer.addr]);
    let line = agent
        .daemon()
        .wait_line(WAIT, |l| pairing_code_of(l).is_some());
    let out = agent.confirm(&pairing_code_of(&line).unwrap());
    assert!(out.status.success(), "{out:?}");
    agent.wait_connected(1);
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("session certificate installed"));
    let serial = agent.status()["certificate"]["serial"].clone();
    assert!(serial.is_u64(), "{serial}");

    // The attacker's client: this test program, on the agent's socket,
    // never binding a session.
    let mut attacker = UnixStream::connect(&agent.sock).unwrap();

    // It asks the agent to pair with the attacker's own signer (which
    // approves anything).
    let mut evil = Signer::init(dir.path(), "evil");
    evil.start();
    let answer = call(
        &mut attacker,
        &control(serde_json::json!({"cmd": "pair-signer", "address": evil.addr})),
    );
    assert_refused(&answer, "pair-signer from a client that is not vmux");
    let status = agent.status();
    assert!(
        status["signers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["address"] != evil.addr.as_str()),
        "the agent went to the attacker's signer: {status}"
    );

    // The user pairs another signer with `vmux agent pair`; its code
    // waits for the user's confirmation. The attacker reads the code and
    // tries to confirm it (or to refuse it) itself.
    let (second, _) = Signer::serving(dir.path(), "second", "second");
    ok(&mut agent.cmd(&["pair", "--signer", &second.addr]));
    let seen = control_answer(&call(
        &mut attacker,
        &control(serde_json::json!({"cmd": "status"})),
    ))
    .expect("status");
    let code = seen["status"]["signers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["address"] == second.addr.as_str())
        .and_then(|g| g["pairing_code"].as_str())
        .unwrap_or_else(|| panic!("no code waiting: {seen}"))
        .to_owned();
    let answer = call(
        &mut attacker,
        &control(serde_json::json!({"cmd": "pair-confirm", "code": code})),
    );
    assert_refused(&answer, "pair-confirm from a client that is not vmux");
    let answer = call(
        &mut attacker,
        &control(serde_json::json!({"cmd": "pair-deny"})),
    );
    assert_refused(&answer, "pair-deny from a client that is not vmux");
    let status = agent.status();
    let waiting = status["signers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["address"] == second.addr.as_str())
        .map(|g| (g["pairing_code"].clone(), g["connected"].clone()));
    assert_eq!(
        waiting,
        Some((serde_json::json!(code), serde_json::json!(false))),
        "the pairing no longer waits for the user: {status}"
    );
    // The user's own confirmation pins it.
    let out = agent.confirm(&code);
    assert!(out.status.success(), "{out:?}");
    agent.wait_connected(2);

    // A certificate, asked for by the attacker: refused, none issued.
    let answer = call(&mut attacker, &control(serde_json::json!({"cmd": "cert"})));
    assert_refused(&answer, "cert from a client that is not vmux");
    assert_eq!(agent.status()["certificate"]["serial"], serial);
    // `vmux agent cert` gets one.
    ok(&mut agent.cmd(&["cert"]));
    let status = agent.status();
    assert_eq!(status["certificate"]["state"], "valid", "{status}");
    assert_ne!(status["certificate"]["serial"], serial, "{status}");
}
