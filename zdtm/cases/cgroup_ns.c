/*
 * cgroup_ns: a tree in a cgroup namespace of its own sees the same
 * cgroup paths after the restore, rooted where its namespace was.
 *
 * In the v1 pids hierarchy (if mounted) and in cgroup2 the root creates,
 * below its own cgroup, BASE = zdtm.<uniq> (cg_name()) with
 *
 *	BASE
 *	 +- ns          the namespace's root; child K2 moves here
 *	     +- sub     the root and child K1
 *
 * The root joins BASE/ns, unshares a cgroup namespace (rooted there in
 * these two hierarchies, and at its own cgroup in every other), then joins
 * BASE/ns/sub, and forks K1 (stays) and K2 (moves to the namespace root,
 * "/" as it sees it). Each records its /proc/self/cgroup: the pids and
 * cgroup2 lines read "/sub" (K2: "/").
 *
 * After SIGTERM each checks that /proc/self/cgroup reads exactly as
 * before, and the root that it is not in the cgroup namespace it started
 * in and that its children share its namespace. Then everything goes
 * back to its own cgroups (the root first back into the runner's cgroup
 * namespace) and BASE is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "cgroup.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

const char *test_doc = "Check that a cgroup namespace of the tree's own keeps its root";

#define NKIDS 2

static int have_v1;
static char name[256];
static char own1[512], own2[512], mnt1[512], mnt2[512];
static pid_t runner;
static ino_t host_ns;

/* mount + own + "/" + name + rel */
static void dir_of(char *buf, size_t len, int v2, const char *rel)
{
	const char *own = v2 ? own2 : own1;

	snprintf(buf, len, "%s%s/%s%s", v2 ? mnt2 : mnt1, strcmp(own, "/") ? own : "", name, rel);
}

static int each(int (*f)(const char *dir), const char *rel)
{
	char d[2048];

	if (have_v1) {
		dir_of(d, sizeof(d), 0, rel);
		if (f(d))
			return -1;
	}
	dir_of(d, sizeof(d), 1, rel);
	return f(d);
}

static int mk(const char *d)
{
	return mkdir(d, 0755);
}

static int join_dir(const char *d)
{
	return cg_join(d, 0);
}

static int rm(const char *d)
{
	return cg_rmdir(d);
}

static int read_self(char *buf, size_t len)
{
	int fd = open("/proc/self/cgroup", O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

static ino_t ns_of(pid_t pid)
{
	char path[64];
	struct stat st;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/ns/cgroup", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/ns/cgroup");
	if (stat(path, &st))
		return 0;
	return st.st_ino;
}

/* The line of hierarchy `key` ("pids" or "" for cgroup2) reads `want`. */
static int line_is(const char *text, const char *key, const char *want)
{
	char pat[64];
	const char *p;
	size_t n;

	snprintf(pat, sizeof(pat), ":%s:", key);
	p = strstr(text, pat);
	if (!p)
		return 0;
	p += strlen(pat);
	n = strcspn(p, "\n");
	return n == strlen(want) && !strncmp(p, want, n);
}

static int expect_view(const char *who, const char *text, const char *want)
{
	if ((have_v1 && !line_is(text, "pids", want)) || !line_is(text, "", want)) {
		pr_err("%s: /proc/self/cgroup does not read %s:\n%s", who, want, text);
		return 0;
	}
	return 1;
}

static int kid(int i, int fd)
{
	char before[4096], after[4096];
	const char *want = i == 1 ? "/sub" : "/";

	if (i == 2 && each(join_dir, "/ns")) {
		pr_perror("K2: joining the namespace root");
		return 2;
	}
	if (read_self(before, sizeof(before)) || !expect_view(i == 1 ? "K1" : "K2", before, want))
		return 2;
	if (write(fd, "x", 1) != 1)
		return 2;
	close(fd);
	test_waitsig();
	if (read_self(after, sizeof(after)))
		return 1;
	if (strcmp(before, after)) {
		pr_err("K%d: /proc/self/cgroup was\n%sand is\n%s", i, before, after);
		return 1;
	}
	return 0;
}

/* Back into the runner's cgroup namespace, so that own cgroups are in view. */
static void leave_ns(void)
{
	int pfd = syscall(SYS_pidfd_open, runner, 0);

	if (pfd < 0 || ns_of(runner) != host_ns || setns(pfd, CLONE_NEWCGROUP))
		pr_perror("back into the runner's cgroup namespace");
	if (pfd >= 0)
		close(pfd);
}

static void cleanup(void)
{
	char d[2048];

	if (have_v1) {
		snprintf(d, sizeof(d), "%s%s", mnt1, own1);
		if (cg_join(d, 0))
			pr_perror("back to %s", d);
	}
	snprintf(d, sizeof(d), "%s%s", mnt2, own2);
	if (cg_join(d, 0))
		pr_perror("back to %s", d);
	each(rm, "/ns/sub");
	each(rm, "/ns");
	if (each(rm, ""))
		pr_perror("removing %s", name);
}

int main(int argc, char **argv)
{
	pid_t kids[NKIDS];
	char before[4096], after[4096], c;
	int i, p[2], status, failed = 0;

	runner = getppid(); /* the launcher's parent */
	host_ns = ns_of(0);
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
	if (each(mk, "") || each(mk, "/ns") || each(mk, "/ns/sub") || each(join_dir, "/ns")) {
		pr_perror("setting up the cgroups");
		cleanup();
		fail("setting up the cgroups");
		return 1;
	}
	if (unshare(CLONE_NEWCGROUP)) {
		pr_perror("unshare(CLONE_NEWCGROUP)");
		cleanup();
		fail("unshare");
		return 1;
	}
	if (each(join_dir, "/ns/sub") || read_self(before, sizeof(before)) || !expect_view("R", before, "/sub")) {
		pr_perror("joining ns/sub");
		leave_ns();
		cleanup();
		fail("setting up the cgroups");
		return 1;
	}
	if (pipe(p)) {
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

	if (read_self(after, sizeof(after)) || strcmp(before, after)) {
		pr_err("R: /proc/self/cgroup was\n%sand is\n%s", before, after);
		failed = 1;
	}
	if (ns_of(0) == host_ns) {
		pr_err("R: in the cgroup namespace it started in\n");
		failed = 1;
	}
	for (i = 0; i < NKIDS; i++) {
		if (ns_of(kids[i]) != ns_of(0)) {
			pr_err("K%d: cgroup namespace %lu, not the root's %lu\n", i + 1, (unsigned long)ns_of(kids[i]),
			       (unsigned long)ns_of(0));
			failed = 1;
		}
		kill(kids[i], SIGTERM);
		if (test_wait_exit(kids[i], &status, 10) || !WIFEXITED(status) || WEXITSTATUS(status)) {
			pr_err("K%d failed (status %x)\n", i + 1, status);
			failed = 1;
		}
	}
	leave_ns();
	cleanup();
	if (failed)
		fail("the cgroup namespace differs after restore");
	else
		pass();
	return 0;
}
