//! The JSON form of `ckpt show --json`: the same information as the text,
//! as data. Conventions: addresses and bit masks are hex strings (64-bit
//! values do not survive a JSON number in most readers), sizes and counts
//! are numbers, names are strings, sets are arrays of names; an image that
//! cannot be read is `{"error": "..."}` where its object would be.

use serde_json::{json, Map, Value};

use crate::images::pagemap::PAGE;
use crate::images::pb;

use super::load::{fd_type_name, Absent, ImageSet, ManifestStatus, Part, Task};
use super::model::{self, SigInfo};
use super::names::{self, hex};

fn err(e: &Absent) -> Value {
    json!({ "error": e.to_string() })
}

fn part<T>(p: &Part<T>, f: impl FnOnce(&T) -> Value) -> Value {
    match p {
        Ok(v) => f(v),
        Err(e) => err(e),
    }
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

fn range(start: u64, end: u64) -> Value {
    json!({ "start": hex(start), "end": hex(end), "size": end.saturating_sub(start) })
}

/// The whole document.
pub fn render(set: &ImageSet) -> Value {
    let mut root = Map::new();
    root.insert("dir".into(), json!(set.dir));
    root.insert("inventory".into(), part(&set.inventory, inventory));
    root.insert("manifest".into(), manifest(&set.manifest));
    root.insert(
        "tree".into(),
        match &set.pstree {
            Err(e) => err(e),
            Ok(_) => Value::Array(
                model::tree_order(&set.tasks)
                    .into_iter()
                    .map(|(depth, t)| {
                        let mut threads = t.tree.threads.clone();
                        threads.sort_unstable();
                        let mut v = json!({
                            "pid": t.tree.pid,
                            "ppid": t.tree.ppid,
                            "pgid": t.tree.pgid,
                            "sid": t.tree.sid,
                            "threads": threads,
                            "comm": t.comm(),
                            "depth": depth,
                        });
                        // Below the root's pid namespace: the ids at
                        // every level from the root's down.
                        if !t.tree.ns_pid.is_empty() {
                            v["ns_pid"] = json!(t.tree.ns_pid);
                            v["ns_pgid"] = json!(t.tree.ns_pgid);
                            v["ns_sid"] = json!(t.tree.ns_sid);
                        }
                        v
                    })
                    .collect(),
            ),
        },
    );
    root.insert(
        "tasks".into(),
        Value::Array(set.tasks.iter().map(|t| task(set, t)).collect()),
    );
    if let Some(cg) = &set.cgroups {
        root.insert("cgroups".into(), part(cg, |c| cgroups(set, c)));
    }
    root.insert(
        "files".into(),
        Value::Array(
            set.files
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name,
                        "size": f.size,
                        "kind": f.kind,
                        "magic": f.magic,
                        "entries": f.entries,
                        "error": f.error,
                        "damaged": f.damaged,
                    })
                })
                .collect(),
        ),
    );
    if !set.sysvipc.is_empty() {
        root.insert("sysvipc".into(), super::ipc::json(&set.sysvipc));
    }
    if !set.namespaces.is_empty() {
        root.insert("namespaces".into(), super::ns::json(set));
    }
    if !set.file_locks.is_empty() {
        root.insert(
            "file_locks".into(),
            set.file_locks
                .iter()
                .map(|l| {
                    json!({
                        "kind": match l.flag { 1 => "posix", 2 => "flock", 4 => "ofd", _ => "unknown" },
                        "type": l.r#type,
                        "pid": l.pid,
                        "fd": l.fd,
                        "start": l.start,
                        "len": l.len,
                    })
                })
                .collect(),
        );
    }
    root.insert("problems".into(), json!(set.problems));
    Value::Object(root)
}

fn inventory(inv: &pb::InventoryEntry) -> Value {
    json!({
        "img_version": inv.img_version,
        "img_version_name": names::img_version(inv.img_version),
        "fdinfo_per_id": inv.fdinfo_per_id,
        "ns_per_id": inv.ns_per_id,
        "root_ids": inv.root_ids.as_ref().map(ids),
        "root_cg_set": inv.root_cg_set,
        "lsm": inv.lsmtype.map(names::lsm),
        "dump_uptime": inv.dump_uptime,
        "pre_dump_mode": inv.pre_dump_mode.map(model::pre_dump_mode),
        "tcp_close": inv.tcp_close,
        "network_lock_method": inv.network_lock_method.map(model::network_lock),
    })
}

fn manifest(m: &ManifestStatus) -> Value {
    match m {
        ManifestStatus::Ok { files, bytes } => {
            json!({ "status": "ok", "files": files, "bytes": bytes })
        }
        ManifestStatus::Absent => json!({ "status": "absent" }),
        ManifestStatus::Problems(ps) => json!({
            "status": "problems",
            "problems": ps.iter().map(|p| json!({ "file": p.name(), "problem": p.to_string() })).collect::<Vec<_>>(),
        }),
    }
}

fn ids(i: &pb::TaskKobjIdsEntry) -> Value {
    let mut m = Map::new();
    m.insert("vm".into(), json!(i.vm_id));
    m.insert("files".into(), json!(i.files_id));
    m.insert("fs".into(), json!(i.fs_id));
    m.insert("sighand".into(), json!(i.sighand_id));
    let ns: Map<String, Value> = model::ns_ids(i)
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    m.insert("ns".into(), Value::Object(ns));
    Value::Object(m)
}

fn sigset(set: u64) -> Value {
    strings(names::sigset_list(set))
}

fn siginfos(q: Option<&pb::SignalQueueEntry>) -> Value {
    Value::Array(
        q.map(|q| q.signals.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let i = SigInfo::parse(&s.siginfo);
                json!({
                    "signal": names::signal(i.signo.max(0) as u32),
                    "signo": i.signo,
                    "code": i.code_name(),
                    "errno": i.errno,
                    "pid": i.pid,
                    "uid": i.uid,
                    "timer": i.timer.map(|(id, ov)| json!({ "id": id, "overrun": ov })),
                    "text": i.text(),
                })
            })
            .collect(),
    )
}

fn rlimit_value(v: u64) -> Value {
    if v == u64::MAX {
        json!("unlimited")
    } else {
        json!(v)
    }
}

fn task_core(tc: &pb::TaskCoreEntry, core: &pb::CoreEntry) -> Value {
    let handlers = model::sigactions(tc);
    let timers = tc.timers.as_ref().map(|t| {
        let itimers: Vec<Value> = [("real", &t.real), ("virtual", &t.virt), ("prof", &t.prof)]
            .iter()
            .map(|(name, i)| {
                json!({
                    "which": name,
                    "value": names::duration(i.vsec, i.vusec, 1_000_000),
                    "interval": names::duration(i.isec, i.iusec, 1_000_000),
                })
            })
            .collect();
        json!({
            "itimers": itimers,
            "posix": t.posix.iter().map(|p| json!({
                "id": p.it_id,
                "clock": names::clock(p.clock_id),
                "notify": names::sigev_notify(p.it_sigev_notify),
                "signal": names::signal(p.si_signo),
                "thread": p.notify_thread_id,
                "value": names::duration(p.vsec, p.vnsec, 1_000_000_000),
                "interval": names::duration(p.isec, p.insec, 1_000_000_000),
                "overrun": p.overrun,
                "sival": hex(p.sival_ptr),
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "state": names::task_state(tc.task_state),
        "exit_code": tc.exit_code,
        "stop_signal": tc.stop_signo.map(names::signal),
        "arch": model::arch(core.mtype),
        "personality": names::personality(tc.personality),
        "flags": model::task_flags(tc.flags),
        "oom_score_adj": tc.oom_score_adj,
        "loginuid": tc.loginuid,
        "child_subreaper": tc.child_subreaper,
        "cg_set": tc.cg_set,
        "membarrier_registration_mask": tc.membarrier_registration_mask.map(|m| hex(m as u64)),
        "rlimits": tc.rlimits.as_ref().map(|rl| rl.rlimits.iter().enumerate().map(|(i, r)| json!({
            "name": names::rlimit_name(i),
            "soft": rlimit_value(r.cur),
            "hard": rlimit_value(r.max),
        })).collect::<Vec<_>>()),
        "sigactions": handlers.iter().map(|h| json!({
            "signal": names::signal(h.sig),
            "signo": h.sig,
            "handler": names::handler(h.handler),
            "flags": strings(names::flag_list(h.flags, names::SA_FLAGS)),
            "mask": sigset(h.mask),
            "restorer": hex(h.restorer),
            "compat": h.compat,
        })).collect::<Vec<_>>(),
        "default_sigactions": tc.sigactions.len() - handlers.len(),
        "blocked": sigset(tc.blk_sigset),
        "pending": siginfos(tc.signals_s.as_ref()),
        "timers": timers,
    })
}

fn caps(words: &[u32]) -> Value {
    let set = names::cap_words(words);
    json!({
        "hex": hex(set),
        "summary": names::caps(set),
        "caps": strings(names::cap_list(set)),
    })
}

fn creds(c: &pb::CredsEntry) -> Value {
    json!({
        "uid": c.uid, "euid": c.euid, "suid": c.suid, "fsuid": c.fsuid,
        "gid": c.gid, "egid": c.egid, "sgid": c.sgid, "fsgid": c.fsgid,
        "groups": c.groups,
        "cap_eff": caps(&c.cap_eff),
        "cap_prm": caps(&c.cap_prm),
        "cap_inh": caps(&c.cap_inh),
        "cap_bnd": caps(&c.cap_bnd),
        "cap_amb": caps(&c.cap_amb),
        "securebits": strings(names::flag_list(c.secbits as u64, names::SECUREBITS)),
        "no_new_privs": c.no_new_privs.map(|n| n != 0),
        "lsm_profile": c.lsm_profile,
    })
}

fn thread(tid: u32, core: &Part<pb::CoreEntry>) -> Value {
    let core = match core {
        Ok(c) => c,
        Err(e) => return json!({ "tid": tid, "error": e.to_string() }),
    };
    let regs = core.thread_info.as_ref().map(|ti| {
        let r = &ti.gpregs;
        json!({
            "syscall": names::syscall_state(r.orig_ax, r.ax),
            "ip": hex(r.ip),
            "sp": hex(r.sp),
            "ax": model::ax(r.ax),
            "orig_ax": model::orig_ax(r.orig_ax),
            "fs_base": hex(r.fs_base),
            "gs_base": hex(r.gs_base),
            "mode": if r.mode == Some(pb::UserX86RegsMode::Compat as i32) { "compat" } else { "native" },
        })
    });
    let fpu = core.thread_info.as_ref().map(|ti| {
        let f = &ti.fpregs;
        json!({
            "xsave_bytes": f.ckpt_xsave_raw.as_ref().map(|r| r.len()),
            "xfeatures": f.xsave.as_ref().map(|x| strings(names::flag_list(x.xstate_bv, model::XFEATURES))),
            "mxcsr": hex(f.mxcsr as u64),
        })
    });
    let tc = core.thread_core.as_ref();
    json!({
        "tid": tid,
        "comm": tc.and_then(|t| t.comm.clone()),
        "registers": regs,
        "fpu": fpu,
        "clear_tid": core.thread_info.as_ref().map(|ti| hex(ti.clear_tid_addr)),
        "tls_entries": core.thread_info.as_ref().map(|ti| ti.tls.len()),
        "robust_list": tc.map(|t| json!({ "head": hex(t.futex_rla), "len": t.futex_rla_len })),
        "rseq": tc.and_then(|t| t.rseq_entry.as_ref()).map(|r| json!({
            "abi_pointer": hex(r.rseq_abi_pointer),
            "abi_size": r.rseq_abi_size,
            "signature": hex(r.signature as u64),
            "cs_pointer": r.rseq_cs_pointer.map(hex),
        })),
        "blocked": tc.and_then(|t| t.blk_sigset).map(sigset),
        "pending": siginfos(tc.and_then(|t| t.signals_p.as_ref())),
        "sigaltstack": tc.and_then(|t| t.sas.as_ref()).map(|s| json!({
            "sp": hex(s.ss_sp),
            "size": s.ss_size,
            "flags": strings(names::flag_list(s.ss_flags as u64, names::SS_FLAGS)),
        })),
        "pdeath_signal": tc.and_then(|t| t.pdeath_sig).map(|p| if p == 0 { Value::Null } else { json!(names::signal(p)) }),
        "sched": tc.map(|t| json!({
            "policy": t.sched_policy.map(names::sched_policy),
            "nice": t.sched_nice,
            "priority": t.sched_prio,
        })),
        "timerslack_ns": tc.and_then(|t| t.timerslack_ns),
        "seccomp": tc.and_then(|t| t.seccomp_mode).map(names::seccomp_mode),
        "seccomp_filter": tc.and_then(|t| t.seccomp_filter),
        "creds": tc.and_then(|t| t.creds.as_ref()).map(creds),
    })
}

fn mm(set: &ImageSet, t: &Task, mm: &pb::MmEntry) -> Value {
    let vmas: Vec<Value> = mm
        .vmas
        .iter()
        .map(|v| {
            let view = model::vma(set, t, v);
            let stored = set.vma_pages(t, v);
            json!({
                "start": hex(v.start),
                "end": hex(v.end),
                "size": v.end.saturating_sub(v.start),
                "prot": names::prot_maps(v.prot, v.flags),
                "prot_flags": strings(names::flag_list(v.prot as u64, names::PROT_FLAGS)),
                "map_flags": strings(names::flag_list(v.flags as u64, names::MAP_FLAGS)),
                "status": strings(names::flag_list(v.status as u64, names::VMA_STATUS)),
                "kind": view.kind,
                "file": view.file,
                "shmid": v.shmid,
                "pgoff": hex(v.pgoff),
                "madvise": strings(v.madv.map(names::madv).unwrap_or_default()),
                "fdflags": v.fdflags.map(|f| strings(names::open_flag_list(f))),
                "stored_pages": stored,
                "stored_bytes": stored * PAGE,
            })
        })
        .collect();
    let pages = part(&t.pagemap, |pm| {
        json!({
            "pagemap": format!("pagemap-{}.img", t.pid()),
            "pages_file": format!("pages-{}.img", pm.pages_id),
            "entries": pm.entries.len(),
            "stored_pages": pm.stored_pages(),
            "stored_bytes": pm.stored_pages() * PAGE,
        })
    });
    json!({
        "exe": model::file_ref(set, mm.exe_file_id),
        "exe_file_id": mm.exe_file_id,
        "code": range(mm.mm_start_code, mm.mm_end_code),
        "data": range(mm.mm_start_data, mm.mm_end_data),
        "brk": range(mm.mm_start_brk, mm.mm_brk),
        "stack_start": hex(mm.mm_start_stack),
        "args": range(mm.mm_arg_start, mm.mm_arg_end),
        "env": range(mm.mm_env_start, mm.mm_env_end),
        "dumpable": mm.dumpable.map(names::dumpable),
        "thp_disabled": mm.thp_disabled,
        "auxv": model::auxv(&mm.mm_saved_auxv).into_iter().map(|(k, v)| json!({ "type": k, "value": v })).collect::<Vec<_>>(),
        "aio_rings": mm.aios.len(),
        "mapped_bytes": mm.vmas.iter().map(|v| v.end.saturating_sub(v.start)).sum::<u64>(),
        "pages": pages,
        "vmas": vmas,
    })
}

fn fds(set: &ImageSet, task: &Task, fds: &[pb::FdinfoEntry]) -> Value {
    let mut sorted: Vec<&pb::FdinfoEntry> = fds.iter().collect();
    sorted.sort_by_key(|f| f.fd);
    Value::Array(
        sorted
            .iter()
            .map(|fd| {
                let mut m = Map::new();
                m.insert("fd".into(), json!(fd.fd));
                m.insert(
                    "cloexec".into(),
                    json!(fd.flags & libc::FD_CLOEXEC as u32 != 0),
                );
                m.insert("file_id".into(), json!(fd.id));
                match set.file(fd.id) {
                    Some(f) => {
                        let v = set.describe(f);
                        m.insert("type".into(), json!(v.kind));
                        m.insert("path".into(), json!(v.path));
                        m.insert(
                            "open_flags".into(),
                            opt(v.flags.map(|f| strings(names::open_flag_list(f)))),
                        );
                        m.insert("pos".into(), opt(v.pos));
                        match &f.reg {
                            Some(r) => {
                                m.insert("size".into(), opt(r.size));
                                m.insert("mode".into(), opt(r.mode.map(|x| format!("{:o}", x))));
                                m.insert("file_type".into(), opt(r.mode.map(names::file_type)));
                                m.insert("mnt_id".into(), opt(r.mnt_id));
                                m.insert(
                                    "host_mount".into(),
                                    json!(r.ckpt_host_mount == Some(true)),
                                );
                            }
                            None => {
                                for (k, val) in v.extra {
                                    m.insert(k.replace(' ', "_"), json!(val));
                                }
                            }
                        }
                    }
                    None => {
                        m.insert("type".into(), json!(fd_type_name(fd.r#type)));
                        m.insert(
                            "error".into(),
                            json!(format!("file id {} is not in files.img", fd.id)),
                        );
                    }
                }
                let shared = model::fd_sharers(set, task, fd);
                m.insert("shares_file_with".into(), json!(shared));
                Value::Object(m)
            })
            .collect(),
    )
}

fn task(set: &ImageSet, t: &Task) -> Value {
    let leader = &t.threads[0].core;
    let mut m = Map::new();
    m.insert("pid".into(), json!(t.pid()));
    m.insert("comm".into(), json!(t.comm()));
    m.insert("in_pstree".into(), json!(t.in_pstree));
    m.insert(
        "core".into(),
        part(leader, |c| match &c.tc {
            Some(tc) => task_core(tc, c),
            None => json!({ "error": format!("core-{}.img has no task core", t.pid()) }),
        }),
    );
    if t.is_zombie() {
        return Value::Object(m);
    }
    m.insert("ids".into(), part(&t.ids, ids));
    m.insert(
        "fs".into(),
        part(&t.fs, |fs| {
            json!({
                "cwd": model::file_ref(set, fs.cwd_id),
                "root": model::file_ref(set, fs.root_id),
                "umask": fs.umask.map(|u| format!("{u:04o}")),
            })
        }),
    );
    m.insert(
        "threads".into(),
        Value::Array(
            t.threads
                .iter()
                .map(|th| thread(th.tid, &th.core))
                .collect(),
        ),
    );
    m.insert("mm".into(), part(&t.mm, |x| mm(set, t, x)));
    m.insert("fdinfo".into(), json!(t.fdinfo_name));
    m.insert("fds".into(), part(&t.fdinfo, |f| fds(set, t, f)));
    let damaged: Vec<Value> = set
        .files
        .iter()
        .filter(|f| f.damaged.is_some() && belongs(&f.name, t))
        .map(|f| json!({ "file": f.name, "problem": f.damaged }))
        .collect();
    m.insert("damaged".into(), Value::Array(damaged));
    Value::Object(m)
}

/// Whether an image file is one of the task's own.
fn belongs(name: &str, t: &Task) -> bool {
    let pid = t.pid();
    let own = [
        format!("mm-{pid}.img"),
        format!("pagemap-{pid}.img"),
        format!("fs-{pid}.img"),
        format!("ids-{pid}.img"),
    ];
    own.iter().any(|n| n == name)
        || t.threads
            .iter()
            .any(|th| name == format!("core-{}.img", th.tid))
        || t.fdinfo_name.as_deref() == Some(name)
}

fn cgroups(set: &ImageSet, cg: &pb::CgroupEntry) -> Value {
    fn dirs(parent: &str, d: &[pb::CgroupDirEntry], out: &mut Vec<Value>) {
        for e in d {
            let path = format!("{parent}/{}", e.dir_name.trim_matches('/'));
            out.push(json!({
                "path": path,
                "mode": e.dir_perms.as_ref().map(|p| format!("{:04o}", p.mode)),
                "uid": e.dir_perms.as_ref().map(|p| p.uid),
                "gid": e.dir_perms.as_ref().map(|p| p.gid),
                "properties": e.properties.iter().map(|p| json!({ "name": p.name, "value": p.value })).collect::<Vec<_>>(),
            }));
            dirs(&path, &e.children, out);
        }
    }
    json!({
        "sets": cg.sets.iter().map(|s| json!({
            "id": s.id,
            "used_by": model::cgroup_set_users(set, s.id),
            "members": s.ctls.iter().map(|m| json!({
                "hierarchy": m.name,
                "path": m.path,
                "cgns_prefix": m.cgns_prefix,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "hierarchies": cg.controllers.iter().map(|c| {
            let mut d = Vec::new();
            dirs("", &c.dirs, &mut d);
            json!({ "names": c.cnames, "threaded": c.is_threaded, "dirs": d })
        }).collect::<Vec<_>>(),
    })
}
