//! Workstation notifications through the freedesktop notification
//! interface (`org.freedesktop.Notifications` on the session bus), as
//! the signer's desktop approver shows its prompts. Every call is bounded
//! in time; a missing notification server makes calls fail, never wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmux_home::sync::lock;
use zbus::message::Type as MessageType;
use zbus::zvariant::Value;
use zbus::{Connection, MatchRule, MessageStream};

const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
/// Longest a call to the notification server may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a notification that reports an outcome stays, milliseconds.
pub const SHORT_LIVED_MS: i32 = 8000;

/// Shows and closes notifications.
#[derive(Clone)]
pub struct Notifier {
    conn: Connection,
    /// The unique bus name of the server that showed our notifications:
    /// only its `ActionInvoked` signals are answers (any client of the
    /// bus can emit one, and ids are small counters).
    server: Arc<Mutex<Option<String>>>,
}

async fn bounded<T>(f: impl std::future::Future<Output = zbus::Result<T>>) -> zbus::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| zbus::Error::Failure("the notification server did not answer".into()))?
}

/// Text for a notification body: some servers read markup.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Notifier {
    /// Notifications on `conn`'s bus.
    pub fn new(conn: &Connection) -> Notifier {
        Notifier {
            conn: conn.clone(),
            server: Arc::default(),
        }
    }

    /// Shows a notification (replacing `replaces` when not 0) and returns
    /// its id. `expire_ms` -1 lets the server decide, 0 keeps it until
    /// closed.
    pub async fn show(
        &self,
        title: &str,
        body: &str,
        actions: &[(&str, &str)],
        replaces: u32,
        expire_ms: i32,
    ) -> zbus::Result<u32> {
        let actions: Vec<&str> = actions.iter().flat_map(|(k, l)| [*k, *l]).collect();
        let mut hints: HashMap<&str, Value<'_>> = HashMap::new();
        hints.insert("urgency", Value::U8(1));
        hints.insert("desktop-entry", Value::from("vmux-tray"));
        let reply = bounded(self.conn.call_method(
            Some(SERVICE),
            PATH,
            Some(SERVICE),
            "Notify",
            &(
                "vmux",
                replaces,
                "dialog-password",
                title,
                escape(body),
                actions,
                hints,
                expire_ms,
            ),
        ))
        .await?;
        if let Some(sender) = reply.header().sender() {
            *lock(&self.server) = Some(sender.to_string());
        }
        reply.body().deserialize()
    }

    /// Whether `msg` comes from the server that showed our notifications.
    pub fn sent_by_server(&self, msg: &zbus::Message) -> bool {
        let sender = msg.header().sender().map(|s| s.to_string());
        sender.is_some() && *lock(&self.server) == sender
    }

    /// Closes notification `id`.
    pub async fn close(&self, id: u32) -> zbus::Result<()> {
        bounded(self.conn.call_method(
            Some(SERVICE),
            PATH,
            Some(SERVICE),
            "CloseNotification",
            &(id,),
        ))
        .await
        .map(drop)
    }

    /// The notification server's `ActionInvoked` signals.
    pub async fn actions(&self) -> zbus::Result<MessageStream> {
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(SERVICE)?
            .member("ActionInvoked")?
            .path(PATH)?
            .build();
        MessageStream::for_match_rule(rule, &self.conn, Some(16)).await
    }
}
