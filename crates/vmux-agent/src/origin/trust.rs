//! What a client connection may do, decided from what its session
//! bindings prove, in one place.
//!
//! OpenSSH's `ssh` (8.9 and later) opens every agent connection it
//! forwards to a remote host with a `session-bind@openssh.com` whose
//! `is_forwarding` flag is set, before it relays a single byte from that
//! host; a local login binds with the flag clear. So:
//!
//! - a connection with any forwarding binding is [`Reach::Forwarded`]:
//!   its requests go to the signer marked forwarded, it never sees or
//!   uses the session certificate and never reaches the control
//!   extension;
//! - a connection bound only for authentication is [`Reach::Local`]: the
//!   session certificate signs for it, but only a login for the session
//!   it bound ([`LocalLogin`]);
//! - a connection with no binding is [`Reach::Unbound`]: a local tool
//!   that does not bind (`ssh-add`, `ssh-keygen -Y`, asyncssh) or a
//!   forwarded connection through an `ssh` older than 8.9, which we cannot
//!   tell apart. It may use the control extension (only the socket's
//!   owner can connect) but not the certificate, and its requests are not
//!   verified, so the signer grants them no approval window.
//!
//! Whatever its bindings, a connection may start, confirm or refuse a
//! pairing, or have a certificate issued, only if the process at its
//! other end runs the vmux program itself ([`OwnProgram`]): the kernel
//! names a peer's executable, and a remote host behind a forwarded agent
//! (through an `ssh` that does not bind) or a relayed socket is an `ssh`,
//! a `socat`, … at our end, never vmux.
//!
//! The certificate and control paths take the proof types below, which
//! only this module constructs, so skipping the check does not compile.

use super::bind::Bindings;
use super::process::PeerProgram;
use super::VerifiedLogin;

/// Where a connection comes from, as far as its bindings prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// No binding (yet).
    Unbound,
    /// Bound for authentication by the local `ssh`, never for forwarding.
    Local,
    /// At least one binding was made for a forwarded agent.
    Forwarded,
}

impl Reach {
    /// The verdict for `bindings`.
    pub fn of(bindings: &Bindings) -> Reach {
        if bindings.forwarded() {
            Reach::Forwarded
        } else if bindings.is_empty() {
            Reach::Unbound
        } else {
            Reach::Local
        }
    }

    /// Whether the session certificate is listed to this connection.
    pub fn sees_certificate(self) -> bool {
        self != Reach::Forwarded
    }
}

/// Proof that a sign request is a login, on a connection that the local
/// `ssh` bound for authentication only, for the very session it bound: the
/// only case the session certificate signs for.
#[derive(Debug)]
pub struct LocalLogin {
    _checked: (),
}

/// Proof that a connection is not a forwarded one: what the control
/// extension (`status`, `refresh`, `cert`) requires.
#[derive(Debug)]
pub struct LocalControl {
    _checked: (),
}

/// Proof that a connection that may use the control extension comes from
/// the vmux program itself: what pairing (`pair-signer`, `pair-confirm`,
/// `pair-deny`) and certificate (`cert`) commands require.
#[derive(Debug)]
pub struct OwnProgram {
    _checked: (),
}

/// The proof for signing `data` with the session certificate on a
/// connection with `bindings`, if it holds.
pub fn local_login(bindings: &Bindings, data: &[u8]) -> Option<LocalLogin> {
    if Reach::of(bindings) != Reach::Local {
        return None;
    }
    VerifiedLogin::check(bindings.last()?, data).map(|_| LocalLogin { _checked: () })
}

/// The proof for the control extension on a connection with `bindings`.
pub fn local_control(bindings: &Bindings) -> Option<LocalControl> {
    (Reach::of(bindings) != Reach::Forwarded).then_some(LocalControl { _checked: () })
}

/// The proof for pairing and certificate commands on a local connection
/// whose peer runs `program`.
pub fn own_program(_local: &LocalControl, program: PeerProgram) -> Option<OwnProgram> {
    (program == PeerProgram::ThisProgram).then_some(OwnProgram { _checked: () })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmux_ssh::testing::{userauth as request, Host};

    #[test]
    fn forwarded_connections_get_neither_certificate_nor_control() {
        let host = Host::new();
        let none = Bindings::default();
        assert_eq!(Reach::of(&none), Reach::Unbound);
        assert!(local_control(&none).is_some());
        assert!(local_login(&none, &request(b"s", "u", None)).is_none());

        let mut local = Bindings::default();
        local.add(host.binding(b"sid", false)).unwrap();
        assert_eq!(Reach::of(&local), Reach::Local);
        assert!(local_login(&local, &request(b"sid", "u", None)).is_some());
        assert!(local_login(&local, &request(b"sid", "u", Some(&host.blob))).is_some());
        // Another session, another host key, or not a login at all.
        assert!(local_login(&local, &request(b"other", "u", None)).is_none());
        let other = Host::new().blob;
        assert!(local_login(&local, &request(b"sid", "u", Some(&other))).is_none());
        assert!(local_login(&local, b"SSHSIG...").is_none());

        // A forwarding bind first, then the hop's own login bind.
        let mut fwd = Bindings::default();
        fwd.add(host.binding(b"hop", true)).unwrap();
        assert_eq!(Reach::of(&fwd), Reach::Forwarded);
        fwd.add(host.binding(b"sid", false)).unwrap();
        assert_eq!(Reach::of(&fwd), Reach::Forwarded);
        assert!(!Reach::of(&fwd).sees_certificate());
        assert!(local_login(&fwd, &request(b"sid", "u", None)).is_none());
        assert!(local_control(&fwd).is_none());
    }

    #[test]
    fn only_this_program_may_pair_or_ask_for_a_certificate() {
        let local = local_control(&Bindings::default()).expect("unbound is local");
        assert!(own_program(&local, PeerProgram::ThisProgram).is_some());
        assert!(own_program(&local, PeerProgram::Another).is_none());
        assert!(own_program(&local, PeerProgram::Unknown).is_none());
    }
}
