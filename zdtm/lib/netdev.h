/* netdev.h - network devices, addresses, routes and rules for the zdtm
 * programs of the ns flavour (their own network namespace), made through
 * rtnetlink and ioctls so that no tool (ip) is needed. Each returns 0, or
 * -1 with errno set and a message logged. */
#ifndef ZDTM_NETDEV_H
#define ZDTM_NETDEV_H

/* A veth pair a - b, both down. */
extern int test_veth_create(const char *a, const char *b);
/* A device of kind (a "bridge", say), down. */
extern int test_link_add(const char *name, const char *kind);
/* Sets the MTU (when > 0), the MAC (when mac is not NULL, 6 bytes) and
 * brings the device up (when up). */
extern int test_link_set(const char *dev, int mtu, const unsigned char *mac, int up);
/* Adds the address addr/prefix (text, AF_INET or AF_INET6) on dev;
 * nodad: IFA_F_NODAD (an IPv6 address usable at once). */
extern int test_addr_add(const char *dev, int af, const char *addr, int prefix, int nodad);
/* Adds a route to dst/dst_len (text) through gw (text, or NULL) out of
 * dev, in table (RT_TABLE_MAIN: 254). */
extern int test_route_add(int af, const char *dst, int dst_len, const char *gw, const char *dev,
			  unsigned table);
/* Adds the rule "from src/src_len lookup table" of priority prio (IPv4). */
extern int test_rule_add(const char *src, int src_len, unsigned table, unsigned prio);
/* Writes val into /proc/sys/PATH; reads it back into buf (len bytes, the
 * trailing newline cut). */
extern int test_sysctl_set(const char *path, const char *val);
extern int test_sysctl_get(const char *path, char *buf, int len);

#endif /* ZDTM_NETDEV_H */
