//! Changes made from the page that a stolen session cookie must not make
//! on its own: unpairing an agent, subscribing a push endpoint, removing
//! a subscription. Each needs a passkey assertion with user verification
//! by the signed-in phone over a challenge that names the action and its
//! target (a [`Purpose::Action`] ticket, single use, two minutes), which
//! the page gets with the list it acts on. Only [`confirm`] makes a
//! [`Confirmed`].

use serde::Deserialize;

use super::{b64, ApiError, App};
use crate::desk::verify_phone;
use crate::limits::Purpose;
use axum::http::StatusCode;
use base64::Engine;
use vmux_webauthn::AssertionResponse;

/// Unpairing the agent whose id is the target.
pub(super) const UNPAIR: &str = "unpair";
/// Subscribing a push endpoint (the target is empty: the page asks for
/// the assertion on the tap, before the browser makes the subscription).
pub(super) const PUSH_SUBSCRIBE: &str = "push-subscribe";
/// Removing the subscription whose endpoint is the target.
pub(super) const PUSH_REMOVE: &str = "push-remove";

/// The assertion that confirms an action, as the page posts it beside
/// the action's own fields.
#[derive(Deserialize)]
pub(super) struct Confirmation {
    #[serde(default)]
    challenge: String,
    #[serde(default)]
    credential_id: String,
    #[serde(default)]
    authenticator_data: String,
    #[serde(default)]
    client_data_json: String,
    #[serde(default)]
    signature: String,
}

/// Proof that the signed-in phone's passkey confirmed `action` on
/// `target` just now.
#[derive(Debug)]
pub(super) struct Confirmed {
    _private: (),
}

/// The challenge (base64url) that confirms `action` on `target` for
/// `phone`.
pub(super) fn challenge_for(app: &App, phone: &str, action: &str, target: &str) -> String {
    let t = app.phones.tickets.issue(&Purpose::Action {
        phone,
        action,
        target,
    });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
}

/// Checks that `c` is `phone`'s passkey assertion (UV) over a fresh,
/// unused challenge for `action` on `target`, records its counter, and
/// uses the challenge up.
pub(super) fn confirm(
    app: &App,
    phone: &str,
    action: &str,
    target: &str,
    c: &Confirmation,
) -> Result<Confirmed, ApiError> {
    let needed = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "confirm this with the phone's passkey (reload the page and try again)",
        )
    };
    if c.challenge.is_empty() || c.signature.is_empty() {
        return Err(needed());
    }
    let challenge = b64("challenge", &c.challenge)?;
    let purpose = Purpose::Action {
        phone,
        action,
        target,
    };
    let ticket = app
        .phones
        .tickets
        .check(&purpose, &challenge)
        .ok_or_else(needed)?;
    let (id, ad, cdj, sig) = (
        b64("credential_id", &c.credential_id)?,
        b64("authenticator_data", &c.authenticator_data)?,
        b64("client_data_json", &c.client_data_json)?,
        b64("signature", &c.signature)?,
    );
    verify_phone(
        &app.phones.rp,
        &app.phones.book,
        phone,
        &challenge,
        &AssertionResponse {
            credential_id: &id,
            authenticator_data: &ad,
            client_data_json: &cdj,
            signature: &sig,
        },
    )
    .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))?;
    if !app.phones.tickets.spend(ticket) {
        return Err(needed());
    }
    Ok(Confirmed { _private: () })
}
