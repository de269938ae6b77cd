//! Control of a running signer through an owner-only Unix socket
//! (`signer.sock` beside its state): `status`, `lock`, `unlock`,
//! `unpair`, the phones, the CA it uses, and the open pairing prompt
//! (`pairpending`, `pairconfirm`: the owner confirms a pairing here, as
//! `vmux setup` does for an agent on the same machine). The running
//! signer is the one writer of its state. One typed request line
//! ([`vmux_control::signer::Request`]), one typed reply line
//! ([`vmux_control::signer::Reply`]); the client is
//! [`vmux_control::signer::Client`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{debug, warn};
use vmux_control::signer::{
    AgentRef, LastPush, PairingAgent, PendingPairing, Phone, PhoneLink, PhoneList, Reply, Request,
    Status, TrustLink, MAX_REQUEST,
};
use vmux_home::PrivateSocket;
use zeroize::Zeroizing;

use crate::approver::Approver;
use crate::Server;

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
            let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match Request::from_line(&line) {
                Some(request) => answer(&server, request),
                None => Reply::Error("malformed control request".into()),
            };
            debug!("control request answered");
            let _ = w.write_all(reply.to_line().as_bytes()).await;
        });
    }
}

/// The reply to one request.
fn answer<A: Approver + 'static>(server: &Server<A>, request: Request) -> Reply {
    match request {
        Request::Status => Reply::Status(Status {
            name: server.name().to_owned(),
            locked: server.is_locked(),
        }),
        Request::Lock => {
            server.lock();
            Reply::Locked(true)
        }
        Request::Unlock { passphrase } => match server.unlock(&passphrase) {
            Ok(()) => Reply::Locked(false),
            Err(e) => Reply::Error(e),
        },
        Request::Unpair { id } => match server.unpair(&id) {
            Ok(a) => Reply::Unpaired(a.map(|a| AgentRef {
                id: a.id,
                name: a.name,
            })),
            Err(e) => Reply::Error(e.to_string()),
        },
        Request::PhoneAdd { name } => {
            let Some(p) = server.phones() else {
                return Reply::Error(NO_PAGE.into());
            };
            match p.enrol_link(&name).map(|link| (link, p.trust_link())) {
                Ok((link, Ok(trust))) => Reply::PhoneLink(PhoneLink {
                    link,
                    trust: trust.map(|t| TrustLink {
                        url: t.url,
                        fingerprint: t.fingerprint,
                    }),
                }),
                Ok((_, Err(e))) => Reply::Error(e.to_string()),
                Err(e) => Reply::Error(e.to_string()),
            }
        }
        Request::Phones => match server.phones() {
            Some(p) => Reply::Phones(PhoneList {
                phones: p.list().into_iter().map(phone).collect(),
                origin: p.origin().to_owned(),
            }),
            None => Reply::Error(NO_PAGE.into()),
        },
        Request::PhoneRemove { name } => match server.phones() {
            Some(p) => match p.remove(&name) {
                Ok(r) => Reply::Removed(r.name),
                Err(e) => Reply::Error(e.to_string()),
            },
            None => Reply::Error(NO_PAGE.into()),
        },
        Request::PairPending => Reply::Pairing(server.pairing.pending().map(|p| PendingPairing {
            agent: p.agent_name,
            id: p.agent_id,
            code: p.code,
        })),
        Request::PairConfirm { code } => {
            let open = server.pairing.pending();
            match open.filter(|_| server.pairing.confirm(&code)) {
                Some(p) => Reply::Confirmed(PairingAgent {
                    agent: p.agent_name,
                    id: p.agent_id,
                }),
                None => Reply::Error("no pairing with that code waits for approval".into()),
            }
        }
        Request::Ca => match server.ca_lines() {
            Some(ca) => Reply::Ca(ca),
            None => Reply::Error("this signer issues no certificates".into()),
        },
    }
}

/// A phone as the page's service lists it, as the control socket says it.
fn phone(p: vmux_phone::PhoneView) -> Phone {
    Phone {
        name: p.name,
        added_at: p.added_at,
        last_seen: p.last_seen,
        online: p.online,
        push: p.push,
        last_push: p.last_push.map(|l| LastPush {
            sent_at: l.sent_at,
            result: l.result,
            answered_at: l.answered_at,
        }),
    }
}
