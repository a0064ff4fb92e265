//! ckpt: checkpoint/restore of Linux process trees into CRIU-format images.

#[macro_use]
pub mod log;
pub mod cgroupfs;
pub mod check;
pub mod dump;
pub mod error;
pub mod external;
pub mod fault;
pub mod images;
pub mod imgdir;
pub mod kernel;
pub mod pageserver;
pub mod pool;
pub mod proc;
pub mod ptrace;
pub mod restore;
pub mod show;
pub mod sys;

pub use error::{Error, Result};
