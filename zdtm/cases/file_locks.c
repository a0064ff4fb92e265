/*
 * file_locks: a tree holding file locks on a regular file. Without
 * --file-locks (which these rows do not pass) the dump must refuse the
 * tree, naming the lock, and the tree goes on holding it.
 *
 *   --kind=flock  flock(LOCK_EX)
 *   --kind=posix  fcntl(F_SETLK) write lock on bytes 10-19
 *   --kind=ofd    fcntl(F_OFD_SETLK) read lock on bytes 0-9
 *
 * After SIGTERM a child process checks that the lock is still held: a
 * conflicting request of its own (a new open file description) fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a tree holding file locks is refused, and keeps them";

static char *kind = "flock";
TEST_OPTION(kind, string, "flock, posix or ofd", 0);

static char *filename = "file_locks.file";
TEST_OPTION(filename, string, "the locked file", 0);

static int failed;

static int lock(int fd, int cmd, short type, off_t start)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = 10 };

	return fcntl(fd, cmd, &fl);
}

/* 0 when a new open file description of another process cannot take it */
static int held_elsewhere(void)
{
	int status, r;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(filename, O_RDWR);

		if (fd < 0)
			_exit(2);
		if (!strcmp(kind, "flock"))
			r = flock(fd, LOCK_EX | LOCK_NB);
		else if (!strcmp(kind, "posix"))
			r = lock(fd, F_SETLK, F_WRLCK, 10);
		else
			r = lock(fd, F_OFD_SETLK, F_WRLCK, 0);
		_exit(r == 0 ? 1 : 0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv)
{
	int fd, r;

	test_init(argc, argv);

	fd = open(filename, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 100)) {
		pr_perror("open %s", filename);
		return 1;
	}
	if (!strcmp(kind, "flock"))
		r = flock(fd, LOCK_EX);
	else if (!strcmp(kind, "posix"))
		r = lock(fd, F_SETLK, F_WRLCK, 10);
	else if (!strcmp(kind, "ofd"))
		r = lock(fd, F_OFD_SETLK, F_RDLCK, 0);
	else {
		pr_err("unknown kind %s\n", kind);
		return 1;
	}
	if (r) {
		pr_perror("lock (%s)", kind);
		return 1;
	}
	if (held_elsewhere()) {
		pr_err("the %s lock is not seen by another process\n", kind);
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(held_elsewhere() == 0, "the %s lock is no longer held", kind);
	if (failed) {
		errno = 0;
		fail("file locks were lost");
		return 1;
	}
	pass();
	return 0;
}
