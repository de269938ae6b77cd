//! The agent against a signer that lists a phone's passkey key and
//! answers with WebAuthn signatures, good and tampered: a client gets only
//! the good ones, and a counter that goes backwards is refused and shown
//! in the agent's status (a cloned authenticator).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;
use tokio::net::TcpListener;
mod common;

use common::{ask, fake_signer_sessions, pair_until_listed, sign_request, start_agent};
use vmux_control::agent::Client;
use vmux_proto::{KeyRecord, Message, ProviderKind, SignResponse};
use vmux_webauthn::testing::{webauthn_sk_signature, SoftAuthenticator};

const RP: &str = "signer.vmux.test";
const ORIGIN: &str = "https://signer.vmux.test:8443";

/// How the fake phone answers the next sign request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Good(u32),
    WrongChallenge(u32),
    WrongRpIdHash(u32),
    NoUv(u32),
    BadSignature(u32),
}

/// A `webauthn-sk-ecdsa` signature by `a` with these pieces (each signed
/// as it is, so only the tampered piece is wrong).
fn webauthn(a: &SoftAuthenticator, answer: Answer, data: &[u8]) -> Vec<u8> {
    let (flags, counter, rp, challenge) = match answer {
        Answer::Good(n) | Answer::BadSignature(n) => (0x05, n, RP, data),
        Answer::WrongChallenge(n) => (0x05, n, RP, &b"another request"[..]),
        Answer::WrongRpIdHash(n) => (0x05, n, "evil.test", data),
        Answer::NoUv(n) => (0x01, n, RP, data),
    };
    let mut head = sha2::Sha256::digest(rp.as_bytes()).to_vec();
    head.push(flags);
    head.extend_from_slice(&counter.to_be_bytes());
    let client = a.client_data("webauthn.get", challenge);
    let sig = a.sign(&head, &sha2::Sha256::digest(&client));
    let mut b = webauthn_sk_signature(&sig, flags, counter, &a.origin, &client, &[]);
    if answer == Answer::BadSignature(counter) {
        // A byte of s (type 4+43, ecdsa 4, r 4+33, then s).
        b[4 + 43 + 4 + 4 + 33 + 4 + 10] ^= 1;
    }
    b
}

async fn fake_signer(
    listener: TcpListener,
    phone: SoftAuthenticator,
    key_blob: Vec<u8>,
    next: Arc<Mutex<Answer>>,
) {
    fake_signer_sessions(listener, |mut ch| {
        let (phone, key_blob, next) = (phone.clone(), key_blob.clone(), next.clone());
        tokio::spawn(async move {
            while let Ok(msg) = ch.recv().await {
                match msg {
                    Message::KeyListRequest => {
                        let keys = vec![KeyRecord {
                            algorithm: vmux_webauthn::openssh::SK_ECDSA.into(),
                            public_key_blob: key_blob.clone(),
                            comment: "pixel".into(),
                            provider_kind: ProviderKind::Passkey,
                            display_name: None,
                        }];
                        let _ = ch.send(&Message::KeyList(keys)).await;
                    }
                    Message::Ping(n) => {
                        let _ = ch.send(&Message::Pong(n)).await;
                    }
                    Message::SignRequest(r) => {
                        let answer = *next.lock().unwrap();
                        let resp = SignResponse {
                            request_id: r.request_id,
                            result: Ok(webauthn(&phone, answer, &r.data)),
                        };
                        let _ = ch.send(&Message::SignResponse(resp)).await;
                    }
                    _ => {}
                }
            }
        });
    })
    .await;
}

fn login_request(blob: &[u8]) -> Vec<u8> {
    sign_request(blob, b"\0\0\0\x20 a userauth request, say")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_passkey_signatures_and_a_counter_going_backwards_never_reach_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let phone = SoftAuthenticator::new(RP, ORIGIN);
    let rp = vmux_webauthn::RelyingParty::new(RP, ORIGIN).unwrap();
    let cred = vmux_webauthn::verify_registration(
        &rp,
        b"enrol",
        &phone.create(b"enrol").response(),
        vmux_webauthn::UserVerification::Required,
    )
    .unwrap();
    let key_blob = vmux_webauthn::openssh::public_key(&cred, RP)
        .to_bytes()
        .unwrap();
    let next = Arc::new(Mutex::new(Answer::Good(5)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let signer = tokio::spawn(fake_signer(listener, phone, key_blob.clone(), next.clone()));
    let (sock, agent) = start_agent(dir.path(), addr, Duration::from_secs(5));

    let s = sock.clone();
    let result = tokio::task::spawn_blocking(move || {
        // Pair (confirming the code as the user would) until the passkey
        // key is listed: the test binary is no OpenSSH ssh, so it is.
        assert!(pair_until_listed(&s), "never listed");
        let mut seen = Vec::new();
        for answer in [
            Answer::Good(5),
            Answer::WrongChallenge(6),
            Answer::WrongRpIdHash(7),
            Answer::NoUv(8),
            Answer::BadSignature(9),
            Answer::Good(10),
            Answer::Good(3),
            Answer::Good(10),
            Answer::Good(11),
        ] {
            *next.lock().unwrap() = answer;
            let reply = ask(&s, &login_request(&key_blob));
            seen.push((answer, reply[0]));
        }
        let status = Client::new(&s)
            .with_timeout(Duration::from_secs(5))
            .status()
            .unwrap();
        (seen, status)
    })
    .await
    .unwrap();
    let (seen, status) = result;
    const SIGN_RESPONSE: u8 = 14;
    const FAILURE: u8 = 5;
    assert_eq!(
        seen,
        vec![
            (Answer::Good(5), SIGN_RESPONSE),
            (Answer::WrongChallenge(6), FAILURE),
            (Answer::WrongRpIdHash(7), FAILURE),
            (Answer::NoUv(8), FAILURE),
            (Answer::BadSignature(9), FAILURE),
            (Answer::Good(10), SIGN_RESPONSE),
            (Answer::Good(3), FAILURE),
            (Answer::Good(10), FAILURE),
            (Answer::Good(11), SIGN_RESPONSE),
        ]
    );
    let alarms: Vec<(u32, u32)> = status
        .passkeys
        .counter_alarms
        .iter()
        .map(|a| (a.stored, a.received))
        .collect();
    assert_eq!(alarms, [(10, 3), (10, 10)], "{status:?}");
    agent.abort();
    signer.abort();
}
