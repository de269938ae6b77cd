use std::fmt;

/// Why a byte string is not a valid vmux message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("message is truncated")]
    Truncated,
    /// Bytes were left over after the last field.
    #[error("message has trailing bytes")]
    TrailingBytes,
    /// The message type byte is not one this version knows.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field holds a value outside its domain.
    #[error("invalid {0}")]
    BadValue(&'static str),
    /// The message is empty.
    #[error("message is empty")]
    Empty,
}

/// The error codes a signer returns, shared by both ends (DESIGN.md,
/// "Error codes the signer returns").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The approver said no.
    UserDenied,
    /// The request arrived after its `expires_at`, or its timestamps are
    /// invalid (a lifetime over the limit, or issued too far ahead).
    RequestExpired,
    /// The request's nonce was already seen within its lifetime.
    ReplayDetected,
    /// The agent is not paired, or pairing failed.
    PairingInvalid,
    /// No identity with that public key lives on the signer.
    KeyNotFound,
    /// The approver did not answer in time.
    ApprovalTimeout,
    /// The signer's keys are locked.
    SignerLocked,
    /// The signer's policy forbids the request.
    PolicyDenied,
    /// The request is not well formed.
    MalformedRequest,
    /// Anything else; the signer's log says more.
    Internal,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::UserDenied,
        ErrorCode::RequestExpired,
        ErrorCode::ReplayDetected,
        ErrorCode::PairingInvalid,
        ErrorCode::KeyNotFound,
        ErrorCode::ApprovalTimeout,
        ErrorCode::SignerLocked,
        ErrorCode::PolicyDenied,
        ErrorCode::MalformedRequest,
        ErrorCode::Internal,
    ];

    /// The code's name as DESIGN.md spells it (`userDenied`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UserDenied => "userDenied",
            ErrorCode::RequestExpired => "requestExpired",
            ErrorCode::ReplayDetected => "replayDetected",
            ErrorCode::PairingInvalid => "pairingInvalid",
            ErrorCode::KeyNotFound => "keyNotFound",
            ErrorCode::ApprovalTimeout => "approvalTimeout",
            ErrorCode::SignerLocked => "signerLocked",
            ErrorCode::PolicyDenied => "policyDenied",
            ErrorCode::MalformedRequest => "malformedRequest",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code named `s` (as [`ErrorCode::as_str`] spells it), if any.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The wire value (1-based position in [`ErrorCode::ALL`]).
    pub fn to_wire(self) -> u32 {
        match self {
            ErrorCode::UserDenied => 1,
            ErrorCode::RequestExpired => 2,
            ErrorCode::ReplayDetected => 3,
            ErrorCode::PairingInvalid => 4,
            ErrorCode::KeyNotFound => 5,
            ErrorCode::ApprovalTimeout => 6,
            ErrorCode::SignerLocked => 7,
            ErrorCode::PolicyDenied => 8,
            ErrorCode::MalformedRequest => 9,
            ErrorCode::Internal => 10,
        }
    }

    /// Decodes a wire value; a code from a newer peer becomes `Internal`.
    pub fn from_wire(v: u32) -> ErrorCode {
        v.checked_sub(1)
            .and_then(|i| ErrorCode::ALL.get(i as usize).copied())
            .unwrap_or(ErrorCode::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
