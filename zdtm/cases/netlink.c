/*
 * netlink: netlink sockets keep their protocol, port id, groups and flags.
 *
 *   rt     NETLINK_ROUTE, SOCK_RAW, bound to port id 0 (the kernel picks:
 *          the pid), member of RTNLGRP_LINK by bind and of RTNLGRP_IPV6_ROUTE
 *          (group 11) and RTNLGRP_NSID (group 28) with NETLINK_ADD_MEMBERSHIP,
 *          O_NONBLOCK, SO_RCVBUF set
 *   gen    NETLINK_GENERIC, SOCK_DGRAM, never bound
 *   own    NETLINK_ROUTE bound to a port id chosen here, connected to the
 *          kernel (port id 0)
 *   q      NETLINK_ROUTE that asked for a dump of the links and read none
 *          of the reply: the kernel's messages wait in its queue
 *
 * After SIGTERM: the port ids, groups, types and options read back; rt
 * still answers an RTM_GETLINK dump request (the kernel's reply for lo
 * comes back to its port id); gen and own are not bound elsewhere; q
 * reads the whole link dump it asked for, lo in it, up to NLMSG_DONE.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zdtmtst.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

const char *test_doc = "Check that netlink sockets keep their port ids, groups and options";

static int failed;

static int getopt_int(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &len))
		return -1000 - errno;
	return v;
}

static int name_of(int fd, struct sockaddr_nl *a, int peer)
{
	socklen_t len = sizeof(*a);

	memset(a, 0, sizeof(*a));
	return peer ? getpeername(fd, (struct sockaddr *)a, &len) : getsockname(fd, (struct sockaddr *)a, &len);
}

static int groups_of(int fd, uint32_t *g, int n)
{
	socklen_t len = n * sizeof(uint32_t);

	memset(g, 0, len);
	return getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, g, &len);
}

int main(int argc, char **argv)
{
	struct sockaddr_nl a, rt_name, own_name, now;
	uint32_t groups[2], groups_now[2];
	int rt, gen, own, q, rcvbuf, v, seen_lo, done;
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req;
	char buf[16384];
	ssize_t n;

	test_init(argc, argv);
	rt = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	gen = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_GENERIC);
	own = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	q = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (rt < 0 || gen < 0 || own < 0 || q < 0) {
		pr_perror("socket");
		return 1;
	}
	memset(&a, 0, sizeof(a));
	a.nl_family = AF_NETLINK;
	a.nl_groups = 1 << (RTNLGRP_LINK - 1);
	if (bind(rt, (struct sockaddr *)&a, sizeof(a))) {
		pr_perror("bind rt");
		return 1;
	}
	v = RTNLGRP_IPV6_ROUTE;
	if (setsockopt(rt, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &v, sizeof(v))) {
		pr_perror("NETLINK_ADD_MEMBERSHIP");
		return 1;
	}
	v = RTNLGRP_NSID;
	if (setsockopt(rt, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &v, sizeof(v))) {
		pr_perror("NETLINK_ADD_MEMBERSHIP");
		return 1;
	}
	v = 150000;
	if (setsockopt(rt, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) || set_nonblock(rt, 1))
		return 1;
	a.nl_groups = 0;
	a.nl_pid = 0x7a000000 | (getpid() & 0xffffff);
	if (bind(own, (struct sockaddr *)&a, sizeof(a))) {
		pr_perror("bind own");
		return 1;
	}
	a.nl_pid = 0;
	if (connect(own, (struct sockaddr *)&a, sizeof(a))) {
		pr_perror("connect own");
		return 1;
	}
	if (name_of(rt, &rt_name, 0) || name_of(own, &own_name, 0) || groups_of(rt, groups, 2)) {
		pr_perror("getsockname");
		return 1;
	}
	rcvbuf = getopt_int(rt, SOL_SOCKET, SO_RCVBUF);

	/* The kernel answers at once: its reply waits in q's queue. */
	memset(&req, 0, sizeof(req));
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = RTM_GETLINK;
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.h.nlmsg_seq = 77;
	req.i.ifi_family = AF_UNSPEC;
	memset(&a, 0, sizeof(a));
	a.nl_family = AF_NETLINK;
	if (sendto(q, &req, sizeof(req), 0, (struct sockaddr *)&a, sizeof(a)) != sizeof(req)) {
		pr_perror("sendto q");
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(!name_of(rt, &now, 0) && now.nl_pid == rt_name.nl_pid && now.nl_groups == rt_name.nl_groups,
		   "rt: port id %u groups %#x, was %u %#x", now.nl_pid, now.nl_groups, rt_name.nl_pid,
		   rt_name.nl_groups);
	test_check(!groups_of(rt, groups_now, 2) && !memcmp(groups, groups_now, sizeof(groups)),
		   "rt: groups %#x %#x, were %#x %#x", groups_now[0], groups_now[1], groups[0], groups[1]);
	test_check(getopt_int(rt, SOL_SOCKET, SO_PROTOCOL) == NETLINK_ROUTE, "rt is not NETLINK_ROUTE");
	test_check(getopt_int(rt, SOL_SOCKET, SO_TYPE) == SOCK_RAW, "rt is not SOCK_RAW");
	test_check(getopt_int(rt, SOL_SOCKET, SO_RCVBUF) == rcvbuf, "rt's SO_RCVBUF is %d, expected %d",
		   getopt_int(rt, SOL_SOCKET, SO_RCVBUF), rcvbuf);
	test_check(fcntl(rt, F_GETFL) & O_NONBLOCK, "rt lost O_NONBLOCK");
	test_check(getopt_int(gen, SOL_SOCKET, SO_PROTOCOL) == NETLINK_GENERIC, "gen is not NETLINK_GENERIC");
	test_check(getopt_int(gen, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM, "gen is not SOCK_DGRAM");
	test_check(!name_of(gen, &now, 0) && now.nl_pid == 0, "gen is bound to %u", now.nl_pid);
	test_check(!(fcntl(gen, F_GETFL) & O_NONBLOCK), "gen became O_NONBLOCK");
	test_check(!name_of(own, &now, 0) && now.nl_pid == own_name.nl_pid, "own: port id %u, was %u", now.nl_pid,
		   own_name.nl_pid);

	/* The kernel still answers rt. */
	memset(&req, 0, sizeof(req));
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = RTM_GETLINK;
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.h.nlmsg_seq = 42;
	req.i.ifi_family = AF_UNSPEC;
	set_nonblock(rt, 0);
	memset(&a, 0, sizeof(a));
	a.nl_family = AF_NETLINK;
	if (sendto(rt, &req, sizeof(req), 0, (struct sockaddr *)&a, sizeof(a)) != sizeof(req)) {
		fail("sendto");
		return 1;
	}
	/* Skip any group notification; the reply has our sequence number. */
	for (;;) {
		n = recv(rt, buf, sizeof(buf), 0);
		if (n < (ssize_t)sizeof(struct nlmsghdr)) {
			test_check(0, "no RTM_GETLINK reply (%zd)", n);
			break;
		}
		if (((struct nlmsghdr *)buf)->nlmsg_seq == 42) {
			test_check(((struct nlmsghdr *)buf)->nlmsg_type == RTM_NEWLINK &&
					   ((struct nlmsghdr *)buf)->nlmsg_pid == rt_name.nl_pid,
				   "the reply is of type %d for port id %u", ((struct nlmsghdr *)buf)->nlmsg_type,
				   ((struct nlmsghdr *)buf)->nlmsg_pid);
			break;
		}
	}

	/* q: the whole dump it asked for, lo in it, then NLMSG_DONE. */
	seen_lo = done = 0;
	set_nonblock(q, 1);
	while (!done) {
		struct nlmsghdr *h;

		n = recv(q, buf, sizeof(buf), 0);
		if (n < (ssize_t)sizeof(struct nlmsghdr)) {
			test_check(0, "q: the queued link dump ended early (%zd, errno %d)", n, errno);
			break;
		}
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			test_check(h->nlmsg_seq == 77, "q: a message of sequence %u", h->nlmsg_seq);
			if (h->nlmsg_type == NLMSG_DONE) {
				done = 1;
				break;
			}
			if (h->nlmsg_type == RTM_NEWLINK && ((struct ifinfomsg *)NLMSG_DATA(h))->ifi_index == 1)
				seen_lo = 1;
		}
	}
	test_check(seen_lo, "q: lo is not in the queued link dump");
	test_check(recv(q, buf, sizeof(buf), 0) < 0 && errno == EAGAIN, "q: more queued after NLMSG_DONE");

	if (failed)
		fail("netlink sockets changed");
	else
		pass();
	return 0;
}
