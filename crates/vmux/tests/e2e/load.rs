//! Load and faults with the real binaries: a thousand clients at once,
//! a signer killed mid-request, an agent killed while it writes its state,
//! a client that never reads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use signature::Verifier;

fn read_answer(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut a = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut a)?;
    Ok(a)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn raise_fd_limit() {
    ok(Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg("--nofile=8192:8192"));
}

#[test]
fn a_thousand_clients_list_and_sign_at_once_and_no_descriptor_leaks() {
    raise_fd_limit();
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let line = signer.keygen("ed25519", "load");
    signer.config("[certificates]\nauto_issue = false\n");
    signer.start_approving("127.0.0.1:0", "allow-all", &[]);
    let agent = Agent::paired_with(dir.path(), "laptop", &signer);
    let pid = agent.daemon().pid();
    let baseline = fds(pid);
    let blob = key_blob(&line);
    let public = ssh_key::PublicKey::from_openssh(&line).unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (sock, blob, public) = (&agent.sock, &blob, &public);
                s.spawn(move || {
                    let mut conns: Vec<UnixStream> = (0..125)
                        .map(|_| UnixStream::connect(sock).unwrap())
                        .collect();
                    for (i, c) in conns.iter_mut().enumerate() {
                        let data = format!("load-{w}-{i}");
                        c.write_all(&frame(&[11])).unwrap();
                        c.write_all(&frame(&sign_request(blob, data.as_bytes(), 0)))
                            .unwrap();
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        c.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
                        let ids = read_answer(c).unwrap();
                        assert_eq!(ids[0], 12, "identities answer");
                        let sig = read_answer(c).unwrap();
                        assert_eq!(sig[0], 14, "sign response on connection {w}/{i}");
                        let sig = ssh_key::Signature::try_from(&sig[5..]).unwrap();
                        Verifier::verify(public, format!("load-{w}-{i}").as_bytes(), &sig).unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    println!("1000 clients listed and signed in {:?}", t.elapsed());
    // All closed: the agent is back to its descriptors of before.
    let t = Instant::now();
    while fds(pid) > baseline {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "descriptors leaked: {} > {baseline}",
            fds(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_signer_killed_mid_request_fails_the_waiting_client_fast_and_comes_back() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let line = signer.keygen("ed25519", "k");
    signer.config("approval_timeout_seconds = 60\n[certificates]\nauto_issue = false\n");
    // An approver that never answers, so the request is in flight.
    let slow = dir.path().join("slow-approver");
    write_script(&slow, "#!/bin/sh\n[ \"$VMUX_REQUEST_KIND\" = pair ] && exit 0\necho asked >> \"$0.log\"\nexec sleep 600\n");
    signer.start_approving("127.0.0.1:0", &format!("command:{}", slow.display()), &[]);
    let addr = signer.addr.clone();
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start_with(&signer, &["--sign-timeout", "50"]);
    let mut c = UnixStream::connect(&agent.sock).unwrap();
    c.write_all(&frame(&sign_request(&key_blob(&line), b"in flight", 0)))
        .unwrap();
    let log = std::path::PathBuf::from(format!("{}.log", slow.display()));
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("asked")
    {
        assert!(t.elapsed() < WAIT, "the request never reached the approver");
        std::thread::sleep(Duration::from_millis(20));
    }
    signer.kill();
    let t = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(read_answer(&mut c).unwrap(), [5], "SSH_AGENT_FAILURE");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "failed fast ({:?}), not at the 50 s bound",
        t.elapsed()
    );
    assert!(
        agent.ssh_add(&["-l"]).status.success(),
        "the agent serves on"
    );
    signer.start_approving(&addr, "allow-all", &[]);
    agent.wait_connected(2);
}

#[test]
fn an_agent_killed_while_writing_its_state_always_restarts_cleanly() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    signer.keygen("ed25519", "k");
    signer.start_approving("127.0.0.1:0", "allow-all", &[]);
    let mut agent = Agent::new(dir.path(), "laptop");
    for round in 0..15 {
        agent.start(&["--signer", &signer.addr]);
        agent.wait_connected(1);
        // Refreshes rewrite the state file; kill the agent while they run.
        let home = agent.home.clone();
        let refresher = std::thread::spawn(move || {
            for _ in 0..5 {
                let _ = vmux()
                    .arg("--home")
                    .arg(&home)
                    .args(["agent", "refresh"])
                    .output();
            }
        });
        std::thread::sleep(Duration::from_millis(5 * (round % 4)));
        agent.daemon.take().unwrap().kill();
        let _ = refresher.join();
        let text = std::fs::read_to_string(agent.home.join("agent-state.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("round {round}: torn state ({e}): {text}"));
        let stray: Vec<_> = std::fs::read_dir(&agent.home)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(
            stray.len() <= 1,
            "at most the one interrupted temporary file"
        );
    }
    agent.start(&[]);
    assert!(agent.ssh_add(&["-l"]).status.success());
}

#[test]
fn a_client_that_never_reads_does_not_hold_up_others() {
    let w = World::new("ed25519");
    let mut greedy = UnixStream::connect(&w.agent.sock).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Ask for the key list over and over without reading the answers:
    // the agent's writes to this client block, and only this client's.
    let mut sent = 0;
    while sent < 100_000 && greedy.write_all(&frame(&[11])).is_ok() {
        sent += 1;
    }
    let t = Instant::now();
    assert!(w.agent.ssh_add(&["-l"]).status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
    let out = w.sshd.ssh(&w.agent, &[], "true");
    assert!(out.status.success());
    drop(greedy);
}

#[test]
fn a_full_disk_is_reported_and_the_agent_keeps_serving_from_memory() {
    let dir = test_dir();
    let (signer, _) = Signer::serving(dir.path(), "pi", "first");
    // The agent's home is a small tmpfs in a mount namespace of its own.
    let home = dir.path().join("small-home");
    std::fs::create_dir_all(&home).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=128k tmpfs '{h}' && exec '{v}' --home '{h}' agent run --no-discovery --name laptop --signer {a}",
        h = home.display(),
        v = env!("CARGO_BIN_EXE_vmux"),
        a = signer.addr
    );
    let agent = Daemon::spawn(
        "agent on tmpfs",
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]),
    );
    let line = agent.wait_line(WAIT, |l| l.starts_with("vmux agent: pairing code "));
    let code = pairing_code_of(&line).expect("pairing code");
    let pid = agent.pid();
    // The agent's user confirms the code (inside the agent's mount
    // namespace, where its socket is).
    ok(Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .arg("-m")
        .arg(env!("CARGO_BIN_EXE_vmux"))
        .arg("--home")
        .arg(&home)
        .args(["agent", "pair", "--confirm", &code]));
    agent.wait_line(WAIT, |l| l.starts_with("vmux agent: connected to signer"));
    // Fill the filesystem from inside the namespace.
    let _ = Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!("cat /dev/zero > '{}/fill'", home.display()))
        .output();
    // A new key on the signer; the refresh cannot be written to disk.
    let added = signer.keygen("ecdsa", "added");
    let in_ns = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(pid.to_string())
            .arg("-m")
            .arg(env!("CARGO_BIN_EXE_vmux"))
            .arg("--home")
            .arg(&home)
            .arg("agent")
            .args(args);
        c
    };
    ok(&mut in_ns(&["refresh"]));
    agent.wait_line(WAIT, |l| {
        l.contains("cannot write the agent state; keeping it in memory")
    });
    let listed = run(Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .arg("-m")
        .arg("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", home.join("vmux-agent.sock")));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(added.split_whitespace().nth(1).unwrap()),
        "served from memory: {listed}"
    );
}
