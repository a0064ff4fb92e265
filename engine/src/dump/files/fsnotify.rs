//! What inotify and fanotify marks have in common: the inode they watch,
//! named in fdinfo by device, inode number and file handle. The handle is
//! opened (open_by_handle_at on a mount of that device) and the path the
//! kernel gives the opened file is kept, checked to lead to that inode
//! again. A watched regular file since unlinked has no such path: it is
//! found as such ([`Target::Unlinked`]) for inotify to keep as a ghost
//! (dump/files/inotify.rs); fanotify refuses it.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// The kernel's dev_t (as fdinfo prints `sdev`) as (major, minor).
fn kernel_dev(sdev: u32) -> (u32, u32) {
    (sdev >> 20, sdev & 0xf_ffff)
}

/// What the handle of a mark leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A path to the watched inode.
    Path(String),
    /// A regular file with no link left (nlink 0), reached through the
    /// handle only: the link of the opened handle, "PATH (deleted)".
    Unlinked(String),
}

/// A path to the inode `ino` of device `sdev` that `handle` names; a
/// watched file since unlinked is refused.
pub fn handle_path(
    pid: Pid,
    what: &str,
    sdev: u32,
    ino: u64,
    r#type: i32,
    handle: &[u8],
) -> Result<String> {
    match handle_target(pid, what, sdev, ino, r#type, handle)? {
        Target::Path(p) => Ok(p),
        Target::Unlinked(path) => Err(Error::unsupported(
            pid,
            what,
            format!(
                "the watched file {path} is unlinked; marks on unlinked files cannot be restored"
            ),
        )),
    }
}

/// What the handle of the mark on inode `ino` of device `sdev` leads to:
/// a path to it, or an unlinked regular file.
pub fn handle_target(
    pid: Pid,
    what: &str,
    sdev: u32,
    ino: u64,
    r#type: i32,
    handle: &[u8],
) -> Result<Target> {
    let (major, minor) = kernel_dev(sdev);
    let mounts = crate::proc::mountinfo::read(pid)?;
    // A mount of the whole filesystem shows every path; a bind mount of a
    // part of it may not, so those come last.
    let mut candidates: Vec<_> = mounts
        .iter()
        .filter(|m| m.major == major && m.minor == minor)
        .collect();
    candidates.sort_by_key(|m| m.root.as_os_str() != "/");
    if candidates.is_empty() {
        return Err(Error::unsupported(
            pid,
            what,
            format!("no mount of device {major}:{minor} is visible, so the watched file cannot be found"),
        ));
    }
    let mut last = String::new();
    for m in candidates {
        let mp = format!("/proc/{pid}/root{}", m.mount_point.display());
        let Ok(mount) = std::fs::File::open(&mp) else {
            continue;
        };
        let file = match crate::sys::fsnotify::open_by_handle(mount.as_fd(), r#type, handle) {
            Ok(f) => f,
            Err(e) => {
                last = format!("open_by_handle_at: {e}");
                continue;
            }
        };
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ))
        .map_err(|e| Error::io("/proc/self/fd", format!("pid {pid}: {what}: readlink"), e))?;
        let path = link.to_string_lossy().into_owned();
        if path.ends_with(" (deleted)") {
            // fstat works on an O_PATH fd: the opened handle is the inode.
            let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&file))
                .map_err(|e| Error::sys(pid, format!("{what}: fstat of {path}"), e))?;
            let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
            if st.st_nlink == 0 && regular && st.st_ino == ino {
                return Ok(Target::Unlinked(path));
            }
            return Err(Error::unsupported(
                pid,
                what,
                format!(
                    "the watched {} {path} is removed and has {} links elsewhere; \
                     only watches on unlinked regular files are kept (as ghost files)",
                    if regular { "file" } else { "inode" },
                    st.st_nlink
                ),
            ));
        }
        let same = std::fs::symlink_metadata(&link).is_ok_and(|st| {
            st.ino() == ino
                && nix::sys::stat::major(st.dev()) as u32 == major
                && nix::sys::stat::minor(st.dev()) as u32 == minor
        });
        if same {
            return Ok(Target::Path(path));
        }
        last = format!("{path} is not the watched inode any more");
    }
    Err(Error::unsupported(
        pid,
        what,
        format!("the watched file has no path that leads to it ({last})"),
    ))
}

/// The handle as CRIU keeps it: 64-bit words, at least 16 of them.
pub fn fh_entry(r#type: i32, handle: &[u8], path: String) -> pb::FhEntry {
    let mut words: Vec<u64> = handle
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_ne_bytes(b)
        })
        .collect();
    words.resize(words.len().max(16), 0);
    pb::FhEntry {
        bytes: handle.len() as u32,
        r#type: r#type as u32,
        handle: words,
        path: Some(path),
        mnt_id: None,
    }
}
