//! Helpers for tests of code that keeps files (feature `testing`).

use std::path::PathBuf;

/// A fresh temporary directory and the path `name` inside it (nothing is
/// created there yet); the directory and what it holds are removed when
/// the returned `TempDir` drops, so keep it for the test's length.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    (dir, path)
}
