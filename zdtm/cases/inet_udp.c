/*
 * inet_udp: UDP sockets keep their addresses, connection and queued
 * datagrams (in order, each whole, each with its source address);
 * --family=4 or 6 (on 127.0.0.1 or ::1).
 *
 *   rcv    bound to a port the kernel picked, O_NONBLOCK, SO_RCVBUF set,
 *          TOS 0x20 (IPv4: IP_TOS, and SO_BROADCAST; IPv6: IPV6_TCLASS);
 *          queued for it: 5 bytes from s1, 4 from s2, 40000 from s1, 9 from
 *          `gone` (a socket closed since, so its port is free), 1 from s2
 *   con    connected to s1 (the kernel bound it on connect); queued for it:
 *          6 bytes from s1
 *   s1, s2 bound, nothing queued
 *
 * After SIGTERM: every datagram reads back in order with its size, bytes
 * and source, then rcv's queue is empty; con is still connected to s1 and
 * bound where it was; datagrams go both ways between con and s1 and from
 * s2 to rcv; the options read back.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"
#include "zdtmtst.h"

const char *test_doc = "Check that UDP sockets keep their addresses, connection and queued datagrams";

static int family = 4;
TEST_OPTION(family, int, "4 or 6", 0);

static int failed;

#define BIG 40000

static int getopt_int(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &len))
		return -1000 - errno;
	return v;
}

static int setopt(int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v))) {
		pr_perror("setsockopt %d/%d", level, opt);
		return -1;
	}
	return 0;
}

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

static int udp_bound(struct addr *a)
{
	int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);

	a->len = test_loopback_addr(family == 6 ? AF_INET6 : AF_INET, &a->ss);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a->ss, a->len) || getsockname(fd, (struct sockaddr *)&a->ss, &a->len)) {
		pr_perror("UDP socket");
		return -1;
	}
	return fd;
}

static int same(const struct addr *a, const struct sockaddr_storage *ss, socklen_t len)
{
	return a->len == len && !memcmp(&a->ss, ss, len);
}

static void fill(uint8_t *buf, int len, int seed)
{
	zdtm_fill_seeded(buf, len, seed);
}

static int send_to(int fd, int len, int seed, const struct addr *to)
{
	static uint8_t buf[BIG];

	fill(buf, len, seed);
	if (sendto(fd, buf, len, 0, (struct sockaddr *)&to->ss, to->len) != len) {
		pr_perror("sendto");
		return -1;
	}
	return 0;
}

/* The next datagram on fd must be `len` bytes of `seed` from `from`. */
static void expect(int fd, const char *name, int n, int len, int seed, const struct addr *from)
{
	static uint8_t buf[BIG + 1], want[BIG];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	ssize_t got;

	memset(&ss, 0, sizeof(ss));
	got = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
	if (got != len) {
		test_check(0, "%s datagram %d: %zd bytes (errno %d), expected %d", name, n, got, errno, len);
		return;
	}
	fill(want, len, seed);
	test_check(!memcmp(buf, want, len), "%s datagram %d: other bytes", name, n);
	test_check(same(from, &ss, sl), "%s datagram %d: from another address", name, n);
}

int main(int argc, char **argv)
{
	struct addr a_rcv, a_con, a_s1, a_s2, a_gone, now;
	int rcv, con, s1, s2, gone, rcvbuf, tos_level, tos_opt;
	struct sockaddr_storage ss;
	socklen_t sl;

	test_init(argc, argv);
	if (family != 4 && family != 6) {
		pr_err("--family must be 4 or 6\n");
		return 1;
	}
	tos_level = family == 6 ? IPPROTO_IPV6 : IPPROTO_IP;
	tos_opt = family == 6 ? IPV6_TCLASS : IP_TOS;

	rcv = udp_bound(&a_rcv);
	s1 = udp_bound(&a_s1);
	s2 = udp_bound(&a_s2);
	gone = udp_bound(&a_gone);
	con = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
	if (rcv < 0 || s1 < 0 || s2 < 0 || gone < 0 || con < 0)
		return 1;
	if (setopt(rcv, SOL_SOCKET, SO_RCVBUF, 200000) || setopt(rcv, tos_level, tos_opt, 0x20) ||
	    (family == 4 && setopt(rcv, SOL_SOCKET, SO_BROADCAST, 1)) || set_nonblock(rcv, 1))
		return 1;
	if (connect(con, (struct sockaddr *)&a_s1.ss, a_s1.len)) {
		pr_perror("connect");
		return 1;
	}
	a_con.len = sizeof(a_con.ss);
	if (getsockname(con, (struct sockaddr *)&a_con.ss, &a_con.len)) {
		pr_perror("getsockname");
		return 1;
	}
	if (send_to(s1, 5, 1, &a_rcv) || send_to(s2, 4, 2, &a_rcv) || send_to(s1, BIG, 3, &a_rcv) ||
	    send_to(gone, 9, 4, &a_rcv) || send_to(s2, 1, 5, &a_rcv) || send_to(s1, 6, 6, &a_con))
		return 1;
	close(gone);
	rcvbuf = getopt_int(rcv, SOL_SOCKET, SO_RCVBUF);

	test_daemon();
	test_waitsig();

	now.len = sizeof(now.ss);
	test_check(!getsockname(rcv, (struct sockaddr *)&now.ss, &now.len) && same(&a_rcv, &now.ss, now.len),
		   "rcv is bound elsewhere now");
	sl = sizeof(ss);
	test_check(getpeername(rcv, (struct sockaddr *)&ss, &sl) && errno == ENOTCONN, "rcv is connected");
	test_check(fcntl(rcv, F_GETFL) & O_NONBLOCK, "rcv lost O_NONBLOCK");
	test_check(getopt_int(rcv, SOL_SOCKET, SO_RCVBUF) == rcvbuf, "rcv's SO_RCVBUF is %d, expected %d",
		   getopt_int(rcv, SOL_SOCKET, SO_RCVBUF), rcvbuf);
	test_check(getopt_int(rcv, tos_level, tos_opt) == 0x20, "rcv's TOS is %#x", getopt_int(rcv, tos_level, tos_opt));
	if (family == 4)
		test_check(getopt_int(rcv, SOL_SOCKET, SO_BROADCAST) == 1, "rcv lost SO_BROADCAST");
	test_check(getopt_int(s1, SOL_SOCKET, SO_BROADCAST) == 0, "s1 got SO_BROADCAST");

	expect(rcv, "rcv", 1, 5, 1, &a_s1);
	expect(rcv, "rcv", 2, 4, 2, &a_s2);
	expect(rcv, "rcv", 3, BIG, 3, &a_s1);
	expect(rcv, "rcv", 4, 9, 4, &a_gone);
	expect(rcv, "rcv", 5, 1, 5, &a_s2);
	{
		char c;
		ssize_t got = recv(rcv, &c, 1, MSG_DONTWAIT);

		test_check(got < 0 && errno == EAGAIN, "rcv has more queued (%zd)", got);
	}

	now.len = sizeof(now.ss);
	test_check(!getsockname(con, (struct sockaddr *)&now.ss, &now.len) && same(&a_con, &now.ss, now.len),
		   "con is bound elsewhere now");
	now.len = sizeof(now.ss);
	test_check(!getpeername(con, (struct sockaddr *)&now.ss, &now.len) && same(&a_s1, &now.ss, now.len),
		   "con is not connected to s1 any more");
	expect(con, "con", 1, 6, 6, &a_s1);

	if (send_to(con, 7, 7, &a_s1) || send_to(s1, 8, 8, &a_con) || send_to(s2, 9, 9, &a_rcv)) {
		fail("sendto");
		return 1;
	}
	usleep(10000);
	expect(s1, "s1", 1, 7, 7, &a_con);
	expect(con, "con", 2, 8, 8, &a_s1);
	expect(rcv, "rcv", 6, 9, 9, &a_s2);

	if (failed)
		fail("UDP sockets changed");
	else
		pass();
	return 0;
}
