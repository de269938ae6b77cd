//! A real headless Firefox (Debian's `firefox-esr`) for end-to-end tests
//! of the phone page, driven over its built-in Marionette protocol with a
//! synchronous API: the second browser engine next to [`crate::browser`]'s
//! Chromium.
//!
//! No geckodriver: Marionette is JSON over TCP (`LEN:JSON` packets,
//! commands `[0, id, name, params]`, answers `[1, id, error, result]`),
//! and the few commands a test needs fit in this file. One Firefox is one
//! phone: its own profile (so its own cookies and storage), its own
//! virtual WebAuthn authenticator (Firefox keeps them per session, not
//! per tab) and one window. Its profile trusts the test CA through its NSS
//! database (never `acceptInsecureCerts`, which service workers refuse),
//! and `network.dns.forceResolve` sends every name to 127.0.0.1, so it
//! reaches only loopback. Readiness is awaited (the `MarionetteActivePort`
//! file, then the session), every wait is bounded, and drop quits it
//! cleanly (then kills its process group, so nothing outlives the test).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::{Authenticator, AuthenticatorId, PHONE, POLL};
use crate::engine::sealed::Driver;
use crate::engine::PhonePage;
use crate::launch;
use crate::WAIT;

/// Bound for one Marionette command (each navigation or `wait_for` has
/// its own bound).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound for Firefox to start and open its Marionette port and session.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound for a clean quit before the process group is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Collects the console service's messages from content (not the
/// browser's own) in the browser window's `__vmuxConsole`: uncaught
/// exceptions, unhandled rejections, CSP violations and failed loads.
const LISTEN_FOR_ERRORS: &str = r#"
const seen = [];
window.__vmuxConsole = seen;
Services.console.registerListener({ observe(m) {
  try {
    if (!(m instanceof Ci.nsIScriptError) || m.isFromChromeContext) return;
    if (seen.length >= 2000) seen.shift();
    seen.push({
      level: (m.flags & Ci.nsIScriptError.warningFlag) ? 'warning' : 'error',
      category: m.category,
      text: m.errorMessage,
      source: m.sourceName,
      line: m.lineNumber,
    });
  } catch (e) { /* a message that cannot be read is no reason to stop */ }
} });
return true;
"#;

/// The names Firefox goes by on `PATH`.
const FIREFOX_NAMES: [&str; 2] = ["firefox-esr", "firefox"];

/// Preferences of every profile: the relying party's name (and every
/// other) on loopback, the virtual authenticator reachable (without the
/// two `webauth` prefs `create()` fails at once and `get()` hangs), the
/// page's console on stdout (the only console Marionette gives), and no
/// background traffic.
const USER_JS: &str = r#"user_pref("marionette.port", 0);
user_pref("network.dns.forceResolve", "127.0.0.1");
user_pref("network.dns.disableIPv6", true);
user_pref("network.proxy.type", 0);
user_pref("security.webauth.webauthn_enable_softtoken", true);
user_pref("security.webauth.webauthn_enable_usbtoken", false);
user_pref("devtools.console.stdout.content", true);
user_pref("devtools.console.stdout.chrome", false);
user_pref("browser.dom.window.dump.enabled", false);
user_pref("layout.css.devPixelsPerPx", "2.0");
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.page", 0);
user_pref("browser.startup.homepage", "about:blank");
user_pref("browser.newtabpage.enabled", false);
user_pref("app.update.enabled", false);
user_pref("app.update.auto", false);
user_pref("app.normandy.enabled", false);
user_pref("messaging-system.rsexperimentloader.enabled", false);
user_pref("services.settings.server", "data:,");
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.provider.mozilla.updateURL", "");
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("browser.ping-centre.telemetry", false);
user_pref("network.prefetch-next", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("media.gmp-manager.updateEnabled", false);
"#;

/// The Firefox executable: `$VMUX_FIREFOX`, else `firefox-esr` or
/// `firefox` on `PATH`.
pub fn firefox_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMUX_FIREFOX") {
        return Some(PathBuf::from(p));
    }
    crate::browser::find_on_path(&FIREFOX_NAMES)
}

/// `Err` with a sentence naming what to install when Firefox or
/// `certutil` is missing: for tests that skip rather than fail then.
pub fn check_installed() -> Result<(), String> {
    let firefox = firefox_binary().is_some_and(|p| p.is_file());
    launch::check_installed("Firefox", firefox, "firefox-esr")
}

/// A headless Firefox with one window (a phone's page) and a Marionette
/// session; quit (then its process group killed) on drop.
pub struct Firefox {
    child: Option<Child>,
    conn: Mutex<Marionette>,
    log: PathBuf,
    version: String,
    /// The bound of its waits for an element or a load, in milliseconds.
    wait_ms: AtomicU64,
    /// When the process was started.
    started: Instant,
}

impl Firefox {
    /// Starts Firefox with its profile, `HOME` and log under
    /// `dir/firefox-N` (N counting launches in this process), trusting
    /// the CA in `ca_pem` (PEM) for TLS servers and resolving every name
    /// to 127.0.0.1; waits (bounded) for Marionette, opens a session with
    /// virtual authenticators allowed and sizes the window as a phone
    /// ([`PHONE`] at device scale 2, as narrow as Firefox goes: 500 CSS
    /// pixels rather than 412).
    pub fn launch(dir: &Path, ca_pem: &Path) -> Firefox {
        let binary = firefox_binary().unwrap_or_else(|| {
            panic!(
                "Firefox is not installed (looked for {FIREFOX_NAMES:?} on PATH, and \
                 $VMUX_FIREFOX is unset); install it with `apt-get install -y firefox-esr`"
            )
        });
        let own = launch::launch_dir(dir, "firefox");
        let home = own.join("home");
        let profile = own.join("profile");
        launch::create_dirs(&[&home, &profile]);
        let user_js = profile.join("user.js");
        std::fs::write(&user_js, USER_JS)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", user_js.display()));
        launch::nss_trusting(&profile, &[ca_pem]);

        let log = own.join("firefox.log");
        let (log_file, log_err) = launch::log_files(&log);
        let started = Instant::now();
        let mut child = Command::new(&binary)
            // System access: the harness listens to the console service
            // (uncaught exceptions, CSP violations) from the browser's
            // side; Marionette is on loopback and the profile throwaway.
            .args([
                "--marionette",
                "--headless",
                "-remote-allow-system-access",
                "--no-remote",
                "--profile",
            ])
            .arg(&profile)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .env("MOZ_HEADLESS", "1")
            // The headless screen: room for a phone's viewport at scale 2
            // (a window never grows past its screen).
            .env("MOZ_HEADLESS_WIDTH", "1600")
            .env("MOZ_HEADLESS_HEIGHT", "3200")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            // Its own process group, so that drop kills its content
            // processes too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));

        // Marionette writes its port here once it listens (port 0 in
        // user.js: no port to guess or race for).
        let port_file = profile.join("MarionetteActivePort");
        let port = launch::Starting {
            name: "Firefox",
            ready: "Marionette listened",
            child: &mut child,
            started,
            timeout: LAUNCH_TIMEOUT,
            kill: kill_group,
            log_tail: &|| log_tail(&log),
        }
        .wait_for(&port_file, |text| text.trim().parse::<u16>().ok());
        let conn = match Marionette::connect(port, log.clone()) {
            Ok(c) => c,
            Err(e) => {
                kill_group(&mut child);
                panic!(
                    "cannot connect to Marionette on port {port}: {e}; Firefox's log:\n{}",
                    log_tail(&log)
                );
            }
        };
        let mut ff = Firefox {
            child: Some(child),
            conn: Mutex::new(conn),
            log,
            version: String::new(),
            wait_ms: AtomicU64::new(WAIT.as_millis().try_into().unwrap_or(u64::MAX)),
            started,
        };
        let session = ff
            .lock()
            .call(
                "WebDriver:NewSession",
                json!({ "webauthn:virtualAuthenticators": true, "pageLoadStrategy": "normal" }),
                LAUNCH_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("Marionette refused a session: {e}"));
        ff.version = session["capabilities"]["browserVersion"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        if let Err(e) = ff.chrome_eval(LISTEN_FOR_ERRORS) {
            panic!("cannot listen to Firefox's console service: {e}");
        }
        ff.set_viewport(PHONE.0, PHONE.1);
        ff
    }

    /// Runs `script` (a function body) in the browser's own (chrome)
    /// context and returns its value, then goes back to the page.
    fn chrome_eval(&self, script: &str) -> Result<Value, String> {
        let mut conn = self.lock();
        conn.call(
            "Marionette:SetContext",
            json!({ "value": "chrome" }),
            COMMAND_TIMEOUT,
        )?;
        let r = conn.call(
            "WebDriver:ExecuteScript",
            json!({ "script": script, "args": [] }),
            COMMAND_TIMEOUT,
        );
        conn.call(
            "Marionette:SetContext",
            json!({ "value": "content" }),
            COMMAND_TIMEOUT,
        )?;
        Ok(r?.get("value").cloned().unwrap_or(Value::Null))
    }

    /// `Firefox 153.8.0`, as its session reported it.
    pub fn version(&self) -> String {
        format!("Firefox {}", self.version)
    }

    /// The process id of Firefox's main process, which leads the process
    /// group of all of Firefox's processes.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Time since the process was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, Marionette> {
        // A panic inside a call (a timeout) leaves the connection usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a Marionette command; panics on an error.
    pub fn call(&self, name: &str, params: Value) -> Value {
        self.try_call(name, params)
            .unwrap_or_else(|e| panic!("{name} failed: {e}"))
    }

    /// Sends a Marionette command; `Err` with its error and message.
    pub fn try_call(&self, name: &str, params: Value) -> Result<Value, String> {
        self.lock().call(name, params, COMMAND_TIMEOUT)
    }

    /// Sizes the window so that the page's viewport is `width`×`height`
    /// CSS pixels, or as close as Firefox allows: its window is never
    /// narrower than 500 CSS pixels (whatever the device scale, 2 in the
    /// profile), so a phone's 412 becomes 500. Returns the viewport's
    /// size.
    pub fn set_viewport(&self, width: u32, height: u32) -> (u32, u32) {
        let (w, h) = (f64::from(width), f64::from(height));
        // Window sizes are CSS pixels too; the chrome takes some of it.
        let mut rect = self.call(
            "WebDriver:SetWindowRect",
            json!({ "width": width, "height": height }),
        );
        let mut inner = (w, h);
        for _ in 0..3 {
            let v = self.eval("[innerWidth, innerHeight]");
            inner = (v[0].as_f64().unwrap_or(w), v[1].as_f64().unwrap_or(h));
            let wide_enough = (inner.0 - w).abs() < 1.0 || inner.0 > w;
            if wide_enough && (inner.1 - h).abs() < 1.0 {
                break;
            }
            let ow = rect["width"].as_f64().unwrap_or(w);
            let oh = rect["height"].as_f64().unwrap_or(h);
            rect = self.call(
                "WebDriver:SetWindowRect",
                json!({ "width": (ow + (w - inner.0).max(0.0)).round(), "height": (oh + h - inner.1).round() }),
            );
        }
        // Whole CSS pixels, as innerWidth gives them.
        (inner.0 as u32, inner.1 as u32)
    }

    /// Adds a virtual authenticator (CTAP2, internal transport, like a
    /// phone's); the page's `navigator.credentials` then uses it.
    /// Firefox has no simulated presence to switch off: the user always
    /// consents.
    pub fn add_authenticator(&self, a: Authenticator) -> AuthenticatorId {
        let r = self.call(
            "WebAuthn:AddVirtualAuthenticator",
            json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": a.resident,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": a.uv,
            }),
        );
        AuthenticatorId(
            r["value"]
                .as_str()
                .unwrap_or_else(|| panic!("WebAuthn:AddVirtualAuthenticator returned {r}"))
                .to_owned(),
        )
    }
}

impl PhonePage for Firefox {
    /// Navigates to `url` and waits for its load event; `Err` with
    /// Firefox's reason if the navigation fails.
    fn try_goto(&self, url: &str) -> Result<(), String> {
        let wait = self.wait();
        let mut conn = self.lock();
        conn.set_timeout("pageLoad", wait)?;
        conn.call("WebDriver:Navigate", json!({ "url": url }), wait + POLL)
            .map(|_| ())
            .map_err(|e| format!("navigating to {url} failed: {e}"))
    }
    /// Reloads and waits (at most [`PhonePage::wait`]) for the load event.
    fn reload(&self) {
        let wait = self.wait();
        if let Err(e) = self
            .lock()
            .call("WebDriver:Refresh", json!({}), wait + POLL)
        {
            panic!("reloading failed: {e}");
        }
    }
    /// The page's console errors and uncaught exceptions so far.
    fn console_errors(&self) -> Vec<String> {
        self.console()
            .into_iter()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }
    /// The page's (and its workers') console messages so far, one line
    /// each as `level: text`: the console API's calls (Firefox prints
    /// them on its stdout with `devtools.console.stdout.content`), then
    /// the console service's errors and warnings from content (uncaught
    /// exceptions, unhandled rejections, CSP violations, failed loads).
    fn console(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut lines = Vec::new();
        for l in text.lines() {
            for (prefix, level) in [
                ("error", "error"),
                ("assert", "error"),
                ("warn", "warning"),
                ("log", "info"),
                ("info", "info"),
                ("debug", "info"),
            ] {
                if let Some(rest) = l.strip_prefix(&format!("console.{prefix}: ")) {
                    lines.push(format!("{level}: console.{prefix}: {rest}"));
                }
            }
        }
        match self.chrome_eval("return window.__vmuxConsole || [];") {
            Ok(Value::Array(seen)) => {
                for m in seen {
                    lines.push(format!(
                        "{}: [{}] {} ({}:{})",
                        m["level"].as_str().unwrap_or("error"),
                        m["category"].as_str().unwrap_or(""),
                        m["text"].as_str().unwrap_or(""),
                        m["source"].as_str().unwrap_or(""),
                        m["line"].as_u64().unwrap_or(0),
                    ));
                }
            }
            Ok(other) => lines.push(format!("error: the console listener gave {other}")),
            Err(e) => lines.push(format!("error: the console listener cannot be read: {e}")),
        }
        lines
    }
    fn resize(&self, width: u32, height: u32) {
        self.set_viewport(width, height);
    }
}

impl Driver for Firefox {
    fn eval_within(&self, js: &str, timeout: Duration) -> Result<Value, String> {
        let mut conn = self.lock();
        conn.set_timeout("script", timeout)?;
        // A function body returning the value of the last statement, as
        // DevTools' Runtime.evaluate does (a promise is awaited): `eval`
        // in Marionette's sandbox, which the page's CSP does not govern.
        let r = conn.call(
            "WebDriver:ExecuteScript",
            json!({ "script": "return eval(arguments[0]);", "args": [js] }),
            timeout + POLL,
        )?;
        Ok(r.get("value").cloned().unwrap_or(Value::Null))
    }

    fn command_timeout(&self) -> Duration {
        COMMAND_TIMEOUT
    }

    fn wait_ms(&self) -> &AtomicU64 {
        &self.wait_ms
    }

    fn engine_note(&self) -> String {
        format!(" in {}", self.version())
    }

    /// WebDriver pointer actions (real mouse events, a real user
    /// activation) at whole CSS pixels relative to the viewport.
    fn click_at(&self, x: f64, y: f64) -> (f64, f64) {
        let (px, py) = (x.floor(), y.floor());
        self.call(
            "WebDriver:PerformActions",
            json!({ "actions": [{
                "type": "pointer",
                "id": "vmux-finger",
                "parameters": { "pointerType": "mouse" },
                "actions": [
                    { "type": "pointerMove", "duration": 0, "x": px, "y": py, "origin": "viewport" },
                    { "type": "pointerDown", "button": 0 },
                    { "type": "pointerUp", "button": 0 },
                ],
            }] }),
        );
        let _ = self.try_call("WebDriver:ReleaseActions", json!({}));
        (px, py)
    }

    /// Marionette names the commands as WebDriver does and gives each
    /// result as `value`.
    fn authenticator_command(&self, command: &str, id: &AuthenticatorId, params: Value) -> Value {
        let mut params = params;
        params["authenticatorId"] = json!(id.0);
        self.call(&format!("WebAuthn:{command}"), params)["value"].take()
    }

    fn screenshot_base64(&self) -> String {
        let r = self.call(
            "WebDriver:TakeScreenshot",
            json!({ "full": false, "hash": false, "scroll": false }),
        );
        r["value"]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver:TakeScreenshot returned {r}"))
            .to_owned()
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // A clean quit first (Firefox flushes its profile and ends its
        // content processes), bounded; then the whole group, whatever is
        // left of it.
        let quit = self
            .lock()
            .call(
                "Marionette:Quit",
                json!({ "flags": ["eForceQuit"] }),
                QUIT_TIMEOUT,
            )
            .is_ok();
        if quit {
            let deadline = Instant::now() + QUIT_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_group(&mut child);
    }
}

/// Kills Firefox's process group (it leads it), reaps it, and waits
/// (bounded) until no process of the group is left: a content process
/// dies a moment after its SIGKILL, and one orphaned to this process (a
/// subreaper) is reaped here.
fn kill_group(child: &mut Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // SAFETY: kill(2) on the process group this harness created for the
    // child (process_group(0) at spawn); the leader is not yet reaped
    // (child.wait below), so the group id is not reused meanwhile.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
    let deadline = Instant::now() + QUIT_TIMEOUT;
    loop {
        // SAFETY: waitpid(2) with WNOHANG on the group: reaps only
        // children of this process in that group, never blocks.
        unsafe { while libc::waitpid(-pid, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
        // SAFETY: signal 0 only asks whether any process of the group
        // exists. The group id could only be reused by a new group
        // leader with that pid, which cannot start while members live.
        let alive = unsafe { libc::kill(-pid, 0) } == 0;
        if !alive || Instant::now() >= deadline {
            return;
        }
        // SAFETY: as above; a member that was stopped before it saw
        // the first SIGKILL gets another.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last lines of Firefox's log.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Bound on one Marionette packet (a screenshot is the largest).
const MAX_PACKET: usize = 256 << 20;

/// A Marionette connection: one command at a time.
struct Marionette {
    stream: TcpStream,
    next_id: u64,
    log: PathBuf,
    /// The session's `script` and `pageLoad` timeouts as last set (ms).
    timeouts: [(&'static str, u64); 2],
}

impl Marionette {
    fn connect(port: u16, log: PathBuf) -> Result<Marionette, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream =
            TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut m = Marionette {
            stream,
            next_id: 0,
            log,
            timeouts: [("script", 0), ("pageLoad", 0)],
        };
        // The server speaks first: {"applicationType":"gecko","marionetteProtocol":3}.
        let hello = m
            .read(Instant::now() + COMMAND_TIMEOUT)
            .ok_or("no greeting")?;
        if hello["marionetteProtocol"].as_u64() != Some(3) {
            return Err(format!("unexpected greeting {hello}"));
        }
        Ok(m)
    }

    /// Sets the session's `script` or `pageLoad` timeout to `bound`
    /// rounded up to a whole second (so that a wait's shrinking bound
    /// does not cost a command per look); the harness's own deadline on
    /// the answer is exact.
    fn set_timeout(&mut self, kind: &'static str, bound: Duration) -> Result<(), String> {
        let ms = u64::try_from(bound.as_millis())
            .unwrap_or(u64::MAX / 2)
            .div_ceil(1000)
            .max(1)
            * 1000;
        let Some(slot) = self.timeouts.iter().position(|(k, _)| *k == kind) else {
            return Err(format!("no timeout named {kind}"));
        };
        if self.timeouts[slot].1 != ms {
            self.call(
                "WebDriver:SetTimeouts",
                json!({ kind: ms }),
                COMMAND_TIMEOUT,
            )?;
            self.timeouts[slot].1 = ms;
        }
        Ok(())
    }

    fn broken(&self, what: &str) -> ! {
        panic!(
            "the Marionette connection to Firefox broke ({what}); did it crash? Its log:\n{}",
            log_tail(&self.log)
        )
    }

    /// Sends a command and waits (at most `timeout`) for its answer:
    /// `Err` with Marionette's error if it failed or none came in time.
    fn call(&mut self, name: &str, params: Value, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        self.next_id += 1;
        let id = self.next_id;
        let body = json!([0, id, name, params]).to_string();
        let packet = format!("{}:{body}", body.len());
        if let Err(e) = self.stream.write_all(packet.as_bytes()) {
            self.broken(&format!("sending {name}: {e}"));
        }
        loop {
            let Some(msg) = self.read(deadline) else {
                return Err(format!("Firefox did not answer {name} within {timeout:?}"));
            };
            // An answer to an earlier command that timed out is dropped.
            if msg[0] != json!(1) || msg[1].as_u64() != Some(id) {
                continue;
            }
            if !msg[2].is_null() {
                let e = &msg[2];
                return Err(format!(
                    "{}: {}",
                    e["error"].as_str().unwrap_or("error"),
                    e["message"].as_str().unwrap_or("")
                ));
            }
            return Ok(msg[3].clone());
        }
    }

    /// Reads one `LEN:JSON` packet before `deadline`; `None` if none came.
    fn read(&mut self, deadline: Instant) -> Option<Value> {
        let mut len = Vec::new();
        loop {
            let b = self.read_exact(1, deadline, len.is_empty())?;
            match b[0] {
                b':' => break,
                d @ b'0'..=b'9' if len.len() < 10 => len.push(d),
                other => self.broken(&format!("a packet length held {other:#04x}")),
            }
        }
        let n: usize = std::str::from_utf8(&len)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n <= MAX_PACKET)
            .unwrap_or_else(|| self.broken("a packet length out of bounds"));
        let body = self.read_exact(n, deadline, false)?;
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => self.broken(&format!("a packet that is not JSON: {e}")),
        }
    }

    /// Reads `n` bytes by `deadline`. Only between packets (`idle`) may
    /// the deadline pass; within one, the rest is waited for.
    fn read_exact(&mut self, n: usize, deadline: Instant, idle: bool) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && idle && got == 0 {
                return None;
            }
            let bound = if idle && got == 0 {
                left
            } else {
                COMMAND_TIMEOUT
            };
            if let Err(e) = self
                .stream
                .set_read_timeout(Some(bound.max(Duration::from_millis(1))))
            {
                self.broken(&format!("set_read_timeout: {e}"));
            }
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => self.broken("Firefox closed the connection"),
                Ok(k) => got += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if !(idle && got == 0) {
                        self.broken("a packet stopped halfway");
                    }
                }
                Err(e) => self.broken(&e.to_string()),
            }
        }
        Some(buf)
    }
}
