/*
 * unix_scm_rights: file descriptors in flight (SCM_RIGHTS) in UNIX socket
 * queues stay in flight, in order, each still the file it was.
 *
 *   st     SOCK_STREAM pair; queued st[0] -> st[1], one message each:
 *          "pipe"  the read end of a pipe holding "hello" (the process
 *                  closed it and keeps the write end)
 *          "file"  a regular file at offset 5 (the process closed it)
 *          "share" a regular file the process still holds (the same open
 *                  file: one offset)
 *          "sock"  one end of a datagram socketpair with a message queued
 *                  on it (the process closed it and keeps the other end)
 *          "multi" three fds: the write end of a second pipe (the process
 *                  keeps the read end), the "file" file again (opened
 *                  anew), and a dup of the first pipe's write end
 *   dg     SOCK_DGRAM pair; one message dg[0] -> dg[1] with two fds: the
 *          read end of a third pipe holding "third", and /dev/null
 *   srv    a datagram socket bound to an abstract name; a message with
 *          the "file" file (opened anew, at offset 2) sent to it from an
 *          unbound socket the process closed
 *
 * After SIGTERM every message reads back with its fds, and each fd is the
 * file it was: the pipes connect to the ends the process kept, the files
 * have their contents and offsets (one shared with the process's own fd),
 * the socket gets its queued message and talks to its peer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that files in flight in UNIX socket queues are restored";

static int failed;

#define TAG 8
#define FILE_DATA "0123456789abcdef"

static int send_fds(int sk, const char *tag, const int *fds, int n, const struct sockaddr_un *to, socklen_t tolen)
{
	char m[TAG] = {};
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { m, TAG };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
	struct cmsghdr *cm;

	memcpy(m, tag, strlen(tag) < TAG ? strlen(tag) : TAG);
	if (to) {
		mh.msg_name = (void *)to;
		mh.msg_namelen = tolen;
	}
	memset(cbuf, 0, sizeof(cbuf));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	if (sendmsg(sk, &mh, MSG_DONTWAIT) != TAG) {
		pr_perror("sendmsg %s", tag);
		return -1;
	}
	return 0;
}

/* the next message of sk: `tag` with `n` fds, into fds */
static int recv_fds(int sk, const char *tag, int *fds, int n)
{
	char m[TAG + 1] = {};
	char cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { m, TAG };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	ssize_t got = recvmsg(sk, &mh, MSG_DONTWAIT);
	int have = 0;

	if (got != TAG || strcmp(m, tag)) {
		test_check(0, "%s: got a message of %zd bytes \"%s\" (errno %d)", tag, got, got > 0 ? m : "", errno);
		return -1;
	}
	cm = CMSG_FIRSTHDR(&mh);
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
		have = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (have == n)
			memcpy(fds, CMSG_DATA(cm), sizeof(int) * n);
	}
	test_check(have == n && !(mh.msg_flags & MSG_CTRUNC), "%s: %d fds came with it, expected %d", tag, have, n);
	return have == n ? 0 : -1;
}

static void expect_read(int fd, const char *what, const char *want)
{
	char buf[64] = {};
	ssize_t n = read(fd, buf, sizeof(buf) - 1);

	test_check(n == (ssize_t)strlen(want) && !memcmp(buf, want, n), "%s: read \"%s\" (%zd), expected \"%s\"", what,
		   n > 0 ? buf : "", n, want);
}

/* a pipe: bytes written at `w` come out of `r` */
static void expect_pipe(int w, int r, const char *what)
{
	test_check(write(w, "xyz", 3) == 3, "%s: write", what);
	expect_read(r, what, "xyz");
}

static void expect_file(int fd, const char *what, off_t off, const char *rest)
{
	off_t at = lseek(fd, 0, SEEK_CUR);

	test_check(at == off, "%s: at offset %ld, expected %ld", what, (long)at, (long)off);
	expect_read(fd, what, rest);
}

static int open_file(const char *name, off_t off)
{
	int fd = open(name, O_RDWR);

	if (fd < 0 || lseek(fd, off, SEEK_SET) != off) {
		pr_perror("open %s", name);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	int st[2], dg[2], in[2], p1[2], p2[2], p3[2], f, sh, cl, srv, fds[3], got[3], pipe_r = -1;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	socklen_t alen;
	char c;

	test_init(argc, argv);

	f = open("scm_file", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (f < 0 || write(f, FILE_DATA, strlen(FILE_DATA)) != (ssize_t)strlen(FILE_DATA) || close(f)) {
		pr_perror("scm_file");
		return 1;
	}
	f = open("scm_shared", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (f < 0 || write(f, "shared-file", 11) != 11 || close(f)) {
		pr_perror("scm_shared");
		return 1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, in) || pipe(p1) || pipe(p2) || pipe(p3)) {
		pr_perror("socketpair or pipe");
		return 1;
	}
	if (write(p1[1], "hello", 5) != 5 || write(p3[1], "third", 5) != 5 || send(in[0], "queued", 6, 0) != 6) {
		pr_perror("filling");
		return 1;
	}

	/* "pipe" */
	if (send_fds(st[0], "pipe", &p1[0], 1, NULL, 0))
		return 1;
	close(p1[0]);
	/* "file" */
	if ((f = open_file("scm_file", 5)) < 0 || send_fds(st[0], "file", &f, 1, NULL, 0))
		return 1;
	close(f);
	/* "share" */
	if ((sh = open_file("scm_shared", 3)) < 0 || send_fds(st[0], "share", &sh, 1, NULL, 0))
		return 1;
	/* "sock" */
	if (send_fds(st[0], "sock", &in[1], 1, NULL, 0))
		return 1;
	close(in[1]);
	/* "multi" */
	fds[0] = p2[1];
	fds[1] = open_file("scm_file", 7);
	fds[2] = dup(p1[1]);
	if (fds[1] < 0 || fds[2] < 0 || send_fds(st[0], "multi", fds, 3, NULL, 0))
		return 1;
	close(p2[1]);
	close(fds[1]);
	close(fds[2]);
	/* dg */
	fds[0] = p3[0];
	fds[1] = open("/dev/null", O_WRONLY);
	if (fds[1] < 0 || send_fds(dg[0], "dgram", fds, 2, NULL, 0))
		return 1;
	close(p3[0]);
	close(p3[1]);
	close(fds[1]);
	/* srv */
	srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	cl = socket(AF_UNIX, SOCK_DGRAM, 0);
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "zdtm_scm_rights_%d", getpid());
	alen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(addr.sun_path + 1);
	if (srv < 0 || cl < 0 || bind(srv, (struct sockaddr *)&addr, alen)) {
		pr_perror("srv");
		return 1;
	}
	if ((f = open_file("scm_file", 2)) < 0 || send_fds(cl, "named", &f, 1, &addr, alen))
		return 1;
	close(f);
	close(cl);

	test_daemon();
	test_waitsig();

	if (!recv_fds(st[1], "pipe", got, 1)) {
		pipe_r = got[0];
		expect_read(pipe_r, "the pipe in flight", "hello");
		expect_pipe(p1[1], pipe_r, "the pipe in flight, from the kept write end");
	}
	if (!recv_fds(st[1], "file", got, 1))
		expect_file(got[0], "the file in flight", 5, FILE_DATA + 5);
	if (!recv_fds(st[1], "share", got, 1)) {
		test_check(lseek(sh, 6, SEEK_SET) == 6, "lseek");
		expect_file(got[0], "the shared file in flight", 6, "-file");
		test_check(lseek(sh, 0, SEEK_CUR) == 11, "the shared file: the process's fd has another offset");
	}
	if (!recv_fds(st[1], "sock", got, 1)) {
		char buf[16] = {};
		ssize_t n = recv(got[0], buf, sizeof(buf), MSG_DONTWAIT);

		test_check(n == 6 && !memcmp(buf, "queued", 6), "the socket in flight: its queue gave %zd bytes", n);
		test_check(send(in[0], "ping", 4, 0) == 4, "send to the socket in flight");
		n = recv(got[0], buf, sizeof(buf), MSG_DONTWAIT);
		test_check(n == 4 && !memcmp(buf, "ping", 4), "the socket in flight: not the peer of in[0] (%zd)", n);
		test_check(send(got[0], "pong", 4, 0) == 4, "send from the socket in flight");
		n = recv(in[0], buf, sizeof(buf), MSG_DONTWAIT);
		test_check(n == 4 && !memcmp(buf, "pong", 4), "in[0]: nothing from the socket in flight (%zd)", n);
	}
	if (!recv_fds(st[1], "multi", got, 3)) {
		expect_pipe(got[0], p2[0], "the second pipe's write end in flight");
		expect_file(got[1], "the file in flight again", 7, FILE_DATA + 7);
		if (pipe_r >= 0)
			expect_pipe(got[2], pipe_r, "the dup of the first pipe's write end in flight");
	}
	if (!recv_fds(dg[1], "dgram", got, 2)) {
		expect_read(got[0], "the third pipe in flight", "third");
		c = 0;
		test_check(read(got[0], &c, 1) == 0, "the third pipe: no EOF (its write end is closed)");
		test_check(write(got[1], "x", 1) == 1, "/dev/null in flight");
	}
	if (!recv_fds(srv, "named", got, 1))
		expect_file(got[0], "the file in flight to a named socket", 2, FILE_DATA + 2);
	test_check(recv(st[1], &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "st[1]: more queued");

	if (failed) {
		errno = 0;
		fail("files in flight were not restored correctly");
		return 1;
	}
	pass();
	return 0;
}
