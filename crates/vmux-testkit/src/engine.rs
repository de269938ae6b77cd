//! One test, two browser engines: what a test of the phone page does
//! with a phone ([`PhonePage`]) and how it gets one ([`BrowserEngine`]), for
//! Chromium over the DevTools protocol ([`crate::browser`]) and Firefox
//! over Marionette ([`crate::firefox`]). A test written against these
//! traits runs unchanged in both; what only one engine can do (CDP's
//! cookies, push delivery, permissions) stays on its own type.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::browser::{
    self, find_button, js_str, steady_target, truthy, Authenticator, AuthenticatorId, Browser,
    Credential, FIND_CHECKBOX, POLL,
};
use crate::firefox::{self, Firefox};

/// A phone's page, as a person uses it: open a link, read, tap; and the
/// virtual authenticator behind it. What is the same in both engines
/// (waiting, reading, finding and clicking a button, a checkbox, the
/// authenticator's credentials) is written once here, over the few things
/// each engine does its own way (evaluating, a mouse click, a screenshot,
/// a command to the virtual authenticator: [`sealed::Driver`]).
pub trait PhonePage: sealed::Driver {
    /// Navigates and waits (at most [`PhonePage::wait`]) for the load
    /// event; panics if it fails (e.g. a certificate error).
    fn goto(&self, url: &str) {
        if let Err(e) = self.try_goto(url) {
            panic!("{e}");
        }
    }
    /// Navigates and waits for the load event; `Err` with the engine's
    /// reason (e.g. a certificate error) if it fails.
    fn try_goto(&self, url: &str) -> Result<(), String>;
    /// Reloads and waits (at most [`PhonePage::wait`]) for the load event.
    fn reload(&self);
    /// The page's URL.
    fn url(&self) -> String {
        self.eval("location.href")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    /// Evaluates the JavaScript expression `js` in the page (awaiting a
    /// promise) and returns its value as JSON (`undefined` is `null`);
    /// panics if it throws. It sees the page's window and DOM; Firefox
    /// runs it in a sandbox whose prototype is the window, where a
    /// classic script's top-level `let` and `const` are not visible
    /// (Chromium sees them).
    fn eval(&self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("evaluating {js} threw: {e}"))
    }
    /// Evaluates `js` (awaiting a promise, at most one command's bound);
    /// `Err` with the exception's message if it throws or rejects.
    fn try_eval(&self, js: &str) -> Result<Value, String> {
        self.eval_within(js, self.command_timeout())
    }
    /// Evaluates `js` every [`POLL`] until its value is truthy (an
    /// exception counts as not yet) and returns that value; panics after
    /// `timeout` with the last value or exception and the console.
    fn wait_for(&self, js: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.eval_within(js, left.max(Duration::from_millis(100))) {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = format!("it was {v}"),
                Err(e) => last = format!("it threw {e}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {timeout:?} for `{js}`{} on {}: {last}; console:\n{}",
                    self.engine_note(),
                    url_or_unknown(self),
                    self.console().join("\n")
                );
            }
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }
    /// The bound of the page's implicit waits (navigations, and looking
    /// for an element to read or click); [`crate::WAIT`] by default.
    fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms().load(Ordering::Relaxed))
    }
    /// Sets the bound of the page's implicit waits.
    fn set_wait(&self, bound: Duration) {
        let ms = bound.as_millis().try_into().unwrap_or(u64::MAX);
        self.wait_ms().store(ms, Ordering::Relaxed);
    }
    /// The `innerText` of the first element matching `selector`, waiting
    /// (at most [`PhonePage::wait`]) for one to exist.
    fn text(&self, selector: &str) -> String {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); return e ? {{ t: e.innerText }} : null; }})()",
            js_str(selector)
        );
        let v = self.wait_for(&js, self.wait());
        v["t"].as_str().unwrap_or_default().to_owned()
    }
    /// How many elements match `selector` now.
    fn count(&self, selector: &str) -> usize {
        let js = format!("document.querySelectorAll({}).length", js_str(selector));
        let n = self.eval(&js);
        n.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| panic!("{js} gave {n}"))
    }
    /// Clicks, as a person does, the one visible enabled button whose
    /// text is exactly `text`; waits (at most [`PhonePage::wait`]) for it
    /// to appear.
    fn click_button(&self, text: &str) {
        click_located(
            self,
            &format!("the button {text:?}"),
            &find_button(None, text),
        );
    }
    /// Like [`PhonePage::click_button`], among the buttons inside
    /// elements matching the CSS `selector`.
    fn click_button_in(&self, selector: &str, text: &str) {
        let find = find_button(Some(selector), text);
        click_located(self, &format!("the button {text:?}"), &find);
    }
    /// Makes the checkbox `selector` checked by clicking it (or its
    /// label, if the box itself is hidden), unless it is checked already.
    fn check(&self, selector: &str) {
        set_checked(self, selector, true);
    }
    /// Makes the checkbox `selector` unchecked by clicking it, unless it
    /// is unchecked already.
    fn uncheck(&self, selector: &str) {
        set_checked(self, selector, false);
    }
    /// Saves a PNG screenshot of the viewport to `path`.
    fn screenshot(&self, path: &Path) {
        let data = self.screenshot_base64();
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|e| panic!("the screenshot is not base64: {e}"));
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    /// Sizes the viewport as a phone's screen: `width`×`height` CSS
    /// pixels at device scale 2 (Firefox goes no narrower than 500).
    fn resize(&self, width: u32, height: u32);
    /// Console lines so far, as `level: text`.
    fn console(&self) -> Vec<String>;
    /// Console errors and uncaught exceptions so far.
    fn console_errors(&self) -> Vec<String>;
    /// The credentials the page's authenticator holds.
    fn credentials(&self, id: &AuthenticatorId) -> Vec<Credential> {
        Credential::all_from_json(&self.authenticator_command("GetCredentials", id, json!({})))
    }
    /// Whether the authenticator verifies the user from now on (a wrong
    /// fingerprint when `false`).
    fn set_user_verified(&self, id: &AuthenticatorId, verified: bool) {
        self.authenticator_command("SetUserVerified", id, json!({ "isUserVerified": verified }));
    }
}

/// What each engine does its own way, under the shared [`PhonePage`]
/// (sealed: only this crate's two engines are phone pages).
pub(crate) mod sealed {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use serde_json::Value;

    use crate::browser::AuthenticatorId;

    /// An engine's primitives.
    pub trait Driver {
        /// Evaluates `js` (a promise awaited) within `timeout`.
        fn eval_within(&self, js: &str, timeout: Duration) -> Result<Value, String>;
        /// The bound of one command to the engine.
        fn command_timeout(&self) -> Duration;
        /// Where the page's wait bound is kept, in milliseconds.
        fn wait_ms(&self) -> &AtomicU64;
        /// Said after a failed wait's script, e.g. " in Firefox 128.0"
        /// (or nothing).
        fn engine_note(&self) -> String;
        /// Clicks at `(x, y)` (CSS pixels in the visual viewport) with
        /// real mouse events; returns the point it clicked.
        fn click_at(&self, x: f64, y: f64) -> (f64, f64);
        /// A PNG screenshot of the viewport, in standard base64.
        fn screenshot_base64(&self) -> String;
        /// Sends the command `command` of WebDriver's virtual
        /// authenticators (as WebDriver names it: `GetCredentials`,
        /// `SetUserVerified`) for the authenticator `id`, with its other
        /// `params`; returns what it gives (`GetCredentials`: the list).
        fn authenticator_command(
            &self,
            command: &str,
            id: &AuthenticatorId,
            params: Value,
        ) -> Value;
    }
}

/// The page's URL, or `?` if it cannot be read.
pub(crate) fn url_or_unknown<P: PhonePage + ?Sized>(page: &P) -> String {
    page.try_eval("location.href")
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Waits for `find` (a JS expression giving the element, or a string
/// saying why there is none) to give a clickable element that stays in
/// place ([`steady_target`]), clicks its centre with real mouse events
/// and checks the click arrived.
pub(crate) fn click_located<P: PhonePage + ?Sized>(page: &P, what: &str, find: &str) {
    let wait = page.wait();
    let (x, y) = steady_target(|js| page.try_eval(js), find, wait).unwrap_or_else(|why| {
        panic!(
            "cannot click {what}{} on {} within {wait:?}: {why}; console:\n{}",
            page.engine_note(),
            url_or_unknown(page),
            page.console().join("\n")
        )
    });
    let (x, y) = page.click_at(x, y);
    // The click may have navigated away; only a page still showing the
    // element can say it missed.
    if let Ok(Value::Bool(false)) = page.try_eval("window.__vmuxHarnessClicked") {
        panic!(
            "clicked {what} at ({x:.0}, {y:.0}){} but it received no click; console:\n{}",
            page.engine_note(),
            page.console().join("\n")
        );
    }
}

/// Sets the checkbox `selector` to `on` by clicking it (or its label),
/// unless it is so already, and waits until it is.
fn set_checked<P: PhonePage + ?Sized>(page: &P, selector: &str, on: bool) {
    let state = format!("document.querySelector({}).checked", js_str(selector));
    page.wait_for(
        &format!("document.querySelector({}) !== null", js_str(selector)),
        page.wait(),
    );
    if page.eval(&state) == json!(on) {
        return;
    }
    let find = FIND_CHECKBOX.replace("__VMUX_SEL__", &js_str(selector));
    click_located(page, &format!("the checkbox {selector:?}"), &find);
    let want = if on { "" } else { "!" };
    page.wait_for(&format!("{want}{state}"), page.command_timeout());
}

/// A browser engine that makes phones: each with its own cookies,
/// storage and platform authenticator.
pub trait BrowserEngine: Sized {
    /// A phone's page in this engine.
    type Page: PhonePage;
    /// `chromium` or `firefox`, for messages and file names.
    const NAME: &'static str;
    /// `Err` with what to install when the engine cannot run here.
    fn check_installed() -> Result<(), String>;
    /// Starts the engine (or gets ready to), with its profiles under
    /// `dir`, trusting the CA in `ca_pem` and reaching `rp_host` on
    /// 127.0.0.1.
    fn start(dir: &Path, ca_pem: &Path, rp_host: &str) -> Self;
    /// A new phone: a page of its own with a virtual authenticator `a`.
    fn new_phone(&self, a: Authenticator) -> (Self::Page, AuthenticatorId);
}

impl BrowserEngine for Browser {
    type Page = browser::Page;
    const NAME: &'static str = "chromium";

    fn check_installed() -> Result<(), String> {
        browser::check_installed()
    }

    fn start(dir: &Path, ca_pem: &Path, rp_host: &str) -> Self {
        Browser::launch(dir, ca_pem, &[&format!("MAP {rp_host} 127.0.0.1")])
    }

    /// A tab in a browser context of its own (one Chromium for all).
    fn new_phone(&self, a: Authenticator) -> (browser::Page, AuthenticatorId) {
        let page = self.new_isolated_page();
        let auth = page.add_authenticator(a);
        (page, auth)
    }
}

/// Firefox as a [`BrowserEngine`]: a Firefox process (and profile) per phone,
/// since Firefox keeps virtual authenticators per session, not per tab.
pub struct Firefoxes {
    dir: PathBuf,
    ca_pem: PathBuf,
}

impl BrowserEngine for Firefoxes {
    type Page = Firefox;
    const NAME: &'static str = "firefox";

    fn check_installed() -> Result<(), String> {
        firefox::check_installed()
    }

    /// Nothing starts yet: each phone is its own Firefox. (Every name
    /// resolves to loopback in it, `rp_host` among them.)
    fn start(dir: &Path, ca_pem: &Path, _rp_host: &str) -> Self {
        Firefoxes {
            dir: dir.to_owned(),
            ca_pem: ca_pem.to_owned(),
        }
    }

    fn new_phone(&self, a: Authenticator) -> (Firefox, AuthenticatorId) {
        let ff = Firefox::launch(&self.dir, &self.ca_pem);
        let auth = ff.add_authenticator(a);
        (ff, auth)
    }
}
