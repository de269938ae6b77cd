//! The agent's state file (`agent-state.json`, mode 0600, written
//! atomically): the signers it has pinned and their cached public keys.
//! Public material only.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use vmux_home::HomeError;
use vmux_link::StaticKey;
use vmux_proto::{KeyRecord, ProviderKind};

/// A cached public key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedKey {
    /// SSH algorithm name.
    pub algorithm: String,
    /// OpenSSH public-key blob, base64.
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
    /// Comment.
    pub comment: String,
    /// Where the private key lives.
    pub provider_kind: String,
    /// Friendly name, may be empty.
    #[serde(default)]
    pub display_name: String,
}

impl From<&KeyRecord> for CachedKey {
    fn from(k: &KeyRecord) -> Self {
        CachedKey {
            algorithm: k.algorithm.clone(),
            blob: k.public_key_blob.clone(),
            comment: k.comment.clone(),
            provider_kind: k.provider_kind.as_str().to_owned(),
            display_name: k.display_name.clone().unwrap_or_default(),
        }
    }
}

impl CachedKey {
    /// Whether it is a phone's passkey (signed on that phone, in the
    /// WebAuthn format).
    pub fn is_passkey(&self) -> bool {
        self.provider_kind == "passkey"
    }

    /// The provider kind as an enum.
    pub fn provider(&self) -> ProviderKind {
        ProviderKind::parse(&self.provider_kind)
    }

    /// What the agent keeps of a signer's key list, in the signer's
    /// order: keys whose blob is an SSH public key of at most
    /// [`MAX_KEY_BLOB`] bytes, each once, at most
    /// [`MAX_KEYS_PER_SIGNER`] of them, with comments and names
    /// cut to [`MAX_KEY_COMMENT`] bytes and control characters
    /// (terminal escapes) replaced. Returns them with how many records
    /// were dropped.
    pub fn from_key_list(records: &[KeyRecord]) -> (Vec<CachedKey>, usize) {
        let mut kept: Vec<CachedKey> = Vec::new();
        for k in records {
            if kept.len() == MAX_KEYS_PER_SIGNER {
                break;
            }
            let usable = k.public_key_blob.len() <= MAX_KEY_BLOB
                && k.algorithm.len() <= MAX_ALGORITHM
                && ssh_key::PublicKey::from_bytes(&k.public_key_blob).is_ok()
                && !kept.iter().any(|c| c.blob == k.public_key_blob);
            if usable {
                let mut c = CachedKey::from(k);
                c.comment = bounded_text(&c.comment);
                c.display_name = bounded_text(&c.display_name);
                kept.push(c);
            }
        }
        let dropped = records.len() - kept.len();
        (kept, dropped)
    }
}

/// Most keys kept from one signer's key list; the rest are dropped with
/// a warning.
pub const MAX_KEYS_PER_SIGNER: usize = 256;
/// Longest key comment (and display name) kept, in bytes; longer ones are
/// cut.
pub const MAX_KEY_COMMENT: usize = 256;
/// Longest public-key blob kept (an RSA key of 16384 bits, the most
/// OpenSSH accepts, is about 2 KiB).
pub const MAX_KEY_BLOB: usize = 8 * 1024;
/// Longest algorithm name kept.
const MAX_ALGORITHM: usize = 64;

/// `s` with control characters replaced by `?`, cut to at most
/// [`MAX_KEY_COMMENT`] bytes on a character boundary.
fn bounded_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_KEY_COMMENT));
    for c in s.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_KEY_COMMENT {
            break;
        }
        out.push(c);
    }
    out
}

/// How to wake a signer, as it last said.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoredWake {
    /// APNs device token.
    Apns {
        /// Hex device token.
        device_token: String,
        /// Bundle id.
        topic: String,
        /// Sandbox environment.
        sandbox: bool,
    },
    /// HTTPS webhook.
    Webhook {
        /// The URL.
        url: String,
    },
}

impl StoredWake {
    /// From the wire message (`None` for "cannot be woken").
    pub fn from_wire(w: &vmux_proto::WakeEndpoint) -> Option<StoredWake> {
        match w {
            vmux_proto::WakeEndpoint::None => None,
            vmux_proto::WakeEndpoint::Apns {
                device_token,
                topic,
                sandbox,
            } => Some(StoredWake::Apns {
                device_token: device_token.clone(),
                topic: topic.clone(),
                sandbox: *sandbox,
            }),
            vmux_proto::WakeEndpoint::Webhook { url } => {
                Some(StoredWake::Webhook { url: url.clone() })
            }
        }
    }

    /// One line for status output (the token shortened).
    pub fn describe(&self) -> String {
        match self {
            StoredWake::Apns {
                device_token,
                topic,
                sandbox,
            } => format!(
                "APNs{} {topic}, device token {}…",
                if *sandbox { " (sandbox)" } else { "" },
                device_token.get(..8).unwrap_or(device_token)
            ),
            StoredWake::Webhook { url } => format!("webhook {url}"),
        }
    }
}

/// A signer this agent has paired with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedSigner {
    /// Its id (from its static key).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its pinned static key.
    #[serde(with = "b64")]
    pub static_key: Vec<u8>,
    /// The address it was last reached at.
    pub address: String,
    /// When it was paired, Unix seconds.
    pub paired_at: u64,
    /// Its keys, as last listed.
    #[serde(default)]
    pub keys: Vec<CachedKey>,
    /// How to wake it, as it last said.
    #[serde(default)]
    pub wake: Option<StoredWake>,
    /// The CA key (OpenSSH public-key blob) its first session certificate
    /// was signed by; certificates from another CA key are refused.
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<Vec<u8>>,
}

impl PinnedSigner {
    /// The static key as a fixed array, if well formed.
    pub fn static_key(&self) -> Option<StaticKey> {
        StaticKey::try_from(self.static_key.as_slice()).ok()
    }
}

/// Everything the agent remembers.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// Pinned signers.
    #[serde(default)]
    pub signers: Vec<PinnedSigner>,
}

fn one() -> u32 {
    1
}

impl AgentState {
    /// Loads the state at `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<AgentState, HomeError> {
        match vmux_home::read_optional(path)? {
            None => Ok(AgentState {
                version: 1,
                signers: Vec::new(),
            }),
            Some(bytes) => AgentState::parse(path, &bytes),
        }
    }

    /// Parses state bytes.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<AgentState, HomeError> {
        serde_json::from_slice(bytes).map_err(|e| HomeError::Config {
            path: path.to_owned(),
            message: format!("corrupt agent state ({e}); move it away or run `vmux agent forget`"),
        })
    }

    /// Writes the state atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), HomeError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| HomeError::io(path, std::io::Error::other(e)))?;
        vmux_home::write_private(path, &json)
    }

    /// The signer pinned for `address`, if any.
    pub fn pinned_at(&self, address: &str) -> Option<&PinnedSigner> {
        self.signers.iter().find(|s| s.address == address)
    }

    /// The signer whose static key is `key`, if pinned.
    pub fn by_key(&self, key: &StaticKey) -> Option<&PinnedSigner> {
        self.signers.iter().find(|s| s.static_key == key)
    }

    /// The pinned static keys, in the user's order.
    pub fn pinned_keys(&self) -> Vec<StaticKey> {
        self.signers
            .iter()
            .filter_map(PinnedSigner::static_key)
            .collect()
    }

    /// The id of the first signer, in the user's (pairing) order, whose
    /// own key list offered the key `blob`.
    pub fn signer_of(&self, blob: &[u8]) -> Option<&str> {
        self.holder_of(blob).map(|(s, _)| s.id.as_str())
    }

    /// The signer that [`signer_of`](Self::signer_of) names for `blob`,
    /// with that key as it listed it.
    pub fn holder_of(&self, blob: &[u8]) -> Option<(&PinnedSigner, &CachedKey)> {
        self.signers
            .iter()
            .find_map(|s| s.keys.iter().find(|k| k.blob == blob).map(|k| (s, k)))
    }

    /// How the user knows signer `id`: its name, else its id.
    pub fn name_of(&self, id: &str) -> String {
        self.signers
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| id.to_owned(), |p| p.name.clone())
    }

    /// Whether some signer lists a passkey key (as [`AgentState::keys`]
    /// would show, without listing them).
    pub fn has_passkey(&self) -> bool {
        self.signers
            .iter()
            .flat_map(|s| s.keys.iter())
            .any(|k| k.is_passkey())
    }

    /// Every cached key, each once, in signer order.
    pub fn keys(&self) -> Vec<&CachedKey> {
        let mut out: Vec<&CachedKey> = Vec::new();
        for k in self.signers.iter().flat_map(|s| s.keys.iter()) {
            if !out.iter().any(|o| o.blob == k.blob) {
                out.push(k);
            }
        }
        out
    }
}

/// Where the state file of a home lives.
pub fn state_path(home: &vmux_home::Home) -> PathBuf {
    home.state_file("agent-state.json")
}

/// A state file's path in a fresh temporary directory, which lives as
/// long as the `TempDir` does (for tests).
#[cfg(test)]
pub(crate) fn temp_state_path() -> (tempfile::TempDir, PathBuf) {
    vmux_home::testing::temp_path("agent-state.json")
}

mod b64 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&B64.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => B64.decode(s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(blob: Vec<u8>, comment: &str) -> KeyRecord {
        KeyRecord {
            algorithm: "ssh-ed25519".into(),
            public_key_blob: blob,
            comment: comment.into(),
            provider_kind: ProviderKind::Software,
            display_name: None,
        }
    }

    fn ed25519() -> Vec<u8> {
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .to_bytes()
            .unwrap()
    }

    #[test]
    fn a_key_list_is_bounded_on_arrival() {
        let good = ed25519();
        let long = format!("é{}\x1b[2Jmore", "x".repeat(400));
        let mut list = vec![
            record(good.clone(), &long),
            record(b"not a key".to_vec(), "broken"),
            record(good.clone(), "again"),
        ];
        let (kept, dropped) = CachedKey::from_key_list(&list);
        assert_eq!((kept.len(), dropped), (1, 2));
        assert!(kept[0].comment.len() <= MAX_KEY_COMMENT);
        assert!(kept[0].comment.starts_with("éxxx"));
        let (kept, _) = CachedKey::from_key_list(&[record(ed25519(), "a\x1b[2Jb")]);
        assert_eq!(kept[0].comment, "a?[2Jb");
        list.extend((0..2 * MAX_KEYS_PER_SIGNER).map(|_| record(ed25519(), "k")));
        let (kept, dropped) = CachedKey::from_key_list(&list);
        assert_eq!(kept.len(), MAX_KEYS_PER_SIGNER);
        assert_eq!(kept.len() + dropped, list.len());
        assert_eq!(kept[0].blob, good, "the signer's order is kept");
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let (_dir, p) = temp_state_path();
        assert_eq!(AgentState::load(&p).unwrap().signers.len(), 0);
        let s = AgentState {
            version: 1,
            signers: vec![PinnedSigner {
                id: "abc".into(),
                name: "pi".into(),
                static_key: vec![1; 32],
                address: "127.0.0.1:1".into(),
                paired_at: 5,
                keys: vec![CachedKey {
                    algorithm: "ssh-ed25519".into(),
                    blob: vec![1, 2],
                    comment: "c".into(),
                    provider_kind: "software".into(),
                    display_name: String::new(),
                }],
                wake: Some(StoredWake::Webhook {
                    url: "https://example.org/wake".into(),
                }),
                ca_key: Some(vec![7; 51]),
            }],
        };
        s.save(&p).unwrap();
        assert_eq!(AgentState::load(&p).unwrap(), s);
        assert_eq!(vmux_home::mode_of(&p).unwrap(), 0o600);
        assert_eq!(s.signer_of(&[1, 2]), Some("abc"));
        std::fs::write(&p, b"{\"signers\": 3}").unwrap();
        assert!(AgentState::load(&p).is_err());
    }
}
