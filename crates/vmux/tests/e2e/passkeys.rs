//! Keys that live in the phone: each enrolled phone's passkey is an
//! `sk-ecdsa-sha2-nistp256@openssh.com` key, signed on that phone (a card
//! whose Approve is the passkey assertion over the exact data), in a real
//! browser (headless Chromium with a virtual authenticator) with real
//! OpenSSH 9.2 (`ssh-add`, `ssh-keygen -Y`, `git`, `ssh`, `sshd`) and
//! asyncssh as the client that accepts WebAuthn signatures.
//!
//! The signer approves everything else on its own (`--approve
//! allow-all`), so every card on the phone is a passkey request: a request
//! for a phone's key is decided on that phone whatever `--approve` says.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::phone::*;
use crate::support::*;

const NO_AUTO_CERT: &str = "[certificates]\nauto_issue = false\n";
const SK: &str = "sk-ecdsa-sha2-nistp256@openssh.com";

/// A signer serving the phone page that approves all but passkey
/// requests by itself, one enrolled phone, and an agent paired with it
/// (started after the enrolment, so its key list has the passkey).
fn world_with_phone(dir: &Path) -> (PhoneWorld, Phone, Agent) {
    let world = PhoneWorld::start_approving(dir, "allow-all", NO_AUTO_CERT, &[]);
    let phone = world.enrolled_phone("pixel");
    let mut agent = Agent::new(dir, "laptop");
    agent.start_with(&world.signer, &[]);
    (world, phone, agent)
}

/// The passkey's line in `vmux signer keys -L`, if listed.
fn passkey_line(world: &PhoneWorld) -> Option<String> {
    world
        .signer
        .public_lines()
        .lines()
        .find(|l| l.starts_with(SK))
        .map(|l| l.trim().to_owned())
}

/// `ssh-add -L` through the agent.
fn agent_lines(agent: &Agent) -> String {
    String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned()
}

/// Starts `cmd` with the agent's socket, bounded by `timeout`.
fn spawn_bounded(
    cmd: &[&str],
    agent: &Agent,
    cwd: &Path,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut c = Command::new("timeout");
    c.arg("90")
        .args(cmd)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    client_env(&mut c, agent);
    c.envs(env.iter().copied());
    c.spawn().expect("spawn")
}

/// A directory `work` under `dir` holding the passkey's public key
/// `line` as `passkey.pub` and `message` as `message`, for
/// [`spawn_sign_message`].
fn passkey_work(dir: &Path, line: &str, message: &str) -> std::path::PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("passkey.pub"), format!("{line}\n")).unwrap();
    std::fs::write(work.join("message"), message).unwrap();
    work
}

/// `ssh-keygen -Y sign -n NAMESPACE -f passkey.pub message` in `work`
/// through `agent`, started: it waits for the phone.
fn spawn_sign_message(agent: &Agent, work: &Path, namespace: &str) -> std::process::Child {
    let sign = ["ssh-keygen", "-Y", "sign", "-n", namespace];
    let cmd = [&sign[..], &["-f", "passkey.pub", "message"]].concat();
    spawn_bounded(&cmd, agent, work, &[])
}

#[test]
fn enrolment_adds_an_sk_ecdsa_key_that_ssh_add_lists_and_removing_the_phone_takes_it_away() {
    let dir = test_dir();
    let (world, phone, agent) = world_with_phone(dir.path());

    let line = passkey_line(&world).expect("vmux signer keys -L lists the passkey");
    assert!(
        line.ends_with(" pixel"),
        "comment = the phone's name: {line}"
    );
    let listed = ok(&mut world.signer.cmd(&["keys"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains("pixel") && l.contains("(ECDSA-SK)") && l.contains("[passkey]")),
        "{listed}"
    );
    // Its application is the page's relying-party id.
    let key = ssh_key::PublicKey::from_openssh(&line).expect("an OpenSSH key line");
    match key.key_data() {
        ssh_key::public::KeyData::SkEcdsaSha2NistP256(sk) => {
            assert_eq!(sk.application(), RP_HOST)
        }
        other => panic!("not sk-ecdsa: {other:?}"),
    }

    // Through the agent: ssh-add -L and the status.
    let through = agent_lines(&agent);
    assert!(
        through.lines().any(|l| l.trim() == line),
        "ssh-add -L lists the passkey line {line}:\n{through}"
    );
    let status = agent.status();
    assert!(
        status["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["provider_kind"] == "passkey" && k["comment"] == "pixel"),
        "{status}"
    );
    let text = ok(&mut agent.cmd(&["status"]));
    assert!(
        text.contains("Passkey keys: passkey keys are offered to ssh-keygen"),
        "{text}"
    );

    // Removing the phone takes its key out of the signer's list at once,
    // and out of the agent's on its next key-list refresh.
    ok(&mut world.signer.cmd(&["phone", "remove", "pixel"]));
    assert_eq!(passkey_line(&world), None);
    // The agent still lists the key until its next key-list refresh; the
    // signer refuses it at once (no card, no phone), and that refusal
    // makes the agent refresh the list.
    let refreshed = agent.daemon().count(|l| l.contains("key list refreshed"));
    assert!(agent_lines(&agent).contains(SK));
    let work = passkey_work(dir.path(), &line, "x\n");
    let started = std::time::Instant::now();
    let sign = spawn_sign_message(&agent, &work, "file");
    let out = finish(sign, Duration::from_secs(90));
    assert!(!out.status.success(), "a removed phone's key signs nothing");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused at once: {:?}",
        started.elapsed()
    );
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("sign failed") && l.contains("keyNotFound")
    });
    agent
        .daemon()
        .wait_nth(refreshed + 1, WAIT, |l| l.contains("key list refreshed"));
    assert_eq!(phone.cards(), 0);
    let after = agent_lines(&agent);
    assert!(
        !after.contains(SK),
        "the removed phone's key is gone: {after}"
    );
    assert!(
        after.contains("ssh-ed25519"),
        "the other key stays: {after}"
    );
}

#[test]
fn ssh_keygen_signs_through_the_agent_on_the_phone_and_git_verifies_a_commit_signed_so() {
    let dir = test_dir();
    let (world, phone, agent) = world_with_phone(dir.path());
    let line = passkey_line(&world).expect("passkey line");
    let work = passkey_work(dir.path(), &line, "signed by the phone\n");
    let allowed = work.join("allowed_signers");
    std::fs::write(&allowed, format!("me@example.com {line}\n")).unwrap();

    // ssh-keygen -Y sign: one card on the phone, naming the namespace and
    // the passkey; Approve makes the signature.
    let sign = spawn_sign_message(&agent, &work, "git");
    let card = phone.card_text("sign");
    assert!(card.contains("passkey"), "{card}");
    assert!(card.contains("git"), "the card names the namespace: {card}");
    phone.tap("sign", "Approve");
    let out = finish(sign, Duration::from_secs(90));
    assert_success(&out, "ssh-keygen -Y sign through the agent");
    phone.wait_cards(0);
    // The message on stdin (the harness gives commands none).
    let verify = run(Command::new("sh")
        .arg("-c")
        .arg("ssh-keygen -Y verify -n git -I me@example.com -f allowed_signers -s message.sig < message")
        .current_dir(&work));
    assert_success(&verify, "ssh-keygen -Y verify");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("Good \"git\" signature"));

    // A git commit signed the same way verifies with git verify-commit.
    let repo = work.join("repo");
    let git_home = work.join("git-home");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&git_home).unwrap();
    let git_env = [
        ("HOME", git_home.to_str().unwrap()),
        ("GIT_CONFIG_NOSYSTEM", "1"),
    ];
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.args(args).current_dir(&repo);
        client_env(&mut c, &agent);
        c.envs(git_env);
        ok(&mut c)
    };
    git(&["init", "-q"]);
    git(&["config", "user.name", "Me"]);
    git(&["config", "user.email", "me@example.com"]);
    git(&["config", "gpg.format", "ssh"]);
    git(&["config", "user.signingkey", &format!("key::{line}")]);
    git(&[
        "config",
        "gpg.ssh.allowedSignersFile",
        allowed.to_str().unwrap(),
    ]);
    std::fs::write(repo.join("file"), "x\n").unwrap();
    git(&["add", "file"]);
    let commit = spawn_bounded(
        &["git", "commit", "-q", "-S", "-m", "signed on the phone"],
        &agent,
        &repo,
        &git_env,
    );
    phone.tap("sign", "Approve");
    let out = finish(commit, Duration::from_secs(90));
    assert_success(&out, "git commit -S with the passkey");
    let mut c = Command::new("git");
    c.args(["verify-commit", "HEAD"])
        .current_dir(&repo)
        .envs(git_env);
    let verified = run(&mut c);
    assert_success(&verified, "git verify-commit");
    assert!(
        String::from_utf8_lossy(&verified.stderr).contains("Good \"git\" signature"),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // The audit log says the phone decided, and the agent refused no
    // signature.
    let audit = world.signer.audit();
    assert_eq!(
        lines_with(&audit, &["sign", "approved", "on phone pixel"]),
        2,
        "{audit}"
    );
    assert_eq!(
        agent.daemon().count(
            |l| l.contains("signature was refused") || l.contains("passkey signature refused")
        ),
        0,
        "{}",
        agent.daemon().output()
    );
}

#[test]
fn openssh_9_2_ssh_never_asks_the_phone_while_asyncssh_logs_in_with_the_passkey() {
    let dir = test_dir();
    let (world, phone, agent) = world_with_phone(dir.path());
    let line = passkey_line(&world).expect("passkey line");

    // OpenSSH 9.2's ssh: not offered the passkey key, so it logs in with
    // the signer's other key and the phone never shows a card.
    let version = run(Command::new("ssh").arg("-V"));
    let version = String::from_utf8_lossy(&version.stderr).into_owned();
    assert!(
        version.starts_with("OpenSSH_9."),
        "this test expects OpenSSH 9.x: {version}"
    );
    let both = Sshd::start(dir.path(), &world.signer.public_lines(), &[]);
    for _ in 0..2 {
        both.assert_login(&agent, "ssh 9.2 with the software key");
    }
    assert_eq!(phone.cards(), 0);
    assert_eq!(
        both.daemon
            .count(|l| l.contains("Accepted publickey") && l.contains("ED25519")),
        2,
        "{}",
        both.daemon.output()
    );
    assert_eq!(both.daemon.count(|l| l.contains("ECDSA-SK")), 0);
    let audit = world.signer.audit();
    assert!(!audit.contains("on phone"), "{audit}");
    let status = ok(&mut agent.cmd(&["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.contains("/ssh (OpenSSH_9.") && l.contains("passkey keys not offered")),
        "{status}"
    );
    let doctor = run(agent.cmd(&["doctor"]).env("SSH_AUTH_SOCK", &agent.sock));
    let doctor = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        doctor.contains("not to OpenSSH ssh before 10.3")
            && doctor.contains("`ssh -V` here: OpenSSH_9.")
            && doctor.contains("which cannot"),
        "{doctor}"
    );
    // Even asked by name (ssh -i with the public key, IdentitiesOnly), ssh
    // gets no passkey signature and the phone no card.
    let pubfile = dir.path().join("passkey.pub");
    std::fs::write(&pubfile, format!("{line}\n")).unwrap();
    let only = Sshd::start(dir.path(), &format!("{line}\n"), &[]);
    let out = only.ssh(
        &agent,
        &["-o", "IdentitiesOnly=yes", "-i", pubfile.to_str().unwrap()],
        "true",
    );
    assert!(!out.status.success());
    assert_eq!(phone.cards(), 0);
    assert_eq!(only.accepted(), 0);

    // A client whose executable is named ssh but whose file names no
    // OpenSSH version (here a copy of Python called `ssh`, speaking the
    // agent protocol itself) is not listed the passkey key, and a sign
    // request naming it is refused at once, with no card.
    let fake_ssh = dir.path().join("fake-ssh");
    std::fs::create_dir_all(&fake_ssh).unwrap();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    std::fs::copy(&python, fake_ssh.join("ssh")).unwrap();
    let raw_agent = r#"
import base64, socket, struct, sys
def msg(s, body):
    s.sendall(struct.pack('>I', len(body)) + body)
    n = struct.unpack('>I', s.recv(4, socket.MSG_WAITALL))[0]
    return s.recv(n, socket.MSG_WAITALL)
def string(b):
    return struct.pack('>I', len(b)) + b
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
ids = msg(s, bytes([11]))
blob = base64.b64decode(sys.argv[2])
print('listed' if blob in ids else 'not-listed')
data = string(b'\0' * 32) + bytes([50]) + string(b'me') + string(b'ssh-connection') + string(b'publickey')
r = msg(s, bytes([13]) + string(blob) + string(data) + struct.pack('>I', 0))
print('signed' if r[0] == 14 else 'refused')
"#;
    let blob_b64 = line.split_whitespace().nth(1).unwrap();
    let raw = run(Command::new(fake_ssh.join("ssh"))
        .args(["-c", raw_agent])
        .arg(&agent.sock)
        .arg(blob_b64));
    assert_success(&raw, "the raw agent client named ssh");
    assert_eq!(
        String::from_utf8_lossy(&raw.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["not-listed", "refused"]
    );
    agent.daemon().wait_line(WAIT, |l| {
        l.contains("sign failed") && l.contains("refused by OpenSSH ssh before 10.3")
    });
    assert_eq!(phone.cards(), 0);

    // asyncssh accepts WebAuthn signatures: it logs in with the passkey,
    // approved on the phone, into an sshd that trusts only that line.
    let script = r#"
import asyncio, sys, asyncssh
async def main(port, user, known_hosts, sock):
    agent = await asyncssh.connect_agent(sock)
    keys = [k for k in await agent.get_keys() if k.algorithm.startswith(b'sk-')]
    assert keys, 'the agent offers no passkey key'
    async with asyncssh.connect('127.0.0.1', port=int(port), username=user,
                                known_hosts=known_hosts, client_keys=keys,
                                agent_path=None, preferred_auth='publickey') as c:
        r = await c.run('echo logged-in-with-the-passkey', check=True)
        print(r.stdout.strip())
    agent.close()
asyncio.run(main(*sys.argv[1:]))
"#;
    let login = spawn_bounded(
        &[
            "/usr/bin/python3",
            "-W",
            "ignore",
            "-c",
            script,
            &only.port.to_string(),
            &login_user(),
            only.known_hosts.to_str().unwrap(),
            agent.sock.to_str().unwrap(),
        ],
        &agent,
        dir.path(),
        &[],
    );
    let card = phone.card_text("sign");
    assert!(card.contains("passkey"), "{card}");
    assert!(card.contains(&login_user()), "{card}");
    phone.tap("sign", "Approve");
    let out = finish(login, Duration::from_secs(90));
    assert_success(&out, "asyncssh login with the passkey");
    assert!(String::from_utf8_lossy(&out.stdout).contains("logged-in-with-the-passkey"));
    assert_eq!(
        only.daemon
            .count(|l| l.contains("Accepted publickey") && l.contains("ECDSA-SK")),
        1,
        "{}",
        only.daemon.output()
    );
}

/// A client of the agent, in C: `ssh SOCKET` asks for identities and
/// writes the answer's body to stdout; `ssh SOCKET REPLACEMENT` first
/// renames REPLACEMENT over its own executable's path. Run as `ssh -V` it
/// leaves a mark (the attack: code the client chose, run by whoever runs
/// it) and says it is 10.5, a string its file does not hold as such.
const C_CLIENT: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

static int all(int fd, unsigned char *b, size_t n, int rd) {
    while (n) {
        ssize_t k = rd ? read(fd, b, n) : write(fd, b, n);
        if (k <= 0) return -1;
        b += k; n -= (size_t)k;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-V") == 0) {
        FILE *f = fopen(MARKER, "a");
        if (f) { fputs("run\n", f); fclose(f); }
        fprintf(stderr, "OpenSSH_%d.%dp1, OpenSSL 3.0\n", 10, 5);
        return 0;
    }
    if (argc < 2) return 2;
    if (argc > 2) {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) return 3;
        self[n] = 0;
        if (rename(argv[2], self) != 0) return 4;
    }
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) return 5;
    unsigned char req[5] = {0, 0, 0, 1, 11};
    if (all(s, req, 5, 0)) return 6;
    unsigned char len[4];
    if (all(s, len, 4, 1)) return 7;
    size_t n = ((size_t)len[0] << 24) | ((size_t)len[1] << 16) | ((size_t)len[2] << 8) | len[3];
    unsigned char *body = malloc(n ? n : 1);
    if (!body || all(s, body, n, 1)) return 8;
    fwrite(body, 1, n, stdout);
    return 0;
}
"#;

/// The agent never runs a client's executable to learn its version (a
/// program in a sandbox that reaches the socket would have its own `ssh`
/// run outside it): it reads the version string from the file the
/// process runs. A client named `ssh` whose `-V` would leave a mark asks
/// for identities; no mark, and since its file names no version it is
/// not offered the passkey. Copies carrying `OpenSSH_10.5p1` are offered
/// it, `OpenSSH_10.2p1` not, one past 16 MiB is not read; and a client
/// that renames a 10.5 file over its own path after starting is judged
/// by the file it runs.
#[test]
fn a_client_named_ssh_is_never_run_its_version_is_read_from_the_file_it_runs() {
    use base64::Engine;
    use std::io::Write;
    let dir = test_dir();
    let (world, phone, agent) = world_with_phone(dir.path());
    let line = passkey_line(&world).expect("passkey line");
    let blob = base64::engine::general_purpose::STANDARD
        .decode(line.split_whitespace().nth(1).unwrap())
        .unwrap();

    let marker = dir.path().join("ran");
    let source = dir.path().join("client.c");
    std::fs::write(&source, C_CLIENT).unwrap();
    let built = dir.path().join("client");
    ok(Command::new("cc")
        .arg("-O1")
        .arg(format!("-DMARKER={:?}", marker.display().to_string()))
        .arg("-o")
        .arg(&built)
        .arg(&source));
    // `name/ssh`: a copy of the client with `extra` appended (past
    // `at` bytes when given: a sparse file).
    let copy = |name: &str, extra: &[u8], at: Option<u64>| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let ssh = d.join("ssh");
        std::fs::copy(&built, &ssh).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&ssh).unwrap();
        if let Some(at) = at {
            f.set_len(at).unwrap();
        }
        f.write_all(extra).unwrap();
        ssh
    };
    let listed = |ssh: &Path, extra: &[&Path]| -> bool {
        let out = run(Command::new(ssh).arg(&agent.sock).args(extra));
        assert_success(&out, &format!("{}", ssh.display()));
        assert_eq!(out.stdout.first(), Some(&12), "an identities answer");
        out.stdout.windows(blob.len()).any(|w| w == blob)
    };

    let plain = copy("plain", b"", None);
    let offered = listed(&plain, &[]);
    assert!(
        !marker.exists(),
        "the agent ran the client's executable ({})",
        plain.display()
    );
    assert!(!offered, "no version in its file: no passkey");
    let planted = copy("planted", b"\0OpenSSH_10.5p1\0", None);
    assert!(
        listed(&planted, &[]),
        "OpenSSH_10.5p1 in its file: the passkey"
    );
    let old = copy("old", b"\0OpenSSH_10.2p1\0", None);
    assert!(!listed(&old, &[]), "OpenSSH_10.2p1: no passkey");
    let huge = copy("huge", b"\0OpenSSH_10.5p1\0", Some(17 << 20));
    assert!(!listed(&huge, &[]), "past 16 MiB: not read, no passkey");
    // It starts as the plain client, then puts a 10.5 file in its place.
    let swapped = copy("swapped", b"", None);
    let replacement = dir.path().join("swapped").join("replacement");
    std::fs::copy(&planted, &replacement).unwrap();
    assert!(
        !listed(&swapped, &[&replacement]),
        "judged by the file it runs"
    );
    assert!(!marker.exists(), "the agent ran a client's executable");

    let status = ok(&mut agent.cmd(&["status"]));
    let shown = |name: &str, says: &str| {
        assert!(
            status
                .lines()
                .any(|l| l.contains(&format!("/{name}/ssh")) && l.contains(says)),
            "{name}: {says}\n{status}"
        );
    };
    shown(
        "plain",
        "(unknown (no OpenSSH version in the file)): passkey keys not offered",
    );
    shown("planted", "ssh: passkey keys offered");
    shown("old", "ssh (OpenSSH_10.2p1): passkey keys not offered");
    shown(
        "huge",
        "(unknown (the file is larger than 16 MiB; not read)): passkey keys not offered",
    );
    shown(
        "swapped",
        "(unknown (no OpenSSH version in the file)): passkey keys not offered",
    );
    assert_eq!(phone.cards(), 0);
}

#[test]
fn a_passkey_request_is_that_phones_alone_denied_there_it_fails_and_other_data_is_refused_unasked()
{
    let dir = test_dir();
    let (world, pixel, agent) = world_with_phone(dir.path());
    let other = world.enrolled_phone("iphone");
    let line = passkey_line(&world).expect("passkey line");
    let work = passkey_work(dir.path(), &line, "x\n");
    let sign = spawn_sign_message(&agent, &work, "file");
    pixel.card_text("sign");
    // The other phone's page is signed in and open, and shows nothing.
    other.wait_signed_in();
    assert_eq!(other.cards(), 0);
    pixel.tap("sign", "Deny");
    let out = finish(sign, Duration::from_secs(90));
    assert!(!out.status.success(), "denied on the phone, no signature");
    assert!(!work.join("message.sig").exists());
    let audit = world.signer.audit();
    assert!(
        lines_with(&audit, &["sign", "refused", "on phone pixel"]) > 0,
        "{audit}"
    );

    // Data that is neither a login nor an ssh-keygen signature (here 32
    // bytes, the size of the page's own challenges) is refused without a
    // card.
    let script = r#"
import asyncio, sys, asyncssh
async def main(sock):
    agent = await asyncssh.connect_agent(sock)
    keys = [k for k in await agent.get_keys() if k.algorithm.startswith(b'sk-')]
    assert keys, 'the agent offers no passkey key'
    try:
        await keys[0].sign_async(bytes(32))
        print('signed')
    except Exception as e:
        print('refused')
    agent.close()
asyncio.run(main(sys.argv[1]))
"#;
    let raw = run(Command::new("/usr/bin/python3")
        .args(["-W", "ignore", "-c", script])
        .arg(&agent.sock));
    assert_success(&raw, "asyncssh asking the agent directly");
    assert_eq!(String::from_utf8_lossy(&raw.stdout).trim(), "refused");
    assert_eq!(pixel.cards(), 0);
    world.signer.daemon().wait_line(WAIT, |l| {
        l.contains("a passkey key signs only SSH logins and ssh-keygen signatures")
    });
}

/// The phone as CA: `ca = "phone:pixel"` makes the session certificate a
/// card on that phone whose Approve is the passkey's signature over the
/// certificate; one approval, then twenty `ssh` 9.2 logins into an sshd
/// that trusts only that CA line (with the `CASignatureAlgorithms` line
/// `vmux signer ca` prints) and no further card; removing the phone takes
/// its CA line out and no certificate is issued with it.
#[test]
fn a_phone_as_ca_signs_the_certificate_once_for_twenty_logins_and_a_removed_phone_no_longer() {
    let dir = test_dir();
    let world = PhoneWorld::start_approving(dir.path(), "allow-all", "ca = \"phone:pixel\"\n", &[]);
    let phone = world.enrolled_phone("pixel");
    let passkey = passkey_line(&world).expect("passkey line");

    // `vmux signer ca`: the passkey's line on stdout, the sshd line on stderr.
    let ca = run(&mut world.signer.cmd(&["ca"]));
    assert_success(&ca, "vmux signer ca");
    let ca_stdout = String::from_utf8_lossy(&ca.stdout).into_owned();
    let ca_stderr = String::from_utf8_lossy(&ca.stderr).into_owned();
    let fields = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(ca_stdout.lines().count(), 1, "{ca_stdout}");
    assert_eq!(fields(&ca_stdout), fields(&passkey));
    let sshd_line = ca_stderr
        .lines()
        .find(|l| l.starts_with("CASignatureAlgorithms "))
        .unwrap_or_else(|| panic!("no sshd line: {ca_stderr}"))
        .to_owned();
    assert_eq!(
        sshd_line,
        "CASignatureAlgorithms +webauthn-sk-ecdsa-sha2-nistp256@openssh.com"
    );

    // The agent asks for its certificate on connecting: a card on the
    // phone, approved once.
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start_with(&world.signer, &[]);
    let card = phone.card_text("certificate");
    assert!(card.contains("passkey"), "{card}");
    assert!(card.contains("a certificate for 8 h"), "{card}");
    assert!(card.contains(&login_user()), "{card}");
    phone.tap("certificate", "Approve");
    agent.wait_certificate_installed(1);
    phone.wait_cards(0);

    let cert = agent_lines(&agent)
        .lines()
        .find(|l| l.ends_with(" vmux-session-cert"))
        .map(str::to_owned)
        .expect("the session certificate is listed");
    let cert_file = dir.path().join("session-cert.pub");
    std::fs::write(&cert_file, format!("{cert}\n")).unwrap();
    let shown = run(Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert_file));
    assert_success(&shown, "ssh-keygen -L");
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains("Signing CA: ECDSA-SK ")
            && shown.contains("webauthn-sk-ecdsa-sha2-nistp256@openssh.com"),
        "{shown}"
    );
    assert!(shown.contains(&login_user()), "{shown}");

    let ca_file = dir.path().join("phone-ca.pub");
    std::fs::write(&ca_file, &ca_stdout).unwrap();
    let trust = format!("TrustedUserCAKeys {}", ca_file.display());
    let sshd = Sshd::start(dir.path(), "", &[&trust, &sshd_line]);
    for i in 0..20 {
        sshd.assert_login(
            &agent,
            &format!("login {i} with the phone-signed certificate"),
        );
    }
    assert_eq!(
        sshd.daemon
            .count(|l| l.contains("Accepted publickey") && l.contains("ECDSA-CERT")),
        20,
        "{}",
        sshd.daemon.output()
    );
    assert_eq!(phone.cards(), 0, "no card after the one approval");
    // Without the CASignatureAlgorithms line, OpenSSH 9.2's sshd refuses
    // the certificate: the line is needed.
    let strict = Sshd::start(dir.path(), "", &[&trust]);
    assert!(!strict.ssh(&agent, &[], "true").status.success());
    assert_eq!(strict.accepted(), 0);

    // Lost phone: removed, its CA line is no longer printed and no
    // certificate is issued with it (no card either).
    ok(&mut world.signer.cmd(&["phone", "remove", "pixel"]));
    let ca = run(&mut world.signer.cmd(&["ca"]));
    assert!(!ca.status.success());
    assert!(
        ca.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ca.stdout)
    );
    assert!(
        String::from_utf8_lossy(&ca.stderr).contains("pixel is not enrolled"),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    let again = run(&mut agent.cmd(&["cert"]));
    assert!(!again.status.success());
    world
        .signer
        .daemon()
        .wait_line(WAIT, |l| l.contains("not enrolled (removed?), so not a CA"));
}

/// `vmux signer run --ca phone:pixel` with no CA in signer.toml: `vmux
/// signer ca` prints the passkey line the running signer signs
/// certificates with (and the sshd line), not the software CA's, and says
/// it asked the running signer; once it stops, signer.toml's CA (the
/// software one), and says that.
#[test]
fn signer_ca_prints_the_phone_ca_a_signer_runs_with_by_its_flag() {
    let dir = test_dir();
    let mut world = PhoneWorld::start_approving(
        dir.path(),
        "allow-all",
        NO_AUTO_CERT,
        &["--ca", "phone:pixel"],
    );
    let _pixel = world.enrolled_phone("pixel");
    let passkey = passkey_line(&world).expect("passkey line");
    let fields = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");

    let out = run(&mut world.signer.cmd(&["ca"]));
    assert_success(&out, "vmux signer ca");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(fields(&stdout), fields(&passkey));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "# the CA the running signer uses (phone:pixel)\n\
         # sshd before OpenSSH 10.3 also needs, in sshd_config:\n\
         CASignatureAlgorithms +webauthn-sk-ecdsa-sha2-nistp256@openssh.com\n"
    );

    world.signer.kill();
    let out = run(&mut world.signer.cmd(&["ca"]));
    assert_success(&out, "vmux signer ca with no signer running");
    let software = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(software.lines().count(), 1, "{software}");
    assert!(!software.starts_with(SK), "{software}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "# no signer runs here: the CA signer.toml names (software)\n"
    );
}

/// The fingerprint (`SHA256:…`) of the key on an OpenSSH public-key line.
fn fingerprint(dir: &Path, line: &str) -> String {
    let file = dir.join(format!("fp-{}.pub", unique()));
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let out = ok(Command::new("ssh-keygen").arg("-l").arg("-f").arg(&file));
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("ssh-keygen -l: {out}"))
        .to_owned()
}

/// The signing CA line of the agent's session certificate, as
/// `ssh-keygen -L` shows it.
fn signing_ca(dir: &Path, agent: &Agent) -> String {
    let cert = agent_lines(agent)
        .lines()
        .find(|l| l.ends_with(" vmux-session-cert"))
        .map(str::to_owned)
        .expect("the session certificate is listed");
    let file = dir.join(format!("cert-{}.pub", unique()));
    std::fs::write(&file, format!("{cert}\n")).unwrap();
    let shown = ok(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&file));
    shown
        .lines()
        .find(|l| l.trim_start().starts_with("Signing CA:"))
        .unwrap_or_else(|| panic!("ssh-keygen -L: {shown}"))
        .to_owned()
}

/// Two CA phones: the certificate card shows on both, the first to
/// approve signs it and the other's card goes away; `vmux signer ca`
/// prints both lines; once one is removed, the other alone is the CA.
#[test]
fn with_two_ca_phones_the_first_to_approve_signs_and_a_removed_one_leaves_the_other() {
    let dir = test_dir();
    let world = PhoneWorld::start_approving(
        dir.path(),
        "allow-all",
        "ca = \"phone:pixel,phone:iphone\"\n",
        &[],
    );
    let pixel = world.enrolled_phone("pixel");
    let iphone = world.enrolled_phone("iphone");
    pixel.wait_signed_in();
    iphone.wait_signed_in();
    let lines = ok(&mut world.signer.cmd(&["ca"]));
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with(SK) && lines[0].ends_with(" pixel"));
    assert!(lines[1].starts_with(SK) && lines[1].ends_with(" iphone"));
    let (pixel_fp, iphone_fp) = (
        fingerprint(dir.path(), lines[0]),
        fingerprint(dir.path(), lines[1]),
    );

    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start_with(&world.signer, &[]);
    pixel.card_text("certificate");
    iphone.card_text("certificate");
    iphone.tap("certificate", "Approve");
    pixel.wait_cards(0);
    iphone.wait_cards(0);
    agent.wait_certificate_installed(1);
    let ca = signing_ca(dir.path(), &agent);
    assert!(
        ca.contains("ECDSA-SK") && ca.contains(&iphone_fp),
        "signed by the iphone: {ca}"
    );
    let audit = world.signer.audit();
    assert!(
        lines_with(&audit, &["certificate", "on phone iphone"]) > 0,
        "{audit}"
    );

    // The iphone is lost: removed, its line is no longer printed, and the
    // next certificate is a card on the pixel alone, signed by it.
    ok(&mut world.signer.cmd(&["phone", "remove", "iphone"]));
    let lines = ok(&mut world.signer.cmd(&["ca"]));
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(lines.trim_end().ends_with(" pixel"), "{lines}");
    let cert = agent
        .cmd(&["cert"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmux agent cert");
    pixel.tap("certificate", "Approve");
    let out = finish(cert, Duration::from_secs(90));
    assert_success(&out, "vmux agent cert");
    pixel.wait_cards(0);
    let ca = signing_ca(dir.path(), &agent);
    assert!(ca.contains(&pixel_fp), "signed by the pixel: {ca}");
}

/// Renewal with the phone as CA is a new card on the phone, never a
/// silent signature: the agent (validity 8 s, renewing with 5 s left)
/// installs the renewed certificate only after the second tap.
#[test]
fn renewal_with_the_phone_as_ca_is_a_new_card() {
    let dir = test_dir();
    let world = PhoneWorld::start_approving(dir.path(), "allow-all", "ca = \"phone:pixel\"\n", &[]);
    let phone = world.enrolled_phone("pixel");
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start_with(
        &world.signer,
        &["--cert-validity", "8", "--cert-renew-before", "5"],
    );
    let installed = |n| {
        agent.wait_certificate_installed(n);
    };
    phone.tap("certificate", "Approve");
    installed(1);
    let first = agent.status()["certificate"]["serial"].as_u64().unwrap();
    phone.wait_cards(0);
    // The renewal: a card again, and nothing installed until it is tapped.
    let card = phone.card_text("certificate");
    assert!(card.contains("passkey"), "{card}");
    assert_eq!(
        agent
            .daemon()
            .count(|l| l.contains("session certificate installed")),
        1
    );
    phone.tap("certificate", "Approve");
    installed(2);
    let second = agent.status()["certificate"]["serial"].as_u64().unwrap();
    assert_ne!(first, second, "renewal makes a new certificate");
}
