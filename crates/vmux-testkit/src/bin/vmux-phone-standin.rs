//! `vmux-phone-standin`: the phone in the headless browser standing in
//! for the phone. It enrols through a `vmux signer phone add` link, says
//! `phone ready` once signed in, then taps Approve on every card the
//! signer shows, one line per card on stdout, until SIGTERM or ctrl-c
//! (which also end its Chromium).
//!
//! ```text
//! vmux-phone-standin --link URL --ca FILE --dir DIR [--host-map RULE]... [--screenshot FILE]
//! vmux-phone-standin --make-pki DIR [--name HOST]...
//! ```
//!
//! `--make-pki` writes a throwaway CA (`ca.pem`) and a server certificate
//! for HOST (default `signer.vmux.test`; `server.pem`, `server-key.pem`)
//! into DIR, for the signer's `--tls-cert`/`--tls-key`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use vmux_testkit::browser::LAUNCH_TIMEOUT;
use vmux_testkit::pki::TestPki;
use vmux_testkit::standin::Standin;

const USAGE: &str = "usage: vmux-phone-standin --link URL --ca FILE --dir DIR \
[--host-map RULE]... [--screenshot FILE]\n       vmux-phone-standin --make-pki DIR [--name HOST]...";

/// Set by SIGTERM, SIGINT or SIGHUP.
static STOP: AtomicBool = AtomicBool::new(false);
/// Chromium's process group, once it runs (0 before).
static CHROMIUM: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Time the main thread gets to stop by itself after a signal before the
/// watchdog kills Chromium and exits.
const GRACE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Args {
    link: Option<String>,
    ca: Option<PathBuf>,
    dir: Option<PathBuf>,
    host_map: Vec<String>,
    screenshot: Option<PathBuf>,
    make_pki: Option<PathBuf>,
    names: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--link" => a.link = Some(value()?),
            "--ca" => a.ca = Some(value()?.into()),
            "--dir" => a.dir = Some(value()?.into()),
            "--host-map" => a.host_map.push(value()?),
            "--screenshot" => a.screenshot = Some(value()?.into()),
            "--make-pki" => a.make_pki = Some(value()?.into()),
            "--name" => a.names.push(value()?),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmux-phone-standin: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.make_pki {
        let mut names: Vec<&str> = args.names.iter().map(String::as_str).collect();
        if names.is_empty() {
            names.push("signer.vmux.test");
        }
        let pki = TestPki::new(dir, &names);
        for p in [pki.ca_pem(), pki.cert_pem(), pki.key_pem()] {
            println!("{}", p.display());
        }
        return ExitCode::SUCCESS;
    }
    let (Some(link), Some(ca), Some(dir)) = (&args.link, &args.ca, &args.dir) else {
        eprintln!("vmux-phone-standin: --link, --ca and --dir are required\n{USAGE}");
        return ExitCode::from(2);
    };
    let mut host_map = args.host_map.clone();
    if host_map.is_empty() {
        // The link's host, on loopback.
        let host = link
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(link)
            .split(['/', ':', '#'])
            .next()
            .unwrap_or_default();
        host_map.push(format!("MAP {host} 127.0.0.1"));
    }
    watch_signals();

    let host_map: Vec<&str> = host_map.iter().map(String::as_str).collect();
    let phone = Standin::launch(dir, ca, &host_map);
    if let Some(pid) = phone.browser().pid().and_then(|p| i32::try_from(p).ok()) {
        CHROMIUM.store(pid, Ordering::SeqCst);
    }
    if STOP.load(Ordering::SeqCst) {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "vmux-phone-standin: {} opening the enrolment link",
        phone.browser().version()
    );
    phone.enrol(link);
    if let Some(path) = &args.screenshot {
        phone.screenshot(path);
    }
    println!("phone ready");
    phone.serve(&STOP, args.screenshot.as_deref(), |event| {
        println!("{event}")
    });
    eprintln!("vmux-phone-standin: stopped");
    // Dropping the stand-in kills Chromium and reaps it.
    drop(phone);
    ExitCode::SUCCESS
}

/// SIGTERM, SIGINT and SIGHUP set [`STOP`]; the serving loop sees it
/// within a quarter of a second. If the main thread is stuck in a longer
/// wait (enrolment), a watchdog kills Chromium's process group and exits
/// after [`GRACE`].
fn watch_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs a handler that only stores to an atomic, which
        // is async-signal-safe; SA_RESTART keeps the harness's reads going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    std::thread::spawn(|| {
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(GRACE);
        // Still here: the main thread is stuck. Chromium may still be
        // starting; wait for its process group as long as that can take.
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        while CHROMIUM.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = CHROMIUM.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) on the process group of the Chromium this
            // process started (it leads its own group).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        eprintln!("vmux-phone-standin: stopped");
        std::process::exit(0);
    });
}
