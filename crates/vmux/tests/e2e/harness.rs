//! The test harness itself: kept directories, bounded commands, ports
//! where nothing listens.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_command_past_its_limit_is_killed_and_named_with_its_output() {
    let t = Instant::now();
    let failure = std::panic::catch_unwind(|| {
        run_within(
            Command::new("sh").args(["-c", "echo started; echo on-stderr >&2; exec sleep 60"]),
            Duration::from_secs(1),
        )
    })
    .expect_err("it fails the test");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let msg = failure.downcast_ref::<String>().expect("a message").clone();
    assert!(msg.contains("did not finish within 1s"), "{msg}");
    assert!(msg.contains("sleep 60"), "names the command: {msg}");
    assert!(
        msg.contains("stdout: started") && msg.contains("stderr: on-stderr"),
        "{msg}"
    );
    // One that finishes returns its status and output.
    let out = run_within(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        (&out.stdout[..], &out.stderr[..]),
        (&b"out\n"[..], &b"err\n"[..])
    );
}

#[test]
fn kept_test_dirs_are_the_ones_the_tests_used() {
    let d = test_dir_kept(true);
    let path = d.path().to_owned();
    std::fs::write(path.join("evidence"), "kept").unwrap();
    drop(d);
    assert_eq!(
        std::fs::read_to_string(path.join("evidence")).unwrap(),
        "kept"
    );
    std::fs::remove_dir_all(&path).unwrap();
    // Without it, removed on drop.
    let d = test_dir_kept(false);
    let path = d.path().to_owned();
    drop(d);
    assert!(!path.exists());
}

#[test]
fn a_closed_port_refuses_and_cannot_be_taken() {
    let closed = ClosedPort::reserve();
    let err = std::net::TcpStream::connect(closed.addr()).expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(std::net::TcpListener::bind(closed.addr()).is_err());
}
