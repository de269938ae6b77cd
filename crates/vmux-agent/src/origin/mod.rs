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

pub mod client;
pub mod known_hosts;
pub mod process;
pub mod trust;

use std::path::PathBuf;

use vmux_proto::{BindingProof, ContextQuality, SignContext};
pub use vmux_ssh::{bind, data, VerifiedLogin};

pub use bind::{BindError, Bindings};

/// What the agent knows about one client connection.
#[derive(Debug, Default)]
pub struct Connection {
    /// The peer's pid, from its credentials at connect.
    pid: Option<u32>,
    /// That process's start time (clock ticks since boot) at connect: a
    /// pid reused by another process by sign time is not that process.
    start_time: Option<u64>,
    /// Its verified session bindings.
    pub bindings: Bindings,
}

/// Longest a known_hosts file may be to be read (16 MiB).
const MAX_KNOWN_HOSTS: u64 = 16 << 20;
/// Longest the agent spends on `/proc` and known_hosts for one request;
/// past that the request goes on with what needs no file.
const CONTEXT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a known_hosts file: opened without blocking (a FIFO or device
/// put in its place opens at once and is then refused), checked to be a
/// regular file on the opened descriptor (so nothing can be swapped in
/// between the check and the read), read up to 16 MiB. Symbolic links
/// are followed, as ssh follows them (dotfile managers link these files);
/// the agent reads only what the user can read.
fn read_bounded(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_KNOWN_HOSTS {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_KNOWN_HOSTS).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The known_hosts files to consult.
pub fn known_hosts_files() -> Vec<PathBuf> {
    known_hosts::default_files(std::env::var_os("HOME").map(PathBuf::from).as_deref())
}

/// Longest the agent waits for `/proc` to identify a process that just
/// connected; past that the process stays unknown.
const IDENTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `f` on the blocking pool, giving up on it after `limit`.
async fn off_runtime<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::time::timeout(limit, tokio::task::spawn_blocking(f))
        .await
        .ok()?
        .ok()
}

impl Connection {
    /// A connection from the process `pid`, identified as it connects by
    /// its start time alone (`/proc/PID/stat`; its command line, which can
    /// block on the process's memory lock, is read only when it asks for
    /// a signature). Called in the client's own task: the read runs off
    /// the async runtime and is bounded in time, so no client can delay
    /// the accepting of others.
    pub async fn identify(pid: Option<u32>) -> Connection {
        let start_time = match pid {
            Some(pid) => off_runtime(IDENTIFY_TIMEOUT, move || process::start_time(pid))
                .await
                .flatten(),
            None => None,
        };
        Connection {
            pid,
            start_time,
            bindings: Bindings::default(),
        }
    }

    /// What program the peer runs: [`process::PeerProgram::ThisProgram`]
    /// only if the process that connected (same pid and start time) runs
    /// this very executable. Off the runtime, bounded.
    pub async fn program(&self) -> process::PeerProgram {
        let Some((pid, start_time)) = self.pid.zip(self.start_time) else {
            return process::PeerProgram::Unknown;
        };
        off_runtime(IDENTIFY_TIMEOUT, move || {
            process::program_of(pid, start_time)
        })
        .await
        .unwrap_or(process::PeerProgram::Unknown)
    }

    /// The executable the peer runs (`/proc/PID/exe`), opened, if it is
    /// still the process that connected (checked after the opening). Off
    /// the runtime, bounded.
    pub async fn executable(&self) -> Option<client::Executable> {
        let (pid, start_time) = self.pid.zip(self.start_time)?;
        off_runtime(IDENTIFY_TIMEOUT, move || {
            let exe = client::Executable::of_process(pid)?;
            (process::start_time(pid) == Some(start_time)).then_some(exe)
        })
        .await
        .flatten()
    }

    /// The peer's pid at connect.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The context of a request to sign `data` on this connection. The
    /// reading of `/proc` and known_hosts files runs off the async
    /// runtime and is bounded in time, so no client can hold up another.
    pub async fn context(&self, data: Vec<u8>) -> SignContext {
        let (pid, start_time, bindings) = (self.pid, self.start_time, self.bindings.clone());
        let quick = derive(&bindings, &data, None, &[], &[]);
        let work = tokio::task::spawn_blocking(move || {
            context_from_files(pid, start_time, &bindings, &data)
        });
        match tokio::time::timeout(CONTEXT_TIMEOUT, work).await {
            Ok(Ok(ctx)) => ctx,
            _ => {
                tracing::warn!(
                    "reading the requesting process or known_hosts took too long; going on without them"
                );
                quick
            }
        }
    }
}

/// [`Connection::context`]'s blocking part.
fn context_from_files(
    pid: Option<u32>,
    start_time: Option<u64>,
    bindings: &Bindings,
    data: &[u8],
) -> SignContext {
    // The process that connected, if it is still the same one.
    let proc = pid.zip(start_time).and_then(|(pid, t)| {
        process::read(pid)
            .filter(|p| p.start_time == t)
            .map(|p| (pid, p))
    });
    let process = proc.as_ref().and_then(|(pid, _)| process::chain(*pid));
    let argv = proc.as_ref().map(|(_, p)| p.argv.as_slice()).unwrap_or(&[]);
    let candidates: Vec<String> = process::ssh_destination(argv)
        .map(|(_, host, port)| vec![known_hosts::entry_form(&host, port), host])
        .unwrap_or_default();
    // The files the ssh client itself was told to use, then the user's
    // defaults.
    let files: Vec<String> = process::ssh_known_hosts_files(argv)
        .iter()
        .map(PathBuf::from)
        .chain(known_hosts_files())
        .filter_map(|f| read_bounded(&f))
        .collect();
    let mut ctx = derive(bindings, data, process, &candidates, &files);
    ctx.executable = proc
        .and_then(|(pid, _)| process::executable(pid))
        .filter(|e| !e.is_empty());
    ctx
}

/// The pure part of [`Connection::context`].
pub fn derive(
    bindings: &Bindings,
    data: &[u8],
    process: Option<String>,
    candidates: &[String],
    known_hosts: &[String],
) -> SignContext {
    let mut ctx = SignContext {
        process,
        forwarded: bindings.forwarded(),
        namespace: data::sshsig_namespace(data).filter(|n| !n.is_empty()),
        ..SignContext::default()
    };
    let Some(u) = data::userauth(data) else {
        return ctx;
    };
    ctx.dest_user = Some(u.user).filter(|u| !u.is_empty());
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
        let host = if !names.names.is_empty() {
            names.names.join(", ")
        } else if names.hashed_only {
            format!("a host in known_hosts (hashed), key {fp}")
        } else {
            format!("unknown host, key {fp}")
        };
        ctx.dest_host = Some(if names.revoked {
            format!("REVOKED host key: {host}")
        } else {
            host
        });
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmux_ssh::testing::{userauth, Host};

    #[test]
    fn verified_only_when_the_data_matches_a_verified_binding() {
        use base64::Engine;
        let host = Host::new();
        let kh = vec![format!(
            "[server.example]:2222 ssh-ed25519 {}\n",
            base64::engine::general_purpose::STANDARD.encode(&host.blob)
        )];
        let mut bs = Bindings::default();
        bs.add(host.binding(b"sid-1", false)).unwrap();

        let c = derive(
            &bs,
            &userauth(b"sid-1", "git", Some(&host.blob)),
            Some("ssh".into()),
            &[],
            &kh,
        );
        assert_eq!(
            (c.quality, c.dest_user.as_deref(), c.dest_host.as_deref()),
            (
                ContextQuality::Verified,
                Some("git"),
                Some("server.example:2222")
            )
        );
        assert!(!c.forwarded);
        // The proof goes along, and verifies.
        let proof = c.binding.expect("binding proof");
        assert_eq!(proof.host_key, host.blob);
        assert!(bind::verify(&proof.host_key, &proof.session_id, &proof.signature, false).is_ok());
        // Another session id: parsed, not bound.
        let c = derive(
            &bs,
            &userauth(b"sid-2", "git", Some(&host.blob)),
            None,
            &[],
            &kh,
        );
        assert_eq!(c.quality, ContextQuality::Claimed);
        assert!(c.binding.is_none(), "no proof for another session");
        // Hostbound data naming another host key than the binding's.
        let other = Host::new().blob;
        let c = derive(
            &bs,
            &userauth(b"sid-1", "git", Some(&other)),
            None,
            &[],
            &kh,
        );
        assert_eq!(c.quality, ContextQuality::Claimed);
        assert!(
            c.dest_host
                .as_deref()
                .is_some_and(|h| h.starts_with("unknown host, key SHA256:")),
            "{:?}",
            c.dest_host
        );
        // Not userauth at all.
        let c = derive(&bs, b"random bytes", None, &[], &kh);
        assert_eq!(
            (c.quality, c.dest_host.as_deref()),
            (ContextQuality::Unknown, None)
        );
        // Through a forwarded agent.
        let mut fwd = Bindings::default();
        fwd.add(host.binding(b"hop", true)).unwrap();
        fwd.add(host.binding(b"sid-9", false)).unwrap();
        let c = derive(&fwd, &userauth(b"sid-9", "root", None), None, &[], &kh);
        assert!(c.forwarded && c.quality == ContextQuality::Verified);
        // A login naming the forwarding hop's own session is not verified.
        let c = derive(&fwd, &userauth(b"hop", "root", None), None, &[], &kh);
        assert_eq!(c.quality, ContextQuality::Claimed);
    }
}
