//! System V IPC system calls, made by the engine itself (in its own IPC
//! namespace), with the kernel's x86_64 structure layouts (`ipc64_perm`,
//! `shmid64_ds`, `semid64_ds`, `msqid64_ds`). On x86_64 the kernel always
//! uses the 64-bit layouts (no IPC_64 flag in `cmd`), so raw syscalls and
//! these structs are all it takes; glibc's wrappers add nothing we need.

use nix::errno::Errno;

pub const IPC_CREAT: i32 = 0o1000;
pub const IPC_EXCL: i32 = 0o2000;
pub const IPC_NOWAIT: i32 = 0o4000;
pub const IPC_RMID: i32 = 0;
pub const IPC_SET: i32 = 1;
pub const IPC_STAT: i32 = 2;
pub const SHM_LOCK: i32 = 11;
pub const SHM_RDONLY: i32 = 0o10000;
pub const SHM_EXEC: i32 = 0o100000;
pub const GETPID: i32 = 11;
pub const GETALL: i32 = 13;
pub const SETALL: i32 = 17;
/// msgrcv: copy the message at position `msgtyp` without removing it
/// (CONFIG_CHECKPOINT_RESTORE).
pub const MSG_COPY: i32 = 0o40000;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Ipc64Perm {
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
    pub seq: u16,
    pad2: u16,
    unused: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ShmidDs {
    pub perm: Ipc64Perm,
    pub segsz: u64,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    pub cpid: i32,
    pub lpid: i32,
    pub nattch: u64,
    unused: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SemidDs {
    pub perm: Ipc64Perm,
    pub otime: i64,
    unused1: u64,
    pub ctime: i64,
    unused2: u64,
    pub nsems: u64,
    unused: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MsqidDs {
    pub perm: Ipc64Perm,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
    pub cbytes: u64,
    pub qnum: u64,
    pub qbytes: u64,
    pub lspid: i32,
    pub lrpid: i32,
    unused: [u64; 2],
}

fn res(r: libc::c_long) -> nix::Result<i64> {
    Errno::result(r)
}

pub fn shmget(key: i32, size: u64, flags: i32) -> nix::Result<i32> {
    // SAFETY: no pointers.
    res(unsafe { libc::syscall(libc::SYS_shmget, key, size, flags) }).map(|r| r as i32)
}

pub fn shmctl_stat(id: i32) -> nix::Result<ShmidDs> {
    let mut ds = ShmidDs::default();
    // SAFETY: the kernel writes one shmid64_ds into `ds`.
    res(unsafe { libc::syscall(libc::SYS_shmctl, id, IPC_STAT, &mut ds as *mut ShmidDs) })?;
    Ok(ds)
}

/// IPC_SET: the kernel takes uid, gid and the low 9 mode bits.
pub fn shmctl_set(id: i32, uid: u32, gid: u32, mode: u32) -> nix::Result<()> {
    let mut ds = ShmidDs::default();
    ds.perm.uid = uid;
    ds.perm.gid = gid;
    ds.perm.mode = mode;
    // SAFETY: the kernel reads one shmid64_ds from `ds`.
    res(unsafe { libc::syscall(libc::SYS_shmctl, id, IPC_SET, &mut ds as *mut ShmidDs) })?;
    Ok(())
}

/// IPC_RMID or SHM_LOCK (commands without a buffer).
pub fn shmctl_cmd(id: i32, cmd: i32) -> nix::Result<()> {
    // SAFETY: no buffer for these commands.
    res(unsafe { libc::syscall(libc::SYS_shmctl, id, cmd, 0usize) })?;
    Ok(())
}

/// A segment attached in the engine for reading or writing its contents;
/// detached on drop.
pub struct ShmAttach {
    addr: *mut u8,
    len: usize,
}

impl ShmAttach {
    pub fn new(id: i32, len: u64, read_only: bool) -> nix::Result<ShmAttach> {
        let flags = if read_only { SHM_RDONLY } else { 0 };
        // SAFETY: the kernel picks the address (NULL), so nothing of ours is
        // replaced; the mapping is `len` bytes (the segment's size).
        let r = unsafe { libc::syscall(libc::SYS_shmat, id, 0usize, flags) };
        let addr = res(r)? as *mut u8;
        Ok(ShmAttach {
            addr,
            len: len as usize,
        })
    }

    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the segment is mapped for `len` bytes until drop; other
        // processes may change it concurrently, which for a frozen tree (or
        // one not yet restored) does not happen.
        unsafe { std::slice::from_raw_parts(self.addr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice; attached read-write by the caller's choice
        // (a read-only attach faults on write, which is a bug of ours).
        unsafe { std::slice::from_raw_parts_mut(self.addr, self.len) }
    }
}

impl Drop for ShmAttach {
    fn drop(&mut self) {
        // SAFETY: detaches the mapping made in new(); no reference to it
        // outlives self.
        unsafe { libc::syscall(libc::SYS_shmdt, self.addr) };
    }
}

pub fn semget(key: i32, nsems: i32, flags: i32) -> nix::Result<i32> {
    // SAFETY: no pointers.
    res(unsafe { libc::syscall(libc::SYS_semget, key, nsems, flags) }).map(|r| r as i32)
}

pub fn semctl_stat(id: i32) -> nix::Result<SemidDs> {
    let mut ds = SemidDs::default();
    // SAFETY: the kernel writes one semid64_ds (arg is the union's pointer).
    res(unsafe { libc::syscall(libc::SYS_semctl, id, 0, IPC_STAT, &mut ds as *mut SemidDs) })?;
    Ok(ds)
}

pub fn semctl_set(id: i32, uid: u32, gid: u32, mode: u32) -> nix::Result<()> {
    let mut ds = SemidDs::default();
    ds.perm.uid = uid;
    ds.perm.gid = gid;
    ds.perm.mode = mode;
    // SAFETY: the kernel reads one semid64_ds.
    res(unsafe { libc::syscall(libc::SYS_semctl, id, 0, IPC_SET, &mut ds as *mut SemidDs) })?;
    Ok(())
}

pub fn semctl_rmid(id: i32) -> nix::Result<()> {
    // SAFETY: no buffer.
    res(unsafe { libc::syscall(libc::SYS_semctl, id, 0, IPC_RMID, 0usize) })?;
    Ok(())
}

/// GETALL: the values of all `nsems` semaphores.
pub fn semctl_getall(id: i32, nsems: usize) -> nix::Result<Vec<u16>> {
    let mut v = vec![0u16; nsems];
    // SAFETY: the kernel writes nsems (the set's size, checked by the
    // caller through IPC_STAT) u16 values.
    res(unsafe { libc::syscall(libc::SYS_semctl, id, 0, GETALL, v.as_mut_ptr()) })?;
    Ok(v)
}

/// SETALL: `vals` must have exactly the set's nsems values.
pub fn semctl_setall(id: i32, vals: &[u16]) -> nix::Result<()> {
    // SAFETY: the kernel reads nsems u16 values; the caller created the set
    // with vals.len() semaphores.
    res(unsafe { libc::syscall(libc::SYS_semctl, id, 0, SETALL, vals.as_ptr()) })?;
    Ok(())
}

/// GETPID: the pid of the last operation on semaphore `num`.
pub fn semctl_getpid(id: i32, num: i32) -> nix::Result<i32> {
    // SAFETY: no buffer.
    res(unsafe { libc::syscall(libc::SYS_semctl, id, num, GETPID, 0usize) }).map(|r| r as i32)
}

pub fn msgget(key: i32, flags: i32) -> nix::Result<i32> {
    // SAFETY: no pointers.
    res(unsafe { libc::syscall(libc::SYS_msgget, key, flags) }).map(|r| r as i32)
}

pub fn msgctl_stat(id: i32) -> nix::Result<MsqidDs> {
    let mut ds = MsqidDs::default();
    // SAFETY: the kernel writes one msqid64_ds.
    res(unsafe { libc::syscall(libc::SYS_msgctl, id, IPC_STAT, &mut ds as *mut MsqidDs) })?;
    Ok(ds)
}

/// IPC_SET with the queue's byte limit too (msg_qbytes; raising it above
/// msgmnb needs CAP_SYS_RESOURCE, so the caller passes the current value
/// when it need not change).
pub fn msgctl_set(id: i32, uid: u32, gid: u32, mode: u32, qbytes: u64) -> nix::Result<()> {
    let mut ds = MsqidDs::default();
    ds.perm.uid = uid;
    ds.perm.gid = gid;
    ds.perm.mode = mode;
    ds.qbytes = qbytes;
    // SAFETY: the kernel reads one msqid64_ds.
    res(unsafe { libc::syscall(libc::SYS_msgctl, id, IPC_SET, &mut ds as *mut MsqidDs) })?;
    Ok(())
}

pub fn msgctl_rmid(id: i32) -> nix::Result<()> {
    // SAFETY: no buffer.
    res(unsafe { libc::syscall(libc::SYS_msgctl, id, IPC_RMID, 0usize) })?;
    Ok(())
}

/// The message at position `index` (0 = oldest), copied without removing
/// it: (mtype, text). `max` bounds the text length (msgmax).
pub fn msg_copy(id: i32, index: u64, max: usize) -> nix::Result<(u64, Vec<u8>)> {
    let mut buf = vec![0u8; 8 + max];
    // SAFETY: the kernel writes a long mtype and at most `max` bytes of text
    // into buf (8 + max bytes long).
    let n = res(unsafe {
        libc::syscall(
            libc::SYS_msgrcv,
            id,
            buf.as_mut_ptr(),
            max,
            index as i64,
            IPC_NOWAIT | MSG_COPY,
        )
    })? as usize;
    let mtype = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    buf.drain(..8);
    buf.truncate(n);
    Ok((mtype, buf))
}

/// Queue one message (never blocks: the queue was sized for its contents).
pub fn msgsnd(id: i32, mtype: u64, text: &[u8]) -> nix::Result<()> {
    let mut buf = Vec::with_capacity(8 + text.len());
    buf.extend_from_slice(&mtype.to_le_bytes());
    buf.extend_from_slice(text);
    // SAFETY: the kernel reads a long mtype and text.len() bytes.
    res(unsafe { libc::syscall(libc::SYS_msgsnd, id, buf.as_ptr(), text.len(), IPC_NOWAIT) })?;
    Ok(())
}

/// Run `f` in a forked child with the given credentials and return its
/// result (an id >= 0, or an errno): objects created there get these
/// creator ids (cuid/cgid), which IPC_SET cannot change afterwards. The
/// child only makes raw system calls (async-signal-safe after fork in a
/// threaded engine) and exits with _exit.
pub fn as_creator(uid: u32, gid: u32, f: impl FnOnce() -> nix::Result<i32>) -> nix::Result<i32> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds.
    res(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: fork; the child runs only raw syscalls below and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = Errno::last();
        // SAFETY: closing our own fds.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        return Err(e);
    }
    if pid == 0 {
        // SAFETY: raw syscalls in the child; setresgid before setresuid
        // (after it, changing gids needs privileges we gave up).
        let r: i64 = unsafe {
            if libc::syscall(libc::SYS_setgroups, 0, 0usize) < 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0
            {
                -(Errno::last() as i64)
            } else {
                match f() {
                    Ok(v) => v as i64,
                    Err(e) => -(e as i64),
                }
            }
        };
        // SAFETY: write 8 bytes from a local, then leave without running
        // the engine's atexit handlers or destructors.
        unsafe {
            libc::write(fds[1], &r as *const i64 as *const libc::c_void, 8);
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; reading 8 bytes into a local.
    let mut r: i64 = i64::MIN;
    let got = unsafe {
        libc::close(fds[1]);
        let n = libc::read(fds[0], &mut r as *mut i64 as *mut libc::c_void, 8);
        libc::close(fds[0]);
        n
    };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    if got != 8 {
        return Err(Errno::EIO);
    }
    if r < 0 {
        Err(Errno::from_raw(-r as i32))
    } else {
        Ok(r as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<Ipc64Perm>(), 48);
        assert_eq!(std::mem::size_of::<ShmidDs>(), 112);
        assert_eq!(std::mem::size_of::<SemidDs>(), 104);
        assert_eq!(std::mem::size_of::<MsqidDs>(), 120);
    }
}
