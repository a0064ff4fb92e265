/*
 * shm_shared_child: a MAP_SHARED|MAP_ANONYMOUS region shared by a parent
 * and its child is still one shared region after checkpoint/restore.
 *
 * The root maps 8 pages before forking the child:
 *	page 0		control words: the parent's request number and the
 *			child's answer (futex words)
 *	pages 1-2	written by the parent before the dump
 *	pages 3-4	written by the child before the dump
 *	page 5		the parent's message of the current round
 *	page 6		the child's echo of the current round
 *	page 7		never written (must read as zeros)
 *
 * A round n: the parent fills page 5 with a pattern seeded by n and sets
 * the request to n; the child sees it, checks page 5, fills page 6 with a
 * pattern seeded by 1000 + n and sets the answer to n; the parent sees the
 * answer and checks page 6. Three rounds run before the dump, three after.
 *
 * After SIGTERM the parent checks pages 1-4 and 7, that its mapping and the
 * child's (/proc/PID/maps) are at the same address, with the same size,
 * rw-s, and the same shmem inode, and runs the three rounds (each must be
 * answered within 5 s: a region that is no longer shared never is). Then it
 * sends SIGTERM to the child, which checks pages 1-4 and 7 and every round
 * it answered, and exits 0 if all was well.
 *
 * --sabotage=WHAT (debug): unshare (the child replaces its window with a
 * private copy after SIGTERM: the rounds must time out), data (the child
 * changes page 1), inode (the parent replaces its window with a new shared
 * region holding the same data).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that anonymous shared memory shared by a parent and a child stays shared";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (unshare, data, inode)", 0);

static int sabotaged(const char *what)
{
	return sabotage && !strcmp(sabotage, what);
}

#define PS 4096
#define PAGES 8
#define ROUNDS_BEFORE 3
#define ROUNDS_AFTER 3
#define ROUND_SECS 5
#define WAIT_SECS 15

struct ctl {
	int32_t req, ans;
	int32_t child_bad; /* the child saw a wrong message */
};

static uint8_t *shm;
static struct ctl *ctl;

static void futex_wake(int32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* wait while *w == v, for at most ms milliseconds in total; 0 once it changed */
static int futex_wait_change(int32_t *w, int32_t v, int ms)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	int waited;

	for (waited = 0; __atomic_load_n(w, __ATOMIC_SEQ_CST) == v; waited += 20) {
		if (ms >= 0 && waited >= ms)
			return -1;
		syscall(SYS_futex, w, FUTEX_WAIT, v, &ts, NULL, 0);
	}
	return 0;
}

static int page_is(int page, uint64_t seed)
{
	uint8_t expect[PS];

	zdtm_fill_seeded(expect, PS, seed);
	return !memcmp(shm + page * PS, expect, PS);
}

static int page_is_zero(int page)
{
	int i;

	for (i = 0; i < PS; i++)
		if (shm[page * PS + i])
			return 0;
	return 1;
}

/* pages 1-4 and 7: what was written before the dump */
static int check_data(const char *who)
{
	int bad = 0;

	if (!page_is(1, 11) || !page_is(2, 12)) {
		test_msg("FAILED: %s: the parent's pages changed\n", who);
		bad = 1;
	}
	if (!page_is(3, 13) || !page_is(4, 14)) {
		test_msg("FAILED: %s: the child's pages changed\n", who);
		bad = 1;
	}
	if (!page_is_zero(7)) {
		test_msg("FAILED: %s: the never written page is not zero\n", who);
		bad = 1;
	}
	return bad;
}

/* the parent's side of round n; 0 if the child answered it correctly */
static int round_trip(int n)
{
	zdtm_fill_seeded(shm + 5 * PS, PS, n);
	__atomic_store_n(&ctl->req, n, __ATOMIC_SEQ_CST);
	futex_wake(&ctl->req);
	if (futex_wait_change(&ctl->ans, n - 1, ROUND_SECS * 1000)) {
		test_msg("FAILED: round %d: no answer within %d s (answer word %d)\n", n, ROUND_SECS, ctl->ans);
		return -1;
	}
	if (__atomic_load_n(&ctl->ans, __ATOMIC_SEQ_CST) != n || !page_is(6, 1000 + n)) {
		test_msg("FAILED: round %d: wrong answer %d or echo page\n", n, ctl->ans);
		return -1;
	}
	return 0;
}

static void __attribute__((noreturn)) child(void)
{
	int32_t last = 0;
	int bad = 0;

	zdtm_fill_seeded(shm + 3 * PS, PS, 13);
	zdtm_fill_seeded(shm + 4 * PS, PS, 14);
	for (;;) {
		int32_t req;

		/* the next request, or SIGTERM */
		while ((req = __atomic_load_n(&ctl->req, __ATOMIC_SEQ_CST)) == last && test_go())
			futex_wait_change(&ctl->req, last, 100);
		if (req == last)
			break;
		if (req != last + 1 || !page_is(5, req)) {
			test_msg("FAILED: child: request %d after %d, or a wrong message\n", req, last);
			__atomic_store_n(&ctl->child_bad, 1, __ATOMIC_SEQ_CST);
			bad = 1;
		}
		zdtm_fill_seeded(shm + 6 * PS, PS, 1000 + req);
		last = req;
		__atomic_store_n(&ctl->ans, req, __ATOMIC_SEQ_CST);
		futex_wake(&ctl->ans);
		if (!test_go())
			break;
		if (last == ROUNDS_BEFORE + 1 && sabotaged("unshare")) {
			/* from now on, a private copy: the parent's writes are not seen */
			uint8_t *copy = mmap(NULL, PAGES * PS, PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			memcpy(copy, shm, PAGES * PS);
			mremap(copy, PAGES * PS, PAGES * PS, MREMAP_MAYMOVE | MREMAP_FIXED, shm);
		}
	}
	if (sabotaged("data"))
		shm[PS + 5] ^= 1;
	if (check_data("child"))
		bad = 1;
	if (last != ROUNDS_BEFORE + ROUNDS_AFTER) {
		test_msg("FAILED: child: answered %d rounds, expected %d\n", last, ROUNDS_BEFORE + ROUNDS_AFTER);
		bad = 1;
	}
	_exit(bad);
}

int main(int argc, char **argv)
{
	struct test_map pm, cm;
	int n, status, failed = 0;
	pid_t pid;

	test_init(argc, argv);

	shm = mmap(NULL, PAGES * PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED) {
		pr_perror("mmap");
		return 1;
	}
	ctl = (struct ctl *)shm;
	zdtm_fill_seeded(shm + 1 * PS, PS, 11);
	zdtm_fill_seeded(shm + 2 * PS, PS, 12);

	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0)
		child();

	for (n = 1; n <= ROUNDS_BEFORE; n++)
		if (round_trip(n)) {
			pr_err("round %d failed before the dump\n", n);
			kill(pid, SIGKILL);
			return 1;
		}
	if (check_data("parent")) {
		kill(pid, SIGKILL);
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (sabotaged("inode")) {
		uint8_t *copy = mmap(NULL, PAGES * PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		memcpy(copy, shm, PAGES * PS);
		mremap(copy, PAGES * PS, PAGES * PS, MREMAP_MAYMOVE | MREMAP_FIXED, shm);
	}
	if (check_data("parent"))
		failed = 1;
	if (test_find_map(getpid(), (unsigned long)shm, &pm) || test_find_map(pid, (unsigned long)shm, &cm)) {
		test_msg("FAILED: the region is not at %p in the parent or in the child (pid %d)\n", shm, pid);
		failed = 1;
	} else if (pm.end - pm.start != PAGES * PS || cm.end - cm.start != pm.end - pm.start ||
		   strcmp(pm.perms, "rw-s") || strcmp(cm.perms, pm.perms) || pm.ino != cm.ino) {
		test_msg("FAILED: the region: parent %lu bytes %s inode %lu, child %lu bytes %s inode %lu\n",
			 pm.end - pm.start, pm.perms, pm.ino, cm.end - cm.start, cm.perms, cm.ino);
		failed = 1;
	}
	for (n = ROUNDS_BEFORE + 1; n <= ROUNDS_BEFORE + ROUNDS_AFTER; n++)
		if (round_trip(n)) {
			failed = 1;
			break;
		}
	if (__atomic_load_n(&ctl->child_bad, __ATOMIC_SEQ_CST)) {
		test_msg("FAILED: the child saw a wrong message\n");
		failed = 1;
	}

	kill(pid, SIGTERM);
	if (test_wait_exit(pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(child %d): %s\n", pid, strerror(errno)), failed = 1;
	else if (!WIFEXITED(status) || WEXITSTATUS(status))
		test_msg("FAILED: the child ended with status %#x\n", status), failed = 1;

	if (failed) {
		errno = 0;
		fail("the shared region is not shared as before");
		return 1;
	}
	pass();
	return 0;
}
