//! The tray (`vmux agent tray`) on a real session bus (`dbus-daemon`
//! started by the test), with a tray host of the test's own (an
//! `org.kde.StatusNotifierWatcher` that records registrations and then
//! reads the item and its dbusmenu menu as a panel does) and a
//! notification server that records what it is shown and closed.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use futures_util::StreamExt;
use zbus::zvariant::{OwnedValue, Value};

/// The test's tray host.
struct Watcher {
    registered: mpsc::Sender<(String, String)>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(
        &self,
        service: String,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let _ = self.registered.send((sender, service));
    }

    fn register_status_notifier_host(&self, _service: String) {}

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// What the notification server was asked.
#[derive(Debug, Clone, PartialEq)]
enum Note {
    Notify {
        id: u32,
        replaces: u32,
        summary: String,
        body: String,
    },
    Close {
        id: u32,
    },
}

type Notes = Arc<(Mutex<Vec<Note>>, Condvar)>;

struct Notifications {
    notes: Notes,
    next: std::sync::atomic::AtomicU32,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        _app: String,
        replaces_id: u32,
        _icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _timeout: i32,
    ) -> u32 {
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        };
        self.record(Note::Notify {
            id,
            replaces: replaces_id,
            summary,
            body,
        });
        id
    }

    fn close_notification(&self, id: u32) {
        self.record(Note::Close { id });
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into(), "actions".into()]
    }
}

impl Notifications {
    fn record(&self, n: Note) {
        let (m, c) = &*self.notes;
        m.lock().unwrap().push(n);
        c.notify_all();
    }
}

/// One entry of the menu as a panel reads it.
#[derive(Debug, Clone)]
struct MenuEntry {
    id: i32,
    label: String,
    enabled: bool,
    separator: bool,
}

/// The desktop side: a connection to the bus, the tray host, and the
/// notification server.
struct Desktop {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
    registered: mpsc::Receiver<(String, String)>,
    notes: Notes,
}

/// A test's directory, a private session bus and its address, and the
/// test's [`Desktop`] on it (a tray host too when `host`).
fn on_a_desktop(host: bool) -> (tempfile::TempDir, Daemon, String, Desktop) {
    let dir = test_dir();
    let (bus, address) = session_bus(dir.path());
    let desktop = Desktop::start(&address, host);
    (dir, bus, address, desktop)
}

impl Desktop {
    /// Connects to `address`; serves the notification server, and the
    /// tray host when `host`.
    fn start(address: &str, host: bool) -> Desktop {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, registered) = mpsc::channel();
        let notes: Notes = Arc::default();
        let conn = rt.block_on(async {
            let conn = zbus::connection::Builder::address(address)
                .unwrap()
                .build()
                .await
                .unwrap();
            conn.object_server()
                .at(
                    "/org/freedesktop/Notifications",
                    Notifications {
                        notes: notes.clone(),
                        next: 1.into(),
                    },
                )
                .await
                .unwrap();
            conn.request_name("org.freedesktop.Notifications")
                .await
                .unwrap();
            if host {
                conn.object_server()
                    .at("/StatusNotifierWatcher", Watcher { registered: tx })
                    .await
                    .unwrap();
                conn.request_name("org.kde.StatusNotifierWatcher")
                    .await
                    .unwrap();
            }
            conn
        });
        Desktop {
            rt,
            conn,
            registered,
            notes,
        }
    }

    /// Starts the tray host later (on the same connection).
    fn start_host(&mut self) {
        let (tx, rx) = mpsc::channel();
        self.registered = rx;
        self.rt.block_on(async {
            self.conn
                .object_server()
                .at("/StatusNotifierWatcher", Watcher { registered: tx })
                .await
                .unwrap();
            self.conn
                .request_name("org.kde.StatusNotifierWatcher")
                .await
                .unwrap();
        });
    }

    /// Waits for an item to register and its menu to say it is connected
    /// to the signer `pi`; returns the bus name to read it at.
    fn wait_connected_item(&self) -> String {
        let item = self.wait_registered();
        self.wait_menu(&item, |l| l.first().is_some_and(|l| l == "Connected to pi"));
        item
    }

    /// Waits for an item to register; returns the bus name to read it at.
    fn wait_registered(&self) -> String {
        let (sender, service) = self
            .registered
            .recv_timeout(WAIT)
            .expect("the tray registered with the tray host");
        assert!(
            service.starts_with("org.kde.StatusNotifierItem-"),
            "{service}"
        );
        // The service name belongs to the registering connection.
        let owner = self.rt.block_on(async {
            zbus::fdo::DBusProxy::new(&self.conn)
                .await
                .unwrap()
                .get_name_owner(service.as_str().try_into().unwrap())
                .await
                .unwrap()
        });
        assert_eq!(owner.as_str(), sender);
        service
    }

    fn property(&self, item: &str, name: &str) -> OwnedValue {
        self.rt.block_on(async {
            let reply = self
                .conn
                .call_method(
                    Some(item),
                    "/StatusNotifierItem",
                    Some("org.freedesktop.DBus.Properties"),
                    "Get",
                    &("org.kde.StatusNotifierItem", name),
                )
                .await
                .unwrap_or_else(|e| panic!("reading {name}: {e}"));
            reply.body().deserialize::<OwnedValue>().unwrap()
        })
    }

    fn text_property(&self, item: &str, name: &str) -> String {
        String::try_from(self.property(item, name)).unwrap()
    }

    /// The tooltip's title and text.
    fn tooltip(&self, item: &str) -> (String, String) {
        type ToolTip = (String, Vec<(i32, i32, Vec<u8>)>, String, String);
        let t: ToolTip = self.property(item, "ToolTip").try_into().unwrap();
        (t.2, t.3)
    }

    /// The menu, via GetLayout (the item's `Menu` property names it).
    fn menu(&self, item: &str) -> Vec<MenuEntry> {
        let path: zbus::zvariant::OwnedObjectPath = self.property(item, "Menu").try_into().unwrap();
        self.rt.block_on(async {
            let reply = self
                .conn
                .call_method(
                    Some(item),
                    path.as_str(),
                    Some("com.canonical.dbusmenu"),
                    "GetLayout",
                    &(0i32, -1i32, Vec::<String>::new()),
                )
                .await
                .unwrap();
            type Node = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);
            let (_revision, (_root, _props, children)): (u32, Node) =
                reply.body().deserialize().unwrap();
            children
                .into_iter()
                .map(|c| {
                    let (id, props, _): Node = c.try_into().unwrap();
                    let text = |k: &str| {
                        props
                            .get(k)
                            .and_then(|v| String::try_from(v.try_clone().unwrap()).ok())
                            .unwrap_or_default()
                    };
                    MenuEntry {
                        id,
                        label: text("label").replace("__", "_"),
                        separator: text("type") == "separator",
                        enabled: props
                            .get("enabled")
                            .map(|v| bool::try_from(v.try_clone().unwrap()).unwrap())
                            .unwrap_or(true),
                    }
                })
                .collect()
        })
    }

    /// The text lines of the menu (disabled, not separators).
    fn lines(&self, item: &str) -> Vec<String> {
        self.menu(item)
            .into_iter()
            .filter(|e| !e.enabled && !e.separator && !is_action(&e.label))
            .map(|e| e.label)
            .collect()
    }

    /// Waits (on `LayoutUpdated`, bounded) until the menu's lines
    /// satisfy `pred`; returns them.
    fn wait_menu(&self, item: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        // The stream is dropped inside the runtime (before this guard).
        let _runtime = self.rt.enter();
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("com.canonical.dbusmenu")
            .unwrap()
            .member("LayoutUpdated")
            .unwrap()
            .build();
        let mut updates = self.rt.block_on(async {
            zbus::MessageStream::for_match_rule(rule, &self.conn, Some(64))
                .await
                .unwrap()
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.lines(item);
            if pred(&lines) {
                return lines;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(left, updates.next()).await });
            assert!(
                matches!(got, Ok(Some(Ok(_)))),
                "the menu did not change as awaited; it shows {lines:#?}"
            );
        }
    }

    /// Clicks the menu entry labelled `label`, as a panel does.
    fn click(&self, item: &str, label: &str) {
        let entry = self
            .menu(item)
            .into_iter()
            .find(|e| e.label == label)
            .unwrap_or_else(|| panic!("no menu entry {label}"));
        assert!(entry.enabled, "{label} is greyed out");
        self.rt.block_on(async {
            self.conn
                .call_method(
                    Some(item),
                    "/MenuBar",
                    Some("com.canonical.dbusmenu"),
                    "Event",
                    &(entry.id, "clicked", Value::I32(0), 0u32),
                )
                .await
                .unwrap();
        });
    }

    /// Waits until the recorded notifications satisfy `pred`.
    fn wait_notes(&self, pred: impl Fn(&[Note]) -> bool) -> Vec<Note> {
        let deadline = Instant::now() + WAIT;
        let (m, c) = &*self.notes;
        let mut notes = m.lock().unwrap();
        loop {
            if pred(&notes) {
                return notes.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "notifications not as awaited: {notes:#?}");
            notes = c.wait_timeout(notes, left).unwrap().0;
        }
    }

    fn notes(&self) -> Vec<Note> {
        self.notes.0.lock().unwrap().clone()
    }
}

fn is_action(label: &str) -> bool {
    [
        "Refresh Keys",
        "Request Certificate",
        "Copy public keys",
        "Pair…",
        "Quit",
    ]
    .contains(&label)
}

/// The lines `vmux agent status --json` says the menu must show: the
/// connection per signer, the certificate line, each key's line.
fn lines_of(status: &serde_json::Value) -> Vec<String> {
    let mut lines = Vec::new();
    for s in status["signers"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        if s["connected"].as_bool().unwrap() {
            lines.push(format!("Connected to {name}"));
        } else {
            lines.push(format!(
                "Disconnected from {name} since {}",
                vmux_home::time::utc(s["since"].as_u64().unwrap())
            ));
        }
    }
    lines.push(status["certificate"]["line"].as_str().unwrap().to_owned());
    for k in status["keys"].as_array().unwrap() {
        lines.push(k["line"].as_str().unwrap().to_owned());
    }
    lines
}

fn start_tray(agent: &Agent, address: &str) -> Daemon {
    Daemon::spawn(
        "tray",
        agent
            .cmd(&["tray"])
            .env("DBUS_SESSION_BUS_ADDRESS", address)
            .env("RUST_LOG", "info")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY"),
    )
}

#[test]
fn the_menu_says_what_status_says_and_its_entries_work() {
    let dir = test_dir();
    let (_bus, address) = session_bus(dir.path());
    let mut signer = Signer::init(dir.path(), "pi");
    let first = signer.keygen("ed25519", "work");
    signer.config("[certificates]\nauto_issue = false\n");
    signer.start();
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.start_with(&signer, &[]);

    // No tray host yet: the tray says so once and keeps running; the
    // icon appears when a host starts.
    let mut desktop = Desktop::start(&address, false);
    let tray = start_tray(&agent, &address);
    tray.wait_line(WAIT, |l| l.contains("no tray host on the session bus"));
    desktop.start_host();
    let item = desktop.wait_registered();

    // Connected, no certificate: the menu's lines are the status's.
    let lines = desktop.wait_menu(&item, |l| {
        l.first().is_some_and(|l| l == "Connected to pi") && l == lines_of(&agent.status())
    });
    assert_eq!(lines[1], "No session certificate");
    assert!(lines[2].contains("work"), "{lines:?}");
    assert_eq!(desktop.text_property(&item, "Status"), "Active");
    assert_eq!(desktop.text_property(&item, "IconName"), "security-high");
    assert_eq!(desktop.text_property(&item, "OverlayIconName"), "");
    let (title, text) = desktop.tooltip(&item);
    assert_eq!(title, "vmux agent laptop");
    assert!(text.contains("Connected to pi"), "{text}");
    let pixmaps: Vec<(i32, i32, Vec<u8>)> =
        desktop.property(&item, "IconPixmap").try_into().unwrap();
    assert!(
        pixmaps
            .iter()
            .all(|(w, h, d)| d.len() == (w * h * 4) as usize)
            && !pixmaps.is_empty()
    );

    // Refresh Keys: a key made on the running signer reaches ssh-add.
    signer.keygen("ecdsa", "added-later");
    let before = String::from_utf8_lossy(&agent.ssh_add(&["-l"]).stdout).into_owned();
    assert!(!before.contains("added-later"), "{before}");
    desktop.click(&item, "Refresh Keys");
    desktop.wait_menu(&item, |l| {
        l.iter().any(|l| l.contains("added-later")) && l == lines_of(&agent.status())
    });
    let after = String::from_utf8_lossy(&agent.ssh_add(&["-l"]).stdout).into_owned();
    assert!(after.contains("added-later"), "{after}");

    // Request Certificate: one approval on the signer, then the
    // certificate line and the badge.
    desktop.click(&item, "Request Certificate");
    desktop.wait_menu(&item, |l| {
        l.get(1)
            .is_some_and(|l| l.starts_with("Certificate valid until "))
            && l == lines_of(&agent.status())
    });
    assert_eq!(agent.status()["certificate"]["state"], "valid");
    assert_eq!(signer.approvals_of("certificate").len(), 1);
    assert_eq!(
        desktop.text_property(&item, "OverlayIconName"),
        "emblem-default"
    );

    // Copy public keys with no clipboard tool: the lines go to a file.
    desktop.click(&item, "Copy public keys");
    let notes = desktop.wait_notes(|n| {
        n.iter()
            .any(|n| matches!(n, Note::Notify { summary, .. } if summary == "Public keys written"))
    });
    assert!(!notes.is_empty());
    let written = std::fs::read_to_string(agent.home.join("public-keys.txt")).unwrap();
    let first_blob = first.split_whitespace().nth(1).unwrap();
    assert!(written.contains(first_blob), "{written}");
    assert_eq!(
        written,
        String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout)
    );

    // The signer stops: disconnected, hollow key, still the status's lines.
    let stopped = Instant::now();
    signer.kill();
    desktop.wait_menu(&item, |l| {
        l.first()
            .is_some_and(|l| l.starts_with("Disconnected from pi since "))
            && l == lines_of(&agent.status())
    });
    assert_eq!(desktop.text_property(&item, "IconName"), "security-low");
    // Figures for the record (not asserted: the machine may be busy).
    let rss = std::fs::read_to_string(format!("/proc/{}/status", tray.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?")
        .to_owned();
    eprintln!(
        "tray: signer stopped -> menu says so in {:?}; tray {rss}",
        stopped.elapsed()
    );
    let refresh = desktop
        .menu(&item)
        .into_iter()
        .find(|e| e.label == "Refresh Keys")
        .unwrap();
    assert!(
        !refresh.enabled,
        "Refresh Keys greyed out while disconnected"
    );

    // Quit ends the tray, not the agent.
    desktop.click(&item, "Quit");
    tray.wait_line(WAIT, |l| l.contains("the agent keeps running"));
    assert!(agent.ssh_add(&["-l"]).status.success());
}

/// A signer `pi` with an Ed25519 key `comment` (its public line) and no
/// automatic certificate, whose approver holds requests of `kind`
/// ([`held_approver`]), and an agent `laptop` paired with it; and the
/// FIFO the approver waits on.
fn held_world(
    dir: &std::path::Path,
    kind: &str,
    comment: &str,
) -> (Signer, String, Agent, std::path::PathBuf) {
    let mut signer = Signer::init(dir, "pi");
    let line = signer.keygen("ed25519", comment);
    signer.config("[certificates]\nauto_issue = false\n");
    let (approve, fifo) = held_approver(dir, kind);
    signer.start_approving("127.0.0.1:0", &approve, &[]);
    let mut agent = Agent::new(dir, "laptop");
    agent.start_with(&signer, &[]);
    (signer, line, agent, fifo)
}

/// An approver that waits for the test's answer on a FIFO (the person at
/// the signer) for requests of `kind` (`VMUX_REQUEST_KIND`); it approves
/// others at once.
fn held_approver(dir: &std::path::Path, kind: &str) -> (String, std::path::PathBuf) {
    let fifo = dir.join("answer");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let prog = dir.join("held-approver");
    write_script(
        &prog,
        &format!(
            "#!/bin/sh\necho \"asked: $VMUX_REQUEST_KIND\" >&2\n[ \"$VMUX_REQUEST_KIND\" = {kind} ] || exit 0\nread answer < '{}'\n[ \"$answer\" = yes ]\n",
            fifo.display()
        ),
    );
    (format!("command:{}", prog.display()), fifo)
}

#[test]
fn a_waiting_login_notifies_once_and_closes_when_answered_and_a_denial_says_so() {
    let (dir, _bus, address, desktop) = on_a_desktop(true);
    let (_signer, line, agent, fifo) = held_world(dir.path(), "sign", "desk-key");
    let sshd = Sshd::start(dir.path(), &format!("{line}\n"), &[]);
    let _tray = start_tray(&agent, &address);
    let item = desktop.wait_connected_item();

    let login = |sshd: &Sshd| {
        let mut c = Command::new("ssh");
        c.args(sshd.ssh_opts())
            .arg("-p")
            .arg(sshd.port.to_string())
            .arg(format!("{}@127.0.0.1", login_user()))
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        client_env(&mut c, &agent);
        c.spawn().unwrap()
    };

    // A login whose approval waits: one notification naming the host,
    // not before the signature has waited a second.
    let started = Instant::now();
    let ssh = login(&sshd);
    let notes = desktop.wait_notes(|n| !n.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "notified after {:?}",
        started.elapsed()
    );
    let Note::Notify {
        id, summary, body, ..
    } = notes[0].clone()
    else {
        panic!("{notes:?}")
    };
    assert_eq!(summary, "Approve on pi");
    assert!(
        body.contains("127.0.0.1") && body.contains("desk-key"),
        "{body}"
    );
    // While it is waiting, the menu says so and the icon asks for
    // attention.
    desktop.wait_menu(&item, |l| {
        l.iter().any(|l| l.starts_with("Waiting on pi: login to"))
    });
    assert_eq!(desktop.text_property(&item, "Status"), "NeedsAttention");
    // The vmux program sees where the login goes; another program on the
    // socket (this test, as a forwarded agent the agent cannot tell from a
    // local client would) sees that one waits, not where.
    let own = agent.status();
    assert_eq!(own["waiting"].as_array().map(Vec::len), Some(1), "{own}");
    let other = vmux_control::agent::Client::new(&agent.sock)
        .status()
        .unwrap();
    assert_eq!(other.pending_requests, 1, "{other:?}");
    assert_eq!(other.waiting, [], "{other:?}");
    assert_eq!(other.finished, [], "{other:?}");
    // The person takes 2 s in all (the scenario, not a wait for
    // anything): still one notification.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
    std::fs::write(&fifo, "yes\n").unwrap();
    let out = ssh.wait_with_output().unwrap();
    assert_success(&out, "the login approved on the tray");
    let notes = desktop.wait_notes(|n| n.contains(&Note::Close { id }));
    assert_eq!(
        notes.len(),
        2,
        "one notification, then its closing: {notes:#?}"
    );
    desktop.wait_menu(&item, |l| !l.iter().any(|l| l.starts_with("Waiting on")));
    assert_eq!(desktop.text_property(&item, "Status"), "Active");

    // A login denied on the signer: its notification says so.
    let mut ssh = login(&sshd);
    let notes = desktop.wait_notes(|n| n.len() == 3);
    let Note::Notify { id: second, .. } = notes[2].clone() else {
        panic!("{notes:?}")
    };
    std::fs::write(&fifo, "no\n").unwrap();
    assert!(!ssh.wait().unwrap().success());
    let notes = desktop.wait_notes(|n| n.len() == 4);
    match &notes[3] {
        Note::Notify {
            replaces, summary, ..
        } => {
            assert_eq!((*replaces, summary.as_str()), (second, "Denied on pi"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(desktop.notes().len(), 4, "{:#?}", desktop.notes());
}

#[test]
fn the_tray_needs_a_session_bus_and_says_so() {
    let dir = test_dir();
    let agent = Agent::new(dir.path(), "laptop");
    let out = run(agent.cmd(&["tray"]).env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", dir.path().join("no-bus").display()),
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no session bus"), "{err}");
}

/// Sends the notification server's `ActionInvoked` signal for
/// notification `id` and action `key` from `conn`, as a click does.
async fn click_notification(conn: &zbus::Connection, id: u32, key: &str) {
    conn.emit_signal(
        None::<&str>,
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications",
        "ActionInvoked",
        &(id, key),
    )
    .await
    .unwrap();
}

#[test]
fn the_pairing_code_shows_as_a_notification_and_confirming_there_pairs() {
    let (dir, _bus, address, desktop) = on_a_desktop(false);
    let mut signer = Signer::init(dir.path(), "pi");
    signer.keygen("ed25519", "work");
    signer.start();
    let mut agent = Agent::new(dir.path(), "laptop");
    agent.confirm_pairings = false;
    agent.start(&["--signer", &signer.addr]);
    let printed = agent
        .daemon()
        .wait_line(WAIT, |l| l.starts_with("vmux agent: pairing code "));
    let code = pairing_code_of(&printed).unwrap();
    let tray = start_tray(&agent, &address);
    let notes = desktop.wait_notes(|n| !n.is_empty());
    let Note::Notify {
        id, summary, body, ..
    } = notes[0].clone()
    else {
        panic!("{notes:?}")
    };
    assert_eq!(summary, format!("Pairing code {code}"));
    assert!(body.contains(&signer.addr), "{body}");
    assert_eq!(agent.status()["signers"][0]["connected"], false);
    // Another client of the session bus clicks "confirm" for it (any
    // client can emit the signal; the id is a small counter): ignored.
    desktop.rt.block_on(async {
        let intruder = zbus::connection::Builder::address(address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        click_notification(&intruder, id, "confirm").await;
    });
    tray.wait_line(WAIT, |l| {
        l.contains("ignored a notification action not sent by the notification server")
    });
    assert_eq!(agent.status()["signers"][0]["connected"], false);
    assert_eq!(
        agent.status()["signers"][0]["pairing_code"],
        code.as_str(),
        "the pairing still waits for the person"
    );
    // The person compared the codes and clicks the notification's
    // confirm button.
    desktop
        .rt
        .block_on(click_notification(&desktop.conn, id, "confirm"));
    agent.wait_connected(1);
    assert_eq!(agent.status()["signers"][0]["connected"], true);
    // The pairing is over: its notification is closed.
    desktop.wait_notes(|n| n.contains(&Note::Close { id }));
}

#[test]
fn install_starts_the_tray_with_graphical_sessions() {
    let dir = test_dir();
    let home = dir.path().join("my home");
    let files = agent_install_print(&home);
    let (_, body) = files
        .iter()
        .find(|(path, _)| path.starts_with('/') && path.ends_with("/autostart/vmux-tray.desktop"))
        .unwrap_or_else(|| panic!("no autostart entry in {files:?}"));
    let entry = dir.path().join("vmux-tray.desktop");
    std::fs::write(&entry, body).unwrap();
    let Ok(check) = Command::new("desktop-file-validate").arg(&entry).output() else {
        panic!("desktop-file-validate is missing: ./scripts/test installs desktop-file-utils");
    };
    assert!(
        check.status.success() && check.stdout.is_empty(),
        "desktop-file-validate: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        body.contains(&format!(
            "Exec={} --home \"{}\" agent tray\n",
            env!("CARGO_BIN_EXE_vmux"),
            home.display()
        )),
        "{body}"
    );
}

/// The package's system-wide autostart entry runs `vmux agent tray
/// --if-set-up`: a user who never ran the agent gets no tray (and no
/// error, with no session bus either); `vmux agent uninstall` hides that
/// entry for its user instead of letting it come back.
#[test]
fn the_system_wide_entry_starts_no_tray_for_a_user_who_never_ran_the_agent_and_uninstall_hides_it()
{
    let dir = test_dir();
    let out = vmux()
        .arg("--home")
        .arg(dir.path().join("fresh"))
        .args(["agent", "tray", "--if-set-up"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");

    let uninstall = |with_system_entry: bool| {
        let d = dir
            .path()
            .join(if with_system_entry { "with" } else { "without" });
        let system = d.join("xdg/autostart");
        std::fs::create_dir_all(&system).unwrap();
        if with_system_entry {
            std::fs::write(
                system.join("vmux-tray.desktop"),
                "[Desktop Entry]\nType=Application\nName=vmux tray\nExec=/usr/bin/vmux agent tray --if-set-up\n",
            )
            .unwrap();
        }
        ok(vmux()
            .args(["agent", "uninstall"])
            .env("HOME", &d)
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("XDG_CONFIG_DIRS", d.join("xdg")));
        std::fs::read_to_string(d.join("config/autostart/vmux-tray.desktop")).ok()
    };
    let hidden = uninstall(true).expect("a user entry hiding the system one");
    assert!(hidden.contains("\nHidden=true\n"), "{hidden}");
    assert_eq!(uninstall(false), None, "nothing to hide, nothing written");
}

#[test]
fn clicks_while_a_certificate_request_waits_ask_the_signer_once() {
    let (dir, _bus, address, desktop) = on_a_desktop(true);
    let (signer, _, agent, fifo) = held_world(dir.path(), "certificate", "work");
    let tray = start_tray(&agent, &address);
    let item = desktop.wait_connected_item();
    // Any client of the session bus can click the menu: a burst of
    // Request Certificate clicks while the person at the signer has not
    // answered the first is one request, not a flood of prompts.
    desktop.click(&item, "Request Certificate");
    signer
        .daemon()
        .wait_line(WAIT, |l| l.contains("asked: certificate"));
    for _ in 0..5 {
        desktop.click(&item, "Request Certificate");
    }
    tray.wait_nth(5, WAIT, |l| l.contains("already under way; click ignored"));
    std::fs::write(&fifo, "yes\n").unwrap();
    desktop.wait_menu(&item, |l| {
        l.iter().any(|l| l.starts_with("Certificate valid"))
    });
    assert_eq!(
        signer.daemon().count(|l| l.contains("asked: certificate")),
        1,
        "the signer was asked more than once"
    );
}
