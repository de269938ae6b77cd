//! Signing through a signer: find the signer that listed the key, wake it
//! if it is away, wait for it within the sign timeout, send the request,
//! and verify the signature before any client sees it.

use std::time::Duration;

use rand::RngCore;
use tracing::{info, warn};
use vmux_proto::{SignContext, SignRequest};

use crate::board::WaitingRequest;
use crate::failure::SignFailure;
use crate::shared::{PendingGuard, Shared};
use crate::verify::ClientSignature;
use vmux_home::time::now_ms;

/// Longest validity a sign request is given (the signer refuses longer).
const REQUEST_LIFETIME: Duration = Duration::from_secs(60);

/// Signs through the signer that listed `key_blob`, waiting at most the
/// sign timeout, and verifying the answer.
pub(crate) async fn remote(
    shared: &Shared,
    key_blob: &[u8],
    data: &[u8],
    flags: u32,
    context: SignContext,
) -> Result<ClientSignature, SignFailure> {
    let _pending = PendingGuard::new(&shared.pending);
    let deadline = tokio::time::Instant::now() + shared.config.sign_timeout;
    let (signer_id, waiting) = {
        let state = shared.state();
        let (signer, key) = state.holder_of(key_blob).ok_or(SignFailure::UnknownKey)?;
        let signer_id = signer.id.clone();
        let waiting = WaitingRequest {
            id: 0,
            kind: vmux_proto::DecisionKind::Sign,
            signer: signer.name.clone(),
            key: key.comment.clone(),
            host: context.dest_host.clone().unwrap_or_default(),
            user: context.dest_user.clone().unwrap_or_default(),
            process: context.process.clone().unwrap_or_default(),
            namespace: context.namespace.clone().unwrap_or_default(),
            since_ms: 0,
        };
        (signer_id, waiting)
    };
    // Listed for the tray while it waits, with how it ended.
    let entry = shared.board.begin(waiting);
    let result = through(shared, &signer_id, deadline, key_blob, data, flags, context).await;
    entry.finish(&result);
    result
}

/// Waits for the signer `signer_id` (waking it), asks it, and checks its
/// answer.
async fn through(
    shared: &Shared,
    signer_id: &str,
    deadline: tokio::time::Instant,
    key_blob: &[u8],
    data: &[u8],
    flags: u32,
    context: SignContext,
) -> Result<ClientSignature, SignFailure> {
    let mut rx = shared.connected.subscribe();
    if !rx.borrow().contains_key(signer_id) {
        info!(signer = %signer_id, timeout = ?shared.config.sign_timeout, "waiting for signer to connect");
        shared.wake(signer_id);
    }
    let conn = tokio::time::timeout_at(deadline, async {
        loop {
            if let Some(c) = rx.borrow_and_update().get(signer_id).cloned() {
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
        expires_at_ms: issued + remaining.min(REQUEST_LIFETIME).as_millis() as u64,
        context,
    };
    let answer = tokio::time::timeout_at(deadline, conn.sign(request))
        .await
        .map_err(|_| SignFailure::TimedOut)?;
    if let Err(SignFailure::Signer(vmux_proto::ErrorCode::KeyNotFound)) = answer {
        // The signer no longer has a key this agent lists (a phone was
        // removed, a key deleted): ask for its list again, so clients
        // stop seeing it. A KeyList is only ever an answer (PROTOCOL 6.1).
        info!(signer = %signer_id, "the signer no longer has this key; refreshing its key list");
        tokio::spawn(async move {
            let _ = conn.refresh().await;
        });
    }
    let sig = answer?;
    let fingerprint = || {
        ssh_key::PublicKey::from_bytes(key_blob)
            .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
            .unwrap_or_default()
    };
    match ClientSignature::check(key_blob, data, flags, sig) {
        Ok(checked) => {
            if let Some(counter) = checked.sk_counter() {
                if let Err(e) = shared.counters.record(key_blob, &fingerprint(), counter) {
                    warn!(key = %fingerprint(), check = %e, "passkey signature refused: its counter did not move on (a cloned authenticator?); discarded");
                    return Err(SignFailure::BadSignature);
                }
            }
            Ok(checked)
        }
        Err(e) => {
            warn!(key = %fingerprint(), check = %e, "the signer's signature was refused; discarded");
            Err(SignFailure::BadSignature)
        }
    }
}
