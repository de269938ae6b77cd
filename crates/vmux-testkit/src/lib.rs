//! The test and demo kit of vmux: a real headless Chromium driven over
//! the Chrome DevTools Protocol, with virtual WebAuthn authenticators
//! standing in for a phone's platform authenticator ([`browser`]), and a
//! throwaway PKI whose CA that browser trusts ([`pki`]).
//!
//! The end-to-end tests, `./scripts/demo --phone` and the benchmark use
//! it; the vmux binary never does.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod pki;

/// Default bound for every wait (a page to load, a button to appear).
pub const WAIT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion within [`WAIT`] with no stdin and requires
/// success; returns its stdout. Panics naming the command and showing
/// its output otherwise.
pub fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read_all(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read_all(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + WAIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown} did not finish within {WAIT:?}");
            }
            Err(e) => panic!("cannot wait for {shown}: {e}"),
        }
    };
    let text = |h: std::thread::JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
    };
    let (out, err) = (text(stdout), text(stderr));
    assert!(
        status.success(),
        "{shown} failed ({status}):\nstdout: {out}\nstderr: {err}"
    );
    out
}
