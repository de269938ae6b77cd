//! Where vmux keeps its files, and how it writes them.
//!
//! # Brief overview
//!
//! - [`Home`] resolves every path an agent or a signer uses: with
//!   `--home DIR` (or `VMUX_HOME`) all of them live in `DIR`; otherwise
//!   configuration is under `$XDG_CONFIG_HOME/vmux`, state under
//!   `$XDG_STATE_HOME/vmux` and the agent's socket is
//!   `~/.ssh/vmux-agent.sock`.
//! - [`write_private`] replaces a file atomically with mode 0600: readers
//!   see the old or the new contents, never a mix, and never a window with
//!   wider permissions.
//! - [`load_toml`] reads an optional configuration file, refusing unknown
//!   keys with a message that names the file and the key.
//!
//! - [`PrivateSocket`] creates an owner-only Unix socket (mode 0600 from
//!   the first moment), replacing a stale one and refusing a live one.
//!
//! - [`WriterLock`]: the one writer of a state file across processes.
//!
//! - [`time`]: Unix time now, UTC rendering, `--since` parsing; [`sync`]:
//!   locks that survive a panicked holder. One of each for every crate.
//!
//! - `testing` (feature `testing`): a temporary path for tests.
//!
//! This crate does no networking and knows nothing of keys or protocols.
#![deny(missing_docs)]

mod socket;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
mod writer;

pub use socket::{PrivateSocket, SocketError};
pub use writer::{lock_path, LockError, WriterLock};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A filesystem error with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// Reading, writing or creating a path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A configuration file is not valid TOML for its schema.
    #[error("{path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, with line and key where known.
        message: String,
    },
    /// No home directory could be found for the default layout.
    #[error("cannot find the home directory: set HOME or pass --home DIR")]
    NoHome,
}

impl HomeError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        HomeError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The directories of one vmux installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    config_dir: PathBuf,
    state_dir: PathBuf,
    default_socket: PathBuf,
}

impl Home {
    /// Everything under one directory (`--home DIR`).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Home {
        let dir = dir.into();
        Home {
            config_dir: dir.clone(),
            state_dir: dir.clone(),
            default_socket: dir.join("vmux-agent.sock"),
        }
    }

    /// The per-user layout: `VMUX_HOME` if set, else the XDG directories.
    pub fn for_user() -> Result<Home, HomeError> {
        if let Some(dir) = std::env::var_os("VMUX_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home::in_dir(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or(HomeError::NoHome)?;
        let xdg = |var: &str, fallback: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(fallback))
                .join("vmux")
        };
        Ok(Home {
            config_dir: xdg("XDG_CONFIG_HOME", ".config"),
            state_dir: xdg("XDG_STATE_HOME", ".local/state"),
            default_socket: home.join(".ssh").join("vmux-agent.sock"),
        })
    }

    /// Directory of `agent.toml` and `signer.toml`.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Directory of state files, keys and identities.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A configuration file by name.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.config_dir.join(name)
    }

    /// A state file by name.
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }

    /// The agent's socket when `--socket` is not given.
    pub fn default_socket(&self) -> &Path {
        &self.default_socket
    }
}

/// Creates `dir` and its parents; directories vmux creates are mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), HomeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| HomeError::io(dir, e))
}

/// Atomically replaces `path` with `contents`, mode 0600.
///
/// The bytes go to a fresh temporary file in the same directory (created
/// 0600 with `O_EXCL`), are synced, and the file is renamed over `path`;
/// then the directory is synced. A crash leaves the old file or the new
/// one, never a torn one.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), HomeError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| HomeError::io(path, io::Error::other("not a file path")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(HomeError::io(path, e));
    }
    Ok(())
}

/// Removes temporary files [`write_private`] left beside `path` when the
/// process was killed mid-write (`.NAME.<random>.tmp`). Call it at start,
/// before anything writes `path`.
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&prefix) && n.ends_with(".tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Reads a file that must exist.
pub fn read(path: &Path) -> Result<Vec<u8>, HomeError> {
    fs::read(path).map_err(|e| HomeError::io(path, e))
}

/// Reads a file, `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, HomeError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HomeError::io(path, e)),
    }
}

/// The permission bits of `path` (e.g. `0o600`).
pub fn mode_of(path: &Path) -> Result<u32, HomeError> {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| HomeError::io(path, e))
}

/// Loads an optional TOML configuration file into `T` (which should use
/// `#[serde(deny_unknown_fields)]`); a missing file gives `T::default()`.
pub fn load_toml<T>(path: &Path) -> Result<T, HomeError>
where
    T: serde::de::DeserializeOwned + Default,
{
    let Some(bytes) = read_optional(path)? else {
        return Ok(T::default());
    };
    let text = String::from_utf8(bytes).map_err(|_| HomeError::Config {
        path: path.to_owned(),
        message: "not UTF-8".into(),
    })?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().trim().to_owned();
        // The key on that line, when the message does not name it already
        // (a wrong type: "invalid type: integer `5`, expected a string").
        let key = line
            .and_then(|l| text.lines().nth(l - 1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().trim_matches('"'))
            .filter(|k| !k.is_empty() && !msg.contains(&format!("`{k}`")));
        HomeError::Config {
            path: path.to_owned(),
            message: match (line, key) {
                (Some(l), Some(k)) => format!("line {l}, key `{k}`: {msg}"),
                (Some(l), None) => format!("line {l}: {msg}"),
                _ => msg,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_private_is_0600_and_replaces() {
        let (_dir, p) = testing::temp_path("sub/state.json");
        write_private(&p, b"one").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        assert_eq!(mode_of(p.parent().unwrap()).unwrap(), 0o700);
        write_private(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        // One a killed writer left is cleaned up; other files are not.
        fs::write(p.with_file_name(".state.json.0123456789abcdef.tmp"), "torn").unwrap();
        fs::write(p.with_file_name("other.tmp"), "keep").unwrap();
        remove_stale_temps(&p);
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 2);
    }

    #[test]
    fn in_dir_puts_everything_there() {
        let h = Home::in_dir("/x");
        assert_eq!(h.default_socket(), Path::new("/x/vmux-agent.sock"));
        assert_eq!(h.config_file("agent.toml"), Path::new("/x/agent.toml"));
        assert_eq!(h.state_file("s"), Path::new("/x/s"));
    }

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[allow(dead_code)]
        name: Option<String>,
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let (_dir, p) = testing::temp_path("agent.toml");
        fs::write(&p, "name = \"a\"\nnmae = \"b\"\n").unwrap();
        let e = load_toml::<Cfg>(&p).unwrap_err().to_string();
        assert!(e.contains("agent.toml"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("nmae"), "{e}");
        assert!(load_toml::<Cfg>(&p.with_file_name("missing.toml")).is_ok());
    }
}
