//! Hardware tokens through PKCS#11 (YubiKey PIV, smart cards, TPMs via
//! tpm2-pkcs11, HSMs; SoftHSM2 in tests). Keys never leave the token:
//! ECDSA signs a SHA-256 digest we compute (CKM_ECDSA), RSA signs a
//! DigestInfo we build (CKM_RSA_PKCS, PKCS#1 v1.5). A token that
//! disappears is reported unavailable; the next use after it returns
//! opens the module afresh.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256, Sha512};
use ssh_key::public::{EcdsaPublicKey, KeyData, RsaPublicKey};
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, Mpint, PublicKey, Signature};
use vmux_proto::{ProviderKind, SSH_AGENT_RSA_SHA2_256, SSH_AGENT_RSA_SHA2_512};
use zeroize::Zeroizing;

use super::{KeyInfo, KeyProvider, SignError};

/// DER of the P-256 curve OID (CKA_EC_PARAMS).
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the Ed25519 OID (CKA_EC_PARAMS of CKK_EC_EDWARDS keys); some
/// tokens use the printable string `edwards25519` instead.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
/// DigestInfo prefixes (RFC 8017 §9.2).
const SHA256_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA512_INFO: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// A registered token.
#[derive(Clone)]
pub struct TokenConfig {
    /// Its name in vmux (`--name`).
    pub name: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The slot index among slots with a token (default the first).
    pub slot: Option<u64>,
    /// The user PIN (zeroized on drop, never logged).
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("module", &self.module)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The PIN was refused.
    #[error("token {0}: wrong PIN")]
    WrongPin(String),
    /// No token is present.
    #[error("token {0} is not available: {1}")]
    Unavailable(String, String),
    /// The token cannot make what was asked.
    #[error("token {0}: {1}")]
    Unsupported(String, String),
}

/// Which kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeyType {
    /// ECDSA P-256.
    P256,
    /// RSA with this many bits.
    Rsa(u64),
    /// Ed25519, where the token supports CKM_EDDSA.
    Ed25519,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    P256,
    Rsa,
    Ed25519,
}

struct Open {
    // Field order: the session closes before the module finalizes.
    session: Session,
    _ctx: Pkcs11,
}

struct Entry {
    info: KeyInfo,
    id: Vec<u8>,
    kind: Kind,
}

/// The keys of one PKCS#11 token.
pub struct Pkcs11Keys {
    cfg: TokenConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: Option<Open>,
    keys: Vec<Entry>,
    unavailable: Option<String>,
}

fn lost(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::GeneralError
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                // A key that vanished from a session that outlived its
                // token (SoftHSM keeps stale sessions): reopen and look
                // again.
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

/// Unwraps a DER OCTET STRING around an EC point, if it is one.
fn unwrap_octet_string(v: &[u8]) -> &[u8] {
    match v {
        [0x04, len, rest @ ..] if (*len as usize) == rest.len() && *len < 0x80 => rest,
        [0x04, 0x81, len, rest @ ..] if (*len as usize) == rest.len() => rest,
        _ => v,
    }
}

impl Pkcs11Keys {
    /// Opens the token and logs in; a wrong PIN is [`TokenError::WrongPin`],
    /// and so is an absent token ([`TokenError::Unavailable`]).
    pub fn open(cfg: TokenConfig) -> Result<Pkcs11Keys, TokenError> {
        let keys = Pkcs11Keys {
            cfg,
            state: Mutex::new(State::default()),
        };
        {
            let mut st = keys.lock();
            keys.connect(&mut st)?;
        }
        Ok(keys)
    }

    /// Like [`Pkcs11Keys::open`], but an absent token is not an error: it
    /// is reported unavailable and tried again on each use.
    pub fn open_lazily(cfg: TokenConfig) -> Result<Pkcs11Keys, TokenError> {
        let keys = Pkcs11Keys {
            cfg,
            state: Mutex::new(State::default()),
        };
        {
            let mut st = keys.lock();
            match keys.connect(&mut st) {
                Ok(()) => {}
                Err(e @ TokenError::WrongPin(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "token not available yet");
                    st.unavailable = Some(e.to_string());
                }
            }
        }
        Ok(keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        vmux_home::sync::lock(&self.state)
    }

    fn err(&self, e: impl std::fmt::Display) -> TokenError {
        TokenError::Unavailable(self.cfg.name.clone(), e.to_string())
    }

    /// (Re)opens the module, the slot and a logged-in session, and reads
    /// the key list.
    fn connect(&self, st: &mut State) -> Result<(), TokenError> {
        st.open = None;
        let ctx = Pkcs11::new(&self.cfg.module).map_err(|e| self.err(e))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| self.err(e))?;
        let slots = ctx.get_slots_with_token().map_err(|e| self.err(e))?;
        let slot = *slots
            .get(self.cfg.slot.unwrap_or(0) as usize)
            .ok_or_else(|| self.err("no token in that slot"))?;
        let session = ctx.open_rw_session(slot).map_err(|e| self.err(e))?;
        let pin = AuthPin::from(self.cfg.pin.to_string());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(P11Error::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => return Err(TokenError::WrongPin(self.cfg.name.clone())),
            Err(e) => return Err(self.err(e)),
        }
        st.keys = self.read_keys(&session).map_err(|e| self.err(e))?;
        st.open = Some(Open { session, _ctx: ctx });
        st.unavailable = None;
        Ok(())
    }

    fn read_keys(&self, s: &Session) -> Result<Vec<Entry>, P11Error> {
        let mut out = Vec::new();
        for private in s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])? {
            let attrs = s.get_attributes(
                private,
                &[
                    AttributeType::KeyType,
                    AttributeType::Id,
                    AttributeType::Label,
                ],
            )?;
            let (mut kind, mut id, mut label) = (None, Vec::new(), String::new());
            for a in attrs {
                match a {
                    Attribute::KeyType(k) => kind = Some(k),
                    Attribute::Id(i) => id = i,
                    Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                    _ => {}
                }
            }
            let Some(public) = find_key(s, ObjectClass::PUBLIC_KEY, &id)? else {
                continue;
            };
            let (data, kind) = match kind {
                Some(k) if k == KeyType::EC_EDWARDS => {
                    let (params, point) = ec_params_and_point(s, public)?;
                    if params != ED25519_OID && params != ED25519_NAME {
                        continue;
                    }
                    let Ok(raw) = <[u8; 32]>::try_from(unwrap_octet_string(&point)) else {
                        continue;
                    };
                    (
                        KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(raw)),
                        Kind::Ed25519,
                    )
                }
                Some(k) if k == KeyType::EC => {
                    let (params, point) = ec_params_and_point(s, public)?;
                    if params != P256_OID {
                        continue;
                    }
                    let Ok(k) = EcdsaPublicKey::from_sec1_bytes(unwrap_octet_string(&point)) else {
                        continue;
                    };
                    (KeyData::Ecdsa(k), Kind::P256)
                }
                Some(k) if k == KeyType::RSA => {
                    let a = s.get_attributes(
                        public,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )?;
                    let (mut n, mut e) = (Vec::new(), Vec::new());
                    for x in a {
                        match x {
                            Attribute::Modulus(m) => n = m,
                            Attribute::PublicExponent(p) => e = p,
                            _ => {}
                        }
                    }
                    let (Ok(n), Ok(e)) = (
                        Mpint::from_positive_bytes(&n),
                        Mpint::from_positive_bytes(&e),
                    ) else {
                        continue;
                    };
                    (KeyData::Rsa(RsaPublicKey { e, n }), Kind::Rsa)
                }
                _ => continue,
            };
            let comment = if label.is_empty() {
                format!(
                    "pkcs11:{}:{}",
                    self.cfg.name,
                    id.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            } else {
                label
            };
            let public = PublicKey::new(data, comment);
            let Ok(blob) = public.to_bytes() else {
                continue;
            };
            out.push(Entry {
                info: KeyInfo {
                    public,
                    blob,
                    kind: ProviderKind::HardwareToken,
                },
                id,
                kind,
            });
        }
        Ok(out)
    }

    /// Runs `f` on a live session, reconnecting once if the token went
    /// away and came back; marks the token unavailable if it is gone.
    fn with_session<T>(
        &self,
        f: impl Fn(&Session, &[Entry]) -> Result<T, P11Error>,
    ) -> Result<T, TokenError> {
        let mut st = self.lock();
        for attempt in 0..2 {
            if st.open.is_none() {
                if let Err(e) = self.connect(&mut st) {
                    st.unavailable = Some(e.to_string());
                    return Err(e);
                }
            }
            let open = st.open.as_ref().expect("connected just above");
            match f(&open.session, &st.keys) {
                Ok(v) => return Ok(v),
                Err(e) if lost(&e) && attempt == 0 => {
                    tracing::warn!(token = %self.cfg.name, error = %e, "token lost; reopening");
                    st.open = None;
                }
                Err(e) => {
                    if lost(&e) {
                        st.open = None;
                        st.unavailable = Some(e.to_string());
                    }
                    return Err(self.err(e));
                }
            }
        }
        Err(self.err("token lost"))
    }

    /// Why the token cannot be used now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.lock().unavailable.clone()
    }

    /// The token's name in vmux.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Generates a non-extractable key pair on the token.
    pub fn generate(&self, kind: TokenKeyType, label: &str) -> Result<KeyInfo, TokenError> {
        let id: Vec<u8> = rand::random::<[u8; 8]>().to_vec();
        let common_pub = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let (mechanism, mut public) = match kind {
            TokenKeyType::P256 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P256_OID.to_vec())],
            ),
            TokenKeyType::Rsa(bits) => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(bits.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                ],
            ),
            TokenKeyType::Ed25519 => (
                Mechanism::EccEdwardsKeyPairGen,
                vec![Attribute::EcParams(ED25519_OID.to_vec())],
            ),
        };
        public.extend(common_pub);
        self.with_session(|s, _| s.generate_key_pair(&mechanism, &public, &private).map(drop))?;
        let mut st = self.lock();
        let keys = match st.open.as_ref() {
            Some(o) => self.read_keys(&o.session).map_err(|e| self.err(e))?,
            None => return Err(self.err("token lost")),
        };
        st.keys = keys;
        st.keys
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.info.clone())
            .ok_or_else(|| {
                TokenError::Unsupported(self.cfg.name.clone(), "the new key is not listed".into())
            })
    }
}

impl KeyProvider for Pkcs11Keys {
    fn keys(&self) -> Vec<KeyInfo> {
        // The last list seen, also while the token is away (it is
        // reported unavailable and signing fails clearly).
        self.lock().keys.iter().map(|e| e.info.clone()).collect()
    }

    fn sign(&self, blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, SignError> {
        let (id, kind) = {
            let st = self.lock();
            let e = st
                .keys
                .iter()
                .find(|e| e.info.blob == blob)
                .ok_or(SignError::NotFound)?;
            (e.id.clone(), e.kind)
        };
        let (mechanism, input, alg) = match kind {
            Kind::Rsa => {
                let (prefix, digest, hash): (&[u8], Vec<u8>, HashAlg) = if flags
                    & SSH_AGENT_RSA_SHA2_512
                    != 0
                {
                    (&SHA512_INFO, Sha512::digest(data).to_vec(), HashAlg::Sha512)
                } else if flags & SSH_AGENT_RSA_SHA2_256 != 0 {
                    (&SHA256_INFO, Sha256::digest(data).to_vec(), HashAlg::Sha256)
                } else {
                    return Err(SignError::Refused(
                        "ssh-rsa (SHA-1) signatures are not supported; use rsa-sha2-256 or rsa-sha2-512",
                    ));
                };
                (
                    Mechanism::RsaPkcs,
                    [prefix, &digest].concat(),
                    Algorithm::Rsa { hash: Some(hash) },
                )
            }
            Kind::P256 => (
                Mechanism::Ecdsa,
                Sha256::digest(data).to_vec(),
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
            ),
            Kind::Ed25519 => (
                Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                    cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                )),
                data.to_vec(),
                Algorithm::Ed25519,
            ),
        };
        let raw = self
            .with_session(|s, _| {
                let handle =
                    find_key(s, ObjectClass::PRIVATE_KEY, &id)?.ok_or(P11Error::Pkcs11(
                        RvError::KeyHandleInvalid,
                        cryptoki::context::Function::FindObjects,
                    ))?;
                s.sign(&mechanism, handle, &input)
            })
            .map_err(|e| SignError::Failed(e.to_string()))?;
        let failed = |e: ssh_key::Error| SignError::Failed(e.to_string());
        let sig = if kind != Kind::P256 {
            Signature::new(alg, raw).map_err(failed)?
        } else {
            let s = p256::ecdsa::Signature::from_slice(&raw).map_err(|_| {
                SignError::Failed("the token returned a malformed ECDSA signature".into())
            })?;
            Signature::try_from(s).map_err(failed)?
        };
        Vec::<u8>::try_from(sig).map_err(|e| SignError::Failed(e.to_string()))
    }

    fn unavailable(&self) -> Option<String> {
        Pkcs11Keys::unavailable(self)
    }
}

/// The first object of `class` (a public or private key) whose
/// `CKA_ID` is `id`, if any.
fn find_key(s: &Session, class: ObjectClass, id: &[u8]) -> Result<Option<ObjectHandle>, P11Error> {
    let found = s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
    Ok(found.into_iter().next())
}

/// An EC public-key object's curve parameters and its (DER-wrapped) point.
fn ec_params_and_point(s: &Session, public: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>), P11Error> {
    let (mut params, mut point) = (Vec::new(), Vec::new());
    for a in s.get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])? {
        match a {
            Attribute::EcParams(p) => params = p,
            Attribute::EcPoint(p) => point = p,
            _ => {}
        }
    }
    Ok((params, point))
}
