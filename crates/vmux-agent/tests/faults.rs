//! The agent against a misbehaving signer: a wrong signature, a response
//! for an unknown request, an unexpected message, silence, a link cut
//! mid-request, a ping flood from a signer that never reads, a key list
//! too large for an SSH client, and a key list nobody asked for. Every
//! waiting client gets an answer within the bounded wait, and the agent
//! keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ssh_key::{Algorithm, PrivateKey};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
mod common;

use common::{ask, fake_signer_sessions, pair_until_listed, sign_request, start_agent};
use vmux_control::agent::Client;
use vmux_link::Channel;
use vmux_proto::{ErrorCode, KeyRecord, Message, ProviderKind, SignResponse};

/// OpenSSH's limit on an agent's answer (`MAX_AGENT_REPLY_LEN`): a longer
/// identities answer makes `ssh-add -l` (and every `ssh`) fail.
const OPENSSH_MAX_REPLY: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    WrongSignature,
    UnknownRequestId,
    UnexpectedMessage,
    Silence,
    CutMidRequest,
    /// In its first session, lists its key, then floods pings and never
    /// reads again; later sessions behave.
    PingFloodNoRead,
    /// Lists about 1 MiB of keys with long comments (and one that is not
    /// a key at all); signs correctly.
    HugeKeyList,
    /// Answers the first key list request with its key, then sends
    /// another key list nobody asked for (with another key), then a
    /// Ping(UNASKED_MARK); answers later requests with the other key.
    UnaskedKeyList,
}

/// The ping that follows the unasked key list: its pong proves the agent
/// has handled the list (one link, in order).
const UNASKED_MARK: u64 = 0x5eed;

/// What the fake signer reports to the test.
#[derive(Debug)]
enum Event {
    /// A session opened (1, 2, …).
    Session(u32),
    /// The ping flood ended: the agent dropped the link.
    FloodEnded { pings: u64 },
    /// The agent answered the ping after the unasked key list.
    UnaskedHandled,
}

fn record(key: &PrivateKey, comment: &str) -> KeyRecord {
    KeyRecord {
        algorithm: key.algorithm().as_str().into(),
        public_key_blob: key.public_key().to_bytes().unwrap(),
        comment: comment.into(),
        provider_kind: ProviderKind::Software,
        display_name: None,
    }
}

fn put(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// An `ssh-rsa` public-key blob with a 16384-bit modulus (the most
/// OpenSSH accepts): about 2 KiB that `ssh-add -l` lists like any key.
fn big_rsa_blob(i: u32) -> Vec<u8> {
    let mut n = vec![0u8; 2049];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut n[1..]);
    n[1] |= 0x80; // 16384 bits exactly; the leading 0 keeps it positive
    n[2049 - 4..].copy_from_slice(&(i | 1).to_be_bytes());
    let mut b = Vec::new();
    put(&mut b, b"ssh-rsa");
    put(&mut b, &[1, 0, 1]);
    put(&mut b, &n);
    b
}

/// The real key first, then as many 2 KiB keys with 500-byte comments as
/// fit in one link message (1 MiB), and one blob that is not a key.
fn huge_key_list(key: &PrivateKey) -> Vec<KeyRecord> {
    let mut keys = vec![record(key, "fake")];
    keys.push(KeyRecord {
        algorithm: "ssh-ed25519".into(),
        public_key_blob: b"not a key".to_vec(),
        comment: "broken".into(),
        provider_kind: ProviderKind::Software,
        display_name: None,
    });
    for i in 0..395 {
        keys.push(KeyRecord {
            algorithm: "ssh-rsa".into(),
            public_key_blob: big_rsa_blob(i),
            comment: format!("key {i} {}", "x".repeat(500)),
            provider_kind: ProviderKind::Software,
            display_name: None,
        });
    }
    let size = Message::KeyList(keys.clone()).encode().len();
    assert!(
        size > 1_000_000 && size <= vmux_link::MAX_MESSAGE,
        "the list is about 1 MiB: {size}"
    );
    keys
}

/// A signer that lists `key` and misbehaves as `fault` says.
async fn fake_signer(
    listener: TcpListener,
    key: PrivateKey,
    fault: Fault,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut sessions = 0;
    fake_signer_sessions(listener, |ch| {
        sessions += 1;
        let _ = events.send(Event::Session(sessions));
        tokio::spawn(serve(ch, key.clone(), fault, sessions, events.clone()));
    })
    .await;
}

async fn serve(
    mut ch: Channel,
    key: PrivateKey,
    fault: Fault,
    session: u32,
    events: mpsc::UnboundedSender<Event>,
) {
    use signature::Signer;
    let wrong = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
    let mut lists = 0;
    while let Ok(msg) = ch.recv().await {
        match msg {
            Message::KeyListRequest => {
                lists += 1;
                let keys = match fault {
                    Fault::HugeKeyList => huge_key_list(&key),
                    Fault::UnaskedKeyList if lists > 1 => vec![record(&wrong, "other")],
                    _ => vec![record(&key, "fake")],
                };
                let _ = ch.send(&Message::KeyList(keys)).await;
                match fault {
                    Fault::PingFloodNoRead if session == 1 => {
                        // Never reads again: every Pong the agent sends
                        // stays in the socket buffers until they are full.
                        let mut pings = 0;
                        while ch.send(&Message::Ping(pings)).await.is_ok() {
                            pings += 1;
                        }
                        let _ = events.send(Event::FloodEnded { pings });
                        return;
                    }
                    Fault::UnaskedKeyList if lists == 1 => {
                        let unasked = vec![record(&wrong, "unasked")];
                        let _ = ch.send(&Message::KeyList(unasked)).await;
                        let _ = ch.send(&Message::Ping(UNASKED_MARK)).await;
                    }
                    _ => {}
                }
            }
            Message::Ping(n) => {
                let _ = ch.send(&Message::Pong(n)).await;
            }
            Message::Pong(UNASKED_MARK) => {
                let _ = events.send(Event::UnaskedHandled);
            }
            Message::SignRequest(r) => match fault {
                Fault::WrongSignature => {
                    let sig: ssh_key::Signature = wrong.try_sign(&r.data).unwrap();
                    let resp = SignResponse {
                        request_id: r.request_id,
                        result: Ok(Vec::<u8>::try_from(sig).unwrap()),
                    };
                    let _ = ch.send(&Message::SignResponse(resp)).await;
                }
                Fault::UnknownRequestId => {
                    let resp = SignResponse {
                        request_id: [0xee; 16],
                        result: Err(ErrorCode::Internal),
                    };
                    let _ = ch.send(&Message::SignResponse(resp)).await;
                }
                Fault::UnexpectedMessage => {
                    let _ = ch.send(&Message::PairStart).await;
                }
                Fault::Silence => {}
                Fault::CutMidRequest => break,
                Fault::PingFloodNoRead | Fault::HugeKeyList | Fault::UnaskedKeyList => {
                    let sig: ssh_key::Signature = key.try_sign(&r.data).unwrap();
                    let resp = SignResponse {
                        request_id: r.request_id,
                        result: Ok(Vec::<u8>::try_from(sig).unwrap()),
                    };
                    let _ = ch.send(&Message::SignResponse(resp)).await;
                }
            },
            _ => {}
        }
    }
}

/// The identities the agent lists: `(blob, comment)`, and the answer's
/// size.
fn identities(sock: &Path) -> (Vec<(Vec<u8>, String)>, usize) {
    let a = ask(sock, &[0, 0, 0, 1, 11]);
    assert_eq!(a[0], 12, "SSH_AGENT_IDENTITIES_ANSWER");
    let mut f = &a[5..];
    fn take(f: &mut &[u8]) -> Vec<u8> {
        let n = u32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
        let s = f[4..4 + n].to_vec();
        *f = &f[4 + n..];
        s
    }
    let count = u32::from_be_bytes(a[1..5].try_into().unwrap()) as usize;
    let ids = (0..count)
        .map(|_| {
            let blob = take(&mut f);
            let comment = String::from_utf8(take(&mut f)).unwrap();
            (blob, comment)
        })
        .collect();
    assert!(f.is_empty(), "nothing after the last identity");
    (ids, a.len())
}

/// An agent connected to a fake signer.
struct Running {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    blob: Vec<u8>,
    events: mpsc::UnboundedReceiver<Event>,
    agent: tokio::task::JoinHandle<()>,
    signer: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a fake signer with `fault` and an agent that pairs with it
    /// (its user confirming the code), and waits until a key is listed.
    async fn start(fault: Fault) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let blob = key.public_key().to_bytes().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, events) = mpsc::unbounded_channel();
        let signer = tokio::spawn(fake_signer(listener, key, fault, tx));
        let (sock_path, agent) = start_agent(dir.path(), addr, Duration::from_secs(3));
        // Wait until the fake's key is listed (the agent connected),
        // confirming the pairing code on the agent as its user would.
        let sock = sock_path.clone();
        let listed = tokio::task::spawn_blocking(move || pair_until_listed(&sock))
            .await
            .unwrap();
        assert!(listed, "{fault:?}: the agent never listed the key");
        Running {
            _dir: dir,
            sock: sock_path,
            blob,
            events,
            agent,
            signer,
        }
    }

    /// The next event from the fake signer, within `limit`.
    async fn next_event(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Asserts that the fake signer's next event is its first session.
    async fn first_session(&mut self) {
        assert!(matches!(
            self.next_event(Duration::from_secs(5)).await,
            Some(Event::Session(1))
        ));
    }

    /// The agent's answer to a sign request with the fake's key.
    async fn sign(&self) -> Vec<u8> {
        let blob = self.blob.clone();
        self.client(move |sock| ask(sock, &sign_request_for(&blob)))
            .await
    }

    /// The comments of the keys the agent lists.
    async fn comments(&self) -> Vec<String> {
        let (ids, _) = self.client(identities).await;
        ids.into_iter().map(|(_, c)| c).collect()
    }

    /// Runs a blocking client call against the agent's socket.
    async fn client<T: Send + 'static>(&self, f: impl FnOnce(&Path) -> T + Send + 'static) -> T {
        let sock = self.sock.clone();
        tokio::task::spawn_blocking(move || f(&sock)).await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.agent.abort();
        self.signer.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_in_a_bounded_failure_and_the_agent_serves_on() {
    for fault in [
        Fault::WrongSignature,
        Fault::UnknownRequestId,
        Fault::UnexpectedMessage,
        Fault::Silence,
        Fault::CutMidRequest,
    ] {
        let r = Running::start(fault).await;
        let t = Instant::now();
        let answer = r.sign().await;
        let took = t.elapsed();
        assert_eq!(answer, [5], "{fault:?}: SSH_AGENT_FAILURE");
        assert!(
            took < Duration::from_secs(6),
            "{fault:?}: within the 3 s bound ({took:?})"
        );
        let alive = r.client(|sock| ask(sock, &[0, 0, 0, 1, 11])).await;
        assert_eq!(alive[0], 12, "{fault:?}: the agent still answers");
    }
}

/// A signer that floods pings and never reads would fill the agent's
/// queue of pongs and wedge its link for good (no reconnect, every
/// request to it waiting out its timeout). The agent drops that link at
/// once, keeps answering its clients, and reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_flooding_pings_and_never_reading_loses_its_link_not_the_agent() {
    let mut r = Running::start(Fault::PingFloodNoRead).await;
    r.first_session().await;
    let flood = Instant::now();
    // Other clients are answered from the cache meanwhile.
    let (ids, took) = r
        .client(|sock| {
            let t = Instant::now();
            (identities(sock).0, t.elapsed())
        })
        .await;
    assert_eq!(ids.len(), 1, "the key is listed during the flood");
    assert!(took < Duration::from_secs(5), "listing took {took:?}");
    // The link is dropped well before the 45 s silence limit, and the
    // agent connects again.
    let mut ended = None;
    let mut reconnected = false;
    while ended.is_none() || !reconnected {
        match r.next_event(Duration::from_secs(20)).await {
            Some(Event::FloodEnded { pings }) => ended = Some(pings),
            Some(Event::Session(2)) => reconnected = true,
            other => panic!(
                "the agent did not drop the flooding link and reconnect within {:?} (flood ended: {ended:?}, reconnected: {reconnected}): {other:?}",
                flood.elapsed()
            ),
        }
    }
    println!(
        "the agent dropped the link after {:?} and {} pings",
        flood.elapsed(),
        ended.unwrap_or_default()
    );
    // The new session works: a signature goes through.
    let answer = r.sign().await;
    assert_eq!(answer[0], 14, "signed after reconnecting: {answer:?}");
    let (ids, _) = r.client(identities).await;
    assert_eq!(ids.len(), 1);
}

/// A signer listing 1 MiB of keys (long comments, 2 KiB keys, one blob
/// that is not a key) would make the identities answer four times over
/// OpenSSH's limit, and `ssh-add -l` (and every `ssh`) fail. The agent
/// keeps the answer under the limit: real `ssh-add -l` works and lists
/// what fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_key_list_does_not_break_ssh_add() {
    let r = Running::start(Fault::HugeKeyList).await;
    let (ids, size) = r.client(identities).await;
    assert!(
        size <= OPENSSH_MAX_REPLY,
        "identities answer of {size} bytes"
    );
    assert_eq!(ids[0].0, r.blob, "the signer's first key comes first");
    assert!(ids.iter().all(|(b, _)| b != b"not a key"));
    // Filled up to the limit, not cut short: the largest entry would not
    // fit any more.
    let largest = ids.iter().map(|(b, c)| 8 + b.len() + c.len()).max();
    assert!(size + largest.unwrap_or(0) > OPENSSH_MAX_REPLY, "{size}");
    assert!(ids.len() <= vmux_agent::MAX_KEYS_PER_SIGNER);
    assert!(ids
        .iter()
        .all(|(_, c)| c.len() <= vmux_agent::MAX_KEY_COMMENT));
    let out = r
        .client(|sock| {
            std::process::Command::new("ssh-add")
                .arg("-l")
                .env("SSH_AUTH_SOCK", sock)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
        .await;
    assert!(out.status.success(), "ssh-add -l: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), ids.len(), "{stdout}");
    assert!(
        stdout.lines().next().is_some_and(|l| l.contains(" fake ")),
        "{stdout}"
    );
    let answer = r.sign().await;
    assert_eq!(answer[0], 14, "the listed key still signs");
}

/// A key list the agent did not ask for is ignored: a signer cannot
/// replace its keys (or make the agent rewrite its state) whenever it
/// likes. An asked-for list (`vmux agent refresh`) still replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_key_list_is_ignored() {
    let mut r = Running::start(Fault::UnaskedKeyList).await;
    r.first_session().await;
    assert!(
        matches!(
            r.next_event(Duration::from_secs(10)).await,
            Some(Event::UnaskedHandled)
        ),
        "the agent never answered the ping after the unasked list"
    );
    assert_eq!(
        r.comments().await,
        ["fake"],
        "the unasked list replaced the keys"
    );
    // Asked for: accepted.
    let refreshed = r
        .client(|sock| {
            Client::new(sock)
                .with_timeout(Duration::from_secs(10))
                .refresh()
                .unwrap()
        })
        .await;
    assert_eq!(refreshed, 1);
    assert_eq!(
        r.comments().await,
        ["other"],
        "the asked-for list was not taken"
    );
}

fn sign_request_for(blob: &[u8]) -> Vec<u8> {
    sign_request(blob, b"challenge")
}
