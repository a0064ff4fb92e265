//! Snapshot tests of `ckpt show` on an image directory built here from
//! hand-made messages with fixed numbers: a two-task tree (the first task
//! with two threads) with handlers, credentials, limits, timers, pending
//! signals, private and shared memory and a few files (regular files, a
//! pipe with buffered data shared by both tasks, an eventfd, an epoll set).
//! The snapshots live in `snapshots/`; after an intended change of the
//! output, run the tests once with `INSTA_UPDATE=always` and review the
//! diff.

use std::path::Path;

use crate::images::{pb, write_image, ImageWriter, Magic, Manifest, IMAGES_V1_1};

use super::{load, render_json, render_text};
use crate::images::pagemap::PAGE;
use crate::images::vma::{
    VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_HEAP, VMA_AREA_REGULAR, VMA_AREA_STACK,
    VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_FILE_PRIVATE, VMA_FILE_SHARED,
};

const PID: u32 = 100;
const CHILD: u32 = 105;

fn ids(files_id: u32) -> pb::TaskKobjIdsEntry {
    pb::TaskKobjIdsEntry {
        vm_id: 1,
        files_id,
        fs_id: 1,
        sighand_id: 1,
        pid_ns_id: Some(1),
        net_ns_id: Some(2),
        mnt_ns_id: Some(3),
        user_ns_id: Some(4),
        ..Default::default()
    }
}

/// A siginfo_t as PTRACE_PEEKSIGINFO gives it: signo, errno, code, then
/// pid and uid.
fn siginfo(signo: i32, code: i32, pid: i32, uid: u32) -> pb::SiginfoEntry {
    let mut b = vec![0u8; 128];
    b[0..4].copy_from_slice(&signo.to_le_bytes());
    b[8..12].copy_from_slice(&code.to_le_bytes());
    b[16..20].copy_from_slice(&pid.to_le_bytes());
    b[20..24].copy_from_slice(&uid.to_le_bytes());
    pb::SiginfoEntry { siginfo: b }
}

fn creds(uid: u32) -> pb::CredsEntry {
    let all = 0x1ff_ffff_ffffu64;
    let words = |v: u64| vec![v as u32, (v >> 32) as u32];
    pb::CredsEntry {
        uid,
        gid: uid,
        euid: uid,
        egid: uid,
        suid: uid,
        sgid: uid,
        fsuid: uid,
        fsgid: uid,
        cap_inh: words(0),
        cap_prm: words(all & !(1 << 24)),
        cap_eff: words(1 << 21 | 1 << 12),
        cap_bnd: words(all & !(1 << 24)),
        cap_amb: words(0),
        secbits: (libc::SECBIT_KEEP_CAPS | libc::SECBIT_NOROOT) as u32,
        groups: vec![uid, 27, 100],
        no_new_privs: Some(1),
        ..Default::default()
    }
}

fn regs(ip: u64, sp: u64, ax: u64, orig_ax: u64) -> pb::UserX86RegsEntry {
    pb::UserX86RegsEntry {
        ip,
        sp,
        ax,
        orig_ax,
        cs: 0x33,
        ss: 0x2b,
        flags: 0x246,
        fs_base: 0x7f00_0000_2740,
        mode: Some(pb::UserX86RegsMode::Native as i32),
        ..Default::default()
    }
}

fn fpregs() -> pb::UserX86FpregsEntry {
    pb::UserX86FpregsEntry {
        cwd: 0x37f,
        mxcsr: 0x1f80,
        mxcsr_mask: 0xffff,
        st_space: vec![0; 32],
        xmm_space: vec![0; 64],
        xsave: Some(pb::UserX86XsaveEntry {
            xstate_bv: 0x207,
            ymmh_space: vec![0; 64],
            ..Default::default()
        }),
        ckpt_xsave_raw: Some(vec![0; 2696]),
        ..Default::default()
    }
}

fn thread_core(comm: &str, blk: u64) -> pb::ThreadCoreEntry {
    pb::ThreadCoreEntry {
        futex_rla: 0x7f00_0000_2a20,
        futex_rla_len: 24,
        sched_nice: Some(5),
        sched_policy: Some(libc::SCHED_OTHER as u32),
        sched_prio: Some(0),
        blk_sigset: Some(blk),
        sas: Some(pb::ThreadSasEntry {
            ss_sp: 0,
            ss_size: 0,
            ss_flags: libc::SS_DISABLE as u32,
        }),
        pdeath_sig: Some(0),
        creds: Some(creds(1000)),
        seccomp_mode: Some(pb::SeccompMode::Disabled as i32),
        comm: Some(comm.into()),
        rseq_entry: Some(pb::RseqEntry {
            rseq_abi_pointer: 0x7f00_0000_3060,
            rseq_abi_size: 32,
            signature: 0x5305_3053,
            rseq_cs_pointer: None,
        }),
        timerslack_ns: Some(50_000),
        ..Default::default()
    }
}

/// 62 dispositions (signals 1..64 without SIGKILL and SIGSTOP), all
/// default but SIGINT (ignored), SIGTERM (a handler) and SIGCHLD
/// (SIG_DFL with SA_NOCLDWAIT).
fn sigactions() -> Vec<pb::SaEntry> {
    let restorer = 0x7f00_0004_2050;
    (0..62)
        .map(|i| match super::names::sigaction_signal(i) as i32 {
            libc::SIGINT => pb::SaEntry {
                sigaction: 1,
                flags: 0x0400_0000,
                restorer,
                mask: 0,
                compat_sigaction: None,
            },
            libc::SIGTERM => pb::SaEntry {
                sigaction: 0x40_1136,
                flags: (libc::SA_RESTART | libc::SA_SIGINFO) as u64 | 0x0400_0000,
                restorer,
                mask: 1 << (libc::SIGUSR1 - 1),
                compat_sigaction: None,
            },
            libc::SIGCHLD => pb::SaEntry {
                sigaction: 0,
                flags: libc::SA_NOCLDWAIT as u64,
                restorer: 0,
                mask: 0,
                compat_sigaction: None,
            },
            _ => pb::SaEntry::default(),
        })
        .collect()
}

fn rlimits() -> pb::TaskRlimitsEntry {
    let inf = u64::MAX;
    let lim = |cur, max| pb::RlimitEntry { cur, max };
    pb::TaskRlimitsEntry {
        rlimits: vec![
            lim(inf, inf),
            lim(inf, inf),
            lim(inf, inf),
            lim(8 << 20, inf),
            lim(0, inf),
            lim(inf, inf),
            lim(63_704, 63_704),
            lim(1024, 4096),
            lim(8 << 20, 8 << 20),
            lim(inf, inf),
            lim(inf, inf),
            lim(63_704, 63_704),
            lim(819_200, 819_200),
            lim(0, 0),
            lim(0, 0),
            lim(inf, inf),
        ],
    }
}

fn vma(start: u64, end: u64, prot: i32, flags: i32, status: u32, shmid: u64) -> pb::VmaEntry {
    pb::VmaEntry {
        start,
        end,
        pgoff: 0,
        shmid,
        prot: prot as u32,
        flags: flags as u32,
        status,
        fd: -1,
        madv: None,
        fdflags: None,
    }
}

fn reg(id: u32, name: &str, flags: i32, pos: u64, mode: u32, size: Option<u64>) -> pb::FileEntry {
    pb::FileEntry {
        r#type: pb::FdTypes::Reg as i32,
        id,
        reg: Some(pb::RegFileEntry {
            id,
            flags: flags as u32,
            pos,
            fown: pb::FownEntry::default(),
            name: name.into(),
            size,
            mode: Some(mode),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An inotify watch of the sample, on inode `ino` at `path`.
fn watch(wd: u32, path: &str, ino: u64, mask: u32) -> pb::InotifyWdEntry {
    pb::InotifyWdEntry {
        id: 34,
        i_ino: ino,
        mask,
        ignored_mask: 0,
        s_dev: 0x80_0001,
        wd,
        f_handle: pb::FhEntry {
            bytes: 8,
            r#type: 1,
            handle: vec![0; 16],
            path: Some(path.into()),
            mnt_id: None,
        },
    }
}

fn pagemap(dir: &Path, name: &str, pages_id: u32, entries: &[(u64, u32)]) {
    let mut w = ImageWriter::create(dir.join(name), Magic::Pagemap).unwrap();
    w.write_entry(&pb::PagemapHead { pages_id }).unwrap();
    for &(vaddr, nr_pages) in entries {
        w.write_entry(&pb::PagemapEntry {
            nr_pages64: None,
            vaddr,
            nr_pages,
            in_parent: None,
            flags: Some(4),
        })
        .unwrap();
    }
    w.finish().unwrap();
}

fn pages(dir: &Path, id: u32, n: u64) {
    let mut w = ImageWriter::create(dir.join(format!("pages-{id}.img")), Magic::Raw).unwrap();
    w.write_raw(&vec![0x5a; (n * PAGE) as usize]).unwrap();
    w.finish().unwrap();
}

/// Writes the sample image directory, manifest included.
fn write_sample(dir: &Path) {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let rx = libc::PROT_READ | libc::PROT_EXEC;
    let private = libc::MAP_PRIVATE;
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let reg_st = VMA_AREA_REGULAR;

    write_image(
        dir.join("inventory.img"),
        Magic::Inventory,
        &[pb::InventoryEntry {
            img_version: IMAGES_V1_1,
            fdinfo_per_id: Some(true),
            root_ids: Some(ids(1)),
            ns_per_id: Some(true),
            lsmtype: Some(pb::Lsmtype::NoLsm as i32),
            ..Default::default()
        }],
    )
    .unwrap();
    write_image(
        dir.join("pstree.img"),
        Magic::Pstree,
        &[
            pb::PstreeEntry {
                pid: PID,
                ppid: 0,
                pgid: PID,
                sid: PID,
                threads: vec![PID, PID + 1],
                ..Default::default()
            },
            pb::PstreeEntry {
                pid: CHILD,
                ppid: PID,
                pgid: PID,
                sid: PID,
                threads: vec![CHILD],
                ..Default::default()
            },
        ],
    )
    .unwrap();

    // The leader: sleeping in clock_nanosleep, with handlers, timers and
    // pending signals.
    let leader = pb::CoreEntry {
        mtype: pb::core_entry::March::X8664 as i32,
        thread_info: Some(pb::ThreadInfoX86 {
            clear_tid_addr: 0x7f00_0000_2a10,
            gpregs: regs(0x7f00_0001_8503, 0x7ffd_0000_11f8, (-516i64) as u64, 230),
            fpregs: fpregs(),
            tls: vec![],
        }),
        tc: Some(pb::TaskCoreEntry {
            task_state: 1,
            exit_code: 0,
            personality: libc::ADDR_NO_RANDOMIZE as u32,
            flags: 0x40_0100,
            blk_sigset: 1 << (libc::SIGUSR1 - 1),
            comm: "server".into(),
            cg_set: Some(1),
            timers: Some(pb::TaskTimersEntry {
                real: pb::ItimerEntry {
                    isec: 1,
                    iusec: 0,
                    vsec: 0,
                    vusec: 250_000,
                },
                virt: pb::ItimerEntry::default(),
                prof: pb::ItimerEntry::default(),
                posix: vec![pb::PosixTimerEntry {
                    it_id: 0,
                    clock_id: libc::CLOCK_MONOTONIC as u32,
                    si_signo: libc::SIGRTMIN() as u32,
                    it_sigev_notify: libc::SIGEV_SIGNAL as u32,
                    sival_ptr: 0x5555_0000_4000,
                    overrun: 0,
                    isec: 0,
                    insec: 500_000_000,
                    vsec: 2,
                    vnsec: 0,
                    notify_thread_id: None,
                    ..Default::default()
                }],
            }),
            rlimits: Some(rlimits()),
            signals_s: Some(pb::SignalQueueEntry {
                signals: vec![siginfo(libc::SIGUSR1, libc::SI_USER, 4242, 1000)],
            }),
            loginuid: Some(u32::MAX),
            oom_score_adj: Some(-100),
            sigactions: sigactions(),
            child_subreaper: Some(true),
            ..Default::default()
        }),
        ids: Some(ids(1)),
        thread_core: Some(thread_core("server", 1 << (libc::SIGUSR1 - 1))),
    };
    // The second thread: blocked in read, with a pending tkill.
    let mut second_tc = thread_core("worker", 0);
    second_tc.signals_p = Some(pb::SignalQueueEntry {
        signals: vec![siginfo(libc::SIGUSR2, libc::SI_TKILL, 100, 1000)],
    });
    second_tc.sas = Some(pb::ThreadSasEntry {
        ss_sp: 0x7f00_0010_0000,
        ss_size: 64 << 10,
        ss_flags: 0,
    });
    second_tc.pdeath_sig = Some(libc::SIGKILL as u32);
    let second = pb::CoreEntry {
        mtype: pb::core_entry::March::X8664 as i32,
        thread_info: Some(pb::ThreadInfoX86 {
            clear_tid_addr: 0x7f00_0020_09d0,
            gpregs: regs(0x7f00_0001_9a2c, 0x7f00_0020_0e80, (-512i64) as u64, 0),
            fpregs: fpregs(),
            tls: vec![],
        }),
        tc: None,
        ids: None,
        thread_core: Some(second_tc),
    };
    // The child: a stopped shell-like task, not in a syscall.
    let child = pb::CoreEntry {
        mtype: pb::core_entry::March::X8664 as i32,
        thread_info: Some(pb::ThreadInfoX86 {
            clear_tid_addr: 0,
            gpregs: regs(0x40_2000, 0x7ffd_0000_2000, 0, u64::MAX),
            fpregs: fpregs(),
            tls: vec![],
        }),
        tc: Some(pb::TaskCoreEntry {
            task_state: 3,
            stop_signo: Some(libc::SIGSTOP as u32),
            comm: "helper".into(),
            cg_set: Some(2),
            rlimits: Some(rlimits()),
            sigactions: vec![pb::SaEntry::default(); 62],
            ..Default::default()
        }),
        ids: Some(ids(2)),
        thread_core: Some(thread_core("helper", 0)),
    };
    write_image(dir.join(format!("core-{PID}.img")), Magic::Core, &[leader]).unwrap();
    write_image(
        dir.join(format!("core-{}.img", PID + 1)),
        Magic::Core,
        &[second],
    )
    .unwrap();
    write_image(dir.join(format!("core-{CHILD}.img")), Magic::Core, &[child]).unwrap();
    write_image(dir.join(format!("ids-{PID}.img")), Magic::Ids, &[ids(1)]).unwrap();
    write_image(dir.join(format!("ids-{CHILD}.img")), Magic::Ids, &[ids(2)]).unwrap();

    // Memory of the leader: the binary, heap, a shared anonymous area,
    // a shared file mapping, the stack and the kernel's special areas.
    let mut shared_file = vma(
        0x7f00_0030_0000,
        0x7f00_0030_2000,
        rw,
        libc::MAP_SHARED,
        reg_st | VMA_FILE_SHARED,
        13,
    );
    shared_file.fdflags = Some(libc::O_RDWR as u32);
    let mut big = vma(
        0x7f00_0040_0000,
        0x7f00_0050_0000,
        rw,
        anon | libc::MAP_NORESERVE,
        reg_st | VMA_ANON_PRIVATE,
        0,
    );
    big.madv = Some(1 << libc::MADV_DONTFORK | 1 << libc::MADV_HUGEPAGE);
    let mut stack = vma(
        0x7ffd_0000_0000,
        0x7ffd_0002_1000,
        rw,
        anon | libc::MAP_GROWSDOWN,
        reg_st | VMA_ANON_PRIVATE | VMA_AREA_STACK,
        0,
    );
    stack.pgoff = 0;
    let mut text = vma(
        0x40_1000,
        0x40_3000,
        rx,
        private,
        reg_st | VMA_FILE_PRIVATE,
        10,
    );
    text.pgoff = 0x1000;
    let vmas = vec![
        vma(
            0x40_0000,
            0x40_1000,
            libc::PROT_READ,
            private,
            reg_st | VMA_FILE_PRIVATE,
            10,
        ),
        text,
        vma(
            0x40_3000,
            0x40_4000,
            rw,
            private,
            reg_st | VMA_FILE_PRIVATE,
            10,
        ),
        vma(
            0x60_0000,
            0x62_1000,
            rw,
            anon,
            reg_st | VMA_ANON_PRIVATE | VMA_AREA_HEAP,
            0,
        ),
        vma(
            0x7f00_0020_0000,
            0x7f00_0021_0000,
            rw,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            reg_st | VMA_ANON_SHARED,
            7001,
        ),
        shared_file,
        big,
        vma(
            0x7f00_00f0_0000,
            0x7f00_00f0_4000,
            libc::PROT_READ,
            anon,
            reg_st | VMA_AREA_VVAR,
            0,
        ),
        vma(
            0x7f00_00f0_4000,
            0x7f00_00f0_6000,
            rx,
            anon,
            reg_st | VMA_AREA_VDSO,
            0,
        ),
        stack,
        vma(
            0xffff_ffff_ff60_0000,
            0xffff_ffff_ff60_1000,
            libc::PROT_EXEC,
            anon,
            VMA_AREA_VSYSCALL,
            0,
        ),
    ];
    write_image(
        dir.join(format!("mm-{PID}.img")),
        Magic::Mm,
        &[pb::MmEntry {
            mm_start_code: 0x40_1000,
            mm_end_code: 0x40_2f00,
            mm_start_data: 0x40_3000,
            mm_end_data: 0x40_3800,
            mm_start_stack: 0x7ffd_0002_0a00,
            mm_start_brk: 0x60_0000,
            mm_brk: 0x62_1000,
            mm_arg_start: 0x7ffd_0002_0c00,
            mm_arg_end: 0x7ffd_0002_0c20,
            mm_env_start: 0x7ffd_0002_0c20,
            mm_env_end: 0x7ffd_0002_0f00,
            exe_file_id: 10,
            mm_saved_auxv: vec![33, 0x7f00_00f0_4000, 6, 4096, 9, 0x40_1020, 23, 0, 0, 0],
            vmas,
            dumpable: Some(1),
            aios: vec![],
            thp_disabled: None,
        }],
    )
    .unwrap();
    // Private pages: 1 of data, 3 of heap, 40 of the big area, 2 of stack.
    pagemap(
        dir,
        &format!("pagemap-{PID}.img"),
        1,
        &[
            (0x40_3000, 1),
            (0x60_0000, 2),
            (0x62_0000, 1),
            (0x7f00_0040_0000, 40),
            (0x7ffd_0001_f000, 2),
        ],
    );
    pages(dir, 1, 46);
    // Shared memory: 2 pages at offsets 0 and 0x3000.
    pagemap(dir, "pagemap-shmem-7001.img", 2, &[(0, 1), (0x3000, 1)]);
    pages(dir, 2, 2);

    // Memory of the child: a minimal address space.
    write_image(
        dir.join(format!("mm-{CHILD}.img")),
        Magic::Mm,
        &[pb::MmEntry {
            exe_file_id: 20,
            vmas: vec![
                vma(
                    0x40_0000,
                    0x40_2000,
                    rx,
                    private,
                    reg_st | VMA_FILE_PRIVATE,
                    20,
                ),
                vma(
                    0x7ffd_0000_0000,
                    0x7ffd_0000_4000,
                    rw,
                    anon,
                    reg_st | VMA_ANON_PRIVATE | VMA_AREA_STACK,
                    0,
                ),
            ],
            ..Default::default()
        }],
    )
    .unwrap();
    pagemap(
        dir,
        &format!("pagemap-{CHILD}.img"),
        3,
        &[(0x7ffd_0000_3000, 1)],
    );
    pages(dir, 3, 1);

    // Files: the leader has stdin, a log opened for appending (twice, by
    // dup), a read-only close-on-exec config file and the shared mapping.
    let chr = libc::S_IFCHR | 0o666;
    let file = libc::S_IFREG | 0o644;
    let dirm = libc::S_IFDIR | 0o755;
    write_image(
        dir.join("files.img"),
        Magic::Files,
        &[
            reg(1, "/dev/null", libc::O_RDONLY | 0o100000, 0, chr, None),
            reg(
                2,
                "/var/log/server.log",
                libc::O_WRONLY | libc::O_APPEND | 0o100000,
                1234,
                file,
                Some(1234),
            ),
            reg(
                3,
                "/etc/server.conf",
                libc::O_RDONLY | 0o100000,
                17,
                file,
                Some(80),
            ),
            reg(4, "/srv", libc::O_RDONLY | libc::O_DIRECTORY, 0, dirm, None),
            reg(5, "/", libc::O_RDONLY | libc::O_DIRECTORY, 0, dirm, None),
            reg(
                10,
                "/usr/bin/server",
                libc::O_RDONLY,
                0,
                file | 0o111,
                Some(16384),
            ),
            reg(13, "/srv/state.db", libc::O_RDWR, 0, file, Some(8192)),
            reg(
                20,
                "/usr/bin/helper",
                libc::O_RDONLY,
                0,
                file | 0o111,
                Some(8192),
            ),
            pb::FileEntry {
                r#type: pb::FdTypes::Pipe as i32,
                id: 30,
                pipe: Some(pb::PipeEntry {
                    id: 30,
                    pipe_id: 777,
                    flags: libc::O_RDONLY as u32,
                    fown: pb::FownEntry::default(),
                }),
                ..Default::default()
            },
            pb::FileEntry {
                r#type: pb::FdTypes::Pipe as i32,
                id: 31,
                pipe: Some(pb::PipeEntry {
                    id: 31,
                    pipe_id: 777,
                    flags: (libc::O_WRONLY | libc::O_NONBLOCK) as u32,
                    fown: pb::FownEntry::default(),
                }),
                ..Default::default()
            },
            pb::FileEntry {
                r#type: pb::FdTypes::Eventfd as i32,
                id: 32,
                efd: Some(pb::EventfdFileEntry {
                    id: 32,
                    flags: (libc::O_RDWR | libc::O_NONBLOCK) as u32,
                    fown: pb::FownEntry::default(),
                    counter: 5,
                }),
                ..Default::default()
            },
            pb::FileEntry {
                r#type: pb::FdTypes::Eventpoll as i32,
                id: 33,
                epfd: Some(pb::EventpollFileEntry {
                    id: 33,
                    flags: libc::O_RDWR as u32,
                    fown: pb::FownEntry::default(),
                    tfd: vec![pb::EventpollTfdEntry {
                        id: 33,
                        tfd: 6,
                        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                        data: 42,
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            },
            // Watches on a directory and on a file since unlinked.
            pb::FileEntry {
                r#type: pb::FdTypes::Inotify as i32,
                id: 34,
                ify: Some(pb::InotifyFileEntry {
                    id: 34,
                    flags: libc::O_NONBLOCK as u32,
                    fown: pb::FownEntry::default(),
                    wd: vec![
                        watch(1, "/srv", 2, libc::IN_CREATE | libc::IN_DELETE),
                        watch(
                            2,
                            "/srv/scratch (deleted)",
                            77,
                            libc::IN_MODIFY | libc::IN_DELETE_SELF | libc::IN_ONESHOT,
                        ),
                    ],
                }),
                ..Default::default()
            },
            pb::FileEntry {
                r#type: pb::FdTypes::Fanotify as i32,
                id: 35,
                ffy: Some(pb::FanotifyFileEntry {
                    id: 35,
                    flags: libc::O_RDONLY as u32,
                    fown: pb::FownEntry::default(),
                    faflags: 0,
                    evflags: libc::O_RDONLY as u32,
                    mark: vec![pb::FanotifyMarkEntry {
                        id: 35,
                        r#type: pb::MarkType::Inode as i32,
                        mflags: libc::FAN_MARK_DONT_FOLLOW,
                        mask: (libc::FAN_OPEN | libc::FAN_CLOSE_WRITE) as u32,
                        ignored_mask: libc::FAN_ACCESS as u32,
                        s_dev: 0x80_0001,
                        ie: Some(pb::FanotifyInodeMarkEntry {
                            i_ino: 12,
                            f_handle: pb::FhEntry {
                                bytes: 8,
                                r#type: 1,
                                handle: vec![0; 16],
                                path: Some("/etc/server.conf".into()),
                                mnt_id: None,
                            },
                        }),
                        me: None,
                    }],
                }),
                ..Default::default()
            },
        ],
    )
    .unwrap();
    let fd = |id: u32, fd: u32, cloexec: bool| pb::FdinfoEntry {
        id,
        flags: if cloexec { libc::FD_CLOEXEC as u32 } else { 0 },
        r#type: match id {
            30 | 31 => pb::FdTypes::Pipe,
            32 => pb::FdTypes::Eventfd,
            33 => pb::FdTypes::Eventpoll,
            34 => pb::FdTypes::Inotify,
            35 => pb::FdTypes::Fanotify,
            _ => pb::FdTypes::Reg,
        } as i32,
        fd,
        xattr_security_selinux: None,
    };
    write_image(
        dir.join("fdinfo-1.img"),
        Magic::Fdinfo,
        &[
            fd(1, 0, false),
            fd(2, 1, false),
            fd(2, 2, false),
            fd(30, 3, false),
            fd(31, 4, false),
            fd(3, 5, true),
            fd(32, 6, false),
            fd(33, 7, true),
            fd(34, 8, true),
            fd(35, 9, false),
        ],
    )
    .unwrap();
    write_image(
        dir.join("fdinfo-2.img"),
        Magic::Fdinfo,
        &[fd(1, 0, false), fd(30, 3, false)],
    )
    .unwrap();
    // Three bytes buffered in the pipe.
    let mut w = ImageWriter::create(dir.join("pipes-data.img"), Magic::PipesData).unwrap();
    w.write_entry(&pb::PipeDataEntry {
        pipe_id: 777,
        bytes: 3,
        size: Some(65536),
    })
    .unwrap();
    w.write_raw(b"abc").unwrap();
    w.finish().unwrap();
    for pid in [PID, CHILD] {
        write_image(
            dir.join(format!("fs-{pid}.img")),
            Magic::Fs,
            &[pb::FsEntry {
                cwd_id: 4,
                root_id: 5,
                umask: Some(0o027),
            }],
        )
        .unwrap();
    }
    // An image show has no section for: listed generically.
    write_image(
        dir.join("seccomp.img"),
        Magic::Seccomp,
        &[pb::SeccompEntry::default()],
    )
    .unwrap();

    // Cgroups: the two tasks in different cgroups, with limits.
    let member = |name: &str, path: &str| pb::CgMemberEntry {
        name: name.into(),
        path: path.into(),
        cgns_prefix: None,
    };
    let prop = |name: &str, value: &str| pb::CgroupPropEntry {
        name: name.into(),
        value: value.into(),
        perms: None,
    };
    let perms = Some(pb::CgroupPerms {
        mode: 0o755,
        uid: 0,
        gid: 0,
    });
    write_image(
        dir.join("cgroup.img"),
        Magic::Cgroup,
        &[pb::CgroupEntry {
            sets: vec![
                pb::CgSetEntry {
                    id: 1,
                    ctls: vec![member("pids", "/app"), member("unified", "/app/leaf")],
                },
                pb::CgSetEntry {
                    id: 2,
                    ctls: vec![member("pids", "/app/kid"), member("unified", "/app/leaf")],
                },
            ],
            controllers: vec![
                pb::CgControllerEntry {
                    cnames: vec!["pids".into()],
                    dirs: vec![pb::CgroupDirEntry {
                        dir_name: "app".into(),
                        children: vec![pb::CgroupDirEntry {
                            dir_name: "kid".into(),
                            children: vec![],
                            properties: vec![prop("pids.max", "5")],
                            dir_perms: perms,
                        }],
                        properties: vec![prop("pids.max", "37")],
                        dir_perms: perms,
                    }],
                    is_threaded: None,
                },
                pb::CgControllerEntry {
                    cnames: vec!["unified".into()],
                    dirs: vec![pb::CgroupDirEntry {
                        dir_name: "app".into(),
                        children: vec![pb::CgroupDirEntry {
                            dir_name: "leaf".into(),
                            children: vec![],
                            properties: vec![
                                prop("memory.max", "268435456"),
                                prop("cpu.max", "50000 100000"),
                            ],
                            dir_perms: perms,
                        }],
                        properties: vec![
                            prop("cgroup.subtree_control", "cpu memory"),
                            prop("cgroup.max.descendants", "5"),
                        ],
                        dir_perms: perms,
                    }],
                    is_threaded: None,
                },
            ],
        }],
    )
    .unwrap();

    let mut m = Manifest::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for n in names {
        m.add_file(dir, &n).unwrap();
    }
    m.write(dir).unwrap();
}

fn sample() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_sample(tmp.path());
    tmp
}

fn load_labeled(dir: &Path) -> super::ImageSet {
    let mut set = load(dir).unwrap();
    set.dir = "/images/sample".into();
    set
}

#[test]
fn text() {
    let tmp = sample();
    let set = load_labeled(tmp.path());
    assert!(set.problems.is_empty(), "{:#?}", set.problems);
    insta::assert_snapshot!("text", render_text(&set));
}

#[test]
fn json() {
    let tmp = sample();
    let set = load_labeled(tmp.path());
    insta::assert_json_snapshot!("json", render_json(&set));
}

/// A damaged directory: two images altered (one no longer decodes), one
/// removed, one truncated, one stray file. Everything else is still shown, the damage is marked.
#[test]
fn damaged() {
    let tmp = sample();
    let dir = tmp.path();
    let mm = dir.join(format!("mm-{CHILD}.img"));
    let mut bytes = std::fs::read(&mm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&mm, bytes).unwrap();
    std::fs::remove_file(dir.join(format!("fs-{CHILD}.img"))).unwrap();
    let core = dir.join(format!("core-{}.img", PID + 1));
    let len = std::fs::metadata(&core).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&core)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    std::fs::write(dir.join("pages-9.img"), b"stray").unwrap();
    // Page contents changed: the memory section is still shown, marked.
    let pages = dir.join("pages-1.img");
    let mut bytes = std::fs::read(&pages).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&pages, bytes).unwrap();

    let set = load_labeled(dir);
    assert!(!set.problems.is_empty());
    let text = render_text(&set);
    assert!(text.contains("[DAMAGED: checksum mismatch"), "{text}");
    insta::assert_snapshot!("damaged", text);
    let json = render_json(&set);
    assert_eq!(json["manifest"]["status"], "problems");
}

/// Without pstree.img, the tasks are found from their core images.
#[test]
fn no_pstree() {
    let tmp = sample();
    std::fs::remove_file(tmp.path().join("pstree.img")).unwrap();
    let set = load_labeled(tmp.path());
    assert_eq!(
        set.tasks.iter().map(|t| t.pid()).collect::<Vec<_>>(),
        [PID, CHILD]
    );
    assert!(!set.tasks[0].in_pstree);
    let text = render_text(&set);
    assert!(
        text.contains("tasks found from their core images"),
        "{text}"
    );
    assert!(text.contains("pstree.img: missing"), "{text}");
}

/// `run` prints and fails on a damaged directory, and refuses a path that
/// is not a directory.
#[test]
fn run_exit_status() {
    let tmp = sample();
    super::run(tmp.path(), true).unwrap();
    std::fs::remove_file(tmp.path().join(format!("mm-{PID}.img"))).unwrap();
    assert!(super::run(tmp.path(), false).is_err());
    assert!(super::run(&tmp.path().join("nope"), false).is_err());
}

/// A task whose cgroup set is not in cgroup.img is a problem.
#[test]
fn cgroup_set_missing() {
    let tmp = sample();
    let p = tmp.path().join("cgroup.img");
    let mut cg: pb::CgroupEntry = crate::images::read_one(&p, Magic::Cgroup).unwrap();
    cg.sets.retain(|s| s.id == 1);
    write_image(&p, Magic::Cgroup, &[cg]).unwrap();
    let set = load_labeled(tmp.path());
    assert!(
        set.problems
            .iter()
            .any(|p| p == &format!("core-{CHILD}.img: cgroup set 2 is not in cgroup.img")),
        "{:?}",
        set.problems
    );
    let text = render_text(&set);
    assert!(text.contains("set 1 (pid 100)"), "{text}");
}

/// A UNIX socket pair with messages queued (sk-queues.img): shown with
/// its peer and queue; data queued for a file that is no socket is a
/// problem.
#[test]
fn unix_socket_queues() {
    let tmp = sample();
    let p = tmp.path().join("files.img");
    let mut r = crate::images::ImageReader::open(&p, Magic::Files).unwrap();
    let mut files: Vec<pb::FileEntry> = Vec::new();
    while let Some(f) = r.read_entry().unwrap() {
        files.push(f);
    }
    let sock = |id: u32, ino: u32, peer: u32| pb::FileEntry {
        r#type: pb::FdTypes::Unixsk as i32,
        id,
        usk: Some(pb::UnixSkEntry {
            id,
            ino,
            r#type: libc::SOCK_DGRAM as u32,
            state: 1,
            peer,
            shutdown: Some(2),
            name: b"\0abcde".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    files.push(sock(40, 900, 901));
    files.push(sock(41, 901, 900));
    let mut listener = sock(42, 902, 0);
    if let Some(u) = listener.usk.as_mut() {
        u.r#type = libc::SOCK_STREAM as u32;
        u.state = 10;
        u.backlog = 7;
        u.name = b"sk.listen\0".to_vec();
        u.name_dir = Some("/tmp/work".into());
        u.file_perms = Some(pb::FilePermsEntry {
            mode: 0o640,
            uid: 5,
            gid: 6,
        });
        u.opts.so_keepalive = Some(true);
        u.peek_off = Some(3);
    }
    files.push(listener);
    write_image(&p, Magic::Files, &files).unwrap();
    let mut w = ImageWriter::create(tmp.path().join("sk-queues.img"), Magic::SkQueues).unwrap();
    for (id, m) in [(40, &b"ab"[..]), (40, b"cde"), (1, b"x")] {
        // The second message carries a file in flight and its sender.
        let with = m == b"cde";
        w.write_entry(&pb::SkPacketEntry {
            id_for: id,
            length: m.len() as u32,
            scm: if with {
                vec![pb::ScmEntry {
                    r#type: libc::SCM_RIGHTS as u32,
                    rights: vec![42],
                }]
            } else {
                vec![]
            },
            ucred: with.then_some(pb::SkUcredEntry {
                uid: 8,
                gid: 9,
                pid: 7,
            }),
            addr: None,
        })
        .unwrap();
        w.write_raw(m).unwrap();
    }
    w.finish().unwrap();
    let set = load_labeled(tmp.path());
    assert_eq!(set.sk_queues[&40], [b"ab".to_vec(), b"cde".to_vec()]);
    assert_eq!(set.sk_queue_scm[&40][1].rights, [42]);
    assert!(
        set.problems
            .iter()
            .any(|p| p == "sk-queues.img: data queued for file id 1, which is not a UNIX socket, an INET datagram socket or a netlink socket"),
        "{:?}",
        set.problems
    );
    let v = set.describe(set.file(40).unwrap());
    assert_eq!(v.path, "socket:[900]");
    let extra: Vec<String> = v.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    for want in [
        "unix socket: datagram",
        "peer: socket:[901]",
        "name: @abcde (autobind)",
        "shut down: write",
        "queued: 5 bytes in 2 messages",
        "in flight: file 42",
        "senders: pid 7 uid 8 gid 9",
    ] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
    let v = set.describe(set.file(42).unwrap());
    let extra: Vec<String> = v.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    for want in [
        "unix socket: stream",
        "state: listening",
        "name: sk.listen",
        "bound in: /tmp/work",
        "file: mode 640, owner 5:6",
        "backlog: 7",
        "SO_KEEPALIVE: on",
        "SO_PEEK_OFF: 3",
    ] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
}

/// A FIFO end: shown by the path of its REG entry, with its flags and the
/// bytes of fifo-data.img; a FIFO whose inode number is a pipe's has its
/// own data, not the pipe's.
#[test]
fn fifo_with_data() {
    let tmp = sample();
    let p = tmp.path().join("files.img");
    let mut r = crate::images::ImageReader::open(&p, Magic::Files).unwrap();
    let mut files: Vec<pb::FileEntry> = Vec::new();
    while let Some(f) = r.read_entry().unwrap() {
        files.push(f);
    }
    let flags = (libc::O_RDONLY | libc::O_NONBLOCK) as u32;
    files.push(pb::FileEntry {
        r#type: pb::FdTypes::Reg as i32,
        id: 50,
        reg: Some(pb::RegFileEntry {
            id: 50,
            flags,
            name: "/tmp/the.fifo".into(),
            mode: Some(libc::S_IFIFO | 0o600),
            ..Default::default()
        }),
        ..Default::default()
    });
    files.push(pb::FileEntry {
        r#type: pb::FdTypes::Fifo as i32,
        id: 51,
        fifo: Some(pb::FifoEntry {
            id: 51,
            pipe_id: 777,
            regf_id: Some(50),
            wait_writer: None,
        }),
        ..Default::default()
    });
    write_image(&p, Magic::Files, &files).unwrap();
    let mut w = ImageWriter::create(tmp.path().join("fifo-data.img"), Magic::FifoData).unwrap();
    w.write_entry(&pb::PipeDataEntry {
        pipe_id: 777,
        bytes: 5,
        size: Some(8192),
    })
    .unwrap();
    w.write_raw(b"hello").unwrap();
    w.finish().unwrap();
    let set = load_labeled(tmp.path());
    assert_eq!(set.fifo_data[&777].bytes, b"hello");
    assert_eq!(set.pipe_data[&777].bytes, b"abc");
    let v = set.describe(set.file(51).unwrap());
    assert_eq!(
        (v.kind.as_str(), v.path.as_str()),
        ("FIFO", "/tmp/the.fifo")
    );
    assert_eq!(v.flags, Some(flags));
    let extra: Vec<String> = v.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    for want in ["pipe id: 777", "buffered: 5 bytes", "pipe size: 8 KiB"] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
}

/// INET and netlink sockets: shown with their protocol, state, addresses,
/// options and queued datagrams.
#[test]
fn inet_and_netlink_sockets() {
    use crate::images::inet::addr_words;
    let tmp = sample();
    let p = tmp.path().join("files.img");
    let mut r = crate::images::ImageReader::open(&p, Magic::Files).unwrap();
    let mut files: Vec<pb::FileEntry> = Vec::new();
    while let Some(f) = r.read_entry().unwrap() {
        files.push(f);
    }
    let lo6: std::net::IpAddr = "::1".parse().unwrap();
    files.push(pb::FileEntry {
        r#type: pb::FdTypes::Inetsk as i32,
        id: 50,
        isk: Some(pb::InetSkEntry {
            id: 50,
            ino: 700,
            family: libc::AF_INET6 as u32,
            r#type: libc::SOCK_DGRAM as u32,
            proto: libc::IPPROTO_UDP as u32,
            state: 1,
            src_port: 5000,
            dst_port: 6000,
            src_addr: addr_words(&lo6),
            dst_addr: addr_words(&lo6),
            opts: pb::SkOptsEntry {
                so_rcvbuf: 2048,
                so_sndbuf: 4096,
                reuseaddr: Some(true),
                so_buf_lock: Some(2),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    });
    files.push(pb::FileEntry {
        r#type: pb::FdTypes::Inetsk as i32,
        id: 51,
        isk: Some(pb::InetSkEntry {
            id: 51,
            ino: 701,
            family: libc::AF_INET as u32,
            r#type: libc::SOCK_STREAM as u32,
            proto: libc::IPPROTO_TCP as u32,
            state: 10,
            src_port: 8080,
            src_addr: vec![0x0100_007f],
            backlog: 128,
            tcp_opts: Some(pb::TcpOptsEntry {
                nodelay: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    files.push(pb::FileEntry {
        r#type: pb::FdTypes::Netlinksk as i32,
        id: 52,
        nlsk: Some(pb::NetlinkSkEntry {
            id: 52,
            ino: 702,
            protocol: libc::NETLINK_ROUTE as u32,
            portid: 1234,
            groups: vec![1, 1 << 3],
            ..Default::default()
        }),
        ..Default::default()
    });
    files.push(pb::FileEntry {
        r#type: pb::FdTypes::Inetsk as i32,
        id: 53,
        isk: Some(pb::InetSkEntry {
            id: 53,
            ino: 0x2a3,
            family: libc::AF_INET as u32,
            r#type: libc::SOCK_STREAM as u32,
            proto: libc::IPPROTO_TCP as u32,
            state: 1,
            src_port: 40000,
            src_addr: vec![0x0100_007f],
            dst_port: 8080,
            dst_addr: vec![0x0100_007f],
            ..Default::default()
        }),
        ..Default::default()
    });
    write_image(&p, Magic::Files, &files).unwrap();
    let mut w =
        ImageWriter::create(tmp.path().join("tcp-stream-2a3.img"), Magic::TcpStream).unwrap();
    w.write_entry(&pb::TcpStreamEntry {
        inq_len: 3,
        inq_seq: 1000,
        outq_len: 5,
        outq_seq: 2000,
        opt_mask: 7,
        snd_wscale: 7,
        mss_clamp: 65483,
        rcv_wscale: Some(6),
        timestamp: Some(42),
        unsq_len: Some(2),
        snd_wnd: Some(512),
        rcv_wnd: Some(1024),
        max_window: Some(4096),
        ..Default::default()
    })
    .unwrap();
    w.write_raw(b"abc12345").unwrap();
    w.finish().unwrap();
    let mut w = ImageWriter::create(tmp.path().join("sk-queues.img"), Magic::SkQueues).unwrap();
    let from: std::net::SocketAddr = "[::1]:6000".parse().unwrap();
    for m in [&b"ab"[..], b"cde"] {
        w.write_entry(&pb::SkPacketEntry {
            id_for: 50,
            length: m.len() as u32,
            scm: vec![],
            ucred: None,
            addr: Some(crate::sys::inet_sock::to_bytes(&from)),
        })
        .unwrap();
        w.write_raw(m).unwrap();
    }
    w.finish().unwrap();
    let set = load_labeled(tmp.path());
    // (The manifest does not know the files rewritten here.)
    assert!(
        !set.problems.iter().any(|p| p.contains("queued for")),
        "{:?}",
        set.problems
    );
    let shown = |id: u32| {
        let v = set.describe(set.file(id).unwrap());
        let extra: Vec<String> = v.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        (v.path, extra)
    };
    let (path, extra) = shown(50);
    assert_eq!(path, "socket:[700]");
    for want in [
        "inet socket: UDP over IPv6",
        "state: ESTABLISHED",
        "local: [::1]:5000",
        "peer: [::1]:6000",
        "options: SO_REUSEADDR",
        "buffers: send 4 KiB (tuned), receive 2 KiB",
        "queued: 5 bytes in 2 messages",
    ] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
    let (_, extra) = shown(51);
    for want in [
        "inet socket: TCP over IPv4",
        "state: LISTEN",
        "local: 127.0.0.1:8080",
        "backlog: 128",
        "options: TCP_NODELAY",
    ] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
    assert!(!extra.iter().any(|e| e.starts_with("queued")), "{extra:?}");
    let (_, extra) = shown(53);
    for want in [
        "state: ESTABLISHED",
        "peer: 127.0.0.1:8080",
        "receive queue: 3 bytes, next sequence number 1000",
        "send queue: 5 bytes (2 never sent), next sequence number 2000",
        "tcp options: mss 65483, window scale 7 (send) 6 (receive), sack, timestamps (now 42)",
        "window: send 512, receive 1024, largest 4096",
    ] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
    assert_eq!(set.tcp_streams[&0x2a3].as_ref().unwrap().outq, b"12345");
    let (_, extra) = shown(52);
    for want in ["netlink socket: ROUTE", "port id: 1234", "groups: 1 36"] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
}

/// A packet socket: its type, protocol, interface, options, memberships
/// and fanout group are printed.
#[test]
fn packet_socket_is_described() {
    let f = pb::FileEntry {
        r#type: pb::FdTypes::Packetsk as i32,
        id: 60,
        psk: Some(pb::PacketSockEntry {
            id: 60,
            r#type: libc::SOCK_RAW as u32,
            protocol: 3,
            ifindex: 1,
            version: 1,
            aux_data: true,
            orig_dev: true,
            mclist: vec![pb::PacketMclist {
                index: 1,
                r#type: 1,
                addr: vec![],
            }],
            fanout: Some(0x8000_0007),
            ino: Some(900),
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = super::load::describe_file(&f);
    assert_eq!(v.path, "socket:[900]");
    let extra: Vec<String> = v.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    for want in [
        "packet socket: raw, protocol ETH_P_ALL",
        "interface: index 1",
        "version: TPACKET_V2",
        "options: PACKET_AUXDATA PACKET_ORIGDEV",
        "memberships: promisc on index 1",
        "fanout: group 7, hash, flags 0x80",
    ] {
        assert!(extra.iter().any(|e| e == want), "{want} in {extra:?}");
    }
}

/// A pidfd with an owner and a signal: the pid it refers to and who gets
/// the signal are printed.
#[test]
fn pidfd_and_owner_are_described() {
    let f = pb::FileEntry {
        r#type: pb::FdTypes::Pidfd as i32,
        id: 40,
        pidfd: Some(pb::PidfdEntry {
            id: 40,
            ino: 1234,
            flags: (libc::O_RDWR | libc::O_NONBLOCK) as u32,
            nspid: 321,
            fown: pb::FownEntry {
                uid: 1000,
                euid: 1000,
                signum: libc::SIGUSR1 as u32,
                pid_type: crate::images::fown::OWNER_PGRP,
                pid: 300,
            },
            attr: None,
        }),
        ..Default::default()
    };
    let v = super::load::describe_file(&f);
    assert_eq!(v.path, "anon_inode:[pidfd]");
    let extra: std::collections::BTreeMap<_, _> = v.extra.into_iter().collect();
    assert_eq!(extra["pid"], "321");
    assert_eq!(
        extra["owner"],
        "process group 300, signal 10, set by uid 1000 euid 1000"
    );
}

/// A pidfd of a reaped task: how it died.
#[test]
fn pidfd_of_a_reaped_task_is_described() {
    let f = pb::FileEntry {
        r#type: pb::FdTypes::Pidfd as i32,
        id: 41,
        pidfd: Some(pb::PidfdEntry {
            id: 41,
            ino: 99,
            flags: libc::O_RDWR as u32,
            nspid: -1,
            fown: pb::FownEntry::default(),
            attr: Some(pb::PidfsAttrEntry {
                exit_code: Some(7 << 8),
                ino: None,
                dump_pid: None,
            }),
        }),
        ..Default::default()
    };
    let extra: std::collections::BTreeMap<_, _> =
        super::load::describe_file(&f).extra.into_iter().collect();
    assert_eq!(extra["pid"], "reaped");
    assert_eq!(extra["died by"], "exit 7");
}
