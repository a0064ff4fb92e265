/*
 * net_veth_addr: the network configuration of a namespace of the tree's
 * own (the ns flavour gives the case one): a veth pair (zv0 - zv1) with
 * its MTUs, a MAC and both ends up; IPv4 and IPv6 addresses (the IPv6
 * one nodad, so it is usable at once); a route through a gateway in the
 * main table, a route in table 100 and a rule sending the veth's subnet
 * there; an IPv6 route; per-device, all, default, unix and core sysctls.
 * With --nft, also an nftables table with a chain and a rule.
 *
 * After the restore each is read back (ioctls, /proc/net, /proc/sys,
 * nft) and compared with what was set, and the rule with its table is
 * tried: a UDP socket bound to the veth's address reaches 10.79.1.1 only
 * through table 100.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "netdev.h"

const char *test_doc = "Check that veth devices, addresses, routes, rules and sysctls of the tree's net ns survive";

/* nft(8), wherever PATH leaves it out. */
#define NFT "PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH nft"

static int nft;
TEST_OPTION(nft, int, "1: also an nftables table, chain and rule", 0);

static const unsigned char mac0[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };

static const char *sysctls[][2] = {
	{ "net/ipv4/conf/zv0/forwarding", "1" },
	{ "net/ipv4/conf/zv1/rp_filter", "2" },
	{ "net/ipv4/conf/default/accept_local", "1" },
	{ "net/ipv4/conf/all/arp_ignore", "2" },
	{ "net/ipv6/conf/zv1/hop_limit", "33" },
	{ "net/ipv6/conf/default/hop_limit", "44" },
	{ "net/ipv6/conf/all/forwarding", "1" },
	{ "net/unix/max_dgram_qlen", "77" },
	{ "net/core/somaxconn", "1234" },
};

struct link {
	const char *name;
	int index, mtu, flags;
	unsigned char mac[6];
};

static int get_link(const char *name, struct link *l)
{
	struct ifreq ifr = {};
	int fd = socket(AF_INET, SOCK_DGRAM, 0), ret = -1;

	if (fd < 0)
		return -1;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	l->name = name;
	if (ioctl(fd, SIOCGIFINDEX, &ifr))
		goto out;
	l->index = ifr.ifr_ifindex;
	if (ioctl(fd, SIOCGIFMTU, &ifr))
		goto out;
	l->mtu = ifr.ifr_mtu;
	if (ioctl(fd, SIOCGIFFLAGS, &ifr))
		goto out;
	l->flags = ifr.ifr_flags;
	if (ioctl(fd, SIOCGIFHWADDR, &ifr))
		goto out;
	memcpy(l->mac, ifr.ifr_hwaddr.sa_data, 6);
	ret = 0;
out:
	if (ret)
		pr_perror("%s: ioctl", name);
	close(fd);
	return ret;
}

/* The IPv4 address and netmask of dev, as text. */
static int get_v4(const char *dev, char *addr, char *mask)
{
	struct ifreq ifr = {};
	int fd = socket(AF_INET, SOCK_DGRAM, 0), ret = -1;

	strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
	if (fd >= 0 && !ioctl(fd, SIOCGIFADDR, &ifr)) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, addr, 32);
		if (!ioctl(fd, SIOCGIFNETMASK, &ifr)) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ifr.ifr_netmask)->sin_addr, mask, 32);
			ret = 0;
		}
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Whether /proc/self/net/FILE has a line with every word of words (space
 * separated) among its words. */
static int has_line(const char *file, const char *words)
{
	char path[64], line[512], pad[520];
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "/proc/self/net/%s", file);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char w[256], *tok, *save = NULL, *c;

		snprintf(pad, sizeof(pad), " %s ", line);
		for (c = pad; *c; c++)
			if (*c == '\t' || *c == '\n')
				*c = ' ';
		found = 1;
		snprintf(w, sizeof(w), "%s", words);
		for (tok = strtok_r(w, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
			char t[64];

			snprintf(t, sizeof(t), " %s ", tok);
			if (!strstr(pad, t)) {
				found = 0;
				break;
			}
		}
	}
	fclose(f);
	return found;
}

/* Whether a UDP socket bound to src can connect to dst (a route exists). */
static int routable(const char *src, const char *dst)
{
	struct sockaddr_in s = { .sin_family = AF_INET }, d = { .sin_family = AF_INET, .sin_port = htons(9) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0), ok;

	inet_pton(AF_INET, dst, &d.sin_addr);
	if (src)
		inet_pton(AF_INET, src, &s.sin_addr);
	ok = fd >= 0 && (!src || !bind(fd, (struct sockaddr *)&s, sizeof(s))) &&
	     !connect(fd, (struct sockaddr *)&d, sizeof(d));
	if (fd >= 0)
		close(fd);
	return ok;
}

static int nft_has(const char *want)
{
	char line[512];
	FILE *p = popen(NFT " list table inet zdtm_nt 2>&1", "r");
	int found = 0;

	if (!p)
		return 0;
	while (fgets(line, sizeof(line), p))
		if (strstr(line, want))
			found = 1;
	pclose(p);
	return found;
}

static int setup(void)
{
	unsigned i;

	if (test_veth_create("zv0", "zv1") || test_link_set("zv0", 1400, mac0, 1) ||
	    test_link_set("zv1", 1300, NULL, 1) || test_addr_add("zv0", AF_INET, "10.77.0.1", 24, 0) ||
	    test_addr_add("zv1", AF_INET, "10.77.0.2", 24, 0) ||
	    test_addr_add("zv0", AF_INET6, "fd00:77::1", 64, 1) ||
	    test_route_add(AF_INET, "10.78.0.0", 16, "10.77.0.2", "zv0", 254) ||
	    test_route_add(AF_INET, "10.79.0.0", 16, NULL, "zv1", 100) ||
	    test_rule_add("10.77.0.0", 24, 100, 1000) ||
	    test_route_add(AF_INET6, "fd00:78::", 64, NULL, "zv0", 254))
		return -1;
	for (i = 0; i < sizeof(sysctls) / sizeof(sysctls[0]); i++)
		if (test_sysctl_set(sysctls[i][0], sysctls[i][1]))
			return -1;
	if (nft && system(NFT " add table inet zdtm_nt && "
			  NFT " add chain inet zdtm_nt c '{ type filter hook input priority 0; }' && "
			  NFT " add rule inet zdtm_nt c tcp dport 4242 counter drop")) {
		pr_err("nft: cannot make the table\n");
		return -1;
	}
	return 0;
}

static int check(const struct link *b0, const struct link *b1)
{
	struct link a0, a1;
	char addr[32] = "", mask[32] = "", val[64];
	unsigned i;
	int ok = 1, tries;

	if (get_link("zv0", &a0) || get_link("zv1", &a1))
		return 0;
	/* Carrier (IFF_RUNNING) comes a moment after both ends are up. */
	for (tries = 0; tries < 50 && !(a0.flags & IFF_RUNNING); tries++) {
		usleep(20000);
		get_link("zv0", &a0);
	}
	if (a0.index != b0->index || a1.index != b1->index) {
		fail("indexes %d, %d, were %d, %d", a0.index, a1.index, b0->index, b1->index);
		ok = 0;
	}
	if (a0.mtu != 1400 || a1.mtu != 1300) {
		fail("MTUs %d, %d, want 1400, 1300", a0.mtu, a1.mtu);
		ok = 0;
	}
	if (memcmp(a0.mac, mac0, 6) || memcmp(a1.mac, b1->mac, 6)) {
		fail("MACs differ");
		ok = 0;
	}
	if (!(a0.flags & IFF_UP) || !(a1.flags & IFF_UP) || !(a0.flags & IFF_RUNNING)) {
		fail("flags %#x, %#x: want both up, zv0 running (its peer up)", a0.flags, a1.flags);
		ok = 0;
	}
	if (get_v4("zv0", addr, mask) || strcmp(addr, "10.77.0.1") || strcmp(mask, "255.255.255.0")) {
		fail("zv0's IPv4 address %s/%s", addr, mask);
		ok = 0;
	}
	if (get_v4("zv1", addr, mask) || strcmp(addr, "10.77.0.2")) {
		fail("zv1's IPv4 address %s", addr);
		ok = 0;
	}
	/* if_inet6: address, index, prefix (hex), scope, flags (permanent
	 * 0x80 and nodad 0x02, not tentative 0x40), name. */
	if (!has_line("if_inet6", "fd000077000000000000000000000001 40 00 82 zv0")) {
		fail("fd00:77::1/64 nodad on zv0 not in /proc/net/if_inet6 (or tentative)");
		ok = 0;
	}
	/* route: Iface Destination Gateway (hex, network order). */
	if (!has_line("route", "zv0 00004E0A 02004D0A")) {
		fail("10.78.0.0/16 via 10.77.0.2 dev zv0 not in /proc/net/route");
		ok = 0;
	}
	if (!has_line("ipv6_route", "fd000078000000000000000000000000 40 zv0")) {
		fail("fd00:78::/64 dev zv0 not in /proc/net/ipv6_route");
		ok = 0;
	}
	if (!routable("10.77.0.1", "10.79.1.1") || routable(NULL, "10.79.1.1")) {
		fail("10.79.1.1: reachable from 10.77.0.1 through table 100 (rule 1000) and not otherwise: no");
		ok = 0;
	}
	for (i = 0; i < sizeof(sysctls) / sizeof(sysctls[0]); i++) {
		if (test_sysctl_get(sysctls[i][0], val, sizeof(val)) || strcmp(val, sysctls[i][1])) {
			fail("%s = %s, want %s", sysctls[i][0], val, sysctls[i][1]);
			ok = 0;
		}
	}
	if (nft && !nft_has("tcp dport 4242 counter")) {
		fail("nft: table inet zdtm_nt lost its rule");
		ok = 0;
	}
	return ok;
}

int main(int argc, char **argv)
{
	struct link b0, b1;

	test_init(argc, argv);
	if (setup() || get_link("zv0", &b0) || get_link("zv1", &b1))
		return 1;
	if (!routable("10.77.0.1", "10.79.1.1") || routable(NULL, "10.79.1.1")) {
		pr_err("the rule and table 100 do not route as the check expects\n");
		return 1;
	}
	test_daemon();
	test_waitsig();
	if (check(&b0, &b1))
		pass();
	return 0;
}
