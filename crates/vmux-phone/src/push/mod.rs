//! Web Push to the phones' pages: the VAPID key and the message encryption
//! ([`crypto`]), and the sender ([`PushSettings`], the burst loop) that
//! wakes a phone with no page open when a decision waits for it.

mod crypto;
mod send;

pub use crypto::{
    encrypt, encrypt_with, vapid_authorization, EncryptError, VapidError, VapidKey, MAX_PAYLOAD,
};
pub(crate) use send::{run, Sender};
pub use send::{PushSettings, PushSetupError, PushStatus, TOPIC};
