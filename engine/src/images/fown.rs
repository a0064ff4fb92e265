//! The owner of an open file (F_SETOWN_EX, F_SETSIG), as CRIU keeps it:
//! a `fown_entry` inside the file entry of each kind that has one, and
//! O_ASYNC among the kind's open flags. One place says where each kind
//! keeps them, for the dump, the restore and `show`.

use super::pb;

/// F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP: `pid_type` as CRIU writes it
/// (the type of fcntl's `f_owner_ex`).
pub const OWNER_TID: u32 = 0;
pub const OWNER_PID: u32 = 1;
pub const OWNER_PGRP: u32 = 2;

/// Every kind whose entry has an owner slot and open flags, in one list
/// for both accessors.
macro_rules! with_kinds {
    ($f:expr, $get:ident, |$x:ident| $e:expr) => {{
        let f = $f;
        None.or_else(|| f.reg.$get().map(|$x| $e))
            .or_else(|| f.pipe.$get().map(|$x| $e))
            .or_else(|| f.efd.$get().map(|$x| $e))
            .or_else(|| f.epfd.$get().map(|$x| $e))
            .or_else(|| f.sgfd.$get().map(|$x| $e))
            .or_else(|| f.tfd.$get().map(|$x| $e))
            .or_else(|| f.usk.$get().map(|$x| $e))
            .or_else(|| f.memfd.$get().map(|$x| $e))
            .or_else(|| f.tty.$get().map(|$x| $e))
            .or_else(|| f.pidfd.$get().map(|$x| $e))
            .or_else(|| f.isk.$get().map(|$x| $e))
            .or_else(|| f.nlsk.$get().map(|$x| $e))
            .or_else(|| f.psk.$get().map(|$x| $e))
    }};
}

/// The owner slot of a file entry, if its kind has one (a FIFO's is in its
/// REG entry, `regf_id`, which this does not follow).
pub fn fown_mut(f: &mut pb::FileEntry) -> Option<&mut pb::FownEntry> {
    if let Some(x) = f.reg.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.pipe.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.efd.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.epfd.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.sgfd.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.tfd.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.usk.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.memfd.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.tty.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.pidfd.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.isk.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.nlsk.as_mut() {
        return Some(&mut x.fown);
    }
    if let Some(x) = f.psk.as_mut() {
        return Some(&mut x.fown);
    }
    None
}

/// The owner slot of a file entry (see [`fown_mut`]).
pub fn fown(f: &pb::FileEntry) -> Option<&pb::FownEntry> {
    with_kinds!(f, as_ref, |x| &x.fown)
}

/// Whether `o` says anything: an owner or a signal.
pub fn is_set(o: &pb::FownEntry) -> bool {
    o.pid != 0 || o.signum != 0
}

/// The open flags a kind keeps (O_NONBLOCK, O_ASYNC...), if it keeps any.
pub fn status_flags(f: &pb::FileEntry) -> Option<u32> {
    with_kinds!(f, as_ref, |x| x.flags)
}

/// How `show` prints an owner.
pub fn describe(o: &pb::FownEntry) -> String {
    let who = match (o.pid, o.pid_type) {
        (0, _) => "no owner".to_string(),
        (p, OWNER_TID) => format!("thread {p}"),
        (p, OWNER_PID) => format!("process {p}"),
        (p, OWNER_PGRP) => format!("process group {p}"),
        (p, t) => format!("pid {p} of owner type {t}"),
    };
    let sig = match o.signum {
        0 => "SIGIO".to_string(),
        s => format!("signal {s}"),
    };
    format!("{who}, {sig}, set by uid {} euid {}", o.uid, o.euid)
}
