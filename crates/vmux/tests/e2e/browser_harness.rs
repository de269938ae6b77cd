//! The browser harness tests itself: a real headless Chromium, trusting a
//! test CA through NSS, loads a page over HTTPS from a name mapped to
//! loopback, and a virtual authenticator makes the page's real
//! `navigator.credentials.create/get` work, clicked as a person would.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::browser::{Authenticator, AuthenticatorId, Browser, Credential, PHONE};
use crate::support::pki::TestPki;
use crate::support::*;
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;

const RP: &str = "signer.vmux.test";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// How every page of the harness's site starts, up to its title.
macro_rules! page_head {
    () => {
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    };
}

const INDEX: &str = concat!(
    page_head!(),
    r#"<title>harness</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<h1>Harness</h1>
<p><label><input type="checkbox" id="require-uv"> Require user verification</label></p>
<p><button id="enrol" type="button">Create a passkey</button></p>
<dl>
<dt>Status</dt><dd id="status"></dd>
<dt>Created</dt><dd id="created"></dd>
<dt>Registration flags</dt><dd id="created-flags"></dd>
<dt>Assertion flags</dt><dd id="flags"></dd>
<dt>Counter</dt><dd id="counter"></dd>
</dl>
<div class="spacer"></div>
<section id="later">
<button type="button" class="decoy" disabled>Sign in</button>
<button id="sign" type="button">Sign in</button>
</section>
</body>
</html>
"#
);

const CSS: &str = "body { font: 16px sans-serif; margin: 1rem; }
dd { overflow-wrap: anywhere; }
.spacer { height: 2400px; }
.decoy { display: none; }
button { font-size: 1.2rem; padding: .6rem 1.2rem; }
";

const APP: &str = r#""use strict";
const $ = (id) => document.getElementById(id);
const rand = (n) => crypto.getRandomValues(new Uint8Array(n));
const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const parse = (authData) => {
  const a = new Uint8Array(authData);
  return { flags: a[32], counter: ((a[33] << 24) | (a[34] << 16) | (a[35] << 8) | a[36]) >>> 0 };
};
let credential = null;

async function signIn() {
  $("status").textContent = "signing";
  const uv = $("require-uv").checked ? "required" : "discouraged";
  try {
    const a = await navigator.credentials.get({ publicKey: {
      challenge: rand(32), rpId: "signer.vmux.test", userVerification: uv, timeout: 5000,
      allowCredentials: [{ type: "public-key", id: credential }],
    } });
    const { flags, counter } = parse(a.response.authenticatorData);
    $("flags").textContent = String(flags);
    $("counter").textContent = String(counter);
    $("status").textContent = "success";
  } catch (e) {
    $("status").textContent = "failed: " + e.name;
  }
}

async function enrol() {
  $("status").textContent = "creating";
  try {
    const c = await navigator.credentials.create({ publicKey: {
      rp: { id: "signer.vmux.test", name: "vmux harness" },
      user: { id: rand(16), name: "harness", displayName: "Harness" },
      challenge: rand(32),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      authenticatorSelection: { residentKey: "required", userVerification: "required" },
      attestation: "none", timeout: 5000,
    } });
    credential = c.rawId;
    $("created").textContent = b64u(c.rawId);
    $("created-flags").textContent = String(parse(c.response.getAuthenticatorData()).flags);
  } catch (e) {
    $("status").textContent = "failed: " + e.name;
    return;
  }
  await signIn();
}

$("enrol").addEventListener("click", () => { enrol(); });
$("sign").addEventListener("click", () => { signIn(); });
"#;

const BROKEN: &str = concat!(
    page_head!(),
    r#"<title>broken</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<p id="here">broken on purpose</p>
<script>document.title = "inline scripts must be refused";</script>
<script src="/broken.js"></script>
</body>
</html>
"#
);

const BROKEN_JS: &str = r#"console.error("deliberate console error");
setTimeout(() => { throw new Error("deliberate exception"); }, 0);
navigator.serviceWorker.register("/sw.js");
"#;

const SW_JS: &str = r#"console.error("deliberate worker error");
self.addEventListener("install", () => self.skipWaiting());
"#;

/// A static HTTPS (HTTP/2) server on 127.0.0.1, stopped on drop.
struct StaticHttps {
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

impl StaticHttps {
    fn start(pki: &TestPki) -> StaticHttps {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(pki.rustls_server_config(&[b"h2"])));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            Ok::<_, Infallible>(respond(req.uri().path()))
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        StaticHttps {
            port,
            _runtime: runtime,
        }
    }

    fn origin(&self) -> String {
        format!("https://{RP}:{}", self.port)
    }
}

fn respond(path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, kind, body) = match path {
        "/" => (200, "text/html; charset=utf-8", INDEX),
        "/app.js" => (200, "text/javascript", APP),
        "/app.css" => (200, "text/css", CSS),
        "/broken.html" => (200, "text/html; charset=utf-8", BROKEN),
        "/broken.js" => (200, "text/javascript", BROKEN_JS),
        "/sw.js" => (200, "text/javascript", SW_JS),
        "/favicon.ico" => (204, "image/x-icon", ""),
        _ => (404, "text/plain", "not found"),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", kind)
        .header("content-security-policy", CSP)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

/// Ticks "require user verification" and taps Create a passkey, as a
/// person does: the page creates a passkey and signs in with it. Asserts
/// that it succeeded with UP and UV in the assertion, and returns the
/// one discoverable credential the authenticator then holds, the one the
/// page created. (Scripts the test runs see the page's window and DOM,
/// not its top-level `const`s such as `$`, in Firefox.)
fn create_a_passkey_requiring_uv<P: PhonePage>(page: &P, auth: &AuthenticatorId) -> Credential {
    page.check("#require-uv");
    let t = Instant::now();
    page.click_button("Create a passkey");
    page.wait_for(
        "!['', 'creating', 'signing'].includes(document.getElementById('status').textContent)",
        WAIT,
    );
    eprintln!("create + get took {:?}", t.elapsed());
    assert_eq!(page.text("#status"), "success");
    let flags: u8 = page.text("#flags").parse().expect("flags");
    assert_eq!(
        flags & 0x05,
        0x05,
        "UP and UV in the assertion: {flags:#04x}"
    );
    let creds = page.credentials(auth);
    assert_eq!(creds.len(), 1, "one credential: {creds:?}");
    let cred = creds[0].clone();
    assert_eq!(cred.rp_id.as_deref(), Some(RP));
    assert!(cred.resident, "a discoverable credential");
    assert_eq!(cred.id_base64url(), page.text("#created"));
    cred
}

/// The authenticator no longer recognises the finger: Sign in, with
/// user verification required, fails.
fn unverified_sign_in_fails<P: PhonePage>(page: &P, auth: &AuthenticatorId) {
    page.set_user_verified(auth, false);
    page.click_button_in("#later", "Sign in");
    let status = page.wait_for(
        "(s => s !== 'signing' && s)(document.getElementById('status').textContent)",
        WAIT,
    );
    eprintln!("UV required, user not verified: {status}");
    assert_eq!(status, json!("failed: NotAllowedError"));
}

#[test]
fn the_browser_creates_and_uses_a_passkey_on_a_trusted_https_origin() {
    let dir = test_dir();
    let pki = TestPki::new(&dir.path().join("pki"), &[RP]);
    let server = StaticHttps::start(&pki);

    let t = Instant::now();
    let browser = Browser::launch(dir.path(), pki.ca_pem(), &[RP]);
    eprintln!("{} ready in {:?}", browser.version(), t.elapsed());
    // A phone of its own: cookies, storage and permissions apart.
    let page = browser.new_isolated_page();
    let auth = page.add_authenticator(Authenticator {
        uv: true,
        resident: true,
        auto_presence: true,
    });

    let t = Instant::now();
    page.goto(&format!("{}/", server.origin()));
    eprintln!("page loaded in {:?}", t.elapsed());
    assert_eq!(page.eval("window.isSecureContext"), json!(true));
    assert_eq!(
        page.eval("location.host"),
        json!(format!("{RP}:{}", server.port))
    );
    assert_eq!(page.text("h1"), "Harness");
    assert_eq!(page.count("button"), 3);
    assert_eq!(
        page.eval("[innerWidth, innerHeight, devicePixelRatio]"),
        json!([PHONE.0, PHONE.1, PHONE.2 as u32])
    );

    // Registration then an assertion with user verification required.
    let cred = &create_a_passkey_requiring_uv(&page, &auth);
    assert_eq!(page.eval("$('require-uv').checked"), json!(true));
    let created_flags: u8 = page.text("#created-flags").parse().expect("flags");
    assert_eq!(created_flags & 0x45, 0x45, "UP, UV and AT at registration");
    assert!(cred.user_handle.is_some(), "with its user handle");
    assert!(cred.sign_count >= 1, "it signed: {cred:?}");
    let counter: u64 = page.text("#counter").parse().expect("counter");
    assert_eq!(
        counter, cred.sign_count,
        "the page saw the authenticator's counter"
    );

    // The finger is not recognised: with UV required the assertion fails.
    unverified_sign_in_fails(&page, &auth);
    assert_eq!(page.credentials(&auth)[0].sign_count, cred.sign_count);

    // With UV merely discouraged, an assertion with UP alone.
    page.uncheck("#require-uv");
    page.eval("$('status').textContent = ''");
    page.click_button("Sign in");
    page.wait_for("(s => s !== 'signing' && s)($('status').textContent)", WAIT);
    assert_eq!(page.text("#status"), "success");
    let flags: u8 = page.text("#flags").parse().expect("flags");
    eprintln!("UV discouraged, user not verified: flags {flags:#04x}");
    assert_eq!(flags & 0x05, 0x01, "UP without UV: {flags:#04x}");
    assert_eq!(page.credentials(&auth)[0].sign_count, cred.sign_count + 1);

    // A reload starts the page afresh; the authenticator keeps its keys.
    page.reload();
    assert_eq!(page.text("#status"), "");
    assert_eq!(page.credentials(&auth).len(), 1);

    // What a person would see, on a phone (a reload keeps the scroll).
    page.eval("scrollTo(0, 0)");
    let shot = dir.path().join("harness.png");
    page.screenshot(&shot);
    let png = std::fs::read(&shot).expect("screenshot written");
    let scale = PHONE.2 as u32;
    assert_eq!(png_size(&png), (PHONE.0 * scale, PHONE.1 * scale));

    assert_eq!(page.eval("Notification.permission"), json!("default"));
    page.grant_notifications(&server.origin());
    assert_eq!(page.eval("Notification.permission"), json!("granted"));

    let errors = page.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    page.remove_authenticator(&auth);
    page.close();
}

#[test]
fn console_errors_exceptions_and_csp_violations_are_collected() {
    let dir = test_dir();
    let pki = TestPki::new(&dir.path().join("pki"), &[RP]);
    let server = StaticHttps::start(&pki);
    let browser = Browser::launch(dir.path(), pki.ca_pem(), &[RP]);
    let page = browser.new_page();
    browser.grant_notifications(&server.origin());
    page.goto(&format!("{}/broken.html", server.origin()));
    assert_eq!(page.eval("Notification.permission"), json!("granted"));
    page.wait_for("document.getElementById('here') !== null", WAIT);
    // The exception is thrown from a timer after load.
    let deadline = Instant::now() + WAIT;
    let errors = loop {
        let errors = page.console_errors();
        let seen = |what: &str| errors.iter().any(|e| e.contains(what));
        if seen("deliberate exception") && seen("deliberate worker error")
            || Instant::now() > deadline
        {
            break errors;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("collected: {errors:#?}");
    let has = |what: &str| errors.iter().any(|e| e.contains(what));
    assert!(
        has("deliberate console error"),
        "console.error: {errors:#?}"
    );
    assert!(
        has("deliberate exception"),
        "uncaught exception: {errors:#?}"
    );
    assert!(
        has("deliberate worker error"),
        "the service worker's console: {errors:#?}"
    );
    assert!(
        has("Content Security Policy"),
        "the refused inline script: {errors:#?}"
    );
    assert_ne!(
        page.eval("document.title"),
        json!("inline scripts must be refused")
    );

    // A dialog would block the page: the harness accepts it and counts it.
    let answer =
        page.eval("new Promise(r => setTimeout(() => r(confirm('deliberate question')), 0))");
    assert_eq!(answer, json!(true));
    assert!(
        page.console_errors()
            .iter()
            .any(|e| e.contains("confirm dialog") && e.contains("deliberate question")),
        "{:#?}",
        page.console_errors()
    );

    // A same-document navigation has no load to wait for.
    page.goto(&format!("{}/broken.html#there", server.origin()));
    assert_eq!(page.eval("location.hash"), json!("#there"));

    // A missing button is reported with the buttons there are.
    page.set_wait(Duration::from_secs(2));
    let missing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        page.eval("document.body.insertAdjacentHTML('beforeend', '<button>Approve</button>')");
        page.click_button_in("body", "Deny");
    }));
    let message = panic_message(missing).expect("clicking a missing button panics");
    assert!(
        message.contains("says \"Deny\"") && message.contains("[\"Approve\"]"),
        "{message}"
    );
}

fn panic_message(r: std::thread::Result<()>) -> Option<String> {
    let p = r.err()?;
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
}

#[test]
fn only_the_trusted_ca_and_loopback_are_reachable() {
    let dir = test_dir();
    let pki = TestPki::new(&dir.path().join("pki"), &[RP]);
    let server = StaticHttps::start(&pki);
    // A browser that trusts another CA refuses the server's certificate.
    let other = TestPki::new(&dir.path().join("other-pki"), &[RP]);
    let browser = Browser::launch(dir.path(), other.ca_pem(), &[RP]);
    let page = browser.new_page();
    let refused = page
        .try_goto(&format!("{}/", server.origin()))
        .expect_err("an untrusted certificate is refused");
    assert!(refused.contains("ERR_CERT_AUTHORITY_INVALID"), "{refused}");
    // Names outside the map resolve to nothing.
    let refused = page
        .try_goto("https://example.com/")
        .expect_err("no name resolves outside the map");
    assert!(refused.contains("ERR_NAME_NOT_RESOLVED"), "{refused}");
}

#[test]
fn firefox_creates_and_uses_a_passkey_trusts_only_its_ca_and_leaves_no_process_behind() {
    use vmux_testkit::firefox::Firefox;
    if !crate::support::phone::firefox_or_skip("the Firefox harness test") {
        return;
    }
    let dir = test_dir();
    let pki = TestPki::new(&dir.path().join("pki"), &[RP]);
    let server = StaticHttps::start(&pki);

    let t = Instant::now();
    let page = Firefox::launch(dir.path(), pki.ca_pem());
    eprintln!("{} ready in {:?}", page.version(), t.elapsed());
    let auth = page.add_authenticator(Authenticator::default());
    page.goto(&format!("{}/", server.origin()));
    assert_eq!(page.eval("window.isSecureContext"), json!(true));
    assert_eq!(page.text("h1"), "Harness");
    // Statements too, as in Chromium: the last one's value (the page's
    // CSP, which refuses eval, governs the page, not the harness).
    assert_eq!(page.eval("const a = 1; a + 1"), json!(2));
    assert_eq!(page.eval("Promise.resolve(3)"), json!(3));
    // A phone's height at scale 2; as narrow as Firefox's window goes.
    let size = page.eval("[innerWidth, innerHeight, devicePixelRatio]");
    assert_eq!(size[1], json!(PHONE.1), "{size}");
    assert_eq!(size[2], json!(2), "{size}");
    assert!(
        (i64::from(PHONE.0)..=500).contains(&size[0].as_i64().unwrap_or(0)),
        "{size}"
    );

    // Registration then an assertion with user verification required,
    // clicked as a person does.
    create_a_passkey_requiring_uv(&page, &auth);

    // The finger is not recognised: with UV required the assertion fails.
    unverified_sign_in_fails(&page, &auth);
    let errors = page.console_errors();
    assert!(errors.is_empty(), "{errors:?}");

    // What a person would see.
    let shot = dir.path().join("firefox.png");
    page.screenshot(&shot);
    let png = std::fs::read(&shot).expect("screenshot written");
    let (w, h) = png_size(&png);
    assert_eq!(h, PHONE.1 * 2, "{w}x{h}");

    // The page's console errors, its worker's, its uncaught exception
    // and its refused inline script reach the test.
    page.goto(&format!("{}/broken.html", server.origin()));
    page.wait_for("document.getElementById('here') !== null", WAIT);
    let deadline = Instant::now() + WAIT;
    let seen = |what: &str| page.console_errors().iter().any(|l| l.contains(what));
    while !(seen("deliberate console error")
        && seen("deliberate worker error")
        && seen("deliberate exception")
        && seen("Content-Security-Policy"))
    {
        assert!(Instant::now() < deadline, "{:?}", page.console());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Gone on drop, with every process of its group.
    let pid = page.pid().expect("running") as i32;
    let t = Instant::now();
    drop(page);
    eprintln!("quit in {:?}", t.elapsed());
    // SAFETY: kill(2) with signal 0 only asks whether the group exists.
    let alive = unsafe { libc::kill(-pid, 0) } == 0;
    assert!(!alive, "Firefox's process group {pid} outlived it");

    // A Firefox that trusts another CA refuses the server's certificate.
    let other = TestPki::new(&dir.path().join("other-pki"), &[RP]);
    let page = Firefox::launch(dir.path(), other.ca_pem());
    let refused = page
        .try_goto(&format!("{}/", server.origin()))
        .expect_err("an untrusted certificate is refused");
    assert!(refused.contains("insecure certificate"), "{refused}");
}
