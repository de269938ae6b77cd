//! The desktop approver against a real session bus (`dbus-daemon` started
//! by the test) and a notification server that records what it is shown
//! and answers with an action.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::support::*;
use futures_util::StreamExt;
use zbus::zvariant::OwnedValue;

const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// The arguments of org.freedesktop.Notifications.Notify.
type NotifyArgs = (
    String,
    u32,
    String,
    String,
    String,
    Vec<String>,
    HashMap<String, OwnedValue>,
    i32,
);

type Shown = Arc<Mutex<Vec<(String, String, Vec<String>)>>>;

/// Serves org.freedesktop.Notifications on `address`: records each
/// notification and answers `pair` ones with Approve, others with `answer`
/// (`""`: leaves them unanswered).
fn notification_server(address: String, answer: &'static str) -> Shown {
    let shown: Shown = Arc::default();
    let record = shown.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .unwrap()
                .build()
                .await
                .unwrap();
            conn.request_name(SERVICE).await.unwrap();
            let mut stream = zbus::MessageStream::from(&conn);
            ready_tx.send(()).unwrap();
            let mut next_id = 1u32;
            while let Some(Ok(msg)) = stream.next().await {
                let header = msg.header();
                if header.message_type() != zbus::message::Type::MethodCall {
                    continue;
                }
                match header.member().map(|m| m.as_str()) {
                    Some("Notify") => {
                        let (_app, _replaces, _icon, summary, body, actions, _hints, _timeout): NotifyArgs = msg.body().deserialize().unwrap();
                        let id = next_id;
                        next_id += 1;
                        let key = if summary.contains("pair") {
                            "approve"
                        } else {
                            answer
                        };
                        record.lock().unwrap().push((summary, body, actions));
                        conn.reply(&header, &(id,)).await.unwrap();
                        if !key.is_empty() {
                            conn.emit_signal(None::<&str>, PATH, SERVICE, "ActionInvoked", &(id, key))
                                .await
                                .unwrap();
                        }
                    }
                    Some("CloseNotification") => conn.reply(&header, &()).await.unwrap(),
                    _ => {}
                }
            }
        });
    });
    ready_rx
        .recv_timeout(WAIT)
        .expect("notification server ready");
    shown
}

fn world_with_desktop(address: &str, dir: &tempfile::TempDir) -> (Signer, Agent, Sshd) {
    world_with_desktop_config(address, dir, "")
}

/// The same, with `top` (top-level keys) at the head of `signer.toml`.
fn world_with_desktop_config(
    address: &str,
    dir: &tempfile::TempDir,
    top: &str,
) -> (Signer, Agent, Sshd) {
    let mut signer = Signer::init(dir.path(), "pi");
    let line = signer.keygen("ed25519", "desk-key");
    signer.config(&format!("{top}[certificates]\nauto_issue = false\n"));
    signer
        .launch
        .env
        .push(("DBUS_SESSION_BUS_ADDRESS".into(), address.into()));
    signer.start_approving("127.0.0.1:0", "desktop", &[]);
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start(&["--signer", &signer.addr]);
    let sshd = Sshd::start(dir.path(), &format!("{line}\n"), &[]);
    (signer, agent, sshd)
}

/// A notification server that answers every prompt with `answer`, a
/// signer approving on the desktop, an agent connected to it and an sshd
/// (dropped in that order, the directory last).
struct Answering {
    sshd: Sshd,
    agent: Agent,
    signer: Signer,
    shown: Shown,
    _bus: Daemon,
    _dir: tempfile::TempDir,
}

fn answering(answer: &'static str) -> Answering {
    let dir = test_dir();
    let (bus, address) = session_bus(dir.path());
    let shown = notification_server(address.clone(), answer);
    let (signer, agent, sshd) = world_with_desktop(&address, &dir);
    agent.wait_connected(1);
    Answering {
        sshd,
        agent,
        signer,
        shown,
        _bus: bus,
        _dir: dir,
    }
}

#[test]
fn approve_on_the_desktop_signs_and_the_notification_says_who_asks() {
    let w = answering("approve");
    w.sshd.assert_login(&w.agent, "login");
    let shown = w.shown.lock().unwrap();
    assert_eq!(shown.len(), 2, "pairing, then the signature: {shown:?}");
    let (summary, body, actions) = &shown[1];
    assert_eq!(summary, "vmux: SSH signature requested");
    assert!(
        body.contains("laptop") && body.contains("desk-key") && body.contains("[verified]"),
        "{body}"
    );
    assert_eq!(actions, &["approve", "Approve", "deny", "Deny"]);
}

#[test]
fn deny_on_the_desktop_refuses() {
    let w = answering("deny");
    assert!(!w.sshd.ssh(&w.agent, &[], "true").status.success());
    w.signer
        .daemon()
        .wait_line(WAIT, |l| l.contains("userDenied"));
}

#[test]
fn without_a_notification_server_it_falls_back_to_the_terminal() {
    let dir = test_dir();
    let (_bus, address) = session_bus(dir.path());
    let (signer, agent, _sshd) = world_with_desktop(&address, &dir);
    // The pairing prompt already went to the terminal fallback; with no
    // terminal here, it is denied.
    signer.daemon().wait_line(WAIT, |l| {
        l.contains("no notification server answered; asking on the terminal")
    });
    agent.daemon().wait_line(WAIT, |l| l.contains("refused"));
}

#[test]
fn another_client_of_the_session_bus_cannot_answer_the_prompt() {
    let dir = test_dir();
    let (_bus, address) = session_bus(dir.path());
    // The person does not answer the signature's prompt.
    let shown = notification_server(address.clone(), "");
    let (signer, agent, sshd) =
        world_with_desktop_config(&address, &dir, "approval_timeout_seconds = 5\n");
    agent.wait_connected(1);
    // A process of the same user on the bus waits for the prompt, then
    // "clicks" Approve for every likely notification id.
    let intruder = std::thread::spawn(move || {
        wait_until("two prompts shown", WAIT, || {
            shown.lock().unwrap().len() >= 2
        });
        let rt = runtime();
        rt.block_on(async {
            let conn = zbus::connection::Builder::address(address.as_str())
                .unwrap()
                .build()
                .await
                .unwrap();
            for id in 1u32..=4 {
                conn.emit_signal(
                    None::<&str>,
                    PATH,
                    SERVICE,
                    "ActionInvoked",
                    &(id, "approve"),
                )
                .await
                .unwrap();
            }
        });
    });
    let out = sshd.ssh(&agent, &[], "true");
    intruder.join().unwrap();
    assert!(
        !out.status.success(),
        "a signal from another bus client approved the login"
    );
    signer.daemon().wait_line(WAIT, |l| {
        l.contains("ignored a notification signal not sent by the notification server")
    });
    signer
        .daemon()
        .wait_line(WAIT, |l| l.contains("approvalTimeout"));
}
