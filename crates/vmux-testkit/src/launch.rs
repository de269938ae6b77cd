//! What starting either browser engine takes, written once for
//! [`crate::browser`]'s Chromium and [`crate::firefox`]'s Firefox: what
//! to install when one is missing, a directory of its own per launch, an
//! NSS database that trusts the test's CA, the log its output goes to,
//! and the bounded wait for the file in which it says where it listens.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::browser::find_on_path;
use crate::ok;

/// `Ok` when the engine `name` (`found`: its executable is there) and
/// `certutil` are installed, else `Err` with a sentence naming what to
/// install: the engine's Debian `package`, `libnss3-tools`, or both.
pub(crate) fn check_installed(name: &str, found: bool, package: &str) -> Result<(), String> {
    let certutil = find_on_path(&["certutil"]).is_some();
    match (found, certutil) {
        (true, true) => Ok(()),
        (false, true) => Err(format!(
            "{name} is not installed (apt-get install {package})"
        )),
        (true, false) => Err("certutil is not installed (apt-get install libnss3-tools)".into()),
        (false, false) => Err(format!(
            "{name} and certutil are not installed (apt-get install {package} libnss3-tools)"
        )),
    }
}

/// A new directory `dir/NAME-N` (N counting launches in this process)
/// for one browser's profile, `HOME` and log: two browsers must not
/// share a profile (the second would hand its work to the first and
/// exit).
pub(crate) fn launch_dir(dir: &Path, name: &str) -> PathBuf {
    static LAUNCHED: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        "{name}-{}",
        LAUNCHED.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Creates each of `dirs` (and their parents); panics naming the one
/// that cannot be made.
pub(crate) fn create_dirs(dirs: &[&Path]) {
    for d in dirs {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    }
}

/// Makes an NSS database (no password) in `db_dir` that trusts each CA
/// certificate of `roots` (PEM or DER files) for TLS servers, with
/// `certutil`; panics with the install command if it is missing.
pub(crate) fn nss_trusting(db_dir: &Path, roots: &[&Path]) {
    let certutil = find_on_path(&["certutil"]).unwrap_or_else(|| {
        panic!(
            "certutil is not installed: the browser tests trust their CA through NSS; \
             install it with `apt-get install -y libnss3-tools` (CI must install it too)"
        )
    });
    let db = format!("sql:{}", db_dir.display());
    ok(Command::new(&certutil).args(["-d", &db, "-N", "--empty-password"]));
    for (i, ca) in roots.iter().enumerate() {
        ok(Command::new(&certutil)
            .args([
                "-d",
                &db,
                "-A",
                "-t",
                "C,,",
                "-n",
                &format!("vmux-test-{i}"),
                "-i",
            ])
            .arg(ca));
    }
}

/// The log file `path`, created, twice: for a browser's stdout and its
/// stderr.
pub(crate) fn log_files(path: &Path) -> (File, File) {
    let out =
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot duplicate {}: {e}", path.display()));
    (out, err)
}

/// A browser being started: how it is named in messages, what it does
/// once ready, and how its process and log are dealt with if it fails.
pub(crate) struct Starting<'a> {
    /// `Chromium` or `Firefox`.
    pub name: &'static str,
    /// What it does once ready, e.g. "Marionette listened".
    pub ready: &'static str,
    /// Its process, started `started`.
    pub child: &'a mut Child,
    pub started: Instant,
    /// The bound of the wait.
    pub timeout: Duration,
    /// Kills its process group and reaps it.
    pub kill: fn(&mut Child),
    /// The last lines of its log, for a failure's message.
    pub log_tail: &'a dyn Fn() -> String,
}

impl Starting<'_> {
    /// Waits until `port_file` holds what `parse` accepts (a browser
    /// writes it once it listens) and returns that; panics with the
    /// log's tail if the browser exits first, or kills it and panics if
    /// it has not written the file within the bound.
    pub(crate) fn wait_for<T>(self, port_file: &Path, parse: impl Fn(&str) -> Option<T>) -> T {
        let name = self.name;
        loop {
            if let Some(v) = std::fs::read_to_string(port_file)
                .ok()
                .and_then(|text| parse(&text))
            {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{name} exited ({status}) before {}; its log:\n{}",
                    self.ready,
                    (self.log_tail)()
                );
            }
            if self.started.elapsed() > self.timeout {
                (self.kill)(self.child);
                panic!(
                    "{name} did not write {} within {:?}; its log:\n{}",
                    port_file.display(),
                    self.timeout,
                    (self.log_tail)()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
