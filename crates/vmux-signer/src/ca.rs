//! The signer's certificate authority: short-lived OpenSSH user
//! certificates for agents' ephemeral session keys, within policy.

use std::path::Path;

use rand::RngCore;
use serde::Deserialize;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::{Algorithm, EcdsaCurve, PrivateKey, PublicKey};
use vmux_home::HomeError;
use vmux_proto::{ErrorCode, IssuedCert};

/// Seconds `valid_after` is moved into the past, for clock skew (sshd
/// allows none).
pub const BACKDATE_SECONDS: u64 = 300;

/// Certificate policy (`[certificates]` in `signer.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertPolicy {
    /// Validity when the agent asks for none, seconds. Default 28800 (8 h).
    pub default_validity_seconds: u64,
    /// Longest validity; longer requests are shortened to it. Default 28800.
    pub max_validity_seconds: u64,
    /// Principals (login names) the certificate is valid for. Default: the
    /// signer user's login name.
    pub principals: Vec<String>,
    /// Certificate extensions. Default: permit-pty, permit-port-forwarding,
    /// permit-agent-forwarding, permit-user-rc, permit-X11-forwarding.
    pub extensions: Vec<String>,
    /// Whether agents may ask on their own (on connecting and to renew).
    /// When false, only `vmux agent cert` asks. Either way the approver
    /// decides. Default true.
    pub auto_issue: bool,
}

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            default_validity_seconds: 28_800,
            max_validity_seconds: 28_800,
            principals: vec![login_name()],
            extensions: [
                "permit-pty",
                "permit-port-forwarding",
                "permit-agent-forwarding",
                "permit-user-rc",
                "permit-X11-forwarding",
            ]
            .map(String::from)
            .to_vec(),
            auto_issue: true,
        }
    }
}

impl CertPolicy {
    /// The validity granted for a request of `requested` seconds (0: the
    /// default): never above the maximum, never zero.
    pub fn validity_for(&self, requested: u64) -> u64 {
        let want = if requested == 0 {
            self.default_validity_seconds
        } else {
            requested
        };
        want.min(self.max_validity_seconds).max(1)
    }
}

/// The login name of the user running the signer.
pub fn login_name() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    uid_name().unwrap_or_else(|| "root".to_owned())
}

fn uid_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the process's effective uid.
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// The CA key: listed always, usable while unlocked.
pub struct Ca {
    path: std::path::PathBuf,
    encrypted: bool,
    public: PublicKey,
    key: std::sync::RwLock<Option<PrivateKey>>,
}

impl Ca {
    /// Loads the CA key from `path`, decrypting it with `passphrase` when
    /// it is encrypted (without one it stays locked).
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Ca, HomeError> {
        let pem = zeroize::Zeroizing::new(vmux_home::read(path)?);
        let file = PrivateKey::from_openssh(&*pem).map_err(|e| HomeError::Config {
            path: path.to_owned(),
            message: format!("not an OpenSSH private key: {e}"),
        })?;
        let public = file.public_key().clone();
        let ca = Ca {
            path: path.to_owned(),
            encrypted: file.is_encrypted(),
            public,
            key: std::sync::RwLock::new(None),
        };
        if !file.is_encrypted() {
            *vmux_home::sync::write(&ca.key) = Some(file);
        } else if let Some(p) = passphrase {
            ca.unlock(p)?;
        }
        Ok(ca)
    }

    /// Forgets the decrypted key (if the file is encrypted).
    pub fn lock(&self) {
        if self.encrypted {
            *vmux_home::sync::write(&self.key) = None;
        }
    }

    /// Whether the key is encrypted and not decrypted now.
    pub fn is_locked(&self) -> bool {
        vmux_home::sync::read(&self.key).is_none()
    }

    /// Decrypts the key with `passphrase`.
    pub fn unlock(&self, passphrase: &str) -> Result<(), HomeError> {
        let pem = zeroize::Zeroizing::new(vmux_home::read(&self.path)?);
        let file = PrivateKey::from_openssh(&*pem).map_err(|e| HomeError::Config {
            path: self.path.clone(),
            message: format!("not an OpenSSH private key: {e}"),
        })?;
        let key = if file.is_encrypted() {
            file.decrypt(passphrase).map_err(|_| HomeError::Config {
                path: self.path.clone(),
                message: "wrong passphrase".into(),
            })?
        } else {
            file
        };
        *vmux_home::sync::write(&self.key) = Some(key);
        Ok(())
    }

    /// The CA's public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Issues a user certificate for `subject_blob` (which must be an
    /// ECDSA P-256 public key, as agents make), valid from a little before
    /// `now` for `validity` seconds. `key_id` names the agent.
    pub fn issue(
        &self,
        subject_blob: &[u8],
        key_id: &str,
        validity: u64,
        policy: &CertPolicy,
        now: u64,
    ) -> Result<IssuedCert, ErrorCode> {
        let Draft {
            builder,
            valid_after,
            valid_before,
        } = draft(subject_blob, key_id, validity, policy, now)?;
        let key = vmux_home::sync::read(&self.key);
        let key = key.as_ref().ok_or(ErrorCode::SignerLocked)?;
        let cert = builder.sign(key).map_err(internal)?;
        Ok(IssuedCert {
            certificate: cert.to_bytes().map_err(internal)?,
            ca_public_key: self.public().to_bytes().map_err(internal)?,
            valid_after,
            valid_before,
        })
    }
}

/// Where the session certificates' CA key lives (`--ca`, `ca` in
/// `signer.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaChoice {
    /// The signer's own CA key file (the default, `software`).
    Software,
    /// These phones' passkeys (`phone:NAME[,phone:NAME…]`): each
    /// certificate is signed on one of them, whichever approves first.
    Phones(Vec<String>),
}

impl CaChoice {
    /// Reads `software` or `phone:NAME[,phone:NAME…]`.
    pub fn parse(s: &str) -> Result<CaChoice, String> {
        let s = s.trim();
        if s.is_empty() || s == "software" {
            return Ok(CaChoice::Software);
        }
        let mut names: Vec<String> = Vec::new();
        for part in s.split(',') {
            let name = part
                .trim()
                .strip_prefix("phone:")
                .filter(|n| vmux_phone::book::valid_name(n))
                .ok_or_else(|| {
                    format!("CA {s:?}: expected `software` or phone:NAME[,phone:NAME…] with enrolled phones' names")
                })?;
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        Ok(CaChoice::Phones(names))
    }

    /// The phones whose passkeys are the CA (none for the software CA).
    pub fn phones(&self) -> &[String] {
        match self {
            CaChoice::Software => &[],
            CaChoice::Phones(p) => p,
        }
    }

    /// As `--ca` takes it: `software` or `phone:NAME,phone:NAME`.
    pub fn spec(&self) -> String {
        match self {
            CaChoice::Software => "software".into(),
            CaChoice::Phones(p) => p
                .iter()
                .map(|n| format!("phone:{n}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

pub use vmux_control::signer::CaLines;

/// The lines of `choice`, the software CA's key being `software` and a
/// phone's passkey `phone(NAME)` (`None`: not enrolled).
pub fn lines_of(
    choice: &CaChoice,
    software: &PublicKey,
    phone: impl Fn(&str) -> Option<PublicKey>,
) -> CaLines {
    let line = |k: &PublicKey| k.to_openssh().ok();
    match choice {
        CaChoice::Software => CaLines {
            ca: choice.spec(),
            lines: line(software).into_iter().collect(),
            missing: Vec::new(),
            sshd: Vec::new(),
        },
        CaChoice::Phones(names) => {
            let (mut lines, mut missing) = (Vec::new(), Vec::new());
            for name in names {
                match phone(name).as_ref().and_then(line) {
                    Some(l) => lines.push(l),
                    None => missing.push(name.clone()),
                }
            }
            CaLines {
                ca: choice.spec(),
                lines,
                missing,
                sshd: vec![PHONE_CA_SSHD_LINE.to_owned()],
            }
        }
    }
}

/// The sshd line a server before OpenSSH 10.3 needs to accept
/// certificates signed by a phone's passkey (the WebAuthn signature
/// format is not in its default `CASignatureAlgorithms`).
pub const PHONE_CA_SSHD_LINE: &str =
    "CASignatureAlgorithms +webauthn-sk-ecdsa-sha2-nistp256@openssh.com";

/// A user certificate being issued, before the CA signs it.
struct Draft {
    builder: Builder,
    valid_after: u64,
    valid_before: u64,
}

/// The certificate the policy allows for `subject_blob` (which must be an
/// ECDSA P-256 public key, as agents make), valid from a little before
/// `now` for `validity` seconds, `key_id` naming the agent.
fn draft(
    subject_blob: &[u8],
    key_id: &str,
    validity: u64,
    policy: &CertPolicy,
    now: u64,
) -> Result<Draft, ErrorCode> {
    let subject = PublicKey::from_bytes(subject_blob).map_err(|_| ErrorCode::MalformedRequest)?;
    if subject.algorithm()
        != (Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        })
    {
        return Err(ErrorCode::PolicyDenied);
    }
    if policy.principals.is_empty() {
        return Err(ErrorCode::PolicyDenied);
    }
    let valid_after = now.saturating_sub(BACKDATE_SECONDS);
    let valid_before = now.saturating_add(validity);
    let serial = rand::rngs::OsRng.next_u64();
    let mut b = Builder::new_with_random_nonce(
        &mut rand_core::OsRng,
        subject.key_data().clone(),
        valid_after,
        valid_before,
    )
    .map_err(internal)?;
    b.serial(serial)
        .and_then(|b| b.key_id(format!("{key_id} serial {serial}")))
        .and_then(|b| b.cert_type(CertType::User))
        .map_err(internal)?;
    for p in &policy.principals {
        b.valid_principal(p.clone()).map_err(internal)?;
    }
    for e in &policy.extensions {
        b.extension(e.clone(), "").map_err(internal)?;
    }
    Ok(Draft {
        builder: b,
        valid_after,
        valid_before,
    })
}

/// A new random P-256 key: the only kind a session certificate is for,
/// and the throwaway CA a phone's draft is laid out with.
fn random_p256() -> Result<PrivateKey, ssh_key::Error> {
    PrivateKey::random(
        &mut rand_core::OsRng,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
    )
}

fn internal(e: ssh_key::Error) -> ErrorCode {
    tracing::warn!(error = %e, "certificate issue failed");
    ErrorCode::Internal
}

/// A certificate whose CA key is a phone's passkey, before the phone
/// signs it: its to-be-signed bytes are the challenge of the phone's
/// card, and [`PhoneDraft::finish`] appends the signature.
pub struct PhoneDraft {
    /// The to-be-signed bytes (PROTOCOL.certkeys): the whole certificate
    /// up to and including the signature key, the passkey's blob.
    pub tbs: Vec<u8>,
    /// The passkey's public-key blob.
    pub ca_key: Vec<u8>,
    /// Start of validity.
    pub valid_after: u64,
    /// End of validity.
    pub valid_before: u64,
}

impl PhoneDraft {
    /// The certificate the policy allows, to be signed by the passkey
    /// `ca_key` (an `sk-ecdsa-sha2-nistp256@openssh.com` key). The fields
    /// are laid out by `ssh_key`'s builder (signed with a throwaway key),
    /// whose signature key and signature are then cut off and the
    /// passkey's key put in their place.
    pub fn new(
        subject_blob: &[u8],
        key_id: &str,
        validity: u64,
        policy: &CertPolicy,
        now: u64,
        ca_key: &PublicKey,
    ) -> Result<PhoneDraft, ErrorCode> {
        let d = draft(subject_blob, key_id, validity, policy, now)?;
        let throwaway = random_p256().map_err(internal)?;
        let laid_out = d
            .builder
            .sign(&throwaway)
            .and_then(|c| c.to_bytes())
            .map_err(internal)?;
        let parts = vmux_webauthn::openssh::certificate_parts(&laid_out).map_err(|e| {
            tracing::warn!(error = %e, "certificate layout failed");
            ErrorCode::Internal
        })?;
        // The to-be-signed bytes end with the signature key's string.
        let head = parts.tbs.len() - 4 - parts.signature_key.len();
        let ca_blob = ca_key.to_bytes().map_err(internal)?;
        let mut tbs = parts.tbs[..head].to_vec();
        tbs.extend_from_slice(&(ca_blob.len() as u32).to_be_bytes());
        tbs.extend_from_slice(&ca_blob);
        Ok(PhoneDraft {
            tbs,
            ca_key: ca_blob,
            valid_after: d.valid_after,
            valid_before: d.valid_before,
        })
    }

    /// The certificate with the phone's `webauthn-sk` signature, checked
    /// as sshd checks it (by the passkey, user verification required)
    /// before it is returned.
    pub fn finish(&self, signature: &[u8]) -> Result<IssuedCert, vmux_webauthn::Error> {
        let certificate = vmux_webauthn::openssh::certificate_with_signature(&self.tbs, signature);
        let (parts, _) = vmux_webauthn::openssh::verify_sk_certificate(
            &certificate,
            vmux_webauthn::UserVerification::Required,
        )?;
        if parts.tbs != self.tbs.as_slice() || parts.signature_key != self.ca_key.as_slice() {
            return Err(vmux_webauthn::Error::CertificateMalformed);
        }
        Ok(IssuedCert {
            certificate,
            ca_public_key: self.ca_key.clone(),
            valid_after: self.valid_after,
            valid_before: self.valid_before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::LineEnding;

    #[test]
    fn issues_within_policy() {
        let (_dir, path) = vmux_home::testing::temp_path("ca.key");
        let key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let pem = key
            .encrypt(&mut rand_core::OsRng, "pw")
            .unwrap()
            .to_openssh(LineEnding::LF)
            .unwrap();
        std::fs::write(&path, pem.as_bytes()).unwrap();
        let ca = Ca::load(&path, None).unwrap();
        let p256 = random_p256().unwrap();
        let blob0 = p256.public_key().to_bytes().unwrap();
        assert_eq!(
            ca.issue(&blob0, "x", 60, &CertPolicy::default(), 0),
            Err(ErrorCode::SignerLocked),
            "a locked CA issues nothing"
        );
        assert!(ca.unlock("wrong").is_err());
        ca.unlock("pw").unwrap();
        let eph = random_p256().unwrap();
        let policy = CertPolicy {
            principals: vec!["alice".into()],
            ..CertPolicy::default()
        };
        assert_eq!(policy.validity_for(100_000), 28_800);
        assert_eq!(policy.validity_for(0), 28_800);
        assert_eq!(policy.validity_for(60), 60);
        let blob = eph.public_key().to_bytes().unwrap();
        let issued = ca
            .issue(&blob, "vmux laptop", 3600, &policy, 1_000_000)
            .unwrap();
        let cert = ssh_key::Certificate::from_bytes(&issued.certificate).unwrap();
        assert_eq!(cert.valid_principals(), ["alice".to_owned()]);
        assert_eq!(cert.valid_after(), 1_000_000 - BACKDATE_SECONDS);
        assert_eq!(cert.valid_before(), 1_003_600);
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.extensions().len(), 5);
        assert!(cert.key_id().starts_with("vmux laptop serial "));
        cert.verify_signature().unwrap();
        // Only P-256 session keys are certified.
        let ed = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        assert_eq!(
            ca.issue(&ed.public_key().to_bytes().unwrap(), "x", 60, &policy, 0),
            Err(ErrorCode::PolicyDenied)
        );
    }

    #[test]
    fn the_ca_choice_reads_software_or_phone_names() {
        assert_eq!(CaChoice::parse(""), Ok(CaChoice::Software));
        assert_eq!(CaChoice::parse("software"), Ok(CaChoice::Software));
        assert_eq!(
            CaChoice::parse("phone:pixel, phone:ipad,phone:pixel"),
            Ok(CaChoice::Phones(vec!["pixel".into(), "ipad".into()]))
        );
        for bad in ["pixel", "phone:", "phone:a,b", "file:/x", "phone:\u{202e}x"] {
            assert!(CaChoice::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ca_lines_name_the_ca_as_ca_takes_it_and_the_phones_not_enrolled() {
        for spec in ["software", "phone:pixel", "phone:pixel,phone:ipad"] {
            let choice = CaChoice::parse(spec).unwrap();
            assert_eq!(choice.spec(), spec);
            assert_eq!(CaChoice::parse(&choice.spec()), Ok(choice));
        }
        let key = |c: &str| {
            let mut k = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
                .unwrap()
                .public_key()
                .clone();
            k.set_comment(c);
            k
        };
        let software = key("ca");
        let pixel = key("pixel");
        let lines = lines_of(&CaChoice::Software, &software, |_| Some(pixel.clone()));
        assert_eq!(lines.lines, vec![software.to_openssh().unwrap()]);
        assert!(lines.missing.is_empty() && lines.sshd.is_empty());
        let phones = CaChoice::parse("phone:pixel,phone:ipad").unwrap();
        let lines = lines_of(&phones, &software, |n| {
            (n == "pixel").then(|| pixel.clone())
        });
        assert_eq!(lines.ca, "phone:pixel,phone:ipad");
        assert_eq!(lines.lines, vec![pixel.to_openssh().unwrap()]);
        assert_eq!(lines.missing, vec!["ipad".to_owned()]);
        assert_eq!(lines.sshd, vec![PHONE_CA_SSHD_LINE.to_owned()]);
    }

    #[test]
    fn a_phone_draft_is_finished_only_with_its_passkeys_signature_over_it() {
        use vmux_webauthn::testing::SoftAuthenticator;
        use vmux_webauthn::{openssh, verify_assertion, verify_registration, RelyingParty};
        const RP: &str = "signer.vmux.test";
        const ORIGIN: &str = "https://signer.vmux.test:8443";
        const UV: vmux_webauthn::UserVerification = vmux_webauthn::UserVerification::Required;
        let rp = RelyingParty::new(RP, ORIGIN).unwrap();
        let mut phone = SoftAuthenticator::new(RP, ORIGIN);
        let cred =
            verify_registration(&rp, b"enrol", &phone.create(b"enrol").response(), UV).unwrap();
        let ca = openssh::public_key(&cred, RP);
        let eph = random_p256().unwrap();
        let blob = eph.public_key().to_bytes().unwrap();
        let policy = CertPolicy {
            principals: vec!["alice".into()],
            ..CertPolicy::default()
        };
        let draft = |now| PhoneDraft::new(&blob, "vmux laptop", 3600, &policy, now, &ca).unwrap();
        let d = draft(1_000_000);
        assert!(d.tbs.ends_with(&ca.to_bytes().unwrap()));
        assert_eq!((d.valid_after, d.valid_before), (999_700, 1_003_600));
        let sign = |phone: &mut SoftAuthenticator, data: &[u8]| {
            let got = phone.get(data);
            let v = verify_assertion(&rp, &cred, data, &got.response(), UV).unwrap();
            openssh::webauthn_signature(&v, data).unwrap()
        };
        // The passkey's signature over another draft (another nonce and
        // serial) does not finish this one.
        let other = draft(1_000_000);
        let wrong = sign(&mut phone, &other.tbs);
        assert!(d.finish(&wrong).is_err());
        let good = sign(&mut phone, &d.tbs);
        let issued = d.finish(&good).unwrap();
        assert_eq!(issued.ca_public_key, ca.to_bytes().unwrap());
        let (parts, _) = openssh::verify_sk_certificate(&issued.certificate, UV).unwrap();
        let cert = openssh::certificate_fields(&parts).unwrap();
        assert_eq!(cert.valid_principals(), ["alice".to_owned()]);
        assert_eq!(cert.public_key(), eph.public_key().key_data());
        assert!(cert.key_id().starts_with("vmux laptop serial "));
        // Only P-256 session keys are certified, as by the software CA.
        let ed = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        assert!(matches!(
            PhoneDraft::new(
                &ed.public_key().to_bytes().unwrap(),
                "x",
                60,
                &policy,
                0,
                &ca
            ),
            Err(ErrorCode::PolicyDenied)
        ));
    }
}
