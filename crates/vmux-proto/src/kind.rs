//! The kinds of decision a person makes about an agent's request.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of decision the person is asked for: the one list the
/// signer's approvers, the phone page's cards, the approval challenge
/// and the audit log share. Serialized (and bound into the phone's
/// approval challenge) as its [`DecisionKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    /// A new agent wants to pair.
    Pair,
    /// A paired agent wants a signature (a login, an `ssh-keygen -Y`
    /// signature, other data: the signer's own reading of the data says
    /// which).
    Sign,
    /// A paired agent wants a session certificate.
    Certificate,
}

impl DecisionKind {
    /// Every kind.
    pub const ALL: [DecisionKind; 3] = [
        DecisionKind::Pair,
        DecisionKind::Sign,
        DecisionKind::Certificate,
    ];

    /// Its name: `pair`, `sign` or `certificate` (`VMUX_REQUEST_KIND`,
    /// the approval challenge, the audit log).
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Pair => "pair",
            DecisionKind::Sign => "sign",
            DecisionKind::Certificate => "certificate",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<DecisionKind> {
        DecisionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_serializes_to_its_name_and_back() {
        for k in DecisionKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<DecisionKind>(&json).unwrap(), k);
            assert_eq!(DecisionKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            ["pair", "sign", "certificate"].map(DecisionKind::parse),
            [
                Some(DecisionKind::Pair),
                Some(DecisionKind::Sign),
                Some(DecisionKind::Certificate)
            ]
        );
        assert_eq!(DecisionKind::parse("audit"), None);
    }
}
