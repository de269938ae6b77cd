//! One test, two browser engines: what a test of the phone page does
//! with a phone ([`PhonePage`]) and how it gets one ([`BrowserEngine`]), for
//! Chromium over the DevTools protocol ([`crate::browser`]) and Firefox
//! over Marionette ([`crate::firefox`]). A test written against these
//! traits runs unchanged in both; what only one engine can do (CDP's
//! cookies, push delivery, permissions) stays on its own type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::browser::{self, Authenticator, AuthenticatorId, Browser, Credential};
use crate::firefox::{self, Firefox};

/// A phone's page, as a person uses it: open a link, read, tap; and the
/// virtual authenticator behind it.
pub trait PhonePage {
    /// Navigates and waits for the load event; panics if it fails.
    fn goto(&self, url: &str);
    /// Navigates and waits for the load event; `Err` with the engine's
    /// reason (e.g. a certificate error) if it fails.
    fn try_goto(&self, url: &str) -> Result<(), String>;
    /// Reloads and waits for the load event.
    fn reload(&self);
    /// The page's URL.
    fn url(&self) -> String;
    /// Evaluates a JavaScript expression (a promise is awaited); panics
    /// if it throws. It sees the page's window and DOM; Firefox runs it
    /// in a sandbox on the window, where a classic script's top-level
    /// `let` and `const` are not visible (Chromium sees them).
    fn eval(&self, js: &str) -> Value;
    /// Evaluates a JavaScript expression; `Err` if it throws or rejects.
    fn try_eval(&self, js: &str) -> Result<Value, String>;
    /// Waits (at most `timeout`) for `js` to be truthy; returns its value.
    fn wait_for(&self, js: &str, timeout: Duration) -> Value;
    /// The bound of the page's implicit waits.
    fn wait(&self) -> Duration;
    /// Sets the bound of the page's implicit waits.
    fn set_wait(&self, bound: Duration);
    /// The `innerText` of the first element matching `selector`.
    fn text(&self, selector: &str) -> String;
    /// How many elements match `selector` now.
    fn count(&self, selector: &str) -> usize;
    /// Clicks the one visible enabled button saying exactly `text`.
    fn click_button(&self, text: &str);
    /// Clicks such a button inside the elements matching `selector`.
    fn click_button_in(&self, selector: &str, text: &str);
    /// Checks the checkbox `selector` by clicking it.
    fn check(&self, selector: &str);
    /// Unchecks the checkbox `selector` by clicking it.
    fn uncheck(&self, selector: &str);
    /// Saves a PNG screenshot of the viewport.
    fn screenshot(&self, path: &Path);
    /// Sizes the viewport as a phone's screen: `width`×`height` CSS
    /// pixels at device scale 2 (Firefox goes no narrower than 500).
    fn resize(&self, width: u32, height: u32);
    /// Console lines so far, as `level: text`.
    fn console(&self) -> Vec<String>;
    /// Console errors and uncaught exceptions so far.
    fn console_errors(&self) -> Vec<String>;
    /// The credentials the page's authenticator holds.
    fn credentials(&self, id: &AuthenticatorId) -> Vec<Credential>;
    /// Whether the authenticator verifies the user from now on.
    fn set_user_verified(&self, id: &AuthenticatorId, verified: bool);
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

macro_rules! delegate_phone_page {
    ($ty:ty) => {
        impl PhonePage for $ty {
            fn goto(&self, url: &str) {
                <$ty>::goto(self, url)
            }
            fn try_goto(&self, url: &str) -> Result<(), String> {
                <$ty>::try_goto(self, url)
            }
            fn reload(&self) {
                <$ty>::reload(self)
            }
            fn url(&self) -> String {
                <$ty>::url(self)
            }
            fn eval(&self, js: &str) -> Value {
                <$ty>::eval(self, js)
            }
            fn try_eval(&self, js: &str) -> Result<Value, String> {
                <$ty>::try_eval(self, js)
            }
            fn wait_for(&self, js: &str, timeout: Duration) -> Value {
                <$ty>::wait_for(self, js, timeout)
            }
            fn wait(&self) -> Duration {
                <$ty>::wait(self)
            }
            fn set_wait(&self, bound: Duration) {
                <$ty>::set_wait(self, bound)
            }
            fn text(&self, selector: &str) -> String {
                <$ty>::text(self, selector)
            }
            fn count(&self, selector: &str) -> usize {
                <$ty>::count(self, selector)
            }
            fn click_button(&self, text: &str) {
                <$ty>::click_button(self, text)
            }
            fn click_button_in(&self, selector: &str, text: &str) {
                <$ty>::click_button_in(self, selector, text)
            }
            fn check(&self, selector: &str) {
                <$ty>::check(self, selector)
            }
            fn uncheck(&self, selector: &str) {
                <$ty>::uncheck(self, selector)
            }
            fn screenshot(&self, path: &Path) {
                <$ty>::screenshot(self, path)
            }
            fn resize(&self, width: u32, height: u32) {
                resize(self, width, height)
            }
            fn console(&self) -> Vec<String> {
                <$ty>::console(self)
            }
            fn console_errors(&self) -> Vec<String> {
                <$ty>::console_errors(self)
            }
            fn credentials(&self, id: &AuthenticatorId) -> Vec<Credential> {
                <$ty>::credentials(self, id)
            }
            fn set_user_verified(&self, id: &AuthenticatorId, verified: bool) {
                <$ty>::set_user_verified(self, id, verified)
            }
        }
    };
}

delegate_phone_page!(browser::Page);
delegate_phone_page!(Firefox);

fn resize<P: Resize>(page: &P, width: u32, height: u32) {
    page.resize_to(width, height);
}

/// How each engine sizes its viewport.
trait Resize {
    fn resize_to(&self, width: u32, height: u32);
}

impl Resize for browser::Page {
    fn resize_to(&self, width: u32, height: u32) {
        self.set_viewport(width, height, 2.0, true);
    }
}

impl Resize for Firefox {
    fn resize_to(&self, width: u32, height: u32) {
        self.set_viewport(width, height);
    }
}
