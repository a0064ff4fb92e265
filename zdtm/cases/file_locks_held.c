/*
 * file_locks_held: a tree holding file locks of every kind, dumped and
 * restored with --file-locks, holds them again, exactly:
 *
 *   flock.file  flock(LOCK_SH) by the parent, on a description the child
 *               inherited (so one lock, held by both)
 *   posix.file  the parent's POSIX write lock on [10, 20) and read lock on
 *               [30, EOF); an OFD write lock on [0, 5) through another
 *               description of the parent
 *   child.file  the child's POSIX write lock on [0, EOF)
 * and a second child blocked in F_SETLKW for a write lock on posix.file
 * [10, 20): a waiter, not a holder (the freeze interrupts its request,
 * which it makes again after the restore).
 *
 * After SIGTERM a checker process (new descriptions of its own) finds:
 *  - LOCK_EX on flock.file refused, LOCK_SH granted;
 *  - F_GETLK of a write lock on posix.file [10, 20) reports the parent's
 *    write lock there; [20, 30) is free; a read lock on [30, 40) is
 *    granted but a write lock there refused; an OFD write on [0, 5)
 *    refused (F_OFD_GETLK reports a write lock, pid -1), on [5, 10) free;
 *  - F_GETLK on child.file reports the child's lock, from 0 to EOF;
 * then the parent unlocks [10, 20) and the waiter gets its lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that flock, POSIX and OFD locks are restored with --file-locks";

static int failed;

static int lk(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	return fcntl(fd, cmd, &fl);
}

static int getlk(int fd, int cmd, short type, off_t start, off_t len, struct flock *out)
{
	memset(out, 0, sizeof(*out));
	out->l_type = type;
	out->l_whence = SEEK_SET;
	out->l_start = start;
	out->l_len = len;
	return fcntl(fd, cmd, out);
}

static int open_file(const char *name)
{
	int fd = open(name, O_RDWR | O_CREAT, 0644);

	if (fd < 0 || ftruncate(fd, 100))
		return -1;
	return fd;
}

/* Runs in a new process: 0 when every lock is as it should be. */
static int check(pid_t parent, pid_t child)
{
	int f = open("flock.file", O_RDWR), p = open("posix.file", O_RDWR), c = open("child.file", O_RDWR);
	struct flock fl;

	if (f < 0 || p < 0 || c < 0)
		return 10;
	if (flock(f, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		return 1;
	if (flock(f, LOCK_SH | LOCK_NB))
		return 2;
	if (getlk(p, F_GETLK, F_WRLCK, 10, 10, &fl) || fl.l_type != F_WRLCK || fl.l_pid != parent ||
	    fl.l_start != 10 || fl.l_len != 10)
		return 3;
	if (getlk(p, F_GETLK, F_WRLCK, 20, 10, &fl) || fl.l_type != F_UNLCK)
		return 4;
	if (getlk(p, F_GETLK, F_RDLCK, 30, 10, &fl) || fl.l_type != F_UNLCK)
		return 5;
	if (getlk(p, F_GETLK, F_WRLCK, 30, 10, &fl) || fl.l_type != F_RDLCK || fl.l_pid != parent ||
	    fl.l_start != 30 || fl.l_len != 0)
		return 6;
	if (getlk(p, F_OFD_GETLK, F_WRLCK, 0, 5, &fl) || fl.l_type != F_WRLCK || fl.l_pid != -1 ||
	    fl.l_start != 0 || fl.l_len != 5)
		return 7;
	if (getlk(p, F_OFD_GETLK, F_WRLCK, 5, 5, &fl) || fl.l_type != F_UNLCK)
		return 8;
	if (getlk(c, F_GETLK, F_RDLCK, 50, 1, &fl) || fl.l_type != F_WRLCK || fl.l_pid != child ||
	    fl.l_start != 0 || fl.l_len != 0)
		return 9;
	return 0;
}

static int run_check(pid_t parent, pid_t child)
{
	int status;
	pid_t pid = fork();

	if (pid == 0)
		_exit(check(parent, child));
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
	int f, p, ofd, c, r, status, go[2], ready[2], got[2];
	pid_t child, waiter;
	char x;

	test_init(argc, argv);

	f = open_file("flock.file");
	p = open_file("posix.file");
	ofd = open("posix.file", O_RDWR);
	if (f < 0 || p < 0 || ofd < 0 || pipe(go) || pipe(ready) || pipe(got)) {
		pr_perror("open");
		return 1;
	}
	if (flock(f, LOCK_SH) || lk(p, F_SETLK, F_WRLCK, 10, 10) || lk(p, F_SETLK, F_RDLCK, 30, 0) ||
	    lk(ofd, F_OFD_SETLK, F_WRLCK, 0, 5)) {
		pr_perror("lock");
		return 1;
	}
	child = fork();
	if (child < 0) {
		pr_perror("fork");
		return 1;
	}
	if (child == 0) {
		c = open_file("child.file");
		if (c < 0 || lk(c, F_SETLK, F_WRLCK, 0, 0))
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		/* waits for the parent's word, holding its lock */
		if (read(go[0], &x, 1) != 1)
			_exit(1);
		_exit(0);
	}
	if (read(ready[0], &x, 1) != 1) {
		pr_perror("the child did not lock");
		return 1;
	}
	waiter = fork();
	if (waiter < 0) {
		pr_perror("fork");
		return 1;
	}
	if (waiter == 0) {
		int w = open("posix.file", O_RDWR);

		if (w < 0 || lk(w, F_SETLKW, F_WRLCK, 10, 10))
			_exit(1);
		if (write(got[1], "w", 1) != 1)
			_exit(1);
		_exit(0);
	}
	r = run_check(getpid(), child);
	if (r) {
		pr_err("the locks are not as expected before the dump (check %d)\n", r);
		return 1;
	}
	/* the waiter is queued behind the parent's lock */
	for (r = 0; r < 1000; r++) {
		char line[256];
		int waiting = 0;
		FILE *l = fopen("/proc/locks", "r");

		while (l && fgets(line, sizeof(line), l))
			if (strstr(line, "->") && atoi(strstr(line, "WRITE") ? strstr(line, "WRITE") + 5 : "0") == waiter)
				waiting = 1;
		if (l)
			fclose(l);
		if (waiting)
			break;
		usleep(1000);
	}
	if (r == 1000) {
		pr_err("the waiter does not wait\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	r = run_check(getpid(), child);
	test_check(r == 0, "lock check %d failed after restore", r);
	{
		struct pollfd pf = { .fd = got[0], .events = POLLIN };

		test_check(poll(&pf, 1, 0) == 0, "the waiter got the lock while the parent held it");
		if (lk(p, F_SETLK, F_UNLCK, 10, 10))
			test_check(0, "unlock");
		test_check(poll(&pf, 1, 5000) == 1 && read(got[0], &x, 1) == 1,
			   "the waiter did not get the lock once it was free");
		test_check(waitpid(waiter, &status, 0) == waiter && WIFEXITED(status) && !WEXITSTATUS(status),
			   "the waiter failed");
	}
	if (write(go[1], "q", 1) != 1 || waitpid(child, &status, 0) != child)
		test_check(0, "the child is gone");
	if (failed) {
		errno = 0;
		fail("file locks were not restored");
		return 1;
	}
	pass();
	return 0;
}
