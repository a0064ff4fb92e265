/*
 * unix_options: socket options of UNIX sockets come back.
 *
 *   st     a SOCK_STREAM pair; st[0] has SO_PASSSEC, SO_REUSEADDR and
 *          SO_KEEPALIVE; 100 bytes queued st[0] -> st[1], of which 30 were
 *          peeked with SO_PEEK_OFF set on st[1] (its offset is 30)
 *   dg     a SOCK_DGRAM socket bound to "sk.opts" with SO_REUSEADDR and
 *          SO_PEEK_OFF set to 0 (nothing peeked); two datagrams queued
 *   l      a listening SOCK_STREAM socket bound to "sk.optl" with
 *          SO_KEEPALIVE
 *   owner  st[1] is owned (F_SETOWN_EX) by the process, with F_SETSIG
 *          SIGUSR2; l by the process group
 *
 * After SIGTERM: the options read back, on each socket only where set;
 * st[1]'s SO_PEEK_OFF is 30, a peek gives bytes 30.. of the stream, a read
 * gives bytes 0..; dg's offset is 0 and it peeks its first datagram; the
 * owners and signal read back, st[0] has none.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that UNIX socket options (PASSSEC, REUSEADDR, KEEPALIVE, PEEK_OFF) come back";

static int failed;

static int sockopt(int fd, int opt)
{
	int v = -100;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l))
		return -100;
	return v;
}

static int set(int fd, int opt, int v)
{
	if (setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v))) {
		pr_perror("setsockopt %d", opt);
		return -1;
	}
	return 0;
}

/* F_GETOWN_EX of fd is (type, pid) */
static int owned_by(int fd, int type, pid_t pid)
{
	struct f_owner_ex o = { -1, -1 };

	return !fcntl(fd, F_GETOWN_EX, &o) && o.type == type && o.pid == pid;
}

static socklen_t addr_of(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
	return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

int main(int argc, char **argv)
{
	int st[2], dg, l, s, n;
	uint8_t buf[100], got[100];
	struct sockaddr_un a, b;
	socklen_t la, lb;

	test_init(argc, argv);
	unlink("sk.opts");
	unlink("sk.optl");
	la = addr_of(&a, "sk.opts");
	lb = addr_of(&b, "sk.optl");
	zdtm_fill_seeded(buf, sizeof(buf), 1);

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st)) {
		pr_perror("socketpair");
		return 1;
	}
	dg = socket(AF_UNIX, SOCK_DGRAM, 0);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	s = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (dg < 0 || l < 0 || s < 0 || bind(dg, (struct sockaddr *)&a, la) || bind(l, (struct sockaddr *)&b, lb) ||
	    listen(l, 3)) {
		pr_perror("socket");
		return 1;
	}
	if (set(st[0], SO_PASSSEC, 1) || set(st[0], SO_REUSEADDR, 1) || set(st[0], SO_KEEPALIVE, 1) ||
	    set(st[1], SO_PEEK_OFF, 0) || set(dg, SO_REUSEADDR, 1) || set(dg, SO_PEEK_OFF, 0) ||
	    set(l, SO_KEEPALIVE, 1))
		return 1;
	{
		struct f_owner_ex o = { F_OWNER_PID, getpid() }, g = { F_OWNER_PGRP, getpgrp() };

		if (fcntl(st[1], F_SETOWN_EX, &o) || fcntl(st[1], F_SETSIG, SIGUSR2) || fcntl(l, F_SETOWN_EX, &g)) {
			pr_perror("F_SETOWN_EX");
			return 1;
		}
	}
	if (write(st[0], buf, sizeof(buf)) != sizeof(buf) || recv(st[1], got, 30, MSG_PEEK) != 30) {
		pr_perror("write/peek");
		return 1;
	}
	if (sendto(s, "one", 3, 0, (struct sockaddr *)&a, la) != 3 ||
	    sendto(s, "second", 6, 0, (struct sockaddr *)&a, la) != 6) {
		pr_perror("sendto");
		return 1;
	}
	close(s);

	test_daemon();
	test_waitsig();

	test_check(sockopt(st[0], SO_PASSSEC) == 1 && sockopt(st[0], SO_REUSEADDR) == 1 &&
			   sockopt(st[0], SO_KEEPALIVE) == 1,
		   "st[0]: SO_PASSSEC %d, SO_REUSEADDR %d, SO_KEEPALIVE %d, expected 1, 1, 1",
		   sockopt(st[0], SO_PASSSEC), sockopt(st[0], SO_REUSEADDR), sockopt(st[0], SO_KEEPALIVE));
	test_check(sockopt(st[1], SO_PASSSEC) == 0 && sockopt(st[1], SO_REUSEADDR) == 0 &&
			   sockopt(st[1], SO_KEEPALIVE) == 0,
		   "st[1] got options it did not have");
	test_check(sockopt(st[0], SO_PEEK_OFF) == -1, "st[0]: SO_PEEK_OFF is %d, expected -1",
		   sockopt(st[0], SO_PEEK_OFF));
	test_check(sockopt(st[1], SO_PEEK_OFF) == 30, "st[1]: SO_PEEK_OFF is %d, expected 30",
		   sockopt(st[1], SO_PEEK_OFF));
	n = recv(st[1], got, 10, MSG_PEEK | MSG_DONTWAIT);
	test_check(n == 10 && !memcmp(got, buf + 30, 10), "st[1]: the peek did not start at byte 30 (%d)", n);
	n = recv(st[1], got, sizeof(got), MSG_DONTWAIT);
	test_check(n == sizeof(buf) && !memcmp(got, buf, sizeof(buf)), "st[1]: read %d bytes, expected the 100", n);
	test_check(sockopt(dg, SO_REUSEADDR) == 1 && sockopt(dg, SO_KEEPALIVE) == 0, "dg: SO_REUSEADDR %d, KEEPALIVE %d",
		   sockopt(dg, SO_REUSEADDR), sockopt(dg, SO_KEEPALIVE));
	test_check(sockopt(dg, SO_PEEK_OFF) == 0, "dg: SO_PEEK_OFF is %d, expected 0", sockopt(dg, SO_PEEK_OFF));
	n = recv(dg, got, sizeof(got), MSG_PEEK | MSG_DONTWAIT);
	test_check(n == 3 && !memcmp(got, "one", 3), "dg: the peek gave %d bytes, expected \"one\"", n);
	test_check(sockopt(l, SO_KEEPALIVE) == 1 && sockopt(l, SO_REUSEADDR) == 0, "l: SO_KEEPALIVE %d, REUSEADDR %d",
		   sockopt(l, SO_KEEPALIVE), sockopt(l, SO_REUSEADDR));

	test_check(owned_by(st[1], F_OWNER_PID, getpid()) && fcntl(st[1], F_GETSIG) == SIGUSR2,
		   "st[1]: not owned by the process with SIGUSR2 (signal %d)", fcntl(st[1], F_GETSIG));
	test_check(owned_by(l, F_OWNER_PGRP, getpgrp()), "l: not owned by the process group");
	test_check(fcntl(st[0], F_GETOWN) == 0 && fcntl(st[0], F_GETSIG) == 0, "st[0] got an owner");

	unlink("sk.opts");
	unlink("sk.optl");
	if (failed) {
		errno = 0;
		fail("the socket options were not restored");
		return 1;
	}
	pass();
	return 0;
}
