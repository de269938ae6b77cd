//! What the agent's in-process tests share: an agent on a temporary
//! socket pointed at a fake signer, its user confirming the pairing code,
//! and raw agent-protocol requests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use vmux_agent::{AgentConfig, AgentSocket};
use vmux_control::agent::Client;
use vmux_link::{open_as_signer, Channel, Identity, PairingGate, PairingRequest, StaticKey};
use vmux_proto::ErrorCode;

/// A fake signer's pairing gate that pairs anyone.
pub struct Yes;

impl PairingGate for Yes {
    fn is_paired(&self, _: &StaticKey) -> bool {
        true
    }
    async fn approve(&self, _: PairingRequest) -> Result<(), ErrorCode> {
        Ok(())
    }
}

/// A fake signer (named `fake`, pairing anyone) on `listener`: each
/// session an agent opens goes to `serve`; a connection that fails its
/// handshake is dropped. Returns when the listener fails.
pub async fn fake_signer_sessions(listener: TcpListener, mut serve: impl FnMut(Channel)) {
    let identity = Identity::generate();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(channel) = Channel::accept(stream, &identity).await else {
            continue;
        };
        let Ok(session) = open_as_signer(channel, "fake", &Yes).await else {
            continue;
        };
        serve(session.into_parts().0);
    }
}

/// Sends one agent-protocol message and reads one answer.
pub fn ask(sock: &Path, msg: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(msg).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut a = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut a).unwrap();
    a
}

/// SSH_AGENTC_SIGN_REQUEST for `blob` over `data`, flags 0.
pub fn sign_request(blob: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = vec![13];
    for s in [blob, data] {
        b.extend_from_slice(&(s.len() as u32).to_be_bytes());
        b.extend_from_slice(s);
    }
    b.extend_from_slice(&0u32.to_be_bytes());
    let mut m = (b.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&b);
    m
}

/// An agent on `dir/agent.sock` for the signer at `addr`, running in this
/// process (so it counts as the vmux program for its control socket).
pub fn start_agent(
    dir: &Path,
    addr: String,
    sign_timeout: Duration,
) -> (PathBuf, tokio::task::JoinHandle<()>) {
    let config = AgentConfig {
        name: "test".into(),
        signers: vec![addr],
        sign_timeout,
        cert_validity: Duration::from_secs(60),
        cert_renew_before: Duration::from_secs(10),
        state_path: dir.join("agent-state.json"),
        identity: vmux_agent::IdentityStore::File(dir.join("agent-identity")),
        discovery: false,
        wake: Default::default(),
        apns_key_files: Vec::new(),
    };
    let sock = dir.join("agent.sock");
    let socket = AgentSocket::bind(&sock).unwrap();
    let agent = tokio::spawn(async move {
        let _ = vmux_agent::run(config, &socket).await;
    });
    (sock, agent)
}

/// Confirms the pairing code the agent shows, as its user would, until it
/// lists a key; false after 20 s. Blocking: call it off the runtime.
pub fn pair_until_listed(sock: &Path) -> bool {
    let t = Instant::now();
    loop {
        let agent = Client::new(sock).with_timeout(Duration::from_secs(5));
        if let Ok(status) = agent.status() {
            if let Some(code) = status.signers.first().and_then(|g| g.pairing_code.as_ref()) {
                let _ = agent.pair_confirm(code);
            }
        }
        let a = ask(sock, &[0, 0, 0, 1, 11]);
        if a.len() > 5 && a[1..5] != [0, 0, 0, 0] {
            return true;
        }
        if t.elapsed() > Duration::from_secs(20) {
            return false;
        }
        // Pairing has no signal on this socket but the status.
        std::thread::sleep(Duration::from_millis(10));
    }
}
