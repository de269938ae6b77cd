//! Changes made from the page that a stolen session cookie must not make
//! on its own: unpairing an agent, subscribing a push endpoint, removing
//! a subscription. Each needs a passkey assertion with user verification
//! by the signed-in phone over a challenge that names the action and its
//! target (a [`Purpose::Action`] ticket, single use, two minutes), which
//! the page gets with the list it acts on. Only [`confirm`] makes a
//! [`Confirmed`], and one of an action is no other's.

use std::marker::PhantomData;

use serde::Deserialize;

use super::{b64, ApiError, App};
use crate::desk::verify_phone;
use crate::limits::Purpose;
use crate::session::SignedIn;
use axum::http::StatusCode;
use base64::Engine;
use vmux_webauthn::AssertionResponse;

/// An action the phone's passkey must confirm: its name in the
/// challenge's ticket.
pub(super) trait Action {
    /// The name.
    const NAME: &'static str;
}

/// Unpairing the agent whose id is the target.
#[derive(Debug)]
pub enum Unpair {}
/// Subscribing a push endpoint (the target is empty: the page asks for
/// the assertion on the tap, before the browser makes the subscription).
#[derive(Debug)]
pub(super) enum PushSubscribe {}
/// Removing the subscription whose endpoint is the target.
#[derive(Debug)]
pub(super) enum PushRemove {}

impl Action for Unpair {
    const NAME: &'static str = "unpair";
}
impl Action for PushSubscribe {
    const NAME: &'static str = "push-subscribe";
}
impl Action for PushRemove {
    const NAME: &'static str = "push-remove";
}

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

/// Proof that the signed-in phone's passkey confirmed the action `A` on
/// [`Confirmed::target`] just now (e.g. [`Unpair`]: the agent to unpair,
/// which `SignerInfo::unpair` takes). Made only by the page.
#[derive(Debug)]
pub struct Confirmed<A> {
    target: String,
    action: PhantomData<fn() -> A>,
}

impl<A> Confirmed<A> {
    /// What the action was confirmed on (an agent's id, an endpoint).
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// The challenge (base64url) that confirms `A` on `target` for the
/// signed-in phone.
pub(super) fn challenge_for<A: Action>(app: &App, signed: &SignedIn, target: &str) -> String {
    let t = app.phones.tickets.issue(&Purpose::Action {
        phone: signed.phone(),
        action: A::NAME,
        target,
    });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
}

/// Checks that `c` is the signed-in phone's passkey assertion (UV) over
/// a fresh, unused challenge for `A` on `target`, records its counter,
/// and uses the challenge up.
pub(super) fn confirm<A: Action>(
    app: &App,
    signed: &SignedIn,
    target: &str,
    c: &Confirmation,
) -> Result<Confirmed<A>, ApiError> {
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
        phone: signed.phone(),
        action: A::NAME,
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
        signed,
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
    Ok(Confirmed {
        target: target.to_owned(),
        action: PhantomData,
    })
}
