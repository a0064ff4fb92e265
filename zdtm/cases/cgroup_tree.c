/*
 * cgroup_tree: a process tree whose members sit in different cgroups
 * comes back with each process in its own cgroups.
 *
 * In the v1 pids hierarchy (if mounted) and in cgroup2, the root creates
 * zdtm.<uniq> (cg_name()) below its own cgroup (the tree's cgroup, BASE) with
 * three children a, b and c:
 *
 *	BASE            v1: pids.max=29   v2: cgroup.max.descendants=4
 *	 +- a           the root
 *	 +- b           child 1           v1: pids.max=11   v2: cgroup.max.depth=1
 *	 +- c           child 2           v1: pids.max=13
 *
 * Each child joins its cgroup itself. After SIGTERM the root checks, from
 * outside, that every process is in BASE/<its dir> in both hierarchies,
 * and that every limit reads back; each child checks its own
 * /proc/self/cgroup against what it was and exits 0 if it is the same.
 *
 * --newroot=PATH: the case is restored with --cgroup-root PATH (case
 * cgroup_root). The runner's between-dump-and-restore hook leaves the
 * file "cgroup_root.restored" in the work directory; when it is there,
 * BASE must be PATH (the tree moved under the new root, with its
 * properties recreated there), and the children check against their new
 * place. Without the file (--leave-running) BASE is the original one.
 * PATH may lie below cgroups that do not exist, named cg_name() + ".<word>"
 * (the restore makes them, and must enable in their cgroup.subtree_control
 * the controllers of BASE's properties); the case removes them too.
 *
 * Before the verdict everything moves back to its own cgroups and every
 * directory created (in either place) is removed.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "cgroup.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

const char *test_doc = "Check that processes of a tree in different cgroups are restored into them";

static char *newroot;
TEST_OPTION(newroot, string, "the --cgroup-root the restore is given", 0);

#define MARK "cgroup_root.restored"
#define NKIDS 2

static int failed;
static int have_v1;
static char name[256];
/* Own cgroups (hierarchy paths) and mounts. */
static char own1[512], own2[512], mnt1[512], mnt2[512];
static const char *sub[3] = { "a", "b", "c" };

static void dir_of(char *buf, size_t len, int v2, const char *base, const char *s)
{
	snprintf(buf, len, "%s%s%s%s", v2 ? mnt2 : mnt1, strcmp(base, "/") ? base : "", s ? "/" : "", s ? s : "");
}

/* BASE as a hierarchy path: the original one or the new root. */
static void base_of(char *buf, size_t len, int v2, int restored)
{
	const char *own = v2 ? own2 : own1;

	if (restored && newroot)
		snprintf(buf, len, "%s", newroot);
	else
		snprintf(buf, len, "%s%s/%s", strcmp(own, "/") ? own : "", "", name);
}

static int mkdirs(int v2)
{
	char base[1024], d[2048];
	int i;

	base_of(base, sizeof(base), v2, 0);
	dir_of(d, sizeof(d), v2, base, NULL);
	if (mkdir(d, 0755))
		return -1;
	for (i = 0; i < 3; i++) {
		dir_of(d, sizeof(d), v2, base, sub[i]);
		if (mkdir(d, 0755))
			return -1;
	}
	if (!v2) {
		dir_of(d, sizeof(d), 0, base, NULL);
		if (cg_set(d, "pids.max", "29"))
			return -1;
		dir_of(d, sizeof(d), 0, base, "b");
		if (cg_set(d, "pids.max", "11"))
			return -1;
		dir_of(d, sizeof(d), 0, base, "c");
		if (cg_set(d, "pids.max", "13"))
			return -1;
	} else {
		dir_of(d, sizeof(d), 1, base, NULL);
		if (cg_set(d, "cgroup.max.descendants", "4"))
			return -1;
		dir_of(d, sizeof(d), 1, base, "b");
		if (cg_set(d, "cgroup.max.depth", "1"))
			return -1;
	}
	return 0;
}

static int join(int idx)
{
	char base[1024], d[2048];

	if (have_v1) {
		base_of(base, sizeof(base), 0, 0);
		dir_of(d, sizeof(d), 0, base, sub[idx]);
		if (cg_join(d, 0))
			return -1;
	}
	base_of(base, sizeof(base), 1, 0);
	dir_of(d, sizeof(d), 1, base, sub[idx]);
	return cg_join(d, 0);
}

static void rmdirs(int v2, int restored)
{
	char base[1024], d[2048];
	int i;

	base_of(base, sizeof(base), v2, restored);
	for (i = 0; i < 3; i++) {
		dir_of(d, sizeof(d), v2, base, sub[i]);
		if (cg_rmdir(d))
			pr_perror("rmdir %s", d);
	}
	dir_of(d, sizeof(d), v2, base, NULL);
	if (cg_rmdir(d))
		pr_perror("rmdir %s", d);
}

/* The parents of PATH that are the case's own (see above), deepest first. */
static void rm_newroot_parents(int v2)
{
	char p[1024], d[2048];
	char *slash;

	if (!newroot)
		return;
	snprintf(p, sizeof(p), "%s", newroot);
	while ((slash = strrchr(p, '/')) && slash != p) {
		*slash = '\0';
		slash = strrchr(p, '/');
		if (!slash || strncmp(slash + 1, name, strlen(name)) || slash[1 + strlen(name)] != '.')
			break;
		dir_of(d, sizeof(d), v2, p, NULL);
		if (cg_rmdir(d))
			pr_perror("rmdir %s", d);
	}
}

static void cleanup(void)
{
	char d[1024];

	if (have_v1) {
		dir_of(d, sizeof(d), 0, own1, NULL);
		cg_join(d, 0);
		rmdirs(0, 1);
		rm_newroot_parents(0);
		rmdirs(0, 0);
	}
	dir_of(d, sizeof(d), 1, own2, NULL);
	cg_join(d, 0);
	rmdirs(1, 1);
	rm_newroot_parents(1);
	rmdirs(1, 0);
}

/* Is task `pid` in BASE/sub[idx] in both hierarchies? */
static void check_task(pid_t pid, int idx, int restored)
{
	char base[1024], want[2048], have[1024];

	if (have_v1) {
		base_of(base, sizeof(base), 0, restored);
		snprintf(want, sizeof(want), "%s/%s", base, sub[idx]);
		test_check(!cg_of(pid, "pids", have, sizeof(have)) && !strcmp(have, want),
			   "pid %d is in pids cgroup %s, expected %s", pid, have, want);
	}
	base_of(base, sizeof(base), 1, restored);
	snprintf(want, sizeof(want), "%s/%s", base, sub[idx]);
	test_check(!cg_of(pid, NULL, have, sizeof(have)) && !strcmp(have, want),
		   "pid %d is in cgroup2 %s, expected %s", pid, have, want);
}

static void check_prop(int v2, const char *s, const char *file, const char *val, int restored)
{
	char base[1024], d[2048], have[64];

	base_of(base, sizeof(base), v2, restored);
	dir_of(d, sizeof(d), v2, base, s);
	test_check(!cg_get(d, file, have, sizeof(have)) && !strcmp(have, val), "%s/%s is %s, expected %s", d,
		   file, have, val);
}

static volatile sig_atomic_t kid_term;
static void kid_sig(int s)
{
	kid_term = 1;
}

static int kid(int idx, int ready_fd)
{
	char before[2048], after[2048];
	sigset_t term, old;
	int restored;

	/* SIGTERM only inside sigsuspend: no window between test and sleep. */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &old);
	sigdelset(&old, SIGTERM);
	signal(SIGTERM, kid_sig);
	if (join(idx)) {
		pr_perror("child %d: joining its cgroup", idx);
		return 1;
	}
	if (cg_self(NULL, before, sizeof(before)))
		return 1;
	if (write(ready_fd, "x", 1) != 1)
		return 1;
	close(ready_fd);
	while (!kid_term)
		sigsuspend(&old);
	restored = access(MARK, F_OK) == 0;
	if (restored && newroot) {
		/* The same place relative to the new root. */
		snprintf(before, sizeof(before), "%s/%s", newroot, sub[idx]);
	}
	if (cg_self(NULL, after, sizeof(after)) || strcmp(before, after)) {
		test_msg("child %d: in cgroup2 %s, expected %s\n", idx, after, before);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	pid_t kids[NKIDS];
	int i, p[2], status, restored;
	char c;

	test_init(argc, argv);
	if (cg_name(name, sizeof(name))) {
		fail("cg_name: %m");
		return 1;
	}
	have_v1 = !cg_mount("pids", mnt1, sizeof(mnt1)) && !cg_self("pids", own1, sizeof(own1));
	if (cg_mount(NULL, mnt2, sizeof(mnt2)) || cg_self(NULL, own2, sizeof(own2))) {
		fail("no cgroup2 hierarchy");
		return 1;
	}
	if ((have_v1 && mkdirs(0)) || mkdirs(1) || join(0)) {
		pr_perror("setting up the cgroups");
		cleanup();
		fail("setting up the cgroups");
		return 1;
	}
	if (pipe(p)) {
		cleanup();
		fail("pipe");
		return 1;
	}
	for (i = 0; i < NKIDS; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			close(p[0]);
			_exit(kid(i + 1, p[1]));
		}
		if (kids[i] < 0 || read(p[0], &c, 1) != 1) {
			fail("starting child %d", i + 1);
			return 1;
		}
	}
	close(p[0]);
	close(p[1]);

	test_daemon();
	test_waitsig();

	restored = access(MARK, F_OK) == 0;
	test_msg("restored with a new root: %s\n", restored && newroot ? "yes" : "no");
	check_task(getpid(), 0, restored);
	for (i = 0; i < NKIDS; i++)
		check_task(kids[i], i + 1, restored);
	if (have_v1) {
		check_prop(0, NULL, "pids.max", "29", restored);
		check_prop(0, "b", "pids.max", "11", restored);
		check_prop(0, "c", "pids.max", "13", restored);
	}
	check_prop(1, NULL, "cgroup.max.descendants", "4", restored);
	check_prop(1, "b", "cgroup.max.depth", "1", restored);
	for (i = 0; i < NKIDS; i++) {
		kill(kids[i], SIGTERM);
		test_check(test_wait_exit(kids[i], &status, 10) == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
			   "child %d failed (status %x)", i + 1, status);
	}
	cleanup();
	if (failed)
		fail("the tree's cgroups differ after restore");
	else
		pass();
	return 0;
}
