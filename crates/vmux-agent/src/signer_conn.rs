//! A live session with a signer, as request handlers see it: a queue to
//! the link's task and the link's request slots. A leaf: the link itself
//! is [`crate::upstream`]'s.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use vmux_proto::{CertRequest, IssuedCert, SignRequest};

use crate::failure::SignFailure;

/// Work for a signer link, with where to send the answer.
// Each lives for one trip through a channel; boxing the sign request
// would only add an allocation per signature.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outgoing {
    Sign {
        request: SignRequest,
        reply: oneshot::Sender<Result<Vec<u8>, SignFailure>>,
    },
    Cert {
        request: CertRequest,
        reply: oneshot::Sender<Result<IssuedCert, SignFailure>>,
    },
    RefreshKeys {
        reply: oneshot::Sender<()>,
    },
}

/// One of a link's [`vmux_proto::MAX_IN_FLIGHT`] request slots.
pub(crate) type Slot = tokio::sync::OwnedSemaphorePermit;

/// A live session with a signer, as seen by request handlers.
#[derive(Clone)]
pub struct SignerConn {
    tx: mpsc::Sender<(Outgoing, Slot)>,
    /// Requests in flight to this signer, at most
    /// [`vmux_proto::MAX_IN_FLIGHT`] (what the signer accepts); the rest
    /// wait here, within their deadline. A request's slot is freed when the
    /// signer answers it or the link drops, not when its client gives up:
    /// the signer is still working on it until then.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl SignerConn {
    /// A session whose link task reads work from the other end of `tx`.
    pub(crate) fn new(tx: mpsc::Sender<(Outgoing, Slot)>) -> SignerConn {
        SignerConn {
            tx,
            in_flight: Arc::new(tokio::sync::Semaphore::new(vmux_proto::MAX_IN_FLIGHT)),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Outgoing,
    ) -> Result<T, SignFailure> {
        let slot = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SignFailure::LinkLost)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((make(reply), slot))
            .await
            .map_err(|_| SignFailure::LinkLost)?;
        answer.await.map_err(|_| SignFailure::LinkLost)
    }

    /// Sends a sign request; resolves with the signer's answer.
    pub(crate) async fn sign(&self, request: SignRequest) -> Result<Vec<u8>, SignFailure> {
        self.ask(|reply| Outgoing::Sign { request, reply }).await?
    }

    /// Sends a certificate request; resolves with the signer's answer.
    pub(crate) async fn certificate(
        &self,
        request: CertRequest,
    ) -> Result<IssuedCert, SignFailure> {
        self.ask(|reply| Outgoing::Cert { request, reply }).await?
    }

    /// Asks for the key list again; resolves when it has arrived.
    pub(crate) async fn refresh(&self) -> Result<(), SignFailure> {
        self.ask(|reply| Outgoing::RefreshKeys { reply }).await
    }
}
