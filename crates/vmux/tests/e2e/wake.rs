//! Waking a sleeping signer, against a real HTTP/2 TLS server on loopback
//! with a certificate the agent is told to trust.

use std::time::Instant;

use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use signature::Verifier;
use vmux_testkit::push_service::{PushService as PushServer, Reply, Seen};

const TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// How the APNs tests start the signer: with its device token, topic and
/// the sandbox environment.
const APNS_SIGNER_ARGS: [&str; 5] = [
    "--apns-token",
    TOKEN,
    "--apns-topic",
    "app.vmux.signer",
    "--apns-sandbox",
];

struct WakeWorld {
    dir: tempfile::TempDir,
    signer: Signer,
    agent: Agent,
    sshd: Sshd,
    server: PushServer,
    key: p256::ecdsa::SigningKey,
}

fn wake_world(
    signer_args: impl Fn(&PushServer) -> Vec<String>,
    agent_toml: impl Fn(&PushServer, &std::path::Path) -> String,
) -> WakeWorld {
    let dir = test_dir();
    let server = PushServer::start(dir.path(), 200);
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let p8 = dir.path().join("AuthKey.p8");
    std::fs::write(&p8, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    std::fs::set_permissions(&p8, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut signer = Signer::init(dir.path(), "phone");
    let line = signer.keygen("ecdsa", "enclave");
    signer.config("[certificates]\nauto_issue = false\n");
    let args = signer_args(&server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    signer.start_on("127.0.0.1:0", &args);
    let mut agent = Agent::new(dir.path(), "laptop");
    std::fs::create_dir_all(&agent.home).unwrap();
    std::fs::write(agent.home.join("agent.toml"), agent_toml(&server, &p8)).unwrap();
    agent.start_with(&signer, &["--sign-timeout", "90"]);
    // Thirty logins at once: more than sshd's default MaxStartups.
    let sshd = Sshd::start(dir.path(), &format!("{line}\n"), &["MaxStartups 100"]);
    WakeWorld {
        dir,
        signer,
        agent,
        sshd,
        server,
        key,
    }
}

fn apns_world() -> WakeWorld {
    wake_world(
        |_| APNS_SIGNER_ARGS.iter().map(|a| a.to_string()).collect(),
        |s, p8| {
            format!(
                "[wake.apns]\nteam_id = \"ABCDE12345\"\nkey_id = \"KEY1234567\"\nkey_file = \"{}\"\nendpoint = \"{}\"\nextra_ca_file = \"{}\"\n",
                p8.display(),
                s.url(),
                s.ca_file().display()
            )
        },
    )
}

fn check_jwt(seen: &Seen, key: &p256::ecdsa::SigningKey) -> String {
    let auth = seen.header("authorization").expect("authorization");
    let token = auth.strip_prefix("bearer ").expect("bearer");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "KEY1234567");
    let claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "ABCDE12345");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat <= now && iat + 300 > now, "iat {iat} vs now {now}");
    let sig = p256::ecdsa::Signature::from_slice(&B64URL.decode(parts[2]).unwrap()).unwrap();
    key.verifying_key()
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("JWT verifies");
    token.to_owned()
}

#[test]
fn thirty_logins_with_the_signer_asleep_send_one_push_and_all_complete() {
    let mut w = apns_world();
    let addr = w.signer.addr.clone();
    w.signer.kill();
    w.agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer"));
    let mut back = None;
    std::thread::scope(|s| {
        let logins: Vec<_> = (0..30)
            .map(|_| s.spawn(|| w.sshd.ssh(&w.agent, &[], "true")))
            .collect();
        // The push arrives; the "phone" wakes: start the signer again.
        w.server.wait();
        w.signer.start_on(&addr, &APNS_SIGNER_ARGS);
        let up = Instant::now();
        for l in logins {
            let out = l.join().unwrap();
            assert_success(&out, "a login waiting for the woken signer");
        }
        back = Some(up.elapsed());
    });
    println!("signer back → last of 30 signatures: {:?}", back.unwrap());
    let seen = w.server.seen();
    assert_eq!(seen.len(), 1, "one push for thirty waiting logins");
    let p = &seen[0];
    assert_eq!(p.version, hyper::Version::HTTP_2);
    assert_eq!(
        (p.method.as_str(), p.path.as_str()),
        ("POST", format!("/3/device/{TOKEN}").as_str())
    );
    assert_eq!(p.header("apns-topic"), Some("app.vmux.signer"));
    assert_eq!(p.header("apns-push-type"), Some("alert"));
    assert_eq!(p.header("apns-priority"), Some("10"));
    assert_eq!(p.header("apns-collapse-id"), Some("vmux-wake"));
    assert!(p.header("apns-expiration").unwrap().parse::<u64>().is_ok());
    let first = check_jwt(p, &w.key);
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert!(
        body["aps"]["alert"]["body"]
            .as_str()
            .unwrap()
            .contains("laptop"),
        "{body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "only aps: nothing else in the payload: {body}"
    );
    assert_eq!(
        w.signer.approvals_of("sign").len(),
        30,
        "each signature prompted once"
    );

    // A second outage pushes again, with the same provider token.
    let addr = w.signer.addr.clone();
    w.signer.kill();
    w.agent
        .daemon()
        .wait_nth(2, WAIT, |l| l.contains("disconnected from signer"));
    std::thread::scope(|s| {
        let login = s.spawn(|| w.sshd.ssh(&w.agent, &[], "true"));
        w.server.wait();
        w.signer.start_on(&addr, &APNS_SIGNER_ARGS);
        assert!(login.join().unwrap().status.success());
    });
    let seen = w.server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        check_jwt(&seen[1], &w.key),
        first,
        "the provider token is reused"
    );
    let status = ok(&mut w.agent.cmd(&["status"]));
    assert!(
        status.contains("Wake: APNs (sandbox) app.vmux.signer, device token 0a1b2c3d…"),
        "{status}"
    );
    assert!(
        status.contains("Last wake push") && status.contains("delivered"),
        "{status}"
    );
}

/// Kills the signer and makes one login wait, so that one push goes out.
fn one_push(w: &mut WakeWorld) -> std::process::Output {
    w.signer.kill();
    w.agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("disconnected from signer"));
    let mut c = std::process::Command::new("timeout");
    c.arg("5")
        .arg("ssh")
        .args(w.sshd.ssh_opts())
        .arg("-p")
        .arg(w.sshd.port.to_string());
    c.arg(format!("{}@127.0.0.1", login_user())).arg("true");
    client_env(&mut c, &w.agent);
    run(&mut c)
}

#[test]
fn apns_answers_are_handled_gone_token_stale_jwt_and_server_errors() {
    // 410: the token is dropped.
    let mut w = apns_world();
    w.server.script(&[Reply::Status(410, "Unregistered")]);
    one_push(&mut w);
    w.agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("dropping it"));
    let status = w.agent.status();
    assert!(status["signers"][0]["wake"].is_null(), "{status}");
    // A stopped agent has written every change it made.
    w.agent.stop();
    let state = std::fs::read_to_string(w.agent.home.join("agent-state.json")).unwrap();
    assert!(!state.contains(TOKEN), "dropped from the state file too");

    // 403: one retry with a new provider token, which succeeds.
    let mut w = apns_world();
    w.server
        .script(&[Reply::Status(403, "ExpiredProviderToken")]);
    one_push(&mut w);
    w.server.wait();
    w.server.wait();
    let seen = w.server.seen();
    assert_eq!(seen.len(), 2, "exactly one retry");
    check_jwt(&seen[0], &w.key);
    check_jwt(&seen[1], &w.key);
    w.agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("wake push") && l.contains("delivered"));

    // 500: back off, and the status says so.
    let mut w = apns_world();
    w.server
        .script(&[Reply::Status(500, "InternalServerError")]);
    one_push(&mut w);
    w.agent.daemon().wait_line(WAIT, |l| {
        l.contains("wake push") && l.contains("backing off")
    });
    let status = ok(&mut w.agent.cmd(&["status"]));
    assert!(status.contains("backing off 30 s"), "{status}");
    assert_eq!(w.server.seen().len(), 1, "no retry during the back-off");
}

#[test]
fn a_webhook_signer_is_woken_over_https() {
    let mut w = wake_world(
        |s| vec!["--wake-url".into(), format!("{}/wake/vmux", s.url())],
        |s, _| {
            format!(
                "[wake.webhook]\nextra_ca_file = \"{}\"\n",
                s.ca_file().display()
            )
        },
    );
    one_push(&mut w);
    w.server.wait();
    let seen = w.server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/wake/vmux")
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["event"], "wake");
    assert_eq!(body["agent"], "laptop");
    assert!(body["waiting"].as_u64().unwrap() >= 1);
}

#[test]
fn without_the_extra_ca_the_webhook_certificate_is_refused() {
    let mut w = wake_world(
        |s| vec!["--wake-url".into(), format!("{}/wake", s.url())],
        |_, _| String::new(),
    );
    one_push(&mut w);
    w.agent.daemon().wait_line(WAIT, |l| {
        l.contains("wake push") && l.contains("webhook unreachable")
    });
    assert!(w.server.seen().is_empty());
}

#[test]
fn a_new_device_token_replaces_the_stored_one_and_survives_a_restart() {
    let mut w = apns_world();
    let addr = w.signer.addr.clone();
    w.signer.kill();
    let newer = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    w.signer.start_on(
        &addr,
        &["--apns-token", newer, "--apns-topic", "app.vmux.signer"],
    );
    w.agent.wait_connected(2);
    w.agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("wake endpoint updated"));
    w.agent.stop();
    w.agent.start(&[]);
    let status = ok(&mut w.agent.cmd(&["status"]));
    assert!(
        status.contains("Wake: APNs app.vmux.signer, device token ffeeddcc…"),
        "{status}"
    );
    let _ = &w.dir;
}
