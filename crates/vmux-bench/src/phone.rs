//! The phone section: a signer with `--approve phone`, its page open in
//! headless Chromium with an auto-approving virtual authenticator (the
//! stand-in of `vmux-testkit`, tapping Approve on every card), and an
//! agent paired through that page. [`REQUESTS`] sign requests go to the
//! agent's socket one at a time; for each, two spans on one clock (this
//! machine's wall clock, read here and in the page, there to the
//! millisecond):
//!
//! - shown: from the request being written to the socket to the card
//!   element being added to the page (a `MutationObserver` installed in
//!   the page records it);
//! - answered: from the page starting the approve POST (`window.fetch`
//!   wrapped in the page records it) to the agent's answer arriving here.
//!
//! Then [`PASSKEY_REQUESTS`] sign requests with the phone's passkey key,
//! each after one with the software key (the added latency of a passkey
//! signature = the difference of their percentiles), and [`CERTS`]
//! `vmux agent cert` with the phone as CA (the time to issue a
//! phone-signed certificate).
//!
//! Then [`BURST_ROUNDS`] rounds of [`BURST`] logins waiting at once,
//! approved with one tap on **Approve all 10** (one passkey assertion):
//! the span from the tap (a click listener in the page records it) to
//! the tenth client's answer.
//!
//! Last, Web Push: the page subscribes to a push service of the bench's
//! own (HTTP/2 over TLS on loopback, `vmux-testkit`) and is left for a
//! page of the same origin without the live stream (so no page is
//! open); [`PUSHES`] times a sign request goes to the agent, the span
//! from its being written to the socket to the push request's headers
//! arriving at the push service is measured, and the request is denied
//! through the API by the id the decrypted push names (ending its burst).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vmux_testkit::browser::check_installed;
use vmux_testkit::engine::PhonePage;
use vmux_testkit::pki::TestPki;
use vmux_testkit::push_service::{PushService, Subscriber};
use vmux_testkit::standin::{Event, Standin};

use vmux_testkit::agent::AgentClient;
use vmux_testkit::{ok, WAIT};

use super::{err, init_signer, signer_run, start_agent, start_signer, Res, Table};

/// Sign requests measured.
const REQUESTS: usize = 200;
/// Sign requests with the phone's passkey key measured.
const PASSKEY_REQUESTS: usize = 100;
/// Phone-signed certificates measured.
const CERTS: usize = 20;
/// Bursts measured from a sign request to its push.
const PUSHES: usize = 100;
/// Rounds of [`BURST`] waiting logins approved with one tap.
const BURST_ROUNDS: usize = 20;
/// Logins waiting at once in a round.
const BURST: usize = 10;

/// The relying party's name, mapped to loopback in the browser only.
const RP: &str = "signer.vmux.test";

/// Installed in the page once it is signed in: records when each card
/// element is added and when each approve POST starts, in Unix
/// milliseconds by `Date.now()` (the wall clock, as `SystemTime` here;
/// not `performance.timeOrigin`, which can drift from it by
/// milliseconds), plus half a millisecond to centre its truncation.
const RECORDER: &str = r#"(() => {
  const now = () => Date.now() + 0.5;
  const rec = window.__vmuxBench = { cards: [], approves: {} };
  const seen = new Set();
  new MutationObserver((muts) => {
    const t = now();
    for (const m of muts) for (const n of m.addedNodes) {
      if (n instanceof Element && n.matches('article.card') && !seen.has(n.dataset.id)) {
        seen.add(n.dataset.id);
        rec.cards.push({ id: n.dataset.id, kind: n.dataset.kind, shown: t });
      }
    }
  }).observe(document.getElementById('cards'), { childList: true });
  const fetch0 = window.fetch;
  window.fetch = function (input, init) {
    const url = typeof input === 'string' ? input : (input && input.url) || String(input);
    const m = /\/api\/requests\/([^/?#]+)\/approve$/.exec(url);
    if (m) rec.approves[decodeURIComponent(m[1])] = now();
    return fetch0.apply(this, arguments);
  };
  return true;
})()"#;

/// Wall-clock now in Unix milliseconds.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The p-th percentile (0..1) of sorted `v`.
fn pct(v: &[f64], p: f64) -> f64 {
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Adds the p50 and p99 rows of the sorted `v` (milliseconds) to `t`,
/// named by `what` given "p50" or "p99".
fn percentile_rows(t: &mut Table, v: &[f64], target: &str, what: impl Fn(&str) -> String) {
    for (p, name) in [(0.50, "p50"), (0.99, "p99")] {
        t.row_prec(&what(name), pct(v, p), None, "ms", target, 1);
    }
}

/// Runs the phone section and adds its rows to `t`; skips (saying why)
/// when Chromium or certutil is not installed.
pub fn bench(vmux: &Path, d: &Path, t: &mut Table) -> Res<()> {
    if let Err(why) = check_installed() {
        println!("(phone figures skipped: {why})");
        return Ok(());
    }
    let started = Instant::now();
    let home = d.join("phone-signer");
    let agent_home = d.join("phone-agent");
    init_signer(vmux, &home, "bench-phone", &["ed25519"]);
    // No automatic session certificate: every card is one of the
    // measured requests (or the pairing). The CA is the phone's passkey,
    // for the phone-signed certificates measured last.
    let push = PushService::start(&d.join("push-service"), 201);
    std::fs::write(
        home.join("signer.toml"),
        format!(
            "ca = \"phone:bench-phone\"\n[certificates]\nauto_issue = false\n\
             [web_push]\nextra_ca_file = \"{}\"\n",
            push.ca_file().display()
        ),
    )
    .map_err(err("signer.toml"))?;
    let pki = TestPki::new(&d.join("phone-pki"), &[RP]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(err("probe a port"))?
        .port();
    let origin = format!("https://{RP}:{port}");
    let (signer, addr) = start_signer(
        signer_run(vmux, &home)
            .args(["--approve", "phone"])
            .args(["--web-listen", &format!("127.0.0.1:{port}")])
            .args(["--web-origin", &origin])
            .arg("--tls-cert")
            .arg(pki.cert_pem())
            .arg("--tls-key")
            .arg(pki.key_pem()),
    );
    signer.wait_line(WAIT, |l| l.contains("phone page at "));
    let link = ok(Command::new(vmux).arg("--home").arg(&home).args([
        "signer",
        "phone",
        "add",
        "--name",
        "bench-phone",
    ]))
    .trim()
    .to_owned();

    // The phone: enrolled through the link, then serving on a thread.
    let phone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let p = Standin::launch(
            &d.join("phone-browser"),
            pki.ca_pem(),
            &[&format!("MAP {RP} 127.0.0.1")],
        );
        p.enrol(&link);
        p
    }))
    .map_err(|_| "the phone stand-in did not enrol (see above)".to_owned())?;
    phone
        .page()
        .try_eval(RECORDER)
        .map_err(err("install the recorder"))?;
    let ready = started.elapsed();

    let stop = AtomicBool::new(false);
    let (spans, failed) = std::thread::scope(|s| {
        let server = s.spawn(|| {
            let mut failed = Vec::new();
            phone.serve(&stop, None, |e| {
                if let Event::Failed(..) = e {
                    failed.push(e.to_string());
                }
            });
            failed
        });
        let mut failed = Vec::new();
        let mut rec = Err("the recorder was not read".to_owned());
        let spans = requests(vmux, &agent_home, &addr, || {
            stop.store(true, Ordering::SeqCst);
            failed = server.join().unwrap_or_else(|_| vec!["it panicked".into()]);
            // Before the push part leaves the page.
            rec = phone
                .page()
                .try_eval("window.__vmuxBench")
                .map_err(|e| format!("read the recorder: {e}"));
            let mut status = Command::new(vmux);
            status.arg("--home").arg(&home).args(["signer", "phones"]);
            Pusher {
                phone: &phone,
                service: &push,
                origin: &origin,
                status,
            }
        });
        (spans.and_then(|s| Ok((s, rec?))), failed)
    });
    if !failed.is_empty() {
        return Err(format!("the phone failed: {}", failed.join("; ")).into());
    }
    let (spans, rec) = spans?;
    let (sent, answered) = (spans.sent, spans.answered);
    let took = started.elapsed();

    let cards: Vec<&Value> = rec["cards"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["kind"] == "sign").collect())
        .unwrap_or_default();
    // The software key's cards come first, then the passkey's.
    let (software, passkey) = (&spans.software, &spans.passkey);
    if cards.len() != sent.len() + software.len() + passkey.len() {
        return Err(format!(
            "{} sign requests but {} sign cards on the page",
            sent.len() + software.len() + passkey.len(),
            cards.len()
        )
        .into());
    }
    let mut shown = Vec::new();
    let mut answer = Vec::new();
    let mut total = Vec::new();
    for (i, card) in cards.iter().take(sent.len()).enumerate() {
        let id = card["id"].as_str().unwrap_or_default();
        let at = card["shown"].as_f64().ok_or("a card without its time")?;
        let approve = rec["approves"][id]
            .as_f64()
            .ok_or_else(|| format!("no approve POST for card {id}"))?;
        shown.push(at - sent[i]);
        answer.push(answered[i] - approve);
        total.push(answered[i] - sent[i]);
    }
    for v in [&mut shown, &mut answer, &mut total] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    println!(
        "vmux-bench: phone: {} sign requests approved on the page; the section took {:.1} s \
         ({:.1} s to start Chromium and enrol; {})",
        sent.len(),
        took.as_secs_f64(),
        ready.as_secs_f64(),
        phone.browser().version(),
    );
    let n = sent.len();
    percentile_rows(t, &shown, "< 200 ms", |name| {
        format!("phone: request sent → card shown {name}, {n} reqs")
    });
    percentile_rows(t, &answer, "< 20 ms", |name| {
        format!("phone: approve POST → agent's answer {name}")
    });
    t.row_prec(
        "  whole request, tapped at once, p50",
        pct(&total, 0.5),
        None,
        "ms",
        "",
        1,
    );
    // The passkey key: the same card and tap, then the assertion over the
    // data itself, its conversion to a webauthn-sk signature and the
    // checks by the signer and the agent. Added latency = its percentile
    // minus the software key's, over requests sent alternately (whole
    // requests, tapped at once).
    let (mut software, mut passkey, mut certs) = (spans.software, spans.passkey, spans.certs);
    for v in [&mut software, &mut passkey, &mut certs] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let pn = passkey.len();
    for (p, name) in [(0.50, "p50"), (0.99, "p99")] {
        t.row_prec(
            &format!("phone: passkey sig, added {name}, {pn}+{pn} alt."),
            pct(&passkey, p) - pct(&software, p),
            None,
            "ms",
            "",
            1,
        );
    }
    t.row_prec(
        "  passkey sig, whole request, p50",
        pct(&passkey, 0.5),
        None,
        "ms",
        "",
        1,
    );
    let mut pushes = spans.pushes;
    pushes.sort_by(|a, b| a.total_cmp(b));
    let wn = pushes.len();
    percentile_rows(t, &pushes, "< 50 ms", |name| {
        format!("phone: sign request → push sent {name}, {wn}")
    });
    let mut bursts = spans.bursts;
    bursts.sort_by(|a, b| a.total_cmp(b));
    let bn = bursts.len();
    percentile_rows(t, &bursts, "< 50 ms", |name| {
        format!("phone: {BURST} logins, one tap → last answer {name}, {bn}")
    });
    let cn = certs.len();
    percentile_rows(t, &certs, "", |name| {
        format!("phone: phone-signed cert issued {name}, {cn}")
    });
    Ok(())
}

/// What the agent's side measured: the software key's requests (sent,
/// answered times), then alternately a software key's and the passkey
/// key's whole requests, and the
/// phone-signed certificates' issue times, in milliseconds.
struct Spans {
    sent: Vec<f64>,
    answered: Vec<f64>,
    software: Vec<f64>,
    passkey: Vec<f64>,
    certs: Vec<f64>,
    pushes: Vec<f64>,
    bursts: Vec<f64>,
}

/// Userauth data as `ssh` sends it (the passkey key signs only logins
/// and SSHSIG): a random session id, user `bench`, the key.
fn userauth(n: usize, blob: &[u8]) -> Vec<u8> {
    userauth_with(n, b"sk-ecdsa-sha2-nistp256@openssh.com", blob)
}

/// The same for a key of algorithm `alg`.
fn userauth_with(n: usize, alg: &[u8], blob: &[u8]) -> Vec<u8> {
    use vmux_ssh::put_string as put;
    let mut out = Vec::new();
    let mut sid = [0u8; 32];
    sid[..8].copy_from_slice(&(n as u64).to_be_bytes());
    put(&mut out, &sid);
    out.push(50);
    for s in [&b"bench"[..], b"ssh-connection", b"publickey"] {
        put(&mut out, s);
    }
    out.push(1);
    put(&mut out, alg);
    put(&mut out, blob);
    out
}

/// Starts an agent, pairs it through the page (the stand-in approves the
/// card; the code is confirmed here as its user would), then sends
/// [`REQUESTS`] sign requests one at a time: (sent, answered) times.
fn requests<'a>(
    vmux: &Path,
    agent_home: &Path,
    addr: &str,
    stop_phone: impl FnOnce() -> Pusher<'a>,
) -> Res<Spans> {
    let _agent = start_agent(vmux, agent_home, "bench-phone", addr);
    let sock = agent_home.join("vmux-agent.sock");
    let mut c = AgentClient::connect(&sock)?;
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(err("socket timeout"))?;
    let blob = c
        .identities()?
        .into_iter()
        .find(|i| i.key_type() == b"ssh-ed25519")
        .map(|i| i.blob)
        .ok_or("no Ed25519 key through the agent")?;
    let mut sent = Vec::with_capacity(REQUESTS);
    let mut answered = Vec::with_capacity(REQUESTS);
    for n in 0..REQUESTS {
        let data = format!("vmux-bench phone challenge {n}");
        sent.push(now_ms());
        c.sign(&blob, data.as_bytes())
            .map_err(|e| format!("sign request {n}: {e}"))?;
        answered.push(now_ms());
    }
    let ids = c.identities()?;
    let passkey_blob = &ids
        .iter()
        .find(|i| i.key_type() == b"sk-ecdsa-sha2-nistp256@openssh.com")
        .ok_or("no passkey key through the agent")?
        .blob;
    // Alternately, so that both see the same conditions: a software-key
    // request and a passkey one, each whole (sent to answered).
    let mut passkey = Vec::with_capacity(PASSKEY_REQUESTS);
    let mut software = Vec::with_capacity(PASSKEY_REQUESTS);
    for n in 0..PASSKEY_REQUESTS {
        let data = format!("vmux-bench phone challenge, paired {n}");
        let t0 = now_ms();
        c.sign(&blob, data.as_bytes())
            .map_err(|e| format!("paired sign request {n}: {e}"))?;
        software.push(now_ms() - t0);
        let data = userauth(n, passkey_blob);
        let t0 = now_ms();
        c.sign(passkey_blob, &data)
            .map_err(|e| format!("passkey sign request {n}: {e}"))?;
        passkey.push(now_ms() - t0);
    }
    let mut certs = Vec::with_capacity(CERTS);
    for _ in 0..CERTS {
        let t0 = now_ms();
        // A failure panics, showing the command and what it printed.
        ok(Command::new(vmux)
            .arg("--home")
            .arg(agent_home)
            .args(["agent", "cert"]));
        certs.push(now_ms() - t0);
    }
    let mut pusher = stop_phone();
    let bursts = pusher.bursts(&sock, &blob)?;
    let pushes = pusher.measure(&sock, &blob)?;
    Ok(Spans {
        sent,
        answered,
        software,
        passkey,
        certs,
        pushes,
        bursts,
    })
}

/// The Web Push part: the stand-in phone (no longer approving), the
/// push service, the page's origin and `vmux signer phones`.
struct Pusher<'a> {
    phone: &'a Standin,
    service: &'a PushService,
    origin: &'a str,
    status: Command,
}

/// Resolves `true` once `__COND__` holds in the page (watching its DOM),
/// `false` after 30 s.
const WAIT_PAGE: &str = r#"new Promise((resolve) => {
  const ok = () => { try { return Boolean(__COND__); } catch { return false; } };
  if (ok()) return resolve(true);
  const mo = new MutationObserver(() => { if (ok()) { mo.disconnect(); clearTimeout(t); resolve(true); } });
  const t = setTimeout(() => { mo.disconnect(); resolve(ok()); }, 30000);
  mo.observe(document.body, { childList: true, subtree: true, attributes: true, characterData: true });
})"#;

impl Pusher<'_> {
    /// [`BURST_ROUNDS`] rounds: [`BURST`] logins sent at once, one tap on
    /// Approve all (the page still open, the stand-in no longer tapping
    /// each card), the span from the tap to the last client's answer.
    fn bursts(&mut self, sock: &Path, blob: &[u8]) -> Res<Vec<f64>> {
        let page = self.phone.page();
        let wait = |cond: &str, what: &str| -> Res<()> {
            match page.try_eval(&WAIT_PAGE.replace("__COND__", cond)) {
                Ok(Value::Bool(true)) => Ok(()),
                other => Err(format!("{what}: {other:?}").into()),
            }
        };
        page.try_eval(
            "document.addEventListener('click', (e) => { if (e.target.closest && e.target.closest('button.approve-all')) window.__vmuxTap = Date.now() + 0.5; }, true)",
        )
        .map_err(err("install the tap recorder"))?;
        let label = format!("Approve all {BURST}");
        let mut spans = Vec::with_capacity(BURST_ROUNDS);
        for round in 0..BURST_ROUNDS {
            let clients: Vec<_> = (0..BURST)
                .map(|i| {
                    let data = userauth_with(round * BURST + i, b"ssh-ed25519", blob);
                    let (blob, sock) = (blob.to_vec(), sock.to_owned());
                    std::thread::spawn(move || -> Res<f64> {
                        let mut c = AgentClient::connect(&sock)?;
                        c.stream()
                            .set_read_timeout(Some(Duration::from_secs(60)))
                            .map_err(err("socket timeout"))?;
                        c.sign(&blob, &data)?;
                        Ok(now_ms())
                    })
                })
                .collect();
            wait(
                &format!("[...document.querySelectorAll('button.approve-all')].some(b => b.offsetParent !== null && b.innerText.trim() === {label:?})"),
                "the page did not offer Approve all",
            )?;
            page.click_button(&label);
            let mut last = 0f64;
            for c in clients {
                let at = c
                    .join()
                    .map_err(|_| "a login's thread panicked".to_owned())??;
                last = last.max(at);
            }
            let tap = page
                .try_eval("window.__vmuxTap")
                .map_err(err("read the tap"))?
                .as_f64()
                .ok_or("no tap recorded")?;
            spans.push(last - tap);
            wait(
                "document.querySelectorAll('article.card').length === 0",
                "the approved cards did not leave",
            )?;
        }
        Ok(spans)
    }

    /// Subscribes the page, leaves it, then [`PUSHES`] bursts: the span
    /// from a sign request written to the agent to its push arriving.
    fn measure(&mut self, sock: &Path, blob: &[u8]) -> Res<Vec<f64>> {
        let page = self.phone.page();
        let sub = Subscriber::new();
        let body = serde_json::json!({
            "endpoint": format!("{}/bench", self.service.url()),
            "keys": { "p256dh": sub.p256dh(), "auth": sub.auth() },
        });
        let post = |path: &str, body: &Value| -> Res<()> {
            let js = format!(
                "fetch({path:?}, {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, credentials: 'same-origin', body: JSON.stringify({body})}}).then(r => r.status)"
            );
            match page.try_eval(&js).map_err(err("fetch in the page"))? {
                Value::Number(n) if n.as_u64() == Some(200) => Ok(()),
                other => Err(format!("POST {path} answered {other}").into()),
            }
        };
        // Subscribing takes the passkey's confirmation (the auto-approving
        // virtual authenticator gives it), as the page's button does.
        let js = format!(
            r#"(async () => {{
  const k = await (await fetch('/api/push/key', {{ credentials: 'same-origin' }})).json();
  const b = (t) => Uint8Array.from(atob(t.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (t.length % 4)) % 4)), (c) => c.charCodeAt(0));
  const u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const cred = await navigator.credentials.get({{ publicKey: {{ challenge: b(k.subscribe_challenge), rpId: location.hostname, userVerification: 'required' }} }});
  const body = {{ ...{body}, challenge: k.subscribe_challenge, credential_id: u(cred.rawId),
    authenticator_data: u(cred.response.authenticatorData), client_data_json: u(cred.response.clientDataJSON),
    signature: u(cred.response.signature) }};
  const r = await fetch('/api/push/subscribe', {{ method: 'POST', headers: {{ 'Content-Type': 'application/json' }}, credentials: 'same-origin', body: JSON.stringify(body) }});
  return r.status;
}})()"#
        );
        match page.try_eval(&js).map_err(err("subscribe in the page"))? {
            Value::Number(n) if n.as_u64() == Some(200) => {}
            other => return Err(format!("POST /api/push/subscribe answered {other}").into()),
        }
        // A page of the same origin with no live stream: the signer sees
        // no page open, and the API still takes the session's requests.
        page.goto(&format!("{}/icon.svg", self.origin));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let phones = ok(&mut self.status);
            if phones.contains("no page open") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the signer still sees a page open: {phones}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut spans = Vec::with_capacity(PUSHES);
        for n in 0..PUSHES {
            let (tx, rx) = std::sync::mpsc::channel();
            let data = format!("vmux-bench push {n}");
            let blob = blob.to_vec();
            let sock = sock.to_owned();
            let client = std::thread::spawn(move || -> Res<()> {
                let mut c = AgentClient::connect(&sock)?;
                let _ = tx.send(Instant::now());
                // Denied below: only that it ends matters.
                let _ = c.sign(&blob, data.as_bytes());
                Ok(())
            });
            let sent = rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| "the sign request was not sent".to_owned())?;
            let seen = self.service.wait();
            spans.push(seen.at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
            let payload: Value = sub
                .decrypt(&seen.body)
                .ok()
                .and_then(|p| serde_json::from_slice(&p).ok())
                .ok_or("a push that does not decrypt to JSON")?;
            let id = payload["id"]
                .as_str()
                .ok_or("a push without its request id")?;
            post(&format!("/api/requests/{id}/deny"), &serde_json::json!({}))?;
            client
                .join()
                .map_err(|_| "the sign request's thread panicked".to_owned())??;
        }
        Ok(spans)
    }
}
