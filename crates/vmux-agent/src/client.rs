//! One client connection: read a message, answer it, repeat. What the
//! connection may do is decided by [`crate::origin::trust`] from its
//! session bindings; this loop only hands the proofs on.
//!
//! Memory is bounded by what clients actually send, not by what they
//! announce: a message body grows as its bytes arrive, at most
//! [`LARGE_MESSAGE_SLOTS`] clients at a time may be reading a message
//! larger than [`SMALL_MESSAGE`], and a message must be complete within
//! [`PARTIAL_MESSAGE_TIMEOUT`] of its first byte.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::cert::CERT_COMMENT;
use crate::control;
use crate::failure::SignFailure;
use crate::origin::trust::{self, Reach};
use crate::origin::{self, Connection};
use crate::shared::Shared;
use crate::verify::ClientSignature;
use crate::wire::{self, Request, FAILURE, MAX_AGENT_MESSAGE, SUCCESS};
use vmux_home::time::now_s;

/// Messages up to this size are read without asking for a slot.
pub(crate) const SMALL_MESSAGE: usize = 8 * 1024;
/// Clients that may be reading a larger message at once.
pub(crate) const LARGE_MESSAGE_SLOTS: usize = 8;
/// A message must be complete this long after its first byte arrived.
pub(crate) const PARTIAL_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a client at a time.
const READ_CHUNK: usize = 8 * 1024;
/// A body buffer larger than this is given back after its message.
const KEEP_BUFFER: usize = 16 * 1024;

/// Why a client's connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("announced a {0}-byte message, over the 256 KiB limit")]
    Oversized(usize),
    #[error("did not complete a message within {}s", PARTIAL_MESSAGE_TIMEOUT.as_secs())]
    Stalled,
    #[error("closed mid-message")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves one client until it closes its end or misbehaves.
pub(crate) async fn serve(
    shared: &Shared,
    large: &Arc<Semaphore>,
    stream: UnixStream,
    mut conn: Connection,
) -> Result<(), ClientError> {
    let (r, mut w) = stream.into_split();
    // Buffered: the length and a small body usually arrive in one read.
    let mut r = tokio::io::BufReader::with_capacity(1024, r);
    let mut body = Vec::new();
    loop {
        // Between messages a client may stay idle as long as it likes.
        if r.fill_buf().await?.is_empty() {
            return Ok(());
        }
        // A small message already whole in the buffer (the usual case: a
        // request arrives in one read) cannot stall: taken as it is,
        // without arming a timer.
        if !take_buffered(&mut r, &mut body) {
            tokio::time::timeout(
                PARTIAL_MESSAGE_TIMEOUT,
                read_message(&mut r, large, &mut body),
            )
            .await
            .map_err(|_| ClientError::Stalled)??;
        }
        let answer = handle(shared, &mut conn, &body).await;
        if body.capacity() > KEEP_BUFFER {
            body = Vec::new();
        }
        w.write_all(&answer).await?;
    }
}

/// Takes one length-prefixed message of at most [`SMALL_MESSAGE`] bytes
/// into `body` if the buffer holds all of it; else leaves both as they
/// are and says so.
fn take_buffered<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    body: &mut Vec<u8>,
) -> bool {
    let buffered = r.buffer();
    let Some(&[a, b, c, d]) = buffered.get(..4) else {
        return false;
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    let Some(message) = buffered.get(4..4 + len).filter(|_| len <= SMALL_MESSAGE) else {
        return false;
    };
    body.clear();
    body.extend_from_slice(message);
    r.consume(4 + len);
    true
}

/// Reads one length-prefixed message into `body`, growing it only as the
/// bytes arrive.
async fn read_message(
    r: &mut (impl AsyncRead + Unpin),
    large: &Arc<Semaphore>,
    body: &mut Vec<u8>,
) -> Result<(), ClientError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(eof_is_truncated)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_AGENT_MESSAGE {
        return Err(ClientError::Oversized(len));
    }
    let _slot = if len > SMALL_MESSAGE {
        Some(large.acquire().await.map_err(|_| ClientError::Stalled)?)
    } else {
        None
    };
    body.clear();
    while body.len() < len {
        let start = body.len();
        body.resize(start + (len - start).min(READ_CHUNK), 0);
        let n = r.read(&mut body[start..]).await?;
        body.truncate(start + n);
        if n == 0 {
            return Err(ClientError::Truncated);
        }
    }
    Ok(())
}

fn eof_is_truncated(e: std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ClientError::Truncated
    } else {
        ClientError::Io(e)
    }
}

/// Answers one message.
async fn handle(shared: &Shared, conn: &mut Connection, body: &[u8]) -> Vec<u8> {
    match wire::parse(body) {
        Request::RequestIdentities => {
            let cert = shared
                .cert
                .current(now_s())
                .filter(|_| Reach::of(&conn.bindings).sees_certificate());
            let passkeys_ok = passkeys_ok(shared, conn).await;
            let state = shared.state();
            let mut keys = state.keys();
            if !passkeys_ok {
                keys.retain(|k| !k.is_passkey());
            }
            debug!(count = keys.len(), "listing identities");
            let cert_entry = cert.as_ref().map(|c| (c.blob(), CERT_COMMENT));
            let ids = cert_entry
                .into_iter()
                .chain(keys.iter().map(|k| (k.blob.as_slice(), k.comment.as_str())));
            let (answer, left_out) = wire::identities_answer(ids);
            if left_out > 0 {
                warn_left_out(left_out);
            }
            answer
        }
        Request::Sign {
            key_blob,
            data,
            flags,
        } => {
            let fingerprint = fingerprint(key_blob);
            match sign(shared, conn, key_blob, data, flags).await {
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
        } => {
            let Some(local) = trust::local_control(&conn.bindings) else {
                warn!("a forwarded connection asked for the control extension; refused");
                return wire::status(FAILURE);
            };
            let Some(request) = vmux_control::agent::Request::from_contents(contents) else {
                debug!("malformed control request");
                return wire::status(FAILURE);
            };
            // Asked of every request: the status, too, says more to the
            // vmux program than to another client.
            let own = trust::own_program(&local, conn.program().await);
            if own.is_none() && control::needs_own_program(&request) {
                warn!(
                    pid = ?conn.pid(),
                    "a client that is not the vmux program asked to pair or for a certificate; refused"
                );
            }
            control::handle(shared, request, &local, own.as_ref()).await
        }
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

/// Signs `data`: with the session certificate's key only for a local
/// login it may serve, otherwise through the signer that holds the key.
async fn sign(
    shared: &Shared,
    conn: &Connection,
    key_blob: &[u8],
    data: &[u8],
    flags: u32,
) -> Result<ClientSignature, SignFailure> {
    if let Some(c) = shared.cert.current(now_s()).filter(|c| c.matches(key_blob)) {
        return match trust::local_login(&conn.bindings, data) {
            Some(proof) => c.sign(data, &proof),
            None => Err(SignFailure::CertificateNotHere(Reach::of(&conn.bindings))),
        };
    }
    let passkey = shared
        .state()
        .keys()
        .iter()
        .any(|k| k.blob == key_blob && k.is_passkey());
    if passkey && !passkeys_ok(shared, conn).await {
        return Err(SignFailure::ClientCannotUsePasskey);
    }
    let context = conn.context(data.to_vec()).await;
    crate::sign::remote(shared, key_blob, data, flags, context).await
}

/// Whether this connection's client may be offered passkey keys: only
/// asked when some signer lists one. An OpenSSH `ssh` older than 10.3
/// may not (see [`origin::client`]).
async fn passkeys_ok(shared: &Shared, conn: &Connection) -> bool {
    if !shared.state().has_passkey() {
        return true;
    }
    let exe = conn.executable().await;
    let kind = shared.clients.classify(exe).await;
    if !kind.takes_passkeys() {
        debug!(?kind, "passkey keys not offered to this client");
    }
    kind.takes_passkeys()
}

/// Says once, as a warning, that keys were left out of the identities
/// answer; later times only in the debug log.
fn warn_left_out(n: usize) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        debug!(left_out = n, "identities left out of the answer");
    } else {
        warn!(
            left_out = n,
            "the signers list more keys than an SSH client accepts in one answer (256 KiB, 2048 keys); the keys past that are not listed"
        );
    }
}

fn fingerprint(key_blob: &[u8]) -> String {
    ssh_key::PublicKey::from_bytes(key_blob)
        .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
        .or_else(|_| {
            ssh_key::Certificate::from_bytes(key_blob).map(|c| {
                format!(
                    "certificate {}",
                    c.public_key().fingerprint(ssh_key::HashAlg::Sha256)
                )
            })
        })
        .unwrap_or_else(|_| "unparseable key".into())
}
