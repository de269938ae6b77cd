//! `clientDataJSON` (WebAuthn §5.8.1).

use crate::{Error, RelyingParty};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    ty: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
}

/// Checks type, challenge (base64url without padding, compared in its
/// canonical encoding), origin and that the ceremony was not cross-origin.
/// Members WebAuthn may add are ignored.
pub(crate) fn check(
    json: &[u8],
    expected_type: &'static str,
    challenge: &[u8],
    rp: &RelyingParty,
) -> Result<(), Error> {
    let cd: ClientData = serde_json::from_slice(json).map_err(|_| Error::ClientDataMalformed)?;
    if cd.ty != expected_type {
        return Err(Error::WrongType {
            expected: expected_type,
        });
    }
    if cd.challenge != URL_SAFE_NO_PAD.encode(challenge) {
        return Err(Error::WrongChallenge);
    }
    if cd.origin != rp.origin() {
        return Err(Error::WrongOrigin);
    }
    if cd.cross_origin == Some(true) {
        return Err(Error::CrossOrigin);
    }
    Ok(())
}
