//! Remote signing end to end: real OpenSSH clients log into a real sshd
//! with keys that exist only on the signer.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

fn assert_login(w: &World, extra: &[&str]) {
    let out = w.sshd.ssh(&w.agent, extra, "echo logged-in-as-$(whoami)");
    assert!(
        out.status.success(),
        "ssh failed: {}\nsshd: {}\nagent: {}\nsigner: {}",
        String::from_utf8_lossy(&out.stderr),
        w.sshd.daemon.output(),
        w.agent.daemon().output(),
        w.signer.daemon().output()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("logged-in-as-{}", login_user())
    );
}

/// Writes `text` to `msg` and signs it with `ssh-keygen -Y sign -n file`
/// through `w`'s agent, with its key; the signature is `MSG.sig`.
fn sign_file(w: &World, msg: &std::path::Path, text: &str) {
    ok(&mut ssh_keygen_sign(
        &w.agent,
        &w.key_line,
        "file",
        msg,
        text,
    ));
}

#[test]
fn ssh_logs_in_with_an_ecdsa_key_held_by_the_signer() {
    let w = World::new("ecdsa");
    assert_login(&w, &[]);
    assert!(
        w.sshd.daemon.output().contains("Accepted publickey"),
        "sshd saw a key login"
    );
    let fp = fingerprint(&w.key_line, w.path());
    let signs = w.signer.approvals_of("sign");
    assert_eq!(signs.len(), 1, "one approval for one signature: {signs:?}");
    assert!(signs[0].contains(&format!("fp={fp} ")), "{signs:?}");
    assert!(signs[0].contains("src=laptop "), "{signs:?}");
}

#[test]
fn ssh_logs_in_with_an_ed25519_key() {
    let w = World::new("ed25519");
    assert_login(&w, &[]);
}

#[test]
fn ssh_logs_in_with_an_rsa_key_using_sha256_and_sha512() {
    let w = World::new("rsa");
    for alg in ["rsa-sha2-256", "rsa-sha2-512"] {
        let before = w
            .sshd
            .daemon
            .count(|l| l.contains("Accepted publickey") && l.contains(": RSA "));
        assert_login(&w, &["-o", &format!("PubkeyAcceptedAlgorithms={alg}")]);
        let after = w
            .sshd
            .daemon
            .count(|l| l.contains("Accepted publickey") && l.contains(": RSA "));
        assert_eq!(after, before + 1, "an RSA login with {alg}");
    }
}

#[test]
fn git_scp_rsync_and_ssh_keygen_signatures_work_through_the_agent() {
    let w = World::new("ed25519");
    let d = w.path();
    let user = login_user();
    let ssh = w.sshd.ssh_command_line();
    let port = w.sshd.port;
    let git = |args: &[&str], cwd: &std::path::Path| {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(cwd)
            .env("GIT_SSH_COMMAND", &ssh)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org");
        client_env(&mut c, &w.agent);
        ok(&mut c)
    };
    // git clone and push over ssh to a bare repository.
    let bare = d.join("repo.git");
    ok(Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare));
    let url = format!("ssh://{user}@127.0.0.1:{port}{}", bare.display());
    git(&["clone", "-q", &url, "work"], d);
    let work = d.join("work");
    std::fs::write(work.join("README"), "hello\n").unwrap();
    git(&["add", "README"], &work);
    git(&["commit", "-q", "-m", "first"], &work);
    git(&["push", "-q", "origin", "HEAD:main"], &work);
    let log =
        ok(Command::new("git")
            .arg("--git-dir")
            .arg(&bare)
            .args(["log", "--format=%s", "main"]));
    assert_eq!(log.trim(), "first");

    // scp and rsync.
    let src = d.join("payload.txt");
    std::fs::write(&src, "payload\n").unwrap();
    // Copies `src` to `copy` on the host with `cmd` through the agent.
    let copies = |mut cmd: Command, copy: &str| {
        let to = d.join(copy);
        cmd.arg(&src)
            .arg(format!("{user}@127.0.0.1:{}", to.display()));
        client_env(&mut cmd, &w.agent);
        ok(&mut cmd);
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "payload\n", "{copy}");
    };
    let mut scp = Command::new("scp");
    scp.args(w.sshd.ssh_opts()).arg("-P").arg(port.to_string());
    copies(scp, "scp-copy.txt");
    let mut rsync = Command::new("rsync");
    rsync.arg("-e").arg(format!("{ssh} -p {port}"));
    copies(rsync, "rsync-copy.txt");

    // ssh-keygen -Y sign with the agent, then -Y verify.
    let msg = d.join("message.txt");
    sign_file(&w, &msg, "signed text\n");
    let allowed = d.join("allowed_signers");
    std::fs::write(&allowed, format!("tester@example.org {}\n", w.key_line)).unwrap();
    let verify = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh-keygen -Y verify -f {} -I tester@example.org -n file -s {}.sig < {}",
            allowed.display(),
            msg.display(),
            msg.display()
        ))
        .output()
        .unwrap();
    assert_success(&verify, "ssh-keygen -Y verify");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("Good \"file\" signature"));
}

#[test]
fn ssh_add_lists_the_signers_keys_even_when_the_signer_is_gone() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let lines: Vec<String> = ["ecdsa", "ed25519"]
        .iter()
        .map(|k| signer.keygen(k, &format!("key-{k}")))
        .collect();
    signer.start();
    let mut agent = Agent::paired_with(dir.path(), "laptop", &signer);

    let check = |agent: &Agent| {
        let l = agent.ssh_add(&["-l"]);
        assert_success(&l, "ssh-add -l");
        let listed = String::from_utf8_lossy(&l.stdout).into_owned();
        for line in &lines {
            let fp = fingerprint(line, dir.path());
            let comment = line.split_whitespace().nth(2).unwrap();
            assert!(
                listed
                    .lines()
                    .any(|x| x.contains(&fp) && x.contains(comment)),
                "{fp} {comment} in {listed}"
            );
            // The same line ssh-keygen -l prints for the key, bits and type included.
            let f = dir.path().join("k.pub");
            std::fs::write(&f, format!("{line}\n")).unwrap();
            let expected = ok(Command::new("ssh-keygen").arg("-l").arg("-f").arg(&f));
            assert!(
                listed.lines().any(|x| x.trim() == expected.trim()),
                "{expected} in {listed}"
            );
        }
        let big_l = String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned();
        for line in &lines {
            assert!(
                big_l.lines().any(|x| x.trim() == line.trim()),
                "{line} in {big_l}"
            );
        }
    };
    check(&agent);
    // `vmux signer keys` prints like ssh-add.
    let keys = ok(&mut signer.cmd(&["keys", "-L"]));
    for line in &lines {
        assert!(keys.lines().any(|x| x.trim() == line.trim()));
    }
    // Stop the signer, restart the agent without it: the cache still lists.
    signer.kill();
    agent.stop();
    agent.start(&[]);
    check(&agent);
}

#[test]
fn a_denied_signature_fails_and_the_approver_saw_key_source_and_kind() {
    let w = World::new("ecdsa");
    w.signer.deny("sign", true);
    let out = w.sshd.ssh(&w.agent, &[], "true");
    assert!(
        !out.status.success(),
        "login must fail when the approver denies"
    );
    let signs = w.signer.approvals_of("sign");
    assert_eq!(signs.len(), 1, "{signs:?}");
    let fp = fingerprint(&w.key_line, w.path());
    assert!(
        signs[0].contains(&format!("fp={fp} ")) && signs[0].contains("src=laptop "),
        "{signs:?}"
    );
    assert!(
        w.agent.daemon().output().contains("userDenied"),
        "the agent logs the code"
    );
    // Approving again works, and each signature asks exactly once.
    w.signer.deny("sign", false);
    assert_login(&w, &[]);
    assert_eq!(w.signer.approvals_of("sign").len(), 2);
}

#[test]
fn with_the_signer_down_signing_fails_within_the_bound_and_the_agent_lives() {
    let mut w = World::with("ed25519", &["--sign-timeout", "3"], &[]);
    w.signer.kill();
    let t = Instant::now();
    let out = w.sshd.ssh(&w.agent, &[], "true");
    let took = t.elapsed();
    assert!(!out.status.success());
    assert!(
        took < Duration::from_secs(20),
        "failed after {took:?}, bound is 3 s per signature"
    );
    println!("login failed after {took:?} with the signer down");
    let l = w.agent.ssh_add(&["-l"]);
    assert!(l.status.success(), "the agent still answers");
}

#[test]
fn an_unpaired_agent_is_refused_when_pairing_is_denied() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    signer.keygen("ed25519", "k");
    signer.deny("pair", true);
    signer.start();
    let mut agent = Agent::new(dir.path(), "intruder");
    agent.start(&["--signer", &signer.addr]);
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("refused") && l.contains("userDenied"));
    let pairs = signer.approvals_of("pair");
    assert!(
        !pairs.is_empty() && pairs[0].contains("src=intruder ") && pairs[0].contains("code="),
        "{pairs:?}"
    );
    let code = agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("pairing code"));
    let shown = code
        .split_whitespace()
        .nth(4)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    assert!(
        pairs[0].contains(&format!("code={shown} ")),
        "both sides show the same code: {shown} vs {pairs:?}"
    );
    let l = agent.ssh_add(&["-l"]);
    assert!(
        String::from_utf8_lossy(&l.stdout).contains("no identities"),
        "no keys for an unpaired agent"
    );
}

#[test]
fn an_agent_pinned_to_one_signer_refuses_another_on_the_same_address() {
    let dir = test_dir();
    let (mut first, _) = Signer::serving(dir.path(), "first", "k1");
    let addr = first.addr.clone();
    let agent = Agent::paired_with(dir.path(), "laptop", &first);
    first.kill();
    let mut impostor = Signer::init(dir.path(), "impostor");
    impostor.keygen("ed25519", "evil");
    impostor.start_on(&addr, &[]);
    agent.daemon().wait_line(WAIT, |l| l.contains("pinned"));
    assert!(
        impostor.approvals_of("pair").is_empty(),
        "the agent did not even ask to pair"
    );
    let listed = String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned();
    assert!(
        !listed.contains("evil"),
        "the impostor's keys are not listed"
    );
}

/// Sends raw bytes and returns whatever comes back before the agent
/// closes or goes quiet.
fn raw(sock: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn the_agent_survives_garbage_oversized_lengths_and_half_frames() {
    let w = World::new("ed25519");
    let sock = &w.agent.sock;
    // An unknown message type: SSH_AGENT_FAILURE, connection kept.
    assert_eq!(raw(sock, &[0, 0, 0, 1, 99]), [0, 0, 0, 1, 5]);
    // Two messages on one connection: both answered.
    assert_eq!(
        raw(sock, &[0, 0, 0, 1, 99, 0, 0, 0, 1, 17]),
        [0, 0, 0, 1, 5, 0, 0, 0, 1, 5]
    );
    // A 4 GiB length: the connection is closed, nothing answered.
    assert!(raw(sock, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).is_empty());
    // Garbage, and a half-written frame.
    let _ = raw(sock, b"GET / HTTP/1.1\r\n\r\n");
    let _ = raw(sock, &[0, 0, 1, 0, 13, 0, 0]);
    let mut junk = [0u8; 4096];
    for (i, b) in junk.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let _ = raw(sock, &junk);
    // ssh-add -d/-D/-x fail as usual; the agent keeps serving.
    assert!(!w.agent.ssh_add(&["-D"]).status.success());
    let l = w.agent.ssh_add(&["-l"]);
    assert_success(&l, "still serving");
    assert_login(&w, &[]);
}

#[test]
fn the_socket_is_0600_and_other_users_are_refused() {
    let w = World::new("ed25519");
    let mode = std::fs::metadata(&w.agent.sock)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Open the socket wide, so only the peer-credential check stands in
    // the way, and connect as nobody.
    std::fs::set_permissions(&w.agent.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&w.agent.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    use std::os::unix::process::CommandExt;
    let out = Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &w.agent.sock)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "nobody must be refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    w.agent.daemon().wait_line(WAIT, |l| {
        l.contains("refused a connection from another user")
    });
    assert!(
        w.agent.ssh_add(&["-l"]).status.success(),
        "the owner still gets in"
    );
}

#[test]
fn no_key_material_data_or_signature_reaches_the_logs() {
    let w = World::traced("ed25519");
    assert_login(&w, &[]);
    // A signature whose bytes we can look for.
    let d = w.path();
    let msg = d.join("m.txt");
    sign_file(&w, &msg, "needle-message-for-log-test\n");
    let sig = std::fs::read_to_string(format!("{}.sig", msg.display())).unwrap();
    let sig_b64: String = sig.lines().filter(|l| !l.starts_with("-----")).collect();
    let logs = format!(
        "{}\n{}",
        w.agent.daemon().output(),
        w.signer.daemon().output()
    );
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the run logged at trace level"
    );
    // The private key file's body, in pieces.
    let keyfile = std::fs::read_dir(w.signer.home.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let pem = std::fs::read_to_string(keyfile).unwrap();
    for line in pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
    {
        assert!(!logs.contains(line), "private key material in the logs");
    }
    for chunk in sig_b64.as_bytes().chunks(24).filter(|c| c.len() == 24) {
        assert!(
            !logs.contains(std::str::from_utf8(chunk).unwrap()),
            "signature bytes in the logs"
        );
    }
    assert!(!logs.contains("needle-message"), "data to sign in the logs");
}
