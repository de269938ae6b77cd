//! The phone page in a real browser: a signer serving it over HTTPS on a
//! DNS name mapped to loopback (with the test's own CA, which the
//! browser trusts through its NSS database), and phones that are browser
//! pages with a virtual authenticator, driven by clicking their buttons.
//! The world and its phones are generic over the browser engine
//! ([`BrowserEngine`]: Chromium by default, or [`Firefoxes`]); what only
//! Chromium's DevTools protocol can do is on `PhoneWorld<Browser>` and
//! `Phone<Page>`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::browser::{Authenticator, AuthenticatorId, Browser, Page};
pub use super::engine::{BrowserEngine, Firefoxes, PhonePage};
use super::pki::TestPki;
use super::*;
pub use vmux_testkit::standin::enrol;

/// The relying party's name in tests.
pub const RP_HOST: &str = "signer.vmux.test";

/// A signer serving the phone page, and a browser engine to open it.
pub struct PhoneWorld<E: BrowserEngine = Browser> {
    pub pki: TestPki,
    pub signer: Signer,
    pub origin: String,
    /// `HOST:PORT` the page is served on.
    pub web_addr: String,
    pub browser: E,
}

/// A phone: a page (in its own browser context, so its own cookies) with
/// its own authenticator.
pub struct Phone<P: PhonePage = Page> {
    pub page: P,
    pub auth: AuthenticatorId,
}

impl PhoneWorld<Browser> {
    /// `vmux signer init`, an Ed25519 key, `signer.toml` = `config`, and
    /// `signer run --approve phone` with the page on
    /// `https://signer.vmux.test:PORT`; then Chromium.
    pub fn start(dir: &Path, config: &str, extra: &[&str]) -> PhoneWorld {
        PhoneWorld::start_approving(dir, "phone", config, extra)
    }

    /// The same with another approval mode.
    pub fn start_approving(dir: &Path, approve: &str, config: &str, extra: &[&str]) -> PhoneWorld {
        PhoneWorld::<Browser>::start_in(dir, approve, config, extra)
    }

    /// The session cookie's value in `phone`'s browser context (HttpOnly:
    /// the page cannot read it; a thief with the phone's storage could).
    pub fn session_cookie(&self, phone: &Phone) -> String {
        let v = phone.page.call(
            "Network.getCookies",
            serde_json::json!({ "urls": [self.origin] }),
        );
        v["cookies"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "__Host-vmux-session")
            .and_then(|c| c["value"].as_str())
            .unwrap_or_else(|| panic!("no session cookie in {v}"))
            .to_owned()
    }
}

impl<E: BrowserEngine> PhoneWorld<E> {
    /// [`PhoneWorld::start_approving`] with the phones in engine `E`.
    pub fn start_in(dir: &Path, approve: &str, config: &str, extra: &[&str]) -> PhoneWorld<E> {
        let pki = TestPki::new(dir, &[RP_HOST]);
        let mut signer = Signer::init(dir, "homeserver");
        signer.keygen("ed25519", "work");
        signer.config(config);
        // The page's port must be in its origin before it starts, so it
        // is probed; a port taken meanwhile fails the start, and we retry.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let origin = format!("https://{RP_HOST}:{port}");
            let web_addr = format!("127.0.0.1:{port}");
            let mut args = vec![
                "--web-listen".to_owned(),
                web_addr.clone(),
                "--web-origin".to_owned(),
                origin.clone(),
                "--tls-cert".to_owned(),
                pki.cert_pem().display().to_string(),
                "--tls-key".to_owned(),
                pki.key_pem().display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                signer.start_approving("127.0.0.1:0", approve, &args);
            })) {
                Ok(()) => {
                    signer
                        .daemon()
                        .wait_line(WAIT, |l| l == format!("phone page at {origin}"));
                    let browser = E::start(dir, pki.ca_pem(), RP_HOST);
                    return PhoneWorld {
                        pki,
                        signer,
                        origin,
                        web_addr,
                        browser,
                    };
                }
                Err(_) => {
                    last = signer
                        .daemon
                        .as_ref()
                        .map(|d| d.output())
                        .unwrap_or_default();
                    signer.kill();
                }
            }
        }
        panic!("the signer with the phone page did not start:\n{last}");
    }

    /// `vmux signer phone add --name NAME`: the enrolment link.
    pub fn enrol_link(&self, name: &str) -> String {
        let link = ok(&mut self.signer.cmd(&["phone", "add", "--name", name]))
            .trim()
            .to_owned();
        assert!(
            link.starts_with(&format!("{}/#enrol=", self.origin)),
            "enrolment link: {link}"
        );
        link
    }

    /// A new phone: a browser context (or, in Firefox, a browser) of its
    /// own with a platform authenticator (user verification on), not yet
    /// enrolled. The name only says in the test which phone this is;
    /// enrolment names it.
    pub fn phone(&self, _name: &str) -> Phone<E::Page> {
        let (page, auth) = self.browser.new_phone(Authenticator::default());
        Phone { page, auth }
    }

    /// A phone enrolled the way a person does it: open the link, tap
    /// Create passkey, see that it was added.
    pub fn enrolled_phone(&self, name: &str) -> Phone<E::Page> {
        let phone = self.phone(name);
        enrol(&phone.page, &self.enrol_link(name));
        phone
    }

    /// A phone enrolled ([`PhoneWorld::enrolled_phone`]) whose page then
    /// shows it signed in.
    pub fn signed_in_phone(&self, name: &str) -> Phone<E::Page> {
        let phone = self.enrolled_phone(name);
        phone.wait_signed_in();
        phone
    }

    /// Taps Unpair on `phone`'s page for the agent `name` (the only one
    /// listed), waits for the page to drop it, and asserts that `vmux
    /// signer agents` no longer lists it.
    pub fn unpair_on_page(&self, phone: &Phone<E::Page>, name: &str) {
        phone.page.click_button_in("#agents", "Unpair");
        phone.page.wait_for(
            &format!(
                "!document.getElementById('agents').textContent.includes({})",
                serde_json::Value::from(name)
            ),
            WAIT,
        );
        let agents = ok(&mut self.signer.cmd(&["agents"]));
        assert!(!agents.contains(name), "unpaired on the page: {agents}");
    }

    /// Asserts that `vmux signer phones` lists no phone that can be
    /// woken (none holds a push subscription).
    pub fn assert_no_phone_can_be_woken(&self) {
        let phones = self.phones();
        assert!(!phones.contains("can be woken"), "{phones}");
    }

    /// `vmux signer phones` output.
    pub fn phones(&self) -> String {
        ok(&mut self.signer.cmd(&["phones"]))
    }

    /// POSTs `body` to the page's `path` from outside any browser, with
    /// `cookie` and an `Origin` of `origin` (none when empty): what a
    /// thief of the cookie can send. Returns status and body.
    pub fn post_with(&self, path: &str, origin: &str, cookie: &str, body: &str) -> (u16, String) {
        let ca = std::fs::read(self.pki.ca_pem()).expect("CA");
        let addr: std::net::SocketAddr = self.web_addr.parse().expect("web address");
        let rt = runtime();
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
                .resolve(RP_HOST, addr)
                .timeout(WAIT)
                .build()
                .expect("client");
            let mut req = client
                .post(format!("{}{path}", self.origin))
                .header("Content-Type", "application/json")
                .header("Cookie", format!("__Host-vmux-session={cookie}"))
                .body(body.to_owned());
            if !origin.is_empty() {
                req = req.header("Origin", origin);
            }
            let r = req.send().await.expect("request");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    }

    /// The passkey `phone` enrolled, as a software authenticator with the
    /// same private key (taken from the virtual authenticator): to forge
    /// assertions the page would never send.
    pub fn authenticator_of(
        &self,
        phone: &Phone<E::Page>,
    ) -> vmux_webauthn::testing::SoftAuthenticator {
        use p256::pkcs8::DecodePrivateKey;
        let cred = phone
            .page
            .credentials(&phone.auth)
            .into_iter()
            .find(|c| c.rp_id.as_deref() == Some(RP_HOST))
            .expect("an enrolled passkey");
        let pkcs8 = base64::engine::general_purpose::STANDARD
            .decode(cred.raw["privateKey"].as_str().expect("privateKey"))
            .expect("base64 key");
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&pkcs8).expect("P-256 PKCS#8");
        let mut a = vmux_webauthn::testing::SoftAuthenticator::new(RP_HOST, &self.origin);
        a.key = key;
        a.credential_id = cred.id.clone();
        a.counter = cred.sign_count as u32;
        a
    }
}

/// The JSON the page posts for the passkey assertion `a` (its credential
/// id, authenticator data, client data and signature in base64url), with
/// the fields of the object `with` (e.g. `window`) added.
pub fn assertion_json(a: &vmux_webauthn::testing::Assertion, with: Value) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut body = json!({
        "credential_id": b64(&a.credential_id),
        "authenticator_data": b64(&a.authenticator_data),
        "client_data_json": b64(&a.client_data_json),
        "signature": b64(&a.signature),
    });
    if let (Some(body), Value::Object(with)) = (body.as_object_mut(), with) {
        body.extend(with);
    }
    body
}

impl<P: PhonePage> Phone<P> {
    /// Waits until the page's message line says exactly `text`.
    pub fn wait_message(&self, text: &str) {
        self.page.wait_for(
            &format!(
                "document.getElementById('message').textContent === {}",
                serde_json::Value::from(text)
            ),
            WAIT,
        );
    }

    /// Asserts that the page logged no console error, uncaught
    /// exception or CSP violation so far.
    pub fn assert_no_console_errors(&self) {
        let errors = self.page.console_errors();
        assert!(errors.is_empty(), "{errors:?}");
    }

    /// The cards on the page now.
    pub fn cards(&self) -> usize {
        self.page.count("article.card")
    }

    /// Waits until `n` cards show.
    pub fn wait_cards(&self, n: usize) {
        self.page.wait_for(
            &format!("document.querySelectorAll('article.card').length === {n}"),
            WAIT,
        );
    }

    /// The text of the first card of `kind`, once it shows, as a person
    /// reads it with its **Details** open (the page's own `<details>`,
    /// opened as a tap on it does).
    pub fn card_text(&self, kind: &str) -> String {
        let sel = format!("article.card[data-kind=\"{kind}\"]");
        self.page
            .wait_for(&format!("document.querySelector('{sel}') !== null"), WAIT);
        self.page.eval(&format!(
            "document.querySelectorAll('{sel} details').forEach(d => {{ d.open = true; }})"
        ));
        self.page.text(&sel)
    }

    /// The headline of the first card of `kind` (what it says first, the
    /// sentence a person reads at once), once it shows.
    pub fn card_headline(&self, kind: &str) -> String {
        let sel = format!("article.card[data-kind=\"{kind}\"] .headline");
        self.page
            .wait_for(&format!("document.querySelector('{sel}') !== null"), WAIT);
        self.page.text(&sel)
    }

    /// The text of what stands out on the first card of `kind` (its marks:
    /// forwarded, unverified, verified), each with the colour level it is
    /// shown in: `(level, text)`.
    pub fn card_marks(&self, kind: &str) -> Vec<(String, String)> {
        let sel = format!("article.card[data-kind=\"{kind}\"]");
        self.page
            .wait_for(&format!("document.querySelector('{sel}') !== null"), WAIT);
        let v = self.page.eval(&format!(
            "[...document.querySelector('{sel}').querySelectorAll('.mark')].map(m => [m.dataset.level, m.innerText.trim(), getComputedStyle(m).backgroundColor])"
        ));
        v.as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m[0].as_str().unwrap_or_default().to_owned(),
                    m[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Whether the visible button `button` of the first card of `kind`
    /// lies wholly inside the first screen (the page not scrolled, and
    /// nothing wider than the screen, which would zoom the page out).
    pub fn button_in_first_screen(&self, kind: &str, button: &str) -> Result<(), String> {
        let sel = format!("article.card[data-kind=\"{kind}\"]");
        self.page
            .wait_for(&format!("document.querySelector('{sel}') !== null"), WAIT);
        let v = self.page.eval(&format!(
            "(() => {{ window.scrollTo(0, 0); const b = [...document.querySelector('{sel}').querySelectorAll('button')].find(b => b.innerText.trim() === {button:?} && b.offsetParent !== null); if (!b) return {{ found: false }}; const r = b.getBoundingClientRect(); return {{ found: true, top: r.top, bottom: r.bottom, left: r.left, right: r.right, w: screen.width, h: screen.height, sw: document.documentElement.scrollWidth, sy: scrollY }}; }})()"
        ));
        if v["found"] != true {
            return Err(format!("no visible {button:?} on the {kind} card"));
        }
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        if f("top") >= 0.0
            && f("left") >= 0.0
            && f("bottom") <= f("h")
            && f("right") <= f("w")
            && f("sw") <= f("w")
            && f("sy") == 0.0
        {
            Ok(())
        } else {
            let wide = self.page.eval(
                "[...document.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > screen.width).map(e => e.tagName + '.' + e.className)",
            );
            Err(format!(
                "{button:?} on the {kind} card is not inside the first screen: {v}; wider than the screen: {wide}"
            ))
        }
    }

    /// Taps a button on the first card of `kind`.
    pub fn tap(&self, kind: &str, button: &str) {
        let sel = format!("article.card[data-kind=\"{kind}\"]");
        self.page
            .wait_for(&format!("document.querySelector('{sel}') !== null"), WAIT);
        self.page.click_button_in(&sel, button);
    }

    /// A screenshot of the first screen as a person sees it arrive: the
    /// page at its top, every card's Details folded.
    pub fn screenshot_top(&self, path: &Path) {
        self.page.eval(
            "document.querySelectorAll('article.card details').forEach(d => { d.open = false; }); window.scrollTo(0, 0)",
        );
        self.page.wait_for(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(scrollY === 0))))",
            WAIT,
        );
        self.page.screenshot(path);
    }

    /// The ids of the cards showing.
    pub fn card_ids(&self) -> Vec<String> {
        match self
            .page
            .eval("[...document.querySelectorAll('article.card')].map(c => c.dataset.id)")
        {
            Value::Array(a) => a
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Signs in with the passkey the way a person does.
    pub fn sign_in(&self) {
        self.page.click_button("Sign in");
        self.wait_signed_in();
    }

    /// Taps Sign out and waits until the page holds a sign-in challenge
    /// (the sign-in view, its Sign in button enabled): the signer has
    /// ended the session by then, so a reload cannot race it.
    pub fn sign_out(&self) {
        self.page.click_button("Sign out");
        self.page.wait_for(
            "!document.getElementById('view-signin').hidden && !document.getElementById('signin-button').disabled",
            WAIT,
        );
    }

    /// Waits for the signed-in view (its Sign out button).
    pub fn wait_signed_in(&self) {
        self.page.wait_for(
            "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Sign out' && b.offsetParent !== null)",
            WAIT,
        );
    }

    /// Runs `fetch` in the page (same origin, its cookie) and returns
    /// `{status, body}`.
    pub fn fetch(&self, method: &str, path: &str, body: &Value) -> Value {
        let js = format!(
            "fetch({path:?}, {{method: {method:?}, headers: {{'Content-Type': 'application/json'}}, credentials: 'same-origin'{}}}).then(async r => ({{status: r.status, body: await r.text()}}))",
            if method == "GET" {
                String::new()
            } else {
                format!(", body: JSON.stringify({body})")
            }
        );
        self.page.eval(&js)
    }
}

impl Phone<Page> {
    /// Makes the page a 375×667 phone (an iPhone SE; device scale 2) with
    /// its text at `percent` % in both ways browsers do it: the default
    /// font size (Android's and Firefox's text size) and, above 100 %,
    /// page zoom (Safari's and Chrome's: the same screen, fewer CSS
    /// pixels). `zoom` picks the latter.
    pub fn small_screen(&self, percent: u32, zoom: bool) {
        let f = f64::from(percent) / 100.0;
        if zoom {
            let (w, h) = ((375.0 / f).round() as u32, (667.0 / f).round() as u32);
            self.page.set_viewport(w, h, 2.0 * f, true);
            self.page.call(
                "Page.setFontSizes",
                json!({ "fontSizes": { "standard": 16, "fixed": 13 } }),
            );
        } else {
            self.page.set_viewport(375, 667, 2.0, true);
            self.page.call(
                "Page.setFontSizes",
                json!({ "fontSizes": { "standard": (16.0 * f).round() as u32, "fixed": (13.0 * f).round() as u32 } }),
            );
        }
        let width = if zoom {
            (375.0 / f).round() as u32
        } else {
            375
        };
        self.page
            .wait_for(&format!("screen.width === {width}"), WAIT);
    }

    /// Stands in for the browser's push service, in this page and every
    /// page it loads later (the browser's subscription outlives the page):
    /// `PushManager.subscribe` returns a subscription with `keys`
    /// (`{p256dh, auth}`) to `endpoint` the first time and to
    /// `endpoint-N` for the N-th, kept until it is unsubscribed; it
    /// records the server key and `userVisibleOnly` it was asked with
    /// (`window.testServerKey`, `window.testUserVisible`). The page's own
    /// code does the rest.
    pub fn stand_in_push_manager(&self, endpoint: &str, keys: &Value) {
        let js = format!(
            r#"(() => {{
  if (typeof PushManager === 'undefined') return false;
  const base = {endpoint:?};
  const keys = {keys};
  const load = () => {{
    try {{ return JSON.parse(localStorage.getItem('vmux-test-push')) || {{ n: 0, current: null }}; }}
    catch {{ return {{ n: 0, current: null }}; }}
  }};
  const save = (s) => localStorage.setItem('vmux-test-push', JSON.stringify(s));
  const make = ({{ endpoint, key }}) => ({{
    endpoint,
    options: {{ userVisibleOnly: true, applicationServerKey: new Uint8Array(key).buffer }},
    toJSON() {{ return {{ endpoint, expirationTime: null, keys }}; }},
    async unsubscribe() {{
      const s = load();
      if (s.current && s.current.endpoint === endpoint) {{ s.current = null; save(s); }}
      return true;
    }},
  }});
  PushManager.prototype.subscribe = async function (opts) {{
    const key = Array.from(new Uint8Array(opts.applicationServerKey));
    window.testServerKey = key;
    window.testUserVisible = opts.userVisibleOnly;
    const s = load();
    if (s.current) {{
      if (JSON.stringify(s.current.key) !== JSON.stringify(key)) {{
        throw new DOMException('subscribed with another key', 'InvalidStateError');
      }}
      return make(s.current);
    }}
    s.n += 1;
    s.current = {{ endpoint: s.n === 1 ? base : `${{base}}-${{s.n}}`, key }};
    save(s);
    return make(s.current);
  }};
  PushManager.prototype.getSubscription = async function () {{
    const s = load();
    return s.current ? make(s.current) : null;
  }};
  return true;
}})()"#
        );
        self.page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": js }),
        );
        self.page.eval(&js);
    }

    /// Taps **Turn on notifications** (permission granted) and waits for
    /// the page to say they are on.
    pub fn turn_on_notifications(&self, origin: &str) {
        self.page.grant_notifications(origin);
        self.page.wait_for(
            "!document.getElementById('notifications').hidden && !document.getElementById('notifications-on').hidden",
            WAIT,
        );
        self.page.click_button("Turn on notifications");
        self.wait_message("Notifications are on.");
    }
}

/// Starts `ssh … true` through `agent` into `sshd` in the background
/// (it waits for a phone), with `ConnectTimeout` and a bound of `secs`.
pub fn ssh_spawn(sshd: &Sshd, agent: &Agent, secs: u64) -> std::process::Child {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string())
        .arg("ssh")
        .args(sshd.ssh_opts())
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg(format!("{}@127.0.0.1", login_user()))
        .arg("true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    client_env(&mut c, agent);
    c.spawn().expect("ssh")
}

/// Waits (bounded) for a child to exit and returns its output.
pub fn finish(child: std::process::Child, bound: Duration) -> std::process::Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("waiting for pid {id}: {e}"),
        Err(_) => panic!("pid {id} did not finish within {bound:?}"),
    }
}

impl Signer {
    /// Starts approving on the phone page, served over plain HTTP on a
    /// free loopback port for `origin` (as behind a proxy that ends
    /// TLS), and waits until it says so; returns the port.
    pub fn start_plain_phone_page(&mut self, origin: &str) -> u16 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let page = ["--web-listen", &listen, "--web-origin", origin];
        self.start_approving("127.0.0.1:0", "phone", &page);
        self.daemon()
            .wait_line(WAIT, |l| l == format!("phone page at {origin}"));
        port
    }
}

/// A phone that trusts nothing yet (a Chromium under `dir` trusting no
/// CA, reaching names by `rules`): `page_url` is refused as untrusted;
/// the trust page `trust_url` opens, `on_trust_page` looks at it, and a
/// tap on Install on Android downloads the CA. Returns the downloaded
/// file once it holds the whole CA, `ca_pem` in DER (Chromium may show
/// the file before it has written all of it).
pub fn download_page_ca(
    dir: &Path,
    rules: &[&str],
    (page_url, trust_url): (&str, &str),
    ca_pem: &Path,
    on_trust_page: impl FnOnce(&Page),
) -> std::path::PathBuf {
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads");
    let browser = Browser::launch_trusting(dir, &[], rules);
    browser.call(
        "Browser.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": downloads }),
    );
    let page = browser.new_page();
    let e = page.try_goto(page_url).unwrap_err();
    assert!(e.contains("ERR_CERT_AUTHORITY_INVALID"), "{e}");
    page.goto(trust_url);
    on_trust_page(&page);
    page.click_link("Install on Android");
    let file = downloads.join("vmux-ca.crt");
    let want = pem_der(ca_pem);
    wait_until("the whole CA downloaded", WAIT, || {
        std::fs::read(&file).ok().as_ref() == Some(&want)
    });
    file
}

/// The DER of the certificate in the PEM file `path`.
pub fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).expect("the CA's PEM file");
    let body: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .expect("a PEM certificate")
        .split_whitespace()
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM base64")
}

/// Whether a test's Firefox half can run: `false`, saying why on stderr,
/// only when Firefox (or certutil) is not installed; with
/// `$VMUX_REQUIRE_FIREFOX` set (`scripts/test` sets it) a missing Firefox
/// fails the test instead.
pub fn firefox_or_skip(test: &str) -> bool {
    match Firefoxes::check_installed() {
        Ok(()) => true,
        Err(why) if std::env::var_os("VMUX_REQUIRE_FIREFOX").is_some() => {
            panic!("{test} in Firefox: {why}, and $VMUX_REQUIRE_FIREFOX is set")
        }
        Err(why) => {
            eprintln!("skipping {test} in Firefox: {why}");
            false
        }
    }
}

/// A test of the phone page in both engines: `#[test] fn $chromium` runs
/// `$story::<Browser>()`, and `#[test] fn $firefox` the same story in
/// Firefox ([`Firefoxes`]) unless [`firefox_or_skip`] says it cannot run
/// here (`$what` names the story in that message).
macro_rules! in_both_engines {
    ($story:ident, $what:literal, $chromium:ident, $firefox:ident $(,)?) => {
        #[test]
        fn $chromium() {
            $story::<$crate::support::browser::Browser>();
        }

        #[test]
        fn $firefox() {
            if $crate::support::phone::firefox_or_skip($what) {
                $story::<$crate::support::phone::Firefoxes>();
            }
        }
    };
}
pub(crate) use in_both_engines;
