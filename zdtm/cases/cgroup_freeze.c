/*
 * cgroup_freeze: a tree that keeps forking is checkpointed through its
 * freezer cgroup (`dump --freeze-cgroup`).
 *
 * The freezer cgroup PATH is /zdtm.<uniq> (cg_name()) at the top of the
 * freezer hierarchy (the v1 freezer if mounted, else cgroup2); the program
 * creates it and joins it, and the runner gives the same PATH to `ckpt dump
 * --freeze-cgroup`.
 *
 * The root maps a shared counter page and forks a spawner, which moves
 * itself into the child cgroup PATH/kids (the freezer freezes the whole
 * subtree, so the dump must seize tasks of child cgroups too) and forks
 * short-lived children without pause (each lives up to a millisecond, at
 * most four at a time, reaped as they exit, so the tree changes all the
 * time and holds zombies now and then) and counts them. After SIGTERM the
 * root checks that
 *   - the freezer is thawed (a dump that left it frozen would also hang
 *     the case), and that it is still in PATH and the spawner in
 *     PATH/kids;
 *   - the spawner still forks: the counter moves on within 3 seconds;
 * then stops the spawner (which reaps every child and exits 0 unless a
 * fork failed) and removes the cgroup.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "cgroup.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

const char *test_doc = "Check that a forking tree is dumped through its freezer cgroup";

/* The freezer cgroup as a path inside the freezer hierarchy. */
static char cg[300];

#define MAX_KIDS 4

static int failed;
static volatile sig_atomic_t stop;
static void on_term(int s)
{
	stop = 1;
}

static int spawner(volatile unsigned long *counter)
{
	int live = 0, st;
	unsigned seed = getpid();

	signal(SIGTERM, on_term);
	while (!stop) {
		pid_t p;

		while (live > 0 && waitpid(-1, &st, live >= MAX_KIDS ? 0 : WNOHANG) > 0)
			live--;
		p = fork();
		if (p < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			test_msg("spawner: fork: %m\n");
			return 2;
		}
		if (p == 0) {
			struct timespec ts = { 0, (rand_r(&seed) % 1000) * 1000 };

			nanosleep(&ts, NULL);
			_exit(0);
		}
		seed++;
		live++;
		(*counter)++;
	}
	while (waitpid(-1, &st, 0) > 0 || errno == EINTR)
		;
	return 0;
}

int main(int argc, char **argv)
{
	char mnt[512], own[512], ownpath[1024], dir[1024], kids[1100], kidpath[600], have[512], state[64];
	const char *ctl = "freezer";
	volatile unsigned long *counter;
	unsigned long c1, c2;
	pid_t sp;
	int status, i;

	test_init(argc, argv);
	cg[0] = '/';
	if (cg_name(cg + 1, sizeof(cg) - 1)) {
		fail("cg_name: %m");
		return 1;
	}
	if (cg_mount(ctl, mnt, sizeof(mnt))) {
		ctl = NULL; /* cgroup2 */
		if (cg_mount(NULL, mnt, sizeof(mnt))) {
			fail("no freezer hierarchy");
			return 1;
		}
	}
	if (cg_self(ctl, own, sizeof(own))) {
		fail("own freezer cgroup");
		return 1;
	}
	snprintf(ownpath, sizeof(ownpath), "%s%s", mnt, strcmp(own, "/") ? own : "");
	snprintf(dir, sizeof(dir), "%s%s", mnt, cg);
	snprintf(kids, sizeof(kids), "%s/kids", dir);
	snprintf(kidpath, sizeof(kidpath), "%s/kids", cg);
	if (mkdir(dir, 0755) || mkdir(kids, 0755) || cg_join(dir, 0)) {
		pr_perror("creating/joining %s", dir);
		cg_rmdir(kids);
		cg_rmdir(dir);
		fail("setting up the freezer cgroup");
		return 1;
	}
	counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counter == MAP_FAILED) {
		fail("mmap");
		return 1;
	}
	sp = fork();
	if (sp == 0) {
		if (cg_join(kids, 0)) {
			pr_perror("joining %s", kids);
			_exit(3);
		}
		_exit(spawner(counter));
	}
	if (sp < 0) {
		fail("fork");
		return 1;
	}
	/* Ready once the spawner is busy. */
	for (i = 0; i < 1000 && *counter < 20; i++)
		usleep(1000);

	test_daemon();
	test_waitsig();

	if (!cg_get(dir, ctl ? "freezer.state" : "cgroup.freeze", state, sizeof(state)))
		test_check(!strcmp(state, ctl ? "THAWED" : "0"), "the freezer is %s after restore", state);
	else
		test_check(0, "reading the freezer state of %s: %m", dir);
	test_check(!cg_self(ctl, have, sizeof(have)) && !strcmp(have, cg), "the root is in %s, not %s", have, cg);
	test_check(!cg_of(sp, ctl, have, sizeof(have)) && !strcmp(have, kidpath), "the spawner is in %s, not %s",
		   have, kidpath);
	c1 = *counter;
	for (i = 0; i < 3000 && *counter < c1 + 10; i++)
		usleep(1000);
	c2 = *counter;
	test_check(c2 >= c1 + 10, "the spawner does not fork any more (%lu, then %lu)", c1, c2);
	test_msg("the spawner forked %lu children\n", c2);
	kill(sp, SIGTERM);
	test_check(test_wait_exit(sp, &status, 10) == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		   "the spawner failed (status %x)", status);
	cg_join(ownpath, 0);
	if (cg_rmdir(kids) || cg_rmdir(dir))
		test_check(0, "rmdir %s: %m", dir);
	if (failed)
		fail("the forking tree did not survive");
	else
		pass();
	return 0;
}
