//! The phone in the headless browser standing in for the phone: one
//! Chromium page with a virtual platform authenticator (user
//! verification on, presence simulated, as a phone whose owner always
//! looks at it), enrolled through a `vmux signer phone add` link the way
//! a person does it (tap **Create passkey**), then tapping **Approve** on
//! every card the signer shows, each approval a real passkey assertion
//! made by the page. `vmux-phone-standin` (for `./scripts/demo --phone`)
//! and the benchmark run it.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::{Authenticator, AuthenticatorId, Browser, Page};
use crate::engine::PhonePage;
use crate::WAIT;

/// How long one look for a card lasts before [`Standin::serve`] checks
/// whether it should stop.
const LOOK: Duration = Duration::from_millis(250);

/// Bound for the page to settle a tapped card (the passkey assertion and
/// the signer's answer).
const SETTLE: Duration = Duration::from_secs(30);

/// Bound for finding a card's button while serving (it may have left).
const TAP_WAIT: Duration = Duration::from_secs(5);

/// Pause after a failed sign-in before the next (the signer limits
/// failed sign-ins).
const SIGNIN_RETRY: Duration = Duration::from_secs(10);

/// A card on the phone page, as the stand-in read it before tapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The request id (`data-id`).
    pub id: String,
    /// `pair`, `sign` or `certificate` (`data-kind`).
    pub kind: String,
    /// Its heading.
    pub title: String,
    /// Its summary line (may be empty).
    pub summary: String,
}

/// What [`Standin::serve`] did, one event per card (or sign-in).
#[derive(Clone, Debug)]
pub enum Event {
    /// Approve was tapped and the card left the page.
    Approved(Card),
    /// Approve was tapped (or could not be) and the page said why not.
    Failed(Card, String),
    /// The page asked to sign in again (e.g. the signer restarted) and
    /// the stand-in did, with its passkey.
    SignedIn,
    /// Signing in again failed (e.g. the phone was removed); the
    /// stand-in tries again later.
    SignInFailed(String),
}

impl fmt::Display for Event {
    /// One line: `approved KIND: TITLE — SUMMARY`, `not approved KIND:
    /// TITLE — SUMMARY: WHY`, `signed in again` or `sign-in failed: WHY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let card = |f: &mut fmt::Formatter<'_>, c: &Card| {
            write!(f, "{}: {}", c.kind, c.title)?;
            if !c.summary.is_empty() {
                write!(f, " — {}", c.summary)?;
            }
            Ok(())
        };
        match self {
            Event::Approved(c) => {
                f.write_str("approved ")?;
                card(f, c)
            }
            Event::Failed(c, why) => {
                f.write_str("not approved ")?;
                card(f, c)?;
                write!(f, ": {why}")
            }
            Event::SignedIn => f.write_str("signed in again"),
            Event::SignInFailed(why) => write!(f, "sign-in failed: {why}"),
        }
    }
}

/// A phone: Chromium, one page in the phone viewport, one authenticator.
/// Dropping it kills Chromium.
pub struct Standin {
    // The page before the browser: fields drop in order.
    page: Page,
    auth: AuthenticatorId,
    browser: Browser,
}

impl Standin {
    /// Starts Chromium (profile under `dir`, trusting `ca_pem`, with
    /// `host_map` as in [`Browser::launch`]) and opens a page with a
    /// phone's platform authenticator.
    pub fn launch(dir: &Path, ca_pem: &Path, host_map: &[&str]) -> Standin {
        let browser = Browser::launch(dir, ca_pem, host_map);
        let page = browser.new_page();
        let auth = page.add_authenticator(Authenticator {
            uv: true,
            resident: true,
            auto_presence: true,
        });
        Standin {
            page,
            auth,
            browser,
        }
    }

    /// The browser (its version, its process).
    pub fn browser(&self) -> &Browser {
        &self.browser
    }

    /// The page (for what a caller wants to install or read in it).
    pub fn page(&self) -> &Page {
        &self.page
    }

    /// The virtual authenticator holding the phone's passkey.
    pub fn authenticator(&self) -> &AuthenticatorId {
        &self.auth
    }

    /// Enrols as a person does: opens the enrolment `link`, taps Create
    /// passkey, waits (at most [`WAIT`] each) for "This phone was added"
    /// and for the signed-in page.
    pub fn enrol(&self, link: &str) {
        enrol(&self.page, link);
        self.wait_signed_in();
    }

    fn wait_signed_in(&self) {
        self.page.wait_for(
            "!document.getElementById('view-main').hidden && [...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Sign out' && b.offsetParent !== null)",
            WAIT,
        );
    }

    /// Saves what the phone shows now (PNG) to `path`.
    pub fn screenshot(&self, path: &Path) {
        self.page.screenshot(path);
    }

    /// Taps Approve on `card` and waits (bounded) until the page settles
    /// it: `Ok` once the card left, `Err` with what the card says if the
    /// approval failed.
    pub fn approve(&self, card: &Card) -> Result<(), String> {
        let scope = format!("article.card[data-id={}]", js_str(&card.id));
        self.page.click_button_in(&scope, "Approve");
        let js = SETTLED
            .replace("__WHEN__", WHEN)
            .replace("__ID__", &js_str(&card.id))
            .replace("__MS__", &SETTLE.as_millis().to_string());
        match self.page.try_eval(&js) {
            Ok(v) if v["ok"] == Value::Bool(true) => Ok(()),
            Ok(v) => Err(v["error"].as_str().unwrap_or("no answer").to_owned()),
            Err(e) => Err(format!("the page failed: {e}")),
        }
    }

    /// Taps Approve on every card that shows (and signs in again when the
    /// page asks) until `stop` is set (checked at least four times a
    /// second), reporting each to `report`. With `screenshot`, the page
    /// is saved there just before each tap (so the file shows the last
    /// card as it was approved).
    pub fn serve(
        &self,
        stop: &AtomicBool,
        screenshot: Option<&Path>,
        mut report: impl FnMut(&Event),
    ) {
        self.page.set_wait(TAP_WAIT);
        let mut failed: Vec<String> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let js = NEXT
                .replace("__WHEN__", WHEN)
                .replace("__SKIP__", &Value::from(failed.clone()).to_string())
                .replace("__MS__", &LOOK.as_millis().to_string());
            let next = match self.page.try_eval(&js) {
                Ok(v) => v,
                // A reload or navigation destroyed the context: look again.
                Err(_) => {
                    std::thread::sleep(LOOK);
                    continue;
                }
            };
            if next["signin"] == Value::Bool(true) {
                match caught(|| {
                    self.page.click_button("Sign in");
                    self.wait_signed_in();
                }) {
                    Ok(()) => report(&Event::SignedIn),
                    Err(why) => {
                        report(&Event::SignInFailed(why));
                        let until = Instant::now() + SIGNIN_RETRY;
                        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                            std::thread::sleep(LOOK);
                        }
                    }
                }
                continue;
            }
            let Some(id) = next["id"].as_str() else {
                continue;
            };
            let text = |k: &str| next[k].as_str().unwrap_or_default().to_owned();
            let card = Card {
                id: id.to_owned(),
                kind: text("kind"),
                title: text("title"),
                summary: text("summary"),
            };
            if let Some(path) = screenshot {
                let _ = caught(|| self.screenshot(path));
            }
            match caught(|| self.approve(&card)).and_then(|r| r) {
                Ok(()) => report(&Event::Approved(card)),
                Err(why) => {
                    failed.push(card.id.clone());
                    report(&Event::Failed(card, why));
                }
            }
        }
    }
}

/// Runs `f`, turning a panic of the harness (a bounded wait that ran
/// out) into `Err` with its message.
fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the harness panicked".into())
    })
}

/// A JSON string literal for JavaScript.
fn js_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// `(check, watch, ms, late) => Promise`: resolves with `check()`'s value
/// as soon as it gives one, looking again at each change of the page's
/// DOM that `watch` (`MutationObserver` options on the body) covers (no
/// polling), or after `ms` ms with `late()`. `NEXT` and `SETTLED` wait
/// with it (`__WHEN__`).
const WHEN: &str = r#"((check, watch, ms, late) => new Promise((resolve) => {
  const now = check();
  if (now) return resolve(now);
  let timer = 0;
  const mo = new MutationObserver(() => { const v = check(); if (v) done(v); });
  const done = (v) => { clearTimeout(timer); mo.disconnect(); resolve(v); };
  mo.observe(document.body, watch);
  timer = setTimeout(() => done(late()), ms);
}))"#;

/// Resolves, as soon as there is one ([`WHEN`]) or after `__MS__` ms
/// with `null`: `{signin: true}` when the page shows its Sign in button,
/// else the first card not in `__SKIP__` whose Approve button is enabled.
const NEXT: &str = r#"((skip, ms) => {
  const pick = () => {
    const view = document.getElementById('view-signin');
    const signin = document.getElementById('signin-button');
    if (view && !view.hidden && signin && !signin.disabled) return { signin: true };
    for (const c of document.querySelectorAll('#cards article.card')) {
      if (skip.includes(c.dataset.id) || c.classList.contains('busy') || c.classList.contains('expired')) continue;
      const b = c.querySelector('button.approve');
      if (!b || b.disabled) continue;
      const text = (e) => (e ? e.textContent.replace(/\s+/g, ' ').trim() : '');
      // The summary line: a paragraph, or the one inside a folded <details>.
      const s = c.querySelector('.summary');
      return { id: c.dataset.id, kind: c.dataset.kind || '', title: text(c.querySelector('h2')), summary: text(s && (s.querySelector('p') || s)) };
    }
    return null;
  };
  return __WHEN__(pick, { childList: true, subtree: true, attributes: true, attributeFilter: ['disabled', 'class', 'hidden'] }, ms, pick);
})(__SKIP__, __MS__)"#;

/// Resolves once the tapped card `__ID__` is settled ([`WHEN`]): `{ok:
/// true}` when it left the page, `{ok: false, error}` when it shows an
/// error and is no longer busy, or after `__MS__` ms.
const SETTLED: &str = r#"((id, ms) => {
  const check = () => {
    const c = [...document.querySelectorAll('#cards article.card')].find((e) => e.dataset.id === id);
    if (!c) return { ok: true };
    const e = c.querySelector('.card-error');
    if (!c.classList.contains('busy') && e && e.textContent.trim()) return { ok: false, error: e.textContent.trim() };
    return null;
  };
  const late = () => check() || { ok: false, error: 'the page did not settle it within ' + ms + ' ms' };
  return __WHEN__(check, { childList: true, subtree: true, attributes: true, characterData: true }, ms, late);
})(__ID__, __MS__)"#;

/// Marks in the page (`window.vmuxSawEnrolled`) whether "This phone was
/// added" has been on screen since: the page hides it again as soon as a
/// request arrives, which `vmux setup` sends right after the enrolment,
/// sooner than a test's polling may look.
const WATCH_ENROLLED: &str = r#"(() => {
  const shown = () => { const e = document.getElementById('enrolled'); return !!e && !e.hidden && e.textContent.includes('This phone was added'); };
  window.vmuxSawEnrolled = shown();
  const mo = new MutationObserver(() => { if (shown()) { window.vmuxSawEnrolled = true; mo.disconnect(); } });
  mo.observe(document.body, { childList: true, subtree: true, attributes: true, characterData: true });
  return true;
})()"#;

/// Enrols the phone whose page is `page` as a person does: opens the
/// enrolment `link`, taps Create passkey and waits (at most [`WAIT`])
/// until "This phone was added" was shown.
pub fn enrol<P: PhonePage>(page: &P, link: &str) {
    page.goto(link);
    page.eval(WATCH_ENROLLED);
    page.click_button("Create passkey");
    page.wait_for("window.vmuxSawEnrolled === true", WAIT);
}
