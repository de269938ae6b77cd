//! One writer of a state file across processes: an exclusive `flock` on a
//! lock file beside it, held for as long as the writer lives.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::HomeError;

/// Proof that this process is the one writer of a state file: the lock on
/// `NAME.lock` beside it, released when dropped (or when the process
/// dies, which `flock` guarantees).
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

/// Why the writer's lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another vmux process holds {0}")]
    Busy(PathBuf),
    /// The lock file could not be opened.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// The lock file of the state at `path` (`NAME.lock`).
pub fn lock_path(path: &Path) -> PathBuf {
    path.with_extension("lock")
}

impl WriterLock {
    /// Takes the writer's lock of the state file at `path`, waiting at
    /// most `wait` for another writer to let go.
    pub fn acquire(path: &Path, wait: Duration) -> Result<WriterLock, LockError> {
        let lock_file = lock_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_file)
            .map_err(|e| HomeError::io(&lock_file, e))?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WriterLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(LockError::Busy(lock_file));
                    }
                    // flock has no timed wait; a short poll bounded by `wait`.
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(HomeError::io(&lock_file, e).into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let (_dir, path) = crate::testing::temp_path("state.json");
        let first = WriterLock::acquire(&path, Duration::ZERO).unwrap();
        assert!(matches!(
            WriterLock::acquire(&path, Duration::from_millis(30)),
            Err(LockError::Busy(_))
        ));
        drop(first);
        WriterLock::acquire(&path, Duration::ZERO).unwrap();
        assert_eq!(crate::mode_of(&lock_path(&path)).unwrap(), 0o600);
    }
}
