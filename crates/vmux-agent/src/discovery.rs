//! Which signers the agent keeps connected: the configured addresses, the
//! pinned signers' last addresses, and (while none is pinned) signers
//! found on the local network.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::debug;

use crate::shared::Shared;
use crate::upstream;
use vmux_home::sync::lock;

/// Starts keeping the signers connected.
pub(crate) fn start(shared: &Arc<Shared>) {
    let addresses: Vec<String> = if shared.config.signers.is_empty() {
        shared
            .state()
            .signers
            .iter()
            .map(|s| s.address.clone())
            .collect()
    } else {
        shared.config.signers.clone()
    };
    let discover = shared.config.discovery && shared.config.signers.is_empty();
    if addresses.is_empty() && !discover {
        crate::notice("no signer configured and none paired yet; use --signer HOST:PORT");
    }
    // Addresses named with `--signer` before anything is pinned are the
    // user's choice to pair with; once signers are pinned, a `--signer`
    // address reaches only them (pairing another is `vmux agent pair`).
    if shared.state().signers.is_empty() {
        for address in &shared.config.signers {
            shared.pairings.ask(address);
        }
    }
    for address in addresses {
        maintain(shared, address);
    }
    if discover {
        tokio::spawn(discovery(shared.clone()));
    }
}

/// Keeps `address` connected, once.
pub(crate) fn maintain(shared: &Arc<Shared>, address: String) {
    if !lock(&shared.maintained).insert(address.clone()) {
        return;
    }
    shared.set_link(&address, |_| {});
    tokio::spawn(upstream::maintain(shared.clone(), address));
}

/// Browses the local network: connects to the addresses where a pinned
/// signer's id is advertised (reached only with that signer's pinned key,
/// so an impostor advertising the id cannot complete the handshake), and,
/// while none is pinned, to the first new one, to pair (accepted on both
/// sides). Once a signer is pinned, others (impostors included) are
/// ignored.
async fn discovery(shared: Arc<Shared>) {
    let mut browser = match vmux_link::mdns::Browser::start() {
        Ok(b) => b,
        Err(e) => {
            crate::notice(&format!("{e}; use --signer HOST:PORT"));
            return;
        }
    };
    let mut seen = HashSet::new();
    let mut pairing_with: Option<String> = None;
    while let Some(found) = browser.next().await {
        let Some(addr) = found.addresses.first().map(|a| a.to_string()) else {
            continue;
        };
        if seen.insert((found.id.clone(), addr.clone())) {
            crate::notice(&format!(
                "discovered signer {} ({}) at {addr}",
                vmux_proto::sanitize(&found.name),
                found.id
            ));
        }
        let (is_pinned, any_pinned) = {
            let state = shared.state();
            (
                state.signers.iter().any(|p| p.id == found.id),
                !state.signers.is_empty(),
            )
        };
        if is_pinned || (!any_pinned && pairing_with.as_ref().is_none_or(|id| *id == found.id)) {
            if !is_pinned {
                pairing_with = Some(found.id.clone());
            }
            maintain(&shared, addr);
        } else {
            debug!(id = %found.id, "ignoring a signer that is not paired");
        }
    }
}
