//! The agent: one accept loop, one small loop per client connection
//! ([`crate::client`]), and everything slow (the signer) off those loops
//! with a bounded wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::client;
use crate::discovery;
use crate::origin::Connection;
use crate::shared::{AgentConfig, Shared};
use crate::socket::AgentSocket;

/// Client connections served at once; one more is closed at once (the
/// promise: RSS under 20 MB with 1,000 clients, whatever they send).
pub(crate) const MAX_CLIENTS: usize = 1280;

/// How long a stopping agent waits for its state file to take the last
/// change.
const FLUSH_ON_STOP: Duration = Duration::from_secs(5);

/// Runs the agent on `socket` until the process is told to stop.
pub async fn run(config: AgentConfig, socket: &AgentSocket) -> Result<(), vmux_home::HomeError> {
    run_until(config, socket, std::future::pending()).await
}

/// Runs the agent on `socket` until `stop` resolves; then waits (bounded)
/// until every change to its state is on disk, so that cached keys and
/// pins learnt just before a stop are there at the next start.
pub async fn run_until(
    config: AgentConfig,
    socket: &AgentSocket,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), vmux_home::HomeError> {
    let identity = config.identity.load_or_create().await?;
    let shared = Arc::new(Shared::open(config, identity)?);
    tokio::select! {
        r = serve(&shared, socket) => r,
        () = stop => {
            if tokio::time::timeout(FLUSH_ON_STOP, shared.state_flushed()).await.is_err() {
                warn!("stopping before the state file took the last change");
            }
            Ok(())
        }
    }
}

async fn serve(shared: &Arc<Shared>, socket: &AgentSocket) -> Result<(), vmux_home::HomeError> {
    let shared = shared.clone();
    let _ = shared.me.set(Arc::downgrade(&shared));
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        shared.pairings.set_terminal();
        read_codes_from_terminal(shared.clone());
    }
    discovery::start(&shared);
    tokio::spawn(crate::cert::maintain(shared.clone()));
    crate::notice(&format!("listening on {}", socket.path.display()));
    let owner = socket.owner_uid;
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    let large = Arc::new(Semaphore::new(client::LARGE_MESSAGE_SLOTS));
    let mut refused_full = 0u64;
    loop {
        let (stream, _) = match socket.listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read peer credentials; closing");
                continue;
            }
        };
        if peer.uid() != owner {
            warn!(uid = peer.uid(), pid = ?peer.pid(), "refused a connection from another user");
            continue;
        }
        let Ok(slot) = clients.clone().try_acquire_owned() else {
            refused_full += 1;
            if refused_full.is_power_of_two() {
                warn!(
                    max = MAX_CLIENTS,
                    refused = refused_full,
                    "too many clients connected; closing new connections"
                );
            }
            continue;
        };
        let pid = peer.pid().and_then(|p| u32::try_from(p).ok());
        let (shared, large) = (shared.clone(), large.clone());
        tokio::spawn(async move {
            // The process is identified at connect, not when it signs, and
            // in its own task, off the runtime: no client can delay the
            // accepting of others.
            let conn = Connection::identify(pid).await;
            debug!(pid = ?conn.pid(), "client connected");
            if let Err(e) = client::serve(&shared, &large, stream, conn).await {
                debug!(error = %e, "client connection ended");
            }
            drop(slot);
        });
    }
}

/// The agent's user confirms a pairing by typing its code on the agent's
/// terminal (a line with anything else refuses the waiting pairings).
/// Blocking reads, on their own thread, never on the runtime.
fn read_codes_from_terminal(shared: Arc<Shared>) {
    use crate::pairing::Confirmed;
    let spawned = std::thread::Builder::new()
        .name("pairing-codes".into())
        .spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let typed = line.trim();
                if typed.is_empty() {
                    continue;
                }
                match shared.pairings.confirm(typed) {
                    Confirmed::Matched(address) => crate::notice(&format!(
                        "pairing with the signer at {address} confirmed here"
                    )),
                    Confirmed::Mismatch(n) => crate::notice(&format!(
                        "that is not the code of a waiting pairing; refused {n} pairing(s), nothing pinned"
                    )),
                    Confirmed::NoneWaiting => {
                        crate::notice("no pairing is waiting for confirmation")
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot read pairing codes from the terminal");
    }
}
