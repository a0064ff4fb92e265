/*
 * tree_many: a tree of many processes survives checkpoint/restore; every
 * process comes back and reports. The program of the cases tree_32
 * (--procs=32) and tree_300 (--procs=300).
 *
 * Process 0 is the root; process i (i >= 1) is a child of process
 * (i - 1) / FANOUT, so the root has FANOUT children, those have FANOUT
 * children each and so on: with 32 processes the tree is 4 levels deep,
 * with 300 it is 5 levels deep, and the last level is incomplete.
 *
 * Every process has a little memory of its own, written after its fork: a
 * global holding a value derived from its index, and one private anonymous
 * page with a pattern seeded by its index. Every process sends the root its
 * index, pid and parent through a pipe (closed by all before the dump).
 *
 * After SIGTERM the root checks, from /proc/PID/stat, that every process
 * is alive with its recorded parent, then sends SIGTERM to all of them. Each
 * process checks its memory, getpid() and getppid() against the recorded
 * values, reaps its own children and exits 0 when it and all its children
 * are well (1: its own check failed, 2: a child failed or did not exit).
 * The root passes only if its children all exited 0, which they do only if
 * every process of the tree checked itself.
 *
 * --sabotage=N (debug): process N damages its memory after SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a tree of many processes is restored, every process with its memory";

static unsigned int procs = 32;
TEST_OPTION(procs, uint, "number of processes, the root included (2-1000, default 32)", 0);
static int sabotage = -1;
TEST_OPTION(sabotage, int, "debug: this process damages its memory after SIGTERM", 0);

#define FANOUT 4
#define PS 4096
#define WAIT_SECS 20

struct ident {
	int idx;
	pid_t pid, ppid;
};

static struct ident me;
static long my_value;	/* .bss */
static uint8_t *page;	/* one private anonymous page */
static pid_t kids[FANOUT];
static int nkids;

static long value_of(int idx)
{
	return 0x7ee00000L ^ ((long)idx * 2654435761L);
}

static uint64_t seed_of(int idx)
{
	return idx * 7919ULL + 1;
}

static int check_self(void)
{
	uint8_t expect[PS];
	int bad = 0;

	zdtm_fill_seeded(expect, PS, seed_of(me.idx));
	if (memcmp(page, expect, PS)) {
		test_msg("FAILED: process %d (pid %d): its page changed\n", me.idx, me.pid);
		bad = 1;
	}
	if (my_value != value_of(me.idx)) {
		test_msg("FAILED: process %d (pid %d): global %#lx, expected %#lx\n", me.idx, me.pid, my_value,
			 value_of(me.idx));
		bad = 1;
	}
	if (getpid() != me.pid || getppid() != me.ppid) {
		test_msg("FAILED: process %d: pid %d ppid %d, expected %d %d\n", me.idx, getpid(), getppid(), me.pid,
			 me.ppid);
		bad = 1;
	}
	return bad;
}

/* 0 if every child exited 0 */
static int reap_kids(void)
{
	int i, status, bad = 0;

	for (i = 0; i < nkids; i++) {
		if (test_wait_exit(kids[i], &status, WAIT_SECS)) {
			test_msg("FAILED: process %d: waitpid(pid %d): %s\n", me.idx, kids[i], strerror(errno));
			bad = 1;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			if (WIFSIGNALED(status))
				test_msg("FAILED: process %d: child pid %d killed by signal %d\n", me.idx, kids[i],
					 WTERMSIG(status));
			else if (WEXITSTATUS(status) == 1)
				test_msg("FAILED: process %d: child pid %d reported a failure\n", me.idx, kids[i]);
			bad = 1;
		}
	}
	return bad;
}

/* fork the children of process idx (and, in each, its subtree) */
static int spawn(int idx, int *pfd)
{
	int c;

	for (c = idx * FANOUT + 1; c <= idx * FANOUT + FANOUT && c < (int)procs; c++) {
		pid_t pid = fork();

		if (pid < 0) {
			pr_perror("process %d: fork %d", idx, c);
			return -1;
		}
		if (pid == 0) {
			/* only the root holds the read end */
			if (pfd[0] >= 0) {
				close(pfd[0]);
				pfd[0] = -1;
			}
			nkids = 0;
			me.idx = c;
			me.pid = getpid();
			me.ppid = getppid();
			my_value = value_of(c);
			page = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (page == MAP_FAILED) {
				pr_perror("process %d: mmap", c);
				_exit(1);
			}
			zdtm_fill_seeded(page, PS, seed_of(c));
			if (spawn(c, pfd))
				_exit(1);
			if (write(pfd[1], &me, sizeof(me)) != sizeof(me)) {
				pr_perror("process %d: write to the root", c);
				_exit(1);
			}
			close(pfd[1]);
			test_waitsig();
			if (sabotage == c)
				page[100] ^= 0x40;
			c = check_self();
			if (reap_kids())
				_exit(c ? 1 : 2);
			_exit(c ? 1 : 0);
		}
		kids[nkids++] = pid;
	}
	return 0;
}

static int read_ppid(pid_t pid, char *state, pid_t *ppid)
{
	char path[64], buf[1024], *p;
	int fd, n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %d", state, ppid) != 2)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct ident *all;
	int pfd[2], i, failed = 0, missing = 0;

	test_init(argc, argv);
	if (procs < 2 || procs > 1000) {
		pr_err("--procs must be 2-1000\n");
		return 1;
	}
	all = calloc(procs, sizeof(*all));
	page = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!all || page == MAP_FAILED) {
		pr_perror("allocate");
		return 1;
	}
	me.idx = 0;
	me.pid = getpid();
	my_value = value_of(0);
	zdtm_fill_seeded(page, PS, seed_of(0));
	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}
	if (spawn(0, pfd))
		return 1;
	close(pfd[1]);

	if (test_collect_records(pfd[0], all, sizeof(all[0]), procs - 1, 1, procs))
		return 1;
	close(pfd[0]);
	all[0] = me;
	for (i = 1; i < (int)procs; i++)
		if (all[i].ppid != all[(i - 1) / FANOUT].pid) {
			pr_err("process %d: parent %d, expected process %d (pid %d)\n", i, all[i].ppid,
			       (i - 1) / FANOUT, all[(i - 1) / FANOUT].pid);
			return 1;
		}
	test_msg("%u processes, pids %d..%d\n", procs, all[1].pid, all[procs - 1].pid);

	test_daemon();
	test_waitsig();

	me.ppid = getppid(); /* the launcher has exited */
	if (sabotage == 0)
		page[100] ^= 0x40;
	if (check_self())
		failed = 1;
	for (i = 1; i < (int)procs; i++) {
		char state = '-';
		pid_t ppid = 0;

		if (read_ppid(all[i].pid, &state, &ppid) || state == 'Z' || state == 'X' || ppid != all[i].ppid) {
			if (missing++ < 10)
				test_msg("FAILED: process %d (pid %d): state %c parent %d, expected a live process, "
					 "parent %d\n",
					 i, all[i].pid, state, ppid, all[i].ppid);
			failed = 1;
		}
	}
	if (missing)
		test_msg("FAILED: %d of %u processes missing or wrong\n", missing, procs - 1);
	for (i = 1; i < (int)procs; i++)
		kill(all[i].pid, SIGTERM);
	if (reap_kids())
		failed = 1;

	if (failed) {
		errno = 0;
		fail("the process tree was not restored correctly");
		return 1;
	}
	test_msg("all %u processes reported\n", procs);
	pass();
	return 0;
}
