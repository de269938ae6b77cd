//! The signer at the protocol level: a hand-driven agent sends crafted
//! requests over a real link and checks each answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signature::Verifier;
use vmux_link::{AgentSession, Identity};
use vmux_proto::{ErrorCode, Message, SignContext, SignRequest};
use vmux_signer::approver::{Approver, Decision, Verdict};
use vmux_signer::checks::now_ms;
use vmux_signer::Server;

mod common;

#[derive(Default)]
struct TestApprover {
    approve_sign: AtomicBool,
    approve_pair: AtomicBool,
    signs: AtomicUsize,
    pairs: AtomicUsize,
    /// Non-zero: approve signatures for this many seconds when offered.
    window_secs: std::sync::atomic::AtomicU64,
    offered: AtomicUsize,
    /// While set, signature decisions wait for `release`.
    held: AtomicBool,
    release: tokio::sync::Notify,
}

impl Approver for TestApprover {
    async fn decide(&self, d: &Decision, _timeout: Duration) -> Verdict {
        let yes = match d {
            Decision::Pair(_) => {
                self.pairs.fetch_add(1, Ordering::SeqCst);
                self.approve_pair.load(Ordering::SeqCst)
            }
            _ => {
                self.signs.fetch_add(1, Ordering::SeqCst);
                loop {
                    let released = self.release.notified();
                    tokio::pin!(released);
                    released.as_mut().enable();
                    if !self.held.load(Ordering::SeqCst) {
                        break;
                    }
                    released.await;
                }
                self.approve_sign.load(Ordering::SeqCst)
            }
        };
        let window = self.window_secs.load(Ordering::SeqCst);
        if d.window_max_seconds() > 0 {
            self.offered.fetch_add(1, Ordering::SeqCst);
        }
        if yes && window > 0 && d.window_max_seconds() > 0 {
            Verdict::ApproveFor(Duration::from_secs(window))
        } else if yes {
            Verdict::Approve
        } else {
            Verdict::Deny
        }
    }
}

struct Fixture {
    addr: std::net::SocketAddr,
    server: Arc<Server<Arc<TestApprover>>>,
    approver: Arc<TestApprover>,
    key_blob: Vec<u8>,
    public: ssh_key::PublicKey,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    start_with(0).await
}

async fn start_with(window_max_seconds: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let approver = Arc::new(TestApprover::default());
    approver.approve_pair.store(true, Ordering::SeqCst);
    approver.approve_sign.store(true, Ordering::SeqCst);
    let (addr, server, info) = common::serve(
        dir.path(),
        approver.clone(),
        Duration::from_secs(5),
        window_max_seconds,
    )
    .await;
    Fixture {
        addr,
        server,
        approver,
        key_blob: info.blob,
        public: info.public,
        _dir: dir,
    }
}

async fn session(f: &Fixture, id: &Identity) -> Result<AgentSession, vmux_link::LinkError> {
    common::session(f.addr, id).await
}

fn request(f: &Fixture, nonce: u8, issued: u64, expires: u64) -> SignRequest {
    SignRequest {
        request_id: [nonce; 16],
        key_blob: f.key_blob.clone(),
        data: b"to be signed".to_vec(),
        flags: 0,
        nonce: [nonce; 16],
        issued_at_ms: issued,
        expires_at_ms: expires,
        context: SignContext::default(),
    }
}

async fn ask(s: &mut AgentSession, r: SignRequest) -> Result<Vec<u8>, ErrorCode> {
    s.channel()
        .send(&Message::SignRequest(r.clone()))
        .await
        .unwrap();
    loop {
        match s.channel().recv().await.unwrap() {
            Message::SignResponse(resp) => {
                assert_eq!(resp.request_id, r.request_id);
                return resp.result;
            }
            Message::Ping(_) | Message::Pong(_) | Message::WakeEndpoint(_) => continue,
            other => panic!("unexpected {}", other.name()),
        }
    }
}

#[tokio::test]
async fn signs_valid_requests_and_refuses_replays_and_expired_ones() {
    let f = start().await;
    let id = Identity::generate();
    let mut s = session(&f, &id).await.unwrap();
    let now = now_ms();

    // The key list names the key.
    // The signer first says how to wake it (nothing configured here).
    assert_eq!(
        s.channel().recv().await.unwrap(),
        Message::WakeEndpoint(vmux_proto::WakeEndpoint::None)
    );
    s.channel().send(&Message::KeyListRequest).await.unwrap();
    match s.channel().recv().await.unwrap() {
        Message::KeyList(keys) => {
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].public_key_blob, f.key_blob);
            assert_eq!(keys[0].comment, "test");
        }
        other => panic!("unexpected {}", other.name()),
    }

    // A valid request is signed, and the signature verifies.
    let sig = ask(&mut s, request(&f, 1, now, now + 60_000))
        .await
        .unwrap();
    let sig = ssh_key::Signature::try_from(sig.as_slice()).unwrap();
    Verifier::verify(&f.public, b"to be signed", &sig).unwrap();
    assert_eq!(f.approver.signs.load(Ordering::SeqCst), 1);

    // The same nonce again is a replay, refused before anyone is asked.
    let mut replay = request(&f, 1, now, now + 60_000);
    replay.request_id = [9; 16];
    assert_eq!(ask(&mut s, replay).await, Err(ErrorCode::ReplayDetected));
    // Expired, too long a window, from the future: refused.
    assert_eq!(
        ask(&mut s, request(&f, 2, now - 70_000, now - 10_000)).await,
        Err(ErrorCode::RequestExpired)
    );
    assert_eq!(
        ask(&mut s, request(&f, 3, now, now + 600_000)).await,
        Err(ErrorCode::RequestExpired)
    );
    assert_eq!(
        ask(&mut s, request(&f, 4, now + 120_000, now + 150_000)).await,
        Err(ErrorCode::RequestExpired)
    );
    // Unknown key.
    let mut unknown = request(&f, 5, now, now + 60_000);
    unknown.key_blob = b"not a key".to_vec();
    assert_eq!(ask(&mut s, unknown).await, Err(ErrorCode::KeyNotFound));
    assert_eq!(
        f.approver.signs.load(Ordering::SeqCst),
        1,
        "checks run before approval"
    );

    // The approver says no.
    f.approver.approve_sign.store(false, Ordering::SeqCst);
    assert_eq!(
        ask(&mut s, request(&f, 6, now_ms(), now_ms() + 60_000)).await,
        Err(ErrorCode::UserDenied)
    );
}

#[tokio::test]
async fn an_agent_whose_pairing_is_denied_gets_nothing() {
    let f = start().await;
    f.approver.approve_pair.store(false, Ordering::SeqCst);
    match session(&f, &Identity::generate()).await {
        Err(vmux_link::LinkError::Refused { code, .. }) => assert_eq!(code, ErrorCode::UserDenied),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("unpaired agent was welcomed"),
    }
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let f = start().await;
    let id = Identity::generate();
    let mut s = session(&f, &id).await.unwrap();
    // A message the signer never accepts from an agent.
    s.channel().send(&Message::PairStart).await.unwrap();
    // The signer closes the link (after the wake endpoint it sends first).
    loop {
        match s.channel().recv().await {
            Ok(Message::WakeEndpoint(_)) => continue,
            Ok(other) => panic!("unexpected {}", other.name()),
            Err(_) => break,
        }
    }
    // The signer still serves a new connection.
    let mut s2 = session(&f, &id).await.unwrap();
    let now = now_ms();
    assert!(ask(&mut s2, request(&f, 7, now, now + 60_000))
        .await
        .is_ok());
}

#[tokio::test]
async fn repeated_failed_pairings_are_refused_without_asking() {
    let f = start().await;
    f.approver.approve_pair.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        assert!(session(&f, &Identity::generate()).await.is_err());
    }
    let asked = f.approver.pairs.load(Ordering::SeqCst);
    assert_eq!(asked, 5);
    // The sixth attempt within the minute is refused and nobody is asked,
    // even if the person would now say yes.
    f.approver.approve_pair.store(true, Ordering::SeqCst);
    match session(&f, &Identity::generate()).await {
        Err(vmux_link::LinkError::Refused { code, .. }) => {
            assert_eq!(code, ErrorCode::PairingInvalid)
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("pairing was not rate-limited"),
    }
    assert_eq!(f.approver.pairs.load(Ordering::SeqCst), 5);
}

/// Userauth sign data for session `sid` as `user`.
fn login_data(sid: &[u8], user: &str) -> Vec<u8> {
    vmux_ssh::testing::userauth(sid, user, None)
}

/// A server host key.
fn host() -> ssh_key::PrivateKey {
    ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap()
}

/// A request to log in to `host` as git, with the binding proof `host`
/// signed, and the agent's claims.
fn verified(f: &Fixture, nonce: u8, host: &ssh_key::PrivateKey, forwarded: bool) -> SignRequest {
    use signature::Signer;
    let now = now_ms();
    let mut r = request(f, nonce, now, now + 60_000);
    let sid = b"session-id";
    let sig: ssh_key::Signature = host.try_sign(sid).unwrap();
    r.data = login_data(sid, "git");
    r.context = SignContext {
        quality: vmux_proto::ContextQuality::Verified,
        dest_host: Some("a.example".into()),
        dest_user: Some("git".into()),
        process: Some("ssh ← bash".into()),
        namespace: None,
        forwarded,
        executable: Some("/usr/bin/ssh".into()),
        binding: Some(vmux_proto::BindingProof {
            host_key: host.public_key().to_bytes().unwrap(),
            session_id: sid.to_vec(),
            signature: Vec::<u8>::try_from(sig).unwrap(),
        }),
    };
    r
}

#[tokio::test]
async fn an_approval_window_covers_the_same_key_executable_and_verified_login_only() {
    let f = start_with(3600).await;
    f.approver.window_secs.store(1, Ordering::SeqCst);
    let mut s = session(&f, &Identity::generate()).await.unwrap();
    let signs = || f.approver.signs.load(Ordering::SeqCst);
    let (a, b) = (host(), host());

    assert!(ask(&mut s, verified(&f, 1, &a, false)).await.is_ok());
    assert_eq!(signs(), 1);
    // Same key, executable and verified login: no prompt.
    assert!(ask(&mut s, verified(&f, 2, &a, false)).await.is_ok());
    assert_eq!(signs(), 1, "the window let it through");
    // Another host key, whatever the agent calls it: asked.
    assert!(ask(&mut s, verified(&f, 3, &b, false)).await.is_ok());
    assert_eq!(signs(), 2);
    // Another user: asked.
    let mut other_user = verified(&f, 11, &a, false);
    other_user.data = login_data(b"session-id", "root");
    assert!(ask(&mut s, other_user).await.is_ok());
    assert_eq!(signs(), 3);
    // Another executable: asked.
    let mut other_exe = verified(&f, 12, &a, false);
    other_exe.context.executable = Some("/tmp/not-ssh".into());
    assert!(ask(&mut s, other_exe).await.is_ok());
    assert_eq!(signs(), 4);
    // Forwarded: always asked, and no window is offered.
    let offered = f.approver.offered.load(Ordering::SeqCst);
    assert!(ask(&mut s, verified(&f, 4, &a, true)).await.is_ok());
    assert_eq!(signs(), 5);
    assert_eq!(f.approver.offered.load(Ordering::SeqCst), offered);
    // No proof (the agent's "verified" alone): asked, no window offered.
    let mut claimed = verified(&f, 5, &a, false);
    claimed.context.binding = None;
    assert!(ask(&mut s, claimed).await.is_ok());
    assert_eq!(signs(), 6);
    // A proof for another session than the data's: asked, no window.
    let mut mismatched = verified(&f, 6, &a, false);
    mismatched.data = login_data(b"another-session", "git");
    assert!(ask(&mut s, mismatched).await.is_ok());
    assert_eq!(signs(), 7);
    // Other data under the same claims and proof: asked, no window.
    let mut not_login = verified(&f, 7, &a, false);
    not_login.data = b"to be signed".to_vec();
    assert!(ask(&mut s, not_login).await.is_ok());
    assert_eq!(signs(), 8);
    assert_eq!(f.approver.offered.load(Ordering::SeqCst), offered);
    // After the window's second has passed: asked again. (Waiting is the
    // point of this check: the window is a span of time.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(ask(&mut s, verified(&f, 8, &a, false)).await.is_ok());
    assert_eq!(signs(), 9);
}

#[tokio::test]
async fn lock_ends_a_decision_that_is_waiting_for_the_person() {
    let f = start().await;
    f.approver.held.store(true, Ordering::SeqCst);
    let mut s = session(&f, &Identity::generate()).await.unwrap();
    let now = now_ms();
    let r = request(&f, 1, now, now + 30_000);
    s.channel().send(&Message::SignRequest(r)).await.unwrap();
    // Wait (bounded) until the approver is asked.
    tokio::time::timeout(Duration::from_secs(10), async {
        while f.approver.signs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the approver was asked");
    f.server.lock();
    let answer = tokio::time::timeout(Duration::from_secs(5), next_answer(&mut s))
        .await
        .expect("lock answers at once, without the person");
    assert_eq!(answer.result, Err(ErrorCode::SignerLocked));
    // The person approving now changes nothing.
    f.approver.held.store(false, Ordering::SeqCst);
    f.approver.release.notify_waiters();
    let later = request(&f, 2, now_ms(), now_ms() + 30_000);
    assert_eq!(ask(&mut s, later).await, Err(ErrorCode::SignerLocked));
}

/// Receives the next sign response, skipping link chatter.
async fn next_answer(s: &mut AgentSession) -> vmux_proto::SignResponse {
    loop {
        match s.channel().recv().await.unwrap() {
            Message::SignResponse(resp) => return resp,
            Message::Ping(_) | Message::Pong(_) | Message::WakeEndpoint(_) => continue,
            other => panic!("unexpected {}", other.name()),
        }
    }
}

#[tokio::test]
async fn one_request_over_the_in_flight_limit_is_refused_at_once_and_answers_free_their_slots() {
    const LIMIT: usize = vmux_proto::MAX_IN_FLIGHT;
    let f = start().await;
    f.approver.held.store(true, Ordering::SeqCst);
    let mut s = session(&f, &Identity::generate()).await.unwrap();
    let now = now_ms();
    let fresh = |n: usize| {
        let mut r = request(&f, 0, now, now + 30_000);
        r.request_id = [0; 16];
        r.request_id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        r.nonce = r.request_id;
        r
    };
    for n in 0..=LIMIT {
        let msg = Message::SignRequest(fresh(n));
        s.channel().send(&msg).await.unwrap();
    }
    // The 65th is refused while the others wait for their approver.
    let refused = next_answer(&mut s).await;
    assert_eq!(refused.request_id, fresh(LIMIT).request_id);
    assert_eq!(refused.result, Err(ErrorCode::PolicyDenied));

    f.approver.held.store(false, Ordering::SeqCst);
    f.approver.release.notify_waiters();
    for _ in 0..LIMIT {
        let resp = next_answer(&mut s).await;
        let sig = ssh_key::Signature::try_from(resp.result.unwrap().as_slice()).unwrap();
        f.public.key_data().verify(b"to be signed", &sig).unwrap();
    }
    // Every slot was free before its answer was written: a full new batch,
    // sent the moment the last answer arrived, is taken whole.
    for n in LIMIT + 1..=2 * LIMIT {
        let msg = Message::SignRequest(fresh(n));
        s.channel().send(&msg).await.unwrap();
    }
    for _ in 0..LIMIT {
        assert!(next_answer(&mut s).await.result.is_ok());
    }
}
