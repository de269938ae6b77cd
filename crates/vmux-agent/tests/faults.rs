//! The agent against a misbehaving signer: a wrong signature, a response
//! for an unknown request, an unexpected message, silence, and a link cut
//! mid-request. Every waiting client gets SSH_AGENT_FAILURE within the
//! bounded wait, and the agent keeps serving.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ssh_key::{Algorithm, PrivateKey};
use tokio::net::TcpListener;
use vmux_agent::{control, AgentConfig, AgentSocket};
use vmux_link::{open_as_signer, Channel, Identity, PairingGate, PairingRequest, StaticKey};
use vmux_proto::{ErrorCode, KeyRecord, Message, ProviderKind, SignResponse};

struct Yes;

impl PairingGate for Yes {
    fn is_paired(&self, _: &StaticKey) -> bool {
        true
    }
    async fn approve(&self, _: PairingRequest) -> Result<(), ErrorCode> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    WrongSignature,
    UnknownRequestId,
    UnexpectedMessage,
    Silence,
    CutMidRequest,
}

/// A signer that lists `key` and answers sign requests wrongly.
async fn fake_signer(listener: TcpListener, key: PrivateKey, fault: Fault) {
    let identity = Identity::generate();
    let wrong = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(channel) = Channel::accept(stream, &identity).await else {
            continue;
        };
        let Ok(session) = open_as_signer(channel, "fake", &Yes).await else {
            continue;
        };
        let mut ch = session.channel;
        let record = KeyRecord {
            algorithm: "ssh-ed25519".into(),
            public_key_blob: key.public_key().to_bytes().unwrap(),
            comment: "fake".into(),
            provider_kind: ProviderKind::Software,
            display_name: String::new(),
        };
        while let Ok(msg) = ch.recv().await {
            match msg {
                Message::KeyListRequest => {
                    let _ = ch.send(&Message::KeyList(vec![record.clone()])).await;
                }
                Message::Ping(n) => {
                    let _ = ch.send(&Message::Pong(n)).await;
                }
                Message::SignRequest(r) => match fault {
                    Fault::WrongSignature => {
                        use signature::Signer;
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
                },
                _ => {}
            }
        }
    }
}

fn sign_request(blob: &[u8]) -> Vec<u8> {
    let mut b = vec![13];
    for s in [blob, b"challenge"] {
        b.extend_from_slice(&(s.len() as u32).to_be_bytes());
        b.extend_from_slice(s);
    }
    b.extend_from_slice(&0u32.to_be_bytes());
    let mut m = (b.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&b);
    m
}

fn ask(sock: &std::path::Path, msg: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(msg).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut a = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut a).unwrap();
    a
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
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let blob = key.public_key().to_bytes().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let signer = tokio::spawn(fake_signer(listener, key, fault));
        let config = AgentConfig {
            name: "test".into(),
            signers: vec![addr],
            sign_timeout: Duration::from_secs(3),
            cert_validity: Duration::from_secs(60),
            cert_renew_before: Duration::from_secs(10),
            state_path: dir.path().join("agent-state.json"),
            identity: vmux_agent::IdentityStore::File(dir.path().join("agent-identity")),
            discovery: false,
            wake: Default::default(),
            apns_key_files: Vec::new(),
        };
        let sock_path = dir.path().join("agent.sock");
        let socket = AgentSocket::bind(&sock_path).unwrap();
        let agent = tokio::spawn(async move {
            let _ = vmux_agent::run(config, &socket).await;
        });
        // Wait until the fake's key is listed (the agent connected),
        // confirming the pairing code on the agent as its user would.
        let sock = sock_path.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            loop {
                if let Ok(status) = control::query(&sock, "status", Duration::from_secs(5)) {
                    if let Some(code) = status["signers"][0]["pairing_code"].as_str() {
                        let _ = control::query(
                            &sock,
                            &format!("pair-confirm {code}"),
                            Duration::from_secs(5),
                        );
                    }
                }
                let a = ask(&sock, &[0, 0, 0, 1, 11]);
                if a.len() > 5 && a[1..5] != [0, 0, 0, 0] {
                    return true;
                }
                if t.elapsed() > Duration::from_secs(20) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .await
        .unwrap();
        assert!(listed, "{fault:?}: the agent never listed the key");
        let sock = sock_path.clone();
        let (answer, took) = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            (ask(&sock, &sign_request(&blob)), t.elapsed())
        })
        .await
        .unwrap();
        assert_eq!(answer, [5], "{fault:?}: SSH_AGENT_FAILURE");
        assert!(
            took < Duration::from_secs(6),
            "{fault:?}: within the 3 s bound ({took:?})"
        );
        let sock = sock_path.clone();
        let alive = tokio::task::spawn_blocking(move || ask(&sock, &[0, 0, 0, 1, 11]))
            .await
            .unwrap();
        assert_eq!(alive[0], 12, "{fault:?}: the agent still answers");
        agent.abort();
        signer.abort();
    }
}
