use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::thread::JoinHandle;

use super::*;

fn requests() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Lock,
        Request::Unlock {
            passphrase: Zeroizing::new("correct horse".into()),
        },
        Request::Unpair { id: "a1b2".into() },
        Request::PhoneAdd {
            name: "pixel".into(),
        },
        Request::Phones,
        Request::PhoneRemove {
            name: "pixel".into(),
        },
        Request::PairPending,
        Request::PairConfirm {
            code: "123456".into(),
        },
        Request::Ca,
    ]
}

#[test]
fn every_request_round_trips_through_its_line() {
    for r in requests() {
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(Request::from_line(&line), Some(r));
    }
    // The signer's requests as they always were.
    assert_eq!(
        Request::from_line("{\"cmd\":\"pairconfirm\",\"code\":\"1\"}\n"),
        Some(Request::PairConfirm { code: "1".into() })
    );
}

#[test]
fn malformed_requests_and_unknown_tags_are_no_request() {
    for bad in [
        "",
        "status",
        "{}",
        r#"{"cmd":"shutdown"}"#,
        r#"{"cmd":"unlock"}"#,
        r#"{"cmd":"unlock","passphrase":7}"#,
        r#"{"cmd":"status"} {"cmd":"lock"}"#,
    ] {
        assert_eq!(Request::from_line(bad), None, "{bad:?}");
    }
}

#[test]
fn the_passphrase_is_not_in_debug_output() {
    let r = Request::Unlock {
        passphrase: Zeroizing::new("correct horse".into()),
    };
    let shown = format!("{r:?} {:?}", requests());
    assert!(!shown.contains("correct horse"), "{shown}");
    assert!(shown.contains("Unlock"), "{shown}");
    assert!(shown.contains("pixel"), "{shown}");
}

#[test]
fn every_reply_round_trips_through_its_line() {
    let agent = AgentRef {
        id: "a1".into(),
        name: "laptop".into(),
    };
    for r in [
        Reply::Status(Status {
            name: "pi".into(),
            locked: false,
        }),
        Reply::Locked(true),
        Reply::Unpaired(Some(agent.clone())),
        Reply::Unpaired(None),
        Reply::PhoneLink(PhoneLink {
            link: "https://pi/enrol#t".into(),
            trust: Some(TrustLink {
                url: "http://10.0.0.2:80/t".into(),
                fingerprint: "SHA256:x".into(),
            }),
        }),
        Reply::Phones(PhoneList {
            phones: vec![Phone {
                name: "pixel".into(),
                added_at: 1,
                last_seen: None,
                online: true,
                push: 1,
                last_push: Some(LastPush {
                    sent_at: Some(2),
                    result: Some("201 Created".into()),
                    answered_at: None,
                }),
            }],
            origin: "https://pi".into(),
        }),
        Reply::Removed("pixel".into()),
        Reply::Pairing(Some(PendingPairing {
            agent: agent.name.clone(),
            id: agent.id.clone(),
            code: "123456".into(),
        })),
        Reply::Pairing(None),
        Reply::Confirmed(PairingAgent {
            agent: agent.name,
            id: agent.id,
        }),
        Reply::Ca(CaLines {
            ca: "software".into(),
            lines: vec!["ssh-ed25519 AAAA ca".into()],
            missing: vec![],
            sshd: vec![],
        }),
        Reply::Error("the signer is locked".into()),
    ] {
        let line = r.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), r);
    }
    assert_eq!(Reply::Locked(true).to_line(), "{\"locked\":true}\n");
}

/// A signer that answers one connection with `answer` (raw bytes) and
/// hands back the request line it read.
fn signer_answering(answer: Vec<u8>) -> (tempfile::TempDir, Client, JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("signer.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let served = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let _ = (&s).write_all(&answer);
        line
    });
    (dir, Client::new(sock), served)
}

#[test]
fn typed_answers_come_back_typed() {
    let (_dir, c, served) = signer_answering(Reply::Locked(false).to_line().into_bytes());
    c.unlock(&Zeroizing::new("pass".into())).unwrap();
    assert_eq!(
        Request::from_line(&served.join().unwrap()),
        Some(Request::Unlock {
            passphrase: Zeroizing::new("pass".into())
        })
    );
    let (_dir, c, _) = signer_answering(Reply::Pairing(None).to_line().into_bytes());
    assert_eq!(c.pair_pending().unwrap(), None);
}

#[test]
fn a_refusal_is_refused_with_the_signers_sentence() {
    let why = "no pairing with that code waits for approval";
    let (_dir, c, _) = signer_answering(Reply::Error(why.into()).to_line().into_bytes());
    match c.pair_confirm("000000") {
        Err(ControlError::Refused(s)) => assert_eq!(s, why),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nothing_running_closing_early_or_garbage_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let e = Client::new(dir.path().join("none.sock"))
        .status()
        .unwrap_err();
    assert!(
        matches!(e, ControlError::NotRunning(Peer::Signer, _)),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("no signer is running here ("),
        "{e}"
    );

    let mut huge = vec![b'"'; MAX_ANSWER + 10];
    huge.push(b'\n');
    for answer in [
        // Closed without a word, or in the middle of a line.
        Vec::new(),
        b"{\"locked\":".to_vec(),
        // Lines that are not a reply, or another request's.
        b"garbage\n".to_vec(),
        b"\xff\xfe\n".to_vec(),
        b"{\"locked\":true,\"name\":\"pi\"}\n".to_vec(),
        Reply::Removed("pixel".into()).to_line().into_bytes(),
        // Longer than any answer.
        huge,
    ] {
        let (_dir, c, _) = signer_answering(answer.clone());
        let e = c.status().unwrap_err();
        assert!(
            matches!(e, ControlError::NotVmux(Peer::Signer, _)),
            "{:?}: {e:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
        assert!(
            e.to_string()
                .contains("gave an answer vmux does not understand"),
            "{e}"
        );
    }
}
