//! A real headless Chromium for end-to-end tests of the phone page,
//! driven over the Chrome DevTools Protocol (CDP) with a synchronous API.
//!
//! The browser trusts the test CA for real (through an NSS database under
//! its own `HOME`; never `--ignore-certificate-errors`, which service
//! workers and push refuse), resolves the test's host names to loopback and
//! nothing else, and gets a virtual WebAuthn authenticator per page, so
//! that the page's real `navigator.credentials.create/get` run as on a
//! phone. One websocket to the browser carries every page's commands as a
//! flattened session (`Target.attachToTarget` with `flatten`); events are
//! read whenever a call waits, and routed to their page.
//!
//! Every wait is bounded; a failure panics with what the page showed (its
//! visible buttons, its console) and the tail of Chromium's own log.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::engine::sealed::Driver;
use crate::engine::{click_located, PhonePage};
use crate::launch;
use crate::WAIT;

/// Bound for one DevTools command (each navigation or `wait_for` has its
/// own bound).
pub const CDP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound for Chromium to start and write `DevToolsActivePort`.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `wait_for` and friends look again.
pub const POLL: Duration = Duration::from_millis(50);

/// How long an element must stay in place before it is clicked (about a
/// frame: a smooth scroll moves it in that time).
const STEADY: Duration = Duration::from_millis(20);

/// The phone viewport every page gets: CSS pixels and device scale factor.
pub const PHONE: (u32, u32, f64) = (412, 915, 2.0);

/// Events kept per page for waits (the oldest are dropped past this).
const EVENT_BUFFER: usize = 2000;

/// The names Chromium goes by on `PATH`.
const CHROMIUM_NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome-stable",
    "google-chrome",
];

/// The Chromium executable: `$VMUX_CHROMIUM`, else the first of the usual
/// names on `PATH`. Panics with the install command if there is none.
pub fn chromium_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VMUX_CHROMIUM") {
        return PathBuf::from(p);
    }
    find_on_path(&CHROMIUM_NAMES).unwrap_or_else(|| {
        panic!(
            "Chromium is not installed (looked for {CHROMIUM_NAMES:?} on PATH, and \
             $VMUX_CHROMIUM is unset): the phone page's browser tests need it; install it \
             with `apt-get install -y chromium libnss3-tools` (CI must install it too)"
        )
    })
}

/// `Err` with a sentence naming what to install when Chromium or
/// `certutil` (which [`Browser::launch`] needs) is missing: for callers
/// that would rather skip than panic.
pub fn check_installed() -> Result<(), String> {
    let chromium =
        std::env::var_os("VMUX_CHROMIUM").is_some() || find_on_path(&CHROMIUM_NAMES).is_some();
    launch::check_installed("Chromium", chromium, "chromium")
}

pub(crate) fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// What a virtual authenticator can do (all on by default: a phone's
/// platform authenticator with a screen lock).
#[derive(Clone, Copy, Debug)]
pub struct Authenticator {
    /// The user is verified (`isUserVerified`); the authenticator always
    /// supports user verification (`hasUserVerification`).
    pub uv: bool,
    /// It stores discoverable ("resident") credentials (`hasResidentKey`).
    pub resident: bool,
    /// User presence is simulated on every request
    /// (`automaticPresenceSimulation`); without it requests wait.
    pub auto_presence: bool,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            uv: true,
            resident: true,
            auto_presence: true,
        }
    }
}

/// A virtual authenticator of one page (CDP `AuthenticatorId`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatorId(pub String);

/// A credential held by a virtual authenticator (`WebAuthn.getCredentials`).
#[derive(Clone, Debug)]
pub struct Credential {
    /// The credential id (raw bytes; the page sees them as `rawId`).
    pub id: Vec<u8>,
    /// The relying party id it is scoped to.
    pub rp_id: Option<String>,
    /// The signature counter: the number of assertions (and the
    /// registration) it has signed.
    pub sign_count: u64,
    /// Whether it is discoverable (resident).
    pub resident: bool,
    /// The user handle (`user.id` at registration), for resident ones.
    pub user_handle: Option<Vec<u8>>,
    /// Everything CDP said about it (including the PKCS#8 private key).
    pub raw: Value,
}

impl Credential {
    /// The credential a virtual authenticator describes in `c` (both
    /// engines name its fields alike), its byte strings decoded by
    /// `b64`; `raw` is kept as the engine's own description.
    pub(crate) fn from_json(
        c: &Value,
        b64: impl Fn(&Value) -> Option<Vec<u8>>,
        raw: Value,
    ) -> Self {
        Credential {
            id: b64(&c["credentialId"]).unwrap_or_default(),
            rp_id: c["rpId"].as_str().map(str::to_owned),
            sign_count: c["signCount"].as_u64().unwrap_or(0),
            resident: c["isResidentCredential"].as_bool().unwrap_or(false),
            user_handle: b64(&c["userHandle"]).filter(|h| !h.is_empty()),
            raw,
        }
    }

    /// The credentials of `list` (a virtual authenticator's
    /// `GetCredentials` answer), their byte strings in base64 or base64url
    /// (CDP and Marionette each use one), padded or not; `raw` is each as
    /// the engine described it, with `privateKey` (PKCS#8) in standard
    /// base64 whatever the engine used.
    pub(crate) fn all_from_json(list: &Value) -> Vec<Self> {
        let b64 = |v: &Value| {
            v.as_str().map(|s| {
                let s = s.trim_end_matches('=');
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
                    .unwrap_or_else(|e| panic!("the authenticator gave bad base64 {s:?}: {e}"))
            })
        };
        list.as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let mut raw = c.clone();
                if let Some(key) = b64(&c["privateKey"]) {
                    raw["privateKey"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(key));
                }
                Credential::from_json(c, b64, raw)
            })
            .collect()
    }

    /// The id in base64url without padding, as web pages usually write it.
    pub fn id_base64url(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.id)
    }
}

/// A headless Chromium, killed (with all its processes) on drop.
pub struct Browser {
    child: Option<Child>,
    conn: Arc<Mutex<Conn>>,
    version: String,
    log: PathBuf,
}

impl Browser {
    /// Starts Chromium with its profile, `HOME` and log under
    /// `dir/browser-N` (N counting launches in this process), trusting
    /// the CA in `ca_pem` (PEM) for TLS servers, and resolving each name
    /// of `host_map` (e.g. `signer.vmux.test`) to 127.0.0.1 and every other
    /// name except `localhost` to nothing, so that it reaches only
    /// loopback. An entry with a space in it is a host resolver rule of
    /// its own (e.g. `MAP signer.vmux.test 127.0.0.2`). Waits (bounded)
    /// for its DevTools endpoint and connects.
    pub fn launch(dir: &Path, ca_pem: &Path, host_map: &[&str]) -> Browser {
        Browser::launch_trusting(dir, &[ca_pem], host_map)
    }

    /// Like [`Browser::launch`], trusting exactly the CA certificates in
    /// `roots` (PEM or DER files; none: a browser that trusts no TLS
    /// server at all, as NSS holds no built-in roots here).
    pub fn launch_trusting(dir: &Path, roots: &[&Path], host_map: &[&str]) -> Browser {
        let binary = chromium_binary();
        let own = launch::launch_dir(dir, "browser");
        let home = own.join("home");
        let nssdb = home.join(".pki/nssdb");
        let profile = own.join("profile");
        launch::create_dirs(&[
            &nssdb,
            &profile,
            &home.join(".config"),
            &home.join(".cache"),
        ]);
        launch::nss_trusting(&nssdb, roots);

        let mut rules: Vec<String> = host_map
            .iter()
            .map(|h| {
                if h.contains(' ') {
                    (*h).to_owned()
                } else {
                    format!("MAP {h} 127.0.0.1")
                }
            })
            .collect();
        rules.push("MAP * ~NOTFOUND".into());
        rules.push("EXCLUDE localhost".into());

        let log = own.join("chromium.log");
        let (log_file, log_err) = launch::log_files(&log);
        let mut cmd = Command::new(&binary);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--host-resolver-rules={}", rules.join(", ")))
        .arg("about:blank")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        // Its own process group, so that drop kills the renderers too.
        .process_group(0);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));

        // Chromium signals readiness only by writing this file (port, then
        // the browser's websocket path).
        let port_file = profile.join("DevToolsActivePort");
        let (port, ws_path) = launch::Starting {
            name: "Chromium",
            ready: "it was ready",
            child: &mut child,
            started,
            timeout: LAUNCH_TIMEOUT,
            kill: kill_group,
            log_tail: &|| log_tail(&log),
        }
        .wait_for(&port_file, |text| {
            let mut lines = text.lines();
            let port = lines.next()?.trim().parse::<u16>().ok()?;
            let path = lines.next()?;
            path.starts_with('/')
                .then(|| (port, path.trim().to_owned()))
        });

        let conn = match Conn::connect(port, &ws_path, log.clone()) {
            Ok(c) => c,
            Err(e) => {
                kill_group(&mut child);
                panic!(
                    "cannot connect to Chromium's DevTools on port {port}: {e}; its log:\n{}",
                    log_tail(&log)
                );
            }
        };
        let mut browser = Browser {
            child: Some(child),
            conn: Arc::new(Mutex::new(conn)),
            version: String::new(),
            log,
        };
        let version = browser.call("Browser.getVersion", json!({}));
        browser.version = version["product"].as_str().unwrap_or("?").to_owned();
        browser
    }

    /// Chromium's product and version (`Browser.getVersion`), e.g.
    /// `HeadlessChrome/156.0.8078.114`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The process id of Chromium's browser process, which leads the
    /// process group of all its processes.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Chromium's log file (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends a browser-level command and returns its result; panics on a
    /// protocol error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        lock(&self.conn)
            .call(None, method, params, CDP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// Opens a new tab on `about:blank` with the phone viewport, attached
    /// as a flattened session with its console collected. It shares
    /// cookies and storage with the other pages of [`Browser::new_page`].
    pub fn new_page(&self) -> Page {
        self.open_page(None)
    }

    /// Opens a new tab in a browser context of its own (as an incognito
    /// window: its own cookies, storage, service workers and permissions),
    /// like another phone.
    pub fn new_isolated_page(&self) -> Page {
        let r = self.call("Target.createBrowserContext", json!({}));
        let context = r["browserContextId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.createBrowserContext returned {r}"))
            .to_owned();
        self.open_page(Some(context))
    }

    fn open_page(&self, context: Option<String>) -> Page {
        let mut params = json!({ "url": "about:blank" });
        if let Some(c) = &context {
            params["browserContextId"] = json!(c);
        }
        let target = self.call("Target.createTarget", params);
        let target_id = target["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.createTarget returned no targetId: {target}"))
            .to_owned();
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        let session_id = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.attachToTarget returned no sessionId: {attached}"))
            .to_owned();
        lock(&self.conn)
            .sessions
            .entry(session_id.clone())
            .or_default();
        let mut page = Page {
            conn: self.conn.clone(),
            target_id,
            session_id,
            frame_id: String::new(),
            context,
            wait_ms: AtomicU64::new(WAIT.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        page.call("Page.enable", json!({}));
        page.call("Page.setLifecycleEventsEnabled", json!({ "enabled": true }));
        let tree = page.call("Page.getFrameTree", json!({}));
        page.frame_id = tree["frameTree"]["frame"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("Page.getFrameTree returned {tree}"))
            .to_owned();
        page.call("Runtime.enable", json!({}));
        page.call("Log.enable", json!({}));
        // Workers and out-of-process frames of the page report their
        // console too (their sessions are set up as they attach).
        page.call(
            "Target.setAutoAttach",
            json!({ "autoAttach": true, "waitForDebuggerOnStart": false, "flatten": true }),
        );
        page.set_viewport(PHONE.0, PHONE.1, PHONE.2, true);
        page
    }

    /// Grants `notifications` to `origin` (e.g.
    /// `https://signer.vmux.test:8443`) for the pages of
    /// [`Browser::new_page`] (an isolated page has [`Page::grant_notifications`]).
    pub fn grant_notifications(&self, origin: &str) {
        self.grant_permissions(origin, &["notifications"]);
    }

    /// Grants permissions (`Browser.grantPermissions` names such as
    /// `notifications`, `clipboardReadWrite`) to `origin`.
    pub fn grant_permissions(&self, origin: &str, permissions: &[&str]) {
        self.call(
            "Browser.grantPermissions",
            json!({ "origin": origin, "permissions": permissions }),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

/// Kills Chromium's process group (it leads it) and reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the process group this harness created for
        // the child (process_group(0) at spawn), which it has not reaped.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of Chromium's log, without its D-Bus complaints.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("dbus/") && !l.contains("unexpected operator"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    // A panic inside a call (a timeout) leaves the connection usable.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one page (session) reported.
#[derive(Default)]
struct SessionLog {
    /// Events not yet consumed by a wait: (method, params).
    events: VecDeque<(String, Value)>,
    /// Console errors, uncaught exceptions, CSP violations.
    errors: Vec<String>,
    /// Every console and log line, as `level: text`.
    console: Vec<String>,
}

/// The DevTools connection: one websocket, read only while a call waits.
struct Conn {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    sessions: HashMap<String, SessionLog>,
    /// Sessions of a page's workers and frames → the page's session.
    children: HashMap<String, String>,
    log: PathBuf,
}

impl Conn {
    fn connect(port: u16, path: &str, log: PathBuf) -> Result<Conn, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, CDP_TIMEOUT).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(CDP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(CDP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        // Screenshots of a tall page are large messages.
        let config = WebSocketConfig::default()
            .max_message_size(Some(512 << 20))
            .max_frame_size(Some(512 << 20));
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client::client_with_config(url.as_str(), stream, Some(config))
            .map_err(|e| format!("websocket handshake with {url}: {e}"))?;
        Ok(Conn {
            ws,
            next_id: 0,
            sessions: HashMap::new(),
            children: HashMap::new(),
            log,
        })
    }

    fn broken(&self, what: &str) -> ! {
        panic!(
            "the DevTools connection to Chromium broke ({what}); did it crash? Its log:\n{}",
            log_tail(&self.log)
        )
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        if let Err(e) = self.ws.send(Message::text(msg.to_string())) {
            self.broken(&format!("sending {method}: {e}"));
        }
        id
    }

    /// Sends a command and waits (at most `timeout`) for its answer:
    /// `Err` with CDP's message if it failed or none came in time.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let id = self.send(session, method, params);
        loop {
            let Some(msg) = self.read(deadline) else {
                return Err(format!(
                    "Chromium did not answer {method} within {timeout:?}"
                ));
            };
            if msg["id"].as_u64() == Some(id) {
                if let Some(err) = msg.get("error") {
                    let text = err["message"].as_str().unwrap_or("");
                    let data = err["data"].as_str().unwrap_or("");
                    return Err(format!("{text} {data}").trim().to_owned());
                }
                return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
            }
        }
    }

    /// Reads one message (dispatching events) before `deadline`; `None`
    /// when none came in time. Answers are returned, events are kept.
    fn read(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Err(e) = self.ws.get_mut().set_read_timeout(Some(left)) {
                self.broken(&format!("set_read_timeout: {e}"));
            }
            let msg = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(_)) => self.broken("Chromium closed the websocket"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => self.broken(&e.to_string()),
            };
            let msg: Value = match serde_json::from_str(msg.as_str()) {
                Ok(v) => v,
                Err(e) => self.broken(&format!("not JSON ({e}): {msg}")),
            };
            if msg.get("id").is_some() {
                return Some(msg);
            }
            self.event(msg);
            return Some(Value::Null);
        }
    }

    /// Files an event under its page, noting console errors.
    fn event(&mut self, msg: Value) {
        let method = msg["method"].as_str().unwrap_or("").to_owned();
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let Some(session) = msg["sessionId"].as_str() else {
            return;
        };
        if method == "Target.attachedToTarget" {
            // A worker or frame of this page: collect its console too.
            if let Some(child) = params["sessionId"].as_str() {
                let page = self
                    .children
                    .get(session)
                    .cloned()
                    .unwrap_or_else(|| session.to_owned());
                self.children.insert(child.to_owned(), page);
                let child = child.to_owned();
                self.send(Some(&child), "Runtime.enable", json!({}));
                self.send(Some(&child), "Log.enable", json!({}));
                self.send(Some(&child), "Runtime.runIfWaitingForDebugger", json!({}));
            }
        }
        if method == "Page.javascriptDialogOpening" {
            // alert/confirm/prompt would block the page (and every
            // evaluation) until someone answers: accept it, and count it
            // as an error, as a phone page has better ways to ask.
            self.send(
                Some(session),
                "Page.handleJavaScriptDialog",
                json!({ "accept": true }),
            );
        }
        let (owner, origin) = match self.children.get(session) {
            Some(page) => (page.clone(), format!(" (in {session})")),
            None => (session.to_owned(), String::new()),
        };
        let log = self.sessions.entry(owner).or_default();
        if let Some((level, text)) = console_line(&method, &params) {
            let line = format!("{level}: {text}{origin}");
            if level == "error" {
                log.errors.push(line.clone());
            }
            log.console.push(line);
        }
        log.events.push_back((method, params));
        if log.events.len() > EVENT_BUFFER {
            log.events.pop_front();
        }
    }

    /// Waits (until `deadline`) for the load event of the document that
    /// `loader` (a navigation's loader id) brings; `false` if none came.
    fn wait_load(&mut self, session: &str, loader: &str, deadline: Instant) -> bool {
        self.wait_event(session, "Page.lifecycleEvent", deadline, |p| {
            p["name"] == "load" && p["loaderId"].as_str() == Some(loader)
        })
        .is_some()
    }

    /// Waits (until `deadline`) for an event of `session` named `method`
    /// whose params satisfy `pred`, consuming it and those before it.
    fn wait_event(
        &mut self,
        session: &str,
        method: &str,
        deadline: Instant,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        loop {
            let log = self.sessions.entry(session.to_owned()).or_default();
            while let Some((m, p)) = log.events.pop_front() {
                if m == method && pred(&p) {
                    return Some(p);
                }
            }
            self.read(deadline)?;
        }
    }
}

/// A console or log line of interest: (level, text).
fn console_line(method: &str, p: &Value) -> Option<(String, String)> {
    match method {
        "Runtime.consoleAPICalled" => {
            let kind = p["type"].as_str().unwrap_or("log");
            let level = match kind {
                "error" | "assert" => "error",
                "warning" => "warning",
                _ => "info",
            };
            let args: Vec<String> = p["args"]
                .as_array()
                .map(|a| a.iter().map(remote_object_text).collect())
                .unwrap_or_default();
            Some((level.into(), format!("console.{kind}: {}", args.join(" "))))
        }
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            let what = d["exception"]["description"]
                .as_str()
                .or_else(|| d["text"].as_str())
                .unwrap_or("exception");
            let url = d["url"].as_str().unwrap_or("");
            let line = d["lineNumber"].as_u64().map(|l| l + 1).unwrap_or(0);
            Some((
                "error".into(),
                format!("uncaught exception at {url}:{line}: {what}"),
            ))
        }
        "Page.javascriptDialogOpening" => Some((
            "error".into(),
            format!(
                "a {} dialog (accepted by the harness): {}",
                p["type"].as_str().unwrap_or("?"),
                p["message"].as_str().unwrap_or("")
            ),
        )),
        "Log.entryAdded" => {
            let e = &p["entry"];
            let level = e["level"].as_str().unwrap_or("info");
            let source = e["source"].as_str().unwrap_or("other");
            let text = e["text"].as_str().unwrap_or("");
            let url = e["url"]
                .as_str()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default();
            Some((level.into(), format!("[{source}] {text}{url}")))
        }
        _ => None,
    }
}

fn remote_object_text(o: &Value) -> String {
    match o.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => o["description"]
            .as_str()
            .or_else(|| o["unserializableValue"].as_str())
            .or_else(|| o["type"].as_str())
            .unwrap_or("?")
            .to_owned(),
    }
}

/// JavaScript truthiness of a value returned by `Runtime.evaluate`.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A JSON string literal for JavaScript.
pub(crate) fn js_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Prepares a person's click on the element `__VMUX_LOCATE__` evaluates
/// to (or a description of why there is none): scrolls it into the middle
/// of the screen (the visual viewport, which is all a phone shows even
/// when an overflowing page widens the layout viewport), checks that
/// nothing covers its centre, notes when the click arrives, and returns
/// `{ok, x, y}` for `Input.dispatchMouseEvent` or `{ok: false, why}`.
pub(crate) const CLICK_PREPARE: &str = r#"((found) => {
  const describe = (e) => e ? e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    (e.className && typeof e.className === 'string' && e.className.trim() ? '.' + e.className.trim().split(/\s+/).join('.') : '') : 'nothing';
  if (!(found instanceof Element)) return { ok: false, why: found };
  const vv = window.visualViewport;
  const centre = () => { const r = found.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; };
  const onScreen = ([x, y]) => x >= vv.offsetLeft && x < vv.offsetLeft + vv.width && y >= vv.offsetTop && y < vv.offsetTop + vv.height;
  found.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
  let [x, y] = centre();
  if (!onScreen([x, y])) {
    window.scrollBy({ left: x - vv.offsetLeft - vv.width / 2, top: y - vv.offsetTop - vv.height / 2, behavior: 'instant' });
    [x, y] = centre();
  }
  if (!onScreen([x, y])) {
    const d = document.documentElement;
    return { ok: false, why: describe(found) + ' cannot be scrolled onto the screen (' + Math.round(vv.width) + 'x' + Math.round(vv.height) +
      '): the page is ' + d.scrollWidth + 'x' + d.scrollHeight + ' and its layout viewport ' + innerWidth + 'x' + innerHeight +
      (d.scrollWidth > vv.width ? ', wider than the screen: something overflows' : '') };
  }
  const hit = document.elementFromPoint(x, y);
  if (!hit || (hit !== found && !found.contains(hit))) {
    return { ok: false, why: describe(found) + ' is covered at its centre by ' + describe(hit) };
  }
  window.__vmuxHarnessClicked = false;
  found.addEventListener('click', () => { window.__vmuxHarnessClicked = true; }, { once: true, capture: true });
  // CDP's mouse events take CSS pixels relative to the visual viewport.
  return { ok: true, x: x - vv.offsetLeft, y: y - vv.offsetTop };
})(__VMUX_LOCATE__)"#;

/// Where to click the element the JS expression `find` gives (see
/// [`CLICK_PREPARE`]), once it is clickable and where it was a look
/// before (a page still scrolling, a smooth `scrollIntoView`, or laying
/// out would take the click somewhere else), looking at most `wait`
/// through `eval`; else why there is none. Both engines click this way.
pub(crate) fn steady_target(
    eval: impl Fn(&str) -> Result<Value, String>,
    find: &str,
    wait: Duration,
) -> Result<(f64, f64), String> {
    let prepare = CLICK_PREPARE.replace("__VMUX_LOCATE__", find);
    let deadline = Instant::now() + wait;
    let mut last: Option<(f64, f64)> = None;
    loop {
        let r = eval(&prepare);
        let here = match &r {
            Ok(v) if v["ok"] == json!(true) => v["x"].as_f64().zip(v["y"].as_f64()),
            _ => None,
        };
        if let (Some((x, y)), Some((lx, ly))) = (here, last) {
            if (lx - x).abs() < 0.5 && (ly - y).abs() < 0.5 {
                return Ok((x, y));
            }
        }
        last = here;
        if Instant::now() >= deadline {
            return Err(match r {
                Ok(v) => v["why"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or(v.to_string()),
                Err(e) => format!("looking threw {e}"),
            });
        }
        // A second look one frame later; else the usual poll.
        std::thread::sleep(if here.is_some() { STEADY } else { POLL });
    }
}

/// [`FIND_BUTTON`] for the one visible, enabled button (a `button`, an
/// input button or a `[role=button]`) saying `text`, inside elements
/// matching `scope` when given: what both engines' clicks look for.
pub(crate) fn find_button(scope: Option<&str>, text: &str) -> String {
    FIND_BUTTON
        .replace(
            "__VMUX_KINDS__",
            &js_str("button, input[type=button], input[type=submit], [role=button]"),
        )
        .replace("__VMUX_NOUN__", &js_str("button"))
        .replace(
            "__VMUX_SCOPE__",
            &scope.map(js_str).unwrap_or_else(|| "null".into()),
        )
        .replace("__VMUX_WANT__", &js_str(text))
}

/// Finds the one visible, enabled button labelled exactly
/// `__VMUX_WANT__` within the elements matching `__VMUX_SCOPE__` (or the
/// document), or says which buttons are visible.
pub(crate) const FIND_BUTTON: &str = r#"(() => {
  const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const roots = __VMUX_SCOPE__ === null ? [document] : Array.from(document.querySelectorAll(__VMUX_SCOPE__));
  if (roots.length === 0) return 'nothing matches ' + JSON.stringify(__VMUX_SCOPE__);
  const seen = [], hits = [];
  for (const root of roots) {
    for (const b of root.querySelectorAll(__VMUX_KINDS__)) {
      const r = b.getBoundingClientRect(), st = getComputedStyle(b);
      if (r.width === 0 || r.height === 0 || st.visibility !== 'visible' || b.closest('[hidden], [inert]')) continue;
      const label = norm(b.tagName === 'INPUT' ? b.value : b.innerText);
      const disabled = b.disabled || b.getAttribute('aria-disabled') === 'true';
      seen.push(JSON.stringify(label) + (disabled ? ' (disabled)' : ''));
      if (label === __VMUX_WANT__ && !disabled && !hits.includes(b)) hits.push(b);
    }
  }
  if (hits.length === 1) return hits[0];
  const where = __VMUX_SCOPE__ === null ? '' : ' within ' + JSON.stringify(__VMUX_SCOPE__);
  if (hits.length > 1) return hits.length + ' visible ' + __VMUX_NOUN__ + 's' + where + ' say ' + JSON.stringify(__VMUX_WANT__) + ' (use click_button_in with a narrower scope)';
  return 'no visible enabled ' + __VMUX_NOUN__ + where + ' says ' + JSON.stringify(__VMUX_WANT__) + '; visible ' + __VMUX_NOUN__ + 's: [' + seen.join(', ') + ']';
})()"#;

/// Finds the checkbox `__VMUX_SEL__`, or the visible label to click for it.
pub(crate) const FIND_CHECKBOX: &str = r#"(() => {
  const box = document.querySelector(__VMUX_SEL__);
  if (!box) return 'nothing matches ' + JSON.stringify(__VMUX_SEL__);
  if (box.disabled) return JSON.stringify(__VMUX_SEL__) + ' is disabled';
  const shown = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility === 'visible'; };
  if (shown(box)) return box;
  const label = Array.from(box.labels || []).find(shown);
  return label || JSON.stringify(__VMUX_SEL__) + ' is not visible and has no visible label';
})()"#;

/// A tab, attached as a flattened DevTools session. Closing it is
/// optional: the browser's drop ends everything.
pub struct Page {
    conn: Arc<Mutex<Conn>>,
    target_id: String,
    session_id: String,
    /// Its main frame.
    frame_id: String,
    /// Its own browser context, if isolated.
    context: Option<String>,
    /// The bound of its waits for an element or a load, in milliseconds.
    wait_ms: AtomicU64,
}

impl Page {
    /// Sends a command to this page's session; panics on a protocol error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// Sends a command to this page's session; `Err` with CDP's message
    /// on a protocol error.
    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        lock(&self.conn).call(Some(&self.session_id), method, params, CDP_TIMEOUT)
    }

    /// The page's DevTools target id.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// Delivers a push message (`data`, the decrypted payload) to the
    /// service worker registered for `origin` (its scope `origin/`), as
    /// the browser does when its push service hands one over: the
    /// worker's own `push` handler runs.
    pub fn deliver_push(&self, origin: &str, data: &str) {
        let deadline = Instant::now() + self.wait();
        let mut conn = lock(&self.conn);
        if let Err(e) = conn.call(
            Some(&self.session_id),
            "ServiceWorker.enable",
            json!({}),
            CDP_TIMEOUT,
        ) {
            panic!("ServiceWorker.enable failed: {e}");
        }
        let scope = format!("{origin}/");
        let mut registration = None;
        while registration.is_none() {
            let update = conn
                .wait_event(
                    &self.session_id,
                    "ServiceWorker.workerRegistrationUpdated",
                    deadline,
                    |_| true,
                )
                .unwrap_or_else(|| panic!("no service worker registered for {scope}"));
            registration = update["registrations"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["scopeURL"] == json!(scope) && r["isDeleted"] != json!(true))
                .and_then(|r| r["registrationId"].as_str().map(str::to_owned));
        }
        let registration = registration.unwrap_or_default();
        if let Err(e) = conn.call(
            Some(&self.session_id),
            "ServiceWorker.deliverPushMessage",
            json!({ "origin": origin, "registrationId": registration, "data": data }),
            CDP_TIMEOUT,
        ) {
            panic!("ServiceWorker.deliverPushMessage failed: {e}");
        }
        let _ = conn.call(
            Some(&self.session_id),
            "ServiceWorker.disable",
            json!({}),
            CDP_TIMEOUT,
        );
    }

    /// Closes the tab (and its browser context, if isolated).
    pub fn close(self) {
        let mut conn = lock(&self.conn);
        conn.call(
            None,
            "Target.closeTarget",
            json!({ "targetId": self.target_id }),
            CDP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("Target.closeTarget failed: {e}"));
        if let Some(c) = &self.context {
            conn.call(
                None,
                "Target.disposeBrowserContext",
                json!({ "browserContextId": c }),
                CDP_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("Target.disposeBrowserContext failed: {e}"));
        }
    }

    /// Grants `notifications` to `origin` in this page's browser context.
    pub fn grant_notifications(&self, origin: &str) {
        self.grant_permissions(origin, &["notifications"]);
    }

    /// Grants permissions (see [`Browser::grant_permissions`]) to `origin`
    /// in this page's browser context.
    pub fn grant_permissions(&self, origin: &str, permissions: &[&str]) {
        let mut params = json!({ "origin": origin, "permissions": permissions });
        if let Some(c) = &self.context {
            params["browserContextId"] = json!(c);
        }
        lock(&self.conn)
            .call(None, "Browser.grantPermissions", params, CDP_TIMEOUT)
            .unwrap_or_else(|e| panic!("Browser.grantPermissions failed: {e}"));
    }

    /// Sets the viewport (`Emulation.setDeviceMetricsOverride`): CSS
    /// pixels, device scale factor, mobile or not. Pages start as a phone
    /// ([`PHONE`], mobile).
    pub fn set_viewport(&self, width: u32, height: u32, scale: f64, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile }),
        );
    }

    /// Clicks, as a person taps it, the one visible link (`a[href]`)
    /// whose text is exactly `text`; waits (at most [`PhonePage::wait`]) for it.
    pub fn click_link(&self, text: &str) {
        let find = FIND_BUTTON
            .replace("__VMUX_KINDS__", &js_str("a[href]"))
            .replace("__VMUX_NOUN__", &js_str("link"))
            .replace("__VMUX_SCOPE__", "null")
            .replace("__VMUX_WANT__", &js_str(text));
        click_located(self, &format!("the link {text:?}"), &find);
    }

    /// What `pick` takes from this page's log, once what the page
    /// reported before has been read.
    fn logged(&self, pick: impl Fn(&SessionLog) -> Vec<String>) -> Vec<String> {
        self.settle();
        lock(&self.conn)
            .sessions
            .get(&self.session_id)
            .map(pick)
            .unwrap_or_default()
    }

    /// A round trip to the page, so that what it reported before has
    /// been read.
    fn settle(&self) {
        let _ = lock(&self.conn).call(
            Some(&self.session_id),
            "Runtime.evaluate",
            json!({ "expression": "0" }),
            CDP_TIMEOUT,
        );
    }

    /// Adds a virtual authenticator (CTAP2, internal transport, like a
    /// phone's) to this page; `navigator.credentials` then uses it.
    pub fn add_authenticator(&self, a: Authenticator) -> AuthenticatorId {
        self.call("WebAuthn.enable", json!({ "enableUI": false }));
        let r = self.call(
            "WebAuthn.addVirtualAuthenticator",
            json!({ "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": a.resident,
                "hasUserVerification": true,
                "isUserVerified": a.uv,
                "automaticPresenceSimulation": a.auto_presence,
            } }),
        );
        AuthenticatorId(
            r["authenticatorId"]
                .as_str()
                .unwrap_or_else(|| panic!("addVirtualAuthenticator returned {r}"))
                .to_owned(),
        )
    }

    /// Whether user presence is simulated from now on (without it,
    /// requests wait for a touch that never comes).
    pub fn set_auto_presence(&self, id: &AuthenticatorId, on: bool) {
        self.call(
            "WebAuthn.setAutomaticPresenceSimulation",
            json!({ "authenticatorId": id.0, "enabled": on }),
        );
    }

    /// Removes the authenticator (its credentials go with it).
    pub fn remove_authenticator(&self, id: &AuthenticatorId) {
        self.call(
            "WebAuthn.removeVirtualAuthenticator",
            json!({ "authenticatorId": id.0 }),
        );
    }
}

impl PhonePage for Page {
    /// Navigates to `url` and waits for its load event; `Err` with
    /// Chromium's reason (e.g. `net::ERR_CERT_AUTHORITY_INVALID`) if the
    /// navigation fails.
    fn try_goto(&self, url: &str) -> Result<(), String> {
        let wait = self.wait();
        let mut conn = lock(&self.conn);
        let deadline = Instant::now() + wait;
        let r = conn
            .call(
                Some(&self.session_id),
                "Page.navigate",
                json!({ "url": url }),
                wait,
            )
            .map_err(|e| format!("navigating to {url}: {e}"))?;
        if let Some(err) = r["errorText"].as_str() {
            return Err(format!("navigating to {url} failed: {err}"));
        }
        let Some(loader) = r["loaderId"].as_str() else {
            return Ok(()); // same-document navigation: no load event
        };
        if conn.wait_load(&self.session_id, loader, deadline) {
            Ok(())
        } else {
            Err(format!("{url} did not finish loading within {wait:?}"))
        }
    }
    /// Reloads and waits (at most [`PhonePage::wait`]) for the load event.
    fn reload(&self) {
        let wait = self.wait();
        let mut conn = lock(&self.conn);
        let deadline = Instant::now() + wait;
        // Navigations seen so far are not this one.
        conn.sessions
            .entry(self.session_id.clone())
            .or_default()
            .events
            .retain(|(m, _)| m != "Page.frameNavigated");
        if let Err(e) = conn.call(Some(&self.session_id), "Page.reload", json!({}), wait) {
            panic!("Page.reload failed: {e}");
        }
        let frame = &self.frame_id;
        let navigated = conn
            .wait_event(&self.session_id, "Page.frameNavigated", deadline, |p| {
                p["frame"]["id"].as_str() == Some(frame)
            })
            .unwrap_or_else(|| panic!("the page did not reload within {wait:?}"));
        let loader = navigated["frame"]["loaderId"].as_str().unwrap_or_default();
        if !conn.wait_load(&self.session_id, loader, deadline) {
            panic!("the page did not finish reloading within {wait:?}");
        }
    }
    /// Console errors, uncaught exceptions and CSP violations (and other
    /// error-level log entries such as failed loads, and any JavaScript
    /// dialog, which the harness accepts so that it cannot block the page)
    /// of this page and its workers so far, one line each.
    fn console_errors(&self) -> Vec<String> {
        self.logged(|s| s.errors.clone())
    }
    /// Every console message and log entry so far, as `level: text`.
    fn console(&self) -> Vec<String> {
        self.logged(|s| s.console.clone())
    }
    fn resize(&self, width: u32, height: u32) {
        self.set_viewport(width, height, 2.0, true);
    }
}

impl Driver for Page {
    fn eval_within(&self, js: &str, timeout: Duration) -> Result<Value, String> {
        let r = lock(&self.conn).call(
            Some(&self.session_id),
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            timeout,
        )?;
        if let Some(d) = r.get("exceptionDetails") {
            let what = d["exception"]["description"]
                .as_str()
                .or_else(|| d["exception"]["value"].as_str())
                .or_else(|| d["text"].as_str())
                .unwrap_or("exception");
            return Err(what.to_owned());
        }
        let o = &r["result"];
        Ok(match o.get("value") {
            Some(v) => v.clone(),
            None => o.get("unserializableValue").cloned().unwrap_or(Value::Null),
        })
    }

    fn command_timeout(&self) -> Duration {
        CDP_TIMEOUT
    }

    fn wait_ms(&self) -> &AtomicU64 {
        &self.wait_ms
    }

    fn engine_note(&self) -> String {
        String::new()
    }

    fn click_at(&self, x: f64, y: f64) -> (f64, f64) {
        for (kind, buttons) in [("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)] {
            let mut ev = json!({ "type": kind, "x": x, "y": y, "buttons": buttons });
            if kind != "mouseMoved" {
                ev["button"] = json!("left");
                ev["clickCount"] = json!(1);
            }
            self.call("Input.dispatchMouseEvent", ev);
        }
        (x, y)
    }

    /// CDP's `WebAuthn` domain names WebDriver's commands in camelCase
    /// and gives `getCredentials`' list as `credentials`.
    fn authenticator_command(&self, command: &str, id: &AuthenticatorId, params: Value) -> Value {
        let mut params = params;
        params["authenticatorId"] = json!(id.0);
        let mut name = command.chars();
        let method = match name.next() {
            Some(first) => format!("WebAuthn.{}{}", first.to_ascii_lowercase(), name.as_str()),
            None => panic!("no virtual authenticator command named"),
        };
        let r = self.call(&method, params);
        match r.get("credentials") {
            Some(list) => list.clone(),
            None => r,
        }
    }

    fn screenshot_base64(&self) -> String {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": false }),
        );
        r["data"]
            .as_str()
            .unwrap_or_else(|| panic!("Page.captureScreenshot returned no data"))
            .to_owned()
    }
}
