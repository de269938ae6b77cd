//! Why a signature or a certificate was not obtained. A leaf: it imports
//! nothing of the agent's state.

use vmux_proto::ErrorCode;

use crate::origin::trust::Reach;

/// Why a forwarded sign produced no signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignFailure {
    /// The signer answered with an error code.
    Signer(ErrorCode),
    /// The link dropped before the answer.
    LinkLost,
    /// No signer answered within the bounded wait.
    TimedOut,
    /// No signer offers this key.
    UnknownKey,
    /// The signer's answer did not verify against the key.
    BadSignature,
    /// A passkey key asked for by an OpenSSH `ssh` older than 10.3, which
    /// refuses its signature: refused without asking the phone.
    ClientCannotUsePasskey,
    /// No signer is connected (certificate requests do not wait).
    NoSigner,
    /// The certificate was signed by another CA key than the one pinned
    /// for its signer.
    CaNotPinned,
    /// The session certificate signs only for a local login on the
    /// connection that bound its session; this request was not one.
    CertificateNotHere(Reach),
}

impl std::fmt::Display for SignFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignFailure::Signer(c) => write!(f, "signer refused: {c}"),
            SignFailure::LinkLost => f.write_str("the link to the signer dropped"),
            SignFailure::TimedOut => f.write_str("no answer from a signer within the sign timeout"),
            SignFailure::UnknownKey => f.write_str("no paired signer offers this key"),
            SignFailure::BadSignature => {
                f.write_str("the signer's signature did not verify; discarded")
            }
            SignFailure::ClientCannotUsePasskey => f.write_str(
                "a passkey key's signature is refused by OpenSSH ssh before 10.3; not asking the phone (ssh-keygen, ssh 10.3 or later and other clients can use it; ssh logs in with another key or the session certificate)",
            ),
            SignFailure::NoSigner => f.write_str("no signer is connected"),
            SignFailure::CaNotPinned => f.write_str(
                "the certificate is signed by another CA key than the one pinned for this signer; discarded",
            ),
            SignFailure::CertificateNotHere(reach) => match reach {
                Reach::Forwarded => f.write_str(
                    "the session certificate never signs for a forwarded agent connection",
                ),
                _ => f.write_str(
                    "the session certificate signs only logins for the session this connection bound",
                ),
            },
        }
    }
}
