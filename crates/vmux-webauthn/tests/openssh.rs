//! A passkey's key and signatures against real OpenSSH: `ssh-keygen -Y
//! verify` (the same `ssh_ecdsa_sk_verify` as sshd) accepts what the
//! conversion makes, refuses what was tampered with, and agrees with
//! `openssh::verify_signature` on signatures OpenSSH must refuse.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256, Sha512};
use std::path::Path;
use std::process::{Command, Stdio};
use vmux_webauthn::openssh::{self, SkFormat};
use vmux_webauthn::testing::{put_string, webauthn_sk_signature, SoftAuthenticator};
use vmux_webauthn::{verify_assertion, verify_registration, Credential, RelyingParty};
use vmux_webauthn::{Error, UserVerification};

const RP: &str = "signer.vmux.test";
const ORIGIN: &str = "https://signer.vmux.test:8443";
const NS: &str = "git";
const UV: UserVerification = UserVerification::Required;

fn rp() -> RelyingParty {
    RelyingParty::new(RP, ORIGIN).unwrap()
}

/// A phone enrolled the way the page enrols it.
fn enrolled() -> (SoftAuthenticator, Credential) {
    let a = SoftAuthenticator::new(RP, ORIGIN);
    let reg = a.create(b"enrolment challenge");
    let c = verify_registration(&rp(), b"enrolment challenge", &reg.response(), UV).unwrap();
    (a, c)
}

/// The bytes `ssh-keygen -Y sign` has signed (PROTOCOL.sshsig).
fn sshsig_signed_data(message: &[u8]) -> Vec<u8> {
    let mut d = b"SSHSIG".to_vec();
    put_string(&mut d, NS.as_bytes());
    put_string(&mut d, b"");
    put_string(&mut d, b"sha512");
    put_string(&mut d, &Sha512::digest(message));
    d
}

/// An armored SSHSIG file around a signature blob.
fn sshsig_armored(key_blob: &[u8], signature: &[u8]) -> String {
    let mut b = b"SSHSIG".to_vec();
    b.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut b, key_blob);
    put_string(&mut b, NS.as_bytes());
    put_string(&mut b, b"");
    put_string(&mut b, b"sha512");
    put_string(&mut b, signature);
    let b64 = STANDARD.encode(&b);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
        lines.join("\n")
    )
}

/// What `ssh-keygen -Y verify` says about `signature` over `message` by
/// the phone whose key line is `line`: `Ok(stdout)` or `Err(stderr)`.
fn ssh_keygen_verify(dir: &Path, line: &str, message: &[u8], sig: &str) -> Result<String, String> {
    let allowed = dir.join("allowed_signers");
    std::fs::write(&allowed, format!("phone@vmux namespaces=\"{NS}\" {line}\n")).unwrap();
    let sig_path = dir.join("message.sig");
    std::fs::write(&sig_path, sig).unwrap();
    let msg_path = dir.join("message");
    std::fs::write(&msg_path, message).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(&allowed)
        .args(["-I", "phone@vmux", "-n", NS, "-s"])
        .arg(&sig_path)
        .stdin(Stdio::from(std::fs::File::open(&msg_path).unwrap()))
        .output()
        .expect("ssh-keygen runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

/// A `webauthn-sk-ecdsa` blob from pieces a (possibly misbehaving)
/// browser and authenticator produced, signed by `a`.
fn crafted(a: &SoftAuthenticator, flags: u8, origin: &str, client: &[u8], ext: &[u8]) -> Vec<u8> {
    let head = [a.auth_data_head(flags, 9), ext.to_vec()].concat();
    let sig = a.sign(&head, &Sha256::digest(client));
    webauthn_sk_signature(&sig, flags, 9, origin, client, ext)
}

#[test]
fn passkey_key_line_is_an_openssh_security_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = enrolled();
    let line = openssh::authorized_keys_line(&c, RP, "phone").unwrap();
    let path = dir.path().join("phone.pub");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let fp = openssh::public_key(&c, RP)
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    assert!(text.contains(&fp) && text.contains("(ECDSA-SK)"), "{text}");
}

#[test]
fn webauthn_signature_verifies_with_ssh_keygen_and_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut c) = enrolled();
    let line = openssh::authorized_keys_line(&c, RP, "phone").unwrap();
    let key_blob = openssh::public_key(&c, RP).to_bytes().unwrap();
    let message = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\ncommit\n".to_vec();
    let data = sshsig_signed_data(&message);

    // The phone signs with challenge = the SSHSIG signed data.
    let x = a.get(&data);
    let v = verify_assertion(&rp(), &c, &data, &x.response(), UV).unwrap();
    assert!(c.record(&v));
    let blob = openssh::webauthn_signature(&v, &data).unwrap();
    let armored = sshsig_armored(&key_blob, &blob);
    let good = ssh_keygen_verify(dir.path(), &line, &message, &armored).unwrap();
    assert!(
        good.contains("Good \"git\" signature for phone@vmux"),
        "{good}"
    );
    let ours = openssh::verify_signature(&key_blob, &data, &blob, UV).unwrap();
    assert_eq!((ours.format(), ours.counter()), (SkFormat::Webauthn, 1));

    // Another message, the same signature.
    let mut other = message.clone();
    other[0] ^= 1;
    assert!(ssh_keygen_verify(dir.path(), &line, &other, &armored).is_err());
    // Another key's line.
    let (_, stranger) = enrolled();
    let stranger_line = openssh::authorized_keys_line(&stranger, RP, "x").unwrap();
    assert!(ssh_keygen_verify(dir.path(), &stranger_line, &message, &armored).is_err());
    // The same key under another relying party (application).
    let other_app = openssh::authorized_keys_line(&c, "evil.test", "x").unwrap();
    assert!(ssh_keygen_verify(dir.path(), &other_app, &message, &armored).is_err());
    // A flag flipped inside the blob (UV bit off, UP kept).
    let flags_at = blob.len() - 4 - (4 + ORIGIN.len()) - (4 + v.client_data_json().len()) - 4 - 1;
    assert_eq!(blob[flags_at], 0x05);
    let mut t = blob.clone();
    t[flags_at] = 0x01;
    assert!(
        ssh_keygen_verify(dir.path(), &line, &message, &sshsig_armored(&key_blob, &t)).is_err()
    );
    assert_eq!(
        openssh::verify_signature(&key_blob, &data, &t, UserVerification::PresenceOnly)
            .unwrap_err(),
        Error::BadSignature
    );
}

#[test]
fn verifier_agrees_with_openssh_on_what_it_must_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = enrolled();
    let line = openssh::authorized_keys_line(&c, RP, "phone").unwrap();
    let key_blob = openssh::public_key(&c, RP).to_bytes().unwrap();
    let message = b"a release tag\n".to_vec();
    let data = sshsig_signed_data(&message);
    let chal = URL_SAFE_NO_PAD.encode(&data);
    let client = |tail: &str| {
        format!(r#"{{"type":"webauthn.get","challenge":"{chal}","origin":"{ORIGIN}"{tail}}}"#)
            .into_bytes()
    };
    let ext = [0xa1, 0x61, b'x', 0xf5];
    let spaced = format!(r#"{{"type": "webauthn.get","challenge":"{chal}","origin":"{ORIGIN}"}}"#);
    let reordered =
        format!(r#"{{"challenge":"{chal}","type":"webauthn.get","origin":"{ORIGIN}"}}"#);
    let other_chal = URL_SAFE_NO_PAD.encode(b"other data");
    let other =
        format!(r#"{{"type":"webauthn.get","challenge":"{other_chal}","origin":"{ORIGIN}"}}"#);
    // What OpenSSH accepts and what it refuses: our verifier agrees, and
    // says why it refuses.
    let cases: Vec<(&str, Vec<u8>, Result<(), Error>)> = vec![
        (
            "Chrome's extra member",
            crafted(
                &a,
                0x05,
                ORIGIN,
                &client(r#","crossOrigin":false,"other_keys_can_be_added_here":"x""#),
                b"",
            ),
            Ok(()),
        ),
        (
            "extensions with ED",
            crafted(&a, 0x85, ORIGIN, &client(""), &ext),
            Ok(()),
        ),
        (
            "synced passkey flags",
            crafted(&a, 0x1d, ORIGIN, &client(""), b""),
            Ok(()),
        ),
        (
            "whitespace",
            crafted(&a, 0x05, ORIGIN, spaced.as_bytes(), b""),
            Err(Error::ClientDataPrefix),
        ),
        (
            "members reordered",
            crafted(&a, 0x05, ORIGIN, reordered.as_bytes(), b""),
            Err(Error::ClientDataPrefix),
        ),
        (
            "challenge of other data",
            crafted(&a, 0x05, ORIGIN, other.as_bytes(), b""),
            Err(Error::ClientDataPrefix),
        ),
        (
            "origin field not the clientData's",
            crafted(&a, 0x05, "https://evil.test", &client(""), b""),
            Err(Error::ClientDataPrefix),
        ),
        (
            "AT flag",
            crafted(&a, 0x45, ORIGIN, &client(""), b""),
            Err(Error::SshFlags),
        ),
        (
            "ED without extensions",
            crafted(&a, 0x85, ORIGIN, &client(""), b""),
            Err(Error::SshFlags),
        ),
        (
            "extensions without ED",
            crafted(&a, 0x05, ORIGIN, &client(""), &ext),
            Err(Error::SshFlags),
        ),
    ];
    for (what, blob, want) in cases {
        let armored = sshsig_armored(&key_blob, &blob);
        assert_eq!(
            ssh_keygen_verify(dir.path(), &line, &message, &armored).is_ok(),
            want.is_ok(),
            "{what}: ssh-keygen"
        );
        assert_eq!(
            openssh::verify_signature(&key_blob, &data, &blob, UV).map(|_| ()),
            want,
            "{what}: ours"
        );
    }
}

#[test]
fn plain_sk_signature_verifies_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, c) = enrolled();
    let line = openssh::authorized_keys_line(&c, RP, "phone").unwrap();
    let key_blob = openssh::public_key(&c, RP).to_bytes().unwrap();
    let message = b"plain".to_vec();
    let data = sshsig_signed_data(&message);
    let blob = a.plain_ssh_signature(&data);
    let armored = sshsig_armored(&key_blob, &blob);
    assert!(ssh_keygen_verify(dir.path(), &line, &message, &armored).is_ok());
    assert_eq!(
        openssh::verify_signature(&key_blob, &data, &blob, UV)
            .unwrap()
            .format(),
        SkFormat::Plain
    );
    assert!(ssh_keygen_verify(dir.path(), &line, b"plaiN", &armored).is_err());
}

/// The test vectors' authenticator (docs/PROTOCOL.md): a fixed P-256 key
/// and credential id, enrolled.
fn vector_authenticator() -> (SoftAuthenticator, Credential) {
    let mut a = SoftAuthenticator::new(RP, ORIGIN);
    let d = Sha256::digest(b"vmux-webauthn test vector key");
    a.key = p256::ecdsa::SigningKey::from_bytes(&d).unwrap();
    a.credential_id = b"vmux test credential".to_vec();
    let reg = a.create(b"enrolment challenge");
    let c = verify_registration(&rp(), b"enrolment challenge", &reg.response(), UV).unwrap();
    (a, c)
}

/// The conversion's test vector (docs/PROTOCOL.md): a fixed P-256 key,
/// `ssh-keygen -Y sign` data for a fixed message, flags UP|UV, counter 1.
/// ECDSA here is deterministic (RFC 6979), so the blob is fixed; OpenSSH
/// accepts it.
#[test]
fn conversion_test_vector_verifies_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, c) = vector_authenticator();
    let message = b"vmux test vector\n";
    let data = sshsig_signed_data(message);
    let x = a.get(&data);
    let v = verify_assertion(&rp(), &c, &data, &x.response(), UV).unwrap();
    let blob = openssh::webauthn_signature(&v, &data).unwrap();
    let key_blob = openssh::public_key(&c, RP).to_bytes().unwrap();
    let line = openssh::authorized_keys_line(&c, RP, "").unwrap();
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    println!("key line: {line}");
    println!(
        "clientDataJSON: {}",
        String::from_utf8_lossy(v.client_data_json())
    );
    println!("authenticatorData: {}", hex(v.authenticator_data()));
    println!("blob: {}", hex(&blob));
    let armored = sshsig_armored(&key_blob, &blob);
    assert!(ssh_keygen_verify(dir.path(), &line, message, &armored).is_ok());
    assert_eq!(
        hex(&Sha256::digest(&blob)),
        "64bda2bb35216a3d403b60131e22b3c867ce1970ae3d127c035f3ecc73c5fc6a"
    );
}

/// The to-be-signed bytes of the certificate test vector
/// (docs/PROTOCOL.md §12.6): subject key scalar = SHA-256("vmux cert
/// vector subject"), nonce 32 × 0x11, serial 1, a user certificate, key
/// id `vmux test vector`, principal `alice`, valid from 1000000 to
/// 2000000000, extension `permit-pty`, signature key `ca_blob`.
fn certificate_vector_tbs(ca_blob: &[u8]) -> Vec<u8> {
    let subject =
        p256::ecdsa::SigningKey::from_bytes(&Sha256::digest(b"vmux cert vector subject")).unwrap();
    let point = subject.verifying_key().to_encoded_point(false);
    let mut t = Vec::new();
    put_string(&mut t, b"ecdsa-sha2-nistp256-cert-v01@openssh.com");
    put_string(&mut t, &[0x11; 32]);
    put_string(&mut t, b"nistp256");
    put_string(&mut t, point.as_bytes());
    t.extend_from_slice(&1u64.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut t, b"vmux test vector");
    let mut principals = Vec::new();
    put_string(&mut principals, b"alice");
    put_string(&mut t, &principals);
    t.extend_from_slice(&1_000_000u64.to_be_bytes());
    t.extend_from_slice(&2_000_000_000u64.to_be_bytes());
    put_string(&mut t, b"");
    let mut extensions = Vec::new();
    put_string(&mut extensions, b"permit-pty");
    put_string(&mut extensions, b"");
    put_string(&mut t, &extensions);
    put_string(&mut t, b"");
    put_string(&mut t, ca_blob);
    t
}

/// The phone-as-CA test vector (docs/PROTOCOL.md §12.6): the key of the
/// conversion vector signs a certificate (assertion over its to-be-signed
/// bytes, converted as for any data); `ssh-keygen -L`, which verifies a
/// certificate's CA signature when it reads it, shows it signed by an
/// ECDSA-SK CA in the WebAuthn format, and refuses it with one signature
/// byte changed; ours verifies it too.
#[test]
fn certificate_test_vector_reads_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, c) = vector_authenticator();
    let ca_blob = openssh::public_key(&c, RP).to_bytes().unwrap();
    let tbs = certificate_vector_tbs(&ca_blob);
    let x = a.get(&tbs);
    let v = verify_assertion(&rp(), &c, &tbs, &x.response(), UV).unwrap();
    let sig = openssh::webauthn_signature(&v, &tbs).unwrap();
    let cert = openssh::certificate_with_signature(&tbs, &sig);
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    println!("tbs: {}", hex(&tbs));
    println!("certificate: {}", hex(&cert));
    let (parts, verified) = openssh::verify_sk_certificate(&cert, UV).unwrap();
    assert_eq!(parts.tbs, tbs.as_slice());
    assert_eq!(verified.counter(), 1);

    let keygen_l = |blob: &[u8]| {
        let file = dir.path().join("cert.pub");
        std::fs::write(
            &file,
            format!(
                "ecdsa-sha2-nistp256-cert-v01@openssh.com {}\n",
                STANDARD.encode(blob)
            ),
        )
        .unwrap();
        Command::new("ssh-keygen")
            .arg("-L")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap()
    };
    let shown = keygen_l(&cert);
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.contains("Signing CA: ECDSA-SK ")
            && text.contains("(using webauthn-sk-ecdsa-sha2-nistp256@openssh.com)")
            && text.contains("alice"),
        "{text}"
    );
    let mut bad = cert.clone();
    let at = bad.len() - parts.signature.len() + 60;
    bad[at] ^= 1;
    assert!(!keygen_l(&bad).status.success());
    assert!(openssh::verify_sk_certificate(&bad, UV).is_err());
    assert_eq!(
        hex(&Sha256::digest(&cert)),
        "711af0d9bf98a76b3791213a88eb57ccd9977a2394d5ebf026147c15fbbf4ee0"
    );
}
