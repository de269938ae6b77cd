//! What the two clients share: the socket they talk to, the errors that
//! name it, and how a reply becomes a method's value.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ControlError, Peer};

/// A reply of one of the control protocols: a refusal with the peer's
/// sentence, or an answer.
pub(crate) trait ControlReply: Sized {
    /// The sentence of a refusal (`Reply::Error`); any other reply back.
    fn refusal(self) -> Result<String, Self>;
}

/// One peer's control socket.
#[derive(Debug, Clone)]
pub(crate) struct Socket {
    peer: Peer,
    path: PathBuf,
}

impl Socket {
    pub(crate) fn new(peer: Peer, path: PathBuf) -> Socket {
        Socket { peer, path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection whose reads and writes each wait at most
    /// `timeout`.
    pub(crate) fn connect(&self, timeout: Duration) -> Result<UnixStream, ControlError> {
        let s = UnixStream::connect(&self.path).map_err(|_| self.not_running())?;
        s.set_read_timeout(Some(timeout)).map_err(|e| self.io(e))?;
        s.set_write_timeout(Some(timeout)).map_err(|e| self.io(e))?;
        Ok(s)
    }

    /// `reply`'s value as `pick` takes it; a refusal as
    /// [`ControlError::Refused`], any other reply as
    /// [`ControlError::NotVmux`].
    pub(crate) fn take<R: ControlReply, T>(
        &self,
        reply: Result<R, ControlError>,
        pick: impl FnOnce(R) -> Option<T>,
    ) -> Result<T, ControlError> {
        match reply?.refusal() {
            Ok(why) => Err(ControlError::Refused(why)),
            Err(reply) => pick(reply).ok_or_else(|| self.not_vmux()),
        }
    }

    pub(crate) fn not_running(&self) -> ControlError {
        ControlError::NotRunning(self.peer, self.shown())
    }

    pub(crate) fn not_vmux(&self) -> ControlError {
        ControlError::NotVmux(self.peer, self.shown())
    }

    pub(crate) fn io(&self, e: std::io::Error) -> ControlError {
        ControlError::Io(self.peer, self.shown(), e)
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}
