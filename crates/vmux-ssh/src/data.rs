//! What a signature is for: an SSH user-authentication request (RFC 4252
//! §7, and OpenSSH's host-bound variant), or an `ssh-keygen -Y` signature
//! (SSHSIG).

use crate::Fields;

/// SSH_MSG_USERAUTH_REQUEST.
const USERAUTH_REQUEST: u8 = 50;

/// The parts of a user-authentication request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Userauth {
    /// The session id it is bound to.
    pub session_id: Vec<u8>,
    /// The user logging in.
    pub user: String,
    /// The server host key, for `publickey-hostbound-v00@openssh.com`.
    pub host_key: Option<Vec<u8>>,
}

/// Parses userauth sign data; `None` if it is not one.
pub fn userauth(data: &[u8]) -> Option<Userauth> {
    let mut f = Fields(data);
    let session_id = f.string()?.to_vec();
    if f.u8()? != USERAUTH_REQUEST {
        return None;
    }
    let user = std::str::from_utf8(f.string()?).ok()?.to_owned();
    let _service = f.string()?;
    let method = f.string()?;
    let hostbound = match method {
        b"publickey" => false,
        b"publickey-hostbound-v00@openssh.com" => true,
        _ => return None,
    };
    if f.u8()? != 1 {
        return None;
    }
    let _alg = f.string()?;
    let _key = f.string()?;
    let host_key = if hostbound {
        Some(f.string()?.to_vec())
    } else {
        None
    };
    f.is_empty().then_some(Userauth {
        session_id,
        user,
        host_key,
    })
}

/// The namespace of an SSHSIG to-be-signed blob (`ssh-keygen -Y sign`).
pub fn sshsig_namespace(data: &[u8]) -> Option<String> {
    let rest = data.strip_prefix(b"SSHSIG")?;
    let mut f = Fields(rest);
    let ns = std::str::from_utf8(f.string()?).ok()?.to_owned();
    let _reserved = f.string()?;
    let _hash = f.string()?;
    let _digest = f.string()?;
    f.is_empty().then_some(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::put_string as put;
    use crate::testing::userauth as request;

    #[test]
    fn parses_userauth_and_sshsig() {
        let u = userauth(&request(b"sid", "git", None)).unwrap();
        assert_eq!(
            (u.session_id.as_slice(), u.user.as_str(), u.host_key),
            (&b"sid"[..], "git", None)
        );
        let h = userauth(&request(b"sid", "root", Some(b"hostkey"))).unwrap();
        assert_eq!(h.host_key.as_deref(), Some(&b"hostkey"[..]));
        let full = request(b"sid", "root", Some(b"hostkey"));
        for cut in 0..full.len() {
            assert!(userauth(&full[..cut]).is_none() || cut == full.len());
        }
        let mut extra = request(b"sid", "root", None);
        extra.push(0);
        assert!(userauth(&extra).is_none());

        let mut sig = b"SSHSIG".to_vec();
        put(&mut sig, b"git");
        put(&mut sig, b"");
        put(&mut sig, b"sha512");
        put(&mut sig, &[1; 64]);
        assert_eq!(sshsig_namespace(&sig).as_deref(), Some("git"));
        assert!(sshsig_namespace(&sig[..sig.len() - 1]).is_none());
        assert!(sshsig_namespace(b"random").is_none());
    }
}
