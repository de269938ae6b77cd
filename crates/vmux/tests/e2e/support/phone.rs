//! The phone page in a real browser: a signer serving it over HTTPS on a
//! DNS name mapped to loopback (with the test's own CA, which the
//! browser trusts through its NSS database), and phones that are browser
//! pages with a virtual authenticator, driven by clicking their buttons.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::browser::{Authenticator, AuthenticatorId, Browser, Page};
use super::pki::TestPki;
use super::*;

/// The relying party's name in tests.
pub const RP_HOST: &str = "signer.vmux.test";

/// A signer serving the phone page, and a browser to open it.
pub struct PhoneWorld {
    pub pki: TestPki,
    pub signer: Signer,
    pub origin: String,
    /// `HOST:PORT` the page is served on.
    pub web_addr: String,
    pub browser: Browser,
}

/// A phone: a page (in its own browser context, so its own cookies) with
/// its own authenticator.
pub struct Phone {
    pub page: Page,
    pub auth: AuthenticatorId,
}

impl PhoneWorld {
    /// `vmux signer init`, an Ed25519 key, `signer.toml` = `config`, and
    /// `signer run --approve phone` with the page on
    /// `https://signer.vmux.test:PORT`; then Chromium.
    pub fn start(dir: &Path, config: &str, extra: &[&str]) -> PhoneWorld {
        PhoneWorld::start_approving(dir, "phone", config, extra)
    }

    /// The same with another approval mode.
    pub fn start_approving(dir: &Path, approve: &str, config: &str, extra: &[&str]) -> PhoneWorld {
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
                    let browser =
                        Browser::launch(dir, pki.ca_pem(), &[&format!("MAP {RP_HOST} 127.0.0.1")]);
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

    /// A new phone: a browser context of its own with a platform
    /// authenticator (user verification on), not yet enrolled. The name
    /// only says in the test which phone this is; enrolment names it.
    pub fn phone(&self, _name: &str) -> Phone {
        let page = self.browser.new_isolated_page();
        let auth = page.add_authenticator(Authenticator::default());
        Phone { page, auth }
    }

    /// A phone enrolled the way a person does it: open the link, tap
    /// Create passkey, see that it was added.
    pub fn enrolled_phone(&self, name: &str) -> Phone {
        let phone = self.phone(name);
        let link = self.enrol_link(name);
        phone.page.goto(&link);
        phone.page.click_button("Create passkey");
        phone.page.wait_for(
            "document.getElementById('enrolled') && !document.getElementById('enrolled').hidden && document.getElementById('enrolled').textContent.includes('This phone was added')",
            WAIT,
        );
        phone
    }

    /// `vmux signer phones` output.
    pub fn phones(&self) -> String {
        ok(&mut self.signer.cmd(&["phones"]))
    }

    /// How many passkeys `phone`'s authenticator holds for the page.
    pub fn browser_credentials(&self, phone: &Phone) -> usize {
        phone
            .page
            .credentials(&phone.auth)
            .iter()
            .filter(|c| c.rp_id.as_deref() == Some(RP_HOST))
            .count()
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

    /// POSTs `body` to the page's `path` from outside any browser, with
    /// `cookie` and an `Origin` of `origin` (none when empty): what a
    /// thief of the cookie can send. Returns status and body.
    pub fn post_with(&self, path: &str, origin: &str, cookie: &str, body: &str) -> (u16, String) {
        let ca = std::fs::read(self.pki.ca_pem()).expect("CA");
        let addr: std::net::SocketAddr = self.web_addr.parse().expect("web address");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
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
    pub fn authenticator_of(&self, phone: &Phone) -> vmux_webauthn::testing::SoftAuthenticator {
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

impl Phone {
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

    /// The text of the first card of `kind`, once it shows.
    pub fn card_text(&self, kind: &str) -> String {
        let sel = format!("article.card[data-kind=\"{kind}\"]");
        self.page
            .wait_for(&format!("document.querySelector('{sel}') !== null"), WAIT);
        self.page.text(&sel)
    }

    /// Taps a button on the first card of `kind`.
    pub fn tap(&self, kind: &str, button: &str) {
        let sel = format!("article.card[data-kind=\"{kind}\"]");
        self.page
            .wait_for(&format!("document.querySelector('{sel}') !== null"), WAIT);
        self.page.click_button_in(&sel, button);
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

    /// Waits for the signed-in view (its Sign out button).
    pub fn wait_signed_in(&self) {
        self.page.wait_for(
            "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Sign out' && b.offsetParent !== null)",
            WAIT,
        );
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
        self.page.wait_for(
            "document.getElementById('message').textContent === 'Notifications are on.'",
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
