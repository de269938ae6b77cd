//! The agent's socket: an owner-only [`PrivateSocket`] served by tokio.

use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use vmux_home::PrivateSocket;
pub use vmux_home::SocketError;

/// A bound, listening agent socket.
pub struct AgentSocket {
    /// The listener.
    pub listener: UnixListener,
    /// Its path.
    pub path: PathBuf,
    /// The uid that owns it (this process's effective uid).
    pub owner_uid: u32,
    socket: PrivateSocket,
}

impl AgentSocket {
    /// Binds `path` with mode 0600 (see [`PrivateSocket::bind`]). Must be
    /// called inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<AgentSocket, SocketError> {
        let socket = PrivateSocket::bind(path)?;
        let listener = socket
            .listener
            .try_clone()
            .and_then(UnixListener::from_std)
            .map_err(|e| SocketError::Io(path.to_owned(), e))?;
        Ok(AgentSocket {
            listener,
            path: socket.path.clone(),
            owner_uid: socket.owner_uid,
            socket,
        })
    }

    /// Removes the socket file if it is still ours.
    pub fn remove(&self) {
        self.socket.remove();
    }
}
