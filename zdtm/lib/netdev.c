/* netdev.c - see netdev.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "netdev.h"

struct req {
	struct nlmsghdr h;
	char buf[1024];
};

static void *tail(struct req *r)
{
	return (char *)r + NLMSG_ALIGN(r->h.nlmsg_len);
}

static struct rtattr *attr(struct req *r, int type, const void *v, int len)
{
	struct rtattr *a = tail(r);

	a->rta_type = type;
	a->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), v, len);
	r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
	return a;
}

static void nest_end(struct req *r, struct rtattr *a)
{
	a->rta_len = (char *)tail(r) - (char *)a;
}

static void init(struct req *r, int type, int flags, int fixed)
{
	memset(r, 0, sizeof(*r));
	r->h.nlmsg_len = NLMSG_LENGTH(fixed);
	r->h.nlmsg_type = type;
	r->h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
}

/* Sends r and waits for the kernel's acknowledgement. */
static int talk(struct req *r, const char *what)
{
	char buf[4096];
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), n, err;

	if (fd < 0) {
		pr_perror("%s: netlink socket", what);
		return -1;
	}
	if (send(fd, r, r->h.nlmsg_len, 0) != (ssize_t)r->h.nlmsg_len || (n = recv(fd, buf, sizeof(buf), 0)) < 0) {
		pr_perror("%s: netlink", what);
		close(fd);
		return -1;
	}
	close(fd);
	if (n < (int)NLMSG_LENGTH(sizeof(int)) || h->nlmsg_type != NLMSG_ERROR) {
		errno = EIO;
		pr_perror("%s: no acknowledgement", what);
		return -1;
	}
	err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
	if (err) {
		errno = -err;
		pr_perror("%s", what);
		return -1;
	}
	return 0;
}

int test_veth_create(const char *a, const char *b)
{
	struct req r;
	struct rtattr *li, *data, *peer;
	struct ifinfomsg pi = {};

	init(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(struct ifinfomsg));
	attr(&r, IFLA_IFNAME, a, strlen(a) + 1);
	li = attr(&r, IFLA_LINKINFO, NULL, 0);
	attr(&r, IFLA_INFO_KIND, "veth", 4);
	data = attr(&r, IFLA_INFO_DATA, NULL, 0);
	peer = attr(&r, VETH_INFO_PEER, &pi, sizeof(pi));
	attr(&r, IFLA_IFNAME, b, strlen(b) + 1);
	nest_end(&r, peer);
	nest_end(&r, data);
	nest_end(&r, li);
	return talk(&r, "veth pair");
}

int test_link_add(const char *name, const char *kind)
{
	struct req r;
	struct rtattr *li;

	init(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(struct ifinfomsg));
	attr(&r, IFLA_IFNAME, name, strlen(name) + 1);
	li = attr(&r, IFLA_LINKINFO, NULL, 0);
	attr(&r, IFLA_INFO_KIND, kind, strlen(kind));
	nest_end(&r, li);
	return talk(&r, kind);
}

int test_link_set(const char *dev, int mtu, const unsigned char *mac, int up)
{
	struct ifreq ifr = {};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret = -1;

	if (fd < 0) {
		pr_perror("socket");
		return -1;
	}
	strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
	if (mtu > 0) {
		ifr.ifr_mtu = mtu;
		if (ioctl(fd, SIOCSIFMTU, &ifr)) {
			pr_perror("%s: MTU %d", dev, mtu);
			goto out;
		}
	}
	if (mac) {
		ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
		memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
		if (ioctl(fd, SIOCSIFHWADDR, &ifr)) {
			pr_perror("%s: MAC", dev);
			goto out;
		}
	}
	if (up) {
		if (ioctl(fd, SIOCGIFFLAGS, &ifr)) {
			pr_perror("%s: flags", dev);
			goto out;
		}
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr)) {
			pr_perror("%s: up", dev);
			goto out;
		}
	}
	ret = 0;
out:
	close(fd);
	return ret;
}

static int addr_len(int af)
{
	return af == AF_INET6 ? 16 : 4;
}

int test_addr_add(const char *dev, int af, const char *addr, int prefix, int nodad)
{
	struct req r;
	struct ifaddrmsg *ifa;
	unsigned char a[16];
	unsigned flags = nodad ? IFA_F_NODAD : 0;

	init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, sizeof(*ifa));
	ifa = NLMSG_DATA(&r.h);
	ifa->ifa_family = af;
	ifa->ifa_prefixlen = prefix;
	ifa->ifa_flags = flags;
	ifa->ifa_index = if_nametoindex(dev);
	if (!ifa->ifa_index || inet_pton(af, addr, a) != 1) {
		errno = EINVAL;
		pr_perror("address %s on %s", addr, dev);
		return -1;
	}
	attr(&r, IFA_LOCAL, a, addr_len(af));
	attr(&r, IFA_ADDRESS, a, addr_len(af));
	attr(&r, IFA_FLAGS, &flags, sizeof(flags));
	return talk(&r, addr);
}

int test_route_add(int af, const char *dst, int dst_len, const char *gw, const char *dev, unsigned table)
{
	struct req r;
	struct rtmsg *rt;
	unsigned char a[16];
	unsigned oif = if_nametoindex(dev);

	init(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, sizeof(*rt));
	rt = NLMSG_DATA(&r.h);
	rt->rtm_family = af;
	rt->rtm_dst_len = dst_len;
	rt->rtm_table = table < 256 ? table : RT_TABLE_UNSPEC;
	rt->rtm_protocol = RTPROT_STATIC;
	rt->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
	rt->rtm_type = RTN_UNICAST;
	if (!oif || inet_pton(af, dst, a) != 1) {
		errno = EINVAL;
		pr_perror("route to %s", dst);
		return -1;
	}
	attr(&r, RTA_DST, a, addr_len(af));
	if (gw) {
		if (inet_pton(af, gw, a) != 1) {
			errno = EINVAL;
			pr_perror("gateway %s", gw);
			return -1;
		}
		attr(&r, RTA_GATEWAY, a, addr_len(af));
	}
	attr(&r, RTA_OIF, &oif, sizeof(oif));
	attr(&r, RTA_TABLE, &table, sizeof(table));
	return talk(&r, dst);
}

int test_rule_add(const char *src, int src_len, unsigned table, unsigned prio)
{
	struct req r;
	struct fib_rule_hdr *f;
	unsigned char a[4];

	init(&r, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, sizeof(*f));
	f = NLMSG_DATA(&r.h);
	f->family = AF_INET;
	f->src_len = src_len;
	f->action = FR_ACT_TO_TBL;
	f->table = table < 256 ? table : RT_TABLE_UNSPEC;
	if (inet_pton(AF_INET, src, a) != 1) {
		errno = EINVAL;
		pr_perror("rule from %s", src);
		return -1;
	}
	attr(&r, FRA_SRC, a, 4);
	attr(&r, FRA_TABLE, &table, sizeof(table));
	attr(&r, FRA_PRIORITY, &prio, sizeof(prio));
	return talk(&r, "rule");
}

/* /proc/sys/PATH opened with flags, or -1 (logged). */
static int sysctl_open(const char *path, int flags)
{
	char p[256];
	int fd;

	snprintf(p, sizeof(p), "/proc/sys/%s", path);
	fd = open(p, flags);
	if (fd < 0)
		pr_perror("open %s", p);
	return fd;
}

int test_sysctl_set(const char *path, const char *val)
{
	int fd = sysctl_open(path, O_WRONLY), n;

	if (fd < 0)
		return -1;
	n = write(fd, val, strlen(val));
	close(fd);
	if (n != (int)strlen(val)) {
		pr_perror("write %s = %s", path, val);
		return -1;
	}
	return 0;
}

int test_sysctl_get(const char *path, char *buf, int len)
{
	int fd = sysctl_open(path, O_RDONLY), n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0) {
		pr_perror("read %s", path);
		return -1;
	}
	buf[n] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
	return 0;
}
