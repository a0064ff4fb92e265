//! Whose images these are, and what they may ask for.
//!
//! An image directory is input from whoever could write it. The restore
//! runs as root, so without a check an unprivileged user could edit their
//! own image to uid 0 with every capability, or point a file entry at
//! /etc/shadow, and have ckpt restore that for them. The model:
//!
//! - **Writers.** The directory and every file in it must be writable
//!   only by their owner (no group or other write bit), and all owned by
//!   root plus at most one other user, the *image owner*. Otherwise
//!   anyone could have changed them: refused.
//! - **Privileges.** When the image owner is not root, every task must run
//!   as that user (real, effective, saved and fs ids), in groups the user
//!   is in, with no capabilities (effective, permitted, inheritable,
//!   ambient), and every file it opens must be one the user could open
//!   with the same access (checked by a probe process running as the user,
//!   with access(2), so nothing is opened). A missing file (one the
//!   restore recreates) needs a parent directory the user can write.
//! - **Paths.** File paths in the images must be absolute, always: a
//!   relative one would resolve against ckpt's own working directory.
//!
//! `--trust-images` lifts the first two (for images root made and keeps
//! where users can write, say); never the third.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Uid};

use super::load::Images;
use crate::error::{Error, Result};
use crate::images::pb;

/// The user the images are limited to (None when root wrote them all),
/// with the groups of the files that user owns.
fn image_owner(dir: &Path) -> Result<Option<(u32, BTreeSet<u32>)>> {
    let bad = |p: &Path, why: String| Error::Image(crate::images::ImageError::invalid(p, why));
    let mut owners = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let mut check = |p: &Path| -> Result<()> {
        let md = std::fs::symlink_metadata(p)
            .map_err(|e| Error::io(p, "reading its owner and mode", e))?;
        // A symbolic link (`parent`, to the parent images) has no mode
        // of its own; what it points to is checked as images itself.
        if md.mode() & 0o022 != 0 && !md.file_type().is_symlink() {
            return Err(bad(
                p,
                format!(
                    "writable by other users than its owner (mode {:04o}): anyone could have \
                     changed the images; make it private (chmod go-w) or pass --trust-images",
                    md.mode() & 0o7777
                ),
            ));
        }
        if md.uid() != 0 {
            owners.insert(md.uid());
            gids.insert(md.gid());
        }
        Ok(())
    };
    check(dir)?;
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "listing the image directory", e))? {
        let e = e.map_err(|e| Error::io(dir, "listing the image directory", e))?;
        check(&e.path())?;
    }
    if owners.len() > 1 {
        return Err(bad(
            dir,
            format!(
                "its files belong to several users ({owners:?}): the images cannot be \
                 limited to one user's privileges; pass --trust-images if they are trusted"
            ),
        ));
    }
    Ok(owners.into_iter().next().map(|u| (u, gids)))
}

/// The groups `uid` is in: its passwd group and supplementary groups, and
/// the groups of the image files it owns (an unprivileged user can give a
/// file only a group they are in; a user unknown to the group database
/// shows their groups only that way).
fn groups_of(uid: u32, file_gids: BTreeSet<u32>) -> BTreeSet<u32> {
    let mut g = file_gids;
    if let Ok(Some(u)) = nix::unistd::User::from_uid(Uid::from_raw(uid)) {
        g.insert(u.gid.as_raw());
        if let Ok(name) = std::ffi::CString::new(u.name) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, u.gid) {
                g.extend(list.iter().map(|g| g.as_raw()));
            }
        }
    }
    g
}

fn caps_empty(words: &[u32]) -> bool {
    words.iter().all(|&w| w == 0)
}

/// Why `c` asks for more than user `uid` in `groups` has, if it does.
fn creds_beyond(c: &pb::CredsEntry, uid: u32, groups: &BTreeSet<u32>) -> Option<String> {
    for (what, v) in [
        ("uid", c.uid),
        ("euid", c.euid),
        ("suid", c.suid),
        ("fsuid", c.fsuid),
    ] {
        if v != uid {
            return Some(format!("{what} {v}"));
        }
    }
    for (what, v) in [
        ("gid", c.gid),
        ("egid", c.egid),
        ("sgid", c.sgid),
        ("fsgid", c.fsgid),
    ] {
        if !groups.contains(&v) {
            return Some(format!("{what} {v}, a group the user is not in"));
        }
    }
    if let Some(g) = c.groups.iter().find(|g| !groups.contains(g)) {
        return Some(format!(
            "supplementary group {g}, a group the user is not in"
        ));
    }
    for (what, v) in [
        ("effective", &c.cap_eff),
        ("permitted", &c.cap_prm),
        ("inheritable", &c.cap_inh),
        ("ambient", &c.cap_amb),
    ] {
        if !caps_empty(v) {
            return Some(format!("{what} capabilities {v:x?}"));
        }
    }
    None
}

/// The access(2) mode a file entry's open needs.
fn access_mode(flags: u32, is_dir: bool) -> i32 {
    if flags & libc::O_PATH as u32 != 0 {
        return libc::F_OK;
    }
    let mut m = match flags as i32 & libc::O_ACCMODE {
        libc::O_WRONLY => libc::W_OK,
        libc::O_RDWR => libc::R_OK | libc::W_OK,
        _ => libc::R_OK,
    };
    if is_dir {
        // A working directory needs only search permission.
        m = (m & !libc::R_OK) | libc::X_OK;
    }
    m
}

/// Every file path of the images, with the access its open needs.
fn file_paths(imgs: &Images) -> Vec<(String, i32, bool)> {
    let dirs: BTreeSet<u32> = imgs
        .tasks
        .iter()
        .flat_map(|t| [t.fs.cwd_id, t.fs.root_id])
        .collect();
    imgs.files
        .values()
        .filter_map(|f| f.reg.as_ref().map(|r| (f.id, r)))
        .map(|(id, r)| {
            (
                r.name.clone(),
                access_mode(r.flags, dirs.contains(&id)),
                dirs.contains(&id),
            )
        })
        .collect()
}

/// Relative paths are refused whoever owns the images.
fn check_paths_absolute(imgs: &Images) -> Result<()> {
    for f in imgs.files.values() {
        if let Some(r) = &f.reg {
            if !r.name.starts_with('/') {
                return Err(Error::Image(crate::images::ImageError::invalid(
                    imgs.dir.join("files.img"),
                    format!(
                        "file id {}: path {:?} is relative; it would be resolved against \
                         ckpt's own working directory",
                        f.id, r.name
                    ),
                )));
            }
        }
    }
    Ok(())
}

/// Runs access(2) for every path as user `uid` in `groups`, in a probe
/// process, and returns the paths it could not reach, with the reason.
fn probe_as(
    uid: u32,
    groups: &BTreeSet<u32>,
    primary: u32,
    paths: &[(String, i32, bool)],
) -> Result<Vec<String>> {
    let (rd, wr) =
        nix::unistd::pipe().map_err(|e| Error::sys(0, "pipe for the access probe", e))?;
    match crate::sys::fork_single_threaded()
        .map_err(|e| Error::sys(0, "fork of the access probe", e))?
    {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let mut out = std::fs::File::from(wr);
            let gl: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
            let g = Gid::from_raw(primary);
            let u = Uid::from_raw(uid);
            if nix::unistd::setgroups(&gl).is_err()
                || nix::unistd::setresgid(g, g, g).is_err()
                || nix::unistd::setresuid(u, u, u).is_err()
            {
                let _ = writeln!(out, "!cannot become uid {uid}");
                std::process::exit(1);
            }
            for (p, mode, _) in paths {
                let path = Path::new(p);
                let res =
                    nix::unistd::access(path, nix::unistd::AccessFlags::from_bits_truncate(*mode));
                let res = match res {
                    // Recreated by the restore (an unlinked file): its
                    // directory must be the user's to write.
                    Err(nix::errno::Errno::ENOENT) => {
                        let parent = path.parent().unwrap_or(Path::new("/"));
                        nix::unistd::access(
                            parent,
                            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                        )
                        .map_err(|e| {
                            format!("it does not exist and its directory is not writable ({e})")
                        })
                    }
                    Err(e) => Err(e.to_string()),
                    Ok(()) => Ok(()),
                };
                if let Err(why) = res {
                    let _ = writeln!(out, "{p}\t{why}");
                }
            }
            std::process::exit(0)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut text = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut text);
            let _ = nix::sys::wait::waitpid(child, None);
            if let Some(why) = text.strip_prefix('!') {
                return Err(Error::task(0, "access probe", why.trim().to_string()));
            }
            Ok(text.lines().map(|l| l.replace('\t', ": ")).collect())
        }
    }
}

/// The whole check, before anything is created.
pub fn check(imgs: &Images, trust: bool) -> Result<()> {
    check_paths_absolute(imgs)?;
    if trust {
        return Ok(());
    }
    // The parent images of an incremental dump are images too.
    let mut dirs = vec![imgs.dir.clone()];
    for f in &imgs.parent_files {
        if let Some(d) = f.parent().filter(|d| !dirs.iter().any(|x| x == d)) {
            dirs.push(d.to_path_buf());
        }
    }
    let mut owner: Option<(u32, BTreeSet<u32>)> = None;
    for d in &dirs {
        match (image_owner(d)?, &mut owner) {
            (None, _) => {}
            (Some(o), None) => owner = Some(o),
            (Some((u, g)), Some((uid, gids))) => {
                if u != *uid {
                    return Err(Error::Image(crate::images::ImageError::invalid(
                        d,
                        format!(
                            "these parent images belong to uid {u}, the images to uid {uid}: pass --trust-images if they are trusted"
                        ),
                    )));
                }
                gids.extend(g);
            }
        }
    }
    let Some((uid, file_gids)) = owner else {
        return Ok(());
    };
    let dir_gid = std::fs::metadata(&imgs.dir)
        .map_err(|e| Error::io(&imgs.dir, "reading its owner", e))?
        .gid();
    let groups = groups_of(uid, file_gids);
    let why_trust =
        "the images belong to an unprivileged user; pass --trust-images if they are trusted";
    // A mount could put any file of the host over any other; an
    // unprivileged user could make none of them.
    if let Some(m) = imgs
        .ns
        .mnt
        .as_ref()
        .filter(|m| super::mntns::own_count(m) > 0)
    {
        return Err(Error::Image(crate::images::ImageError::invalid(
            &imgs.dir,
            format!(
                "the tree's mount namespace has {} mount(s) of its own, which uid {uid}, who owns the images, cannot make: {why_trust}",
                super::mntns::own_count(m)
            ),
        )));
    }
    for t in &imgs.tasks {
        let threads =
            std::iter::once((t.pid, &t.core)).chain(t.threads.iter().map(|(tid, c)| (*tid, c)));
        for (tid, core) in threads {
            if let Some(c) = core.thread_core.as_ref().and_then(|tc| tc.creds.as_ref()) {
                if let Some(what) = creds_beyond(c, uid, &groups) {
                    return Err(Error::task(
                        tid,
                        "credentials",
                        format!(
                            "asks for {what}, more than uid {uid}, who owns {}, has: {why_trust}",
                            imgs.dir.display()
                        ),
                    ));
                }
            }
        }
    }
    for z in &imgs.zombies {
        if let Some(what) = z.creds.as_ref().and_then(|c| creds_beyond(c, uid, &groups)) {
            return Err(Error::task(
                z.pid,
                "credentials",
                format!(
                    "asks for {what}, more than uid {uid}, who owns {}, has: {why_trust}",
                    imgs.dir.display()
                ),
            ));
        }
    }
    let primary = nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or(dir_gid, |u| u.gid.as_raw());
    let refused = probe_as(uid, &groups, primary, &file_paths(imgs))?;
    if let Some(first) = refused.first() {
        return Err(Error::Image(crate::images::ImageError::invalid(
            imgs.dir.join("files.img"),
            format!(
                "uid {uid}, who owns the images, may not open {first}{}: {why_trust}",
                if refused.len() > 1 {
                    format!(" (and {} more files)", refused.len() - 1)
                } else {
                    String::new()
                }
            ),
        )));
    }
    Ok(())
}
