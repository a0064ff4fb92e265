//! Which namespaces a tree lives in, and the images of those it owns
//! (`utsns-N.img`, `timens-N.img`, `pidns-N.img`; the IPC namespace's are
//! dump/ipc.rs's).
//!
//! A restore rebuilds a namespace only one way: its root creates it, and
//! every task of the tree inherits it. So a tree is dumped when, for every
//! kind of namespace, all its tasks share the root's, and the root's is
//! either the engine's (the host's: the restore puts the tree in its own)
//! or one the restore can make anew. Mount and network namespaces can be
//! made anew only in the shape the zdtm `ns` flavour gives them (a
//! private copy of the host's mounts with a /proc of its own: mntns.rs;
//! only an untouched loopback device: netns.rs), which those modules
//! check. Anything else — a task that went into a namespace of its own
//! below the root, a root in a user namespace other than the host's, a
//! mount or network namespace of another shape — is refused here, naming
//! the task and the namespace, rather than restored somewhere else.
//!
//! A tree whose root is the init of a pid namespace of its own is dumped
//! with the pids its tasks have in that namespace (CRIU's virtual pids):
//! those are what the tree sees and what the restore gives back, while the
//! pids seen from outside need not be kept.

use std::collections::BTreeMap;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::imgdir::ImageDir;
use crate::proc::{self, status};

use super::freeze::FrozenProc;

/// Namespace kinds a tree may have its own of, because the restore makes
/// them anew.
const OWN_OK: [&str; 7] = ["uts", "ipc", "pid", "cgroup", "time", "mnt", "net"];

/// What the restore cannot make yet, and why.
fn not_yet(kind: &str) -> &'static str {
    match kind {
        "user" => "user namespaces other than the host's are not supported yet",
        _ => "this kind of namespace is not supported yet",
    }
}

/// The namespaces of a frozen tree, checked.
pub struct TreeNs {
    /// The root's namespaces (kind -> inode), `*_for_children` left out.
    root: BTreeMap<String, u64>,
    /// The engine's.
    engine: BTreeMap<String, u64>,
    /// Host pid -> pid in the root's pid namespace, for every task and
    /// thread of the tree; empty when the tree is in the engine's pid
    /// namespace.
    vpids: BTreeMap<Pid, Pid>,
    /// mountpoints-N.img of a mount namespace of the tree's own.
    mounts: Option<Vec<pb::MntEntry>>,
    /// netdev-N.img of a network namespace of the tree's own.
    net: Option<super::netns::NetNs>,
}

fn links(pid: Pid) -> Result<BTreeMap<String, u64>> {
    Ok(proc::ns::ns_ids(pid)?.into_iter().collect())
}

impl TreeNs {
    /// Checks every live task of `tree` (the root first) against the
    /// rules of the module doc.
    pub fn check(tree: &[FrozenProc]) -> Result<TreeNs> {
        let engine = links(std::process::id() as Pid)?;
        let root_pid = tree[0].pid;
        let all = links(root_pid)?;
        let root: BTreeMap<String, u64> = all
            .iter()
            .filter(|(k, _)| !k.ends_with("_for_children"))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (kind, &ino) in &root {
            if engine.get(kind) != Some(&ino) && !OWN_OK.contains(&kind.as_str()) {
                return Err(Error::unsupported(
                    root_pid,
                    format!("{kind} namespace {kind}:[{ino}]"),
                    not_yet(kind),
                ));
            }
        }
        for p in tree.iter().filter(|p| p.zombie.is_none()) {
            let mine = if p.pid == root_pid {
                all.clone()
            } else {
                links(p.pid)?
            };
            for (kind, &ino) in &mine {
                let base = kind.strip_suffix("_for_children").unwrap_or(kind);
                let want = root.get(base).copied();
                if want == Some(ino) {
                    continue;
                }
                // A pid namespace below the root's: every task in it has
                // a pid at each level, which the images (one pid a task)
                // and the restore (set_tid of one level) cannot give back.
                let nested_pid = "nested pid namespaces (a pid at each level, as CRIU's \
                                  pstree keeps them) are not supported yet";
                let why = if base == "pid" && kind.ends_with("_for_children") {
                    format!(
                        "it made a new pid namespace for its children ({kind}:[{ino}]) \
                         inside the root's pid:[{}]; {nested_pid}",
                        want.unwrap_or(0)
                    )
                } else if base == "pid" && p.pid != root_pid {
                    format!(
                        "it is in pid:[{ino}], a pid namespace made inside the tree below \
                         the root's pid:[{}]; {nested_pid}",
                        want.unwrap_or(0)
                    )
                } else if kind.ends_with("_for_children") {
                    format!(
                        "it made a new {base} namespace for its children ({kind}:[{ino}]); \
                         namespaces created inside the tree are not supported yet"
                    )
                } else if p.pid == root_pid {
                    not_yet(kind).to_string()
                } else {
                    format!(
                        "it is in {base}:[{ino}], not in the root's {base}:[{}]; \
                         namespaces created inside the tree are not supported yet",
                        want.unwrap_or(0)
                    )
                };
                return Err(Error::unsupported(
                    p.pid,
                    format!("{base} namespace {base}:[{ino}]"),
                    why,
                ));
            }
        }
        let mut vpids = BTreeMap::new();
        if root.get("pid") != engine.get("pid") {
            for p in tree {
                let tids: Vec<Pid> = if p.threads.is_empty() {
                    vec![p.pid]
                } else {
                    p.threads.iter().map(|t| t.tid).collect()
                };
                for tid in tids {
                    let st = status::read_task(p.pid, tid)?;
                    let v = match st.ns_pid[..] {
                        [_, v] => v,
                        _ => {
                            return Err(Error::unsupported(
                                tid,
                                format!("pid namespace pid:[{}]", root["pid"]),
                                format!(
                                    "its pids {:?} are not one level below the engine's; \
                                     nested pid namespaces are not supported yet",
                                    st.ns_pid
                                ),
                            ))
                        }
                    };
                    vpids.insert(tid, v);
                }
            }
            if vpids.get(&root_pid) != Some(&1) {
                return Err(Error::unsupported(
                    root_pid,
                    format!("pid namespace pid:[{}]", root["pid"]),
                    format!(
                        "the root is pid {} there, not the namespace's init: \
                         only a whole pid namespace can be dumped",
                        vpids.get(&root_pid).copied().unwrap_or(0)
                    ),
                ));
            }
        }
        let own = |k: &str| root.get(k) != engine.get(k);
        let mounts = match own("mnt") {
            true => Some(super::mntns::check(root_pid, root["mnt"])?),
            false => None,
        };
        let net = match own("net") {
            true => Some(super::netns::check(root_pid, root["net"])?),
            false => None,
        };
        Ok(TreeNs {
            root,
            engine,
            vpids,
            mounts,
            net,
        })
    }

    /// Host pid -> pid in the tree's own pid namespace (empty: the tree is
    /// in the engine's).
    pub fn vpids(&self) -> &BTreeMap<Pid, Pid> {
        &self.vpids
    }

    /// Whether the tree has a namespace of this kind of its own.
    pub fn owns(&self, kind: &str) -> bool {
        self.root.get(kind) != self.engine.get(kind)
    }

    /// The pid of host pid `pid` in the tree's pid namespace. `what`
    /// names the field for the error of a pid outside it (a session or
    /// group led from outside the namespace).
    pub fn vpid(&self, of: Pid, pid: Pid, what: &str) -> Result<Pid> {
        if self.vpids.is_empty() || pid == 0 {
            return Ok(pid);
        }
        if let Some(&v) = self.vpids.get(&pid) {
            return Ok(v);
        }
        // A task of the namespace outside the tree cannot be: the init's
        // children are all in the tree. Only pids from outside are left.
        let inside = status::read(pid).ok().and_then(|s| match s.ns_pid[..] {
            [_, v] => Some(v),
            _ => None,
        });
        match inside {
            Some(v) => Ok(v),
            None => Err(Error::unsupported(
                of,
                format!("{what} {pid}"),
                "it lies outside the tree's pid namespace (give the namespace's init a session of its own: setsid)",
            )),
        }
    }

    /// utsns-N.img, timens-N.img, mountpoints-N.img, netns-N.img with
    /// netdev-N.img and pidns-N.img of the namespaces the tree owns, N as
    /// in the root's ids.
    pub fn write_images(
        &self,
        dir: &ImageDir,
        root: Pid,
        ids: &pb::TaskKobjIdsEntry,
    ) -> Result<()> {
        if self.owns("uts") {
            let uts = uts_of(root)?;
            let id = ids.uts_ns_id.unwrap_or(0);
            dir.write_image(&format!("utsns-{id}.img"), &[uts])?;
        }
        if self.owns("time") {
            let id = ids.time_ns_id.unwrap_or(0);
            dir.write_image(&format!("timens-{id}.img"), &[time_offsets(root)?])?;
        }
        if let Some(mounts) = &self.mounts {
            let id = ids.mnt_ns_id.unwrap_or(0);
            dir.write_image(&format!("mountpoints-{id}.img"), mounts)?;
        }
        if let Some(net) = &self.net {
            let id = ids.net_ns_id.unwrap_or(0);
            dir.write_image(&format!("netns-{id}.img"), &[pb::NetnsEntry::default()])?;
            dir.write_image(&format!("netdev-{id}.img"), &net.devices)?;
        }
        if self.owns("pid") {
            let id = ids.pid_ns_id.unwrap_or(0);
            dir.write_image(
                &format!("pidns-{id}.img"),
                &[pb::PidnsEntry { ext_key: None }],
            )?;
        }
        Ok(())
    }
}

/// The clock offsets of `pid`'s time namespace (/proc/PID/timens_offsets:
/// "monotonic SECS NSECS", "boottime SECS NSECS"). Negative seconds are
/// stored as their two's complement, as CRIU does.
fn time_offsets(pid: Pid) -> Result<pb::TimensEntry> {
    let path = format!("/proc/{pid}/timens_offsets");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: its time namespace's offsets"), e))?;
    let mut out = pb::TimensEntry::default();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let parsed = match w[..] {
            [clock, s, ns] => s
                .parse::<i64>()
                .ok()
                .zip(ns.parse::<u64>().ok())
                .map(|v| (clock, v)),
            _ => None,
        };
        let Some((clock, (secs, nsecs))) = parsed else {
            return Err(Error::task(pid, path, format!("cannot parse {line:?}")));
        };
        let ts = pb::Timespec {
            tv_sec: secs as u64,
            tv_nsec: nsecs,
        };
        match clock {
            "monotonic" => out.monotonic = ts,
            "boottime" => out.boottime = ts,
            _ => {}
        }
    }
    Ok(out)
}

/// Host name and domain name of `pid`'s UTS namespace: uname(2) answers
/// for the caller's, so a short-lived thread joins it (setns of a UTS
/// namespace changes only the calling thread).
fn uts_of(pid: Pid) -> Result<pb::UtsnsEntry> {
    let path = format!("/proc/{pid}/ns/uts");
    let ns = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: its UTS namespace"), e))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<pb::UtsnsEntry> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWUTS)
                .map_err(|e| Error::sys(pid, "setns into its UTS namespace", e))?;
            let u = nix::sys::utsname::uname()
                .map_err(|e| Error::sys(pid, "uname in its UTS namespace", e))?;
            Ok(pb::UtsnsEntry {
                nodename: u.nodename().to_string_lossy().into_owned(),
                domainname: u.domainname().to_string_lossy().into_owned(),
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::task(
                pid,
                "UTS namespace",
                "the helper thread panicked",
            ))
        })
    })
}
