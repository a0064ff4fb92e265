/*
 * unix_socketpair: UNIX socket pairs in one process keep their queued data,
 * message boundaries, shutdown state, flags and options.
 *
 *   st     SOCK_STREAM; 3000 bytes queued st[0] -> st[1] and 500 bytes
 *          st[1] -> st[0]; then st[0] is shut down for writing; st[1] is
 *          O_NONBLOCK and has SO_RCVBUF set
 *   dg     SOCK_DGRAM; messages of 1, 100, 4000, 70000 and 37 bytes queued
 *          dg[0] -> dg[1], of 7 and 2000 bytes dg[1] -> dg[0]; dg[0] has
 *          SO_SNDBUF set; dg[1] is also dup'ed to `dup_fd`
 *   sp     SOCK_SEQPACKET; SO_PASSCRED on sp[0], whose queue stays empty;
 *          one 300-byte message queued sp[0] -> sp[1]; SO_RCVTIMEO of
 *          2.5 s on sp[1]
 *
 * After SIGTERM: every queued byte reads back in order, each message with
 * its own size; st[1] reads EOF after the data and st[0] cannot write; the
 * flags and options read back; dup_fd is dg[1]; new data goes both ways on
 * dg and sp, and st[1] -> st[0]; sp[0] receives credentials.
 *
 * --sabotage=WHAT (debug): data (a queued byte is expected different),
 * order (the datagrams are expected in another order).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that UNIX socket pairs keep their queues, shutdown state and options";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: expect other state after SIGTERM (data, order)", 0);

static int sabotaged(const char *what)
{
	return sabotage && !strcmp(sabotage, what);
}

#define ST_DOWN 3000
#define ST_UP 500
static const int dg_down[] = { 1, 100, 4000, 70000, 37 };
#define N_DOWN ((int)(sizeof(dg_down) / sizeof(dg_down[0])))
#define MSG_MAX 80000
static const int dg_up[] = { 7, 2000 };
#define SP_BYTES 300

static int failed;

static void fill(uint8_t *buf, int len, int seed)
{
	zdtm_fill_seeded(buf, len, seed);
}

static int sockopt(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l))
		return -1;
	return v;
}

/* the next message of fd, which must be `len` bytes from `seed` */
static void expect_msg(int fd, const char *what, int len, int seed)
{
	static uint8_t buf[MSG_MAX], want[MSG_MAX];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	fill(want, len, seed);
	if (sabotaged("data") && seed == 11)
		want[0] ^= 1;
	test_check(n == len && !memcmp(buf, want, len), "%s: a message of %zd bytes, expected %d (seed %d)%s", what, n,
		   len, seed, n == len ? " with other contents" : "");
}

/* all of a stream's `len` bytes from `seed` */
static void expect_bytes(int fd, const char *what, int len, int seed)
{
	uint8_t buf[ST_DOWN], want[ST_DOWN];
	int got = 0;

	while (got < len) {
		ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);

		if (n <= 0)
			break;
		got += n;
	}
	fill(want, len, seed);
	test_check(got == len && !memcmp(buf, want, len), "%s: read %d of %d bytes%s", what, got, len,
		   got == len ? ", with other contents" : "");
}

static int send_msg(int fd, int len, int seed)
{
	static uint8_t buf[MSG_MAX];

	fill(buf, len, seed);
	if (send(fd, buf, len, MSG_DONTWAIT) != len) {
		pr_perror("send of %d bytes", len);
		return -1;
	}
	return 0;
}

static void expect_empty(int fd, const char *what)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);

	test_check(n < 0 && errno == EAGAIN, "%s: more queued than expected (recv gave %zd)", what, n);
}

int main(int argc, char **argv)
{
	int st[2], dg[2], sp[2], dup_fd, rcvbuf, sndbuf, i, n;
	uint8_t buf[ST_DOWN];
	struct stat a, b;
	char c;

	test_init(argc, argv);

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp)) {
		pr_perror("socketpair");
		return 1;
	}
	n = 65536;
	if (setsockopt(st[1], SOL_SOCKET, SO_RCVBUF, &n, sizeof(n))) {
		pr_perror("SO_RCVBUF");
		return 1;
	}
	n = 50000;
	if (setsockopt(dg[0], SOL_SOCKET, SO_SNDBUF, &n, sizeof(n))) {
		pr_perror("SO_SNDBUF");
		return 1;
	}
	n = 1;
	if (setsockopt(sp[0], SOL_SOCKET, SO_PASSCRED, &n, sizeof(n))) {
		pr_perror("SO_PASSCRED");
		return 1;
	}
	{
		struct timeval tv = { 2, 500000 };

		if (setsockopt(sp[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))) {
			pr_perror("SO_RCVTIMEO");
			return 1;
		}
	}
	rcvbuf = sockopt(st[1], SO_RCVBUF);
	sndbuf = sockopt(dg[0], SO_SNDBUF);
	if (set_nonblock(st[1], 1))
		return 1;

	fill(buf, ST_DOWN, 1);
	if (write_data(st[0], buf, ST_DOWN))
		return 1;
	fill(buf, ST_UP, 2);
	if (write_data(st[1], buf, ST_UP))
		return 1;
	if (shutdown(st[0], SHUT_WR)) {
		pr_perror("shutdown");
		return 1;
	}
	for (i = 0; i < N_DOWN; i++)
		if (send_msg(dg[0], dg_down[i], 10 + i))
			return 1;
	for (i = 0; i < 2; i++)
		if (send_msg(dg[1], dg_up[i], 20 + i))
			return 1;
	if (send_msg(sp[0], SP_BYTES, 30))
		return 1;
	dup_fd = dup(dg[1]);
	if (dup_fd < 0) {
		pr_perror("dup");
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(sockopt(st[0], SO_TYPE) == SOCK_STREAM && sockopt(dg[0], SO_TYPE) == SOCK_DGRAM &&
			   sockopt(sp[1], SO_TYPE) == SOCK_SEQPACKET,
		   "socket types changed");
	test_check(fcntl(st[1], F_GETFL) & O_NONBLOCK, "st[1] lost O_NONBLOCK");
	test_check(!(fcntl(st[0], F_GETFL) & O_NONBLOCK), "st[0] became O_NONBLOCK");
	test_check(sockopt(st[1], SO_RCVBUF) == rcvbuf, "SO_RCVBUF of st[1] is %d, expected %d",
		   sockopt(st[1], SO_RCVBUF), rcvbuf);
	test_check(sockopt(dg[0], SO_SNDBUF) == sndbuf, "SO_SNDBUF of dg[0] is %d, expected %d",
		   sockopt(dg[0], SO_SNDBUF), sndbuf);
	test_check(sockopt(sp[0], SO_PASSCRED) == 1 && sockopt(sp[1], SO_PASSCRED) == 0,
		   "SO_PASSCRED is %d and %d, expected 1 and 0", sockopt(sp[0], SO_PASSCRED),
		   sockopt(sp[1], SO_PASSCRED));
	{
		struct timeval tv = {};
		socklen_t l = sizeof(tv);

		test_check(!getsockopt(sp[1], SOL_SOCKET, SO_RCVTIMEO, &tv, &l) && tv.tv_sec == 2 &&
				   tv.tv_usec == 500000,
			   "SO_RCVTIMEO of sp[1] is %ld.%06ld s, expected 2.5", (long)tv.tv_sec, (long)tv.tv_usec);
	}
	test_check(!fstat(dup_fd, &a) && !fstat(dg[1], &b) && a.st_ino == b.st_ino,
		   "the dup of dg[1] is another socket");

	/* stream: the data, then EOF on st[1]; st[0] cannot write */
	expect_bytes(st[1], "st[1]", ST_DOWN, 1);
	n = recv(st[1], &c, 1, MSG_DONTWAIT);
	test_check(n == 0, "st[1]: no EOF after the data (recv gave %d, errno %d)", n, errno);
	expect_bytes(st[0], "st[0]", ST_UP, 2);
	n = send(st[0], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	test_check(n < 0 && errno == EPIPE, "st[0] could write after its shutdown (send gave %d)", n);
	if (send_msg(st[1], 100, 3) == 0)
		expect_bytes(st[0], "st[0] after restore", 100, 3);
	else
		failed = 1;

	/* datagrams: each with its size, in order; the first through the dup */
	for (i = 0; i < N_DOWN; i++) {
		int j = sabotaged("order") ? N_DOWN - 1 - i : i;

		expect_msg(i ? dg[1] : dup_fd, "dg[1]", dg_down[j], 10 + j);
	}
	expect_empty(dg[1], "dg[1]");
	for (i = 0; i < 2; i++)
		expect_msg(dg[0], "dg[0]", dg_up[i], 20 + i);
	expect_empty(dg[0], "dg[0]");
	if (send_msg(dg[0], 55, 40) || send_msg(dg[1], 66, 41))
		failed = 1;
	expect_msg(dg[1], "dg[1] after restore", 55, 40);
	expect_msg(dg[0], "dg[0] after restore", 66, 41);

	/* seqpacket: the message, then new ones both ways, with credentials */
	expect_msg(sp[1], "sp[1]", SP_BYTES, 30);
	expect_empty(sp[1], "sp[1]");
	if (send_msg(sp[0], 77, 50) || send_msg(sp[1], 88, 51))
		failed = 1;
	expect_msg(sp[1], "sp[1] after restore", 77, 50);
	{
		char cbuf[CMSG_SPACE(sizeof(struct ucred))];
		uint8_t m[128], want[128];
		struct iovec iov = { m, sizeof(m) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *cm;
		struct ucred *uc = NULL;

		n = recvmsg(sp[0], &mh, MSG_DONTWAIT);
		fill(want, 88, 51);
		test_check(n == 88 && !memcmp(m, want, 88), "sp[0] after restore: a message of %d bytes", n);
		cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
		if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS)
			uc = (struct ucred *)CMSG_DATA(cm);
		test_check(uc && uc->pid == getpid(), "sp[0]: no credentials of this process with the message");
	}

	if (failed) {
		errno = 0;
		fail("UNIX socket pairs were not restored correctly");
		return 1;
	}
	pass();
	return 0;
}
