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
    /// The socket this process created (`None` when systemd owns it).
    socket: Option<PrivateSocket>,
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
            socket: Some(socket),
        })
    }

    /// Removes the socket file if this process created it and it is
    /// still there (an inherited socket belongs to systemd).
    pub fn remove(&self) {
        if let Some(s) = &self.socket {
            s.remove();
        }
    }
}

impl AgentSocket {
    /// The listening socket systemd handed over (socket activation:
    /// `LISTEN_PID` is this process and `LISTEN_FDS` ≥ 1, the socket is fd
    /// 3), or `None` when not socket-activated. (The agent starts no
    /// child processes, so the variables are left as they are.) Must be
    /// called inside a tokio runtime.
    pub fn inherited() -> Result<Option<AgentSocket>, SocketError> {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::FromRawFd;
        const SD_LISTEN_FDS_START: i32 = 3;
        let ours = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let count = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if !ours || count == 0 {
            return Ok(None);
        }
        // SAFETY: systemd's socket-activation protocol passes the listening
        // sockets as descriptors 3.. to the process named by LISTEN_PID,
        // which we checked is this one; nothing else in this process opens
        // or owns descriptor 3 before this point (it is called once, at
        // start-up), so taking ownership of it is sound. If it is not a
        // Unix listening socket, the calls below fail and we report it.
        let std_listener =
            unsafe { std::os::unix::net::UnixListener::from_raw_fd(SD_LISTEN_FDS_START) };
        let err = |e| SocketError::Io(PathBuf::from("LISTEN_FDS"), e);
        let path = std_listener
            .local_addr()
            .map_err(err)?
            .as_pathname()
            .map(Path::to_path_buf)
            .ok_or_else(|| err(std::io::Error::other("the inherited socket has no path")))?;
        std_listener.set_nonblocking(true).map_err(err)?;
        let owner_uid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .or_else(|_| std::fs::symlink_metadata(&path).map(|m| m.uid()))
            .map_err(err)?;
        let listener = UnixListener::from_std(std_listener).map_err(err)?;
        Ok(Some(AgentSocket {
            listener,
            path,
            owner_uid,
            socket: None,
        }))
    }
}
