/*
 * fdt_shared: a child cloned with CLONE_FILES (without CLONE_THREAD)
 * shares its parent's fd table; the table must still be one after the
 * restore.
 *
 *   --layout=parent (default): the root R clones the sharer S with
 *   CLONE_FILES; S forks G, which has a table of its own (a copy).
 *   Before the dump R puts a pipe at fd 100 with data in it (after G was
 *   forked, so G has no fd 100) and G puts a pipe of its own at fd 101.
 *   After SIGTERM:
 *   - S finds R's fd 100 (a pipe with the data R wrote), and no fd 101;
 *   - R opens a pipe and tells S its fd and inode: S finds it there;
 *   - S opens a pipe and tells R: R finds it there and closes it, and S
 *     sees it gone; S closes R's pipe, and R sees it gone;
 *   - G finds its fd 101 (a pipe with its data) and no fd 100; R has no
 *     fd 101.
 *
 *   --layout=siblings: R forks A, which puts a pipe with data at fd 100
 *   and clones B with CLONE_FILES and CLONE_PARENT: two siblings share a
 *   table that their parent R does not have. After SIGTERM A and B still
 *   share a table (kcmp, checked by R, which has no fd 100), B finds A's
 *   pipe at fd 100 with its data, and a pipe A opens after the restore
 *   is at the same fd in B.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that an fd table shared by two processes stays shared";

static char *layout = "parent";
TEST_OPTION(layout, string, "parent or siblings", 0);

#define WAIT_SECS 10
#define R_FD 100 /* the root's, in the shared table */
#define G_FD 101 /* the grandchild's, in its own table */
#define KCMP_FILES 2

static const char r_data[] = "root";
static const char g_data[] = "grandchild";

static int failed;

struct msg {
	int fd;
	ino_t ino;
};

static ino_t ino_of(int fd)
{
	struct stat st;

	if (fstat(fd, &st))
		return 0;
	return st.st_ino;
}

/* A pipe made again by the restore has another inode: what was in it tells. */
static int is_fifo(int fd)
{
	struct stat st;

	return !fstat(fd, &st) && S_ISFIFO(st.st_mode);
}

static int is_closed(int fd)
{
	return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

/* A pipe whose read end is at `at`, with `data` in it; its inode. */
static ino_t pipe_at(int at, const char *data)
{
	int p[2];

	if (pipe(p) || dup2(p[0], at) != at || write(p[1], data, strlen(data)) != (ssize_t)strlen(data))
		return 0;
	close(p[0]);
	close(p[1]);
	return ino_of(at);
}

static int has_data(int fd, const char *data)
{
	char buf[32] = {};

	return read(fd, buf, sizeof(buf) - 1) == (ssize_t)strlen(data) && !strcmp(buf, data);
}

/* The grandchild: its own table, with its fd 101 and without fd 100. */
static void grandchild(int ready)
{
	if (!pipe_at(G_FD, g_data) || write(ready, "g", 1) != 1)
		_exit(3);
	test_waitsig();
	test_check(is_fifo(G_FD), "grandchild: fd %d is not its pipe", G_FD);
	test_check(has_data(G_FD, g_data), "grandchild: its pipe lost its data");
	test_check(is_closed(R_FD), "grandchild: has fd %d of the table it does not share", R_FD);
	_exit(failed);
}

/* The sharer: ctl from the root, back to it. */
static void sharer(int ctl, int back)
{
	struct msg pre, m, q;
	int p[2], status;
	char ack;
	pid_t g;

	g = fork();
	if (g < 0)
		_exit(3);
	if (g == 0)
		grandchild(back);

	test_waitsig();
	if (read(ctl, &pre, sizeof(pre)) != sizeof(pre) || read(ctl, &m, sizeof(m)) != sizeof(m))
		_exit(4);
	test_check(is_fifo(pre.fd), "sharer: fd %d opened by the root before the dump is not there", pre.fd);
	test_check(has_data(pre.fd, r_data), "sharer: the root's pipe at fd %d lost its data", pre.fd);
	test_check(is_closed(G_FD), "sharer: has the grandchild's fd %d", G_FD);
	test_check(ino_of(m.fd) == m.ino, "sharer: fd %d the root opened after the restore is not its pipe", m.fd);

	if (pipe(p))
		_exit(5);
	close(p[1]);
	q.fd = p[0];
	q.ino = ino_of(p[0]);
	if (write(back, &q, sizeof(q)) != sizeof(q) || read(ctl, &ack, 1) != 1)
		_exit(6);
	test_check(is_closed(q.fd), "sharer: fd %d the root closed is still open here", q.fd);
	close(m.fd);

	kill(g, SIGTERM);
	if (test_wait_exit(g, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(grandchild %d): %s\n", g, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "grandchild: ended with status %#x", status);
	_exit(failed);
}

static int parent_layout(void)
{
	int ctl[2], back[2], p[2], status;
	struct msg pre, m, q;
	pid_t pid;
	char c;

	if (pipe(ctl) || pipe(back)) {
		pr_perror("pipe");
		return 1;
	}
	pid = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, NULL, NULL, 0);
	if (pid < 0) {
		pr_perror("clone(CLONE_FILES)");
		return 1;
	}
	if (pid == 0)
		sharer(ctl[0], back[1]);

	/* The grandchild exists, with its own table, before fd 100 does. */
	if (read(back[0], &c, 1) != 1 || c != 'g') {
		pr_err("the grandchild did not start\n");
		return 1;
	}
	pre.fd = R_FD;
	pre.ino = pipe_at(R_FD, r_data);
	if (!pre.ino || write(ctl[1], &pre, sizeof(pre)) != sizeof(pre)) {
		pr_perror("pipe at fd %d", R_FD);
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (pipe(p)) {
		pr_perror("pipe");
		return 1;
	}
	close(p[1]);
	m.fd = p[0];
	m.ino = ino_of(p[0]);
	if (write(ctl[1], &m, sizeof(m)) != sizeof(m)) {
		pr_perror("write");
		return 1;
	}
	kill(pid, SIGTERM);
	if (read(back[0], &q, sizeof(q)) != sizeof(q)) {
		pr_perror("read from the sharer");
		failed = 1;
	} else {
		test_check(ino_of(q.fd) == q.ino, "fd %d the sharer opened after the restore is not its pipe", q.fd);
		close(q.fd);
		if (write(ctl[1], "k", 1) != 1)
			pr_perror("write"), failed = 1;
	}
	if (test_wait_exit(pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(sharer %d): %s\n", pid, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "sharer: ended with status %#x", status);
	test_check(is_closed(m.fd), "fd %d the sharer closed is still open here", m.fd);
	test_check(is_fifo(R_FD), "fd %d is not the pipe put there before the dump", R_FD);
	test_check(is_closed(G_FD), "has the grandchild's fd %d", G_FD);
	return 0;
}

static int siblings_layout(void)
{
	int ready[2], status, i;
	pid_t pids[2];

	if (pipe(ready)) {
		pr_perror("pipe");
		return 1;
	}
	pids[0] = fork();
	if (pids[0] < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pids[0] == 0) {
		int after[2];
		pid_t b;

		if (!pipe_at(R_FD, r_data) || pipe(after))
			_exit(2);
		b = syscall(SYS_clone, CLONE_FILES | CLONE_PARENT | SIGCHLD, 0, NULL, NULL, 0);
		if (b < 0)
			_exit(3);
		if (b == 0) {
			struct msg m;

			test_waitsig();
			test_check(is_fifo(R_FD), "sibling B: fd %d of the shared table is not A's pipe", R_FD);
			test_check(has_data(R_FD, r_data), "sibling B: A's pipe at fd %d lost its data", R_FD);
			if (read(after[0], &m, sizeof(m)) != sizeof(m))
				_exit(5);
			test_check(ino_of(m.fd) == m.ino, "sibling B: fd %d A opened after the restore is not its pipe",
				   m.fd);
			_exit(failed);
		}
		if (write(ready[1], &b, sizeof(b)) != sizeof(b))
			_exit(4);
		test_waitsig();
		{
			int p[2];
			struct msg m;

			if (pipe(p))
				_exit(6);
			m.fd = p[0];
			m.ino = ino_of(p[0]);
			if (write(after[1], &m, sizeof(m)) != sizeof(m))
				_exit(7);
		}
		_exit(0);
	}
	if (read(ready[0], &pids[1], sizeof(pids[1])) != sizeof(pids[1])) {
		pr_err("the sibling was not cloned\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(syscall(SYS_kcmp, pids[0], pids[1], KCMP_FILES, 0, 0) == 0,
		   "pids %d and %d no longer share an fd table", pids[0], pids[1]);
	test_check(is_closed(R_FD), "the parent has fd %d of its children's table", R_FD);
	for (i = 0; i < 2; i++) {
		kill(pids[i], SIGTERM);
		if (test_wait_exit(pids[i], &status, WAIT_SECS))
			test_msg("FAILED: waitpid(%d): %s\n", pids[i], strerror(errno)), failed = 1;
		else
			test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%d: ended with status %#x",
				   pids[i], status);
	}
	return 0;
}

int main(int argc, char **argv)
{
	int r;

	test_init(argc, argv);

	if (!strcmp(layout, "parent"))
		r = parent_layout();
	else if (!strcmp(layout, "siblings"))
		r = siblings_layout();
	else {
		pr_err("unknown --layout=%s\n", layout);
		return 1;
	}
	if (r)
		return r;
	if (failed) {
		errno = 0;
		fail("the fd tables are not as they were");
		return 1;
	}
	pass();
	return 0;
}
