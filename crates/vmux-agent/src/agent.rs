//! The agent: one accept loop, one small loop per client connection, and
//! everything slow (the signer) off those loops with a bounded wait.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use rand::RngCore;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use vmux_link::Identity;
use vmux_proto::{SignContext, SignRequest};

use crate::cert::{self, CertSlot, CERT_COMMENT};
use crate::control;
use crate::origin::{self, Connection};
use crate::socket::AgentSocket;
use crate::state::AgentState;
use crate::upstream::{self, SignFailure, SignerConn};
use crate::verify::signature_is_valid;
use crate::wire::{self, Request, FAILURE, MAX_AGENT_MESSAGE, SUCCESS};

/// Longest validity a sign request is given (the signer refuses longer).
const REQUEST_WINDOW: Duration = Duration::from_secs(60);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's display name, shown on the signer.
    pub name: String,
    /// Signer addresses to keep connected (`--signer`); when empty, the
    /// last addresses of pinned signers.
    pub signers: Vec<String>,
    /// Bounded wait for a signature, from the client's request to the
    /// answer.
    pub sign_timeout: Duration,
    /// Validity to ask for session certificates.
    pub cert_validity: Duration,
    /// Renew the certificate while less than this remains.
    pub cert_renew_before: Duration,
    /// The state file.
    pub state_path: PathBuf,
    /// The agent's device identity file.
    pub identity_path: PathBuf,
    /// Look for signers on the local network when none is configured.
    pub discovery: bool,
    /// Wake providers (`[wake]` in agent.toml).
    pub wake: crate::wake::WakeFileConfig,
    /// `.p8` files tried when `[wake.apns]` names none.
    pub apns_key_files: Vec<PathBuf>,
}

/// What the agent knows about one signer address.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStatus {
    /// The signer's id, once a session opened.
    pub signer_id: Option<String>,
    /// The signer's name, once a session opened.
    pub signer_name: Option<String>,
    /// Whether a session is open now.
    pub connected: bool,
    /// Since when (Unix seconds) it is connected or disconnected.
    pub since: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The pairing code while a pairing waits for the signer's approval.
    pub pairing_code: Option<String>,
}

/// State shared by the accept loop, client handlers and signer links.
pub struct Shared {
    config: AgentConfig,
    identity: Identity,
    state: RwLock<AgentState>,
    connected: watch::Sender<HashMap<String, SignerConn>>,
    sessions: watch::Sender<u64>,
    links: Mutex<BTreeMap<String, LinkStatus>>,
    cert: CertSlot,
    pending: AtomicUsize,
    started: u64,
    waker: crate::wake::Waker,
    /// This value's own `Arc`, for tasks it spawns.
    me: std::sync::OnceLock<std::sync::Weak<Shared>>,
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Counts a request as pending for as long as it lives.
struct PendingGuard<'a>(&'a AtomicUsize);

impl<'a> PendingGuard<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        PendingGuard(n)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Loads the identity and state for `config`.
    pub fn open(config: AgentConfig) -> Result<Shared, vmux_home::HomeError> {
        let waker = crate::wake::Waker::new(&config.wake, &config.apns_key_files).map_err(|e| {
            vmux_home::HomeError::Config {
                path: "agent.toml [wake]".into(),
                message: e.to_string(),
            }
        })?;
        let identity = Identity::load_or_create(&config.identity_path)?;
        vmux_home::remove_stale_temps(&config.state_path);
        let state = AgentState::load(&config.state_path)?;
        Ok(Shared {
            config,
            identity,
            state: RwLock::new(state),
            connected: watch::Sender::new(HashMap::new()),
            sessions: watch::Sender::new(0),
            links: Mutex::new(BTreeMap::new()),
            cert: CertSlot::default(),
            pending: AtomicUsize::new(0),
            started: now_s(),
            waker,
            me: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn config(&self) -> &AgentConfig {
        &self.config
    }

    pub(crate) fn cert(&self) -> &CertSlot {
        &self.cert
    }

    /// A receiver that changes whenever a new signer session opens.
    pub(crate) fn sessions(&self) -> watch::Receiver<u64> {
        self.sessions.subscribe()
    }

    /// The current state (read lock; do not hold across awaits).
    pub fn state(&self) -> RwLockReadGuard<'_, AgentState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and writes it. A failed write is logged and the
    /// agent keeps serving from memory.
    pub(crate) fn update_state(&self, f: impl FnOnce(&mut AgentState)) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        if let Err(e) = s.save(&self.config.state_path) {
            warn!(error = %e, "cannot write the agent state; keeping it in memory");
        }
    }

    pub(crate) fn set_connected(&self, signer_id: &str, conn: Option<SignerConn>) {
        let opened = conn.is_some();
        self.connected.send_modify(|m| {
            match conn {
                Some(c) => m.insert(signer_id.to_owned(), c),
                None => m.remove(signer_id),
            };
        });
        if opened {
            self.sessions.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn set_link(&self, address: &str, f: impl FnOnce(&mut LinkStatus)) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let l = links
            .entry(address.to_owned())
            .or_insert_with(|| LinkStatus {
                since: self.started,
                ..LinkStatus::default()
            });
        f(l);
    }

    /// Every connected signer.
    pub(crate) fn all_connected(&self) -> Vec<SignerConn> {
        self.connected.borrow().values().cloned().collect()
    }

    /// Some connected signer, if any.
    pub(crate) fn any_connected(&self) -> Option<SignerConn> {
        self.connected.borrow().values().next().cloned()
    }

    /// What `vmux agent status` shows.
    pub fn status(&self) -> control::Status {
        let now = now_s();
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let state = self.state();
        control::Status::new(
            &self.config.name,
            &self.identity.id(),
            &links,
            &state,
            self.cert.status(now),
            self.pending.load(Ordering::Relaxed),
            self.last_wake(),
        )
    }

    /// Signs: locally with the session certificate's key when the client
    /// names it, else through the signer that holds `key_blob`, waiting at
    /// most the sign timeout, and verifying the answer.
    pub async fn sign(
        &self,
        key_blob: &[u8],
        data: &[u8],
        flags: u32,
        context: impl FnOnce() -> SignContext,
    ) -> Result<Vec<u8>, SignFailure> {
        if let Some(c) = self.cert.current(now_s()).filter(|c| c.matches(key_blob)) {
            return c.sign(data);
        }
        let _pending = PendingGuard::new(&self.pending);
        let deadline = tokio::time::Instant::now() + self.config.sign_timeout;
        let signer_id = self
            .state()
            .signer_of(key_blob)
            .map(str::to_owned)
            .ok_or(SignFailure::UnknownKey)?;
        let mut rx = self.connected.subscribe();
        if !rx.borrow().contains_key(&signer_id) {
            info!(signer = %signer_id, timeout = ?self.config.sign_timeout, "waiting for signer to connect");
            self.wake(&signer_id);
        }
        let conn = tokio::time::timeout_at(deadline, async {
            loop {
                if let Some(c) = rx.borrow_and_update().get(&signer_id).cloned() {
                    return Some(c);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .map_err(|_| SignFailure::TimedOut)?
        .ok_or(SignFailure::LinkLost)?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let issued = now_ms();
        let mut request_id = [0u8; 16];
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut request_id);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let request = SignRequest {
            request_id,
            key_blob: key_blob.to_vec(),
            data: data.to_vec(),
            flags,
            nonce,
            issued_at_ms: issued,
            expires_at_ms: issued + remaining.min(REQUEST_WINDOW).as_millis() as u64,
            context: context(),
        };
        let sig = tokio::time::timeout_at(deadline, conn.sign(request))
            .await
            .map_err(|_| SignFailure::TimedOut)??;
        if signature_is_valid(key_blob, data, flags, &sig) {
            Ok(sig)
        } else {
            Err(SignFailure::BadSignature)
        }
    }

    /// Sends a wake push to `signer` if it has a wake endpoint and the
    /// coalescing rules allow one now (one per outage, then one per
    /// interval). The push runs on its own; nobody waits for it.
    fn wake(self: &Shared, signer: &str) {
        let Some(endpoint) = self
            .state()
            .signers
            .iter()
            .find(|p| p.id == signer)
            .and_then(|p| p.wake.clone())
        else {
            return;
        };
        if !self.waker.should_push(signer) {
            return;
        }
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let signer = signer.to_owned();
        tokio::spawn(async move {
            let waiting = me.pending.load(Ordering::Relaxed).max(1);
            let outcome = me
                .waker
                .push(&signer, &endpoint, &me.config.name, waiting)
                .await;
            info!(%signer, %outcome, "wake push");
            if let crate::wake::Outcome::DropEndpoint(reason) = &outcome {
                warn!(%signer, %reason, "the signer's device token is unregistered; dropping it");
                me.update_state(|s| {
                    if let Some(p) = s.signers.iter_mut().find(|p| p.id == signer) {
                        p.wake = None;
                    }
                });
            }
        });
    }

    /// The signer is connected again: its next outage pushes afresh.
    pub(crate) fn outage_over(&self, signer: &str) {
        self.waker.outage_over(signer);
    }

    /// The last wake push's time and outcome.
    pub(crate) fn last_wake(&self) -> Option<(u64, String)> {
        self.waker.last()
    }

    /// Re-pulls the key list from every connected signer; resolves when
    /// all have answered (bounded).
    pub async fn refresh(&self) -> usize {
        let conns = self.all_connected();
        let all = async {
            for c in &conns {
                let _ = c.refresh().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), all).await;
        conns.len()
    }
}

/// Runs the agent on `socket` until the process is told to stop.
pub async fn run(config: AgentConfig, socket: &AgentSocket) -> Result<(), vmux_home::HomeError> {
    let shared = Arc::new(Shared::open(config)?);
    let _ = shared.me.set(Arc::downgrade(&shared));
    let addresses = if shared.config.signers.is_empty() {
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
    let maintained = Arc::new(Mutex::new(std::collections::HashSet::new()));
    for address in addresses {
        maintain(&shared, &maintained, address);
    }
    if discover {
        tokio::spawn(discovery(shared.clone(), maintained));
    }
    tokio::spawn(cert::maintain(shared.clone()));
    crate::notice(&format!("listening on {}", socket.path.display()));
    let owner = socket.owner_uid;
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
        let shared = shared.clone();
        tokio::spawn(async move {
            debug!(pid = ?peer.pid(), "client connected");
            let conn = Connection {
                pid: peer.pid().and_then(|p| u32::try_from(p).ok()),
                ..Connection::default()
            };
            if let Err(e) = serve_client(&shared, stream, conn).await {
                debug!(error = %e, "client connection ended");
            }
        });
    }
}

/// Keeps `address` connected, once.
fn maintain(
    shared: &Arc<Shared>,
    maintained: &Mutex<std::collections::HashSet<String>>,
    address: String,
) {
    if !maintained
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(address.clone())
    {
        return;
    }
    shared.set_link(&address, |_| {});
    tokio::spawn(upstream::maintain(shared.clone(), address));
}

/// Browses the local network: connects to pinned signers wherever they
/// appear, and, while none is pinned, to the first new one, to pair.
/// Once a signer is pinned, others (impostors included) are ignored.
async fn discovery(shared: Arc<Shared>, maintained: Arc<Mutex<std::collections::HashSet<String>>>) {
    let mut browser = match vmux_link::mdns::Browser::start() {
        Ok(b) => b,
        Err(e) => {
            crate::notice(&format!("{e}; use --signer HOST:PORT"));
            return;
        }
    };
    let mut seen = std::collections::HashSet::new();
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

/// One client: read a message, answer it, repeat. Oversized or
/// half-written frames end this connection only.
async fn serve_client(
    shared: &Shared,
    stream: UnixStream,
    mut conn: Connection,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    // Buffered: the length and the body usually arrive in one read.
    let mut r = tokio::io::BufReader::with_capacity(4096, r);
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_AGENT_MESSAGE {
            warn!(
                len,
                "client sent an oversized message; closing its connection"
            );
            return Ok(());
        }
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
        let answer = handle(shared, &mut conn, &body).await;
        w.write_all(&answer).await?;
    }
}

async fn handle(shared: &Shared, conn: &mut Connection, body: &[u8]) -> Vec<u8> {
    match wire::parse(body) {
        Request::RequestIdentities => {
            let cert = shared.cert.current(now_s());
            let state = shared.state();
            let keys = state.keys();
            debug!(count = keys.len(), "listing identities");
            let cert_entry = cert.as_ref().map(|c| (c.blob(), CERT_COMMENT));
            let ids: Vec<(&[u8], &str)> = cert_entry
                .into_iter()
                .chain(keys.iter().map(|k| (k.blob.as_slice(), k.comment.as_str())))
                .collect();
            wire::identities_answer(ids.into_iter())
        }
        Request::Sign {
            key_blob,
            data,
            flags,
        } => {
            let fingerprint = ssh_key::PublicKey::from_bytes(key_blob)
                .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
                .or_else(|_| {
                    ssh_key::Certificate::from_bytes(key_blob).map(|c| {
                        format!(
                            "certificate {}",
                            c.public_key().fingerprint(ssh_key::HashAlg::Sha256)
                        )
                    })
                })
                .unwrap_or_else(|_| "unparseable key".into());
            match shared
                .sign(key_blob, data, flags, || conn.context(data))
                .await
            {
                Ok(sig) => {
                    info!(key = %fingerprint, "signed");
                    wire::sign_response(&sig)
                }
                Err(e) => {
                    info!(key = %fingerprint, reason = %e, "sign failed");
                    wire::status(FAILURE)
                }
            }
        }
        Request::Extension {
            name: "session-bind@openssh.com",
            contents,
        } => match origin::bind::parse(contents).and_then(|b| conn.bindings.add(b)) {
            Ok(()) => wire::status(SUCCESS),
            Err(e) => {
                debug!(reason = %e, "session-bind refused");
                wire::status(FAILURE)
            }
        },
        Request::Extension {
            name: control::EXTENSION,
            contents,
        } => control::handle(shared, contents).await,
        Request::Extension { name, .. } => {
            debug!(extension = %vmux_proto::sanitize(name), "unsupported extension");
            wire::status(FAILURE)
        }
        Request::Unsupported(kind) => {
            debug!(kind, "unsupported request");
            wire::status(FAILURE)
        }
    }
}
