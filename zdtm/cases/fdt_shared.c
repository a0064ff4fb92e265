/*
 * fdt_shared: a child cloned with CLONE_FILES (without CLONE_THREAD) shares
 * its parent's fd table. After SIGTERM the parent opens a pipe and tells
 * the child its fd number and inode through a pipe made before; the child
 * must find that very pipe at that fd (fstat), and an fd the child closes
 * must be gone in the parent too.
 *
 * ckpt cannot restore a shared fd table yet: the dump must refuse it,
 * naming it, and the tree goes on (the checks then run on the original).
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

#define WAIT_SECS 10

static int failed;

struct msg {
	int fd;
	ino_t ino;
};

int main(int argc, char **argv)
{
	int ctl[2], p[2], status;
	struct msg m;
	struct stat st;
	pid_t pid;

	test_init(argc, argv);

	if (pipe(ctl)) {
		pr_perror("pipe");
		return 1;
	}
	pid = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, NULL, NULL, 0);
	if (pid < 0) {
		pr_perror("clone(CLONE_FILES)");
		return 1;
	}
	if (pid == 0) {
		test_waitsig();
		if (read(ctl[0], &m, sizeof(m)) != sizeof(m))
			_exit(2);
		if (fstat(m.fd, &st) || st.st_ino != m.ino) {
			test_msg("child: fd %d is not the parent's new pipe\n", m.fd);
			_exit(1);
		}
		close(m.fd);
		_exit(0);
	}

	test_daemon();
	test_waitsig();

	if (pipe(p) || fstat(p[0], &st)) {
		pr_perror("pipe");
		return 1;
	}
	m.fd = p[0];
	m.ino = st.st_ino;
	if (write(ctl[1], &m, sizeof(m)) != sizeof(m)) {
		pr_perror("write");
		return 1;
	}
	kill(pid, SIGTERM);
	if (test_wait_exit(pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(child %d): %s\n", pid, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: ended with status %#x", status);
	test_check(fcntl(p[0], F_GETFD) < 0 && errno == EBADF, "fd %d the child closed is still open here", p[0]);

	if (failed) {
		errno = 0;
		fail("the fd table is not shared");
		return 1;
	}
	pass();
	return 0;
}
