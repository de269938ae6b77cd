//! The vmux agent on a Linux desktop: a tray icon and notifications.
//!
//! # Brief overview
//!
//! `vmux agent tray` is a process of its own beside the agent. It asks
//! the agent's control socket for the status and then, with `watch N`,
//! for each next change (no timer while the agent runs), and shows it on
//! the session bus:
//!
//! - [`model`]: the icon's state and the menu's lines, from the status
//!   (no I/O).
//! - `item`: the `org.kde.StatusNotifierItem` object, registered with
//!   the tray host (`org.kde.StatusNotifierWatcher`) whenever one is
//!   there; without one the tray says so once and keeps running.
//! - `menu`: the `com.canonical.dbusmenu` menu; its actions (Refresh
//!   Keys, Request Certificate, Copy public keys, Pair…, Quit) go to the
//!   agent as control commands.
//! - [`notes`] and `notify`: "Approve on NAME" while a request has
//!   waited on a signer for a while, one per burst, closed when it is
//!   answered; the pairing code while a pairing waits.
//!
//! It holds no keys and no secrets; the agent runs exactly as it does
//! without it, and stopping or crashing the tray changes nothing for SSH
//! clients. It is the vmux program, so the agent lets it ask for a
//! certificate and confirm pairings (as it lets `vmux agent cert`).
#![deny(missing_docs)]

pub mod icons;
mod item;
mod menu;
pub mod model;
pub mod notes;
mod notify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use vmux_control::agent::{Client, Status, WATCH_WAIT};
use vmux_control::ControlError;
use vmux_home::sync::lock;
use vmux_home::time::now_ms;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use crate::item::{Item, ITEM_PATH};
use crate::menu::{Menu, SharedView, Shown, MENU_PATH};
use crate::model::{Action, View};
use crate::notes::{Effect, Key, Notes};
use crate::notify::{Notifier, SHORT_LIVED_MS};

const WATCHER: &str = "org.kde.StatusNotifierWatcher";
const WATCHER_PATH: &str = "/StatusNotifierWatcher";
/// The shortest time between two status answers the tray asks for.
const COALESCE: Duration = Duration::from_millis(100);
/// How often to look for an agent that is not running.
const AGENT_RETRY: Duration = Duration::from_secs(1);

/// How the tray runs.
#[derive(Debug, Clone)]
pub struct TrayConfig {
    /// The agent's socket.
    pub socket: PathBuf,
    /// Show notifications.
    pub notifications: bool,
    /// How long a request waits before its notification shows.
    pub notify_after: Duration,
    /// Where "Copy public keys" writes the lines when no clipboard tool
    /// is there.
    pub keys_file: PathBuf,
}

/// Why the tray could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrayError {
    /// No session bus.
    #[error("no session bus to show the tray on ({0}); the tray runs in a desktop session (DBUS_SESSION_BUS_ADDRESS)")]
    NoBus(zbus::Error),
    /// The bus refused something.
    #[error("the session bus refused the tray: {0}")]
    Bus(#[from] zbus::Error),
}

/// Prints one stable, user-facing line on stderr (`vmux tray: …`).
fn notice(line: &str) {
    eprintln!("vmux tray: {line}");
}

/// Runs the tray until Quit is clicked or `stop` resolves.
pub async fn run(
    config: TrayConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), TrayError> {
    let conn = Connection::session().await.map_err(TrayError::NoBus)?;
    let socket_shown = config.socket.display().to_string();
    let shown: SharedView = Arc::new(Mutex::new(Shown {
        view: View::no_agent(&socket_shown),
        revision: 1,
    }));
    let (clicks_tx, mut clicks) = mpsc::channel(8);
    conn.object_server()
        .at(
            ITEM_PATH,
            Item {
                shown: shown.clone(),
            },
        )
        .await?;
    conn.object_server()
        .at(
            MENU_PATH,
            Menu {
                shown: shown.clone(),
                clicks: clicks_tx,
            },
        )
        .await?;
    let name = format!("org.kde.StatusNotifierItem-{}-1", std::process::id());
    conn.request_name(name.as_str()).await?;

    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let mut hosts = dbus
        .receive_name_owner_changed_with_args(&[(0, WATCHER)])
        .await?;
    if register(&conn, &name).await {
        notice("tray icon shown");
    } else {
        notice("no tray host on the session bus (no StatusNotifierWatcher); notifications still work, and the icon appears when a tray host starts");
    }

    let (status_tx, mut statuses) = mpsc::channel(4);
    tokio::spawn(watch_agent(config.socket.clone(), status_tx));

    let notifier = Notifier::new(&conn);
    let mut invoked = match notifier.actions().await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for notification actions");
            None
        }
    };
    let mut notes = Notes::new(config.notify_after);
    let mut due_at: Option<u64> = None;
    let mut last: Option<Status> = None;
    let mut running: HashMap<Action, tokio::task::JoinHandle<()>> = HashMap::new();
    tokio::pin!(stop);
    loop {
        let sleep = due_at.map(|t| Duration::from_millis(t.saturating_sub(now_ms())));
        tokio::select! {
            () = &mut stop => break,
            update = statuses.recv() => {
                let Some(update) = update else { break };
                let view = match &update {
                    Some(s) => View::of(s),
                    None => View::no_agent(&socket_shown),
                };
                show(&conn, &shown, view).await;
                if config.notifications {
                    let effects = notes.update(update.as_ref());
                    carry_out(&notifier, &mut notes, effects).await;
                    let (effects, next) = notes.due(now_ms());
                    carry_out(&notifier, &mut notes, effects).await;
                    due_at = next;
                }
                last = update;
            }
            () = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() => {
                let (effects, next) = notes.due(now_ms());
                carry_out(&notifier, &mut notes, effects).await;
                due_at = next;
            }
            click = clicks.recv() => {
                let Some(action) = click else { break };
                info!(?action, "menu clicked");
                if action == Action::Quit {
                    notice("quit from the menu; the agent keeps running");
                    break;
                }
                if action == Action::Pair {
                    pair(&notifier, &mut notes, last.as_ref()).await;
                    continue;
                }
                // One run of each action at a time: any client of the bus
                // can send clicks, and a certificate request waits for a
                // person at the signer.
                if running.get(&action).is_some_and(|h| !h.is_finished()) {
                    info!(?action, "already under way; click ignored");
                    continue;
                }
                running.insert(action, tokio::spawn(act(action, config.clone(), notifier.clone())));
            }
            changed = futures_next(&mut hosts) => {
                let Some(changed) = changed else { continue };
                let appeared = changed.args().is_ok_and(|a| a.new_owner().is_some());
                if appeared && register(&conn, &name).await {
                    notice("a tray host appeared; tray icon shown");
                }
            }
            msg = next_action(&mut invoked, &notifier) => {
                if let Some((id, key)) = msg {
                    if let Some(Key::Pairing(_, code)) = notes.pairing_of(id).cloned() {
                        tokio::spawn(answer_pairing(key, code, config.socket.clone(), notifier.clone()));
                    }
                }
            }
        }
    }
    Ok(())
}

async fn futures_next<S: zbus::export::futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

/// The next `ActionInvoked` (id, action key) from the notification
/// server; pending forever without a stream.
async fn next_action(
    s: &mut Option<zbus::MessageStream>,
    notifier: &Notifier,
) -> Option<(u32, String)> {
    let Some(s) = s else {
        return std::future::pending().await;
    };
    loop {
        match futures_next(s).await {
            Some(Ok(msg)) => {
                if !notifier.sent_by_server(&msg) {
                    warn!("ignored a notification action not sent by the notification server");
                    continue;
                }
                if let Ok(v) = msg.body().deserialize::<(u32, String)>() {
                    return Some(v);
                }
            }
            Some(Err(_)) => continue,
            None => return std::future::pending().await,
        }
    }
}

/// Registers the item with the tray host; false when there is none.
async fn register(conn: &Connection, name: &str) -> bool {
    let args = (name,);
    let call = conn.call_method(
        Some(WATCHER),
        WATCHER_PATH,
        Some(WATCHER),
        "RegisterStatusNotifierItem",
        &args,
    );
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "no tray host");
            false
        }
        Err(_) => false,
    }
}

/// Shows `view` if it differs from what is shown, and tells the host.
async fn show(conn: &Connection, shown: &SharedView, view: View) {
    let (old, revision) = {
        let mut s = lock(shown);
        if s.view == view {
            return;
        }
        s.revision = s.revision.wrapping_add(1);
        let old = std::mem::replace(&mut s.view, view.clone());
        (old, s.revision)
    };
    let emit = async {
        let menu = SignalEmitter::new(conn, MENU_PATH)?;
        Menu::layout_updated(&menu, revision, 0).await?;
        let item = SignalEmitter::new(conn, ITEM_PATH)?;
        if old.icon != view.icon {
            Item::new_icon(&item).await?;
        }
        if old.certificate != view.certificate {
            Item::new_overlay_icon(&item).await?;
        }
        if old.status() != view.status() {
            Item::new_status(&item, view.status()).await?;
        }
        if old.tooltip != view.tooltip {
            Item::new_tool_tip(&item).await?;
        }
        Ok::<_, zbus::Error>(())
    };
    if let Err(e) = emit.await {
        warn!(error = %e, "cannot tell the tray host about the change");
    }
}

/// Shows, replaces and closes notifications.
async fn carry_out(notifier: &Notifier, notes: &mut Notes, effects: Vec<Effect>) {
    for effect in effects {
        let result = match &effect {
            Effect::Show {
                key,
                title,
                body,
                actions,
            } => {
                let id = notifier.show(title, body, actions, 0, 0).await;
                notes.shown(key, id.as_ref().ok().copied());
                id.map(drop)
            }
            Effect::Replace { id, title, body } => notifier
                .show(title, body, &[], *id, SHORT_LIVED_MS)
                .await
                .map(drop),
            Effect::Close { id } => notifier.close(*id).await,
        };
        if let Err(e) = result {
            debug!(error = %e, "notification not shown");
        }
    }
}

/// Asks the agent for its status, then for each next change; `None`
/// while no agent answers (looked for again every [`AGENT_RETRY`]).
async fn watch_agent(socket: PathBuf, tx: mpsc::Sender<Option<Status>>) {
    let agent = Client::new(socket).with_timeout(WATCH_WAIT + Duration::from_secs(15));
    let mut seen: Option<u64> = None;
    let mut away = false;
    loop {
        let a = agent.clone();
        let answer = tokio::task::spawn_blocking(move || match seen {
            None => a.status(),
            Some(n) => a.watch(n),
        })
        .await;
        let status = match answer {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                if !away {
                    notice(&e.to_string());
                }
                None
            }
            Err(_) => None,
        };
        match status {
            Some(status) => {
                if away {
                    notice("the agent answers again");
                    away = false;
                }
                seen = Some(status.generation);
                if tx.send(Some(status)).await.is_err() {
                    return;
                }
                // Changes that come faster than this (a burst of
                // signatures) are shown together: the tray never costs
                // the agent more than a few status answers a second.
                tokio::time::sleep(COALESCE).await;
            }
            None => {
                seen = None;
                if !away && tx.send(None).await.is_err() {
                    return;
                }
                away = true;
                tokio::time::sleep(AGENT_RETRY).await;
            }
        }
    }
}

/// A control request to the agent on `socket`, off the runtime; a
/// failure or refusal in a sentence.
async fn ask<T: Send + 'static>(
    socket: &std::path::Path,
    request: impl FnOnce(&Client) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, String> {
    let agent = Client::new(socket);
    match tokio::task::spawn_blocking(move || request(&agent)).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Carries out a menu action; says how it went when there is something
/// to say.
async fn act(action: Action, config: TrayConfig, notifier: Notifier) {
    let say = |title: String, body: String| {
        let n = notifier.clone();
        async move {
            if let Err(e) = n.show(&title, &body, &[], 0, SHORT_LIVED_MS).await {
                notice(&format!("{title}: {body}"));
                debug!(error = %e, "notification not shown");
            }
        }
    };
    match action {
        Action::RefreshKeys => match ask(&config.socket, Client::refresh).await {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                say(
                    "Keys not refreshed".into(),
                    "No signer is connected; the cached keys are unchanged.".into(),
                )
                .await
            }
            Err(e) => say("Keys not refreshed".into(), e).await,
        },
        Action::RequestCertificate => {
            if let Err(e) = ask(&config.socket, Client::cert).await {
                say("No certificate".into(), e).await;
            }
        }
        Action::CopyPublicKeys => {
            let text = match ask(&config.socket, Client::public_keys).await {
                Ok(l) if !l.is_empty() => l.join("\n") + "\n",
                Ok(_) => {
                    return say("No public keys".into(), "The agent lists no keys.".into()).await
                }
                Err(e) => return say("No public keys".into(), e).await,
            };
            let (title, body) = copy(text, &config.keys_file).await;
            say(title, body).await;
        }
        Action::Pair | Action::Quit => {}
    }
}

/// Puts `text` on the clipboard (wl-copy, xclip or xsel), or else
/// writes it to `file`; returns what to tell the person.
async fn copy(text: String, file: &std::path::Path) -> (String, String) {
    let tools: [(&str, &[&str], &str); 3] = [
        ("wl-copy", &[], "WAYLAND_DISPLAY"),
        ("xclip", &["-selection", "clipboard", "-in"], "DISPLAY"),
        ("xsel", &["--clipboard", "--input"], "DISPLAY"),
    ];
    for (tool, args, display) in tools {
        if std::env::var_os(display).is_none() {
            continue;
        }
        let spawned = tokio::process::Command::new(tool)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let Ok(mut child) = spawned else { continue };
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            if stdin.write_all(text.as_bytes()).await.is_err() {
                continue;
            }
        }
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            if status.success() {
                return (
                    "Public keys copied".into(),
                    format!("{} key line(s) are on the clipboard.", text.lines().count()),
                );
            }
        }
    }
    match vmux_home::write_private(file, text.as_bytes()) {
        Ok(()) => (
            "Public keys written".into(),
            format!(
                "No clipboard tool (wl-copy, xclip, xsel) answered; the key lines are in {}.",
                file.display()
            ),
        ),
        Err(e) => ("No public keys".into(), e.to_string()),
    }
}

/// Pair…: shows the waiting pairing's code with Confirm and Deny, or
/// how to pair.
async fn pair(notifier: &Notifier, notes: &mut Notes, status: Option<&Status>) {
    let waiting = status.into_iter().flat_map(|s| &s.signers).find_map(|s| {
        s.pairing_code
            .as_ref()
            .map(|c| (s.address.clone(), c.clone()))
    });
    match waiting {
        Some((address, code)) => {
            carry_out(notifier, notes, vec![Effect::pairing(&address, &code)]).await;
        }
        None => {
            let _ = notifier
                .show(
                    "No pairing is waiting",
                    "To pair a signer run `vmux agent pair --signer HOST:PORT`; an agent with no signer pairs with the first one it finds on the local network. Its code then shows here.",
                    &[],
                    0,
                    SHORT_LIVED_MS,
                )
                .await;
        }
    }
}

/// The person clicked Confirm or Deny on a pairing's notification.
async fn answer_pairing(key: String, code: String, socket: PathBuf, notifier: Notifier) {
    let answered = match key.as_str() {
        "confirm" => ask(&socket, move |a| a.pair_confirm(&code).map(drop)).await,
        "deny" => ask(&socket, |a| a.pair_deny().map(drop)).await,
        _ => return,
    };
    match answered {
        Ok(_) => info!(%key, "pairing answered from the notification"),
        Err(e) => {
            let _ = notifier
                .show("Pairing not answered", &e, &[], 0, SHORT_LIVED_MS)
                .await;
        }
    }
}
