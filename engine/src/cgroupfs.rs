//! The cgroup filesystems of this machine: which hierarchies are
//! mounted where, which property files of a cgroup matter to programs, and
//! the small pure pieces of logic shared by dump, restore and show (path
//! checks, `--cgroup-root` parsing and path mapping, `devices.list`).
//!
//! Hierarchies are discovered from `/proc/self/mountinfo`, never assumed:
//! a hybrid machine has v1 controllers under `/sys/fs/cgroup/<name>` and
//! cgroup2 at `/sys/fs/cgroup/unified`; a pure v2 machine has cgroup2 at
//! `/sys/fs/cgroup`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::proc::cgroup::CgroupLine;

/// The name of the cgroup v2 hierarchy in images: the empty string, as
/// CRIU writes it (the v2 line of `/proc/PID/cgroup` has no controller
/// list).
pub const V2_NAME: &str = "";

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1: its controllers and `name=` option, sorted; empty for v2.
    pub controllers: Vec<String>,
    pub v2: bool,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The mount's root inside the hierarchy (`/` unless bind-mounted or
    /// mounted from inside a cgroup namespace).
    pub root: String,
}

impl Hierarchy {
    /// `cpu,cpuacct`, `name=systemd`, or [`V2_NAME`]: the controller name
    /// used in images.
    pub fn name(&self) -> String {
        if self.v2 {
            V2_NAME.to_string()
        } else {
            self.controllers.join(",")
        }
    }

    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// Whether a `/proc/PID/cgroup` line is about this hierarchy.
    pub fn matches(&self, line: &CgroupLine) -> bool {
        if line.is_v2() {
            return self.v2;
        }
        let mut c = line.controllers.clone();
        c.sort();
        !self.v2 && c == self.controllers
    }

    /// The directory of cgroup `path` (absolute within the hierarchy).
    pub fn dir(&self, path: &str) -> PathBuf {
        let rel = path
            .strip_prefix(self.root.trim_end_matches('/'))
            .unwrap_or(path);
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mount.clone()
        } else {
            self.mount.join(rel)
        }
    }
}

/// Controllers the kernel knows (`/proc/cgroups`), to tell them apart from
/// ordinary mount options in a v1 mount's super options.
fn known_controllers() -> Vec<String> {
    std::fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Parse the cgroup mounts out of mountinfo lines; one entry per
/// hierarchy (the first mount whose root is `/` wins, else the first).
pub fn parse_hierarchies(
    mounts: &[crate::proc::mountinfo::MountInfo],
    known: &[String],
) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in mounts {
        let h = match m.fstype.as_str() {
            "cgroup2" => Hierarchy {
                controllers: Vec::new(),
                v2: true,
                mount: m.mount_point.clone(),
                root: m.root.to_string_lossy().into_owned(),
            },
            "cgroup" => {
                let mut controllers: Vec<String> = m
                    .super_options
                    .split(',')
                    .filter(|o| o.starts_with("name=") || known.iter().any(|k| k == o))
                    .map(str::to_string)
                    .collect();
                controllers.sort();
                if controllers.is_empty() {
                    continue;
                }
                Hierarchy {
                    controllers,
                    v2: false,
                    mount: m.mount_point.clone(),
                    root: m.root.to_string_lossy().into_owned(),
                }
            }
            _ => continue,
        };
        match out
            .iter_mut()
            .find(|o| o.v2 == h.v2 && o.controllers == h.controllers)
        {
            Some(o) if o.root != "/" && h.root == "/" => *o = h,
            Some(_) => {}
            None => out.push(h),
        }
    }
    out
}

/// The cgroup hierarchies mounted in the engine's mount namespace.
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let mounts = crate::proc::mountinfo::read(std::process::id() as i32)?;
    Ok(parse_hierarchies(&mounts, &known_controllers()))
}

/// The hierarchy named `name` in an image (see [`Hierarchy::name`]).
pub fn find<'a>(hs: &'a [Hierarchy], name: &str) -> Option<&'a Hierarchy> {
    hs.iter().find(|h| h.name() == name)
}

/// Property files of a cgroup worth saving, in the order they must be
/// written back (cpuset cpus before mems before anything joins; v2 type
/// and controller enablement before limits; memory limit before memsw).
/// The freezer state is not here: it is applied after the tasks are back.
pub fn property_names(h: &Hierarchy, dir: &Path) -> Vec<String> {
    let mut names: Vec<&str> = Vec::new();
    if h.v2 {
        names.extend([
            "cgroup.type",
            "cgroup.subtree_control",
            "cgroup.max.depth",
            "cgroup.max.descendants",
            "cpuset.cpus",
            "cpuset.mems",
            "cpu.weight",
            "cpu.max",
            "memory.min",
            "memory.low",
            "memory.high",
            "memory.max",
            "memory.swap.max",
            "pids.max",
            "io.weight",
        ]);
    } else {
        for c in &h.controllers {
            names.extend(match c.as_str() {
                "cpuset" => &["cpuset.cpus", "cpuset.mems"][..],
                "cpu" => &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"][..],
                "memory" => &[
                    "memory.limit_in_bytes",
                    "memory.memsw.limit_in_bytes",
                    "memory.soft_limit_in_bytes",
                    "memory.swappiness",
                ][..],
                "devices" => &["devices.list"][..],
                "pids" => &["pids.max"][..],
                "blkio" => &["blkio.weight"][..],
                "net_cls" => &["net_cls.classid"][..],
                _ => &[][..],
            });
        }
    }
    let mut out: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    if h.v2 {
        // hugetlb.<size>.max, one per huge page size.
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut huge: Vec<String> = rd
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("hugetlb.") && n.ends_with(".max") && !n.contains("rsvd"))
                .collect();
            huge.sort();
            out.extend(huge);
        }
    }
    out
}

/// Every property name ckpt may find in an image (for validation): the
/// fixed names of [`property_names`] for every controller, the hugetlb
/// pattern, and the freezer files.
pub fn is_known_property(name: &str) -> bool {
    const FIXED: &[&str] = &[
        "cgroup.type",
        "cgroup.subtree_control",
        "cgroup.max.depth",
        "cgroup.max.descendants",
        "cgroup.freeze",
        "cpuset.cpus",
        "cpuset.mems",
        "cpu.weight",
        "cpu.max",
        "cpu.shares",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "memory.min",
        "memory.low",
        "memory.high",
        "memory.max",
        "memory.swap.max",
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.swappiness",
        "devices.list",
        "pids.max",
        "io.weight",
        "blkio.weight",
        "net_cls.classid",
        "freezer.state",
    ];
    FIXED.contains(&name)
        || (name.starts_with("hugetlb.")
            && name.ends_with(".max")
            && !name.contains('/')
            && name.len() < 40)
}

/// A cgroup path from an image is sane: absolute, no `.`/`..` component,
/// no NUL, no empty component.
pub fn check_path(path: &str) -> std::result::Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("cgroup path {path:?} is not absolute"));
    }
    if path.contains('\0') {
        return Err(format!("cgroup path {path:?} contains NUL"));
    }
    if path == "/" {
        return Ok(());
    }
    for c in path[1..].split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "cgroup path {path:?} has a bad component {c:?} (empty, . or ..)"
            ));
        }
    }
    Ok(())
}

/// A directory name of a `cgroup_dir_entry`: one or more components, no
/// `..`, no NUL.
pub fn check_dir_name(name: &str) -> std::result::Result<(), String> {
    check_path(&format!("/{}", name.trim_start_matches('/'))).and_then(|_| {
        if name.trim_matches('/').is_empty() {
            Err("empty cgroup directory name".into())
        } else {
            Ok(())
        }
    })
}

/// `--cgroup-root [controller:]/path`: `None` applies to every hierarchy
/// without its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    pub controller: Option<String>,
    pub path: String,
}

impl std::str::FromStr for CgroupRoot {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (controller, path) = match s.find(":/") {
            Some(0) => return Err(format!("{s:?}: empty controller before ':'")),
            Some(i) => (Some(s[..i].to_string()), &s[i + 1..]),
            None => (None, s),
        };
        check_path(path)?;
        Ok(CgroupRoot {
            controller,
            path: path.to_string(),
        })
    }
}

/// The new root for hierarchy `name` (an image controller name such as
/// `cpu,cpuacct`): a root naming any of its controllers, else the default
/// one.
pub fn root_for<'a>(roots: &'a [CgroupRoot], name: &str) -> Option<&'a str> {
    let ctls: Vec<&str> = name.split(',').collect();
    roots
        .iter()
        .find(|r| {
            r.controller.as_deref().is_some_and(|c| {
                c == name || ctls.contains(&c) || (c == "cgroup2" && name == V2_NAME)
            })
        })
        .or_else(|| roots.iter().find(|r| r.controller.is_none()))
        .map(|r| r.path.as_str())
}

/// Map a dumped path under the tree's cgroup `base` to the same place
/// under `new_root`. Paths outside `base` stay as they are.
pub fn map_path(path: &str, base: &str, new_root: Option<&str>) -> String {
    let Some(new_root) = new_root else {
        return path.to_string();
    };
    let rest = if base == "/" {
        Some(path)
    } else {
        path.strip_prefix(base)
            .filter(|r| r.is_empty() || r.starts_with('/'))
    };
    match rest {
        Some(rest) => {
            let joined = format!("{}{rest}", new_root.trim_end_matches('/'));
            match joined.trim_end_matches('/') {
                "" => "/".into(),
                j => j.to_string(),
            }
        }
        None => path.to_string(),
    }
}

/// The deepest cgroup that holds every one of `paths` (the tree's own
/// cgroup in that hierarchy).
pub fn common_ancestor<'a>(paths: impl IntoIterator<Item = &'a str>) -> String {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
        common = Some(match common {
            None => comps,
            Some(c) => c
                .iter()
                .zip(&comps)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    format!("/{}", common.unwrap_or_default().join("/"))
}

/// One rule of a v1 `devices.list`: `c 1:3 rwm`, `b *:* m`, `a *:* rwm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: String,
}

impl std::fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        write!(
            f,
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// Parse `devices.list` (one rule a line).
pub fn parse_devices_list(text: &str) -> std::result::Result<Vec<DeviceRule>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            let (Some(kind), Some(dev), Some(access), None) =
                (w.next(), w.next(), w.next(), w.next())
            else {
                return Err(format!(
                    "devices rule {l:?}: expected \"TYPE MAJOR:MINOR ACCESS\""
                ));
            };
            let kind = match kind {
                "a" | "b" | "c" => kind.chars().next().expect("one char"),
                _ => return Err(format!("devices rule {l:?}: type must be a, b or c")),
            };
            let (ma, mi) = dev
                .split_once(':')
                .ok_or_else(|| format!("devices rule {l:?}: expected MAJOR:MINOR"))?;
            let num = |s: &str| -> std::result::Result<Option<u32>, String> {
                if s == "*" {
                    Ok(None)
                } else {
                    s.parse()
                        .map(Some)
                        .map_err(|_| format!("devices rule {l:?}: bad number {s:?}"))
                }
            };
            if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
                return Err(format!("devices rule {l:?}: access must be of r, w, m"));
            }
            Ok(DeviceRule {
                kind,
                major: num(ma)?,
                minor: num(mi)?,
                access: access.to_string(),
            })
        })
        .collect()
}

/// v2 `cpu.max`: `max 100000` or `50000 100000` -> (quota, period).
pub fn parse_cpu_max(text: &str) -> std::result::Result<(Option<u64>, u64), String> {
    let mut w = text.split_whitespace();
    let quota = w.next().ok_or("cpu.max is empty")?;
    let period = w.next().unwrap_or("100000");
    let quota = match quota {
        "max" => None,
        q => Some(q.parse().map_err(|_| format!("cpu.max: bad quota {q:?}"))?),
    };
    let period = period
        .parse()
        .map_err(|_| format!("cpu.max: bad period {period:?}"))?;
    Ok((quota, period))
}

/// The v1 freezer's `freezer.state` or the v2 `cgroup.freeze` file of a
/// cgroup directory, whichever it has.
pub fn freezer_file(dir: &Path) -> Option<PathBuf> {
    ["freezer.state", "cgroup.freeze"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}

/// Whether a freezer file says frozen (v1 `FROZEN`/`FREEZING`, v2 `1`).
pub fn is_frozen_value(v: &str) -> bool {
    matches!(v.trim(), "FROZEN" | "FREEZING" | "1")
}

/// `ckpt check`: the mounted hierarchies, in a line.
pub fn probe() -> std::result::Result<String, String> {
    let hs = hierarchies().map_err(|e| e.to_string())?;
    if hs.is_empty() {
        return Err("no cgroup hierarchy is mounted".into());
    }
    let v1: Vec<String> = hs.iter().filter(|h| !h.v2).map(Hierarchy::name).collect();
    let mut parts = Vec::new();
    if !v1.is_empty() {
        parts.push(format!("v1: {}", v1.join(" ")));
    }
    if let Some(h) = hs.iter().find(|h| h.v2) {
        let ctls = std::fs::read_to_string(h.mount.join("cgroup.controllers")).unwrap_or_default();
        parts.push(format!(
            "cgroup2 at {} ({})",
            h.mount.display(),
            match ctls.trim() {
                "" => "no controllers",
                c => c,
            }
        ));
    }
    Ok(parts.join("; "))
}

pub fn read_prop(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches('\n').to_string())
        .map_err(|e| Error::io(path, "reading a cgroup file", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        let r = parse_devices_list("a *:* rwm\nc 1:3 rw\nb 8:* m\n").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].kind, 'a');
        assert_eq!(r[1].major, Some(1));
        assert_eq!(r[1].minor, Some(3));
        assert_eq!(r[2].minor, None);
        assert_eq!(r[1].to_string(), "c 1:3 rw");
        assert_eq!(r[0].to_string(), "a *:* rwm");
        assert!(parse_devices_list("x 1:3 rw").is_err());
        assert!(parse_devices_list("c 1-3 rw").is_err());
        assert!(parse_devices_list("c 1:3 rx").is_err());
        assert!(parse_devices_list("c 1:3").is_err());
        assert!(parse_devices_list("").unwrap().is_empty());
    }

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000").unwrap(), (None, 100000));
        assert_eq!(
            parse_cpu_max("50000 20000\n").unwrap(),
            (Some(50000), 20000)
        );
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("x 100").is_err());
    }

    #[test]
    fn cgroup_root_option() {
        let r: CgroupRoot = "/a/b".parse().unwrap();
        assert_eq!(r.controller, None);
        assert_eq!(r.path, "/a/b");
        let r: CgroupRoot = "cpu:/x".parse().unwrap();
        assert_eq!(r.controller.as_deref(), Some("cpu"));
        let r: CgroupRoot = "name=systemd:/x".parse().unwrap();
        assert_eq!(r.controller.as_deref(), Some("name=systemd"));
        assert!("cpu:x".parse::<CgroupRoot>().is_err());
        assert!("/a/../b".parse::<CgroupRoot>().is_err());
        assert!(":/a".parse::<CgroupRoot>().is_err());
        let roots = vec![
            "pids:/p".parse::<CgroupRoot>().unwrap(),
            "/d".parse().unwrap(),
        ];
        assert_eq!(root_for(&roots, "pids"), Some("/p"));
        assert_eq!(root_for(&roots, "cpu,cpuacct"), Some("/d"));
        assert_eq!(root_for(&roots[..1], "memory"), None);
    }

    #[test]
    fn mapping() {
        assert_eq!(map_path("/a/b", "/a", Some("/n")), "/n/b");
        assert_eq!(map_path("/a", "/a", Some("/n")), "/n");
        assert_eq!(map_path("/ab", "/a", Some("/n")), "/ab");
        assert_eq!(map_path("/a/b", "/a", None), "/a/b");
        assert_eq!(map_path("/a/b", "/", Some("/n/")), "/n/a/b");
        assert_eq!(map_path("/", "/", Some("/n")), "/n");
        assert_eq!(map_path("/a", "/a", Some("/")), "/");
        assert_eq!(common_ancestor(["/a/b/c", "/a/b", "/a/b/d"]), "/a/b");
        assert_eq!(common_ancestor(["/a/b", "/c"]), "/");
        assert_eq!(common_ancestor(["/x"]), "/x");
    }

    #[test]
    fn paths() {
        assert!(check_path("/").is_ok());
        assert!(check_path("/a/b c:d").is_ok());
        assert!(check_path("a").is_err());
        assert!(check_path("/a/../b").is_err());
        assert!(check_path("/a//b").is_err());
        assert!(check_path("/a\0").is_err());
        assert!(check_dir_name("a/b").is_ok());
        assert!(check_dir_name("..").is_err());
        assert!(check_dir_name("").is_err());
        assert!(is_known_property("hugetlb.2MB.max"));
        assert!(is_known_property("pids.max"));
        assert!(!is_known_property("release_agent"));
    }

    #[test]
    fn hierarchies_from_mountinfo() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    42 31 0:39 / /tmp rw - tmpfs tmpfs rw\n";
        let m = crate::proc::mountinfo::parse(text).unwrap();
        let known = vec!["cpu".to_string(), "cpuacct".to_string()];
        let h = parse_hierarchies(&m, &known);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].name(), "cpu,cpuacct");
        assert_eq!(h[1].name(), "name=systemd");
        assert!(h[2].v2);
        assert_eq!(h[2].name(), V2_NAME);
        assert_eq!(h[0].dir("/a/b"), PathBuf::from("/sys/fs/cgroup/cpu/a/b"));
        assert_eq!(h[0].dir("/"), PathBuf::from("/sys/fs/cgroup/cpu"));
    }
}
