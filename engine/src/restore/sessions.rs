//! Who creates each task, so that it lands in its session and process
//! group.
//!
//! A session or group can only be entered by inheritance (fork), by
//! creating it (setsid, setpgid(0, 0)), or, for a group, by joining one
//! that still has a member in the same session. The dumped layout may name
//! sessions and groups whose leader is gone (a daemon's double fork, an
//! orphan under a subreaper) or that the parent left after forking (a
//! parent that called setsid later). For those, like CRIU, the restore
//! creates the task from somewhere else:
//!
//! - `ParentEarly`: the parent forks it before its own setsid, so it
//!   inherits the session (and group) the parent was born in;
//! - `Helper(pid)`: a short-lived helper process with the dead leader's
//!   PID, forked by the parent, creates the session (setsid) or group
//!   (setpgid) and forks the task with CLONE_PARENT, so the task is still
//!   the parent's child; the helper then exits and the parent reaps it.
//!
//! Members of a group whose leader is elsewhere in the tree join it with
//! setpgid once it exists (tasks are created concurrently down the tree).

use std::collections::{BTreeMap, BTreeSet};

/// One live task of the image: the fields this plan looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub pid: i32,
    pub ppid: i32,
    pub sid: i32,
    pub pgid: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creator {
    /// Forked by its parent, after the parent's own setsid/setpgid.
    Parent,
    /// Forked by its parent before the parent's setsid.
    ParentEarly,
    /// Forked with CLONE_PARENT by the helper with this PID.
    Helper(i32),
}

/// A helper: takes a dead leader's PID, creates its session (`setsid`) or
/// only its group, forks its tasks and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Helper {
    pub pid: i32,
    /// The task that forks (and reaps) it.
    pub parent: i32,
    pub setsid: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub creator: BTreeMap<i32, Creator>,
    pub helpers: Vec<Helper>,
}

/// Plans the creation of `tasks` (the root first, every parent before its
/// children). `taken` holds every PID of the image, zombies included: a
/// helper may not take one of those. Errors name the task and why.
pub fn plan(tasks: &[Layout], taken: &BTreeSet<i32>) -> Result<Plan, (i32, String)> {
    let by_pid: BTreeMap<i32, &Layout> = tasks.iter().map(|t| (t.pid, t)).collect();
    let mut out = Plan::default();
    // (sid, pgid) each task has right after it was created.
    let mut birth: BTreeMap<i32, Option<(i32, i32)>> = BTreeMap::new();
    let Some(root) = tasks.first() else {
        return Ok(out);
    };
    birth.insert(root.pid, None);
    out.creator.insert(root.pid, Creator::Parent);
    // A live leader of `pgid` in session `sid` that a task can join.
    let live_group = |pgid: i32, sid: i32| {
        by_pid
            .get(&pgid)
            .is_some_and(|l| l.pgid == pgid && l.sid == sid)
    };
    for t in &tasks[1..] {
        let Some(p) = by_pid.get(&t.ppid) else {
            return Err((t.pid, format!("its parent {} is not in the image", t.ppid)));
        };
        let p_birth = birth.get(&p.pid).copied().flatten();
        let own_or = |inherited: i32| t.pgid == t.pid || t.pgid == inherited;
        let (creator, born) = if t.sid == t.pid {
            (Creator::Parent, (p.sid, p.pgid))
        } else if t.sid == p.sid {
            if own_or(p.pgid) || live_group(t.pgid, t.sid) {
                (Creator::Parent, (p.sid, p.pgid))
            } else if !taken.contains(&t.pgid) {
                // A group whose leader is gone: one helper per group.
                match out.helpers.iter().find(|h| h.pid == t.pgid) {
                    Some(h) if h.parent != p.pid || h.setsid => {
                        return Err((
                            t.pid,
                            format!(
                                "process group {} (leader gone) has members with different parents",
                                t.pgid
                            ),
                        ))
                    }
                    Some(_) => {}
                    None => out.helpers.push(Helper {
                        pid: t.pgid,
                        parent: p.pid,
                        setsid: false,
                    }),
                }
                (Creator::Helper(t.pgid), (p.sid, t.pgid))
            } else {
                return Err((
                    t.pid,
                    format!(
                        "process group {} is led by a task that is not a live group leader in session {}",
                        t.pgid, t.sid
                    ),
                ));
            }
        } else if p.sid == p.pid && p_birth.is_some_and(|(sid, _)| sid == t.sid) {
            let (sid, pgid) = p_birth.expect("checked");
            if !(own_or(pgid) || live_group(t.pgid, t.sid)) {
                return Err((
                    t.pid,
                    format!(
                        "process group {} in session {} cannot be entered from its parent's first session",
                        t.pgid, t.sid
                    ),
                ));
            }
            (Creator::ParentEarly, (sid, pgid))
        } else if !taken.contains(&t.sid) {
            // A session whose leader is gone.
            match out.helpers.iter().find(|h| h.pid == t.sid) {
                Some(h) if h.parent != p.pid || !h.setsid => {
                    return Err((
                        t.pid,
                        format!(
                            "session {} (leader gone) has members with different parents",
                            t.sid
                        ),
                    ))
                }
                Some(_) => {}
                None => out.helpers.push(Helper {
                    pid: t.sid,
                    parent: p.pid,
                    setsid: true,
                }),
            }
            if !(own_or(t.sid) || live_group(t.pgid, t.sid)) {
                return Err((
                    t.pid,
                    format!(
                        "process group {} in session {} (leader gone) has no live leader either",
                        t.pgid, t.sid
                    ),
                ));
            }
            (Creator::Helper(t.sid), (t.sid, t.sid))
        } else {
            return Err((
                t.pid,
                format!(
                    "session {} is neither its own, its parent's ({}), the one its parent was born in, nor one whose leader is gone",
                    t.sid, p.sid
                ),
            ));
        };
        out.creator.insert(t.pid, creator);
        birth.insert(t.pid, Some(born));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pid: i32, ppid: i32, sid: i32, pgid: i32) -> Layout {
        Layout {
            pid,
            ppid,
            sid,
            pgid,
        }
    }

    fn taken(t: &[Layout]) -> BTreeSet<i32> {
        t.iter().map(|t| t.pid).collect()
    }

    #[test]
    fn ordinary_layouts_need_no_helper() {
        let t = [
            l(10, 0, 10, 10),
            l(11, 10, 10, 10),
            l(12, 10, 10, 12),
            l(13, 10, 10, 12), // joins its older sibling's group
            l(14, 10, 14, 14),
            l(15, 14, 14, 14),
        ];
        let p = plan(&t, &taken(&t)).unwrap();
        assert!(p.helpers.is_empty());
        assert!(p.creator.values().all(|c| *c == Creator::Parent));
    }

    #[test]
    fn dead_session_and_group_leaders_get_helpers() {
        // 20 is a subreaper; 30 (setsid, gone) left 31 and 32; 40 (own
        // group, gone) left 41.
        let t = [
            l(10, 0, 10, 10),
            l(20, 10, 10, 10),
            l(31, 20, 30, 31),
            l(32, 20, 30, 30),
            l(41, 20, 10, 40),
        ];
        let p = plan(&t, &taken(&t)).unwrap();
        assert_eq!(
            p.helpers,
            vec![
                Helper {
                    pid: 30,
                    parent: 20,
                    setsid: true
                },
                Helper {
                    pid: 40,
                    parent: 20,
                    setsid: false
                }
            ]
        );
        assert_eq!(p.creator[&31], Creator::Helper(30));
        assert_eq!(p.creator[&32], Creator::Helper(30));
        assert_eq!(p.creator[&41], Creator::Helper(40));
    }

    #[test]
    fn a_child_left_in_its_parents_first_session() {
        // 20 forked 21, then called setsid.
        let t = [l(10, 0, 10, 10), l(20, 10, 20, 20), l(21, 20, 10, 10)];
        let p = plan(&t, &taken(&t)).unwrap();
        assert_eq!(p.creator[&21], Creator::ParentEarly);
    }

    #[test]
    fn impossible_layouts_are_refused_with_the_task() {
        // Session 30's leader is gone but its members have different parents.
        let t = [
            l(10, 0, 10, 10),
            l(20, 10, 10, 10),
            l(21, 10, 10, 10),
            l(31, 20, 30, 30),
            l(32, 21, 30, 30),
        ];
        assert_eq!(plan(&t, &taken(&t)).unwrap_err().0, 32);
        // The dead leader's PID is held by a zombie of the image.
        let t = [l(10, 0, 10, 10), l(31, 10, 30, 30)];
        let mut tk = taken(&t);
        tk.insert(30);
        assert_eq!(plan(&t, &tk).unwrap_err().0, 31);
    }
}
