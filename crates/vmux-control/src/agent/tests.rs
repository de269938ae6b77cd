use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;

use super::*;

fn requests() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Watch { generation: 7 },
        Request::Refresh,
        Request::Cert,
        Request::PairConfirm {
            code: "123456".into(),
        },
        Request::PairDeny,
        Request::PairSigner {
            address: "pi.local:7788".into(),
        },
    ]
}

fn status() -> Status {
    Status {
        name: "laptop".into(),
        id: "a1".into(),
        signers: vec![SignerStatus {
            address: "pi:7788".into(),
            id: Some("s1".into()),
            name: Some("pi".into()),
            connected: true,
            since: 5,
            last_error: None,
            pairing_code: None,
            pairing_signer_approved: false,
            wake: None,
        }],
        certificate: CertStatusOwned {
            state: "none".into(),
            line: "No session certificate".into(),
            valid_until: None,
            serial: None,
            principals: vec![],
        },
        keys: vec![],
        pending_requests: 1,
        last_wake: Some((3, "sent".into())),
        passkeys: PasskeyStatus {
            clients: vec![SeenClient {
                executable: "/usr/bin/ssh".into(),
                kind: ClientKind::OldOpenSsh {
                    version: "OpenSSH_9.2p1".into(),
                },
            }],
            counter_alarms: vec![],
        },
        waiting: vec![WaitingRequest {
            id: 1,
            kind: vmux_proto::DecisionKind::Sign,
            signer: "pi".into(),
            key: "work".into(),
            host: "h".into(),
            user: "u".into(),
            process: "ssh".into(),
            namespace: String::new(),
            since_ms: 9,
        }],
        finished: vec![Finished {
            id: 0,
            signer: "pi".into(),
            outcome: Outcome::Denied,
            reason: "signer refused: userDenied".into(),
        }],
        generation: 4,
    }
}

#[test]
fn every_request_round_trips_through_its_message() {
    for r in requests() {
        let body = r.to_message();
        let mut rest = &body[..];
        assert_eq!(take_u8(&mut rest), Some(EXTENSION_REQUEST));
        assert_eq!(take_string(&mut rest), Some(EXTENSION.as_bytes()));
        assert_eq!(Request::from_contents(rest), Some(r));
    }
    let watch = Request::Watch { generation: 7 }.to_message();
    assert!(watch.ends_with(br#"{"cmd":"watch","generation":7}"#));
}

#[test]
fn every_reply_round_trips_through_its_answer() {
    for r in [
        Reply::Status(Box::new(status())),
        Reply::Refreshed(2),
        Reply::ValidUntil(1_700_000_000),
        Reply::Confirmed("pi:7788".into()),
        Reply::Denied(1),
        Reply::Pairing("pi:7788".into()),
        Reply::Error("no pairing is waiting for confirmation".into()),
    ] {
        let answer = r.to_answer();
        let len = u32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]) as usize;
        assert_eq!(len, answer.len() - 4);
        assert_eq!(Reply::from_answer(&answer[4..]), Some(r));
    }
    // As the agent's answers always were: one key.
    let denied = Reply::Denied(1).to_answer();
    assert!(denied.ends_with(br#"{"refused":1}"#));
    assert!(Reply::Error("x".into())
        .to_answer()
        .ends_with(br#"{"error":"x"}"#));
}

#[test]
fn malformed_requests_and_unknown_tags_are_no_request() {
    let contents = |json: &[u8]| {
        let mut c = Vec::new();
        put_string(&mut c, json);
        c
    };
    for bad in [
        &b""[..],
        b"status",
        b"{}",
        br#"{"cmd":"launch"}"#,
        br#"{"cmd":"watch"}"#,
        br#"{"cmd":"watch","generation":"7"}"#,
        br#"{"cmd":"pair-confirm","code":7}"#,
        br#"{"cmd":"status"} trailing"#,
        b"\xff\xfe",
    ] {
        assert_eq!(Request::from_contents(&contents(bad)), None, "{bad:?}");
    }
    // Not one string, or something after it.
    assert_eq!(Request::from_contents(br#"{"cmd":"status"}"#), None);
    let mut extra = contents(br#"{"cmd":"status"}"#);
    extra.push(0);
    assert_eq!(Request::from_contents(&extra), None);
    let full = contents(br#"{"cmd":"status"}"#);
    for cut in 0..full.len() {
        assert_eq!(Request::from_contents(&full[..cut]), None);
    }
    assert_eq!(Request::from_contents(&full), Some(Request::Status));
}

/// An agent that answers one connection with `answer` (raw bytes) and
/// hands back the request body it read.
fn agent_answering(answer: Vec<u8>) -> (tempfile::TempDir, PathBuf, JoinHandle<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let served = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        let _ = s.write_all(&answer);
        body
    });
    (dir, sock, served)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_string(&mut out, body);
    out
}

#[test]
fn typed_answers_come_back_typed() {
    let (_dir, sock, served) = agent_answering(Reply::Refreshed(3).to_answer());
    assert_eq!(Client::new(&sock).refresh().unwrap(), 3);
    assert_eq!(
        Request::from_contents(&served.join().unwrap()[(1 + 4 + EXTENSION.len())..]),
        Some(Request::Refresh)
    );
    let (_dir, sock, _) = agent_answering(Reply::Status(Box::new(status())).to_answer());
    assert_eq!(Client::new(&sock).watch(3).unwrap(), status());
}

#[test]
fn a_refusal_is_refused_with_the_agents_sentence() {
    let why = "no pairing is waiting for confirmation";
    let (_dir, sock, _) = agent_answering(Reply::Error(why.into()).to_answer());
    match Client::new(&sock).pair_confirm("123456") {
        Err(ControlError::Refused(s)) => assert_eq!(s, why),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nothing_running_closing_early_or_garbage_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let nothing = Client::new(dir.path().join("none.sock"));
    let e = nothing.status().unwrap_err();
    assert!(
        matches!(e, ControlError::NotRunning(Peer::Agent, _)),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("no agent is running on "), "{e}");

    let not_vmux = |answer: Vec<u8>| {
        let (_dir, sock, _) = agent_answering(answer);
        Client::new(&sock)
            .with_timeout(Duration::from_secs(5))
            .status()
            .unwrap_err()
    };
    let garbage = [
        // SSH_AGENT_FAILURE: an agent that is not vmux.
        vec![0, 0, 0, 1, FAILURE],
        // Success, but no string.
        vec![0, 0, 0, 1, SUCCESS],
        // A string that is not a reply.
        framed(&[&[SUCCESS][..], &framed(b"{\"launch\":1}")].concat()),
        framed(&[&[SUCCESS][..], &framed(b"\xff")].concat()),
        // Another request's reply.
        Reply::Refreshed(1).to_answer(),
        // Longer than any agent answer.
        ((MAX_ANSWER + 1) as u32).to_be_bytes().to_vec(),
    ];
    for answer in garbage {
        let e = not_vmux(answer.clone());
        assert!(
            matches!(e, ControlError::NotVmux(Peer::Agent, _)),
            "{answer:?}: {e:?}"
        );
        assert!(e.to_string().contains("is it a vmux agent?"), "{e}");
    }
    // Closed before a whole answer: the length only, or nothing.
    for cut in [vec![], vec![0, 0, 0, 9, SUCCESS]] {
        let e = not_vmux(cut);
        assert!(matches!(e, ControlError::Io(Peer::Agent, _, _)), "{e:?}");
        assert!(e.to_string().starts_with("talking to the agent on "), "{e}");
    }
}

#[test]
fn public_keys_are_openssh_lines() {
    let mut key = Vec::new();
    put_string(&mut key, b"ssh-ed25519");
    put_string(&mut key, &[1; 32]);
    let mut cert = Vec::new();
    put_string(&mut cert, b"ssh-ed25519-cert-v01@openssh.com");
    put_string(&mut cert, b"nonce");
    let mut answer = vec![IDENTITIES_ANSWER, 0, 0, 0, 4];
    for (blob, comment) in [
        (&key[..], &b"work"[..]),
        (&key[..], b""),
        (&cert[..], b""),
        // Names no key type: left out.
        (&[0, 0, 0, 0][..], b"odd"),
    ] {
        put_string(&mut answer, blob);
        put_string(&mut answer, comment);
    }
    let (_dir, sock, served) = agent_answering(framed(&answer));
    let lines = Client::new(&sock).public_keys().unwrap();
    assert_eq!(served.join().unwrap(), [REQUEST_IDENTITIES]);
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert_eq!(
        lines,
        [
            format!("ssh-ed25519 {} work", b64(&key)),
            format!("ssh-ed25519 {}", b64(&key)),
            format!("ssh-ed25519-cert-v01@openssh.com {} ", b64(&cert)),
        ]
    );
    // An answer that lists more than it holds.
    let (_dir, sock, _) = agent_answering(framed(&[IDENTITIES_ANSWER, 0, 0, 0, 9]));
    let e = Client::new(&sock).public_keys().unwrap_err();
    assert!(matches!(e, ControlError::NotVmux(..)), "{e:?}");
}
