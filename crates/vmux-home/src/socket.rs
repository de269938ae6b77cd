//! Owner-only Unix sockets: created mode 0600 with no wider window,
//! stale sockets replaced, live ones never stolen, and the owner's uid
//! recorded for peer-credential checks.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::os::unix::net::UnixListener;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process is serving this path.
    #[error("another process is already listening on {0}; stop it or choose another path")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A filesystem or socket call failed.
    #[error("cannot create the socket {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// A bound, listening owner-only socket.
pub struct PrivateSocket {
    /// The listener.
    pub listener: UnixListener,
    /// Its path.
    pub path: PathBuf,
    /// The uid that owns it (this process's effective uid).
    pub owner_uid: u32,
    inode: u64,
}

impl PrivateSocket {
    /// Binds `path` with mode 0600.
    ///
    /// The socket is bound inside a fresh mode-0700 directory beside
    /// `path`, set to 0600, then renamed into place: no other user can
    /// connect to it at any moment, whatever the umask.
    pub fn bind(path: &Path) -> Result<PrivateSocket, SocketError> {
        let err = |e| SocketError::Io(path.to_owned(), e);
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(SocketError::NotASocket(path.to_owned()));
                }
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => return Err(SocketError::InUse(path.to_owned())),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::fs::remove_file(path).map_err(err)?;
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::create_private_dir(parent).map_err(|e| match e {
            crate::HomeError::Io { source, .. } => err(source),
            other => err(io::Error::other(other.to_string())),
        })?;
        let staging = parent.join(format!(".vmux-agent-{:016x}", rand::random::<u64>()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(err)?;
        let result = (|| {
            let tmp = staging.join("s");
            let listener = UnixListener::bind(&tmp)?;
            listener.set_nonblocking(true)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, path)?;
            Ok(listener)
        })();
        let _ = std::fs::remove_dir_all(&staging);
        let listener = result.map_err(err)?;
        let meta = std::fs::symlink_metadata(path).map_err(err)?;
        Ok(PrivateSocket {
            listener,
            path: path.to_owned(),
            owner_uid: meta.uid(),
            inode: meta.ino(),
        })
    }

    /// Removes the socket file if it is still ours.
    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.ino() == self.inode {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
