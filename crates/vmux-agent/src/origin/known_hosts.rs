//! Host key → host names, through the user's `known_hosts` files: plain
//! names, `[host]:port`, and hashed `|1|salt|hmac` entries (which can only
//! be checked against a candidate name). `@revoked` keys are reported;
//! `@cert-authority` lines are not host keys and are skipped.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// What the files say about one host key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostNames {
    /// Names the key is known under (`host`, or `host:port`).
    pub names: Vec<String>,
    /// A hashed entry holds the key, but no candidate name matched it.
    pub hashed_only: bool,
    /// The key is marked `@revoked`.
    pub revoked: bool,
}

/// The default known_hosts files of the user whose home is `home`.
pub fn default_files(home: Option<&std::path::Path>) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    if let Some(h) = home {
        v.push(h.join(".ssh/known_hosts"));
        v.push(h.join(".ssh/known_hosts2"));
    }
    v.push("/etc/ssh/ssh_known_hosts".into());
    v.push("/etc/ssh/ssh_known_hosts2".into());
    v
}

fn hashed_matches(entry: &str, name: &str) -> bool {
    let mut parts = entry.strip_prefix("|1|").unwrap_or("").split('|');
    let (Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (B64.decode(salt), B64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// The known_hosts form of a name: `host`, or `[host]:port` off port 22.
pub fn entry_form(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

fn display(pattern: &str) -> String {
    match pattern.strip_prefix('[').and_then(|p| p.split_once("]:")) {
        Some((host, port)) => format!("{host}:{port}"),
        None => pattern.to_owned(),
    }
}

/// Looks `key_blob` up in the contents of one known_hosts file.
/// `candidates` are names in known_hosts form (see [`entry_form`]) to try
/// against hashed entries.
pub fn lookup(contents: &str, key_blob: &[u8], candidates: &[String], out: &mut HostNames) {
    for line in contents.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (marker, hosts) = match fields.next() {
            Some(m) if m.starts_with('@') => (Some(m), fields.next()),
            h => (None, h),
        };
        let (Some(hosts), Some(_kind), Some(key)) = (hosts, fields.next(), fields.next()) else {
            continue;
        };
        if B64.decode(key).ok().as_deref() != Some(key_blob) {
            continue;
        }
        match marker {
            Some("@revoked") => {
                out.revoked = true;
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        for pattern in hosts.split(',') {
            if pattern.starts_with("|1|") {
                match candidates.iter().find(|c| hashed_matches(pattern, c)) {
                    Some(c) => push(out, display(c)),
                    None => out.hashed_only = true,
                }
            } else if !pattern.starts_with('!') && !pattern.contains(['*', '?']) {
                push(out, display(pattern));
            }
        }
    }
}

fn push(out: &mut HostNames, name: String) {
    if !out.names.contains(&name) {
        out.names.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(name: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!(
            "|1|{}|{}",
            B64.encode(salt),
            B64.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn plain_ported_hashed_and_marked_entries() {
        let key = b"host key blob";
        let other = b"another key";
        let k = B64.encode(key);
        let text = format!(
            "# comment\n\
             github.com,140.82.1.1 ssh-ed25519 {k}\n\
             [git.example]:2222 ssh-ed25519 {k} note\n\
             *.wild,!neg ssh-ed25519 {k}\n\
             {} ssh-ed25519 {k}\n\
             @cert-authority *.corp ssh-ed25519 {k}\n\
             other.host ssh-ed25519 {}\n\
             garbage line\n",
            hash("[secret.example]:2200", b"0123456789abcdefghij"),
            B64.encode(other)
        );
        let mut out = HostNames::default();
        lookup(&text, key, &[], &mut out);
        assert_eq!(out.names, ["github.com", "140.82.1.1", "git.example:2222"]);
        assert!(out.hashed_only);
        let mut out = HostNames::default();
        lookup(&text, key, &[entry_form("secret.example", 2200)], &mut out);
        assert!(out.names.contains(&"secret.example:2200".to_owned()));
        assert!(!out.hashed_only);
        let mut out = HostNames::default();
        lookup(&format!("@revoked * ssh-ed25519 {k}\n"), key, &[], &mut out);
        assert!(out.revoked && out.names.is_empty());
    }

    /// Our matcher agrees with `ssh-keygen -H`, when it is installed.
    #[test]
    fn agrees_with_ssh_keygen_hashing() {
        if !std::path::Path::new("/usr/bin/ssh-keygen").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        let key = b"abc key";
        std::fs::write(
            &f,
            format!("[hashed.example]:2022 ssh-ed25519 {}\n", B64.encode(key)),
        )
        .unwrap();
        let st = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&f)
            .output()
            .unwrap();
        assert!(st.status.success());
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("|1|"), "{text}");
        let mut out = HostNames::default();
        lookup(&text, key, &[entry_form("hashed.example", 2022)], &mut out);
        assert_eq!(out.names, ["hashed.example:2022"]);
    }
}
