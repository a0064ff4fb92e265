/*
 * userns_nested: user namespaces made inside the tree, nested two deep,
 * come back with their maps, setgroups, parent links and sharing, and
 * the credentials and capabilities of the tasks in them.
 *
 * The test task T forks A, which unshares a user namespace; T writes its
 * maps from outside (setgroups deny, uid and gid 0 1000 10), and A takes
 * ids 0/0/0 in it. A forks G1, which unshares a further one that A maps
 * (0 0 5: A's 0..4) and where G1 takes uids 1 and gids 2 (no capability
 * left), and G2 and G3, which stay in A's. Each sends T its state once
 * set up; after SIGTERM T asks them again and compares:
 *  - each task's /proc/self/uid_map, gid_map, setgroups, getresuid,
 *    getresgid and Cap* lines, as it sees them itself;
 *  - from T: the number of NS_GET_PARENT steps from each task's user
 *    namespace to T's (A 1, G1 2, G2 and G3 1), G1's uid_map as T sees
 *    it (1000 on), and that A, G2 and G3 share a namespace and G1 not.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that nested user namespaces made inside the tree survive";

#ifndef NS_GET_PARENT
#define NS_GET_PARENT 0xb702
#endif

#define A_MAP "0 1000 10\n"
#define G1_MAP "0 0 5\n"

enum { TA, TG1, TG2, TG3, NTASKS };
static const char *names[NTASKS] = { "A", "G1", "G2", "G3" };

/* What a task sends T: its pid and its state as it sees it. */
struct state {
	pid_t pid;
	char uid_map[128], gid_map[128], setgroups[32], caps[512];
	unsigned ids[6];
};

static int get_state(struct state *s)
{
	uid_t r, e, su;
	gid_t rg, eg, sg;

	memset(s, 0, sizeof(*s));
	s->pid = getpid();
	if (test_read_file("/proc/self/uid_map", s->uid_map, sizeof(s->uid_map)) ||
	    test_read_file("/proc/self/gid_map", s->gid_map, sizeof(s->gid_map)) ||
	    test_read_file("/proc/self/setgroups", s->setgroups, sizeof(s->setgroups)) ||
	    test_read_caps(s->caps, sizeof(s->caps)))
		return -1;
	if (getresuid(&r, &e, &su) || getresgid(&rg, &eg, &sg))
		return -1;
	s->ids[0] = r, s->ids[1] = e, s->ids[2] = su;
	s->ids[3] = rg, s->ids[4] = eg, s->ids[5] = sg;
	return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
	return write(fd, buf, n) == (ssize_t)n ? 0 : -1;
}

static int read_all(int fd, void *buf, size_t n)
{
	return read(fd, buf, n) == (ssize_t)n ? 0 : -1;
}

/*
 * A task after its set-up: sends its state on `out`, waits for a byte on
 * `in` (after the restore), sends it again.
 */
static void report(int out, int in)
{
	struct state s;
	char c;

	if (get_state(&s) || write_all(out, &s, sizeof(s)) || read_all(in, &c, 1) ||
	    get_state(&s) || write_all(out, &s, sizeof(s)))
		_exit(1);
}

/* Forks a grandchild of A: G1 (`nest`) in a user namespace of its own. */
static pid_t fork_g(int nest, int out, int in)
{
	int go[2], up[2];
	pid_t pid;
	char c;

	if (pipe(go) || pipe(up))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(go[1]);
		close(up[0]);
		if (nest) {
			if (unshare(CLONE_NEWUSER) || write_all(up[1], "u", 1))
				_exit(2);
			if (read_all(go[0], &c, 1))
				_exit(3);
			if (setresgid(2, 2, 2) || setresuid(1, 1, 1))
				_exit(4);
			/*
			 * Dumpable again, so that T may read its /proc/PID/ns in
			 * the uns flavour: an undumpable task's is readable only
			 * with CAP_SYS_PTRACE over its mm's user namespace, which a
			 * restore cannot give back (the kernel sets it at execve
			 * only; a restored task's is the engine's).
			 */
			if (prctl(PR_SET_DUMPABLE, 1))
				_exit(4);
		}
		close(up[1]);
		close(go[0]);
		report(out, in);
		_exit(0);
	}
	close(go[0]);
	close(up[1]);
	/* Once it is in its namespace (its /proc/PID/ns is not A's to read). */
	if (nest && (read_all(up[0], &c, 1) || test_map_userns(pid, G1_MAP, G1_MAP) || write_all(go[1], "g", 1)))
		return -1;
	close(go[1]);
	close(up[0]);
	return pid;
}

/* A: in its own namespace, forks G1, G2, G3; passes T's byte on. */
static void run_a(int out, int in, int go)
{
	int gin[2];
	pid_t g[3];
	int i, status, bad = 0;
	char c;

	if (unshare(CLONE_NEWUSER) || read_all(go, &c, 1))
		_exit(2);
	if (setresgid(0, 0, 0) || setresuid(0, 0, 0))
		_exit(3);
	/*
	 * The id change made it undumpable: its children's /proc files would
	 * be owned by the host's root, which A cannot write through.
	 */
	if (prctl(PR_SET_DUMPABLE, 1))
		_exit(3);
	if (pipe(gin))
		_exit(4);
	for (i = 0; i < 3; i++) {
		g[i] = fork_g(i == 0, out, gin[0]);
		if (g[i] < 0)
			_exit(5);
	}
	close(gin[0]);
	report(out, in);
	for (i = 0; i < 3; i++)
		if (write_all(gin[1], "c", 1))
			bad = 1;
	for (i = 0; i < 3; i++)
		if (waitpid(g[i], &status, 0) != g[i] || !WIFEXITED(status) || WEXITSTATUS(status))
			bad = 1;
	_exit(bad);
}

/* NS_GET_PARENT steps from `pid`'s user namespace up to T's (-1: never). */
static int depth(pid_t pid, ino_t *ino)
{
	struct stat me, st;
	char path[64];
	int fd, up, d = 0;

	snprintf(path, sizeof(path), "/proc/%d/ns/user", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0 || stat("/proc/self/ns/user", &me) || fstat(fd, &st))
		return -1;
	*ino = st.st_ino;
	while (st.st_ino != me.st_ino) {
		up = ioctl(fd, NS_GET_PARENT);
		close(fd);
		if (up < 0)
			return -1;
		fd = up;
		if (fstat(fd, &st))
			return -1;
		d++;
	}
	close(fd);
	return d;
}

/* Reads the four states after the restore, in any order, by pid. */
static int read_states(int fd, struct state *s, const pid_t *pids)
{
	struct state one;
	int i, j;

	for (i = 0; i < NTASKS; i++) {
		if (read_all(fd, &one, sizeof(one)))
			return -1;
		for (j = 0; j < NTASKS && pids[j] != one.pid; j++)
			;
		if (j == NTASKS)
			return -1;
		s[j] = one;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct state before[NTASKS], after[NTASKS];
	pid_t pids[NTASKS] = { 0 };
	int out[2], in[2], go[2], status, i, want[NTASKS] = { 1, 2, 1, 1 };
	const char *want_map[NTASKS] = { A_MAP, G1_MAP, A_MAP, A_MAP };
	ino_t ino[NTASKS];
	char path[64], text[128];
	struct stat me, it;
	pid_t a;

	test_init(argc, argv);

	if (pipe(out) || pipe(in) || pipe(go)) {
		pr_perror("pipe");
		return 1;
	}
	a = fork();
	if (a < 0) {
		pr_perror("fork");
		return 1;
	}
	if (a == 0) {
		close(out[0]);
		close(in[1]);
		close(go[1]);
		run_a(out[1], in[0], go[0]);
	}
	close(out[1]);
	close(in[0]);
	close(go[0]);
	snprintf(path, sizeof(path), "/proc/%d/ns/user", a);
	stat("/proc/self/ns/user", &me);
	do {
		usleep(1000);
		if (stat(path, &it)) {
			pr_perror("stat %s", path);
			return 1;
		}
	} while (it.st_ino == me.st_ino);
	if (test_map_userns(a, A_MAP, A_MAP) || write_all(go[1], "g", 1)) {
		pr_perror("mapping A's user namespace");
		return 1;
	}
	close(go[1]);

	/* Arrival order: A after G1..G3 are forked, but not fixed. */
	for (i = 0; i < NTASKS; i++)
		if (read_all(out[0], &before[i], sizeof(before[i]))) {
			pr_perror("reading the tasks' states");
			return 1;
		}
	/* Sort: A is the fork's pid; G1 the one with uid 1. */
	for (i = 0; i < NTASKS; i++) {
		struct state *s = &before[i];
		if (s->pid == a)
			pids[TA] = a;
		else if (s->ids[0] == 1)
			pids[TG1] = s->pid;
		else if (!pids[TG2])
			pids[TG2] = s->pid;
		else
			pids[TG3] = s->pid;
	}
	for (i = 0; i < NTASKS; i++) {
		int j;
		for (j = 0; j < NTASKS; j++)
			if (before[j].pid == pids[i])
				after[i] = before[j];
	}
	memcpy(before, after, sizeof(before));
	for (i = 0; i < NTASKS; i++) {
		if (!pids[i] || !test_same_numbers(before[i].uid_map, want_map[i]) ||
		    !test_same_numbers(before[i].gid_map, want_map[i]) || strncmp(before[i].setgroups, "deny", 4)) {
			pr_err("%s (pid %d) not set up: uid_map %s setgroups %s\n", names[i], pids[i],
			       before[i].uid_map, before[i].setgroups);
			return 1;
		}
		if (depth(pids[i], &ino[i]) != want[i]) {
			pr_err("%s: user namespace depth %d, want %d\n", names[i], depth(pids[i], &ino[i]),
			       want[i]);
			return 1;
		}
	}

	test_daemon();
	test_waitsig();

	for (i = 0; i < NTASKS; i++) {
		ino_t now;
		int d = depth(pids[i], &now);
		if (d != want[i]) {
			fail("%s (pid %d): %d NS_GET_PARENT steps up to the test's user namespace, want %d",
			     names[i], pids[i], d, want[i]);
			return 1;
		}
		ino[i] = now;
	}
	if (ino[TA] != ino[TG2] || ino[TA] != ino[TG3] || ino[TA] == ino[TG1]) {
		fail("sharing lost: A %lu G1 %lu G2 %lu G3 %lu", (unsigned long)ino[TA],
		     (unsigned long)ino[TG1], (unsigned long)ino[TG2], (unsigned long)ino[TG3]);
		return 1;
	}
	snprintf(path, sizeof(path), "/proc/%d/uid_map", pids[TG1]);
	if (test_read_file(path, text, sizeof(text)) || !test_same_numbers(text, "0 1000 5\n")) {
		fail("G1's uid_map seen from the test's namespace: %s, want 0 1000 5", text);
		return 1;
	}
	if (write_all(in[1], "c", 1)) {
		fail("waking A: %m");
		return 1;
	}
	memset(after, 0, sizeof(after));
	if (read_states(out[0], after, pids)) {
		fail("reading the tasks' states after restore");
		return 1;
	}
	if (waitpid(a, &status, 0) != a || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fail("A or its children failed (status %#x)", status);
		return 1;
	}
	for (i = 0; i < NTASKS; i++) {
		struct state *b = &before[i], *s = &after[i];
		if (strcmp(b->uid_map, s->uid_map) || strcmp(b->gid_map, s->gid_map) ||
		    strcmp(b->setgroups, s->setgroups)) {
			fail("%s: maps or setgroups differ: %s/%s/%s -> %s/%s/%s", names[i], b->uid_map,
			     b->gid_map, b->setgroups, s->uid_map, s->gid_map, s->setgroups);
			return 1;
		}
		if (memcmp(b->ids, s->ids, sizeof(b->ids))) {
			fail("%s: ids %u/%u/%u %u/%u/%u -> %u/%u/%u %u/%u/%u", names[i], b->ids[0], b->ids[1],
			     b->ids[2], b->ids[3], b->ids[4], b->ids[5], s->ids[0], s->ids[1], s->ids[2],
			     s->ids[3], s->ids[4], s->ids[5]);
			return 1;
		}
		if (strcmp(b->caps, s->caps)) {
			fail("%s: capabilities differ:\n%s---\n%s", names[i], b->caps, s->caps);
			return 1;
		}
	}
	pass();
	return 0;
}
