//! `--approve desktop`: a desktop notification with Approve and Deny
//! actions, through the freedesktop notification D-Bus interface on the
//! session bus; the closest thing to the brief's Face ID sheet. When no
//! notification server answers, it asks on the terminal instead. No
//! answer before the timeout is a denial.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::message::Type as MessageType;
use zbus::zvariant::Value;
use zbus::{Connection, MatchRule, MessageStream};

use super::tty::TtyApprover;
use super::{Approver, Decision, Verdict};

const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// Asks through desktop notifications.
pub struct DesktopApprover {
    fallback: TtyApprover,
}

impl DesktopApprover {
    /// A desktop approver (with the terminal as fallback).
    pub fn new() -> DesktopApprover {
        DesktopApprover {
            fallback: TtyApprover::new(),
        }
    }
}

impl Default for DesktopApprover {
    fn default() -> Self {
        Self::new()
    }
}

fn title(d: &Decision) -> &'static str {
    match d {
        Decision::Pair(_) => "vmux: pair a new agent?",
        Decision::Certificate(_) => "vmux: issue a session certificate?",
        Decision::Sign(_) => "vmux: SSH signature requested",
    }
}

/// Shows the notification and waits for an action. `Err` means no
/// notification server could be reached.
async fn ask(d: &Decision, timeout: Duration) -> zbus::Result<Verdict> {
    let conn = Connection::session().await?;
    // Listen before asking, so that a quick answer is not missed.
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface(SERVICE)?
        .path(PATH)?
        .build();
    let mut signals = MessageStream::for_match_rule(rule, &conn, Some(64)).await?;
    let mut hints: HashMap<&str, Value<'_>> = HashMap::new();
    hints.insert("urgency", Value::U8(2));
    let actions = vec!["approve", "Approve", "deny", "Deny"];
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let reply = conn
        .call_method(
            Some(SERVICE),
            PATH,
            Some(SERVICE),
            "Notify",
            &(
                "vmux",
                0u32,
                "dialog-password",
                title(d),
                d.summary(),
                actions,
                hints,
                timeout_ms,
            ),
        )
        .await?;
    let id: u32 = reply.body().deserialize()?;
    let answer = async {
        while let Some(Ok(msg)) = signals.next().await {
            let header = msg.header();
            match header.member().map(|m| m.as_str()) {
                Some("ActionInvoked") => {
                    if let Ok((nid, key)) = msg.body().deserialize::<(u32, String)>() {
                        if nid == id {
                            return if key == "approve" {
                                Verdict::Approve
                            } else {
                                Verdict::Deny
                            };
                        }
                    }
                }
                Some("NotificationClosed") => {
                    if let Ok((nid, _reason)) = msg.body().deserialize::<(u32, u32)>() {
                        if nid == id {
                            return Verdict::Deny;
                        }
                    }
                }
                _ => {}
            }
        }
        Verdict::Deny
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(v) => Ok(v),
        Err(_) => {
            let _ = conn
                .call_method(
                    Some(SERVICE),
                    PATH,
                    Some(SERVICE),
                    "CloseNotification",
                    &(id,),
                )
                .await;
            Ok(Verdict::TimedOut)
        }
    }
}

impl Approver for DesktopApprover {
    async fn decide(&self, decision: &Decision, timeout: Duration) -> Verdict {
        match ask(decision, timeout).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "no notification server answered; asking on the terminal");
                self.fallback.decide(decision, timeout).await
            }
        }
    }
}
