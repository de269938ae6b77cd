//! The checks against a software authenticator: what a browser returns
//! passes; every piece an attacker could change is refused with its own
//! error; no input panics.

use crate::openssh::{self, SkFormat};
use crate::testing::{
    attestation_object, cose_key, put_string, webauthn_sk_signature, SoftAuthenticator,
};
use crate::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

const RP: &str = "signer.vmux.test";
const ORIGIN: &str = "https://signer.vmux.test:8443";
const UV: UserVerification = UserVerification::Required;

fn rp() -> RelyingParty {
    RelyingParty::new(RP, ORIGIN).unwrap()
}

fn soft() -> SoftAuthenticator {
    SoftAuthenticator::new(RP, ORIGIN)
}

fn enrolled() -> (SoftAuthenticator, Credential) {
    let a = soft();
    let reg = a.create(b"enrol challenge");
    let c = verify_registration(&rp(), b"enrol challenge", &reg.response(), UV).unwrap();
    (a, c)
}

/// Registration authData with the given flags, COSE key and tail.
fn reg_auth(a: &SoftAuthenticator, flags: u8, cose: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut auth = a.auth_data_head(flags, 0);
    auth.extend_from_slice(&[0u8; 16]);
    auth.extend_from_slice(&(a.credential_id.len() as u16).to_be_bytes());
    auth.extend_from_slice(&a.credential_id);
    auth.extend_from_slice(cose);
    auth.extend_from_slice(tail);
    auth
}

fn register_with(
    a: &SoftAuthenticator,
    object: Vec<u8>,
    client: Vec<u8>,
) -> Result<Credential, Error> {
    let reg = testing::Registration {
        credential_id: a.credential_id.clone(),
        attestation_object: object,
        client_data_json: client,
    };
    verify_registration(&rp(), b"c", &reg.response(), UV)
}

#[test]
fn registration_yields_the_authenticators_key() {
    let a = soft();
    let reg = a.create(b"enrol challenge");
    let c = verify_registration(&rp(), b"enrol challenge", &reg.response(), UV).unwrap();
    assert_eq!(c.id(), a.credential_id.as_slice());
    assert_eq!(c.public_key(), a.key.verifying_key());
    assert_eq!(c.counter(), 0);
    let again = Credential::from_stored(c.id(), &c.public_key_sec1(), c.counter()).unwrap();
    assert_eq!(again, c);
    assert_eq!(
        Credential::from_stored(c.id(), &[4; 65], 0),
        Err(Error::UnsupportedKey)
    );
    assert_eq!(
        Credential::from_stored(&[], &c.public_key_sec1(), 0),
        Err(Error::BadCredentialId)
    );
    assert_eq!(
        Credential::from_stored(&[1; 1024], &c.public_key_sec1(), 0),
        Err(Error::BadCredentialId)
    );
}

#[test]
fn registration_refusals() {
    let a = soft();
    let good_client = a.client_data("webauthn.create", b"c");
    let good_auth = reg_auth(&a, 0x45, &a.cose_key(), b"");
    assert!(register_with(
        &a,
        attestation_object("none", &good_auth),
        good_client.clone()
    )
    .is_ok());
    assert!(register_with(
        &a,
        attestation_object("packed", &good_auth),
        good_client.clone()
    )
    .is_ok());

    let point = a.key.verifying_key().to_encoded_point(false);
    let (x, y) = (point.x().unwrap().to_vec(), point.y().unwrap().to_vec());
    let mut other = soft();
    other.origin = "https://evil.test".into();
    let mut other_rp = soft();
    other_rp.rp_id = "evil.test".into();
    // An attestation object ("none") over `auth`; over registration
    // authData with these flags, COSE key and tail; over the
    // authenticator's usual authData with another COSE key.
    let none = |auth: &[u8]| attestation_object("none", auth);
    let with = |a: &SoftAuthenticator, flags: u8, cose: &[u8], tail: &[u8]| {
        none(&reg_auth(a, flags, cose, tail))
    };
    let key = |cose: &[u8]| with(&a, 0x45, cose, b"");
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, Error)> = vec![
        (
            "get instead of create",
            none(&good_auth),
            a.client_data("webauthn.get", b"c"),
            Error::WrongType {
                expected: "webauthn.create",
            },
        ),
        (
            "challenge",
            none(&good_auth),
            a.client_data("webauthn.create", b"other"),
            Error::WrongChallenge,
        ),
        (
            "origin",
            none(&good_auth),
            other.client_data("webauthn.create", b"c"),
            Error::WrongOrigin,
        ),
        (
            "cross origin",
            none(&good_auth),
            good_client.clone().replace_tail(b"\"crossOrigin\":true}"),
            Error::CrossOrigin,
        ),
        (
            "rp id hash",
            with(&other_rp, 0x45, &a.cose_key(), b""),
            good_client.clone(),
            Error::WrongRpIdHash,
        ),
        (
            "UP unset",
            with(&a, 0x44, &a.cose_key(), b""),
            good_client.clone(),
            Error::UserNotPresent,
        ),
        (
            "UV unset",
            with(&a, 0x41, &a.cose_key(), b""),
            good_client.clone(),
            Error::UserNotVerified,
        ),
        (
            "no attested data",
            none(&a.auth_data_head(0x05, 0)),
            good_client.clone(),
            Error::NoAttestedCredential,
        ),
        (
            "fido-u2f",
            attestation_object("fido-u2f", &good_auth),
            good_client.clone(),
            Error::UnsupportedAttestation("fido-u2f".into()),
        ),
        (
            "RS256",
            key(&cose_key(2, -257, 1, &x, &y)),
            good_client.clone(),
            Error::UnsupportedKey,
        ),
        (
            "P-384",
            key(&cose_key(2, -7, 2, &x, &y)),
            good_client.clone(),
            Error::UnsupportedKey,
        ),
        (
            "OKP",
            key(&cose_key(1, -7, 1, &x, &y)),
            good_client.clone(),
            Error::UnsupportedKey,
        ),
        (
            "short x",
            key(&cose_key(2, -7, 1, &x[1..], &y)),
            good_client.clone(),
            Error::UnsupportedKey,
        ),
        (
            "off the curve",
            key(&cose_key(2, -7, 1, &x, &x)),
            good_client.clone(),
            Error::UnsupportedKey,
        ),
        (
            "trailing authData",
            with(&a, 0x45, &a.cose_key(), b"\0"),
            good_client.clone(),
            Error::AuthDataMalformed,
        ),
        (
            "ED without extensions",
            with(&a, 0xc5, &a.cose_key(), b""),
            good_client.clone(),
            Error::AuthDataMalformed,
        ),
        (
            "trailing object",
            [none(&good_auth), vec![0]].concat(),
            good_client.clone(),
            Error::AttestationMalformed,
        ),
        (
            "not JSON",
            none(&good_auth),
            b"{\"type\":".to_vec(),
            Error::ClientDataMalformed,
        ),
        (
            "no challenge",
            none(&good_auth),
            br#"{"type":"webauthn.create","origin":"https://signer.vmux.test:8443"}"#.to_vec(),
            Error::ClientDataMalformed,
        ),
    ];
    for (what, object, client, err) in cases {
        assert_eq!(register_with(&a, object, client), Err(err), "{what}");
    }
    // Extensions after the key are accepted when ED says so.
    let with_ext = reg_auth(&a, 0xc5, &a.cose_key(), &[0xa1, 0x61, b'x', 0xf5]);
    assert!(register_with(
        &a,
        attestation_object("none", &with_ext),
        good_client.clone()
    )
    .is_ok());
    // "none" with a statement, and a repeated member, are malformed.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(3).unwrap().str("fmt").unwrap().str("none").unwrap();
    e.str("attStmt")
        .unwrap()
        .map(1)
        .unwrap()
        .str("sig")
        .unwrap()
        .bytes(b"x")
        .unwrap();
    e.str("authData").unwrap().bytes(&good_auth).unwrap();
    assert_eq!(
        register_with(&a, e.into_writer(), good_client.clone()),
        Err(Error::AttestationMalformed)
    );
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(4).unwrap().str("fmt").unwrap().str("none").unwrap();
    e.str("attStmt").unwrap().map(0).unwrap();
    e.str("authData").unwrap().bytes(&good_auth).unwrap();
    e.str("authData").unwrap().bytes(&good_auth).unwrap();
    assert_eq!(
        register_with(&a, e.into_writer(), good_client.clone()),
        Err(Error::AttestationMalformed)
    );
    // The page claims another credential id than the authenticator made.
    let mut reg = a.create(b"c");
    reg.credential_id[0] ^= 1;
    assert_eq!(
        verify_registration(&rp(), b"c", &reg.response(), UV),
        Err(Error::WrongCredential)
    );
}

trait ReplaceTail {
    fn replace_tail(self, tail: &[u8]) -> Vec<u8>;
}
impl ReplaceTail for Vec<u8> {
    /// Replaces `"crossOrigin":false}` at the end.
    fn replace_tail(mut self, tail: &[u8]) -> Vec<u8> {
        let cut = self.len() - b"\"crossOrigin\":false}".len();
        self.truncate(cut);
        self.extend_from_slice(tail);
        self
    }
}

#[test]
fn assertion_verifies_and_the_counter_must_increase() {
    let (mut a, mut c) = enrolled();
    let first = a.get(b"approve 1");
    let v = verify_assertion(&rp(), &c, b"approve 1", &first.response(), UV).unwrap();
    assert_eq!(v.counter(), 1);
    assert!(v.flags().user_verified() && v.flags().user_present());
    assert_eq!(v.challenge(), b"approve 1");
    // Debug output (what a log line would show) names no signed bytes.
    let shown = format!("{v:?} {:?}", first.response());
    assert!(shown.contains("counter: 1"), "{shown}");
    for secret in [
        &first.signature[..8],
        &b"approve 1"[..],
        &first.client_data_json[..8],
    ] {
        let as_list = format!("{:?}", secret).trim_end_matches(']').to_owned();
        assert!(!shown.contains(&as_list[1..]), "{shown}");
    }
    assert!(c.record(&v));
    assert_eq!(c.counter(), 1);
    let second = a.get(b"approve 2");
    let v2 = verify_assertion(&rp(), &c, b"approve 2", &second.response(), UV).unwrap();
    assert!(c.record(&v2));
    // With the stored counter at 2: the verdict on `x` over `challenge`,
    // and the refusal of a counter not above it.
    let verdict = |x: &testing::Assertion, challenge: &[u8]| {
        verify_assertion(&rp(), &c, challenge, &x.response(), UV).map(|_| ())
    };
    let not_above_2 = |received| {
        Err(Error::CounterNotIncreasing {
            stored: 2,
            received,
        })
    };
    // A replayed or cloned authenticator's assertion: counter not above 2.
    assert_eq!(verdict(&first, b"approve 1"), not_above_2(1));
    let mut clone = a.clone();
    clone.counter = 1;
    let cloned = clone.get(b"approve 3");
    assert_eq!(verdict(&cloned, b"approve 3"), not_above_2(2));
    // A counter that drops to 0 after being non-zero is a clone too.
    let mut zero = a.clone();
    zero.zero_counter = true;
    zero.counter = 0;
    let z = zero.get(b"approve 4");
    assert_eq!(verdict(&z, b"approve 4"), not_above_2(0));
    // A synced passkey reports 0 every time: accepted while stored is 0.
    let (mut synced, c0) = enrolled();
    synced.zero_counter = true;
    for _ in 0..2 {
        let s = synced.get(b"x");
        let v = verify_assertion(&rp(), &c0, b"x", &s.response(), UV).unwrap();
        assert_eq!(v.counter(), 0);
    }
    // record() refuses an assertion of another credential.
    let mut other = enrolled().1;
    assert!(!other.record(&v2));
}

#[test]
fn assertion_refusals() {
    let (mut a, c) = enrolled();
    let check = |x: &testing::Assertion, challenge: &[u8], uv| {
        verify_assertion(&rp(), &c, challenge, &x.response(), uv).map(|_| ())
    };
    a.counter = 10;
    let head = a.auth_data_head(0x05, 11);
    let client = a.client_data("webauthn.get", b"chal");
    assert_eq!(
        check(&a.assertion(head.clone(), client.clone()), b"chal", UV),
        Ok(())
    );

    let mut evil_origin = a.clone();
    evil_origin.origin = "https://evil.vmux.test:8443".into();
    let mut evil_rp = a.clone();
    evil_rp.rp_id = "vmux.test".into();
    let cases: Vec<(&str, testing::Assertion, UserVerification, Error)> = vec![
        ("create instead of get", a.assertion(head.clone(), a.client_data("webauthn.create", b"chal")), UV, Error::WrongType { expected: "webauthn.get" }),
        ("challenge for another request", a.assertion(head.clone(), a.client_data("webauthn.get", b"other")), UV, Error::WrongChallenge),
        ("origin", a.assertion(head.clone(), evil_origin.client_data("webauthn.get", b"chal")), UV, Error::WrongOrigin),
        ("cross origin", a.assertion(head.clone(), client.clone().replace_tail(b"\"crossOrigin\":true}")), UV, Error::CrossOrigin),
        ("rp id hash", a.assertion(evil_rp.auth_data_head(0x05, 11), client.clone()), UV, Error::WrongRpIdHash),
        ("UP unset", a.assertion(a.auth_data_head(0x04, 11), client.clone()), UV, Error::UserNotPresent),
        ("UV unset", a.assertion(a.auth_data_head(0x01, 11), client.clone()), UV, Error::UserNotVerified),
        ("attested data", a.assertion([a.auth_data_head(0x45, 11), vec![0; 18]].concat(), client.clone()), UV, Error::AuthDataMalformed),
        ("trailing authData", a.assertion([head.clone(), vec![0]].concat(), client.clone()), UV, Error::AuthDataMalformed),
        ("short authData", a.assertion(head[..36].to_vec(), client.clone()), UV, Error::AuthDataMalformed),
        ("JSON garbage", a.assertion(head.clone(), b"\xff\xfe".to_vec()), UV, Error::ClientDataMalformed),
        ("duplicate challenge member", a.assertion(head.clone(), format!(r#"{{"type":"webauthn.get","challenge":"{}","challenge":"{}","origin":"{ORIGIN}"}}"#, URL_SAFE_NO_PAD.encode("x"), URL_SAFE_NO_PAD.encode("chal")).into_bytes()), UV, Error::ClientDataMalformed),
        ("padded challenge", a.assertion(head.clone(), format!(r#"{{"type":"webauthn.get","challenge":"Y2hhbA==","origin":"{ORIGIN}"}}"#).into_bytes()), UV, Error::WrongChallenge),
    ];
    for (what, x, uv, err) in cases {
        assert_eq!(check(&x, b"chal", uv), Err(err), "{what}");
    }
    // UV not required: presence is enough.
    let up_only = a.assertion(a.auth_data_head(0x01, 11), client.clone());
    assert_eq!(
        check(&up_only, b"chal", UserVerification::PresenceOnly),
        Ok(())
    );
    // Chrome may append members; extensions with ED are fine.
    let extra = client
        .clone()
        .replace_tail(br#""crossOrigin":false,"other_keys_can_be_added_here":"x"}"#);
    assert_eq!(
        check(&a.assertion(head.clone(), extra), b"chal", UV),
        Ok(())
    );
    let ext = a.assertion(
        [a.auth_data_head(0x85, 11), vec![0xa1, 0x61, b'x', 0xf5]].concat(),
        client.clone(),
    );
    assert_eq!(check(&ext, b"chal", UV), Ok(()));
    let ext_unflagged = a.assertion([head.clone(), vec![0xa0]].concat(), client.clone());
    assert_eq!(
        check(&ext_unflagged, b"chal", UV),
        Err(Error::AuthDataMalformed)
    );

    // Signatures: another key, pieces changed after signing, bad DER.
    let good = a.assertion(head.clone(), client.clone());
    let mut other_key = a.clone();
    other_key.key = soft().key;
    assert_eq!(
        check(
            &other_key.assertion(head.clone(), client.clone()),
            b"chal",
            UV
        ),
        Err(Error::BadSignature)
    );
    let mut tampered = good.clone();
    tampered.authenticator_data[33] ^= 0x01; // a higher counter
    assert_eq!(check(&tampered, b"chal", UV), Err(Error::BadSignature));
    let mut tampered = good.clone();
    tampered.client_data_json = client.clone().replace_tail(br#""crossOrigin":false }"#);
    assert_eq!(check(&tampered, b"chal", UV), Err(Error::BadSignature));
    let mut tampered = good.clone();
    tampered.signature = b"\x30\x03\x02\x01\x01".to_vec();
    assert_eq!(
        check(&tampered, b"chal", UV),
        Err(Error::SignatureMalformed)
    );
    let mut tampered = good.clone();
    tampered.credential_id.push(0);
    assert_eq!(check(&tampered, b"chal", UV), Err(Error::WrongCredential));
    // Every single-bit change anywhere is refused.
    for field in 0..3 {
        let len = [
            good.authenticator_data.len(),
            good.client_data_json.len(),
            good.signature.len(),
        ][field];
        for i in 0..len {
            for bit in [0x01u8, 0x80] {
                let mut t = good.clone();
                [
                    &mut t.authenticator_data,
                    &mut t.client_data_json,
                    &mut t.signature,
                ][field][i] ^= bit;
                assert!(
                    check(&t, b"chal", UV).is_err(),
                    "field {field} byte {i} bit {bit}"
                );
            }
        }
    }
}

/// One byte field of a registration or an assertion.
type Piece<T> = fn(&mut T) -> &mut Vec<u8>;

/// Copies of `whole` with its `piece` cut to each length shorter than it
/// is, with that length.
fn prefixes<T: Clone>(whole: &T, piece: Piece<T>) -> Vec<(usize, T)> {
    let len = piece(&mut whole.clone()).len();
    (0..len)
        .map(|n| {
            let mut t = whole.clone();
            piece(&mut t).truncate(n);
            (n, t)
        })
        .collect()
}

#[test]
fn truncated_and_garbage_inputs_are_errors_never_panics() {
    let (mut a, c) = enrolled();
    let reg = a.create(b"c");
    let x = a.get(b"c");
    // Every piece cut short anywhere.
    let reg_pieces: [(&str, Piece<testing::Registration>); 2] = [
        ("object", |r| &mut r.attestation_object),
        ("client", |r| &mut r.client_data_json),
    ];
    for (name, piece) in reg_pieces {
        for (n, r) in prefixes(&reg, piece) {
            let verdict = verify_registration(&rp(), b"c", &r.response(), UV);
            assert!(verdict.is_err(), "{name}[..{n}]");
        }
    }
    let assertion_pieces: [(&str, Piece<testing::Assertion>); 2] = [
        ("authenticator data", |t| &mut t.authenticator_data),
        ("signature", |t| &mut t.signature),
    ];
    for (name, piece) in assertion_pieces {
        for (n, t) in prefixes(&x, piece) {
            let verdict = verify_assertion(&rp(), &c, b"c", &t.response(), UV);
            assert!(verdict.is_err(), "{name}[..{n}]");
        }
    }
    // Every byte of the attestation object changed to every value: no panic.
    for i in 0..reg.attestation_object.len() {
        for v in [0x00, 0x1f, 0x5f, 0x7f, 0x9f, 0xbf, 0xff, 0xf7, 0x1b] {
            let mut r = reg.clone();
            r.attestation_object[i] = v;
            let _ = verify_registration(&rp(), b"c", &r.response(), UV);
        }
    }
    // Deep nesting and huge lengths.
    let deep_cbor = [
        vec![0xa1, 0x63, b'f', b'm', b't'],
        vec![0x81; 100_000],
        vec![0],
    ]
    .concat();
    let huge = vec![0xa1, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let indefinite = [vec![0xa1, 0x60], vec![0x9f; 100_000]].concat();
    for object in [deep_cbor, huge, indefinite, vec![], vec![0xff]] {
        let mut r = reg.clone();
        r.attestation_object = object;
        assert!(verify_registration(&rp(), b"c", &r.response(), UV).is_err());
    }
    let deep_json = [vec![b'['; 100_000], vec![b']'; 100_000]].concat();
    let mut t = x.clone();
    t.client_data_json = deep_json;
    assert_eq!(
        verify_assertion(&rp(), &c, b"c", &t.response(), UV).unwrap_err(),
        Error::ClientDataMalformed
    );
    // A deep COSE key inside authData.
    let mut auth = a.auth_data_head(0x45, 0);
    auth.extend_from_slice(&[0u8; 16]);
    auth.extend_from_slice(&[0, 1, 7]);
    auth.extend_from_slice(&[0xa1, 0x20]);
    auth.extend_from_slice(&vec![0x81; 100_000]);
    auth.push(0);
    let mut r = reg.clone();
    r.attestation_object = attestation_object("none", &auth);
    assert!(verify_registration(&rp(), b"c", &r.response(), UV).is_err());
}

#[test]
fn openssh_key_and_signature_conversion() {
    let (mut a, c) = enrolled();
    let key = openssh::public_key(&c, RP);
    let key_blob = key.to_bytes().unwrap();
    let line = openssh::authorized_keys_line(&c, RP, "phone").unwrap();
    assert!(
        line.starts_with("sk-ecdsa-sha2-nistp256@openssh.com AAAA"),
        "{line}"
    );
    assert!(line.ends_with(" phone"));
    assert_eq!(
        ssh_key::PublicKey::from_openssh(&line).unwrap().key_data(),
        key.key_data()
    );

    let data = b"SSH userauth request bytes".to_vec();
    let x = a.get(&data);
    let v = verify_assertion(&rp(), &c, &data, &x.response(), UV).unwrap();
    let blob = openssh::webauthn_signature(&v, &data).unwrap();
    let ok = openssh::verify_signature(&key_blob, &data, &blob, UV).unwrap();
    assert_eq!(ok.format(), SkFormat::Webauthn);
    assert_eq!(
        (ok.counter(), ok.flags().bits(), ok.origin()),
        (1, 0x05, Some(ORIGIN))
    );
    // The conversion refuses data other than the challenge.
    assert_eq!(
        openssh::webauthn_signature(&v, b"other"),
        Err(Error::WrongChallenge)
    );
    // Valid WebAuthn whose clientDataJSON OpenSSH would refuse (members in
    // another order): the conversion says so instead of handing out a
    // signature no server accepts.
    let reordered = format!(
        r#"{{"origin":"{ORIGIN}","type":"webauthn.get","challenge":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&data)
    );
    let head = a.auth_data_head(0x05, 2);
    let odd = a.assertion(head, reordered.into_bytes());
    let v_odd = verify_assertion(&rp(), &c, &data, &odd.response(), UV).unwrap();
    assert_eq!(
        openssh::webauthn_signature(&v_odd, &data),
        Err(Error::ClientDataPrefix)
    );
    // The verifier refuses other data, another application, other flags.
    assert_eq!(
        openssh::verify_signature(&key_blob, b"other", &blob, UV).unwrap_err(),
        Error::ClientDataPrefix
    );
    let other_app = openssh::public_key(&c, "other.test").to_bytes().unwrap();
    assert_eq!(
        openssh::verify_signature(&other_app, &data, &blob, UV).unwrap_err(),
        Error::BadSignature
    );
    let ed25519 =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    assert_eq!(
        openssh::verify_signature(&ed25519.public_key().to_bytes().unwrap(), &data, &blob, UV)
            .unwrap_err(),
        Error::NotSkEcdsaKey
    );
    for n in 0..blob.len() {
        assert!(
            openssh::verify_signature(&key_blob, &data, &blob[..n], UV).is_err(),
            "blob[..{n}]"
        );
        for bit in [0x01u8, 0x80] {
            let mut t = blob.clone();
            t[n] ^= bit;
            assert!(
                openssh::verify_signature(&key_blob, &data, &t, UV).is_err(),
                "byte {n} bit {bit}"
            );
        }
    }
    assert_eq!(
        openssh::verify_signature(&key_blob, &data, &[blob.clone(), vec![0]].concat(), UV)
            .unwrap_err(),
        Error::SshSignatureMalformed
    );

    // Signatures a real authenticator could make but sshd refuses.
    let sign = |flags: u8, client: &[u8], ext: &[u8]| {
        let head = [a.auth_data_head(flags, 5), ext.to_vec()].concat();
        a.sign(&head, &Sha256::digest(client))
    };
    let client = a.client_data("webauthn.get", &data);
    let spaced = String::from_utf8(client.clone())
        .unwrap()
        .replace("\"type\":", "\"type\": ")
        .into_bytes();
    let reordered = format!(
        r#"{{"challenge":"{}","type":"webauthn.get","origin":"{ORIGIN}"}}"#,
        URL_SAFE_NO_PAD.encode(&data)
    )
    .into_bytes();
    let ext = [0xa1, 0x61, b'x', 0xf5];
    // A signature over exactly the flags, clientData and extensions the
    // blob then carries (counter 5, the page's origin).
    let honest = |flags: u8, client: &[u8], ext: &[u8]| {
        webauthn_sk_signature(&sign(flags, client, ext), flags, 5, ORIGIN, client, ext)
    };
    let cases: Vec<(&str, Vec<u8>, UserVerification, Error)> = vec![
        (
            "whitespace in clientData",
            honest(0x05, &spaced, b""),
            UV,
            Error::ClientDataPrefix,
        ),
        (
            "members reordered",
            honest(0x05, &reordered, b""),
            UV,
            Error::ClientDataPrefix,
        ),
        (
            "origin field differs from clientData",
            webauthn_sk_signature(
                &sign(0x05, &client, b""),
                0x05,
                5,
                "https://signer.vmux.test",
                &client,
                b"",
            ),
            UV,
            Error::ClientDataPrefix,
        ),
        (
            "quote in origin",
            webauthn_sk_signature(
                &sign(0x05, &client, b""),
                0x05,
                5,
                "https://a\"b",
                &client,
                b"",
            ),
            UV,
            Error::SshSignatureMalformed,
        ),
        ("AT flag", honest(0x45, &client, b""), UV, Error::SshFlags),
        (
            "ED without extensions",
            honest(0x85, &client, b""),
            UV,
            Error::SshFlags,
        ),
        (
            "extensions without ED",
            honest(0x05, &client, &ext),
            UV,
            Error::SshFlags,
        ),
        (
            "UP unset",
            honest(0x04, &client, b""),
            UV,
            Error::UserNotPresent,
        ),
        (
            "UV unset",
            honest(0x01, &client, b""),
            UV,
            Error::UserNotVerified,
        ),
        (
            "flags byte changed",
            webauthn_sk_signature(&sign(0x01, &client, b""), 0x05, 5, ORIGIN, &client, b""),
            UV,
            Error::BadSignature,
        ),
        (
            "counter changed",
            webauthn_sk_signature(&sign(0x05, &client, b""), 0x05, 6, ORIGIN, &client, b""),
            UV,
            Error::BadSignature,
        ),
    ];
    for (what, b, uv, err) in cases {
        assert_eq!(
            openssh::verify_signature(&key_blob, &data, &b, uv).map(|_| ()),
            Err(err),
            "{what}"
        );
    }
    let with_ext = honest(0x85, &client, &ext);
    assert!(openssh::verify_signature(&key_blob, &data, &with_ext, UV).is_ok());
    let up_only = honest(0x01, &client, b"");
    assert!(
        openssh::verify_signature(&key_blob, &data, &up_only, UserVerification::PresenceOnly)
            .is_ok()
    );
    let mut bad_type = Vec::new();
    put_string(&mut bad_type, b"ecdsa-sha2-nistp256");
    assert_eq!(
        openssh::verify_signature(&key_blob, &data, &bad_type, UV).unwrap_err(),
        Error::SshSignatureType("ecdsa-sha2-nistp256".into())
    );

    // The plain format, as a CTAP authenticator signs.
    let plain = a.plain_ssh_signature(&data);
    let ok = openssh::verify_signature(&key_blob, &data, &plain, UV).unwrap();
    assert_eq!((ok.format(), ok.origin()), (SkFormat::Plain, None));
    assert_eq!(
        openssh::verify_signature(&key_blob, b"other", &plain, UV).unwrap_err(),
        Error::BadSignature
    );
    for n in 0..plain.len() {
        assert!(openssh::verify_signature(&key_blob, &data, &plain[..n], UV).is_err());
    }
}
