/*
 * cgroup_limits: a task's cgroups and their limits survive
 * checkpoint/restore.
 *
 * --v1=CTL[,CTL...]  for each v1 controller, create
 *           <CTL hierarchy>/<own cgroup>/zdtm.<uniq> (cg_name()), set its
 *           properties there and join it:
 *             pids     pids.max=37
 *             memory   memory.limit_in_bytes=256M, soft_limit_in_bytes=128M,
 *                      swappiness=30
 *             cpu      cpu.shares=512, cfs_period_us=50000, cfs_quota_us=25000
 *             cpuset   cpuset.cpus=0, cpuset.mems=0
 *             devices  deny all, allow c 1:3 rwm and c 1:5 rw (devices.list)
 * --v2      create the nested cgroup2 pair zdtm.<uniq>/leaf: the
 *           parent gets cgroup.max.descendants=5 and, if a controller of
 *           pids, memory, hugetlb can be enabled, cgroup.subtree_control
 *           +CTL (enabled in the own cgroup first when needed, and left
 *           enabled there: trials of other runners on the machine may rely
 *           on it at the same moment, and an enabled controller changes
 *           nothing for processes); the leaf gets a limit of that
 *           controller (pids.max=41,
 *           memory.max=256M, hugetlb.2MB.max=4M) and cgroup.max.depth=2,
 *           and the task joins the leaf.
 *
 * After SIGTERM: /proc/self/cgroup must be byte for byte what it was, and
 * every property must read back as set. Then the task moves back to its
 * own cgroups and removes what it created, so nothing is left behind.
 * Used by the cases cgroup_pids (--v1=pids), cgroup_v2 (--v2),
 * cgroup_deleted (both; the runner removes the cgroups between dump and
 * restore, so the restore must recreate them with their properties) and
 * cgroup_v1_props (every v1 controller above, removed in between too).
 *
 * --sabotage (debug): change one limit after SIGTERM, to see the check fail.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "cgroup.h"

/* Paths here are far below PATH_MAX; truncation cannot happen. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

const char *test_doc = "Check that cgroup membership and limits (v1 and nested v2) are restored";

static char *v1;
TEST_OPTION(v1, string, "v1 controllers to create limited cgroups in (pids,memory,cpu,cpuset,devices)", 0);
static int v2;
TEST_OPTION(v2, bool, "create a nested cgroup2 pair with limits", 0);
static int sabotage;
TEST_OPTION(sabotage, bool, "debug: change a limit after SIGTERM", 0);

#define NPROPS 24
#define NV1 8
static struct {
	char dir[1024], file[64], val[64];
} props[NPROPS];
static int nprops;
static int failed;

static char name[256];
static char v1_own[NV1][1024], v1_dir[NV1][1024];
static int nv1;
static char v2_own[1024], v2_dir[1024], v2_leaf[1024];
static char v2_enabled_in_own[32];

static int prop(const char *dir, const char *file, const char *val)
{
	if (cg_set(dir, file, val)) {
		pr_perror("writing %s to %s/%s", val, dir, file);
		return -1;
	}
	snprintf(props[nprops].dir, sizeof(props[0].dir), "%s", dir);
	snprintf(props[nprops].file, sizeof(props[0].file), "%s", file);
	snprintf(props[nprops].val, sizeof(props[0].val), "%s", val);
	nprops++;
	return 0;
}

/* Record a property set by other means (devices). */
static void expect(const char *dir, const char *file, const char *val)
{
	snprintf(props[nprops].dir, sizeof(props[0].dir), "%s", dir);
	snprintf(props[nprops].file, sizeof(props[0].file), "%s", file);
	snprintf(props[nprops].val, sizeof(props[0].val), "%s", val);
	nprops++;
}

static int setup_v1_one(const char *ctl)
{
	char own[512], mnt[512];
	char *dir = v1_dir[nv1];

	if (nv1 == NV1) {
		pr_err("too many v1 controllers\n");
		return -1;
	}
	if (cg_mount(ctl, mnt, sizeof(mnt)) || cg_self(ctl, own, sizeof(own))) {
		pr_perror("no v1 %s hierarchy", ctl);
		return -1;
	}
	snprintf(v1_own[nv1], sizeof(v1_own[0]), "%s%s", mnt, strcmp(own, "/") ? own : "");
	snprintf(dir, sizeof(v1_dir[0]), "%s/%s", v1_own[nv1], name);
	if (mkdir(dir, 0755)) {
		pr_perror("mkdir %s", dir);
		return -1;
	}
	nv1++;
	if (!strcmp(ctl, "pids") && prop(dir, "pids.max", "37"))
		return -1;
	if (!strcmp(ctl, "memory") &&
	    (prop(dir, "memory.limit_in_bytes", "268435456") || prop(dir, "memory.soft_limit_in_bytes", "134217728") ||
	     prop(dir, "memory.swappiness", "30")))
		return -1;
	if (!strcmp(ctl, "cpu") && (prop(dir, "cpu.shares", "512") || prop(dir, "cpu.cfs_period_us", "50000") ||
				    prop(dir, "cpu.cfs_quota_us", "25000")))
		return -1;
	if (!strcmp(ctl, "cpuset") && (prop(dir, "cpuset.cpus", "0") || prop(dir, "cpuset.mems", "0")))
		return -1;
	if (!strcmp(ctl, "devices")) {
		if (cg_set(dir, "devices.deny", "a") || cg_set(dir, "devices.allow", "c 1:3 rwm") ||
		    cg_set(dir, "devices.allow", "c 1:5 rw")) {
			pr_perror("setting %s/devices.*", dir);
			return -1;
		}
		expect(dir, "devices.list", "c 1:3 rwm\nc 1:5 rw");
	}
	if (cg_join(dir, 0)) {
		pr_perror("joining %s", dir);
		return -1;
	}
	return 0;
}

static int setup_v1(void)
{
	char *list = strdup(v1), *save = NULL, *ctl;

	for (ctl = strtok_r(list, ",", &save); ctl; ctl = strtok_r(NULL, ",", &save))
		if (setup_v1_one(ctl))
			return -1;
	return 0;
}

/* Enable a controller for our subtree: in the own cgroup first if needed. */
static const char *pick_controller(void)
{
	static const char *ctls[] = { "pids", "memory", "hugetlb" };
	char avail[512], enabled[512];
	unsigned i;

	if (cg_get(v2_own, "cgroup.controllers", avail, sizeof(avail)))
		return NULL;
	for (i = 0; i < ARRAY_SIZE(ctls); i++) {
		char op[32];

		if (!strstr(avail, ctls[i]))
			continue;
		if (cg_get(v2_own, "cgroup.subtree_control", enabled, sizeof(enabled)))
			return NULL;
		if (!strstr(enabled, ctls[i])) {
			snprintf(op, sizeof(op), "+%s", ctls[i]);
			if (cg_set(v2_own, "cgroup.subtree_control", op)) {
				test_msg("cannot enable %s in %s: %m\n", ctls[i], v2_own);
				continue;
			}
			snprintf(v2_enabled_in_own, sizeof(v2_enabled_in_own), "%s", ctls[i]);
		}
		return ctls[i];
	}
	return NULL;
}

static int setup_v2(void)
{
	char own[512], mnt[512];
	const char *ctl;

	if (cg_mount(NULL, mnt, sizeof(mnt)) || cg_self(NULL, own, sizeof(own))) {
		pr_perror("no cgroup2 hierarchy");
		return -1;
	}
	snprintf(v2_own, sizeof(v2_own), "%s%s", mnt, strcmp(own, "/") ? own : "");
	snprintf(v2_dir, sizeof(v2_dir), "%s/%s", v2_own, name);
	snprintf(v2_leaf, sizeof(v2_leaf), "%s/leaf", v2_dir);
	ctl = pick_controller();
	if (mkdir(v2_dir, 0755) || mkdir(v2_leaf, 0755)) {
		pr_perror("mkdir %s", v2_leaf);
		return -1;
	}
	if (prop(v2_dir, "cgroup.max.descendants", "5") || prop(v2_leaf, "cgroup.max.depth", "2"))
		return -1;
	if (ctl) {
		char op[32];

		snprintf(op, sizeof(op), "+%s", ctl);
		if (cg_set(v2_dir, "cgroup.subtree_control", op)) {
			pr_perror("enabling %s in %s", ctl, v2_dir);
			return -1;
		}
		/* The check reads the file back: it shows the bare name. */
		expect(v2_dir, "cgroup.subtree_control", ctl);
		if (!strcmp(ctl, "pids") && prop(v2_leaf, "pids.max", "41"))
			return -1;
		if (!strcmp(ctl, "memory") && prop(v2_leaf, "memory.max", "268435456"))
			return -1;
		if (!strcmp(ctl, "hugetlb") && prop(v2_leaf, "hugetlb.2MB.max", "4194304"))
			return -1;
	} else {
		test_msg("no cgroup2 controller can be enabled here; checking core properties only\n");
	}
	if (cg_join(v2_leaf, 0)) {
		pr_perror("joining %s", v2_leaf);
		return -1;
	}
	return 0;
}

static void cleanup(void)
{
	int i;

	for (i = 0; i < nv1; i++) {
		cg_join(v1_own[i], 0);
		if (cg_rmdir(v1_dir[i]))
			pr_perror("rmdir %s", v1_dir[i]);
	}
	if (v2_dir[0]) {
		cg_join(v2_own, 0);
		if (cg_rmdir(v2_leaf) || cg_rmdir(v2_dir))
			pr_perror("rmdir %s", v2_dir);
		if (v2_enabled_in_own[0])
			test_msg("left %s enabled in %s\n", v2_enabled_in_own, v2_own);
	}
}

static int read_all(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	char before[4096], after[4096], val[256];
	int i, status;
	pid_t pid;

	test_init(argc, argv);
	if (cg_name(name, sizeof(name))) {
		fail("cg_name: %m");
		return 1;
	}
	if ((v1 && setup_v1()) || (v2 && setup_v2())) {
		cleanup();
		fail("setting up the cgroups");
		return 1;
	}
	if (read_all("/proc/self/cgroup", before, sizeof(before))) {
		cleanup();
		fail("reading /proc/self/cgroup");
		return 1;
	}
	test_msg("cgroups before:\n%s", before);

	test_daemon();
	test_waitsig();

	if (sabotage && nprops)
		cg_set(props[0].dir, props[0].file, "3");
	if (read_all("/proc/self/cgroup", after, sizeof(after)))
		test_check(0, "reading /proc/self/cgroup: %m");
	test_check(!strcmp(before, after), "/proc/self/cgroup was\n%sand is\n%s", before, after);
	for (i = 0; i < nprops; i++) {
		if (cg_get(props[i].dir, props[i].file, val, sizeof(val))) {
			test_check(0, "%s/%s: %m", props[i].dir, props[i].file);
			continue;
		}
		test_check(!strcmp(val, props[i].val), "%s/%s is %s, expected %s", props[i].dir, props[i].file, val,
			   props[i].val);
	}
	/* The task can still fork in its cgroups (and the child lands there). */
	pid = fork();
	if (pid == 0) {
		char mine[4096];

		read_all("/proc/self/cgroup", mine, sizeof(mine));
		_exit(strcmp(mine, before) ? 3 : 0);
	}
	test_check(pid > 0, "fork: %m");
	if (pid > 0) {
		test_check(test_wait_exit(pid, &status, 10) == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
			   "the child is not in its parent's cgroups (status %x)", status);
	}
	cleanup();
	if (failed)
		fail("cgroups differ after restore");
	else
		pass();
	return 0;
}
