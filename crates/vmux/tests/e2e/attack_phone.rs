//! Attacks on the phone page's availability and lifecycle, each run as
//! the attacker would against the real `vmux signer run`: strangers who
//! evict the owner's sign-in challenge, fill the failure limits, hold
//! every connection with trickled bodies, enrol a passkey id that is
//! another phone's; and a thief of the session cookie who unpairs agents
//! or keeps a push feed. Each succeeded before the page was fixed; each
//! asserts what the owner observes: their sign-in works, their phone gets
//! in, their agents stay paired.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::phone::*;
use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::{json, Value};

const NO_AUTO_CERT: &str = "[certificates]\nauto_issue = false\n";

/// A client of `world`'s page that is no browser, connecting from `from`
/// (any 127.0.0.0/8 address: a stranger elsewhere on the network).
fn client_from(world: &PhoneWorld, from: IpAddr) -> reqwest::Client {
    let ca = std::fs::read(world.pki.ca_pem()).expect("CA");
    let addr: std::net::SocketAddr = world.web_addr.parse().expect("web address");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .resolve(RP_HOST, addr)
        .local_address(from)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A stranger's POST (with the page's Origin, no cookie): its status.
async fn stranger_post(c: &reqwest::Client, world: &PhoneWorld, path: &str, body: &str) -> u16 {
    c.post(format!("{}{path}", world.origin))
        .header("Origin", &world.origin)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The owner's page: a signer with the page, and the owner's phone
/// "pixel" enrolled and signed in.
fn owners_page(dir: &std::path::Path) -> (PhoneWorld, Phone) {
    let world = PhoneWorld::start(dir, NO_AUTO_CERT, &[]);
    let phone = world.signed_in_phone("pixel");
    (world, phone)
}

/// Signs in by tapping Sign in, bounded by `bound`: whether the signed-in
/// view appeared, and the page's message.
fn try_sign_in(phone: &Phone, bound: Duration) -> (bool, String) {
    phone.page.click_button("Sign in");
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let v = phone.page.eval(
            "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Sign out' && b.offsetParent !== null)",
        );
        if v == Value::Bool(true) {
            return (true, String::new());
        }
        let msg = phone.page.text("#message");
        if !msg.is_empty() {
            return (false, msg);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (false, phone.page.text("#message"))
}

/// Taps Sign in on the owner's `phone` and asserts that it signs in
/// within 20 s; `when` says when, in the failure message.
fn assert_owner_signs_in(phone: &Phone, when: &str) {
    let (signed_in, msg) = try_sign_in(phone, Duration::from_secs(20));
    assert!(signed_in, "the owner's sign-in {when}: {msg}");
}

#[test]
fn strangers_sign_in_begins_do_not_evict_the_owners_challenge() {
    let dir = test_dir();
    let (world, phone) = owners_page(dir.path());
    phone.sign_out();

    // A stranger with no cookie asks for 200 sign-in challenges.
    let rt = threaded_runtime();
    let c = client_from(&world, "127.0.0.1".parse().unwrap());
    rt.block_on(async {
        for _ in 0..200 {
            let s = stranger_post(&c, &world, "/api/signin/begin", "{}").await;
            assert_eq!(s, 200, "a begin is answered");
        }
    });

    // The owner's challenge, fetched before, still signs in.
    assert_owner_signs_in(&phone, "after strangers' begins");
}

#[test]
fn failures_from_ten_addresses_do_not_lock_the_owner_out_of_signing_in() {
    let dir = test_dir();
    let (world, phone) = owners_page(dir.path());
    phone.sign_out();

    // Ten strangers, ten failed enrolments each: the limit for everyone.
    let rt = threaded_runtime();
    rt.block_on(async {
        for i in 2..12 {
            let c = client_from(&world, format!("127.0.0.{i}").parse().unwrap());
            for _ in 0..10 {
                let s =
                    stranger_post(&c, &world, "/api/enrol/begin", r#"{"token":"guessed"}"#).await;
                assert_eq!(s, 400, "a guessed link is refused");
            }
        }
        let c = client_from(&world, "127.0.0.12".parse().unwrap());
        let s = stranger_post(&c, &world, "/api/enrol/begin", r#"{"token":"guessed"}"#).await;
        assert_eq!(s, 429, "past 100 failures a minute, failing requests wait");
    });

    // The owner's genuine sign-in (from 127.0.0.1, as its browser) works.
    assert_owner_signs_in(&phone, "while the limits are full");

    // And a live enrolment link still works for a new phone.
    world.signed_in_phone("iphone");
}

#[test]
fn an_enrolment_with_another_phones_credential_id_is_refused() {
    let dir = test_dir();
    let (world, phone) = owners_page(dir.path());
    let owner = world.authenticator_of(&phone);

    // The holder of another link makes a passkey of its own under the
    // pixel's credential id.
    let link = world.enrol_link("thief");
    let token = link.split("#enrol=").nth(1).expect("token").to_owned();
    let (status, body) = world.post_with(
        "/api/enrol/begin",
        &world.origin,
        "",
        &json!({ "token": token }).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let begun: Value = serde_json::from_str(&body).unwrap();
    let challenge = B64URL
        .decode(begun["options"]["challenge"].as_str().unwrap())
        .unwrap();
    let mut thief = vmux_webauthn::testing::SoftAuthenticator::new(RP_HOST, &world.origin);
    thief.credential_id = owner.credential_id.clone();
    let reg = thief.create(&challenge);
    let (status, body) = world.post_with(
        "/api/enrol/finish",
        &world.origin,
        "",
        &json!({
            "token": token,
            "credential_id": B64URL.encode(&reg.credential_id),
            "attestation_object": B64URL.encode(&reg.attestation_object),
            "client_data_json": B64URL.encode(&reg.client_data_json),
        })
        .to_string(),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("enrolled already"), "{body}");
    let phones = world.phones();
    assert!(!phones.contains("thief"), "{phones}");

    // The pixel still signs in with its passkey.
    phone.sign_out();
    assert_owner_signs_in(&phone, "after another's enrolment under its id");
}

/// A TLS connection to the page from `from`, with the test CA trusted.
async fn tls_from(
    world: &PhoneWorld,
    from: IpAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            world.pki.chain_der()[1].clone(),
        ))
        .expect("the test CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(from, 0))?;
    let tcp = socket
        .connect(world.web_addr.parse().expect("web address"))
        .await?;
    let name = rustls::pki_types::ServerName::try_from(RP_HOST.to_owned()).expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

#[test]
fn trickled_bodies_neither_hold_the_page_nor_keep_a_signed_in_phone_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = test_dir();
    let (world, phone) = owners_page(dir.path());
    let cookie = world.session_cookie(&phone);
    let rt = threaded_runtime();

    rt.block_on(async {
        // Strangers on ten addresses open 160 connections, each sending a
        // POST's head with the page's Origin and then a byte of its body
        // a second.
        let head = format!(
            "POST /api/signin/finish HTTP/1.1\r\nHost: {RP_HOST}\r\nOrigin: {}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n",
            world.origin
        );
        let started = Instant::now();
        let mut held = Vec::new();
        for i in 0..160 {
            let from: IpAddr = format!("127.0.1.{}", i % 10 + 1).parse().unwrap();
            let head = head.clone();
            // A connection refused at once (its source had its share)
            // fails its handshake and is not counted.
            if let Ok(mut s) = tls_from(&world, from).await {
                held.push(tokio::spawn(async move {
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return None;
                    }
                    let t = Instant::now();
                    let mut buf = [0u8; 512];
                    loop {
                        if s.write_all(b" ").await.is_err() || s.flush().await.is_err() {
                            return Some(t.elapsed());
                        }
                        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
                            Ok(Ok(_)) => {
                                // An answer (408): the connection ends after it.
                            }
                            Err(_) => {}
                        }
                        if t.elapsed() > Duration::from_secs(90) {
                            return None;
                        }
                    }
                }));
            }
        }
        eprintln!(
            "{} connections trickling after {:?}",
            held.len(),
            started.elapsed()
        );

        // The signed-in phone, on a new connection, still gets in.
        let c = client_from(&world, "127.0.0.1".parse().unwrap());
        let t = Instant::now();
        let r = c
            .get(format!("{}/api/status", world.origin))
            .header("Cookie", format!("__Host-vmux-session={cookie}"))
            .send()
            .await
            .expect("the signed-in phone's request is answered");
        assert_eq!(r.status(), 200);
        eprintln!("the signed-in phone's status took {:?}", t.elapsed());

        // Every trickling connection is ended, well within a minute.
        let mut longest = Duration::ZERO;
        for h in held {
            let ended = h.await.expect("task").expect("a trickling connection was never ended");
            longest = longest.max(ended);
        }
        eprintln!("the longest trickle was ended after {longest:?}");
        assert!(longest < Duration::from_secs(30), "{longest:?}");

        // And then anyone gets in again.
        let c = client_from(&world, "127.0.0.50".parse().unwrap());
        let r = c
            .get(format!("{}/api/session", world.origin))
            .send()
            .await
            .expect("the page answers");
        assert_eq!(r.status(), 200);
    });
}

#[test]
fn behind_a_trusted_proxy_one_clients_failures_are_its_own() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "homeserver");
    signer.config("[web_proxy]\ntrust_forwarded_for = true\n");
    // A page that serves TLS itself refuses the key.
    let pki = pki::TestPki::new(&dir.path().join("pki"), &[RP_HOST]);
    let err = signer.refused_run(
        "phone",
        &[
            "--web-listen",
            "127.0.0.1:0",
            "--web-origin",
            "https://signer.vmux.test",
            "--tls-cert",
            &pki.cert_pem().display().to_string(),
            "--tls-key",
            &pki.key_pem().display().to_string(),
        ],
    );
    assert!(
        err.contains("trust_forwarded_for is for a phone page behind a reverse proxy"),
        "{err}"
    );

    let origin = "https://signer.vmux.test";
    let port = signer.start_plain_phone_page(origin);
    let rt = threaded_runtime();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let post = |from: &'static str| {
            c.post(format!("http://127.0.0.1:{port}/api/enrol/begin"))
                .header("Origin", origin)
                .header("X-Forwarded-For", format!("203.0.113.66, {from}"))
                .body(r#"{"token":"guessed"}"#)
                .send()
        };
        for _ in 0..10 {
            assert_eq!(post("198.51.100.7").await.unwrap().status(), 400);
        }
        assert_eq!(
            post("198.51.100.7").await.unwrap().status(),
            429,
            "the stranger's eleventh failure"
        );
        assert_eq!(
            post("198.51.100.8").await.unwrap().status(),
            400,
            "another client behind the same proxy is not limited by it"
        );
    });
}

/// Starts an agent for `world`'s signer and approves its pairing on
/// `phone`.
fn pair(world: &PhoneWorld, phone: &Phone, dir: &std::path::Path) -> Agent {
    let mut agent = Agent::new(dir, "laptop");
    agent.start(&["--signer", world.signer.addr.as_str()]);
    phone.card_text("pair");
    phone.tap("pair", "Approve");
    agent.wait_connected(1);
    phone.wait_cards(0);
    agent
}

#[test]
fn a_stolen_session_cookie_neither_unpairs_nor_subscribes_nor_removes_a_subscription() {
    let dir = test_dir();
    let (world, phone) = owners_page(dir.path());
    let _agent = pair(&world, &phone, dir.path());
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = |seed: u8| {
        B64URL.encode(
            p256::SecretKey::from_slice(&[seed; 32])
                .expect("a scalar")
                .public_key()
                .to_encoded_point(false)
                .as_bytes(),
        )
    };
    let owners = json!({ "p256dh": point(7), "auth": B64URL.encode([5u8; 16]) });
    phone.stand_in_push_manager("https://push.vmux.test/send/owner", &owners);
    phone.turn_on_notifications(&world.origin);
    assert!(world.phones().contains("can be woken (1 subscription)"));

    // The thief has the cookie (and the page's Origin), not the passkey.
    let cookie = world.session_cookie(&phone);
    let post =
        |path: &str, body: Value| world.post_with(path, &world.origin, &cookie, &body.to_string());
    let status: Value = {
        let rt = threaded_runtime();
        let c = client_from(&world, "127.0.0.1".parse().unwrap());
        rt.block_on(async {
            c.get(format!("{}/api/status", world.origin))
                .header("Cookie", format!("__Host-vmux-session={cookie}"))
                .send()
                .await
                .expect("status")
                .text()
                .await
                .map(|t| serde_json::from_str(&t).expect("JSON"))
                .expect("a body")
        })
    };
    let agent_id = status["agents"][0]["id"]
        .as_str()
        .expect("an agent")
        .to_owned();
    let unpair = format!("/api/agents/{agent_id}/unpair");
    let (s, body) = post(&unpair, json!({}));
    assert_eq!(s, 403, "unpair with the cookie alone: {body}");
    // The challenge the status carries, with an assertion of a passkey
    // that is not the phone's.
    let challenge = status["agents"][0]["unpair_challenge"]
        .as_str()
        .expect("challenge")
        .to_owned();
    let mut other = vmux_webauthn::testing::SoftAuthenticator::new(RP_HOST, &world.origin);
    let forged = other.get(&B64URL.decode(&challenge).unwrap());
    let fields = |a: &vmux_webauthn::testing::Assertion, challenge: &str| {
        assertion_json(a, json!({ "challenge": challenge }))
    };
    let (s, body) = post(&unpair, fields(&forged, &challenge));
    assert_eq!(s, 403, "unpair with another passkey: {body}");

    // Its own push endpoint: refused without the passkey, and with the
    // phone's own passkey's assertion over the unpair challenge (another
    // action) too.
    let mut sub = json!({
        "endpoint": "https://push.thief.test/feed",
        "keys": { "p256dh": point(9), "auth": B64URL.encode([6u8; 16]) },
    });
    let (s, body) = post("/api/push/subscribe", sub.clone());
    assert_eq!(s, 403, "subscribe with the cookie alone: {body}");
    let mut genuine = world.authenticator_of(&phone);
    let other_action = genuine.get(&B64URL.decode(&challenge).unwrap());
    for (k, v) in fields(&other_action, &challenge).as_object().unwrap() {
        sub[k] = v.clone();
    }
    let (s, body) = post("/api/push/subscribe", sub);
    assert_eq!(s, 403, "an assertion for another action: {body}");
    let (s, body) = post(
        "/api/push/unsubscribe",
        json!({ "endpoint": "https://push.vmux.test/send/owner" }),
    );
    assert_eq!(s, 403, "unsubscribe with the cookie alone: {body}");

    // What the owner sees: the agent paired, one subscription, its own.
    let agents = ok(&mut world.signer.cmd(&["agents"]));
    assert!(agents.contains("laptop"), "{agents}");
    assert!(
        world.phones().contains("can be woken (1 subscription)"),
        "{}",
        world.phones()
    );
    let book = std::fs::read_to_string(world.signer.home.join("phones.json")).expect("phones.json");
    assert!(!book.contains("thief"), "{book}");

    // The owner's page lists its subscription; Remove takes the passkey.
    phone.page.wait_for(
        "document.getElementById('subscriptions').textContent.includes('push.vmux.test (this browser)')",
        WAIT,
    );
    phone.page.click_button_in("#subscriptions", "Remove");
    phone.wait_message("That subscription was removed.");
    world.assert_no_phone_can_be_woken();
    // And Unpair on the page, with the passkey, unpairs.
    world.unpair_on_page(&phone, "laptop");
}
