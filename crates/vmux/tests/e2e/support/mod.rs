//! One harness for every end-to-end test: real OpenSSH (`sshd` on a
//! loopback port with its own config and host key, `ssh`, `ssh-add`, …),
//! and vmux signers and agents under temporary homes. Every wait is for a
//! readiness signal (a line a daemon prints, collected by `vmux-testkit`'s
//! [`Daemon`]), bounded in time; so is every command the harness runs
//! ([`run_within`]). Daemons listen on port 0 and
//! print the port they got, except sshd ([`free_port`]).

pub mod netns;
pub mod phone;
pub mod pty;
pub use vmux_testkit::agent::{
    bind_request, bind_request_signing, frame, key_blob, login_data, put_string, sign_request,
    AgentClient,
};
pub use vmux_testkit::engine::PhonePage;
pub use vmux_testkit::vmux::pairing_code_of;
pub use vmux_testkit::{browser, engine, pki};
pub use vmux_testkit::{ok, run_within, Daemon, WAIT};

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vmux_testkit::vmux::{confirm_pairings, listening_addr};

/// The vmux binary under test.
pub fn vmux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmux"))
}

/// A fresh directory for one test, removed on drop unless
/// `VMUX_KEEP_TEST_DIRS` is set. World-traversable so that a test can run
/// a client as another user.
pub fn test_dir() -> tempfile::TempDir {
    test_dir_kept(std::env::var_os("VMUX_KEEP_TEST_DIRS").is_some())
}

/// [`test_dir`], kept on drop when `keep` (what `VMUX_KEEP_TEST_DIRS`
/// asks for; the tests run in one process, so none of them sets it).
pub fn test_dir_kept(keep: bool) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new()
        .prefix("vmux-test-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if keep {
        // The very directory the test uses, left in place when it drops.
        eprintln!("test dir: {}", d.path().display());
        d.disable_cleanup(true);
    }
    d
}

/// Bound for one `ssh` login ([`Sshd::ssh`]): longer than [`WAIT`], as a
/// login may wait out an agent's sign timeout (up to 90 s in the tests).
pub const SSH_WAIT: Duration = Duration::from_secs(120);

/// Runs a command to completion within [`WAIT`] (see [`run_within`]).
pub fn run(cmd: &mut Command) -> Output {
    run_within(cmd, WAIT)
}

/// A TCP port on loopback that was free a moment ago (bound and
/// released): another process may take it before the caller's does. Only
/// for a program that cannot listen on port 0 and say which port it got,
/// and only with a retry when the port turns out taken: sshd
/// ([`Sshd::start`]), or an address that must be known before the start
/// (the phone page's origin). A vmux signer listens on `127.0.0.1:0` and
/// prints its port; for a port where nothing listens use [`ClosedPort`].
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback port where nothing listens, for as long as this lives: a
/// socket bound to it and never listening, so a connection there is
/// refused at once and no other process can take the port meanwhile.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    /// The port.
    pub port: u16,
}

impl ClosedPort {
    /// Reserves one.
    pub fn reserve() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("bind a loopback port");
        let port = socket.local_addr().expect("its port").port();
        ClosedPort {
            _socket: socket,
            port,
        }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A tokio runtime on the test's own thread, for its async clients and
/// servers (reqwest, zbus, a listener of its own).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A tokio runtime with two worker threads, for tasks that go on while
/// the test's thread waits.
pub fn threaded_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Asserts that the command whose output is `out` succeeded; `what`
/// names it in the failure message, with what it printed.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `command` (e.g. `setup`), run as `out` with no terminal,
/// failed saying it needs one, after printing each of `steps`: the plan
/// a person can follow by hand.
pub fn assert_refused_without_a_terminal(out: &Output, command: &str, steps: &[&str]) {
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "vmux: {command} asks questions and needs a terminal: run it in one, or do the steps above yourself"
        )
    );
    for step in steps {
        assert!(stdout.contains(step), "{step:?} not in:\n{stdout}");
    }
}

/// Waits until `cond` holds, looking every 20 ms for at most `timeout`;
/// panics saying what it waited for (`what`) when it does not.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `path` as a program (mode 0755): an approver, or a
/// stand-in for a command, that a test's signer or agent runs.
pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// The files a `--print` of `vmux agent install` or `vmux signer
/// install` shows in `out`: each as its `# PATH` line's path and the
/// contents under it.
pub fn printed_files(out: &str) -> Vec<(String, String)> {
    out.split("# ")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let (path, body) = b.split_once('\n').expect("a # PATH line");
            (path.to_owned(), body.to_owned())
        })
        .collect()
}

/// The files `vmux agent install` would write for the home `home`
/// ([`printed_files`] of its `--print`).
pub fn agent_install_print(home: &Path) -> Vec<(String, String)> {
    printed_files(&ok(vmux()
        .arg("--home")
        .arg(home)
        .args(["agent", "install", "--print"])))
}

/// A private session bus (`dbus-daemon` listening on `dir/bus`), killed
/// on drop, and its address.
pub fn session_bus(dir: &Path) -> (Daemon, String) {
    let socket = dir.join("bus");
    let d = Daemon::spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address"])
            .arg(format!("--address=unix:path={}", socket.display())),
    );
    let address = d.wait_line(WAIT, |l| l.starts_with("unix:"));
    (d, address)
}

/// How many lines of `text` contain every one of `words`.
pub fn lines_with(text: &str, words: &[&str]) -> usize {
    text.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// A number not given out before in this test process: for names of
/// files and directories within one test's directory.
pub fn unique() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The approver program every test signer uses: it logs each decision as
/// one line in `approvals.log` and decides by the files in its directory
/// (`deny-pair`, `deny-sign`, `deny-certificate`; `window` holds seconds
/// for an approval window).
const APPROVER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "kind=$VMUX_REQUEST_KIND fp=$VMUX_KEY_FINGERPRINT src=$VMUX_SOURCE_NAME srcid=$VMUX_SOURCE_ID code=$VMUX_PAIRING_CODE host=$VMUX_DEST_HOST user=$VMUX_DEST_USER quality=$VMUX_CONTEXT_QUALITY fwd=$VMUX_FORWARDED binding=$VMUX_BINDING ns=$VMUX_NAMESPACE validity=$VMUX_CERT_VALIDITY_SECONDS principals=$VMUX_CERT_PRINCIPALS process=$VMUX_PROCESS" >> "$dir/approvals.log"
[ -e "$dir/deny-$VMUX_REQUEST_KIND" ] && exit 1
if [ -s "$dir/window" ] && [ "$VMUX_APPROVAL_WINDOW_MAX" != 0 ]; then echo "VMUX_APPROVE_FOR=$(cat "$dir/window")"; fi
exit 0
"#;

/// A vmux signer under a temporary home.
pub struct Signer {
    pub home: PathBuf,
    pub name: String,
    pub daemon: Option<Daemon>,
    pub addr: String,
    /// How its daemon runs (it advertises over mDNS only in a namespace).
    pub launch: Launch,
    approver_dir: PathBuf,
}

/// How a signer's or an agent's daemon runs.
pub struct Launch {
    /// `RUST_LOG` for the daemon.
    pub log: &'static str,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
    /// Run inside this network namespace, where it may use mDNS (which
    /// it does not on the host).
    pub netns: Option<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            log: "info",
            env: Vec::new(),
            netns: None,
        }
    }
}

impl Launch {
    /// `vmux --home HOME ROLE run ARGS`, inside the namespace if there is
    /// one, else on the host with `host_args` too (those that keep it off
    /// mDNS); with its log level and environment.
    fn run_command(&self, home: &Path, role: &str, args: &[&str], host_args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_vmux")]);
                c
            }
            None => vmux(),
        };
        c.arg("--home").arg(home).args([role, "run"]).args(args);
        if self.netns.is_none() {
            c.args(host_args);
        }
        c.env("RUST_LOG", self.log)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

impl Signer {
    /// `vmux signer init` (keys unencrypted, as tests need no passphrase).
    pub fn init(dir: &Path, name: &str) -> Signer {
        Signer::init_with(dir, name, &["--no-passphrase"])
    }

    /// `vmux signer init --name NAME ARGS`.
    pub fn init_with(dir: &Path, name: &str, args: &[&str]) -> Signer {
        let home = dir.join(format!("signer-{name}"));
        ok(vmux()
            .arg("--home")
            .arg(&home)
            .args(["signer", "init", "--name", name])
            .args(args));
        let approver_dir = dir.join(format!("approver-{name}"));
        std::fs::create_dir_all(&approver_dir).expect("approver dir");
        let prog = approver_dir.join("approve");
        write_script(&prog, APPROVER);
        std::fs::write(approver_dir.join("approvals.log"), "").expect("log");
        Signer {
            home,
            name: name.to_owned(),
            daemon: None,
            addr: String::new(),
            launch: Launch::default(),
            approver_dir,
        }
    }

    /// A signer named `name` under `dir` with one Ed25519 key commented
    /// `comment`, serving on a free loopback port ([`Signer::start`]);
    /// and that key's public-key line.
    pub fn serving(dir: &Path, name: &str, comment: &str) -> (Signer, String) {
        let mut signer = Signer::init(dir, name);
        let line = signer.keygen("ed25519", comment);
        signer.start();
        (signer, line)
    }

    /// A signer named `name` under `dir` with one Ed25519 key commented
    /// `comment`, serving on every address of the network namespace `ns`
    /// and advertised over mDNS there; and that key's public-key line.
    pub fn serving_in(dir: &Path, ns: &str, name: &str, comment: &str) -> (Signer, String) {
        let mut signer = Signer::init(dir, name);
        let line = signer.keygen("ed25519", comment);
        signer.launch.netns = Some(ns.to_owned());
        signer.start_on("0.0.0.0:0", &[]);
        (signer, line)
    }

    /// `vmux --home H signer ARGS`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = vmux();
        c.arg("--home").arg(&self.home).arg("signer").args(args);
        c
    }

    /// A new identity; returns its public-key line.
    pub fn keygen(&self, kind: &str, comment: &str) -> String {
        self.keygen_with(kind, comment, &[])
    }

    /// A new identity with extra arguments (e.g. `--passphrase-file`).
    pub fn keygen_with(&self, kind: &str, comment: &str, args: &[&str]) -> String {
        ok(self
            .cmd(&["keygen", "--type", kind, "--comment", comment])
            .args(args))
        .trim()
        .to_owned()
    }

    /// `vmux signer keys -L`
    pub fn public_lines(&self) -> String {
        ok(&mut self.cmd(&["keys", "-L"]))
    }

    /// Starts serving on `listen` (e.g. `127.0.0.1:0`) and waits until it
    /// is ready.
    pub fn start_on(&mut self, listen: &str, extra: &[&str]) {
        let prog = format!("command:{}", self.approver_dir.join("approve").display());
        self.start_approving(listen, &prog, extra);
    }

    /// Starts with another approval mode (e.g. `allow-all` for load).
    pub fn start_approving(&mut self, listen: &str, approve: &str, extra: &[&str]) {
        let run = ["--listen", listen, "--approve", approve];
        let mut c = self
            .launch
            .run_command(&self.home, "signer", &run, &["--no-advertise"]);
        c.args(extra);
        let d = Daemon::spawn(&format!("signer {}", self.name), &mut c);
        self.addr = listening_addr(&d);
        self.daemon = Some(d);
    }

    /// `vmux signer run` on a free loopback port, unadvertised, approving
    /// by `approve`, with `args`: a start that must fail. Asserts that
    /// it did (bounded by [`WAIT`]); returns what it said on stderr.
    pub fn refused_run(&self, approve: &str, args: &[&str]) -> String {
        let run_args = ["run", "--listen", "127.0.0.1:0", "--approve", approve];
        let out = run(self.cmd(&run_args).arg("--no-advertise").args(args));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} started: {err}");
        err
    }

    /// Starts on a free loopback port.
    pub fn start(&mut self) {
        self.start_on("127.0.0.1:0", &[]);
    }

    /// Kills the running signer (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("signer running")
    }

    /// The approver's log, one line per decision.
    pub fn approvals(&self) -> Vec<String> {
        std::fs::read_to_string(self.approver_dir.join("approvals.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Decisions of one kind.
    pub fn approvals_of(&self, kind: &str) -> Vec<String> {
        let prefix = format!("kind={kind} ");
        self.approvals()
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    }

    /// Makes the approver deny (`true`) or approve requests of `kind`.
    pub fn deny(&self, kind: &str, deny: bool) {
        let f = self.approver_dir.join(format!("deny-{kind}"));
        if deny {
            std::fs::write(f, "").expect("deny file");
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Makes the approver grant approval windows of `seconds`.
    pub fn grant_windows(&self, seconds: u64) {
        std::fs::write(self.approver_dir.join("window"), seconds.to_string()).expect("window file");
    }

    /// `vmux signer audit`: one decision a line.
    pub fn audit(&self) -> String {
        ok(&mut self.cmd(&["audit"]))
    }

    /// As someone with the disk: in line `n` (from 0) of the audit log,
    /// replaces `from`, which it must hold, with `to`.
    pub fn edit_audit_line(&self, n: usize, from: &str, to: &str) {
        let log = self.home.join("audit.jsonl");
        let text = std::fs::read_to_string(&log).expect("the audit log");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        assert!(lines[n].contains(from), "{}", lines[n]);
        lines[n] = lines[n].replace(from, to);
        std::fs::write(&log, lines.join("\n") + "\n").expect("the audit log");
    }

    /// Writes `signer.toml`.
    pub fn config(&self, toml: &str) {
        std::fs::write(self.home.join("signer.toml"), toml).expect("signer.toml");
    }
}

/// A vmux agent under a temporary home.
pub struct Agent {
    pub home: PathBuf,
    pub sock: PathBuf,
    pub daemon: Option<Daemon>,
    pub name: String,
    /// How its daemon runs (it browses mDNS only in a namespace).
    pub launch: Launch,
    /// Confirm on the agent's side every pairing code it prints, as its
    /// user would after comparing it with the signer's (`vmux agent pair
    /// --confirm CODE`). On by default; attack tests turn it off.
    pub confirm_pairings: bool,
}

impl Agent {
    /// A home for an agent named `name` (not started).
    pub fn new(dir: &Path, name: &str) -> Agent {
        let home = dir.join(format!("agent-{name}"));
        Agent {
            sock: home.join("vmux-agent.sock"),
            home,
            daemon: None,
            name: name.to_owned(),
            launch: Launch::default(),
            confirm_pairings: true,
        }
    }

    /// An agent named `name` under `dir` (not started) whose pairing
    /// codes nobody confirms by itself: the test does, or refuses, or an
    /// attacker tries ([`Agent::confirm_pairings`] off).
    pub fn unconfirmed(dir: &Path, name: &str) -> Agent {
        Agent {
            confirm_pairings: false,
            ..Agent::new(dir, name)
        }
    }

    /// An agent named `name` under `dir` (not started) that runs in the
    /// network namespace `ns`, browsing mDNS there.
    pub fn in_namespace(dir: &Path, ns: &str, name: &str) -> Agent {
        let mut agent = Agent::new(dir, name);
        agent.launch.netns = Some(ns.to_owned());
        agent
    }

    /// An agent named `name` under `dir` (not started) whose own HOME has
    /// `~/.ssh/known_hosts` holding `entries`, where it looks up the name
    /// of a host; returns it and that file.
    pub fn with_known_hosts(dir: &Path, name: &str, entries: &str) -> (Agent, PathBuf) {
        let mut agent = Agent::new(dir, name);
        let home = dir.join(format!("{name}-user-home"));
        std::fs::create_dir_all(home.join(".ssh")).expect("~/.ssh");
        let known_hosts = home.join(".ssh/known_hosts");
        std::fs::write(&known_hosts, entries).expect("known_hosts");
        agent
            .launch
            .env
            .push(("HOME".into(), home.display().to_string()));
        (agent, known_hosts)
    }

    /// An agent named `name` under `dir`, started with `--signer` at
    /// `signer` and connected with its keys ([`Agent::start_with`]).
    pub fn paired_with(dir: &Path, name: &str, signer: &Signer) -> Agent {
        let mut agent = Agent::new(dir, name);
        agent.start_with(signer, &[]);
        agent
    }

    /// `vmux --home H agent ARGS`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = vmux();
        c.arg("--home").arg(&self.home).arg("agent").args(args);
        c
    }

    /// Starts `agent run` with `args` and waits for the socket.
    pub fn start(&mut self, args: &[&str]) {
        let mut c = self.launch.run_command(
            &self.home,
            "agent",
            &["--name", &self.name],
            &["--no-discovery"],
        );
        c.args(args);
        let d = Daemon::spawn(&format!("agent {}", self.name), &mut c);
        if self.confirm_pairings {
            confirm_pairings(&d, Path::new(env!("CARGO_BIN_EXE_vmux")), &self.home);
        }
        d.wait_line(WAIT, |l| l.starts_with("vmux agent: listening on "));
        self.daemon = Some(d);
    }

    /// Waits for the agent's notice of a pairing code; returns the code.
    pub fn wait_pairing_code(&self) -> String {
        let line = self
            .daemon()
            .wait_line(WAIT, |l| l.starts_with("vmux agent: pairing code "));
        pairing_code_of(&line).unwrap_or_else(|| panic!("no code in {line:?}"))
    }

    /// `vmux agent pair --confirm CODE` against the running agent.
    pub fn confirm(&self, code: &str) -> Output {
        run(&mut self.cmd(&["pair", "--confirm", code]))
    }

    /// Starts with `--signer ADDR` and waits until connected with keys.
    pub fn start_with(&mut self, signer: &Signer, args: &[&str]) {
        let mut all = vec!["--signer", signer.addr.as_str()];
        all.extend_from_slice(args);
        self.start(&all);
        self.wait_connected(1);
    }

    /// Waits for the `n`th "session certificate installed" line.
    pub fn wait_certificate_installed(&self, n: usize) {
        self.daemon()
            .wait_nth(n, WAIT, |l| l.contains("session certificate installed"));
    }

    /// Waits for the `n`th "connected to signer" line.
    pub fn wait_connected(&self, n: usize) -> String {
        self.daemon().wait_nth(n, WAIT, |l| {
            l.starts_with("vmux agent: connected to signer")
        })
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("agent running")
    }

    /// Stops the agent (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.terminate();
        }
    }

    /// A connection to this agent's socket, as `ssh` makes one; each
    /// answer is awaited at most [`WAIT`].
    pub fn client(&self) -> AgentClient {
        let c = AgentClient::connect(&self.sock).expect("the agent's socket");
        c.stream()
            .set_read_timeout(Some(WAIT))
            .expect("a read timeout");
        c
    }

    /// `ssh-add ARGS` against this agent.
    pub fn ssh_add(&self, args: &[&str]) -> Output {
        run(Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", &self.sock))
    }

    /// `vmux agent status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&ok(&mut self.cmd(&["status", "--json"]))).expect("status JSON")
    }
}

/// A throwaway sshd on a loopback port.
pub struct Sshd {
    pub port: u16,
    pub known_hosts: PathBuf,
    pub host_pub: String,
    pub daemon: Daemon,
}

/// The user tests log in as (the one running them).
pub fn login_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&run(Command::new("id").arg("-un")).stdout)
                .trim()
                .to_owned()
        })
}

fn sshd_binary() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("sshd is not installed: run ./scripts/test, which installs openssh-server");
}

impl Sshd {
    /// Starts sshd with `authorized_keys` and extra config lines, waiting
    /// for "Server listening".
    pub fn start(dir: &Path, authorized_keys: &str, extra: &[&str]) -> Sshd {
        let dir = dir.join(format!("sshd-{}", unique()));
        std::fs::create_dir_all(&dir).expect("sshd dir");
        let _ = std::fs::create_dir_all("/run/sshd");
        let key = dir.join("host_key");
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&key));
        let host_pub = std::fs::read_to_string(key.with_extension("pub"))
            .expect("host pub")
            .trim()
            .to_owned();
        let ak = dir.join("authorized_keys");
        std::fs::write(&ak, authorized_keys).expect("authorized_keys");
        // sshd binds its port itself and cannot report one it chose (it
        // logs the configured port), and a socket handed to it would make
        // it an inetd child per connection, not the daemon users run. So
        // the port is probed, and another process may take it first: sshd
        // then says it cannot bind and exits, and we try another port.
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            let mut text = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile none\nSubsystem sftp /usr/lib/openssh/sftp-server\nLogLevel VERBOSE\n",
                key.display(),
                ak.display()
            );
            for l in extra {
                text.push_str(l);
                text.push('\n');
            }
            std::fs::write(&config, text).expect("sshd_config");
            let d = Daemon::spawn(
                "sshd",
                Command::new(sshd_binary())
                    .arg("-D")
                    .arg("-e")
                    .arg("-f")
                    .arg(&config),
            );
            let line = d.wait_line(WAIT, |l| {
                l.contains("Server listening on 127.0.0.1")
                    || l.contains("Bind to port")
                    || l.contains("Cannot bind")
            });
            if !line.contains("Server listening") {
                continue;
            }
            let known_hosts = dir.join("known_hosts");
            std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n"))
                .expect("known_hosts");
            return Sshd {
                port,
                known_hosts,
                host_pub,
                daemon: d,
            };
        }
        panic!("sshd could not bind a port");
    }

    /// An sshd that admits no key, only certificates signed by the CA
    /// whose public-key line is `ca_line` (`TrustedUserCAKeys`), with
    /// `extra` config lines.
    pub fn trusting_ca(dir: &Path, ca_line: &str, extra: &[&str]) -> Sshd {
        let ca_file = dir.join(format!("trusted-ca-{}.pub", unique()));
        std::fs::write(&ca_file, ca_line).expect("the CA's key");
        let trust = format!("TrustedUserCAKeys {}", ca_file.display());
        let mut config = vec![trust.as_str()];
        config.extend_from_slice(extra);
        Sshd::start(dir, "", &config)
    }

    /// The `ssh` options every client uses (no config, no keys on disk,
    /// the test's known_hosts).
    pub fn ssh_opts(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=no".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "ConnectTimeout=20".into(),
        ]
    }

    /// `ssh … user@127.0.0.1 CMD` through `agent`, within [`SSH_WAIT`].
    pub fn ssh(&self, agent: &Agent, extra: &[&str], remote: &str) -> Output {
        let mut c = Command::new("ssh");
        c.args(self.ssh_opts())
            .arg("-p")
            .arg(self.port.to_string())
            .args(extra);
        c.arg(format!("{}@127.0.0.1", login_user())).arg(remote);
        client_env(&mut c, agent);
        run_within(&mut c, SSH_WAIT)
    }

    /// Logs in with `ssh … true` through `agent` and asserts that it
    /// worked; `what` names the login in the failure message.
    pub fn assert_login(&self, agent: &Agent, what: &str) {
        let out = self.ssh(agent, &[], "true");
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The ssh command line as one string (for GIT_SSH_COMMAND, rsync -e).
    pub fn ssh_command_line(&self) -> String {
        let mut parts = vec!["ssh".to_owned()];
        parts.extend(self.ssh_opts().into_iter().map(|o| format!("'{o}'")));
        parts.join(" ")
    }

    /// Number of accepted public-key logins so far.
    pub fn accepted(&self) -> usize {
        self.daemon.count(|l| l.contains("Accepted publickey"))
    }
}

/// A client environment: the agent's socket, and a HOME with no keys.
pub fn client_env(c: &mut Command, agent: &Agent) {
    let home = agent.home.join("client-home");
    let _ = std::fs::create_dir_all(&home);
    c.env("SSH_AUTH_SOCK", &agent.sock).env("HOME", home);
}

/// `ssh-keygen -Y sign -n NAMESPACE` through `agent` of the file `msg`,
/// first written with `text`, by the key whose public-key line is
/// `key_line` (put beside it as `MSG.pub`): the command, ready to run.
/// The signature goes to `MSG.sig`.
pub fn ssh_keygen_sign(
    agent: &Agent,
    key_line: &str,
    namespace: &str,
    msg: &Path,
    text: &str,
) -> Command {
    let key = PathBuf::from(format!("{}.pub", msg.display()));
    std::fs::write(&key, format!("{key_line}\n")).expect("the public key");
    std::fs::write(msg, text).expect("the message");
    let mut c = Command::new("ssh-keygen");
    c.args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(&key)
        .arg(msg);
    client_env(&mut c, agent);
    c
}

/// A signer with one key of `kind`, an agent paired with it, and an sshd
/// that trusts the key.
pub struct World {
    pub dir: tempfile::TempDir,
    pub signer: Signer,
    pub agent: Agent,
    pub sshd: Sshd,
    pub key_line: String,
}

impl World {
    pub fn new(kind: &str) -> World {
        World::with(kind, &[], &[])
    }

    /// With both daemons logging at `RUST_LOG=trace`.
    pub fn traced(kind: &str) -> World {
        World::build(kind, &[], &[], "trace")
    }

    /// With extra `agent run` arguments and extra sshd config lines.
    pub fn with(kind: &str, agent_args: &[&str], sshd_extra: &[&str]) -> World {
        World::build(kind, agent_args, sshd_extra, "info")
    }

    fn build(kind: &str, agent_args: &[&str], sshd_extra: &[&str], log: &'static str) -> World {
        let dir = test_dir();
        let mut signer = Signer::init(dir.path(), "pi");
        signer.launch.log = log;
        let key_line = signer.keygen(kind, &format!("{kind}-key"));
        signer.start();
        let mut agent = Agent::new(dir.path(), "laptop");
        agent.launch.log = log;
        agent.start_with(&signer, agent_args);
        let sshd = Sshd::start(dir.path(), &format!("{key_line}\n"), sshd_extra);
        World {
            dir,
            signer,
            agent,
            sshd,
            key_line,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `SHA256:…` of an OpenSSH public-key line, via ssh-keygen.
pub fn fingerprint(line: &str, dir: &Path) -> String {
    let f = dir.join(format!("fp-{}.pub", unique()));
    std::fs::write(&f, format!("{line}\n")).expect("pub");
    let out = ok(Command::new("ssh-keygen").arg("-l").arg("-f").arg(&f));
    out.split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned()
}
