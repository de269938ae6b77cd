//! The trust step: a small plain-HTTP listener that hands the signer's own
//! CA ([`PageCa`]) to a phone, before the phone can reach the page over
//! HTTPS.
//!
//! `vmux signer phone add` asks for a trust link, `http://IP:PORT/TOKEN`
//! (an IP address, so that it works before any name resolves). For a
//! pending link the listener serves exactly three things:
//!
//! - `GET /TOKEN`: an HTML page with the CA's SHA-256 fingerprint, an
//!   **Install on iPhone** and an **Install on Android** link and each
//!   platform's steps;
//! - `GET /TOKEN/vmux-ca.mobileconfig`: an Apple configuration profile
//!   with the CA as a `com.apple.security.root` payload;
//! - `GET /TOKEN/vmux-ca.crt`: the CA as DER (`application/x-x509-ca-cert`).
//!
//! Everything else is a 404: no API, no page data, no redirect. A link
//! lives 10 minutes, and is spent as soon as one of the two files has
//! been fetched (the page itself may be reloaded until then). The
//! listener is bound when a link is issued and none is pending, and
//! closed as soon as no link is pending (spent or expired). It takes at
//! most [`MAX_CONNECTIONS`] connections, each for at most
//! [`CONNECTION_TIME`], its request head within [`HEAD_TIME`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info};
use vmux_home::sync::lock;

use crate::page_ca::PageCa;

/// How long a trust link is valid.
pub const TRUST_LIFETIME: Duration = Duration::from_secs(600);
/// Connections the trust listener takes at once.
pub const MAX_CONNECTIONS: usize = 8;
/// How long one connection may last.
pub const CONNECTION_TIME: Duration = Duration::from_secs(20);
/// How long a request's head may take to arrive.
pub const HEAD_TIME: Duration = Duration::from_secs(5);
/// Links pending at once (older ones are dropped first).
const MAX_PENDING: usize = 16;

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A trust link, as `vmux signer phone add` prints it.
#[derive(Debug, Clone)]
pub struct TrustLink {
    /// `http://IP:PORT/TOKEN`.
    pub url: String,
    /// The CA's SHA-256 fingerprint, to compare with the page's.
    pub fingerprint: String,
}

/// Why no trust link could be made.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA is not made yet (the signer never unlocked).
    #[error("the phone page's CA is not there yet (the signer is locked)")]
    NoCa,
    /// No address a phone could reach.
    #[error("cannot tell this machine's address on the local network (no default route with an IPv4 address); serve the page on a given address, --web-listen IP:PORT")]
    NoAddress,
    /// The listener could not be bound.
    #[error("cannot open the trust listener on {0}: {1}")]
    Bind(IpAddr, std::io::Error),
}

#[derive(Default)]
struct State {
    /// Token -> expiry.
    pending: HashMap<String, Instant>,
    /// The listener's port while one runs.
    running: Option<(IpAddr, u16)>,
}

/// The pending trust links and their listener.
pub(crate) struct TrustDesk {
    ca: Arc<PageCa>,
    /// The page's listening address (maybe unspecified: 0.0.0.0 or ::).
    host: IpAddr,
    state: Mutex<State>,
    changed: Notify,
    /// How long a link lives ([`TRUST_LIFETIME`]).
    lifetime: Duration,
}

impl TrustDesk {
    pub(crate) fn new(ca: Arc<PageCa>, host: IpAddr) -> Arc<TrustDesk> {
        Arc::new(TrustDesk {
            ca,
            host,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            lifetime: TRUST_LIFETIME,
        })
    }

    pub(crate) fn ca(&self) -> &Arc<PageCa> {
        &self.ca
    }

    /// A new trust link; binds the listener if none runs. Must be called
    /// inside the Tokio runtime.
    pub(crate) fn issue(self: &Arc<Self>) -> Result<TrustLink, TrustError> {
        let fingerprint = self.ca.fingerprint().ok_or(TrustError::NoCa)?;
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.pending.retain(|_, t| *t > now);
        while state.pending.len() >= MAX_PENDING {
            let oldest = state
                .pending
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => state.pending.remove(&k),
                None => break,
            };
        }
        let (ip, port) = match state.running {
            Some(r) => r,
            None => {
                let ip = if self.host.is_unspecified() {
                    lan_address().ok_or(TrustError::NoAddress)?
                } else {
                    self.host
                };
                let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| TrustError::Bind(ip, e))?;
                let port = listener
                    .local_addr()
                    .map_err(|e| TrustError::Bind(ip, e))?
                    .port();
                state.running = Some((ip, port));
                tokio::spawn(self.clone().run(listener));
                info!(address = %SocketAddr::new(ip, port), "trust listener open");
                (ip, port)
            }
        };
        let token = B64URL.encode(rand::random::<[u8; 32]>());
        state.pending.insert(token.clone(), now + self.lifetime);
        drop(state);
        self.changed.notify_waiters();
        Ok(TrustLink {
            url: format!("http://{}/{token}", SocketAddr::new(ip, port)),
            fingerprint,
        })
    }

    /// Whether `token` is pending (and not expired).
    fn pending(&self, token: &str) -> bool {
        lock(&self.state)
            .pending
            .get(token)
            .is_some_and(|t| *t > Instant::now())
    }

    /// Spends `token`: true if it was pending.
    fn spend(&self, token: &str) -> bool {
        let was = lock(&self.state)
            .pending
            .remove(token)
            .is_some_and(|t| t > Instant::now());
        self.changed.notify_waiters();
        was
    }

    /// Accepts connections until no link is pending, then closes.
    async fn run(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let changed = self.changed.notified();
            let next_expiry = {
                let mut state = lock(&self.state);
                let now = Instant::now();
                state.pending.retain(|_, t| *t > now);
                match state.pending.values().min() {
                    Some(t) => *t,
                    None => {
                        state.running = None;
                        info!("trust listener closed: no trust link pending");
                        return;
                    }
                }
            };
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        debug!(%peer, "trust listener busy; connection dropped");
                        continue;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let _ = tokio::time::timeout(CONNECTION_TIME, me.serve(stream, peer)).await;
                    });
                }
                _ = tokio::time::sleep_until(next_expiry) => {}
                _ = changed => {}
            }
        }
    }

    async fn serve(self: Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let me = self.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let me = me.clone();
                async move { Ok::<_, Infallible>(me.answer(req.method(), req.uri().path())) }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEAD_TIME)
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        if let Err(e) = conn.await {
            debug!(%peer, error = %e, "trust connection ended");
        }
    }

    /// The answer to `method path`.
    fn answer(&self, method: &Method, path: &str) -> Response<Body> {
        if method != Method::GET {
            return not_found();
        }
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let token = parts.next().unwrap_or("");
        let file = parts.next();
        if token.is_empty() || !self.pending(token) {
            return not_found();
        }
        let (Some(der), Some(fp)) = (self.ca.ca_der(), self.ca.fingerprint()) else {
            return not_found();
        };
        let name = self.ca.name();
        match file {
            None => respond(
                "text/html; charset=utf-8",
                None,
                page(token, name, &fp).into_bytes(),
            ),
            Some("vmux-ca.mobileconfig") if self.spend(token) => {
                info!("trust link spent: configuration profile fetched");
                respond(
                    "application/x-apple-aspen-config",
                    Some("vmux-ca.mobileconfig"),
                    mobileconfig(&der, name).into_bytes(),
                )
            }
            Some("vmux-ca.crt") if self.spend(token) => {
                info!("trust link spent: CA certificate fetched");
                respond("application/x-x509-ca-cert", Some("vmux-ca.crt"), der)
            }
            _ => not_found(),
        }
    }
}

fn respond(content_type: &'static str, file: Option<&str>, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(f) =
        file.and_then(|f| HeaderValue::from_str(&format!("attachment; filename=\"{f}\"")).ok())
    {
        h.insert(header::CONTENT_DISPOSITION, f);
    }
    headers(&mut r);
    r
}

fn not_found() -> Response<Body> {
    let mut r = Response::new(Body::from("not found\n"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers(&mut r);
    r
}

fn headers(r: &mut Response<Body>) {
    let h = r.headers_mut();
    crate::web::page_headers(h, CSP);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The trust page: the fingerprint, the two links, the steps.
fn page(token: &str, name: &str, fingerprint: &str) -> String {
    let name = escape(name);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Trust the vmux signer</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.2em;line-height:1.4;max-width:40em}}
a.button{{display:block;margin:.8em 0;padding:.8em;border-radius:.5em;background:#1b5fc1;color:#fff;text-align:center;text-decoration:none;font-size:1.1em}}
code{{word-break:break-all;font-size:.9em}}</style></head>
<body>
<h1>Trust the vmux signer</h1>
<p>This installs the certificate authority of the vmux signer on this phone. It can vouch only for <strong>{name}</strong>, the signer's phone page, and for nothing else.</p>
<p>Before installing, check that this fingerprint is the one on the computer's screen:</p>
<p id="fingerprint"><code>SHA-256 {fingerprint}</code></p>
<a class="button" id="ios" href="/{token}/vmux-ca.mobileconfig">Install on iPhone</a>
<a class="button" id="android" href="/{token}/vmux-ca.crt">Install on Android</a>
<p>The link works once: after one of the two downloads it is spent.</p>
<h2>iPhone and iPad</h2>
<ol><li>Tap <strong>Install on iPhone</strong> and allow the download.</li>
<li>Open Settings &rarr; General &rarr; VPN &amp; Device Management, tap the vmux profile and Install.</li>
<li>Then Settings &rarr; General &rarr; About &rarr; Certificate Trust Settings: turn on full trust for the vmux phone page CA.</li></ol>
<h2>Android</h2>
<ol><li>Tap <strong>Install on Android</strong>; the file vmux-ca.crt is saved.</li>
<li>Open Settings &rarr; Security (&rarr; More security settings) &rarr; Encryption &amp; credentials &rarr; Install a certificate &rarr; CA certificate, and pick vmux-ca.crt.</li></ol>
<p>Then open the enrolment link from the computer and tap Create passkey.</p>
</body></html>
"#
    )
}

/// A UUID made from `seed` (so that installing the same CA again replaces
/// the same profile).
fn uuid_of(seed: &[u8], salt: &str) -> String {
    let d = Sha256::new()
        .chain_update(salt)
        .chain_update(seed)
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An Apple configuration profile with `der` as a trusted root.
fn mobileconfig(der: &[u8], name: &str) -> String {
    let id: String = Sha256::digest(der)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let data = STANDARD.encode(der);
    let name = escape(name);
    let outer = uuid_of(der, "profile");
    let inner = uuid_of(der, "root");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>PayloadCertificateFileName</key>
			<string>vmux-ca.cer</string>
			<key>PayloadContent</key>
			<data>{data}</data>
			<key>PayloadDescription</key>
			<string>The vmux signer's certificate authority; it vouches only for {name}.</string>
			<key>PayloadDisplayName</key>
			<string>vmux phone page CA for {name}</string>
			<key>PayloadIdentifier</key>
			<string>dev.vmux.page-ca.{id}.root</string>
			<key>PayloadType</key>
			<string>com.apple.security.root</string>
			<key>PayloadUUID</key>
			<string>{inner}</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
	</array>
	<key>PayloadDescription</key>
	<string>Lets this device trust the vmux signer's phone page at {name}, and nothing else.</string>
	<key>PayloadDisplayName</key>
	<string>vmux signer ({name})</string>
	<key>PayloadIdentifier</key>
	<string>dev.vmux.page-ca.{id}</string>
	<key>PayloadRemovalDisallowed</key>
	<false/>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>{outer}</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
"#
    )
}

/// This machine's IPv4 address on the interface of the default route
/// (read from `/proc/net/route` and the interface list; nothing is sent).
pub(crate) fn lan_address() -> Option<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let mut best: Option<(u32, String)> = None;
    for line in routes.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[1] != "00000000" {
            continue;
        }
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        if flags & 1 == 0 {
            continue; // not up
        }
        let metric: u32 = f[6].parse().unwrap_or(u32::MAX);
        if best.as_ref().is_none_or(|(m, _)| metric < *m) {
            best = Some((metric, f[0].to_owned()));
        }
    }
    let (_, iface) = best?;
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .filter(|i| i.name == iface)
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk_for(lifetime: Duration) -> (tempfile::TempDir, Arc<TrustDesk>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = PageCa::open(dir.path(), "signer.vmux.test", 600).unwrap();
        ca.unlock(None).unwrap();
        let desk = TrustDesk {
            ca,
            host: "127.0.0.1".parse().unwrap(),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            lifetime,
        };
        (dir, Arc::new(desk))
    }

    fn desk() -> (tempfile::TempDir, Arc<TrustDesk>) {
        desk_for(TRUST_LIFETIME)
    }

    fn port_of(url: &str) -> u16 {
        let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
        rest.split('/').next().unwrap().parse().unwrap()
    }

    /// Whether connecting to `port` is refused within a second.
    async fn refused(port: u16) -> bool {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_link_expires_and_then_the_port_is_closed() {
        // TRUST_LIFETIME (10 minutes) shortened to 300 ms.
        let (_dir, desk) = desk_for(Duration::from_millis(300));
        let started = Instant::now();
        let link = desk.issue().unwrap();
        let token = link.url.rsplit('/').next().unwrap().to_owned();
        let port = port_of(&link.url);
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok());
        assert_eq!(
            desk.answer(&Method::GET, &format!("/{token}")).status(),
            StatusCode::OK
        );
        tokio::time::sleep_until(started + Duration::from_millis(300)).await;
        // Closed on its own: no connection comes to make it look.
        let until = Instant::now() + Duration::from_secs(1);
        while lock(&desk.state).running.is_some() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(lock(&desk.state).running.is_none(), "closed at expiry");
        assert!(refused(port).await, "the trust port is closed");
        assert_eq!(
            desk.answer(&Method::GET, &format!("/{token}")).status(),
            StatusCode::NOT_FOUND
        );
        // A new link opens it again (on a new port), and works.
        let again = desk.issue().unwrap();
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port_of(&again.url)))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_link_is_spent_by_one_download_and_serves_nothing_else() {
        let (_dir, desk) = desk();
        let link = desk.issue().unwrap();
        let other = desk.issue().unwrap();
        let token = link.url.rsplit('/').next().unwrap().to_owned();
        let get = |p: &str| desk.answer(&Method::GET, p).status();
        for p in [
            "/",
            "/api/session",
            "/api/events",
            "/app.js",
            "/index.html",
            "/manifest.webmanifest",
            "/sw.js",
            &format!("/{token}/"),
            &format!("/{token}/api/session"),
            &format!("/{token}/app.js"),
            &format!("/{token}x"),
            "/x/vmux-ca.crt",
        ] {
            assert_eq!(get(p), StatusCode::NOT_FOUND, "{p}");
        }
        assert_eq!(
            desk.answer(&Method::POST, &format!("/{token}")).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            desk.answer(&Method::HEAD, &format!("/{token}/vmux-ca.crt"))
                .status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(get(&format!("/{token}")), StatusCode::OK);
        assert_eq!(
            get(&format!("/{token}")),
            StatusCode::OK,
            "the page reloads"
        );
        assert_eq!(get(&format!("/{token}/vmux-ca.crt")), StatusCode::OK);
        for p in [
            format!("/{token}"),
            format!("/{token}/vmux-ca.crt"),
            format!("/{token}/vmux-ca.mobileconfig"),
        ] {
            assert_eq!(get(&p), StatusCode::NOT_FOUND, "spent: {p}");
        }
        // The other pending link still works, so the port stays open.
        let other = other.url.rsplit('/').next().unwrap().to_owned();
        assert_eq!(
            get(&format!("/{other}/vmux-ca.mobileconfig")),
            StatusCode::OK
        );
        assert!(refused(port_of(&link.url)).await, "no link pending: closed");
    }

    #[test]
    fn uuids_are_shaped_and_stable() {
        let a = uuid_of(b"x", "profile");
        assert_eq!(a, uuid_of(b"x", "profile"));
        assert_ne!(a, uuid_of(b"x", "root"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn the_page_escapes_the_name() {
        assert!(page("t", "a<b", "AA").contains("a&lt;b"));
    }
}
