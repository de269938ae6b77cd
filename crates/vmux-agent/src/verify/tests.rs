//! Tampered passkey signatures the agent must refuse, each with the check
//! that refuses it.

use super::*;
use vmux_webauthn::testing::{webauthn_sk_signature, SoftAuthenticator};
use vmux_webauthn::{verify_assertion, verify_registration, Credential};

const RP: &str = "signer.vmux.test";
const ORIGIN: &str = "https://signer.vmux.test:8443";

fn phone() -> (SoftAuthenticator, Credential, Vec<u8>) {
    let a = SoftAuthenticator::new(RP, ORIGIN);
    let rp = RelyingParty::new(RP, ORIGIN).unwrap();
    let c = verify_registration(&rp, b"enrol", &a.create(b"enrol").response(), UV).unwrap();
    let blob = vmux_webauthn::openssh::public_key(&c, RP)
        .to_bytes()
        .unwrap();
    (a, c, blob)
}

const UV: UserVerification = UserVerification::Required;

/// A `webauthn-sk-ecdsa` blob as a signer would send it, from pieces the
/// authenticator signs as they are (so a tampered piece is still signed).
fn blob(a: &SoftAuthenticator, flags: u8, counter: u32, rp_id: &str, data: &[u8]) -> Vec<u8> {
    let mut head = Sha256Like::rp_hash(rp_id);
    head.push(flags);
    head.extend_from_slice(&counter.to_be_bytes());
    let client = a.client_data("webauthn.get", data);
    let sig = a.sign(&head, &Sha256Like::digest(&client));
    webauthn_sk_signature(&sig, flags, counter, &a.origin, &client, &[])
}

struct Sha256Like;
impl Sha256Like {
    fn digest(b: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(b).to_vec()
    }
    fn rp_hash(rp: &str) -> Vec<u8> {
        Self::digest(rp.as_bytes())
    }
}

const DATA: &[u8] = b"\0\0\0\x20 a userauth request, as ssh sends it";

#[test]
fn a_phones_signature_over_the_data_verifies_and_reports_its_counter() {
    let (mut a, c, key) = phone();
    let rp = RelyingParty::new(RP, ORIGIN).unwrap();
    let got = a.get(DATA);
    let v = verify_assertion(&rp, &c, DATA, &got.response(), UV).unwrap();
    let sig = vmux_webauthn::openssh::webauthn_signature(&v, DATA).unwrap();
    assert_eq!(
        check_signature(&key, DATA, 0, &sig),
        Ok(Checked {
            sk_counter: Some(1)
        })
    );
    // A plain sk-ecdsa signature (a hardware key, presence only) too.
    a.flags = vmux_webauthn::Flags::UP;
    let plain = a.plain_ssh_signature(DATA);
    assert!(check_signature(&key, DATA, 0, &plain).is_ok());
    // The same signature for other data is refused.
    assert!(!signature_is_valid(&key, b"other data", 0, &sig));
}

#[test]
fn tampered_passkey_signatures_are_refused_by_the_check_that_fails() {
    let (a, _, key) = phone();
    let good = 0x05;
    assert!(check_signature(&key, DATA, 0, &blob(&a, good, 7, RP, DATA)).is_ok());
    // Another challenge: clientDataJSON is over other data.
    assert_eq!(
        check_signature(&key, DATA, 0, &blob(&a, good, 7, RP, b"other data")),
        Err(Refusal::Sk(vmux_webauthn::Error::ClientDataPrefix))
    );
    // Another relying party's rpIdHash: the signature is not over ours.
    assert_eq!(
        check_signature(&key, DATA, 0, &blob(&a, good, 7, "evil.test", DATA)),
        Err(Refusal::Sk(vmux_webauthn::Error::BadSignature))
    );
    // UV unset (presence only), though validly signed.
    assert_eq!(
        check_signature(&key, DATA, 0, &blob(&a, 0x01, 7, RP, DATA)),
        Err(Refusal::Sk(vmux_webauthn::Error::UserNotVerified))
    );
    // UP unset.
    assert_eq!(
        check_signature(&key, DATA, 0, &blob(&a, 0x04, 7, RP, DATA)),
        Err(Refusal::Sk(vmux_webauthn::Error::UserNotPresent))
    );
    // A bad signature: a byte of s changed (type 4+43, ecdsa 4, r 4+33,
    // then s's length and 33 bytes).
    let mut bad = blob(&a, good, 7, RP, DATA);
    bad[4 + 43 + 4 + 4 + 33 + 4 + 10] ^= 1;
    assert_eq!(
        check_signature(&key, DATA, 0, &bad),
        Err(Refusal::Sk(vmux_webauthn::Error::BadSignature))
    );
    // An origin that is not on the key's relying party.
    let mut elsewhere = a.clone();
    elsewhere.origin = "https://evil.test".into();
    assert_eq!(
        check_signature(&key, DATA, 0, &blob(&elsewhere, good, 7, RP, DATA)),
        Err(Refusal::ForeignOrigin)
    );
    // Another key's signature.
    let (other, _, _) = phone();
    assert_eq!(
        check_signature(&key, DATA, 0, &blob(&other, good, 7, RP, DATA)),
        Err(Refusal::Sk(vmux_webauthn::Error::BadSignature))
    );
    // Garbage.
    assert!(check_signature(&key, DATA, 0, b"\0\0\0\x01x").is_err());
}

#[test]
fn a_counter_that_does_not_move_on_is_refused_and_flagged() {
    let c = Counters::default();
    let key = b"key blob";
    assert_eq!(c.record(key, "SHA256:k", 0), Ok(()));
    assert_eq!(
        c.record(key, "SHA256:k", 0),
        Ok(()),
        "synced passkeys say 0"
    );
    assert_eq!(c.record(key, "SHA256:k", 5), Ok(()));
    assert_eq!(c.record(key, "SHA256:k", 9), Ok(()));
    assert_eq!(
        c.record(key, "SHA256:k", 3),
        Err(Refusal::CounterBackwards {
            stored: 9,
            received: 3
        })
    );
    assert_eq!(
        c.record(key, "SHA256:k", 9),
        Err(Refusal::CounterBackwards {
            stored: 9,
            received: 9
        })
    );
    assert_eq!(c.record(b"another key", "SHA256:o", 1), Ok(()));
    let alarms = c.alarms();
    assert_eq!(alarms.len(), 2);
    assert_eq!((alarms[0].stored, alarms[0].received), (9, 3));
    assert_eq!(alarms[0].key, "SHA256:k");
    // Still refused after: the stored counter is the highest seen.
    assert!(c.record(key, "SHA256:k", 10).is_ok());
}
