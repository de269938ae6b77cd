//! For other crates' tests only (feature `testing`): an agent session
//! opened by hand, confirming a pairing code without a person. A real
//! agent never does this; its user compares and confirms the code.

use crate::session::{open_as_agent, AgentSession, Expect, Opened, PairingPermit};
use crate::{Channel, LinkError};

/// Opens an agent session on `channel`: with `pinned`, expecting that
/// signer; without, pairing (as an agent with no pins) and confirming
/// whatever code is shown.
pub async fn open_confirming(
    channel: Channel,
    name: &str,
    pinned: Option<crate::StaticKey>,
) -> Result<AgentSession, LinkError> {
    let expect = match pinned {
        Some(k) => Expect::Pinned(k),
        None => Expect::Pairing(
            PairingPermit::check(0, false).ok_or_else(|| LinkError::NotPaired(String::new()))?,
        ),
    };
    match open_as_agent(channel, name, expect).await? {
        Opened::Session(s) => Ok(s),
        Opened::Pairing(p) => {
            let code = p.code().to_owned();
            p.confirm(&code).await
        }
    }
}
