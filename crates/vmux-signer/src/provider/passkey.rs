//! Passkey keys: each enrolled phone's passkey is an SSH key of type
//! `sk-ecdsa-sha2-nistp256@openssh.com` (application = the relying-party
//! id, comment = the phone's name). Its private half never leaves the
//! phone: a request for it is decided *and signed* on that phone (the
//! signer's `sign` sends it there as a data card), so this provider lists
//! keys and never signs itself.

use std::path::Path;
use std::sync::Arc;

use vmux_proto::ProviderKind;

use super::{KeyInfo, KeyProvider, SignError};

/// The enrolled phones' passkeys, as the running signer serving the phone
/// page offers them.
pub struct PasskeyKeys {
    phones: Arc<vmux_phone::Phones>,
}

impl PasskeyKeys {
    /// The passkey keys of the phones enrolled with `phones`.
    pub fn new(phones: Arc<vmux_phone::Phones>) -> PasskeyKeys {
        PasskeyKeys { phones }
    }
}

fn info(public: ssh_key::PublicKey) -> Option<KeyInfo> {
    Some(KeyInfo {
        blob: public.to_bytes().ok()?,
        public,
        kind: ProviderKind::Passkey,
    })
}

impl KeyProvider for PasskeyKeys {
    fn keys(&self) -> Vec<KeyInfo> {
        self.phones
            .passkey_keys()
            .into_iter()
            .filter_map(|(_, k)| info(k))
            .collect()
    }

    fn sign(&self, blob: &[u8], _data: &[u8], _flags: u32) -> Result<Vec<u8>, SignError> {
        if self.phones.phone_of_key(blob).is_some() {
            Err(SignError::Refused("a passkey key signs only on its phone"))
        } else {
            Err(SignError::NotFound)
        }
    }
}

/// The passkey keys of `phones.json` at `path`, read without a running
/// signer (for `vmux signer keys`): each with the relying-party id stored
/// at enrolment. Phones enrolled before that id was stored are returned
/// by name in the second list (their key is listed once a signer serving
/// the page has run with them).
pub fn passkey_keys_in(path: &Path) -> Result<(Vec<KeyInfo>, Vec<String>), vmux_home::HomeError> {
    let mut keys = Vec::new();
    let mut unknown = Vec::new();
    for p in vmux_phone::book::read_phones(path)? {
        match p.ssh_key(&p.rp_id).and_then(info) {
            Some(k) => keys.push(k),
            None => unknown.push(p.name),
        }
    }
    Ok((keys, unknown))
}
