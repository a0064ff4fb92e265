/*
 * sysv_shm: System V shared memory segments shared by a parent and its
 * child keep their ids, keys, owners, modes, contents and addresses, and
 * stay shared, across checkpoint/restore (in the host IPC namespace).
 *
 * Segments (keys from ftok(".", N), so the runner can find leftovers):
 *	A  key 1, 6 pages, 0600: attached read-write at `a` and read-only at
 *	   `a2` (two attaches of one segment); inherited by the child.
 *	   page 0	control words (request, answer, child_bad)
 *	   pages 1-2	written by the parent before the dump (seeds 11, 12)
 *	   page 3	written by the child before the dump (seed 13)
 *	   page 4	the parent's message of round n (seed n)
 *	   page 5	the child's echo (seed 1000 + n)
 *	B  IPC_PRIVATE, 2 pages, removed (IPC_RMID) after the fork while both
 *	   still have it attached (SHM_DEST): page 0 the child's second echo
 *	   (seed 2000 + n), page 1 written before the dump (seed 21).
 *	C  key 2, 3 pages, 0640, the last page unmapped after the attach:
 *	   pages 0-1 written before the dump (seeds 31, 32).
 *
 * Three rounds before the dump, three after. After SIGTERM the parent
 * checks the data, the ids behind the keys, IPC_STAT of each segment
 * (size, mode, owner, creator, SHM_DEST of B), its own and the child's
 * mappings in /proc/PID/maps (address, size, rw-s/r--s, inode = shm id),
 * the rounds, then stops the child, detaches and removes A and C.
 * The ids go into sysvipc.ids for the runner's between-dump-and-restore
 * hook (which removes A and C in the *_recreate rows).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that SysV shared memory shared by a parent and a child survives";

#define PS 4096
#define ROUNDS_BEFORE 3
#define ROUNDS_AFTER 3
#define ROUND_MS 5000

struct ctl {
	int32_t req, ans, child_bad;
};

static int failed;
static int ida = -1, idb = -1, idc = -1;
static uint8_t *a, *a2, *b, *c;
static struct ctl *ctl;

static void remove_all(void)
{
	if (ida >= 0)
		shmctl(ida, IPC_RMID, NULL);
	if (idb >= 0)
		shmctl(idb, IPC_RMID, NULL);
	if (idc >= 0)
		shmctl(idc, IPC_RMID, NULL);
}

static int is_seeded(const uint8_t *p, uint64_t seed)
{
	uint8_t expect[PS];

	zdtm_fill_seeded(expect, PS, seed);
	return !memcmp(p, expect, PS);
}

static int wait_change(int32_t *w, int32_t v, int ms)
{
	int waited;

	for (waited = 0; __atomic_load_n(w, __ATOMIC_SEQ_CST) == v; waited++) {
		if (ms >= 0 && waited >= ms)
			return -1;
		usleep(1000);
	}
	return 0;
}

static int round_trip(int n)
{
	zdtm_fill_seeded(a + 4 * PS, PS, n);
	__atomic_store_n(&ctl->req, n, __ATOMIC_SEQ_CST);
	if (wait_change(&ctl->ans, n - 1, ROUND_MS)) {
		test_msg("FAILED: round %d: no answer within %d ms\n", n, ROUND_MS);
		return -1;
	}
	if (ctl->ans != n || !is_seeded(a + 5 * PS, 1000 + n) || !is_seeded(b, 2000 + n) ||
	    !is_seeded(a2 + 5 * PS, 1000 + n)) {
		test_msg("FAILED: round %d: wrong answer %d or echo pages\n", n, ctl->ans);
		return -1;
	}
	return 0;
}

static int check_data(const char *who)
{
	int bad = 0;

	if (!is_seeded(a + PS, 11) || !is_seeded(a + 2 * PS, 12) || !is_seeded(a + 3 * PS, 13)) {
		test_msg("FAILED: %s: segment A's pages changed\n", who);
		bad = 1;
	}
	if (memcmp(a, a2, 6 * PS)) {
		test_msg("FAILED: %s: the read-only attach of A differs from the read-write one\n", who);
		bad = 1;
	}
	if (!is_seeded(b + PS, 21)) {
		test_msg("FAILED: %s: segment B's page changed\n", who);
		bad = 1;
	}
	if (!is_seeded(c, 31) || !is_seeded(c + PS, 32)) {
		test_msg("FAILED: %s: segment C's pages changed\n", who);
		bad = 1;
	}
	return bad;
}

static void __attribute__((noreturn)) child(void)
{
	int32_t last = 0;
	int bad = 0;

	zdtm_fill_seeded(a + 3 * PS, PS, 13);
	for (;;) {
		int32_t req;

		while ((req = __atomic_load_n(&ctl->req, __ATOMIC_SEQ_CST)) == last && test_go())
			usleep(1000);
		if (req == last)
			break;
		if (req != last + 1 || !is_seeded(a + 4 * PS, req)) {
			test_msg("FAILED: child: request %d after %d, or a wrong message\n", req, last);
			__atomic_store_n(&ctl->child_bad, 1, __ATOMIC_SEQ_CST);
			bad = 1;
		}
		zdtm_fill_seeded(a + 5 * PS, PS, 1000 + req);
		zdtm_fill_seeded(b, PS, 2000 + req);
		last = req;
		__atomic_store_n(&ctl->ans, req, __ATOMIC_SEQ_CST);
	}
	if (check_data("child"))
		bad = 1;
	if (last != ROUNDS_BEFORE + ROUNDS_AFTER) {
		test_msg("FAILED: child: answered %d rounds, expected %d\n", last, ROUNDS_BEFORE + ROUNDS_AFTER);
		bad = 1;
	}
	_exit(bad);
}

static void check_map(pid_t pid, void *addr, unsigned long size, const char *perms, int id)
{
	struct test_map m;

	if (test_find_map(pid, (unsigned long)addr, &m)) {
		test_check(0, "pid %d: no mapping at %p (segment %d)", pid, addr, id);
		return;
	}
	test_check(m.end - m.start == size && !strcmp(m.perms, perms) && m.ino == (unsigned long)id,
		   "pid %d: mapping at %p: %lu bytes %s inode %lu, expected %lu bytes %s inode %d", pid, addr,
		   m.end - m.start, m.perms, m.ino, size, perms, id);
}

static void check_seg(int id, key_t key, size_t size, int mode, int dest)
{
	struct shmid_ds ds;

	if (shmctl(id, IPC_STAT, &ds)) {
		test_check(0, "shmctl(%d, IPC_STAT): %s", id, strerror(errno));
		return;
	}
	test_check(ds.shm_segsz == size, "segment %d: size %zu, expected %zu", id, (size_t)ds.shm_segsz, size);
	test_check((ds.shm_perm.mode & 0777) == mode, "segment %d: mode %o, expected %o", id,
		   ds.shm_perm.mode & 0777, mode);
	test_check(!!(ds.shm_perm.mode & SHM_DEST) == dest, "segment %d: mode %o, SHM_DEST expected %d", id,
		   ds.shm_perm.mode, dest);
	test_check(ds.shm_perm.__key == key, "segment %d: key %#x, expected %#x", id, ds.shm_perm.__key, key);
	test_check(ds.shm_perm.uid == getuid() && ds.shm_perm.cuid == getuid() && ds.shm_perm.gid == getgid() &&
			   ds.shm_perm.cgid == getgid(),
		   "segment %d: owner %d:%d creator %d:%d, expected %d:%d", id, ds.shm_perm.uid, ds.shm_perm.gid,
		   ds.shm_perm.cuid, ds.shm_perm.cgid, getuid(), getgid());
}

int main(int argc, char **argv)
{
	key_t keya, keyc;
	int n, status, lock;
	pid_t pid;
	FILE *f;

	test_init(argc, argv);

	keya = ftok(".", 1);
	keyc = ftok(".", 2);
	lock = test_sysvipc_lock();
	ida = shmget(keya, 6 * PS, IPC_CREAT | IPC_EXCL | 0600);
	idb = shmget(IPC_PRIVATE, 2 * PS, IPC_CREAT | 0600);
	idc = shmget(keyc, 3 * PS, IPC_CREAT | IPC_EXCL | 0640);
	test_sysvipc_unlock(lock);
	if (ida < 0 || idb < 0 || idc < 0) {
		pr_perror("shmget");
		remove_all();
		return 1;
	}
	a = shmat(ida, NULL, 0);
	a2 = shmat(ida, NULL, SHM_RDONLY);
	b = shmat(idb, NULL, 0);
	c = shmat(idc, NULL, 0);
	if (a == (void *)-1 || a2 == (void *)-1 || b == (void *)-1 || c == (void *)-1 || munmap(c + 2 * PS, PS)) {
		pr_perror("shmat");
		remove_all();
		return 1;
	}
	ctl = (struct ctl *)a;
	zdtm_fill_seeded(a + PS, PS, 11);
	zdtm_fill_seeded(a + 2 * PS, PS, 12);
	zdtm_fill_seeded(b + PS, PS, 21);
	zdtm_fill_seeded(c, PS, 31);
	zdtm_fill_seeded(c + PS, PS, 32);
	f = fopen("sysvipc.ids", "w");
	if (!f || fprintf(f, "shm %d\nshm %d\n", ida, idc) < 0 || fclose(f)) {
		pr_perror("sysvipc.ids");
		remove_all();
		return 1;
	}

	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		remove_all();
		return 1;
	}
	if (pid == 0)
		child();
	/* B lives on while attached, with key IPC_PRIVATE and SHM_DEST */
	shmctl(idb, IPC_RMID, NULL);

	for (n = 1; n <= ROUNDS_BEFORE; n++)
		if (round_trip(n)) {
			kill(pid, SIGKILL);
			remove_all();
			return 1;
		}
	if (check_data("parent")) {
		kill(pid, SIGKILL);
		remove_all();
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (check_data("parent"))
		failed = 1;
	test_check(shmget(keya, 0, 0) == ida, "key %#x: id %d, expected %d", keya, shmget(keya, 0, 0), ida);
	test_check(shmget(keyc, 0, 0) == idc, "key %#x: id %d, expected %d", keyc, shmget(keyc, 0, 0), idc);
	check_seg(ida, keya, 6 * PS, 0600, 0);
	check_seg(idb, IPC_PRIVATE, 2 * PS, 0600, 1);
	check_seg(idc, keyc, 3 * PS, 0640, 0);
	check_map(getpid(), a, 6 * PS, "rw-s", ida);
	check_map(getpid(), a2, 6 * PS, "r--s", ida);
	check_map(getpid(), b, 2 * PS, "rw-s", idb);
	check_map(getpid(), c, 2 * PS, "rw-s", idc);
	check_map(pid, a, 6 * PS, "rw-s", ida);
	check_map(pid, a2, 6 * PS, "r--s", ida);
	check_map(pid, b, 2 * PS, "rw-s", idb);
	check_map(pid, c, 2 * PS, "rw-s", idc);
	for (n = ROUNDS_BEFORE + 1; n <= ROUNDS_BEFORE + ROUNDS_AFTER; n++)
		if (round_trip(n)) {
			failed = 1;
			break;
		}
	test_check(!__atomic_load_n(&ctl->child_bad, __ATOMIC_SEQ_CST), "the child saw a wrong message");

	kill(pid, SIGTERM);
	if (test_wait_exit(pid, &status, 15))
		test_check(0, "waitpid(child %d): %s", pid, strerror(errno));
	else
		test_check(WIFEXITED(status) && !WEXITSTATUS(status), "the child ended with status %#x", status);

	shmdt(a);
	shmdt(a2);
	shmdt(b);
	shmdt(c);
	remove_all();
	if (failed) {
		errno = 0;
		fail("SysV shared memory is not as before");
		return 1;
	}
	pass();
	return 0;
}
