//! Who is asking, and for what: the context a signer's prompt shows.
//!
//! From what the agent sees of one client connection (its peer process,
//! the `session-bind@openssh.com` bindings it made, and the data it asks to
//! sign) this module derives the destination host and user, how sure we
//! are of them, whether the request came through a forwarded agent, the
//! `ssh-keygen -Y` namespace, the requesting process chain and
//! executable, and the proof of the binding a login is for, which the
//! signer checks again itself. Parsing and verification of SSH bytes are
//! `vmux-ssh`'s ([`bind`], [`data`], [`VerifiedLogin`]), shared with the
//! signer; known_hosts lookup is [`known_hosts`]; reading `/proc` and
//! files is kept to [`process`] and [`Connection::context`].

pub mod known_hosts;
pub mod process;

use std::path::PathBuf;

use vmux_proto::{BindingProof, ContextQuality, SignContext};
pub use vmux_ssh::{bind, data, VerifiedLogin};

pub use bind::{BindError, Bindings};

/// What the agent knows about one client connection.
#[derive(Debug, Default)]
pub struct Connection {
    /// The peer's pid, from its credentials.
    pub pid: Option<u32>,
    /// Its verified session bindings.
    pub bindings: Bindings,
}

/// Reads a known_hosts file of at most 16 MiB (a regular file only).
fn read_bounded(path: &std::path::Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.len() <= 16 << 20).then(|| std::fs::read_to_string(path).ok())?
}

/// The known_hosts files to consult.
pub fn known_hosts_files() -> Vec<PathBuf> {
    known_hosts::default_files(std::env::var_os("HOME").map(PathBuf::from).as_deref())
}

impl Connection {
    /// The context of a request to sign `data` on this connection.
    pub fn context(&self, data: &[u8]) -> SignContext {
        let proc = self.pid.and_then(process::read);
        let process = self.pid.map(process::chain).unwrap_or_default();
        let candidates: Vec<String> = proc
            .as_ref()
            .and_then(|p| process::ssh_destination(&p.argv))
            .map(|(_, host, port)| vec![known_hosts::entry_form(&host, port), host])
            .unwrap_or_default();
        // The files the ssh client itself was told to use, then the
        // user's defaults.
        let named = proc
            .as_ref()
            .map(|p| process::ssh_known_hosts_files(&p.argv))
            .unwrap_or_default();
        let files: Vec<String> = named
            .iter()
            .map(PathBuf::from)
            .chain(known_hosts_files())
            .filter_map(|f| read_bounded(&f))
            .collect();
        let mut ctx = derive(&self.bindings, data, process, &candidates, &files);
        ctx.executable = self.pid.and_then(process::executable).unwrap_or_default();
        ctx
    }
}

/// The pure part of [`Connection::context`].
pub fn derive(
    bindings: &Bindings,
    data: &[u8],
    process: String,
    candidates: &[String],
    known_hosts: &[String],
) -> SignContext {
    let mut ctx = SignContext {
        process,
        forwarded: bindings.forwarded(),
        namespace: data::sshsig_namespace(data).unwrap_or_default(),
        ..SignContext::default()
    };
    let Some(u) = data::userauth(data) else {
        return ctx;
    };
    ctx.dest_user = u.user;
    // As OpenSSH's agent does: only a login for the connection's last
    // binding, made for authentication (not forwarding), and naming the
    // same host key when the data names one, is verified. Its proof goes
    // to the signer, which checks it again.
    let bound = bindings
        .last()
        .filter(|b| VerifiedLogin::check(b, data).is_some());
    let host_key = match bound {
        Some(b) => {
            ctx.quality = ContextQuality::Verified;
            ctx.binding = Some(BindingProof {
                host_key: b.host_key().to_vec(),
                session_id: b.session_id().to_vec(),
                signature: b.signature().to_vec(),
            });
            Some(b.host_key().to_vec())
        }
        None => {
            ctx.quality = ContextQuality::Claimed;
            u.host_key
        }
    };
    if let Some(key) = host_key {
        let mut names = known_hosts::HostNames::default();
        for text in known_hosts {
            known_hosts::lookup(text, &key, candidates, &mut names);
        }
        let fp = ssh_key::PublicKey::from_bytes(&key)
            .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
            .unwrap_or_else(|_| "unparseable host key".into());
        ctx.dest_host = if !names.names.is_empty() {
            names.names.join(", ")
        } else if names.hashed_only {
            format!("a host in known_hosts (hashed), key {fp}")
        } else {
            format!("unknown host, key {fp}")
        };
        if names.revoked {
            ctx.dest_host = format!("REVOKED host key: {}", ctx.dest_host);
        }
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::{Algorithm, PrivateKey, Signature};

    fn put(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn host_key() -> PrivateKey {
        PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap()
    }

    /// A session-bind message body signed by `host` over `sid`.
    fn message(host: &PrivateKey, sid: &[u8], fwd: bool) -> Vec<u8> {
        use signature::Signer;
        let sig: Signature = host.try_sign(sid).unwrap();
        let mut m = Vec::new();
        put(&mut m, &host.public_key().to_bytes().unwrap());
        put(&mut m, sid);
        put(&mut m, &Vec::<u8>::try_from(sig).unwrap());
        m.push(u8::from(fwd));
        m
    }

    fn userauth(sid: &[u8], user: &str, host_key: Option<&[u8]>) -> Vec<u8> {
        let mut d = Vec::new();
        put(&mut d, sid);
        d.push(50);
        put(&mut d, user.as_bytes());
        put(&mut d, b"ssh-connection");
        put(
            &mut d,
            if host_key.is_some() {
                b"publickey-hostbound-v00@openssh.com"
            } else {
                b"publickey"
            },
        );
        d.push(1);
        put(&mut d, b"ssh-ed25519");
        put(&mut d, b"keyblob");
        if let Some(h) = host_key {
            put(&mut d, h);
        }
        d
    }

    #[test]
    fn verified_only_when_the_data_matches_a_verified_binding() {
        use base64::Engine;
        let host = host_key();
        let blob = host.public_key().to_bytes().unwrap();
        let kh = vec![format!(
            "[server.example]:2222 ssh-ed25519 {}\n",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        )];
        let mut bs = Bindings::default();
        bs.add(bind::parse(&message(&host, b"sid-1", false)).unwrap())
            .unwrap();

        let c = derive(
            &bs,
            &userauth(b"sid-1", "git", Some(&blob)),
            "ssh".into(),
            &[],
            &kh,
        );
        assert_eq!(
            (c.quality, c.dest_user.as_str(), c.dest_host.as_str()),
            (ContextQuality::Verified, "git", "server.example:2222")
        );
        assert!(!c.forwarded);
        // The proof goes along, and verifies.
        let proof = c.binding.expect("binding proof");
        assert_eq!(proof.host_key, blob);
        assert!(bind::verify(&proof.host_key, &proof.session_id, &proof.signature, false).is_ok());
        // Another session id: parsed, not bound.
        let c = derive(
            &bs,
            &userauth(b"sid-2", "git", Some(&blob)),
            String::new(),
            &[],
            &kh,
        );
        assert_eq!(c.quality, ContextQuality::Claimed);
        assert!(c.binding.is_none(), "no proof for another session");
        // Hostbound data naming another host key than the binding's.
        let other = host_key().public_key().to_bytes().unwrap();
        let c = derive(
            &bs,
            &userauth(b"sid-1", "git", Some(&other)),
            String::new(),
            &[],
            &kh,
        );
        assert_eq!(c.quality, ContextQuality::Claimed);
        assert!(
            c.dest_host.starts_with("unknown host, key SHA256:"),
            "{}",
            c.dest_host
        );
        // Not userauth at all.
        let c = derive(&bs, b"random bytes", String::new(), &[], &kh);
        assert_eq!(
            (c.quality, c.dest_host.as_str()),
            (ContextQuality::Unknown, "")
        );
        // Through a forwarded agent.
        let mut fwd = Bindings::default();
        fwd.add(bind::parse(&message(&host, b"hop", true)).unwrap())
            .unwrap();
        fwd.add(bind::parse(&message(&host, b"sid-9", false)).unwrap())
            .unwrap();
        let c = derive(
            &fwd,
            &userauth(b"sid-9", "root", None),
            String::new(),
            &[],
            &kh,
        );
        assert!(c.forwarded && c.quality == ContextQuality::Verified);
        // A login naming the forwarding hop's own session is not verified.
        let c = derive(
            &fwd,
            &userauth(b"hop", "root", None),
            String::new(),
            &[],
            &kh,
        );
        assert_eq!(c.quality, ContextQuality::Claimed);
    }
}
