//! The audited `unsafe` of the engine: raw system calls that `nix` does not
//! wrap. Every function here is a thin, typed wrapper with a SAFETY note;
//! nothing else in the engine calls `libc::syscall` or `libc::ptrace`.

pub mod cpu;
pub mod fd;
pub mod fown;
pub mod fsnotify;
pub mod inet_diag;
pub mod inet_sock;
pub mod ipc;
pub mod netdev;
pub mod netlink;
pub mod netlink_sock;
pub mod nftables;
pub mod packet_sock;
pub mod pagemap_scan;
pub mod pidfd;
pub mod process;
pub mod ptrace;
pub mod raw_sock;
pub mod rtnetlink;
pub mod signal;
pub mod tcp_repair;
pub mod tty;
pub mod uffd;
pub mod unix_sock;

use nix::errno::Errno;

/// `clone3(2)` with `set_tid`, so a restored task gets its old PID.
///
/// Returns `Ok(0)` in the child and the child's PID in the parent, like
/// `fork()`. The child starts with a copy of the caller's address space
/// (no `CLONE_VM`), so it can run ordinary Rust code until it stops itself.
pub fn clone3_with_pid(pid: i32, flags: u64, exit_signal: u64) -> nix::Result<i32> {
    clone3_with_pids(&[pid], flags, exit_signal)
}

/// [`clone3_with_pid`] for a task in nested pid namespaces: `levels` are
/// its pids from the outermost level to be kept down to its own
/// namespace (set_tid takes them innermost first). With CLONE_NEWPID in
/// `flags`, the last is 1: the child is the new namespace's init.
pub fn clone3_with_pids(levels: &[i32], flags: u64, exit_signal: u64) -> nix::Result<i32> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    // No allocation: forked copies of the engine call this.
    let mut tids = [0 as libc::pid_t; 32];
    if levels.is_empty() || levels.len() > tids.len() {
        return Err(Errno::EINVAL);
    }
    for (slot, &pid) in tids.iter_mut().zip(levels.iter().rev()) {
        *slot = pid;
    }
    let args = CloneArgs {
        flags,
        exit_signal,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: levels.len() as u64,
        ..Default::default()
    };
    // SAFETY: `args` and `tids` outlive the call; without CLONE_VM the child
    // gets a private copy of the address space and returns here like fork().
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    Errno::result(r).map(|r| r as i32)
}

/// `rt_sigaction(2)` with the kernel's own struct layout, so that handler,
/// flags, restorer and mask are set exactly as dumped (glibc's wrapper would
/// substitute its own restorer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

pub fn rt_sigaction(sig: i32, act: Option<&KernelSigaction>) -> nix::Result<KernelSigaction> {
    let mut old = KernelSigaction::default();
    let new_ptr = act.map_or(std::ptr::null(), |a| a as *const KernelSigaction);
    // SAFETY: both pointers are valid for the kernel struct size (8 = sigset
    // size on x86_64); a null `act` only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            new_ptr,
            &mut old as *mut KernelSigaction,
            8usize,
        )
    };
    Errno::result(r).map(|_| old)
}

/// `close_range(2)`.
pub fn close_range(first: u32, last: u32) -> nix::Result<()> {
    // SAFETY: plain syscall on integers; closing fds can't violate memory safety
    // in the single-threaded restore child this is used in.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    Errno::result(r).map(|_| ())
}

/// `prctl(2)` with integer arguments.
pub fn prctl(option: i32, a2: u64, a3: u64, a4: u64, a5: u64) -> nix::Result<i64> {
    // SAFETY: callers pass only integer-argument prctl options.
    let r = unsafe { libc::prctl(option, a2, a3, a4, a5) };
    Errno::result(r).map(|r| r as i64)
}

/// A read-only private mapping of a whole file (pages images), so page
/// contents go from the page cache to the restored task in one copy.
#[derive(Debug)]
pub struct Mmap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mmap {
    pub fn empty() -> Mmap {
        Mmap {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    pub fn map(file: &std::fs::File) -> std::io::Result<Mmap> {
        Mmap::map_with(file, libc::MAP_POPULATE)
    }

    /// As [`map`](Self::map), without populating: for a file of which
    /// only parts are read (populating a GiB costs about a second), or a
    /// sparse one, where populating would allocate every hole.
    pub fn map_sparse(file: &std::fs::File) -> std::io::Result<Mmap> {
        Mmap::map_with(file, 0)
    }

    fn map_with(file: &std::fs::File, populate: libc::c_int) -> std::io::Result<Mmap> {
        use std::os::fd::AsRawFd;
        let len = file.metadata()?.len() as usize;
        if len == 0 {
            return Ok(Mmap {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh read-only mapping of a file we hold open; the
        // mapping is owned by the returned value and unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | populate,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mmap { ptr, len })
    }

    /// Faults in `len` bytes from `off` (clamped to the mapping) in one
    /// call, as `map` does for the whole file; best effort: what it leaves
    /// out faults in when read.
    pub fn populate(&self, off: usize, len: usize) {
        const MADV_POPULATE_READ: libc::c_int = 22;
        let off = off.min(self.len) & !4095;
        let len = len.min(self.len - off);
        if len == 0 {
            return;
        }
        // SAFETY: advice on a range inside the mapping owned by self (off
        // page aligned, within it); MADV_POPULATE_READ only faults pages
        // in, it changes no content and no mapping.
        unsafe {
            libc::madvise(
                (self.ptr as *mut u8).add(off) as *mut libc::c_void,
                len,
                MADV_POPULATE_READ,
            )
        };
    }

    /// Whether the children the process forks from now on get this
    /// mapping (MADV_DOFORK, the default) or not (MADV_DONTFORK): a
    /// restore's tasks are forked copies of the engine that never read
    /// the pages files the engine mapped, and every mapping they inherit
    /// is one more for each fork to copy, for /proc/PID/maps to list and
    /// for the address space reset to unmap, once per task.
    pub fn inherit(&self, yes: bool) {
        if self.len == 0 {
            return;
        }
        let advice = if yes {
            libc::MADV_DOFORK
        } else {
            libc::MADV_DONTFORK
        };
        // SAFETY: advice on exactly the mapping owned by self; it changes
        // only what a later fork copies, not this process's view of it.
        unsafe { libc::madvise(self.ptr, self.len, advice) };
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: ptr..ptr+len is a live PROT_READ mapping owned by self.
        // Image files are not modified while a restore reads them; if one
        // were truncated meanwhile, access would fault, not misbehave.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

// SAFETY: the mapping is read-only for its whole life and owned by the
// value: reading it from several threads at once is sound.
unsafe impl Sync for Mmap {}
// SAFETY: nothing ties the mapping to the thread that made it.
unsafe impl Send for Mmap {}

impl Drop for Mmap {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmapping exactly the mapping we created.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

/// A new shared anonymous memory object of `size` bytes (what
/// mmap(MAP_SHARED | MAP_ANONYMOUS) makes: "/dev/zero (deleted)" in
/// /proc/PID/maps), held by an fd instead of a mapping: mapped for a
/// moment, opened through /proc/self/map_files (CAP_CHECKPOINT_RESTORE in
/// the initial user namespace), unmapped.
pub fn shared_anon_object(size: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: a fresh mapping no Rust value refers to, unmapped below
    // before anything else can use it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let start = ptr as u64;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/map_files/{start:x}-{:x}", start + size));
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(ptr, size as usize) };
    Ok(opened?.into())
}

/// A copy of fd `fd` of process `pid` (pidfd_open + pidfd_getfd), close-on-exec.
pub fn take_fd(pid: i32, fd: i32) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls; the returned fds are fresh and ours.
    unsafe {
        let pidfd = nix::errno::Errno::result(libc::syscall(libc::SYS_pidfd_open, pid, 0))?;
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let got = nix::errno::Errno::result(libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        ))?;
        Ok(std::os::fd::OwnedFd::from_raw_fd(got as i32))
    }
}

/// `fork(2)` of the whole engine, for the dump's worker process.
///
/// Only for a single-threaded caller: the child of a multi-threaded
/// process may only call async-signal-safe functions.
pub fn fork_single_threaded() -> nix::Result<nix::unistd::ForkResult> {
    debug_assert!(
        std::fs::read_dir("/proc/self/task").map_or(true, |d| d.count() == 1),
        "fork_single_threaded called with threads running"
    );
    // SAFETY: the caller is single-threaded (checked above in debug
    // builds), so the child's copy of every lock and allocator state is
    // consistent and it may run any code.
    unsafe { nix::unistd::fork() }
}

/// Makes `sigs` call `handler` (which must be async-signal-safe), with
/// SA_RESTART so that no system call of the engine fails with EINTR.
pub fn set_flag_handler(sigs: &[nix::sys::signal::Signal], handler: extern "C" fn(i32)) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let act = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &s in sigs {
        // SAFETY: the handler is a plain function the caller vouches is
        // async-signal-safe (it stores to an atomic).
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// Makes `sigs` ignored (the lazy-pages daemon outlives the terminal and
/// any stray SIGTERM meant for the engine).
pub fn ignore_signals(sigs: &[nix::sys::signal::Signal]) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let act = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for &s in sigs {
        // SAFETY: ignoring a signal installs no handler code at all.
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// `pidfd_open(2)`: a new pidfd of `pid`; the caller owns the fd.
pub fn pidfd_open(pid: i32, flags: u32) -> nix::Result<std::os::fd::RawFd> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    Errno::result(r).map(|fd| fd as std::os::fd::RawFd)
}

/// CPUID leaf `leaf`, sub-leaf `sub`: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    // SAFETY: every x86-64 CPU has CPUID, which only reads.
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid_count(leaf, sub) };
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// `kcmp(pid1, pid2, KCMP_EPOLL_TFD, fd, {efd, tfd, toff})`: whether fd
/// `fd` of `pid1` is the file the epoll set at `efd` of `pid2` watches as
/// its `toff`-th target registered under fd number `tfd` (0: the same).
pub fn kcmp_epoll_tfd(
    pid1: i32,
    fd: i32,
    pid2: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> nix::Result<i32> {
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: i32 = 7;
    let slot = Slot {
        efd: efd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: the kernel only reads the slot, a live borrow of the right
    // layout (struct kcmp_epoll_slot).
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1,
            pid2,
            KCMP_EPOLL_TFD,
            fd,
            &slot as *const Slot,
        )
    };
    Errno::result(r).map(|r| r as i32)
}

/// A child of the caller that only waits to be killed, for the probes of
/// `ckpt check` that need a task to seize. The caller kills and reaps it.
pub fn fork_paused_child() -> nix::Result<i32> {
    // SAFETY: the child only calls pause(2) (async-signal-safe) until it
    // is killed, so forking a caller with threads is fine.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => loop {
            nix::unistd::pause();
        },
        nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}

/// Whether the kernel has the PAGEMAP_SCAN ioctl (Linux 6.7+) on an open
/// /proc/PID/pagemap: an argument it must reject gives EINVAL if it
/// does, ENOTTY if it does not.
pub fn pagemap_scan_known(pagemap: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    // PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg), 96 bytes; an
    // all-zero one has a bad size.
    const PAGEMAP_SCAN: u64 = 0xc060_6610;
    let arg = [0u64; 12];
    // SAFETY: the kernel reads at most the 96 bytes of `arg`, and rejects
    // them.
    let r = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, arg.as_ptr()) };
    r == 0 || Errno::last() != Errno::ENOTTY
}

/// `timerfd_create(2)`: a new timerfd of `clockid`, owned.
pub fn timerfd_create(clockid: i32, flags: i32) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: integer arguments only.
    let fd = Errno::result(unsafe { libc::timerfd_create(clockid, flags) })?;
    // SAFETY: the fd was just created and is ours alone.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `move_mount(2)` with MOVE_MOUNT_SET_GROUP (Linux 5.15): the private
/// mount `to` joins the peer group of `from` and becomes a slave of its
/// master, as CRIU restores sharing. Both are O_PATH fds of mount roots
/// on one superblock, `from`'s root holding `to`'s.
pub fn move_mount_set_group(
    from: std::os::fd::BorrowedFd<'_>,
    to: std::os::fd::BorrowedFd<'_>,
) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
    const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
    const MOVE_MOUNT_SET_GROUP: u32 = 0x100;
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall; the paths are static empty C strings and the
    // fds are borrowed for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH | MOVE_MOUNT_SET_GROUP,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

/// `open_tree(2)` with OPEN_TREE_CLONE of the mount whose root `dir` is:
/// a detached copy of that mount, on the same superblock, and with
/// `recursive` (AT_RECURSIVE) of every mount below it too. The copy
/// outlives the unmount of the original (the engine keeps the host's view
/// through one once a pivot_root'ed tree's old root is gone,
/// restore/mntns.rs) and is another mount, which fanotify marks on the
/// original do not see (dump/mntns.rs). The kernel clones only mounts of
/// the caller's own mount namespace (EINVAL otherwise, and for an
/// unbindable mount).
pub fn open_tree_clone(
    dir: std::os::fd::BorrowedFd<'_>,
    recursive: bool,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    const OPEN_TREE_CLONE: u32 = 1;
    const AT_RECURSIVE: u32 = 0x8000;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as u32
        | libc::AT_EMPTY_PATH as u32
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: plain syscall; the path is a static empty C string and the
    // fd is borrowed for the call.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) };
    let fd = nix::errno::Errno::result(r)? as i32;
    // SAFETY: the fd was just created and is ours alone.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// What `ns_get` asks of a namespace fd (linux/nsfs.h).
#[derive(Debug, Clone, Copy)]
pub enum NsGet {
    /// NS_GET_USERNS: the user namespace that owns it.
    Owner,
    /// NS_GET_PARENT: the parent of a user or pid namespace.
    Parent,
}

/// An fd of the namespace that owns `ns` or of its parent (`what`);
/// EPERM when that lies outside the caller's user namespace.
pub fn ns_get(ns: std::os::fd::BorrowedFd<'_>, what: NsGet) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    const NS_GET_USERNS: u64 = 0xb701;
    const NS_GET_PARENT: u64 = 0xb702;
    let req = match what {
        NsGet::Owner => NS_GET_USERNS,
        NsGet::Parent => NS_GET_PARENT,
    };
    // SAFETY: both ioctls take no argument and return a new fd, owned
    // by the caller from here on.
    let fd = Errno::result(unsafe { libc::ioctl(ns.as_raw_fd(), req as _) })?;
    // SAFETY: `fd` is a new fd nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `fork(2)` for a caller that may have threads: `Ok(0)` in the child,
/// which, as the child of `clone3_with_pid`, only runs what a restore
/// child runs (its own copy of the engine's memory, no lock taken by
/// another thread at the fork) and ends with `_exit`.
pub fn fork_restore_child() -> nix::Result<i32> {
    // SAFETY: the child's contract is clone3_with_pid's (see there).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(0),
        nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}
