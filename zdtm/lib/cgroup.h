/*
 * cgroup.h - cgroup helpers for the zdtm cgroup cases.
 *
 * Hierarchies are found in /proc/self/mountinfo, never assumed: a v1
 * hierarchy by one of its controllers ("pids", "freezer") or its name
 * ("name=systemd"), cgroup2 by passing NULL. Cases name the cgroups they
 * create with cg_name() and remove them before their verdict: the runner
 * fails a trial that leaves such a cgroup behind, and removes it.
 */
#ifndef ZDTM_CGROUP_H
#define ZDTM_CGROUP_H

#include <stddef.h>
#include <sys/types.h>

/*
 * The name of the cgroup a case creates: "zdtm.<basename of the work
 * directory>" (the runner starts every case in a work directory of its own,
 * named uniquely, and substitutes the same name for {uniq} in the case
 * table). Not the pid: in the ns flavour every case's root is pid 3 of its
 * namespace, so a case's h and ns trials, or two cases, would collide; and
 * the runner, which removes what a trial leaves behind (cgroups.rs), knows
 * the work directory but not the pids inside a pid namespace. A case that
 * needs a second top-level cgroup names it cg_name() + ".<word>". Call it
 * before any chdir. 0, or -1 with errno.
 */
int cg_name(char *buf, size_t len);
/* Mount point of hierarchy `ctl` (NULL: cgroup2) into buf; -1 if none. */
int cg_mount(const char *ctl, char *buf, size_t len);
/* The caller's cgroup in hierarchy `ctl` (NULL: cgroup2), "/a/b"; -1 if none. */
int cg_self(const char *ctl, char *buf, size_t len);
/* Same for another task (pid). */
int cg_of(pid_t pid, const char *ctl, char *buf, size_t len);
/* mount + `path` (a path inside the hierarchy, "/" for its root). */
int cg_path(const char *ctl, const char *path, char *buf, size_t len);
/* Write `val` to dir/file; 0 or -1 with errno. */
int cg_set(const char *dir, const char *file, const char *val);
/* Read dir/file without the trailing newline; 0 or -1 with errno. */
int cg_get(const char *dir, const char *file, char *buf, size_t len);
/* Move `pid` (0: the caller) into dir (cgroup.procs). */
int cg_join(const char *dir, pid_t pid);
/* rmdir that does not mind a cgroup that is gone already. */
int cg_rmdir(const char *dir);

#endif /* ZDTM_CGROUP_H */
