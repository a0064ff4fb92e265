//! A mount namespace of the tree's own. It starts in the shape the
//! `ns` flavour gives it (zdtm/lib/ns.c): a private copy of the host's
//! mounts, made when the namespace was, with a new proc instance mounted
//! on /proc right after; then come the mounts the tree made itself.
//!
//! The kernel lists a namespace's mounts in the order they were made
//! (by their unique mount ids), so the mounts before the namespace's
//! own /proc (the first proc on /proc that is not the host's) are the
//! copies, and those after it the tree's. The dump checks, and refuses
//! otherwise naming the task, the namespace, the mount and the reason:
//! - no copy propagates (shared or slave): ns.c makes them all private,
//!   and the restore makes them so;
//! - a copy whose mount point the host still has matches the host's
//!   mount there (fs type, source, root, options): a tree that remounted
//!   one would not get it back. The copies are marked `ext_mount` in the
//!   image: the host's, not saved. A mount before the /proc that the
//!   host does not have is either a copy the host has unmounted since,
//!   left out by the restore (whose copy is of the host as it is then),
//!   or, in a tree restored before, a mount of the tree's: the restore's
//!   engine makes those before the tree's pid namespace exists to mount
//!   its /proc in. It is taken as the tree's when it can be remade;
//! - each mount of the tree's own is one the restore can make again: a
//!   bind of an earlier mount of the same file system whose root holds
//!   its root (the host's copies or the tree's own; directories or
//!   files); a tmpfs, whose contents are saved as CRIU does, a gzipped
//!   tar in `tmpfs-dev-N.tar.gz.img` (N the `root_dev`; made with tar(1)
//!   through /proc/PID/root, the directory checked to be that mount);
//!   sysfs, mqueue, cgroup or devpts (a new instance, its ptys the
//!   terminals'), mounted fresh; or a file system on a block
//!   device, which the restore mounts from its source again (checked to
//!   be there at both ends). Propagation is kept (`shared_id`,
//!   `master_id`, MS_UNBINDABLE in `flags` as CRIU does) when a slave's
//!   master group is in the namespace. Refused: mounts on or below
//!   /proc, moved mounts (a parent made after its child), binds whose
//!   source mount is gone, other file systems.
//!
//! A namespace that pivot_root'ed (a container: its root mount is not
//! the host's root, the old root unmounted) has no copies: every mount
//! is the tree's, its mount points relative to that root, as CRIU keeps
//! them. Its root mount, marked `tree_root`, comes first and is either
//! a tmpfs (saved with its contents) or a bind of a host directory,
//! whose host path (`host_path`) the restore binds again unless `--root
//! DIR` names another. A bind from outside that root (its source mount
//! is not in the namespace) must be declared with CRIU's `--external
//! mnt[MOUNTPOINT]:KEY` (`ext_mount` and `ext_key` in the image; the
//! restore binds it from the path `--external mnt[KEY]:PATH` gives);
//! an undeclared one is refused, naming it and the option. Its own /proc
//! (a proc on /proc) is still required: the restore mounts it.
//!
//! The image is CRIU's: `mountpoints-N.img`, one `mnt_entry` per mount,
//! in the order they were made, N the namespace's id in the tasks' ids.

use std::path::Path;

use crate::error::{Error, Pid, Result};
use crate::images::pb;
use crate::proc::mountinfo::{self, MountInfo};

fn refuse(pid: Pid, ino: u64, why: impl Into<String>) -> Error {
    Error::unsupported(
        pid,
        format!("mnt namespace mnt:[{ino}]"),
        format!(
            "{}; supported: a private copy of the host's mounts, a /proc of its own, then mounts the tree made",
            why.into()
        ),
    )
}

fn describe(m: &MountInfo) -> String {
    format!(
        "{} ({} {} root {} options {})",
        m.mount_point.display(),
        m.fstype,
        m.source,
        m.root.display(),
        m.options
    )
}

/// CRIU's fstype numbers (proto/mnt.proto), 0 (UNSUPPORTED) with the name
/// in `fsname` for the others.
fn fstype_code(name: &str) -> u32 {
    match name {
        "proc" => 1,
        "sysfs" => 2,
        "devtmpfs" => 3,
        "binfmt_misc" => 4,
        "tmpfs" => 5,
        "devpts" => 6,
        "pstore" => 8,
        "securityfs" => 9,
        "fusectl" => 10,
        "debugfs" => 11,
        "cgroup" => 12,
        "mqueue" => 14,
        "overlay" => 17,
        "autofs" => 18,
        "tracefs" => 19,
        "cgroup2" => 23,
        _ => 0,
    }
}

/// MS_* flags of the per-mount options.
fn ms_flags(options: &str) -> u32 {
    let mut f = 0u64;
    for o in options.split(',') {
        f |= match o {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            "strictatime" => libc::MS_STRICTATIME,
            _ => 0,
        };
    }
    f as u32
}

fn entry(m: &MountInfo) -> pb::MntEntry {
    let code = fstype_code(&m.fstype);
    pb::MntEntry {
        fstype: code,
        mnt_id: m.mnt_id as u32,
        // The kernel's internal dev_t, as CRIU stores it.
        root_dev: (m.major << 20) | m.minor,
        parent_mnt_id: m.parent_id as u32,
        // CRIU keeps unbindable among the flags.
        flags: ms_flags(&m.options)
            | if m.unbindable() {
                libc::MS_UNBINDABLE as u32
            } else {
                0
            },
        root: m.root.to_string_lossy().into_owned(),
        mountpoint: m.mount_point.to_string_lossy().into_owned(),
        source: m.source.clone(),
        options: m.super_options.clone(),
        shared_id: m.shared().map(|g| g as u32),
        master_id: m.master().map(|g| g as u32),
        with_plugin: None,
        ext_mount: None,
        fsname: (code == 0).then(|| m.fstype.clone()),
        internal_sharing: None,
        deleted: None,
        sb_flags: Some(if m.super_options.split(',').any(|o| o == "ro") {
            libc::MS_RDONLY as u32
        } else {
            0
        }),
        ext_key: None,
        tree_root: None,
        host_path: None,
    }
}

/// The `mnt[ID]:VALUE` pairs of `--external` options (CRIU's spelling:
/// at dump ID is a mount point and VALUE its key, at restore ID is the
/// key and VALUE a path); the other kinds are left to their own code.
pub fn externals(specs: &[crate::external::External]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in specs {
        let crate::external::External::Mnt { id, value } = s else {
            continue;
        };
        if out.iter().any(|(o, _)| o == id) {
            return Err(Error::Usage(format!(
                "--external {s}: mnt[{id}] is given twice"
            )));
        }
        out.push((id.clone(), value.clone()));
    }
    Ok(out)
}

/// A mount namespace of the tree's own as the dump writes it: its
/// mountpoints-N.img entries and, for each tmpfs the tree mounted, its
/// contents as a tar (`tmpfs-dev-N.tar.gz.img`, N its `root_dev`).
pub struct MountNs {
    pub entries: Vec<pb::MntEntry>,
    pub tmpfs: Vec<(u32, Vec<u8>)>,
}

impl MountNs {
    /// mountpoints-`id`.img and the tmpfs tars.
    pub fn write(&self, dir: &crate::imgdir::ImageDir, id: u32) -> Result<()> {
        dir.write_image(&format!("mountpoints-{id}.img"), &self.entries)?;
        for (dev, tar) in &self.tmpfs {
            dir.write_file(&tmpfs_image(*dev), tar)?;
        }
        Ok(())
    }
}

/// CRIU's name for the contents of the tmpfs whose `root_dev` is `dev`.
pub fn tmpfs_image(dev: u32) -> String {
    format!("tmpfs-dev-{dev}.tar.gz.img")
}

/// File systems the restore mounts anew, empty (their contents are the
/// kernel's): the tree's mounts of these need nothing saved. A devpts
/// instance comes back with its options (ptmxmode, mode, gid, max) and
/// its ptys, which the terminals' restore opens through it
/// (dump/files/tty.rs).
pub const FRESH: &[&str] = &["proc", "sysfs", "mqueue", "cgroup", "cgroup2", "devpts"];

/// Checks the mount namespace `ino` of `pid` (the tree's root) against
/// the engine's (the host's) and returns what the dump writes of it.
pub fn check(pid: Pid, ino: u64, external: &[crate::external::External]) -> Result<MountNs> {
    let tree = mountinfo::read(pid)?;
    let host = mountinfo::read(std::process::id() as Pid)?;
    let external = externals(external)?;
    if pivoted(&tree, &host) {
        return check_pivoted(pid, ino, &tree, &host, &external);
    }
    if let Some((point, _)) = external.first() {
        return Err(refuse(
            pid,
            ino,
            format!("--external mnt[{point}]: external mounts are supported in a namespace that pivot_root'ed only"),
        ));
    }
    let proc_dir = Path::new("/proc");
    // The flavour's /proc: the first proc instance on /proc that is not
    // the host's; the mounts before it are the copies, those after it
    // the tree's own.
    let Some(p) = own_proc(&tree, &host) else {
        let why = match tree.last() {
            None => "it has no mounts".to_string(),
            Some(l) if l.fstype == "proc" && l.mount_point == proc_dir => {
                "its /proc is the host's proc, not a new instance".to_string()
            }
            Some(l) => format!(
                "it has no /proc of its own (its last mount is {})",
                describe(l)
            ),
        };
        return Err(refuse(pid, ino, why));
    };
    let copies = &tree[..p];
    let on_host = check_copies(pid, ino, copies, &host)?;
    let mut entries = Vec::with_capacity(tree.len());
    let mut tmpfs = Vec::new();
    let mut own = 0;
    for (i, m) in tree.iter().enumerate() {
        let made = match i.cmp(&p) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(own_mount(pid, ino, &tree, i)?),
            // Not on the host: the tree's when it can be remade (module
            // doc), else a copy the host has unmounted since.
            std::cmp::Ordering::Less if !on_host[i] => own_mount(pid, ino, &tree, i).ok(),
            std::cmp::Ordering::Less => None,
        };
        let Some(made) = made else {
            if let Some(g) = m.shared().or(m.master()).filter(|_| i != p) {
                return Err(refuse(
                    pid,
                    ino,
                    format!(
                        "{} propagates (peer group {g}); the flavour's copies of the host's mounts are private",
                        describe(m)
                    ),
                ));
            }
            entries.push(if i == p { entry(m) } else { copy_entry(m) });
            continue;
        };
        if made == Made::Tmpfs {
            tmpfs.push((entry(m).root_dev, tmpfs_tar(pid, ino, m)?));
        }
        entries.push(entry(m));
        own += 1;
    }
    debug!(
        "pid {pid}: mnt:[{ino}]: {} mounts, {own} of them the tree's ({} tmpfs)",
        tree.len(),
        tmpfs.len()
    );
    Ok(MountNs { entries, tmpfs })
}

/// The namespace's own /proc: the first proc instance on /proc that is
/// not the host's.
fn own_proc(tree: &[MountInfo], host: &[MountInfo]) -> Option<usize> {
    let host_proc = |m: &MountInfo| {
        host.iter()
            .any(|h| h.fstype == "proc" && (h.major, h.minor) == (m.major, m.minor))
    };
    tree.iter()
        .position(|m| m.fstype == "proc" && m.mount_point == Path::new("/proc") && !host_proc(m))
}

/// Whether the tree's root mount is not the host's root (module doc):
/// it pivot_root'ed.
fn pivoted(tree: &[MountInfo], host: &[MountInfo]) -> bool {
    let root = |ms: &[MountInfo]| {
        ms.iter()
            .find(|m| {
                m.mount_point == Path::new("/") && !ms.iter().any(|o| o.mnt_id == m.parent_id)
            })
            .map(|m| ((m.major, m.minor), m.root.clone()))
    };
    matches!((root(tree), root(host)), (Some(t), Some(h)) if t != h)
}

/// Where the directory `m`'s root is on the host: through the host's
/// mount of the same file system whose root holds it (the latest).
fn host_path(m: &MountInfo, host: &[MountInfo]) -> Option<std::path::PathBuf> {
    host.iter()
        .rev()
        .find(|h| (h.major, h.minor) == (m.major, m.minor) && m.root.starts_with(&h.root))
        .map(|h| {
            h.mount_point
                .join(m.root.strip_prefix(&h.root).unwrap_or(&m.root))
        })
}

/// A pivot_root'ed namespace (module doc): its root first, then its own
/// mounts and its /proc, binds from outside declared external.
fn check_pivoted(
    pid: Pid,
    ino: u64,
    tree: &[MountInfo],
    host: &[MountInfo],
    external: &[(String, String)],
) -> Result<MountNs> {
    let root = &tree[0];
    if root.mount_point != Path::new("/") {
        return Err(refuse_own(
            pid,
            ino,
            root,
            "its first mount is not its root, which pivot_root made later (a moved root)".into(),
        ));
    }
    let Some(p) = own_proc(tree, host) else {
        return Err(refuse(
            pid,
            ino,
            "it pivot_root'ed and has no /proc of its own (a proc on /proc), which the restore mounts",
        ));
    };
    let mut entries = Vec::with_capacity(tree.len());
    let mut tmpfs = Vec::new();
    for (i, m) in tree.iter().enumerate() {
        let point = m.mount_point.to_string_lossy();
        if let Some((_, key)) = external.iter().find(|(at, _)| *at == point) {
            if i == 0 {
                return Err(refuse_own(
                    pid,
                    ino,
                    m,
                    "it is the tree's root, which --root DIR gives at restore, not --external"
                        .into(),
                ));
            }
            if let Some(g) = m.shared().or(m.master()) {
                return Err(refuse_own(
                    pid,
                    ino,
                    m,
                    format!("it is external and propagates (peer group {g})"),
                ));
            }
            entries.push(pb::MntEntry {
                ext_mount: Some(true),
                ext_key: Some(key.clone()),
                ..entry(m)
            });
            continue;
        }
        if i == p {
            entries.push(entry(m));
            continue;
        }
        if i == 0 {
            let mut e = pb::MntEntry {
                tree_root: Some(true),
                ..entry(m)
            };
            if m.fstype == "tmpfs" && m.root == Path::new("/") {
                tmpfs.push((e.root_dev, tmpfs_tar(pid, ino, m)?));
            } else {
                let Some(at) = host_path(m, host).filter(|h| h.is_dir()) else {
                    return Err(refuse_own(pid, ino, m, "its root is neither a tmpfs nor a directory of the host's (through a mount of the host's)".into()));
                };
                e.host_path = Some(at.to_string_lossy().into_owned());
            }
            if let Some(g) = m.shared().or(m.master()) {
                return Err(refuse_own(
                    pid,
                    ino,
                    m,
                    format!("the tree's root propagates (peer group {g})"),
                ));
            }
            entries.push(e);
            continue;
        }
        let outside = bind_source(tree, i).is_none() && m.root != Path::new("/");
        if outside {
            return Err(refuse_own(
                pid,
                ino,
                m,
                format!(
                    "it is a bind mount from outside the tree's root (of {} on the host); declare it with --external mnt[{point}]:KEY at dump and --external mnt[KEY]:PATH at restore",
                    host_path(m, host).map_or_else(|| m.root.display().to_string(), |h| h.display().to_string())
                ),
            ));
        }
        if own_mount(pid, ino, tree, i)? == Made::Tmpfs {
            tmpfs.push((entry(m).root_dev, tmpfs_tar(pid, ino, m)?));
        }
        entries.push(entry(m));
    }
    if let Some((point, _)) = external.iter().find(|(at, _)| {
        !tree
            .iter()
            .any(|m| m.mount_point.to_string_lossy() == at.as_str())
    }) {
        return Err(refuse(
            pid,
            ino,
            format!("--external mnt[{point}]: it has no mount there"),
        ));
    }
    debug!(
        "pid {pid}: mnt:[{ino}]: pivot_root'ed into {}, {} mounts ({} tmpfs)",
        describe(root),
        tree.len(),
        tmpfs.len()
    );
    Ok(MountNs { entries, tmpfs })
}

/// A copy of the host's mount: the restore takes the host's as it is then.
fn copy_entry(m: &MountInfo) -> pb::MntEntry {
    pb::MntEntry {
        ext_mount: Some(true),
        ..entry(m)
    }
}

/// Copies against the host's mounts at the same point (the k-th mount
/// on a point against the host's k-th there): whether the host has each.
fn check_copies(pid: Pid, ino: u64, copies: &[MountInfo], host: &[MountInfo]) -> Result<Vec<bool>> {
    let mut on_host = Vec::with_capacity(copies.len());
    for (i, m) in copies.iter().enumerate() {
        let k = copies[..i]
            .iter()
            .filter(|o| o.mount_point == m.mount_point)
            .count();
        let Some(h) = host
            .iter()
            .filter(|h| h.mount_point == m.mount_point)
            .nth(k)
        else {
            debug!("pid {pid}: mnt:[{ino}]: {} is not on the host", describe(m));
            on_host.push(false);
            continue;
        };
        on_host.push(true);
        let same = h.fstype == m.fstype
            && h.source == m.source
            && h.root == m.root
            && h.options == m.options;
        if !same {
            return Err(refuse(
                pid,
                ino,
                format!(
                    "its mount {} differs from the host's {}",
                    describe(m),
                    describe(h)
                ),
            ));
        }
    }
    Ok(on_host)
}

/// How the restore remakes a mount of the tree's own.
#[derive(Debug, PartialEq, Eq)]
enum Made {
    /// A bind mount of an earlier mount of the same file system.
    Bind,
    /// A new tmpfs filled from its tar.
    Tmpfs,
    /// A new instance of one of [`FRESH`].
    Fresh,
    /// A block-device file system mounted from its source again.
    Device,
}

/// The bind source of `tree[i]` among the mounts before it: the latest
/// mount of the same file system whose root holds `tree[i]`'s root.
pub fn bind_source(tree: &[MountInfo], i: usize) -> Option<&MountInfo> {
    let m = &tree[i];
    tree[..i]
        .iter()
        .rev()
        .find(|s| (s.major, s.minor) == (m.major, m.minor) && m.root.starts_with(&s.root))
}

/// Checks the `i`-th mount of `tree` (one the tree made) can be remade
/// and says how.
fn own_mount(pid: Pid, ino: u64, tree: &[MountInfo], i: usize) -> Result<Made> {
    let m = &tree[i];
    let no = |why: String| refuse_own(pid, ino, m, why);
    if Path::new("/proc").starts_with(&m.mount_point) || m.mount_point.starts_with("/proc") {
        return Err(no(
            "it covers or lies below the namespace's /proc, which the restore mounts last".into(),
        ));
    }
    if !tree[..i].iter().any(|o| o.mnt_id == m.parent_id) {
        return Err(no(format!(
            "its parent mount {} was made after it (a moved mount)",
            m.parent_id
        )));
    }
    if let Some(g) = m.master() {
        if !tree.iter().any(|o| o.shared() == Some(g)) {
            return Err(no(format!(
                "it is a slave of peer group {g}, which no mount of the namespace is in"
            )));
        }
    }
    if m.unbindable() && (m.shared().is_some() || m.master().is_some()) {
        return Err(no("it is unbindable and propagates".into()));
    }
    let made = if bind_source(tree, i).is_some() {
        Made::Bind
    } else if m.root != Path::new("/") {
        return Err(no(format!(
            "it is a bind mount of {} whose source mount is not in the namespace",
            m.root.display()
        )));
    } else if m.fstype == "tmpfs" {
        Made::Tmpfs
    } else if m.fstype == "devpts" {
        devpts_ptmx(pid, m).map_err(no)?;
        Made::Fresh
    } else if FRESH.contains(&m.fstype.as_str()) {
        Made::Fresh
    } else if is_block_device(&m.source) {
        Made::Device
    } else {
        return Err(no(format!(
            "a {} file system is not one the restore can make again (tmpfs with its contents, sysfs, mqueue, cgroup, devpts, or a block device's)",
            m.fstype
        )));
    };
    Ok(made)
}

/// A devpts instance comes back with its options: its ptmx node must
/// still have the mode its `ptmxmode` option gave (0 without one), which
/// a chmod by the tree would have changed. Checked through `pid`'s root
/// when the mount point shows that instance (a mount covering it hides
/// the node, which is then left unchecked).
fn devpts_ptmx(pid: Pid, m: &MountInfo) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let want = m
        .super_options
        .split(',')
        .find_map(|o| o.strip_prefix("ptmxmode="))
        .map_or(Ok(0), |v| u32::from_str_radix(v, 8))
        .map_err(|e| format!("its ptmxmode option cannot be read: {e}"))?;
    let path = Path::new(&format!("/proc/{pid}/root"))
        .join(m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point))
        .join("ptmx");
    let Ok(st) = std::fs::metadata(&path) else {
        return Ok(());
    };
    let dev = libc::makedev(m.major, m.minor);
    if st.dev() == dev && st.mode() & 0o7777 != want {
        return Err(format!(
            "its ptmx node has mode {:o}, not its ptmxmode {want:o} (a chmod of it is not restored)",
            st.mode() & 0o7777
        ));
    }
    Ok(())
}

fn is_block_device(source: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    source.starts_with('/')
        && std::fs::metadata(source).is_ok_and(|md| md.file_type().is_block_device())
}

fn refuse_own(pid: Pid, ino: u64, m: &MountInfo, why: String) -> Error {
    Error::unsupported(
        pid,
        format!(
            "mnt namespace mnt:[{ino}]: mount {} {}",
            m.mnt_id,
            describe(m)
        ),
        why,
    )
}

/// A detached copy of the mount `dir` is the root of, made from a
/// short-lived thread that joins `pid`'s mount namespace (the kernel
/// clones only mounts of the caller's own; setns of a mount namespace
/// needs a thread with its own fs_struct, hence the unshare).
fn detached_copy(pid: Pid, dir: &std::fs::File) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sched::CloneFlags;
    use std::os::fd::AsFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_FS)?;
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)?;
            crate::sys::open_tree_clone(dir.as_fd(), false)
        })
        .join()
        .unwrap_or(Err(nix::errno::Errno::EINTR))
    })
}

/// The contents of the tree's tmpfs `m` as a gzipped tar (CRIU's
/// tmpfs-dev-N.tar.gz.img), read through the root's /proc/PID/root; the
/// directory opened must be that mount (not one mounted over it).
fn tmpfs_tar(pid: Pid, ino: u64, m: &MountInfo) -> Result<Vec<u8>> {
    let path = Path::new(&format!("/proc/{pid}/root"))
        .join(m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point));
    let dir = std::fs::File::open(&path)
        .map_err(|e| Error::io(&path, format!("pid {pid}: the tmpfs {}", describe(m)), e))?;
    use std::os::fd::AsRawFd;
    let me = std::process::id() as Pid;
    let got = crate::proc::fdinfo::read_fdinfo(me, dir.as_raw_fd())?.mnt_id;
    if got != m.mnt_id {
        return Err(refuse_own(
            pid,
            ino,
            m,
            format!("another mount ({got}) covers it, so its contents cannot be read"),
        ));
    }
    // tar reads a detached copy of the mount: fanotify marks of the tree
    // on the mount itself see none of it (inode marks and inotify watches
    // on its files still would).
    let copy = detached_copy(pid, &dir);
    let at = match &copy {
        Ok(c) => format!("/proc/{me}/fd/{}", c.as_raw_fd()),
        Err(e) => {
            debug!("pid {pid}: tmpfs {}: read in place: {e}", describe(m));
            format!("/proc/{me}/fd/{}", dir.as_raw_fd())
        }
    };
    let out = std::process::Command::new("tar")
        .args([
            "--create",
            "--gzip",
            "--no-unquote",
            "--no-wildcards",
            "--one-file-system",
            "--check-links",
            "--preserve-permissions",
            "--sparse",
            "--numeric-owner",
            "--directory",
            &at,
            ".",
        ])
        .output()
        .map_err(|e| {
            Error::io(
                "tar",
                format!("pid {pid}: saving the tmpfs {}", describe(m)),
                e,
            )
        })?;
    if !out.status.success() {
        return Err(refuse_own(
            pid,
            ino,
            m,
            format!(
                "tar of its contents failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_mounts_are_read_in_criu_spelling() {
        let specs = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse::<crate::external::External>())
                .collect::<std::result::Result<Vec<_>, _>>()
        };
        assert_eq!(
            externals(&specs(&["mnt[/srv/a]:a", "veth[eth0]:x", "mnt[b]:/x:y"]).unwrap()).unwrap(),
            vec![("/srv/a".into(), "a".into()), ("b".into(), "/x:y".into())]
        );
        for bad in ["mnt[/a]", "mnt[]:k", "mnt[/a]:"] {
            assert!(specs(&[bad]).is_err(), "{bad}");
        }
        assert!(externals(&specs(&["mnt[/a]:k", "mnt[/a]:l"]).unwrap())
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
