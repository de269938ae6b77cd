//! Which signers the agent keeps connected: the configured addresses, the
//! pinned signers' last addresses, and (while none is pinned) signers
//! found on the local network.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::shared::Shared;
use crate::sync::lock;
use crate::upstream;

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
    let maintained = Arc::new(Mutex::new(HashSet::new()));
    for address in addresses {
        maintain(shared, &maintained, address);
    }
    if discover {
        tokio::spawn(discovery(shared.clone(), maintained));
    }
}

/// Keeps `address` connected, once.
fn maintain(shared: &Arc<Shared>, maintained: &Mutex<HashSet<String>>, address: String) {
    if !lock(maintained).insert(address.clone()) {
        return;
    }
    shared.set_link(&address, |_| {});
    tokio::spawn(upstream::maintain(shared.clone(), address));
}

/// Browses the local network: connects to pinned signers wherever they
/// appear, and, while none is pinned, to the first new one, to pair.
/// Once a signer is pinned, others (impostors included) are ignored.
async fn discovery(shared: Arc<Shared>, maintained: Arc<Mutex<HashSet<String>>>) {
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
            maintain(&shared, &maintained, addr);
        } else {
            debug!(id = %found.id, "ignoring a signer that is not paired");
        }
    }
}
