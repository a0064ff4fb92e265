/*
 * packet_sock: AF_PACKET sockets keep their protocol, interface, options,
 * memberships and fanout group.
 *
 *   --kind=plain
 *     raw    SOCK_RAW, ETH_P_ALL, bound to lo, TPACKET_V2, PACKET_AUXDATA,
 *            PACKET_ORIGDEV, PACKET_MR_PROMISC on lo, O_NONBLOCK
 *     dg     SOCK_DGRAM, ETH_P_IP, bound to lo, PACKET_LOSS, PACKET_RESERVE,
 *            in a fanout group (hash, defrag flag) with dg2
 *     dg2    the same, the group's other member
 *     none   SOCK_RAW with no protocol, never bound
 *   --kind=ring
 *     a SOCK_RAW socket with a PACKET_RX_RING mapped: the dump refuses it.
 *
 * After SIGTERM (plain): every option, address and fanout value reads back
 * as before; packet_diag shows the membership exactly once, and none after
 * one PACKET_DROP_MEMBERSHIP; a UDP datagram
 * sent over lo reaches raw, with its auxiliary data, and one of dg and dg2.
 * Packets queued at the dump are not kept (as CRIU), so the check skips
 * other traffic until it sees its own datagram.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/packet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that packet sockets keep their binding, options, memberships and fanout";

static char *kind;
TEST_OPTION(kind, string, "plain or ring", 1);

static int failed;

static int getopt_int(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &len))
		return -1000 - errno;
	return v;
}

static int setopt_int(int fd, int opt, int v)
{
	if (setsockopt(fd, SOL_PACKET, opt, &v, sizeof(v))) {
		pr_perror("setsockopt %d", opt);
		return -1;
	}
	return 0;
}

static int bind_to(int fd, int proto, int ifindex)
{
	struct sockaddr_ll a;

	memset(&a, 0, sizeof(a));
	a.sll_family = AF_PACKET;
	a.sll_protocol = htons(proto);
	a.sll_ifindex = ifindex;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a))) {
		pr_perror("bind");
		return -1;
	}
	return 0;
}

static int name_of(int fd, struct sockaddr_ll *a)
{
	socklen_t len = sizeof(*a);

	memset(a, 0, sizeof(*a));
	return getsockname(fd, (struct sockaddr *)a, &len);
}

static int membership(int fd, int op, int ifindex)
{
	struct packet_mreq m;

	memset(&m, 0, sizeof(m));
	m.mr_ifindex = ifindex;
	m.mr_type = PACKET_MR_PROMISC;
	return setsockopt(fd, SOL_PACKET, op, &m, sizeof(m));
}

/* How many times `fd` holds a PACKET_MR_PROMISC membership of interface
 * `ifindex`, as packet_diag tells; -1 if it cannot tell. */
static int promisc_members(int fd, int ifindex)
{
	struct {
		struct nlmsghdr h;
		struct packet_diag_req r;
	} req;
	static char buf[65536];
	struct stat st;
	int nl, ret = -1;
	ssize_t n;

	if (fstat(fd, &st))
		return -1;
	nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -1;
	memset(&req, 0, sizeof(req));
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.r.sdiag_family = AF_PACKET;
	req.r.pdiag_show = PACKET_SHOW_MCLIST;
	if (send(nl, &req, sizeof(req), 0) != sizeof(req))
		goto out;
	while ((n = recv(nl, buf, sizeof(buf), 0)) > 0) {
		struct nlmsghdr *h;
		int len = n;

		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
			struct packet_diag_msg *m = NLMSG_DATA(h);
			struct rtattr *a;
			int alen;

			if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR)
				goto out;
			if (m->pdiag_ino != st.st_ino)
				continue;
			ret = 0;
			alen = h->nlmsg_len - NLMSG_LENGTH(sizeof(*m));
			for (a = (struct rtattr *)(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
				struct packet_diag_mclist *mc = RTA_DATA(a);
				int i;

				if (a->rta_type != PACKET_DIAG_MCLIST)
					continue;
				for (i = 0; i < (int)(RTA_PAYLOAD(a) / sizeof(*mc)); i++)
					if (mc[i].pdmc_index == (unsigned)ifindex && mc[i].pdmc_type == PACKET_MR_PROMISC)
						ret += mc[i].pdmc_count;
			}
		}
	}
out:
	close(nl);
	return ret;
}

/* Whether `fd` receives a packet holding `marker` within two seconds;
 * *aux says whether it came with PACKET_AUXDATA. */
static int sees(int fd, const char *marker, int *aux)
{
	struct timespec start, now;
	char buf[65536], cbuf[256];

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				      .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c;
		ssize_t n;

		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 2)
			return 0;
		if (poll(&p, 1, 200) <= 0)
			continue;
		n = recvmsg(fd, &msg, MSG_DONTWAIT);
		if (n <= 0)
			continue;
		if (!memmem(buf, n, marker, strlen(marker)))
			continue;
		if (aux) {
			*aux = 0;
			for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
				if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA)
					*aux = 1;
		}
		return 1;
	}
}

static int ring(void)
{
	struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 2048,
				   .tp_frame_nr = 2 };
	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	void *m;

	if (fd < 0 || setopt_int(fd, PACKET_VERSION, TPACKET_V2))
		return 1;
	if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req))) {
		pr_perror("PACKET_RX_RING");
		return 1;
	}
	m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		pr_perror("mmap");
		return 1;
	}
	test_daemon();
	test_waitsig();
	pass();
	return 0;
}

int main(int argc, char **argv)
{
	int raw, dg, dg2, none, lo, fan, fan_now, udp, aux = 0, one = 1, promisc;
	struct sockaddr_ll raw_name, dg_name, now;
	struct sockaddr_in to;
	char marker[64];

	test_init(argc, argv);
	if (!strcmp(kind, "ring"))
		return ring();
	if (strcmp(kind, "plain")) {
		pr_err("unknown --kind=%s\n", kind);
		return 1;
	}
	lo = if_nametoindex("lo");
	raw = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	dg = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	dg2 = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	none = socket(AF_PACKET, SOCK_RAW, 0);
	if (!lo || raw < 0 || dg < 0 || dg2 < 0 || none < 0) {
		pr_perror("socket");
		return 1;
	}
	if (setopt_int(raw, PACKET_VERSION, TPACKET_V2) || setopt_int(raw, PACKET_AUXDATA, 1) ||
	    setopt_int(raw, PACKET_ORIGDEV, 1) || bind_to(raw, ETH_P_ALL, lo) || set_nonblock(raw, 1))
		return 1;
	if (membership(raw, PACKET_ADD_MEMBERSHIP, lo)) {
		pr_perror("PACKET_ADD_MEMBERSHIP");
		return 1;
	}
	fan = (int)((unsigned)(getpid() & 0xffff) | ((unsigned)PACKET_FANOUT_HASH << 16) |
		    ((unsigned)PACKET_FANOUT_FLAG_DEFRAG << 16));
	if (setopt_int(dg, PACKET_LOSS, 1) || setopt_int(dg, PACKET_RESERVE, 64) || bind_to(dg, ETH_P_IP, lo) ||
	    bind_to(dg2, ETH_P_IP, lo) || setopt_int(dg, PACKET_FANOUT, fan) || setopt_int(dg2, PACKET_FANOUT, fan))
		return 1;
	fan = getopt_int(dg, SOL_PACKET, PACKET_FANOUT);
	if (promisc_members(raw, lo) != 1) {
		pr_err("packet_diag does not show raw's membership (%d)\n", promisc_members(raw, lo));
		return 1;
	}
	if (name_of(raw, &raw_name) || name_of(dg, &dg_name)) {
		pr_perror("getsockname");
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(getopt_int(raw, SOL_SOCKET, SO_TYPE) == SOCK_RAW, "raw is not SOCK_RAW");
	test_check(!name_of(raw, &now) && now.sll_ifindex == lo && now.sll_protocol == htons(ETH_P_ALL),
		   "raw: bound to interface %d protocol %#x, was %d %#x", now.sll_ifindex, ntohs(now.sll_protocol),
		   raw_name.sll_ifindex, ntohs(raw_name.sll_protocol));
	test_check(getopt_int(raw, SOL_PACKET, PACKET_VERSION) == TPACKET_V2, "raw: PACKET_VERSION %d",
		   getopt_int(raw, SOL_PACKET, PACKET_VERSION));
	test_check(getopt_int(raw, SOL_PACKET, PACKET_AUXDATA) == 1, "raw: PACKET_AUXDATA off");
	test_check(getopt_int(raw, SOL_PACKET, PACKET_ORIGDEV) == 1, "raw: PACKET_ORIGDEV off");
	test_check(getopt_int(raw, SOL_PACKET, PACKET_FANOUT) == 0, "raw: in a fanout group");
	test_check(fcntl(raw, F_GETFL) & O_NONBLOCK, "raw lost O_NONBLOCK");
	test_check(getopt_int(dg, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM, "dg is not SOCK_DGRAM");
	test_check(!name_of(dg, &now) && now.sll_ifindex == lo && now.sll_protocol == htons(ETH_P_IP),
		   "dg: bound to interface %d protocol %#x, was %d %#x", now.sll_ifindex, ntohs(now.sll_protocol),
		   dg_name.sll_ifindex, ntohs(dg_name.sll_protocol));
	test_check(getopt_int(dg, SOL_PACKET, PACKET_LOSS) == 1, "dg: PACKET_LOSS off");
	test_check(getopt_int(dg, SOL_PACKET, PACKET_RESERVE) == 64, "dg: PACKET_RESERVE %d",
		   getopt_int(dg, SOL_PACKET, PACKET_RESERVE));
	test_check(getopt_int(dg, SOL_PACKET, PACKET_VERSION) == TPACKET_V1, "dg: PACKET_VERSION changed");
	fan_now = getopt_int(dg, SOL_PACKET, PACKET_FANOUT);
	test_check(fan_now == fan, "dg: PACKET_FANOUT %#x, was %#x", fan_now, fan);
	fan_now = getopt_int(dg2, SOL_PACKET, PACKET_FANOUT);
	test_check(fan_now == fan, "dg2: PACKET_FANOUT %#x, was %#x", fan_now, fan);
	test_check(!(fcntl(dg, F_GETFL) & O_NONBLOCK), "dg became O_NONBLOCK");
	test_check(!name_of(none, &now) && now.sll_ifindex == 0 && now.sll_protocol == 0,
		   "none: bound to interface %d protocol %#x", now.sll_ifindex, ntohs(now.sll_protocol));

	/* The promiscuous membership is there, once, and a drop takes it. */
	promisc = promisc_members(raw, lo);
	test_check(promisc == 1, "raw holds PACKET_MR_PROMISC on lo %d times", promisc);
	test_check(!membership(raw, PACKET_DROP_MEMBERSHIP, lo), "raw: PACKET_DROP_MEMBERSHIP");
	promisc = promisc_members(raw, lo);
	test_check(promisc == 0, "raw holds PACKET_MR_PROMISC on lo %d times after a drop", promisc);

	/* Traffic on lo still reaches them. */
	snprintf(marker, sizeof(marker), "packet_sock marker %d", getpid());
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&to, 0, sizeof(to));
	to.sin_family = AF_INET;
	to.sin_port = htons(9);
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(udp, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
	if (udp < 0 || sendto(udp, marker, strlen(marker), 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
		fail("sendto");
		return 1;
	}
	test_check(sees(raw, marker, &aux), "raw did not see the datagram sent over lo");
	test_check(aux, "raw's packet came without PACKET_AUXDATA");
	set_nonblock(dg, 1);
	test_check(sees(dg, marker, NULL) || sees(dg2, marker, NULL), "neither dg nor dg2 saw the datagram");

	if (failed)
		fail("packet sockets changed");
	else
		pass();
	return 0;
}
