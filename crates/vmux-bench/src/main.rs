//! `vmux-bench`: drives OpenSSH's ssh-agent and vmux (agent + signer on
//! loopback, approving at once) through their sockets with the same
//! client code (`vmux-testkit`'s agent client; the daemons are its
//! `Daemon`s), and prints figures side by side with ratios.
//!
//! Run it with `./scripts/bench [identities] [sign] [cert] [phone]
//! [memory]` (it builds the release binaries first); with no arguments,
//! everything. Every figure is the median of several runs, except the
//! phone's, which are percentiles over one run of sign requests approved
//! on the phone page in headless Chromium (see `phone.rs`; skipped when
//! Chromium is not installed).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vmux_testkit::agent::{AgentClient, AgentError, Identity};
use vmux_testkit::vmux::{confirm_pairings, listening_addr};
use vmux_testkit::{ok, Daemon, WAIT};

mod phone;

const RUNS: usize = 3;
const RUN_TIME: Duration = Duration::from_millis(1500);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `vmux --home HOME signer run` on a loopback port, not advertised,
/// logging warnings only; the caller adds the approval mode.
fn signer_run(vmux: &Path, home: &Path) -> Command {
    let mut c = Command::new(vmux);
    c.arg("--home")
        .arg(home)
        .args(["signer", "run", "--listen", "127.0.0.1:0", "--no-advertise"])
        .env("RUST_LOG", "warn");
    c
}

/// Starts the signer `cmd` ([`signer_run`]); returns it and its address
/// once it listens.
fn start_signer(cmd: &mut Command) -> (Daemon, String) {
    let signer = Daemon::spawn("signer", cmd);
    let addr = listening_addr(&signer);
    (signer, addr)
}

/// `vmux --home HOME agent run` named `name`, paired with the signer at
/// `addr` (its code confirmed on the agent's side, as its user would);
/// returns it once it is connected.
fn start_agent(vmux: &Path, home: &Path, name: &str, addr: &str) -> Daemon {
    let agent = Daemon::spawn(
        &format!("agent {name}"),
        Command::new(vmux)
            .arg("--home")
            .arg(home)
            .args(["agent", "run", "--no-discovery", "--name", name])
            .args(["--signer", addr])
            .env("RUST_LOG", "warn"),
    );
    confirm_pairings(&agent, vmux, home);
    agent.wait_line(WAIT, |l| l.starts_with("vmux agent: connected to signer"));
    agent
}

/// A server that answers every request on one connection with an empty
/// identities list, doing nothing else: the ceiling of a strict
/// request–answer exchange over a Unix socket on this machine.
struct DoNothingServer(PathBuf);

impl DoNothingServer {
    fn start(path: &Path) -> Res<DoNothingServer> {
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(err("bind"))?;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut request = [0u8; 5];
                    while conn.read_exact(&mut request).is_ok() {
                        if conn.write_all(&[0, 0, 0, 5, 12, 0, 0, 0, 0]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(DoNothingServer(path.to_owned()))
    }
}

impl Drop for DoNothingServer {
    fn drop(&mut self) {
        // The accepting thread stays parked in accept(); the socket file
        // goes, so nothing reaches it again.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Throughput and latency of one run.
#[derive(Clone, Copy, Default)]
struct Figures {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Runs `op` on `conns` connections for [`RUN_TIME`].
fn drive(
    sock: &Path,
    conns: usize,
    op: impl Fn(&mut AgentClient, u64) -> Result<(), AgentError> + Sync,
) -> Res<Figures> {
    let deadline = Instant::now() + RUN_TIME;
    let start = Instant::now();
    let results: Vec<Res<Vec<u32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(|| {
                    let mut c = AgentClient::connect(sock)?;
                    let mut lat = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        op(&mut c, n)?;
                        lat.push(t.elapsed().as_micros() as u32);
                        n += 1;
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Ok(Figures {
        per_sec: all.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_figures(runs: impl Fn() -> Res<Figures>) -> Res<Figures> {
    let mut fs = Vec::new();
    for _ in 0..RUNS {
        fs.push(runs()?);
    }
    Ok(Figures {
        per_sec: median(fs.iter().map(|f| f.per_sec).collect()),
        p50_us: median(fs.iter().map(|f| f.p50_us).collect()),
        p99_us: median(fs.iter().map(|f| f.p99_us).collect()),
    })
}

fn rss_kib(pid: u32) -> Res<u64> {
    let s =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(err("read /proc status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

struct Table {
    rows: Vec<(String, String, String, String)>,
}

impl Table {
    fn row(&mut self, what: &str, ours: f64, theirs: Option<f64>, unit: &str, target: &str) {
        self.row_prec(what, ours, theirs, unit, target, 0);
    }

    /// A row whose figures have `decimals` digits after the point.
    fn row_prec(
        &mut self,
        what: &str,
        ours: f64,
        theirs: Option<f64>,
        unit: &str,
        target: &str,
        decimals: usize,
    ) {
        let ratio = theirs
            .filter(|t| *t > 0.0)
            .map(|t| format!("{:.2}", ours / t))
            .unwrap_or_else(|| "-".into());
        self.rows.push((
            what.to_owned(),
            theirs
                .map(|t| format!("{t:.decimals$} {unit}"))
                .unwrap_or_else(|| "-".into()),
            format!("{ours:.decimals$} {unit}"),
            format!("{ratio:>6}  {target}"),
        ));
    }

    fn print(&self) {
        println!(
            "\n{:<44} {:>16} {:>16}   ratio  target",
            "figure", "ssh-agent", "vmux"
        );
        for (a, b, c, d) in &self.rows {
            println!("{a:<44} {b:>16} {c:>16}  {d}");
        }
    }
}

fn main() {
    if let Err(e) = bench() {
        eprintln!("vmux-bench: {e}");
        std::process::exit(1);
    }
}

fn vmux_binary() -> Res<PathBuf> {
    let me = std::env::current_exe().map_err(err("current_exe"))?;
    let bin = me.with_file_name("vmux");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release --bin vmux`",
            bin.display()
        )
        .into())
    }
}

fn bench() -> Res<()> {
    let vmux = vmux_binary()?;
    let dir = tempfile::tempdir().map_err(err("tempdir"))?;
    let d = dir.path();
    let (signer_home, agent_home) = (d.join("signer"), d.join("agent"));
    println!("vmux-bench: machine: {} cores; {}", num_cpus(), kernel());

    // vmux: a signer approving at once, and an agent paired with it.
    init_signer(&vmux, &signer_home, "bench", &["ed25519", "ecdsa"]);
    let (_signer, addr) =
        start_signer(signer_run(&vmux, &signer_home).args(["--approve", "allow-all"]));
    let agent = start_agent(&vmux, &agent_home, "bench", &addr);
    let vsock = agent_home.join("vmux-agent.sock");

    // OpenSSH's ssh-agent with an Ed25519 and an ECDSA key.
    let osock = d.join("ssh-agent.sock");
    let ssh_agent = Daemon::spawn(
        "ssh-agent",
        Command::new("ssh-agent").arg("-D").arg("-a").arg(&osock),
    );
    ssh_agent.wait_line(WAIT, |l| l.contains("SSH_AUTH_SOCK"));
    for t in ["ed25519", "ecdsa"] {
        let key = d.join(format!("id_{t}"));
        ok(Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", t, "-f"])
            .arg(&key));
        ok(Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &osock));
    }

    // Wait for the session certificate (auto-issued on connect).
    let deadline = Instant::now() + Duration::from_secs(30);
    let vids = loop {
        let ids = AgentClient::connect(&vsock)?.identities()?;
        if ids.iter().any(|i| i.comment == "vmux-session-cert") || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let oids = AgentClient::connect(&osock)?.identities()?;
    let find = |ids: &[Identity], kind: &str| {
        ids.iter()
            .find(|i| i.key_type() == kind.as_bytes())
            .map(|i| i.blob.clone())
            .ok_or_else(|| format!("no {kind} key"))
    };
    let v_ed = find(&vids, "ssh-ed25519")?;
    let v_ec = find(&vids, "ecdsa-sha2-nistp256")?;
    let v_cert = vids
        .iter()
        .find(|i| i.comment == "vmux-session-cert")
        .map(|i| i.blob.clone());
    let o_ed = find(&oids, "ssh-ed25519")?;
    let o_ec = find(&oids, "ecdsa-sha2-nistp256")?;

    let want = |section: &str| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        args.is_empty() || args.iter().any(|a| a == section)
    };
    let mut t = Table { rows: Vec::new() };
    for conns in [1, 4].into_iter().filter(|_| want("identities")) {
        let o = median_figures(|| drive(&osock, conns, |c, _| c.identities().map(drop)))?;
        let v = median_figures(|| drive(&vsock, conns, |c, _| c.identities().map(drop)))?;
        t.row(
            &format!("request-identities/s, {conns} conn"),
            v.per_sec,
            Some(o.per_sec),
            "/s",
            "≥ 2×",
        );
        if conns == 1 {
            // What no agent can beat on one connection: the same client
            // against a server that answers without doing anything.
            let floor = d.join("do-nothing.sock");
            let _server = DoNothingServer::start(&floor)?;
            let n = median_figures(|| drive(&floor, 1, |c, _| c.identities().map(drop)))?;
            t.row(
                "  ceiling: a do-nothing server, 1 conn",
                n.per_sec,
                Some(o.per_sec),
                "/s",
                "",
            );
        }
    }
    let data = |n: u64| {
        let mut d = b"vmux-bench challenge ".to_vec();
        d.extend_from_slice(&n.to_be_bytes());
        d
    };
    let mut added = Vec::new();
    let signs = [("Ed25519", &v_ed, &o_ed), ("ECDSA P-256", &v_ec, &o_ec)];
    for (name, vb, ob) in signs.into_iter().filter(|_| want("sign")) {
        for conns in [1, 4] {
            let o = median_figures(|| drive(&osock, conns, |c, n| c.sign(ob, &data(n)).map(drop)))?;
            let v = median_figures(|| drive(&vsock, conns, |c, n| c.sign(vb, &data(n)).map(drop)))?;
            t.row(
                &format!("{name} remote sign/s, {conns} conn"),
                v.per_sec,
                Some(o.per_sec),
                "/s",
                if conns == 1 { "≥ 1000/s" } else { "" },
            );
            t.row(
                &format!("{name} sign latency p50, {conns} conn"),
                v.p50_us,
                Some(o.p50_us),
                "µs",
                "",
            );
            t.row(
                &format!("{name} sign latency p99, {conns} conn"),
                v.p99_us,
                Some(o.p99_us),
                "µs",
                "",
            );
            if conns == 1 {
                added.push((name, v.p50_us - o.p50_us, v.p99_us - o.p99_us));
            }
        }
    }
    for (name, p50, p99) in &added {
        t.row(
            &format!("{name} added latency p50 (vmux − ssh-agent)"),
            *p50,
            None,
            "µs",
            "< 1000 µs",
        );
        t.row(
            &format!("{name} added latency p99 (vmux − ssh-agent)"),
            *p99,
            None,
            "µs",
            "< 5000 µs",
        );
    }
    match v_cert.as_ref().filter(|_| want("cert")) {
        Some(cert) => {
            // The certificate signs only logins for the session their
            // connection bound, as ssh does before it signs.
            let host =
                ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
                    .map_err(err("host key"))?;
            let login = |n: u64| {
                let put = |d: &mut Vec<u8>, s: &[u8]| {
                    d.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    d.extend_from_slice(s);
                };
                let mut d = Vec::new();
                put(&mut d, b"bench-session");
                d.push(50);
                put(&mut d, format!("bench{n}").as_bytes());
                put(&mut d, b"ssh-connection");
                put(&mut d, b"publickey");
                d.push(1);
                put(&mut d, b"ecdsa-sha2-nistp256-cert-v01@openssh.com");
                put(&mut d, cert);
                d
            };
            for conns in [1, 4] {
                let o = median_figures(|| {
                    drive(&osock, conns, |c, n| c.sign(&o_ed, &data(n)).map(drop))
                })?;
                let v = median_figures(|| {
                    drive(&vsock, conns, |c, n| {
                        if n == 0 {
                            c.bind(&host, b"bench-session", false)?;
                        }
                        c.sign(cert, &login(n)).map(drop)
                    })
                })?;
                t.row(
                    &format!("cert local sign/s vs Ed25519, {conns} conn"),
                    v.per_sec,
                    Some(o.per_sec),
                    "/s",
                    if conns == 4 { "≥ 5×" } else { "" },
                );
            }
        }
        None if want("cert") => {
            println!("(no session certificate was issued; certificate figures skipped)")
        }
        None => {}
    }
    if want("phone") {
        phone::bench(&vmux, d, &mut t)?;
    }

    if !want("memory") {
        t.print();
        return Ok(());
    }
    // Memory.
    let pid = agent.pid();
    let idle = rss_kib(pid)?;
    t.row(
        "agent RSS idle (after the runs above)",
        idle as f64,
        Some(rss_kib(ssh_agent.pid())? as f64),
        "KiB",
        "< 10240 KiB",
    );
    let held: Vec<AgentClient> = (0..1000)
        .map(|_| AgentClient::connect(&vsock))
        .collect::<Result<_, _>>()?;
    // Make sure the agent has accepted them all.
    let mut probe = AgentClient::connect(&vsock)?;
    probe.identities()?;
    t.row(
        "agent RSS with 1000 idle clients",
        rss_kib(pid)? as f64,
        None,
        "KiB",
        "< 20480 KiB",
    );
    drop(held);
    // The same number announcing the largest message and stalling.
    let mut announced = (256u32 * 1024).to_be_bytes().to_vec();
    announced.push(13);
    announced.extend_from_slice(&[0u8; 4095]);
    let stalled: Vec<UnixStream> = (0..1000)
        .map(|_| {
            let mut s = UnixStream::connect(&vsock).map_err(err("connect"))?;
            s.write_all(&announced).map_err(err("write"))?;
            Ok(s)
        })
        .collect::<Res<_>>()?;
    AgentClient::connect(&vsock)?.identities()?;
    t.row(
        "agent RSS, 1000 clients announcing 256 KiB",
        rss_kib(pid)? as f64,
        None,
        "KiB",
        "< 20480 KiB",
    );
    drop(stalled);
    let before = rss_kib(pid)?;
    let mut c = AgentClient::connect(&vsock)?;
    for _ in 0..100_000 {
        c.identities()?;
    }
    let after = rss_kib(pid)?;
    t.row(
        "agent RSS before 100k requests",
        before as f64,
        None,
        "KiB",
        "",
    );
    t.row(
        "agent RSS after 100k requests",
        after as f64,
        None,
        "KiB",
        "no growth",
    );

    // Size and start-up.
    let size = std::fs::metadata(&vmux).map_err(err("stat"))?.len();
    t.row(
        "release binary size",
        (size / 1024) as f64,
        None,
        "KiB",
        "< 8192 KiB",
    );
    let mut starts = Vec::new();
    for i in 0..5 {
        let home = d.join(format!("start{i}"));
        let sock = home.join("vmux-agent.sock");
        let t0 = Instant::now();
        let _a = Daemon::spawn(
            "agent",
            Command::new(&vmux)
                .arg("--home")
                .arg(&home)
                .args(["agent", "run", "--no-discovery"])
                .env("RUST_LOG", "warn"),
        );
        while UnixStream::connect(&sock).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("the agent did not start".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        starts.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    t.row(
        "agent start to socket accepting",
        median(starts),
        None,
        "ms",
        "< 50 ms",
    );
    t.print();
    Ok(())
}

/// `vmux signer init` under `home` named `name` (no passphrase), and a
/// key of each of `key_types`, commented with its type.
fn init_signer(vmux: &Path, home: &Path, name: &str, key_types: &[&str]) {
    let v = |args: &[&str]| ok(Command::new(vmux).arg("--home").arg(home).args(args));
    v(&["signer", "init", "--name", name, "--no-passphrase"]);
    for t in key_types {
        v(&["signer", "keygen", "--comment", t, "--type", t]);
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/version")
        .map(|v| v.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
