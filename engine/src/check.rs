//! `ckpt check`: which kernel features ckpt uses and whether this machine
//! offers them. Each probe really exercises the interface.

use std::fs;

struct Probe {
    name: &'static str,
    required: bool,
    why: &'static str,
    /// What ckpt does on a kernel without it: the fallback it uses, or
    /// what fails.
    if_missing: &'static str,
    result: Result<String, String>,
}

fn yes(s: impl Into<String>) -> Result<String, String> {
    Ok(s.into())
}

/// Seize a child of ours that pauses with `opts`, interrupt it, and run
/// `then` on it while it is stopped; the child is killed afterwards.
fn with_seized_child(
    opts: nix::sys::ptrace::Options,
    then: impl FnOnce(nix::unistd::Pid) -> Result<String, String>,
) -> Result<String, String> {
    let child = crate::sys::fork_paused_child().map_err(|e| format!("fork: {e}"))?;
    let pid = nix::unistd::Pid::from_raw(child);
    let r = (|| -> Result<String, String> {
        nix::sys::ptrace::seize(pid, opts).map_err(|e| format!("PTRACE_SEIZE: {e}"))?;
        nix::sys::ptrace::interrupt(pid).map_err(|e| format!("PTRACE_INTERRUPT: {e}"))?;
        nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL))
            .map_err(|e| e.to_string())?;
        then(pid)
    })();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    r
}

fn ptrace_seize_probe() -> Result<String, String> {
    with_seized_child(nix::sys::ptrace::Options::empty(), |pid| {
        crate::sys::ptrace::get_xstate(pid)
            .map(|x| format!("PTRACE_SEIZE/INTERRUPT ok, xsave area {} bytes", x.len()))
            .map_err(|e| e.to_string())
    })
}

fn cpu() -> Result<String, String> {
    let c = crate::kernel::cpu::this();
    let xcr0 = c.xfeatures_mask.unwrap_or(0);
    if xcr0 == 0 {
        return Err("XCR0 is 0".into());
    }
    yes(format!(
        "{}, xsave components {xcr0:#x}, xsave area {} bytes",
        c.model_id.unwrap_or_default(),
        c.xsave_size.unwrap_or(0)
    ))
}

fn file_exists(p: &str) -> Result<String, String> {
    if fs::metadata(p).is_ok() {
        yes(p)
    } else {
        Err(format!("{p} missing"))
    }
}

fn vdso_layout() -> Result<String, String> {
    let maps = fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let names: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|n| n.starts_with("[v"))
        .collect();
    yes(names.join(" "))
}

fn cap_sys_resource() -> Result<String, String> {
    let s = fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let bnd = s
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapBnd")?;
    if bnd & (1 << 24) != 0 {
        yes("in the bounding set")
    } else {
        Err("not in the bounding set: hard rlimits cannot be raised; ckpt reads limits from /proc and sets them from inside the task".into())
    }
}

fn pagemap_scan() -> Result<String, String> {
    let f = fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    use std::os::fd::AsFd;
    if crate::sys::pagemap_scan_known(f.as_fd()) {
        yes("ioctl present")
    } else {
        Err("PAGEMAP_SCAN not supported (Linux 6.7+)".into())
    }
}

/// `prctl(PR_TIMER_CREATE_RESTORE_IDS, GET)`: 0 or 1 on a kernel that has
/// it (Linux 6.15+), EINVAL before.
fn timer_restore_ids() -> Result<String, String> {
    use crate::restore::timers::PR_TIMER_CREATE_RESTORE_IDS;
    const GET: u64 = 2;
    crate::sys::prctl(PR_TIMER_CREATE_RESTORE_IDS as i32, GET, 0, 0, 0)
        .map(|_| "prctl(PR_TIMER_CREATE_RESTORE_IDS) answers".to_string())
        .map_err(|e| format!("prctl(PR_TIMER_CREATE_RESTORE_IDS): {e}"))
}

/// A TCP socket put into repair mode and out again.
fn tcp_repair() -> Result<String, String> {
    use std::os::fd::AsFd;
    let s = crate::sys::inet_sock::socket(libc::AF_INET, libc::SOCK_STREAM, 0)
        .map_err(|e| format!("socket: {e}"))?;
    crate::sys::tcp_repair::set_repair(s.as_fd(), true)
        .and_then(|()| crate::sys::tcp_repair::set_repair(s.as_fd(), false))
        .map(|()| "a socket goes into repair mode and out".to_string())
        .map_err(|e| format!("setsockopt(TCP_REPAIR): {e}"))
}

/// SO_PEEK_OFF on a UNIX stream socket.
fn unix_peek_off() -> Result<String, String> {
    use crate::sys::unix_sock::{getsockopt_int, setsockopt_int, socketpair};
    use std::os::fd::AsFd;
    let (a, _b) = socketpair(libc::SOCK_STREAM).map_err(|e| format!("socketpair: {e}"))?;
    setsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .and_then(|()| getsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF))
        .map(|v| format!("set on a UNIX socket and read back ({v})"))
        .map_err(|e| format!("SO_PEEK_OFF on a UNIX socket: {e}"))
}

/// Print the table (with `all`, CRIU's features too); 0 if everything
/// required is there.
pub fn run(all: bool) -> i32 {
    let probes = vec![
        Probe {
            name: "ptrace",
            required: true,
            why: "freezing tasks, registers, remote syscalls",
            if_missing: "every dump and restore fails",
            result: ptrace_seize_probe(),
        },
        Probe {
            name: "clone3 set_tid",
            required: true,
            why: "restoring PIDs",
            if_missing: "every restore fails (clone3 with set_tid is Linux 5.5+)",
            result: clone3_set_tid(),
        },
        Probe {
            name: "map_files",
            required: true,
            why: "naming mapped files exactly",
            if_missing: "file mappings cannot be named: dumps fail",
            result: file_exists("/proc/self/map_files"),
        },
        Probe {
            name: "kcmp",
            required: true,
            why: "finding shared file descriptions",
            if_missing: "shared file descriptions cannot be told apart: dumps fail",
            result: file_exists("/proc/self/fdinfo"),
        },
        Probe {
            name: "vdso layout",
            required: true,
            why: "moving [vvar]/[vvar_vclock]/[vdso] back",
            if_missing: "images from another vDSO layout restore through a copy of the dumped vDSO that jumps into this one",
            result: vdso_layout(),
        },
        Probe {
            name: "cpu",
            required: false,
            why: "the CPU images record (cpuinfo.img): a restore refuses images of a CPU with more",
            if_missing: "XSAVE is off: threads' extended register state cannot be saved",
            result: cpu(),
        },
        Probe {
            name: "timers",
            required: false,
            why: "POSIX timers (/proc/PID/timers)",
            if_missing: "POSIX timers cannot be read: dumps fail",
            result: file_exists("/proc/self/timers"),
        },
        Probe {
            name: "timer IDs",
            required: false,
            why: "POSIX timers created with their old IDs",
            if_missing: "timers are created in ID order, deleting the ones in between (Linux < 6.15)",
            result: timer_restore_ids(),
        },
        Probe {
            name: "TCP_REPAIR",
            required: false,
            why: "established TCP connections",
            if_missing: "established and half-closed TCP connections cannot be dumped",
            result: tcp_repair(),
        },
        Probe {
            name: "SO_PEEK_OFF",
            required: false,
            why: "UNIX socket queues read in place",
            if_missing: "UNIX sockets with queued data cannot be dumped",
            result: unix_peek_off(),
        },
        Probe {
            name: "PAGEMAP_SCAN",
            required: false,
            why: "dirty tracking for incremental dumps",
            if_missing: "no dirty tracking: incremental dumps are refused",
            result: pagemap_scan(),
        },
        Probe {
            name: "userfaultfd",
            required: false,
            why: "write-protect dirty tracking; lazy restore",
            if_missing: "no dirty tracking: incremental dumps are refused; no --lazy-pages",
            result: file_exists("/proc/sys/vm/unprivileged_userfaultfd")
                .or_else(|_| file_exists("/dev/userfaultfd")),
        },
        Probe {
            name: "userfaultfd lazy pages",
            required: false,
            why: "restore --lazy-pages (missing-page faults, fork/remap/remove/unmap events)",
            if_missing: "restore --lazy-pages fails",
            result: uffd_lazy(),
        },
        Probe {
            name: "userfaultfd in a user namespace",
            required: false,
            why: "restore --lazy-pages of a tree with a user namespace of its own (its tasks make their userfaultfds through /dev/userfaultfd)",
            if_missing: "restore --lazy-pages of such a tree works only with vm.unprivileged_userfaultfd = 1; else it is refused",
            result: uffd_dev(),
        },
        Probe {
            name: "time namespaces",
            required: false,
            why: "restoring monotonic clocks",
            if_missing: "a tree with a time namespace of its own cannot be dumped or restored",
            result: file_exists("/proc/self/ns/time"),
        },
        // SysV objects get their ids back through next_id.
        Probe {
            name: "SysV IPC ids",
            required: false,
            why: "recreating SysV IPC objects with their ids",
            if_missing: "SysV IPC objects cannot get their ids back: their restore fails",
            result: file_exists("/proc/sys/kernel/shm_next_id")
                .and_then(|_| file_exists("/proc/sys/kernel/sem_next_id"))
                .and_then(|_| file_exists("/proc/sys/kernel/msg_next_id"))
                .map(|_| "/proc/sys/kernel/{shm,sem,msg}_next_id".to_string()),
        },
        Probe {
            name: "CAP_SYS_RESOURCE",
            required: false,
            why: "raising hard rlimits",
            if_missing: "a hard rlimit above the restoring engine's own cannot be set: that restore fails naming the limit",
            result: cap_sys_resource(),
        },
        Probe {
            name: "cgroups",
            required: false,
            why: "cgroup membership, limits, --freeze-cgroup",
            if_missing: "cgroup membership is neither dumped nor restored; --freeze-cgroup fails",
            result: crate::cgroupfs::probe(),
        },
    ];
    let mut ok = true;
    for p in &probes {
        let (mark, text) = match &p.result {
            Ok(s) => ("ok  ", s.clone()),
            Err(s) => {
                if p.required {
                    ok = false;
                }
                (if p.required { "FAIL" } else { "no  " }, s.clone())
            }
        };
        println!("{mark} {:<18} {:<45} {}", p.name, p.why, text);
        if p.result.is_err() {
            println!("     {:<18} without it: {}", "", p.if_missing);
        }
    }
    if all {
        println!();
        println!("CRIU's features (ckpt check --feature NAME):");
        for f in FEATURES {
            let (mark, text) = match f.probe {
                Some(p) => match p() {
                    Ok(s) => ("ok  ", s),
                    Err(s) => ("no  ", s),
                },
                None => ("--  ", format!("not used by ckpt: {}", f.about)),
            };
            println!("{mark} {:<18} {text}", f.name);
        }
    }
    if ok {
        println!("Looks good.");
        0
    } else {
        println!("Does not look good.");
        1
    }
}

/// One kernel feature in CRIU's spelling (`criu check --feature NAME`).
struct Feature {
    name: &'static str,
    /// What it is for; for a feature ckpt does not use, why not.
    about: &'static str,
    /// How ckpt tells it is there: Ok with what was seen, Err with what
    /// is missing. None: ckpt does not use it, so it does not probe it.
    probe: Option<fn() -> Result<String, String>>,
}

/// CRIU's feature names, in `criu check --feature list`'s order.
const FEATURES: &[Feature] = &[
    Feature {
        name: "mnt_id",
        about: "mnt_id in /proc/PID/fdinfo (the mount of each open file)",
        probe: Some(mnt_id),
    },
    Feature {
        name: "mem_dirty_track",
        about: "soft-dirty bits in /proc/PID/pagemap (CONFIG_MEM_SOFT_DIRTY)",
        probe: Some(soft_dirty),
    },
    Feature {
        name: "aio_remap",
        about: "AIO rings are not supported by ckpt",
        probe: None,
    },
    Feature {
        name: "timerfd",
        about: "timerfd settings in /proc/PID/fdinfo",
        probe: Some(timerfd_fdinfo),
    },
    Feature {
        name: "tun",
        about: "TUN/TAP devices are not supported by ckpt",
        probe: None,
    },
    Feature {
        name: "tun_ns",
        about: "TUN/TAP devices are not supported by ckpt",
        probe: None,
    },
    Feature {
        name: "userns",
        about: "user namespaces other than the host's are refused at dump",
        probe: None,
    },
    Feature {
        name: "fdinfo_lock",
        about: "file locks in /proc/PID/fdinfo (--file-locks)",
        probe: Some(fdinfo_lock),
    },
    Feature {
        name: "seccomp_suspend",
        about: "PTRACE_O_SUSPEND_SECCOMP (remote syscalls in filtered tasks)",
        probe: Some(seccomp_suspend),
    },
    Feature {
        name: "seccomp_filters",
        about: "PTRACE_SECCOMP_GET_FILTER (dumping seccomp filters)",
        probe: Some(seccomp_filters),
    },
    Feature {
        name: "loginuid",
        about: "a writable /proc/PID/loginuid (restoring the audit login uid)",
        probe: Some(loginuid),
    },
    Feature {
        name: "cgroupns",
        about: "cgroup namespaces (/proc/PID/ns/cgroup)",
        probe: Some(|| file_exists("/proc/self/ns/cgroup")),
    },
    Feature {
        name: "autofs",
        about: "autofs mounts are not supported by ckpt (no mount namespaces)",
        probe: None,
    },
    Feature {
        name: "tcp_half_closed",
        about: "repair mode on half-closed TCP connections is not used: ckpt refuses \
                connections whose peer has closed its side",
        probe: None,
    },
    Feature {
        name: "compat_cr",
        about: "32-bit (ia32) tasks are not supported by ckpt",
        probe: None,
    },
    Feature {
        name: "uffd",
        about: "userfaultfd for restore --lazy-pages",
        probe: Some(uffd_lazy),
    },
    Feature {
        name: "uffd-noncoop",
        about: "userfaultfd fork/remap/remove/unmap events, which restore --lazy-pages asks for",
        probe: Some(uffd_lazy),
    },
    Feature {
        name: "can_map_vdso",
        about: "ckpt moves the vDSO with mremap, it does not map it anew",
        probe: None,
    },
    Feature {
        name: "sk_ns",
        about: "network namespaces other than the host's are refused at dump",
        probe: None,
    },
    Feature {
        name: "sk_unix_file",
        about: "ckpt finds a UNIX socket's file by its path, not by SIOCUNIXFILE",
        probe: None,
    },
    Feature {
        name: "net_diag_raw",
        about: "raw sockets are not supported by ckpt",
        probe: None,
    },
    Feature {
        name: "nsid",
        about: "network namespaces other than the host's are refused at dump",
        probe: None,
    },
    Feature {
        name: "link_nsid",
        about: "network namespaces other than the host's are refused at dump",
        probe: None,
    },
    Feature {
        name: "kcmp_epoll",
        about: "kcmp(KCMP_EPOLL_TFD) (epoll targets whose fd was closed)",
        probe: Some(kcmp_epoll),
    },
    Feature {
        name: "timens",
        about: "time namespaces (/proc/PID/ns/time)",
        probe: Some(|| file_exists("/proc/self/ns/time")),
    },
    Feature {
        name: "external_net_ns",
        about: "network namespaces other than the host's are refused at dump",
        probe: None,
    },
    Feature {
        name: "clone3_set_tid",
        about: "clone3 with set_tid (restoring pids)",
        probe: Some(clone3_set_tid),
    },
    Feature {
        name: "newifindex",
        about: "network devices are not restored by ckpt",
        probe: None,
    },
    Feature {
        name: "pidfd_store",
        about: "pidfd_open and pidfd_getfd (taking fds from tasks)",
        probe: Some(pidfd_store),
    },
    Feature {
        name: "ns_get_userns",
        about: "which user namespace owns the tree's namespaces (dump of a user namespace)",
        probe: None,
    },
    Feature {
        name: "ns_get_parent",
        about: "nested namespaces are refused at dump",
        probe: None,
    },
    Feature {
        name: "pagemap_scan",
        about: "the PAGEMAP_SCAN ioctl (Linux 6.7+)",
        probe: Some(pagemap_scan),
    },
];

/// `ckpt check --feature NAME`: 0 when the feature is there. `list`
/// prints the names. A name ckpt does not probe (a CRIU feature it does
/// not use, or no CRIU feature at all) is not "there": 1, saying so.
pub fn feature(name: &str) -> i32 {
    if name == "list" {
        let names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        println!("{}", names.join(" "));
        return 0;
    }
    let Some(f) = FEATURES.iter().find(|f| f.name == name) else {
        eprintln!(
            "Error: unknown feature {name:?}; `ckpt check --feature list` lists the names \
             (CRIU's spelling)"
        );
        return 1;
    };
    match f.probe {
        None => {
            eprintln!(
                "Error: {name} is not used by ckpt, which does not check it: {}",
                f.about
            );
            1
        }
        Some(probe) => match probe() {
            Ok(seen) => {
                println!("{name} is supported ({seen})");
                0
            }
            Err(why) => {
                eprintln!("Error: {name} is not supported: {why} ({})", f.about);
                1
            }
        },
    }
}

/// The fdinfo text of our own fd `fd`.
fn own_fdinfo(fd: &impl std::os::fd::AsRawFd) -> Result<String, String> {
    let p = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))
}

fn mnt_id() -> Result<String, String> {
    let f = fs::File::open("/proc/self/stat").map_err(|e| e.to_string())?;
    let info = own_fdinfo(&f)?;
    info.lines()
        .find(|l| l.starts_with("mnt_id:"))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| "no mnt_id line in /proc/PID/fdinfo".into())
}

/// Whether a page written after clearing the soft-dirty bits shows one,
/// as CRIU tells: the bit is never set without CONFIG_MEM_SOFT_DIRTY.
fn soft_dirty() -> Result<String, String> {
    use std::os::unix::fs::FileExt;
    let mut page = vec![0u8; 2 * 4096];
    let addr = page.as_ptr() as u64;
    let addr = (addr + 4095) & !4095;
    let off = (addr - page.as_ptr() as u64) as usize;
    page[off] = 1;
    fs::write("/proc/self/clear_refs", "4")
        .map_err(|e| format!("/proc/self/clear_refs: clearing soft-dirty bits: {e}"))?;
    page[off] = 2;
    std::hint::black_box(&mut page);
    let pm = fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    let mut ent = [0u8; 8];
    pm.read_exact_at(&mut ent, addr / 4096 * 8)
        .map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    if u64::from_ne_bytes(ent) & (1 << 55) != 0 {
        yes("soft-dirty bit set on a written page")
    } else {
        Err(
            "a written page shows no soft-dirty bit: the kernel has no CONFIG_MEM_SOFT_DIRTY \
             (dirty pages can be found with PAGEMAP_SCAN instead, see pagemap_scan)"
                .into(),
        )
    }
}

fn timerfd_fdinfo() -> Result<String, String> {
    let t = crate::sys::timerfd_create(libc::CLOCK_MONOTONIC, 0)
        .map_err(|e| format!("timerfd_create: {e}"))?;
    let info = own_fdinfo(&t)?;
    if info.contains("clockid:") && info.contains("it_value:") {
        yes("clockid and it_value in fdinfo")
    } else {
        Err("timerfd fdinfo has no clockid/it_value".into())
    }
}

fn fdinfo_lock() -> Result<String, String> {
    let f = tempfile::tempfile().map_err(|e| format!("a temporary file: {e}"))?;
    let locked = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| format!("flock: {e}"))?;
    let info = own_fdinfo(&*locked)?;
    if info.lines().any(|l| l.starts_with("lock:")) {
        yes("lock: lines in fdinfo")
    } else {
        Err("a flock()ed file shows no lock: line in /proc/PID/fdinfo".into())
    }
}

fn seccomp_suspend() -> Result<String, String> {
    let opt = nix::sys::ptrace::Options::from_bits_retain(1 << 21);
    with_seized_child(opt, |_| yes("PTRACE_O_SUSPEND_SECCOMP accepted"))
}

fn seccomp_filters() -> Result<String, String> {
    with_seized_child(nix::sys::ptrace::Options::empty(), |pid| {
        // A task without filters: EINVAL (not in filter mode) or ENOENT
        // from a kernel that has the request; EIO from one that has not.
        match crate::sys::ptrace::get_seccomp_filter(pid, 0) {
            Ok(_) => yes("PTRACE_SECCOMP_GET_FILTER answers"),
            Err(nix::errno::Errno::EIO) => {
                Err("PTRACE_SECCOMP_GET_FILTER is not known to the kernel".into())
            }
            Err(e) => yes(format!(
                "PTRACE_SECCOMP_GET_FILTER answers ({e} for no filter)"
            )),
        }
    })
}

/// What `restore --lazy-pages` asks of userfaultfd, asked of a userfaultfd
/// of the engine's own (the restore makes one in each task, with the
/// engine's privilege; the API handshake is the engine's).
fn uffd_lazy() -> Result<String, String> {
    use crate::sys::uffd;
    use std::os::fd::AsFd;
    let fd = uffd::create(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .map_err(|e| format!("userfaultfd: {e}"))?;
    uffd::api(fd.as_fd(), uffd::FEATURES)
        .map_err(|e| format!("UFFDIO_API with the fork/remap/remove/unmap events: {e}"))?;
    Ok("missing-page faults with fork/remap/remove/unmap events".into())
}

fn uffd_dev() -> Result<String, String> {
    use crate::sys::uffd;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dev = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/userfaultfd")
        .map_err(|e| format!("/dev/userfaultfd: {e}"))?;
    let fd = uffd::create_from_dev(dev.as_fd(), libc::O_CLOEXEC | libc::O_NONBLOCK)
        .map_err(|e| format!("USERFAULTFD_IOC_NEW on /dev/userfaultfd: {e}"))?;
    uffd::api(fd.as_fd(), uffd::FEATURES)
        .map_err(|e| format!("UFFDIO_API with the fork/remap/remove/unmap events: {e}"))?;
    Ok("/dev/userfaultfd (USERFAULTFD_IOC_NEW)".into())
}

fn loginuid() -> Result<String, String> {
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/loginuid")
        .map(|_| "/proc/PID/loginuid writable".to_string())
        .map_err(|e| format!("/proc/self/loginuid cannot be written: {e}"))
}

fn kcmp_epoll() -> Result<String, String> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
    use std::os::fd::AsRawFd;
    let ep = Epoll::new(EpollCreateFlags::empty()).map_err(|e| format!("epoll_create: {e}"))?;
    let ev = nix::sys::eventfd::EventFd::new().map_err(|e| format!("eventfd: {e}"))?;
    ep.add(&ev, EpollEvent::new(EpollFlags::EPOLLIN, 0))
        .map_err(|e| format!("epoll_ctl: {e}"))?;
    let me = std::process::id() as i32;
    let fd = ev.as_raw_fd();
    match crate::sys::kcmp_epoll_tfd(me, fd, me, ep.0.as_raw_fd(), fd, 0) {
        Ok(0) => yes("kcmp(KCMP_EPOLL_TFD) finds an epoll target"),
        Ok(r) => Err(format!(
            "kcmp(KCMP_EPOLL_TFD) says {r} for the target itself"
        )),
        Err(e) => Err(format!("kcmp(KCMP_EPOLL_TFD): {e}")),
    }
}

fn clone3_set_tid() -> Result<String, String> {
    file_exists("/proc/sys/kernel/ns_last_pid")?;
    // Our own pid is taken: a kernel with set_tid says EEXIST, one
    // without says E2BIG (a clone_args too large) or ENOSYS.
    match crate::sys::clone3_with_pid(std::process::id() as i32, 0, libc::SIGCHLD as u64) {
        Err(nix::errno::Errno::EEXIST) => yes("clone3 takes set_tid"),
        Err(e) => Err(format!("clone3 with set_tid: {e}")),
        Ok(0) => std::process::exit(0),
        Ok(child) => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            Err(format!("clone3 gave pid {child}, not the pid asked for"))
        }
    }
}

fn pidfd_store() -> Result<String, String> {
    let me = std::process::id() as i32;
    let f = fs::File::open("/proc/self/stat").map_err(|e| e.to_string())?;
    use std::os::fd::AsRawFd;
    crate::sys::take_fd(me, f.as_raw_fd())
        .map(|_| "pidfd_open and pidfd_getfd work".to_string())
        .map_err(|e| format!("pidfd_open/pidfd_getfd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_names_are_criu_spelled_and_unique() {
        let mut names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        for n in &names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'-'),
                "{n}"
            );
        }
        names.sort();
        let len = names.len();
        names.dedup();
        assert_eq!(names.len(), len, "a feature name is listed twice");
    }

    #[test]
    fn unknown_and_unused_features_fail() {
        assert_eq!(feature("no_such_feature"), 1);
        assert_eq!(feature("compat_cr"), 1);
        assert_eq!(feature("list"), 0);
    }

    #[test]
    fn features_present_on_every_kernel_ckpt_runs_on() {
        // What ckpt cannot work without on any kernel it supports.
        for name in [
            "mnt_id",
            "timerfd",
            "fdinfo_lock",
            "cgroupns",
            "pidfd_store",
        ] {
            assert_eq!(feature(name), 0, "{name}");
        }
    }
}
