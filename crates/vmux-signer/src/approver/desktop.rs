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
        Decision::Sign(_) if d.forwarded() => {
            "vmux: SSH signature requested through a FORWARDED agent"
        }
        Decision::Sign(_) => "vmux: SSH signature requested",
    }
}

/// Escapes what notification servers read as markup in a body (the
/// specification's `body-markup` is a subset of HTML): `&`, `<`, `>`,
/// quotes. Without it, a peer-chosen name such as `<b>` or `&lt;` is
/// rendered, or makes the server drop the body.
fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The notification's body: the summary (which puts the forwarded mark
/// first), escaped.
fn body(d: &Decision) -> String {
    escape_markup(&d.summary())
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
                body(d),
                actions,
                hints,
                timeout_ms,
            ),
        )
        .await?;
    let id: u32 = reply.body().deserialize()?;
    // Only the notification server that showed the prompt answers it: any
    // client of the session bus can emit an ActionInvoked signal, and
    // notification ids are small counters.
    let server = reply.header().sender().map(|s| s.to_string());
    let answer = async {
        while let Some(Ok(msg)) = signals.next().await {
            let header = msg.header();
            if header.sender().map(|s| s.to_string()) != server {
                tracing::warn!("ignored a notification signal not sent by the notification server");
                continue;
            }
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
        // The deadline runs from the request's arrival; a request that has
        // none left is not shown.
        let deadline = tokio::time::Instant::now() + timeout;
        if timeout.is_zero() {
            return Verdict::TimedOut;
        }
        match ask(decision, timeout).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "no notification server answered; asking on the terminal");
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.fallback.decide(decision, left).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approver::{Claims, SignDecision, Source};
    use crate::purpose::Purpose;

    #[test]
    fn the_body_is_escaped_and_says_forwarded_first() {
        let sign = |forwarded| {
            Decision::Sign(SignDecision {
                source: Source {
                    name: "<b>laptop</b> & co".into(),
                    id: "abcd".into(),
                },
                key_fingerprint: "SHA256:x".into(),
                key_comment: "k".into(),
                purpose: Purpose::Login {
                    user: format!("<span size='1'>{}</span>", "u".repeat(180)),
                },
                claims: Claims {
                    dest_host: Some("example.org".into()),
                    forwarded,
                    ..Claims::default()
                },
                window_max_seconds: 0,
                data: Default::default(),
            })
        };
        let d = sign(true);
        let b = body(&d);
        assert!(!b.contains('<') && !b.contains('>'), "{b}");
        assert!(b.contains("&lt;b&gt;laptop&lt;/b&gt; &amp; co"), "{b}");
        assert!(b.starts_with("Through a FORWARDED agent"), "{b}");
        assert!(title(&d).contains("FORWARDED"));
        let local = sign(false);
        assert_eq!(title(&local), "vmux: SSH signature requested");
        assert!(!body(&local).contains("FORWARDED"));
    }
}
