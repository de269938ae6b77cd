//! Opening a session on an encrypted channel: hello, pairing with a
//! verifiable code, and pinning.
//!
//! The states are explicit: a [`Channel`] is encrypted but its peer is not
//! yet trusted; only [`open_as_agent`] and [`open_as_signer`] turn it into
//! an [`AgentSession`] or a [`SignerSession`], and they do so only for a
//! peer that is pinned or that a person has just approved. On the agent
//! side, pairing needs a [`PairingPermit`] (none while signers are pinned,
//! unless the user asked) and ends in a [`PendingPairing`], which becomes
//! a session only when the signer's person approved and the agent's user
//! confirmed the same code. Code that serves
//! requests takes a session, so it cannot run before pairing.

use std::future::Future;
use std::time::Duration;

use rand::RngCore;
use vmux_proto::{
    pairing_code, pairing_commitment, ErrorCode, Hello, Message, Refused, Welcome, PAIR_NONCE_LEN,
    PROTOCOL_VERSION,
};

use crate::channel::Channel;
use crate::identity::{device_id, StaticKey};
use crate::LinkError;

/// Time allowed for each step of session opening (not for the person
/// approving a pairing, which the signer bounds itself).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Time the agent waits for the signer's verdict on a pairing: the
/// signer's approver has its own, shorter timeout.
pub const PAIRING_VERDICT_TIMEOUT: Duration = Duration::from_secs(300);

fn unexpected(expected: &'static str, got: &Message) -> LinkError {
    LinkError::Unexpected {
        expected,
        got: got.name(),
    }
}

/// A peer as the other end sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its display name (as it claims; shown, never trusted for access).
    pub name: String,
    /// Its id, derived from `static_key`.
    pub id: String,
    /// Its static key, proven by the handshake.
    pub static_key: StaticKey,
}

/// Permission to pair with a signer whose key is not pinned. The agent
/// gets one only from [`PairingPermit::check`]: when it has no pinned
/// signer at all, or when its user asked to pair with this signer
/// (`vmux agent pair --signer`, or a `--signer` named before anything was
/// pinned). Without one, [`open_as_agent`] cannot be asked to pair.
#[derive(Debug)]
pub struct PairingPermit {
    _checked: (),
}

impl PairingPermit {
    /// The rule: an agent with pinned signers never pairs by itself; it
    /// pairs only when its user asked for this signer.
    pub fn check(pinned_signers: usize, asked_by_user: bool) -> Option<PairingPermit> {
        (pinned_signers == 0 || asked_by_user).then_some(PairingPermit { _checked: () })
    }
}

/// What the agent expects of the signer it connects to.
#[derive(Debug)]
pub enum Expect {
    /// The signer must present this pinned key.
    Pinned(StaticKey),
    /// No pin for this signer, and the agent may pair with it.
    Pairing(PairingPermit),
}

/// An open session, agent side. Only this module makes one: after the
/// pinned signer proved its key, or after a pairing both people accepted.
pub struct AgentSession {
    channel: Channel,
    signer: Peer,
    paired_with_code: Option<String>,
}

impl AgentSession {
    /// The signer at the other end.
    pub fn signer(&self) -> &Peer {
        &self.signer
    }

    /// The code both sides showed, if this connection paired.
    pub fn paired_with_code(&self) -> Option<&str> {
        self.paired_with_code.as_deref()
    }

    /// The encrypted channel, to exchange messages on.
    pub fn channel(&mut self) -> &mut Channel {
        &mut self.channel
    }

    /// The channel, the signer and the pairing code, to run the session.
    pub fn into_parts(self) -> (Channel, Peer, Option<String>) {
        (self.channel, self.signer, self.paired_with_code)
    }
}

/// What opening a session gave: a session with a pinned signer, or a
/// pairing that both people must still accept.
pub enum Opened {
    /// The signer proved the pinned key and welcomed the agent.
    Session(AgentSession),
    /// A code is shown; [`PendingPairing::finish`] turns this into a
    /// session only when the signer's person approved AND the agent's user
    /// confirmed the same code.
    Pairing(PendingPairing),
}

/// A pairing whose code is known, waiting for the signer's verdict and the
/// agent user's confirmation. Dropping it abandons the pairing.
pub struct PendingPairing {
    channel: Channel,
    code: String,
    remote: StaticKey,
}

/// What the agent's user answered for a pending pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAnswer {
    /// The user typed this code (it must equal the pairing's).
    Typed(String),
    /// The user refused, or did not answer in time.
    Refused,
}

fn same_code(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl PendingPairing {
    /// The 6-digit code both sides show.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The id of the signer's key (proven by the handshake; not yet
    /// trusted).
    pub fn signer_id(&self) -> String {
        device_id(&self.remote)
    }

    /// Waits, at the same time and each bounded, for the signer's verdict
    /// and for `answer` (the agent user's). `signer_approved` is called
    /// when the signer's Welcome arrives first. Only both together give a
    /// session; a refusal or a different code on either side gives an
    /// error and nothing to pin.
    pub async fn finish(
        self,
        answer: impl Future<Output = AgentAnswer>,
        signer_approved: impl FnOnce(),
    ) -> Result<AgentSession, LinkError> {
        let PendingPairing {
            mut channel,
            code,
            remote,
        } = self;
        let check = |a: AgentAnswer| match a {
            AgentAnswer::Typed(t) if same_code(t.trim(), &code) => Ok(()),
            AgentAnswer::Typed(_) => Err(LinkError::CodeMismatch),
            AgentAnswer::Refused => Err(LinkError::NotConfirmed),
        };
        tokio::pin!(answer);
        let mut confirmed = false;
        let welcome = {
            let verdict = channel.recv_within(PAIRING_VERDICT_TIMEOUT);
            tokio::pin!(verdict);
            loop {
                tokio::select! {
                    a = &mut answer, if !confirmed => {
                        check(a)?;
                        confirmed = true;
                    }
                    v = &mut verdict => break v?,
                }
            }
        };
        let welcome = match welcome {
            Message::Welcome(w) => w,
            Message::Refused(r) => return Err(refused(r)),
            other => return Err(unexpected("Welcome", &other)),
        };
        check_version(welcome.version)?;
        if !confirmed {
            signer_approved();
            check(answer.await)?;
        }
        Ok(AgentSession {
            channel,
            signer: Peer {
                name: welcome.name,
                id: device_id(&remote),
                static_key: remote,
            },
            paired_with_code: Some(code),
        })
    }

    /// [`finish`](Self::finish) with an answer already given.
    pub async fn confirm(self, typed: &str) -> Result<AgentSession, LinkError> {
        let typed = AgentAnswer::Typed(typed.to_owned());
        self.finish(std::future::ready(typed), || {}).await
    }
}

/// Opens a session from the agent's side. With a pinned key, the signer
/// must present it and welcome the agent. Pairing (with a permit, or when
/// a pinned signer asks to pair again) stops at a [`PendingPairing`] as
/// soon as the code is known.
pub async fn open_as_agent(
    mut channel: Channel,
    agent_name: &str,
    expect: Expect,
) -> Result<Opened, LinkError> {
    let remote = *channel.remote_static();
    if let Expect::Pinned(pinned) = expect {
        if pinned != remote {
            return Err(LinkError::PinMismatch {
                expected: device_id(&pinned),
                got: device_id(&remote),
            });
        }
    }
    let want_pairing = matches!(expect, Expect::Pairing(_));
    channel
        .send(&Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: agent_name.to_owned(),
            want_pairing,
        }))
        .await?;
    let reply = channel.recv_within(STEP_TIMEOUT).await?;
    if matches!(reply, Message::PairStart) {
        let mut na = [0u8; PAIR_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut na);
        let h = channel.handshake_hash().to_vec();
        channel
            .send(&Message::PairCommit(pairing_commitment(&h, &na)))
            .await?;
        let ns = match channel.recv_within(STEP_TIMEOUT).await? {
            Message::PairNonce(ns) => ns,
            Message::Refused(r) => return Err(refused(r)),
            other => return Err(unexpected("PairNonce", &other)),
        };
        channel.send(&Message::PairReveal(na)).await?;
        let code = pairing_code(&h, &na, &ns);
        return Ok(Opened::Pairing(PendingPairing {
            channel,
            code,
            remote,
        }));
    }
    if want_pairing && !matches!(reply, Message::Refused(_)) {
        // We have no pin for this signer and it did not offer pairing: a
        // signer that skips the code is not one we can verify.
        return Err(unexpected("PairStart", &reply));
    }
    match reply {
        Message::Welcome(w) => {
            check_version(w.version)?;
            Ok(Opened::Session(AgentSession {
                channel,
                signer: Peer {
                    name: w.name,
                    id: device_id(&remote),
                    static_key: remote,
                },
                paired_with_code: None,
            }))
        }
        Message::Refused(r) => Err(refused(r)),
        other => Err(unexpected("Welcome", &other)),
    }
}

fn refused(r: Refused) -> LinkError {
    LinkError::Refused {
        code: r.code,
        message: r.message,
    }
}

fn check_version(v: u32) -> Result<(), LinkError> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(LinkError::Version(v, PROTOCOL_VERSION))
    }
}

/// A pairing the signer's person must decide on.
#[derive(Debug, Clone)]
pub struct PairingRequest {
    /// The agent asking.
    pub agent: Peer,
    /// The 6-digit code the agent shows too.
    pub code: String,
}

/// The signer's side of trust: who is paired, and who decides on new
/// pairings.
pub trait PairingGate {
    /// Whether an agent with this static key is paired (and not revoked).
    fn is_paired(&self, agent: &StaticKey) -> bool;

    /// Asks the person; on approval the gate pins the agent and returns
    /// `Ok`. Errors are the code to send back (e.g. `userDenied`).
    fn approve(
        &self,
        request: PairingRequest,
    ) -> impl Future<Output = Result<(), ErrorCode>> + Send;
}

/// An open session, signer side.
pub struct SignerSession {
    channel: Channel,
    agent: Peer,
}

impl SignerSession {
    /// The agent at the other end, paired.
    pub fn agent(&self) -> &Peer {
        &self.agent
    }

    /// The encrypted channel, to exchange messages on.
    pub fn channel(&mut self) -> &mut Channel {
        &mut self.channel
    }

    /// The channel and the agent, to run the session.
    pub fn into_parts(self) -> (Channel, Peer) {
        (self.channel, self.agent)
    }
}

/// Opens a session from the signer's side: a paired agent is welcomed; an
/// unknown one goes through pairing and `gate`'s decision.
pub async fn open_as_signer<G: PairingGate>(
    mut channel: Channel,
    signer_name: &str,
    gate: &G,
) -> Result<SignerSession, LinkError> {
    let hello = match channel.recv_within(STEP_TIMEOUT).await? {
        Message::Hello(h) => h,
        other => return Err(unexpected("Hello", &other)),
    };
    let remote = *channel.remote_static();
    let agent = Peer {
        name: hello.name,
        id: device_id(&remote),
        static_key: remote,
    };
    if hello.version != PROTOCOL_VERSION {
        refuse(
            &mut channel,
            ErrorCode::MalformedRequest,
            &format!("this signer speaks protocol version {PROTOCOL_VERSION}"),
        )
        .await;
        return Err(LinkError::Version(hello.version, PROTOCOL_VERSION));
    }
    if hello.want_pairing || !gate.is_paired(&remote) {
        channel.send(&Message::PairStart).await?;
        let commit = match channel.recv_within(STEP_TIMEOUT).await? {
            Message::PairCommit(c) => c,
            other => return Err(unexpected("PairCommit", &other)),
        };
        let mut ns = [0u8; PAIR_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut ns);
        channel.send(&Message::PairNonce(ns)).await?;
        let na = match channel.recv_within(STEP_TIMEOUT).await? {
            Message::PairReveal(na) => na,
            other => return Err(unexpected("PairReveal", &other)),
        };
        let h = channel.handshake_hash().to_vec();
        if pairing_commitment(&h, &na) != commit {
            refuse(
                &mut channel,
                ErrorCode::PairingInvalid,
                "pairing commitment did not match",
            )
            .await;
            return Err(LinkError::BadCommitment);
        }
        let code = pairing_code(&h, &na, &ns);
        if let Err(code) = gate
            .approve(PairingRequest {
                agent: agent.clone(),
                code,
            })
            .await
        {
            refuse(&mut channel, code, "pairing was not approved on the signer").await;
            return Err(LinkError::Refused {
                code,
                message: "pairing was not approved".into(),
            });
        }
    }
    channel
        .send(&Message::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            name: signer_name.to_owned(),
        }))
        .await?;
    Ok(SignerSession { channel, agent })
}

async fn refuse(channel: &mut Channel, code: ErrorCode, message: &str) {
    let _ = channel
        .send(&Message::Refused(Refused {
            code,
            message: message.to_owned(),
        }))
        .await;
}
