//! What the signer's protocol tests share: a real signer server on a
//! loopback port over one fresh Ed25519 software key, and a hand-driven
//! agent's link to it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use vmux_link::testing::open_confirming;
use vmux_link::{AgentSession, Channel, Identity, LinkError};
use vmux_signer::approver::Approver;
use vmux_signer::checks::Freshness;
use vmux_signer::paired::PairedAgents;
use vmux_signer::provider::{KeyInfo, KeyProvider, KeyType, SoftwareKeys};
use vmux_signer::{Server, ServerParts};

/// A signer server named `test-signer`, its state and one Ed25519 key
/// under `dir`, deciding with `approver` (each decision bounded by
/// `approval_timeout`, windows up to `window_max_seconds`), serving on a
/// loopback port: its address, the server and the key.
pub async fn serve<A: Approver + Send + Sync + 'static>(
    dir: &Path,
    approver: A,
    approval_timeout: Duration,
    window_max_seconds: u64,
) -> (SocketAddr, Arc<Server<A>>, KeyInfo) {
    let keys = SoftwareKeys::open(&dir.join("keys"), false, None).unwrap();
    let info = keys.generate(KeyType::Ed25519, "test").unwrap();
    let providers: Vec<Box<dyn KeyProvider>> = vec![Box::new(keys)];
    let server = Arc::new(Server::new(ServerParts {
        name: "test-signer".into(),
        identity: Identity::generate(),
        providers,
        approver,
        paired: PairedAgents::open(dir.join("state.json"), Duration::ZERO).unwrap(),
        freshness: Freshness::default(),
        approval_timeout,
        ca: None,
        cert_policy: Default::default(),
        phone_ca: Vec::new(),
        window_max_seconds,
        audit: None,
        wake: vmux_proto::WakeEndpoint::None,
        phones: None,
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.clone().serve(listener));
    (addr, server, info)
}

/// A hand-driven agent with identity `id` opens a link to the signer at
/// `addr`, pairing (confirmed on its side) if it is new there.
pub async fn session(addr: SocketAddr, id: &Identity) -> Result<AgentSession, LinkError> {
    let stream = TcpStream::connect(addr).await?;
    let channel = Channel::connect(stream, id).await?;
    open_confirming(channel, "hand-driven", None).await
}
