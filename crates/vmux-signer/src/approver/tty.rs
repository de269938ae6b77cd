//! `--approve tty`: asks on the signer's controlling terminal, one
//! question at a time, default no.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use super::{Approver, Decision, Verdict};

/// Prompts on `/dev/tty`.
pub struct TtyApprover {
    // One prompt at a time: answers must not be attributed to the wrong
    // question.
    turn: Mutex<()>,
}

impl TtyApprover {
    /// A terminal approver.
    pub fn new() -> TtyApprover {
        TtyApprover {
            turn: Mutex::new(()),
        }
    }
}

impl Default for TtyApprover {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads one line from a non-blocking terminal. Dropping the future
/// (timeout) drops the descriptor, so no orphaned read can swallow the
/// answer to the next question.
async fn read_line(tty: &AsyncFd<File>) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let mut guard = tty.readable().await?;
        match guard.try_io(|f| f.get_ref().read(&mut buf)) {
            Ok(Ok(0)) => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(Ok(n)) => {
                line.extend_from_slice(&buf[..n]);
                if line.contains(&b'\n') || line.len() > 256 {
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// The answer typed at the prompt.
enum Answer {
    Yes,
    No,
    Minutes(u64),
}

fn parse_answer(line: &str, windows: bool) -> Answer {
    match line.trim() {
        "y" | "Y" | "yes" | "Yes" | "YES" => Answer::Yes,
        n if windows => match n.parse::<u64>() {
            Ok(m) if m > 0 => Answer::Minutes(m),
            _ => Answer::No,
        },
        _ => Answer::No,
    }
}

async fn ask(summary: &str, timeout: Duration, window_max: u64) -> std::io::Result<Option<Answer>> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open("/dev/tty")?;
    let mut out = tty.try_clone()?;
    let choices = if window_max > 0 {
        format!(
            "[y/N, or minutes (up to {}) to approve this key for this process and host]",
            window_max / 60
        )
    } else {
        "[y/N]".to_owned()
    };
    write!(
        out,
        "\n{summary}\nApprove? {choices} (denied in {} s) ",
        timeout.as_secs()
    )?;
    out.flush()?;
    // SAFETY: `tty` is a `std::fs::File` that the `AsyncFd` takes by value:
    // the descriptor it owns stays open, and `as_raw_fd` returns that same
    // descriptor, until the `AsyncFd` is dropped, which is all `register`
    // requires.
    let tty = unsafe { AsyncFd::register(tty) }?;
    match tokio::time::timeout(timeout, read_line(&tty)).await {
        Ok(line) => Ok(Some(parse_answer(&line?, window_max > 0))),
        Err(_) => {
            let _ = writeln!(out, "\n(no answer: denied)");
            Ok(None)
        }
    }
}

impl Approver for TtyApprover {
    async fn decide(&self, decision: &Decision, timeout: Duration) -> Verdict {
        let _turn = self.turn.lock().await;
        match ask(&decision.summary(), timeout, decision.window_max_seconds()).await {
            Ok(Some(Answer::Yes)) => Verdict::Approve,
            Ok(Some(Answer::Minutes(m))) => {
                Verdict::ApproveFor(Duration::from_secs(m.saturating_mul(60)))
            }
            Ok(Some(Answer::No)) => Verdict::Deny,
            Ok(None) => Verdict::TimedOut,
            Err(e) => {
                tracing::error!(error = %e, "cannot prompt on the terminal; denying");
                Verdict::Deny
            }
        }
    }
}
