//! The engine's error type. Every variant names the task (pid), the object
//! and the reason, because the person reading it is usually looking at a
//! failed dump of a process they did not write.

use std::path::PathBuf;

use crate::images::ImageError;
use crate::proc::ProcError;

pub type Pid = i32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call made on behalf of (or inside) a task failed.
    #[error("pid {pid}: {what}: {errno}")]
    Sys {
        pid: Pid,
        what: String,
        errno: nix::errno::Errno,
    },
    /// The task holds state ckpt cannot checkpoint or restore.
    #[error("pid {pid}: {what}: {reason}")]
    Unsupported {
        pid: Pid,
        what: String,
        reason: String,
    },
    /// Something about a task is not as the engine expects.
    #[error("pid {pid}: {what}: {reason}")]
    Task {
        pid: Pid,
        what: String,
        reason: String,
    },
    /// An image is missing, damaged or inconsistent.
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A file of the engine's own (image directory, log) could not be used.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    /// The connection to a page server, or from a dump to one, failed.
    #[error("page server {peer}: {what}: {reason}")]
    PageServer {
        peer: String,
        what: String,
        reason: String,
    },
    /// Bad command-line usage or options.
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn sys(pid: Pid, what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::Sys {
            pid,
            what: what.into(),
            errno,
        }
    }
    pub fn task(pid: Pid, what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Task {
            pid,
            what: what.into(),
            reason: reason.into(),
        }
    }
    pub fn unsupported(pid: Pid, what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            pid,
            what: what.into(),
            reason: reason.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            what: what.into(),
            source,
        }
    }
}

impl Error {
    /// Whether the message already names a task.
    pub fn names_pid(&self) -> bool {
        matches!(
            self,
            Error::Sys { .. } | Error::Unsupported { .. } | Error::Task { .. } | Error::Proc(_)
        )
    }

    /// Make sure the message names `pid`: errors about the engine's own
    /// files (image directory, a full filesystem) say which dump they broke.
    pub fn for_pid(self, pid: Pid, what: &str) -> Error {
        if self.names_pid() {
            self
        } else {
            Error::task(pid, what.to_string(), self.to_string())
        }
    }
}

impl Error {
    /// Put the object an error is about in front of what failed ("file id
    /// 4 (shared by pids [7, 8]): eventfd"), for errors that name a task.
    pub fn context(self, object: impl std::fmt::Display) -> Error {
        match self {
            Error::Sys { pid, what, errno } => Error::Sys {
                pid,
                what: format!("{object}: {what}"),
                errno,
            },
            Error::Unsupported { pid, what, reason } => Error::Unsupported {
                pid,
                what: format!("{object}: {what}"),
                reason,
            },
            Error::Task { pid, what, reason } => Error::Task {
                pid,
                what: format!("{object}: {what}"),
                reason,
            },
            other => other,
        }
    }
}

/// Attach pid/object context to a `nix` result.
pub trait SysContext<T> {
    fn ctx(self, pid: Pid, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn ctx(self, pid: Pid, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(pid, what(), e))
    }
}
