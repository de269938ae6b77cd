//! Attacks on the signer, each written as the attacker would run it: a
//! flood of pairing attempts while the owner signs, `unpair` racing an
//! agent that reconnects, one agent identity on four links, and a crash
//! that tears the audit log's last line. Each succeeded before the signer
//! was fixed; each now fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::net::TcpStream;
use vmux_link::testing::open_confirming;
use vmux_link::{AgentSession, Channel, Identity, LinkError, StaticKey};
use vmux_proto::{ErrorCode, Message, SignContext, SignRequest};

/// An approver program that logs `start kind=K src=NAME` and `end kind=K`
/// to `log`, holds pairing prompts while `hold-pairs` exists (a person who
/// never answers), holds signatures while `hold-signs` exists until
/// `release` appears (at most 30 s), and approves everything else.
fn holding_approver(dir: &Path) -> (String, PathBuf) {
    let d = dir.join("holding-approver");
    std::fs::create_dir_all(&d).unwrap();
    let prog = d.join("approve");
    let script = format!(
        r#"#!/bin/sh
d='{}'
echo "start kind=$VMUX_REQUEST_KIND src=$VMUX_SOURCE_NAME" >> "$d/log"
case "$VMUX_REQUEST_KIND" in
pair) if [ -e "$d/hold-pairs" ]; then sleep 50; exit 1; fi ;;
sign) if [ -e "$d/hold-signs" ]; then
        i=0
        while [ ! -e "$d/release" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
      fi ;;
esac
echo "end kind=$VMUX_REQUEST_KIND" >> "$d/log"
exit 0
"#,
        d.display()
    );
    write_script(&prog, &script);
    std::fs::write(d.join("log"), "").unwrap();
    (format!("command:{}", prog.display()), d)
}

fn log_count(d: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(d.join("log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// A raw link client asking to pair as `name`.
async fn pair(addr: &str, id: &Identity, name: &str) -> Result<AgentSession, LinkError> {
    let stream = TcpStream::connect(addr).await?;
    let channel = Channel::connect(stream, id).await?;
    open_confirming(channel, name, None).await
}

/// A raw link client reconnecting to a signer it has pinned.
async fn reconnect(
    addr: &str,
    id: &Identity,
    signer: &StaticKey,
) -> Result<AgentSession, LinkError> {
    let stream = TcpStream::connect(addr).await?;
    let channel = Channel::connect_pinned(stream, id, signer).await?;
    open_confirming(channel, "reconnecting", Some(*signer)).await
}

#[test]
fn a_pairing_flood_shows_one_prompt_and_the_owner_still_logs_in() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let key_line = signer.keygen("ed25519", "owner-key");
    let (approve, d) = holding_approver(dir.path());
    signer.start_approving("127.0.0.1:0", &approve, &[]);
    let agent = Agent::paired_with(dir.path(), "laptop", &signer);
    let sshd = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
    // From now on nobody answers a pairing prompt.
    std::fs::write(d.join("hold-pairs"), "").unwrap();
    let owner_prompts = log_count(&d, "start kind=pair");
    assert_eq!(owner_prompts, 1);

    // Thirty strangers ask to pair at once.
    const FLOOD: usize = 30;
    let rt = threaded_runtime();
    let finished = Arc::new(AtomicUsize::new(0));
    let addr = signer.addr.clone();
    let attempts: Vec<_> = (0..FLOOD)
        .map(|n| {
            let (addr, finished) = (addr.clone(), finished.clone());
            rt.spawn(async move {
                let id = Identity::generate();
                let r = tokio::time::timeout(
                    Duration::from_secs(90),
                    pair(&addr, &id, &format!("flood{n}")),
                )
                .await;
                finished.fetch_add(1, Ordering::SeqCst);
                match r {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer in 90 s".to_owned()),
                }
            })
        })
        .collect();
    // One prompt opens; every other attempt is turned away at once, not
    // queued behind it.
    wait_until("a flood prompt", WAIT, || {
        log_count(&d, "start kind=pair src=flood") >= 1
    });
    wait_until("all but one attempt refused", WAIT, || {
        finished.load(Ordering::SeqCst) >= FLOOD - 1
    });

    // The owner logs in meanwhile, without waiting for the stranger's
    // prompt to time out.
    let t = Instant::now();
    sshd.assert_login(&agent, "the owner's login during a pairing flood");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the owner's login took {:?}",
        t.elapsed()
    );

    let results: Vec<Result<(), String>> = rt.block_on(async {
        let mut out = Vec::new();
        for a in attempts {
            out.push(a.await.unwrap());
        }
        out
    });
    assert!(
        results.iter().all(|r| r.is_err()),
        "a stranger was paired: {results:?}"
    );
    assert_eq!(
        log_count(&d, "start kind=pair src=flood"),
        1,
        "more than one pairing prompt was shown for the flood"
    );
    // The one open prompt was withdrawn by the owner's request, long
    // before its 50 s.
    assert!(
        results.iter().any(|r| r
            .as_ref()
            .err()
            .is_some_and(|e| e.contains("approvalTimeout"))),
        "{results:?}"
    );
}

#[test]
fn unpair_stays_done_while_another_agent_reconnects_in_a_loop() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let rt = threaded_runtime();
    let churner = Arc::new(Identity::generate());
    let mut signer_key: Option<StaticKey> = None;
    for round in 0..10 {
        // Restarting keeps each round within the pairing-prompt rate. A
        // new port each time (the signer prints it): pairings are keyed
        // on identities, not addresses.
        signer.start_on("127.0.0.1:0", &[]);
        let addr = signer.addr.clone();
        let victim = Identity::generate();
        let session = rt
            .block_on(pair(&addr, &victim, &format!("victim{round}")))
            .expect("the victim pairs");
        let key = session.signer().static_key;
        drop(session);
        if signer_key.is_none() {
            rt.block_on(pair(&addr, &churner, "churner"))
                .expect("the churner pairs");
            signer_key = Some(key);
        }
        // Another agent reconnects as fast as it can, each connection
        // recording its last-seen time.
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let churn = {
            let (stop, count, addr, id) =
                (stop.clone(), count.clone(), addr.clone(), churner.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if reconnect(&addr, &id, &key).await.is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        wait_until("the churner reconnecting", WAIT, || {
            count.load(Ordering::SeqCst) >= 5
        });
        let id = victim.id();
        let out = ok(&mut signer.cmd(&["unpair", &id[..12]]));
        assert!(out.contains("Unpaired victim"), "{out}");
        let seen = count.load(Ordering::SeqCst);
        wait_until("more reconnections after the unpair", WAIT, || {
            count.load(Ordering::SeqCst) >= seen + 10
        });
        stop.store(true, Ordering::SeqCst);
        rt.block_on(churn).unwrap();

        let agents = ok(&mut signer.cmd(&["agents"]));
        assert!(
            !agents.contains(&id),
            "round {round}: the unpaired agent is back:\n{agents}"
        );
        assert!(agents.contains(&churner.id()), "{agents}");
        assert!(
            rt.block_on(reconnect(&addr, &victim, &key)).is_err(),
            "round {round}: the unpaired agent was welcomed"
        );
        signer.kill();
    }
}

fn key_blob(line: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(line.split_whitespace().nth(1).unwrap())
        .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn four_links_of_one_agent_get_no_more_than_64_requests_in_flight() {
    const LINKS: usize = 4;
    const LIMIT: usize = vmux_proto::MAX_IN_FLIGHT;
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "pi");
    let blob = key_blob(&signer.keygen("ed25519", "k"));
    let (approve, d) = holding_approver(dir.path());
    signer.start_approving("127.0.0.1:0", &approve, &[]);
    let rt = threaded_runtime();
    let id = Identity::generate();
    let addr = signer.addr.clone();
    let first = rt.block_on(pair(&addr, &id, "greedy")).expect("pairs");
    let key = first.signer().static_key;
    drop(first);
    std::fs::write(d.join("hold-signs"), "").unwrap();

    let (refused, approved) = rt.block_on(async {
        let mut links = Vec::new();
        for _ in 0..LINKS {
            links.push(reconnect(&addr, &id, &key).await.expect("link"));
        }
        let mut n: u64 = 0;
        for link in &mut links {
            for _ in 0..LIMIT {
                n += 1;
                let mut rid = [0u8; 16];
                rid[..8].copy_from_slice(&n.to_be_bytes());
                let now = now_ms();
                let req = SignRequest {
                    request_id: rid,
                    key_blob: blob.clone(),
                    data: b"to be signed".to_vec(),
                    flags: 0,
                    nonce: rid,
                    issued_at_ms: now,
                    expires_at_ms: now + 60_000,
                    context: SignContext::default(),
                };
                link.channel()
                    .send(&Message::SignRequest(req))
                    .await
                    .unwrap();
            }
        }
        // Read every link's answers until the refusals are in, or an
        // approver finishes (the hold ends after 30 s).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for mut link in links {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(m) = link.channel().recv().await {
                    if let Message::SignResponse(r) = m {
                        if tx.send(r.result).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        let (mut refused, mut approved) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
        while refused < (LINKS - 1) * LIMIT && approved == 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Err(ErrorCode::PolicyDenied))) => refused += 1,
                Ok(Some(Ok(_))) => approved += 1,
                Ok(Some(Err(other))) => panic!("unexpected refusal {other}"),
                Ok(None) | Err(_) => break,
            }
        }
        (refused, approved)
    });
    assert_eq!(approved, 0, "an approver finished: nothing was held");
    assert_eq!(
        refused,
        (LINKS - 1) * LIMIT,
        "requests over the agent's limit were not refused at once"
    );
    wait_until("the admitted approvers", WAIT, || {
        log_count(&d, "start kind=sign") >= LIMIT
    });
    assert_eq!(
        log_count(&d, "start kind=sign"),
        LIMIT,
        "more than {LIMIT} approvers ran at once for one agent"
    );
    std::fs::write(d.join("release"), "").unwrap();
}

#[test]
fn a_torn_audit_line_is_repaired_at_start_and_an_edited_line_fails_verify() {
    let mut w = World::new("ed25519");
    w.sshd.assert_login(&w.agent, "a login before the crash");
    let log = w.signer.home.join("audit.jsonl");
    // The signer dies while appending: half a line, no newline.
    w.signer.kill();
    let whole = std::fs::read_to_string(&log).unwrap();
    let half = &whole.lines().last().unwrap()[..40];
    std::fs::write(&log, format!("{whole}{half}")).unwrap();
    let torn = run(&mut w.signer.cmd(&["audit", "--verify"]));
    assert!(!torn.status.success());

    w.signer.start();
    let out = ok(&mut w.signer.cmd(&["audit", "--verify"]));
    assert!(out.contains("chain intact"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("audit") && l.contains("repaired") && l.contains("40 bytes")),
        "the repair is not recorded:\n{out}"
    );

    // Someone with the disk rewrites an earlier line.
    w.signer
        .edit_audit_line(0, "\"agent_name\":\"laptop\"", "\"agent_name\":\"mallory\"");
    let edited = run(&mut w.signer.cmd(&["audit", "--verify"]));
    assert!(!edited.status.success());
    let err = String::from_utf8_lossy(&edited.stderr);
    assert!(err.contains("line 1 was altered"), "{err}");
}
