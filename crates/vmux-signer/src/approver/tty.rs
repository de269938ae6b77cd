//! `--approve tty`: asks on the signer's controlling terminal, one
//! question at a time, default no.
//!
//! Only the word `yes` typed after the question appeared approves: input
//! waiting in the terminal before that (typed ahead, or left over from a
//! question that timed out) is discarded, so a stray `y` can never answer
//! the next question. A question's deadline starts when its request
//! reaches the approver; a question whose deadline passed while it waited
//! for its turn is never shown.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use super::{Approver, Decision, Verdict};

/// Prompts on `/dev/tty`.
pub struct TtyApprover {
    // One prompt at a time: answers must not be attributed to the wrong
    // question.
    turn: Mutex<()>,
    terminal: PathBuf,
}

impl TtyApprover {
    /// A terminal approver on the controlling terminal.
    pub fn new() -> TtyApprover {
        TtyApprover::on(PathBuf::from("/dev/tty"))
    }

    /// A terminal approver on the terminal device at `terminal`.
    pub fn on(terminal: PathBuf) -> TtyApprover {
        TtyApprover {
            turn: Mutex::new(()),
            terminal,
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

/// `yes` approves; `yes MINUTES` approves with a window when one is
/// offered; anything else (`y` included) denies.
fn parse_answer(line: &str, windows: bool) -> Answer {
    let mut words = line.split_whitespace();
    let first = words.next().map(str::to_ascii_lowercase);
    match (first.as_deref(), words.next(), words.next()) {
        (Some("yes"), None, _) => Answer::Yes,
        (Some("yes"), Some(n), None) if windows => match n.parse::<u64>() {
            Ok(m) if m > 0 => Answer::Minutes(m),
            _ => Answer::No,
        },
        _ => Answer::No,
    }
}

/// Discards input typed on the terminal but not yet read.
fn discard_pending_input(tty: &File) -> std::io::Result<()> {
    // SAFETY: `tty` is an open descriptor for the life of the call;
    // tcflush only reads its number and takes no pointers.
    if unsafe { libc::tcflush(tty.as_raw_fd(), libc::TCIFLUSH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn ask(
    terminal: &std::path::Path,
    summary: &str,
    timeout: Duration,
    window_max: u64,
) -> std::io::Result<Option<Answer>> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(terminal)?;
    let mut out = tty.try_clone()?;
    // Only what is typed once the question is on the screen answers it:
    // whatever waits in the terminal now was typed before.
    discard_pending_input(&tty)?;
    let choices = if window_max > 0 {
        format!(
            "[type yes, or yes MINUTES (up to {}) to let this key sign the same verified login from the same program for that long; anything else denies]",
            window_max / 60
        )
    } else {
        "[type yes to approve; anything else denies]".to_owned()
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
        // The deadline runs from the request's arrival, not from its turn.
        let deadline = tokio::time::Instant::now() + timeout;
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.turn.lock()).await else {
            tracing::info!("a request expired while another question was open; not asked");
            return Verdict::TimedOut;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Verdict::TimedOut;
        }
        match ask(
            &self.terminal,
            &decision.summary(),
            left,
            decision.window_max_seconds(),
        )
        .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-terminal: the master (the person's keyboard and screen),
    /// the slave's path (what the approver opens), and the slave kept open.
    fn pty() -> (File, PathBuf, File) {
        let vmux_testkit::pty::Pty {
            master,
            slave,
            path,
        } = vmux_testkit::pty::open();
        (master, path, slave)
    }

    /// Bytes waiting to be read on the terminal.
    fn pending(slave: &File) -> libc::c_int {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which
        // points at a live one.
        let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0);
        n
    }

    fn decision() -> Decision {
        Decision::Pair(super::super::PairDecision {
            source: super::super::Source {
                name: "stranger".into(),
                id: "abcd".into(),
            },
            code: "123456".into(),
        })
    }

    /// Reads the master until the question is on the screen, then types
    /// `answer`.
    fn answer_after_question(
        mut master: File,
        answer: &'static [u8],
    ) -> std::thread::JoinHandle<File> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&seen).contains("Approve?") {
                let n = master.read(&mut buf).expect("read the terminal");
                assert!(n > 0, "terminal closed before the question");
                seen.extend_from_slice(&buf[..n]);
            }
            master.write_all(answer).expect("type");
            master
        })
    }

    #[tokio::test]
    async fn input_typed_before_the_question_does_not_answer_it() {
        let (mut master, path, slave) = pty();
        // The attacker's `yes` (or the owner's late answer to an earlier
        // question) waits in the terminal before the question is asked.
        master.write_all(b"yes\n").unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while pending(&slave) == 0 {
            assert!(std::time::Instant::now() < until, "input never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        let approver = TtyApprover::on(path);
        let verdict = approver
            .decide(&decision(), Duration::from_millis(700))
            .await;
        assert_eq!(verdict, Verdict::TimedOut);
    }

    #[tokio::test]
    async fn only_the_word_yes_typed_after_the_question_approves() {
        for (typed, expected) in [
            (&b"yes\n"[..], Verdict::Approve),
            (&b"y\n"[..], Verdict::Deny),
            (&b"\n"[..], Verdict::Deny),
        ] {
            let (master, path, _slave) = pty();
            let typist = answer_after_question(master, typed);
            let verdict = TtyApprover::on(path)
                .decide(&decision(), Duration::from_secs(20))
                .await;
            drop(typist.join().unwrap());
            assert_eq!(
                verdict,
                expected,
                "typed {:?}",
                String::from_utf8_lossy(typed)
            );
        }
    }

    #[test]
    fn answers() {
        assert!(matches!(parse_answer("yes\n", false), Answer::Yes));
        assert!(matches!(parse_answer(" YES ", false), Answer::Yes));
        assert!(matches!(parse_answer("y", false), Answer::No));
        assert!(matches!(parse_answer("10", true), Answer::No));
        assert!(matches!(parse_answer("yes 10", true), Answer::Minutes(10)));
        assert!(matches!(parse_answer("yes 10", false), Answer::No));
    }
}
