//! A mount namespace of the tree's own (see dump/mntns.rs for what a
//! dump holds): the engine's thread unshares a new one before any
//! object or task exists, so it is a copy of the host's mounts as they
//! are now, and makes every mount private, as zdtm/lib/ns.c does; the
//! tree's /proc, an instance of its pid namespace, is mounted on /proc
//! by the first process inside that namespace (the driver,
//! restore/ns.rs), or by the engine itself when the tree has no pid
//! namespace of its own.
//!
//! The mounts the tree made itself are then made by the engine's thread
//! (`make`), once every other namespace is unshared (a sysfs or mqueue
//! is of the namespaces of its mounter), before any task exists and opens
//! a file through them. In three passes:
//! 1. in the order they were made, all private (so nothing propagates
//!    twice): a bind from an O_PATH fd of its source mount's root (the
//!    copies opened before any mount covers them), non-recursive, its
//!    children come after; a tmpfs with its superblock options, filled
//!    with tar(1) from its `tmpfs-dev-N.tar.gz.img` right away, while
//!    nothing covers it; sysfs, mqueue, cgroup anew; a block device from
//!    its source. A mount point missing on a tmpfs (tar leaves out what
//!    a mount covered) is made; a devpts is a new instance with its
//!    options, whose ptys the terminals make (restore/tty.rs); in a tree
//!    with a user namespace a devpts or tmpfs is mounted by a process in
//!    that namespace, whose it then is (`mount_in_userns`);
//! 2. the per-mount flags (ro, nosuid, nodev, noexec, atime), once every
//!    child exists, and a read-only superblock;
//! 3. propagation, as CRIU does: MOVE_MOUNT_SET_GROUP from a member of
//!    the peer group (or of the master's, then MS_SLAVE) whose root holds
//!    the mount's root, else MS_SHARED for a group's first; MS_UNBINDABLE.
//!
//! A pivot_root'ed namespace (`tree_root` on its first mount) has no
//! copies: its root is a tmpfs filled from its tar, or a bind of `--root
//! DIR`, or else of the host directory it was at the dump (`host_path`,
//! refused when gone); external binds come from `--external
//! mnt[KEY]:PATH`. Its mounts are made under a temporary directory of the
//! host's, then the engine's thread pivot_roots into it with the old root
//! stacked on top (`pivot_root(".", ".")`) and chroots back into that old
//! root: the engine, the driver and the tasks up to their files still see
//! the host (the images, /proc); each task enters the tree's root
//! (`enter_tree_root`) before it opens its files by the tree's paths, and
//! the driver mounts the tree's /proc there too. Once the tree is restored
//! the engine moves to a detached copy of the old root and unmounts the
//! old root from the namespace (`detach_old_root`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::mount::{mount, MsFlags};

use crate::error::{Error, Pid, Result};
use crate::images::pb;

/// A new mount namespace for the calling thread, every mount in it made
/// `propagation` (MS_REC): MS_PRIVATE for the tree's own namespace, which
/// must not see the host's later mounts; MS_SLAVE for the driver's private
/// /proc, which only needs to keep its own mount from reaching the host.
/// The engine calls it single-threaded (unshare of a mount namespace needs
/// a file system context of its own); `who` names the caller in errors.
pub fn unshare_mounts(root: Pid, propagation: MsFlags, who: &str) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::sys(root, format!("{who}: unshare of a new mount namespace"), e))?;
    set_propagation(root, propagation, who)
}

/// `propagation` for every mount of the calling thread's mount namespace.
pub fn set_propagation(root: Pid, propagation: MsFlags, who: &str) -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | propagation,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            root,
            format!("{who}: setting the propagation of its new mount namespace"),
            e,
        )
    })
}

/// A new proc instance of the caller's pid namespace on /proc.
pub fn mount_proc() -> nix::Result<()> {
    mount_proc_at(Path::new("/proc"))
}

/// A new proc instance of the caller's pid namespace on `at`.
pub fn mount_proc_at(at: &Path) -> nix::Result<()> {
    mount(
        Some("proc"),
        at,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}

/// How the restore remakes a mount the tree made (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Make {
    /// A bind of the mount at this index of the image, `root` below its root.
    Bind(usize),
    /// A new tmpfs, filled from tmpfs-dev-N.tar.gz.img.
    Tmpfs,
    /// A new instance of sysfs, mqueue or cgroup.
    Fresh,
    /// The block device in `source` mounted again.
    Device,
    /// A bind of a host directory (a pivot_root'ed root, an external
    /// mount), its path resolved by `Outside`.
    Host,
}

/// What the restore's options say is outside the tree: `--root DIR` and
/// the `--external mnt[KEY]:PATH` pairs.
#[derive(Debug, Default, Clone)]
pub struct Outside {
    pub root: Option<PathBuf>,
    pub external: Vec<(String, PathBuf)>,
}

impl Outside {
    pub fn new(root: Option<PathBuf>, external: &[crate::external::External]) -> Result<Outside> {
        let external = crate::dump::mntns::externals(external)?
            .into_iter()
            .map(|(k, p)| (k, PathBuf::from(p)))
            .collect();
        Ok(Outside { root, external })
    }
}

/// The host directory a `Make::Host` mount is bound from: `--root` or
/// the dumped path for the root, `--external` for an external mount.
fn host_dir(m: &pb::MntEntry, outside: &Outside) -> std::result::Result<PathBuf, String> {
    if m.tree_root == Some(true) {
        if let Some(r) = &outside.root {
            return Ok(r.clone());
        }
        return match &m.host_path {
            Some(p) if Path::new(p).is_dir() => Ok(PathBuf::from(p)),
            Some(p) => Err(format!(
                "the tree's root was the host directory {p}, which is not there now; give its root file system with --root DIR"
            )),
            None => Err("the tree's root has no host path; give its root file system with --root DIR".into()),
        };
    }
    let key = m.ext_key.as_deref().unwrap_or_default();
    match outside.external.iter().find(|(k, _)| k == key) {
        Some((_, p)) if p.exists() => Ok(p.clone()),
        Some((_, p)) => Err(format!("--external mnt[{key}]:{}: no such file or directory", p.display())),
        None => Err(format!(
            "it is an external mount (key {key}); say where it is now with --external mnt[{key}]:PATH"
        )),
    }
}

/// The mounts of a namespace image: the host's copies (marked), the
/// index of its own /proc, and the tree's own mounts, before or after
/// it (dump/mntns.rs), with how each is made.
#[derive(Debug)]
struct Plan {
    /// By index in the image: how the tree's own are made (None: a
    /// copy, or the /proc).
    make: Vec<Option<Make>>,
    /// It pivot_root'ed (module doc).
    pivoted: bool,
}

/// Whether mountpoints-N.img is of a namespace that pivot_root'ed.
fn is_pivoted(mounts: &[pb::MntEntry]) -> bool {
    mounts.first().is_some_and(|m| m.tree_root == Some(true))
}

const FS_PROC: u32 = 1;
const FS_TMPFS: u32 = 5;
/// sysfs, devpts, cgroup, mqueue, cgroup2 (CRIU's codes): mounted anew,
/// empty (a devpts's ptys are the terminals', restore/tty.rs).
const FS_FRESH: &[u32] = &[2, FS_DEVPTS, 12, 14, 23];
pub const FS_DEVPTS: u32 = 6;

fn describe(m: &pb::MntEntry) -> String {
    format!(
        "mount {} on {} ({} {} root {})",
        m.mnt_id,
        m.mountpoint,
        m.fsname
            .clone()
            .unwrap_or_else(|| format!("fstype {}", m.fstype)),
        m.source,
        m.root
    )
}

/// Builds the plan of mountpoints-N.img (`path`) and checks it against
/// what the restore can make: the tmpfs tars are in `dir`, the block
/// devices on this machine.
fn plan(
    path: &Path,
    dir: &Path,
    mounts: &[pb::MntEntry],
    outside: Option<&Outside>,
) -> Result<Plan> {
    let bad = |why: String| Error::Image(crate::images::ImageError::invalid(path, why));
    let pivoted = is_pivoted(mounts);
    // Images before the copies were marked: all but the last are copies.
    let marked = !pivoted && mounts.iter().any(|m| m.ext_mount == Some(true));
    let proc_at = match marked || pivoted {
        true => mounts.iter().position(|m| {
            m.ext_mount != Some(true) && m.fstype == FS_PROC && m.mountpoint == "/proc"
        }),
        false => mounts
            .len()
            .checked_sub(1)
            .filter(|&l| mounts[l].fstype == FS_PROC && mounts[l].mountpoint == "/proc"),
    }
    .ok_or_else(|| bad("no /proc of the namespace's own".into()))?;
    let mut make = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let no = |why: &str| bad(format!("{}: {why}", describe(m)));
        if pivoted && (i == 0 || m.ext_mount == Some(true)) {
            if i > 0 && m.ext_key.is_none() {
                return Err(no("an external mount without a key"));
            }
            if m.tree_root == Some(true) && m.mountpoint != "/" {
                return Err(no("the tree's root is not on /"));
            }
            let tmpfs_root = i == 0 && m.fstype == FS_TMPFS && m.host_path.is_none();
            let how = match tmpfs_root && outside.is_none_or(|o| o.root.is_none()) {
                true => Make::Tmpfs,
                false => Make::Host,
            };
            if how == Make::Tmpfs {
                let tar = dir.join(crate::dump::mntns::tmpfs_image(m.root_dev));
                if !tar.is_file() {
                    return Err(no(&format!(
                        "{} is missing: the tmpfs's contents",
                        tar.display()
                    )));
                }
            } else if let Some(o) = outside {
                host_dir(m, o).map_err(|why| {
                    Error::unsupported(0, format!("mnt namespace: {}", describe(m)), why)
                })?;
            }
            make.push(Some(how));
            continue;
        }
        if m.tree_root == Some(true) {
            return Err(no("the tree's root is not the first mount"));
        }
        if m.ext_mount == Some(true) && i > proc_at {
            return Err(no(
                "a copy of the host's mounts after the namespace's /proc",
            ));
        }
        if (!marked && !pivoted && i < proc_at) || m.ext_mount == Some(true) || i == proc_at {
            make.push(None);
            continue;
        }
        let point = Path::new(&m.mountpoint);
        if !point.is_absolute()
            || point.starts_with("/proc")
            || Path::new("/proc").starts_with(point)
        {
            return Err(no(
                "its mount point is not absolute or covers or lies below /proc",
            ));
        }
        if !mounts[..i].iter().any(|o| o.mnt_id == m.parent_mnt_id) {
            return Err(no("its parent mount is not before it"));
        }
        if let Some(g) = m.master_id {
            if !mounts.iter().any(|o| o.shared_id == Some(g)) {
                return Err(no(&format!(
                    "its master peer group {g} has no mount in the namespace"
                )));
            }
        }
        let root = Path::new(&m.root);
        let source = mounts[..i]
            .iter()
            .rposition(|s| s.root_dev == m.root_dev && root.starts_with(&s.root));
        let how = match source {
            Some(s) if s == proc_at || mounts[s].fstype == FS_PROC => {
                return Err(no("a bind mount of a proc, which the restore mounts in the tree's pid namespace later"))
            }
            Some(s) => Make::Bind(s),
            None if m.root != "/" => return Err(no("a bind mount whose source mount is not in the image")),
            None if m.fstype == FS_TMPFS => {
                let tar = dir.join(crate::dump::mntns::tmpfs_image(m.root_dev));
                if !tar.is_file() {
                    return Err(no(&format!("{} is missing: the tmpfs's contents", tar.display())));
                }
                Make::Tmpfs
            }
            None if FS_FRESH.contains(&m.fstype) => Make::Fresh,
            None if m.fstype == FS_PROC => {
                return Err(no("a second proc of the namespace's own is not supported"))
            }
            None => {
                use std::os::unix::fs::FileTypeExt;
                let dev = std::fs::metadata(&m.source).map(|md| md.file_type().is_block_device());
                if !m.source.starts_with('/') || !matches!(dev, Ok(true)) {
                    return Err(no(&format!(
                        "its source {} is not a block device on this machine",
                        m.source
                    )));
                }
                Make::Device
            }
        };
        make.push(Some(how));
    }
    Ok(Plan { make, pivoted })
}

/// The devpts instance `mnt_id` of mountpoints-N.img that the restore
/// mounts anew (one the tree mounted, not a copy of the host's), whose
/// ptys the terminals open through it: its mount point as the tree sees it.
pub fn own_devpts(mounts: &[pb::MntEntry], mnt_id: u32) -> Option<&str> {
    mounts
        .iter()
        .find(|m| {
            m.mnt_id == mnt_id
                && m.fstype == FS_DEVPTS
                && m.root == "/"
                && m.ext_mount != Some(true)
        })
        .map(|m| m.mountpoint.as_str())
}

/// Where the tree opened the ptmx of its devpts instance `inst` when it
/// went through mount `via`: the instance's own mount (its `ptmx`), or a
/// bind of that ptmx (a container's /dev/ptmx). None when `via` is
/// neither, or not a mount the restore makes.
pub fn ptmx_through(mounts: &[pb::MntEntry], inst: u32, via: u32) -> Option<String> {
    let at = own_devpts(mounts, inst)?;
    if via == inst {
        return Some(format!("{}/ptmx", at.trim_end_matches('/')));
    }
    let dev = mounts.iter().find(|m| m.mnt_id == inst)?.root_dev;
    mounts
        .iter()
        .find(|m| {
            m.mnt_id == via
                && m.fstype == FS_DEVPTS
                && m.root_dev == dev
                && m.root == "/ptmx"
                && m.ext_mount != Some(true)
        })
        .map(|m| m.mountpoint.clone())
}

/// Checks mountpoints-N.img (`path`, tars in `dir`) against what the
/// restore makes, before any process exists; the host directories it
/// binds once the options are known (`check_outside`).
pub fn validate(path: &Path, dir: &Path, mounts: &[pb::MntEntry]) -> Result<()> {
    plan(path, dir, mounts, None).map(drop)
}

/// Checks the host directories a pivot_root'ed tree's mounts are bound
/// from (`--root`, the dumped root's path, `--external`), before any
/// process exists.
pub fn check_outside(
    root: Pid,
    dir: &Path,
    mounts: &[pb::MntEntry],
    outside: &Outside,
) -> Result<()> {
    let p = plan(&dir.join("mountpoints.img"), dir, mounts, Some(outside))
        .map_err(|e| e.for_pid(root, "restore"))?;
    if !p.pivoted && (outside.root.is_some() || !outside.external.is_empty()) {
        return Err(Error::Usage(
            "--root and --external mnt[...] apply to a tree that pivot_root'ed into a root of its own; this one did not".into(),
        ));
    }
    Ok(())
}

/// The per-mount MS_* flags a remount of a mount takes.
const MNT_FLAGS: u32 = (libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME) as u32;

/// Superblock options without ro/rw, which the flags carry.
fn sb_data(m: &pb::MntEntry) -> String {
    m.options
        .split(',')
        .filter(|o| !o.is_empty() && *o != "ro" && *o != "rw")
        .collect::<Vec<_>>()
        .join(",")
}

/// The file system type to mount: CRIU's code's name (its enum names
/// are the kernel's, upper-cased), `fsname` for one without a code.
fn fs_name(m: &pb::MntEntry) -> Option<String> {
    match pb::Fstype::try_from(m.fstype as i32) {
        Ok(pb::Fstype::Unsupported) | Err(_) => m.fsname.clone(),
        Ok(f) => Some(f.as_str_name().to_lowercase()),
    }
}

/// An O_PATH fd of what `path` names now.
fn open_path(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
}

fn fd_path(f: &std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", f.as_raw_fd())
}

/// Makes the tree's own mounts of `mounts` (mountpoints-N.img, tars in
/// `dir`) in the calling thread's new mount namespace, in the order they
/// were made, all private; then sets their per-mount flags and their
/// propagation (module doc). `root` names the tree in errors.
pub fn make(
    root: Pid,
    dir: &Path,
    mounts: &[pb::MntEntry],
    outside: &Outside,
    pid_ns: bool,
    owner: Option<&pb::UsernsEntry>,
) -> Result<()> {
    let img = dir.join("mountpoints.img");
    let plan = plan(&img, dir, mounts, Some(outside))?;
    // The copies of the host's mounts are the tree's only when it did not
    // pivot_root away from them.
    if !plan.pivoted {
        detach_new_copies(root, mounts)?;
    }
    // A pivot_root'ed tree's mounts are made under `base` first.
    let base = match plan.pivoted {
        true => Some(new_root_dir(root)?),
        false => None,
    };
    let at = |m: &pb::MntEntry| -> PathBuf {
        match &base {
            Some(b) => b.join(m.mountpoint.trim_start_matches('/')),
            None => PathBuf::from(&m.mountpoint),
        }
    };
    let own: Vec<(usize, Make)> = plan
        .make
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.map(|h| (i, h)))
        .collect();
    if own.is_empty() {
        return Ok(());
    }
    let err = |m: &pb::MntEntry, what: &str, e: nix::errno::Errno| {
        Error::sys(root, format!("mnt namespace: {}: {what}", describe(m)), e)
    };
    let ioerr = |m: &pb::MntEntry, what: &str, e: std::io::Error| {
        Error::io(
            &m.mountpoint,
            format!("pid {root}: mnt namespace: {}: {what}", describe(m)),
            e,
        )
    };
    // O_PATH fds of each mount's root, by index: the copies a bind takes
    // from now (before any mount of the tree's covers them), the tree's as
    // they are made.
    let mut fds: Vec<Option<std::fs::File>> = (0..mounts.len()).map(|_| None).collect();
    for &(_, how) in &own {
        if let Make::Bind(s) = how {
            if plan.make[s].is_none() && fds[s].is_none() {
                let m = &mounts[s];
                fds[s] = Some(
                    open_path(Path::new(&m.mountpoint))
                        .map_err(|e| ioerr(m, "opening the host's copy", e))?,
                );
            }
        }
    }
    for &(i, how) in &own {
        let m = &mounts[i];
        let target_buf = at(m);
        let target = target_buf.as_path();
        let source = match how {
            Make::Host => {
                let from = host_dir(m, outside).map_err(|why| {
                    Error::unsupported(root, format!("mnt namespace: {}", describe(m)), why)
                })?;
                Some(open_path(&from).map_err(|e| ioerr(m, "opening its host directory", e))?)
            }
            Make::Bind(s) => {
                let from = fds[s].as_ref().expect("source mounts are opened before");
                let rel = Path::new(&m.root)
                    .strip_prefix(&mounts[s].root)
                    .expect("checked by plan");
                let src = if rel.as_os_str().is_empty() {
                    from.try_clone()
                        .map_err(|e| ioerr(m, "dup of its source", e))?
                } else {
                    open_path(&Path::new(&fd_path(from)).join(rel))
                        .map_err(|e| ioerr(m, "opening its source", e))?
                };
                Some(src)
            }
            _ => None,
        };
        if std::fs::symlink_metadata(target).is_err() {
            // A mount point on a tmpfs of the tree: tar leaves out what
            // other file systems covered.
            let is_dir = source
                .as_ref()
                .is_none_or(|s| std::fs::metadata(fd_path(s)).is_ok_and(|md| md.is_dir()));
            let r = match is_dir {
                true => std::fs::create_dir(target),
                false => std::fs::File::create(target).map(drop),
            };
            r.map_err(|e| ioerr(m, "creating its mount point", e))?;
        }
        let r = match (how, &source) {
            _ if owner.is_some() && in_userns(how, m) => {
                mount_in_userns(root, m, target, owner.expect("checked"))?;
                Ok(())
            }
            (Make::Bind(_) | Make::Host, Some(src)) => mount(
                Some(fd_path(src).as_str()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
            _ => mount(
                Some(m.source.as_str()),
                target,
                fs_name(m).as_deref(),
                MsFlags::empty(),
                Some(sb_data(m).as_str()),
            ),
        };
        r.map_err(|e| err(m, "mount", e))?;
        if how == Make::Tmpfs {
            let ids = match owner {
                Some(u) => filler_ids(u).map_err(|why| {
                    Error::task(
                        root,
                        format!("mnt namespace: {}", describe(m)),
                        format!("filling it in the tree's user namespace: {why}"),
                    )
                })?,
                None => None,
            };
            fill_tmpfs(root, dir, m, target, ids)?;
        }
        fds[i] = Some(open_path(target).map_err(|e| ioerr(m, "opening it once mounted", e))?);
        debug!("pid {root}: mnt namespace: made {} ({how:?})", describe(m));
    }
    // Flags once every child exists: a read-only parent takes no mount
    // point or tar.
    for &(i, how) in &own {
        let m = &mounts[i];
        let at = fd_path(fds[i].as_ref().expect("made above"));
        let flags = MsFlags::from_bits_truncate((m.flags & MNT_FLAGS) as _);
        mount(
            None::<&str>,
            at.as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
            None::<&str>,
        )
        .map_err(|e| err(m, "remount with its flags", e))?;
        let sb_ro = m.sb_flags.unwrap_or(0) & libc::MS_RDONLY as u32 != 0;
        if sb_ro && !matches!(how, Make::Bind(_) | Make::Host) {
            mount(
                None::<&str>,
                at.as_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                Some(sb_data(m).as_str()),
            )
            .map_err(|e| err(m, "remount of its superblock read-only", e))?;
        }
    }
    let own: Vec<usize> = own.iter().map(|&(i, _)| i).collect();
    propagation(root, mounts, &own, &fds)?;
    match base {
        Some(b) => pivot(root, &b, pid_ns),
        None => Ok(()),
    }
}

/// Whether mount `m` (made `how`) of a tree with a user namespace of its
/// own is made in that namespace: a devpts or a tmpfs, whose superblock
/// belongs to the user namespace of its mounter (the others' to that of
/// the namespace they show: proc, sysfs, mqueue, cgroup).
fn in_userns(how: Make, m: &pb::MntEntry) -> bool {
    match how {
        Make::Fresh => m.fstype == FS_DEVPTS,
        Make::Tmpfs => true,
        _ => false,
    }
}

/// The host's ids tar(1) fills a tmpfs of user namespace `u` as: None
/// when the engine's own (0:0) are mapped there; else those of the
/// namespace's root, or of the first ids it maps (an unprivileged
/// container's shifted root). A file system of a user namespace takes no
/// file from a creator it does not map.
fn filler_ids(u: &pb::UsernsEntry) -> std::result::Result<Option<(u32, u32)>, String> {
    use crate::dump::userns::mapped_inside;
    if mapped_inside(&u.uid_map, 0).is_some() && mapped_inside(&u.gid_map, 0).is_some() {
        return Ok(None);
    }
    let host = |map: &[pb::UidGidExtent], kind: &str| {
        map.iter()
            .find(|e| e.first == 0)
            .or_else(|| map.first())
            .map(|e| e.lower_first)
            .ok_or_else(|| format!("the namespace maps no {kind}"))
    };
    Ok(Some((host(&u.uid_map, "uid")?, host(&u.gid_map, "gid")?)))
}

/// A devpts instance or a tmpfs of a tree with a user namespace of its
/// own is mounted by a process in that namespace, forked from the
/// engine's thread (so in the tree's mount namespace): it then belongs to
/// the namespace as the container's did, whose root owns devpts's ptmx
/// and may remount either. Their uid= and gid= options, which mountinfo
/// shows as the host's ids (`devpts_show_options`,
/// `shmem_show_options`), are given as the namespace's.
fn mount_in_userns(root: Pid, m: &pb::MntEntry, target: &Path, u: &pb::UsernsEntry) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let what = |why: String| {
        Error::task(
            root,
            format!("mnt namespace: {}", describe(m)),
            format!("mounting it in the tree's user namespace: {why}"),
        )
    };
    let data = options_inside(&sb_data(m), u).map_err(what)?;
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| what("a NUL byte in its source, path or options".into()))
    };
    let fstype = fs_name(m).unwrap_or_default();
    let (src, at, fstype, data) = (
        cstr(m.source.as_bytes())?,
        cstr(target.as_os_str().as_bytes())?,
        cstr(fstype.as_bytes())?,
        cstr(data.as_bytes())?,
    );
    let code = super::userns::with_tree_user(|user| {
        let pid = crate::sys::fork_restore_child()?;
        if pid == 0 {
            // Raw system calls only (fork_restore_child's contract).
            if nix::sched::setns(user, nix::sched::CloneFlags::CLONE_NEWUSER).is_err() {
                crate::sys::process::exit_now(SETNS_FAILED);
            }
            // As the namespace's root, which owns what the mount makes
            // with its mounter's ids (devpts's ptmx, a tmpfs's root
            // without uid=): the engine's may not be mapped there (an
            // unprivileged container's shifted ids). Where 0 is not
            // mapped either, it stays as it is.
            crate::sys::process::set_ids(&[0; 3], &[0; 3], &[]);
            let r = mount(
                Some(src.as_c_str()),
                at.as_c_str(),
                Some(fstype.as_c_str()),
                MsFlags::empty(),
                Some(data.as_c_str()),
            );
            crate::sys::process::exit_now(r.map_or_else(|e| e as i32, |()| 0));
        }
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)? {
            nix::sys::wait::WaitStatus::Exited(_, code) => Ok(code),
            _ => Ok(-1),
        }
    })
    .ok_or_else(|| what("the tree's user namespace is not there".into()))?
    .map_err(|e: nix::errno::Errno| {
        Error::sys(
            root,
            format!("mnt namespace: {}: the process that mounts it", describe(m)),
            e,
        )
    })?;
    match code {
        0 => Ok(()),
        SETNS_FAILED => Err(what("its process could not enter the namespace".into())),
        c if c > 0 => Err(Error::sys(
            root,
            format!(
                "mnt namespace: {}: mount in the tree's user namespace",
                describe(m)
            ),
            nix::errno::Errno::from_raw(c),
        )),
        _ => Err(what("its process was killed".into())),
    }
}

/// The exit code of `mount_in_userns`'s process when setns fails
/// (a mount's errno is below it).
const SETNS_FAILED: i32 = 200;

/// A devpts's or tmpfs's options with their uid= and gid= as user
/// namespace `u` sees them (mountinfo shows the host's).
fn options_inside(data: &str, u: &pb::UsernsEntry) -> std::result::Result<String, String> {
    data.split(',')
        .filter(|o| !o.is_empty())
        .map(|o| {
            let (map, key) = match o.split_once('=') {
                Some(("uid", v)) => (&u.uid_map, ("uid", v)),
                Some(("gid", v)) => (&u.gid_map, ("gid", v)),
                _ => return Ok(o.to_string()),
            };
            let id: u32 = key
                .1
                .parse()
                .map_err(|_| format!("option {o}: not an id"))?;
            crate::dump::userns::mapped_inside(map, id)
                .map(|i| format!("{}={i}", key.0))
                .ok_or_else(|| format!("option {o}: {} {id} is not mapped in the namespace", key.0))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(|v| v.join(","))
}

/// The tree's root, the number of an O_PATH fd each task enters
/// (`enter_tree_root`, read after fork without a lock); -1 when the tree
/// did not pivot_root.
static TREE_ROOT: AtomicI32 = AtomicI32::new(-1);
/// The fds of the tree's root and of the old root the engine went back
/// into after the pivot_root, kept until `detach_old_root`.
static ROOTS: std::sync::Mutex<Option<(OwnedFd, OwnedFd)>> = std::sync::Mutex::new(None);

/// A new empty directory of the host's for a pivot_root'ed tree's root
/// (removed once pivot_root moved the mount away from it).
fn new_root_dir(root: Pid) -> Result<PathBuf> {
    let d = PathBuf::from(format!("/tmp/.ckpt-root-{}", std::process::id()));
    let _ = std::fs::remove_dir(&d);
    std::fs::create_dir(&d).map_err(|e| {
        Error::io(
            &d,
            format!("pid {root}: mnt namespace: the directory its root is built in"),
            e,
        )
    })?;
    Ok(d)
}

/// pivot_root into `base` with the old root stacked on top, then back
/// into the old root (module doc); the tree's root is kept in TREE_ROOT.
fn pivot(root: Pid, base: &Path, pid_ns: bool) -> Result<()> {
    let sys = |what: &str, e: nix::errno::Errno| {
        Error::sys(
            root,
            format!(
                "mnt namespace: {what} (entering its root {})",
                base.display()
            ),
            e,
        )
    };
    let io = |what: &str, e: std::io::Error| {
        Error::io(base, format!("pid {root}: mnt namespace: {what}"), e)
    };
    if !pid_ns {
        // No driver in a pid namespace of the tree's to mount it.
        mount_proc_at(&base.join("proc")).map_err(|e| sys("mount of its /proc", e))?;
    }
    let cwd = std::env::current_dir().map_err(|e| io("the engine's cwd", e))?;
    let old = open_path(Path::new("/")).map_err(|e| io("opening the old root", e))?;
    nix::unistd::chdir(base).map_err(|e| sys("chdir", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| sys("pivot_root", e))?;
    let new = open_path(Path::new(".")).map_err(|e| io("opening the new root", e))?;
    nix::unistd::fchdir(old.as_raw_fd()).map_err(|e| sys("fchdir to the old root", e))?;
    nix::unistd::chroot(".").map_err(|e| sys("chroot back into the old root", e))?;
    nix::unistd::chdir(&cwd).map_err(|e| sys("chdir back to the engine's cwd", e))?;
    // The mount moved away from it: an empty directory of the host's.
    std::fs::remove_dir(base).map_err(|e| io("removing the directory it was built in", e))?;
    TREE_ROOT.store(new.as_raw_fd(), Ordering::Relaxed);
    *ROOTS.lock().unwrap_or_else(|p| p.into_inner()) = Some((new.into(), old.into()));
    debug!("pid {root}: mnt namespace: pivot_root'ed into its root");
    Ok(())
}

/// The tree's root as a path the caller can name (its fd), when the tree
/// pivot_root'ed.
pub fn tree_root_path() -> Option<String> {
    let fd = TREE_ROOT.load(Ordering::Relaxed);
    (fd >= 0).then(|| format!("/proc/self/fd/{fd}"))
}

/// Where the engine finds the tree's `path` (absolute, as the tree names
/// it): through the tree's root when it pivot_root'ed, before the
/// driver's /proc covers the engine's (the engine plans the tree's files
/// before that).
pub fn in_tree(path: &str) -> PathBuf {
    match tree_root_path() {
        Some(r) => Path::new(&r).join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

/// In the init of the tree's pid namespace, first thing: a tree that
/// pivot_root'ed gets its /proc (an instance of that namespace) in its
/// root before any task enters the root (the driver's /proc, mounted
/// at the same time, is on the old root's). Once: a nested init finds it.
pub fn mount_tree_proc() -> nix::Result<()> {
    let fd = TREE_ROOT.load(Ordering::Relaxed);
    if fd < 0 || nix::unistd::getpid().as_raw() != 1 {
        return Ok(());
    }
    let at = PathBuf::from(format!("/proc/self/fd/{fd}/proc"));
    let is_proc = nix::sys::statfs::statfs(&at)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
    match is_proc {
        true => Ok(()),
        false => mount_proc_at(&at),
    }
}

/// In a task being restored, before it opens its files by the tree's
/// paths: enter the tree's root when it pivot_root'ed (module doc).
pub fn enter_tree_root() -> nix::Result<()> {
    let fd = TREE_ROOT.load(Ordering::Relaxed);
    if fd < 0 {
        return Ok(());
    }
    nix::unistd::fchdir(fd)?;
    nix::unistd::chroot(".")
}

/// Once the tree is restored: the engine moves into a detached copy of
/// the old root (the host's view, its /proc the host's) and unmounts the
/// old root from the tree's namespace, which then holds the tree's
/// mounts alone.
pub fn detach_old_root(root: Pid) -> Result<()> {
    let Some((_tree, old)) = ROOTS.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return Ok(());
    };
    TREE_ROOT.store(-1, Ordering::Relaxed);
    let sys = |what: &str, e: nix::errno::Errno| {
        Error::sys(
            root,
            format!("mnt namespace: {what} (leaving the old root)"),
            e,
        )
    };
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io(".", format!("pid {root}: the engine's cwd"), e))?;
    // The driver's mount of the tree's /proc over the old root's: the
    // engine, outside that pid namespace, has no /proc/self in it.
    if !Path::new("/proc/self").exists() {
        nix::mount::umount2("/proc", nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| sys("unmount of the tree's /proc from the old root", e))?;
    }
    let copy = crate::sys::open_tree_clone(std::os::fd::AsFd::as_fd(&old), true)
        .map_err(|e| sys("open_tree of a copy of it", e))?;
    nix::mount::umount2("/", nix::mount::MntFlags::MNT_DETACH).map_err(|e| sys("unmount", e))?;
    nix::unistd::fchdir(copy.as_raw_fd()).map_err(|e| sys("fchdir to its copy", e))?;
    nix::unistd::chroot(".").map_err(|e| sys("chroot into its copy", e))?;
    nix::unistd::chdir(&cwd).map_err(|e| sys("chdir back to the engine's cwd", e))?;
    debug!("pid {root}: mnt namespace: its old root unmounted");
    Ok(())
}

/// Extracts tmpfs-dev-N.tar.gz.img into the tmpfs just mounted at `m`'s
/// mount point (nothing covers it yet), as the host's `ids` when given
/// ([`filler_ids`]).
fn fill_tmpfs(
    root: Pid,
    dir: &Path,
    m: &pb::MntEntry,
    target: &Path,
    ids: Option<(u32, u32)>,
) -> Result<()> {
    let tar = dir.join(crate::dump::mntns::tmpfs_image(m.root_dev));
    let input = std::fs::File::open(&tar).map_err(|e| {
        Error::io(
            &tar,
            format!("pid {root}: the contents of {}", describe(m)),
            e,
        )
    })?;
    let mut cmd = std::process::Command::new("tar");
    cmd.args([
        "--extract",
        "--gzip",
        "--no-unquote",
        "--no-wildcards",
        "--numeric-owner",
        "--same-owner",
        "--preserve-permissions",
        "--directory",
    ])
    .arg(target)
    .stdin(input);
    if let Some((uid, gid)) = ids {
        crate::sys::process::run_as_with_file_caps(&mut cmd, uid, gid);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::io("tar", format!("pid {root}: filling {}", describe(m)), e))?;
    if !out.status.success() {
        return Err(Error::Image(crate::images::ImageError::invalid(
            &tar,
            format!(
                "tar could not extract it into {} ({}): {}",
                describe(m),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )));
    }
    Ok(())
}

/// Peer groups, masters and unbindable mounts of the tree's own mounts
/// (`own`, indexes in `mounts`; `fds` their roots). A mount joins a peer group or
/// its master's through a member whose root holds its own
/// (MOVE_MOUNT_SET_GROUP, which takes only private mounts), so members
/// are taken widest root first, and a slave waits for its master group.
fn propagation(
    root: Pid,
    mounts: &[pb::MntEntry],
    own: &[usize],
    fds: &[Option<std::fs::File>],
) -> Result<()> {
    use std::os::fd::AsFd;
    let mut pending = own.to_vec();
    pending.sort_by_key(|&i| Path::new(&mounts[i].root).components().count());
    // Mounts whose propagation is set, and are shared.
    let mut done: Vec<usize> = Vec::new();
    let member = |done: &[usize], group: u32, m: &pb::MntEntry| {
        done.iter().copied().find(|&d| {
            mounts[d].shared_id == Some(group)
                && mounts[d].root_dev == m.root_dev
                && Path::new(&m.root).starts_with(&mounts[d].root)
        })
    };
    let fd = |i: usize| fds[i].as_ref().expect("made").as_fd();
    let set = |i: usize, flag: MsFlags, what: &str| {
        mount(
            None::<&str>,
            fd_path(fds[i].as_ref().expect("made")).as_str(),
            None::<&str>,
            flag,
            None::<&str>,
        )
        .map_err(|e| {
            Error::sys(
                root,
                format!("mnt namespace: {}: {what}", describe(&mounts[i])),
                e,
            )
        })
    };
    let join = |from: usize, to: usize| {
        crate::sys::move_mount_set_group(fd(from), fd(to)).map_err(|e| {
            Error::sys(
                root,
                format!(
                    "mnt namespace: {}: joining the peer group of {}",
                    describe(&mounts[to]),
                    describe(&mounts[from])
                ),
                e,
            )
        })
    };
    while !pending.is_empty() {
        let before = pending.len();
        let mut left = Vec::new();
        for i in pending {
            let m = &mounts[i];
            if let Some(peer) = m.shared_id.and_then(|g| member(&done, g, m)) {
                join(peer, i)?;
            } else if let Some(g) = m.master_id {
                let Some(master) = member(&done, g, m) else {
                    left.push(i);
                    continue;
                };
                join(master, i)?;
                set(i, MsFlags::MS_SLAVE, "making it a slave")?;
                if m.shared_id.is_some() {
                    set(i, MsFlags::MS_SHARED, "making it shared")?;
                }
            } else if m.shared_id.is_some() {
                set(i, MsFlags::MS_SHARED, "making it shared")?;
            }
            if m.flags & libc::MS_UNBINDABLE as u32 != 0 {
                set(i, MsFlags::MS_UNBINDABLE, "making it unbindable")?;
            }
            if m.shared_id.is_some() {
                done.push(i);
            }
        }
        if left.len() == before {
            let m = &mounts[left[0]];
            return Err(Error::unsupported(
                root,
                format!("mnt namespace: {}", describe(m)),
                format!(
                    "no mount of its master peer group {} has a root that holds its root {}",
                    m.master_id.unwrap_or(0),
                    m.root
                ),
            ));
        }
        pending = left;
    }
    Ok(())
}

/// Detaches the copies of host mounts the tree did not have: the new
/// namespace is a copy of the host's mounts as they are now, and a mount
/// the host made since the dump (another container's, a test's) is none
/// of the tree's. Compared by mount point, the k-th mount on a point
/// against the image's k-th copy there; a mount whose parent goes goes
/// with it. Images without marked copies are left as they are.
fn detach_new_copies(root: Pid, mounts: &[pb::MntEntry]) -> Result<()> {
    use std::collections::{HashMap, HashSet};
    if !mounts.iter().any(|m| m.ext_mount == Some(true)) {
        return Ok(());
    }
    let mut had: HashMap<&Path, usize> = HashMap::new();
    for m in mounts.iter().filter(|m| m.ext_mount == Some(true)) {
        *had.entry(Path::new(&m.mountpoint)).or_default() += 1;
    }
    let now = crate::proc::mountinfo::read(nix::unistd::gettid().as_raw())?;
    let mut seen: HashMap<&Path, usize> = HashMap::new();
    let mut gone = HashSet::new();
    for m in &now {
        let k = seen.entry(m.mount_point.as_path()).or_default();
        *k += 1;
        if *k <= had.get(m.mount_point.as_path()).copied().unwrap_or(0)
            || m.mount_point == Path::new("/")
        {
            continue;
        }
        let parent_goes = gone.contains(&m.parent_id);
        gone.insert(m.mnt_id);
        if parent_goes {
            continue;
        }
        match nix::mount::umount2(&m.mount_point, nix::mount::MntFlags::MNT_DETACH) {
            // Copied into a namespace of a user namespace of the tree's,
            // the host's mounts are locked together (mount_namespaces(7)):
            // such a copy stays, as it did before the dump.
            Err(nix::errno::Errno::EINVAL) => {
                debug!(
                    "pid {root}: mnt namespace: {} ({}) not in the images, locked: kept",
                    m.mount_point.display(),
                    m.fstype
                );
                continue;
            }
            r => r,
        }
        .map_err(|e| {
            Error::sys(
                root,
                format!(
                    "mnt namespace: detaching {} ({} {}), a host mount made since the dump",
                    m.mount_point.display(),
                    m.fstype,
                    m.source
                ),
                e,
            )
        })?;
        debug!(
            "pid {root}: mnt namespace: {} ({}) detached: not in the images",
            m.mount_point.display(),
            m.fstype
        );
    }
    Ok(())
}

/// How many mounts of mountpoints-N.img the tree made itself: all but
/// the copies (marked) and its /proc. An image without marks has none.
pub fn own_count(mounts: &[pb::MntEntry]) -> usize {
    if !mounts.iter().any(|m| m.ext_mount == Some(true)) {
        return 0;
    }
    let own = mounts.iter().filter(|m| m.ext_mount != Some(true)).count();
    own.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u32, parent: u32, point: &str, fstype: u32, dev: u32, root: &str) -> pb::MntEntry {
        pb::MntEntry {
            fstype,
            mnt_id: id,
            root_dev: dev,
            parent_mnt_id: parent,
            root: root.into(),
            mountpoint: point.into(),
            source: "none".into(),
            ..Default::default()
        }
    }

    fn copy(e: pb::MntEntry) -> pb::MntEntry {
        pb::MntEntry {
            ext_mount: Some(true),
            ..e
        }
    }

    /// The host's root and /proc copied, the namespace's /proc, then the
    /// tree's: a tmpfs, a bind of a directory of it, a bind of a host
    /// directory, a sysfs.
    fn image() -> Vec<pb::MntEntry> {
        vec![
            copy(m(1, 0, "/", 0, 8, "/")),
            copy(m(2, 1, "/proc", FS_PROC, 20, "/")),
            m(3, 2, "/proc", FS_PROC, 21, "/"),
            m(4, 1, "/mnt", FS_TMPFS, 30, "/"),
            m(5, 1, "/srv", FS_TMPFS, 30, "/sub"),
            m(6, 1, "/opt", 0, 8, "/var/lib"),
            m(7, 1, "/sys2", 2, 31, "/"),
        ]
    }

    fn plan_of(mounts: &[pb::MntEntry]) -> std::result::Result<Vec<Option<Make>>, String> {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(crate::dump::mntns::tmpfs_image(30)), b"").unwrap();
        plan(&d.path().join("mountpoints-1.img"), d.path(), mounts, None)
            .map(|p| p.make)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_mount_of_the_tree_has_a_way_to_be_made() {
        assert_eq!(
            plan_of(&image()).unwrap(),
            vec![
                None,
                None,
                None,
                Some(Make::Tmpfs),
                Some(Make::Bind(3)),
                Some(Make::Bind(0)),
                Some(Make::Fresh)
            ]
        );
    }

    #[test]
    fn what_cannot_be_made_is_refused_naming_the_mount() {
        let mut no_tar = image();
        no_tar[3].root_dev = 99;
        no_tar[4].root_dev = 99;
        let e = plan_of(&no_tar).unwrap_err();
        assert!(
            e.contains("mount 4 on /mnt") && e.contains("tmpfs-dev-99.tar.gz.img is missing"),
            "{e}"
        );

        let mut lost = image();
        lost[5].root_dev = 77;
        let e = plan_of(&lost).unwrap_err();
        assert!(
            e.contains("mount 6 on /opt") && e.contains("source mount is not in the image"),
            "{e}"
        );

        let mut orphan = image();
        orphan[6].parent_mnt_id = 9;
        assert!(plan_of(&orphan)
            .unwrap_err()
            .contains("parent mount is not before it"));

        let mut slave = image();
        slave[4].master_id = Some(5);
        assert!(plan_of(&slave).unwrap_err().contains("master peer group 5"));

        let mut device = image();
        device[6] = m(7, 1, "/data", 0, 40, "/");
        device[6].source = "/nonexistent/blockdev".into();
        assert!(plan_of(&device)
            .unwrap_err()
            .contains("not a block device on this machine"));

        let mut under_proc = image();
        under_proc[6].mountpoint = "/proc/sys".into();
        assert!(plan_of(&under_proc).unwrap_err().contains("/proc"));

        let mut no_proc = image();
        no_proc.remove(2);
        assert!(plan_of(&no_proc)
            .unwrap_err()
            .contains("no /proc of the namespace's own"));
    }

    /// A tree that pivot_root'ed: its tmpfs root, a bind of a directory
    /// of it, an external bind, its /proc.
    fn pivoted() -> Vec<pb::MntEntry> {
        let mut root = m(1, 0, "/", FS_TMPFS, 30, "/");
        root.tree_root = Some(true);
        let mut ext = m(3, 1, "/work", 0, 8, "/srv/work");
        ext.ext_mount = Some(true);
        ext.ext_key = Some("work".into());
        vec![
            root,
            m(2, 1, "/data", FS_TMPFS, 30, "/sub"),
            ext,
            m(4, 1, "/proc", FS_PROC, 21, "/"),
        ]
    }

    #[test]
    fn a_pivoted_tree_is_made_from_its_root_and_the_given_paths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(crate::dump::mntns::tmpfs_image(30)), b"").unwrap();
        let img = d.path().join("mountpoints-1.img");
        let work = d.path().to_path_buf();
        let outside = |root: Option<PathBuf>, ext: &[(&str, &Path)]| Outside {
            root,
            external: ext
                .iter()
                .map(|(k, p)| (k.to_string(), p.to_path_buf()))
                .collect(),
        };
        let with = outside(None, &[("work", &work)]);
        let p = plan(&img, d.path(), &pivoted(), Some(&with)).unwrap();
        assert!(p.pivoted);
        assert_eq!(
            p.make,
            vec![
                Some(Make::Tmpfs),
                Some(Make::Bind(0)),
                Some(Make::Host),
                None
            ]
        );
        // --root replaces the tmpfs root by a bind of DIR.
        let p = plan(
            &img,
            d.path(),
            &pivoted(),
            Some(&outside(Some(work.clone()), &[("work", &work)])),
        )
        .unwrap();
        assert_eq!(p.make[0], Some(Make::Host));

        let e = plan(&img, d.path(), &pivoted(), Some(&outside(None, &[])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mount 3 on /work") && e.contains("--external mnt[work]:PATH"),
            "{e}"
        );
        let gone = Path::new("/nonexistent/ckpt");
        let e = plan(
            &img,
            d.path(),
            &pivoted(),
            Some(&outside(None, &[("work", gone)])),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ckpt"), "{e}");

        let mut host_root = pivoted();
        host_root[0].fstype = 0;
        host_root[0].host_path = Some("/nonexistent/rootfs".into());
        let e = plan(&img, d.path(), &host_root, Some(&with))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/rootfs") && e.contains("--root DIR"),
            "{e}"
        );

        // Validation alone (no options yet) checks the image only.
        assert!(plan(&img, d.path(), &pivoted(), None).is_ok());
        let mut no_key = pivoted();
        no_key[2].ext_key = None;
        assert!(plan(&img, d.path(), &no_key, None)
            .unwrap_err()
            .to_string()
            .contains("without a key"));
    }

    #[test]
    fn devpts_ids_are_given_as_the_user_namespace_sees_them() {
        let ext = |first, lower_first, count| pb::UidGidExtent {
            first,
            lower_first,
            count,
        };
        let u = pb::UsernsEntry {
            uid_map: vec![ext(0, 100000, 65536)],
            gid_map: vec![ext(0, 200000, 1000), ext(1000, 300000, 10)],
            ..Default::default()
        };
        assert_eq!(
            options_inside("gid=200005,mode=620,ptmxmode=666,max=64", &u).as_deref(),
            Ok("gid=5,mode=620,ptmxmode=666,max=64")
        );
        assert_eq!(
            options_inside("uid=100000,gid=300009", &u).as_deref(),
            Ok("uid=0,gid=1009")
        );
        assert!(options_inside("gid=5", &u)
            .unwrap_err()
            .contains("not mapped"));
        assert!(options_inside("uid=x", &u)
            .unwrap_err()
            .contains("not an id"));
    }

    #[test]
    fn a_tmpfs_is_filled_as_ids_its_user_namespace_maps() {
        let ext = |first, lower_first, count| pb::UidGidExtent {
            first,
            lower_first,
            count,
        };
        let with = |uid_map, gid_map| pb::UsernsEntry {
            uid_map,
            gid_map,
            ..Default::default()
        };
        // The engine's 0:0 mapped: tar runs as the engine.
        let identity = with(vec![ext(0, 0, 65536)], vec![ext(0, 0, 65536)]);
        assert_eq!(filler_ids(&identity), Ok(None));
        // Shifted: as the namespace's root.
        let shifted = with(vec![ext(0, 100000, 65536)], vec![ext(0, 200000, 65536)]);
        assert_eq!(filler_ids(&shifted), Ok(Some((100000, 200000))));
        // Only the gid of 0 unmapped is enough to need other ids; a
        // namespace without a root takes its first ids.
        let no_root = with(vec![ext(0, 0, 10)], vec![ext(5, 300005, 10)]);
        assert_eq!(filler_ids(&no_root), Ok(Some((0, 300005))));
        let empty = with(vec![], vec![ext(0, 200000, 1)]);
        assert!(filler_ids(&empty).unwrap_err().contains("no uid"));
    }

    #[test]
    fn ptys_open_through_a_devpts_the_tree_mounted_only() {
        let mut mounts = image();
        mounts.push(m(8, 1, "/dev/pts", FS_DEVPTS, 40, "/"));
        mounts.push(m(9, 1, "/dev/ptmx", FS_DEVPTS, 40, "/ptmx"));
        mounts.insert(2, copy(m(10, 1, "/mnt/pts", FS_DEVPTS, 41, "/")));
        assert_eq!(own_devpts(&mounts, 8), Some("/dev/pts"));
        assert_eq!(
            ptmx_through(&mounts, 8, 8).as_deref(),
            Some("/dev/pts/ptmx")
        );
        assert_eq!(ptmx_through(&mounts, 8, 9).as_deref(), Some("/dev/ptmx"));
        // Not a bind of this instance's ptmx, or not an instance at all.
        assert_eq!(ptmx_through(&mounts, 8, 10), None);
        assert_eq!(ptmx_through(&mounts, 9, 9), None);
        // A bind of it, the host's copy, another kind, no such mount.
        for id in [9, 10, 4, 77] {
            assert_eq!(own_devpts(&mounts, id), None, "mount {id}");
        }
        let made = plan_of(&mounts).unwrap();
        assert_eq!(made[2], None);
        assert_eq!(made[8..], [Some(Make::Fresh), Some(Make::Bind(8))]);
    }

    #[test]
    fn own_mounts_are_counted_after_the_copies() {
        assert_eq!(own_count(&image()), 4);
        assert_eq!(own_count(&image()[..3]), 0);
        // After a restore with a pid namespace: the /proc comes last.
        let mut restored = image();
        let p = restored.remove(2);
        restored.push(p);
        assert_eq!(own_count(&restored), 4);
        assert_eq!(plan_of(&restored).unwrap().iter().flatten().count(), 4);
    }
}
