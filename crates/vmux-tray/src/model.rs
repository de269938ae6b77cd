//! What the tray shows, computed from the agent's status: the icon's
//! state and the menu's lines. No I/O; the D-Bus side (`item`,
//! `crate::menu`) only serves what this says.

use vmux_control::agent::{Status, WaitingRequest};
use vmux_home::time::utc;

/// The icon's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icon {
    /// At least one signer connected: a filled key.
    Connected,
    /// No signer connected (or no agent): a hollow key.
    Disconnected,
}

impl Icon {
    /// The themed icon name (freedesktop Icon Naming Specification).
    pub fn name(self) -> &'static str {
        match self {
            Icon::Connected => "security-high",
            Icon::Disconnected => "security-low",
        }
    }
}

/// Themed name of the attention icon (a request waits for approval, or
/// a pairing for its code).
pub const ATTENTION_ICON: &str = "dialog-password";
/// Themed name of the badge shown while a session certificate is valid.
pub const CERTIFICATE_BADGE: &str = "emblem-default";

/// The menu's entries that do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pull the key lists again.
    RefreshKeys,
    /// Ask for a session certificate now.
    RequestCertificate,
    /// Put the public-key lines on the clipboard.
    CopyPublicKeys,
    /// Show the pairing code, or how to pair.
    Pair,
    /// Close the tray (the agent keeps running).
    Quit,
}

impl Action {
    /// Every action, in menu order, with its dbusmenu id.
    pub const ALL: [(i32, Action); 5] = [
        (1, Action::RefreshKeys),
        (2, Action::RequestCertificate),
        (3, Action::CopyPublicKeys),
        (4, Action::Pair),
        (5, Action::Quit),
    ];

    /// The label a person clicks.
    pub fn label(self) -> &'static str {
        match self {
            Action::RefreshKeys => "Refresh Keys",
            Action::RequestCertificate => "Request Certificate",
            Action::CopyPublicKeys => "Copy public keys",
            Action::Pair => "Pair…",
            Action::Quit => "Quit",
        }
    }

    /// The action with dbusmenu id `id`.
    pub fn by_id(id: i32) -> Option<Action> {
        Action::ALL.iter().find(|(i, _)| *i == id).map(|(_, a)| *a)
    }
}

/// A line of the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Text that says something (not clickable).
    Line(String),
    /// A separator.
    Separator,
    /// Something to click; `enabled` false greys it out.
    Action(Action, bool),
}

/// Everything the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The icon.
    pub icon: Icon,
    /// A request or a pairing waits for a person.
    pub attention: bool,
    /// A session certificate is valid (the badge).
    pub certificate: bool,
    /// The tooltip's title and text.
    pub tooltip: (String, String),
    /// The menu, top to bottom.
    pub entries: Vec<Entry>,
}

impl View {
    /// `Active`, or `NeedsAttention` while something waits for a person.
    pub fn status(&self) -> &'static str {
        if self.attention {
            "NeedsAttention"
        } else {
            "Active"
        }
    }

    /// The view while no agent answers on `socket`.
    pub fn no_agent(socket: &str) -> View {
        let line = format!("The agent is not running ({socket})");
        View {
            icon: Icon::Disconnected,
            attention: false,
            certificate: false,
            tooltip: ("vmux".into(), line.clone()),
            entries: vec![
                Entry::Line(line),
                Entry::Separator,
                Entry::Action(Action::RefreshKeys, false),
                Entry::Action(Action::RequestCertificate, false),
                Entry::Action(Action::CopyPublicKeys, false),
                Entry::Action(Action::Pair, true),
                Entry::Separator,
                Entry::Action(Action::Quit, true),
            ],
        }
    }

    /// The view of an agent's status.
    pub fn of(status: &Status) -> View {
        let mut lines = Vec::new();
        if status.signers.is_empty() {
            lines.push("No signer paired".to_owned());
        }
        for s in &status.signers {
            lines.push(signer_line(s));
            if let Some(code) = &s.pairing_code {
                lines.push(pairing_line(code, &s.address, s.pairing_signer_approved));
            }
        }
        lines.push(status.certificate.line.clone());
        for w in &status.waiting {
            lines.push(format!("Waiting on {}: {}", w.signer, summary(w)));
        }
        if status.pending_requests > status.waiting.len() {
            lines.push(format!(
                "{} more request(s) waiting",
                status.pending_requests - status.waiting.len()
            ));
        }
        if status.keys.is_empty() {
            lines.push("No keys cached".to_owned());
        }
        lines.extend(status.keys.iter().map(|k| k.line.clone()));
        let connected = status.signers.iter().any(|s| s.connected);
        let pairing = status.signers.iter().any(|s| s.pairing_code.is_some());
        let certificate = status.certificate.state == "valid";
        let tooltip_text = status
            .signers
            .iter()
            .map(signer_line)
            .chain([status.certificate.line.clone()])
            .collect::<Vec<_>>()
            .join("\n");
        let mut entries: Vec<Entry> = lines.into_iter().map(Entry::Line).collect();
        entries.push(Entry::Separator);
        entries.extend([
            Entry::Action(Action::RefreshKeys, connected),
            Entry::Action(Action::RequestCertificate, connected),
            Entry::Action(Action::CopyPublicKeys, !status.keys.is_empty()),
            Entry::Action(Action::Pair, true),
            Entry::Separator,
            Entry::Action(Action::Quit, true),
        ]);
        View {
            icon: if connected {
                Icon::Connected
            } else {
                Icon::Disconnected
            },
            attention: pairing || !status.waiting.is_empty(),
            certificate,
            tooltip: (format!("vmux agent {}", status.name), tooltip_text),
            entries,
        }
    }

    /// The text lines (not actions or separators), top to bottom.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Line(l) => Some(l.as_str()),
            _ => None,
        })
    }
}

/// `Connected to NAME` or `Disconnected from NAME since TIME`.
pub fn signer_line(s: &vmux_control::agent::SignerStatus) -> String {
    let name = vmux_proto::sanitize(s.name.as_deref().unwrap_or(&s.address));
    if s.connected {
        format!("Connected to {name}")
    } else {
        format!("Disconnected from {name} since {}", utc(s.since))
    }
}

fn pairing_line(code: &str, address: &str, signer_approved: bool) -> String {
    if signer_approved {
        format!("Pairing code {code} (signer at {address}): approved there, confirm here")
    } else {
        format!("Pairing code {code} (signer at {address}): compare with the signer's")
    }
}

/// What a waiting request is, in a phrase: which key, which host, which
/// process.
pub fn summary(w: &WaitingRequest) -> String {
    if w.kind == vmux_proto::DecisionKind::Certificate {
        return "session certificate".to_owned();
    }
    let what = if !w.namespace.is_empty() {
        format!("{} signature", w.namespace)
    } else if !w.host.is_empty() && !w.user.is_empty() {
        format!("login to {}@{}", w.user, w.host)
    } else if !w.host.is_empty() {
        format!("login to {}", w.host)
    } else {
        "signature".to_owned()
    };
    let mut s = format!("{what} with {}", w.key);
    if !w.process.is_empty() {
        s.push_str(&format!(", for {}", w.process));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> Status {
        serde_json::from_value(json).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "name": "laptop", "id": "ab12",
            "signers": [{"address": "127.0.0.1:7326", "id": "cd34", "name": "pi",
                          "connected": true, "since": 0, "last_error": null,
                          "pairing_code": null, "wake": null}],
            "certificate": {"state": "valid", "line": "Certificate valid until 2026-12-05 16:00:00 UTC",
                             "valid_until": 1, "serial": 1, "principals": []},
            "keys": [{"comment": "work", "fingerprint": "SHA256:x", "algorithm": "ssh-ed25519",
                      "provider_kind": "software", "signer": "pi",
                      "line": "SHA256:x work (ssh-ed25519, software on pi)"}],
            "pending_requests": 0,
        })
    }

    #[test]
    fn the_menu_says_what_status_says() {
        let v = View::of(&status(base()));
        assert_eq!(
            v.lines().collect::<Vec<_>>(),
            [
                "Connected to pi",
                "Certificate valid until 2026-12-05 16:00:00 UTC",
                "SHA256:x work (ssh-ed25519, software on pi)"
            ]
        );
        assert_eq!(
            (v.icon, v.status(), v.certificate),
            (Icon::Connected, "Active", true)
        );
        assert!(v
            .entries
            .contains(&Entry::Action(Action::RefreshKeys, true)));
    }

    #[test]
    fn disconnected_waiting_and_pairing_show() {
        let mut j = base();
        j["signers"][0]["connected"] = false.into();
        j["signers"][0]["since"] = 86_400.into();
        j["signers"][0]["pairing_code"] = "123456".into();
        j["pending_requests"] = 1.into();
        j["waiting"] = serde_json::json!([{"id": 1, "kind": "sign", "signer": "pi", "key": "work",
            "host": "example.org", "user": "anna", "process": "ssh ← bash", "namespace": "", "since_ms": 0}]);
        let v = View::of(&status(j));
        let lines: Vec<_> = v.lines().collect();
        assert_eq!(
            lines[0],
            "Disconnected from pi since 1970-01-02 00:00:00 UTC"
        );
        assert!(lines[1].starts_with("Pairing code 123456"));
        assert_eq!(
            lines[3],
            "Waiting on pi: login to anna@example.org with work, for ssh ← bash"
        );
        assert_eq!((v.icon, v.status()), (Icon::Disconnected, "NeedsAttention"));
        assert!(v
            .entries
            .contains(&Entry::Action(Action::RefreshKeys, false)));
    }
}
