//! fcntl's owner requests on an open file (F_GETOWN_EX, F_GETSIG,
//! F_GETOWNER_UIDS and their setters): the owner belongs to the open file
//! description, so the engine asks and sets it on its own copy of a
//! task's fd (pidfd_getfd).

use std::os::fd::RawFd;

use nix::errno::Errno;

/// F_GETOWNER_UIDS (CONFIG_CHECKPOINT_RESTORE): the uid and euid of
/// whoever set the owner; libc does not name it.
const F_GETOWNER_UIDS: i32 = 17;
// <asm-generic/fcntl.h>, which libc does not carry for x86_64.
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;
const F_SETOWN_EX: i32 = 15;
const F_GETOWN_EX: i32 = 16;

/// struct f_owner_ex.
#[repr(C)]
struct OwnerEx {
    r#type: i32,
    pid: i32,
}

/// An open file's owner: (F_OWNER_* type, pid), signal, [uid, euid].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub r#type: i32,
    pub pid: i32,
    pub sig: i32,
    pub uids: [u32; 2],
}

pub fn get(fd: RawFd) -> nix::Result<Owner> {
    let mut ex = OwnerEx { r#type: 0, pid: 0 };
    let mut uids = [0u32; 2];
    // SAFETY: fcntl with pointers to locals of the types the requests
    // take (struct f_owner_ex, uid_t[2]).
    unsafe {
        Errno::result(libc::fcntl(fd, F_GETOWN_EX, &mut ex))?;
        let sig = Errno::result(libc::fcntl(fd, F_GETSIG))?;
        if ex.pid != 0 {
            // Without CONFIG_CHECKPOINT_RESTORE the uids stay 0.
            let _ = libc::fcntl(fd, F_GETOWNER_UIDS, uids.as_mut_ptr());
        }
        Ok(Owner {
            r#type: ex.r#type,
            pid: ex.pid,
            sig,
            uids,
        })
    }
}

/// Sets the owner (if `pid` is not 0) and the signal.
pub fn set(fd: RawFd, r#type: i32, pid: i32, sig: i32) -> nix::Result<()> {
    let ex = OwnerEx { r#type, pid };
    // SAFETY: fcntl with a pointer to a local struct f_owner_ex.
    unsafe {
        if pid != 0 {
            Errno::result(libc::fcntl(fd, F_SETOWN_EX, &ex))?;
        }
        Errno::result(libc::fcntl(fd, F_SETSIG, sig))?;
    }
    Ok(())
}
