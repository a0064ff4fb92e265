//! The text form of `ckpt show`: one header, the process tree, then one
//! section per task (its threads, memory and files), then the files of
//! the directory and every problem found.

use std::fmt::Write as _;

use crate::images::pagemap::PAGE;
use crate::images::pb;
use crate::images::task::TASK_DEAD;

use super::load::{fd_type_name, Absent, ImageSet, ManifestStatus, Task, Thread};
use super::model::{self, SigInfo};
use super::names::{self, human, pages};

/// Width of the key column of `key  value` lines.
const KEY: usize = 14;

struct Out {
    s: String,
}

impl Out {
    fn line(&mut self, indent: usize, text: impl AsRef<str>) {
        let _ = writeln!(self.s, "{:indent$}{}", "", text.as_ref());
    }

    fn kv(&mut self, indent: usize, key: &str, value: impl AsRef<str>) {
        let value = value.as_ref();
        if key.len() >= KEY {
            let _ = writeln!(self.s, "{:indent$}{key} {value}", "");
        } else {
            let _ = writeln!(self.s, "{:indent$}{key:KEY$}{value}", "");
        }
    }

    /// A key whose value is a list wrapped under the value column.
    fn kv_wrapped(&mut self, indent: usize, key: &str, items: &[String]) {
        let pad = " ".repeat(indent + KEY);
        let text = names::wrap(items, 100usize.saturating_sub(indent + KEY).max(40), &pad);
        self.kv(indent, key, text);
    }

    fn blank(&mut self) {
        self.s.push('\n');
    }

    /// Rows as aligned columns (the last one unpadded); `right` says
    /// which columns are right-aligned.
    fn table(&mut self, indent: usize, rows: &[Vec<String>], right: &[bool]) {
        let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut width = vec![0; cols];
        for r in rows {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        for r in rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let last = i + 1 == r.len();
                if i > 0 {
                    line.push_str("  ");
                }
                // Padded by hand: a format width above 65535 (the thread
                // list of a task with thousands of threads) panics.
                let pad = " ".repeat(width[i] - c.chars().count());
                if right.get(i).copied().unwrap_or(false) {
                    line.push_str(&pad);
                    line.push_str(c);
                } else if last {
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&pad);
                }
            }
            self.line(indent, line.trim_end());
        }
    }
}

fn damaged_mark(set: &ImageSet, name: &str) -> String {
    match set.damaged(name) {
        Some(why) => format!("  [DAMAGED: {why}]"),
        None => String::new(),
    }
}

fn cannot(out: &mut Out, indent: usize, e: &Absent) {
    out.line(indent, format!("(cannot show: {e})"));
}

/// The whole text of `ckpt show`.
pub fn render(set: &ImageSet) -> String {
    let mut out = Out { s: String::new() };
    header(&mut out, set);
    tree(&mut out, set);
    for t in &set.tasks {
        out.blank();
        task(&mut out, set, t);
    }
    if set.cgroups.is_some() {
        out.blank();
        cgroups(&mut out, set);
    }
    // The tree's own namespaces, when it has any.
    let ns = super::ns::text(set);
    if !ns.is_empty() {
        out.blank();
        for (indent, l) in ns {
            out.line(indent, l);
        }
    }
    // SysV IPC objects, when there are any.
    if !set.sysvipc.is_empty() {
        out.blank();
        for (indent, l) in super::ipc::text(&set.sysvipc) {
            out.line(indent, l);
        }
    }
    if !set.file_locks.is_empty() {
        out.blank();
        out.line(0, format!("File locks ({})", set.file_locks.len()));
        for l in &set.file_locks {
            out.line(2, file_lock(l));
        }
    }
    out.blank();
    files(&mut out, set);
    out.blank();
    if set.problems.is_empty() {
        out.line(0, "No problems found.");
    } else {
        out.line(0, format!("Problems ({})", set.problems.len()));
        for p in &set.problems {
            out.line(2, format!("- {p}"));
        }
    }
    out.s
}

fn header(out: &mut Out, set: &ImageSet) {
    out.line(0, format!("Image directory {}", set.dir));
    match &set.inventory {
        Ok(inv) => {
            let mut what = vec![format!("images {}", names::img_version(inv.img_version))];
            if inv.fdinfo_per_id == Some(true) {
                what.push("fdinfo per id".into());
            }
            if inv.ns_per_id == Some(true) {
                what.push("ns per id".into());
            }
            if let Some(l) = inv.lsmtype {
                what.push(format!("lsm {}", names::lsm(l)));
            }
            out.kv(
                2,
                "inventory",
                what.join(", ") + &damaged_mark(set, "inventory.img"),
            );
            if let Some(ids) = &inv.root_ids {
                out.kv(2, "root ids", model::ids_text(ids));
            }
            let mut more = Vec::new();
            if let Some(cg) = inv.root_cg_set {
                more.push(format!("root cgroup set {cg}"));
            }
            if let Some(u) = inv.dump_uptime {
                more.push(format!("dump uptime {u}"));
            }
            if let Some(m) = inv.pre_dump_mode {
                more.push(format!("pre-dump mode {}", model::pre_dump_mode(m)));
            }
            if inv.tcp_close == Some(true) {
                more.push("tcp-close".into());
            }
            if let Some(m) = inv.network_lock_method {
                more.push(format!("network lock {}", model::network_lock(m)));
            }
            if !more.is_empty() {
                out.kv(2, "", more.join(", "));
            }
        }
        Err(e) => out.kv(2, "inventory", format!("(cannot show: {e})")),
    }
    match &set.manifest {
        ManifestStatus::Ok { files, bytes } => out.kv(
            2,
            "manifest",
            format!(
                "OK: {files} files, {}, sizes and checksums match",
                human(*bytes)
            ),
        ),
        ManifestStatus::Absent => out.kv(
            2,
            "manifest",
            "none (not written by ckpt?): files not verified",
        ),
        ManifestStatus::Problems(ps) => {
            out.kv(2, "manifest", format!("{} PROBLEM(S)", ps.len()));
            for p in ps {
                out.line(2 + KEY, format!("- {p}"));
            }
        }
    }
    let total: u64 = set.files.iter().map(|f| f.size).sum();
    out.kv(
        2,
        "contents",
        format!(
            "{} task(s), {} file(s), {}",
            set.tasks.len(),
            set.files.len(),
            human(total)
        ),
    );
    if !set.problems.is_empty() {
        out.kv(
            2,
            "problems",
            format!("{} (listed at the end)", set.problems.len()),
        );
    }
}

fn tree(out: &mut Out, set: &ImageSet) {
    out.blank();
    out.line(
        0,
        format!(
            "Process tree (pstree.img){}",
            damaged_mark(set, "pstree.img")
        ),
    );
    if let Err(e) = &set.pstree {
        cannot(out, 2, e);
        if set.tasks.is_empty() {
            return;
        }
        out.line(2, "tasks found from their core images:");
    }
    // Tasks in pid namespaces below the root's: their pid, group and
    // session at each level, from the root's namespace down.
    let nested = set.tasks.iter().any(|t| !t.tree.ns_pid.is_empty());
    let mut header = vec![
        "PID".to_string(),
        "PPID".into(),
        "PGID".into(),
        "SID".into(),
        "THREADS".into(),
    ];
    if nested {
        header.push("PID/PGID/SID BY LEVEL".into());
    }
    header.push("COMM".into());
    let mut rows = vec![header];
    let by_level = |v: &[u32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    for (depth, t) in model::tree_order(&set.tasks) {
        let p = &t.tree;
        let threads = if p.threads.len() <= 1 {
            p.threads.len().max(1).to_string()
        } else {
            let mut tids = p.threads.clone();
            tids.sort_unstable();
            format!(
                "{} ({})",
                p.threads.len(),
                tids.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut row = vec![
            format!("{}{}", "  ".repeat(depth), p.pid),
            p.ppid.to_string(),
            p.pgid.to_string(),
            p.sid.to_string(),
            threads,
        ];
        if nested {
            row.push(match p.ns_pid.is_empty() {
                true => "-".into(),
                false => format!(
                    "{} {} {}",
                    by_level(&p.ns_pid),
                    by_level(&p.ns_pgid),
                    by_level(&p.ns_sid)
                ),
            });
        }
        row.push(t.comm().unwrap_or("?").to_string());
        rows.push(row);
    }
    out.table(2, &rows, &[]);
}

fn task(out: &mut Out, set: &ImageSet, t: &Task) {
    let pid = t.pid();
    out.line(0, format!("Task {pid} ({})", t.comm().unwrap_or("?")));
    let core_name = format!("core-{pid}.img");
    if !damaged_mark(set, &core_name).is_empty() {
        out.line(
            2,
            format!("core-{pid}.img{}", damaged_mark(set, &core_name)),
        );
    }
    match t.threads.first().map(|th| &th.core) {
        Some(Err(e)) => cannot(out, 2, e),
        Some(Ok(core)) => match &core.tc {
            None => out.line(2, format!("(cannot show: {core_name} has no task core)")),
            Some(tc) => task_core(out, tc, core),
        },
        None => {}
    }
    if t.is_zombie() {
        // Nothing else was dumped for it.
        return;
    }
    match &t.ids {
        Ok(ids) => out.kv(2, "ids", model::ids_text(ids)),
        Err(e) => out.kv(2, "ids", format!("(cannot show: {e})")),
    }
    if let Ok(mm) = &t.mm {
        out.kv(2, "exe", model::file_ref(set, mm.exe_file_id));
    }
    let fs_name = format!("fs-{pid}.img");
    match &t.fs {
        Ok(fs) => {
            out.kv(
                2,
                "cwd",
                model::file_ref(set, fs.cwd_id) + &damaged_mark(set, &fs_name),
            );
            out.kv(2, "root", model::file_ref(set, fs.root_id));
            if let Some(u) = fs.umask {
                out.kv(2, "umask", format!("{u:04o}"));
            }
        }
        Err(e) => out.kv(2, "cwd/root", format!("(cannot show: {e})")),
    }
    if let Some(Ok(core)) = t.threads.first().map(|th| &th.core) {
        if let Some(tc) = &core.tc {
            task_signals_limits(out, tc);
        }
    }
    for th in &t.threads {
        out.blank();
        thread(out, set, th);
    }
    out.blank();
    memory(out, set, t);
    out.blank();
    fds(out, set, t);
}

fn task_core(out: &mut Out, tc: &pb::TaskCoreEntry, core: &pb::CoreEntry) {
    let mut state = names::task_state(tc.task_state);
    if tc.task_state == TASK_DEAD {
        state += &format!(", {}", names::wait_status(tc.exit_code));
    } else if tc.exit_code != 0 {
        state += &format!(", exit code {}", tc.exit_code);
    }
    if let Some(s) = tc.stop_signo {
        state += &format!(" (by {})", names::signal(s));
    }
    out.kv(2, "state", state);
    if core.mtype != pb::core_entry::March::X8664 as i32 {
        out.kv(2, "arch", model::arch(core.mtype));
    }
    out.kv(2, "personality", names::personality(tc.personality));
    out.kv(2, "task flags", model::task_flags(tc.flags));
    if let Some(o) = tc.oom_score_adj {
        out.kv(2, "oom_score_adj", o.to_string());
    }
    if let Some(l) = tc.loginuid {
        out.kv(2, "loginuid", model::loginuid(l));
    }
    if let Some(s) = tc.child_subreaper {
        out.kv(2, "subreaper", if s { "yes" } else { "no" });
    }
    if let Some(cg) = tc.cg_set {
        out.kv(2, "cgroup set", cg.to_string());
    }
    if let Some(m) = tc.membarrier_registration_mask.filter(|&m| m != 0) {
        out.kv(2, "membarrier", format!("{m:#x}"));
    }
}

fn task_signals_limits(out: &mut Out, tc: &pb::TaskCoreEntry) {
    if let Some(rl) = &tc.rlimits {
        out.line(2, "rlimits (soft / hard)");
        let rows: Vec<Vec<String>> = rl
            .rlimits
            .iter()
            .enumerate()
            .map(|(i, r)| {
                vec![
                    names::rlimit_name(i),
                    names::rlimit_value(i, r.cur),
                    "/".into(),
                    names::rlimit_value(i, r.max),
                ]
            })
            .collect();
        out.table(4, &rows, &[false, true, false, false]);
    }
    let handlers = model::sigactions(tc);
    let default = tc.sigactions.len() - handlers.len();
    if tc.sigactions.is_empty() {
        out.kv(2, "sigactions", "none in the image");
    } else {
        out.line(
            2,
            format!(
                "signal handlers ({} set, {default} default)",
                handlers.len()
            ),
        );
        for h in &handlers {
            out.line(4, h.text());
        }
    }
    out.kv(2, "blocked", names::sigset(model::tc_blocked(tc)));
    out.kv(2, "pending", siginfos(tc.signals_s.as_ref()));
    if let Some(timers) = &tc.timers {
        let its = model::itimers(timers);
        if its.is_empty() {
            out.kv(2, "itimers", "none");
        } else {
            for (i, line) in its.iter().enumerate() {
                out.kv(2, if i == 0 { "itimers" } else { "" }, line);
            }
        }
        if timers.posix.is_empty() {
            out.kv(2, "posix timers", "none");
        } else {
            out.line(2, format!("posix timers ({})", timers.posix.len()));
            for p in &timers.posix {
                out.line(4, model::posix_timer(p));
            }
        }
    }
}

fn siginfos(q: Option<&pb::SignalQueueEntry>) -> String {
    match q {
        None => "none".to_string(),
        Some(q) if q.signals.is_empty() => "none".to_string(),
        Some(q) => q
            .signals
            .iter()
            .map(|s| SigInfo::parse(&s.siginfo).text())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn thread(out: &mut Out, set: &ImageSet, th: &Thread) {
    let name = format!("core-{}.img", th.tid);
    let core = match &th.core {
        Ok(c) => c,
        Err(e) => {
            out.line(2, format!("Thread {}", th.tid));
            cannot(out, 4, e);
            return;
        }
    };
    let comm = core
        .thread_core
        .as_ref()
        .and_then(|t| t.comm.clone())
        .or_else(|| core.tc.as_ref().map(|t| t.comm.clone()))
        .unwrap_or_else(|| "?".into());
    out.line(
        2,
        format!("Thread {} ({comm}){}", th.tid, damaged_mark(set, &name)),
    );
    if let Some(ti) = &core.thread_info {
        let r = &ti.gpregs;
        out.kv(4, "syscall", names::syscall_state(r.orig_ax, r.ax));
        out.kv(4, "ip", names::hex(r.ip));
        out.kv(4, "sp", names::hex(r.sp));
        out.kv(4, "ax", model::ax(r.ax));
        out.kv(4, "orig_ax", model::orig_ax(r.orig_ax));
        out.kv(
            4,
            "fs_base",
            format!(
                "{}  gs_base {}",
                names::hex(r.fs_base),
                names::hex(r.gs_base)
            ),
        );
        if r.mode == Some(pb::UserX86RegsMode::Compat as i32) {
            out.kv(4, "mode", "compat (32-bit)");
        }
        out.kv(4, "fpu", model::fpu_text(&ti.fpregs));
        out.kv(4, "clear_tid", names::hex(ti.clear_tid_addr));
        if !ti.tls.is_empty() {
            out.kv(4, "tls", format!("{} GDT entries", ti.tls.len()));
        }
    } else {
        out.kv(4, "registers", "none in the image");
    }
    let Some(tc) = &core.thread_core else {
        out.kv(4, "thread core", "none in the image");
        return;
    };
    out.kv(
        4,
        "robust list",
        if tc.futex_rla == 0 {
            "none".to_string()
        } else {
            format!("{} ({} bytes)", names::hex(tc.futex_rla), tc.futex_rla_len)
        },
    );
    out.kv(4, "rseq", model::rseq_text(tc.rseq_entry.as_ref()));
    if let Some(b) = tc.blk_sigset {
        out.kv(4, "blocked", names::sigset(b));
    }
    out.kv(4, "pending", siginfos(tc.signals_p.as_ref()));
    if let Some(sas) = &tc.sas {
        out.kv(4, "sigaltstack", model::sas_text(sas));
    }
    if let Some(p) = tc.pdeath_sig {
        out.kv(
            4,
            "pdeath signal",
            if p == 0 {
                "none".to_string()
            } else {
                names::signal(p)
            },
        );
    }
    out.kv(4, "sched", model::sched_text(tc));
    if let Some(ns) = tc.timerslack_ns {
        out.kv(4, "timerslack", names::nanoseconds(ns));
    }
    if let Some(m) = tc.seccomp_mode {
        let mut s = names::seccomp_mode(m);
        if let Some(f) = tc.seccomp_filter {
            s += &format!(" (filter {f} of seccomp.img)");
        }
        out.kv(4, "seccomp", s);
    }
    if let Some(c) = &tc.creds {
        creds(out, c);
    }
}

fn creds(out: &mut Out, c: &pb::CredsEntry) {
    out.kv(
        4,
        "uids",
        format!(
            "{} {} {} {} (real effective saved fs)",
            c.uid, c.euid, c.suid, c.fsuid
        ),
    );
    out.kv(
        4,
        "gids",
        format!(
            "{} {} {} {} (real effective saved fs)",
            c.gid, c.egid, c.sgid, c.fsgid
        ),
    );
    out.kv(
        4,
        "groups",
        if c.groups.is_empty() {
            "none".to_string()
        } else {
            c.groups
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    for (key, words) in [
        ("caps eff", &c.cap_eff),
        ("caps prm", &c.cap_prm),
        ("caps inh", &c.cap_inh),
        ("caps bnd", &c.cap_bnd),
        ("caps amb", &c.cap_amb),
    ] {
        let set = names::cap_words(words);
        let items: Vec<String> = names::caps(set)
            .split(", ")
            .map(|s| s.to_string())
            .collect();
        out.kv_wrapped(4, key, &items);
    }
    out.kv(
        4,
        "securebits",
        names::flags(c.secbits as u64, names::SECUREBITS, "none"),
    );
    if let Some(n) = c.no_new_privs {
        out.kv(4, "no_new_privs", if n != 0 { "yes" } else { "no" });
    }
    if let Some(p) = &c.lsm_profile {
        out.kv(4, "lsm profile", p);
    }
}

fn memory(out: &mut Out, set: &ImageSet, t: &Task) {
    let pid = t.pid();
    let name = format!("mm-{pid}.img");
    out.line(2, format!("Memory ({name}){}", damaged_mark(set, &name)));
    let mm = match &t.mm {
        Ok(mm) => mm,
        Err(e) => {
            cannot(out, 4, e);
            return;
        }
    };
    let range = |a: u64, b: u64| -> String {
        if a == 0 && b == 0 {
            "none".to_string()
        } else if b >= a {
            format!("{:#x}-{:#x} ({})", a, b, human(b - a))
        } else {
            format!("{a:#x}-{b:#x}")
        }
    };
    out.kv(4, "code", range(mm.mm_start_code, mm.mm_end_code));
    out.kv(4, "data", range(mm.mm_start_data, mm.mm_end_data));
    out.kv(4, "brk", range(mm.mm_start_brk, mm.mm_brk));
    out.kv(
        4,
        "stack start",
        if mm.mm_start_stack == 0 {
            "none".to_string()
        } else {
            names::hex(mm.mm_start_stack)
        },
    );
    out.kv(4, "args", range(mm.mm_arg_start, mm.mm_arg_end));
    out.kv(4, "environment", range(mm.mm_env_start, mm.mm_env_end));
    if let Some(d) = mm.dumpable {
        out.kv(4, "dumpable", names::dumpable(d));
    }
    if let Some(thp) = mm.thp_disabled {
        out.kv(4, "thp disabled", if thp { "yes" } else { "no" });
    }
    let auxv = model::auxv(&mm.mm_saved_auxv);
    if !auxv.is_empty() {
        let items: Vec<String> = auxv.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.kv_wrapped(4, "auxv", &items);
    }
    if !mm.aios.is_empty() {
        out.kv(4, "aio rings", mm.aios.len().to_string());
    }
    let total: u64 = mm.vmas.iter().map(|v| v.end.saturating_sub(v.start)).sum();
    let all: u64 = mm.vmas.iter().map(|v| set.vma_pages(t, v)).sum();
    let pm_name = format!("pagemap-{pid}.img");
    let mut stored = Vec::new();
    match &t.pagemap {
        Ok(pm) => {
            let pages_name = format!("pages-{}.img", pm.pages_id);
            stored.push(format!(
                "{} private in {pages_name}{}",
                pages(pm.stored_pages()),
                damaged_mark(set, &pages_name)
            ));
            if all > pm.stored_pages() {
                stored.push(format!("{} shared", pages(all - pm.stored_pages())));
            }
            let cow = pm.cow_pages_in(0, u64::MAX);
            if cow > 0 {
                stored.push(format!("{} shared with parent (not stored)", pages(cow)));
            }
        }
        Err(e) => stored.push(format!("unknown ({e})")),
    }
    out.kv(
        4,
        "mappings",
        format!(
            "{} mappings, {} mapped; stored: {}{}",
            mm.vmas.len(),
            human(total),
            stored.join(", "),
            damaged_mark(set, &pm_name)
        ),
    );
    let mut rows = vec![vec![
        "ADDRESS".to_string(),
        "SIZE".into(),
        "PROT".into(),
        "KIND".into(),
        "STORED".into(),
        "OFFSET".into(),
        "FILE / NOTES".into(),
    ]];
    for v in &mm.vmas {
        let n = set.vma_pages(t, v);
        let mut vm = model::vma(set, t, v);
        if let Ok(pm) = &t.pagemap {
            let cow = pm.cow_pages_in(v.start, v.end);
            if cow > 0 {
                vm.notes
                    .insert(0, format!("{} shared with parent", pages(cow)));
            }
        }
        rows.push(vec![
            format!("{:012x}-{:012x}", v.start, v.end),
            human(v.end.saturating_sub(v.start)),
            names::prot_maps(v.prot, v.flags),
            vm.kind.to_string(),
            if n == 0 { "-".into() } else { pages(n) },
            if v.pgoff == 0 {
                "0".into()
            } else {
                format!("{:#x}", v.pgoff)
            },
            vm.notes.join("  "),
        ]);
    }
    out.table(4, &rows, &[false, true, false, false, true, true, false]);
}

fn fds(out: &mut Out, set: &ImageSet, t: &Task) {
    let name = t
        .fdinfo_name
        .clone()
        .unwrap_or_else(|| "fdinfo-?.img".into());
    out.line(
        2,
        format!(
            "Files ({name}, files.img){}{}",
            damaged_mark(set, &name),
            damaged_mark(set, "files.img")
        ),
    );
    // A task sharing another's fd table (CLONE_FILES): shown once, with
    // the first task that uses it.
    if let Some(owner) = set
        .tasks
        .iter()
        .take_while(|o| o.pid() != t.pid())
        .find(|o| t.fdinfo_name.is_some() && o.fdinfo_name == t.fdinfo_name)
    {
        out.line(4, format!("the fd table of pid {}, shared", owner.pid()));
        return;
    }
    let fds = match &t.fdinfo {
        Ok(f) => f,
        Err(e) => {
            cannot(out, 4, e);
            return;
        }
    };
    if fds.is_empty() {
        out.line(4, "no open files");
        return;
    }
    let mut rows = vec![vec![
        "FD".to_string(),
        "FD FLAGS".into(),
        "TYPE".into(),
        "OPEN FLAGS".into(),
        "POS".into(),
        "PATH".into(),
    ]];
    let mut sorted: Vec<&pb::FdinfoEntry> = fds.iter().collect();
    sorted.sort_by_key(|f| f.fd);
    for fd in &sorted {
        let fdflags = if fd.flags & libc::FD_CLOEXEC as u32 != 0 {
            "cloexec".to_string()
        } else if fd.flags == 0 {
            "-".to_string()
        } else {
            format!("{:#x}", fd.flags)
        };
        let (kind, oflags, pos, mut path) = match set.file(fd.id) {
            Some(f) => {
                let v = set.describe(f);
                let mut path = v.path.clone();
                let extra: Vec<String> = v
                    .extra
                    .iter()
                    .filter(|(k, _)| k != "mode")
                    .map(|(k, val)| match k.as_str() {
                        "file type" => val.clone(),
                        "mnt_id" => format!("mount {val}"),
                        _ => format!("{k} {val}"),
                    })
                    .collect();
                if !extra.is_empty() {
                    path += &format!(" ({})", extra.join(", "));
                }
                (
                    v.kind,
                    v.flags.map_or("-".into(), names::open_flags),
                    v.pos.map_or("-".into(), |p| p.to_string()),
                    path,
                )
            }
            None => (
                fd_type_name(fd.r#type),
                "?".into(),
                "?".into(),
                format!("(file id {} is not in files.img)", fd.id),
            ),
        };
        let shared = model::fd_sharers(set, t, fd);
        if !shared.is_empty() {
            path += &format!("  [same open file as {}]", shared.join(", "));
        }
        rows.push(vec![fd.fd.to_string(), fdflags, kind, oflags, pos, path]);
    }
    out.table(4, &rows, &[true, false, false, false, true, false]);
}

fn files(out: &mut Out, set: &ImageSet) {
    let total: u64 = set.files.iter().map(|f| f.size).sum();
    out.line(
        0,
        format!(
            "Files in the directory ({}, {})",
            set.files.len(),
            human(total)
        ),
    );
    let mut rows = vec![vec![
        "NAME".to_string(),
        "SIZE".into(),
        "MAGIC".into(),
        "ENTRIES".into(),
        "STATUS".into(),
    ]];
    for f in &set.files {
        let entries = match (f.entries, f.magic.as_deref()) {
            (Some(n), _) => n.to_string(),
            (None, Some("RAW")) if f.size % PAGE == 0 && f.name.starts_with("pages-") => {
                names::count(f.size / PAGE, "page")
            }
            (None, Some("RAW")) => "raw".into(),
            _ => "-".into(),
        };
        let mut status = Vec::new();
        if f.kind.is_none() {
            status.push(if f.name.ends_with(".img") {
                "not a known image name".to_string()
            } else {
                "not an image".to_string()
            });
        }
        if let Some(e) = &f.error {
            status.push(e.clone());
        }
        if let Some(d) = &f.damaged {
            status.push(format!("DAMAGED: {d}"));
        }
        rows.push(vec![
            f.name.clone(),
            human(f.size),
            f.magic.clone().unwrap_or_else(|| "-".into()),
            entries,
            if status.is_empty() {
                "ok".into()
            } else {
                status.join("; ")
            },
        ]);
    }
    out.table(2, &rows, &[false, true, false, true, false]);
}

/// cgroup.img: each set (which tasks use it, which hierarchy -> which
/// path), then per hierarchy the saved directories with their properties.
fn cgroups(out: &mut Out, set: &ImageSet) {
    out.line(
        0,
        format!("Cgroups (cgroup.img){}", damaged_mark(set, "cgroup.img")),
    );
    let cg = match &set.cgroups {
        Some(Ok(cg)) => cg,
        Some(Err(e)) => return cannot(out, 2, e),
        None => return,
    };
    for s in &cg.sets {
        let users = model::cgroup_set_users(set, s.id);
        out.line(
            2,
            format!(
                "set {}{}",
                s.id,
                if users.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", users.join(", "))
                }
            ),
        );
        let rows: Vec<Vec<String>> = s
            .ctls
            .iter()
            .map(|m| {
                let mut path = m.path.clone();
                if let Some(p) = m.cgns_prefix.filter(|&p| p > 0) {
                    path += &format!(
                        "  (cgroup namespace root {})",
                        m.path.get(..p as usize).unwrap_or(&m.path)
                    );
                }
                vec![hierarchy_name(&m.name), path]
            })
            .collect();
        out.table(4, &rows, &[]);
    }
    for c in &cg.controllers {
        out.line(
            2,
            format!(
                "hierarchy {}{}",
                hierarchy_name(&c.cnames.join(",")),
                if c.is_threaded == Some(true) {
                    " (threaded)"
                } else {
                    ""
                }
            ),
        );
        if c.dirs.is_empty() {
            out.line(4, "(no directories below the root)");
        }
        cgroup_dirs(out, 4, "", &c.dirs);
    }
}

fn cgroup_dirs(out: &mut Out, indent: usize, parent: &str, dirs: &[pb::CgroupDirEntry]) {
    for d in dirs {
        let path = format!("{parent}/{}", d.dir_name.trim_matches('/'));
        let perms = d
            .dir_perms
            .as_ref()
            .map(|p| format!("  mode {:04o}, owner {}:{}", p.mode, p.uid, p.gid))
            .unwrap_or_default();
        out.line(indent, format!("{path}{perms}"));
        for p in &d.properties {
            let value = if p.value.contains('\n') {
                p.value.lines().collect::<Vec<_>>().join("; ")
            } else if p.value.is_empty() {
                "\"\"".to_string()
            } else {
                p.value.clone()
            };
            out.line(indent + 4, format!("{} = {value}", p.name));
        }
        cgroup_dirs(out, indent, &path, &d.children);
    }
}

/// A hierarchy's name as images spell it, with cgroup v2's (the empty
/// string, as CRIU writes it) made visible.
fn hierarchy_name(name: &str) -> String {
    if name == crate::cgroupfs::V2_NAME {
        "cgroup2".into()
    } else {
        name.to_string()
    }
}

/// One entry of filelocks.img.
fn file_lock(l: &crate::images::pb::FileLockEntry) -> String {
    let kind = match l.flag {
        1 => "POSIX".to_string(),
        2 => "flock".to_string(),
        4 => "OFD".to_string(),
        k => format!("kind {k:#x}"),
    };
    let mode = match (l.flag, l.r#type) {
        (2, 0) => "shared".to_string(),
        (2, 1) => "exclusive".to_string(),
        (_, 0) => "read".to_string(),
        (_, 1) => "write".to_string(),
        (_, t) => format!("type {t}"),
    };
    let range = if l.flag == 2 {
        String::new()
    } else if l.len == 0 {
        format!(" [{}, EOF)", l.start)
    } else {
        format!(" [{}, {})", l.start, l.start + l.len)
    };
    format!("{kind} {mode}{range}: pid {} fd {}", l.pid, l.fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_of_any_width() {
        let mut out = Out { s: String::new() };
        let long = "1".repeat(70_000);
        let rows = vec![
            vec!["a".to_string(), long.clone(), "x".to_string()],
            vec!["bb".to_string(), "2".to_string(), "y".to_string()],
        ];
        out.table(2, &rows, &[false, true, false]);
        let lines: Vec<&str> = out.s.lines().collect();
        assert_eq!(lines[0], format!("  a   {long}  x"));
        assert_eq!(lines[1], format!("  bb  {}2  y", " ".repeat(69_999)));
    }
}
