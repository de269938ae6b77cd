//! Why a control request got no answer, or was refused.

use std::fmt;

/// Which program a control socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A vmux agent (its own socket).
    Agent,
    /// A vmux signer (its control socket).
    Signer,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Agent => "agent",
            Peer::Signer => "signer",
        })
    }
}

/// Why a control request could not be answered, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket.
    #[error("{}", not_running(*.0, .1))]
    NotRunning(Peer, String),
    /// Something answered that is not a vmux agent or signer of this
    /// version (or the answer was cut, too long, or not understood).
    #[error("{}", not_vmux(*.0, .1))]
    NotVmux(Peer, String),
    /// Reading or writing failed (or the answer did not come in time).
    #[error("talking to the {0} on {1} failed: {2}")]
    Io(Peer, String, std::io::Error),
    /// The peer refused, and said why.
    #[error("{0}")]
    Refused(String),
}

fn not_running(peer: Peer, socket: &str) -> String {
    match peer {
        Peer::Agent => format!("no agent is running on {socket} (start one with `vmux agent run`)"),
        Peer::Signer => format!(
            "no signer is running here ({socket} does not answer); start it with `vmux signer run`"
        ),
    }
}

fn not_vmux(peer: Peer, socket: &str) -> String {
    match peer {
        Peer::Agent => {
            format!("the agent on {socket} did not understand the request (is it a vmux agent? one started by an older vmux must be restarted: `systemctl --user restart vmux-agent`, or stop it and run it again)")
        }
        Peer::Signer => {
            format!("the signer's control socket {socket} gave an answer vmux does not understand (a signer started by an older vmux must be restarted: `systemctl --user restart vmux-signer`, or stop it and run it again)")
        }
    }
}
