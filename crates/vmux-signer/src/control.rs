//! Control of a running signer through an owner-only Unix socket
//! (`signer.sock` beside its state): `status`, `lock`, `unlock`,
//! `unpair`, the phones, the CA it uses, and the open pairing prompt
//! (`pairpending`, `pairconfirm`: the owner confirms a pairing here, as
//! `vmux setup` does for an agent on the same machine). The running
//! signer is the one writer of its state. One JSON request line, one JSON
//! answer line.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{debug, warn};
use vmux_home::PrivateSocket;
use zeroize::Zeroizing;

use crate::approver::Approver;
use crate::Server;

/// A control request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Is it running, is it locked?
    Status,
    /// Forget decrypted secrets.
    Lock,
    /// Decrypt with this passphrase.
    Unlock {
        /// The signer's passphrase.
        passphrase: String,
    },
    /// Unpair an agent: answers `{"unpaired": {"id", "name"}}`, or
    /// `{"unpaired": null}` when no agent (or more than one) matches.
    Unpair {
        /// The agent's id or an unambiguous prefix of it.
        id: String,
    },
    /// A one-time enrolment link for a new phone: answers `{"link"}`, and
    /// when the page's certificate is the signer's own also `{"trust",
    /// "fingerprint"}` (a one-time plain-HTTP trust link and the CA's
    /// SHA-256 fingerprint).
    PhoneAdd {
        /// The phone's name.
        name: String,
    },
    /// The enrolled phones: answers `{"phones": [...]}`.
    Phones,
    /// Revokes a phone: answers `{"removed": NAME}`.
    PhoneRemove {
        /// The phone's name.
        name: String,
    },
    /// The open pairing prompt: answers `{"pairing": {"agent", "id",
    /// "code"}}`, or `{"pairing": null}` when none is open.
    PairPending,
    /// Approves the open pairing prompt if its code is `code`: answers
    /// `{"confirmed": {"agent", "id"}}`, or an error when no prompt with
    /// that code is open.
    PairConfirm {
        /// The 6-digit code the agent shows.
        code: String,
    },
    /// The CA it issues session certificates with: answers `{"ca":
    /// CaLines}` ([`crate::ca::CaLines`]).
    Ca,
}

const MAX_LINE: usize = 64 * 1024;

/// The answer to a phone request when the signer serves no phone page.
pub const NO_PAGE: &str = "this signer serves no phone page; start it with --web-listen HOST:PORT (and --web-name NAME, or --web-origin https://NAME[:PORT] behind a proxy)";

/// Serves control requests on `socket` until the task is dropped.
pub async fn serve<A: Approver + 'static>(server: Arc<Server<A>>, socket: &PrivateSocket) {
    let listener = match socket.listener.try_clone().and_then(UnixListener::from_std) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot serve the control socket");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == socket.owner_uid => {}
            _ => {
                warn!("refused a control connection from another user");
                continue;
            }
        }
        let server = server.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = Zeroizing::new(String::new());
            let mut r = tokio::io::BufReader::new(r).take(MAX_LINE as u64);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Status) => {
                    json!({ "name": server.name(), "locked": server.is_locked() })
                }
                Ok(Request::Lock) => {
                    server.lock();
                    json!({ "locked": true })
                }
                Ok(Request::Unlock { passphrase }) => {
                    let passphrase = Zeroizing::new(passphrase);
                    match server.unlock(&passphrase) {
                        Ok(()) => json!({ "locked": false }),
                        Err(e) => json!({ "error": e }),
                    }
                }
                Ok(Request::Unpair { id }) => match server.unpair(&id) {
                    Ok(Some(a)) => json!({ "unpaired": { "id": a.id, "name": a.name } }),
                    Ok(None) => json!({ "unpaired": null }),
                    Err(e) => json!({ "error": e.to_string() }),
                },
                Ok(Request::PhoneAdd { name }) => match server.phones() {
                    Some(p) => match p.enrol_link(&name) {
                        Ok(link) => match p.trust_link() {
                            Ok(None) => json!({ "link": link }),
                            Ok(Some(t)) => json!({
                                "link": link,
                                "trust": t.url,
                                "fingerprint": t.fingerprint,
                            }),
                            Err(e) => json!({ "error": e.to_string() }),
                        },
                        Err(e) => json!({ "error": e.to_string() }),
                    },
                    None => json!({ "error": NO_PAGE }),
                },
                Ok(Request::Phones) => match server.phones() {
                    Some(p) => json!({ "phones": p.list(), "origin": p.origin() }),
                    None => json!({ "error": NO_PAGE }),
                },
                Ok(Request::PhoneRemove { name }) => match server.phones() {
                    Some(p) => match p.remove(&name) {
                        Ok(r) => json!({ "removed": r.name }),
                        Err(e) => json!({ "error": e.to_string() }),
                    },
                    None => json!({ "error": NO_PAGE }),
                },
                Ok(Request::PairPending) => match server.pairing.pending() {
                    Some(p) => {
                        json!({ "pairing": { "agent": p.agent_name, "id": p.agent_id, "code": p.code } })
                    }
                    None => json!({ "pairing": null }),
                },
                Ok(Request::PairConfirm { code }) => {
                    let open = server.pairing.pending();
                    match open.filter(|_| server.pairing.confirm(&code)) {
                        Some(p) => {
                            json!({ "confirmed": { "agent": p.agent_name, "id": p.agent_id } })
                        }
                        None => json!({ "error": "no pairing with that code waits for approval" }),
                    }
                }
                Ok(Request::Ca) => match server.ca_lines() {
                    Some(ca) => json!({ "ca": ca }),
                    None => json!({ "error": "this signer issues no certificates" }),
                },
                Err(_) => json!({ "error": "malformed control request" }),
            };
            debug!("control request answered");
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

/// Why a control request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No signer listens on the socket.
    #[error("no signer is running here ({0} does not answer); start it with `vmux signer run`")]
    NotRunning(String),
    /// The answer was not understood.
    #[error("the signer's control socket {0} gave an answer vmux does not understand")]
    BadAnswer(String),
}

/// Sends `request` to the signer's control socket at `path`.
pub fn query(path: &Path, request: &Request) -> Result<serde_json::Value, ControlError> {
    let shown = path.display().to_string();
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|_| ControlError::NotRunning(shown.clone()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let line = Zeroizing::new(format!(
        "{}\n",
        serde_json::to_string(request).map_err(|_| ControlError::BadAnswer(shown.clone()))?
    ));
    s.write_all(line.as_bytes())
        .map_err(|_| ControlError::NotRunning(shown.clone()))?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|_| ControlError::BadAnswer(shown.clone()))?;
    serde_json::from_str(&answer).map_err(|_| ControlError::BadAnswer(shown))
}
