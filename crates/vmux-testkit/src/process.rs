//! The processes a test or the bench starts: a command run to
//! completion within a bound ([`run_within`], [`ok`]), and a daemon whose
//! output is collected line by line so that a test can wait for the line
//! that says it is ready ([`Daemon`]). Every wait is bounded; a process
//! that outlives its bound fails the test, naming it and showing what it
//! printed.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::WAIT;

/// Runs a command to completion with no stdin, collecting its output,
/// within `limit`: past it the command is killed and the test fails,
/// naming the command and showing what it printed so far.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let deadline = Instant::now() + limit;
    let (mut child, [stdout, stderr]) = spawn_piped(cmd, &format!("run {shown}"));
    let (stdout, stderr) = (Collector::start(stdout), Collector::start(stderr));
    let so_far = |what: &str| {
        format!(
            "{shown} {what}; so far it printed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout.so_far()),
            String::from_utf8_lossy(&stderr.so_far())
        )
    };
    let Some(status) = wait_until(&mut child, deadline) else {
        let _ = child.kill();
        let _ = wait_until(&mut child, Instant::now() + WAIT);
        panic!("{}", so_far(&format!("did not finish within {limit:?}")));
    };
    // Its output ends when the last holder of its pipes closes them: a
    // process it left running may hold them open.
    while !(stdout.done() && stderr.done()) {
        if Instant::now() >= deadline {
            panic!(
                "{}",
                so_far(&format!(
                    "exited ({status}) but something it started still holds its output open after {limit:?}"
                ))
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Output {
        status,
        stdout: stdout.so_far(),
        stderr: stderr.so_far(),
    }
}

/// Starts `cmd` with no stdin and its stdout and stderr piped; returns
/// it and the two pipes. Panics saying it cannot `what` otherwise.
fn spawn_piped(cmd: &mut Command, what: &str) -> (Child, [Box<dyn Read + Send>; 2]) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    (child, [out, err])
}

/// Polls `child` until it exits or `deadline` passes (`None`).
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for process {}: {e}", child.id()),
        }
    }
}

/// A pipe read to its end on a thread of its own, its bytes readable
/// at any time (so a command killed at its deadline still shows them).
struct Collector {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Collector {
    fn start(mut pipe: impl Read + Send + 'static) -> Collector {
        let bytes: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = bytes.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().expect("output").extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Collector { bytes, reader }
    }

    fn done(&self) -> bool {
        self.reader.is_finished()
    }

    fn so_far(&self) -> Vec<u8> {
        self.bytes.lock().expect("output").clone()
    }
}

/// Runs `cmd` to completion within [`WAIT`] (see [`run_within`]) and
/// requires success; returns its stdout. Panics naming the command and
/// showing its output otherwise.
pub fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run_within(cmd, WAIT);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A line-collecting background process, killed on drop.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// How many of its two pipes have closed (2: it exited).
    closed: Arc<AtomicUsize>,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr collected line by line.
    pub fn spawn(name: &str, cmd: &mut Command) -> Daemon {
        let (child, pipes) = spawn_piped(cmd, &format!("start {name}"));
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let closed: Arc<AtomicUsize> = Arc::default();
        for pipe in pipes {
            let (lines, closed) = (lines.clone(), closed.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let (m, c) = &*lines;
                    m.lock().expect("lines").push(line);
                    c.notify_all();
                }
                let (m, c) = &*lines;
                let _held = m.lock().expect("lines");
                closed.fetch_add(1, Ordering::SeqCst);
                c.notify_all();
            });
        }
        Daemon {
            name: name.to_owned(),
            child: Some(child),
            lines,
            closed,
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.lines.0.lock().expect("lines").join("\n")
    }

    /// Waits until a printed line (new or old) satisfies `pred`, at most
    /// `timeout`; returns it.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_nth(1, timeout, pred)
    }

    /// Waits until `n` printed lines satisfy `pred`; returns the last.
    pub fn wait_nth(&self, n: usize, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.lines;
        let mut lines = m.lock().expect("lines");
        loop {
            let hits: Vec<&String> = lines.iter().filter(|l| pred(l)).collect();
            if hits.len() >= n {
                return hits[n - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{}: timed out waiting; it printed:\n{}",
                    self.name,
                    lines.join("\n")
                );
            }
            if self.closed.load(Ordering::SeqCst) == 2 {
                panic!(
                    "{}: exited before printing what was awaited; it printed:\n{}",
                    self.name,
                    lines.join("\n")
                );
            }
            lines = c.wait_timeout(lines, left).expect("wait").0;
        }
    }

    /// Calls `action` with every printed line (old and new) that
    /// satisfies `pred`, on a thread of its own, until the process exits.
    pub fn on_lines(
        &self,
        pred: impl Fn(&str) -> bool + Send + 'static,
        action: impl Fn(&str) + Send + 'static,
    ) {
        let (lines, closed) = (self.lines.clone(), self.closed.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            loop {
                let fresh: Vec<String> = {
                    let (m, c) = &*lines;
                    let mut l = m.lock().expect("lines");
                    while l.len() == seen && closed.load(Ordering::SeqCst) < 2 {
                        l = c.wait_timeout(l, WAIT).expect("wait").0;
                    }
                    if l.len() == seen {
                        return;
                    }
                    let fresh = l[seen..].to_vec();
                    seen = l.len();
                    fresh
                };
                for line in fresh.iter().filter(|l| pred(l)) {
                    action(line);
                }
            }
        });
    }

    /// Counts printed lines satisfying `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines
            .0
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Kills it with SIGKILL and reaps it (waiting at most [`WAIT`]; it
    /// runs on drop, so it reports rather than panics).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if wait_until(&mut c, Instant::now() + WAIT).is_none() {
                eprintln!("{}: still not reaped {WAIT:?} after SIGKILL", self.name);
            }
        }
    }

    /// Stops it with SIGTERM and waits for it to exit, at most [`WAIT`]:
    /// a daemon that ignores SIGTERM is killed and fails the test.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Not yet reaped, so the pid is still this process's.
            run_within(
                Command::new("kill").arg("-TERM").arg(c.id().to_string()),
                WAIT,
            );
            if wait_until(&mut c, Instant::now() + WAIT).is_none() {
                let _ = c.kill();
                let _ = wait_until(&mut c, Instant::now() + WAIT);
                panic!(
                    "{}: did not exit within {WAIT:?} of SIGTERM; it printed:\n{}",
                    self.name,
                    self.output()
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
