//! Web Push to the phone page, against a push service of the test's own
//! (HTTP/2 over TLS on loopback) that records each request, checks its
//! VAPID JWT with the key the page subscribed with, and decrypts its
//! `aes128gcm` body with the subscription's private key. The page in
//! headless Chromium subscribes through its own button; only the
//! browser's `PushManager` is stood in for, since headless Chromium
//! cannot reach a real push service.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::phone::*;
use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::{json, Value};
use vmux_testkit::push_service::{check_vapid, PushService, Reply, Seen, Subscriber};

/// A signer with the phone page and Web Push set up to trust the test's
/// push service, one phone subscribed through its button, an agent
/// paired on that phone, and an sshd that takes the signer's key.
struct PushWorld {
    dir: tempfile::TempDir,
    service: PushService,
    subscriber: Subscriber,
    /// The VAPID key the page subscribed with (base64url).
    server_key: String,
    world: PhoneWorld,
    phone: Phone,
    agent: Agent,
    sshd: Sshd,
}

fn push_world(config: &str, approve: &str, agent_args: &[&str]) -> PushWorld {
    let dir = test_dir();
    let service = PushService::start(&dir.path().join("push"), 201);
    let config = format!(
        "{config}[web_push]\nsubject = \"mailto:ops@vmux.test\"\nextra_ca_file = \"{}\"\n",
        service.ca_file().display()
    );
    let world = PhoneWorld::start_approving(dir.path(), approve, &config, &[]);
    let phone = world.signed_in_phone("pixel");
    let subscriber = Subscriber::new();
    phone.stand_in_push_manager(
        &format!("{}/wpush/pixel-1", service.url()),
        &json!({"p256dh": subscriber.p256dh(), "auth": subscriber.auth()}),
    );
    phone.turn_on_notifications(&world.origin);
    let key: Vec<u8> = serde_json::from_value(phone.page.eval("window.testServerKey"))
        .expect("the page subscribed with a key");
    let server_key = B64URL.encode(key);
    let mut agent = Agent::new(dir.path(), "laptop");
    let mut args = vec!["--signer", world.signer.addr.as_str()];
    args.extend_from_slice(agent_args);
    agent.start(&args);
    if approve == "phone" {
        phone.tap("pair", "Approve");
        phone.wait_cards(0);
    }
    agent.wait_connected(1);
    let sshd = Sshd::start(
        dir.path(),
        &world.signer.public_lines(),
        &["MaxStartups 100"],
    );
    PushWorld {
        dir,
        service,
        subscriber,
        server_key,
        world,
        phone,
        agent,
        sshd,
    }
}

impl PushWorld {
    /// Closes the phone's page and waits until the signer knows.
    fn close_page(&self) {
        self.phone.page.goto("about:blank");
        wait_until("the signer seeing no page open", WAIT, || {
            self.world.phones().contains("no page open")
        });
    }

    /// Opens the page again (its session cookie signs it in).
    fn reopen_page(&self) {
        self.phone.page.goto(&self.world.origin);
        self.phone.wait_signed_in();
    }

    /// Waits until the signer has `n` requests waiting for a phone.
    fn wait_waiting(&self, n: usize) {
        self.world.signer.daemon().wait_line(WAIT, |l| {
            l.contains("a request waits for a phone") && l.contains(&format!("waiting={n}"))
        });
    }

    /// Approves the `n` cards showing, one by one, as a person taps them.
    fn approve_all(&self, n: usize) {
        for left in (0..n).rev() {
            let ids = self.phone.card_ids();
            let first = ids.first().expect("a card shows");
            self.phone
                .page
                .click_button_in(&format!("article.card[data-id=\"{first}\"]"), "Approve");
            self.phone.wait_cards(left);
        }
    }

    /// Waits until the page's service worker shows `n` notifications;
    /// returns them (title, body, tag, data).
    fn notifications(&self, n: usize) -> Value {
        self.try_notifications(n, WAIT)
            .unwrap_or_else(|| panic!("expected {n} notifications within {WAIT:?}"))
    }

    /// The same, `None` if they do not show within `bound`.
    fn try_notifications(&self, n: usize, bound: Duration) -> Option<Value> {
        let js = "navigator.serviceWorker.getRegistration().then(r => r ? r.getNotifications() : []).then(ns => ns.map(n => ({title: n.title, body: n.body, tag: n.tag, data: n.data})))";
        let deadline = std::time::Instant::now() + bound;
        loop {
            let v = self.phone.page.eval(js);
            if v.as_array().map(Vec::len) == Some(n) {
                return Some(v);
            }
            if std::time::Instant::now() >= deadline {
                eprintln!("expected {n} notifications, the page shows {v}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks a push as a push service and the phone would: the RFC 8030
    /// headers, the VAPID JWT, the body decrypting for this subscription.
    /// Returns the payload.
    fn check_push(&self, seen: &Seen) -> Value {
        self.check_push_to(seen, "/wpush/pixel-1")
    }

    /// [`Self::check_push`] for a push to the subscription at `path`.
    fn check_push_to(&self, seen: &Seen, path: &str) -> Value {
        assert_eq!(seen.version, hyper::Version::HTTP_2);
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", path));
        assert_eq!(seen.header("content-encoding"), Some("aes128gcm"));
        assert_eq!(seen.header("urgency"), Some("high"));
        assert_eq!(seen.header("topic"), Some("vmux-request"));
        let ttl: u64 = seen
            .header("ttl")
            .and_then(|t| t.parse().ok())
            .expect("a TTL header");
        assert!(
            (1..=60).contains(&ttl),
            "TTL {ttl} within the request's life"
        );
        let claims = check_vapid(seen, &self.server_key, &self.service.url())
            .unwrap_or_else(|e| panic!("VAPID: {e}"));
        assert_eq!(claims["sub"], "mailto:ops@vmux.test");
        let plain = self
            .subscriber
            .decrypt(&seen.body)
            .unwrap_or_else(|e| panic!("the push does not decrypt: {e}"));
        let text = String::from_utf8(plain).expect("UTF-8 JSON");
        // No blob: not the signer's key, nor anything long and opaque.
        for line in self.world.signer.public_lines().lines() {
            if let Some(b64) = line.split_whitespace().nth(1) {
                assert!(!text.contains(b64), "the payload carries a key: {text}");
            }
        }
        let payload: Value = serde_json::from_str(&text).expect("JSON");
        let fields: BTreeSet<&str> = payload
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from(["body", "id", "tag", "title", "url", "waiting"]),
            "{payload}"
        );
        // What a lock screen shows at a glance: no fingerprint, no command
        // line, at most 120 characters each.
        for field in ["title", "body"] {
            let t = payload[field].as_str().expect("text");
            assert!(t.chars().count() <= 120, "{field} too long: {payload}");
            assert!(
                !t.contains("SHA256:") && !t.contains(" -o ") && !t.contains("-F "),
                "{field} names a fingerprint or a command line: {payload}"
            );
        }
        payload
    }
}

#[test]
fn ten_logins_with_no_page_open_send_one_push_and_the_reopened_page_approves_them_all() {
    let w = push_world(
        "[certificates]\nauto_issue = false\n",
        "phone",
        &["--sign-timeout", "120"],
    );
    w.close_page();
    let logins: Vec<_> = (0..10).map(|_| ssh_spawn(&w.sshd, &w.agent, 150)).collect();
    w.wait_waiting(10);
    let push = w.service.wait();
    let payload = w.check_push(&push);
    // The burst started with the first login (one card: its headline as
    // a question, who asks with which key from which program) or with
    // several (how many from whom).
    let title = payload["title"].as_str().unwrap_or_default().to_owned();
    let body = payload["body"].as_str().unwrap_or_default();
    let user = login_user();
    let one = format!("as {user}?");
    if payload["waiting"] == 1 {
        assert!(
            title.starts_with("Log in to ") && title.ends_with(&one),
            "{payload}"
        );
        assert_eq!(body, "laptop · key work · ssh", "{payload}");
    } else {
        assert_eq!(
            title,
            format!("{} waiting from laptop", payload["waiting"]),
            "{payload}"
        );
        assert!(
            body.starts_with("Log in to ") && body.ends_with(&one),
            "{payload}"
        );
    }
    let id = payload["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(payload["url"], format!("/#request={id}"));
    assert_eq!(payload["tag"], "vmux-request");

    // The phone's browser hands it to the page's service worker, which
    // shows one notification for the burst.
    let plain = String::from_utf8(w.subscriber.decrypt(&push.body).unwrap()).unwrap();
    w.phone.page.goto(&format!("{}/icon.svg", w.world.origin));
    // (Delivered again if the worker showed nothing within 10 s: a
    // message CDP hands to a worker still starting can be lost; the tag
    // makes a second delivery replace, not add.)
    let shown = (0..6)
        .find_map(|_| {
            w.phone.page.deliver_push(&w.world.origin, &plain);
            w.try_notifications(1, Duration::from_secs(10))
        })
        .expect("the service worker shows the push");
    assert_eq!(
        shown,
        json!([{"title": title, "body": body, "tag": "vmux-request",
                "data": {"url": format!("/#request={id}"), "id": id}}]),
    );

    // The tap opens the page on that request: every waiting card is there.
    w.phone.page.goto(&format!(
        "{}{}",
        w.world.origin,
        payload["url"].as_str().unwrap_or("/")
    ));
    w.phone.wait_signed_in();
    w.phone.wait_cards(10);
    assert!(w.phone.card_ids().contains(&id), "the pushed request shows");
    w.approve_all(10);
    for ssh in logins {
        let out = finish(ssh, Duration::from_secs(120));
        assert_success(&out, "a login approved after the push");
    }
    assert_eq!(w.sshd.accepted(), 10);
    // The page closed the notification of the requests it no longer lists.
    assert_eq!(w.notifications(0), json!([]));
    assert_eq!(w.service.seen().len(), 1, "exactly one push for the burst");
    let phones = w.world.phones();
    let line = phones
        .lines()
        .find(|l| l.starts_with("pixel"))
        .expect("the phone's line");
    assert!(
        line.contains("can be woken (1 subscription)")
            && line.contains(&format!("accepted by {}", w.service.url()))
            && line.contains("; answered "),
        "{line}"
    );

    // The burst was answered: the next request, with the page closed
    // again, is a new burst and a new push.
    w.close_page();
    let again = ssh_spawn(&w.sshd, &w.agent, 150);
    let push = w.service.wait();
    w.check_push(&push);
    assert_eq!(w.service.seen().len(), 2);
    w.reopen_page();
    w.phone.tap("sign", "Approve");
    let out = finish(again, Duration::from_secs(120));
    assert!(out.status.success());
}

#[test]
fn a_push_service_answering_410_drops_the_subscription_and_the_reopened_page_subscribes_anew() {
    let w = push_world(
        "[certificates]\nauto_issue = false\n",
        "phone",
        &["--sign-timeout", "120"],
    );
    w.service.script(&[Reply::Status(410, "")]);
    w.close_page();
    let ssh = ssh_spawn(&w.sshd, &w.agent, 150);
    w.check_push(&w.service.wait());
    w.world.signer.daemon().wait_line(WAIT, |l| {
        l.contains("the push subscription is gone: dropped")
    });
    let phones = w.world.phones();
    assert!(
        phones.contains("cannot be woken") && phones.contains("subscription gone (HTTP 410)"),
        "{phones}"
    );
    let book = std::fs::read_to_string(w.world.signer.home.join("phones.json")).unwrap();
    assert!(
        !book.contains("/wpush/pixel-1"),
        "gone from phones.json too"
    );
    // The request still waits for the page, which approves it.
    w.reopen_page();
    w.phone.tap("sign", "Approve");
    let out = finish(ssh, Duration::from_secs(120));
    assert!(out.status.success());
    assert_eq!(
        w.service.seen().len(),
        1,
        "nothing sent to a gone subscription"
    );
    // The reopened page did not go on saying notifications are on: the
    // signer no longer had its subscription, and the page says so and
    // offers Turn on again (renewing takes the passkey, so a tap: never
    // a prompt the person did not ask for). A tap subscribes anew (the
    // browser gives a new endpoint) and the phone can be woken again.
    w.phone.page.wait_for(
        "!document.getElementById('notifications-on').hidden && document.getElementById('notifications-text').textContent.startsWith('Notifications stopped reaching this phone')",
        WAIT,
    );
    w.phone.turn_on_notifications(&w.world.origin);
    w.phone.page.wait_for(
        "!document.getElementById('notifications-off').hidden && document.getElementById('notifications-text').textContent.startsWith('This phone is notified')",
        WAIT,
    );
    let phones = w.world.phones();
    assert!(phones.contains("can be woken (1 subscription)"), "{phones}");
    let book = std::fs::read_to_string(w.world.signer.home.join("phones.json")).unwrap();
    assert!(book.contains("/wpush/pixel-1-2"), "{book}");
    w.close_page();
    let ssh = ssh_spawn(&w.sshd, &w.agent, 150);
    let seen = w.service.wait();
    let payload = w.check_push_to(&seen, "/wpush/pixel-1-2");
    assert_eq!(payload["waiting"], 1, "{payload}");
    w.reopen_page();
    w.phone.tap("sign", "Approve");
    assert!(finish(ssh, Duration::from_secs(120)).status.success());
    let _ = &w.dir;
}

#[test]
fn a_push_service_that_never_answers_delays_no_decision() {
    let w = push_world(
        "[certificates]\nauto_issue = false\n",
        "phone",
        &["--sign-timeout", "120"],
    );
    w.service
        .script(&[Reply::Never, Reply::Never, Reply::Never]);
    w.close_page();
    let logins: Vec<_> = (0..3).map(|_| ssh_spawn(&w.sshd, &w.agent, 150)).collect();
    w.wait_waiting(3);
    w.check_push(&w.service.wait());
    // The push hangs; the page, opened, decides at once.
    w.reopen_page();
    w.phone.wait_cards(3);
    let started = std::time::Instant::now();
    w.approve_all(3);
    for ssh in logins {
        let out = finish(ssh, Duration::from_secs(120));
        assert!(out.status.success());
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the approvals did not wait for the hanging push service: {:?}",
        started.elapsed()
    );
    assert_eq!(w.sshd.accepted(), 3);
}

#[test]
fn a_session_certificate_renewal_with_the_phone_as_ca_wakes_the_phone() {
    let w = push_world(
        "ca = \"phone:pixel\"\n",
        "allow-all",
        &["--cert-validity", "8", "--cert-renew-before", "5"],
    );
    let installed = |n| {
        w.agent.wait_certificate_installed(n);
    };
    w.phone.tap("certificate", "Approve");
    installed(1);
    w.close_page();
    // The renewal waits for the phone's passkey: a push says so.
    let push = w.service.wait();
    let payload = w.check_push(&push);
    let text = payload.to_string();
    assert!(
        text.contains("certificate") && text.contains("laptop"),
        "{payload}"
    );
    w.reopen_page();
    w.phone.tap("certificate", "Approve");
    installed(2);
}
