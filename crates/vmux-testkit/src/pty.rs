//! A pseudo-terminal of the test's own: the master is the person's
//! keyboard and screen, the slave what the program under test has as
//! its terminal.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// An open pseudo-terminal pair.
pub struct Pty {
    /// The keyboard and screen.
    pub master: File,
    /// The terminal the program is given (or opens by [`Pty::path`]).
    pub slave: File,
    /// The slave's path (`/dev/pts/N`).
    pub path: PathBuf,
}

/// Opens a new pseudo-terminal. Neither descriptor is inherited across
/// exec: every program a test starts later (a browser, a daemon) would
/// otherwise hold the terminal open, and its end would never be seen;
/// only copies made for a child's stdio are passed on.
pub fn open() -> Pty {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: both out-pointers point at live `c_int`s; the name,
    // termios and winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // SAFETY: fcntl on a descriptor openpty just returned.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(rc, 0, "FD_CLOEXEC: {}", std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are open descriptors that
    // nothing else owns.
    let (master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .expect("the pty's slave has a path");
    Pty {
        master,
        slave,
        path,
    }
}
