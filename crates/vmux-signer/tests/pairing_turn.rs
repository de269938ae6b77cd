//! A stranger's pairing prompt never makes a paired agent wait, even with
//! an approver that asks one question at a time (as the terminal does):
//! the paired agent's request withdraws the open pairing prompt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vmux_link::{Identity, LinkError};
use vmux_proto::{ErrorCode, Message, SignContext, SignRequest};
use vmux_signer::approver::{Approver, Decision, DecisionKind, Verdict};
use vmux_signer::checks::now_ms;

mod common;
use common::session;

/// One question at a time, like the terminal. Pairing prompts after the
/// first are never answered (a person away from the signer); signatures
/// are approved.
#[derive(Default)]
struct OneAtATime {
    turn: tokio::sync::Mutex<()>,
    pairs: AtomicUsize,
}

impl Approver for OneAtATime {
    async fn decide(&self, d: &Decision, _timeout: Duration) -> Verdict {
        let _turn = self.turn.lock().await;
        if d.kind() == DecisionKind::Pair && self.pairs.fetch_add(1, Ordering::SeqCst) > 0 {
            std::future::pending::<()>().await;
        }
        Verdict::Approve
    }
}

#[tokio::test]
async fn a_paired_agents_request_withdraws_a_strangers_pairing_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Arc::new(OneAtATime::default());
    // Longer than the test's bound: only a withdrawal frees the turn.
    let (addr, _server, info) =
        common::serve(dir.path(), approver.clone(), Duration::from_secs(120), 0).await;

    let mut owner = session(addr, &Identity::generate())
        .await
        .expect("owner pairs");
    // A stranger asks to pair; nobody answers, and its prompt holds the
    // approver's turn.
    let stranger = tokio::spawn(async move { session(addr, &Identity::generate()).await });
    tokio::time::timeout(Duration::from_secs(20), async {
        while approver.pairs.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stranger's prompt opens");
    let now = now_ms();
    let req = SignRequest {
        request_id: [7; 16],
        key_blob: info.blob.clone(),
        data: b"to be signed".to_vec(),
        flags: 0,
        nonce: [7; 16],
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
        context: SignContext::default(),
    };
    owner
        .channel()
        .send(&Message::SignRequest(req))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match owner.channel().recv().await.unwrap() {
                Message::SignResponse(r) => return r.result,
                _ => continue,
            }
        }
    })
    .await
    .expect("the owner's request waited behind the stranger's pairing prompt");
    assert!(answer.is_ok(), "{answer:?}");
    match tokio::time::timeout(Duration::from_secs(10), stranger)
        .await
        .expect("the stranger's prompt was not withdrawn")
        .unwrap()
    {
        Err(LinkError::Refused { code, .. }) => assert_eq!(code, ErrorCode::ApprovalTimeout),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("the stranger was paired"),
    }
}
