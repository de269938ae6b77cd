//! The test and demo kit of vmux: a real headless Chromium driven over
//! the Chrome DevTools Protocol, with virtual WebAuthn authenticators
//! standing in for a phone's platform authenticator ([`browser`]), and a
//! throwaway PKI whose CA that browser trusts ([`pki`]); and with them
//! the phone in the headless browser standing in for the phone
//! ([`standin`], also the binary `vmux-phone-standin`), which enrols
//! through a link and approves every card; and a push service of the
//! tests' own with a subscriber's side of Web Push ([`push_service`]).
//! A real headless Firefox driven over Marionette ([`firefox`]) is the
//! second engine; [`engine`] lets one test drive either.
//!
//! The end-to-end tests, `./scripts/demo --phone` and the benchmark use
//! it; the vmux binary never does.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod browser;
pub mod engine;
pub mod firefox;
pub mod pki;
pub mod push_service;
pub mod standin;

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
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
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
    let text = |h: JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
    };
    let (out, err) = (text(stdout), text(stderr));
    assert!(
        status.success(),
        "{shown} failed ({status}):\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        bytes
    })
}
