//! Link tests over real loopback TCP: handshake, chunking, pairing codes,
//! pinning, and a relay in the middle.

use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use vmux_proto::{ErrorCode, Message};

use super::*;

struct Gate {
    paired: Mutex<Vec<StaticKey>>,
    approve: bool,
    codes: Mutex<Vec<String>>,
}

impl Gate {
    fn new(approve: bool) -> Gate {
        Gate {
            paired: Mutex::new(Vec::new()),
            approve,
            codes: Mutex::new(Vec::new()),
        }
    }
}

impl PairingGate for Gate {
    fn is_paired(&self, agent: &StaticKey) -> bool {
        self.paired.lock().unwrap().contains(agent)
    }

    async fn approve(&self, request: PairingRequest) -> Result<(), ErrorCode> {
        self.codes.lock().unwrap().push(request.code);
        if self.approve {
            self.paired.lock().unwrap().push(request.agent.static_key);
            Ok(())
        } else {
            Err(ErrorCode::UserDenied)
        }
    }
}

async fn pipe() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    (a.unwrap(), b.unwrap().0)
}

/// `N` fresh identities.
fn identities<const N: usize>() -> [Identity; N] {
    std::array::from_fn(|_| Identity::generate())
}

async fn channels(agent: &Identity, signer: &Identity) -> (Channel, Channel) {
    let (a, s) = pipe().await;
    let (ca, cs) = tokio::join!(Channel::connect(a, agent), Channel::accept(s, signer));
    (ca.unwrap(), cs.unwrap())
}

#[tokio::test]
async fn handshake_authenticates_both_static_keys_and_carries_big_messages() {
    let [ai, si] = identities();
    let (mut a, mut s) = channels(&ai, &si).await;
    assert_eq!(a.remote_static(), si.public());
    assert_eq!(s.remote_static(), ai.public());
    assert_eq!(a.handshake_hash(), s.handshake_hash());
    let big = Message::KeyList(vec![vmux_proto::KeyRecord {
        algorithm: "ssh-ed25519".into(),
        public_key_blob: vec![7; 600 * 1024],
        comment: "big".into(),
        provider_kind: vmux_proto::ProviderKind::Software,
        display_name: None,
    }]);
    a.send(&big).await.unwrap();
    a.send(&Message::Ping(1)).await.unwrap();
    assert_eq!(s.recv().await.unwrap(), big);
    assert_eq!(s.recv().await.unwrap(), Message::Ping(1));
}

fn permit() -> Expect {
    Expect::Pairing(PairingPermit::check(0, false).expect("no pins: may pair"))
}

/// The agent's side of a first connection (with a permit): its user
/// answers the code the pairing shows with `answer(code)`.
async fn agent_pairs(
    channel: Channel,
    answer: impl FnOnce(&str) -> AgentAnswer,
) -> Result<AgentSession, LinkError> {
    match open_as_agent(channel, "laptop", permit()).await? {
        Opened::Pairing(p) => {
            let answer = answer(p.code());
            p.finish(std::future::ready(answer), || {}).await
        }
        Opened::Session(s) => Ok(s),
    }
}

/// The agent's user types the code shown.
fn typed(code: &str) -> AgentAnswer {
    AgentAnswer::Typed(code.to_owned())
}

#[test]
fn an_agent_with_pins_gets_no_permit_unless_its_user_asked() {
    assert!(PairingPermit::check(0, false).is_some());
    assert!(PairingPermit::check(1, false).is_none());
    assert!(PairingPermit::check(1, true).is_some());
}

/// The signer's person approves (Welcome), but the agent's user typed
/// another code or refused: no session, so nothing for the agent to pin.
#[tokio::test]
async fn a_pairing_the_agent_user_did_not_confirm_gives_no_session() {
    for answer in [AgentAnswer::Typed("000000".into()), AgentAnswer::Refused] {
        let [ai, si] = identities();
        let gate = Gate::new(true);
        let (a, s) = channels(&ai, &si).await;
        let (ra, rs) = tokio::join!(
            agent_pairs(a, |real| match &answer {
                AgentAnswer::Typed(_) if real == "000000" => typed("000001"),
                other => other.clone(),
            }),
            open_as_signer(s, "pi", &gate)
        );
        rs.unwrap();
        match (&answer, ra) {
            (AgentAnswer::Typed(_), Err(LinkError::CodeMismatch)) => {}
            (AgentAnswer::Refused, Err(LinkError::NotConfirmed)) => {}
            (_, Err(e)) => panic!("wrong error: {e}"),
            (_, Ok(_)) => panic!("a session without the agent user's confirmation"),
        }
    }
}

#[tokio::test]
async fn pairing_shows_the_same_code_and_pins() {
    let [ai, si] = identities();
    let gate = Gate::new(true);
    let (a, s) = channels(&ai, &si).await;
    let mut shown = String::new();
    let (ra, rs) = tokio::join!(
        agent_pairs(a, |code| {
            shown = code.to_owned();
            typed(code)
        }),
        open_as_signer(s, "pi", &gate)
    );
    let (ra, rs) = (ra.unwrap(), rs.unwrap());
    assert_eq!(ra.signer().name, "pi");
    assert_eq!(ra.signer().static_key, *si.public());
    assert_eq!(rs.agent().name, "laptop");
    assert_eq!(rs.agent().id, ai.id());
    assert_eq!(
        ra.paired_with_code(),
        Some(shown.as_str()),
        "paired without a code"
    );
    assert_eq!(gate.codes.lock().unwrap().as_slice(), [shown.clone()]);
    assert_eq!(shown.len(), 6);

    // A second connection with the pin asks nobody.
    let (a, s) = channels(&ai, &si).await;
    let (ra, rs) = tokio::join!(
        open_as_agent(a, "laptop", Expect::Pinned(*si.public())),
        open_as_signer(s, "pi", &gate)
    );
    let Ok(Opened::Session(ra)) = ra else {
        panic!("a pinned signer asked for a code")
    };
    assert!(ra.paired_with_code().is_none());
    rs.unwrap();
    assert_eq!(gate.codes.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn denied_pairing_is_refused_on_both_sides() {
    let [ai, si] = identities();
    let gate = Gate::new(false);
    let (a, s) = channels(&ai, &si).await;
    let (ra, rs) = tokio::join!(agent_pairs(a, typed), open_as_signer(s, "pi", &gate));
    assert!(matches!(
        ra,
        Err(LinkError::Refused {
            code: ErrorCode::UserDenied,
            ..
        })
    ));
    assert!(rs.is_err());
    assert!(!gate.is_paired(ai.public()));
}

#[tokio::test]
async fn a_different_signer_key_is_refused_by_the_pin() {
    let [ai, si, other] = identities();
    let gate = Gate::new(true);
    let (a, s) = channels(&ai, &other).await;
    let (ra, _rs) = tokio::join!(
        open_as_agent(a, "laptop", Expect::Pinned(*si.public())),
        async {
            // The impostor signer may see the connection drop.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                open_as_signer(s, "evil", &gate),
            )
            .await;
        }
    );
    match ra {
        Err(LinkError::PinMismatch { expected, got }) => {
            assert_eq!(expected, si.id());
            assert_eq!(got, other.id());
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("impostor accepted"),
    }
}

/// A relay that terminates both sides (its own Noise sessions to each)
/// and forwards pairing messages. The two handshake hashes differ, so
/// either the commitment check fails or the codes differ.
#[tokio::test]
async fn a_relay_in_the_middle_cannot_make_codes_match() {
    let [ai, si, mi] = identities();
    let gate = Gate::new(true);
    let (a, m_for_agent) = channels(&ai, &mi).await;
    let (m_for_signer, s) = channels(&mi, &si).await;
    let relay = async move {
        let (mut up, mut down) = (m_for_agent, m_for_signer);
        // Forward every message both ways until one side closes.
        loop {
            tokio::select! {
                m = up.recv() => match m { Ok(m) => if down.send(&m).await.is_err() { break }, Err(_) => break },
                m = down.recv() => match m { Ok(m) => if up.send(&m).await.is_err() { break }, Err(_) => break },
            }
        }
    };
    let mut agent_code = None;
    let (ra, rs, _) = tokio::join!(
        agent_pairs(a, |code| {
            agent_code = Some(code.to_owned());
            typed(code)
        }),
        open_as_signer(s, "pi", &gate),
        relay
    );
    // The relayed commitment does not open under the signer's hash.
    assert!(
        matches!(rs, Err(LinkError::BadCommitment)),
        "{:?}",
        rs.err()
    );
    assert!(ra.is_err());
    assert!(gate.codes.lock().unwrap().is_empty());
    // Whatever the agent showed, the signer never saw a code to match.
    let _ = agent_code;
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_rejected() {
    use tokio::io::AsyncWriteExt;
    let si = Identity::generate();
    let (mut a, s) = pipe().await;
    a.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
    assert!(matches!(
        Channel::accept(s, &si).await,
        Err(LinkError::BadPreamble)
    ));
}

#[test]
fn identity_round_trips_through_a_0600_file() {
    let dir = tempfile_dir();
    let p = dir.join("id");
    let a = Identity::load_or_create(&p).unwrap();
    let b = Identity::load_or_create(&p).unwrap();
    assert_eq!(a.public(), b.public());
    assert_eq!(vmux_home::mode_of(&p).unwrap(), 0o600);
    assert_eq!(a.id().len(), 20);
    // Encrypted: needs the passphrase, refuses a wrong one.
    let e = dir.join("enc");
    a.save_with(&e, Some(b"correct horse")).unwrap();
    let text = std::fs::read_to_string(&e).unwrap();
    assert!(text.contains("encrypted bcrypt-pbkdf"));
    assert!(Identity::load(&e)
        .unwrap_err()
        .to_string()
        .contains("passphrase is needed"));
    assert!(Identity::load_with(&e, Some(b"wrong"))
        .unwrap_err()
        .to_string()
        .contains("wrong passphrase"));
    assert_eq!(
        Identity::load_with(&e, Some(b"correct horse"))
            .unwrap()
            .public(),
        a.public()
    );
    std::fs::write(&p, "junk").unwrap();
    assert!(Identity::load(&p).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vmux-link-test-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn a_pinned_connection_uses_ik_and_an_impostor_cannot_complete_it() {
    let [ai, si, other] = identities();
    // The real signer: IK completes and both keys are authenticated.
    let (a, s) = pipe().await;
    let (ca, cs) = tokio::join!(
        Channel::connect_pinned(a, &ai, si.public()),
        Channel::accept(s, &si)
    );
    let (ca, cs) = (ca.unwrap(), cs.unwrap());
    assert_eq!(ca.remote_static(), si.public());
    assert_eq!(cs.remote_static(), ai.public());
    // An impostor at the address: neither side completes.
    let (a, s) = pipe().await;
    let (ca, cs) = tokio::join!(
        Channel::connect_pinned(a, &ai, si.public()),
        Channel::accept(s, &other)
    );
    assert!(ca.is_err() && cs.is_err());
}
