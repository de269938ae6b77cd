//! The OpenSSH agent protocol (draft-miller-ssh-agent): the requests this
//! agent understands and the answers it gives. No I/O.

/// Largest agent message, as OpenSSH's ssh-agent allows (256 KiB), and
/// the largest answer OpenSSH's clients accept (`MAX_AGENT_REPLY_LEN`).
pub const MAX_AGENT_MESSAGE: usize = 256 * 1024;
/// Most identities OpenSSH's clients accept in one answer
/// (`MAX_AGENT_IDENTITIES`).
pub const MAX_IDENTITIES: usize = 2048;

/// `SSH_AGENT_FAILURE`
pub const FAILURE: u8 = 5;
/// `SSH_AGENT_SUCCESS`
pub const SUCCESS: u8 = 6;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const EXTENSION: u8 = 27;

/// A request from an SSH client.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `SSH_AGENTC_REQUEST_IDENTITIES`
    RequestIdentities,
    /// `SSH_AGENTC_SIGN_REQUEST`
    Sign {
        /// The public-key (or certificate) blob.
        key_blob: &'a [u8],
        /// The data to sign.
        data: &'a [u8],
        /// Signature flags.
        flags: u32,
    },
    /// `SSH_AGENTC_EXTENSION`
    Extension {
        /// The extension's name.
        name: &'a str,
        /// The rest of the message.
        contents: &'a [u8],
    },
    /// Anything else (add, remove, lock, smartcard, unknown types), or a
    /// known type whose fields do not parse. Answered with failure.
    Unsupported(u8),
}

pub(crate) use vmux_ssh::{put_string, Fields};

/// Parses one message body (without its length prefix).
pub fn parse(body: &[u8]) -> Request<'_> {
    let mut f = Fields(body);
    let Some(kind) = f.u8() else {
        return Request::Unsupported(0);
    };
    let parsed = match kind {
        REQUEST_IDENTITIES if f.is_empty() => Some(Request::RequestIdentities),
        SIGN_REQUEST => (|| {
            let key_blob = f.string()?;
            let data = f.string()?;
            let flags = f.u32()?;
            f.is_empty().then_some(Request::Sign {
                key_blob,
                data,
                flags,
            })
        })(),
        EXTENSION => (|| {
            let name = std::str::from_utf8(f.string()?).ok()?;
            Some(Request::Extension {
                name,
                contents: f.rest(),
            })
        })(),
        _ => None,
    };
    parsed.unwrap_or(Request::Unsupported(kind))
}

/// A framed one-byte answer (`FAILURE` or `SUCCESS`).
pub fn status(code: u8) -> Vec<u8> {
    vec![0, 0, 0, 1, code]
}

/// A framed `SSH_AGENT_IDENTITIES_ANSWER` with as many of `ids`, in
/// order, as OpenSSH's clients accept: at most [`MAX_IDENTITIES`], in at
/// most [`MAX_AGENT_MESSAGE`] bytes (a longer answer would make them fail
/// to list any key). Returns it with how many identities were left out.
pub fn identities_answer<'a, I>(ids: I) -> (Vec<u8>, usize)
where
    I: IntoIterator<Item = (&'a [u8], &'a str)>,
    I::IntoIter: Clone,
{
    let ids = ids.into_iter();
    // Which fit, and in how many bytes: the answer is then written into
    // one buffer of its size (it is asked for on every connection).
    let fits = |ids: I::IntoIter| {
        let (mut len, mut listed) = (5usize, 0usize);
        ids.map(move |(blob, comment)| {
            let entry = 8 + blob.len() + comment.len();
            let fit = listed < MAX_IDENTITIES && len + entry <= MAX_AGENT_MESSAGE;
            if fit {
                len += entry;
                listed += 1;
            }
            (fit, len, blob, comment)
        })
    };
    let (mut len, mut listed, mut left_out) = (5usize, 0u32, 0);
    for (fit, upto, _, _) in fits(ids.clone()) {
        if fit {
            len = upto;
            listed += 1;
        } else {
            left_out += 1;
        }
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(IDENTITIES_ANSWER);
    out.extend_from_slice(&listed.to_be_bytes());
    for (_, _, blob, comment) in fits(ids).filter(|(fit, ..)| *fit) {
        put_string(&mut out, blob);
        put_string(&mut out, comment.as_bytes());
    }
    (out, left_out)
}

/// A framed `SSH_AGENT_SIGN_RESPONSE`.
pub(crate) fn sign_response(signature: &crate::verify::ClientSignature) -> Vec<u8> {
    let mut body = vec![SIGN_RESPONSE];
    put_string(&mut body, signature.blob());
    frame(body)
}

fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse(&[11]), Request::RequestIdentities);
        let mut sign = vec![13];
        put_string(&mut sign, b"key");
        put_string(&mut sign, b"data");
        sign.extend_from_slice(&4u32.to_be_bytes());
        assert_eq!(
            parse(&sign),
            Request::Sign {
                key_blob: b"key",
                data: b"data",
                flags: 4
            }
        );
        let mut ext = vec![27];
        put_string(&mut ext, b"session-bind@openssh.com");
        ext.extend_from_slice(b"rest");
        assert_eq!(
            parse(&ext),
            Request::Extension {
                name: "session-bind@openssh.com",
                contents: b"rest"
            }
        );
    }

    #[test]
    fn malformed_and_unknown_are_unsupported() {
        assert_eq!(parse(&[]), Request::Unsupported(0));
        assert_eq!(parse(&[11, 0]), Request::Unsupported(11));
        assert_eq!(parse(&[13, 0, 0, 0, 9, 1]), Request::Unsupported(13));
        assert_eq!(parse(&[17]), Request::Unsupported(17));
        assert_eq!(parse(&[99, 1, 2, 3]), Request::Unsupported(99));
        // Every truncation of a valid sign request is refused, never a panic.
        let mut sign = vec![13];
        put_string(&mut sign, b"key");
        put_string(&mut sign, b"data");
        sign.extend_from_slice(&0u32.to_be_bytes());
        for cut in 1..sign.len() {
            assert_eq!(parse(&sign[..cut]), Request::Unsupported(13));
        }
    }

    #[test]
    fn answers_are_framed() {
        assert_eq!(status(FAILURE), [0, 0, 0, 1, 5]);
        let (a, left_out) = identities_answer([(&b"k"[..], "c")]);
        assert_eq!(
            a,
            [0, 0, 0, 15, 12, 0, 0, 0, 1, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'c']
        );
        assert_eq!(left_out, 0);
    }

    #[test]
    fn the_identities_answer_stays_within_openssh_limits() {
        let count = |a: &[u8]| u32::from_be_bytes([a[5], a[6], a[7], a[8]]) as usize;
        // 1 MiB of identities: what fits, in order, then the smaller
        // ones that still fit.
        let big = vec![7u8; 4000];
        let mut ids: Vec<(&[u8], &str)> = vec![(&big[..], "big"); 262];
        ids.push((&b"small"[..], "s"));
        let (a, left_out) = identities_answer(ids.iter().copied());
        assert!(a.len() - 4 <= MAX_AGENT_MESSAGE, "{}", a.len());
        assert_eq!(count(&a), 65 + 1);
        assert_eq!(left_out, 262 - 65);
        assert!(a.ends_with(b"small\0\0\0\x01s"));
        // More keys than OpenSSH lists.
        let many = vec![(&b"k"[..], ""); MAX_IDENTITIES + 10];
        let (a, left_out) = identities_answer(many.iter().copied());
        assert_eq!((count(&a), left_out), (MAX_IDENTITIES, 10));
    }
}
