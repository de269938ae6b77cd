//! Attacks on approval windows and on `vmux signer lock`, written as the
//! attacker runs them (issue 13, findings 3, 4 and 7). Each one succeeded
//! against the signer that keyed windows on the agent's strings and
//! checked the lock only before asking.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

/// This file's approver: one line per decision in `approvals.log` (the
/// summary last), a window of 300 s whenever one is offered, `deny-KIND`
/// denies, and a decision whose kind is a line of `hold` creates `asked`
/// and waits (at most 60 s) for `release` before approving.
const APPROVER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "kind=$VMUX_REQUEST_KIND hostkey=$VMUX_DEST_HOST_KEY host=$VMUX_DEST_HOST user=$VMUX_DEST_USER quality=$VMUX_CONTEXT_QUALITY ns=$VMUX_NAMESPACE fwd=$VMUX_FORWARDED exe=$VMUX_EXECUTABLE process=$VMUX_PROCESS|summary=$VMUX_SUMMARY" >> "$dir/approvals.log"
if [ -e "$dir/hold" ] && grep -qx "$VMUX_REQUEST_KIND" "$dir/hold"; then
  : > "$dir/asked"
  i=0
  while [ ! -e "$dir/release" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
fi
[ -e "$dir/deny-$VMUX_REQUEST_KIND" ] && exit 1
[ "$VMUX_APPROVAL_WINDOW_MAX" != 0 ] && echo "VMUX_APPROVE_FOR=300"
exit 0
"#;

/// A signer with one key approving through [`APPROVER`], two sshd that
/// trust the key (A and B), and an agent whose user reaches A as
/// `devbox` through an ssh config file and a known_hosts line.
struct Setup {
    dir: tempfile::TempDir,
    signer: Signer,
    agent: Agent,
    a: Sshd,
    b: Sshd,
    key_line: String,
    approver: PathBuf,
    known_hosts: PathBuf,
    ssh_config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = test_dir();
        let mut signer = Signer::init(dir.path(), "pi");
        let key_line = signer.keygen("ed25519", "work");
        signer.config("max_approval_window_seconds = 600\n[certificates]\nauto_issue = false\n");
        let approver = dir.path().join("attack-approver");
        std::fs::create_dir_all(&approver).unwrap();
        let prog = approver.join("approve");
        write_script(&prog, APPROVER);
        signer.start_approving("127.0.0.1:0", &format!("command:{}", prog.display()), &[]);
        let a = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
        let b = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
        let entries = format!("devbox {}\n", a.host_pub);
        let (mut agent, known_hosts) = Agent::with_known_hosts(dir.path(), "laptop", &entries);
        agent.start_with(&signer, &[]);
        let ssh_config = dir.path().join("ssh_config");
        let s = Setup {
            dir,
            signer,
            agent,
            a,
            b,
            key_line,
            approver,
            known_hosts,
            ssh_config,
        };
        s.point_devbox_at(s.a.port);
        s
    }

    /// Writes the ssh config that makes `devbox` reach `port`.
    fn point_devbox_at(&self, port: u16) {
        std::fs::write(
            &self.ssh_config,
            format!(
                "Host devbox\n  HostName 127.0.0.1\n  Port {port}\n  HostKeyAlias devbox\n  User {}\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 20\n",
                login_user(),
                self.known_hosts.display()
            ),
        )
        .unwrap();
    }

    /// `ssh -F CONFIG devbox true`: the same command line every time.
    fn login_devbox(&self) -> Output {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(&self.ssh_config).args(["devbox", "true"]);
        client_env(&mut c, &self.agent);
        run_within(&mut c, SSH_WAIT)
    }

    fn approvals(&self, kind: &str) -> Vec<String> {
        let prefix = format!("kind={kind} ");
        std::fs::read_to_string(self.approver.join("approvals.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.signer.home.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The audit log's last entry of `kind`.
    fn last_audit(&self, kind: &str) -> serde_json::Value {
        self.audit_lines()
            .into_iter()
            .rfind(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in the audit log"))
    }

    /// Holds the approver on requests of `kind`, makes `request` (on a
    /// thread of its own), runs `vmux signer lock` once the approver is
    /// asked, then lets the person approve: too late. Returns what
    /// `request` ended with.
    fn lock_while_asked(&self, kind: &str, request: impl FnOnce() -> Output + Send) -> Output {
        std::fs::write(self.approver.join("hold"), format!("{kind}\n")).unwrap();
        let asked = self.approver.join("asked");
        std::thread::scope(|scope| {
            let request = scope.spawn(request);
            wait_until("the approver asked", WAIT, || asked.exists());
            ok(&mut self.signer.cmd(&["lock"]));
            std::fs::write(self.approver.join("release"), "").unwrap();
            request.join().unwrap()
        })
    }

    /// A first login to A, approved with a window, and a second that the
    /// window lets through: the state the attacks start from.
    fn open_window_for_devbox(&self) {
        let first = self.login_devbox();
        assert_success(&first, "the first login to devbox");
        assert!(self.login_devbox().status.success());
        let signs = self.approvals("sign");
        assert_eq!(signs.len(), 1, "one prompt, then the window: {signs:?}");
        assert!(signs[0].contains("quality=verified "), "{}", signs[0]);
        let by_window = self
            .audit_lines()
            .iter()
            .filter(|e| e["outcome"] == "approved-by-window")
            .count();
        assert_eq!(by_window, 1);
        assert_eq!(self.a.accepted(), 2);
    }
}

/// The fields of an approvals line, in order (the summary follows `|`).
const FIELDS: [&str; 9] = [
    "kind", "hostkey", "host", "user", "quality", "ns", "fwd", "exe", "process",
];

/// The value of field `name` in one approvals line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let head = line.split_once("|summary=").map_or(line, |(h, _)| h);
    let i = FIELDS
        .iter()
        .position(|f| *f == name)
        .expect("a known field");
    let marker = if i == 0 {
        format!("{name}=")
    } else {
        format!(" {name}=")
    };
    let start = head.find(&marker).expect("field present") + marker.len();
    let rest = &head[start..];
    let end = FIELDS
        .get(i + 1)
        .and_then(|next| rest.find(&format!(" {next}=")))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Finding 3: after a window for devbox (host A), malware running as the
/// user records its own server's host key under devbox's name and points
/// the same command line at it. The login to B must be asked about, and
/// what is shown and recorded as verified is B's host key.
#[test]
fn a_window_for_one_host_does_not_cover_another_host_under_its_name() {
    let s = Setup::new();
    s.open_window_for_devbox();
    let fp_a = fingerprint(&s.a.host_pub, s.dir.path());
    let fp_b = fingerprint(&s.b.host_pub, s.dir.path());
    assert!(s.approvals("sign")[0].contains(&format!("hostkey={fp_a} ")));

    // The attack: B's key under devbox's name, devbox now reaching B.
    let mut kh = std::fs::read_to_string(&s.known_hosts).unwrap();
    kh.push_str(&format!("devbox {}\n", s.b.host_pub));
    std::fs::write(&s.known_hosts, kh).unwrap();
    s.point_devbox_at(s.b.port);
    std::fs::write(s.approver.join("deny-sign"), "").unwrap();
    let out = s.login_devbox();

    let signs = s.approvals("sign");
    assert_eq!(
        signs.len(),
        2,
        "the login to B was asked about, not let through by devbox's window: {signs:?}"
    );
    assert!(!out.status.success(), "denied, so no login to B");
    assert_eq!(s.b.accepted(), 0, "B never saw a signature");
    let asked = &signs[1];
    assert_eq!(field(asked, "hostkey"), fp_b, "{asked}");
    assert_eq!(field(asked, "quality"), "verified", "{asked}");
    let summary = asked.split_once("|summary=").unwrap().1;
    assert!(
        summary.contains(&format!(
            "host key {fp_b} [verified], which the agent names devbox"
        )),
        "the name is shown as the agent's, the host key as verified: {summary}"
    );
    assert!(!summary.contains(&fp_a), "{summary}");
    // The audit log records B's host key, and devbox only as a name.
    let last = s.last_audit("sign");
    assert_eq!(last["host_key"], fp_b.as_str(), "{last}");
    assert_eq!(last["outcome"], "refused", "{last}");
    let shown = s.signer.audit();
    assert!(
        shown.contains(&format!(
            "host key {fp_b} (named devbox by the agent) [verified]"
        )),
        "{shown}"
    );
}

/// Copies the agent's state (identity, pins, key cache) as a thief with
/// the disk would: every regular file of its home.
fn steal_agent_home(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Finding 4: with a copy of the agent's identity and state, while a
/// window for an ssh login is open, a thief asks for an `ssh-keygen -Y`
/// signature (a git commit): through a vmux agent started from the copy,
/// and through a hand-made link repeating every claim the window was
/// granted for. The approver is asked each time; the window is not used.
#[test]
fn a_stolen_agent_identity_gets_no_sshsig_under_a_login_window() {
    let s = Setup::new();
    s.open_window_for_devbox();
    let granted = s.approvals("sign")[0].clone();

    // 1. A vmux agent started from a copy of the agent's home.
    let mut thief = Agent::new(s.dir.path(), "thief");
    steal_agent_home(&s.agent.home, &thief.home);
    thief.start_with(&s.signer, &[]);
    let msg = s.dir.path().join("commit.txt");
    let tree = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n";
    let mut c = ssh_keygen_sign(&thief, &s.key_line, "git", &msg, tree);
    std::fs::write(s.approver.join("deny-sign"), "").unwrap();
    let out = run(&mut c);
    assert!(!out.status.success(), "denied: no signature");
    let signs = s.approvals("sign");
    assert_eq!(signs.len(), 2, "the approver was asked: {signs:?}");
    assert_eq!(field(&signs[1], "ns"), "git", "{}", signs[1]);
    assert_eq!(field(&signs[1], "quality"), "unknown", "{}", signs[1]);
    assert!(!msg.with_extension("txt.sig").exists());

    // 2. The link driven by hand with the stolen identity: SSHSIG data,
    // and every claim of the window's login (host, user, quality, process,
    // executable).
    let identity = vmux_link::Identity::load(&thief.home.join("agent-identity")).unwrap();
    let key_blob = key_blob(&s.key_line);
    let mut data = b"SSHSIG".to_vec();
    put_string(&mut data, b"git");
    put_string(&mut data, b"");
    put_string(&mut data, b"sha512");
    put_string(&mut data, &[7; 64]);
    let context = vmux_proto::SignContext {
        quality: vmux_proto::ContextQuality::Verified,
        dest_host: Some(field(&granted, "host").into()),
        dest_user: Some(field(&granted, "user").into()),
        process: Some(field(&granted, "process").into()),
        namespace: None,
        forwarded: false,
        executable: Some(field(&granted, "exe").into()),
        binding: None,
    };
    assert_eq!(context.dest_host.as_deref(), Some("devbox"));
    let result = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(sign_over_link(
            &s.signer.addr,
            &identity,
            key_blob,
            data,
            context,
        ));
    assert_eq!(result, Err(vmux_proto::ErrorCode::UserDenied));
    let signs = s.approvals("sign");
    assert_eq!(signs.len(), 3, "asked again, no window: {signs:?}");
    assert!(signs[2].contains("quality=unknown "), "{}", signs[2]);
    assert!(
        signs[2].contains("(the agent says verified)"),
        "the agent's claim is shown as its claim: {}",
        signs[2]
    );
}

/// Opens a session as the agent whose identity is `identity` and asks the
/// signer at `addr` to sign `data`.
async fn sign_over_link(
    addr: &str,
    identity: &vmux_link::Identity,
    key_blob: Vec<u8>,
    data: Vec<u8>,
    context: vmux_proto::SignContext,
) -> Result<Vec<u8>, vmux_proto::ErrorCode> {
    use vmux_proto::Message;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let channel = vmux_link::Channel::connect(stream, identity).await.unwrap();
    let signer = *channel.remote_static();
    let mut session = vmux_link::testing::open_confirming(channel, "laptop", Some(signer))
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut nonce = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let request = vmux_proto::SignRequest {
        request_id: nonce,
        key_blob,
        data,
        flags: 0,
        nonce,
        issued_at_ms: now,
        expires_at_ms: now + 30_000,
        context,
    };
    session
        .channel()
        .send(&Message::SignRequest(request))
        .await
        .unwrap();
    loop {
        match session.channel().recv_within(WAIT).await.unwrap() {
            Message::SignResponse(r) => return r.result,
            Message::WakeEndpoint(_) | Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {}", other.name()),
        }
    }
}

/// Finding 7: `vmux signer lock` while a login waits for a slow approver.
/// The waiting decision ends at once; even when the person approves
/// afterwards, no signature is made and the login fails.
#[test]
fn lock_cancels_a_signature_waiting_for_approval() {
    let s = Setup::new();
    let out = s.lock_while_asked("sign", || s.a.ssh(&s.agent, &[], "true"));
    assert!(
        !out.status.success(),
        "a login approved after lock must not happen"
    );
    assert_eq!(s.a.accepted(), 0, "no signature reached the server");
    s.signer.daemon().wait_line(WAIT, |l| {
        l.contains("refused") && l.contains("signerLocked")
    });
    let sign = s.last_audit("sign");
    assert_eq!(sign["error"], "signerLocked", "{sign}");
    assert_eq!(sign["outcome"], "refused", "{sign}");
}

/// Finding 7, for the CA: `vmux signer lock` while `vmux agent cert` waits
/// for approval. The CA key is not encrypted (so locking does not take it
/// away); the lock alone must stop the certificate.
#[test]
fn lock_cancels_a_certificate_waiting_for_approval() {
    let s = Setup::new();
    let out = s.lock_while_asked("certificate", || run(&mut s.agent.cmd(&["cert"])));
    assert!(
        !out.status.success(),
        "no certificate after lock: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(s.agent.status()["certificate"]["state"], "none");
    let cert = s.last_audit("certificate");
    assert_eq!(cert["error"], "signerLocked", "{cert}");
}
