//! The phone page in a real browser (headless Chromium with a virtual
//! authenticator, trusting the test's CA, on a DNS name mapped to
//! loopback), clicking what a person clicks, with real ssh and sshd.
//! Enrolment, sign-in, approval, denial and windows run in Firefox too
//! (each such test a function of the engine, called from two tests).

use std::time::{Duration, Instant};

use crate::support::phone::*;
use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::{json, Value};

const NO_AUTO_CERT: &str = "[certificates]\nauto_issue = false\n";

/// Starts an agent for `world`'s signer and approves its pairing on
/// `phone`, checking that the card shows the code the agent printed.
fn pair<E: BrowserEngine>(
    world: &PhoneWorld<E>,
    phone: &Phone<E::Page>,
    dir: &std::path::Path,
    args: &[&str],
) -> Agent {
    let mut agent = Agent::new(dir, "laptop");
    let mut all = vec!["--signer", world.signer.addr.as_str()];
    all.extend_from_slice(args);
    agent.start(&all);
    let code = agent.wait_pairing_code();
    let card = phone.card_text("pair");
    assert!(
        card.contains(&code),
        "the card shows the agent's code {code}: {card}"
    );
    assert!(card.contains("laptop"), "the card names the agent: {card}");
    phone.tap("pair", "Approve");
    agent.wait_connected(1);
    phone.wait_cards(0);
    agent
}

/// Where a test of logins approved on the phone starts: a signer serving
/// the page (`signer.toml` = `config`) in engine `E`, a phone signed in,
/// an agent (with `agent_args`) paired on it, and an sshd (with
/// `sshd_extra`) that takes the signer's keys; with the test's directory.
fn logins<E: BrowserEngine>(
    config: &str,
    agent_args: &[&str],
    sshd_extra: &[&str],
) -> (
    tempfile::TempDir,
    PhoneWorld<E>,
    Phone<E::Page>,
    Agent,
    Sshd,
) {
    let dir = test_dir();
    let world = PhoneWorld::<E>::start_in(dir.path(), "phone", config, &[]);
    let phone = world.signed_in_phone("pixel");
    let agent = pair(&world, &phone, dir.path(), agent_args);
    let sshd = Sshd::start(dir.path(), &world.signer.public_lines(), sshd_extra);
    (dir, world, phone, agent, sshd)
}

/// The first request's id and challenge as the page received them.
fn first_card<P: PhonePage>(phone: &Phone<P>) -> (String, Vec<u8>) {
    let state = page_state(phone);
    let card = &state["requests"][0];
    (
        card["id"].as_str().expect("id").to_owned(),
        B64URL
            .decode(card["challenge"].as_str().expect("challenge"))
            .expect("base64url"),
    )
}

/// The `state` the page's event stream sends now (cards and all).
fn page_state<P: PhonePage>(phone: &Phone<P>) -> Value {
    let v = phone.page.eval(
        "fetch('/api/events').then(async r => { const rd = r.body.getReader(); let t = ''; while (!t.includes('\\n\\n')) { const x = await rd.read(); if (x.done) break; t += new TextDecoder().decode(x.value); } await rd.cancel(); return t; })",
    );
    let text = v.as_str().expect("event text");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .expect("a data line");
    serde_json::from_str(data.trim()).expect("state JSON")
}

/// Where a test's screenshot goes: `docs/NAME` with
/// `VMUX_UPDATE_SCREENSHOTS` set, else the test's directory.
fn shot_path(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    match std::env::var_os("VMUX_UPDATE_SCREENSHOTS") {
        Some(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(name),
        None => {
            std::fs::create_dir_all(dir.join("shots")).unwrap();
            dir.join("shots").join(name)
        }
    }
}

/// Records the options of the page's `navigator.credentials` calls (the
/// wrapper passes them on unchanged): `window.vmuxTestCalls`, one entry
/// per call with what the page asked the authenticator for.
const RECORD_CREDENTIAL_CALLS: &str = r#"(() => {
  window.vmuxTestCalls = [];
  const c = navigator.credentials;
  for (const kind of ['create', 'get']) {
    const real = c[kind].bind(c);
    c[kind] = (o) => {
      const p = o.publicKey, sel = p.authenticatorSelection || {};
      window.vmuxTestCalls.push({
        kind,
        hints: p.hints === undefined ? null : p.hints,
        attachment: sel.authenticatorAttachment === undefined ? null : sel.authenticatorAttachment,
        residentKey: sel.residentKey === undefined ? null : sel.residentKey,
        requireResidentKey: sel.requireResidentKey === undefined ? null : sel.requireResidentKey,
        userVerification: (kind === 'create' ? sel.userVerification : p.userVerification) || null,
        allow: (p.allowCredentials || []).length,
      });
      return real(o);
    };
  }
  return true;
})()"#;

/// Enrolment through the link (once), the passkey the page asked for,
/// sign-out and sign-in with it, pairing and an approved login, in
/// engine `E`.
fn enrols_signs_in_pairs_and_approves_a_login<E: BrowserEngine>() {
    let dir = test_dir();
    let world = PhoneWorld::<E>::start_in(dir.path(), "phone", NO_AUTO_CERT, &[]);

    // Enrolment: the link opens a page with Create passkey; once.
    let phone = world.phone("pixel");
    let link = world.enrol_link("pixel");
    phone.page.goto(&link);
    phone
        .page
        .wait_for("!document.getElementById('enrol-button').hidden", WAIT);
    phone.page.eval(RECORD_CREDENTIAL_CALLS);
    phone.page.click_button("Create passkey");
    phone.page.wait_for(
        "document.getElementById('enrolled')?.textContent.includes('This phone was added')",
        WAIT,
    );
    // What the page asked for (SECURITY.md): user verification, a
    // discoverable passkey, this phone's own authenticator by hint and
    // not by the hard `platform` filter (which Firefox refuses).
    assert_eq!(
        phone.page.eval("window.vmuxTestCalls"),
        json!([{
            "kind": "create",
            "hints": ["client-device"],
            "attachment": null,
            "residentKey": "required",
            "requireResidentKey": true,
            "userVerification": "required",
            "allow": 0,
        }]),
        "in {}",
        E::NAME
    );
    let creds: Vec<_> = phone
        .page
        .credentials(&phone.auth)
        .into_iter()
        .filter(|c| c.rp_id.as_deref() == Some(RP_HOST))
        .collect();
    assert_eq!(creds.len(), 1, "one passkey for the page in {}", E::NAME);
    assert!(creds[0].resident, "a discoverable passkey in {}", E::NAME);
    let again = world.phone("thief");
    again.page.goto(&link);
    again.page.wait_for(
        "document.getElementById('message')?.textContent.includes('used already or has expired')",
        WAIT,
    );
    assert!(
        !again
            .page
            .eval("[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Create passkey' && b.offsetParent !== null)")
            .as_bool()
            .unwrap_or(true),
        "a used link offers no Create passkey"
    );
    drop(again);
    phone.wait_signed_in();
    let phones = world.phones();
    assert!(
        phones.contains("pixel") && phones.contains("page open"),
        "{phones}"
    );

    // Sign out, and in again with the passkey (user verification asked),
    // with the page's storage gone (an installed app's own storage, site
    // data cleared): the page names no credential and the discoverable
    // passkey is found.
    phone.sign_out();
    phone.page.eval("localStorage.clear()");
    phone.page.reload();
    phone.page.eval(RECORD_CREDENTIAL_CALLS);
    phone.sign_in();
    let calls = phone.page.eval("window.vmuxTestCalls");
    assert_eq!(calls[0]["kind"], "get", "{calls}");
    assert_eq!(calls[0]["hints"], json!(["client-device"]), "{calls}");
    assert_eq!(calls[0]["userVerification"], "required", "{calls}");
    assert_eq!(calls[0]["allow"], 0, "no credential named: {calls}");

    // Pairing: the card shows the code the agent printed.
    let agent = pair(&world, &phone, dir.path(), &[]);

    // A login: one card naming the destination, Approve, ssh finishes.
    let sshd = Sshd::start(dir.path(), &world.signer.public_lines(), &[]);
    let ssh = ssh_spawn(&sshd, &agent, 60);
    let card = phone.card_text("sign");
    assert!(card.contains("[verified]"), "{card}");
    assert!(card.contains(&login_user()), "{card}");
    assert!(card.contains("ssh"), "the card names the process: {card}");
    phone.tap("sign", "Approve");
    let out = finish(ssh, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "the login approved on the phone in {}: {}",
        E::NAME,
        String::from_utf8_lossy(&out.stderr)
    );
    phone.wait_cards(0);
    phone.assert_no_console_errors();

    // The audit log says which phone decided.
    let audit = world.signer.audit();
    assert!(
        lines_with(&audit, &["sign", "approved", "on phone pixel"]) > 0,
        "{audit}"
    );
    assert!(
        lines_with(&audit, &["pair", "on phone pixel"]) > 0,
        "{audit}"
    );
}

in_both_engines!(
    enrols_signs_in_pairs_and_approves_a_login,
    "the enrolment, sign-in and approval test",
    a_phone_enrols_with_a_link_pairs_an_agent_and_approves_a_login,
    a_phone_enrols_with_a_link_pairs_an_agent_and_approves_a_login_in_firefox,
);

/// A tap on Approve whose passkey does not verify the user approves
/// nothing; Deny fails the login; with no page open a login fails in
/// bounded time; in engine `E`.
fn unverified_and_denied_logins_fail<E: BrowserEngine>() {
    let (_dir, world, phone, agent, sshd) =
        logins::<E>(NO_AUTO_CERT, &["--sign-timeout", "8"], &[]);

    let ssh = ssh_spawn(&sshd, &agent, 60);
    phone.card_text("sign");
    // The phone's owner is not recognised (a wrong fingerprint): the
    // authenticator refuses, the page says so and the card stays.
    phone.page.set_user_verified(&phone.auth, false);
    phone.tap("sign", "Approve");
    let said = phone.page.wait_for(
        "document.querySelector('article.card[data-kind=\"sign\"] .card-error')?.textContent",
        WAIT,
    );
    assert_eq!(
        phone.cards(),
        1,
        "the card still waits in {}: {said}",
        E::NAME
    );
    assert_eq!(sshd.accepted(), 0);
    phone.page.set_user_verified(&phone.auth, true);
    phone.tap("sign", "Deny");
    let out = finish(ssh, Duration::from_secs(60));
    assert!(!out.status.success(), "a denied login fails");
    assert_eq!(sshd.accepted(), 0);
    // The agent logs the signer's answer (its log line may come after
    // ssh has exited).
    agent.daemon().wait_line(WAIT, |l| l.contains("userDenied"));

    // The page goes away: the signer knows within a second or two, and a
    // login waits only the agent's bounded time.
    phone.page.goto("about:blank");
    wait_until(
        "the signer seeing no page open",
        Duration::from_secs(10),
        || world.phones().contains("no page open"),
    );
    let started = Instant::now();
    let out = finish(ssh_spawn(&sshd, &agent, 60), Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the client fails within the agent's bounded wait, took {:?}",
        started.elapsed()
    );
    assert_eq!(sshd.accepted(), 0);
}

in_both_engines!(
    unverified_and_denied_logins_fail,
    "the denial test",
    a_login_denied_on_the_phone_fails_and_with_no_page_open_the_client_fails_in_bounded_time,
    a_login_denied_on_the_phone_fails_and_with_no_page_open_the_client_fails_in_bounded_time_in_firefox,
);

/// An approval window ticked on the card covers the same login to the
/// same host only, in engine `E`.
fn a_window_covers_that_host_only<E: BrowserEngine>() {
    let (dir, world, phone, agent, sshd) = logins::<E>(
        &format!("max_approval_window_seconds = 3600\n{NO_AUTO_CERT}"),
        &[],
        &[],
    );

    let ssh = ssh_spawn(&sshd, &agent, 60);
    let card = phone.card_text("sign");
    assert!(card.contains("for 1 h"), "the window is offered: {card}");
    phone
        .page
        .check("article.card[data-kind=\"sign\"] input[name=window]");
    phone.tap("sign", "Approve");
    assert!(finish(ssh, Duration::from_secs(60)).status.success());
    phone.wait_cards(0);

    // The same login again: no card, it just works.
    sshd.assert_login(&agent, "a login inside the window");
    assert_eq!(phone.cards(), 0);

    // Another host (another host key): asked again.
    let other = Sshd::start(dir.path(), &world.signer.public_lines(), &[]);
    let ssh = ssh_spawn(&other, &agent, 60);
    phone.card_text("sign");
    phone.tap("sign", "Deny");
    assert!(!finish(ssh, Duration::from_secs(60)).status.success());
    let audit = world.signer.audit();
    assert_eq!(lines_with(&audit, &["approved-by-window"]), 1, "{audit}");
}

in_both_engines!(
    a_window_covers_that_host_only,
    "the approval window test",
    an_approval_window_taken_on_the_phone_is_honoured_for_that_host_only,
    an_approval_window_taken_on_the_phone_is_honoured_for_that_host_only_in_firefox,
);

#[test]
fn two_phones_one_approves_the_card_leaves_the_other_and_a_removed_phone_cannot_sign_in() {
    let dir = test_dir();
    let world = PhoneWorld::start(dir.path(), "", &[]);
    let a = world.enrolled_phone("pixel");
    let b = world.enrolled_phone("iphone");
    a.wait_signed_in();
    b.wait_signed_in();
    // Pairing, then the agent's automatic certificate: both on both phones.
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start(&["--signer", &world.signer.addr]);
    b.card_text("pair");
    a.tap("pair", "Approve");
    agent.wait_connected(1);
    let card = b.card_text("certificate");
    assert!(card.contains("certificate"), "{card}");
    a.card_text("certificate");
    b.tap("certificate", "Approve");
    a.wait_cards(0);
    b.wait_cards(0);
    agent.wait_certificate_installed(1);
    let audit = world.signer.audit();
    assert!(
        lines_with(&audit, &["certificate", "on phone iphone"]) > 0,
        "{audit}"
    );

    // The status: the paired agent, both phones, the decisions and who
    // took them; Unpair on the page unpairs.
    a.page.wait_for(
        "document.getElementById('agents').textContent.includes('laptop') && document.getElementById('recent').textContent.includes('iphone') && document.getElementById('phones').textContent.includes('iphone')",
        WAIT,
    );
    world.unpair_on_page(&a, "laptop");
    // Its next request is refused without asking anyone.
    let pubkey = dir.path().join("work.pub");
    std::fs::write(&pubkey, world.signer.public_lines()).unwrap();
    let out = agent.ssh_add(&["-T", &pubkey.display().to_string()]);
    assert!(!out.status.success());
    assert_eq!(a.cards() + b.cards(), 0);

    // Removing a phone ends its session at once and its passkey no longer
    // signs in.
    ok(&mut world.signer.cmd(&["phone", "remove", "iphone"]));
    b.page.wait_for(
        "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Sign in' && b.offsetParent !== null)",
        WAIT,
    );
    b.page.click_button("Sign in");
    b.page.wait_for(
        "document.getElementById('message')?.textContent.length > 0",
        WAIT,
    );
    assert_eq!(b.fetch("GET", "/api/status", &json!({}))["status"], 401);
    let phones = world.phones();
    assert!(
        phones.contains("pixel") && !phones.contains("iphone"),
        "{phones}"
    );
    assert_eq!(a.fetch("GET", "/api/status", &json!({}))["status"], 200);
}

#[test]
fn the_api_refuses_no_session_a_foreign_origin_and_assertions_that_are_not_this_phones_over_this_request(
) {
    let (_dir, world, phone, agent, sshd) = logins::<browser::Browser>(NO_AUTO_CERT, &[], &[]);
    let first = ssh_spawn(&sshd, &agent, 90);
    phone.card_text("sign");
    let (id, challenge) = first_card(&phone);

    // No session: nothing to read, nothing to decide.
    let stranger = world.phone("stranger");
    stranger.page.goto(&world.origin);
    for (method, path) in [
        ("GET", "/api/events".to_owned()),
        ("GET", "/api/status".to_owned()),
        ("POST", format!("/api/requests/{id}/deny")),
    ] {
        let r = stranger.fetch(method, &path, &json!({}));
        assert_eq!(r["status"], 401, "{method} {path}: {r}");
    }

    // A stolen cookie sent from elsewhere (another Origin): refused.
    let cookie = world.session_cookie(&phone);
    let r = world.post_with(
        &format!("/api/requests/{id}/deny"),
        "https://evil.vmux.test",
        &cookie,
        "{}",
    );
    assert_eq!(r.0, 403, "{}", r.1);
    let r = world.post_with(&format!("/api/requests/{id}/deny"), "", &cookie, "{}");
    assert_eq!(r.0, 403, "no Origin at all: {}", r.1);
    assert_eq!(phone.cards(), 1, "the card is still waiting");

    // Assertions the signer must refuse, from the signed-in page.
    let real = world.authenticator_of(&phone);
    let post = |a: &vmux_webauthn::testing::Assertion, window: bool| {
        phone.fetch(
            "POST",
            &format!("/api/requests/{id}/approve"),
            &assertion_json(a, json!({ "window": window })),
        )
    };
    // An unenrolled passkey (right challenge, right origin).
    let mut unenrolled = vmux_webauthn::testing::SoftAuthenticator::new(RP_HOST, &world.origin);
    let r = post(&unenrolled.get(&challenge), false);
    assert_eq!(r["status"], 403, "unenrolled: {r}");
    // The enrolled passkey without user verification.
    let mut no_uv = real.clone();
    no_uv.flags = vmux_webauthn::Flags::UP;
    let r = post(&no_uv.get(&challenge), false);
    assert_eq!(r["status"], 403, "no UV: {r}");
    assert!(r["body"].as_str().unwrap_or("").contains("verif"), "{r}");
    // The enrolled passkey over another request's challenge.
    let mut other = real.clone();
    let r = post(&other.get(b"another request's challenge, 32 b"), false);
    assert_eq!(r["status"], 403, "another challenge: {r}");
    // An assertion over the once-only challenge does not grant a window.
    let r = post(&real.clone().get(&challenge), true);
    assert_eq!(r["status"], 403, "a window the phone did not sign for: {r}");
    assert_eq!(phone.cards(), 1, "nothing above approved it");
    assert_eq!(sshd.accepted(), 0);

    // The same passkey, verified, over this request: approved. (So the
    // refusals above were about what they changed, not the harness.)
    let mut good = real.clone();
    good.counter = 1000;
    let approval = good.get(&challenge);
    let r = post(&approval, false);
    assert_eq!(r["status"], 200, "{r}");
    assert!(finish(first, Duration::from_secs(60)).status.success());
    assert_eq!(sshd.accepted(), 1);
    // Replaying that assertion for the next request: refused.
    let second = ssh_spawn(&sshd, &agent, 90);
    phone.card_text("sign");
    let (id2, _) = first_card(&phone);
    assert_ne!(id2, id);
    let r = phone.fetch(
        "POST",
        &format!("/api/requests/{id2}/approve"),
        &assertion_json(&approval, json!({ "window": false })),
    );
    assert_eq!(r["status"], 403, "a replayed approval: {r}");
    phone.tap("sign", "Deny");
    assert!(!finish(second, Duration::from_secs(60)).status.success());
}

#[test]
fn the_page_refuses_an_ip_origin_and_plain_http_off_loopback_and_limits_failed_enrolments() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "homeserver");
    let refused = |args: &[&str], says: &str| {
        let err = signer.refused_run("phone", args);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    };
    refused(
        &[
            "--web-listen",
            "127.0.0.1:0",
            "--web-origin",
            "https://127.0.0.1:8443",
        ],
        "names an IP address",
    );
    // Off loopback without --tls-cert the page is never plain HTTP: it
    // is the signer's own CA's (tests/page_ca.rs), for the origin's name.
    refused(
        &[
            "--web-listen",
            "0.0.0.0:0",
            "--web-origin",
            "https://signer.vmux.test",
            "--web-name",
            "other.vmux.test",
        ],
        "does not name --web-name other.vmux.test",
    );
    refused(&[], "--approve phone needs the phone page");

    // Behind a proxy: plain HTTP on loopback. The page is served with its
    // policy; failed enrolments are limited.
    let origin = "https://signer.vmux.test";
    let port = signer.start_plain_phone_page(origin);
    let rt = runtime();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let page = c.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(page.text().await.unwrap().contains("app.js"));
        let post = |path: &'static str, body: &'static str| {
            c.post(format!("{base}{path}"))
                .header("Origin", origin)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
        };
        for _ in 0..10 {
            let r = post("/api/enrol/begin", r#"{"token":"guessed"}"#)
                .await
                .unwrap();
            assert_eq!(r.status(), 400);
        }
        let r = post("/api/enrol/begin", r#"{"token":"guessed"}"#)
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "the eleventh failure in a minute");
        // A begin keeps no state (a MAC'd challenge) and proves nothing:
        // others' failures never refuse it.
        let r = post("/api/signin/begin", "{}").await.unwrap();
        assert_eq!(r.status(), 200, "a sign-in challenge is still given");
        let big = "x".repeat(100 * 1024);
        let r = c
            .post(format!("{base}/api/signin/finish"))
            .header("Origin", origin)
            .body(big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "bodies are bounded");
    });
    // The signer still runs and answers its own commands.
    assert!(ok(&mut signer.cmd(&["phones"])).contains("No phones enrolled"));
}

#[test]
fn the_page_stores_a_push_subscription_per_phone_shown_by_signer_phones_and_removes_it() {
    let dir = test_dir();
    let world = PhoneWorld::start(dir.path(), NO_AUTO_CERT, &[]);
    let phone = world.signed_in_phone("pixel");
    world.assert_no_phone_can_be_woken();

    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = p256::SecretKey::from_slice(&[7u8; 32])
        .expect("a scalar")
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let sub = json!({
        "endpoint": "https://push.vmux.test/send/abc",
        "keys": { "p256dh": B64URL.encode(&point), "auth": B64URL.encode([5u8; 16]) },
    });
    // Malformed subscriptions are refused.
    for bad in [
        json!({"endpoint": "http://push.vmux.test/x", "keys": sub["keys"]}),
        json!({"endpoint": "https://push.vmux.test/x", "keys": {"p256dh": "AAAA", "auth": sub["keys"]["auth"]}}),
        json!({"endpoint": "https://push.vmux.test/x"}),
    ] {
        let r = phone.fetch("POST", "/api/push/subscribe", &bad);
        assert_eq!(r["status"], 400, "{bad}: {r}");
    }
    // Without a session, or from another origin: refused.
    let stranger = world.phone("stranger");
    stranger.page.goto(&world.origin);
    let r = stranger.fetch("POST", "/api/push/subscribe", &sub);
    assert_eq!(r["status"], 401, "{r}");
    let cookie = world.session_cookie(&phone);
    let r = world.post_with(
        "/api/push/subscribe",
        "https://evil.vmux.test",
        &cookie,
        &sub.to_string(),
    );
    assert_eq!(r.0, 403, "{}", r.1);
    assert!(!world.phones().contains("can be woken"));

    // The page's own path: its button asks for permission, subscribes with
    // the signer's key and posts the subscription. The push service is
    // stood in for by a subscription the test made.
    phone.stand_in_push_manager("https://push.vmux.test/send/abc", &sub["keys"]);
    phone.turn_on_notifications(&world.origin);
    let key = phone.fetch("GET", "/api/push/key", &json!({}));
    assert_eq!(key["status"], 200, "{key}");
    let key: Value = serde_json::from_str(key["body"].as_str().unwrap_or("")).expect("JSON");
    let key = B64URL
        .decode(key["key"].as_str().unwrap_or(""))
        .expect("base64url");
    assert_eq!(key.len(), 65);
    assert_eq!(
        phone.page.eval("window.testServerKey"),
        json!(key),
        "the page subscribed with the signer's VAPID key"
    );
    assert_eq!(phone.page.eval("window.testUserVisible"), json!(true));
    let r = stranger.fetch("GET", "/api/push/key", &json!({}));
    assert_eq!(r["status"], 401, "{r}");
    let listing = world.phones();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("pixel") && l.contains("can be woken (1 subscription)")),
        "{listing}"
    );
    phone
        .page
        .wait_for("!document.getElementById('notifications-off').hidden", WAIT);
    phone.page.click_button("Turn off notifications");
    phone.wait_message("Notifications are off.");
    world.assert_no_phone_can_be_woken();

    // The API directly, with the session but no passkey confirmation:
    // refused (tests/attack_phone.rs has the whole attack).
    let r = phone.fetch("POST", "/api/push/subscribe", &sub);
    assert_eq!(r["status"], 403, "{r}");
    world.assert_no_phone_can_be_woken();
}

/// Ten waiting logins approved with one tap on **Approve all 10**, in
/// engine `E`.
fn ten_logins_approved_with_one_tap<E: BrowserEngine>() {
    let (dir, world, phone, agent, sshd) = logins::<E>(
        NO_AUTO_CERT,
        &["--sign-timeout", "120"],
        &["MaxStartups 100"],
    );
    let logins: Vec<_> = (0..10).map(|_| ssh_spawn(&sshd, &agent, 150)).collect();
    phone.wait_cards(10);
    // One card offers the ten; the others do not.
    phone
        .page
        .wait_for("[...document.querySelectorAll('button')].filter(b => b.offsetParent !== null && b.innerText.trim().startsWith('Approve all')).map(b => b.innerText.trim()).join() === 'Approve all 10'", WAIT);
    let help = phone.page.text("article.card .burst-help");
    assert!(
        help.contains("the 10 requests from laptop")
            && help.contains(&format!(" as {} (×10)", login_user())),
        "says what the ten ask for: {help}"
    );
    phone.page.resize(375, 667);
    let shot = if E::NAME == "chromium" {
        shot_path(dir.path(), "phone-burst.png")
    } else {
        std::fs::create_dir_all(dir.path().join("shots")).unwrap();
        dir.path()
            .join(format!("shots/phone-burst-{}.png", E::NAME))
    };
    phone.screenshot_top(&shot);
    assert_eq!(sshd.accepted(), 0);
    let count = || {
        phone
            .page
            .credentials(&phone.auth)
            .into_iter()
            .find(|c| c.rp_id.as_deref() == Some(RP_HOST))
            .expect("the passkey")
            .sign_count
    };
    let before = count();
    phone.page.eval(RECORD_CREDENTIAL_CALLS);
    phone.tap("sign", "Approve all 10");
    for ssh in logins {
        let out = finish(ssh, Duration::from_secs(120));
        assert_success(&out, "a login approved with the one tap");
    }
    assert_eq!(sshd.accepted(), 10);
    phone.wait_cards(0);
    phone.assert_no_console_errors();
    let audit = world.signer.audit();
    assert_eq!(
        lines_with(&audit, &["sign", "approved", "on phone pixel"]),
        10,
        "{audit}"
    );
    // One passkey assertion for the ten.
    let calls = phone.page.eval("window.vmuxTestCalls");
    assert_eq!(
        calls.as_array().map(Vec::len),
        Some(1),
        "one credentials call for the ten in {}: {calls}",
        E::NAME
    );
    assert_eq!(calls[0]["kind"], "get", "{calls}");
    // Chromium's authenticator counts one per assertion; Firefox's two
    // for one with an allow list (its silent look for the credential
    // first counts too).
    let per_assertion = if E::NAME == "firefox" { 2 } else { 1 };
    assert_eq!(
        count(),
        before + per_assertion,
        "one assertion for ten in {}",
        E::NAME
    );
}

in_both_engines!(
    ten_logins_approved_with_one_tap,
    "the Approve all test",
    ten_waiting_logins_of_one_agent_are_approved_with_one_tap_on_approve_all,
    ten_waiting_logins_of_one_agent_are_approved_with_one_tap_on_approve_all_in_firefox,
);

#[test]
fn an_approve_all_assertion_approves_only_its_list_and_replayed_reordered_swapped_or_stretched_is_refused(
) {
    let (_dir, world, phone, agent, sshd) = logins::<browser::Browser>(
        NO_AUTO_CERT,
        &["--sign-timeout", "120"],
        &["MaxStartups 100"],
    );
    let listed: Vec<_> = (0..3).map(|_| ssh_spawn(&sshd, &agent, 150)).collect();
    phone.wait_cards(3);
    phone.page.wait_for("[...document.querySelectorAll('button')].some(b => b.offsetParent !== null && b.innerText.trim() === 'Approve all 3')", WAIT);
    // The list as the page shows it, and an assertion over it by the
    // phone's own passkey (as the page's tap would make).
    let state = page_state(&phone);
    let burst = &state["requests"][0]["burst"];
    let ids: Vec<String> = serde_json::from_value(burst["ids"].clone()).expect("ids");
    assert_eq!(ids.len(), 3, "{state}");
    let challenge = B64URL
        .decode(burst["challenge"].as_str().expect("challenge"))
        .expect("base64url");
    let mut real = world.authenticator_of(&phone);
    real.counter = 1000;
    let shown = real.get(&challenge);

    // A fourth login joins after the list was shown.
    let late = ssh_spawn(&sshd, &agent, 150);
    phone.wait_cards(4);
    let all: Vec<String> = phone.card_ids();
    let fourth = all
        .iter()
        .find(|id| !ids.contains(id))
        .expect("the late card")
        .clone();
    let post = |ids: &[&String], a: &vmux_webauthn::testing::Assertion| {
        phone.fetch(
            "POST",
            "/api/requests/approve-all",
            &assertion_json(a, json!({ "ids": ids })),
        )
    };
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    for (what, list) in [
        ("replayed for N+1", vec![a, b, c, &fourth]),
        ("reordered", vec![b, a, c]),
        ("one swapped", vec![a, b, &fourth]),
        ("one left out", vec![a, c]),
    ] {
        let r = post(&list, &shown);
        assert_eq!(r["status"], 403, "{what}: {r}");
    }
    assert_eq!(phone.cards(), 4, "nothing above approved anything");
    assert_eq!(sshd.accepted(), 0);

    // The list it was made for: those three, not the one that joined.
    let r = post(&[a, b, c], &shown);
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"], json!({"approved": 3}).to_string(), "{r}");
    for ssh in listed {
        assert!(finish(ssh, Duration::from_secs(120)).status.success());
    }
    assert_eq!(sshd.accepted(), 3);
    phone.wait_cards(1);
    assert_eq!(phone.card_ids(), vec![fourth.clone()]);
    // Replayed: nothing of it is waiting any more.
    let r = post(&[a, b, c], &shown);
    assert_eq!(r["status"], 410, "{r}");
    // The late one is asked on its own (no Approve all for one card).
    assert!(
        !phone.card_text("sign").contains("Approve all"),
        "one card is no burst"
    );
    phone.tap("sign", "Deny");
    assert!(!finish(late, Duration::from_secs(120)).status.success());
    assert_eq!(sshd.accepted(), 3);
}

/// Approve and Deny of `kind`'s single card lie inside the first screen of
/// a 375×667 phone, at 100 % text and at 200 % (larger default text and
/// page zoom both).
fn assert_decidable_at_a_glance(phone: &Phone, kind: &str) {
    phone.wait_cards(1);
    for (percent, zoom) in [(100, false), (200, false), (200, true)] {
        phone.small_screen(percent, zoom);
        for button in ["Approve", "Deny"] {
            if let Err(e) = phone.button_in_first_screen(kind, button) {
                panic!("{percent} % text (zoom: {zoom}): {e}");
            }
        }
    }
    phone.small_screen(100, false);
}

#[test]
fn every_kind_of_card_is_decided_on_the_first_screen_of_a_small_phone_at_200_percent_text() {
    let dir = test_dir();
    let world = PhoneWorld::start(dir.path(), "", &[]);
    let phone = world.signed_in_phone("pixel");
    phone.small_screen(100, false);

    // Pairing: the code as large as ever, the buttons on screen.
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start(&["--signer", &world.signer.addr]);
    let code = agent.wait_pairing_code();
    assert_eq!(
        phone.card_headline("pair"),
        "laptop wants to pair with this signer"
    );
    assert!(phone.card_text("pair").contains(&code));
    assert_decidable_at_a_glance(&phone, "pair");
    phone.screenshot_top(&shot_path(dir.path(), "phone-pairing.png"));
    phone.tap("pair", "Approve");
    agent.wait_connected(1);

    // The agent's session certificate.
    let headline = phone.card_headline("certificate");
    assert!(
        headline.starts_with("laptop wants a certificate for ")
            && headline.contains(&format!(" as {}", login_user())),
        "{headline}"
    );
    assert_decidable_at_a_glance(&phone, "certificate");
    phone.tap("certificate", "Approve");
    agent.wait_certificate_installed(1);
    phone.wait_cards(0);

    // An ssh-keygen signature with the signer's key `work`.
    let work = dir.path().join("sshsig");
    std::fs::create_dir_all(&work).unwrap();
    let key = world
        .signer
        .public_lines()
        .lines()
        .find(|l| l.ends_with(" work") || l.contains(" work"))
        .expect("the key work")
        .to_owned();
    std::fs::write(work.join("work.pub"), format!("{key}\n")).unwrap();
    std::fs::write(work.join("message"), "a commit\n").unwrap();
    let mut c = std::process::Command::new("timeout");
    c.args([
        "90",
        "ssh-keygen",
        "-Y",
        "sign",
        "-n",
        "git",
        "-f",
        "work.pub",
        "message",
    ])
    .current_dir(&work)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    client_env(&mut c, &agent);
    let sign = c.spawn().expect("ssh-keygen");
    assert_eq!(
        phone.card_headline("sign"),
        "laptop wants to sign a git commit with work"
    );
    assert_decidable_at_a_glance(&phone, "sign");
    phone.tap("sign", "Approve");
    let out = finish(sign, Duration::from_secs(90));
    assert_success(&out, "the signature approved on the phone");
    phone.wait_cards(0);

    // A login: the host as the agent names it, its key verified.
    let sshd = Sshd::start(dir.path(), &world.signer.public_lines(), &[]);
    let ssh = ssh_spawn(&sshd, &agent, 90);
    let headline = phone.card_headline("sign");
    assert!(
        headline.starts_with("laptop wants to log in to ")
            && headline.ends_with(&format!(" as {}", login_user()))
            && !headline.contains("unverified"),
        "{headline}"
    );
    let marks = phone.card_marks("sign");
    assert!(
        marks.contains(&("ok".to_owned(), "host key verified".to_owned())),
        "{marks:?}"
    );
    let text = phone.card_text("sign");
    assert!(text.contains("Key work"), "the key's name under it: {text}");
    assert_decidable_at_a_glance(&phone, "sign");
    phone.screenshot_top(&shot_path(dir.path(), "phone-card.png"));
    phone.tap("sign", "Approve");
    assert!(finish(ssh, Duration::from_secs(90)).status.success());
    phone.assert_no_console_errors();
}

#[test]
fn a_login_through_a_forwarded_agent_stands_out_in_colour_and_words_and_is_decided_on_the_first_screen(
) {
    let dir = test_dir();
    let world = PhoneWorld::start(dir.path(), NO_AUTO_CERT, &[]);
    let phone = world.signed_in_phone("pixel");
    let agent = pair(&world, &phone, dir.path(), &[]);
    let keys = world.signer.public_lines();
    let first = Sshd::start(dir.path(), &keys, &[]);
    let second = Sshd::start(dir.path(), &keys, &[]);
    // ssh -A to the first server, and from there to the second.
    let inner = format!(
        "ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={} -p {} {}@127.0.0.1 echo second-hop-ok",
        second.known_hosts.display(),
        second.port,
        login_user()
    );
    std::thread::scope(|s| {
        let hop = s.spawn(|| first.ssh(&agent, &["-A"], &inner));
        // The first hop: a login from this machine, its host key verified.
        let marks = phone.card_marks("sign");
        assert_eq!(marks[0].0, "ok", "{marks:?}");
        phone.tap("sign", "Approve");
        phone.wait_cards(0);
        // The second: through the forwarded agent (the remote client
        // bound its session, so the host key is verified; the agent's
        // known_hosts does not name it); said in words, in its colour.
        let headline = phone.card_headline("sign");
        assert_eq!(
            headline,
            format!(
                "laptop wants to log in to a host not in known_hosts as {}",
                login_user()
            )
        );
        let marks = phone.card_marks("sign");
        assert_eq!(marks[0].0, "danger", "forwarded comes first: {marks:?}");
        assert!(marks[0].1.contains("FORWARDED"), "{marks:?}");
        assert!(
            marks.contains(&("ok".to_owned(), "host key verified".to_owned())),
            "{marks:?}"
        );
        let colours = phone.page.eval(
            "[...document.querySelectorAll('article.card .mark')].map(m => getComputedStyle(m).backgroundColor)",
        );
        let colours: Vec<String> = serde_json::from_value(colours).expect("colours");
        assert!(
            colours.len() >= 2
                && colours[0] != colours[1]
                && colours.iter().all(|c| c != "rgba(0, 0, 0, 0)"),
            "each mark has its own colour: {colours:?}"
        );
        assert!(
            !phone.card_text("sign").contains("Also allow"),
            "no window for a forwarded request"
        );
        assert_decidable_at_a_glance(&phone, "sign");
        phone.tap("sign", "Approve");
        let out = hop.join().expect("the ssh thread");
        assert_success(&out, "the forwarded login approved on the phone");
        assert!(String::from_utf8_lossy(&out.stdout).contains("second-hop-ok"));
    });
}
