/*
 * tree_basic: a small process tree survives checkpoint/restore, every
 * process with its own memory and its own identity.
 *
 *	root (the zdtm pid)
 *	 +- child 1
 *	 |   +- grandchild 4
 *	 |   +- grandchild 5
 *	 +- child 2
 *	 +- child 3
 *
 * Before forking, the root fills a 16-page private anonymous area with one
 * pattern. After the forks every process (the root too) overwrites pages
 * 0-7 with a pattern of its own, so each has its own copy-on-write copies,
 * while pages 8-15 are never written again and stay shared copy-on-write
 * pages holding the root's pattern. Every process also mallocs 3 pages with
 * its own pattern and stores its own value in a global.
 *
 * Every process sends the root its pid, parent, process group and session
 * through a pipe (closed by everyone before the root calls test_daemon(),
 * so no pipe is part of the dumped state).
 *
 * After SIGTERM the root checks itself, checks from outside (getpgid(),
 * getsid() and the parent field of /proc/PID/stat) that the other five are
 * there with their recorded identity, and sends them SIGTERM. Each checks its
 * memory and getpid(), getppid(), getpgid(0), getsid(0) against the values
 * recorded before the dump and exits 0 when all is well (1 if not); child 1
 * also reaps its two children and exits 2 if one of them failed. The root
 * reaps its children and passes only if all three exited 0.
 *
 * --sabotage=WHAT (debug, to see the checks fail): mem (child 2 changes
 * its own pages), cow (child 3 writes a shared copy-on-write page), pgid
 * (grandchild 5 moves to a group of its own), exit (grandchild 4 exits 3),
 * ident (the root's record of child 3's parent is wrong).
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

const char *test_doc = "Check that a tree of 6 processes is restored with its identities and memory";

#define PS 4096
#define AREA_PAGES 16
#define OWN_PAGES 8 /* pages 0-7 written by each process after the forks */
#define HEAP_BYTES (3 * PS)
#define NPROC 6
#define ROOT_SEED 1000
#define WAIT_SECS 15

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (mem, cow, pgid, exit, ident)", 0);

static int sabotaged(const char *what)
{
	return sabotage && !strcmp(sabotage, what);
}

struct ident {
	int idx;
	pid_t pid, ppid, pgid, sid;
};

static int my_idx;
static long my_value; /* .bss, set after the fork */
static uint8_t *area; /* AREA_PAGES, mapped by the root before the forks */
static uint8_t *heap; /* malloc()ed after the fork */
static struct ident me;
static struct ident all[NPROC]; /* the root's view */

static long value_of(int idx)
{
	return 0x5eed0000L + idx * 0x1111L;
}

static void fill(int idx)
{
	my_idx = idx;
	my_value = value_of(idx);
	zdtm_fill_seeded(area, OWN_PAGES * PS, idx + 1);
	heap = malloc(HEAP_BYTES);
	if (!heap) {
		pr_perror("malloc");
		_exit(1);
	}
	zdtm_fill_seeded(heap, HEAP_BYTES, 100 + idx);
}

static int record(int idx, int wfd)
{
	me.idx = idx;
	me.pid = getpid();
	me.ppid = getppid();
	me.pgid = getpgid(0);
	me.sid = getsid(0);
	if (write(wfd, &me, sizeof(me)) != sizeof(me)) {
		pr_perror("write the identity of %d", idx);
		return -1;
	}
	return 0;
}

/* memory and identity of this process against what was recorded; 0 if all is well */
static int check_self(void)
{
	static uint8_t expect[AREA_PAGES * PS];
	int bad = 0;

	if (my_value != value_of(my_idx)) {
		test_msg("FAILED: process %d: global is %#lx, expected %#lx\n", my_idx, my_value, value_of(my_idx));
		bad = 1;
	}
	zdtm_fill_seeded(expect, OWN_PAGES * PS, my_idx + 1);
	if (memcmp(area, expect, OWN_PAGES * PS)) {
		test_msg("FAILED: process %d: its own pages of the area changed\n", my_idx);
		bad = 1;
	}
	zdtm_fill_seeded(expect, AREA_PAGES * PS, ROOT_SEED);
	if (memcmp(area + OWN_PAGES * PS, expect + OWN_PAGES * PS, (AREA_PAGES - OWN_PAGES) * PS)) {
		test_msg("FAILED: process %d: the never rewritten (shared copy-on-write) pages changed\n", my_idx);
		bad = 1;
	}
	zdtm_fill_seeded(expect, HEAP_BYTES, 100 + my_idx);
	if (memcmp(heap, expect, HEAP_BYTES)) {
		test_msg("FAILED: process %d: its heap buffer changed\n", my_idx);
		bad = 1;
	}
	if (getpid() != me.pid || getppid() != me.ppid || getpgid(0) != me.pgid || getsid(0) != me.sid) {
		test_msg("FAILED: process %d: pid/ppid/pgid/sid %d/%d/%d/%d, expected %d/%d/%d/%d\n", my_idx, getpid(),
			 getppid(), getpgid(0), getsid(0), me.pid, me.ppid, me.pgid, me.sid);
		bad = 1;
	}
	return bad;
}

static int status_ok(int idx, pid_t pid, int status)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 1;
	if (WIFEXITED(status))
		test_msg("FAILED: process %d (pid %d) exited with %d\n", idx, pid, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		test_msg("FAILED: process %d (pid %d) was killed by signal %d\n", idx, pid, WTERMSIG(status));
	else
		test_msg("FAILED: process %d (pid %d): status %#x\n", idx, pid, status);
	return 0;
}

/* a grandchild, or child 2 or 3 */
static void __attribute__((noreturn)) leaf(int idx, int wfd)
{
	fill(idx);
	if (record(idx, wfd))
		_exit(1);
	close(wfd);
	test_waitsig();
	if (idx == 2 && sabotaged("mem"))
		area[3 * PS + 17] ^= 1;
	if (idx == 3 && sabotaged("cow"))
		area[(OWN_PAGES + 2) * PS] ^= 1;
	if (idx == 5 && sabotaged("pgid"))
		setpgid(0, 0);
	if (idx == 4 && sabotaged("exit"))
		_exit(3);
	_exit(check_self() ? 1 : 0);
}

static void __attribute__((noreturn)) child1(int wfd)
{
	pid_t kids[2];
	int i, status, ret;

	/* the grandchildren first: they inherit the root's pages 0-7, then write their own */
	for (i = 0; i < 2; i++) {
		kids[i] = fork();
		if (kids[i] < 0) {
			pr_perror("fork grandchild %d", 4 + i);
			_exit(1);
		}
		if (kids[i] == 0)
			leaf(4 + i, wfd);
	}
	fill(1);
	if (record(1, wfd))
		_exit(1);
	close(wfd);
	test_waitsig();
	ret = check_self() ? 1 : 0;
	for (i = 0; i < 2; i++) {
		if (test_wait_exit(kids[i], &status, WAIT_SECS)) {
			test_msg("FAILED: process 1: waitpid(grandchild %d, pid %d): %s\n", 4 + i, kids[i],
				 strerror(errno));
			ret = ret ?: 2;
		} else if (!status_ok(4 + i, kids[i], status)) {
			ret = ret ?: 2;
		}
	}
	_exit(ret);
}

static char proc_state(pid_t pid, pid_t *ppid)
{
	char path[64], buf[1024], *p, state = '?';
	int fd, n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return '-';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '-';
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %d", &state, ppid) != 2)
		return '?';
	return state;
}

int main(int argc, char **argv)
{
	pid_t kids[3];
	int pfd[2], i, status, failed = 0;

	test_init(argc, argv);

	area = mmap(NULL, AREA_PAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED) {
		pr_perror("mmap");
		return 1;
	}
	zdtm_fill_seeded(area, AREA_PAGES * PS, ROOT_SEED);
	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}

	for (i = 0; i < 3; i++) {
		kids[i] = fork();
		if (kids[i] < 0) {
			pr_perror("fork child %d", i + 1);
			return 1;
		}
		if (kids[i] == 0) {
			close(pfd[0]);
			if (i == 0)
				child1(pfd[1]);
			leaf(i + 1, pfd[1]);
		}
	}
	close(pfd[1]);
	fill(0);
	me.idx = 0;
	me.pid = getpid();
	me.ppid = getppid(); /* the launcher; it exits after test_daemon() */
	me.pgid = getpgid(0);
	me.sid = getsid(0);
	all[0] = me;

	/* everyone's identity, then EOF: every write end is closed */
	if (test_collect_records(pfd[0], all, sizeof(all[0]), NPROC - 1, 1, NPROC))
		return 1;
	close(pfd[0]);
	for (i = 0; i < NPROC; i++)
		test_msg("process %d: pid %d ppid %d pgid %d sid %d\n", i, all[i].pid, all[i].ppid, all[i].pgid,
			 all[i].sid);
	for (i = 1; i < NPROC; i++) {
		pid_t want_ppid = i >= 4 ? all[1].pid : all[0].pid;

		if (all[i].ppid != want_ppid || all[i].pgid != all[0].pid || all[i].sid != all[0].pid) {
			pr_err("process %d has an unexpected identity before the dump\n", i);
			return 1;
		}
	}

	test_daemon();
	test_waitsig();

	if (sabotaged("ident"))
		all[3].ppid++;
	/* the launcher is gone: our parent changed */
	me.ppid = getppid();
	if (check_self())
		failed = 1;

	/* the others, from outside, before they are told to check themselves */
	for (i = 1; i < NPROC; i++) {
		pid_t ppid = -1;
		char st = proc_state(all[i].pid, &ppid);

		if (st == '-' || st == 'Z' || st == 'X') {
			test_msg("FAILED: process %d (pid %d) is not running (state %c)\n", i, all[i].pid, st);
			failed = 1;
			continue;
		}
		if (ppid != all[i].ppid || getpgid(all[i].pid) != all[i].pgid || getsid(all[i].pid) != all[i].sid) {
			test_msg("FAILED: process %d (pid %d): ppid/pgid/sid %d/%d/%d from outside, expected %d/%d/%d\n",
				 i, all[i].pid, ppid, getpgid(all[i].pid), getsid(all[i].pid), all[i].ppid, all[i].pgid,
				 all[i].sid);
			failed = 1;
		}
	}

	for (i = 1; i < NPROC; i++)
		if (kill(all[i].pid, SIGTERM)) {
			test_msg("FAILED: kill(process %d, pid %d): %s\n", i, all[i].pid, strerror(errno));
			failed = 1;
		}
	for (i = 0; i < 3; i++) {
		if (test_wait_exit(kids[i], &status, WAIT_SECS)) {
			test_msg("FAILED: waitpid(child %d, pid %d): %s\n", i + 1, kids[i], strerror(errno));
			failed = 1;
		} else if (!status_ok(i + 1, kids[i], status)) {
			failed = 1;
		}
	}
	/* once more: nothing the others did may show in the root's copies */
	if (check_self())
		failed = 1;

	if (failed) {
		errno = 0;
		fail("the process tree was not restored correctly");
		return 1;
	}
	pass();
	return 0;
}
