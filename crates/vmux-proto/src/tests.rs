//! Exhaustive encoding tests: round trips, every truncation, every
//! trailing byte, random input, and the test vectors of docs/PROTOCOL.md.

use super::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A sign request with id 01…01, nonce 02…02, made at 1_700_000_000_000
/// ms and valid for a minute.
fn sign_request(key_blob: Vec<u8>, data: Vec<u8>, flags: u32, context: SignContext) -> Message {
    Message::SignRequest(SignRequest {
        request_id: [0x01; 16],
        key_blob,
        data,
        flags,
        nonce: [0x02; 16],
        issued_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_000_060_000,
        context,
    })
}

fn samples() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: "laptop".into(),
            want_pairing: true,
        }),
        Message::PairStart,
        Message::PairCommit([7; 32]),
        Message::PairNonce([8; 32]),
        Message::PairReveal([9; 32]),
        Message::Welcome(Welcome {
            version: 1,
            name: "pi".into(),
        }),
        Message::Refused(Refused {
            code: ErrorCode::PairingInvalid,
            message: "no".into(),
        }),
        Message::KeyListRequest,
        Message::KeyList(vec![]),
        Message::KeyList(vec![
            KeyRecord {
                algorithm: "ssh-ed25519".into(),
                public_key_blob: vec![1, 2, 3],
                comment: "work".into(),
                provider_kind: ProviderKind::Software,
                display_name: None,
            },
            KeyRecord {
                algorithm: "ecdsa-sha2-nistp256".into(),
                public_key_blob: vec![4; 104],
                comment: "token".into(),
                provider_kind: ProviderKind::HardwareToken,
                display_name: Some("YubiKey".into()),
            },
        ]),
        sign_request(
            vec![5; 51],
            vec![6; 300],
            SSH_AGENT_RSA_SHA2_512,
            SignContext {
                quality: ContextQuality::Verified,
                dest_host: Some("example.org".into()),
                dest_user: Some("git".into()),
                process: Some("ssh ← bash".into()),
                namespace: None,
                forwarded: true,
                executable: Some("/usr/bin/ssh".into()),
                binding: Some(BindingProof {
                    host_key: vec![7; 51],
                    session_id: vec![8; 32],
                    signature: vec![9; 83],
                }),
            },
        ),
        sign_request(vec![5; 51], b"SSHSIG".to_vec(), 0, SignContext::default()),
        Message::SignResponse(SignResponse {
            request_id: [1; 16],
            result: Ok(vec![9; 83]),
        }),
        Message::SignResponse(SignResponse {
            request_id: [1; 16],
            result: Err(ErrorCode::UserDenied),
        }),
        Message::CertRequest(CertRequest {
            request_id: [3; 16],
            public_key_blob: vec![4; 104],
            validity_seconds: 28_800,
            automatic: true,
        }),
        Message::CertResponse(CertResponse {
            request_id: [3; 16],
            result: Ok(IssuedCert {
                certificate: vec![5; 300],
                ca_public_key: vec![6; 51],
                valid_after: 1_700_000_000,
                valid_before: 1_700_028_800,
            }),
        }),
        Message::CertResponse(CertResponse {
            request_id: [3; 16],
            result: Err(ErrorCode::PolicyDenied),
        }),
        Message::WakeEndpoint(WakeEndpoint::None),
        Message::WakeEndpoint(WakeEndpoint::Apns {
            device_token: "ab12".into(),
            topic: "app.vmux.signer".into(),
            sandbox: true,
        }),
        Message::WakeEndpoint(WakeEndpoint::Webhook {
            url: "https://ntfy.example/vmux".into(),
        }),
        Message::Ping(42),
        Message::Pong(42),
    ]
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes).as_ref(), Ok(&m), "{}", m.name());
    }
}

#[test]
fn every_truncation_is_an_error() {
    for m in samples() {
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "{} cut at {cut} decoded",
                m.name()
            );
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for m in samples() {
        let mut bytes = m.encode();
        bytes.push(0);
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::TrailingBytes),
            "{}",
            m.name()
        );
    }
}

#[test]
fn unknown_type_and_bad_values() {
    assert_eq!(Message::decode(&[200]), Err(DecodeError::UnknownType(200)));
    assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
    // Hello whose name is not UTF-8.
    let bad = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0xff];
    assert_eq!(
        Message::decode(&bad),
        Err(DecodeError::BadValue("UTF-8 string"))
    );
    // A key list claiming 4 billion entries in 5 bytes fails without
    // allocating for them.
    assert_eq!(
        Message::decode(&[11, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn error_codes_round_trip() {
    for c in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_wire(c.to_wire()), c);
        assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
    }
    assert_eq!(ErrorCode::parse("noSuchCode"), None);
    for q in ContextQuality::ALL {
        assert_eq!(ContextQuality::parse(q.as_str()), Some(q));
    }
    assert_eq!(ContextQuality::parse(""), None);
    assert_eq!(ErrorCode::from_wire(0), ErrorCode::Internal);
    assert_eq!(ErrorCode::from_wire(999), ErrorCode::Internal);
}

/// Random byte strings, and random mutations of valid messages, never panic.
#[test]
fn random_input_never_panics() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let samples: Vec<Vec<u8>> = samples().iter().map(Message::encode).collect();
    for i in 0..200_000 {
        let mut buf = if i % 2 == 0 {
            let len = (next() % 64) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            samples[(next() as usize) % samples.len()].clone()
        };
        if !buf.is_empty() {
            let pos = (next() as usize) % buf.len();
            buf[pos] = next() as u8;
        }
        let _ = Message::decode(&buf);
    }
}

/// A sign request with one-byte key and data and the smallest times, for
/// `context`.
fn small_sign_request(context: SignContext) -> Message {
    Message::SignRequest(SignRequest {
        request_id: [0x01; 16],
        key_blob: vec![0xaa],
        data: vec![0xbb],
        flags: 0,
        nonce: [0x02; 16],
        issued_at_ms: 1,
        expires_at_ms: 2,
        context,
    })
}

/// The vectors printed in docs/PROTOCOL.md.
#[test]
fn protocol_md_vectors() {
    let hello = Message::Hello(Hello {
        version: 1,
        name: "laptop".into(),
        want_pairing: false,
    });
    assert_eq!(hex(&hello.encode()), "0100000001000000066c6170746f7000");
    let sign = Message::SignResponse(SignResponse {
        request_id: [0xab; 16],
        result: Err(ErrorCode::UserDenied),
    });
    assert_eq!(
        hex(&sign.encode()),
        "0dabababababababababababababababab00000001"
    );
    // docs/PROTOCOL.md's SignRequest, in version 2: the version-1 bytes,
    // then executable "" and no binding proof.
    let doc = sign_request(
        vec![1, 2, 3],
        vec![4, 5],
        4,
        SignContext {
            quality: ContextQuality::Claimed,
            dest_host: Some("example.org".into()),
            dest_user: Some("git".into()),
            ..SignContext::default()
        },
    );
    assert_eq!(
        hex(&doc.encode()),
        concat!(
            "0c010101010101010101010101010101010000000301020300000002040500000004",
            "020202020202020202020202020202020000018bcfe568000000018bcfe65260",
            "010000000b6578616d706c652e6f726700000003676974000000000000000000",
            "0000000000",
        )
    );
    assert_eq!(doc.encode().len(), 103);
    // A sign request's context (version 2): quality, host, user,
    // process, namespace, forwarded, executable, then the binding proof
    // (a boolean, and when true host key, session id, signature).
    let req = small_sign_request(SignContext {
        quality: ContextQuality::Verified,
        dest_host: Some("h".into()),
        dest_user: Some("u".into()),
        process: None,
        namespace: None,
        forwarded: false,
        executable: Some("/s".into()),
        binding: Some(BindingProof {
            host_key: vec![0xcc],
            session_id: vec![0xdd],
            signature: vec![0xee],
        }),
    });
    assert_eq!(
        hex(&req.encode()),
        concat!(
            "0c",
            "01010101010101010101010101010101",
            "00000001aa",
            "00000001bb",
            "00000000",
            "02020202020202020202020202020202",
            "0000000000000001",
            "0000000000000002",
            "02",
            "0000000168",
            "0000000175",
            "00000000",
            "00000000",
            "00",
            "000000022f73",
            "01",
            "00000001cc",
            "00000001dd",
            "00000001ee",
        )
    );
}

/// An unknown context field or display name is `None` in Rust and the
/// empty string on the wire, as it always was: the bytes do not change,
/// and an empty string reads back as `None`.
#[test]
fn an_unknown_string_is_none_and_the_empty_string_on_the_wire() {
    let unknown = small_sign_request(SignContext::default());
    let empty = small_sign_request(SignContext {
        dest_host: Some(String::new()),
        dest_user: Some(String::new()),
        process: Some(String::new()),
        namespace: Some(String::new()),
        executable: Some(String::new()),
        ..SignContext::default()
    });
    let bytes = unknown.encode();
    assert_eq!(bytes, empty.encode());
    // quality 0, then five empty strings around forwarded = false, then
    // no binding.
    assert!(hex(&bytes).ends_with(&format!("00{}00{}00", "00000000".repeat(4), "00000000")));
    assert_eq!(Message::decode(&bytes).unwrap(), unknown);

    let key = |display_name| {
        Message::KeyList(vec![KeyRecord {
            algorithm: "a".into(),
            public_key_blob: vec![1],
            comment: String::new(),
            provider_kind: ProviderKind::Software,
            display_name,
        }])
    };
    let bytes = key(None).encode();
    assert_eq!(bytes, key(Some(String::new())).encode());
    assert!(hex(&bytes).ends_with("00000008736f66747761726500000000"));
    assert_eq!(Message::decode(&bytes).unwrap(), key(None));
}
