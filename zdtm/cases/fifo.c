/*
 * fifo: named pipes (FIFOs) survive checkpoint/restore with the data
 * buffered in them.
 *
 *   a   fifo.a.PID, opened twice: ra O_RDONLY|O_NONBLOCK and wa O_WRONLY
 *       (two open files of one FIFO); 5000 bytes written into wa and not
 *       read before the dump
 *   b   fifo.b.PID, opened once O_RDWR; 3000 bytes written and not read
 *
 * After SIGTERM, for every fd: F_GETFL is what it was (O_NONBLOCK on ra
 * only), the /proc/self/fd link names the path as before, and fstat gives
 * a FIFO with the path's inode; FIONREAD shows the bytes in flight, they
 * read back in order, the FIFO is empty then, and new data written flows
 * through (wa to ra, b to itself).
 *
 * --kind=WHAT:
 *   child     a child (fork) holds the same three open files until the
 *             parent is done: the FIFOs are shared between processes
 *   unlinked  fifo.a is unlinked before the dump (still open, data in
 *             it): after SIGTERM ra and wa are still one FIFO (same
 *             inode, no link left) and nothing is at its path
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that named pipes (FIFOs) are restored with the data in them";

#define A_BYTES 5000
#define B_BYTES 3000
#define NEW_BYTES 700
#define WAIT_SECS 15

static char *kind;
TEST_OPTION(kind, string, "child or unlinked", 0);

static int is_kind(const char *what)
{
	return kind && !strcmp(kind, what);
}

static int failed;

struct fdesc {
	const char *what;
	char *path;
	int fd, getfl;
	char link[PATH_MAX];
};

static int fd_link(int fd, char *buf)
{
	char p[64];
	ssize_t n;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	n = readlink(p, buf, PATH_MAX - 1);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

static int queued(int fd)
{
	int n = -1;

	if (ioctl(fd, FIONREAD, &n))
		return -1;
	return n;
}

/* reads up to len bytes the fd has now, without waiting for more */
static int read_now(int fd, uint8_t *buf, int len)
{
	int got = 0, fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		return -1;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n <= 0)
			break;
		got += n;
	}
	if (fcntl(fd, F_SETFL, fl))
		return -1;
	return got;
}

/* `fd` holds exactly `data` (len bytes), then nothing */
static void check_data(const char *what, int fd, const uint8_t *data, int len)
{
	uint8_t buf[A_BYTES + 1];
	int n, q = queued(fd);

	test_check(q == len, "%s: %d bytes queued, expected %d", what, q, len);
	n = read_now(fd, buf, len);
	test_check(n == len && !memcmp(buf, data, len), "%s: read %d of the %d bytes%s", what, n, len,
		   n == len ? ", with wrong contents" : "");
	q = queued(fd);
	test_check(q == 0, "%s: %d bytes left after them", what, q);
}

int main(int argc, char **argv)
{
	char a_path[64], b_path[64];
	struct fdesc fds[] = {
		{ "ra", a_path, -1 },
		{ "wa", a_path, -1 },
		{ "b", b_path, -1 },
	};
	enum { RA, WA, B, NFDS };
	uint8_t a_data[A_BYTES], b_data[B_BYTES], fresh[NEW_BYTES];
	size_t i;
	pid_t pid = -1;
	int status;

	test_init(argc, argv);

	snprintf(a_path, sizeof(a_path), "fifo.a.%d", getpid());
	snprintf(b_path, sizeof(b_path), "fifo.b.%d", getpid());
	unlink(a_path);
	unlink(b_path);
	if (mkfifo(a_path, 0600) || mkfifo(b_path, 0600)) {
		pr_perror("mkfifo");
		return 1;
	}
	/* the reader first, non-blocking: the writer's open does not block then */
	fds[RA].fd = open(a_path, O_RDONLY | O_NONBLOCK);
	fds[WA].fd = open(a_path, O_WRONLY);
	fds[B].fd = open(b_path, O_RDWR);
	for (i = 0; i < NFDS; i++) {
		if (fds[i].fd < 0) {
			pr_perror("open %s", fds[i].what);
			return 1;
		}
	}
	zdtm_fill_seeded(a_data, A_BYTES, 1);
	zdtm_fill_seeded(b_data, B_BYTES, 2);
	zdtm_fill_seeded(fresh, NEW_BYTES, 3);
	if (write_data(fds[WA].fd, a_data, A_BYTES) || write_data(fds[B].fd, b_data, B_BYTES))
		return 1;
	if (is_kind("unlinked") && unlink(a_path)) {
		pr_perror("unlink %s", a_path);
		return 1;
	}
	for (i = 0; i < NFDS; i++) {
		fds[i].getfl = fcntl(fds[i].fd, F_GETFL);
		if (fds[i].getfl < 0 || fd_link(fds[i].fd, fds[i].link)) {
			pr_perror("fcntl or readlink of %s", fds[i].what);
			return 1;
		}
	}
	if (is_kind("child")) {
		pid = fork();
		if (pid < 0) {
			pr_perror("fork");
			return 1;
		}
		if (pid == 0) {
			test_waitsig();
			_exit(0);
		}
	}

	test_daemon();
	test_waitsig();

	for (i = 0; i < NFDS; i++) {
		struct fdesc *f = &fds[i];
		char link[PATH_MAX];
		struct stat st_fd, st_path;
		int fl = fcntl(f->fd, F_GETFL);

		test_check(fl == f->getfl, "%s: F_GETFL is %#o, was %#o", f->what, fl, f->getfl);
		test_check(!fd_link(f->fd, link) && !strcmp(link, f->link), "%s: the fd names %s, was %s",
			   f->what, link, f->link);
		if (is_kind("unlinked") && f->path == a_path) {
			test_check(!fstat(f->fd, &st_fd) && S_ISFIFO(st_fd.st_mode) && st_fd.st_nlink == 0,
				   "%s: the fd is not an unlinked FIFO", f->what);
			continue;
		}
		test_check(!fstat(f->fd, &st_fd) && !stat(f->path, &st_path) && S_ISFIFO(st_fd.st_mode) &&
				   st_fd.st_ino == st_path.st_ino && st_fd.st_dev == st_path.st_dev,
			   "%s: the fd is not the FIFO %s", f->what, f->path);
	}
	if (is_kind("unlinked")) {
		struct stat ra, wa, p;

		test_check(!fstat(fds[RA].fd, &ra) && !fstat(fds[WA].fd, &wa) && ra.st_ino == wa.st_ino &&
				   ra.st_dev == wa.st_dev,
			   "ra, wa: no longer one FIFO");
		test_check(stat(a_path, &p) && errno == ENOENT, "%s: something is at the unlinked FIFO's path",
			   a_path);
	}
	test_check(fds[RA].getfl & O_NONBLOCK, "ra: was not O_NONBLOCK before the dump");
	test_check(!(fds[WA].getfl & O_NONBLOCK) && !(fds[B].getfl & O_NONBLOCK),
		   "wa, b: were O_NONBLOCK before the dump");

	/* the data in flight, in order, and nothing more */
	check_data("a", fds[RA].fd, a_data, A_BYTES);
	check_data("b", fds[B].fd, b_data, B_BYTES);

	/* new data flows */
	if (write_data(fds[WA].fd, fresh, NEW_BYTES) == 0)
		check_data("a, after restore", fds[RA].fd, fresh, NEW_BYTES);
	else
		failed = 1;
	if (write_data(fds[B].fd, fresh, NEW_BYTES) == 0)
		check_data("b, after restore", fds[B].fd, fresh, NEW_BYTES);
	else
		failed = 1;

	if (pid > 0) {
		if (kill(pid, SIGTERM))
			test_msg("FAILED: kill(child %d): %s\n", pid, strerror(errno)), failed = 1;
		else if (test_wait_exit(pid, &status, WAIT_SECS))
			test_msg("FAILED: waitpid(child %d): %s\n", pid, strerror(errno)), failed = 1;
		else
			test_check(WIFEXITED(status) && !WEXITSTATUS(status), "child: status %#x", status);
	}
	for (i = 0; i < NFDS; i++)
		close(fds[i].fd);
	unlink(a_path);
	unlink(b_path);

	if (failed) {
		errno = 0;
		fail("named pipes changed (see above)");
		return 1;
	}
	pass();
	return 0;
}
